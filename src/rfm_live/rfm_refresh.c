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
#include "loyalty_citus.h"
#include "rfm_live.h"
#include "rfm_stats.h"
#include "segment.h"
#include "stats_store.h"

PG_FUNCTION_INFO_V1(rfm_refresh_segments);
PG_FUNCTION_INFO_V1(rfm_default_as_of);
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

/*
 * The pending additions handed over by RfmFoldDeltasSplit, hashed by
 * customer id (open addressing) for the refresh's scan to find.
 */
typedef struct RfmFoldSlot
{
	uint32		hash;			/* hash of the key */
	int32		idx;			/* index into adds, -1: empty */
} RfmFoldSlot;

typedef struct RfmFoldIndex
{
	uint32		mask;
	RfmFoldSlot *slot;
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
		LoyaltyCheckNotNull(isnull[i] && i != CFG_RECENCY_T && i != CFG_FREQUENCY_T && i != CFG_MONETARY_T, "RFM configuration values");
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

/* as_of - interval, with the calendar of the tracking zone (rfm_zone.c). */
static TimestampTz
RfmMinus(TimestampTz t, Interval *iv, struct pg_tz *tz)
{
	return RfmZoneMinus(t, iv, tz);
}

/*
 * The zone the day buckets are in and whether frequency counts days
 * (loyalty.tracked_table; with no tracked table the program zone and
 * rows).  strict (refresh_segments): refuse when the program zone changed
 * since tracking started, since scores would mix two calendars.  In SPI.
 */
static void
RfmTrackingFacts(bool strict, struct pg_tz **tz, bool *days)
{
	char	   *program = RfmProgramZoneName();
	char	   *zone = program;

	*days = false;
	if (!RfmTrackingHasZone())
	{
		/* the 0.2.0 schema, before ALTER EXTENSION UPDATE: UTC buckets */
		*tz = NULL;
		return;
	}
	if (SPI_execute("SELECT DISTINCT timezone, frequency_unit FROM loyalty.tracked_table"
					" ORDER BY 1, 2", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	if (SPI_processed > 0)
	{
		zone = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		*days = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2), "days") == 0;
		if (strict && strcmp(zone, program) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the program time zone changed since tracking started"),
					 errdetail("Tracked orders are counted in days of time zone \"%s\"; loyalty.settings.timezone is \"%s\".",
							   zone, program),
					 errhint("Call loyalty.rebuild_tracking() to count them again in the new zone.")));
	}
	*tz = RfmZoneLookup(zone);
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
 * the latest day with an order up to as_of, taken at 00:00 of the tracking
 * zone, looking no further back than floor_day (the retention horizon:
 * older buckets may be pruned, and the result must not depend on whether
 * they already are); a customer whose first order is up to as_of but who
 * has no such day counts as having ordered on the day before floor_day.
 */
static void
RfmCustomerInputs(RfmDaysSum *sum, bool first_null, TimestampTz first_order,
				  bool last_null, TimestampTz last_order, TimestampTz as_of,
				  DateADT floor_day, struct pg_tz *tz, bool *has_order,
				  TimestampTz *last)
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
		*last = Min(RfmZoneDayStart(sum->last_order_day, tz), as_of);
	}
	else if (!first_null && first_order <= as_of)
	{
		*has_order = true;
		*last = first_order;
		if (floor_day != DATEVAL_NOBEGIN)
			*last = Max(*last, RfmZoneDayStart(floor_day - 1, tz));
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

/*
 * Hash the pending additions by customer id (RfmFoldFind).  Every row of
 * the scan looks itself up here and nearly all miss (a night's orders come
 * from about 1% of the customers): the table is at most a quarter full and
 * keeps each key's hash, so that a miss costs a hash and one or two slot
 * reads, never a key comparison (customer ids often share their length).
 */
static void
RfmFoldIndexBuild(RfmFoldIndex *ix, RfmFoldAdd *adds, int n)
{
	uint32		size = 64;
	int			i;

	while (size < 4 * (uint32) n)
		size *= 2;
	ix->mask = size - 1;
	ix->slot = palloc_extended(sizeof(RfmFoldSlot) * size, MCXT_ALLOC_HUGE);
	memset(ix->slot, -1, sizeof(RfmFoldSlot) * size);
	ix->adds = adds;
	for (i = 0; i < n; i++)
	{
		uint32		h = hash_bytes((const unsigned char *) adds[i].ch.key, adds[i].keylen);
		uint32		p = h;

		while (ix->slot[p & ix->mask].idx >= 0)
			p++;
		ix->slot[p & ix->mask].hash = h;
		ix->slot[p & ix->mask].idx = i;
	}
}

/* The pending additions of a customer id (bytes, not terminated), or NULL. */
static inline RfmFoldAdd *
RfmFoldFind(RfmFoldIndex *ix, const char *key, int len)
{
	uint32		h = hash_bytes((const unsigned char *) key, len);
	uint32		p = h;
	RfmFoldSlot *sl;

	while ((sl = &ix->slot[p & ix->mask])->idx >= 0)
	{
		if (sl->hash == h)
		{
			RfmFoldAdd *a = &ix->adds[sl->idx];

			if (a->keylen == len && memcmp(a->ch.key, key, len) == 0)
				return a;
		}
		p++;
	}
	return NULL;
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
			writes[i].id = writes[i].fold->ch.key;
			continue;
		}
		if (!table_tuple_fetch_row_version(rel, &c->tid, snap, slot))
			elog(ERROR, "could not fetch a scored customer statistics row");
		writes[i].id = RfmArenaText(&arena, &left, slot_getattr(slot, a_id + 1, &isnull));
	}
	ExecDropSingleTupleTableSlot(slot);
}

/* ---------------------------------------------------------------------
 * refresh_segments
 *
 * One state struct (RfmRefresh) goes through the phases in order: lock and
 * read the configuration, take the pending changes, open the statistics,
 * scan them, score, record the snapshot header, write the rows, log the
 * segment changes, remove the leavers, compact (first refresh), summarise
 * per segment, finish the snapshot.
 * ---------------------------------------------------------------------
 */

/* A customer without rows left, found by the scan. */
typedef struct RfmTomb
{
	char	   *id;
	ItemPointerData tid;		/* the version read */
} RfmTomb;

/* Everything one refresh_segments call works on. */
typedef struct RfmRefresh
{
	/* argument, configuration and the dates derived from them */
	TimestampTz as_of;
	TimestampTz t0;				/* start, for DEBUG1 timings and took_ms */
	struct pg_tz *tz;			/* the tracking zone (NULL: UTC) */
	bool		count_days;		/* frequency counts days with an order */
	RfmLiveConfig cfg;
	DateADT		start_day;		/* first day of the scoring window */
	DateADT		end_day;
	DateADT		retained_from;	/* as of the last snapshot */
	DateADT		new_retained;	/* buckets before this day are pruned */
	TimestampTz b3,				/* recency bucket bounds */
				b6,
				binactive;
	bool		first;			/* no snapshot yet: the first refresh */
	Oid			scoretype;
	MemoryContext work;			/* everything below */
	MemoryContext rowcxt;		/* per-row scratch */

	/* the scan of customer_stats */
	Relation	rel;
	Snapshot	snap;
	TupleDesc	desc;
	RfmStatsAtts at;
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		scanning;		/* false: new customers from adds */

	/* pending additions folded in during the scan */
	RfmFoldAdd *adds;			/* in customer order */
	int			nadds;
	int			nextadd;		/* next new customer to score */
	RfmFoldIndex foldix;
	RfmFoldAdd **foldbypos;		/* the additions met, in position order */
	int			nfolded;
	Datum	   *mv;				/* a row's values with additions merged */
	bool	   *mnl;

	/* per customer */
	RfmLiveCust *custs;
	RfmKeys    *keys;
	void	   *custs_base;
	void	   *keys_base;
	int			n;
	int			cap;
	RfmMoney   *overflow;		/* spends that do not fit RfmLiveCust */
	int			noverflow;
	int			capoverflow;
	RfmTomb    *tombs;
	int			ntombs;
	int			captombs;
	char	   *arena;			/* the tombs' ids */
	Size		arena_left;
	RfmSegNames names;

	/* scoring and writes */
	RfmScore   *scores;
	int16		segof[1000];	/* segment index of a score, -1: not yet */
	RfmSegSummary *summary;
	RfmWrite   *writes;			/* customers whose row changes */
	int			nwrites;
	int			capwrites;
	Datum	   *segnames;		/* text datums of names */

	/* results */
	int64		snapshot_id;
	int64		seg_changes;
	int64		score_changes;
	int64		left;
} RfmRefresh;

/*
 * loyalty._rfm_default_as_of(): the default as_of of refresh_segments, the
 * start of the current day (of the transaction's start) in the program
 * time zone, so that a nightly job run at 00:05 scores as of midnight, as a
 * batch rfm_segmentation(as_of => midnight) does.
 */
Datum
rfm_default_as_of(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(RfmProgramDayStart(GetCurrentTransactionStartTimestamp(),
											 RfmProgramZone()));
}

/*
 * A refresh scores now or the past, in order: as_of may lie at most
 * loyalty.refresh_future_skew (5 minutes) ahead of the server clock, and
 * not before the as_of of the latest snapshot (the change log and the
 * migration views read snapshots in that order).  22023 otherwise.  In
 * SPI, under the refresh's lock.
 */
static void
RfmCheckAsOfOrder(TimestampTz as_of)
{
	TimestampTz limit = GetCurrentTimestamp() +
		(TimestampTz) rfm_refresh_future_skew * USECS_PER_SEC;
	bool		isnull;

	if (as_of > limit)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of must not lie in the future"),
				 errdetail("as_of is %s; refresh_segments accepts an as_of up to %d seconds ahead of the server clock.",
						   timestamptz_to_str(as_of), rfm_refresh_future_skew)));
	if (SPI_execute("SELECT s.snapshot_id, s.as_of FROM loyalty.segment_snapshot s"
					" ORDER BY s.as_of DESC, s.snapshot_id DESC LIMIT 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.segment_snapshot");
	if (SPI_processed > 0)
	{
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		TimestampTz latest = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 2, &isnull));

		if (as_of < latest)
		{
			/* timestamptz_to_str returns a static buffer: one call at a time */
			char	   *as_of_str = pstrdup(timestamptz_to_str(as_of));
			char	   *latest_str = pstrdup(timestamptz_to_str(latest));

			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("as_of is before the latest snapshot"),
					 errdetail("as_of is %s; the latest snapshot (%lld) is as of %s.",
							   as_of_str, (long long) id, latest_str),
					 errhint("Score past dates with loyalty.rfm_segmentation(), or drop the later snapshots with loyalty.drop_snapshot().")));
		}
	}
}

/*
 * Serialize with other refreshes, read and check the configuration and the
 * retention horizon; the first refresh (no snapshot yet) locks the
 * statistics exclusively (it rewrites them all, then compacts them).
 * Connects to SPI.
 */
static void
RfmRefreshLock(RfmRefresh *r)
{
	SPI_connect();
	if (SPI_execute("LOCK TABLE loyalty.segment_snapshot IN EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock loyalty.segment_snapshot");
	RfmReadConfig(&r->cfg);
	elog(DEBUG1, "refresh_segments: read the configuration at %.1f ms", RfmMsSince(r->t0));

	RfmTrackingFacts(true, &r->tz, &r->count_days);
	if (!(RfmMinus(r->as_of, &r->cfg.window, r->tz) < r->as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("scoring_window must be positive")));
	r->start_day = RfmZoneDay(RfmMinus(r->as_of, &r->cfg.window, r->tz), r->tz);
	r->end_day = RfmZoneDay(r->as_of, r->tz);
	r->retained_from = RfmRetainedFrom();
	RfmCheckRetained(r->start_day, r->retained_from, &r->cfg);
	RfmCheckAsOfOrder(r->as_of);
	r->first = (r->retained_from == DATEVAL_NOBEGIN);
	if (r->first &&
		SPI_execute("LOCK TABLE loyalty.customer_stats IN ACCESS EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock loyalty.customer_stats");
	elog(DEBUG1, "refresh_segments: locked at %.1f ms", RfmMsSince(r->t0));
}

/*
 * Take the changes tracked statements appended since the last refresh
 * (those committed by now; later ones wait for the next fold).  Those that
 * removed orders are folded now (their first / last order times may need
 * reading again); the others, a night's new orders, are folded in the
 * scan and written with the new scores, so that each changed row is looked
 * up by no index and written once.  Then the dates derived from as_of.
 */
static void
RfmRefreshTakePending(RfmRefresh *r)
{
	(void) RfmFoldDeltasSplit(NULL, &r->adds, &r->nadds);
	elog(DEBUG1, "refresh_segments: folded pending changes at %.1f ms", RfmMsSince(r->t0));
	r->new_retained = RfmZoneDay(RfmMinus(Min(r->as_of, GetCurrentTransactionStartTimestamp()),
										  &r->cfg.retention, r->tz), r->tz);
	r->new_retained = Min(r->new_retained, r->start_day);
	if (r->retained_from != DATEVAL_NOBEGIN && r->retained_from > r->new_retained)
		r->new_retained = r->retained_from;
	r->b3 = RfmMinus(r->as_of, RfmMonths(3), r->tz);
	r->b6 = RfmMinus(r->as_of, RfmMonths(6), r->tz);
	r->binactive = RfmMinus(r->as_of, &r->cfg.inactive_after, r->tz);
}

/*
 * Open the statistics and start one scan of them, in a snapshot taken
 * after the locks and the fold; size the per-customer arrays from the
 * planner's estimate; hash the pending additions.  Switches to the
 * refresh's memory context.
 */
static void
RfmRefreshOpen(RfmRefresh *r)
{
	r->work = AllocSetContextCreate(CurrentMemoryContext, "loyalty refresh", ALLOCSET_DEFAULT_SIZES);
	r->rowcxt = AllocSetContextCreate(r->work, "loyalty refresh row", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(r->work);
	r->cap = 1024;
	r->captombs = 64;
	r->tombs = palloc(sizeof(RfmTomb) * r->captombs);
	memset(&r->names, 0, sizeof(r->names));

	r->rel = table_open(RfmStatsRelid(), RowExclusiveLock);
	r->desc = RelationGetDescr(r->rel);
	if (r->rel->rd_rel->reltuples > r->cap)
		r->cap = (int) Min(r->rel->rd_rel->reltuples * 1.1 + 1024,
						   (double) (MaxAllocHugeSize / sizeof(RfmLiveCust)));
	r->custs = RfmBigArray(&r->custs_base, NULL, 0, sizeof(RfmLiveCust) * r->cap);
	r->keys = RfmBigArray(&r->keys_base, NULL, 0, sizeof(RfmKeys) * r->cap);
	RfmStatsColumns(r->desc, &r->at);
	if (r->nadds > 0)
	{
		RfmFoldIndexBuild(&r->foldix, r->adds, r->nadds);
		r->foldbypos = palloc_extended(sizeof(RfmFoldAdd *) * r->nadds, MCXT_ALLOC_HUGE);
		r->mv = palloc(sizeof(Datum) * r->desc->natts);
		r->mnl = palloc(sizeof(bool) * r->desc->natts);
	}
	r->snap = RegisterSnapshot(GetLatestSnapshot());
	r->scan = table_beginscan(r->rel, r->snap, 0, NULL);
	r->slot = table_slot_create(r->rel, NULL);
	r->scanning = true;
}

/*
 * The next customer to score: a statistics row with the pending additions
 * of its customer merged in (*fa), then, once the scan is over, each
 * customer with additions but no row (a new customer), from its additions
 * alone.  false when there is none left.
 */
static bool
RfmRefreshNextRow(RfmRefresh *r, Datum **v, bool **nl, RfmFoldAdd **fa)
{
	RfmStatsAtts *at = &r->at;
	int			k;

	*fa = NULL;
	if (r->scanning && table_scan_getnextslot(r->scan, ForwardScanDirection, r->slot))
	{
		slot_getallattrs(r->slot);
		*v = r->slot->tts_values;
		*nl = r->slot->tts_isnull;
		if (r->nadds > 0)
		{
			text	   *t;

			MemoryContextSwitchTo(r->rowcxt);
			t = DatumGetTextPP((*v)[at->id]);
			*fa = RfmFoldFind(&r->foldix, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
			if (*fa != NULL)
			{
				memcpy(r->mv, *v, sizeof(Datum) * r->desc->natts);
				memcpy(r->mnl, *nl, sizeof(bool) * r->desc->natts);
				RfmStatsMerge(r->mv, r->mnl, at, &(*fa)->ch);
				*v = r->mv;
				*nl = r->mnl;
			}
			MemoryContextSwitchTo(r->work);
		}
		return true;
	}
	r->scanning = false;
	while (r->nextadd < r->nadds && r->adds[r->nextadd].pos >= 0)
		r->nextadd++;
	if (r->nextadd >= r->nadds)
		return false;
	/* a new customer: its additions onto empty statistics */
	*fa = &r->adds[r->nextadd++];
	MemoryContextSwitchTo(r->rowcxt);
	for (k = 0; k < r->desc->natts; k++)
	{
		r->mv[k] = (Datum) 0;
		r->mnl[k] = true;
	}
	r->mv[at->id] = CStringGetTextDatum((*fa)->ch.key);
	r->mv[at->rows] = Int64GetDatum(0);
	r->mv[at->orders] = Int64GetDatum(0);
	r->mv[at->spend] = NumericGetDatum(LoyaltyNumericZero());
	r->mnl[at->id] = r->mnl[at->rows] = r->mnl[at->orders] = r->mnl[at->spend] = false;
	RfmStatsMerge(r->mv, r->mnl, at, &(*fa)->ch);
	MemoryContextSwitchTo(r->work);
	*v = r->mv;
	*nl = r->mnl;
	return true;
}

/* Keep a customer without rows (a tomb) for RfmRefreshLeavers. */
static void
RfmRefreshTomb(RfmRefresh *r, Datum *v)
{
	if (r->ntombs == r->captombs)
	{
		r->captombs *= 2;
		r->tombs = repalloc_huge(r->tombs, sizeof(RfmTomb) * r->captombs);
	}
	r->tombs[r->ntombs].id = RfmArenaText(&r->arena, &r->arena_left, v[r->at.id]);
	r->tombs[r->ntombs].tid = r->slot->tts_tid;
	r->ntombs++;
}

/* Keep a customer's spend in the window in its RfmLiveCust (or overflow). */
static void
RfmRefreshSpend(RfmRefresh *r, RfmLiveCust *c, RfmMoney *spend)
{
	if (spend->kind == RFM_MONEY_INT && spend->scale <= PG_INT8_MAX &&
		spend->v.i <= PG_INT64_MAX && spend->v.i >= PG_INT64_MIN)
	{
		c->spend = (int64) spend->v.i;
		c->spend_scale = (int8) spend->scale;
		return;
	}
	if (r->noverflow == r->capoverflow)
	{
		r->capoverflow = r->capoverflow ? r->capoverflow * 2 : 64;
		r->overflow = r->overflow ? repalloc(r->overflow, sizeof(RfmMoney) * r->capoverflow)
			: palloc(sizeof(RfmMoney) * r->capoverflow);
	}
	r->overflow[r->noverflow] = *spend;
	c->spend = r->noverflow++;
	c->spend_scale = -1;
}

/*
 * Record one customer (values v / nl, pending additions fa): its scoring
 * keys (recency, windowed frequency and monetary from the day buckets),
 * its recency bucket flags, its spend, the version read and its old score
 * and segment.  A customer without rows is kept as a tomb instead.
 */
static void
RfmRefreshCustomer(RfmRefresh *r, Datum *v, bool *nl, RfmFoldAdd *fa)
{
	RfmStatsAtts *at = &r->at;
	int64		rows = DatumGetInt64(v[at->rows]);
	RfmDaysSum	sum;
	RfmLiveCust *c;
	RfmDays    *days;
	RfmMoney	spend;
	bool		has_order;
	TimestampTz last = 0;
	RfmKeys    *key;

	if (rows <= 0)
	{
		if (rows < 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("live statistics of customer \"%s\" are out of sync with the tracked tables",
							TextDatumGetCString(v[at->id])),
					 errhint("Run loyalty.rebuild_tracking().")));
		/* (never one with additions: they hold rows) */
		RfmRefreshTomb(r, v);
		return;
	}
	if (r->n == r->cap)
	{
		r->cap *= 2;
		r->custs = RfmBigArray(&r->custs_base, r->custs, sizeof(RfmLiveCust) * r->n,
							   sizeof(RfmLiveCust) * r->cap);
		r->keys = RfmBigArray(&r->keys_base, r->keys, sizeof(RfmKeys) * r->n,
							  sizeof(RfmKeys) * r->cap);
	}
	c = &r->custs[r->n];
	key = &r->keys[r->n];

	/* buckets may need a detoasted copy: that goes to the row context */
	MemoryContextSwitchTo(r->rowcxt);
	days = nl[at->days] ? NULL : DatumGetRfmDays(v[at->days]);
	RfmDaysWindow(days, r->start_day, r->end_day, &sum, false, r->work);
	RfmCustomerInputs(&sum, nl[at->first], DatumGetTimestampTz(v[at->first]),
					  nl[at->last], DatumGetTimestampTz(v[at->last]), r->as_of,
					  r->new_retained, r->tz, &has_order, &last);
	spend = sum.money;
	if (r->count_days)
		sum.orders = sum.days;
	key->key[RFM_RECENCY] = RfmRecencyKey(RfmRecencyDaysOf(has_order, r->as_of, last));
	key->key[RFM_FREQUENCY] = (double) sum.orders;
	if (!r->cfg.average)
		key->key[RFM_MONETARY] = RfmMoneyKey(&spend);
	else
		key->key[RFM_MONETARY] =
			RfmMonetaryKey(RfmMonetary(&r->cfg, RfmMoneyToNumeric(&spend), sum.orders));
	c->flags = 0;
	if (RfmDaysCount(days) > 0 && RfmDaysFirstDay(days) < r->new_retained)
		c->flags |= RFM_CUST_PRUNE;
	if (!has_order)
		c->flags |= RFM_CUST_NO_ORDER | RFM_CUST_INACTIVE;
	else
	{
		c->flags |= last > r->b3 ? RFM_CUST_RECENT : last > r->b6 ? RFM_CUST_MID : RFM_CUST_OLD;
		if (last <= r->binactive)
			c->flags |= RFM_CUST_INACTIVE;
	}
	MemoryContextSwitchTo(r->work);
	MemoryContextReset(r->rowcxt);
	RfmRefreshSpend(r, c, &spend);
	if (fa == NULL)
		c->tid = r->slot->tts_tid;
	else
	{
		c->flags |= RFM_CUST_FOLD;
		if (r->scanning)
			c->tid = r->slot->tts_tid;
		else
		{
			c->flags |= RFM_CUST_NEW;
			ItemPointerSetInvalid(&c->tid);
		}
		fa->pos = r->n;
		r->foldbypos[r->nfolded++] = fa;
	}
	c->old_score = nl[at->score] ? -1 : DatumGetInt16(v[at->score]);
	c->old_seg = nl[at->segment] ? -1 : RfmSegIndexText(&r->names, v[at->segment]);
	r->n++;
}

/* One pass over the statistics (and the new customers): RfmRefreshCustomer. */
static void
RfmRefreshScan(RfmRefresh *r)
{
	Datum	   *v;
	bool	   *nl;
	RfmFoldAdd *fa;

	while (RfmRefreshNextRow(r, &v, &nl, &fa))
	{
		RfmRefreshCustomer(r, v, nl, fa);
		if ((r->n & 4095) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	ExecDropSingleTupleTableSlot(r->slot);
	table_endscan(r->scan);
	elog(DEBUG1, "refresh_segments: read %d customers in %.1f ms", r->n, RfmMsSince(r->t0));
}

/* The segment index of a score, from the segment map (cached per score). */
static int
RfmRefreshSegmentOf(RfmRefresh *r, RfmScore s)
{
	if (r->segof[s] < 0)
	{
		const char *name = RfmSegmentOf(s, r->cfg.scoring.bins);

		if (name == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("score %d%d%d has no segment in the segment map",
							RfmScoreRecency(s), RfmScoreFrequency(s), RfmScoreMonetary(s))));
		r->segof[s] = RfmSegIndex(&r->names, name);
	}
	return r->segof[s];
}

/* Add a customer to its segment's summary. */
static void
RfmRefreshSummarise(RfmRefresh *r, RfmLiveCust *c)
{
	RfmSegSummary *sm = &r->summary[c->new_seg];

	sm->customers++;
	if (c->spend_scale >= 0)
	{
		RfmMoney	m;

		memset(&m, 0, sizeof(m));
		m.kind = RFM_MONEY_INT;
		m.v.i = c->spend;
		m.scale = c->spend_scale;
		RfmMoneyAddMoney(&sm->revenue, &m, r->work);
	}
	else
		RfmMoneyAddMoney(&sm->revenue, &r->overflow[c->spend], r->work);
	sm->recent += (c->flags & RFM_CUST_RECENT) != 0;
	sm->mid += (c->flags & RFM_CUST_MID) != 0;
	sm->old += (c->flags & RFM_CUST_OLD) != 0;
	sm->no_order += (c->flags & RFM_CUST_NO_ORDER) != 0;
	sm->inactive += (c->flags & RFM_CUST_INACTIVE) != 0;
}

/*
 * Score everyone, name segments, count changes, list the rows to write
 * (score or segment changed, buckets to prune, additions to fold in) and
 * sum the per-segment summary.
 */
static void
RfmRefreshScore(RfmRefresh *r)
{
	int			nextfold = 0;
	int			prune_only = 0;
	int			i;

	r->scores = palloc_extended(sizeof(RfmScore) * Max(r->n, 1), MCXT_ALLOC_HUGE);
	RfmScoreAll(&r->cfg.scoring, r->keys, r->n, r->scores);
	for (i = 0; i < 1000; i++)
		r->segof[i] = -1;
	r->capwrites = 1024;
	r->writes = palloc(sizeof(RfmWrite) * r->capwrites);
	r->summary = palloc0(sizeof(RfmSegSummary) * RFM_MAX_SEGMENTS);
	for (i = 0; i < r->n; i++)
	{
		RfmLiveCust *c = &r->custs[i];
		RfmScore	s = r->scores[i];
		int			seg = RfmRefreshSegmentOf(r, s);
		bool		seg_changed = (c->old_seg != seg);
		bool		score_changed = (c->old_score != s);

		r->seg_changes += seg_changed;
		r->score_changes += score_changed;
		if (!seg_changed && !score_changed)
			prune_only += (c->flags & (RFM_CUST_PRUNE | RFM_CUST_FOLD)) == RFM_CUST_PRUNE;
		if (seg_changed || score_changed || (c->flags & (RFM_CUST_PRUNE | RFM_CUST_FOLD)))
		{
			RfmWrite   *w;

			if (r->nwrites == r->capwrites)
			{
				r->capwrites *= 2;
				r->writes = repalloc_huge(r->writes, sizeof(RfmWrite) * r->capwrites);
			}
			w = &r->writes[r->nwrites++];
			w->pos = i;
			w->id = NULL;
			w->fold = NULL;
			if (c->flags & RFM_CUST_FOLD)
			{
				/* foldbypos is in position order, as i is */
				while (r->foldbypos[nextfold]->pos < i)
					nextfold++;
				w->fold = r->foldbypos[nextfold];
			}
		}
		c->new_seg = seg;
		RfmRefreshSummarise(r, c);
	}
	r->segnames = palloc(sizeof(Datum) * Max(r->names.n, 1));
	for (i = 0; i < r->names.n; i++)
		r->segnames[i] = CStringGetTextDatum(r->names.name[i]);
	elog(DEBUG1, "refresh_segments: scored, %d rows to write (%d folds, %d only pruned), at %.1f ms",
		 r->nwrites, r->nfolded, prune_only, RfmMsSince(r->t0));
}

/* The snapshot header, first: the change log refers to it. */
static void
RfmRefreshSnapshot(RfmRefresh *r)
{
	Oid			argtypes[6] = {TIMESTAMPTZOID, INT4OID, INTERVALOID, TEXTOID, TEXTOID, DATEOID};
	Datum		args[6];
	bool		isnull;

	args[0] = TimestampTzGetDatum(r->as_of);
	args[1] = Int32GetDatum(r->cfg.scoring.bins);
	args[2] = IntervalPGetDatum(&r->cfg.window);
	args[3] = CStringGetTextDatum(r->cfg.average ? "average" : "total");
	args[4] = CStringGetTextDatum(r->cfg.scoring.use_thresholds ? "thresholds" : "quantile");
	args[5] = DateADTGetDatum(r->new_retained);
	if (SPI_execute_with_args("INSERT INTO loyalty.segment_snapshot"
							  " (as_of, bins, scoring_window, monetary, method, retained_from)"
							  " VALUES ($1, $2, $3, $4, $5, $6) RETURNING snapshot_id",
							  6, argtypes, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into loyalty.segment_snapshot");
	r->snapshot_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												 1, &isnull));
}

/* qsort comparator of rows to write by customer id (byte order). */
static int
RfmScoreRowCmp(const void *a, const void *b)
{
	return strcmp(((const RfmStatsScoreRow *) a)->key, ((const RfmStatsScoreRow *) b)->key);
}

/* qsort comparator of tombs by customer id (byte order). */
static int
RfmTombCmp(const void *a, const void *b)
{
	return strcmp(((const RfmTomb *) a)->id, ((const RfmTomb *) b)->id);
}

/*
 * Write the rows: the changed customers (ids read back by location, then
 * sorted) and the tombs, in one key-ordered pass of stats_store.c, new
 * customers inserted after it.
 */
static void
RfmRefreshWrite(RfmRefresh *r)
{
	RfmStatsScoreRow *rows;
	int			m = 0;
	int			i;

	if (r->nwrites + r->ntombs == 0)
		return;
	RfmFetchIds(r->rel, r->snap, r->custs, r->writes, r->nwrites, r->at.id);
	qsort(r->writes, r->nwrites, sizeof(RfmWrite), RfmWriteIdCmp);
	qsort(r->tombs, r->ntombs, sizeof(RfmTomb), RfmTombCmp);
	rows = palloc_extended(sizeof(RfmStatsScoreRow) * (r->nwrites + r->ntombs), MCXT_ALLOC_HUGE);
	for (i = 0; i < r->nwrites; i++)
	{
		RfmWrite   *w = &r->writes[i];
		RfmLiveCust *c = &r->custs[w->pos];
		RfmStatsScoreRow *row = &rows[m++];

		row->key = w->id;
		row->tid = c->tid;
		row->leave = false;
		row->insert = (c->flags & RFM_CUST_NEW) != 0;
		row->seg_changed = (c->old_seg != c->new_seg);
		row->prune = (c->flags & RFM_CUST_PRUNE) != 0;
		row->score = r->scores[w->pos];
		row->segment = r->segnames[c->new_seg];
		row->fold = w->fold ? &w->fold->ch : NULL;
	}
	for (i = 0; i < r->ntombs; i++)
	{
		RfmStatsScoreRow *row = &rows[m++];

		memset(row, 0, sizeof(RfmStatsScoreRow));
		row->key = r->tombs[i].id;
		row->tid = r->tombs[i].tid;
		row->leave = true;
	}
	qsort(rows, m, sizeof(RfmStatsScoreRow), RfmScoreRowCmp);
	RfmStatsWriteScores(rows, m, r->snap, r->as_of, r->new_retained, r->scoretype);
	elog(DEBUG1, "refresh_segments: wrote scores at %.1f ms", RfmMsSince(r->t0));
}

/* The change log: one row per customer whose segment changed. */
static void
RfmRefreshChangeLog(RfmRefresh *r)
{
	Datum	   *ids = palloc_extended(sizeof(Datum) * Max(r->nwrites, 1), MCXT_ALLOC_HUGE);
	Datum	   *sc = palloc_extended(sizeof(Datum) * Max(r->nwrites, 1), MCXT_ALLOC_HUGE);
	Datum	   *sg = palloc_extended(sizeof(Datum) * Max(r->nwrites, 1), MCXT_ALLOC_HUGE);
	Oid			argtypes[4];
	Datum		args[4];
	int			nchg = 0;
	int			i;

	for (i = 0; i < r->nwrites; i++)
	{
		RfmLiveCust *c = &r->custs[r->writes[i].pos];

		if (c->old_seg == c->new_seg)
			continue;
		ids[nchg] = CStringGetTextDatum(r->writes[i].id);
		sc[nchg] = Int16GetDatum(r->scores[r->writes[i].pos]);
		sg[nchg] = r->segnames[c->new_seg];
		nchg++;
	}
	if (nchg == 0)
		return;
	argtypes[0] = INT8OID;
	argtypes[1] = TEXTARRAYOID;
	argtypes[2] = TEXTARRAYOID;
	argtypes[3] = get_array_type(r->scoretype);
	args[0] = Int64GetDatum(r->snapshot_id);
	args[1] = PointerGetDatum(RfmMakeArray(ids, NULL, nchg, TEXTOID));
	args[2] = PointerGetDatum(RfmMakeArray(sg, NULL, nchg, TEXTOID));
	args[3] = PointerGetDatum(RfmMakeArray(sc, NULL, nchg, r->scoretype));
	if (SPI_execute_with_args("INSERT INTO loyalty.segment_change"
							  " (snapshot_id, customer_id, segment, score)"
							  " SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2),"
							  " pg_catalog.unnest($3), pg_catalog.unnest($4)) AS u",
							  4, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into loyalty.segment_change");
	elog(DEBUG1, "refresh_segments: logged %d segment changes at %.1f ms", nchg, RfmMsSince(r->t0));
}

/*
 * Customers without rows left (locked by RfmRefreshWrite): deleted and
 * logged as leaving their segment (stats_store.c).
 */
static void
RfmRefreshLeavers(RfmRefresh *r)
{
	char	  **keys;
	int			i;

	if (r->ntombs == 0)
		return;
	keys = palloc_extended(sizeof(char *) * r->ntombs, MCXT_ALLOC_HUGE);
	for (i = 0; i < r->ntombs; i++)
		keys[i] = r->tombs[i].id;
	r->left = RfmStatsRemoveLeavers(keys, r->ntombs, r->snapshot_id);
	elog(DEBUG1, "refresh_segments: change log and leavers at %.1f ms", RfmMsSince(r->t0));
}

/* The per-segment summary that the BI views read, in one statement. */
static void
RfmRefreshSummary(RfmRefresh *r)
{
	Oid			elemtypes[8] = {TEXTOID, INT8OID, NUMERICOID, INT8OID, INT8OID, INT8OID,
	INT8OID, INT8OID};
	Datum	   *v[8];
	Oid			argtypes[9];
	Datum		args[9];
	int			i,
				k,
				m = 0;

	for (k = 0; k < 8; k++)
		v[k] = palloc(sizeof(Datum) * Max(r->names.n, 1));
	for (i = 0; i < r->names.n; i++)
	{
		RfmSegSummary *sm = &r->summary[i];

		if (sm->customers == 0)
			continue;
		v[0][m] = r->segnames[i];
		v[1][m] = Int64GetDatum(sm->customers);
		v[2][m] = NumericGetDatum(RfmMoneyToNumeric(&sm->revenue));
		v[3][m] = Int64GetDatum(sm->recent);
		v[4][m] = Int64GetDatum(sm->mid);
		v[5][m] = Int64GetDatum(sm->old);
		v[6][m] = Int64GetDatum(sm->no_order);
		v[7][m] = Int64GetDatum(sm->inactive);
		m++;
	}
	if (m == 0)
		return;
	argtypes[0] = INT8OID;
	args[0] = Int64GetDatum(r->snapshot_id);
	for (k = 0; k < 8; k++)
	{
		argtypes[k + 1] = get_array_type(elemtypes[k]);
		args[k + 1] = PointerGetDatum(RfmMakeArray(v[k], NULL, m, elemtypes[k]));
	}
	if (SPI_execute_with_args("INSERT INTO loyalty.segment_summary (snapshot_id, segment,"
							  " customers, revenue, recency_under_3_months, recency_3_to_6_months,"
							  " recency_over_6_months, no_order, inactive)"
							  " SELECT $1, u.* FROM ROWS FROM (pg_catalog.unnest($2),"
							  " pg_catalog.unnest($3), pg_catalog.unnest($4), pg_catalog.unnest($5),"
							  " pg_catalog.unnest($6), pg_catalog.unnest($7), pg_catalog.unnest($8),"
							  " pg_catalog.unnest($9)) AS u",
							  9, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert into loyalty.segment_summary");
}

/* The snapshot header's counts and time taken (values[] as returned). */
static void
RfmRefreshFinish(RfmRefresh *r, Datum *values)
{
	Oid			argtypes[6] = {INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, FLOAT8OID};
	Datum		args[6];

	values[0] = Int64GetDatum(r->snapshot_id);
	values[1] = TimestampTzGetDatum(r->as_of);
	values[2] = Int64GetDatum(r->n);
	values[3] = Int64GetDatum(r->seg_changes);
	values[4] = Int64GetDatum(r->score_changes);
	values[5] = Int64GetDatum(r->left);
	values[6] = Float8GetDatum(RfmMsSince(r->t0));
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
}

/*
 * loyalty.refresh_segments(as_of DEFAULT now()): rescore every tracked
 * customer from the statistics and record a snapshot.  Returns the
 * snapshot id, as_of, customers scored, segment changes, score changes,
 * customers who left, and the time taken in milliseconds.
 */
Datum
rfm_refresh_segments(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	RfmRefresh *r;
	TupleDesc	rdesc;
	Datum		values[7];
	bool		nulls[7] = {false, false, false, false, false, false, false};

	r = palloc0(sizeof(RfmRefresh));
	r->t0 = GetCurrentTimestamp();
	LoyaltyArgNotNull(fcinfo, 0, "as_of");
	r->as_of = PG_GETARG_TIMESTAMPTZ(0);
	RfmCheckAsOf(r->as_of);
	RfmLiveRequireReadCommitted("loyalty.refresh_segments()");
	LoyaltyRefuseCitusTable(get_relname_relid("customer_stats",
											  get_namespace_oid("loyalty", false)),
							"loyalty.refresh_segments()");
	r->scoretype = RfmLoyaltyType("rfm_score");

	RfmRefreshLock(r);
	RfmRefreshTakePending(r);
	RfmRefreshOpen(r);
	RfmRefreshScan(r);
	RfmRefreshScore(r);
	RfmRefreshSnapshot(r);
	elog(DEBUG1, "refresh_segments: snapshot header at %.1f ms", RfmMsSince(r->t0));
	RfmRefreshWrite(r);
	RfmRefreshChangeLog(r);
	UnregisterSnapshot(r->snap);
	table_close(r->rel, NoLock);
	RfmRefreshLeavers(r);

	/*
	 * The first refresh rewrote (nearly) every statistics row, doubling the
	 * table: compact it before anyone else sees it (it holds the table's
	 * ACCESS EXCLUSIVE lock since it started).  Later refreshes write a few
	 * percent of the rows, whose space VACUUM gives back.
	 */
	if (r->first && r->nwrites > r->n / 2 && RfmStatsCompact())
		elog(DEBUG1, "refresh_segments: rewrote the statistics at %.1f ms", RfmMsSince(r->t0));
	RfmRefreshSummary(r);
	elog(DEBUG1, "refresh_segments: summarised at %.1f ms", RfmMsSince(r->t0));
	RfmRefreshFinish(r, values);

	MemoryContextSwitchTo(caller);
	MemoryContextDelete(r->work);
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
		struct pg_tz *tz;
		bool		count_days;

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
		RfmTrackingFacts(false, &tz, &count_days);
		start = RfmMinus(as_of, &cfg.window, tz);
		start_day = RfmZoneDay(start, tz);
		retained_from = RfmRetainedFrom();
		RfmCheckRetained(start_day, retained_from, &cfg);
		if (!RfmLiveRead(cust, &live))
		{
			SPI_finish();
			MemoryContextSwitchTo(oldcxt);
			SRF_RETURN_DONE(funcctx);
		}
		RfmDaysWindow(live.days, start_day, RfmZoneDay(as_of, tz), &sum, true,
					  CurrentMemoryContext);
		RfmCustomerInputs(&sum, live.first_null, live.first, live.last_null, live.last,
						  as_of, retained_from, tz, &has_order, &last);
		if (count_days)
			sum.orders = sum.days;

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
