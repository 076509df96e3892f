/*
 * rfm.h
 *		RFM semantics and the scoring API shared by the batch path
 *		(rfm_segmentation, rfm_stats aggregates) and the live path
 *		(track_orders, refresh_segments).  Both paths MUST give the same
 *		result for the same orders; this header is their contract.
 *
 * Per customer, as of a time as_of, with a window (default 12 months):
 *	- an order is a row with non-null customer and time, and amount >= 0
 *	  (a null amount counts as an order with amount 0);
 *	- a row with a negative amount is a refund: it lowers spend in its window
 *	  but is not an order (no frequency, no recency);
 *	- rows dated after as_of are ignored;
 *	- recency_days = floor((as_of - last order) / 1 day), -1 when the customer
 *	  has no order up to as_of;
 *	- frequency = number of orders with as_of - window <= time <= as_of;
 *	- monetary = sum of amounts (orders and refunds) in that window, exact
 *	  numeric; or, on request, the average basket: monetary / frequency
 *	  (0 when frequency = 0).
 *
 * Scoring (5 = best, bins in 2..9):
 *	- quantile: with L(v) = number of customers whose key is strictly worse
 *	  than v and n customers, score = 1 + floor(bins * L(v) / n).  Equal keys
 *	  always get equal scores; SQL gives the same with
 *	  1 + floor(bins * (rank() OVER (ORDER BY key) - 1) / count(*) OVER ()).
 *	- thresholds: ascending cut points per dimension; see RfmThresholdScore.
 *	- a customer with frequency 0 (no order in the window) scores R1 F1 M1
 *	  (111, "Lost" in the default map) whatever their ranks, in batch and
 *	  live alike: no order in the window never means recent activity.  They
 *	  still count in the quantiles of the others.
 *	Keys: recency = -recency_days (customers without orders rank worst),
 *	frequency, monetary (converted to double for ranking only; equal numerics
 *	give equal doubles, so ties are exact).
 */
#ifndef LOYALTY_RFM_H
#define LOYALTY_RFM_H

#include "postgres.h"

#include "rfm_score.h"
#include "datatype/timestamp.h"
#include "utils/date.h"
#include "utils/numeric.h"

#define RFM_MIN_BINS	2
#define RFM_MAX_BINS	9
#define RFM_DEFAULT_BINS 5

/* Number of days in recency / cut points for threshold scoring */
#define RFM_MAX_THRESHOLDS (RFM_MAX_BINS - 1)

typedef enum RfmDimension
{
	RFM_RECENCY = 0,
	RFM_FREQUENCY = 1,
	RFM_MONETARY = 2
} RfmDimension;

/* Ranking keys of one customer (higher is better in every dimension). */
typedef struct RfmKeys
{
	double		key[3];			/* indexed by RfmDimension */
} RfmKeys;

/* How to turn keys into scores. */
typedef struct RfmScoring
{
	int			bins;			/* 2..9 */
	bool		use_thresholds; /* false: quantiles */
	/*
	 * Threshold cut points per dimension, ascending, bins - 1 of them, in the
	 * dimension's natural unit (recency: days, frequency: orders, monetary:
	 * currency).  See RfmThresholdScore for their meaning.
	 */
	int			nthresholds[3];
	double		thresholds[3][RFM_MAX_THRESHOLDS];
} RfmScoring;

/*
 * Score n customers at once: out[i] is the rfm_score of keys[i].  Quantile
 * scoring sorts each dimension once (O(n log n)); memory is O(n).
 */
extern void RfmScoreAll(const RfmScoring *scoring, const RfmKeys *keys, int n,
						RfmScore *out);

/* Bytes of scratch memory RfmScoreAll takes for n customers. */
extern Size RfmScoreAllMemory(const RfmScoring *scoring, int n);

/* Validate a scoring specification, raising a clear error if unusable. */
extern void RfmCheckScoring(const RfmScoring *scoring);

/*
 * Threshold score (1..bins) of one key of one dimension; key as in RfmKeys.
 * Recency: 1 + number of cut points t with recency_days <= t (no order at
 * all scores 1).  Frequency, monetary: 1 + number of cut points t with
 * value >= t.  When use_thresholds is set, a dimension with nthresholds = 0
 * is scored by quantile (thresholds may be given for some dimensions only).
 */
extern int	RfmThresholdScore(const RfmScoring *scoring, RfmDimension dim,
							  double key);

/* Recency key: -recency_days, or -Infinity when recency_days < 0 (no order). */
extern double RfmRecencyKey(int32 recency_days);

/* Monetary key: the numeric's float8 value, as numeric::float8 gives it. */
extern double RfmMonetaryKey(Numeric monetary);

/*
 * rfm_zone.c: the program time zone (loyalty.settings.timezone); a NULL
 * pg_tz is UTC.  Order days, the instant of a date (00:00 local) or a
 * timestamp without time zone (local time), and as_of - window are all
 * computed in it, by batch and live alike.
 */
struct pg_tz;
extern char *RfmProgramZoneName(void);
extern struct pg_tz *RfmZoneLookup(const char *name);
extern struct pg_tz *RfmProgramZone(void);
extern DateADT RfmZoneDay(TimestampTz t, struct pg_tz *tz);
extern TimestampTz RfmZoneDayStart(DateADT d, struct pg_tz *tz);
extern TimestampTz RfmZoneLocal(Timestamp ts, struct pg_tz *tz);
extern TimestampTz RfmZoneMinus(TimestampTz t, const Interval *iv, struct pg_tz *tz);
extern TimestampTz RfmProgramDayStart(TimestampTz now, struct pg_tz *tz);

#endif							/* LOYALTY_RFM_H */
