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
 * PointsSettle() works on a batch: the accounts are picked and locked in
 * one statement and handed over in key order (customer_id), C decides per
 * lot and per account (due, expiring, activated, the new next_event_at,
 * the ledger's lot arrays).  The writes are done below the executor when
 * the tables are as the extension made them (SettleDirect, see its
 * section): one pass over the batch's open lots in row-address order,
 * updating each due lot as it is read, then each account and its expire
 * entry in key order.  Otherwise three statements do it: one reads the
 * lots, one UPDATE changes the due lots by their row addresses and one
 * statement updates the accounts and inserts their expiry entries from
 * arrays.  The accounts are locked before the first of them, so the lots
 * cannot change between the read and the update (only a holder of the
 * account lock writes them); both paths check that they changed every lot
 * they meant to all the same.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "access/relation.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "common/int.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
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

static void SettleByStatements(Datum customers, TimestampTz as_of, PointsSettled *out);

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
 * Whether a lot is due as of a time: expiring (its expiry passed) or, not
 * expiring, activating (pending and its available_at passed).
 */
static inline bool
SettleLotDue(const SettleLot *lot, TimestampTz as_of, bool *expiring)
{
	*expiring = lot->has_expires_at && lot->expires_at <= as_of;
	return *expiring || (lot->state == SETTLE_PENDING && lot->has_available_at &&
						 lot->available_at <= as_of);
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
		bool		expiring;
		bool		activating = SettleLotDue(lot, as_of, &expiring) && !expiring;

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

/* ------------------------------------------------------------------------
 * Settling without the executor
 *
 * expire_points settles up to millions of lots a night; through the three
 * statements above, reading the lots, fetching them again to update them
 * and joining the accounts with arrays cost about as much as the lot
 * updates themselves.  SettleDirect() does the same writes in one pass:
 * it takes the batch's open lots' addresses from points_lot_open_idx,
 * fetches the lots in address order (each heap page once) and updates each
 * due lot as soon as it is read; then, in the order of the accounts given
 * (expire_points gives them in key order), it updates each account (found
 * at the address its lock returned, else by primary key) and appends its
 * expire entry.
 * Every row is written as the statements write it: heap update or insert,
 * the table's NOT NULL and CHECK constraints checked (ExecConstraints), and
 * an entry in every index (ExecInsertIndexTuples: partial index predicates,
 * unique checks) unless the update was HOT.
 *
 * Invariants it relies on, checked at each call (otherwise it writes
 * nothing and the statements run, which behave and fail as before):
 *	- the accounts are locked by the caller (FOR NO KEY UPDATE), and only a
 *	  holder of that lock writes an account's lots and ledger entries, so
 *	  the versions read with a snapshot taken after the locks are the
 *	  latest (a lot or account found changed is an internal error);
 *	- the three tables are the extension's own, with the columns it
 *	  defines and no other (a column added by someone else would get no
 *	  value), no trigger on the written operation (a foreign key
 *	  included), no rule, no row security, and the current role (the
 *	  extension owner) holds the privilege the statement needs;
 *	- the defaults the statements relied on are the ones the extension
 *	  defines: the entry id comes from the identity's own sequence, created
 *	  and updated_at are now() (the transaction's start).
 * No user-definable object is resolved: tables, indexes and the sequence
 * are found by name in the extension's schema and by catalog dependency,
 * comparisons use the indexes' own support functions.
 * ------------------------------------------------------------------------ */

/* A table opened for writing below the executor. */
typedef struct SettleRel
{
	Relation	rel;
	ResultRelInfo *rri;
	TupleTableSlot *slot;		/* the new values */
} SettleRel;

/* Columns of points_account the direct path reads and writes. */
typedef struct SettleAccountCols
{
	AttrNumber	available,
				pending,
				debt,
				next_event_at,
				settled_at,
				updated_at;
} SettleAccountCols;

/* The ledger's columns, in the order of ledger_cols[]. */
enum
{
	LC_ENTRY_ID, LC_CUSTOMER_ID, LC_KIND, LC_POINTS, LC_REFERENCE, LC_REASON, LC_QUALIFYING,
	LC_AMOUNT, LC_DEBT_CHANGE, LC_LOT_IDS, LC_LOT_POINTS, LC_REVERSES, LC_DETAIL,
	LC_REQUEST_HASH, LC_AVAILABLE_AFTER, LC_PENDING_AFTER, LC_DEBT_AFTER, LC_EFFECTIVE_AT,
	LC_CREATED_AT, NLEDGERCOLS
};

static const char *const ledger_cols[NLEDGERCOLS] = {
	"entry_id", "customer_id", "kind", "points", "reference", "reason", "qualifying", "amount",
	"debt_change", "lot_ids", "lot_points", "reverses", "detail", "request_hash",
	"available_after", "pending_after", "debt_after", "effective_at", "created_at"
};
static const Oid ledger_types[NLEDGERCOLS] = {
	INT8OID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, INT8OID, NUMERICOID, INT8OID,
	INT8ARRAYOID, INT8ARRAYOID, INT8ARRAYOID, JSONBOID, INT8OID, INT8OID, INT8OID, INT8OID,
	TIMESTAMPTZOID, TIMESTAMPTZOID
};

/* Everything one direct settlement has open. */
typedef struct SettleDirectState
{
	PointsKeyIndex accounts;	/* points_account by its primary key */
	PointsKeyIndex lots;		/* points_lot by points_lot_open_idx */
	Relation	ledger;
	EState	   *estate;
	SettleRel	acct_w;
	SettleRel	lot_w;
	SettleRel	ledger_w;
	SettleAccountCols ac;
	AttrNumber	lc[NLEDGERCOLS];
	Oid			entry_seq;
	Snapshot	snapshot;
	CommandId	cid;
	IndexScanDesc acct_scan;
	IndexScanDesc lot_scan;
	TupleTableSlot *acct_slot;
	TupleTableSlot *lot_slot;
	Datum		closed;			/* 'closed'::text */
	Datum		available;		/* 'available'::text */
	Datum		kind;			/* 'expire'::text */
	Datum		reason;			/* 'expired'::text */
	TimestampTz now;
	/* one account's lots */
	SettleLot  *buf;
	int			bufsize;
	Datum	   *due;
	Datum	   *exp_ids;
	Datum	   *exp_deltas;
} SettleDirectState;

/*
 * Whether a table may be written below the executor by one command type:
 * an ordinary table without rules or row security, no trigger on that
 * operation (row, statement or transition table), and the privilege the
 * statement would need held by the current role.
 */
static bool
SettleRelWritable(Relation rel, CmdType cmd)
{
	TriggerDesc *t = rel->trigdesc;

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rules != NULL ||
		rel->rd_rel->relrowsecurity ||
		pg_class_aclcheck(RelationGetRelid(rel), GetUserId(),
						  cmd == CMD_UPDATE ? ACL_UPDATE : ACL_INSERT) != ACLCHECK_OK)
		return false;
	if (t == NULL)
		return true;
	if (cmd == CMD_UPDATE)
		return !(t->trig_update_before_row || t->trig_update_after_row ||
				 t->trig_update_instead_row || t->trig_update_before_statement ||
				 t->trig_update_after_statement || t->trig_update_old_table ||
				 t->trig_update_new_table);
	return !(t->trig_insert_before_row || t->trig_insert_after_row ||
			 t->trig_insert_instead_row || t->trig_insert_before_statement ||
			 t->trig_insert_after_statement || t->trig_insert_new_table);
}

/* Prepare a checked table for writing (its indexes opened). */
static void
SettleRelOpen(SettleRel *w, Relation rel)
{
	LockRelationOid(RelationGetRelid(rel), RowExclusiveLock);
	w->rel = rel;
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, rel, 0, NULL, 0);
	ExecOpenIndices(w->rri, false);
	w->slot = table_slot_create(rel, NULL);
}

/* Release what SettleRelOpen set up (the locks stay). */
static void
SettleRelClose(SettleRel *w)
{
	if (w->rri == NULL)
		return;
	ExecDropSingleTupleTableSlot(w->slot);
	ExecCloseIndices(w->rri);
}

/*
 * Write the new values in w->slot (stored virtual by the caller) as a new
 * version of otid (update) or a new row (otid NULL), as the executor
 * does: constraints, heap, index entries.
 */
static void
SettleRelWrite(SettleDirectState *d, SettleRel *w, ItemPointer otid)
{
	if (w->rel->rd_att->constr != NULL)
		ExecConstraints(w->rri, w->slot, d->estate);
	if (otid != NULL)
	{
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		LoyaltyUpdateIndexes update_indexes;
		TM_Result	res = table_tuple_update(w->rel, otid, w->slot, d->cid, d->snapshot,
											 InvalidSnapshot, true, &tmfd, &lockmode,
											 &update_indexes);

		if (res != TM_Ok)
			elog(ERROR, "settling points: a row of a locked account changed concurrently (%d)", (int) res);
		if (w->rri->ri_NumIndices > 0 && LoyaltyUpdateNeedsAnyIndexInserts(update_indexes))
			list_free(LoyaltyExecInsertIndexTuples(w->rri, w->slot, d->estate, update_indexes));
	}
	else
	{
		table_tuple_insert(w->rel, w->slot, d->cid, 0, NULL);
		if (w->rri->ri_NumIndices > 0)
			list_free(LoyaltyExecInsertIndexTuples(w->rri, w->slot, d->estate, true));
	}
	ResetPerTupleExprContext(d->estate);
}

/* Copy a read row's values into a writer's slot, to be changed and written. */
static void
SettleRelCopy(SettleRel *w, TupleTableSlot *old)
{
	int			natts = RelationGetDescr(w->rel)->natts;

	ExecClearTuple(w->slot);
	slot_getallattrs(old);
	memcpy(w->slot->tts_values, old->tts_values, sizeof(Datum) * natts);
	memcpy(w->slot->tts_isnull, old->tts_isnull, sizeof(bool) * natts);
}

/* The number of a column of rel with the given type, or InvalidAttrNumber. */
static AttrNumber
SettleColumn(Relation rel, const char *name, Oid type)
{
	TupleDesc	desc = RelationGetDescr(rel);

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->atttypid == type ? att->attnum : InvalidAttrNumber;
	}
	return InvalidAttrNumber;
}

/*
 * Open and check the ledger: the extension's table with exactly the
 * columns it defines (so every column gets the value the INSERT gave it)
 * and an identity entry_id, writable by INSERT.
 */
static bool
SettleLedgerOpen(SettleDirectState *d)
{
	Oid			nsp = get_namespace_oid("loyalty", true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid("points_ledger", nsp) : InvalidOid;
	TupleDesc	desc;
	int			live = 0;

	if (!OidIsValid(relid))
		return false;
	d->ledger = try_relation_open(relid, RowExclusiveLock);
	if (d->ledger == NULL)
		return false;
	desc = RelationGetDescr(d->ledger);
	if (RelationGetNamespace(d->ledger) != nsp || !SettleRelWritable(d->ledger, CMD_INSERT))
		return false;
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			live++;
	if (live != NLEDGERCOLS)
		return false;
	for (int c = 0; c < NLEDGERCOLS; c++)
		if ((d->lc[c] = SettleColumn(d->ledger, ledger_cols[c], ledger_types[c])) == InvalidAttrNumber)
			return false;
	if (TupleDescAttr(desc, d->lc[LC_ENTRY_ID] - 1)->attidentity != ATTRIBUTE_IDENTITY_ALWAYS)
		return false;
	d->entry_seq = getIdentitySequence_compat(d->ledger, d->lc[LC_ENTRY_ID], true);
	return OidIsValid(d->entry_seq);
}

/*
 * Open the three tables for the direct path and check every invariant of
 * the section header; false (nothing written) when one does not hold.
 */
static bool
SettleDirectOpen(SettleDirectState *d)
{
	static const char *const acols[7] = {"available", "pending", "debt", "next_event_at",
	"settled_at", "updated_at", "customer_id"};
	static const Oid atypes[7] = {INT8OID, INT8OID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TEXTOID};
	static const char *const lcols[6] = {"state", "remaining", "available_at", "expires_at",
	"lot_id", "expired"};
	static const Oid ltypes[6] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT8OID, INT8OID};
	static PointsKeyIndexHint acct_hint;
	static PointsKeyIndexHint lot_hint;

	if (!PointsKeyIndexOpen(&d->accounts, &acct_hint, "points_account", "points_account_pkey", false,
							7, acols, atypes))
		return false;
	if (!PointsKeyIndexOpen(&d->lots, &lot_hint, "points_lot", "points_lot_open_idx", true, 6,
							lcols, ltypes))
		return false;
	if (!SettleRelWritable(d->accounts.heap, CMD_UPDATE) || !SettleRelWritable(d->lots.heap, CMD_UPDATE))
		return false;
	if (!SettleLedgerOpen(d))
		return false;
	d->ac.available = d->accounts.cols[0];
	d->ac.pending = d->accounts.cols[1];
	d->ac.debt = d->accounts.cols[2];
	d->ac.next_event_at = d->accounts.cols[3];
	d->ac.settled_at = d->accounts.cols[4];
	d->ac.updated_at = d->accounts.cols[5];
	return true;
}

/* Close what SettleDirectOpen opened (the locks stay). */
static void
SettleDirectClose(SettleDirectState *d)
{
	SettleRelClose(&d->acct_w);
	SettleRelClose(&d->lot_w);
	SettleRelClose(&d->ledger_w);
	if (d->estate != NULL)
		FreeExecutorState(d->estate);
	if (d->ledger != NULL)
		relation_close(d->ledger, NoLock);
	PointsKeyIndexClose(&d->lots);
	PointsKeyIndexClose(&d->accounts);
}

/* A lot's row address (block and offset as one number) and the position of its account. */
typedef struct SettleTid
{
	uint64		addr;
	int32		account;
} SettleTid;

/* Order by row address (pages in order, each visited once). */
static int
SettleTidCmp(const void *a, const void *b)
{
	uint64		x = ((const SettleTid *) a)->addr;
	uint64		y = ((const SettleTid *) b)->addr;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Sort lots by account, then lot_id, as SettleLotCmp orders them: counted
 * into place by account (positions 0..naccounts-1), then each account's
 * few lots by insertion.  Linear where qsort of a batch's lots was a
 * visible share of the time.
 */
static SettleLot *
SettleSortLots(SettleLot *lots, int n, int naccounts)
{
	int		   *start = palloc0(sizeof(int) * (naccounts + 1));
	SettleLot  *out = palloc(sizeof(SettleLot) * Max(n, 1));

	for (int i = 0; i < n; i++)
		start[lots[i].account + 1]++;
	for (int k = 0; k < naccounts; k++)
		start[k + 1] += start[k];
	for (int i = 0; i < n; i++)
		out[start[lots[i].account]++] = lots[i];
	for (int i = 1; i < n; i++)
	{
		SettleLot	x = out[i];
		int			j = i;

		while (j > 0 && SettleLotCmp(&out[j - 1], &x) > 0)
		{
			out[j] = out[j - 1];
			j--;
		}
		out[j] = x;
	}
	pfree(start);
	return out;
}

/* Grow a palloc'd array of n elements of size sz, doubling it when full. */
static void *
SettleGrow(void *arr, int n, int *size, Size sz)
{
	if (n < *size)
		return arr;
	if ((Size) *size * 2 > MaxAllocSize / sz)
		elog(ERROR, "too many open lots to settle in one statement");
	*size *= 2;
	return repalloc(arr, sz * *size);
}

/*
 * Read the open lots of the accounts and update the due ones.  The index
 * gives the lots' row addresses, account by account (no heap access);
 * they are then fetched in address order, so that each heap page is read
 * once for all of its lots (as a bitmap heap scan does), and every due lot
 * is updated while its page is at hand.  The new versions are written by
 * this command, so the fetches (same snapshot) never return them.  Returns
 * the lots read, in d->buf (unsorted).
 */
static int
SettleDirectLots(SettleDirectState *d, Datum *keys, bool *keynulls, int nkeys, TimestampTz as_of)
{
	PointsKeyIndex *src = &d->lots;
	int			ntids = 0,
				tidsize = 256,
				n = 0;
	SettleTid  *tids = palloc(sizeof(SettleTid) * tidsize);
	IndexFetchTableData *fetch;

	for (int k = 0; k < nkeys; k++)
	{
		ItemPointer tid;

		if (keynulls[k])
			continue;
		d->lot_scan = PointsKeyIndexScan(src, d->lot_scan, d->snapshot, DatumGetTextPP(keys[k]));
		while ((tid = index_getnext_tid(d->lot_scan, ForwardScanDirection)) != NULL)
		{
			tids = SettleGrow(tids, ntids, &tidsize, sizeof(SettleTid));
			tids[ntids].addr = ((uint64) ItemPointerGetBlockNumber(tid) << 16) |
				ItemPointerGetOffsetNumber(tid);
			tids[ntids++].account = k;
		}
	}
	qsort(tids, ntids, sizeof(SettleTid), SettleTidCmp);

	fetch = table_index_fetch_begin(src->heap);
	for (int i = 0; i < ntids; i++)
	{
		TupleTableSlot *slot = d->lot_slot;
		SettleLot  *lot;
		bool		call_again = false;
		bool		all_dead;
		bool		isnull;
		bool		expiring;
		Datum		v;

		ItemPointerData tid;

		ItemPointerSet(&tid, (BlockNumber) (tids[i].addr >> 16), (OffsetNumber) (tids[i].addr & 0xFFFF));
		if (!table_index_fetch_tuple(fetch, &tid, d->snapshot, slot, &call_again, &all_dead))
			continue;
		v = slot_getattr(slot, src->cols[0], &isnull);
		if (isnull)
			continue;
		d->buf = SettleGrow(d->buf, n, &d->bufsize, sizeof(SettleLot));
		lot = &d->buf[n];
		lot->state = SettleStateOf(DatumGetTextPP(v));
		if (lot->state == SETTLE_OTHER && strcmp(TextDatumGetCString(v), "closed") == 0)
			continue;
		lot->account = tids[i].account;
		lot->tid = slot->tts_tid;
		lot->remaining = PointsSlotInt64(slot, src->cols[1]);
		v = slot_getattr(slot, src->cols[2], &isnull);
		lot->has_available_at = !isnull;
		lot->available_at = isnull ? 0 : DatumGetTimestampTz(v);
		v = slot_getattr(slot, src->cols[3], &isnull);
		lot->has_expires_at = !isnull;
		lot->expires_at = isnull ? 0 : DatumGetTimestampTz(v);
		lot->lot_id = PointsSlotInt64(slot, src->cols[4]);
		n++;
		if (!SettleLotDue(lot, as_of, &expiring))
			continue;
		SettleRelCopy(&d->lot_w, slot);
		d->lot_w.slot->tts_values[src->cols[0] - 1] = expiring ? d->closed : d->available;
		if (expiring)
		{
			AttrNumber	e = src->cols[5];

			d->lot_w.slot->tts_values[src->cols[1] - 1] = Int64GetDatum(0);
			d->lot_w.slot->tts_values[e - 1] =
				Int64GetDatum(SettleAdd(PointsSlotInt64(slot, e), lot->remaining));
			d->lot_w.slot->tts_isnull[e - 1] = false;
		}
		ExecStoreVirtualTuple(d->lot_w.slot);
		SettleRelWrite(d, &d->lot_w, &lot->tid);
	}
	table_index_fetch_end(fetch);
	pfree(tids);
	return n;
}

/* a - b for the account's balances, with bigint's own error on overflow. */
static int64
SettleSub(int64 a, int64 b)
{
	int64		r;

	if (pg_sub_s64_overflow(a, b, &r))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));
	return r;
}

/*
 * Append the expire entry of an account (the values settle_accounts_sql's
 * INSERT gave it).
 */
static void
SettleDirectEntry(SettleDirectState *d, text *key, const SettleAccount *a,
				  int64 available, int64 pending, int64 debt, TimestampTz as_of)
{
	TupleTableSlot *s = d->ledger_w.slot;
	int			natts = RelationGetDescr(d->ledger)->natts;
	Datum	   *v = s->tts_values;

	ExecClearTuple(s);
	for (int i = 0; i < natts; i++)
		s->tts_isnull[i] = true;
#define SET(c, x) (v[d->lc[c] - 1] = (x), s->tts_isnull[d->lc[c] - 1] = false)
	SET(LC_ENTRY_ID, Int64GetDatum(nextval_internal(d->entry_seq, false)));
	SET(LC_CUSTOMER_ID, PointerGetDatum(key));
	SET(LC_KIND, d->kind);
	SET(LC_POINTS, Int64GetDatum(-SettleAdd(a->exp_available, a->exp_pending)));
	SET(LC_REASON, d->reason);
	SET(LC_QUALIFYING, Int64GetDatum(0));
	SET(LC_DEBT_CHANGE, Int64GetDatum(0));
	SET(LC_LOT_IDS, SettleArray(d->exp_ids + a->lot_from - 1, NULL, a->exp_lots, INT8OID));
	SET(LC_LOT_POINTS, SettleArray(d->exp_deltas + a->lot_from - 1, NULL, a->exp_lots, INT8OID));
	SET(LC_AVAILABLE_AFTER, Int64GetDatum(available));
	SET(LC_PENDING_AFTER, Int64GetDatum(pending));
	SET(LC_DEBT_AFTER, Int64GetDatum(debt));
	SET(LC_EFFECTIVE_AT, TimestampTzGetDatum(as_of));
	SET(LC_CREATED_AT, TimestampTzGetDatum(d->now));
#undef SET
	ExecStoreVirtualTuple(s);
	SettleRelWrite(d, &d->ledger_w, NULL);
}

/*
 * Find the row of a locked account: at the address its lock returned
 * (row, when given; the version locked is the latest and, read with a
 * snapshot taken after the lock, visible), else through the primary key.
 * False when the account does not exist.
 */
static bool
SettleDirectFindAccount(SettleDirectState *d, text *key, ItemPointer row)
{
	if (row != NULL &&
		table_tuple_fetch_row_version(d->accounts.heap, row, d->snapshot, d->acct_slot))
	{
		bool		isnull;
		Datum		v = slot_getattr(d->acct_slot, d->accounts.key, &isnull);

		if (!isnull && VARSIZE_ANY_EXHDR(DatumGetPointer(v)) == VARSIZE_ANY_EXHDR(key) &&
			memcmp(VARDATA_ANY(DatumGetPointer(v)), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)) == 0)
			return true;
	}
	d->acct_scan = PointsKeyIndexScan(&d->accounts, d->acct_scan, d->snapshot, key);
	return index_getnext_slot(d->acct_scan, ForwardScanDirection, d->acct_slot);
}

/*
 * Update one settled account (its lots done) and, when points expired,
 * append its expire entry: the values settle_accounts_sql gave them.
 */
static void
SettleDirectAccount(SettleDirectState *d, text *key, ItemPointer row, const SettleAccount *a,
					TimestampTz as_of, PointsSettled *out)
{
	TupleTableSlot *s;
	const SettleAccountCols *c = &d->ac;
	int64		available,
				pending,
				debt;
	Datum		settled;
	bool		settled_null;

	if (!SettleDirectFindAccount(d, key, row))
		return;
	SettleRelCopy(&d->acct_w, d->acct_slot);
	s = d->acct_w.slot;
	available = SettleAdd(SettleSub(PointsSlotInt64(d->acct_slot, c->available), a->exp_available),
						  a->activated);
	pending = SettleSub(SettleSub(PointsSlotInt64(d->acct_slot, c->pending), a->exp_pending),
						a->activated);
	debt = PointsSlotInt64(d->acct_slot, c->debt);
	s->tts_values[c->available - 1] = Int64GetDatum(available);
	s->tts_values[c->pending - 1] = Int64GetDatum(pending);
	s->tts_values[c->next_event_at - 1] = TimestampTzGetDatum(a->next_event_at);
	s->tts_isnull[c->next_event_at - 1] = !a->has_next_event;
	settled = slot_getattr(d->acct_slot, c->settled_at, &settled_null);
	if (settled_null || DatumGetTimestampTz(settled) < as_of)
		s->tts_values[c->settled_at - 1] = TimestampTzGetDatum(as_of);
	s->tts_isnull[c->settled_at - 1] = false;
	s->tts_values[c->updated_at - 1] = TimestampTzGetDatum(d->now);
	s->tts_isnull[c->updated_at - 1] = false;
	ExecStoreVirtualTuple(s);
	SettleRelWrite(d, &d->acct_w, &d->acct_slot->tts_tid);

	if (a->exp_lots > 0 && SettleAdd(a->exp_available, a->exp_pending) > 0)
		SettleDirectEntry(d, key, a, available, pending, debt, as_of);
	out->accounts++;
	out->lots += a->exp_lots;
	out->expired = SettleAdd(out->expired, SettleAdd(a->exp_available, a->exp_pending));
	out->activated = SettleAdd(out->activated, a->activated);
	out->available = available;
	out->pending = pending;
	out->has_next_event = a->has_next_event;
	out->next_event_at = a->next_event_at;
}

/*
 * Settle the given (locked) accounts without the executor, in the order
 * given; false, having written nothing, when the section's invariants do
 * not hold (the caller then runs the statements).
 */
static bool
SettleDirect(Datum customers, Datum account_rows, TimestampTz as_of, PointsSettled *out)
{
	SettleDirectState d;
	Datum	   *keys;
	bool	   *keynulls;
	int			nkeys;
	int			nlots;
	int			nexp;
	SettleAccount *acc;
	Datum	   *rows = NULL;
	bool	   *rownulls = NULL;
	int			nrows = -1;

	memset(&d, 0, sizeof(d));
	if (ExecutorCheckPerms_hook != NULL || !SettleDirectOpen(&d))
	{
		SettleDirectClose(&d);
		return false;
	}
	d.estate = CreateExecutorState();
	SettleRelOpen(&d.acct_w, d.accounts.heap);
	SettleRelOpen(&d.lot_w, d.lots.heap);
	SettleRelOpen(&d.ledger_w, d.ledger);
	d.closed = CStringGetTextDatum("closed");
	d.available = CStringGetTextDatum("available");
	d.kind = CStringGetTextDatum(POINTS_EXPIRE);
	d.reason = CStringGetTextDatum("expired");
	d.now = GetCurrentTransactionStartTimestamp();
	d.bufsize = 256;
	d.buf = palloc(sizeof(SettleLot) * d.bufsize);

	/* a new command and snapshot, taken after the accounts were locked */
	CommandCounterIncrement();
	d.snapshot = RegisterSnapshot(GetTransactionSnapshot());
	d.cid = GetCurrentCommandId(true);
	d.acct_slot = table_slot_create(d.accounts.heap, NULL);
	d.lot_slot = table_slot_create(d.lots.heap, NULL);

	deconstruct_array(DatumGetArrayTypeP(customers), TEXTOID, -1, false, TYPALIGN_INT,
					  &keys, &keynulls, &nkeys);
	if (account_rows != (Datum) 0)
		deconstruct_array(DatumGetArrayTypeP(account_rows), TIDOID, sizeof(ItemPointerData), false,
						  TYPALIGN_SHORT, &rows, &rownulls, &nrows);
	nlots = SettleDirectLots(&d, keys, keynulls, nkeys, as_of);
	d.buf = SettleSortLots(d.buf, nlots, nkeys);
	acc = palloc0(sizeof(SettleAccount) * Max(nkeys, 1));
	d.due = palloc(sizeof(Datum) * Max(nlots, 1));
	d.exp_ids = palloc(sizeof(Datum) * Max(nlots, 1));
	d.exp_deltas = palloc(sizeof(Datum) * Max(nlots, 1));
	(void) SettleDecide(d.buf, nlots, as_of, acc, d.due, d.exp_ids, d.exp_deltas, &nexp);
	for (int k = 0; k < nkeys; k++)
	{
		CHECK_FOR_INTERRUPTS();
		if (!keynulls[k])
			SettleDirectAccount(&d, DatumGetTextPP(keys[k]),
								nrows == nkeys && !rownulls[k] ? (ItemPointer) DatumGetPointer(rows[k]) : NULL,
								&acc[k], as_of, out);
	}

	if (d.acct_scan != NULL)
		index_endscan(d.acct_scan);
	if (d.lot_scan != NULL)
		index_endscan(d.lot_scan);
	ExecDropSingleTupleTableSlot(d.acct_slot);
	ExecDropSingleTupleTableSlot(d.lot_slot);
	UnregisterSnapshot(d.snapshot);
	SettleDirectClose(&d);
	/* later commands see the writes */
	CommandCounterIncrement();
	return true;
}

/*
 * Settle the given (locked) accounts as of a time: lots whose expiry passed
 * are closed with one expire ledger entry per account, pending lots whose
 * time came become available, and next_event_at is recomputed exactly.
 * customers is a text[] of account keys without duplicates; accounts are
 * settled in its order (expire_points passes them in key order).
 * account_rows, when not (Datum) 0, is a tid[] of the accounts' rows as
 * their locks returned them, in the same order (a hint: an account is
 * looked up by key when its row is not there).  *out
 * (zeroed by the caller) gets the totals over the accounts that exist and
 * the new balance of the last one.  Without the executor when it may
 * (SettleDirect), else by the statements above.
 */
void
PointsSettle(Datum customers, Datum account_rows, TimestampTz as_of, PointsSettled *out)
{
	MemoryContext work = AllocSetContextCreate(CurrentMemoryContext, "loyalty points settle",
											   ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(work);

	if (!SettleDirect(customers, account_rows, as_of, out))
		SettleByStatements(customers, as_of, out);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);
}

/*
 * PointsSettle by the statements: read the lots (directly when it may),
 * update the due ones by row address, update the accounts and append the
 * entries in one statement.
 */
static void
SettleByStatements(Datum customers, TimestampTz as_of, PointsSettled *out)
{
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
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		v;

		out->accounts++;
		out->available = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
		out->pending = DatumGetInt64(SPI_getbinval(t, d, 3, &isnull));
		v = SPI_getbinval(t, d, 4, &isnull);
		out->has_next_event = !isnull;
		out->next_event_at = isnull ? 0 : DatumGetTimestampTz(v);
		out->lots += DatumGetInt64(SPI_getbinval(t, d, 5, &isnull));
		out->expired = SettleAdd(out->expired, DatumGetInt64(SPI_getbinval(t, d, 6, &isnull)));
		out->activated = SettleAdd(out->activated, DatumGetInt64(SPI_getbinval(t, d, 7, &isnull)));
	}
	SPI_freetuptable(SPI_tuptable);
}

PG_FUNCTION_INFO_V1(points_expire);

/* Accounts settled per statement. */
#define POINTS_EXPIRE_BATCH 10000

static const char pick_sql[] =
"SELECT array_agg(s.customer_id ORDER BY s.customer_id), array_agg(s.ctid ORDER BY s.customer_id) FROM ("
"  SELECT a.customer_id, a.ctid FROM loyalty.points_account a"
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
		PointsSettled settled;

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

		memset(&settled, 0, sizeof(settled));
		PointsSettle(picked, SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull),
					 as_of, &settled);
		lots += settled.lots;
		expired += settled.expired;
		activated += settled.activated;
		accounts += n;
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
