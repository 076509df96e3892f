/*
 * rfm_track.c
 *		The statement-level trigger that records every change of a tracked
 *		orders table inside the application's own transaction, the fold that
 *		turns those records into loyalty.customer_stats, and the delta
 *		engine shared with back-fills and rebuilds (track_orders and friends
 *		are in rfm_track_admin.c, which calls this file; this file calls
 *		only rfm_columns.c, stats_store.c and rfm_days.c).  Every write to
 *		customer_stats goes through stats_store.c.
 *
 * Every change reaches the statistics as a delta: the trigger reads the
 * statement's transition tables (OLD rows subtracted, NEW rows added) and
 * aggregates them per customer and per day (tracking zone) in C.
 *
 * Design: the checkout path appends, readers and the refresh fold.  The
 * trigger does not update a customer's statistics row: it inserts one row
 * per customer into loyalty.customer_stats_delta (keyed by customer_id, like
 * every per-customer table, so it can be colocated on Citus), without the
 * executor.  It reads nothing and updates no row another transaction can
 * have touched, so a tracked INSERT/UPDATE/DELETE never waits for another
 * order of the same customer or for a refresh, cannot deadlock on loyalty's
 * tables and cannot raise a serialization failure of its own under
 * REPEATABLE READ or SERIALIZABLE (updating a shared row did: 291 of 400
 * inserts of 8 sessions ordering for one customer failed with 40001).  It
 * is also cheaper than the update it replaces (no index lookup, no lock,
 * no wait), which is what a checkout pays.
 *
 * The cost moves to whoever reads: customer_rfm (rfm_refresh.c) adds the
 * pending deltas of its customer in its own snapshot (read-only, any
 * isolation level), and refresh_segments / fold_tracking fold them
 * (RfmFoldDeltas): RfmTakePending deletes exactly the deltas its snapshot
 * sees (a scan and delete below the executor, or one DELETE ... RETURNING
 * when someone added a trigger, a rule or row level security to the delta
 * table), sums them per customer, and stats_store.c applies the sums in
 * customer order; deltas of transactions still in flight are neither
 * deleted nor blocked and wait for the next fold.  A nightly refresh folds one day of deltas,
 * a small fraction of the customers.
 *
 * Totals, counts and buckets are additive.  The first and last order times
 * are not: when folded (or pending) deltas removed an order that may have
 * been one of them, they are read again from the tracked tables for those
 * customers, at fold or read time instead of in the checkout (an index on
 * the customer column keeps this cheap).  Those reads, like the trigger,
 * run as loyalty's owner and use only built-in types, operators and
 * functions: the customer and status columns are restricted to built-in
 * types (rfm_columns.c) and customers are passed as the column's own
 * type, never cast.
 */
#include "loyalty.h"

#include <math.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "common/int.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "rfm_live.h"
#include "rfm_stats.h"
#include "stats_store.h"

PG_FUNCTION_INFO_V1(rfm_track_trigger);

/* The order feed of the families above (rfm_live.h); NULL: none. */
RfmOrderFeedHook rfm_order_feed_hook = NULL;

/* Rows read per cursor fetch while back-filling. */
#define RFM_BACKFILL_BATCH 10000

/* One day of one customer's delta: orders and exact spend (rfm_money.c). */
typedef struct RfmDayAcc
{
	DateADT		day;
	int32		orders;
	RfmMoney	spend;
} RfmDayAcc;

/* One customer's aggregated delta. */
typedef struct RfmCustDelta
{
	char	   *key;			/* customer id as text: hash key */
	int64		rows;			/* tracked rows added - removed */
	int64		orders;			/* orders added - removed */
	bool		has_added;		/* an order was added: min/max_added valid */
	bool		has_removed;	/* an order was removed: min/max_removed valid */
	TimestampTz min_added;
	TimestampTz max_added;
	TimestampTz min_removed;
	TimestampTz max_removed;
	int			ndays;
	int			maxdays;
	RfmDayAcc  *days;			/* sorted by day */
} RfmCustDelta;

/* A statement's (or a back-fill chunk's) delta over all customers. */
typedef struct RfmDelta
{
	MemoryContext cxt;			/* holds everything below */
	MemoryContext rowcxt;		/* per-row scratch, reset often */
	RfmCustDelta *single;		/* the only customer so far (no hash yet) */
	HTAB	   *customers;		/* created at the second customer */
	int64		rows_seen;		/* rows read (counted or not) */
	int64		rows_counted;	/* rows that passed the filters */
	int64		no_customer;	/* rows ignored: no customer */
	int64		no_time;		/* rows ignored: no (finite) order time */
} RfmDelta;

/*
 * The live path reads statistics and tables with fresh snapshots after
 * taking its locks; under REPEATABLE READ or SERIALIZABLE the transaction
 * snapshot predates those locks and rows committed in between would be
 * missed.  Such callers get a clear error instead.
 */
void
RfmLiveRequireReadCommitted(const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s cannot run in a REPEATABLE READ or SERIALIZABLE transaction", what),
				 errhint("Run it in a READ COMMITTED transaction (the default).")));
}

/* ---------------------------------------------------------------------
 * Per-backend caches
 *
 * Every tracked statement needs the same facts about loyalty's own objects
 * (owner, customer_stats, its key and columns) and about its
 * trigger (the tracked columns, their types and output functions).  Looking
 * them up again per statement was a measurable part of a checkout's cost,
 * so they are kept per backend and dropped by the relcache and syscache
 * callbacks registered at load.  Callbacks only flip flags: they run inside
 * invalidation processing, possibly while a trigger is using the cache.
 * ---------------------------------------------------------------------
 */

/* What the trigger needs about loyalty's objects. */
typedef struct RfmStatsCatalog
{
	bool		valid;
	Oid			owner;			/* owner of schema loyalty */
	Oid			relid;			/* loyalty.customer_stats */
	bool		attrs_valid;	/* reset with valid; read by nobody since
								 * stats_store.c checks the table itself */
	Oid			delta_relid;	/* loyalty.customer_stats_delta */
	bool		delta_valid;	/* the fields below match its relcache */
	bool		delta_direct;	/* plain enough for the executor-free insert */
	Oid			delta_idx;		/* its index on customer_id */
	int			d_natts;
	int			d_cust,			/* 0-based attribute positions */
				d_rows,
				d_orders,
				d_spend,
				d_fa,
				d_la,
				d_fr,
				d_lr,
				d_days,
				d_removed;
} RfmStatsCatalog;

static RfmStatsCatalog stats_catalog;

/* Resolved columns of one tracking trigger. */
typedef struct RfmTriggerEntry
{
	Oid			tgoid;			/* hash key */
	Oid			relid;			/* the tracked table */
	RfmTrackCols cols;			/* allocated in trigger_cxt */
} RfmTriggerEntry;

static HTAB *trigger_cols = NULL;
static MemoryContext trigger_cxt = NULL;	/* the hash and one child per entry */
static bool trigger_cols_stale = false;

static void RfmTriggerErrorContext(void *arg);

/* A tracked table or loyalty.customer_stats changed (or everything did). */
static void
RfmRelcacheCallback(Datum arg, Oid relid)
{
	/* customer_stats itself may have been re-created: look it up again */
	if (relid == InvalidOid || relid == stats_catalog.relid ||
		relid == stats_catalog.delta_relid)
		stats_catalog.valid = stats_catalog.attrs_valid = stats_catalog.delta_valid = false;
	if (trigger_cols != NULL && !trigger_cols_stale)
	{
		HASH_SEQ_STATUS seq;
		RfmTriggerEntry *e;

		if (relid == InvalidOid)
		{
			trigger_cols_stale = true;
			return;
		}
		hash_seq_init(&seq, trigger_cols);
		while ((e = hash_seq_search(&seq)) != NULL)
			if (e->relid == relid)
			{
				trigger_cols_stale = true;
				hash_seq_term(&seq);
				break;
			}
	}
}

/* A namespace or a type changed: loyalty may have been re-created or re-owned. */
static void
RfmSyscacheCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	stats_catalog.valid = false;
	stats_catalog.attrs_valid = false;
	stats_catalog.delta_valid = false;
	if (cacheid == TYPEOID)
		trigger_cols_stale = true;	/* a column's type may have changed */
}

/*
 * loyalty.refresh_future_skew: how far (seconds) ahead of the server clock
 * refresh_segments accepts an as_of (rfm_refresh.c).  Superuser only: a
 * wider value is for tests and demos that score fixed future dates.
 */
int			rfm_refresh_future_skew = 300;

/*
 * Called from _PG_init: register the callbacks (only possible at load) and
 * the family's setting.
 */
void
RfmLiveInit(void)
{
	LoyaltyCacheOnRelation(RfmRelcacheCallback, (Datum) 0);
	LoyaltyCacheOnSyscache(NAMESPACEOID, RfmSyscacheCallback, (Datum) 0);
	LoyaltyCacheOnSyscache(TYPEOID, RfmSyscacheCallback, (Datum) 0);
	DefineCustomIntVariable(LOYALTY_GUC_PREFIX ".refresh_future_skew",
							"How far ahead of the server clock refresh_segments accepts an as_of.",
							"A later as_of is refused (22023).",
							&rfm_refresh_future_skew,
							300, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S,
							NULL, NULL, NULL);
}

/* The owner and OIDs of loyalty's objects, looked up when not cached. */
static RfmStatsCatalog *
RfmStatsCatalogGet(void)
{
	if (!stats_catalog.valid)
	{
		Oid			nsp = get_namespace_oid("loyalty", false);
		HeapTuple	tup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nsp));
		Oid			relid;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for namespace %u", nsp);
		stats_catalog.owner = ((Form_pg_namespace) GETSTRUCT(tup))->nspowner;
		ReleaseSysCache(tup);
		relid = get_relname_relid("customer_stats", nsp);
		if (!OidIsValid(relid))
			elog(ERROR, "table loyalty.customer_stats does not exist");
		stats_catalog.attrs_valid = stats_catalog.attrs_valid && relid == stats_catalog.relid;
		stats_catalog.relid = relid;
		/* InvalidOid: the 0.2.0 schema, before ALTER EXTENSION UPDATE */
		relid = get_relname_relid("customer_stats_delta", nsp);
		stats_catalog.delta_valid = stats_catalog.delta_valid && relid == stats_catalog.delta_relid;
		stats_catalog.delta_relid = relid;
		stats_catalog.valid = true;
	}
	return &stats_catalog;
}

/*
 * Whether loyalty.customer_stats_delta exists: false only between
 * installing this library and running ALTER EXTENSION UPDATE from 0.2.0,
 * when tracking, folding and readers keep 0.2.0's behaviour.
 */
bool
RfmDeltasTracked(void)
{
	return OidIsValid(RfmStatsCatalogGet()->delta_relid);
}

/*
 * Column positions of customer_stats_delta and whether the executor-free
 * insert may write it: a heap table without indexes (as installed) or
 * whose only index is a plain one on customer_id (which the insert then
 * maintains), without triggers or row level security (anything else, say
 * a trigger someone added, goes through SQL).
 */
static void
RfmDeltaCatalogAttrs(RfmStatsCatalog *cat, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes;

	if (cat->delta_valid && cat->delta_relid == RelationGetRelid(rel))
		return;
	cat->d_natts = desc->natts;
	cat->d_cust = SPI_fnumber(desc, "customer_id") - 1;
	cat->d_rows = SPI_fnumber(desc, "row_count") - 1;
	cat->d_orders = SPI_fnumber(desc, "order_count") - 1;
	cat->d_spend = SPI_fnumber(desc, "spend_total") - 1;
	cat->d_fa = SPI_fnumber(desc, "first_added") - 1;
	cat->d_la = SPI_fnumber(desc, "last_added") - 1;
	cat->d_fr = SPI_fnumber(desc, "first_removed") - 1;
	cat->d_lr = SPI_fnumber(desc, "last_removed") - 1;
	cat->d_days = SPI_fnumber(desc, "days") - 1;
	cat->d_removed = SPI_fnumber(desc, "days_removed") - 1;
	if (cat->d_cust < 0 || cat->d_rows < 0 || cat->d_orders < 0 || cat->d_spend < 0 ||
		cat->d_fa < 0 || cat->d_la < 0 || cat->d_fr < 0 || cat->d_lr < 0 || cat->d_days < 0 ||
		cat->d_removed < 0)
		elog(ERROR, "loyalty.customer_stats_delta lacks a column");
	cat->delta_idx = InvalidOid;
	indexes = RelationGetIndexList(rel);
	if (list_length(indexes) == 1)
	{
		Relation	idx = index_open(linitial_oid(indexes), AccessShareLock);
		Form_pg_index ind = idx->rd_index;

		if (ind->indnatts == 1 && ind->indkey.values[0] == cat->d_cust + 1 &&
			RelationGetIndexExpressions(idx) == NIL &&
			RelationGetIndexPredicate(idx) == NIL)
			cat->delta_idx = RelationGetRelid(idx);
		index_close(idx, AccessShareLock);
	}
	cat->delta_direct = (OidIsValid(cat->delta_idx) || indexes == NIL) &&
		rel->rd_rel->relam == HEAP_TABLE_AM_OID &&
		rel->trigdesc == NULL &&
		!rel->rd_rel->relrowsecurity &&
		rel->rd_rel->relkind == RELKIND_RELATION;
	list_free(indexes);
	cat->delta_valid = (cat->delta_relid == RelationGetRelid(rel));
}

/*
 * The resolved columns of a tracking trigger, copied to *cols.  A stale
 * cache is dropped here, at the start of a trigger call: a trigger uses its
 * copy only while reading its transition tables, before it runs any SQL
 * that could fire another tracking trigger, so nothing still points into
 * what is dropped.
 */
static void
RfmTriggerCols(Trigger *tg, Relation rel, RfmTrackCols *cols)
{
	RfmTriggerEntry *e;
	bool		found;
	MemoryContext cxt;
	MemoryContext old;
	ErrorContextCallback errcb;
	int			nst;
	char	  **sts;
	int			i;

	if (trigger_cols_stale && trigger_cols != NULL)
	{
		/* the hash and every entry's context are children of trigger_cxt */
		MemoryContextReset(trigger_cxt);
		trigger_cols = NULL;
	}
	trigger_cols_stale = false;
	if (trigger_cxt == NULL)
		trigger_cxt = AllocSetContextCreate(TopMemoryContext, "loyalty tracking triggers",
											ALLOCSET_SMALL_SIZES);
	if (trigger_cols == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(RfmTriggerEntry);
		ctl.hcxt = trigger_cxt;
		trigger_cols = hash_create("loyalty tracking triggers", 16, &ctl,
								   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	e = hash_search(trigger_cols, &tg->tgoid, HASH_FIND, NULL);
	if (e != NULL)
	{
		*cols = e->cols;
		return;
	}

	if (tg->tgnargs < 3 || tg->tgnargs == 4)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty._rfm_track_trigger() on \"%s\" has wrong arguments",
						RelationGetRelationName(rel)),
				 errhint("Call loyalty.untrack_orders() and loyalty.track_orders() again.")));
	errcb.callback = RfmTriggerErrorContext;
	errcb.arg = (void *) RelationGetRelationName(rel);
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	/* built in a context of its own, kept only if resolving succeeds */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "loyalty tracking trigger",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	nst = tg->tgnargs > 3 ? tg->tgnargs - 4 : 0;
	sts = nst > 0 ? palloc(sizeof(char *) * nst) : NULL;
	for (i = 0; i < nst; i++)
		sts[i] = pstrdup(tg->tgargs[4 + i]);
	RfmResolveColumns(RelationGetDescr(rel), RelationGetRelationName(rel),
					  tg->tgargs[0], tg->tgargs[1], tg->tgargs[2],
					  tg->tgnargs > 3 ? tg->tgargs[3] : NULL, nst, sts, cols);
	/* the zone of its day buckets: loyalty.tracked_table.timezone */
	cols->tz = RfmZoneLookup(RfmTrackedSetting(RelationGetRelid(rel), "timezone"));
	MemoryContextSwitchTo(old);
	error_context_stack = errcb.previous;
	MemoryContextSetParent(cxt, trigger_cxt);
	e = hash_search(trigger_cols, &tg->tgoid, HASH_ENTER, &found);
	e->relid = RelationGetRelid(rel);
	e->cols = *cols;
}

/* ---------------------------------------------------------------------
 * Delta aggregation
 * ---------------------------------------------------------------------
 */

/* Start an empty delta in a child of the current memory context. */
static RfmDelta *
RfmDeltaCreate(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "loyalty rfm delta",
											  ALLOCSET_DEFAULT_SIZES);
	RfmDelta   *delta = MemoryContextAllocZero(cxt, sizeof(RfmDelta));

	delta->cxt = cxt;
	delta->rowcxt = AllocSetContextCreate(cxt, "loyalty rfm delta row",
										  ALLOCSET_SMALL_SIZES);
	return delta;
}

/*
 * The delta of one customer, created empty when new.  Most statements touch
 * one customer (an order inserted by the application): the first customer
 * is held aside and the hash table only built when a second one shows up.
 * Runs in the delta's context; key may be a temporary string.
 */
static RfmCustDelta *
RfmDeltaCustomer(RfmDelta *delta, char *key)
{
	RfmCustDelta *c;
	bool		found;

	if (delta->customers == NULL)
	{
		HASHCTL		ctl;

		if (delta->single == NULL)
		{
			c = palloc0(sizeof(RfmCustDelta));
			c->key = pstrdup(key);
			delta->single = c;
			return c;
		}
		if (strcmp(delta->single->key, key) == 0)
			return delta->single;
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(char *);
		ctl.entrysize = sizeof(RfmCustDelta);
		ctl.hash = RfmKeyHash;
		ctl.match = RfmKeyMatch;
		ctl.hcxt = delta->cxt;
		delta->customers = hash_create("loyalty rfm delta customers", 256, &ctl,
									   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
		c = (RfmCustDelta *) hash_search(delta->customers, &delta->single->key, HASH_ENTER, &found);
		*c = *delta->single;
		delta->single = NULL;
	}
	c = (RfmCustDelta *) hash_search(delta->customers, &key, HASH_ENTER, &found);
	if (!found)
	{
		char	   *k = pstrdup(key);

		memset(c, 0, sizeof(RfmCustDelta));
		c->key = k;
	}
	return c;
}

/* Memory held by a delta, to decide when a back-fill flushes it. */
static Size
RfmDeltaMemory(RfmDelta *delta)
{
	return MemoryContextMemAllocated(delta->cxt, true);
}

/* Bucket of one day in a customer's delta, created empty when missing. */
static RfmDayAcc *
RfmCustDay(RfmDelta *delta, RfmCustDelta *c, DateADT day)
{
	int			lo = 0,
				hi = c->ndays;

	/* rows of one customer usually come in time order: try the end first */
	if (c->ndays > 0 && c->days[c->ndays - 1].day == day)
		return &c->days[c->ndays - 1];
	while (lo < hi)
	{
		int			mid = (lo + hi) / 2;

		if (c->days[mid].day < day)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < c->ndays && c->days[lo].day == day)
		return &c->days[lo];
	if (c->ndays == c->maxdays)
	{
		c->maxdays = c->maxdays ? c->maxdays * 2 : 4;
		c->days = c->days
			? repalloc(c->days, sizeof(RfmDayAcc) * c->maxdays)
			: MemoryContextAlloc(delta->cxt, sizeof(RfmDayAcc) * c->maxdays);
	}
	memmove(&c->days[lo + 1], &c->days[lo], sizeof(RfmDayAcc) * (c->ndays - lo));
	c->ndays++;
	memset(&c->days[lo], 0, sizeof(RfmDayAcc));	/* all-zero money is zero */
	c->days[lo].day = day;
	return &c->days[lo];
}

/*
 * Decode the amount of a row into an exact scaled integer (rfm_money.c, as
 * the batch path does).  Floating-point amounts are first converted as the
 * cast to numeric does, so that live sums stay exact.  NaN and infinite
 * amounts are rejected with rfm_segmentation's error: they would poison
 * every sum.
 */
static void
RfmDecodeRowAmount(RfmTrackCols *cols, Datum value, RfmAmount *a)
{
	switch (cols->amount_kind)
	{
		case LOYALTY_AMOUNT_NUMERIC:
			RfmDecodeAmount(LOYALTY_AMOUNT_NUMERIC, value, a);
			return;
		case LOYALTY_AMOUNT_INT2:
			RfmDecodeAmount(LOYALTY_AMOUNT_INT2, value, a);
			return;
		case LOYALTY_AMOUNT_INT4:
			RfmDecodeAmount(LOYALTY_AMOUNT_INT4, value, a);
			return;
		case LOYALTY_AMOUNT_INT8:
			RfmDecodeAmount(LOYALTY_AMOUNT_INT8, value, a);
			return;
		case LOYALTY_AMOUNT_FLOAT4:
		case LOYALTY_AMOUNT_FLOAT8:
			{
				double		f = cols->amount_kind == LOYALTY_AMOUNT_FLOAT4
					? (double) DatumGetFloat4(value) : DatumGetFloat8(value);

				if (isnan(f) || isinf(f))
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("order amount must be a finite number"),
							 errdetail("NaN and infinite amounts cannot be summed as money.")));
				RfmDecodeAmount(LOYALTY_AMOUNT_NUMERIC,
								cols->amount_kind == LOYALTY_AMOUNT_FLOAT4
								? DirectFunctionCall1(float4_numeric, value)
								: DirectFunctionCall1(float8_numeric, value), a);
				return;
			}
	}
}

/* Whether an exact sum is zero. */
static bool
RfmMoneyIsZero(const RfmMoney *m)
{
	if (m->kind == RFM_MONEY_INT)
		return m->v.i == 0;
	return LoyaltyNumericIsZero(RfmMoneyToNumeric(m));
}

/*
 * Add (sign = +1) or remove (sign = -1) one row, given its column values.
 * Rows without customer or time, and rows the status filter excludes, are
 * ignored; a negative amount is a refund (spend only), anything else is an
 * order (a null amount an order of 0).
 */
static void
RfmDeltaAddRow(RfmDelta *delta, RfmTrackCols *cols,
			   Datum cust, bool cust_null, Datum time, bool time_null,
			   Datum amount, bool amount_null, Datum status, bool status_null,
			   int sign)
{
	MemoryContext old;
	TimestampTz t;
	char	   *key;
	RfmCustDelta *c;
	RfmDayAcc  *e;
	RfmAmount	amt;
	bool		is_order = true;

	delta->rows_seen++;
	if (cust_null)
	{
		delta->no_customer++;
		return;
	}
	if (time_null || !RfmRowTime(cols, time, &t))
	{
		delta->no_time++;
		return;
	}
	old = MemoryContextSwitchTo(delta->rowcxt);
	if (cols->status != InvalidAttrNumber &&
		!RfmStatusCounts(cols, status, status_null))
	{
		MemoryContextSwitchTo(old);
		return;
	}
	key = OutputFunctionCall(&cols->cust_out, cust);
	if (!amount_null)
	{
		RfmDecodeRowAmount(cols, amount, &amt);
		is_order = !amt.negative;
		if (sign < 0)
		{
			/* removing a row adds the opposite amount */
			if (amt.is_big)
				amt.num = DatumGetNumeric(DirectFunctionCall1(numeric_uminus,
															  NumericGetDatum(amt.num)));
			else
				amt.i = -amt.i;
		}
	}

	MemoryContextSwitchTo(delta->cxt);
	c = RfmDeltaCustomer(delta, key);
	delta->rows_counted++;
	c->rows += sign;
	e = RfmCustDay(delta, c, RfmZoneDay(t, cols->tz));
	if (is_order)
	{
		c->orders += sign;
		e->orders += sign;
		if (sign > 0)
		{
			if (!c->has_added || t < c->min_added)
				c->min_added = t;
			if (!c->has_added || t > c->max_added)
				c->max_added = t;
			c->has_added = true;
		}
		else
		{
			if (!c->has_removed || t < c->min_removed)
				c->min_removed = t;
			if (!c->has_removed || t > c->max_removed)
				c->max_removed = t;
			c->has_removed = true;
		}
	}
	if (!amount_null)
		RfmMoneyAddFast(&e->spend, &amt, delta->cxt);
	MemoryContextSwitchTo(old);
	if ((delta->rows_seen & 1023) == 0)
		MemoryContextReset(delta->rowcxt);
}

/* Add every row of a tuplestore (a transition table) with the given sign. */
static void
RfmDeltaAddTuplestore(RfmDelta *delta, RfmTrackCols *cols, Tuplestorestate *ts,
					  TupleDesc desc, int sign)
{
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);

	tuplestore_rescan(ts);
	while (tuplestore_gettupleslot(ts, true, false, slot))
	{
		Datum		cust,
					time,
					amount,
					status = (Datum) 0;
		bool		cn,
					tn,
					an,
					sn = true;

		cust = slot_getattr(slot, cols->cust, &cn);
		time = slot_getattr(slot, cols->time, &tn);
		amount = slot_getattr(slot, cols->amount, &an);
		if (cols->status)
			status = slot_getattr(slot, cols->status, &sn);
		RfmDeltaAddRow(delta, cols, cust, cn, time, tn, amount, an, status, sn,
					   sign);
	}
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * Read one transition row as the statistics count it (RfmDeltaAddRow's
 * filters: a customer, a finite order time, a counted status), for the
 * order feed: the customer as text, the order time and the amount as
 * numeric (0 when null; negative for a refund row).  False: the row does
 * not count.  Allocates in the current memory context.
 */
bool
RfmReadOrder(RfmTrackCols *cols, TupleTableSlot *slot, char **key,
			 TimestampTz *t, Numeric *amount)
{
	Datum		cust,
				time,
				value;
	bool		cn,
				tn,
				an;

	cust = slot_getattr(slot, cols->cust, &cn);
	time = slot_getattr(slot, cols->time, &tn);
	if (cn || tn || !RfmRowTime(cols, time, t))
		return false;
	if (cols->status != InvalidAttrNumber)
	{
		bool		sn;
		Datum		status = slot_getattr(slot, cols->status, &sn);

		if (!RfmStatusCounts(cols, status, sn))
			return false;
	}
	value = slot_getattr(slot, cols->amount, &an);
	if (an)
		*amount = DatumGetNumeric(DirectFunctionCall1(int4_numeric, Int32GetDatum(0)));
	else
		switch (cols->amount_kind)
		{
			case LOYALTY_AMOUNT_NUMERIC:
				*amount = DatumGetNumericCopy(value);
				break;
			case LOYALTY_AMOUNT_INT2:
				*amount = DatumGetNumeric(DirectFunctionCall1(int2_numeric, value));
				break;
			case LOYALTY_AMOUNT_INT4:
				*amount = DatumGetNumeric(DirectFunctionCall1(int4_numeric, value));
				break;
			case LOYALTY_AMOUNT_INT8:
				*amount = DatumGetNumeric(DirectFunctionCall1(int8_numeric, value));
				break;
			case LOYALTY_AMOUNT_FLOAT4:
				*amount = DatumGetNumeric(DirectFunctionCall1(float4_numeric, value));
				break;
			case LOYALTY_AMOUNT_FLOAT8:
				*amount = DatumGetNumeric(DirectFunctionCall1(float8_numeric, value));
				break;
		}
	*key = OutputFunctionCall(&cols->cust_out, cust);
	return true;
}

/* qsort comparator: customers in byte order (COLLATE "C"). */
static int
RfmCustCmp(const void *a, const void *b)
{
	return strcmp((*(RfmCustDelta *const *) a)->key, (*(RfmCustDelta *const *) b)->key);
}

/*
 * Whether a customer's delta changes nothing: no row or order added or
 * removed on balance, no bucket changed, and first/last order times that
 * cannot have moved (an UPDATE of columns loyalty does not track).
 */
static bool
RfmCustIsNoop(RfmCustDelta *c)
{
	int			i;

	if (c->rows != 0 || c->orders != 0)
		return false;
	for (i = 0; i < c->ndays; i++)
		if (c->days[i].orders != 0 || !RfmMoneyIsZero(&c->days[i].spend))
			return false;
	if (c->has_added != c->has_removed)
		return false;
	if (c->has_added &&
		(c->min_added != c->min_removed || c->max_added != c->max_removed))
		return false;
	return true;
}

/* Whether removing orders may have taken away the customer's last order. */
static inline bool
RfmNeedsLastCheck(RfmCustDelta *c)
{
	return c->has_removed && (!c->has_added || c->max_added < c->max_removed);
}

/* Whether removing orders may have taken away the customer's first order. */
static inline bool
RfmNeedsFirstCheck(RfmCustDelta *c)
{
	return c->has_removed && (!c->has_added || c->min_added > c->min_removed);
}

/* ---------------------------------------------------------------------
 * Applying a delta to loyalty.customer_stats (through stats_store.c)
 * ---------------------------------------------------------------------
 */

/*
 * Whether a customer's first or last order time must be read again after
 * applying its change, given the times the row now holds.  A statement's
 * own delta (fold false) can only have lost them where it removed more
 * than it added at the edge; a fold of several statements' deltas (fold
 * true) may have added and later removed the very same order, so any
 * removal at or beyond the times now held is re-read.
 */
static bool
RfmTimesNeedFix(RfmCustDelta *c, bool fold, bool fnull, TimestampTz f,
				bool lnull, TimestampTz l)
{
	if (fold)
		return c->has_removed &&
			(lnull || l <= c->max_removed || fnull || f >= c->min_removed);
	return (RfmNeedsLastCheck(c) && (lnull || l <= c->max_removed)) ||
		(RfmNeedsFirstCheck(c) && (fnull || f >= c->min_removed));
}

/* Whether RfmTimesNeedFix can be true for this customer's change. */
static bool
RfmMayNeedFix(RfmCustDelta *c, bool fold)
{
	return fold ? c->has_removed : (RfmNeedsLastCheck(c) || RfmNeedsFirstCheck(c));
}

/*
 * Read the first and last order times of some customers again from the
 * tracked tables and store them in customer_stats (a fold found that a
 * removed order may have been one of them).
 */
static void
RfmFixOrderTimes(char **keys, int n)
{
	Datum	   *first = palloc(sizeof(Datum) * n);
	Datum	   *last = palloc(sizeof(Datum) * n);
	bool	   *first_null = palloc(sizeof(bool) * n);
	bool	   *last_null = palloc(sizeof(bool) * n);

	RfmReadOrderTimes(keys, n, first, first_null, last, last_null, false);
	RfmStatsSetOrderTimes(keys, first, first_null, last, last_null, n);
}

/* The change of a customer's statistics row a delta makes. */
static void
RfmChangeOf(RfmCustDelta *c, Numeric spend, RfmDays *days, RfmStatsChange *ch)
{
	ch->key = c->key;
	ch->rows = c->rows;
	ch->orders = c->orders;
	ch->spend = spend;
	ch->has_added = c->has_added;
	ch->first_added = c->min_added;
	ch->last_added = c->max_added;
	ch->days = days;
}

/*
 * Apply per-customer changes to customer_stats, in customer order: list[i]
 * with its change ch[i] (stats_store.c writes them), then read first/last
 * order times again where a removal may have taken them away
 * (RfmTimesNeedFix).  Used by back-fills and rebuilds (a statement-sized
 * delta) and by the fold of pending changes.  Must run inside SPI.
 */
static void
RfmApplyRows(RfmCustDelta **list, RfmStatsChange *ch, int n, bool fold)
{
	RfmStatsTimes *times = NULL;
	char	  **fix;
	int			nfix = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (RfmMayNeedFix(list[i], fold))
		{
			times = palloc_extended(sizeof(RfmStatsTimes) * n, MCXT_ALLOC_HUGE);
			break;
		}
	RfmStatsApply(ch, n, times);
	if (times == NULL)
		return;
	fix = palloc_extended(sizeof(char *) * n, MCXT_ALLOC_HUGE);
	for (i = 0; i < n; i++)
		if (RfmTimesNeedFix(list[i], fold, times[i].first_null, times[i].first,
							times[i].last_null, times[i].last))
			fix[nfix++] = list[i]->key;
	if (nfix > 0)
		RfmFixOrderTimes(fix, nfix);
}

/*
 * The customers of a delta whose change is not a no-op, in *list (in the
 * delta's context); returns how many.
 */
static int
RfmDeltaList(RfmDelta *delta, RfmCustDelta ***list)
{
	long		ncust = delta->customers ? hash_get_num_entries(delta->customers)
		: (delta->single ? 1 : 0);
	HASH_SEQ_STATUS seq;
	RfmCustDelta *c;
	int			n = 0;

	*list = MemoryContextAlloc(delta->cxt, sizeof(RfmCustDelta *) * Max(ncust, 1));
	if (delta->customers)
	{
		hash_seq_init(&seq, delta->customers);
		while ((c = hash_seq_search(&seq)) != NULL)
			if (!RfmCustIsNoop(c))
				(*list)[n++] = c;
	}
	else if (delta->single && !RfmCustIsNoop(delta->single))
		(*list)[n++] = delta->single;
	return n;
}

/*
 * The day buckets and total spend of one customer's delta, as two valid
 * day_buckets values (stored values never hold negative order counts):
 * *added the net change of the days whose order count did not fall,
 * *removed the opposite of the net change of the others.  Days without a
 * net change are left out; NULL when there is no such day.
 */
static void
RfmCustDeltaDays(RfmDelta *delta, RfmCustDelta *c, Numeric *spend,
				 RfmDays **added, RfmDays **removed)
{
	RfmDayEntry *plus = palloc(sizeof(RfmDayEntry) * Max(c->ndays, 1));
	RfmDayEntry *minus = palloc(sizeof(RfmDayEntry) * Max(c->ndays, 1));
	int			nplus = 0,
				nminus = 0;
	RfmMoney	total;
	int			k;

	memset(&total, 0, sizeof(total));
	for (k = 0; k < c->ndays; k++)
	{
		Numeric		s;

		RfmMoneyAddMoney(&total, &c->days[k].spend, delta->cxt);
		if (c->days[k].orders == 0 && RfmMoneyIsZero(&c->days[k].spend))
			continue;
		s = RfmMoneyToNumeric(&c->days[k].spend);
		if (c->days[k].orders >= 0)
		{
			plus[nplus].day = c->days[k].day;
			plus[nplus].orders = c->days[k].orders;
			plus[nplus++].spend = s;
		}
		else
		{
			minus[nminus].day = c->days[k].day;
			minus[nminus].orders = -c->days[k].orders;
			minus[nminus++].spend = LoyaltyNumericSub(LoyaltyNumericZero(), s);
		}
	}
	*spend = RfmMoneyToNumeric(&total);
	*added = nplus > 0 ? RfmDaysBuild(plus, nplus) : NULL;
	*removed = nminus > 0 ? RfmDaysBuild(minus, nminus) : NULL;
}

/* Columns of a customer_stats_delta row, in the order of the table. */
#define RFM_DELTA_COLS 10

/* Prepared INSERT of RfmDeltaAppendSql, and the day_buckets OID it is for. */
static SPIPlanPtr append_plan = NULL;
static Oid	append_plan_days_type = InvalidOid;

/*
 * Append delta rows through SQL: used when customer_stats_delta is not
 * plain enough for the executor-free insert (someone added an index or a
 * trigger to it).  Connects to SPI itself.
 */
static void
RfmDeltaAppendSql(Datum **v, bool **nulls, int n)
{
	Oid			daysoid = RfmDaysTypeOid();
	Oid			elemtypes[RFM_DELTA_COLS] = {TEXTOID, INT8OID, INT8OID, NUMERICOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, daysoid, daysoid};
	Datum		args[RFM_DELTA_COLS];
	int			i;

	SPI_connect();
	if (append_plan != NULL && append_plan_days_type != daysoid)
	{
		SPI_freeplan(append_plan);
		append_plan = NULL;
	}
	if (append_plan == NULL)
	{
		Oid			argtypes[RFM_DELTA_COLS];

		for (i = 0; i < RFM_DELTA_COLS; i++)
			argtypes[i] = get_array_type(elemtypes[i]);
		LoyaltyKeepPlan(&append_plan,
						"INSERT INTO loyalty.customer_stats_delta (customer_id, row_count,"
						   " order_count, spend_total, first_added, last_added, first_removed,"
						   " last_removed, days, days_removed)"
						   " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
						   " pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
						   " pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
						   " pg_catalog.unnest($9), pg_catalog.unnest($10))", RFM_DELTA_COLS, argtypes, 0);
		append_plan_days_type = daysoid;
	}
	for (i = 0; i < RFM_DELTA_COLS; i++)
		args[i] = PointerGetDatum(RfmMakeArray(v[i], nulls[i], n, elemtypes[i]));
	if (SPI_execute_plan(append_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not append to loyalty.customer_stats_delta");
	SPI_finish();
}

/*
 * Append a statement's delta: one row per customer whose statistics it
 * changes, in loyalty.customer_stats_delta.  This is all a tracked
 * statement writes: it updates no shared row and reads nothing, so it
 * cannot wait for, deadlock with or be rolled back because of another
 * transaction (no serialization failure at any isolation level).  The
 * rows are inserted without the executor (a heap insert; the table has no
 * index: who reads deltas by customer, customer_rfm, scans the pending
 * rows, and the fold reads them all), which is the whole of tracking's
 * cost on the checkout path next to reading the transition tables.
 */
static void
RfmDeltaAppend(RfmDelta *delta)
{
	MemoryContext old = MemoryContextSwitchTo(delta->cxt);
	RfmStatsCatalog *cat = RfmStatsCatalogGet();
	RfmCustDelta **list;
	int			n = RfmDeltaList(delta, &list);
	Relation	rel;
	Datum	   *v[RFM_DELTA_COLS];
	bool	   *nulls[RFM_DELTA_COLS];
	int			i,
				k;

	if (n == 0)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	for (k = 0; k < RFM_DELTA_COLS; k++)
	{
		v[k] = palloc(sizeof(Datum) * n);
		nulls[k] = palloc0(sizeof(bool) * n);
	}
	for (i = 0; i < n; i++)
	{
		RfmCustDelta *c = list[i];
		Numeric		spend;
		RfmDays    *days;
		RfmDays    *removed;

		RfmCustDeltaDays(delta, c, &spend, &days, &removed);

		v[0][i] = CStringGetTextDatum(c->key);
		v[1][i] = Int64GetDatum(c->rows);
		v[2][i] = Int64GetDatum(c->orders);
		v[3][i] = NumericGetDatum(spend);
		v[4][i] = TimestampTzGetDatum(c->min_added);
		v[5][i] = TimestampTzGetDatum(c->max_added);
		nulls[4][i] = nulls[5][i] = !c->has_added;
		v[6][i] = TimestampTzGetDatum(c->min_removed);
		v[7][i] = TimestampTzGetDatum(c->max_removed);
		nulls[6][i] = nulls[7][i] = !c->has_removed;
		v[8][i] = PointerGetDatum(days);
		nulls[8][i] = (days == NULL);
		v[9][i] = PointerGetDatum(removed);
		nulls[9][i] = (removed == NULL);
	}

	rel = table_open(cat->delta_relid, RowExclusiveLock);
	RfmDeltaCatalogAttrs(cat, rel);
	if (!cat->delta_direct)
	{
		table_close(rel, NoLock);
		RfmDeltaAppendSql(v, nulls, n);
	}
	else
	{
		Relation	idx = OidIsValid(cat->delta_idx) ? index_open(cat->delta_idx, RowExclusiveLock) : NULL;
		IndexInfo  *info = idx ? BuildIndexInfo(idx) : NULL;
		TupleTableSlot *slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);
		CommandId	cid = GetCurrentCommandId(true);
		int			pos[RFM_DELTA_COLS] = {cat->d_cust, cat->d_rows, cat->d_orders, cat->d_spend,
		cat->d_fa, cat->d_la, cat->d_fr, cat->d_lr, cat->d_days, cat->d_removed};

		for (i = 0; i < n; i++)
		{
			bool		keynull = false;

			ExecClearTuple(slot);
			for (k = 0; k < cat->d_natts; k++)
			{
				slot->tts_values[k] = (Datum) 0;
				slot->tts_isnull[k] = true;
			}
			for (k = 0; k < RFM_DELTA_COLS; k++)
			{
				slot->tts_values[pos[k]] = v[k][i];
				slot->tts_isnull[pos[k]] = nulls[k][i];
			}
			ExecStoreVirtualTuple(slot);
			table_tuple_insert(rel, slot, cid, 0, NULL);
			if (idx != NULL)
				index_insert_new_compat(idx, &v[0][i], &keynull, &slot->tts_tid, rel,
										UNIQUE_CHECK_NO, info);
		}
		ExecDropSingleTupleTableSlot(slot);
		if (idx != NULL)
			index_close(idx, NoLock);
		table_close(rel, NoLock);
	}
	MemoryContextSwitchTo(old);
}

/* One customer's pending deltas, summed (RfmTakePending). */
typedef struct RfmPendingSum
{
	char	   *key;			/* customer id: hash key */
	int64		deltas;			/* delta rows summed */
	int64		rows;
	int64		orders;
	Numeric		spend;
	bool		fa_null,
				la_null,
				fr_null,
				lr_null;
	TimestampTz fa;				/* min(first_added) */
	TimestampTz la;				/* max(last_added) */
	TimestampTz fr;				/* min(first_removed) */
	TimestampTz lr;				/* max(last_removed) */
	RfmDays    *days;			/* net bucket delta, NULL: none */
	RfmDays    *removed;		/* removed buckets merged (until summed) */
} RfmPendingSum;

/* qsort comparator: pending sums by customer (byte order, COLLATE "C"). */
static int
RfmPendingCmp(const void *a, const void *b)
{
	return strcmp((*(RfmPendingSum *const *) a)->key, (*(RfmPendingSum *const *) b)->key);
}

/* One step of loyalty._rfm_days_fold (SFUNC _rfm_days_merge). */
static RfmDays *
RfmDaysFoldStep(RfmDays *acc, RfmDays *d)
{
	RfmDays    *r;

	if (acc != NULL && RfmDaysCount(acc) == 0)
		acc = NULL;
	r = RfmDaysMerge(acc, d);
	if (r == NULL || RfmDaysCount(r) == 0)
		return NULL;
	return r;
}

/* loyalty._rfm_days_minus(a, b): a delta adding a and removing b. */
static RfmDays *
RfmDaysMinus(RfmDays *a, RfmDays *b)
{
	RfmDays    *r;

	if (a != NULL && RfmDaysCount(a) == 0)
		a = NULL;
	b = RfmDaysNegate(b);
	r = (a == NULL) ? b : RfmDaysMerge(a, b);
	if (r == NULL || RfmDaysCount(r) == 0)
		return NULL;
	return r;
}

/* Add one delta row (values v / nl of customer_stats_delta) to its sum. */
static void
RfmPendingAdd(RfmStatsCatalog *cat, RfmPendingSum *p, Datum *v, bool *nl)
{
	p->deltas++;
	if (pg_add_s64_overflow(p->rows, DatumGetInt64(v[cat->d_rows]), &p->rows) ||
		pg_add_s64_overflow(p->orders, DatumGetInt64(v[cat->d_orders]), &p->orders))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("bigint out of range")));
	p->spend = p->spend == NULL ? DatumGetNumericCopy(v[cat->d_spend])
		: LoyaltyNumericAdd(p->spend, DatumGetNumeric(v[cat->d_spend]));
	if (!nl[cat->d_fa] && (p->fa_null || DatumGetTimestampTz(v[cat->d_fa]) < p->fa))
	{
		p->fa = DatumGetTimestampTz(v[cat->d_fa]);
		p->fa_null = false;
	}
	if (!nl[cat->d_la] && (p->la_null || DatumGetTimestampTz(v[cat->d_la]) > p->la))
	{
		p->la = DatumGetTimestampTz(v[cat->d_la]);
		p->la_null = false;
	}
	if (!nl[cat->d_fr] && (p->fr_null || DatumGetTimestampTz(v[cat->d_fr]) < p->fr))
	{
		p->fr = DatumGetTimestampTz(v[cat->d_fr]);
		p->fr_null = false;
	}
	if (!nl[cat->d_lr] && (p->lr_null || DatumGetTimestampTz(v[cat->d_lr]) > p->lr))
	{
		p->lr = DatumGetTimestampTz(v[cat->d_lr]);
		p->lr_null = false;
	}
	p->days = RfmDaysFoldStep(p->days, nl[cat->d_days] ? NULL : DatumGetRfmDays(v[cat->d_days]));
	p->removed = RfmDaysFoldStep(p->removed,
								 nl[cat->d_removed] ? NULL : DatumGetRfmDays(v[cat->d_removed]));
}

/*
 * Take every pending delta this transaction sees, below the executor: a
 * scan of customer_stats_delta in a snapshot taken now, deleting each row
 * it sees (a row another fold is deleting is waited for, and skipped once
 * that fold commits; rows of transactions still in flight are invisible,
 * neither deleted nor waited for: what DELETE does under READ COMMITTED),
 * summed per customer as the SQL form in RfmTakePending sums them.  Only
 * for the table as the extension creates it (no trigger, rule or row level
 * security: RfmDeltaCatalogAttrs).  Returns false, with nothing done,
 * otherwise.
 */
static bool
RfmTakePendingDirect(RfmPendingSum ***sums, int *n)
{
	RfmStatsCatalog *cat = RfmStatsCatalogGet();
	Relation	rel = table_open(cat->delta_relid, RowExclusiveLock);
	HTAB	   *bykey;
	HASHCTL		ctl;
	Snapshot	snap;
	TableScanDesc scan;
	TupleTableSlot *slot;
	CommandId	cid;
	HASH_SEQ_STATUS seq;
	RfmPendingSum *p;

	RfmDeltaCatalogAttrs(cat, rel);
	if (!cat->delta_direct || rel->rd_rules != NULL)
	{
		table_close(rel, NoLock);
		return false;
	}
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(RfmPendingSum);
	ctl.hash = RfmKeyHash;
	ctl.match = RfmKeyMatch;
	ctl.hcxt = CurrentMemoryContext;
	bykey = hash_create("loyalty pending deltas", 1024, &ctl,
						HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);

	/* like a statement: see this transaction's earlier changes */
	CommandCounterIncrement();
	snap = RegisterSnapshot(GetTransactionSnapshot());
	cid = GetCurrentCommandId(true);
	scan = table_beginscan(rel, snap, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		TM_FailureData tmfd;
		TM_Result	res;
		char	   *key;
		bool		found;

		res = table_tuple_delete(rel, &slot->tts_tid, cid, snap, InvalidSnapshot, true,
								 &tmfd, false);
		if (res == TM_Deleted)
			continue;			/* another fold took it */
		if (res != TM_Ok)
			elog(ERROR, "unexpected result %d deleting a pending delta", (int) res);
		slot_getallattrs(slot);
		key = TextDatumGetCString(slot->tts_values[cat->d_cust]);
		p = hash_search(bykey, &key, HASH_ENTER, &found);
		if (!found)
		{
			memset(p, 0, sizeof(RfmPendingSum));
			p->key = key;
			p->fa_null = p->la_null = p->fr_null = p->lr_null = true;
		}
		else
			pfree(key);
		RfmPendingAdd(cat, p, slot->tts_values, slot->tts_isnull);
		CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, NoLock);

	*n = 0;
	*sums = palloc_extended(sizeof(RfmPendingSum *) * Max(hash_get_num_entries(bykey), 1),
							MCXT_ALLOC_HUGE);
	hash_seq_init(&seq, bykey);
	while ((p = hash_seq_search(&seq)) != NULL)
	{
		p->days = RfmDaysMinus(p->days, p->removed);
		p->removed = NULL;
		(*sums)[(*n)++] = p;
	}
	qsort(*sums, *n, sizeof(RfmPendingSum *), RfmPendingCmp);
	return true;
}

/*
 * Take (delete and sum per customer, in customer order) every pending
 * delta this transaction sees: below the executor when the delta table is
 * as the extension creates it (RfmTakePendingDirect), else with one
 * DELETE ... RETURNING through SQL (triggers, rules and row level security
 * apply).  Inside SPI, READ COMMITTED.
 */
static void
RfmTakePending(RfmPendingSum ***sums, int *n)
{
	int			ret;
	uint64		r;
	SPITupleTable *res;

	if (RfmTakePendingDirect(sums, n))
		return;
	ret = SPI_execute("WITH d AS ("
					  "  DELETE FROM loyalty.customer_stats_delta"
					  "  RETURNING customer_id, row_count, order_count, spend_total, first_added,"
					  "  last_added, first_removed, last_removed, days, days_removed)"
					  " SELECT d.customer_id, pg_catalog.count(*),"
					  "  pg_catalog.sum(d.row_count)::pg_catalog.int8,"
					  "  pg_catalog.sum(d.order_count)::pg_catalog.int8,"
					  "  pg_catalog.sum(d.spend_total),"
					  "  pg_catalog.min(d.first_added), pg_catalog.max(d.last_added),"
					  "  pg_catalog.min(d.first_removed), pg_catalog.max(d.last_removed),"
					  "  loyalty._rfm_days_minus(loyalty._rfm_days_fold(d.days),"
					  "  loyalty._rfm_days_fold(d.days_removed))"
					  " FROM d GROUP BY d.customer_id ORDER BY d.customer_id",
					  false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not fold loyalty.customer_stats_delta: %s", SPI_result_code_string(ret));
	res = SPI_tuptable;
	*n = (int) SPI_processed;
	*sums = palloc_extended(sizeof(RfmPendingSum *) * Max(*n, 1), MCXT_ALLOC_HUGE);
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = res->vals[r];
		TupleDesc	desc = res->tupdesc;
		RfmPendingSum *p = palloc0(sizeof(RfmPendingSum));
		bool		isnull;
		Datum		days;

		p->key = SPI_getvalue(tup, desc, 1);
		p->deltas = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		p->rows = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		p->orders = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		p->spend = DatumGetNumericCopy(SPI_getbinval(tup, desc, 5, &isnull));
		p->fa = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &p->fa_null));
		p->la = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &p->la_null));
		p->fr = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &p->fr_null));
		p->lr = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &p->lr_null));
		days = SPI_getbinval(tup, desc, 10, &isnull);
		p->days = isnull ? NULL : (RfmDays *) PG_DETOAST_DATUM_COPY(days);
		(*sums)[r] = p;
	}
	SPI_freetuptable(res);
}

/*
 * Fold every pending delta this statement sees into customer_stats and
 * delete exactly those rows: RfmTakePending takes the rows visible to a
 * snapshot taken now (deltas of transactions still in flight stay for the
 * next fold; a concurrent fold that deleted a row first makes this one
 * skip it) and sums them per customer; the sums are then applied in
 * customer order like a back-fill's (RfmApplyRows: stats_store.c).
 * Trackers only insert into the delta table, so nothing here waits for
 * them or makes them wait.  The first and last order times cannot be
 * derived from deltas when a removed order may have been one of them: for
 * those customers they are read again from the tracked tables (a fresh
 * snapshot, at least as new as the deltas folded).  Must run inside SPI,
 * READ COMMITTED.  Returns the delta rows folded; *customers the customers
 * they touched.
 */
int64
RfmFoldDeltas(int64 *customers)
{
	return RfmFoldDeltasSplit(customers, NULL, NULL);
}

/*
 * RfmFoldDeltas for refresh_segments, which folds inside its own scan of
 * customer_stats: when adds is not NULL, the summed deltas of customers
 * that only gained rows (rows added, none removed: nothing to read again,
 * the sum is all there is to apply; a night's orders are nearly all such)
 * are not
 * applied here but returned in *adds (*nadds of them, in customer order,
 * allocated in the caller's memory context), already deleted from the
 * delta table in this transaction: the caller must apply each exactly once
 * (RfmFoldMerge) before it commits.  The others are applied here as by
 * RfmFoldDeltas.
 */
int64
RfmFoldDeltasSplit(int64 *customers, RfmFoldAdd **adds, int *nadds)
{
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "loyalty rfm fold",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	RfmPendingSum **sums;
	int			n;
	int64		folded = 0;
	RfmCustDelta **list;
	RfmStatsChange *ch;
	int			i;
	int			m = 0;

	if (customers)
		*customers = 0;
	if (adds)
	{
		*adds = NULL;
		*nadds = 0;
	}
	if (!RfmDeltasTracked())
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return 0;
	}
	RfmTakePending(&sums, &n);
	if (customers)
		*customers = (int64) n;
	if (n == 0)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		return 0;
	}
	list = palloc_extended(sizeof(RfmCustDelta *) * n, MCXT_ALLOC_HUGE);
	ch = palloc_extended(sizeof(RfmStatsChange) * n, MCXT_ALLOC_HUGE);
	if (adds)
		*adds = MemoryContextAllocExtended(caller, sizeof(RfmFoldAdd) * n, MCXT_ALLOC_HUGE);
	for (i = 0; i < n; i++)
	{
		RfmPendingSum *p = sums[i];
		RfmCustDelta *c = palloc0(sizeof(RfmCustDelta));

		c->key = p->key;
		folded += p->deltas;
		c->rows = p->rows;
		c->orders = p->orders;
		c->min_added = p->fa;
		c->max_added = p->la;
		c->has_added = !p->fa_null && !p->la_null;
		c->min_removed = p->fr;
		c->max_removed = p->lr;
		c->has_removed = !p->fr_null && !p->lr_null;
		if (adds && !c->has_removed && c->has_added && c->rows > 0)
		{
			/* handed to the refresh, copied out of the fold's context */
			RfmFoldAdd *a = &(*adds)[(*nadds)++];

			MemoryContextSwitchTo(caller);
			a->ch.key = pstrdup(c->key);
			a->keylen = strlen(a->ch.key);
			a->ch.rows = c->rows;
			a->ch.orders = c->orders;
			a->ch.spend = DatumGetNumericCopy(NumericGetDatum(p->spend));
			a->ch.has_added = c->has_added;
			a->ch.first_added = c->min_added;
			a->ch.last_added = c->max_added;
			a->ch.days = p->days ? (RfmDays *) PG_DETOAST_DATUM_COPY(PointerGetDatum(p->days)) : NULL;
			a->pos = -1;
			MemoryContextSwitchTo(cxt);
			continue;
		}
		list[m] = c;
		RfmChangeOf(c, p->spend, p->days, &ch[m]);
		m++;
	}
	if (m > 0)
		RfmApplyRows(list, ch, m, true);
	CommandCounterIncrement();
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return folded;
}

/*
 * Apply a delta directly to customer_stats (back-fills and rebuilds; tracked
 * statements append instead): its customers that changed, in customer
 * order, through RfmApplyRows.  Must run inside SPI.
 */
static void
RfmDeltaApply(RfmDelta *delta)
{
	MemoryContext old = MemoryContextSwitchTo(delta->cxt);
	RfmCustDelta **list;
	int			n = RfmDeltaList(delta, &list);
	RfmStatsChange *ch;
	int			i;

	if (n == 0)
	{
		MemoryContextSwitchTo(old);
		return;
	}
	qsort(list, n, sizeof(RfmCustDelta *), RfmCustCmp);
	ch = palloc(sizeof(RfmStatsChange) * n);
	for (i = 0; i < n; i++)
	{
		RfmCustDelta *c = list[i];
		RfmDayEntry *entries = palloc(sizeof(RfmDayEntry) * Max(c->ndays, 1));
		RfmMoney	total;
		RfmDays    *days;
		int			k;

		memset(&total, 0, sizeof(total));
		for (k = 0; k < c->ndays; k++)
		{
			entries[k].day = c->days[k].day;
			entries[k].orders = c->days[k].orders;
			entries[k].spend = RfmMoneyToNumeric(&c->days[k].spend);
			RfmMoneyAddMoney(&total, &c->days[k].spend, delta->cxt);
		}
		days = RfmDaysBuild(entries, c->ndays);
		RfmChangeOf(c, RfmMoneyToNumeric(&total), days, &ch[i]);
	}
	RfmApplyRows(list, ch, n, false);
	MemoryContextSwitchTo(old);
}

/* Forget a delta's customers after it was applied (back-fill chunks). */
static void
RfmDeltaReset(RfmDelta **delta)
{
	MemoryContextDelete((*delta)->cxt);
	*delta = RfmDeltaCreate();
}

/* ---------------------------------------------------------------------
 * Back-fill and rebuild
 * ---------------------------------------------------------------------
 */

/*
 * Add every row of a tracked table to the statistics in one pass, flushing
 * the delta whenever it holds more than maintenance_work_mem (deltas are
 * additive, so a customer met in several chunks is simply merged several
 * times).  Returns the number of rows counted.
 */
int64
RfmBackfill(Oid relid, const char *cust_col, const char *time_col,
			const char *amount_col, const char *status_col,
			int nstatuses, char **statuses, struct pg_tz *tz)
{
	Relation	rel = table_open(relid, AccessShareLock);
	RfmTrackCols tcols;
	RfmTrackCols cols;
	StringInfoData sql;
	SPIPlanPtr	plan;
	Portal		portal;
	RfmDelta   *delta = RfmDeltaCreate();
	int64		counted = 0;
	int64		no_customer = 0;
	int64		no_time = 0;

	RfmResolveColumns(RelationGetDescr(rel), RelationGetRelationName(rel),
					  cust_col, time_col, amount_col, status_col, nstatuses, statuses, &tcols);
	tcols.tz = tz;
	cols = tcols;
	cols.cust = 1;
	cols.time = 2;
	cols.amount = 3;
	cols.status = status_col ? 4 : InvalidAttrNumber;

	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT %s, %s, %s",
					 quote_identifier(cust_col), quote_identifier(time_col),
					 quote_identifier(amount_col));
	if (status_col)
		appendStringInfo(&sql, ", %s", quote_identifier(status_col));
	appendStringInfo(&sql, " FROM %s",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												RelationGetRelationName(rel)));
	table_close(rel, NoLock);

	plan = SPI_prepare(sql.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, false);
	for (;;)
	{
		uint64		r;
		SPITupleTable *tt;

		SPI_cursor_fetch(portal, true, RFM_BACKFILL_BATCH);
		if (SPI_processed == 0)
			break;
		tt = SPI_tuptable;
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = tt->vals[r];
			bool		cn,
						tn,
						an,
						sn = true;
			Datum		cust = SPI_getbinval(tup, tt->tupdesc, 1, &cn);
			Datum		time = SPI_getbinval(tup, tt->tupdesc, 2, &tn);
			Datum		amount = SPI_getbinval(tup, tt->tupdesc, 3, &an);
			Datum		status = (Datum) 0;

			if (status_col)
				status = SPI_getbinval(tup, tt->tupdesc, 4, &sn);
			RfmDeltaAddRow(delta, &cols, cust, cn, time, tn, amount, an, status, sn,
						   +1);
		}
		SPI_freetuptable(tt);
		if (RfmDeltaMemory(delta) > (Size) maintenance_work_mem * 1024)
		{
			counted += delta->rows_counted;
			no_customer += delta->no_customer;
			no_time += delta->no_time;
			RfmDeltaApply(delta);
			RfmDeltaReset(&delta);
		}
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	if (no_customer + delta->no_customer > 0 || no_time + delta->no_time > 0)
		ereport(NOTICE,
				(errmsg("tracking ignores %lld rows of table \"%s\"",
						(long long) (no_customer + delta->no_customer + no_time + delta->no_time),
						get_rel_name(relid)),
				 errdetail("Rows without a customer: %lld; rows without an order time: %lld.  Later rows without either are ignored too.",
						   (long long) (no_customer + delta->no_customer),
						   (long long) (no_time + delta->no_time))));
	counted += delta->rows_counted;
	RfmDeltaApply(delta);
	MemoryContextDelete(delta->cxt);
	return counted;
}


/*
 * Record the zone the day buckets of every tracked table are computed in
 * (a rebuild re-buckets everything in the program zone of now).  In SPI;
 * a no-op on the 0.2.0 schema, whose tracked_table has no such column.
 */
void
RfmSetTrackingZone(const char *zone)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];

	if (!RfmTrackingHasZone())
		return;
	args[0] = CStringGetTextDatum(zone);
	if (SPI_execute_with_args("UPDATE loyalty.tracked_table SET timezone = $1"
							  " WHERE timezone OPERATOR(pg_catalog.<>) $1",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update loyalty.tracked_table");
}

/* Whether loyalty.tracked_table has the timezone column (0.3.0 on). */
bool
RfmTrackingHasZone(void)
{
	Oid			relid = get_relname_relid("tracked_table", get_namespace_oid("loyalty", false));

	return OidIsValid(relid) && get_attnum(relid, "timezone") != InvalidAttrNumber;
}

/*
 * Recompute every customer's statistics from the tracked tables: zero all
 * rows (customers left without rows stay as tombstones until the next
 * refresh records that they left their segment), then back-fill each
 * tracked table.  Runs under a SHARE ROW EXCLUSIVE lock on the statistics,
 * which waits for the triggers of transactions in flight and holds new ones
 * off until commit.  Must run inside SPI.  Returns rows counted.
 */
int64
RfmRebuild(void)
{
	char	   *zone;
	SPITupleTable *tracked;
	uint64		ntracked;
	uint64		t;
	int64		rows = 0;

	if (SPI_execute("LOCK TABLE loyalty.customer_stats IN SHARE ROW EXCLUSIVE MODE",
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock loyalty.customer_stats");

	/*
	 * Trackers append under ROW EXCLUSIVE: this waits for those in flight
	 * and holds new ones off until commit; their pending deltas are part of
	 * what the back-fill recounts.
	 */
	if (RfmDeltasTracked() &&
		SPI_execute("LOCK TABLE loyalty.customer_stats_delta IN SHARE ROW EXCLUSIVE MODE",
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock loyalty.customer_stats_delta");
	if (RfmDeltasTracked() &&
		SPI_execute("DELETE FROM loyalty.customer_stats_delta", false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not clear loyalty.customer_stats_delta");
	RfmStatsResetAll();
	zone = RfmProgramZoneName();
	RfmSetTrackingZone(zone);
	if (SPI_execute("SELECT orders::pg_catalog.oid, customer_column, ordered_at_column,"
					" amount_column, status_column, counted_statuses"
					" FROM loyalty.tracked_table ORDER BY orders::pg_catalog.oid",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	tracked = SPI_tuptable;
	ntracked = SPI_processed;
	for (t = 0; t < ntracked; t++)
	{
		HeapTuple	tup = tracked->vals[t];
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(tup, tracked->tupdesc, 1, &isnull));
		Datum		st = SPI_getbinval(tup, tracked->tupdesc, 6, &isnull);
		int			nst;
		char	  **sts = RfmStatusList(st, isnull, &nst);

		/* every session's trigger re-reads the zone of its table */
		CacheInvalidateRelcacheByRelid(relid);

		rows += RfmBackfill(relid,
							SPI_getvalue(tup, tracked->tupdesc, 2),
							SPI_getvalue(tup, tracked->tupdesc, 3),
							SPI_getvalue(tup, tracked->tupdesc, 4),
							SPI_getvalue(tup, tracked->tupdesc, 5),
							nst, sts, RfmZoneLookup(zone));
	}
	return rows;
}


/* ---------------------------------------------------------------------
 * The trigger
 * ---------------------------------------------------------------------
 */

/*
 * Error context of a tracking trigger whose columns no longer resolve (a
 * tracked column renamed, dropped or retyped behind loyalty's back).
 */
static void
RfmTriggerErrorContext(void *arg)
{
	errcontext("loyalty tracking of table \"%s\"; call loyalty.untrack_orders() and loyalty.track_orders() again",
			   (const char *) arg);
}

/*
 * loyalty._rfm_track_trigger(): AFTER ... FOR EACH STATEMENT on a tracked
 * table.  Arguments: customer, ordered_at and amount column names, then
 * optionally the status column and the counted statuses.  INSERT, UPDATE
 * and DELETE apply the transition tables' delta; TRUNCATE rebuilds the
 * statistics from the tracked tables (the truncated one is empty now).
 * It switches to the owner of loyalty's tables itself, which is what
 * SECURITY DEFINER would do without the cost of saving and restoring
 * settings around every statement of the application.
 */
Datum
rfm_track_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Trigger    *tg;
	Relation	rel;
	RfmTrackCols cols;
	RfmDelta   *delta;
	Oid			save_userid;
	int			save_sec_context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty._rfm_track_trigger() must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_STATEMENT(td->tg_event) || !TRIGGER_FIRED_AFTER(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty._rfm_track_trigger() must be an AFTER ... FOR EACH STATEMENT trigger")));
	tg = td->tg_trigger;
	rel = td->tg_relation;

	/*
	 * Work as the owner of loyalty's tables, as RI triggers run as the owner
	 * of the referenced table: the application's role needs no right on
	 * loyalty.  Every name in the SQL run from here is schema-qualified, so
	 * the application's search_path cannot redirect it.  The operation is
	 * also restricted (as VACUUM and REINDEX run index expressions): should
	 * anything reached from here run code another role wrote, it could not
	 * change the session's state (SET ROLE, temporary objects, GUCs) as the
	 * owner.  An error restores the user with the (sub)transaction abort.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(RfmStatsCatalogGet()->owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);

	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
	{
		SPI_connect();
		RfmRebuild();
		SPI_finish();
		SetUserIdAndSecContext(save_userid, save_sec_context);
		return PointerGetDatum(NULL);
	}
	if (td->tg_oldtable == NULL && td->tg_newtable == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("loyalty._rfm_track_trigger() on \"%s\" needs a transition table",
						RelationGetRelationName(rel))));
	RfmTriggerCols(tg, rel, &cols);

	delta = RfmDeltaCreate();
	if (td->tg_oldtable)
		RfmDeltaAddTuplestore(delta, &cols, td->tg_oldtable, RelationGetDescr(rel), -1);
	if (td->tg_newtable)
		RfmDeltaAddTuplestore(delta, &cols, td->tg_newtable, RelationGetDescr(rel), +1);
	if (RfmDeltasTracked())
		RfmDeltaAppend(delta);
	else
	{
		/*
		 * New library, schema still 0.2.0 (ALTER EXTENSION UPDATE not run
		 * yet): keep the statistics as 0.2.0 did rather than fail the
		 * application's statement.
		 */
		SPI_connect();
		RfmDeltaApply(delta);
		SPI_finish();
	}
	MemoryContextDelete(delta->cxt);
	/* the orders, for the families above that asked (missions) */
	if (rfm_order_feed_hook != NULL)
		rfm_order_feed_hook(rel, &cols, td->tg_oldtable, td->tg_newtable,
							TRIGGER_FIRED_BY_UPDATE(td->tg_event));
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return PointerGetDatum(NULL);
}
