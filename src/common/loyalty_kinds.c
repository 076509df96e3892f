/*
 * loyalty_kinds.c
 *		Which types are order amounts and order times (see loyalty_kinds.h).
 */
#include "loyalty_kinds.h"

#include "catalog/pg_type.h"

/*
 * Kind of an amount type (a base type: callers strip domains), *ok = false
 * when the type is not accepted.
 */
LoyaltyAmountKind
LoyaltyAmountKindOf(Oid typid, bool *ok)
{
	*ok = true;
	switch (typid)
	{
		case NUMERICOID:
			return LOYALTY_AMOUNT_NUMERIC;
		case INT2OID:
			return LOYALTY_AMOUNT_INT2;
		case INT4OID:
			return LOYALTY_AMOUNT_INT4;
		case INT8OID:
			return LOYALTY_AMOUNT_INT8;
		case FLOAT4OID:
			return LOYALTY_AMOUNT_FLOAT4;
		case FLOAT8OID:
			return LOYALTY_AMOUNT_FLOAT8;
	}
	*ok = false;
	return LOYALTY_AMOUNT_NUMERIC;
}

/* Kind of an order-time type (a base type), *ok = false when not accepted. */
LoyaltyTimeKind
LoyaltyTimeKindOf(Oid typid, bool *ok)
{
	*ok = true;
	switch (typid)
	{
		case TIMESTAMPTZOID:
			return LOYALTY_TIME_TIMESTAMPTZ;
		case TIMESTAMPOID:
			return LOYALTY_TIME_TIMESTAMP;
		case DATEOID:
			return LOYALTY_TIME_DATE;
	}
	*ok = false;
	return LOYALTY_TIME_TIMESTAMPTZ;
}
