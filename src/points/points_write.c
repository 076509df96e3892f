/*
 * points_write.c
 *		The statements that write a change of a points account, chosen per
 *		shape of change: a plain credit, a plain spend, or anything else
 *		(reversal, adjustment, rule earnings) through the general statement.
 *
 * Each runs as one SQL statement with data-modifying CTEs: the ledger entry,
 * lot changes, new lots, the account's new values, the month's qualifying
 * bucket, rule usage and an upgrade's history row together, so a call pays
 * one executor start-up for its writes.  Plans are generic and kept.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

typedef enum WritePlanId
{
	P_CREDIT,
	P_SPEND,
	P_WRITE,
	P_GUARD,
	NWRITEPLANS
} WritePlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog write_plans;

/* A bigint[] parameter; SQL NULL (no rows to unnest) when empty. */
static Datum
Int64Array(int n, const int64 *vals, char *null)
{
	*null = (n == 0) ? 'n' : ' ';
	if (n == 0)
		return (Datum) 0;
	return LoyaltyInt8ArrayDatum(vals, n);
}

/* A timestamptz[] parameter with nulls (no availability / no expiry); NULL when empty. */
static Datum
TimestampArray(int n, const TimestampTz *vals, const bool *isnull, char *null)
{
	Datum	   *d;
	bool	   *nulls;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	*null = (n == 0) ? 'n' : ' ';
	if (n == 0)
		return (Datum) 0;
	d = palloc(sizeof(Datum) * n);
	nulls = palloc(sizeof(bool) * n);
	for (int i = 0; i < n; i++)
	{
		nulls[i] = isnull ? isnull[i] : false;
		d[i] = TimestampTzGetDatum(vals[i]);
	}
	return PointerGetDatum(construct_md_array(d, nulls, 1, dims, lbs, TIMESTAMPTZOID,
											  8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* A date[] parameter; NULL when empty. */
static Datum
DateArray(int n, const DateADT *vals, char *null)
{
	Datum	   *d;

	*null = (n == 0) ? 'n' : ' ';
	if (n == 0)
		return (Datum) 0;
	d = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		d[i] = DateADTGetDatum(vals[i]);
	return PointerGetDatum(construct_array(d, n, DATEOID, 4, true, TYPALIGN_INT));
}

/*
 * One statement writes a whole change.  FIFO consumption ($9 points from the
 * available lots, soonest expiry first, never-expiring last, then earliest
 * earned, then lot_id) is computed here from the lots as they are under the
 * account lock; explicit lot changes, new lots, the account's new values,
 * the month's qualifying bucket, rule usage and an upgrade's history row
 * are written alongside the ledger entry, whose lot arrays list explicit
 * changes, then consumed lots, then new lots.  Rule usage is added by upsert
 * and given back (reversal) by update, so the usage row's CHECK never sees
 * a negative insert.
 */
static const char write_sql[] =
"WITH pick AS ("
"  SELECT l.lot_id, l.remaining, (sum(l.remaining) OVER w)::int8 AS upto, row_number() OVER w AS ord"
"    FROM loyalty.points_lot l"
"   WHERE $9 > 0 AND l.customer_id = $1 AND l.state = 'available'"
"  WINDOW w AS (ORDER BY l.expires_at NULLS LAST, l.earned_at, l.lot_id)"
"), moves AS ("
"  SELECT 1 AS grp, m.ord, m.lot_id, m.delta"
"    FROM unnest($10::int8[], $11::int8[]) WITH ORDINALITY AS m(lot_id, delta, ord)"
"  UNION ALL"
"  SELECT 2, p.ord, p.lot_id, -LEAST(p.remaining, $9 - (p.upto - p.remaining))"
"    FROM pick p WHERE p.upto - p.remaining < $9"
"), changed AS ("
"  UPDATE loyalty.points_lot l"
"     SET remaining = l.remaining + m.delta,"
"         state = CASE WHEN l.remaining + m.delta = 0 THEN 'closed' ELSE l.state END"
"    FROM moves m WHERE l.lot_id = m.lot_id"
"), created AS ("
"  INSERT INTO loyalty.points_lot (customer_id, state, points, remaining, earned_at, available_at, expires_at)"
"  SELECT $1, CASE WHEN n.available_at IS NULL THEN 'available' ELSE 'pending' END,"
"         n.points, n.points, n.earned_at, n.available_at, n.expires_at"
"    FROM unnest($12::int8[], $13::timestamptz[], $14::timestamptz[], $15::timestamptz[])"
"         WITH ORDINALITY AS n(points, earned_at, available_at, expires_at, ord)"
"   ORDER BY n.ord"
"  RETURNING lot_id, points"
"), account AS ("
"  UPDATE loyalty.points_account a"
"     SET available = $19, pending = $20, debt = $21, lifetime_earned = $23, qualifying = $24,"
"         qualifying_spend = a.qualifying_spend + coalesce($7, 0),"
"         tier = $25, tier_since = $26, next_event_at = $27, updated_at = pg_catalog.now()"
"   WHERE a.customer_id = $1"
"), bucket AS ("
"  INSERT INTO loyalty.points_qualifying AS q (customer_id, month, points, spend)"
"  SELECT $1, $28, $6, coalesce($7, 0) WHERE $28 IS NOT NULL"
"  ON CONFLICT (customer_id, month) DO UPDATE"
"     SET points = q.points + EXCLUDED.points, spend = q.spend + EXCLUDED.spend"
"), usage AS ("
"  INSERT INTO loyalty.points_rule_usage AS u (customer_id, rule_id, period_start, points)"
"  SELECT $1, x.rule_id, x.period_start, x.points"
"    FROM unnest($29::int8[], $30::date[], $31::int8[]) AS x(rule_id, period_start, points)"
"   WHERE x.points > 0"
"  ON CONFLICT (customer_id, rule_id, period_start) DO UPDATE SET points = u.points + EXCLUDED.points"
"), unusage AS ("
"  UPDATE loyalty.points_rule_usage u SET points = u.points + x.points"
"    FROM unnest($29::int8[], $30::date[], $31::int8[]) AS x(rule_id, period_start, points)"
"   WHERE x.points < 0 AND u.customer_id = $1 AND u.rule_id = x.rule_id"
"     AND u.period_start = x.period_start"
"), history AS ("
"  INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)"
"  SELECT $1, $22, $32, $25, 'upgrade', $33 WHERE $33 IS NOT NULL"
"), lots AS ("
"  SELECT array_agg(x.lot_id ORDER BY x.grp, x.ord) AS ids,"
"         array_agg(x.delta ORDER BY x.grp, x.ord) AS deltas,"
"         coalesce(sum(-x.delta) FILTER (WHERE x.grp = 2), 0)::int8 AS consumed"
"    FROM (SELECT grp, ord, lot_id, delta FROM moves"
"          UNION ALL SELECT 3, c.lot_id, c.lot_id, c.points FROM created c) x"
")"
"INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, reason, qualifying, amount,"
"       debt_change, lot_ids, lot_points, reverses, detail, request_hash,"
"       available_after, pending_after, debt_after, effective_at)"
"SELECT $1, $2, $3, $4, $5, $6, $7, $8, l.ids, l.deltas, $16, $17, $18, $19, $20, $21, $22"
"  FROM lots l "
"RETURNING entry_id, (SELECT consumed FROM lots)";

/*
 * The two hot paths get leaner statements with the same parameters: every
 * node of a statement costs executor start-up on each call.  The ledger
 * entry is inserted first, and every other write hangs off its RETURNING:
 * when the guard finds the reference already in the ledger ($34), nothing
 * at all is written.
 *
 * A plain credit (earn_points, a positive adjustment, or a credit that only
 * repays debt: at most one new lot, no lot changes, no rule usage, no tier
 * change).  The lot's id is drawn in the ledger insert so the entry can name
 * it; the month's qualifying bucket is upserted.
 */
/*
 * The guard of the general statement, which has none of its own: does the
 * reference have ledger entries already?
 */
static const char guard_sql[] =
"SELECT EXISTS (SELECT 1 FROM loyalty.points_ledger g WHERE g.reference = $1)";

static const char credit_sql[] =
"WITH entry AS ("
"  INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, reason, qualifying, amount,"
"         debt_change, lot_ids, lot_points, reverses, detail, request_hash,"
"         available_after, pending_after, debt_after, effective_at)"
"  SELECT $1, $2, $3, $4, $5, $6, $7, $8,"
"         CASE WHEN $12::int8[] IS NOT NULL"
"              THEN ARRAY[pg_catalog.nextval('loyalty.points_lot_lot_id_seq'::regclass)] END,"
"         $12, $16, $17, $18, $19, $20, $21, $22"
"   WHERE NOT ($34 AND EXISTS (SELECT 1 FROM loyalty.points_ledger g WHERE g.reference = $4))"
"  RETURNING entry_id, lot_ids"
"), created AS ("
"  INSERT INTO loyalty.points_lot (lot_id, customer_id, state, points, remaining, earned_at, available_at, expires_at)"
"  OVERRIDING SYSTEM VALUE"
"  SELECT e.lot_ids[1], $1, CASE WHEN ($14::timestamptz[])[1] IS NULL THEN 'available' ELSE 'pending' END,"
"         ($12::int8[])[1], ($12::int8[])[1], ($13::timestamptz[])[1], ($14::timestamptz[])[1],"
"         ($15::timestamptz[])[1]"
"    FROM entry e WHERE e.lot_ids IS NOT NULL"
"), account AS ("
"  UPDATE loyalty.points_account a"
"     SET available = $19, pending = $20, debt = $21, lifetime_earned = $23, qualifying = $24,"
"         qualifying_spend = a.qualifying_spend + coalesce($7, 0),"
"         next_event_at = $27, updated_at = pg_catalog.now()"
"    FROM entry e WHERE a.customer_id = $1"
"), bucket AS ("
"  INSERT INTO loyalty.points_qualifying AS q (customer_id, month, points, spend)"
"  SELECT $1, $28, $6, coalesce($7, 0) FROM entry e WHERE $28 IS NOT NULL"
"  ON CONFLICT (customer_id, month) DO UPDATE"
"     SET points = q.points + EXCLUDED.points, spend = q.spend + EXCLUDED.spend"
")"
"SELECT entry_id, 0::int8 FROM entry";

/*
 * A plain spend: FIFO consumption of available lots and nothing else.  The
 * consumption is computed from the lots as they are under the account lock.
 * It does not write the account's lifetime or qualifying totals, so a
 * change that takes back an earning (nreverses > 0: reverse_points,
 * points_return_for_order) never takes it, even when it has no lot moves,
 * no qualifying points and no amount (a non-qualifying earning spent
 * entirely before its reversal: the lifetime total must still drop).
 */
static const char spend_sql[] =
"WITH pick AS ("
"  SELECT l.lot_id, l.remaining, (sum(l.remaining) OVER w)::int8 AS upto, row_number() OVER w AS ord"
"    FROM loyalty.points_lot l"
"   WHERE l.customer_id = $1 AND l.state = 'available'"
"  WINDOW w AS (ORDER BY l.expires_at NULLS LAST, l.earned_at, l.lot_id)"
"), moves AS ("
"  SELECT p.ord, p.lot_id, -LEAST(p.remaining, $9 - (p.upto - p.remaining)) AS delta"
"    FROM pick p WHERE p.upto - p.remaining < $9"
"), entry AS ("
"  INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, reason, qualifying, amount,"
"         debt_change, lot_ids, lot_points, reverses, detail, request_hash,"
"         available_after, pending_after, debt_after, effective_at)"
"  SELECT $1, $2, $3, $4, $5, $6, $7, $8,"
"         (SELECT array_agg(m.lot_id ORDER BY m.ord) FROM moves m),"
"         (SELECT array_agg(m.delta ORDER BY m.ord) FROM moves m),"
"         $16, $17, $18, $19, $20, $21, $22"
"   WHERE NOT ($34 AND EXISTS (SELECT 1 FROM loyalty.points_ledger g WHERE g.reference = $4))"
"  RETURNING entry_id"
"), changed AS ("
"  UPDATE loyalty.points_lot l"
"     SET remaining = l.remaining + m.delta,"
"         state = CASE WHEN l.remaining + m.delta = 0 THEN 'closed' ELSE l.state END"
"    FROM moves m, entry e WHERE l.lot_id = m.lot_id"
"), account AS ("
"  UPDATE loyalty.points_account a"
"     SET available = $19, pending = $20, debt = $21, next_event_at = $27, updated_at = pg_catalog.now()"
"    FROM entry e WHERE a.customer_id = $1"
")"
"SELECT entry_id, (SELECT coalesce(sum(-m.delta), 0)::int8 FROM moves m) FROM entry";

#define WRITE_NARGS 34
/* the argument types of the three write statements, $1 to $34 */
#define WRITE_ARG_TYPES \
	TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, INT8OID, NUMERICOID, INT8OID, INT8OID, \
	INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, \
	TIMESTAMPTZARRAYOID, INT8ARRAYOID, JSONBOID, INT8OID, INT8OID, INT8OID, INT8OID, \
	TIMESTAMPTZOID, INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, DATEOID, \
	INT8ARRAYOID, DATEARRAYOID, INT8ARRAYOID, TEXTOID, NUMERICOID, BOOLOID

/* Whether the ledger has entries with this reference already. */
static bool
PointsReferenceHasEntries(const char *reference)
{
	Datum		v[1];
	bool		isnull;
	bool		found;

	v[0] = CStringGetTextDatum(reference);
	LoyaltyExec(LoyaltyPlanGet(&write_plans, P_GUARD), v, NULL, false, SPI_OK_SELECT);
	found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return found;
}

/*
 * Write a change of a locked account (acct holds its new values) and return
 * the new ledger entry's id.  A guarded change (a plain credit or spend not
 * looked up yet) writes nothing and returns 0 when the ledger already has an
 * entry with its reference: the caller then looks the request up and, if it
 * is not a repeat, writes again unguarded.  A unique violation on the reference (another
 * customer's concurrent call with the same reference and kind committed
 * first) becomes LP002.  The FIFO consumption must take exactly chg->consume
 * points: less would mean the settled balance and the lots disagree, and the
 * whole call is refused.
 */
int64
PointsWrite(PointsAccount *acct, PointsChange *chg, int64 *consumed)
{
	Datum		v[WRITE_NARGS];
	char		n[WRITE_NARGS];
	int64	   *lp;
	TimestampTz *le,
			   *la,
			   *lx;
	bool	   *la_null,
			   *lx_null;
	MemoryContext oldcxt = CurrentMemoryContext;
	int64		entry_id;
	int64		took;
	bool		isnull;
	volatile bool guard_hit = false;

	memset(n, ' ', sizeof(n));
	lp = palloc(sizeof(int64) * (chg->nlots + 1));
	le = palloc(sizeof(TimestampTz) * (chg->nlots + 1));
	la = palloc(sizeof(TimestampTz) * (chg->nlots + 1));
	lx = palloc(sizeof(TimestampTz) * (chg->nlots + 1));
	la_null = palloc(sizeof(bool) * (chg->nlots + 1));
	lx_null = palloc(sizeof(bool) * (chg->nlots + 1));
	for (int i = 0; i < chg->nlots; i++)
	{
		lp[i] = chg->lots[i].points;
		le[i] = chg->lots[i].earned_at;
		la[i] = chg->lots[i].available_at;
		la_null[i] = !chg->lots[i].pending;
		lx[i] = chg->lots[i].expires_at;
		lx_null[i] = !chg->lots[i].expires;
	}

	v[0] = CStringGetTextDatum(acct->customer_id);
	v[1] = CStringGetTextDatum(chg->kind);
	v[2] = Int64GetDatum(chg->points);
	v[3] = chg->reference ? CStringGetTextDatum(chg->reference) : (Datum) 0;
	n[3] = chg->reference ? ' ' : 'n';
	v[4] = chg->reason ? CStringGetTextDatum(chg->reason) : (Datum) 0;
	n[4] = chg->reason ? ' ' : 'n';
	v[5] = Int64GetDatum(chg->qualifying);
	v[6] = chg->amount;
	n[6] = chg->has_amount ? ' ' : 'n';
	v[7] = Int64GetDatum(chg->debt_change);
	v[8] = Int64GetDatum(chg->consume);
	v[9] = Int64Array(chg->nmoves, chg->move_lot, &n[9]);
	v[10] = Int64Array(chg->nmoves, chg->move_delta, &n[10]);
	v[11] = Int64Array(chg->nlots, lp, &n[11]);
	v[12] = TimestampArray(chg->nlots, le, NULL, &n[12]);
	v[13] = TimestampArray(chg->nlots, la, la_null, &n[13]);
	v[14] = TimestampArray(chg->nlots, lx, lx_null, &n[14]);
	v[15] = Int64Array(chg->nreverses, chg->reverses, &n[15]);
	if (chg->detail)
		v[16] = DirectFunctionCall1(jsonb_in, CStringGetDatum(chg->detail));
	else
		n[16] = 'n';
	v[17] = Int64GetDatum((int64) chg->request_hash);
	n[17] = chg->request_hash ? ' ' : 'n';
	v[18] = Int64GetDatum(acct->available);
	v[19] = Int64GetDatum(acct->pending);
	v[20] = Int64GetDatum(acct->debt);
	v[21] = TimestampTzGetDatum(chg->at);
	v[22] = Int64GetDatum(acct->lifetime_earned);
	v[23] = Int64GetDatum(acct->qualifying);
	if (chg->tier_changed)
	{
		v[24] = CStringGetTextDatum(chg->new_tier);
		v[25] = TimestampTzGetDatum(chg->at);
	}
	else
	{
		v[24] = acct->tier ? CStringGetTextDatum(acct->tier) : (Datum) 0;
		n[24] = acct->tier ? ' ' : 'n';
		v[25] = TimestampTzGetDatum(acct->tier_since);
		n[25] = acct->has_tier_since ? ' ' : 'n';
	}
	v[26] = TimestampTzGetDatum(acct->next_event_at);
	n[26] = acct->has_next_event ? ' ' : 'n';
	v[27] = DateADTGetDatum(chg->bucket_month);
	n[27] = (chg->qualifying != 0 || chg->has_amount) ? ' ' : 'n';
	v[28] = Int64Array(chg->nusage, chg->usage_rule, &n[28]);
	v[29] = DateArray(chg->nusage, chg->usage_period, &n[29]);
	v[30] = Int64Array(chg->nusage, chg->usage_points, &n[30]);
	v[31] = acct->tier ? CStringGetTextDatum(acct->tier) : (Datum) 0;
	n[31] = acct->tier ? ' ' : 'n';
	v[32] = chg->tier_changed ? chg->tier_value : (Datum) 0;
	n[32] = chg->tier_changed ? ' ' : 'n';
	v[33] = BoolGetDatum(chg->guarded);

	PG_TRY();
	{
		SPIPlanPtr	plan;
		int			expected = SPI_OK_SELECT;

		if (chg->nmoves == 0 && chg->consume == 0 && chg->nusage == 0 && chg->nlots <= 1 &&
			!chg->tier_changed && chg->nreverses == 0 && chg->detail == NULL)
			plan = LoyaltyPlanGet(&write_plans, P_CREDIT);
		else if (chg->nmoves == 0 && chg->nlots == 0 && chg->nusage == 0 && !chg->has_amount &&
				 chg->qualifying == 0 && !chg->tier_changed && chg->nreverses == 0)
			plan = LoyaltyPlanGet(&write_plans, P_SPEND);
		else
		{
			/*
			 * The general statement has no guard: check first.  (A repeat of
			 * an earn whose tier change is recomputed differently, after the
			 * ladder changed, would otherwise hit the reference's unique
			 * index and be reported as another customer's reference.)
			 */
			if (chg->guarded && PointsReferenceHasEntries(chg->reference))
				guard_hit = true;
			plan = LoyaltyPlanGet(&write_plans, P_WRITE);
			expected = SPI_OK_INSERT_RETURNING;
		}
		if (!guard_hit)
			LoyaltyExec(plan, v, n, false, expected);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION && edata->constraint_name != NULL &&
			strcmp(edata->constraint_name, "points_ledger_reference_key") == 0)
		{
			FlushErrorState();
			ereport(ERROR,
					(errcode(ERRCODE_POINTS_REFERENCE_CONFLICT),
					 errmsg("reference \"%s\" belongs to another customer", chg->reference),
					 errdetail("%s", PointsDetail("reference_conflict", "reference", PointsQuote(chg->reference),
												   "conflict", PointsQuote("other_customer"), "entry_id", "null", NULL)),
					 errhint("References (order ids, idempotency keys) are unique to one customer.")));
		}
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (guard_hit || (SPI_processed == 0 && chg->guarded))
		return 0;				/* the reference has entries: nothing written */
	if (SPI_processed != 1)
		elog(ERROR, "writing the points ledger entry failed");
	entry_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	took = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (took != chg->consume)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("points lots of customer \"%s\" do not cover the settled balance", acct->customer_id),
				 errdetail("Spending " INT64_FORMAT " points found only " INT64_FORMAT " in available lots.",
						   chg->consume, took),
				 errhint("Run loyalty.check_integrity().")));
	if (consumed)
		*consumed = took;

	if (chg->tier_changed)
	{
		acct->tier = (char *) chg->new_tier;
		acct->tier_since = chg->at;
		acct->has_tier_since = true;
	}
	return entry_id;
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef WritePlanDefs[NWRITEPLANS] = {
	[P_CREDIT] = {credit_sql, WRITE_NARGS, {WRITE_ARG_TYPES}},
	[P_SPEND] = {spend_sql, WRITE_NARGS, {WRITE_ARG_TYPES}},
	[P_WRITE] = {write_sql, WRITE_NARGS, {WRITE_ARG_TYPES}},
	[P_GUARD] = {guard_sql, 1, {TEXTOID}},
};

static SPIPlanPtr write_plan_slots[NWRITEPLANS];

static LoyaltyPlanCatalog write_plans = {
	"points write", WritePlanDefs, NWRITEPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, write_plan_slots, 0
};
