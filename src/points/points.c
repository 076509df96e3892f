/*
 * points.c
 *		The points ledger core: argument checks, the locked account, settling
 *		due lots, idempotent requests, credits, debits and upgrades (the
 *		statements that write them are in points_write.c, the calendar in
 *		points_time.c), and the earn_points, spend_points and points_balance
 *		entry points.
 *
 * Every mutating call runs the same steps inside the caller's transaction:
 *	1. lock the account row (FOR NO KEY UPDATE; created on first credit);
 *	2. look the reference up (after the lock, with a new snapshot, so a
 *	   concurrent call with the same reference is seen once it committed):
 *	   a repeat returns the first result, a different request raises LP002.
 *	   earn_points and spend_points fold this into their write statement,
 *	   which writes nothing when the ledger has the reference already; only
 *	   then (or when the balance is short) is the reference looked up;
 *	3. settle the account if a lot became available or expired (next_event_at
 *	   is due): the same statement expire_points runs in batches;
 *	4. compute the change in C and write it with one statement: ledger entry,
 *	   lot changes, new lots, account, qualifying bucket, rule usage, tier.
 * Any error aborts the caller's transaction, so nothing is half-written.
 * Plans are prepared once per backend and kept (SPI_keepplan).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

PG_FUNCTION_INFO_V1(points_earn);
PG_FUNCTION_INFO_V1(points_spend);
PG_FUNCTION_INFO_V1(points_balance);

/* ------------------------------------------------------------------------
 * The account
 * ------------------------------------------------------------------------ */

typedef enum PointsPlanId
{
	P_LOCK,
	P_CREATE,
	P_MINE,
	P_CLAIM,
	P_OWNER,
	P_REQUEST,
	P_DEBIT_LOTS,
	P_UPGRADE,
	P_BALANCE,
	NPOINTSPLANS
} PointsPlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog points_plans;

/*
 * The account row, locked.  Only the account row is locked; FOR NO KEY
 * UPDATE does not block foreign-key checks of other tables.  Its tier's rank
 * and multiplier, the next tier's threshold and the program settings come
 * from the per-backend cache (points_config.c), by the tier name of the
 * locked row's newest version.
 */
static const char lock_sql[] =
"SELECT a.available, a.pending, a.debt, a.lifetime_earned, a.qualifying, a.qualifying_spend,"
"       a.tier, a.tier_since, a.next_event_at, a.settled_at"
"  FROM loyalty.points_account a"
" WHERE a.customer_id = $1"
"   FOR NO KEY UPDATE OF a";

/* A new account starts in the highest tier that needs nothing, if any. */
static const char create_sql[] =
"WITH a AS ("
"  INSERT INTO loyalty.points_account (customer_id, tier, tier_since)"
"  SELECT $1, b.name, CASE WHEN b.name IS NOT NULL THEN $2 END"
"    FROM (SELECT (SELECT t.name FROM loyalty.tier t WHERE t.threshold <= 0"
"                   ORDER BY t.rank DESC LIMIT 1) AS name) b"
"  ON CONFLICT (customer_id) DO NOTHING"
"  RETURNING customer_id, tier)"
"INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)"
"SELECT a.customer_id, $2, NULL, a.tier, 'initial', 0 FROM a WHERE a.tier IS NOT NULL";

/* Read the locked row into acct; false if there is none. */
static bool
PointsReadAccount(PointsAccount *acct, const char *customer_id)
{
	Datum		values[1];
	bool		isnull;
	Datum		d;
	const PointsConfig *config;
	int			next;

	values[0] = CStringGetTextDatum(customer_id);
	LoyaltyExec(LoyaltyPlanGet(&points_plans, P_LOCK), values, NULL, false, SPI_OK_SELECT);
	memset(acct, 0, sizeof(*acct));
	acct->customer_id = (char *) customer_id;
	if (SPI_processed == 0)
		return false;

	acct->found = true;
	acct->available = LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
	acct->pending = LoyaltyColInt64(LoyaltySpiRow(0), 2, NULL);
	acct->debt = LoyaltyColInt64(LoyaltySpiRow(0), 3, NULL);
	acct->lifetime_earned = LoyaltyColInt64(LoyaltySpiRow(0), 4, NULL);
	acct->qualifying = LoyaltyColInt64(LoyaltySpiRow(0), 5, NULL);
	acct->qualifying_spend = LoyaltyColDatum(LoyaltySpiRow(0), 6, &isnull);
	acct->tier = LoyaltyColText(LoyaltySpiRow(0), 7);
	d = LoyaltyColDatum(LoyaltySpiRow(0), 8, &isnull);
	acct->has_tier_since = !isnull;
	acct->tier_since = isnull ? 0 : DatumGetTimestampTz(d);
	d = LoyaltyColDatum(LoyaltySpiRow(0), 9, &isnull);
	acct->has_next_event = !isnull;
	acct->next_event_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = LoyaltyColDatum(LoyaltySpiRow(0), 10, &isnull);
	acct->has_settled_at = !isnull;
	acct->settled_at = isnull ? 0 : DatumGetTimestampTz(d);

	/* the tier, the next one up and the settings, copied out of the cache */
	config = PointsConfigGet();
	acct->program = config->program;
	acct->tier_multiplier = NumericGetDatum(LoyaltyNumericFromInt64(1));
	next = 0;
	if (acct->tier != NULL)
	{
		next = -1;
		for (int i = 0; i < config->ntiers; i++)
			if (strcmp(config->tiers[i].name, acct->tier) == 0)
			{
				acct->tier_rank = config->tiers[i].rank;
				acct->tier_multiplier = datumCopy(config->tiers[i].multiplier, false, -1);
				next = i + 1;
				break;
			}
	}
	/* (a tier the cache does not know yet is never upgraded from) */
	acct->has_next_tier = next >= 0 && next < config->ntiers;
	if (acct->has_next_tier)
		acct->next_threshold = datumCopy(config->tiers[next].threshold, false, -1);
	return true;
}

/*
 * Lock the account of customer_id (must be called inside SPI).  With create,
 * a missing account is created first (in the lowest tier that needs
 * nothing); a concurrent creation is waited for, and if that transaction
 * rolls back, the creation is retried.  Without create, acct->found tells
 * whether the customer has an account.
 */
void
PointsLockAccount(PointsAccount *acct, const char *customer_id, bool create, TimestampTz at)
{

	while (!PointsReadAccount(acct, customer_id))
	{
		Datum		values[2];

		if (!create)
			return;
		CHECK_FOR_INTERRUPTS();
		values[0] = CStringGetTextDatum(customer_id);
		values[1] = TimestampTzGetDatum(at);
		LoyaltyExec(LoyaltyPlanGet(&points_plans, P_CREATE), values, NULL, false, SPI_OK_INSERT);
	}
}


/* whether the customer used the reference already */
static const char mine_sql[] =
"SELECT 1 FROM loyalty.points_ledger WHERE reference = $1 AND customer_id = $2 LIMIT 1";

/*
 * Bounded backdating: a settlement as of settled_at expired lots and
 * activated pending points for good, so a call may not claim to happen
 * before it (beyond the clock skew also allowed ahead, so that concurrent
 * transactions whose now() differ a little never fail).  A repeat of a
 * request already in the ledger (reference given and used by this
 * customer) passes: it returns its first result and writes nothing.
 * Called with the account locked, after the repeat checks that need none.
 */
void
PointsCheckBackdating(const PointsAccount *acct, TimestampTz at, const char *reference)
{

	if (!acct->found || !acct->has_settled_at ||
		at >= acct->settled_at - (TimestampTz) POINTS_MAX_FUTURE_SKEW_SECS * USECS_PER_SEC)
		return;
	if (reference != NULL)
	{
		Datum		values[2];

		values[0] = CStringGetTextDatum(reference);
		values[1] = CStringGetTextDatum(acct->customer_id);
		LoyaltyExec(LoyaltyPlanGet(&points_plans, P_MINE), values, NULL, false, SPI_OK_SELECT);
		if (SPI_processed > 0)
			return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("at must not lie before the last settlement of the points account"),
			 errdetail("at is %s; the account of customer \"%s\" was settled (lots expired or became available) as of %s.",
					   timestamptz_to_str(at), acct->customer_id, timestamptz_to_str(acct->settled_at)),
			 errhint("Record a late correction with loyalty.adjust_points() at the current time.")));
}


/* the first claim of a reference wins */
static const char claim_sql[] =
"INSERT INTO loyalty.points_reference (reference, customer_id) VALUES ($1, $2)"
" ON CONFLICT (reference) DO NOTHING";

/* the reference's owner, once the first claim committed */
static const char owner_sql[] =
"SELECT customer_id FROM loyalty.points_reference WHERE reference = $1"
" FOR KEY SHARE";

/*
 * Claim a reference for a customer, or find that it is another's: the
 * primary key of loyalty.points_reference makes one owner per reference a
 * constraint, not a snapshot read.  A concurrent first claim of another
 * transaction is waited for by the unique index; once it committed, the
 * owner is read with a new snapshot (READ COMMITTED), and under REPEATABLE
 * READ the insert itself fails with 40001 (the conflicting row is not in
 * the snapshot).  Called with the account locked, before the ledger is
 * looked up; LP002 for the customer that comes second.
 */
void
PointsClaimReference(const char *reference, const char *customer_id)
{
	Datum		values[2];
	char	   *owner;

	values[0] = CStringGetTextDatum(reference);
	values[1] = CStringGetTextDatum(customer_id);
	LoyaltyExec(LoyaltyPlanGet(&points_plans, P_CLAIM), values, NULL, false, SPI_OK_INSERT);
	if (SPI_processed == 1)
		return;
	LoyaltyExec(LoyaltyPlanGet(&points_plans, P_OWNER), values, NULL, false, SPI_OK_SELECT);
	if (SPI_processed != 1)
		elog(ERROR, "owner of points reference \"%s\" not found", reference);
	owner = LoyaltyColText(LoyaltySpiRow(0), 1);
	if (strcmp(owner, customer_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_REFERENCE_CONFLICT),
				 errmsg("reference \"%s\" belongs to another customer", reference),
				 errdetail("%s", PointsDetail("reference_conflict", "reference", PointsQuote(reference),
											 "conflict", PointsQuote("other_customer"), "entry_id", "null", NULL)),
				 errhint("References (order ids, idempotency keys) are unique to one customer.")));
}

/* Settle one locked account if a lot of it became available or expired by at. */
void
PointsSettleIfDue(PointsAccount *acct, TimestampTz at)
{
	Datum		elem;
	PointsSettled settled;

	if (!acct->found || !acct->has_next_event || acct->next_event_at > at)
		return;

	elem = CStringGetTextDatum(acct->customer_id);
	memset(&settled, 0, sizeof(settled));
	PointsSettle(PointerGetDatum(construct_array(&elem, 1, TEXTOID, -1, false, TYPALIGN_INT)),
				 (Datum) 0, at, &settled);
	if (settled.accounts != 1)
		elog(ERROR, "settling the points account of \"%s\" failed", acct->customer_id);
	acct->available = settled.available;
	acct->pending = settled.pending;
	acct->has_next_event = settled.has_next_event;
	acct->next_event_at = settled.next_event_at;
}

/* The settling hint moves earlier when a lot with an earlier event is created. */
void
PointsNoteEvent(PointsAccount *acct, TimestampTz t)
{
	if (!acct->has_next_event || t < acct->next_event_at)
	{
		acct->has_next_event = true;
		acct->next_event_at = t;
	}
}

/* ------------------------------------------------------------------------
 * Idempotency
 * ------------------------------------------------------------------------ */

static const char request_sql[] =
"SELECT kind, customer_id, request_hash, entry_id, points, available_after, pending_after, debt_after"
"  FROM loyalty.points_ledger WHERE reference = $1";

/*
 * Look a reference up once the account is locked.  Returns true with the
 * first result when the same request (same kind, customer and fingerprint)
 * was already made; raises LP002 when the reference was used for a
 * different request of this kind or for another customer, and LP005 when
 * the reference was reversed (a new earn or spend under it would escape the
 * reversal; a repeat of the reversed call too: its receipt is stale).
 */
bool
PointsFindRequest(const char *reference, const char *kind, const char *customer_id,
				  uint64 request_hash, PointsReceipt *receipt)
{
	Datum		values[1];
	int64		reversal = 0;
	bool		other = false;
	int			mine = -1;

	values[0] = CStringGetTextDatum(reference);
	LoyaltyExec(LoyaltyPlanGet(&points_plans, P_REQUEST), values, NULL, false, SPI_OK_SELECT);

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *k = LoyaltyColText(LoyaltySpiRow(i), 1);
		char	   *c = LoyaltyColText(LoyaltySpiRow(i), 2);
		bool		isnull;
		int64		h = LoyaltyColInt64(LoyaltySpiRow(i), 3, &isnull);

		if (strcmp(k, kind) == 0)
		{
			if (strcmp(c, customer_id) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_POINTS_REFERENCE_CONFLICT),
						 errmsg("reference \"%s\" belongs to another customer", reference),
						 errdetail("%s", PointsDetail("reference_conflict", "reference", PointsQuote(reference),
													 "conflict", PointsQuote("other_customer"), "entry_id",
													 PointsJsonInt(LoyaltyColInt64(LoyaltySpiRow(i), 4, NULL)),
													 NULL)),
						 errhint("References (order ids, idempotency keys) are unique to one customer.")));
			if (isnull || (uint64) h != request_hash)
				ereport(ERROR,
						(errcode(ERRCODE_POINTS_REFERENCE_CONFLICT),
						 errmsg("reference \"%s\" was already used for a different %s request", reference, kind),
						 errdetail("%s", PointsDetail("reference_conflict", "reference", PointsQuote(reference),
													 "conflict", PointsQuote("different_request"), "entry_id",
													 PointsJsonInt(LoyaltyColInt64(LoyaltySpiRow(i), 4, NULL)),
													 NULL)),
						 errhint("A repeated call must have the same arguments as the first; use a new reference for a new request.")));
			mine = i;
			continue;
		}
		if (strcmp(c, customer_id) != 0)
			other = true;
		if (strcmp(k, POINTS_REVERSE) == 0)
			reversal = LoyaltyColInt64(LoyaltySpiRow(i), 4, NULL);
	}
	if (mine < 0 && other)
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_REFERENCE_CONFLICT),
				 errmsg("reference \"%s\" belongs to another customer", reference),
				 errdetail("%s", PointsDetail("reference_conflict", "reference", PointsQuote(reference),
											 "conflict", PointsQuote("other_customer"), "entry_id", "null", NULL)),
				 errhint("References (order ids, idempotency keys) are unique to one customer.")));

	/*
	 * A reversed earning or spending is not repeated, not even its receipt:
	 * the receipt's balance would be stale (the reversal changed it), and
	 * the call's effect is gone.  LP005, as for a new request.
	 */
	if (reversal != 0 && (strcmp(kind, POINTS_EARN) == 0 || strcmp(kind, POINTS_SPEND) == 0))
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_REFERENCE_REVERSED),
				 errmsg("reference \"%s\" was reversed", reference),
				 errdetail("%s", PointsDetail("reference_reversed", "reference", PointsQuote(reference),
											 "reversal_entry_id", PointsJsonInt(reversal), NULL)),
				 errhint("Points cannot be earned or spent under a reference after its reversal, and a call repeated after it is not replayed; use a new reference.")));
	if (mine >= 0)
	{
		LoyaltyRow	r = LoyaltySpiRow(mine);

		receipt->entry_id = LoyaltyColInt64(r, 4, NULL);
		receipt->customer_id = (char *) customer_id;
		receipt->points = LoyaltyColInt64(r, 5, NULL);
		receipt->available = LoyaltyColInt64(r, 6, NULL);
		receipt->pending = LoyaltyColInt64(r, 7, NULL);
		receipt->debt = LoyaltyColInt64(r, 8, NULL);
		return true;
	}
	return false;
}

/* ------------------------------------------------------------------------
 * Changes
 * ------------------------------------------------------------------------ */

/*
 * The expiry of a lot credited at "at": the caller's expires_at when given
 * (infinity: never expires), else the program's default validity in months
 * (none when 0).  Shared by earn_points and positive adjustments so that both
 * apply one rule.
 */
void
PointsSetLotExpiry(PointsNewLot *lot, const PointsProgram *program, TimestampTz at,
				   bool has_expiry, TimestampTz expires_at)
{
	if (has_expiry)
	{
		lot->expires = !TIMESTAMP_IS_NOEND(expires_at);
		lot->expires_at = expires_at;
	}
	else
	{
		lot->expires = program->expiry_months > 0;
		if (lot->expires)
			lot->expires_at = PointsAddMonths(at, program->expiry_months,
											  program->expiry_rounding, program->tz);
	}
}

/* An empty change of the given kind at a business time. */
void
PointsChangeInit(PointsChange *chg, const char *kind, TimestampTz at)
{
	memset(chg, 0, sizeof(*chg));
	chg->kind = kind;
	chg->at = at;
}

/*
 * Credit new lots (chg->lots) to the account.  A debt is repaid first: the
 * first lots are reduced by it and lots left empty are not created; the
 * repayment is recorded as a negative debt change.  Updates the account's
 * available, pending, debt and settling hint; chg->points is left to the
 * caller (the gross credit).
 */
void
PointsCredit(PointsAccount *acct, PointsChange *chg)
{
	int			kept = 0;

	for (int i = 0; i < chg->nlots; i++)
	{
		PointsNewLot *lot = &chg->lots[i];

		if (acct->debt > 0)
		{
			int64		repay = Min(acct->debt, lot->points);

			acct->debt -= repay;
			chg->debt_change -= repay;
			lot->points -= repay;
		}
		if (lot->points == 0)
			continue;
		if (lot->pending)
		{
			acct->pending = PointsAdd(acct->pending, lot->points, "pending points");
			PointsNoteEvent(acct, lot->available_at);
		}
		else
			acct->available = PointsAdd(acct->available, lot->points, "available points");
		if (lot->expires)
			PointsNoteEvent(acct, lot->expires_at);
		chg->lots[kept++] = *lot;
	}
	chg->nlots = kept;
}

static const char debit_lots_sql[] =
"SELECT lot_id, remaining, state = 'pending' FROM loyalty.points_lot"
" WHERE customer_id = $1 AND state <> 'closed' AND NOT (lot_id = ANY ($2))"
" ORDER BY state = 'pending', CASE WHEN state = 'pending' THEN available_at END,"
"          expires_at NULLS LAST, earned_at, lot_id";

/*
 * Take points back from a settled account (reversal shortfall, negative
 * adjustment): from available lots first in, first out, then from pending
 * lots in the order they become available, and what is still missing
 * becomes debt.  Lots listed in exclude were already changed by the caller.
 * Adds the lot changes to chg (whose move arrays must have room for every
 * open lot of the account plus the existing moves).
 */
void
PointsDebit(PointsAccount *acct, PointsChange *chg, int64 amount, int nexclude, const int64 *exclude)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};

	if (amount <= 0)
		return;
	values[0] = CStringGetTextDatum(acct->customer_id);
	values[1] = LoyaltyInt8ArrayDatum(exclude, nexclude);
	LoyaltyExec(LoyaltyPlanGet(&points_plans, P_DEBIT_LOTS), values, nulls, false, SPI_OK_SELECT);

	chg->move_lot = repalloc(chg->move_lot, sizeof(int64) * (chg->nmoves + SPI_processed + 1));
	chg->move_delta = repalloc(chg->move_delta, sizeof(int64) * (chg->nmoves + SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed && amount > 0; i++)
	{
		int64		lot = LoyaltyColInt64(LoyaltySpiRow(i), 1, NULL);
		int64		remaining = LoyaltyColInt64(LoyaltySpiRow(i), 2, NULL);
		bool		isnull;
		bool		pending = DatumGetBool(LoyaltyColDatum(LoyaltySpiRow(i), 3, &isnull));
		int64		take = Min(remaining, amount);

		chg->move_lot[chg->nmoves] = lot;
		chg->move_delta[chg->nmoves] = -take;
		chg->nmoves++;
		amount -= take;
		if (pending)
			acct->pending -= take;
		else
			acct->available -= take;
	}
	if (amount > 0)
	{
		acct->debt = PointsAdd(acct->debt, amount, "points debt");
		chg->debt_change += amount;
	}
}

static const char upgrade_sql[] =
"SELECT t.name, v.value"
"  FROM (SELECT CASE WHEN $2 THEN"
"                 (SELECT CASE WHEN $3 THEN coalesce(sum(q.spend), 0)"
"                              ELSE coalesce(sum(q.points), 0) END"
"                    FROM loyalty.points_qualifying q"
"                   WHERE q.customer_id = $1 AND q.month BETWEEN $4 AND $5) + $6"
"               ELSE $7 END AS value) v"
"  JOIN LATERAL (SELECT n.name, n.rank FROM loyalty.tier n WHERE n.threshold <= v.value"
"                 ORDER BY n.rank DESC LIMIT 1) t ON true"
" WHERE $8::integer IS NULL OR t.rank > $8";

/*
 * Upgrades happen at once, inside the earning transaction.  The account's
 * lifetime qualifying total (already including this earning) bounds every
 * window's, so the tier table and the monthly buckets are read only when
 * that total reaches the next tier's threshold.  The window is the calendar
 * month of the earning and the window_months - 1 before it; this earning's
 * bucket is not written yet, so its contribution is added.
 */
void
PointsCheckUpgrade(PointsAccount *acct, PointsChange *chg)
{
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Datum		lifetime;
	bool		windowed = acct->program.window_months > 0;
	DateADT		month = PointsMonthOf(chg->at, acct->program.tz);
	Datum		added;
	bool		isnull;

	if (!acct->has_next_tier)
		return;
	if (acct->program.spend_basis)
	{
		lifetime = acct->qualifying_spend;
		added = chg->has_amount ? chg->amount : NumericGetDatum(LoyaltyNumericFromInt64(0));
	}
	else
	{
		lifetime = NumericGetDatum(LoyaltyNumericFromInt64(acct->qualifying));
		added = NumericGetDatum(LoyaltyNumericFromInt64(chg->qualifying));
	}
	if (LoyaltyNumericCmp(DatumGetNumeric(lifetime), DatumGetNumeric(acct->next_threshold)) < 0)
		return;

	values[0] = CStringGetTextDatum(acct->customer_id);
	values[1] = BoolGetDatum(windowed);
	values[2] = BoolGetDatum(acct->program.spend_basis);
	values[3] = DateADTGetDatum(PointsMonthOf(PointsAddMonths(chg->at, -(Max(acct->program.window_months, 1) - 1),
															  POINTS_ROUND_NONE, acct->program.tz),
											  acct->program.tz));
	values[4] = DateADTGetDatum(month);
	values[5] = added;
	values[6] = lifetime;
	values[7] = Int32GetDatum(acct->tier_rank);
	if (acct->tier == NULL)
		nulls[7] = 'n';
	LoyaltyExec(LoyaltyPlanGet(&points_plans, P_UPGRADE), values, nulls, false, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	chg->tier_changed = true;
	chg->new_tier = LoyaltyColText(LoyaltySpiRow(0), 1);
	chg->tier_value = LoyaltyColDatum(LoyaltySpiRow(0), 2, &isnull);
}

/* ------------------------------------------------------------------------
 * Receipts
 * ------------------------------------------------------------------------ */

/* The receipt of a change just written: the entry and the account after it. */
void
PointsReceiptFrom(PointsReceipt *r, const PointsAccount *acct, int64 entry_id, int64 points)
{
	r->entry_id = entry_id;
	r->customer_id = acct->customer_id;
	r->points = points;
	r->available = acct->available;
	r->pending = acct->pending;
	r->debt = acct->debt;
}

/* The loyalty.points_receipt composite (built after SPI_finish, in the caller's context). */
Datum
PointsReceiptDatum(FunctionCallInfo fcinfo, const PointsReceipt *r)
{
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	values[0] = Int64GetDatum(r->entry_id);
	values[1] = CStringGetTextDatum(r->customer_id);
	values[2] = Int64GetDatum(r->points);
	values[3] = Int64GetDatum(r->available);
	values[4] = Int64GetDatum(r->pending);
	values[5] = Int64GetDatum(r->debt);
	return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
}

/* ------------------------------------------------------------------------
 * earn_points
 * ------------------------------------------------------------------------ */

/* An optional timestamptz argument as text for the request fingerprint (NULL stays NULL). */
static char *
TimeString(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return NULL;
	return psprintf(INT64_FORMAT, (int64) PG_GETARG_TIMESTAMPTZ(argno));
}

/*
 * loyalty.earn_points(customer_id, points, reference, reason, pending_until,
 * expires_at, qualifying, at): credit one lot.  pending_until at or before
 * the earning time means available at once; expires_at NULL takes the
 * program's default expiry, infinity means never.
 */
Datum
points_earn(PG_FUNCTION_ARGS)
{
	char	   *customer_id = text_to_cstring(PointsArgKey(fcinfo, 0, "customer_id"));
	int64		points = PointsArgPositive(fcinfo, 1, "points");
	char	   *reference = text_to_cstring(PointsArgKey(fcinfo, 2, "reference"));
	char	   *reason = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	bool		has_pending = !PG_ARGISNULL(4);
	TimestampTz pending_until = has_pending ? PG_GETARG_TIMESTAMPTZ(4) : 0;
	bool		has_expiry = !PG_ARGISNULL(5);
	TimestampTz expires_at = has_expiry ? PG_GETARG_TIMESTAMPTZ(5) : 0;
	bool		qualifying;
	TimestampTz at;
	const char *parts[5];
	uint64		hash;
	PointsAccount acct;
	PointsChange chg;
	PointsNewLot lot;
	PointsReceipt receipt;
	int64		entry_id;

	LoyaltyArgNotNull(fcinfo, 6, "qualifying");
	qualifying = PG_GETARG_BOOL(6);
	at = PointsArgWriteTime(fcinfo, 7, "at");
	if (has_pending && TIMESTAMP_NOT_FINITE(pending_until))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pending_until must be a finite time")));
	if (has_expiry && TIMESTAMP_IS_NOBEGIN(expires_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires_at must not be -infinity")));
	if (has_expiry && !TIMESTAMP_NOT_FINITE(expires_at) && expires_at <= at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expires_at must be later than the earning time")));
	if (has_pending && pending_until <= at)
		has_pending = false;	/* available at once */
	if (has_pending && has_expiry && !TIMESTAMP_NOT_FINITE(expires_at) && pending_until >= expires_at)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pending_until must be earlier than expires_at")));

	parts[0] = psprintf(INT64_FORMAT, points);
	parts[1] = reason;
	parts[2] = TimeString(fcinfo, 4);
	parts[3] = TimeString(fcinfo, 5);
	parts[4] = qualifying ? "q" : "n";
	hash = PointsHash(POINTS_EARN, customer_id, 5, parts);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PointsLockAccount(&acct, customer_id, true, at);
	PointsClaimReference(reference, customer_id);
	PointsCheckBackdating(&acct, at, reference);
	PointsSettleIfDue(&acct, at);
	{

		lot.points = points;
		lot.earned_at = at;
		lot.pending = has_pending;
		lot.available_at = pending_until;
		PointsSetLotExpiry(&lot, &acct.program, at, has_expiry, expires_at);
		if (lot.pending && lot.expires && lot.available_at >= lot.expires_at)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("pending_until must be earlier than the points' expiry")));

		PointsChangeInit(&chg, POINTS_EARN, at);
		chg.reference = reference;
		chg.reason = reason;
		chg.request_hash = hash;
		chg.points = points;
		chg.nlots = 1;
		chg.lots = &lot;
		PointsCredit(&acct, &chg);
		acct.lifetime_earned = PointsAdd(acct.lifetime_earned, points, "lifetime points");
		if (qualifying)
		{
			chg.qualifying = points;
			acct.qualifying = PointsAdd(acct.qualifying, points, "qualifying points");
			chg.bucket_month = PointsMonthOf(at, acct.program.tz);
			PointsCheckUpgrade(&acct, &chg);
		}
		/* written unless the reference has entries; then a repeat or not */
		chg.guarded = true;
		entry_id = PointsWrite(&acct, &chg, NULL);
		if (entry_id != 0)
			PointsReceiptFrom(&receipt, &acct, entry_id, points);
		else if (!PointsFindRequest(reference, POINTS_EARN, customer_id, hash, &receipt))
		{
			chg.guarded = false;
			PointsReceiptFrom(&receipt, &acct, PointsWrite(&acct, &chg, NULL), points);
		}
	}
	SPI_finish();
	PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
}

/* ------------------------------------------------------------------------
 * spend_points
 * ------------------------------------------------------------------------ */

/*
 * loyalty.spend_points(customer_id, points, reference, at): consume
 * available points first in, first out.  A customer without an account has
 * nothing to spend (LP001, available 0; no account is created).
 */
Datum
points_spend(PG_FUNCTION_ARGS)
{
	char	   *customer_id = text_to_cstring(PointsArgKey(fcinfo, 0, "customer_id"));
	int64		points = PointsArgPositive(fcinfo, 1, "points");
	char	   *reference = text_to_cstring(PointsArgKey(fcinfo, 2, "reference"));
	TimestampTz at = PointsArgWriteTime(fcinfo, 3, "at");
	const char *parts[1];
	uint64		hash;
	PointsAccount acct;
	PointsChange chg;
	PointsReceipt receipt;
	int64		entry_id;

	parts[0] = psprintf(INT64_FORMAT, points);
	hash = PointsHash(POINTS_SPEND, customer_id, 1, parts);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PointsLockAccount(&acct, customer_id, false, at);
	if (!acct.found)
	{
		/* a repeat or a conflict is still reported as such */
		PointsFindRequest(reference, POINTS_SPEND, customer_id, hash, &receipt);
		ereport(ERROR,
				(errcode(ERRCODE_POINTS_INSUFFICIENT),
				 errmsg("insufficient points: " INT64_FORMAT " requested, 0 available", points),
				 errdetail("%s", PointsDetail("insufficient_points", "available", "0", "pending", "0",
											 "debt", "0", NULL)),
				 errhint("Customer \"%s\" has no points account.", customer_id)));
	}
	PointsClaimReference(reference, customer_id);
	PointsCheckBackdating(&acct, at, reference);
	PointsSettleIfDue(&acct, at);
	if (acct.available < points)
	{
		/* a repeat of a spend made when the points were there is no error */
		if (!PointsFindRequest(reference, POINTS_SPEND, customer_id, hash, &receipt))
			ereport(ERROR,
					(errcode(ERRCODE_POINTS_INSUFFICIENT),
					 errmsg("insufficient points: " INT64_FORMAT " requested, " INT64_FORMAT " available",
							points, acct.available),
					 errdetail("%s", PointsDetail("insufficient_points",
												 "available", PointsJsonInt(acct.available),
												 "pending", PointsJsonInt(acct.pending),
												 "debt", PointsJsonInt(acct.debt), NULL))));
	}
	else
	{
		PointsChangeInit(&chg, POINTS_SPEND, at);
		chg.reference = reference;
		chg.request_hash = hash;
		chg.points = -points;
		chg.consume = points;
		chg.guarded = true;
		acct.available -= points;
		entry_id = PointsWrite(&acct, &chg, NULL);
		if (entry_id != 0)
			PointsReceiptFrom(&receipt, &acct, entry_id, -points);
		else if (!PointsFindRequest(reference, POINTS_SPEND, customer_id, hash, &receipt))
		{
			chg.guarded = false;
			PointsReceiptFrom(&receipt, &acct, PointsWrite(&acct, &chg, NULL), -points);
		}
	}
	SPI_finish();
	PG_RETURN_DATUM(PointsReceiptDatum(fcinfo, &receipt));
}

/* ------------------------------------------------------------------------
 * points_balance
 * ------------------------------------------------------------------------ */

static const char balance_sql[] =
"SELECT a.debt, a.tier, NULL, l.state = 'available', l.remaining, l.available_at, l.expires_at"
"  FROM loyalty.points_account a"
"  LEFT JOIN loyalty.points_lot l ON l.customer_id = a.customer_id AND l.state <> 'closed'"
" WHERE a.customer_id = $1";

/*
 * The result row type of points_balance, looked up and blessed once per
 * backend: a function's OUT parameters cannot change under its OID (CREATE
 * OR REPLACE refuses), so the descriptor is keyed by the function's OID.
 */
static TupleDesc
BalanceResultDesc(FunctionCallInfo fcinfo)
{
	static Oid	desc_fn = InvalidOid;
	static TupleDesc desc = NULL;

	if (desc == NULL || desc_fn != fcinfo->flinfo->fn_oid)
	{
		TupleDesc	d;
		MemoryContext old;

		if (get_call_result_type(fcinfo, NULL, &d) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		old = MemoryContextSwitchTo(TopMemoryContext);
		d = BlessTupleDesc(CreateTupleDescCopy(d));
		MemoryContextSwitchTo(old);
		if (desc != NULL)
			FreeTupleDesc(desc);
		desc = d;
		desc_fn = fcinfo->flinfo->fn_oid;
	}
	return desc;
}

/*
 * The balance through the balance statement (SPI), when the direct read
 * cannot stand in for it (see points_balance.c): same rows, same rule.
 */
static void
BalanceViaStatement(text *customer_id, TimestampTz at, pg_tz *tz, PointsBalance *b)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		vals[1];

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	vals[0] = PointerGetDatum(customer_id);
	if (SPI_execute_plan(LoyaltyPlanGet(&points_plans, P_BALANCE), vals, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "reading the points balance failed");
	if (SPI_processed > 0)
	{
		char	   *t = LoyaltyColText(LoyaltySpiRow(0), 2);

		b->found = true;
		b->debt = LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
		if (t)
			b->tier = MemoryContextStrdup(caller, t);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			bool		is_available = DatumGetBool(LoyaltyColDatum(LoyaltySpiRow(i), 4, &isnull));
			Datum		available_at,
						expires_at;
			bool		no_available_at,
						no_expires_at;

			if (isnull)
				continue;		/* no open lot */
			available_at = LoyaltyColDatum(LoyaltySpiRow(i), 6, &no_available_at);
			expires_at = LoyaltyColDatum(LoyaltySpiRow(i), 7, &no_expires_at);
			PointsBalanceAddLot(b, is_available, LoyaltyColInt64(LoyaltySpiRow(i), 5, NULL),
								!no_available_at, no_available_at ? 0 : DatumGetTimestampTz(available_at),
								!no_expires_at, no_expires_at ? 0 : DatumGetTimestampTz(expires_at),
								at, tz);
		}
	}
	SPI_finish();
}

/*
 * loyalty.points_balance(customer_id, at): computed from the open lots at
 * read time with the same rule the mutating calls settle by: a pending lot
 * whose available_at has passed is available, a lot whose expires_at has
 * passed counts for nothing.  Exact whether or not any settling ran.  The
 * next expiry is the last local day (program time zone) on which the
 * soonest-expiring points can be used, with all points expiring on that day.
 * A customer without an account has a zero balance and no tier.  The rows
 * are read directly through the indexes (points_balance.c), or by the
 * balance statement when that cannot stand in for it.
 */
Datum
points_balance(PG_FUNCTION_ARGS)
{
	text	   *customer_id = PointsArgKey(fcinfo, 0, "customer_id");
	TimestampTz at = PointsArgTime(fcinfo, 1, "at");
	PointsBalance b;
	pg_tz	   *tz;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, true, true, true};

	memset(&b, 0, sizeof(b));
	tz = PointsConfigGetUnconnected()->program.tz;
	if (!PointsBalanceDirect(customer_id, at, tz, &b))
		BalanceViaStatement(customer_id, at, tz, &b);

	values[0] = Int64GetDatum(b.available);
	values[1] = Int64GetDatum(b.pending);
	values[2] = Int64GetDatum(b.debt);
	if (b.has_expiry)
	{
		values[3] = DateADTGetDatum(b.expiry_date);
		values[4] = Int64GetDatum(b.expiring);
		nulls[3] = nulls[4] = false;
	}
	if (b.tier)
	{
		values[5] = CStringGetTextDatum(b.tier);
		nulls[5] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BalanceResultDesc(fcinfo), values, nulls)));
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef PointsPlanDefs[NPOINTSPLANS] = {
	[P_LOCK] = {lock_sql, 1, {TEXTOID}},
	[P_CREATE] = {create_sql, 2, {TEXTOID, TIMESTAMPTZOID}},
	[P_MINE] = {mine_sql, 2, {TEXTOID, TEXTOID}},
	[P_CLAIM] = {claim_sql, 2, {TEXTOID, TEXTOID}},
	[P_OWNER] = {owner_sql, 1, {TEXTOID}},
	[P_REQUEST] = {request_sql, 1, {TEXTOID}},
	[P_DEBIT_LOTS] = {debit_lots_sql, 2, {TEXTOID, INT8ARRAYOID}},
	[P_UPGRADE] = {upgrade_sql, 8, {TEXTOID, BOOLOID, BOOLOID, DATEOID, DATEOID,
			NUMERICOID, NUMERICOID, INT4OID}},
	[P_BALANCE] = {balance_sql, 1, {TEXTOID}},
};

static SPIPlanPtr points_plan_slots[NPOINTSPLANS];

static LoyaltyPlanCatalog points_plans = {
	"points", PointsPlanDefs, NPOINTSPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, points_plan_slots, 0
};
