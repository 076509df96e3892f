/*
 * points_args.c
 *		The points family's argument rules and small arithmetic: customer ids
 *		and references (required, 1..LOYALTY_MAX_KEY_BYTES bytes), business
 *		times (finite; a mutating call's at most a few minutes ahead), checked
 *		bigint addition and the request fingerprint of idempotent calls.
 *
 * The lowest file of the family: every other points file calls into it and
 * it calls none of them.
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

/* ------------------------------------------------------------------------
 * Arguments
 * ------------------------------------------------------------------------ */

/*
 * A customer id, reference or action name: required, not empty, at most
 * LOYALTY_MAX_KEY_BYTES bytes (the limit coupons apply to customer ids and
 * order references, so that every order reference a coupon call accepts
 * can be used here too).  A reference derived by the extension from a
 * caller's (exchange:<ref>, <order_ref>:coupon-bonus) is measured without
 * the part the extension added.
 */
text *
PointsArgKey(FunctionCallInfo fcinfo, int argno, const char *name)
{
	LoyaltyArgNotNull(fcinfo, argno, name);
	return PointsCheckKey(PG_GETARG_TEXT_PP(argno), name);
}

/* The checks of PointsArgKey on a value (see there). */
text *
PointsCheckKey(text *t, const char *name)
{
	int			len = VARSIZE_ANY_EXHDR(t);
	const char *p = VARDATA_ANY(t);
	int			own = len;

	if (strcmp(name, "reference") == 0)
	{
		int			plen = strlen(POINTS_EXCHANGE_PREFIX);
		int			slen = strlen(POINTS_BONUS_SUFFIX);

		if (own >= plen && memcmp(p, POINTS_EXCHANGE_PREFIX, plen) == 0)
			own -= plen;
		else if (own >= slen && memcmp(p + len - slen, POINTS_BONUS_SUFFIX, slen) == 0)
			own -= slen;
	}
	if (own == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", name)));
	if (own > LOYALTY_MAX_KEY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %d bytes long", name, LOYALTY_MAX_KEY_BYTES),
				 errdetail("This one has %d bytes; customer ids and references have 1 to %d bytes in every loyalty function.",
						   own, LOYALTY_MAX_KEY_BYTES)));
	return t;
}

PG_FUNCTION_INFO_V1(points_inserted_here);

/*
 * loyalty._points_inserted_here(xmin): whether the row was inserted by the
 * current transaction or one of its subtransactions.  exchange_points finds
 * the code it just issued this way: a code another transaction bound to the
 * same customer meanwhile is never taken for it.
 */
Datum
points_inserted_here(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(TransactionIdIsCurrentTransactionId(DatumGetTransactionId(PG_GETARG_DATUM(0))));
}

PG_FUNCTION_INFO_V1(points_check_key);

/*
 * loyalty._points_check_key(name, value): the checks of PointsArgKey for
 * the plpgsql functions (exchange_points, earn_coupon_bonus, tier_progress),
 * so that they share one limit with the C functions.
 */
Datum
points_check_key(PG_FUNCTION_ARGS)
{
	char	   *name;

	if (PG_ARGISNULL(0))
		elog(ERROR, "argument name must not be null");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PointsArgKey(fcinfo, 1, name);
	PG_RETURN_VOID();
}

/* A number of points: required and positive. */
int64
PointsArgPositive(FunctionCallInfo fcinfo, int argno, const char *name)
{
	int64		v;

	LoyaltyArgNotNull(fcinfo, argno, name);
	v = PG_GETARG_INT64(argno);
	if (v <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be positive, not " INT64_FORMAT, name, v)));
	return v;
}

/* The business time of a call: required and finite. */
TimestampTz
PointsArgTime(FunctionCallInfo fcinfo, int argno, const char *name)
{
	TimestampTz t;

	LoyaltyArgNotNull(fcinfo, argno, name);
	t = PG_GETARG_TIMESTAMPTZ(argno);
	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite time", name)));
	return t;
}

/*
 * The business time of a mutating call: PointsArgTime, and not more than
 * POINTS_MAX_FUTURE_SKEW_SECS ahead of the server clock.  A future time
 * would settle the account as of then: lots expired and pending points
 * activated early, which no reversal undoes.  Read-only calls
 * (points_balance) may look ahead.
 */
TimestampTz
PointsArgWriteTime(FunctionCallInfo fcinfo, int argno, const char *name)
{
	TimestampTz t = PointsArgTime(fcinfo, argno, name);
	TimestampTz limit = GetCurrentTimestamp() + (TimestampTz) POINTS_MAX_FUTURE_SKEW_SECS * USECS_PER_SEC;

	if (t > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not lie in the future", name),
				 errdetail("%s is %s; points calls accept business times up to %d seconds ahead of the server clock.",
						   name, timestamptz_to_str(t), POINTS_MAX_FUTURE_SKEW_SECS)));
	return t;
}

/* a + b, or the documented out-of-range error. */
int64
PointsAdd(int64 a, int64 b, const char *what)
{
	int64		r;

	if (pg_add_s64_overflow(a, b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s out of range", what),
				 errdetail("Points are bigint; " INT64_FORMAT " + " INT64_FORMAT " does not fit.", a, b)));
	return r;
}

/*
 * Fingerprint of a request: kind, customer and every argument that makes up
 * its content (not the time, which differs on a retry).  Parts are length-
 * prefixed so that no two different requests serialise alike.
 */
uint64
PointsHash(const char *kind, const char *customer_id, int nparts, const char **parts)
{
	StringInfoData buf;
	uint64		h;

	initStringInfo(&buf);
	appendStringInfo(&buf, "%zu:%s%zu:%s", strlen(kind), kind, strlen(customer_id), customer_id);
	for (int i = 0; i < nparts; i++)
	{
		if (parts[i] == NULL)
			appendStringInfoChar(&buf, 'N');
		else
			appendStringInfo(&buf, "%zu:%s", strlen(parts[i]), parts[i]);
	}
	h = hash_bytes_extended((const unsigned char *) buf.data, buf.len, UINT64CONST(0x4c4f59414c5459));
	pfree(buf.data);
	return h;
}


/*
 * A text value as it appears in the DETAIL of a points error (doc/points.md,
 * "Errors"): a JSON string literal, escaped by escape_json, whatever a
 * customer id or reference contains.  NULL gives the JSON null.
 */
char *
PointsQuote(const char *s)
{
	StringInfoData buf;

	if (s == NULL)
		return pstrdup("null");
	initStringInfo(&buf);
	escape_json(&buf, s);
	return buf.data;
}

/* An integer value of a points error's DETAIL: a plain JSON number. */
char *
PointsJsonInt(int64 value)
{
	return psprintf(INT64_FORMAT, value);
}

/*
 * The DETAIL of a points business error (an LP SQLSTATE), built in this one
 * place so that every LP error has the shape of the coupon family's (one
 * JSON object, doc/errors.md): "reason" first with the SQLSTATE's reason
 * token, then the key / value pairs given, in order, as (const char *) key,
 * (const char *) JSON value, ending with a NULL key.  Each value is already
 * JSON: PointsQuote for texts and states (and null), PointsJsonInt or
 * numeric_normalize of a finite numeric for numbers; keys are fixed
 * lower-case words from the caller, never data.
 */
char *
PointsDetail(const char *reason,...)
{
	StringInfoData buf;
	va_list		args;
	const char *key;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"reason\": ");
	escape_json(&buf, reason);
	va_start(args, reason);
	while ((key = va_arg(args, const char *)) != NULL)
	{
		const char *value = va_arg(args, const char *);

		appendStringInfoString(&buf, ", ");
		escape_json(&buf, key);
		appendStringInfoString(&buf, ": ");
		appendStringInfoString(&buf, value);
	}
	va_end(args);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}
