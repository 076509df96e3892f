/*
 * mission_feed.c
 *		The order feed of missions and referrals: the orders of every
 *		tracked statement (the tracking trigger's transition tables,
 *		rfm_live's order feed hook) appended to loyalty.mission_order_delta
 *		while at least one active mission counts orders or a referral
 *		program is active (a referee's first qualifying purchase), folded by
 *		mission.sql (_mission_fold) when progress is read, an order or a
 *		refund is reported by a call, or mission_fold runs.
 *
 * Design: the checkout path appends, readers fold (as the live statistics
 * do, rfm_track.c).  This file is the one writer of the table's rows (the
 * fold only deletes them); it inserts below the executor (table_tuple_insert)
 * only into the table as installed: a heap without index, trigger, rule,
 * row level security or CHECK constraint, every NOT NULL column given a
 * value; otherwise through SQL.  Per counted row the trigger inserts one
 * row (customer, order time, amount, categories when a mission filters on
 * them, +1 / -1, statement time) into an unindexed table: it reads no
 * mission or referral row, locks nothing another transaction holds,
 * updates no shared row, so a tracked statement never waits for another
 * order of the customer and cannot fail with a serialization failure or a
 * deadlock of its own at any isolation level.  The removed rows of a
 * DELETE, and the old rows of an UPDATE whose order changed (customer,
 * time, amount, counted status or categories), are appended with -1: the
 * fold takes the order back (a refund).
 *
 * What the feed needs is cached per backend: whether an active mission
 * counts orders or a referral program is active (neither: the hook returns
 * at once, the feed costs nothing), whether a mission filters on a
 * category, and the category column of each tracked table
 * (loyalty.mission_order_source).  A statement trigger on
 * the three configuration tables announces every change
 * (CacheInvalidateRelcacheByRelid, as segment.c does); the cache is loaded
 * with the latest snapshot after locking the tables, so it never keeps a
 * configuration older than the last commit the statement's lock saw.
 *
 * Everything runs as loyalty's owner (the tracking trigger switched) with
 * schema-qualified names and built-in operators only.
 */
#include "loyalty.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/tupdesc.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "loyalty_cache.h"
#include "loyalty_spi.h"
#include "mission.h"
#include "rfm_live.h"

PG_FUNCTION_INFO_V1(mission_config_changed);

/* The category column of one tracked table. */
typedef struct MissionSource
{
	Oid			relid;
	char	   *column;
} MissionSource;

/* What the active missions need of the feed (see the file comment). */
typedef struct MissionDemand
{
	bool		valid;
	Oid			mission_relid;	/* loyalty.mission */
	Oid			source_relid;	/* loyalty.mission_order_source */
	Oid			delta_relid;	/* loyalty.mission_order_delta */
	Oid			referral_relid; /* loyalty.referral_program */
	bool		direct;			/* plain enough for the executor-free insert */
	int			natts;			/* its attributes, and the 0-based */
	int			pos[6];			/* positions of MISSION_DELTA_COLS */
	bool		feed;			/* an active mission counts orders */
	bool		categories;		/* one of them filters on a category */
	int			nsources;
	MissionSource *sources;		/* in demand_cxt */
} MissionDemand;

/* The columns the feed writes, in this order. */
static const char *const mission_delta_cols[6] = {"customer_id", "ordered_at", "amount",
"categories", "sign", "logged_at"};

/* One transition row read as an order. */
typedef struct MissionOrderRow
{
	bool		counts;
	char	   *key;
	TimestampTz t;
	Numeric		amount;
	Datum		category;		/* raw column value, category_null: none */
	bool		category_null;
	Datum		categories;		/* text[] or (Datum) 0 */
} MissionOrderRow;

/* The category column of the statement's table, resolved per statement. */
typedef struct MissionCategoryCol
{
	AttrNumber	attnum;			/* InvalidAttrNumber: no categories */
	Oid			elemtype;		/* the column's type, or its element type */
	bool		is_array;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	FmgrInfo	out;
} MissionCategoryCol;

static MissionDemand demand;
static MemoryContext demand_cxt = NULL;
static SPIPlanPtr demand_plan = NULL;
static SPIPlanPtr source_plan = NULL;
static SPIPlanPtr append_plan = NULL;

static void MissionDeltaShape(void);
static void MissionFeedOrders(Relation rel, RfmTrackCols *cols,
							  Tuplestorestate *oldtable,
							  Tuplestorestate *newtable, bool paired);

/* A mission configuration table changed (or everything did). */
static void
MissionRelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid ||
		(OidIsValid(demand.mission_relid) && relid == demand.mission_relid) ||
		(OidIsValid(demand.source_relid) && relid == demand.source_relid) ||
		(OidIsValid(demand.delta_relid) && relid == demand.delta_relid) ||
		(OidIsValid(demand.referral_relid) && relid == demand.referral_relid))
		demand.valid = false;
}

/*
 * Called from _PG_init: hand the relcache handler to the extension's one
 * callback and offer the order feed to the tracking trigger.
 */
void
MissionInit(void)
{
	LoyaltyCacheOnRelation(MissionRelcacheCallback, (Datum) 0);
	rfm_order_feed_hook = MissionFeedOrders;
}

/*
 * Statement trigger on loyalty.mission and loyalty.mission_order_source:
 * announce the change so that every backend reloads what the feed needs
 * (this one at the next command, the others at commit).
 */
Datum
mission_config_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mission_config_changed must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}

/*
 * Load what the missions need, with the latest snapshot after locking the
 * configuration tables (which processes pending invalidations).  Without
 * the mission tables (a schema older than the library) the feed is off
 * and the cache not kept, so that the update is seen at once.
 */
static void
MissionDemandLoad(void)
{
	Oid			nsp = get_namespace_oid("loyalty", true);
	Snapshot	snap;
	MemoryContext old;
	bool		isnull;
	Datum		d;
	uint64		i;

	demand.feed = demand.categories = false;
	demand.nsources = 0;
	demand.sources = NULL;
	demand.mission_relid = OidIsValid(nsp) ? get_relname_relid("mission", nsp) : InvalidOid;
	demand.source_relid = OidIsValid(nsp) ? get_relname_relid("mission_order_source", nsp) : InvalidOid;
	demand.delta_relid = OidIsValid(nsp) ? get_relname_relid("mission_order_delta", nsp) : InvalidOid;
	demand.referral_relid = OidIsValid(nsp) ? get_relname_relid("referral_program", nsp) : InvalidOid;
	if (!OidIsValid(demand.mission_relid) || !OidIsValid(demand.source_relid) ||
		!OidIsValid(demand.delta_relid) || !OidIsValid(demand.referral_relid))
		return;
	LockRelationOid(demand.mission_relid, AccessShareLock);
	LockRelationOid(demand.source_relid, AccessShareLock);
	LockRelationOid(demand.referral_relid, AccessShareLock);
	if (demand_cxt == NULL)
		demand_cxt = AllocSetContextCreate(TopMemoryContext, "loyalty mission feed",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(demand_cxt);

	SPI_connect();
	snap = RegisterSnapshot(GetLatestSnapshot());
	LoyaltyKeepPlan(&demand_plan,
					"SELECT (SELECT pg_catalog.bool_or(m.category IS NOT NULL)"
					"          FROM loyalty.mission m"
					"         WHERE m.active AND m.kind OPERATOR(pg_catalog.<>) 'event'),"
					"       EXISTS (SELECT FROM loyalty.referral_program p WHERE p.active)",
					0, NULL, 0);
	if (SPI_execute_snapshot(demand_plan, NULL, NULL, snap, InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.mission");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	demand.feed = !isnull;
	demand.categories = !isnull && DatumGetBool(d);
	/* an active referral program: a referee's first purchase */
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		demand.feed = true;
	if (demand.categories)
	{
		LoyaltyKeepPlan(&source_plan,
						"SELECT s.orders::pg_catalog.oid, s.category_column::pg_catalog.text"
						"  FROM loyalty.mission_order_source s",
						0, NULL, 0);
		if (SPI_execute_snapshot(source_plan, NULL, NULL, snap, InvalidSnapshot,
								 true, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read loyalty.mission_order_source");
		old = MemoryContextSwitchTo(demand_cxt);
		demand.nsources = (int) SPI_processed;
		demand.sources = palloc0(sizeof(MissionSource) * Max(demand.nsources, 1));
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];

			demand.sources[i].relid =
				DatumGetObjectId(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
			demand.sources[i].column = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
		}
		MemoryContextSwitchTo(old);
	}
	UnregisterSnapshot(snap);
	SPI_finish();
	MissionDeltaShape();
	demand.valid = true;
}

/*
 * The category column of a tracked table, when a mission filters on
 * categories and loyalty.mission_order_source names one that exists
 * (a dropped or renamed column: no categories, the statement never fails).
 */
static void
MissionCategoryColumn(Relation rel, MissionCategoryCol *cc)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			i,
				j;

	cc->attnum = InvalidAttrNumber;
	if (!demand.categories)
		return;
	for (i = 0; i < demand.nsources; i++)
	{
		if (demand.sources[i].relid != RelationGetRelid(rel) || demand.sources[i].column == NULL)
			continue;
		for (j = 0; j < desc->natts; j++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, j);
			Oid			outfn;
			bool		varlena;

			if (att->attisdropped || strcmp(NameStr(att->attname), demand.sources[i].column) != 0)
				continue;
			cc->attnum = att->attnum;
			cc->elemtype = get_element_type(att->atttypid);
			cc->is_array = OidIsValid(cc->elemtype);
			if (!cc->is_array)
				cc->elemtype = att->atttypid;
			get_typlenbyvalalign(cc->elemtype, &cc->typlen, &cc->typbyval, &cc->typalign);
			getTypeOutputInfo(cc->elemtype, &outfn, &varlena);
			fmgr_info(outfn, &cc->out);
			return;
		}
	}
}

/* The categories of an order as text[] (NULL elements dropped). */
static Datum
MissionCategories(MissionCategoryCol *cc, Datum value)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n,
				i,
				k = 0;
	Datum	   *out;

	if (!cc->is_array)
	{
		Datum		one = CStringGetTextDatum(OutputFunctionCall(&cc->out, value));

		return PointerGetDatum(construct_array(&one, 1, TEXTOID, -1, false, TYPALIGN_INT));
	}
	deconstruct_array(DatumGetArrayTypeP(value), cc->elemtype, cc->typlen,
					  cc->typbyval, cc->typalign, &elems, &nulls, &n);
	out = palloc(sizeof(Datum) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			out[k++] = CStringGetTextDatum(OutputFunctionCall(&cc->out, elems[i]));
	return PointerGetDatum(construct_array(out, k, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Read one transition row as an order (RfmReadOrder) and its category value. */
static void
MissionReadRow(RfmTrackCols *cols, MissionCategoryCol *cc, TupleTableSlot *slot,
			   MissionOrderRow *row)
{
	row->counts = RfmReadOrder(cols, slot, &row->key, &row->t, &row->amount);
	row->category_null = true;
	row->categories = (Datum) 0;
	if (row->counts && cc->attnum != InvalidAttrNumber)
	{
		row->category = slot_getattr(slot, cc->attnum, &row->category_null);
		if (!row->category_null)
			row->categories = MissionCategories(cc, row->category);
	}
}

/* Whether the old and new row of an UPDATE are the same order. */
static bool
MissionSameOrder(MissionCategoryCol *cc, MissionOrderRow *a, MissionOrderRow *b)
{
	if (a->counts != b->counts)
		return false;
	if (!a->counts)
		return true;
	if (strcmp(a->key, b->key) != 0 || a->t != b->t ||
		DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(a->amount),
										  NumericGetDatum(b->amount))) != 0)
		return false;
	if (a->category_null || b->category_null)
		return a->category_null == b->category_null;
	return cc->is_array
		? datumIsEqual(a->category, b->category, false, -1)
		: datumIsEqual(a->category, b->category, cc->typbyval, cc->typlen);
}

/*
 * Whether the executor-free insert may write loyalty.mission_order_delta:
 * a heap table as installed (no index, trigger, rule, row level security
 * or CHECK constraint; its NOT NULL columns always get a value), with the
 * columns the feed writes.  Anything else, say an index or a trigger
 * someone added, goes through SQL.  Reads the relation once per cache load.
 */
static void
MissionDeltaShape(void)
{
	Relation	rel = table_open(demand.delta_relid, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes = RelationGetIndexList(rel);
	int			k;

	demand.natts = desc->natts;
	demand.direct = indexes == NIL &&
		rel->rd_rel->relam == HEAP_TABLE_AM_OID &&
		rel->rd_rel->relkind == RELKIND_RELATION &&
		rel->trigdesc == NULL && rel->rd_rules == NULL &&
		!rel->rd_rel->relrowsecurity &&
		(desc->constr == NULL || desc->constr->num_check == 0);
	for (k = 0; k < 6; k++)
	{
		demand.pos[k] = SPI_fnumber(desc, mission_delta_cols[k]) - 1;
		if (demand.pos[k] < 0)
			demand.direct = false;
	}
	list_free(indexes);
	table_close(rel, AccessShareLock);
}

/*
 * Append one order (+1) or its removal (-1) to loyalty.mission_order_delta:
 * below the executor into the table as installed (MissionDeltaShape), as
 * rfm_track.c appends customer_stats_delta; otherwise through SQL.
 */
static void
MissionAppend(Relation delta, MissionOrderRow *row, int sign)
{
	static const Oid types[6] = {TEXTOID, TIMESTAMPTZOID, NUMERICOID, TEXTARRAYOID,
	INT2OID, TIMESTAMPTZOID};
	Datum		values[6];
	bool		isnull[6] = {false, false, false, false, false, false};
	int			k;

	if (!row->counts)
		return;
	values[0] = CStringGetTextDatum(row->key);
	values[1] = TimestampTzGetDatum(row->t);
	values[2] = NumericGetDatum(row->amount);
	values[3] = row->categories;
	isnull[3] = (row->categories == (Datum) 0);
	values[4] = Int16GetDatum((int16) sign);
	values[5] = TimestampTzGetDatum(GetCurrentStatementStartTimestamp());
	if (delta != NULL)
	{
		TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(delta), &TTSOpsVirtual);

		ExecClearTuple(slot);
		for (k = 0; k < demand.natts; k++)
		{
			slot->tts_values[k] = (Datum) 0;
			slot->tts_isnull[k] = true;
		}
		for (k = 0; k < 6; k++)
		{
			slot->tts_values[demand.pos[k]] = values[k];
			slot->tts_isnull[demand.pos[k]] = isnull[k];
		}
		ExecStoreVirtualTuple(slot);
		table_tuple_insert(delta, slot, GetCurrentCommandId(true), 0, NULL);
		ExecDropSingleTupleTableSlot(slot);
	}
	else
	{
		char		nulls[6];

		for (k = 0; k < 6; k++)
			nulls[k] = isnull[k] ? 'n' : ' ';
		LoyaltyKeepPlan(&append_plan,
						"INSERT INTO loyalty.mission_order_delta"
						" (customer_id, ordered_at, amount, categories, sign, logged_at)"
						" VALUES ($1, $2, $3, $4, $5, $6)",
						6, types, 0);
		if (SPI_execute_plan(append_plan, values, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not append to loyalty.mission_order_delta");
	}
}

/*
 * The hook (rfm_live.h): append the statement's orders while a mission
 * needs them.  An UPDATE's pairs that leave the order as it was append
 * nothing.
 */
static void
MissionFeedOrders(Relation rel, RfmTrackCols *cols, Tuplestorestate *oldtable,
				  Tuplestorestate *newtable, bool paired)
{
	MissionCategoryCol cc;
	TupleTableSlot *os = NULL,
			   *ns = NULL;
	MissionOrderRow orow,
				nrow;
	MemoryContext cxt,
				old;
	bool		ohas,
				nhas;
	Relation	delta = NULL;

	if (!demand.valid)
		MissionDemandLoad();
	if (!demand.feed)
		return;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "loyalty mission feed rows",
								ALLOCSET_SMALL_SIZES);
	MissionCategoryColumn(rel, &cc);
	if (demand.direct)
		delta = table_open(demand.delta_relid, RowExclusiveLock);
	else
		SPI_connect();
	if (oldtable)
	{
		os = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
		tuplestore_rescan(oldtable);
	}
	if (newtable)
	{
		ns = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsMinimalTuple);
		tuplestore_rescan(newtable);
	}
	for (;;)
	{
		old = MemoryContextSwitchTo(cxt);
		ohas = os && tuplestore_gettupleslot(oldtable, true, false, os);
		nhas = ns && tuplestore_gettupleslot(newtable, true, false, ns);
		if (!ohas && !nhas)
		{
			MemoryContextSwitchTo(old);
			break;
		}
		if (ohas)
			MissionReadRow(cols, &cc, os, &orow);
		if (nhas)
			MissionReadRow(cols, &cc, ns, &nrow);
		if (!(paired && ohas && nhas && MissionSameOrder(&cc, &orow, &nrow)))
		{
			if (ohas)
				MissionAppend(delta, &orow, -1);
			if (nhas)
				MissionAppend(delta, &nrow, +1);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(cxt);
	}
	if (os)
		ExecDropSingleTupleTableSlot(os);
	if (ns)
		ExecDropSingleTupleTableSlot(ns);
	if (delta != NULL)
		table_close(delta, NoLock);
	else
		SPI_finish();
	MemoryContextDelete(cxt);
}
