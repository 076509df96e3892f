/*
 * loyalty_call.h
 *		Calling an SQL-callable C implementation with its arguments in another
 *		order: how the consistent API names of 0.3.0 (coupon_redeem,
 *		points_earn, ...; doc/api.md) reach the implementations of the older
 *		names (redeem_coupon, earn_points, ...) without a second copy of them.
 *
 * An entry of a new name builds the implementation's call from its own: the
 * same flinfo (so get_call_result_type(), which reads fn_oid and fn_expr,
 * sees the new function, whose result type is by rule the old one's), the
 * same context, resultinfo and collation, and the arguments taken from the
 * caller's positions a permutation table names.  The implementation must not
 * look at the caller's argument positions through flinfo
 * (get_fn_expr_argtype, fn_nargs) nor cache in fn_extra by argument shape:
 * none of the wrapped ones does (checked when each was wrapped; see
 * doc/api.md).  PG_NARGS() is the implementation's own count.
 */
#ifndef LOYALTY_CALL_H
#define LOYALTY_CALL_H

#include "postgres.h"

#include "fmgr.h"

/* Most arguments an implementation reached this way takes. */
#define LOYALTY_CALL_MAX_ARGS	8

/* from[i] for an implementation argument the caller does not pass: NULL. */
#define LOYALTY_CALL_NULL		(-1)

/*
 * How one new name calls its implementation: impl receives nargs arguments,
 * argument i being the caller's argument from[i] (0-based), or SQL NULL for
 * LOYALTY_CALL_NULL.
 */
typedef struct LoyaltyCallMap
{
	PGFunction	impl;
	int			nargs;
	int8		from[LOYALTY_CALL_MAX_ARGS];
} LoyaltyCallMap;

extern Datum LoyaltyCallPermuted(FunctionCallInfo fcinfo, const LoyaltyCallMap *map);
extern void LoyaltyRequireArgs(FunctionCallInfo fcinfo, int n, const char *const *names);

#endif							/* LOYALTY_CALL_H */
