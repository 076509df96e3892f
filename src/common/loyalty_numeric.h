/*
 * loyalty_numeric.h
 *		Exact numeric arithmetic shared by every family (coupon discounts,
 *		points thresholds and multipliers, RFM spend sums).
 *
 * Thin wrappers over PostgreSQL's numeric functions: one name per operation
 * so that no family calls the fmgr entry points directly.  Errors are the
 * server's own (22003 numeric value out of range on overflow).
 */
#ifndef LOYALTY_NUMERIC_H
#define LOYALTY_NUMERIC_H

#include "postgres.h"

#include "utils/numeric.h"

extern Numeric LoyaltyNumericZero(void);
extern Numeric LoyaltyNumericFromInt64(int64 v);
extern bool LoyaltyNumericIsZero(Numeric n);
extern int	LoyaltyNumericCmp(Numeric a, Numeric b);
extern Numeric LoyaltyNumericAdd(Numeric a, Numeric b);
extern Numeric LoyaltyNumericSub(Numeric a, Numeric b);
extern Numeric LoyaltyNumericMul(Numeric a, Numeric b);
extern Numeric LoyaltyNumericDiv(Numeric a, Numeric b);
extern Numeric LoyaltyNumericRound(Numeric a, int scale);
extern Numeric LoyaltyNumericTrunc(Numeric a, int scale);

#endif							/* LOYALTY_NUMERIC_H */
