/*
 * rfm_refresh.c
 *		Re-scoring every tracked customer from the live statistics alone
 *		(loyalty.refresh_segments), one customer's live view
 *		(loyalty.customer_rfm) and the validation of loyalty.rfm_config.
 *
 * refresh_segments reads loyalty.customer_stats in one sequential scan
 * (never the orders), computes each customer's recency, windowed frequency
 * and monetary from the day buckets, scores everyone with RfmScoreAll and
 * names segments with RfmSegmentOf.  It writes only what changed: the score
 * and segment of customers whose score or segment moved, one change-log row
 * per customer whose segment moved (loyalty.segment_change), the customers
 * who left, a snapshot header and a per-segment summary that the BI views
 * read.  Writes go in customer order, the order the tracking triggers lock
 * rows in, so a refresh and concurrent orders never deadlock; refreshes
 * serialize on an EXCLUSIVE lock of loyalty.segment_snapshot.  The first
 * refresh (no snapshot yet) scores and prunes every customer: it locks the
 * statistics exclusively from the start and rewrites them compactly at the
 * end (RfmStatsRewrite), so that later refreshes read a table half the
 * size.
 */
#include "loyalty.h"

#include <sys/mman.h>

#include "access/genam.h"
#include "access/heapam.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/cluster.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "rfm.h"
#include "rfm_args.h"
#include "rfm_live.h"
#include "rfm_stats.h"
#include "segment.h"

PG_FUNCTION_INFO_V1(rfm_refresh_segments);
PG_FUNCTION_INFO_V1(rfm_customer_rfm);
PG_FUNCTION_INFO_V1(rfm_config_validate);

/* The live scoring configuration (one row of loyalty.rfm_config). */
typedef struct RfmLiveConfig
{
	RfmScoring	scoring;
	Interval	window;
	bool		average;		/* monetary = average basket */
	Interval	retention;		/* day buckets kept this far back */
	Interval	inactive_after; /* no order for this long = inactive */
} RfmLiveConfig;

/* Column order of the configuration as read and validated. */
enum
{
	CFG_BINS,
	CFG_WINDOW,
	CFG_MONETARY,
	CFG_METHOD,
	CFG_RECENCY_T,
	CFG_FREQUENCY_T,
	CFG_MONETARY_T,
	CFG_RETENTION,
	CFG_INACTIVE,
	CFG_NATTS
};

#define RFM_CONFIG_COLUMNS \
	"bins, scoring_window, monetary, method, recency_thresholds," \
	" frequency_thresholds, monetary_thresholds, bucket_retention, inactive_after"

/*
 * Per-customer state of a refresh, kept small (24 bytes): a refresh holds
 * one per customer (the keys live in a parallel array).  The window's spend
 * is a scaled integer when it fits, else an index into the overflow list.
 */
typedef struct RfmLiveCust
{
	ItemPointerData tid;		/* the row version scored */
	int16		old_score;		/* -1: never scored */
	int16		old_seg;		/* index in the segment names, -1: none */
	int16		new_seg;		/* index of the segment now */
	uint8		flags;			/* RFM_CUST_* */
	int8		spend_scale;	/* -1: spend indexes the overflow list */
	int64		spend;			/* spend in the window * 10^spend_scale */
} RfmLiveCust;

#define RFM_CUST_PRUNE		0x01	/* has buckets older than the retention */
#define RFM_CUST_RECENT		0x02	/* last order less than 3 months ago */
#define RFM_CUST_MID		0x04	/* 3 to 6 months ago */
#define RFM_CUST_OLD		0x08	/* more than 6 months ago */
#define RFM_CUST_NO_ORDER	0x10	/* no order up to as_of */
#define RFM_CUST_INACTIVE	0x20	/* no order for inactive_after */
#define RFM_CUST_FOLD		0x40	/* pending additions folded in this refresh */
#define RFM_CUST_NEW		0x80	/* no statistics row yet: inserted */

/* One customer to write: position in the customer array and id. */
typedef struct RfmWrite
{
	int			pos;
	char	   *id;
	RfmFoldAdd *fold;			/* pending additions to fold in, or NULL */
} RfmWrite;

/* Column positions of the statistics that a fold changes. */
typedef struct RfmFoldAtts
{
	int			rows,
				orders,
				spend,
				first,
				last,
				days;
} RfmFoldAtts;

/*
 * The pending additions handed over by RfmFoldDeltasSplit, hashed by
 * customer id (open addressing) for the refresh's scan to find.
 */
typedef struct RfmFoldIndex
{
	int			mask;
	int		   *slot;			/* index into adds, -1: empty */
	RfmFoldAdd *adds;
} RfmFoldIndex;

/* Per-segment aggregates of a refresh (loyalty.segment_summary). */
typedef struct RfmSegSummary
{
	int64		customers;
	RfmMoney	revenue;
	int64		recent;			/* last order less than 3 months ago */
	int64		mid;			/* 3 to 6 months ago */
	int64		old;			/* more than 6 months ago */
	int64		no_order;		/* no order up to as_of */
	int64		inactive;		/* no order for inactive_after */
} RfmSegSummary;

#define RFM_MAX_SEGMENTS 256

/* Distinct segment names met during a refresh. */
typedef struct RfmSegNames
{
	int			n;
	char	   *name[RFM_MAX_SEGMENTS];
	int			len[RFM_MAX_SEGMENTS];
} RfmSegNames;

/* ---------------------------------------------------------------------
 * Configuration
 * ---------------------------------------------------------------------
 */

/* Compare two intervals as interval_cmp does. */
static int
RfmIntervalCmp(Interval *a, Interval *b)
{
	return DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(a),
											 IntervalPGetDatum(b)));
}

/* Read one threshold array into the scoring specification. */
static void
RfmThresholdsFrom(Datum arr, bool isnull, RfmScoring *s, RfmDimension dim,
				  const char *column)
{
	ArrayType  *a;
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	int			k;
	Oid			elemtype;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	s->nthresholds[dim] = 0;
	if (isnull)
		return;
	a = DatumGetArrayTypeP(arr);
	elemtype = ARR_ELEMTYPE(a);
	if (ARR_NDIM(a) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", column)));
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(a, elemtype, typlen, typbyval, typalign, &elems, &enulls, &n);
	if (n > RFM_MAX_THRESHOLDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d elements, at most %d are allowed", column, n, RFM_MAX_THRESHOLDS),
				 errdetail("bins - 1 cut points separate the scores, and bins is at most %d.", RFM_MAX_BINS)));
	for (k = 0; k < n; k++)
	{
		LoyaltyCheckNoNulls(enulls[k], column);
		if (elemtype == INT4OID)
			s->thresholds[dim][k] = (double) DatumGetInt32(elems[k]);
		else
			s->thresholds[dim][k] = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
																	   elems[k]));
	}
	s->nthresholds[dim] = n;
}

/*
 * Build and validate a configuration from the columns of loyalty.rfm_config
 * (in the order of RFM_CONFIG_COLUMNS).  Raises 22023 naming the problem.
 */
static void
RfmConfigFrom(Datum *v, bool *isnull, RfmLiveConfig *cfg)
{
	Interval	zero;
	char	   *method;
	char	   *monetary;
	int			i;

	memset(cfg, 0, sizeof(RfmLiveConfig));
	memset(&zero, 0, sizeof(Interval));
	for (i = 0; i < CFG_NATTS; i++)
		LoyaltyCheckNotNull(isnull[i] && i != CFG_RECENCY_T &&
							i != CFG_FREQUENCY_T && i != CFG_MONETARY_T,
							"RFM configuration values");
	cfg->scoring.bins = DatumGetInt32(v[CFG_BINS]);
	cfg->window = *DatumGetIntervalP(v[CFG_WINDOW]);
	cfg->retention = *DatumGetIntervalP(v[CFG_RETENTION]);
	cfg->inactive_after = *DatumGetIntervalP(v[CFG_INACTIVE]);
	monetary = TextDatumGetCString(v[CFG_MONETARY]);
	method = TextDatumGetCString(v[CFG_METHOD]);

	if (strcmp(monetary, "total") == 0)
		cfg->average = false;
	else if (strcmp(monetary, "average") == 0)
		cfg->average = true;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("monetary must be 'total' or 'average', not \"%s\"", monetary)));

	if (strcmp(method, "thresholds") == 0)
	{
		cfg->scoring.use_thresholds = true;
		RfmThresholdsFrom(v[CFG_RECENCY_T], isnull[CFG_RECENCY_T], &cfg->scoring,
						  RFM_RECENCY, "recency_thresholds");
		RfmThresholdsFrom(v[CFG_FREQUENCY_T], isnull[CFG_FREQUENCY_T], &cfg->scoring,
						  RFM_FREQUENCY, "frequency_thresholds");
		RfmThresholdsFrom(v[CFG_MONETARY_T], isnull[CFG_MONETARY_T], &cfg->scoring,
						  RFM_MONETARY, "monetary_thresholds");
	}
	else if (strcmp(method, "quantile") == 0)
	{
		if (!isnull[CFG_RECENCY_T] || !isnull[CFG_FREQUENCY_T] || !isnull[CFG_MONETARY_T])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("thresholds are used only with method 'thresholds'"),
					 errhint("Set method = 'thresholds', or set the threshold arrays to NULL.")));
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("method must be 'quantile' or 'thresholds', not \"%s\"", method)));
	RfmCheckScoring(&cfg->scoring);

	if (RfmIntervalCmp(&cfg->window, &zero) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scoring_window must be positive")));
	if (RfmIntervalCmp(&cfg->retention, &cfg->window) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bucket_retention must be at least scoring_window"),
				 errdetail("Day buckets older than bucket_retention are pruned; windowed statistics need them for the whole window.")));
	if (RfmIntervalCmp(&cfg->inactive_after, &zero) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("inactive_after must be positive")));
}

/*
 * loyalty._rfm_config_validate(bins, scoring_window, monetary, method,
 * recency_thresholds, frequency_thresholds, monetary_thresholds,
 * bucket_retention, inactive_after): raise an error if the values do not
 * make a usable configuration.  Called by the trigger on rfm_config.
 */
Datum
rfm_config_validate(PG_FUNCTION_ARGS)
{
	Datum		v[CFG_NATTS];
	bool		isnull[CFG_NATTS];
	RfmLiveConfig cfg;
	int			i;

	for (i = 0; i < CFG_NATTS; i++)
	{
		isnull[i] = PG_ARGISNULL(i);
		v[i] = isnull[i] ? (Datum) 0 : PG_GETARG_DATUM(i);
	}
	if (!isnull[CFG_WINDOW])
		RfmCheckInterval(DatumGetIntervalP(v[CFG_WINDOW]), "scoring_window");
	if (!isnull[CFG_RETENTION])
		RfmCheckInterval(DatumGetIntervalP(v[CFG_RETENTION]), "bucket_retention");
	if (!isnull[CFG_INACTIVE])
		RfmCheckInterval(DatumGetIntervalP(v[CFG_INACTIVE]), "inactive_after");
	RfmConfigFrom(v, isnull, &cfg);
	PG_RETURN_VOID();
}

/* Read the configuration (defaults when the row was deleted).  In SPI. */
static void
RfmReadConfig(RfmLiveConfig *cfg)
{
	Datum		v[CFG_NATTS];
	bool		isnull[CFG_NATTS];
	int			i;

	if (SPI_execute("SELECT " RFM_CONFIG_COLUMNS " FROM loyalty.rfm_config", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.rfm_config");
	if (SPI_processed == 0 &&
		SPI_execute("SELECT 5, interval '12 months', 'total'::text, 'quantile'::text,"
					" NULL::integer[], NULL::integer[], NULL::numeric[],"
					" interval '13 months', interval '6 months'", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not build the default configuration");
	for (i = 0; i < CFG_NATTS; i++)
		v[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull[i]);
	RfmConfigFrom(v, isnull, cfg);
}

/* ---------------------------------------------------------------------
 * Shared pieces
 * ---------------------------------------------------------------------
 */

/* OID of a type of schema loyalty. */
static Oid
RfmLoyaltyType(const char *name)
{
	Oid			typoid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
										 CStringGetDatum(name),
										 ObjectIdGetDatum(get_namespace_oid("loyalty", false)));

	if (!OidIsValid(typoid))
		elog(ERROR, "type loyalty.%s does not exist", name);
	return typoid;
}

/* as_of - interval, in the session's TimeZone as SQL computes it. */
static TimestampTz
RfmMinus(TimestampTz t, Interval *iv)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
												   TimestampTzGetDatum(t),
												   IntervalPGetDatum(iv)));
}

/* An interval of some months. */
static Interval *
RfmMonths(int months)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->month = months;
	return iv;
}

/*
 * The first day whose buckets are still complete: every bucket of a later
 * day exists (pruning never went past it).  DATEVAL_NOBEGIN before the
 * first refresh.  In SPI.
 */
static DateADT
RfmRetainedFrom(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT pg_catalog.max(retained_from) FROM loyalty.segment_snapshot",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.segment_snapshot");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return DATEVAL_NOBEGIN;
	return DatumGetDateADT(d);
}

/* Refuse a window that starts before the buckets still kept. */
static void
RfmCheckRetained(DateADT start_day, DateADT retained_from, RfmLiveConfig *cfg)
{
	if (start_day < retained_from)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of is too early for the live statistics"),
				 errdetail("The window starts on %s, but day buckets are kept only from %s on (bucket_retention = %s).",
						   DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(start_day))),
						   DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(retained_from))),
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(&cfg->retention)))),
				 errhint("Use loyalty.rfm_segmentation() on the orders table for earlier dates.")));
}

/*
 * A customer's RFM inputs as of as_of: frequency and spend from the buckets
 * of the window's days; recency from the exact last order when it is not
 * after as_of.  When it is (orders dated after as_of), recency comes from
 * the latest day with an order up to as_of, taken at 00:00 UTC, looking no
 * further back than floor_day (the retention horizon: older buckets may be
 * pruned, and the result must not depend on whether they already are); a
 * customer whose first order is up to as_of but who has no such day counts
 * as having ordered on the day before floor_day.
 */
static void
RfmCustomerInputs(RfmDaysSum *sum, bool first_null, TimestampTz first_order,
				  bool last_null, TimestampTz last_order, TimestampTz as_of,
				  DateADT floor_day, bool *has_order, TimestampTz *last)
{
	*has_order = false;
	if (last_null)
		return;
	if (last_order <= as_of)
	{
		*has_order = true;
		*last = last_order;
	}
	else if (sum->has_order && sum->last_order_day >= floor_day)
	{
		*has_order = true;
		*last = Min((TimestampTz) sum->last_order_day * USECS_PER_DAY, as_of);
	}
	else if (!first_null && first_order <= as_of)
	{
		*has_order = true;
		*last = first_order;
		if (floor_day != DATEVAL_NOBEGIN)
			*last = Max(*last, (TimestampTz) (floor_day - 1) * USECS_PER_DAY);
	}
}

/* Monetary as configured: the window's spend, or the average basket. */
static Numeric
RfmMonetary(RfmLiveConfig *cfg, Numeric spend, int64 frequency)
{
	if (!cfg->average)
		return spend;
	if (frequency == 0)
		return LoyaltyNumericZero();
	return LoyaltyNumericDiv(spend, LoyaltyNumericFromInt64(frequency));
}

/* floor((as_of - last) / 1 day), -1 without an order: as rfm.h says. */
static int32
RfmRecencyDaysOf(bool has_order, TimestampTz as_of, TimestampTz last)
{
	if (!has_order)
		return -1;
	return (int32) ((as_of - last) / USECS_PER_DAY);
}

/* Index of a segment name, added when new. */
static int
RfmSegIndex(RfmSegNames *names, const char *name)
{
	int			i;

	for (i = 0; i < names->n; i++)
		if (strcmp(names->name[i], name) == 0)
			return i;
	if (names->n == RFM_MAX_SEGMENTS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("more than %d distinct segment names", RFM_MAX_SEGMENTS)));
	names->name[names->n] = pstrdup(name);
	names->len[names->n] = strlen(name);
	return names->n++;
}

/* Index of a segment name given as a text datum, added when new. */
static int
RfmSegIndexText(RfmSegNames *names, Datum value)
{
	text	   *t = DatumGetTextPP(value);
	int			len = VARSIZE_ANY_EXHDR(t);
	int			i;
	char	   *s;

	for (i = 0; i < names->n; i++)
		if (names->len[i] == len &&
			memcmp(names->name[i], VARDATA_ANY(t), len) == 0)
			return i;
	s = text_to_cstring(t);
	i = RfmSegIndex(names, s);
	pfree(s);
	return i;
}

/* Copy a text datum into a bump-allocated arena as a C string. */
static char *
RfmArenaText(char **arena, Size *left, Datum value)
{
	text	   *t = DatumGetTextPP(value);
	int			len = VARSIZE_ANY_EXHDR(t);
	char	   *s;

	if ((Size) len + 1 > *left)
	{
		Size		sz = Max(64 * 1024, (Size) len + 1);

		*arena = palloc(sz);
		*left = sz;
	}
	s = *arena;
	memcpy(s, VARDATA_ANY(t), len);
	s[len] = '\0';
	*arena += len + 1;
	*left -= len + 1;
	return s;
}

/*
 * Whether this session still uses loyalty.customer_stats (an open cursor on
 * it, pending trigger events): the same test CLUSTER makes before it would
 * refuse, so that the first refresh then keeps the table as it is rather
 * than fail.
 */
static bool
RfmStatsInUse(Oid relid)
{
	Relation	rel = table_open(relid, NoLock);
	bool		busy = rel->rd_refcnt > 1 || AfterTriggerPendingOnRel(relid);

	table_close(rel, NoLock);
	return busy;
}

/*
 * Rewrite loyalty.customer_stats into a new file holding only the row
 * versions this transaction sees, then swap it in and rebuild the indexes
 * (as CLUSTER and VACUUM FULL do).  For the first refresh, which rewrote
 * nearly every row: CLUSTER would copy the superseded versions too (their
 * deleter, this transaction, is still running), leaving a table twice the
 * size.  The caller holds ACCESS EXCLUSIVE on the table since before its
 * writes and has checked that nothing else in this session uses it.  As
 * with TRUNCATE, a transaction whose snapshot predates ours would see the
 * table empty afterwards; the lock kept every other one out meanwhile.
 */
static void
RfmStatsRewrite(Oid relid)
{
	Relation	old = table_open(relid, AccessExclusiveLock);
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

/* Attribute number of a column of customer_stats. */
static int
RfmAttno(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), name) == 0)
			return i;
	elog(ERROR, "column loyalty.customer_stats.%s does not exist", name);
	return -1;
}

/* Size of a transparent huge page (x86-64, arm64 with 4 kB pages). */
#define RFM_HUGE_PAGE	((Size) 2 * 1024 * 1024)

/*
 * (Re)allocate one of the refresh's per-customer arrays: bytes long, the
 * first oldbytes copied from old, whose allocation *base is freed; *base
 * is set to the new allocation, the array is returned.  An array of a
 * huge page or more starts on a huge-page boundary and asks the kernel for
 * transparent huge pages (a hint, honoured where THP is "madvise" or
 * "always"): a new backend pays for the first touch of every page of its
 * own memory, which on a virtual machine is several microseconds per 4 kB
 * page (measured 17 ms for 6 MB, 0.4 ms with huge pages), and these arrays
 * are several MB at 100,000 customers.  The memory stays in the current
 * context: freed with it, also on error.
 */
static void *
RfmBigArray(void **base, void *old, Size oldbytes, Size bytes)
{
	char	   *b;
	char	   *p;

	if (bytes < RFM_HUGE_PAGE)
		b = p = palloc_extended(bytes, MCXT_ALLOC_HUGE);
	else
	{
		b = palloc_extended(bytes + RFM_HUGE_PAGE, MCXT_ALLOC_HUGE);
		p = (char *) TYPEALIGN(RFM_HUGE_PAGE, b);
#ifdef MADV_HUGEPAGE
		(void) madvise(p, TYPEALIGN_DOWN(RFM_HUGE_PAGE, b + bytes + RFM_HUGE_PAGE - p),
					   MADV_HUGEPAGE);
#endif
	}
	if (oldbytes > 0)
		memcpy(p, old, oldbytes);
	if (*base != NULL)
		pfree(*base);
	*base = b;
	return p;
}

/* Milliseconds elapsed since t0 (for DEBUG1 timings). */
static double
RfmMsSince(TimestampTz t0)
{
	long		secs;
	int			usecs;

	TimestampDifference(t0, GetCurrentTimestamp(), &secs, &usecs);
	return secs * 1000.0 + usecs / 1000.0;
}

/* Hash the pending additions by customer id (RfmFoldFind). */
static void
RfmFoldIndexBuild(RfmFoldIndex *ix, RfmFoldAdd *adds, int n)
{
	int			size = 16;
	int			i;

	while (size < 2 * n)
		size *= 2;
	ix->mask = size - 1;
	ix->slot = palloc_extended(sizeof(int) * size, MCXT_ALLOC_HUGE);
	memset(ix->slot, -1, sizeof(int) * size);
	ix->adds = adds;
	for (i = 0; i < n; i++)
	{
		uint32		h = hash_bytes((const unsigned char *) adds[i].key, adds[i].keylen);

		while (ix->slot[h & ix->mask] >= 0)
			h++;
		ix->slot[h & ix->mask] = i;
	}
}

/* The pending additions of a customer id (bytes, not terminated), or NULL. */
static RfmFoldAdd *
RfmFoldFind(RfmFoldIndex *ix, const char *key, int len)
{
	uint32		h = hash_bytes((const unsigned char *) key, len);
	int			k;

	while ((k = ix->slot[h & ix->mask]) >= 0)
	{
		RfmFoldAdd *a = &ix->adds[k];

		if (a->keylen == len && memcmp(a->key, key, len) == 0)
			return a;
		h++;
	}
	return NULL;
}

/*
 * Fold a customer's pending additions into a statistics row's values
 * (v / nl, in place): what loyalty's fold of the same deltas would store
 * (counts and spend added, first / last order widened, day buckets
 * merged).  Allocates in the current context.
 */
static void
RfmFoldMerge(Datum *v, bool *nl, const RfmFoldAtts *at, RfmFoldAdd *a)
{
	RfmDays    *old;
	RfmDays    *merged;

	v[at->rows] = Int64GetDatum(DatumGetInt64(v[at->rows]) + a->rows);
	v[at->orders] = Int64GetDatum(DatumGetInt64(v[at->orders]) + a->orders);
	v[at->spend] = NumericGetDatum(LoyaltyNumericAdd(DatumGetNumeric(v[at->spend]), a->spend));
	if (a->has_added)
	{
		if (nl[at->first] || a->first_added < DatumGetTimestampTz(v[at->first]))
			v[at->first] = TimestampTzGetDatum(a->first_added);
		if (nl[at->last] || a->last_added > DatumGetTimestampTz(v[at->last]))
			v[at->last] = TimestampTzGetDatum(a->last_added);
		nl[at->first] = nl[at->last] = false;
	}
	old = nl[at->days] ? NULL : DatumGetRfmDays(v[at->days]);
	if (RfmDaysCount(old) == 0)
		old = NULL;
	merged = RfmDaysMerge(old, a->days);
	nl[at->days] = (RfmDaysCount(merged) == 0);
	v[at->days] = nl[at->days] ? (Datum) 0 : PointerGetDatum(merged);
}

/* qsort comparator of writes by customer id (byte order). */
static int
RfmWriteIdCmp(const void *a, const void *b)
{
	return strcmp(((const RfmWrite *) a)->id, ((const RfmWrite *) b)->id);
}

static RfmLiveCust *sort_custs_tid;

/* qsort comparator of writes by row location. */
static int
RfmTidCmp(const void *a, const void *b)
{
	return ItemPointerCompare(&sort_custs_tid[((const RfmWrite *) a)->pos].tid,
							  &sort_custs_tid[((const RfmWrite *) b)->pos].tid);
}

/* qsort comparator of C strings (byte order). */
static int
RfmStrCmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Plan the writes of a refresh so that they visit statistics rows in key
 * order (nested loop or merge join over the primary key, never a hash join
 * or a heap-order scan): the tracking triggers lock rows in that order, so
 * neither side can wait for the other in a cycle.  Returns the GUC nest
 * level to pass to AtEOXact_GUC.
 */
static int
RfmKeyOrderPlans(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	/* the disabled plans' costs would otherwise trigger JIT compilation */
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	return nestlevel;
}

/*
 * Read the customer ids of the rows to write, from the versions scored (in
 * physical order, which is cheap), so that they can be sorted by customer.
 */
static void
RfmFetchIds(Relation rel, Snapshot snap, RfmLiveCust *custs, RfmWrite *writes, int nwrites,
			int a_id)
{
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	char	   *arena = NULL;
	Size		left = 0;
	int			i;

	sort_custs_tid = custs;
	qsort(writes, nwrites, sizeof(RfmWrite), RfmTidCmp);
	for (i = 0; i < nwrites; i++)
	{
		RfmLiveCust *c = &custs[writes[i].pos];
		bool		isnull;

		if (writes[i].fold != NULL)
		{
			writes[i].id = writes[i].fold->key;
			continue;
		}
		if (!table_tuple_fetch_row_version(rel, &c->tid, snap, slot))
			elog(ERROR, "could not fetch a scored customer statistics row");
		writes[i].id = RfmArenaText(&arena, &left, slot_getattr(slot, a_id + 1, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * Write new scores, segments (with since) and pruned buckets into the
 * statistics rows of writes[] (sorted by customer, the order the tracking
 * triggers lock rows in), without the executor: each row is updated at the
 * version scored; if an order changed it since, its latest version is
 * locked (waiting for the writer) and updated instead, keeping the new
 * statistics.  When the update is not HOT the primary key gets an entry
 * directly (hinted as unchanged, so that btree removes the old versions'
 * entries bottom-up); if someone added other indexes, every index gets its
 * entry through the executor's code instead.
 */
static void
RfmWriteScores(Relation rel, Snapshot snap, RfmLiveCust *custs, RfmWrite *writes, int nwrites,
			   RfmScore *scores, Datum *segnames, TimestampTz as_of, DateADT prune_before,
			   const RfmFoldAtts *at)
{
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexes = RelationGetIndexList(rel);
	Relation	idx = NULL;
	IndexInfo  *info = NULL;
	EState	   *estate = NULL;
	ResultRelInfo *rri = NULL;
	TupleTableSlot *oldslot = table_slot_create(rel, NULL);
	TupleTableSlot *newslot = MakeSingleTupleTableSlot(desc, &TTSOpsVirtual);
	CommandId	cid = GetCurrentCommandId(true);
	MemoryContext rowcxt = AllocSetContextCreate(CurrentMemoryContext, "loyalty refresh write",
												 ALLOCSET_DEFAULT_SIZES);
	int			a_id = RfmAttno(desc, "customer_id");
	int			a_days = RfmAttno(desc, "days");
	int			a_score = RfmAttno(desc, "score");
	int			a_segment = RfmAttno(desc, "segment");
	int			a_since = RfmAttno(desc, "since");
	int			i;

	if (list_length(indexes) == 1)
	{
		idx = index_open(linitial_oid(indexes), RowExclusiveLock);
		info = BuildIndexInfo(idx);
	}
	else
	{
		estate = CreateExecutorState();
		rri = makeNode(ResultRelInfo);
		InitResultRelInfo(rri, rel, 0, NULL, 0);
		ExecOpenIndices(rri, false);
	}
	list_free(indexes);
	for (i = 0; i < nwrites; i++)
	{
		RfmLiveCust *c = &custs[writes[i].pos];
		ItemPointerData tid = c->tid;
		TM_FailureData tmfd;
		TM_Result	res;
		LockTupleMode lockmode;
		LoyaltyUpdateIndexes update_indexes;
		bool		seg_changed = (c->old_seg != c->new_seg);
		bool		relocked = false;
		MemoryContext old;

		if (c->flags & RFM_CUST_NEW)
			continue;			/* inserted by RfmInsertNew */
		old = MemoryContextSwitchTo(rowcxt);
		if (!table_tuple_fetch_row_version(rel, &tid, snap, oldslot))
			elog(ERROR, "could not fetch a scored customer statistics row");
		for (;;)
		{
			int			k;

			slot_getallattrs(oldslot);
			ExecClearTuple(newslot);
			for (k = 0; k < desc->natts; k++)
			{
				newslot->tts_values[k] = oldslot->tts_values[k];
				newslot->tts_isnull[k] = oldslot->tts_isnull[k];
			}
			/* the pending additions, onto the version at hand */
			if (writes[i].fold != NULL)
				RfmFoldMerge(newslot->tts_values, newslot->tts_isnull, at, writes[i].fold);
			newslot->tts_values[a_score] = Int16GetDatum(scores[writes[i].pos]);
			newslot->tts_isnull[a_score] = false;
			newslot->tts_values[a_segment] = segnames[c->new_seg];
			newslot->tts_isnull[a_segment] = false;
			if (seg_changed || oldslot->tts_isnull[a_since])
			{
				newslot->tts_values[a_since] = TimestampTzGetDatum(as_of);
				newslot->tts_isnull[a_since] = false;
			}
			if ((c->flags & RFM_CUST_PRUNE) && !newslot->tts_isnull[a_days])
			{
				RfmDays    *pruned = RfmDaysPrune(DatumGetRfmDays(newslot->tts_values[a_days]),
												  prune_before);

				newslot->tts_isnull[a_days] = (pruned == NULL);
				newslot->tts_values[a_days] = PointerGetDatum(pruned);
			}
			ExecStoreVirtualTuple(newslot);
			res = table_tuple_update(rel, &tid, newslot, cid, snap, InvalidSnapshot, true,
									 &tmfd, &lockmode, &update_indexes);
			if (res != TM_Updated || relocked)
				break;

			/* an order changed the row since the scan: take its latest version */
			res = table_tuple_lock(rel, &tid, snap, oldslot, cid, LockTupleNoKeyExclusive,
								   LockWaitBlock, TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
			if (res != TM_Ok)
				break;
			tid = oldslot->tts_tid;
			relocked = true;
		}
		if (res == TM_Ok)
		{
			if (idx != NULL && LoyaltyUpdateNeedsIndexInserts(update_indexes))
			{
				bool		isnull = false;
				Datum		key = newslot->tts_values[a_id];

				index_insert_unchanged_compat(idx, &key, &isnull, &newslot->tts_tid, rel,
											  UNIQUE_CHECK_NO, info);
			}
			else if (idx == NULL && LoyaltyUpdateNeedsAnyIndexInserts(update_indexes))
			{
				(void) LoyaltyExecInsertIndexTuples(rri, newslot, estate, update_indexes);
				ResetPerTupleExprContext(estate);
			}
		}
		else if (res != TM_Deleted)
			elog(ERROR, "unexpected result %d updating customer statistics", (int) res);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	if (idx != NULL)
		index_close(idx, NoLock);
	else
	{
		ExecCloseIndices(rri);
		FreeExecutorState(estate);
	}
	ExecDropSingleTupleTableSlot(oldslot);
	ExecDropSingleTupleTableSlot(newslot);
	MemoryContextDelete(rowcxt);
}

/*
 * Insert the customers whose first orders this refresh folded (no
 * statistics row when it scanned), with their scores: their statistics
 * are the pending additions alone (buckets pruned to the retention).  A
 * row that appeared meanwhile (a back-fill of another table) gets the
 * additions added instead, as the fold's upsert does.  Inside SPI.
 */
static void
RfmInsertNew(RfmLiveCust *custs, RfmWrite *writes, int nwrites, RfmScore *scores,
			 Datum *segnames, TimestampTz as_of, DateADT prune_before, Oid scoretype)
{
	Oid			elemtypes[10] = {TEXTOID, INT8OID, INT8OID, NUMERICOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, RfmDaysTypeOid(), scoretype, TEXTOID, TIMESTAMPTZOID};
	Datum	   *v[10];
	bool	   *nl[10];
	Oid			argtypes[10];
	Datum		args[10];
	int			i,
				k,
				m = 0;

	for (k = 0; k < 10; k++)
	{
		v[k] = palloc_extended(sizeof(Datum) * Max(nwrites, 1), MCXT_ALLOC_HUGE);
		nl[k] = palloc_extended(sizeof(bool) * Max(nwrites, 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	}
	for (i = 0; i < nwrites; i++)
	{
		RfmLiveCust *c = &custs[writes[i].pos];
		RfmFoldAdd *a = writes[i].fold;
		RfmDays    *days;

		if (!(c->flags & RFM_CUST_NEW))
			continue;
		v[0][m] = CStringGetTextDatum(a->key);
		v[1][m] = Int64GetDatum(a->rows);
		v[2][m] = Int64GetDatum(a->orders);
		v[3][m] = NumericGetDatum(a->spend);
		v[4][m] = TimestampTzGetDatum(a->first_added);
		v[5][m] = TimestampTzGetDatum(a->last_added);
		nl[4][m] = nl[5][m] = !a->has_added;
		days = (a->days == NULL || RfmDaysCount(a->days) == 0) ? NULL : a->days;
		if (days != NULL && (c->flags & RFM_CUST_PRUNE))
			days = RfmDaysPrune(days, prune_before);
		v[6][m] = PointerGetDatum(days);
		nl[6][m] = (days == NULL);
		v[7][m] = Int16GetDatum(scores[writes[i].pos]);
		v[8][m] = segnames[c->new_seg];
		v[9][m] = TimestampTzGetDatum(as_of);
		m++;
	}
	if (m == 0)
		return;
	for (k = 0; k < 10; k++)
	{
		argtypes[k] = get_array_type(elemtypes[k]);
		args[k] = PointerGetDatum(RfmMakeArray(v[k], nl[k], m, elemtypes[k]));
	}
	if (SPI_execute_with_args("INSERT INTO loyalty.customer_stats AS s"
							  " (customer_id, row_count, order_count, spend_total, first_order,"
							  " last_order, days, score, segment, since)"
							  " SELECT * FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							  " pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							  " pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							  " pg_catalog.unnest($9), pg_catalog.unnest($10))"
							  " ON CONFLICT (customer_id) DO UPDATE SET"
							  " row_count = s.row_count OPERATOR(pg_catalog.+) excluded.row_count,"
							  " order_count = s.order_count OPERATOR(pg_catalog.+) excluded.order_count,"
							  " spend_total = s.spend_total OPERATOR(pg_catalog.+) excluded.spend_total,"
							  " first_order = LEAST(s.first_order, excluded.first_order),"
							  " last_order = GREATEST(s.last_order, excluded.last_order),"
							  " days = loyalty._rfm_days_merge(s.days, excluded.days),"
							  " score = excluded.score, segment = excluded.segment,"
							  " since = CASE WHEN s.since IS NOT NULL"
							  " AND s.segment OPERATOR(pg_catalog.=) excluded.segment"
							  " THEN s.since ELSE excluded.since END",
							  10, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert new customers into loyalty.customer_stats");
}

/* ---------------------------------------------------------------------
 * refresh_segments
 * ---------------------------------------------------------------------
 */

/*
 * loyalty.refresh_segments(as_of DEFAULT now()): rescore every tracked
 * customer from the statistics and record a snapshot.  Returns the
 * snapshot id, as_of, customers scored, segment changes, score changes,
 * customers who left, and the time taken in milliseconds.
 */
Datum
rfm_refresh_segments(PG_FUNCTION_ARGS)
{
	TimestampTz as_of;
	TimestampTz t0 = GetCurrentTimestamp();
	RfmLiveConfig cfg;
	TimestampTz start;
	DateADT		start_day,
				end_day,
				retained_from,
				new_retained;
	TimestampTz b3,
				b6,
				binactive;
	MemoryContext work,
				rowcxt,
				old;
	Oid			stats_relid;
	Relation	rel;
	TableScanDesc scan;
	TupleTableSlot *slot;
	Snapshot	snap;
	TupleDesc	desc;
	int			a_id,
				a_rows,
				a_first,
				a_last,
				a_days,
				a_score,
				a_segment;
	RfmLiveCust *custs;
	RfmKeys    *keys;
	void	   *custs_base = NULL;
	void	   *keys_base = NULL;
	RfmScore   *scores;
	int			n = 0,
				cap = 1024;
	char	  **tombs;
	int			ntombs = 0,
				captombs = 64;
	RfmSegNames names;
	char	   *arena = NULL;
	Size		arena_left = 0;
	int16		segof[1000];
	RfmSegSummary *summary;
	RfmWrite   *writes;
	RfmMoney   *overflow = NULL;
	int			noverflow = 0,
				capoverflow = 0;
	int			nwrites = 0,
				capwrites;
	bool		first;
	int64		seg_changes = 0,
				score_changes = 0,
				left = 0;
	int64		snapshot_id;
	Oid			scoretype = RfmLoyaltyType("rfm_score");
	int			i;
	TupleDesc	rdesc;
	Datum		values[7];
	bool		nulls[7] = {false, false, false, false, false, false, false};
	Oid			argtypes[10];
	Datum		args[10];
	bool		isnull;
	RfmFoldAdd *adds = NULL;
	int			nadds = 0,
				nextadd = 0;
	RfmFoldIndex foldix = {0, NULL, NULL};
	RfmFoldAtts at;
	RfmFoldAdd **foldbypos = NULL;
	int			nfolded = 0,
				nextfold = 0;
	Datum	   *mv = NULL;
	bool	   *mnl = NULL;
	bool		scanning = true;

	LoyaltyArgNotNull(fcinfo, 0, "as_of");
	as_of = PG_GETARG_TIMESTAMPTZ(0);
	RfmCheckAsOf(as_of);
	RfmLiveRequireReadCommitted("loyalty.refresh_segments()");

	SPI_connect();
	if (SPI_execute("LOCK TABLE loyalty.segment_snapshot IN EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock loyalty.segment_snapshot");
	RfmReadConfig(&cfg);
	elog(DEBUG1, "refresh_segments: read the configuration at %.1f ms", RfmMsSince(t0));

	start = RfmMinus(as_of, &cfg.window);
	if (!(start < as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scoring_window must be positive")));
	start_day = RfmUtcDay(start);
	end_day = RfmUtcDay(as_of);
	retained_from = RfmRetainedFrom();
	RfmCheckRetained(start_day, retained_from, &cfg);
	first = (retained_from == DATEVAL_NOBEGIN);
	if (first &&
		SPI_execute("LOCK TABLE loyalty.customer_stats IN ACCESS EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock loyalty.customer_stats");
	elog(DEBUG1, "refresh_segments: locked at %.1f ms", RfmMsSince(t0));

	/*
	 * Take the changes tracked statements appended since the last refresh
	 * (those committed by now; later ones wait for the next fold).  Those
	 * that removed orders are folded now (their first / last order times
	 * may need reading again); the others, a night's new orders, are
	 * folded in the scan below and written with the new scores, so that
	 * each changed row is looked up by no index and written once.
	 */
	(void) RfmFoldDeltasSplit(NULL, &adds, &nadds);
	elog(DEBUG1, "refresh_segments: folded pending changes at %.1f ms", RfmMsSince(t0));
	new_retained = RfmUtcDay(RfmMinus(Min(as_of, GetCurrentTransactionStartTimestamp()),
									  &cfg.retention));
	new_retained = Min(new_retained, start_day);
	if (retained_from != DATEVAL_NOBEGIN && retained_from > new_retained)
		new_retained = retained_from;
	b3 = RfmMinus(as_of, RfmMonths(3));
	b6 = RfmMinus(as_of, RfmMonths(6));
	binactive = RfmMinus(as_of, &cfg.inactive_after);

	work = AllocSetContextCreate(CurrentMemoryContext, "loyalty refresh", ALLOCSET_DEFAULT_SIZES);
	rowcxt = AllocSetContextCreate(work, "loyalty refresh row", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(work);
	custs = RfmBigArray(&custs_base, NULL, 0, sizeof(RfmLiveCust) * cap);
	keys = RfmBigArray(&keys_base, NULL, 0, sizeof(RfmKeys) * cap);
	tombs = palloc(sizeof(char *) * captombs);
	memset(&names, 0, sizeof(names));

	/* one pass over the statistics, in a snapshot taken after the lock */
	stats_relid = get_relname_relid("customer_stats", get_namespace_oid("loyalty", false));
	rel = table_open(stats_relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	if (rel->rd_rel->reltuples > cap)
	{
		/* size the arrays once from the planner's estimate (plus growth) */
		cap = (int) Min(rel->rd_rel->reltuples * 1.1 + 1024, (double) (MaxAllocHugeSize / sizeof(RfmLiveCust)));
		custs = RfmBigArray(&custs_base, custs, 0, sizeof(RfmLiveCust) * cap);
		keys = RfmBigArray(&keys_base, keys, 0, sizeof(RfmKeys) * cap);
	}
	a_id = RfmAttno(desc, "customer_id");
	a_rows = RfmAttno(desc, "row_count");
	a_first = RfmAttno(desc, "first_order");
	a_last = RfmAttno(desc, "last_order");
	a_days = RfmAttno(desc, "days");
	a_score = RfmAttno(desc, "score");
	a_segment = RfmAttno(desc, "segment");
	at.rows = a_rows;
	at.orders = RfmAttno(desc, "order_count");
	at.spend = RfmAttno(desc, "spend_total");
	at.first = a_first;
	at.last = a_last;
	at.days = a_days;
	if (nadds > 0)
	{
		RfmFoldIndexBuild(&foldix, adds, nadds);
		foldbypos = palloc_extended(sizeof(RfmFoldAdd *) * nadds, MCXT_ALLOC_HUGE);
		mv = palloc(sizeof(Datum) * desc->natts);
		mnl = palloc(sizeof(bool) * desc->natts);
	}
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	slot = table_slot_create(rel, NULL);

	/*
	 * Every statistics row, with the pending additions of its customer
	 * folded in; then the customers who have pending additions but no row
	 * yet (new customers), from those additions alone.
	 */
	for (;;)
	{
		Datum	   *v;
		bool	   *nl;
		int64		rows;
		RfmDaysSum	sum;
		RfmLiveCust *c;
		RfmDays    *days;
		RfmMoney	spend;
		bool		has_order;
		TimestampTz last = 0;
		RfmFoldAdd *fa = NULL;

		if (scanning && table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			slot_getallattrs(slot);
			v = slot->tts_values;
			nl = slot->tts_isnull;
			if (nadds > 0)
			{
				text	   *t;

				MemoryContextSwitchTo(rowcxt);
				t = DatumGetTextPP(v[a_id]);
				fa = RfmFoldFind(&foldix, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				if (fa != NULL)
				{
					memcpy(mv, v, sizeof(Datum) * desc->natts);
					memcpy(mnl, nl, sizeof(bool) * desc->natts);
					RfmFoldMerge(mv, mnl, &at, fa);
					v = mv;
					nl = mnl;
				}
				MemoryContextSwitchTo(work);
			}
		}
		else
		{
			int			k;

			scanning = false;
			while (nextadd < nadds && adds[nextadd].pos >= 0)
				nextadd++;
			if (nextadd >= nadds)
				break;
			/* a new customer: its additions onto empty statistics */
			fa = &adds[nextadd++];
			MemoryContextSwitchTo(rowcxt);
			for (k = 0; k < desc->natts; k++)
			{
				mv[k] = (Datum) 0;
				mnl[k] = true;
			}
			mv[a_id] = CStringGetTextDatum(fa->key);
			mv[a_rows] = Int64GetDatum(0);
			mv[at.orders] = Int64GetDatum(0);
			mv[at.spend] = NumericGetDatum(LoyaltyNumericZero());
			mnl[a_id] = mnl[a_rows] = mnl[at.orders] = mnl[at.spend] = false;
			RfmFoldMerge(mv, mnl, &at, fa);
			MemoryContextSwitchTo(work);
			v = mv;
			nl = mnl;
		}
		rows = DatumGetInt64(v[a_rows]);
		if (rows <= 0)
		{
			if (rows < 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_CORRUPTED),
						 errmsg("live statistics of customer \"%s\" are out of sync with the tracked tables",
								TextDatumGetCString(v[a_id])),
						 errhint("Run loyalty.rebuild_tracking().")));
			if (ntombs == captombs)
			{
				captombs *= 2;
				tombs = repalloc_huge(tombs, sizeof(char *) * captombs);
			}
			tombs[ntombs++] = RfmArenaText(&arena, &arena_left, v[a_id]);
			/* (never one with additions: they hold rows) */
			continue;
		}
		if (n == cap)
		{
			cap *= 2;
			custs = RfmBigArray(&custs_base, custs, sizeof(RfmLiveCust) * n,
								sizeof(RfmLiveCust) * cap);
			keys = RfmBigArray(&keys_base, keys, sizeof(RfmKeys) * n, sizeof(RfmKeys) * cap);
		}
		c = &custs[n];

		/* buckets may need a detoasted copy: that goes to the row context */
		MemoryContextSwitchTo(rowcxt);
		days = nl[a_days] ? NULL : DatumGetRfmDays(v[a_days]);
		RfmDaysWindow(days, start_day, end_day, &sum, false, work);
		RfmCustomerInputs(&sum, nl[a_first], DatumGetTimestampTz(v[a_first]),
						  nl[a_last], DatumGetTimestampTz(v[a_last]), as_of,
						  new_retained, &has_order, &last);
		spend = sum.money;
		keys[n].key[RFM_RECENCY] = RfmRecencyKey(RfmRecencyDaysOf(has_order, as_of, last));
		keys[n].key[RFM_FREQUENCY] = (double) sum.orders;
		if (!cfg.average)
			keys[n].key[RFM_MONETARY] = RfmMoneyKey(&spend);
		else
			keys[n].key[RFM_MONETARY] =
				RfmMonetaryKey(RfmMonetary(&cfg, RfmMoneyToNumeric(&spend), sum.orders));
		c->flags = 0;
		if (RfmDaysCount(days) > 0 && RfmDaysFirstDay(days) < new_retained)
			c->flags |= RFM_CUST_PRUNE;
		if (!has_order)
			c->flags |= RFM_CUST_NO_ORDER | RFM_CUST_INACTIVE;
		else
		{
			c->flags |= last > b3 ? RFM_CUST_RECENT : last > b6 ? RFM_CUST_MID : RFM_CUST_OLD;
			if (last <= binactive)
				c->flags |= RFM_CUST_INACTIVE;
		}
		MemoryContextSwitchTo(work);
		MemoryContextReset(rowcxt);
		if (spend.kind == RFM_MONEY_INT && spend.scale <= PG_INT8_MAX &&
			spend.v.i <= PG_INT64_MAX && spend.v.i >= PG_INT64_MIN)
		{
			c->spend = (int64) spend.v.i;
			c->spend_scale = (int8) spend.scale;
		}
		else
		{
			if (noverflow == capoverflow)
			{
				capoverflow = capoverflow ? capoverflow * 2 : 64;
				overflow = overflow ? repalloc(overflow, sizeof(RfmMoney) * capoverflow)
					: palloc(sizeof(RfmMoney) * capoverflow);
			}
			overflow[noverflow] = spend;
			c->spend = noverflow++;
			c->spend_scale = -1;
		}
		if (fa == NULL)
			c->tid = slot->tts_tid;
		else
		{
			c->flags |= RFM_CUST_FOLD;
			if (scanning)
				c->tid = slot->tts_tid;
			else
			{
				c->flags |= RFM_CUST_NEW;
				ItemPointerSetInvalid(&c->tid);
			}
			fa->pos = n;
			foldbypos[nfolded++] = fa;
		}
		c->old_score = nl[a_score] ? -1 : DatumGetInt16(v[a_score]);
		c->old_seg = nl[a_segment] ? -1 : RfmSegIndexText(&names, v[a_segment]);
		n++;
		if ((n & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);

	elog(DEBUG1, "refresh_segments: read %d customers in %.1f ms", n, RfmMsSince(t0));

	/* score, name, compare */
	scores = palloc_extended(sizeof(RfmScore) * Max(n, 1), MCXT_ALLOC_HUGE);
	RfmScoreAll(&cfg.scoring, keys, n, scores);
	for (i = 0; i < 1000; i++)
		segof[i] = -1;
	capwrites = 1024;
	writes = palloc(sizeof(RfmWrite) * capwrites);
	summary = palloc0(sizeof(RfmSegSummary) * RFM_MAX_SEGMENTS);
	for (i = 0; i < n; i++)
	{
		RfmLiveCust *c = &custs[i];
		RfmScore	s = scores[i];
		int			seg = segof[s];
		RfmSegSummary *sm;
		bool		seg_changed,
					score_changed;

		if (seg < 0)
		{
			const char *name = RfmSegmentOf(s, cfg.scoring.bins);

			if (name == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("score %d%d%d has no segment in the segment map",
								RfmScoreRecency(s), RfmScoreFrequency(s), RfmScoreMonetary(s))));
			seg = segof[s] = RfmSegIndex(&names, name);
		}
		seg_changed = (c->old_seg != seg);
		score_changed = (c->old_score != s);
		if (seg_changed)
			seg_changes++;
		if (score_changed)
			score_changes++;
		if (seg_changed || score_changed || (c->flags & (RFM_CUST_PRUNE | RFM_CUST_FOLD)))
		{
			if (nwrites == capwrites)
			{
				capwrites *= 2;
				writes = repalloc_huge(writes, sizeof(RfmWrite) * capwrites);
			}
			writes[nwrites].pos = i;
			writes[nwrites].id = NULL;
			writes[nwrites].fold = NULL;
			if (c->flags & RFM_CUST_FOLD)
			{
				/* foldbypos is in position order, as i is */
				while (foldbypos[nextfold]->pos < i)
					nextfold++;
				writes[nwrites].fold = foldbypos[nextfold];
			}
			nwrites++;
		}
		c->new_seg = seg;

		sm = &summary[seg];
		sm->customers++;
		if (c->spend_scale >= 0)
		{
			RfmMoney	m;

			memset(&m, 0, sizeof(m));
			m.kind = RFM_MONEY_INT;
			m.v.i = c->spend;
			m.scale = c->spend_scale;
			RfmMoneyAddMoney(&sm->revenue, &m, work);
		}
		else
			RfmMoneyAddMoney(&sm->revenue, &overflow[c->spend], work);
		sm->recent += (c->flags & RFM_CUST_RECENT) != 0;
		sm->mid += (c->flags & RFM_CUST_MID) != 0;
		sm->old += (c->flags & RFM_CUST_OLD) != 0;
		sm->no_order += (c->flags & RFM_CUST_NO_ORDER) != 0;
		sm->inactive += (c->flags & RFM_CUST_INACTIVE) != 0;
	}

	elog(DEBUG1, "refresh_segments: scored, %d rows to write, at %.1f ms", nwrites, RfmMsSince(t0));

	/* the snapshot header first: the change log refers to it */
	argtypes[0] = TIMESTAMPTZOID;
	argtypes[1] = INT4OID;
	argtypes[2] = INTERVALOID;
	argtypes[3] = TEXTOID;
	argtypes[4] = TEXTOID;
	argtypes[5] = DATEOID;
	args[0] = TimestampTzGetDatum(as_of);
	args[1] = Int32GetDatum(cfg.scoring.bins);
	args[2] = IntervalPGetDatum(&cfg.window);
	args[3] = CStringGetTextDatum(cfg.average ? "average" : "total");
	args[4] = CStringGetTextDatum(cfg.scoring.use_thresholds ? "thresholds" : "quantile");
	args[5] = DateADTGetDatum(new_retained);
	if (SPI_execute_with_args("INSERT INTO loyalty.segment_snapshot"
							  " (as_of, bins, scoring_window, monetary, method, retained_from)"
							  " VALUES ($1, $2, $3, $4, $5, $6) RETURNING snapshot_id",
							  6, argtypes, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into loyalty.segment_snapshot");
	snapshot_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	if (nwrites > 0)
	{
		Datum	   *ids = palloc_extended(sizeof(Datum) * nwrites, MCXT_ALLOC_HUGE);
		Datum	   *sc = palloc_extended(sizeof(Datum) * nwrites, MCXT_ALLOC_HUGE);
		Datum	   *sg = palloc_extended(sizeof(Datum) * nwrites, MCXT_ALLOC_HUGE);
		Datum	   *segnames = palloc(sizeof(Datum) * Max(names.n, 1));
		int			nchg = 0;

		for (i = 0; i < names.n; i++)
			segnames[i] = CStringGetTextDatum(names.name[i]);
		RfmFetchIds(rel, snap, custs, writes, nwrites, a_id);
		qsort(writes, nwrites, sizeof(RfmWrite), RfmWriteIdCmp);
		RfmWriteScores(rel, snap, custs, writes, nwrites, scores, segnames, as_of, new_retained, &at);
		RfmInsertNew(custs, writes, nwrites, scores, segnames, as_of, new_retained, scoretype);
		for (i = 0; i < nwrites; i++)
		{
			RfmLiveCust *c = &custs[writes[i].pos];

			ids[i] = CStringGetTextDatum(writes[i].id);
			sc[i] = Int16GetDatum(scores[writes[i].pos]);
			sg[i] = segnames[c->new_seg];
		}
		elog(DEBUG1, "refresh_segments: wrote scores at %.1f ms", RfmMsSince(t0));

		/* change log: customers whose segment changed */
		for (i = 0; i < nwrites; i++)
		{
			RfmLiveCust *c = &custs[writes[i].pos];

			if (c->old_seg != c->new_seg)
			{
				ids[nchg] = ids[i];
				sc[nchg] = sc[i];
				sg[nchg] = sg[i];
				nchg++;
			}
		}
		if (nchg > 0)
		{
			argtypes[0] = INT8OID;
			argtypes[1] = TEXTARRAYOID;
			argtypes[2] = TEXTARRAYOID;
			argtypes[3] = get_array_type(scoretype);
			args[0] = Int64GetDatum(snapshot_id);
			args[1] = PointerGetDatum(RfmMakeArray(ids, NULL, nchg, TEXTOID));
			args[2] = PointerGetDatum(RfmMakeArray(sg, NULL, nchg, TEXTOID));
			args[3] = PointerGetDatum(RfmMakeArray(sc, NULL, nchg, scoretype));
			if (SPI_execute_with_args("INSERT INTO loyalty.segment_change"
									  " (snapshot_id, customer_id, segment, score)"
									  " SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2),"
									  " pg_catalog.unnest($3), pg_catalog.unnest($4)) AS u",
									  4, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not insert into loyalty.segment_change");
		}
	}

	UnregisterSnapshot(snap);
	table_close(rel, NoLock);

	/*
	 * Customers without rows left: delete them (a concurrent order may have
	 * brought one back; it then stays, unscored until the next refresh) and
	 * log that they left their segment.
	 */
	if (ntombs > 0)
	{
		Datum	   *ids = palloc_extended(sizeof(Datum) * ntombs, MCXT_ALLOC_HUGE);
		int			nestlevel;
		int			ret;

		qsort(tombs, ntombs, sizeof(char *), RfmStrCmp);
		for (i = 0; i < ntombs; i++)
			ids[i] = CStringGetTextDatum(tombs[i]);
		nestlevel = RfmKeyOrderPlans();
		argtypes[0] = TEXTARRAYOID;
		argtypes[1] = INT8OID;
		args[0] = PointerGetDatum(RfmMakeArray(ids, NULL, ntombs, TEXTOID));
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

		/*
		 * Those brought back by an order committed meanwhile were absent
		 * from this snapshot too: they leave their segment now and enter a
		 * new one at the next refresh (a new statement sees them).
		 */
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
		left += SPI_processed;
		AtEOXact_GUC(true, nestlevel);
	}

	elog(DEBUG1, "refresh_segments: change log and leavers at %.1f ms", RfmMsSince(t0));

	/*
	 * The first refresh rewrote (nearly) every statistics row, doubling the
	 * table: rewrite it compactly before anyone else sees it (it holds the
	 * table's ACCESS EXCLUSIVE lock since it started, so that no order waits
	 * on a row it wrote while holding a lock this needs).  Later refreshes
	 * write a few percent of the rows, whose space VACUUM gives back.
	 */
	if (first && nwrites > n / 2 && !RfmStatsInUse(stats_relid))
	{
		RfmStatsRewrite(stats_relid);
		elog(DEBUG1, "refresh_segments: rewrote the statistics at %.1f ms", RfmMsSince(t0));
	}

	/* per-segment summary for the BI views */
	for (i = 0; i < names.n; i++)
	{
		RfmSegSummary *sm = &summary[i];

		if (sm->customers == 0)
			continue;
		argtypes[0] = INT8OID;
		argtypes[1] = TEXTOID;
		argtypes[2] = INT8OID;
		argtypes[3] = NUMERICOID;
		argtypes[4] = INT8OID;
		argtypes[5] = INT8OID;
		argtypes[6] = INT8OID;
		argtypes[7] = INT8OID;
		argtypes[8] = INT8OID;
		args[0] = Int64GetDatum(snapshot_id);
		args[1] = CStringGetTextDatum(names.name[i]);
		args[2] = Int64GetDatum(sm->customers);
		args[3] = NumericGetDatum(RfmMoneyToNumeric(&sm->revenue));
		args[4] = Int64GetDatum(sm->recent);
		args[5] = Int64GetDatum(sm->mid);
		args[6] = Int64GetDatum(sm->old);
		args[7] = Int64GetDatum(sm->no_order);
		args[8] = Int64GetDatum(sm->inactive);
		if (SPI_execute_with_args("INSERT INTO loyalty.segment_summary (snapshot_id, segment,"
								  " customers, revenue, recency_under_3_months, recency_3_to_6_months,"
								  " recency_over_6_months, no_order, inactive)"
								  " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
								  9, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into loyalty.segment_summary");
	}

	values[0] = Int64GetDatum(snapshot_id);
	values[1] = TimestampTzGetDatum(as_of);
	values[2] = Int64GetDatum(n);
	values[3] = Int64GetDatum(seg_changes);
	values[4] = Int64GetDatum(score_changes);
	values[5] = Int64GetDatum(left);
	values[6] = Float8GetDatum(RfmMsSince(t0));
	argtypes[0] = INT8OID;
	argtypes[1] = INT8OID;
	argtypes[2] = INT8OID;
	argtypes[3] = INT8OID;
	argtypes[4] = INT8OID;
	argtypes[5] = FLOAT8OID;
	args[0] = values[0];
	args[1] = values[2];
	args[2] = values[3];
	args[3] = values[4];
	args[4] = values[5];
	args[5] = values[6];
	if (SPI_execute_with_args("UPDATE loyalty.segment_snapshot SET customers = $2,"
							  " segment_changes = $3, score_changes = $4, left_customers = $5,"
							  " took_ms = $6 WHERE snapshot_id OPERATOR(pg_catalog.=) $1",
							  6, argtypes, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update loyalty.segment_snapshot");

	MemoryContextSwitchTo(old);
	MemoryContextDelete(work);
	SPI_finish();
	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, nulls)));
}

/* ---------------------------------------------------------------------
 * customer_rfm
 * ---------------------------------------------------------------------
 */

/* One customer's statistics with the pending deltas added (RfmLiveRead). */
typedef struct RfmLiveStats
{
	int64		rows;
	int64		orders;
	Numeric		spend;
	bool		first_null;
	TimestampTz first;
	bool		last_null;
	TimestampTz last;
	RfmDays    *days;			/* NULL: no bucket */
	Datum		scored[4];		/* score, segment, since, scored_as_of */
	bool		scored_null[4];
} RfmLiveStats;

/*
 * A customer's live statistics as this snapshot sees them: the folded row
 * of customer_stats plus the deltas tracked statements appended since
 * (summed in SQL, added in C), without writing anything, so a reader under
 * any isolation level sees exactly the orders its snapshot sees.  When a
 * pending delta removed an order that may have been the first or last
 * one, those times are read again from the tracked tables in the same
 * snapshot.  Returns false for a customer without tracked rows.  Inside
 * SPI; values are allocated in the current context.
 */
static bool
RfmLiveRead(text *cust, RfmLiveStats *live)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1] = {PointerGetDatum(cust)};
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	bool		has_stats;
	int			i;
	RfmDays    *ddays = NULL;
	bool		fr_null,
				lr_null;
	TimestampTz fr = 0,
				lr = 0;

	memset(live, 0, sizeof(RfmLiveStats));
	live->spend = LoyaltyNumericZero();
	live->first_null = live->last_null = true;
	for (i = 0; i < 4; i++)
		live->scored_null[i] = true;
	if (SPI_execute_with_args("SELECT s.row_count, s.order_count, s.spend_total, s.first_order,"
							  " s.last_order, s.days, s.score, s.segment, s.since,"
							  " (SELECT p.as_of FROM loyalty.segment_snapshot p"
							  "  ORDER BY p.snapshot_id DESC LIMIT 1)"
							  " FROM loyalty.customer_stats s"
							  " WHERE s.customer_id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.customer_stats");
	has_stats = SPI_processed > 0;
	if (has_stats)
	{
		row = SPI_copytuple(SPI_tuptable->vals[0]);
		desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		live->rows = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
		live->orders = DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		live->spend = DatumGetNumeric(SPI_getbinval(row, desc, 3, &isnull));
		live->first = DatumGetTimestampTz(SPI_getbinval(row, desc, 4, &live->first_null));
		live->last = DatumGetTimestampTz(SPI_getbinval(row, desc, 5, &live->last_null));
		{
			Datum		d = SPI_getbinval(row, desc, 6, &isnull);

			live->days = isnull ? NULL : DatumGetRfmDays(d);
		}
		for (i = 0; i < 4; i++)
			live->scored[i] = SPI_getbinval(row, desc, 7 + i, &live->scored_null[i]);
	}

	if (!RfmDeltasTracked())
		return live->rows > 0;	/* 0.2.0 schema, not updated yet */
	if (SPI_execute_with_args("SELECT pg_catalog.count(*), pg_catalog.sum(d.row_count)::pg_catalog.int8,"
							  " pg_catalog.sum(d.order_count)::pg_catalog.int8, pg_catalog.sum(d.spend_total),"
							  " pg_catalog.min(d.first_added), pg_catalog.max(d.last_added),"
							  " pg_catalog.min(d.first_removed), pg_catalog.max(d.last_removed),"
							  " loyalty._rfm_days_minus(loyalty._rfm_days_fold(d.days),"
							  " loyalty._rfm_days_fold(d.days_removed))"
							  " FROM loyalty.customer_stats_delta d"
							  " WHERE d.customer_id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.customer_stats_delta");
	row = SPI_copytuple(SPI_tuptable->vals[0]);
	desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
	if (DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull)) > 0)
	{
		bool		fa_null,
					la_null;
		TimestampTz fa = DatumGetTimestampTz(SPI_getbinval(row, desc, 5, &fa_null));
		TimestampTz la = DatumGetTimestampTz(SPI_getbinval(row, desc, 6, &la_null));
		Datum		d;

		live->rows += DatumGetInt64(SPI_getbinval(row, desc, 2, &isnull));
		live->orders += DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
		live->spend = LoyaltyNumericAdd(live->spend,
									DatumGetNumeric(SPI_getbinval(row, desc, 4, &isnull)));
		if (!fa_null && (live->first_null || fa < live->first))
		{
			live->first = fa;
			live->first_null = false;
		}
		if (!la_null && (live->last_null || la > live->last))
		{
			live->last = la;
			live->last_null = false;
		}
		fr = DatumGetTimestampTz(SPI_getbinval(row, desc, 7, &fr_null));
		lr = DatumGetTimestampTz(SPI_getbinval(row, desc, 8, &lr_null));
		d = SPI_getbinval(row, desc, 9, &isnull);
		ddays = isnull ? NULL : DatumGetRfmDays(d);
		if (RfmDaysCount(live->days) == 0)
			live->days = NULL;
		live->days = RfmDaysMerge(live->days, ddays);
		if (live->days != NULL && RfmDaysCount(live->days) == 0)
			live->days = NULL;

		/* a removed order may have been the first or the last one */
		if (!lr_null &&
			(live->last_null || live->last <= lr || live->first_null || live->first >= fr))
		{
			char	   *key = text_to_cstring(cust);
			Datum		f,
						l;

			RfmReadOrderTimes(&key, 1, &f, &live->first_null, &l, &live->last_null, true);
			live->first = live->first_null ? 0 : DatumGetTimestampTz(f);
			live->last = live->last_null ? 0 : DatumGetTimestampTz(l);
		}
	}
	return live->rows > 0;
}

/*
 * loyalty.customer_rfm(customer_id, as_of DEFAULT now()): one customer's
 * live statistics as of as_of (recency, windowed frequency and monetary
 * computed from the day buckets now), with the score and segment of the
 * last refresh.  No row for a customer without tracked rows; a null
 * (22004), empty or over-long (22023) customer id, or an as_of outside
 * rfm_args.h's range (22023), is an error.
 */
Datum
rfm_customer_rfm(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcxt;
		TupleDesc	rdesc;
		text	   *cust;
		TimestampTz as_of;
		RfmLiveConfig cfg;
		RfmLiveStats live;
		Datum		v[12];
		bool		nl[12];
		int			i;
		RfmDaysSum	sum;
		bool		has_order;
		TimestampTz last = 0;
		DateADT		start_day;
		DateADT		retained_from;
		TimestampTz start;

		cust = RfmArgCustomer(fcinfo, 0, "customer_id");
		LoyaltyArgNotNull(fcinfo, 1, "as_of");
		as_of = PG_GETARG_TIMESTAMPTZ(1);
		RfmCheckAsOf(as_of);
		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(rdesc);

		SPI_connect();
		RfmReadConfig(&cfg);
		start = RfmMinus(as_of, &cfg.window);
		start_day = RfmUtcDay(start);
		retained_from = RfmRetainedFrom();
		RfmCheckRetained(start_day, retained_from, &cfg);
		if (!RfmLiveRead(cust, &live))
		{
			SPI_finish();
			MemoryContextSwitchTo(oldcxt);
			SRF_RETURN_DONE(funcctx);
		}
		RfmDaysWindow(live.days, start_day, RfmUtcDay(as_of), &sum, true,
					  CurrentMemoryContext);
		RfmCustomerInputs(&sum, live.first_null, live.first, live.last_null, live.last,
						  as_of, retained_from, &has_order, &last);

		/* customer_id, orders_total, spend_total, first_order, last_order */
		v[0] = PointerGetDatum(cust);
		nl[0] = false;
		v[1] = Int64GetDatum(live.orders);
		nl[1] = false;
		v[2] = NumericGetDatum(live.spend);
		nl[2] = false;
		v[3] = TimestampTzGetDatum(live.first);
		nl[3] = live.first_null;
		v[4] = TimestampTzGetDatum(live.last);
		nl[4] = live.last_null;
		/* recency_days, frequency, monetary as of as_of */
		v[5] = Int32GetDatum(RfmRecencyDaysOf(has_order, as_of, last));
		nl[5] = false;
		v[6] = Int64GetDatum(sum.orders);
		nl[6] = false;
		v[7] = NumericGetDatum(RfmMonetary(&cfg, sum.spend, sum.orders));
		nl[7] = false;
		/* score, segment, segment_since, scored_as_of */
		for (i = 0; i < 4; i++)
		{
			v[8 + i] = live.scored[i];
			nl[8 + i] = live.scored_null[i];
		}
		if (nl[8])
			nl[11] = true;		/* never scored */

		MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		funcctx->user_fctx = heap_form_tuple(funcctx->tuple_desc, v, nl);
		SPI_finish();
		MemoryContextSwitchTo(oldcxt);
		funcctx->max_calls = 1;
	}
	funcctx = SRF_PERCALL_SETUP();
	if (funcctx->call_cntr < funcctx->max_calls)
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum((HeapTuple) funcctx->user_fctx));
	SRF_RETURN_DONE(funcctx);
}
