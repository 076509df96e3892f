/*
 * loyalty_numeric.c
 *		Exact numeric arithmetic shared by every family (see
 *		loyalty_numeric.h).
 */
#include "loyalty_numeric.h"

#include "fmgr.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"

/*
 * Zero as a numeric: one value per backend, allocated once in
 * TopMemoryContext.  Callers treat it as read-only (numerics are never
 * changed in place) and never free it.
 */
Numeric
LoyaltyNumericZero(void)
{
	static Numeric zero = NULL;

	if (zero == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		zero = LoyaltyNumericFromInt64(0);
		MemoryContextSwitchTo(old);
	}
	return zero;
}

/* An int64 as a numeric (int64_to_numeric is PG14+; this works on 13). */
Numeric
LoyaltyNumericFromInt64(int64 v)
{
	return DatumGetNumeric(DirectFunctionCall1(int8_numeric, Int64GetDatum(v)));
}

/* Whether a numeric equals zero (whatever its display scale). */
bool
LoyaltyNumericIsZero(Numeric n)
{
	return LoyaltyNumericCmp(n, LoyaltyNumericZero()) == 0;
}

/* Three-way comparison of two numerics: negative, zero or positive. */
int
LoyaltyNumericCmp(Numeric a, Numeric b)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(a),
											 NumericGetDatum(b)));
}

/* a + b, exact; overflow raises the usual numeric error. */
Numeric
LoyaltyNumericAdd(Numeric a, Numeric b)
{
	return numeric_add_opt_error(a, b, NULL);
}

/* a - b, exact. */
Numeric
LoyaltyNumericSub(Numeric a, Numeric b)
{
	return numeric_sub_opt_error(a, b, NULL);
}

/* a * b, exact. */
Numeric
LoyaltyNumericMul(Numeric a, Numeric b)
{
	return numeric_mul_opt_error(a, b, NULL);
}

/* a / b with numeric division's scale rule; b = 0 raises 22012. */
Numeric
LoyaltyNumericDiv(Numeric a, Numeric b)
{
	return numeric_div_opt_error(a, b, NULL);
}

/* a rounded half away from zero to scale decimals. */
Numeric
LoyaltyNumericRound(Numeric a, int scale)
{
	return DatumGetNumeric(DirectFunctionCall2(numeric_round,
											   NumericGetDatum(a),
											   Int32GetDatum(scale)));
}

/* a truncated toward zero to scale decimals. */
Numeric
LoyaltyNumericTrunc(Numeric a, int scale)
{
	return DatumGetNumeric(DirectFunctionCall2(numeric_trunc,
											   NumericGetDatum(a),
											   Int32GetDatum(scale)));
}
