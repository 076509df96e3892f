/*
 * points_return.c
 *		Partial returns: loyalty.points_return_for_order() takes back the share of an
 *		order's earning that matches the amount returned, and the tier a
 *		refund may undo (points_program.tier_downgrade = 'on_refund'), shared
 *		with reverse_points (points_reverse.c calls into this file, never the
 *		other way round).
 *
 * Shares (exact, cumulative, rounded down): after returns of R out of the
 * order's amount A, the returns together have taken back
 *		floor(E * R / A) points and floor(Q * R / A) qualifying points
 * of the earning's E points and Q qualifying points (integer division of
 * exact numerics), so each return takes the difference to what the earlier
 * ones took: never more than earned, and when everything is returned
 * (R = A) exactly E and Q, as a full reversal.  Points of the earning that
 * expired are not taken back (as reverse_points): the returns together take
 * at most E minus them.  The returned amount itself comes off the
 * qualifying spend.  What is taken comes first from the earning's own lots
 * (available or pending); the rest is taken like a reversal's shortfall:
 * available lots first in, first out, then pending lots, then debt.  Rule
 * caps get their room back when the last part of the order is returned.
 *
 * A return is a ledger entry of kind 'return' under the caller's return
 * reference, reversing the earn entry (reverses = {earn entry}); its detail
 * records the order reference, the amount returned and the points taken.
 * reverse_points of the order afterwards takes back only what the returns
 * left (PointsReturnedOf).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

PG_FUNCTION_INFO_V1(points_return_for_order);

typedef enum ReturnPlanId
{
	P_EARNING,
	P_RETURNED,
	P_SHARE,
	P_OWN_LOTS,
	P_DOWNGRADE,
	NRETURNPLANS
} ReturnPlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog return_plans;

/*
 * The earn entry of an order (earn_for_order: amount not null) and whether
 * the order was reversed; rule usage as reverse_points reads it.
 */
static const char earning_sql[] =
"SELECT e.entry_id, e.points, e.qualifying, e.amount, e.lot_ids, e.effective_at,"
"       ARRAY(SELECT (d ->> 'rule_id')::int8 FROM jsonb_array_elements(e.detail) d WHERE d ? 'period'),"
"       ARRAY(SELECT (d ->> 'period')::date FROM jsonb_array_elements(e.detail) d WHERE d ? 'period'),"
"       ARRAY(SELECT -(d ->> 'points')::int8 FROM jsonb_array_elements(e.detail) d WHERE d ? 'period'),"
"       (SELECT v.entry_id FROM loyalty.points_ledger v"
"         WHERE v.reference = $1 AND v.kind = 'reverse' AND v.customer_id = $2)"
"  FROM loyalty.points_ledger e"
" WHERE e.reference = $1 AND e.kind = 'earn' AND e.customer_id = $2";

/* What the returns of an earn entry took so far: points, qualifying points, amount. */
static const char returned_sql[] =
"SELECT coalesce(sum((r.detail ->> 'taken')::int8), 0)::int8,"
"       coalesce(sum(-r.qualifying), 0)::int8, coalesce(sum(-r.amount), 0)::numeric"
"  FROM loyalty.points_ledger r"
" WHERE r.customer_id = $1 AND r.kind = 'return' AND r.reverses = ARRAY[$2::int8]";

/* floor(E * R / A) and floor(Q * R / A), exactly (div truncates; all are >= 0). */
static const char share_sql[] =
"SELECT pg_catalog.div($1::numeric * $3, $4)::int8, pg_catalog.div($2::numeric * $3, $4)::int8";

/* The earning's own lots in FIFO order, with what expired of them. */
static const char own_lots_sql[] =
"SELECT lot_id, remaining, expired, state = 'pending'"
"  FROM loyalty.points_lot WHERE lot_id = ANY ($1)"
" ORDER BY expires_at NULLS LAST, earned_at, lot_id";

/* Typed and schema-qualified: the owner's function, nobody else's. */
static const char downgrade_sql[] =
"SELECT loyalty._points_refund_downgrade($1::pg_catalog.text, $2::pg_catalog.timestamptz,"
"                                        $3::pg_catalog.timestamptz)";

/*
 * What earlier partial returns took of the earn entry earn_id of a locked
 * account: points, qualifying points and the amount returned (must be
 * called inside SPI).  reverse_points takes back only the rest.
 */
void
PointsReturnedOf(const char *customer_id, int64 earn_id, int64 *taken, int64 *qualifying,
				 Datum *amount)
{
	Datum		v[2];
	LoyaltyRow	r;
	bool		isnull;

	v[0] = CStringGetTextDatum(customer_id);
	v[1] = Int64GetDatum(earn_id);
	LoyaltyExec(LoyaltyPlanGet(&return_plans, P_RETURNED), v, NULL, false, SPI_OK_SELECT);
	r = LoyaltySpiRow(0);
	*taken = LoyaltyColInt64(r, 1, NULL);
	*qualifying = LoyaltyColInt64(r, 2, NULL);
	*amount = LoyaltyColDatum(r, 3, &isnull);
}

/*
 * With points_program.tier_downgrade = 'on_refund', a refund (reversal or
 * partial return) of the earning made at earned_at undoes the upgrade that
 * earning caused, when the qualifying value left no longer reaches the
 * tier (loyalty._points_refund_downgrade, which records it in
 * tier_history).  Called after the refund was written, account locked.
 */
void
PointsRefundDowngrade(const PointsAccount *acct, TimestampTz earned_at, TimestampTz at)
{
	Datum		v[3];

	if (!acct->program.downgrade_on_refund || acct->tier == NULL)
		return;
	v[0] = CStringGetTextDatum(acct->customer_id);
	v[1] = TimestampTzGetDatum(earned_at);
	v[2] = TimestampTzGetDatum(at);
	LoyaltyExec(LoyaltyPlanGet(&return_plans, P_DOWNGRADE), v, NULL, false, SPI_OK_SELECT);
}

/* The returned amount: finite and positive (22023 otherwise). */
static Numeric
ReturnAmountArg(FunctionCallInfo fcinfo, int argno)
{
	Numeric		amount;

	LoyaltyArgNotNull(fcinfo, argno, "amount");
	amount = PG_GETARG_NUMERIC(argno);
	if (numeric_is_nan(amount) || numeric_is_inf(amount) ||
		LoyaltyNumericCmp(amount, LoyaltyNumericZero()) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount must be a finite number greater than 0")));
	return amount;
}

/*
 * Take "take" points of the earning back: from its own lots first (FIFO),
 * the rest from the account like a reversal's shortfall.  Returns nothing;
 * the lot changes and the debt are added to chg and acct.
 */
static void
TakeFromEarning(PointsAccount *acct, PointsChange *chg, int64 take, int nlots, int64 *lots)
{
	int64		shortfall = take;

	chg->move_lot = palloc(sizeof(int64) * (nlots + 1));
	chg->move_delta = palloc(sizeof(int64) * (nlots + 1));
	if (nlots > 0)
	{
		Datum		v[1];

		v[0] = LoyaltyInt8ArrayDatum(lots, nlots);
		LoyaltyExec(LoyaltyPlanGet(&return_plans, P_OWN_LOTS), v, NULL, false, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed && shortfall > 0; i++)
		{
			LoyaltyRow	l = LoyaltySpiRow(i);
			int64		remaining = LoyaltyColInt64(l, 2, NULL);
			int64		n = Min(remaining, shortfall);

			if (n == 0)
				continue;
			chg->move_lot[chg->nmoves] = LoyaltyColInt64(l, 1, NULL);
			chg->move_delta[chg->nmoves] = -n;
			chg->nmoves++;
			if (LoyaltyColBool(l, 4))
				acct->pending -= n;
			else
				acct->available -= n;
			shortfall -= n;
		}
	}
	PointsDebit(acct, chg, shortfall, nlots, lots);
}

/* Points of the earning's own lots that expired (not taken back again). */
static int64
ExpiredOfEarning(int nlots, int64 *lots)
{
	Datum		v[1];
	int64		expired = 0;

	if (nlots == 0)
		return 0;
	v[0] = LoyaltyInt8ArrayDatum(lots, nlots);
	LoyaltyExec(LoyaltyPlanGet(&return_plans, P_OWN_LOTS), v, NULL, false, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
		expired += LoyaltyColInt64(LoyaltySpiRow(i), 3, NULL);
	return expired;
}

/* LP012: the return exceeds what is left of the order's amount. */
static void
ReturnTooLarge(const char *order_ref, Numeric order_amount, Datum returned, Numeric amount)
{
	ereport(ERROR,
			(errcode(ERRCODE_POINTS_RETURN_EXCEEDS),
			 errmsg("return of %s exceeds what is left of order \"%s\"",
					numeric_normalize(amount), order_ref),
			 errdetail("%s", PointsDetail("return_exceeds_order", "order_ref", PointsQuote(order_ref),
										 "order_amount", numeric_normalize(order_amount),
										 "returned", numeric_normalize(DatumGetNumeric(returned)),
										 "requested", numeric_normalize(amount), NULL)),
			 errhint("Return at most the order amount less what was returned before; reverse_points refunds the whole order.")));
}

/*
 * Sets up the change of one return in chg and acct, once the earning row
 * e (earning_sql) is known and the request is new.
 */
static void
ReturnChange(PointsAccount *acct, PointsChange *chg, LoyaltyRow e, const char *order_ref,
			 Numeric amount)
{
	int64		earn_id = LoyaltyColInt64(e, 1, NULL);
	int64		earned = LoyaltyColInt64(e, 2, NULL);
	int64		qualifying = LoyaltyColInt64(e, 3, NULL);
	bool		isnull;
	Numeric		order_amount = DatumGetNumeric(LoyaltyColDatum(e, 4, &isnull));
	int64	   *lots = NULL;
	int			nlots;
	int64		taken,
				qtaken,
				share,
				qshare,
				take,
				expired;
	Datum		returned;
	Numeric		total;
	Datum		v[4];
	StringInfoData detail;

	PointsReturnedOf(acct->customer_id, earn_id, &taken, &qtaken, &returned);
	total = LoyaltyNumericAdd(DatumGetNumeric(returned), amount);
	if (LoyaltyNumericCmp(total, order_amount) > 0)
		ReturnTooLarge(order_ref, order_amount, returned, amount);

	/* the cumulative shares, rounded down; the last return takes the rest */
	v[0] = Int64GetDatum(earned);
	v[1] = Int64GetDatum(qualifying);
	v[2] = NumericGetDatum(total);
	v[3] = NumericGetDatum(order_amount);
	LoyaltyExec(LoyaltyPlanGet(&return_plans, P_SHARE), v, NULL, false, SPI_OK_SELECT);
	share = LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
	qshare = LoyaltyColInt64(LoyaltySpiRow(0), 2, NULL);

	nlots = 0;
	{
		bool		lnull;
		Datum		d = LoyaltyColDatum(e, 5, &lnull);

		if (!lnull)
		{
			Datum	   *elems;

			deconstruct_array(DatumGetArrayTypeP(d), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
							  &elems, NULL, &nlots);
			lots = palloc(sizeof(int64) * (nlots + 1));
			for (int i = 0; i < nlots; i++)
				lots[i] = DatumGetInt64(elems[i]);
		}
	}
	expired = ExpiredOfEarning(nlots, lots);
	take = Max(Min(share, earned - expired) - taken, 0);

	chg->reverses = palloc(sizeof(int64));
	chg->reverses[chg->nreverses++] = earn_id;
	chg->qualifying = -(qshare - qtaken);
	chg->amount = DirectFunctionCall1(numeric_uminus, NumericGetDatum(amount));
	chg->has_amount = true;
	chg->bucket_month = PointsMonthOf(LoyaltyColTimestamp(e, 6, NULL), acct->program.tz);
	acct->qualifying -= qshare - qtaken;
	acct->lifetime_earned -= take;
	TakeFromEarning(acct, chg, take, nlots, lots);

	/* the last part of the order gives the rule caps their room back */
	if (LoyaltyNumericCmp(total, order_amount) == 0)
	{
		ArrayType  *a;
		Datum	   *elems;
		int			n;

		a = DatumGetArrayTypeP(LoyaltyColDatum(e, 7, &isnull));
		deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, NULL, &n);
		chg->nusage = n;
		chg->usage_rule = palloc(sizeof(int64) * (n + 1));
		chg->usage_period = palloc(sizeof(DateADT) * (n + 1));
		chg->usage_points = palloc(sizeof(int64) * (n + 1));
		for (int i = 0; i < n; i++)
			chg->usage_rule[i] = DatumGetInt64(elems[i]);
		a = DatumGetArrayTypeP(LoyaltyColDatum(e, 8, &isnull));
		deconstruct_array(a, DATEOID, 4, true, TYPALIGN_INT, &elems, NULL, &n);
		for (int i = 0; i < n && i < chg->nusage; i++)
			chg->usage_period[i] = DatumGetDateADT(elems[i]);
		a = DatumGetArrayTypeP(LoyaltyColDatum(e, 9, &isnull));
		deconstruct_array(a, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &elems, NULL, &n);
		if (n != chg->nusage)
			elog(ERROR, "inconsistent rule detail in ledger entry " INT64_FORMAT, earn_id);
		for (int i = 0; i < n; i++)
			chg->usage_points[i] = DatumGetInt64(elems[i]);
	}

	/* the entry's points: every lot change, net of the debt change */
	chg->points = -chg->debt_change;
	for (int i = 0; i < chg->nmoves; i++)
		chg->points = PointsAdd(chg->points, chg->move_delta[i], "returned points");

	initStringInfo(&detail);
	appendStringInfo(&detail, "{\"order_ref\": %s, \"returned\": %s, \"taken\": " INT64_FORMAT "}",
					 PointsQuote(order_ref), numeric_normalize(amount), take);
	chg->detail = detail.data;
}

/*
 * loyalty.points_return_for_order(customer_id, order_ref, return_ref, amount, at):
 * a partial return of an order earned with earn_for_order: the points
 * matching the returned amount are taken back (see the file header).
 * Idempotent on return_ref (same order and amount: the first receipt;
 * different: LP002).  LP003: no earn_for_order under order_ref for the
 * customer; LP005: the order was reversed; LP012: more than is left of
 * the order's amount.
 */
Datum
points_return_for_order(PG_FUNCTION_ARGS)
{
	char	   *customer_id = text_to_cstring(PointsArgKey(fcinfo, 0, "customer_id"));
	char	   *order_ref = text_to_cstring(PointsArgKey(fcinfo, 1, "order_ref"));
	char	   *return_ref = text_to_cstring(PointsArgKey(fcinfo, 2, "return_ref"));
	Numeric		amount = ReturnAmountArg(fcinfo, 3);
	TimestampTz at = PointsArgWriteTime(fcinfo, 4, "at");
	const char *parts[2];
	uint64		hash;
	PointsAccount acct;
	PointsChange chg;
	PointsReceipt receipt;
	Datum		v[2];
	bool		isnull;
	SPITupleTable *earning;
	TimestampTz earned_at;

	parts[0] = order_ref;
	parts[1] = numeric_normalize(amount);
	hash = PointsHash(POINTS_RETURN, customer_id, 2, parts);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PointsLockAccount(&acct, customer_id, false, at);
	if (acct.found)
	{
		PointsClaimReference(return_ref, customer_id);
		if (PointsFindRequest(return_ref, POINTS_RETURN, customer_id, hash, &receipt))
		{
			SPI_finish();
			PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
		}
		v[0] = CStringGetTextDatum(order_ref);
		v[1] = CStringGetTextDatum(customer_id);
		LoyaltyExec(LoyaltyPlanGet(&return_plans, P_EARNING), v, NULL, false, SPI_OK_SELECT);
	}
	if (!acct.found || SPI_processed == 0 ||
		(LoyaltyColDatum(LoyaltySpiRow(0), 4, &isnull), isnull))
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_UNKNOWN_REFERENCE),
				 errmsg("no order was earned with earn_for_order under reference \"%s\" for customer \"%s\"",
						order_ref, customer_id),
				 errdetail("%s", PointsDetail("unknown_reference", "reference", PointsQuote(order_ref),
											 "customer_id", PointsQuote(customer_id), NULL))));
	earning = SPI_tuptable;
	(void) LoyaltyColInt64(LoyaltySpiRowOf(earning, 0), 10, &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_REFERENCE_REVERSED),
				 errmsg("reference \"%s\" was reversed", order_ref),
				 errdetail("%s", PointsDetail("reference_reversed", "reference", PointsQuote(order_ref),
											 "reversal_entry_id",
											 PointsJsonInt(LoyaltyColInt64(LoyaltySpiRowOf(earning, 0), 10, NULL)),
											 NULL)),
				 errhint("The whole order was refunded already.")));

	PointsCheckBackdating(&acct, at, NULL);
	PointsSettleIfDue(&acct, at);

	PointsChangeInit(&chg, POINTS_RETURN, at);
	chg.reference = return_ref;
	chg.reason = "return";
	chg.request_hash = hash;
	earned_at = LoyaltyColTimestamp(LoyaltySpiRowOf(earning, 0), 6, NULL);
	ReturnChange(&acct, &chg, LoyaltySpiRowOf(earning, 0), order_ref, amount);
	PointsReceiptFrom(&receipt, &acct, PointsWrite(&acct, &chg, NULL), chg.points);
	PointsRefundDowngrade(&acct, earned_at, at);
	SPI_finish();
	PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef ReturnPlanDefs[NRETURNPLANS] = {
	[P_EARNING] = {earning_sql, 2, {TEXTOID, TEXTOID}},
	[P_RETURNED] = {returned_sql, 2, {TEXTOID, INT8OID}},
	[P_SHARE] = {share_sql, 4, {INT8OID, INT8OID, NUMERICOID, NUMERICOID}},
	[P_OWN_LOTS] = {own_lots_sql, 1, {INT8ARRAYOID}},
	[P_DOWNGRADE] = {downgrade_sql, 3, {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID}},
};

static SPIPlanPtr return_plan_slots[NRETURNPLANS];

static LoyaltyPlanCatalog return_plans = {
	"points returns", ReturnPlanDefs, NRETURNPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, return_plan_slots, 0
};
