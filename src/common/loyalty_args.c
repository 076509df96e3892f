/*
 * loyalty_args.c
 *		Refusing missing arguments (see loyalty_args.h).
 */
#include "loyalty_args.h"

/* Raise 22004 "<what> must not be null" when isnull. */
void
LoyaltyCheckNotNull(bool isnull, const char *what)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
}

/* Raise 22004 "<what> must not contain nulls" when hasnull. */
void
LoyaltyCheckNoNulls(bool hasnull, const char *what)
{
	if (hasnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain nulls", what)));
}
