/*
 * rfm_live.h
 *		Live RFM tracking: per-customer statistics kept exact by triggers on
 *		the application's orders table (rfm_track.c, administered by
 *		rfm_track_admin.c), the per-day buckets they carry (rfm_days.c), the
 *		tracked columns (rfm_columns.c), the one writer of
 *		loyalty.customer_stats (stats_store.c, see stats_store.h) and the
 *		re-scoring that reads them (rfm_refresh.c).
 *
 * Files call downwards only, in this order: rfm_days, rfm_columns,
 * stats_store, rfm_track, then rfm_track_admin and rfm_refresh (neither
 * calls the other).  The semantics of orders, refunds and windows are those
 * of rfm.h.
 *
 * Per customer, loyalty.customer_stats holds all-time totals (rows, orders,
 * spend, first and last order time) and a loyalty.day_buckets value: for
 * every day (in the tracking zone, loyalty.tracked_table.timezone) with
 * tracked rows, the number of orders and the spend of
 * that day.  Windowed frequency and monetary are sums over the buckets of
 * the days in the window, so they stay right as time passes without reading
 * the orders again; they are exact at day granularity (a window
 * [as_of - window, as_of] counts the whole of its first and last day).
 *
 * The tracking zone is the program zone (loyalty.settings.timezone) as of
 * track_orders or the last rebuild_tracking; refresh_segments refuses to
 * run while the two differ (rebuild_tracking re-buckets every order).
 */
#ifndef LOYALTY_RFM_LIVE_H
#define LOYALTY_RFM_LIVE_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "loyalty_args.h"
#include "loyalty_cache.h"
#include "loyalty_numeric.h"
#include "loyalty_spi.h"
#include "rfm.h"
#include "rfm_stats.h"

/*
 * loyalty.day_buckets: a varlena holding n buckets sorted by day, without
 * empty buckets (orders = 0 and spend = 0), each with the spend of its day
 * alone and that spend's display scale.  The display scale of a bucket is
 * the largest display scale of the amounts merged into it or into any
 * earlier bucket (pruned ones included): the scale SQL's running sum of the
 * amounts would show, so the text form is what cumulative numerics gave.
 *
 * The value is read byte by byte (no alignment), so a stored value with a
 * 1-byte varlena header is read in place.  After the varlena header:
 *	uint8	flags		RFM_DAYS_FORMAT_MASK: format version (1);
 *						RFM_DAYS_NUMERIC: numeric form (see below);
 *						RFM_DAYS_RUNS: display scales vary (runs, below)
 *	uint8	scale		compact form: spends are stored as spend * 10^scale
 *						(the largest display scale of the buckets, <= 15)
 *	varint	n			number of buckets
 *	zigzag	first day	DateADT of bucket 0 (only when n > 0)
 *	[varint	k]			RFM_DAYS_RUNS only: number of display-scale runs
 *						(maximal ranges of buckets with one display
 *						scale); without it every bucket has `scale`
 *	then per bucket:
 *	varint	tag			(day - previous day) << 2 | ocode (0 for bucket 0);
 *						ocode 1..3: that many orders, 0: zigzag orders follow
 *	[zigzag	orders]
 *	compact form: [varint count, uint8 dscale] before the spend of the
 *						first bucket of each run (RFM_DAYS_RUNS only), then
 *						zigzag spend * 10^scale (exact, fits int64)
 *	numeric form: varint length, then that many bytes of a numeric without
 *						its varlena header, its display scale the bucket's
 * Varints are unsigned LEB128 (7 bits a byte, low first); zigzag maps
 * 0, -1, 1, -2... to 0, 1, 2, 3...  The numeric form is used only when some
 * spend does not fit int64 at the value's scale or the scale exceeds
 * RFM_DAYS_MAX_SCALE; a value in numeric form that fits is stored compact,
 * so equal values have equal bytes.
 * The same representation carries the deltas a statement applies (counts
 * may then be negative); RfmDaysMerge adds a delta to a stored value.
 */
typedef struct RfmDays
{
	char		vl_len_[4];		/* varlena header (do not touch directly!) */
	uint8		data[FLEXIBLE_ARRAY_MEMBER];	/* see above */
} RfmDays;

#define RFM_DAYS_FORMAT_MASK	0x07
#define RFM_DAYS_FORMAT_1		0x01
#define RFM_DAYS_NUMERIC		0x08
#define RFM_DAYS_RUNS			0x10
#define RFM_DAYS_MAX_SCALE		15

/* Stored values may keep their short header: read them in place. */
#define DatumGetRfmDays(x)		((RfmDays *) pg_detoast_datum_packed((struct varlena *) DatumGetPointer(x)))
#define PG_GETARG_RFM_DAYS(n)	DatumGetRfmDays(PG_GETARG_DATUM(n))
#define PG_RETURN_RFM_DAYS(x)	PG_RETURN_POINTER(x)

/* One bucket while a value is being built (spend of that day alone). */
typedef struct RfmDayEntry
{
	DateADT		day;
	int32		orders;
	Numeric		spend;
} RfmDayEntry;

/* Windowed view of a customer's buckets, see RfmDaysWindow. */
typedef struct RfmDaysSum
{
	int64		orders;			/* orders in [from, to] */
	int64		days;			/* days with an order in [from, to] */
	Numeric		spend;			/* spend in [from, to] (never NULL), only
								 * if want_spend */
	RfmMoney	money;			/* spend in [from, to], exact */
	DateADT		last_order_day; /* latest day <= to with an order */
	bool		has_order;		/* false: no order day <= to */
} RfmDaysSum;

/* rfm_days.c */
extern RfmDays *RfmDaysBuild(RfmDayEntry *entries, int n);
extern RfmDays *RfmDaysMerge(RfmDays *a, RfmDays *delta);
extern RfmDays *RfmDaysPrune(RfmDays *a, DateADT before);
extern RfmDays *RfmDaysNegate(RfmDays *d);
extern void RfmDaysWindow(RfmDays *d, DateADT from, DateADT to,
						  RfmDaysSum *sum, bool want_spend, MemoryContext cxt);
extern int	RfmDaysCount(RfmDays *d);
extern DateADT RfmDaysFirstDay(RfmDays *d);
extern int64 RfmDaysOrderDays(RfmDays *d, DateADT *first);
extern Oid	RfmDaysTypeOid(void);

/*
 * rfm_track.c: columns of a tracked table and how to read them, in the
 * tracking zone tz (a timestamp without time zone is local time there, a
 * date 00:00 there; days are its calendar days; NULL: UTC)
 */
typedef struct RfmTrackCols
{
	AttrNumber	cust;			/* attribute numbers in the tuple read */
	AttrNumber	time;
	AttrNumber	amount;
	AttrNumber	status;			/* InvalidAttrNumber: every row counts */
	Oid			cust_type;
	FmgrInfo	cust_out;
	LoyaltyTimeKind time_kind;
	LoyaltyAmountKind amount_kind;
	struct pg_tz *tz;			/* the tracking zone (NULL: UTC) */
	FmgrInfo	status_out;
	bool		status_bpchar;	/* character(n): trailing blanks ignored */
	int			nstatuses;
	char	  **statuses;
} RfmTrackCols;

/* rfm_columns.c */
extern void RfmResolveColumns(TupleDesc desc, const char *relname,
							  const char *cust_col, const char *time_col,
							  const char *amount_col, const char *status_col,
							  int nstatuses, char **statuses, RfmTrackCols *cols);
extern bool RfmStatusCounts(RfmTrackCols *cols, Datum value, bool isnull);
extern char **RfmStatusList(Datum arr, bool isnull, int *n);
extern void RfmReadOrderTimes(char **keys, int n, Datum *first, bool *first_null,
							  Datum *last, bool *last_null, bool read_only);
extern bool RfmRowTime(RfmTrackCols *cols, Datum value, TimestampTz *t);
extern char *RfmTrackedSetting(Oid relid, const char *column);
extern uint32 RfmKeyHash(const void *key, Size keysize);
extern int	RfmKeyMatch(const void *key1, const void *key2, Size keysize);
extern struct ArrayType *RfmMakeArray(Datum *values, bool *nulls, int n, Oid elemtype);

/*
 * One customer's change of its statistics row: counts and spend added
 * (negative when orders were removed), first / last order of the orders
 * added, bucket delta.  What a fold, a back-fill or a refresh hands to
 * stats_store.c.
 */
typedef struct RfmStatsChange
{
	char	   *key;			/* customer id */
	int64		rows;			/* rows added */
	int64		orders;			/* orders added */
	Numeric		spend;			/* amounts added */
	bool		has_added;		/* first/last_added valid */
	TimestampTz first_added;
	TimestampTz last_added;
	RfmDays    *days;			/* bucket delta, NULL: none */
} RfmStatsChange;

/* rfm_track.c */
extern void RfmLiveInit(void);
extern int	rfm_refresh_future_skew;
extern void RfmLiveRequireReadCommitted(const char *what);
extern int64 RfmBackfill(Oid relid, const char *cust_col, const char *time_col,
						 const char *amount_col, const char *status_col,
						 int nstatuses, char **statuses, struct pg_tz *tz);
extern int64 RfmRebuild(void);
extern void RfmSetTrackingZone(const char *zone);
extern bool RfmTrackingHasZone(void);
extern int64 RfmFoldDeltas(int64 *customers);

/*
 * One customer's summed pending deltas that only added rows, handed by
 * RfmFoldDeltasSplit to refresh_segments, which applies them in its own
 * scan and row writes.
 */
typedef struct RfmFoldAdd
{
	RfmStatsChange ch;			/* the additions */
	int			keylen;			/* strlen(ch.key) */
	int			pos;			/* the refresh's customer position, -1: none */
} RfmFoldAdd;

extern int64 RfmFoldDeltasSplit(int64 *customers, RfmFoldAdd **adds, int *nadds);
extern bool RfmDeltasTracked(void);

/*
 * The order feed: a family above (missions) that wants the orders of every
 * tracked statement sets rfm_order_feed_hook from its initialiser.  The
 * tracking trigger calls it once per statement, as loyalty's owner, with
 * the statement's transition tables (either may be NULL; for an UPDATE
 * the old and new rows come in pairs, in the same order), after its own
 * work.  RfmReadOrder reads one transition row the way the statistics
 * count it.
 */
struct Tuplestorestate;
struct TupleTableSlot;
typedef void (*RfmOrderFeedHook) (Relation rel, RfmTrackCols *cols,
								  struct Tuplestorestate *oldtable,
								  struct Tuplestorestate *newtable,
								  bool paired);
extern PGDLLIMPORT RfmOrderFeedHook rfm_order_feed_hook;
extern bool RfmReadOrder(RfmTrackCols *cols, struct TupleTableSlot *slot,
						 char **key, TimestampTz *t, Numeric *amount);

#endif							/* LOYALTY_RFM_LIVE_H */
