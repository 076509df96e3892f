/*
 * stats_store.c
 *		Every write to loyalty.customer_stats: the fold of pending tracked
 *		changes, back-fills and rebuilds, and the scores, leavers and
 *		compaction of refresh_segments.  The invariants (who writes, lock
 *		order, recheck, index policy, when SQL replaces the direct path)
 *		are stated in stats_store.h.
 *
 * Writing below the executor is what keeps folds and refreshes cheap: a
 * refresh updates thousands of rows it has just read, by location, with
 * values computed in C.  It is only correct for the table as the extension
 * creates it, so every entry point checks the table (RfmStoreDirectOk) and
 * goes through SQL instead when someone added a trigger, a rule, a
 * constraint, row level security or an index.
 */
#include "loyalty.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/cluster.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "rfm_live.h"
#include "stats_store.h"

/*
 * customer_stats opened for writing: the relation, whether the direct path
 * may be used and, when it may, its primary key, snapshot and slots.
 */
typedef struct RfmStore
{
	Relation	rel;
	bool		direct;			/* RfmStoreDirectOk */
	Relation	pkey;			/* direct only */
	IndexInfo  *pkinfo;			/* built at the first non-HOT update */
	IndexScanDesc scan;			/* lookups by key (RfmStatsApply) */
	Snapshot	snap;
	CommandId	cid;
	TupleTableSlot *found;		/* the version read */
	TupleTableSlot *locked;		/* the latest version, after a recheck */
	TupleTableSlot *newslot;	/* the new values */
	MemoryContext rowcxt;		/* per-row scratch */
	RfmStatsAtts at;
} RfmStore;

/* Computes a row's new values in place from the version at hand. */
typedef void (*RfmStoreCompute) (RfmStore *st, Datum *v, bool *nl, void *arg);

/* OID of loyalty.customer_stats. */
Oid
RfmStatsRelid(void)
{
	Oid			relid = get_relname_relid("customer_stats", get_namespace_oid("loyalty", false));

	if (!OidIsValid(relid))
		elog(ERROR, "table loyalty.customer_stats does not exist");
	return relid;
}

/* 0-based position of a column of customer_stats. */
static int
RfmStatsAttno(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), name) == 0)
			return i;
	elog(ERROR, "column loyalty.customer_stats.%s does not exist", name);
	return -1;
}

/* 0-based position of a column of customer_stats, -1 when absent. */
static int
RfmStatsAttnoIf(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), name) == 0)
			return i;
	return -1;
}

/* Positions of every column of customer_stats. */
void
RfmStatsColumns(TupleDesc desc, RfmStatsAtts *at)
{
	at->id = RfmStatsAttno(desc, "customer_id");
	at->rows = RfmStatsAttno(desc, "row_count");
	at->orders = RfmStatsAttno(desc, "order_count");
	at->spend = RfmStatsAttno(desc, "spend_total");
	at->first = RfmStatsAttno(desc, "first_order");
	at->last = RfmStatsAttno(desc, "last_order");
	at->days = RfmStatsAttno(desc, "days");
	at->score = RfmStatsAttno(desc, "score");
	at->segment = RfmStatsAttno(desc, "segment");
	at->since = RfmStatsAttno(desc, "since");
	at->odays = RfmStatsAttnoIf(desc, "order_days");
	at->fday = RfmStatsAttnoIf(desc, "first_day");
	at->fspend = RfmStatsAttnoIf(desc, "first_day_spend");
	if (at->odays < 0 || at->fday < 0 || at->fspend < 0)
		at->odays = at->fday = at->fspend = -1;
}

/*
 * Whether customer_stats has the all-time columns of the CLV summaries
 * (0.3.0 on; a 0.2.0 schema under the new library has not).
 */
bool
RfmStatsHasAllTime(void)
{
	return get_attnum(RfmStatsRelid(), "first_day_spend") != InvalidAttrNumber;
}

/*
 * Follow a bucket change in the all-time columns (values in place): the
 * order days gained minus lost, and the first order day with its spend
 * taken from the merged buckets when they are not later than the day
 * recorded, or when the old buckets still covered the recorded day (its
 * orders were removed).  A first day pruned from the buckets stays as
 * recorded.
 */
void
RfmStatsTally(Datum *v, bool *nl, const RfmStatsAtts *at, RfmDays *old, RfmDays *merged)
{
	DateADT		f_old;
	DateADT		f_new;
	int64		before = RfmDaysOrderDays(old, &f_old);
	int64		after = RfmDaysOrderDays(merged, &f_new);
	int64		odays = DatumGetInt64(v[at->odays]) + after - before;

	v[at->odays] = Int64GetDatum(Max(odays, 0));
	if (after > 0 &&
		(nl[at->fday] || f_new <= DatumGetDateADT(v[at->fday]) ||
		 (RfmDaysCount(old) > 0 && RfmDaysFirstDay(old) <= DatumGetDateADT(v[at->fday]))))
	{
		RfmDaysSum	sum;

		RfmDaysWindow(merged, f_new, f_new, &sum, true, CurrentMemoryContext);
		v[at->fday] = DateADTGetDatum(f_new);
		v[at->fspend] = NumericGetDatum(sum.spend);
		nl[at->fday] = nl[at->fspend] = false;
	}
}

/*
 * Add a change to a statistics row's values (v / nl, in place): counts and
 * spend added, first / last order widened by the orders added, day buckets
 * merged (no bucket left: NULL).  What the SQL upsert computes, and what a
 * refresh's scan computes to score a customer with its pending additions.
 * Allocates in the current context.
 */
void
RfmStatsMerge(Datum *v, bool *nl, const RfmStatsAtts *at, const RfmStatsChange *ch)
{
	RfmDays    *old;
	RfmDays    *merged;

	v[at->rows] = Int64GetDatum(DatumGetInt64(v[at->rows]) + ch->rows);
	v[at->orders] = Int64GetDatum(DatumGetInt64(v[at->orders]) + ch->orders);
	v[at->spend] = NumericGetDatum(LoyaltyNumericAdd(DatumGetNumeric(v[at->spend]), ch->spend));
	if (ch->has_added)
	{
		if (nl[at->first] || ch->first_added < DatumGetTimestampTz(v[at->first]))
			v[at->first] = TimestampTzGetDatum(ch->first_added);
		if (nl[at->last] || ch->last_added > DatumGetTimestampTz(v[at->last]))
			v[at->last] = TimestampTzGetDatum(ch->last_added);
		nl[at->first] = nl[at->last] = false;
	}
	old = nl[at->days] ? NULL : DatumGetRfmDays(v[at->days]);
	if (RfmDaysCount(old) == 0)
		old = NULL;
	merged = RfmDaysMerge(old, ch->days);
	if (ch->days != NULL && at->odays >= 0)
		RfmStatsTally(v, nl, at, old, merged);
	nl[at->days] = (RfmDaysCount(merged) == 0);
	v[at->days] = nl[at->days] ? (Datum) 0 : PointerGetDatum(merged);
}

/* ---------------------------------------------------------------------
 * Opening the table: the direct path or SQL
 * ---------------------------------------------------------------------
 */

/*
 * Whether index is the extension's primary key of customer_stats: a unique
 * btree on customer_id alone, without expression or predicate.
 */
static bool
RfmStoreIsPkey(Relation rel, Oid indexoid, int a_id)
{
	Relation	idx = index_open(indexoid, AccessShareLock);
	Form_pg_index ind = idx->rd_index;
	bool		ok;

	ok = ind->indisprimary && ind->indisunique && ind->indnatts == 1 &&
		ind->indkey.values[0] == a_id + 1 &&
		idx->rd_rel->relam == BTREE_AM_OID &&
		idx->rd_indcollation[0] == C_COLLATION_OID &&
		RelationGetIndexExpressions(idx) == NIL &&
		RelationGetIndexPredicate(idx) == NIL;
	index_close(idx, AccessShareLock);
	return ok;
}

/*
 * Whether writes may bypass the executor: customer_stats as the extension
 * creates it, a heap table whose only index is its primary key, without
 * trigger, rule, row level security, CHECK constraint or generated column
 * (any of which a direct write would silently skip).  Checked at every
 * opening, so an administrator's change takes effect at the next write.
 */
static bool
RfmStoreDirectOk(Relation rel, const RfmStatsAtts *at)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;
	List	   *indexes;
	bool		ok;

	if (rel->rd_rel->relkind != RELKIND_RELATION ||
		rel->rd_rel->relam != HEAP_TABLE_AM_OID ||
		rel->trigdesc != NULL || rel->rd_rules != NULL ||
		rel->rd_rel->relrowsecurity || rel->rd_rel->relforcerowsecurity)
		return false;
	if (constr != NULL && (constr->num_check > 0 || constr->has_generated_stored))
		return false;
	indexes = RelationGetIndexList(rel);
	ok = list_length(indexes) == 1 &&
		linitial_oid(indexes) == RelationGetPrimaryKeyIndex_compat(rel) &&
		RfmStoreIsPkey(rel, linitial_oid(indexes), at->id);
	list_free(indexes);
	return ok;
}

/*
 * Open customer_stats for writing (ROW EXCLUSIVE, kept until commit).  snap
 * is the snapshot the caller read the rows in; NULL takes one after this
 * transaction's earlier changes, as SPI does before a statement.  For the
 * direct path the primary key is opened too, and a key lookup prepared
 * when by_key.
 */
static void
RfmStoreOpen(RfmStore *st, Snapshot snap, bool by_key)
{
	memset(st, 0, sizeof(RfmStore));
	st->rel = table_open(RfmStatsRelid(), RowExclusiveLock);
	RfmStatsColumns(RelationGetDescr(st->rel), &st->at);
	st->direct = RfmStoreDirectOk(st->rel, &st->at);
	if (!st->direct)
		return;
	st->pkey = index_open(RelationGetPrimaryKeyIndex_compat(st->rel), RowExclusiveLock);
	if (snap == NULL)
	{
		CommandCounterIncrement();
		snap = GetTransactionSnapshot();
	}
	st->snap = RegisterSnapshot(snap);
	st->cid = GetCurrentCommandId(true);
	st->found = table_slot_create(st->rel, NULL);
	st->locked = table_slot_create(st->rel, NULL);
	st->newslot = MakeSingleTupleTableSlot(RelationGetDescr(st->rel), &TTSOpsVirtual);
	st->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "loyalty stats row",
									   ALLOCSET_DEFAULT_SIZES);
	if (by_key)
		st->scan = index_beginscan_compat(st->rel, st->pkey, st->snap, 1, 0);
}

/* Close what RfmStoreOpen opened (locks stay until commit). */
static void
RfmStoreClose(RfmStore *st)
{
	if (st->direct)
	{
		if (st->scan)
			index_endscan(st->scan);
		ExecDropSingleTupleTableSlot(st->found);
		ExecDropSingleTupleTableSlot(st->locked);
		ExecDropSingleTupleTableSlot(st->newslot);
		MemoryContextDelete(st->rowcxt);
		UnregisterSnapshot(st->snap);
		index_close(st->pkey, NoLock);
	}
	table_close(st->rel, NoLock);
}

/* ---------------------------------------------------------------------
 * The direct path: one recheck loop, one index policy
 * ---------------------------------------------------------------------
 */

/*
 * Update the row whose version at *tid is in src with the values compute
 * derives from it, below the executor.  If another transaction updated the
 * row since that version was read, wait for it, lock the latest version
 * and compute again from that one (UPDATE's recheck under READ COMMITTED;
 * a serialization failure under REPEATABLE READ or SERIALIZABLE).  A
 * non-HOT update gives the primary key, the only index (RfmStoreDirectOk),
 * its entry.  Returns TM_Ok (st->newslot holds the new values) or
 * TM_Deleted (the row is gone, nothing written).
 */
static TM_Result
RfmStoreUpdate(RfmStore *st, ItemPointer tid_in, TupleTableSlot *src,
			   RfmStoreCompute compute, void *arg)
{
	TupleDesc	desc = RelationGetDescr(st->rel);
	ItemPointerData tid = *tid_in;
	TM_FailureData tmfd;
	TM_Result	res;
	LockTupleMode lockmode;
	LoyaltyUpdateIndexes update_indexes;
	bool		relocked = false;

	for (;;)
	{
		slot_getallattrs(src);
		ExecClearTuple(st->newslot);
		memcpy(st->newslot->tts_values, src->tts_values, sizeof(Datum) * desc->natts);
		memcpy(st->newslot->tts_isnull, src->tts_isnull, sizeof(bool) * desc->natts);
		compute(st, st->newslot->tts_values, st->newslot->tts_isnull, arg);
		ExecStoreVirtualTuple(st->newslot);
		res = table_tuple_update(st->rel, &tid, st->newslot, st->cid, st->snap, InvalidSnapshot,
								 true, &tmfd, &lockmode, &update_indexes);
		if (res != TM_Updated || relocked)
			break;
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent update")));
		res = table_tuple_lock(st->rel, &tid, st->snap, st->locked, st->cid,
							   LockTupleNoKeyExclusive, LockWaitBlock,
							   TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
		if (res != TM_Ok)
			break;
		tid = st->locked->tts_tid;
		src = st->locked;
		relocked = true;
	}
	if (res == TM_Deleted)
	{
		if (IsolationUsesXactSnapshot())
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("could not serialize access due to concurrent delete")));
		ExecClearTuple(st->locked);
		return TM_Deleted;
	}
	if (res != TM_Ok)
		elog(ERROR, "unexpected result %d updating customer statistics", (int) res);
	if (LoyaltyUpdateNeedsIndexInserts(update_indexes))
	{
		bool		isnull = false;
		Datum		key = st->newslot->tts_values[st->at.id];

		if (st->pkinfo == NULL)
			st->pkinfo = BuildIndexInfo(st->pkey);
		index_insert_unchanged_compat(st->pkey, &key, &isnull, &st->newslot->tts_tid, st->rel,
									  UNIQUE_CHECK_NO, st->pkinfo);
	}
	ExecClearTuple(st->locked);
	return TM_Ok;
}

/*
 * Lock the latest version of the row whose version at *tid this
 * transaction read (waiting for its writer).  false: the row was deleted.
 */
static bool
RfmStoreLockRow(Relation rel, Snapshot snap, ItemPointer tid, LockTupleMode mode,
				TupleTableSlot *slot)
{
	TM_FailureData tmfd;
	TM_Result	res;
	ItemPointerData t = *tid;

	res = table_tuple_lock(rel, &t, snap, slot, GetCurrentCommandId(true), mode, LockWaitBlock,
						   TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
	ExecClearTuple(slot);
	if (res == TM_Deleted)
		return false;
	if (res != TM_Ok)
		elog(ERROR, "unexpected result %d locking customer statistics", (int) res);
	return true;
}

/* ---------------------------------------------------------------------
 * Folds, back-fills and rebuilds
 * ---------------------------------------------------------------------
 */

/* Forms of the upsert of changes whose customer has no row. */
typedef enum RfmUpsertForm
{
	RFM_UPSERT_ONE,				/* INSERT ... VALUES ... ON CONFLICT DO UPDATE */
	RFM_UPSERT_MANY,			/* INSERT ... SELECT unnest() ... ON CONFLICT */
	RFM_UPSERT_FORMS
} RfmUpsertForm;

static SPIPlanPtr upsert_plan[RFM_UPSERT_FORMS][2][2];	/* [form][returning][all-time columns] */
static Oid	upsert_days_type = InvalidOid;

/*
 * Prepare (once) the upsert of changes, for one customer or many (rows in
 * customer order, which is the order the executor inserts and locks them
 * in), with or without RETURNING of the new first and last order times.
 * Plans are re-prepared if loyalty.day_buckets was re-created (extension
 * dropped and created again in this backend).
 */
static SPIPlanPtr
RfmUpsertPlan(RfmUpsertForm form, bool returning)
{
	Oid			daysoid = RfmDaysTypeOid();
	bool		alltime = RfmStatsHasAllTime();
	SPIPlanPtr *pp = &upsert_plan[form][returning][alltime];
	Oid			elemtypes[7] = {TEXTOID, INT8OID, INT8OID, NUMERICOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, daysoid};
	Oid			argtypes[7];
	StringInfoData sql;
	int			i,
				j,
				k;

	if (daysoid != upsert_days_type)
	{
		for (i = 0; i < RFM_UPSERT_FORMS; i++)
			for (j = 0; j < 2; j++)
				for (k = 0; k < 2; k++)
					if (upsert_plan[i][j][k])
					{
						SPI_freeplan(upsert_plan[i][j][k]);
						upsert_plan[i][j][k] = NULL;
					}
		upsert_days_type = daysoid;
	}
	if (*pp != NULL)
		return *pp;
	for (i = 0; i < 7; i++)
		argtypes[i] = form == RFM_UPSERT_MANY ? get_array_type(elemtypes[i]) : elemtypes[i];
	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "INSERT INTO loyalty.customer_stats AS s"
						   " (customer_id, row_count, order_count, spend_total,"
						   " first_order, last_order, days");
	appendStringInfoString(&sql, alltime ? ", order_days, first_day, first_day_spend) " : ") ");
	if (form == RFM_UPSERT_MANY)
	{
		appendStringInfoString(&sql, alltime ? "SELECT u.*, t.*" : "SELECT u.*");
		appendStringInfoString(&sql,
							   " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   " pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							   " pg_catalog.unnest($6), pg_catalog.unnest($7)) AS u(c, r, o, sp, f, l, d)");
		if (alltime)
			appendStringInfoString(&sql, ", loyalty._rfm_days_tally(NULL, u.d, 0, NULL, NULL) AS t");
	}
	else
	{
		appendStringInfoString(&sql, "SELECT $1, $2, $3, $4, $5, $6, $7");
		if (alltime)
			appendStringInfoString(&sql, ", t.* FROM loyalty._rfm_days_tally(NULL, $7, 0, NULL, NULL) AS t");
	}
	appendStringInfoString(&sql,
						   " ON CONFLICT (customer_id) DO UPDATE SET"
						   " row_count = s.row_count OPERATOR(pg_catalog.+) excluded.row_count,"
						   " order_count = s.order_count OPERATOR(pg_catalog.+) excluded.order_count,"
						   " spend_total = s.spend_total OPERATOR(pg_catalog.+) excluded.spend_total,"
						   " first_order = LEAST(s.first_order, excluded.first_order),"
						   " last_order = GREATEST(s.last_order, excluded.last_order),"
						   " days = loyalty._rfm_days_merge(s.days, excluded.days)");
	if (alltime)
		appendStringInfoString(&sql,
							   ", (order_days, first_day, first_day_spend) = (SELECT t.* FROM"
							   " loyalty._rfm_days_tally(s.days, loyalty._rfm_days_merge(s.days, excluded.days),"
							   " s.order_days, s.first_day, s.first_day_spend) AS t)");
	if (returning)
		appendStringInfoString(&sql, " RETURNING s.customer_id, s.first_order, s.last_order");
	return LoyaltyKeepPlan(pp, sql.data, 7, argtypes, 0);
}

/*
 * loyalty._rfm_days_tally(old, merged, order_days, first_day,
 * first_day_spend): RfmStatsTally for the statements that write
 * customer_stats in SQL (upserts, the refresh's SQL path).
 */
PG_FUNCTION_INFO_V1(rfm_days_tally);
Datum
rfm_days_tally(PG_FUNCTION_ARGS)
{
	RfmStatsAtts at;
	Datum		v[3];
	bool		nl[3];
	Datum		out[3];
	bool		onl[3];
	TupleDesc	desc;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "_rfm_days_tally must return a row");
	memset(&at, 0, sizeof(at));
	at.odays = 0;
	at.fday = 1;
	at.fspend = 2;
	v[0] = PG_ARGISNULL(2) ? Int64GetDatum(0) : PG_GETARG_DATUM(2);
	nl[0] = false;
	v[1] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nl[1] = PG_ARGISNULL(3);
	v[2] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	nl[2] = PG_ARGISNULL(4);
	RfmStatsTally(v, nl, &at,
				  PG_ARGISNULL(0) ? NULL : DatumGetRfmDays(PG_GETARG_DATUM(0)),
				  PG_ARGISNULL(1) ? NULL : DatumGetRfmDays(PG_GETARG_DATUM(1)));
	memcpy(out, v, sizeof(out));
	memcpy(onl, nl, sizeof(onl));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), out, onl)));
}

/* RfmStoreCompute of RfmStatsApply: add the change. */
static void
RfmStoreComputeChange(RfmStore *st, Datum *v, bool *nl, void *arg)
{
	RfmStatsMerge(v, nl, &st->at, (RfmStatsChange *) arg);
}

/*
 * Apply changes through the upsert (customers without a row, or every
 * customer when the direct path is refused), in their (key) order; with
 * times, record each customer's new first and last order times.  Inside
 * SPI.
 */
static void
RfmStatsUpsert(RfmStatsChange *ch, int *idx, int n, RfmStatsTimes *times)
{
	Oid			elemtypes[7] = {TEXTOID, INT8OID, INT8OID, NUMERICOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, RfmDaysTypeOid()};
	Datum	   *v[7];
	bool	   *nl[7];
	Datum		args[7];
	char		argnulls[7];
	int			i,
				k;
	int			ret;
	uint64		r;

	for (k = 0; k < 7; k++)
	{
		v[k] = palloc_extended(sizeof(Datum) * n, MCXT_ALLOC_HUGE);
		nl[k] = palloc_extended(sizeof(bool) * n, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	}
	for (i = 0; i < n; i++)
	{
		RfmStatsChange *c = &ch[idx[i]];

		v[0][i] = CStringGetTextDatum(c->key);
		v[1][i] = Int64GetDatum(c->rows);
		v[2][i] = Int64GetDatum(c->orders);
		v[3][i] = NumericGetDatum(c->spend);
		v[4][i] = TimestampTzGetDatum(c->first_added);
		v[5][i] = TimestampTzGetDatum(c->last_added);
		nl[4][i] = nl[5][i] = !c->has_added;
		v[6][i] = PointerGetDatum(c->days);
		nl[6][i] = (c->days == NULL);
	}
	for (k = 0; k < 7; k++)
	{
		if (n > 1)
			args[k] = PointerGetDatum(RfmMakeArray(v[k], nl[k], n, elemtypes[k]));
		else
			args[k] = v[k][0];
		argnulls[k] = (n == 1 && nl[k][0]) ? 'n' : ' ';
	}
	ret = SPI_execute_plan(RfmUpsertPlan(n > 1 ? RFM_UPSERT_MANY : RFM_UPSERT_ONE, times != NULL),
						   args, argnulls, false, 0);
	if (ret != (times != NULL ? SPI_OK_INSERT_RETURNING : SPI_OK_INSERT))
		elog(ERROR, "could not upsert loyalty.customer_stats: %s", SPI_result_code_string(ret));
	if (times == NULL)
		return;

	/* RETURNING comes in input order (one row each), but match by key */
	k = 0;
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *key = SPI_getvalue(tup, desc, 1);
		RfmStatsTimes *t;

		for (i = 0; i < n; i++, k = (k + 1) % n)
			if (strcmp(ch[idx[k]].key, key) == 0)
				break;
		if (i == n)
			continue;
		t = &times[idx[k]];
		t->first = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &t->first_null));
		t->last = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &t->last_null));
	}
	SPI_freetuptable(SPI_tuptable);
}

/*
 * Apply per-customer changes (sorted by customer id, each customer once)
 * to customer_stats: existing rows updated in that order (below the
 * executor when allowed), then the customers without a row upserted in
 * that order.  With times, times[i] receives the first and last order
 * times changes[i] left in its row.  Inside SPI.
 */
void
RfmStatsApply(RfmStatsChange *changes, int n, RfmStatsTimes *times)
{
	RfmStore	st;
	int		   *rest = palloc_extended(sizeof(int) * Max(n, 1), MCXT_ALLOC_HUGE);
	int			nrest = 0;
	int			i;

	RfmStoreOpen(&st, NULL, true);
	for (i = 0; i < n; i++)
	{
		RfmStatsChange *c = &changes[i];
		ScanKeyData key;
		MemoryContext old;
		bool		done = false;
		bool		found;

		if (!st.direct)
		{
			rest[nrest++] = i;
			continue;
		}
		/*
		 * The scan runs in the caller's context, where it was begun: btree
		 * allocates some of its state lazily on the way (the killed-items
		 * array when it meets a dead entry), and index_endscan frees that
		 * after the row context was reset many times.  Only the key and
		 * the row's computation go in the row context.
		 */
		old = MemoryContextSwitchTo(st.rowcxt);
		ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(c->key));
		key.sk_collation = C_COLLATION_OID;
		MemoryContextSwitchTo(old);
		index_rescan(st.scan, &key, 1, NULL, 0);
		found = index_getnext_slot(st.scan, ForwardScanDirection, st.found);
		MemoryContextSwitchTo(st.rowcxt);
		if (found &&
			RfmStoreUpdate(&st, &st.found->tts_tid, st.found, RfmStoreComputeChange, c) == TM_Ok)
		{
			done = true;
			if (times != NULL)
			{
				Datum	   *v = st.newslot->tts_values;
				bool	   *nl = st.newslot->tts_isnull;

				times[i].first_null = nl[st.at.first];
				times[i].first = nl[st.at.first] ? 0 : DatumGetTimestampTz(v[st.at.first]);
				times[i].last_null = nl[st.at.last];
				times[i].last = nl[st.at.last] ? 0 : DatumGetTimestampTz(v[st.at.last]);
			}
		}
		ExecClearTuple(st.found);
		ExecClearTuple(st.newslot);
		MemoryContextSwitchTo(old);
		MemoryContextReset(st.rowcxt);
		/* no row (a new customer, or deleted meanwhile): upserted below */
		if (!done)
			rest[nrest++] = i;
	}
	RfmStoreClose(&st);
	if (nrest > 0)
		RfmStatsUpsert(changes, rest, nrest, times);
	pfree(rest);
}

/*
 * Store first and last order times read again from the tracked tables.
 * Only for rows this transaction's RfmStatsApply just wrote (and so
 * holds locked): the statement waits for nobody, whatever its plan.
 * Inside SPI.
 */
void
RfmStatsSetOrderTimes(char **keys, Datum *first, bool *first_null,
					  Datum *last, bool *last_null, int n)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *keyd = palloc(sizeof(Datum) * n);
	Datum		args[3];
	int			i;

	for (i = 0; i < n; i++)
		keyd[i] = CStringGetTextDatum(keys[i]);
	if (plan == NULL)
	{
		Oid			argtypes[3] = {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};

		LoyaltyKeepPlan(&plan, "UPDATE loyalty.customer_stats AS s"
						" SET first_order = u.f, last_order = u.l"
						" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
						" pg_catalog.unnest($3)) AS u(c, f, l)"
						" WHERE s.customer_id OPERATOR(pg_catalog.=) u.c",
						3, argtypes, 0);
	}
	args[0] = PointerGetDatum(RfmMakeArray(keyd, NULL, n, TEXTOID));
	args[1] = PointerGetDatum(RfmMakeArray(first, first_null, n, TIMESTAMPTZOID));
	args[2] = PointerGetDatum(RfmMakeArray(last, last_null, n, TIMESTAMPTZOID));
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update order times in loyalty.customer_stats");
}

/*
 * Zero every customer's statistics before a rebuild back-fills them
 * (customers left without rows stay as tombstones until the next refresh
 * records that they left).  The caller holds SHARE ROW EXCLUSIVE on the
 * table, so no other writer holds or takes a row lock meanwhile.  Inside
 * SPI.
 */
void
RfmStatsResetAll(void)
{
	if (SPI_execute(RfmStatsHasAllTime() ?
					"UPDATE loyalty.customer_stats SET row_count = 0, order_count = 0,"
					" spend_total = 0, first_order = NULL, last_order = NULL, days = NULL,"
					" order_days = 0, first_day = NULL, first_day_spend = NULL"
					" WHERE row_count OPERATOR(pg_catalog.<>) 0 OR days IS NOT NULL"
					" OR spend_total OPERATOR(pg_catalog.<>) 0 OR last_order IS NOT NULL"
					" OR order_days OPERATOR(pg_catalog.<>) 0" :
					"UPDATE loyalty.customer_stats SET row_count = 0, order_count = 0,"
					" spend_total = 0, first_order = NULL, last_order = NULL, days = NULL"
					" WHERE row_count OPERATOR(pg_catalog.<>) 0 OR days IS NOT NULL"
					" OR spend_total OPERATOR(pg_catalog.<>) 0 OR last_order IS NOT NULL",
					false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not reset loyalty.customer_stats");
}

/* ---------------------------------------------------------------------
 * refresh_segments
 * ---------------------------------------------------------------------
 */

/* What RfmStoreComputeScore needs besides the row. */
typedef struct RfmScoreArgs
{
	RfmStatsScoreRow *row;
	TimestampTz as_of;
	DateADT		prune_before;
} RfmScoreArgs;

/*
 * RfmStoreCompute of a refresh: the pending additions folded in, the new
 * score and segment, since reset when the segment changed (or was never
 * set), buckets older than the retention pruned.
 */
static void
RfmStoreComputeScore(RfmStore *st, Datum *v, bool *nl, void *arg)
{
	RfmScoreArgs *a = (RfmScoreArgs *) arg;
	RfmStatsScoreRow *w = a->row;

	if (w->fold != NULL)
		RfmStatsMerge(v, nl, &st->at, w->fold);
	v[st->at.score] = Int16GetDatum(w->score);
	nl[st->at.score] = false;
	v[st->at.segment] = w->segment;
	nl[st->at.segment] = false;
	if (w->seg_changed || nl[st->at.since])
	{
		v[st->at.since] = TimestampTzGetDatum(a->as_of);
		nl[st->at.since] = false;
	}
	if (w->prune && !nl[st->at.days])
	{
		RfmDays    *pruned = RfmDaysPrune(DatumGetRfmDays(v[st->at.days]), a->prune_before);

		nl[st->at.days] = (pruned == NULL);
		v[st->at.days] = PointerGetDatum(pruned);
	}
}

/*
 * The direct path of RfmStatsWriteScores: every row at its place in key
 * order, a scored one updated from the version the refresh read (through
 * the recheck loop when an order changed it since), one without rows
 * locked FOR UPDATE for RfmStatsRemoveLeavers.
 */
static void
RfmStoreScoresDirect(RfmStore *st, RfmStatsScoreRow *rows, int n, TimestampTz as_of,
					 DateADT prune_before)
{
	RfmScoreArgs args;
	int			i;

	args.as_of = as_of;
	args.prune_before = prune_before;
	for (i = 0; i < n; i++)
	{
		RfmStatsScoreRow *w = &rows[i];
		MemoryContext old;

		if (w->insert)
			continue;
		if (w->leave)
		{
			(void) RfmStoreLockRow(st->rel, st->snap, &w->tid, LockTupleExclusive, st->locked);
			continue;
		}
		old = MemoryContextSwitchTo(st->rowcxt);
		if (!table_tuple_fetch_row_version(st->rel, &w->tid, st->snap, st->found))
			elog(ERROR, "could not fetch a scored customer statistics row");
		args.row = w;
		/* deleted meanwhile (TM_Deleted): nothing to score */
		(void) RfmStoreUpdate(st, &w->tid, st->found, RfmStoreComputeScore, &args);
		ExecClearTuple(st->found);
		ExecClearTuple(st->newslot);
		MemoryContextSwitchTo(old);
		MemoryContextReset(st->rowcxt);
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
}

/*
 * The SQL path of RfmStatsWriteScores: lock every row in key order first
 * (whatever plan the UPDATE then gets, it waits for nobody), then one
 * UPDATE through the executor computing what RfmStoreComputeScore does.
 * Inside SPI.
 */
static void
RfmStoreScoresSql(Relation rel, Snapshot snap, RfmStatsScoreRow *rows, int n,
				  TimestampTz as_of, DateADT prune_before, Oid scoretype)
{
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	Oid			elemtypes[12] = {TEXTOID, INT8OID, INT8OID, NUMERICOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, RfmDaysTypeOid(), BOOLOID, BOOLOID, scoretype, TEXTOID, BOOLOID};
	Datum	   *v[12];
	bool	   *nl[12];
	Oid			argtypes[14];
	Datum		args[14];
	int			i,
				k,
				m = 0;

	for (i = 0; i < n; i++)
		if (!rows[i].insert)
			(void) RfmStoreLockRow(rel, snap, &rows[i].tid,
								   rows[i].leave ? LockTupleExclusive : LockTupleNoKeyExclusive,
								   slot);
	ExecDropSingleTupleTableSlot(slot);
	for (k = 0; k < 12; k++)
	{
		v[k] = palloc_extended(sizeof(Datum) * Max(n, 1), MCXT_ALLOC_HUGE);
		nl[k] = palloc_extended(sizeof(bool) * Max(n, 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	}
	for (i = 0; i < n; i++)
	{
		RfmStatsScoreRow *w = &rows[i];
		RfmStatsChange *f = w->fold;

		if (w->insert || w->leave)
			continue;
		v[0][m] = CStringGetTextDatum(w->key);
		v[1][m] = Int64GetDatum(f ? f->rows : 0);
		v[2][m] = Int64GetDatum(f ? f->orders : 0);
		v[3][m] = f ? NumericGetDatum(f->spend) : (Datum) 0;
		nl[3][m] = (f == NULL);
		v[4][m] = TimestampTzGetDatum(f ? f->first_added : 0);
		v[5][m] = TimestampTzGetDatum(f ? f->last_added : 0);
		nl[4][m] = nl[5][m] = (f == NULL || !f->has_added);
		v[6][m] = PointerGetDatum(f ? f->days : NULL);
		nl[6][m] = (f == NULL || f->days == NULL);
		v[7][m] = BoolGetDatum(f != NULL);
		v[8][m] = BoolGetDatum(w->prune);
		v[9][m] = Int16GetDatum(w->score);
		v[10][m] = w->segment;
		v[11][m] = BoolGetDatum(w->seg_changed);
		m++;
	}
	if (m == 0)
		return;
	for (k = 0; k < 12; k++)
	{
		argtypes[k] = get_array_type(elemtypes[k]);
		args[k] = PointerGetDatum(RfmMakeArray(v[k], nl[k], m, elemtypes[k]));
	}
	argtypes[12] = TIMESTAMPTZOID;
	args[12] = TimestampTzGetDatum(as_of);
	argtypes[13] = DATEOID;
	args[13] = DateADTGetDatum(prune_before);
	if (SPI_execute_with_args(psprintf("UPDATE loyalty.customer_stats AS s SET"
							  " row_count = s.row_count OPERATOR(pg_catalog.+) u.r,"
							  " order_count = s.order_count OPERATOR(pg_catalog.+) u.o,"
							  " spend_total = CASE WHEN u.fold"
							  "  THEN s.spend_total OPERATOR(pg_catalog.+) u.sp ELSE s.spend_total END,"
							  " first_order = LEAST(s.first_order, u.f),"
							  " last_order = GREATEST(s.last_order, u.l),"
							  " days = CASE WHEN u.prune THEN loyalty._rfm_days_prune(CASE WHEN u.fold"
							  "  THEN loyalty._rfm_days_merge(s.days, u.d) ELSE s.days END, $14)"
							  "  WHEN u.fold THEN loyalty._rfm_days_merge(s.days, u.d) ELSE s.days END,"
							  "%s"
							  " score = u.sc, segment = u.sg,"
							  " since = CASE WHEN u.chg OR s.since IS NULL THEN $13 ELSE s.since END"
							  " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							  " pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							  " pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							  " pg_catalog.unnest($9), pg_catalog.unnest($10), pg_catalog.unnest($11),"
							  " pg_catalog.unnest($12)) AS u(c, r, o, sp, f, l, d, fold, prune, sc, sg, chg)"
							  " WHERE s.customer_id OPERATOR(pg_catalog.=) u.c",
							  RfmStatsHasAllTime() ?
							  " (order_days, first_day, first_day_spend) = (SELECT t.* FROM"
							  "  loyalty._rfm_days_tally(s.days, CASE WHEN u.fold"
							  "  THEN loyalty._rfm_days_merge(s.days, u.d) ELSE s.days END,"
							  "  s.order_days, s.first_day, s.first_day_spend) AS t)," : ""),
							  14, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update scores in loyalty.customer_stats");
}

/*
 * Insert the customers whose first orders the refresh folded (no
 * statistics row when it scanned), with their scores: their statistics
 * are the pending additions alone (buckets pruned to the retention).  A
 * row that appeared meanwhile (a back-fill of another table) gets the
 * additions added instead, as the fold's upsert does.  Rows go in key
 * order.  Inside SPI.
 */
static void
RfmStoreInsertScored(RfmStatsScoreRow *rows, int n, TimestampTz as_of, DateADT prune_before,
					 Oid scoretype)
{
	Oid			elemtypes[10] = {TEXTOID, INT8OID, INT8OID, NUMERICOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, RfmDaysTypeOid(), scoretype, TEXTOID, TIMESTAMPTZOID};
	Datum	   *v[10];
	bool	   *nl[10];
	Oid			argtypes[10];
	Datum		args[10];
	bool		alltime;
	int			i,
				k,
				m = 0;

	for (i = 0; i < n; i++)
		m += rows[i].insert;
	if (m == 0)
		return;
	for (k = 0; k < 10; k++)
	{
		v[k] = palloc_extended(sizeof(Datum) * m, MCXT_ALLOC_HUGE);
		nl[k] = palloc_extended(sizeof(bool) * m, MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	}
	m = 0;
	for (i = 0; i < n; i++)
	{
		RfmStatsChange *a = rows[i].fold;
		RfmDays    *days;

		if (!rows[i].insert)
			continue;
		v[0][m] = CStringGetTextDatum(a->key);
		v[1][m] = Int64GetDatum(a->rows);
		v[2][m] = Int64GetDatum(a->orders);
		v[3][m] = NumericGetDatum(a->spend);
		v[4][m] = TimestampTzGetDatum(a->first_added);
		v[5][m] = TimestampTzGetDatum(a->last_added);
		nl[4][m] = nl[5][m] = !a->has_added;
		days = (a->days == NULL || RfmDaysCount(a->days) == 0) ? NULL : a->days;
		if (days != NULL && rows[i].prune)
			days = RfmDaysPrune(days, prune_before);
		v[6][m] = PointerGetDatum(days);
		nl[6][m] = (days == NULL);
		v[7][m] = Int16GetDatum(rows[i].score);
		v[8][m] = rows[i].segment;
		v[9][m] = TimestampTzGetDatum(as_of);
		m++;
	}
	for (k = 0; k < 10; k++)
	{
		argtypes[k] = get_array_type(elemtypes[k]);
		args[k] = PointerGetDatum(RfmMakeArray(v[k], nl[k], m, elemtypes[k]));
	}
	alltime = RfmStatsHasAllTime();
	if (SPI_execute_with_args(psprintf("INSERT INTO loyalty.customer_stats AS s"
							  " (customer_id, row_count, order_count, spend_total, first_order,"
							  " last_order, days, score, segment, since%s)"
							  " SELECT u.*%s FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							  " pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							  " pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							  " pg_catalog.unnest($9), pg_catalog.unnest($10)) AS u(c, r, o, sp, f, l, d, sc, sg, si)%s"
							  " ON CONFLICT (customer_id) DO UPDATE SET"
							  " row_count = s.row_count OPERATOR(pg_catalog.+) excluded.row_count,"
							  " order_count = s.order_count OPERATOR(pg_catalog.+) excluded.order_count,"
							  " spend_total = s.spend_total OPERATOR(pg_catalog.+) excluded.spend_total,"
							  " first_order = LEAST(s.first_order, excluded.first_order),"
							  " last_order = GREATEST(s.last_order, excluded.last_order),"
							  " days = loyalty._rfm_days_merge(s.days, excluded.days),"
							  "%s"
							  " score = excluded.score, segment = excluded.segment,"
							  " since = CASE WHEN s.since IS NOT NULL"
							  " AND s.segment OPERATOR(pg_catalog.=) excluded.segment"
							  " THEN s.since ELSE excluded.since END",
							  alltime ? ", order_days, first_day, first_day_spend" : "",
							  alltime ? ", t.*" : "",
							  alltime ? ", loyalty._rfm_days_tally(NULL, u.d, 0, NULL, NULL) AS t" : "",
							  alltime ?
							  " (order_days, first_day, first_day_spend) = (SELECT t.* FROM"
							  "  loyalty._rfm_days_tally(s.days, loyalty._rfm_days_merge(s.days, excluded.days),"
							  "  s.order_days, s.first_day, s.first_day_spend) AS t)," : ""),
							  10, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert new customers into loyalty.customer_stats");
}

/*
 * Write a refresh's rows (sorted by customer id, each customer once):
 * scored customers get their new score and segment (and their pending
 * additions, and pruned buckets), customers without rows are locked for
 * RfmStatsRemoveLeavers, all in one pass in key order; then new customers
 * are inserted with their scores.  snap is the refresh's scan snapshot
 * (rows[].tid are versions it read).  Inside SPI, after the caller's scan
 * ended.
 */
void
RfmStatsWriteScores(RfmStatsScoreRow *rows, int n, Snapshot snap, TimestampTz as_of,
					DateADT prune_before, Oid scoretype)
{
	RfmStore	st;

	RfmStoreOpen(&st, snap, false);
	if (st.direct)
		RfmStoreScoresDirect(&st, rows, n, as_of, prune_before);
	else
		RfmStoreScoresSql(st.rel, snap, rows, n, as_of, prune_before, scoretype);
	RfmStoreClose(&st);
	RfmStoreInsertScored(rows, n, as_of, prune_before, scoretype);
}

/*
 * Customers without rows left (keys sorted, rows locked by
 * RfmStatsWriteScores): delete them and log that they left their segment
 * in the change log of snapshot_id.  One brought back by an order folded
 * meanwhile stays, unscored until the next refresh: it leaves its segment
 * now (this refresh did not score it) and enters one at the next.
 * Returns the number of customers who left.  Inside SPI.
 */
int64
RfmStatsRemoveLeavers(char **keys, int n, int64 snapshot_id)
{
	Datum	   *ids = palloc_extended(sizeof(Datum) * Max(n, 1), MCXT_ALLOC_HUGE);
	Oid			argtypes[2] = {TEXTARRAYOID, INT8OID};
	Datum		args[2];
	int64		left;
	int			ret;
	int			i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		ids[i] = CStringGetTextDatum(keys[i]);
	args[0] = PointerGetDatum(RfmMakeArray(ids, NULL, n, TEXTOID));
	args[1] = Int64GetDatum(snapshot_id);
	ret = SPI_execute_with_args("WITH gone AS ("
								"  DELETE FROM loyalty.customer_stats s"
								"  WHERE s.customer_id OPERATOR(pg_catalog.=) ANY ($1)"
								"  AND s.row_count OPERATOR(pg_catalog.=) 0"
								"  RETURNING s.customer_id, s.segment)"
								" INSERT INTO loyalty.segment_change (snapshot_id, customer_id, segment, score)"
								" SELECT $2, g.customer_id, NULL, NULL FROM gone g WHERE g.segment IS NOT NULL",
								2, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not remove customers who left: %s", SPI_result_code_string(ret));
	left = SPI_processed;
	ret = SPI_execute_with_args("WITH back AS ("
								"  UPDATE loyalty.customer_stats s"
								"  SET score = NULL, segment = NULL, since = NULL"
								"  WHERE s.customer_id OPERATOR(pg_catalog.=) ANY ($1)"
								"  AND s.segment IS NOT NULL"
								"  RETURNING s.customer_id)"
								" INSERT INTO loyalty.segment_change (snapshot_id, customer_id, segment, score)"
								" SELECT $2, b.customer_id, NULL, NULL FROM back b",
								2, argtypes, args, NULL, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not update customers who came back: %s", SPI_result_code_string(ret));
	return left + SPI_processed;
}

/*
 * Rewrite loyalty.customer_stats into a new file holding only the row
 * versions this transaction sees, then swap it in and rebuild the indexes
 * (as CLUSTER and VACUUM FULL do).  For the first refresh, which rewrote
 * nearly every row: CLUSTER would copy the superseded versions too (their
 * deleter, this transaction, is still running), leaving a table twice the
 * size.  The caller holds ACCESS EXCLUSIVE on the table since before its
 * writes.  As with TRUNCATE, a transaction whose snapshot predates ours
 * would see the table empty afterwards; the lock kept every other one out
 * meanwhile.
 */
static void
RfmStoreRewrite(Relation old)
{
	Oid			relid = RelationGetRelid(old);
	TransactionId frozen = old->rd_rel->relfrozenxid;
	MultiXactId minmulti = old->rd_rel->relminmxid;
	char		persistence = old->rd_rel->relpersistence;
	Oid			newid;
	Relation	new;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;
	BulkInsertState bistate;
	CommandId	cid;

	newid = make_new_heap_compat(relid, old->rd_rel->reltablespace, old->rd_rel->relam,
								 persistence, AccessExclusiveLock);
	new = table_open(newid, AccessExclusiveLock);

	/* see this transaction's writes */
	CommandCounterIncrement();
	cid = GetCurrentCommandId(true);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(old, snap, 0, NULL);
	slot = table_slot_create(old, NULL);
	bistate = GetBulkInsertState();
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		/* an out-of-line value is copied into the new table's TOAST table */
		table_tuple_insert(new, slot, cid, 0, bistate);
		CHECK_FOR_INTERRUPTS();
	}
	FreeBulkInsertState(bistate);
	table_finish_bulk_insert(new, 0);
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(new, NoLock);
	table_close(old, NoLock);

	/* every tuple left has this transaction's xid: the old horizons hold */
	finish_heap_swap(relid, newid, false, false, false, true, frozen, minmulti, persistence);
}

/*
 * After the first refresh, which rewrote (nearly) every row and holds the
 * table's ACCESS EXCLUSIVE lock since it started: rewrite the table
 * compactly (RfmStoreRewrite), unless this session still uses it (an open
 * cursor, pending trigger events: the test CLUSTER makes before it would
 * refuse) or the direct path is refused (someone customised the table:
 * it keeps its file, VACUUM gives the space back).  Returns whether it
 * rewrote.
 */
bool
RfmStatsCompact(void)
{
	Relation	rel = table_open(RfmStatsRelid(), AccessExclusiveLock);
	RfmStatsAtts at;

	RfmStatsColumns(RelationGetDescr(rel), &at);
	if (rel->rd_refcnt > 1 || AfterTriggerPendingOnRel(RelationGetRelid(rel)) ||
		!RfmStoreDirectOk(rel, &at))
	{
		table_close(rel, NoLock);
		return false;
	}
	RfmStoreRewrite(rel);
	return true;
}
