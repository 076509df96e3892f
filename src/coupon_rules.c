/*
 * coupon_rules.c
 *		Eligibility rules of a campaign (loyalty.campaign_rule): all must
 *		hold for the customer and the order, else the reason is not_eligible.
 *
 * Kinds are listed in loyalty.eligibility_kind.  Two are built in and
 * evaluated here:
 *	segment			params {"segments": ["At Risk", ...]}: the customer's
 *					current segment in loyalty.customer_segment is one of
 *					them (a customer without a row there is not eligible);
 *	new_customer	params {"new": true} (the default) or {"new": false}: the
 *					order context's "new_customer" flag says so; a context
 *					without the flag satisfies neither.  The app decides what
 *					"new" means (no earlier order in its own records).
 * Any other kind names a check function (customer_id text, params jsonb,
 * order_context jsonb) RETURNS boolean, registered by the extension owner
 * and owned by a superuser (it runs with the extension owner's rights);
 * true admits, false or null refuses.  That is how tier eligibility plugs in
 * once tiers exist: the tier module registers kind 'tier' with its function.
 */
#include "coupon.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

/* The context as jsonb for a check function; built once for plain amounts. */
static Jsonb *
ContextJson(const OrderContext *ctx)
{
	JsonbParseState *state = NULL;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue *res;

	if (ctx->json != NULL)
		return ctx->json;
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	k.type = jbvString;
	k.val.string.val = "amount";
	k.val.string.len = 6;
	pushJsonbValue(&state, WJB_KEY, &k);
	v.type = jbvNumeric;
	v.val.numeric = ctx->amount;
	pushJsonbValue(&state, WJB_VALUE, &v);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	((OrderContext *) ctx)->json = JsonbValueToJsonb(res);
	return ctx->json;
}

/* Whether a segment name is listed in params.segments. */
static bool
SegmentListed(Jsonb *params, const char *segment)
{
	JsonbValue	v;
	JsonbContainer *arr;
	int			n;
	int			i;
	int			len = strlen(segment);

	if (!getKeyJsonValueFromContainer(&params->root, "segments", 8, &v) ||
		v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
		return false;
	arr = v.val.binary.data;
	n = JsonContainerSize(arr);
	for (i = 0; i < n; i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(arr, i);

		if (e->type == jbvString && e->val.string.len == len &&
			memcmp(e->val.string.val, segment, len) == 0)
			return true;
	}
	return false;
}

/* new_customer rule: params.new (default true) against the context flag. */
static bool
NewCustomerMatches(Jsonb *params, const OrderContext *ctx)
{
	JsonbValue	v;
	bool		want = true;

	if (getKeyJsonValueFromContainer(&params->root, "new", 3, &v) &&
		v.type == jbvBool)
		want = v.val.boolean;
	if (ctx->new_customer < 0)
		return false;
	return (ctx->new_customer == 1) == want;
}

/*
 * Refuse a check function that a role other than a superuser owns.  Check
 * functions run inside the SECURITY DEFINER coupon functions, that is with
 * the extension owner's (a superuser's) rights: the owner of a function can
 * replace its body at any time (CREATE OR REPLACE), so a function owned by
 * an ordinary role would let that role run any code as a superuser on the
 * next validate_coupon.  Checked on every call, not only when the kind is
 * registered: ownership can change afterwards, and a restore can load
 * eligibility_kind rows without running any trigger.
 */
static void
CheckFunctionTrusted(Oid fn, const char *kind)
{
	HeapTuple	tup;
	Oid			owner;
	char	   *owner_name;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("check function of eligibility rule kind \"%s\" does not exist", kind),
				 errdetail("loyalty.eligibility_kind names function OID %u, which was dropped.", fn),
				 errhint("Register the kind again with an existing function.")));
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	if (superuser_arg(owner))
		return;
	owner_name = GetUserNameFromId(owner, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("check function %s of eligibility rule kind \"%s\" is not owned by a superuser",
					format_procedure(fn), kind),
			 errdetail("Check functions run with the rights of the extension owner; role \"%s\" owns this one and could replace its body.",
					   owner_name ? owner_name : "?"),
			 errhint("Review the function and make a superuser own it (ALTER FUNCTION ... OWNER TO), or register another function.")));
}

/* Call a registered check function; null counts as false. */
static bool
CallCheckFunction(Oid fn, const char *kind, const char *customer_id,
				  Jsonb *params, const OrderContext *ctx)
{
	LOCAL_FCINFO(fcinfo, 3);
	FmgrInfo	flinfo;
	Datum		result;

	CheckFunctionTrusted(fn, kind);
	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 3, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(customer_id);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = JsonbPGetDatum(params);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = JsonbPGetDatum(ContextJson(ctx));
	fcinfo->args[2].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	return !fcinfo->isnull && DatumGetBool(result);
}

/*
 * Whether every rule of the campaign admits this customer and order.  The
 * customer's segment is read at most once per call.
 */
bool
CouponRulesAllow(const Campaign *cm, const char *customer_id,
				 const OrderContext *ctx)
{
	int			i;
	bool		segment_read = false;
	char	   *segment = NULL;

	for (i = 0; i < cm->nrules; i++)
	{
		const CouponRule *r = &cm->rules[i];

		if (OidIsValid(r->check_function))
		{
			if (!CallCheckFunction(r->check_function, r->kind, customer_id,
								   r->params, ctx))
				return false;
		}
		else if (strcmp(r->kind, "segment") == 0)
		{
			if (!segment_read)
			{
				segment = CouponCustomerSegment(customer_id);
				segment_read = true;
			}
			if (segment == NULL || !SegmentListed(r->params, segment))
				return false;
		}
		else if (strcmp(r->kind, "new_customer") == 0)
		{
			if (!NewCustomerMatches(r->params, ctx))
				return false;
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("eligibility rule kind \"%s\" has no check function",
							r->kind),
					 errhint("Register one in loyalty.eligibility_kind.")));
	}
	return true;
}
