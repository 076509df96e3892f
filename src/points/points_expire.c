/*
 * points_expire.c
 *		Settling in bulk: loyalty.expire_points(), which the procedure
 *		loyalty.run_points_maintenance() calls in committed batches.
 *
 * Balances are exact at read time without it (points_balance counts lots by
 * their times) and every mutating call settles its own account first; this
 * job writes the expiry ledger entries and makes pending lots available for
 * the accounts nobody touched, so that the ledger and the settled columns
 * follow the calendar.  It picks accounts whose next_event_at is due, locks
 * them with SKIP LOCKED (an account busy in an app transaction is settled by
 * that transaction or the next run, and the job never waits for the app) and
 * settles each batch with PointsSettle(), which the inline path uses too.
 *
 * PointsSettle() is set-based: one statement reads every open lot of the
 * batch's accounts, C decides per lot and per account (due, expiring,
 * activated, the new next_event_at, the ledger's lot arrays), one UPDATE
 * changes the due lots by their row addresses and one statement updates
 * the accounts and inserts their expiry entries from arrays.  The accounts
 * are locked before the first of them, so the lots cannot change between
 * the read and the update (only a holder of the account lock writes them);
 * the update checks that it changed every lot it was given all the same.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "common/int.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

typedef enum ExpirePlanId
{
	P_SETTLE_LOTS,
	P_SETTLE_UPDATE,
	P_SETTLE_ACCOUNTS,
	P_PICK,
	NEXPIREPLANS
} ExpirePlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog expire_plans;

/*
 * Every open lot of the given accounts, with the position of its account in
 * the array.  Read with a new snapshot taken after the accounts were
 * locked, so no change committed before the lock is missed.
 */
static const char settle_lots_sql[] =
"SELECT u.ord::int4, l.ctid, l.lot_id, l.state, l.remaining, l.available_at, l.expires_at"
"  FROM unnest($1::text[]) WITH ORDINALITY u(customer_id, ord)"
"  JOIN loyalty.points_lot l ON l.customer_id = u.customer_id AND l.state <> 'closed'";

/* The due lots, by row address: expired ones closed, the others made available. */
static const char settle_update_sql[] =
"UPDATE loyalty.points_lot l"
"   SET state = CASE WHEN l.expires_at <= $2 THEN 'closed' ELSE 'available' END,"
"       remaining = CASE WHEN l.expires_at <= $2 THEN 0 ELSE l.remaining END,"
"       expired = l.expired + CASE WHEN l.expires_at <= $2 THEN l.remaining ELSE 0 END"
" WHERE l.ctid = ANY ($1)";

/*
 * The accounts (every one given, due lots or not) and one expire entry per
 * account that lost points, with the lots' ids and changes as slices of two
 * flat arrays; entries in customer order, as the single statement this
 * replaced wrote them.
 */
static const char settle_accounts_sql[] =
"WITH u AS ("
"  SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::timestamptz[],"
"                       $6::int8[], $7::int4[], $8::int4[])"
"    u(customer_id, exp_available, exp_pending, activated, next_event_at, exp_lots, lot_from, lot_to)"
"), account AS ("
"  UPDATE loyalty.points_account a"
"     SET available = a.available - u.exp_available + u.activated,"
"         pending = a.pending - u.exp_pending - u.activated,"
"         next_event_at = u.next_event_at,"
"         settled_at = GREATEST(a.settled_at, $11), updated_at = pg_catalog.now()"
"    FROM u WHERE a.customer_id = u.customer_id"
"  RETURNING a.customer_id, a.available, a.pending, a.debt, a.next_event_at, u.exp_lots,"
"            u.exp_available + u.exp_pending AS exp_points, u.activated, u.lot_from, u.lot_to"
"), entries AS ("
"  INSERT INTO loyalty.points_ledger (customer_id, kind, points, reason, lot_ids, lot_points,"
"                                     available_after, pending_after, debt_after, effective_at)"
"  SELECT x.customer_id, 'expire', -x.exp_points, 'expired', $9[x.lot_from:x.lot_to],"
"         $10[x.lot_from:x.lot_to], x.available, x.pending, x.debt, $11"
"    FROM account x WHERE x.exp_points > 0 ORDER BY x.customer_id"
")"
"SELECT customer_id, available, pending, next_event_at, exp_lots, exp_points, activated FROM account";

/* Lot states as read. */
typedef enum SettleState
{
	SETTLE_AVAILABLE,
	SETTLE_PENDING,
	SETTLE_OTHER
} SettleState;

/* One open lot of an account being settled. */
typedef struct SettleLot
{
	int32		account;		/* position in the accounts array (0-based) */
	int64		lot_id;
	int64		remaining;
	ItemPointerData tid;
	SettleState state;
	bool		has_available_at;
	bool		has_expires_at;
	TimestampTz available_at;
	TimestampTz expires_at;
} SettleLot;

/* What settling changes for one account. */
typedef struct SettleAccount
{
	int64		exp_available;	/* expired points of available lots */
	int64		exp_pending;	/* expired points of pending lots */
	int64		activated;		/* points of pending lots made available */
	int64		exp_lots;
	bool		has_next_event;
	TimestampTz next_event_at;
	int32		lot_from;		/* 1-based slice of the expired lots' arrays */
	int32		lot_to;
} SettleAccount;

/* Order lots by account, then lot_id (the ledger lists a lot array in lot_id order). */
static int
SettleLotCmp(const void *a, const void *b)
{
	const SettleLot *x = (const SettleLot *) a;
	const SettleLot *y = (const SettleLot *) b;

	if (x->account != y->account)
		return x->account < y->account ? -1 : 1;
	if (x->lot_id != y->lot_id)
		return x->lot_id < y->lot_id ? -1 : 1;
	return 0;
}

/* a + b for the per-account sums, with bigint's own error on overflow. */
static int64
SettleAdd(int64 a, int64 b)
{
	int64		r;

	if (pg_add_s64_overflow(a, b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));
	return r;
}

/* A lot state as read. */
static SettleState
SettleStateOf(text *state)
{
	if (VARSIZE_ANY_EXHDR(state) == 9 && memcmp(VARDATA_ANY(state), "available", 9) == 0)
		return SETTLE_AVAILABLE;
	if (VARSIZE_ANY_EXHDR(state) == 7 && memcmp(VARDATA_ANY(state), "pending", 7) == 0)
		return SETTLE_PENDING;
	return SETTLE_OTHER;
}

/*
 * The open lots of the accounts read through points_lot_open_idx without
 * the executor (see points_balance.c), with the snapshot the statement
 * would have had: a new command and, under READ COMMITTED, a new snapshot,
 * both taken after the accounts were locked.  Returns -1, having read
 * nothing, when the direct read cannot stand in for settle_lots_sql.
 */
static int
SettleReadLotsDirect(Datum customers, SettleLot **lots_out)
{
	static const char *const cols[5] = {"state", "remaining", "available_at", "expires_at", "lot_id"};
	static const Oid types[5] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID};
	static PointsKeyIndexHint hint;
	PointsKeyIndex src;
	Datum	   *keys;
	bool	   *keynulls;
	int			nkeys;
	int			n = 0,
				size = 64;
	SettleLot  *lots;
	Snapshot	snapshot;
	IndexScanDesc scan = NULL;
	TupleTableSlot *slot;

	if (!PointsKeyIndexOpen(&src, &hint, "points_lot", "points_lot_open_idx", true, 5, cols, types))
		return -1;
	deconstruct_array(DatumGetArrayTypeP(customers), TEXTOID, -1, false, TYPALIGN_INT,
					  &keys, &keynulls, &nkeys);
	lots = palloc(sizeof(SettleLot) * size);
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	slot = table_slot_create(src.heap, NULL);
	for (int k = 0; k < nkeys; k++)
	{
		if (keynulls[k])
			continue;
		scan = PointsKeyIndexScan(&src, scan, snapshot, DatumGetTextPP(keys[k]));
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			SettleLot  *lot;
			bool		isnull;
			Datum		v = slot_getattr(slot, src.cols[0], &isnull);

			if (isnull)
				continue;
			if (n == size)
			{
				if ((Size) size * 2 > MaxAllocSize / sizeof(SettleLot))
					elog(ERROR, "too many open lots to settle in one statement");
				size *= 2;
				lots = repalloc(lots, sizeof(SettleLot) * size);
			}
			lot = &lots[n];
			lot->state = SettleStateOf(DatumGetTextPP(v));
			/* (the index holds open lots only; checked all the same) */
			if (lot->state == SETTLE_OTHER &&
				strcmp(TextDatumGetCString(v), "closed") == 0)
				continue;
			lot->account = k;
			lot->tid = slot->tts_tid;
			lot->remaining = PointsSlotInt64(slot, src.cols[1]);
			v = slot_getattr(slot, src.cols[2], &isnull);
			lot->has_available_at = !isnull;
			lot->available_at = isnull ? 0 : DatumGetTimestampTz(v);
			v = slot_getattr(slot, src.cols[3], &isnull);
			lot->has_expires_at = !isnull;
			lot->expires_at = isnull ? 0 : DatumGetTimestampTz(v);
			lot->lot_id = PointsSlotInt64(slot, src.cols[4]);
			n++;
		}
	}
	if (scan != NULL)
		index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	UnregisterSnapshot(snapshot);
	PointsKeyIndexClose(&src);
	*lots_out = lots;
	return n;
}

/*
 * Read the open lots of the accounts (directly, else by settle_lots_sql)
 * into an array sorted by account and lot_id; returns the number of lots.
 */
static int
SettleReadLots(Datum customers, SettleLot **lots_out)
{
	Datum		values[1];
	SettleLot  *lots;
	uint64		n;
	int			direct = SettleReadLotsDirect(customers, lots_out);

	if (direct >= 0)
	{
		qsort(*lots_out, direct, sizeof(SettleLot), SettleLotCmp);
		return direct;
	}
	values[0] = customers;
	LoyaltyExec(LoyaltyPlanGet(&expire_plans, P_SETTLE_LOTS), values, NULL, false, SPI_OK_SELECT);
	n = SPI_processed;
	if (n > (uint64) (MaxAllocSize / sizeof(SettleLot)))
		elog(ERROR, "too many open lots to settle in one statement: " UINT64_FORMAT, n);
	lots = palloc(sizeof(SettleLot) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		SettleLot  *lot = &lots[i];
		bool		isnull;
		Datum		v;

		lot->account = DatumGetInt32(SPI_getbinval(t, d, 1, &isnull)) - 1;
		lot->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(t, d, 2, &isnull));
		lot->lot_id = DatumGetInt64(SPI_getbinval(t, d, 3, &isnull));
		lot->state = SettleStateOf(DatumGetTextPP(SPI_getbinval(t, d, 4, &isnull)));
		lot->remaining = DatumGetInt64(SPI_getbinval(t, d, 5, &isnull));
		v = SPI_getbinval(t, d, 6, &isnull);
		lot->has_available_at = !isnull;
		lot->available_at = isnull ? 0 : DatumGetTimestampTz(v);
		v = SPI_getbinval(t, d, 7, &isnull);
		lot->has_expires_at = !isnull;
		lot->expires_at = isnull ? 0 : DatumGetTimestampTz(v);
	}
	SPI_freetuptable(SPI_tuptable);
	qsort(lots, n, sizeof(SettleLot), SettleLotCmp);
	*lots_out = lots;
	return (int) n;
}

/*
 * Decide for every open lot: due when it expired by as_of or is pending and
 * its time came; an expired lot is closed and its remaining points leave
 * the account (available or pending as last settled), a due lot that did
 * not expire becomes available.  next_event_at is the soonest time at which
 * a lot left open becomes available or expires.  Fills acc (zeroed, one per
 * account), the due lots' addresses and the expired lots' ids and changes
 * (grouped by account, in lot_id order); returns the number of due lots.
 */
static int
SettleDecide(const SettleLot *lots, int nlots, TimestampTz as_of, SettleAccount *acc,
			 Datum *due, Datum *exp_ids, Datum *exp_deltas, int *nexp)
{
	int			ndue = 0;

	*nexp = 0;
	for (int i = 0; i < nlots; i++)
	{
		const SettleLot *lot = &lots[i];
		SettleAccount *a = &acc[lot->account];
		bool		expiring = lot->has_expires_at && lot->expires_at <= as_of;
		bool		activating = !expiring && lot->state == SETTLE_PENDING &&
			lot->has_available_at && lot->available_at <= as_of;

		if (expiring)
		{
			if (a->exp_lots == 0)
				a->lot_from = *nexp + 1;
			a->exp_lots++;
			a->lot_to = *nexp + 1;
			exp_ids[*nexp] = Int64GetDatum(lot->lot_id);
			exp_deltas[*nexp] = Int64GetDatum(-lot->remaining);
			(*nexp)++;
			if (lot->state == SETTLE_AVAILABLE)
				a->exp_available = SettleAdd(a->exp_available, lot->remaining);
			else if (lot->state == SETTLE_PENDING)
				a->exp_pending = SettleAdd(a->exp_pending, lot->remaining);
		}
		else
		{
			TimestampTz next;
			bool		has_next = lot->has_expires_at;

			if (activating)
				a->activated = SettleAdd(a->activated, lot->remaining);
			next = lot->expires_at;
			if (lot->state == SETTLE_PENDING && lot->has_available_at && lot->available_at > as_of &&
				(!has_next || lot->available_at < next))
			{
				next = lot->available_at;
				has_next = true;
			}
			if (has_next && (!a->has_next_event || next < a->next_event_at))
			{
				a->has_next_event = true;
				a->next_event_at = next;
			}
		}
		if (expiring || activating)
			due[ndue++] = PointerGetDatum(&lot->tid);
	}
	return ndue;
}

/* A one-dimensional array of n Datums of a type (nulls: NULL or one flag per element). */
static Datum
SettleArray(Datum *elems, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, type, typlen, typbyval, typalign));
}

/*
 * Settle the given (locked) accounts as of a time: lots whose expiry passed
 * are closed with one expire ledger entry per account, pending lots whose
 * time came become available, and next_event_at is recomputed exactly.
 * customers is a text[] of account keys without duplicates.  The result
 * rows are left in SPI_tuptable (customer_id, available, pending,
 * next_event_at, expired lots, expired points, activated points), one per
 * account that exists.
 */
void
PointsSettle(Datum customers, TimestampTz as_of)
{
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "loyalty points settle",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(work);
	ArrayType  *arr = DatumGetArrayTypeP(customers);
	int			naccounts = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	SettleLot  *lots;
	int			nlots = SettleReadLots(customers, &lots);
	SettleAccount *acc = palloc0(sizeof(SettleAccount) * Max(naccounts, 1));
	Datum	   *due = palloc(sizeof(Datum) * Max(nlots, 1));
	Datum	   *exp_ids = palloc(sizeof(Datum) * Max(nlots, 1));
	Datum	   *exp_deltas = palloc(sizeof(Datum) * Max(nlots, 1));
	int			nexp;
	int			ndue = SettleDecide(lots, nlots, as_of, acc, due, exp_ids, exp_deltas, &nexp);
	Datum		values[11];
	Datum	   *cols[7];
	bool	   *next_nulls = palloc(sizeof(bool) * Max(naccounts, 1));

	if (ndue > 0)
	{
		values[0] = SettleArray(due, NULL, ndue, TIDOID);
		values[1] = TimestampTzGetDatum(as_of);
		LoyaltyExec(LoyaltyPlanGet(&expire_plans, P_SETTLE_UPDATE), values, NULL, false,
					SPI_OK_UPDATE);
		if (SPI_processed != (uint64) ndue)
			elog(ERROR, "settling points lots changed " UINT64_FORMAT " of %d lots", SPI_processed, ndue);
	}

	for (int c = 0; c < 7; c++)
		cols[c] = palloc(sizeof(Datum) * Max(naccounts, 1));
	for (int i = 0; i < naccounts; i++)
	{
		cols[0][i] = Int64GetDatum(acc[i].exp_available);
		cols[1][i] = Int64GetDatum(acc[i].exp_pending);
		cols[2][i] = Int64GetDatum(acc[i].activated);
		cols[3][i] = TimestampTzGetDatum(acc[i].next_event_at);
		next_nulls[i] = !acc[i].has_next_event;
		cols[4][i] = Int64GetDatum(acc[i].exp_lots);
		cols[5][i] = Int32GetDatum(acc[i].lot_from);
		cols[6][i] = Int32GetDatum(acc[i].lot_to);
	}
	values[0] = customers;
	values[1] = SettleArray(cols[0], NULL, naccounts, INT8OID);
	values[2] = SettleArray(cols[1], NULL, naccounts, INT8OID);
	values[3] = SettleArray(cols[2], NULL, naccounts, INT8OID);
	values[4] = SettleArray(cols[3], next_nulls, naccounts, TIMESTAMPTZOID);
	values[5] = SettleArray(cols[4], NULL, naccounts, INT8OID);
	values[6] = SettleArray(cols[5], NULL, naccounts, INT4OID);
	values[7] = SettleArray(cols[6], NULL, naccounts, INT4OID);
	values[8] = SettleArray(exp_ids, NULL, nexp, INT8OID);
	values[9] = SettleArray(exp_deltas, NULL, nexp, INT8OID);
	values[10] = TimestampTzGetDatum(as_of);
	LoyaltyExec(LoyaltyPlanGet(&expire_plans, P_SETTLE_ACCOUNTS), values, NULL, false,
				SPI_OK_SELECT);

	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);
}

PG_FUNCTION_INFO_V1(points_expire);

/* Accounts settled per statement. */
#define POINTS_EXPIRE_BATCH 10000

static const char pick_sql[] =
"SELECT array_agg(s.customer_id) FROM ("
"  SELECT a.customer_id FROM loyalty.points_account a"
"   WHERE a.next_event_at <= $1"
"   ORDER BY a.next_event_at"
"   LIMIT $2"
"     FOR NO KEY UPDATE SKIP LOCKED) s";

/*
 * loyalty.expire_points(as_of, max_accounts): settle due accounts as of a
 * time, at most max_accounts of them (NULL: all that are not locked by
 * another transaction), in statements of up to 10,000 accounts.  Returns
 * how many accounts were settled, how many lots and points expired and how
 * many pending points became available.
 */
Datum
points_expire(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PointsArgWriteTime(fcinfo, 0, "as_of");
	int64		limit = -1;
	int64		accounts = 0,
				lots = 0,
				expired = 0,
				activated = 0;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (!PG_ARGISNULL(1))
	{
		limit = PG_GETARG_INT32(1);
		if (limit < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_accounts must be positive or NULL, not " INT64_FORMAT, limit)));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (;;)
	{
		int			batch = POINTS_EXPIRE_BATCH;
		Datum		v[2];
		bool		isnull;
		Datum		picked;
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (limit >= 0)
			batch = (int) Min(batch, limit - accounts);
		if (batch <= 0)
			break;
		v[0] = TimestampTzGetDatum(as_of);
		v[1] = Int32GetDatum(batch);
		LoyaltyExec(LoyaltyPlanGet(&expire_plans, P_PICK), v, NULL, false, SPI_OK_SELECT);
		picked = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			break;
		n = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(picked)), ARR_DIMS(DatumGetArrayTypeP(picked)));

		PointsSettle(picked, as_of);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;

			lots += DatumGetInt64(SPI_getbinval(t, d, 5, &isnull));
			expired += DatumGetInt64(SPI_getbinval(t, d, 6, &isnull));
			activated += DatumGetInt64(SPI_getbinval(t, d, 7, &isnull));
		}
		accounts += n;
		SPI_freetuptable(SPI_tuptable);
		if (n < batch)
			break;
	}
	SPI_finish();

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	values[0] = Int64GetDatum(accounts);
	values[1] = Int64GetDatum(lots);
	values[2] = Int64GetDatum(expired);
	values[3] = Int64GetDatum(activated);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef ExpirePlanDefs[NEXPIREPLANS] = {
	[P_SETTLE_LOTS] = {settle_lots_sql, 1, {TEXTARRAYOID}},
	[P_SETTLE_UPDATE] = {settle_update_sql, 2, {TIDARRAYOID, TIMESTAMPTZOID}},
	[P_SETTLE_ACCOUNTS] = {settle_accounts_sql, 11, {TEXTARRAYOID, INT8ARRAYOID, INT8ARRAYOID,
		INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID, INT8ARRAYOID,
	INT8ARRAYOID, TIMESTAMPTZOID}},
	[P_PICK] = {pick_sql, 2, {TIMESTAMPTZOID, INT4OID}},
};

static SPIPlanPtr expire_plan_slots[NEXPIREPLANS];

static LoyaltyPlanCatalog expire_plans = {
	"points expiry", ExpirePlanDefs, NEXPIREPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, expire_plan_slots, 0
};
