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
 *
 * A configuration problem is a reason, never an error of the app's call:
 * a kind without a check function, or a check function that raises a data
 * exception (SQLSTATE class 22, e.g. a tier rule naming a tier that no
 * longer exists), makes the campaign config_error (LY016).  The admin
 * functions refuse such configuration when it is written (coupon.sql);
 * this covers what was stored before, or written around them.
 */
#include "coupon.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
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

/* Call a check function once; null counts as false. */
static bool
InvokeCheck(Oid fn, const char *customer_id, Jsonb *params,
			Jsonb *context_json)
{
	LOCAL_FCINFO(fcinfo, 3);
	FmgrInfo	flinfo;
	Datum		result;

	fmgr_info(fn, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 3, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(customer_id);
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = JsonbPGetDatum(params);
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = JsonbPGetDatum(context_json);
	fcinfo->args[2].isnull = false;
	result = FunctionCallInvoke(fcinfo);
	return !fcinfo->isnull && DatumGetBool(result);
}

/*
 * Call a registered check function: COUPON_OK when it returns true,
 * COUPON_NOT_ELIGIBLE for false or null, COUPON_CONFIG_ERROR when it raises
 * a data exception (class 22: its parameters name configuration that does
 * not exist, or are malformed).  The call runs in a subtransaction so that
 * such an error can be caught safely; every other error (cancel, out of
 * memory, a broken function) propagates.
 */
static CouponReason
CallCheckFunction(Oid fn, const char *kind, const char *customer_id,
				  Jsonb *params, const OrderContext *ctx)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Jsonb	   *context_json;
	volatile CouponReason reason = COUPON_NOT_ELIGIBLE;

	/* an untrusted function is refused, never run (and not a config_error) */
	CheckFunctionTrusted(fn, kind);
	context_json = ContextJson(ctx);

	/* no subtransaction is possible in parallel mode: errors propagate */
	if (IsInParallelMode())
		return InvokeCheck(fn, customer_id, params, context_json) ?
			COUPON_OK : COUPON_NOT_ELIGIBLE;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		if (InvokeCheck(fn, customer_id, params, context_json))
			reason = COUPON_OK;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			ReThrowError(edata);
		FreeErrorData(edata);
		reason = COUPON_CONFIG_ERROR;
	}
	PG_END_TRY();
	return reason;
}

/*
 * Whether every rule of the campaign admits this customer and order:
 * COUPON_OK, COUPON_NOT_ELIGIBLE, or COUPON_CONFIG_ERROR for a rule that
 * cannot be evaluated (see the file header).  The customer's segment is
 * read at most once per call.
 */
CouponReason
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
			CouponReason reason = CallCheckFunction(r->check_function, r->kind,
													customer_id, r->params,
													ctx);

			if (reason != COUPON_OK)
				return reason;
		}
		else if (strcmp(r->kind, "segment") == 0)
		{
			if (!segment_read)
			{
				segment = CouponCustomerSegment(customer_id);
				segment_read = true;
			}
			if (segment == NULL || !SegmentListed(r->params, segment))
				return COUPON_NOT_ELIGIBLE;
		}
		else if (strcmp(r->kind, "new_customer") == 0)
		{
			if (!NewCustomerMatches(r->params, ctx))
				return COUPON_NOT_ELIGIBLE;
		}
		else
			return COUPON_CONFIG_ERROR; /* a kind without a check function */
	}
	return COUPON_OK;
}
