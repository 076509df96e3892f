/*
 * loyalty_call.c
 *		Calling a C implementation with permuted arguments (see
 *		loyalty_call.h).
 */
#include "loyalty_call.h"

#include "loyalty_args.h"

/*
 * Call map->impl with the arguments of the current call rearranged by
 * map->from, and return its result with its null flag.  One function call
 * frame on the stack and a copy of at most LOYALTY_CALL_MAX_ARGS
 * (value, isnull) pairs: no allocation, no catalog access.
 */
Datum
LoyaltyCallPermuted(FunctionCallInfo fcinfo, const LoyaltyCallMap *map)
{
	LOCAL_FCINFO(inner, LOYALTY_CALL_MAX_ARGS);
	Datum		result;

	if (map->nargs < 0 || map->nargs > LOYALTY_CALL_MAX_ARGS)
		elog(ERROR, "loyalty call map of %d arguments", map->nargs);
	InitFunctionCallInfoData(*inner, fcinfo->flinfo, map->nargs,
							 fcinfo->fncollation, fcinfo->context,
							 fcinfo->resultinfo);
	for (int i = 0; i < map->nargs; i++)
	{
		int			src = map->from[i];

		if (src == LOYALTY_CALL_NULL)
		{
			inner->args[i].value = (Datum) 0;
			inner->args[i].isnull = true;
		}
		else
		{
			if (src < 0 || src >= fcinfo->nargs)
				elog(ERROR, "loyalty call map names argument %d of %d", src, fcinfo->nargs);
			inner->args[i] = fcinfo->args[src];
		}
	}
	result = map->impl(inner);
	fcinfo->isnull = inner->isnull;
	return result;
}

/*
 * Refuse (22004, loyalty_args.h) a NULL among the first n arguments of the
 * current call, named by names[] and checked in signature order: an entry
 * of a new name calls this before LoyaltyCallPermuted, so that a call
 * missing several arguments names the first one of the new signature, not
 * the first one of the implementation's.
 */
void
LoyaltyRequireArgs(FunctionCallInfo fcinfo, int n, const char *const *names)
{
	for (int i = 0; i < n; i++)
		LoyaltyArgNotNull(fcinfo, i, names[i]);
}
