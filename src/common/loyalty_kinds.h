/*
 * loyalty_kinds.h
 *		The column and argument types loyalty reads order amounts and order
 *		times from, as one pair of enums for every family (batch RFM,
 *		tracking).
 */
#ifndef LOYALTY_KINDS_H
#define LOYALTY_KINDS_H

#include "postgres.h"

/* Types of an amount column or argument. */
typedef enum LoyaltyAmountKind
{
	LOYALTY_AMOUNT_NUMERIC,
	LOYALTY_AMOUNT_INT2,
	LOYALTY_AMOUNT_INT4,
	LOYALTY_AMOUNT_INT8,
	LOYALTY_AMOUNT_FLOAT4,
	LOYALTY_AMOUNT_FLOAT8
} LoyaltyAmountKind;

/* Types of an order-time column or argument. */
typedef enum LoyaltyTimeKind
{
	LOYALTY_TIME_TIMESTAMPTZ,
	LOYALTY_TIME_TIMESTAMP,
	LOYALTY_TIME_DATE
} LoyaltyTimeKind;

extern LoyaltyAmountKind LoyaltyAmountKindOf(Oid typid, bool *ok);
extern LoyaltyTimeKind LoyaltyTimeKindOf(Oid typid, bool *ok);

#endif							/* LOYALTY_KINDS_H */
