/*
 * rfm_live.h
 *		Live RFM tracking: per-customer statistics kept exact by triggers on
 *		the application's orders table (rfm_track.c), the per-day buckets
 *		they carry (rfm_days.c) and the re-scoring that reads them
 *		(rfm_refresh.c).  The semantics of orders, refunds and windows are
 *		those of rfm.h.
 *
 * Per customer, loyalty.customer_stats holds all-time totals (rows, orders,
 * spend, first and last order time) and a loyalty.day_buckets value: for
 * every UTC day with tracked rows, the number of orders and the spend of
 * that day.  Windowed frequency and monetary are sums over the buckets of
 * the days in the window, so they stay right as time passes without reading
 * the orders again; they are exact at day granularity (a window
 * [as_of - window, as_of] counts the whole of its first and last UTC day).
 */
#ifndef LOYALTY_RFM_LIVE_H
#define LOYALTY_RFM_LIVE_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "fmgr.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/*
 * loyalty.day_buckets: a varlena holding n buckets sorted by day, without
 * empty buckets (orders = 0 and spend = 0).  Layout after the header:
 *	int32	day[n]		DateADT, strictly ascending
 *	int32	orders[n]	orders that day (negative only in deltas)
 *	then n numerics, each INTALIGNed with a 4-byte varlena header: the
 *	cumulative spend of buckets 0..i, so that the spend of any range of days
 *	is one subtraction.
 * The same representation carries the deltas a statement applies (counts
 * may then be negative); RfmDaysMerge adds a delta to a stored value.
 */
typedef struct RfmDays
{
	int32		vl_len_;		/* varlena header (do not touch directly!) */
	int32		n;				/* number of buckets */
	/* int32 day[n], int32 orders[n], cumulative spend numerics follow */
} RfmDays;

#define RfmDaysDay(d)		((int32 *) ((char *) (d) + sizeof(RfmDays)))
#define RfmDaysOrders(d)	(RfmDaysDay(d) + (d)->n)
#define RfmDaysFirstSpend(d) \
	((char *) (d) + INTALIGN(sizeof(RfmDays) + 2 * sizeof(int32) * (d)->n))
#define RfmDaysNextSpend(p) \
	((p) + INTALIGN(VARSIZE(p)))

#define DatumGetRfmDays(x)		((RfmDays *) PG_DETOAST_DATUM(x))
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
	Numeric		spend;			/* spend in [from, to] (never NULL) */
	Numeric		cum_before;		/* cumulative spend before from, or NULL */
	Numeric		cum_end;		/* cumulative spend up to to, or NULL */
	DateADT		last_order_day; /* latest day <= to with an order */
	bool		has_order;		/* false: no order day <= to */
} RfmDaysSum;

/* rfm_days.c */
extern RfmDays *RfmDaysBuild(RfmDayEntry *entries, int n);
extern RfmDays *RfmDaysMerge(RfmDays *a, RfmDays *delta);
extern RfmDays *RfmDaysPrune(RfmDays *a, DateADT before);
extern void RfmDaysWindow(RfmDays *d, DateADT from, DateADT to,
						  RfmDaysSum *sum, bool want_spend);
extern Numeric RfmNumericZero(void);
extern bool RfmNumericIsZero(Numeric n);
extern Numeric RfmNumericAdd(Numeric a, Numeric b);
extern Numeric RfmNumericSub(Numeric a, Numeric b);
extern Oid	RfmDaysTypeOid(void);

/* UTC day of a timestamp (DateADT counts days since 2000-01-01). */
static inline DateADT
RfmUtcDay(TimestampTz t)
{
	if (t >= 0)
		return (DateADT) (t / USECS_PER_DAY);
	return (DateADT) (-((-t - 1) / USECS_PER_DAY) - 1);
}

/* rfm_track.c: columns of a tracked table and how to read them */
typedef enum RfmTrackTimeKind
{
	RFM_TRACK_TIMESTAMPTZ,
	RFM_TRACK_TIMESTAMP,		/* read as UTC */
	RFM_TRACK_DATE				/* 00:00 UTC of that day */
} RfmTrackTimeKind;

typedef enum RfmTrackAmountKind
{
	RFM_TRACK_NUMERIC,
	RFM_TRACK_INT2,
	RFM_TRACK_INT4,
	RFM_TRACK_INT8,
	RFM_TRACK_FLOAT4,
	RFM_TRACK_FLOAT8
} RfmTrackAmountKind;

typedef struct RfmTrackCols
{
	AttrNumber	cust;			/* attribute numbers in the tuple read */
	AttrNumber	time;
	AttrNumber	amount;
	AttrNumber	status;			/* InvalidAttrNumber: every row counts */
	Oid			cust_type;
	FmgrInfo	cust_out;
	RfmTrackTimeKind time_kind;
	RfmTrackAmountKind amount_kind;
	FmgrInfo	status_out;
	int			nstatuses;
	char	  **statuses;
} RfmTrackCols;

/* rfm_track_admin.c */
extern void RfmResolveColumns(TupleDesc desc, const char *relname,
							  const char *cust_col, const char *time_col,
							  const char *amount_col, const char *status_col,
							  int nstatuses, char **statuses, RfmTrackCols *cols);
extern bool RfmStatusCounts(RfmTrackCols *cols, Datum value, bool isnull, Oid typ);
extern char **RfmStatusList(Datum arr, bool isnull, int *n);
extern void RfmFixOrderTimes(char **keys, int n);

/* rfm_track.c */
extern void RfmLiveRequireReadCommitted(const char *what);
extern int64 RfmBackfill(Oid relid, const char *cust_col, const char *time_col,
						 const char *amount_col, const char *status_col,
						 int nstatuses, char **statuses);
extern int64 RfmRebuild(void);
extern bool RfmRowTime(RfmTrackCols *cols, Datum value, TimestampTz *t);
extern uint32 RfmKeyHash(const void *key, Size keysize);
extern int	RfmKeyMatch(const void *key1, const void *key2, Size keysize);
extern struct ArrayType *RfmMakeArray(Datum *values, bool *nulls, int n, Oid elemtype);

#endif							/* LOYALTY_RFM_LIVE_H */
