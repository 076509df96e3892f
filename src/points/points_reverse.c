/*
 * points_reverse.c
 *		Refunds and corrections: loyalty.reverse_points() and
 *		loyalty.adjust_points().
 *
 * Reversal policy (a refund of the order behind a reference):
 *	- Earned points are taken back: first what is left of the earning's own
 *	  lots (available or pending).  What the earning contributed that is gone
 *	  (spent, or used to repay a debt) is the shortfall; points of the earning
 *	  that expired are not taken back a second time.
 *	- Spent points are returned as new lots with the expiry and earning time
 *	  of the lots they were spent from, so they are used again in the same
 *	  order; points whose original expiry has passed are not returned.
 *	- The shortfall is netted against the returned points first (the lots
 *	  that would be consumed first are reduced); the rest is taken from the
 *	  account's available lots first in, first out, then from its pending
 *	  lots, and what is still missing becomes debt, repaid first from the
 *	  next credits.  Available points are never negative.
 *	- Qualifying points and spend of the earning are subtracted from the
 *	  account and from the month they were counted in; rule caps get their
 *	  room back.  What partial returns (points_return_for_order, points_return.c)
 *	  took of the earning already is not taken again.
 *	- A tier is lowered here only with points_program.tier_downgrade =
 *	  'on_refund', undoing the upgrade the earning caused
 *	  (PointsRefundDowngrade); otherwise only evaluate_tiers downgrades.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/numeric.h"

#include "compat.h"
#include "points.h"

PG_FUNCTION_INFO_V1(points_reverse);
PG_FUNCTION_INFO_V1(points_adjust);

typedef enum ReversePlanId
{
	P_LOTS,
	P_VOID,
	P_OWNER,
	P_COUPON_LOCK,
	P_ENTRIES,
	NREVERSEPLANS
} ReversePlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog reverse_plans;

/* the reference's one owner (points_reference, see PointsClaimReference) */
static const char owner_sql[] =
"SELECT customer_id FROM loyalty.points_reference WHERE reference = $1";

/*
 * A spend that bought a coupon (exchange_points) is reversed only together
 * with the coupon: loyalty._points_exchange_void voids it, or refuses
 * (LP010) when it was redeemed or is reserved.  Schema-qualified and typed.
 */
static const char void_sql[] =
"SELECT loyalty._points_exchange_void($1::pg_catalog.int8, $2::pg_catalog.timestamptz)";

/*
 * Lock order: coupon rows before points accounts (the coupon family's
 * order, then points; see README "Lock order").  A transaction that redeems
 * a coupon and then earns points for the customer takes the coupon row,
 * then the account; reversing the exchange that sold that coupon must not
 * take them the other way round, so the sold coupon is locked first, as
 * _points_exchange_void will lock it again.  An exchange not yet committed
 * is not seen: its coupon is new, nobody else can hold it.
 */
static const char coupon_lock_sql[] =
"SELECT c.coupon_id FROM loyalty.points_exchange e"
"  JOIN loyalty.coupon c ON c.coupon_id = e.coupon_id"
" WHERE pg_catalog.starts_with($1, 'exchange:')"
"   AND e.reference = pg_catalog.substr($1, 10) AND e.customer_id = $2"
"   FOR NO KEY UPDATE OF c";

static const char entries_sql[] =
"SELECT e.entry_id, e.kind, e.points, e.qualifying, e.amount, e.lot_ids, e.lot_points,"
"       e.effective_at, e.available_after, e.pending_after, e.debt_after,"
"       ARRAY(SELECT (d ->> 'rule_id')::int8 FROM jsonb_array_elements(e.detail) d WHERE d ? 'period'),"
"       ARRAY(SELECT (d ->> 'period')::date FROM jsonb_array_elements(e.detail) d WHERE d ? 'period'),"
"       ARRAY(SELECT -(d ->> 'points')::int8 FROM jsonb_array_elements(e.detail) d WHERE d ? 'period')"
"  FROM loyalty.points_ledger e"
" WHERE e.reference = $1 AND e.customer_id = $2 AND e.kind IN ('earn', 'spend', 'reverse')";

static const char lots_sql[] =
"SELECT lot_id, remaining, expired, state = 'pending', earned_at, expires_at"
"  FROM loyalty.points_lot WHERE lot_id = ANY ($1)"
" ORDER BY expires_at NULLS LAST, earned_at, lot_id";

/* Elements of an int8[] column of a result row; 0 and NULL when it is null. */
static int
Int64Elems(LoyaltyRow r, int col, int64 **out)
{
	bool		isnull;
	Datum		d = LoyaltyColDatum(r, col, &isnull);
	Datum	   *elems;
	int			n;

	*out = NULL;
	if (isnull)
		return 0;
	deconstruct_array(DatumGetArrayTypeP(d), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, NULL, &n);
	*out = palloc(sizeof(int64) * (n + 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = DatumGetInt64(elems[i]);
	return n;
}

/* Elements of a date[] column (never null: built with ARRAY()). */
static int
DateElems(LoyaltyRow r, int col, DateADT **out)
{
	bool		isnull;
	Datum		d = LoyaltyColDatum(r, col, &isnull);
	Datum	   *elems;
	int			n;

	*out = NULL;
	if (isnull)
		return 0;
	deconstruct_array(DatumGetArrayTypeP(d), DATEOID, 4, true, TYPALIGN_INT, &elems, NULL, &n);
	*out = palloc(sizeof(DateADT) * (n + 1));
	for (int i = 0; i < n; i++)
		(*out)[i] = DatumGetDateADT(elems[i]);
	return n;
}

/* Read the lots with the given ids (FIFO order) into the current SPI result. */
static void
ReadLots(int n, const int64 *ids)
{
	Datum		v[1];

	v[0] = LoyaltyInt8ArrayDatum(ids, n);
	LoyaltyExec(LoyaltyPlanGet(&reverse_plans, P_LOTS), v, NULL, false, SPI_OK_SELECT);
}

/*
 * Take back an earning (its ledger entry is row e of the entries): the
 * qualifying points and spend, the rule usage, and what is left of its own
 * lots.  Returns the shortfall: earned points no longer in those lots
 * (spent meanwhile), taken from the account's other points or as debt.
 */
static int64
ReverseEarning(LoyaltyRow e, PointsAccount *acct, PointsChange *chg,
			   int64 **earn_lots, int *n_earn_lots)
{
	bool		isnull;
	Datum		amount;
	int64		earned;
	int64		qualifying;
	int64		shortfall;
	int64		left = 0,
				expired = 0;

	int64		taken = 0,
				qtaken = 0;
	Datum		returned = (Datum) 0;
	bool		all_returned = false;

	chg->reverses[chg->nreverses++] = LoyaltyColInt64(e, 1, NULL);
	earned = LoyaltyColInt64(e, 3, NULL);
	qualifying = LoyaltyColInt64(e, 4, NULL);
	amount = LoyaltyColDatum(e, 5, &isnull);
	if (!isnull)
	{
		/* partial returns (points_return_for_order) took their share already */
		PointsReturnedOf(acct->customer_id, chg->reverses[0], &taken, &qtaken, &returned);
		all_returned = LoyaltyNumericCmp(DatumGetNumeric(returned), DatumGetNumeric(amount)) >= 0;
		amount = NumericGetDatum(LoyaltyNumericSub(DatumGetNumeric(amount), DatumGetNumeric(returned)));
		chg->amount = DirectFunctionCall1(numeric_uminus, amount);
		chg->has_amount = true;
	}
	chg->qualifying = -(qualifying - qtaken);
	acct->qualifying -= qualifying - qtaken;
	acct->lifetime_earned -= earned - taken;
	chg->bucket_month = PointsMonthOf(LoyaltyColTimestamp(e, 8, NULL),
									  acct->program.tz);
	/* rule caps get their room back (unless the returns gave it back) */
	chg->nusage = Int64Elems(e, 12, &chg->usage_rule);
	if (DateElems(e, 13, &chg->usage_period) != chg->nusage ||
		Int64Elems(e, 14, &chg->usage_points) != chg->nusage)
		elog(ERROR, "inconsistent rule detail in ledger entry " INT64_FORMAT, chg->reverses[0]);
	if (all_returned)
		chg->nusage = 0;

	/* what is left of the earning's own lots is taken back */
	*n_earn_lots = Int64Elems(e, 6, earn_lots);
	if (*n_earn_lots > 0)
	{
		ReadLots(*n_earn_lots, *earn_lots);
		chg->move_lot = repalloc(chg->move_lot, sizeof(int64) * (SPI_processed + 1));
		chg->move_delta = repalloc(chg->move_delta, sizeof(int64) * (SPI_processed + 1));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			LoyaltyRow	l = LoyaltySpiRow(i);
			int64		lot = LoyaltyColInt64(l, 1, NULL);
			int64		remaining = LoyaltyColInt64(l, 2, NULL);
			bool		pending = LoyaltyColBool(l, 4);

			expired += LoyaltyColInt64(l, 3, NULL);
			if (remaining == 0)
				continue;
			left += remaining;
			chg->move_lot[chg->nmoves] = lot;
			chg->move_delta[chg->nmoves] = -remaining;
			chg->nmoves++;
			if (pending)
				acct->pending -= remaining;
			else
				acct->available -= remaining;
		}
	}
	shortfall = earned - expired - left - taken;
	if (shortfall < 0)
		elog(ERROR, "points lots of entry " INT64_FORMAT " hold more than it earned", chg->reverses[0]);
	return shortfall;
}

/*
 * Give back a spending (its ledger entry is row e of the entries): the
 * coupon an exchange bought is voided (or the reversal refused), and the
 * points it took return as new lots with the expiry of the lots they came
 * from, unless those expired meanwhile.  Returns the points given back.
 */
static int64
ReverseSpending(LoyaltyRow e, TimestampTz at, PointsChange *chg)
{
	Datum		vv[2];
	int64	   *spend_lots = NULL,
			   *spend_deltas = NULL;
	int			n_spend_lots;
	int64		returned = 0;

	chg->reverses[chg->nreverses++] = LoyaltyColInt64(e, 1, NULL);
	/* the coupon an exchange bought is voided, or the reversal refused */
	vv[0] = Int64GetDatum(chg->reverses[chg->nreverses - 1]);
	vv[1] = TimestampTzGetDatum(at);
	LoyaltyExec(LoyaltyPlanGet(&reverse_plans, P_VOID), vv, NULL, false, SPI_OK_SELECT);
	/* (the entries' result is still in "entries": the tuple table survives) */
	n_spend_lots = Int64Elems(e, 6, &spend_lots);
	if (Int64Elems(e, 7, &spend_deltas) != n_spend_lots)
		elog(ERROR, "inconsistent lot arrays in ledger entry " INT64_FORMAT,
			 chg->reverses[chg->nreverses - 1]);
	if (n_spend_lots == 0)
		return 0;
	ReadLots(n_spend_lots, spend_lots);
	chg->lots = palloc0(sizeof(PointsNewLot) * (SPI_processed + 1));
	/* rows come in FIFO order: the lots a spend would take first come first */
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		LoyaltyRow	l = LoyaltySpiRow(i);
		int64		lot = LoyaltyColInt64(l, 1, NULL);
		bool		isnull;
		TimestampTz exp = LoyaltyColTimestamp(l, 6, &isnull);
		bool		expires = !isnull;
		int64		spent = 0;
		PointsNewLot *nl;

		for (int k = 0; k < n_spend_lots; k++)
			if (spend_lots[k] == lot)
				spent -= spend_deltas[k];
		if (spent <= 0 || (expires && exp <= at))
			continue;			/* expired meanwhile: not returned */
		nl = &chg->lots[chg->nlots++];
		nl->points = spent;
		nl->earned_at = LoyaltyColTimestamp(l, 5, NULL);
		nl->pending = false;
		nl->expires = expires;
		nl->expires_at = expires ? exp : 0;
		returned = PointsAdd(returned, spent, "returned points");
	}
	return returned;
}

/*
 * loyalty.reverse_points(reference, customer_id, at).  customer_id may be
 * left NULL: a reference has one owner (loyalty.points_reference).
 * LP003 when nothing was earned or spent under the reference.  A repeat
 * returns the first reversal's result.
 */
Datum
points_reverse(PG_FUNCTION_ARGS)
{
	char	   *reference = text_to_cstring(PointsArgKey(fcinfo, 0, "reference"));
	char	   *customer_id = PG_ARGISNULL(1) ? NULL : text_to_cstring(PointsArgKey(fcinfo, 1, "customer_id"));
	TimestampTz at = PointsArgWriteTime(fcinfo, 2, "at");
	MemoryContext caller = CurrentMemoryContext;
	PointsAccount acct;
	PointsChange chg;
	PointsReceipt receipt;
	Datum		v[2];
	int			earn_row = -1,
				spend_row = -1,
				reverse_row = -1;
	int64	   *earn_lots = NULL;
	int			n_earn_lots = 0;
	int64		shortfall = 0,
				returned = 0;
	SPITupleTable *entries;
	const char *parts[1];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (customer_id == NULL)
	{
		v[0] = CStringGetTextDatum(reference);
		LoyaltyExec(LoyaltyPlanGet(&reverse_plans, P_OWNER), v, NULL, false, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_POINTS_UNKNOWN_REFERENCE),
					 errmsg("no points were earned or spent under reference \"%s\"", reference),
					 errdetail("%s", PointsDetail("unknown_reference", "reference", PointsQuote(reference),
												   "customer_id", "null", NULL))));
		customer_id = MemoryContextStrdup(caller, LoyaltyColText(LoyaltySpiRow(0), 1));
	}
	parts[0] = reference;

	v[0] = CStringGetTextDatum(reference);
	v[1] = CStringGetTextDatum(customer_id);
	LoyaltyExec(LoyaltyPlanGet(&reverse_plans, P_COUPON_LOCK), v, NULL, false, SPI_OK_SELECT);
	PointsLockAccount(&acct, customer_id, false, at);
	if (!acct.found)
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_UNKNOWN_REFERENCE),
				 errmsg("no points were earned or spent under reference \"%s\" for customer \"%s\"",
						reference, customer_id),
				 errdetail("%s", PointsDetail("unknown_reference", "reference", PointsQuote(reference),
											 "customer_id", PointsQuote(customer_id), NULL))));

	/* read the entries after the lock: a concurrent call has committed or not started */
	v[0] = CStringGetTextDatum(reference);
	v[1] = CStringGetTextDatum(customer_id);
	LoyaltyExec(LoyaltyPlanGet(&reverse_plans, P_ENTRIES), v, NULL, false, SPI_OK_SELECT);
	entries = SPI_tuptable;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *kind = LoyaltyColText(LoyaltySpiRowOf(entries, i), 2);

		if (strcmp(kind, POINTS_EARN) == 0)
			earn_row = i;
		else if (strcmp(kind, POINTS_SPEND) == 0)
			spend_row = i;
		else
			reverse_row = i;
	}
	if (reverse_row >= 0)
	{
		LoyaltyRow	r = LoyaltySpiRowOf(entries, reverse_row);

		receipt.entry_id = LoyaltyColInt64(r, 1, NULL);
		receipt.customer_id = customer_id;
		receipt.points = LoyaltyColInt64(r, 3, NULL);
		receipt.available = LoyaltyColInt64(r, 9, NULL);
		receipt.pending = LoyaltyColInt64(r, 10, NULL);
		receipt.debt = LoyaltyColInt64(r, 11, NULL);
		SPI_finish();
		PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
	}
	if (earn_row < 0 && spend_row < 0)
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_UNKNOWN_REFERENCE),
				 errmsg("no points were earned or spent under reference \"%s\" for customer \"%s\"",
						reference, customer_id),
				 errdetail("%s", PointsDetail("unknown_reference", "reference", PointsQuote(reference),
											 "customer_id", PointsQuote(customer_id), NULL))));

	PointsCheckBackdating(&acct, at, NULL);
	PointsSettleIfDue(&acct, at);

	PointsChangeInit(&chg, POINTS_REVERSE, at);
	chg.reference = reference;
	chg.reason = "reversal";
	chg.request_hash = PointsHash(POINTS_REVERSE, customer_id, 1, parts);
	chg.reverses = palloc(sizeof(int64) * 2);
	chg.move_lot = palloc(sizeof(int64));
	chg.move_delta = palloc(sizeof(int64));

	if (earn_row >= 0)
		shortfall = ReverseEarning(LoyaltySpiRowOf(entries, earn_row), &acct, &chg,
								   &earn_lots, &n_earn_lots);
	if (spend_row >= 0)
		returned = ReverseSpending(LoyaltySpiRowOf(entries, spend_row), at, &chg);

	/* net the shortfall against the returned points, first lots first */
	{
		int64		cancel = Min(shortfall, returned);

		shortfall -= cancel;
		for (int i = 0; i < chg.nlots && cancel > 0; i++)
		{
			int64		take = Min(cancel, chg.lots[i].points);

			chg.lots[i].points -= take;
			cancel -= take;
		}
	}
	PointsCredit(&acct, &chg);	/* repays a debt first; drops emptied lots */
	PointsDebit(&acct, &chg, shortfall, n_earn_lots, earn_lots);

	/* the entry's points: every lot change, net of the debt change */
	chg.points = -chg.debt_change;
	for (int i = 0; i < chg.nmoves; i++)
		chg.points = PointsAdd(chg.points, chg.move_delta[i], "reversed points");
	for (int i = 0; i < chg.nlots; i++)
		chg.points = PointsAdd(chg.points, chg.lots[i].points, "reversed points");

	PointsReceiptFrom(&receipt, &acct, PointsWrite(&acct, &chg, NULL), chg.points);
	if (earn_row >= 0)
		PointsRefundDowngrade(&acct, LoyaltyColTimestamp(LoyaltySpiRowOf(entries, earn_row), 8, NULL), at);
	SPI_finish();
	PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
}

/*
 * loyalty.adjust_points(customer_id, points, reference, reason, expires_at,
 * at): a manual correction.  A positive adjustment is a non-qualifying
 * credit (repaying any debt first) with the given expiry (NULL: program
 * default; infinity: never); a negative one takes points back like a
 * reversal shortfall (available, then pending, then debt).  Adjustments are
 * not reversed by reverse_points: correct them with another adjustment.
 */
Datum
points_adjust(PG_FUNCTION_ARGS)
{
	char	   *customer_id = text_to_cstring(PointsArgKey(fcinfo, 0, "customer_id"));
	int64		points;
	char	   *reference = text_to_cstring(PointsArgKey(fcinfo, 2, "reference"));
	char	   *reason;
	bool		has_expiry = !PG_ARGISNULL(4);
	TimestampTz expires_at = has_expiry ? PG_GETARG_TIMESTAMPTZ(4) : 0;
	TimestampTz at;
	const char *parts[3];
	PointsAccount acct;
	PointsChange chg;
	PointsNewLot lot;
	PointsReceipt receipt;

	LoyaltyArgNotNull(fcinfo, 1, "points");
	points = PG_GETARG_INT64(1);
	if (points == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("points must not be 0")));
	if (points == PG_INT64_MIN)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("points out of range")));
	LoyaltyArgNotNull(fcinfo, 3, "reason");
	reason = text_to_cstring(PG_GETARG_TEXT_PP(3));
	if (reason[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("reason must not be empty"),
				 errhint("Say why the balance is corrected.")));
	at = PointsArgWriteTime(fcinfo, 5, "at");
	if (has_expiry && TIMESTAMP_IS_NOBEGIN(expires_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires_at must not be -infinity")));
	if (has_expiry && !TIMESTAMP_NOT_FINITE(expires_at) && expires_at <= at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires_at must be later than the adjustment time")));

	parts[0] = psprintf(INT64_FORMAT, points);
	parts[1] = reason;
	parts[2] = has_expiry ? psprintf(INT64_FORMAT, (int64) expires_at) : NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PointsLockAccount(&acct, customer_id, true, at);
	PointsClaimReference(reference, customer_id);
	if (!PointsFindRequest(reference, POINTS_ADJUST, customer_id,
						   PointsHash(POINTS_ADJUST, customer_id, 3, parts), &receipt))
	{
		PointsCheckBackdating(&acct, at, NULL);
		PointsSettleIfDue(&acct, at);
		PointsChangeInit(&chg, POINTS_ADJUST, at);
		chg.reference = reference;
		chg.reason = reason;
		chg.request_hash = PointsHash(POINTS_ADJUST, customer_id, 3, parts);
		chg.points = points;
		if (points > 0)
		{
			lot.points = points;
			lot.earned_at = at;
			lot.pending = false;
			PointsSetLotExpiry(&lot, &acct.program, at, has_expiry, expires_at);
			chg.lots = &lot;
			chg.nlots = 1;
			PointsCredit(&acct, &chg);
		}
		else
		{
			chg.move_lot = palloc(sizeof(int64));
			chg.move_delta = palloc(sizeof(int64));
			PointsDebit(&acct, &chg, -points, 0, NULL);
		}
		PointsReceiptFrom(&receipt, &acct, PointsWrite(&acct, &chg, NULL), points);
	}
	SPI_finish();
	PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef ReversePlanDefs[NREVERSEPLANS] = {
	[P_LOTS] = {lots_sql, 1, {INT8ARRAYOID}},
	[P_VOID] = {void_sql, 2, {INT8OID, TIMESTAMPTZOID}},
	[P_OWNER] = {owner_sql, 1, {TEXTOID}},
	[P_COUPON_LOCK] = {coupon_lock_sql, 2, {TEXTOID, TEXTOID}},
	[P_ENTRIES] = {entries_sql, 2, {TEXTOID, TEXTOID}},
};

static SPIPlanPtr reverse_plan_slots[NREVERSEPLANS];

static LoyaltyPlanCatalog reverse_plans = {
	"points reversal", ReversePlanDefs, NREVERSEPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, reverse_plan_slots, 0
};
