/*
 * rfm_scoring.c
 *		Turning per-customer RFM keys into scores 1..bins (5 = best), shared by
 *		the batch path (rfm_segmentation) and the live path (refresh_segments).
 *
 * Quantile scoring (rfm.h): with n customers and L(v) the number of customers
 * whose key is strictly worse (smaller) than v,
 *
 *		score = 1 + floor(bins * L(v) / n)
 *
 * which is what SQL computes with
 *
 *		1 + floor(bins * (rank() OVER (ORDER BY key) - 1) / count(*) OVER ())
 *
 * Equal keys have the same L, hence the same score, whatever their number:
 * a tie never straddles a cut point (SQL ntile() splits ties arbitrarily).
 * The cut point between score s and s + 1 is the smallest key v with
 * L(v) >= s * n / bins, so a score may hold more (a big tie) or fewer
 * customers than n / bins, and a score may even be empty.
 *
 * Nobody is sorted: a dimension whose keys are all integers in a narrow
 * range (recency in days, frequency) is scored by counting the customers of
 * each value; any other (monetary) by selecting the bins - 1 cut keys on an
 * order-preserving 64-bit image of the double key (RfmQuantileBySelection).
 * Both take O(n) time and at most 8 bytes per customer of scratch memory.
 *
 * Threshold scoring: see RfmThresholdScore.
 */
#include "loyalty.h"

#include <math.h>

#include "miscadmin.h"
#include "rfm.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

static const char *const rfm_dimension_names[3] = {"recency", "frequency", "monetary"};

/*
 * Map a double to a uint64 whose unsigned order is the double's order, with
 * -0 equal to +0 and every NaN equal to every other NaN and above +Infinity
 * (the float8 btree order), so that equal keys map to equal images.
 */
static inline uint64
RfmKeyImage(double key)
{
	uint64		bits;

	if (isnan(key))
		return UINT64CONST(0xFFF8000000000000);
	if (key == 0.0)
		key = 0.0;				/* -0 -> +0 */
	memcpy(&bits, &key, sizeof(bits));
	if (bits & UINT64CONST(0x8000000000000000))
		return ~bits;
	return bits | UINT64CONST(0x8000000000000000);
}

/*
 * Keys that are all integers in a range of at most this many values (or
 * -Infinity) are ranked by counting instead of sorting.
 */
#define RFM_COUNTING_MAX_RANGE (1 << 20)
/* ... and of at most this many values for n customers (memory stays O(n)) */
#define RFM_COUNTING_RANGE_PER(n) (4 * (double) (n) + 1024)

/*
 * Score every customer in one dimension by quantile when every key is an
 * integer in a narrow range, or -Infinity (recency in days, with -Infinity
 * for no order; frequency as an order count): count each value, turn the
 * counts into the number of customers strictly worse than each value, and
 * score each customer from its value's entry.  Three passes over the keys
 * and one array entry per value in the range, no sort.  Returns false,
 * having done nothing, when the keys do not qualify.
 */
static bool
RfmQuantileByCounting(const RfmKeys *keys, uint32 n, int dim, int bins, uint8 *score)
{
	double		lo = 0.0;
	double		hi = 0.0;
	bool		any = false;
	uint32		range = 0;
	uint32	   *counts;
	uint8	   *table;
	uint64		worse = 0;
	uint32		i;

	for (i = 0; i < n; i++)
	{
		double		k = keys[i].key[dim];

		if (isinf(k) && k < 0)
			continue;
		/* NaN and +Infinity fail here too */
		if (!(k == floor(k)) || fabs(k) > (double) PG_INT32_MAX)
			return false;
		if (!any || k < lo)
			lo = k;
		if (!any || k > hi)
			hi = k;
		any = true;
	}
	if (any)
	{
		if (hi - lo >= RFM_COUNTING_MAX_RANGE || hi - lo >= RFM_COUNTING_RANGE_PER(n))
			return false;
		range = (uint32) (hi - lo) + 1;
	}

	/* entry 0 counts -Infinity, entry 1 + (k - lo) the value k */
	counts = palloc0(sizeof(uint32) * (range + 1));
	table = palloc(range + 1);
	for (i = 0; i < n; i++)
	{
		double		k = keys[i].key[dim];

		counts[isinf(k) ? 0 : 1 + (uint32) (int64) (k - lo)]++;
	}
	for (i = 0; i <= range; i++)
	{
		table[i] = (uint8) (1 + ((uint64) bins * worse) / n);
		worse += counts[i];
	}
	for (i = 0; i < n; i++)
	{
		double		k = keys[i].key[dim];

		score[i] = table[isinf(k) ? 0 : 1 + (uint32) (int64) (k - lo)];
	}
	pfree(counts);
	pfree(table);
	return true;
}

/* Buckets of the first selection pass: the top 16 bits of a key image. */
#define RFM_SELECT_BITS 16
#define RFM_SELECT_BUCKETS (1 << RFM_SELECT_BITS)

/* qsort comparator of key images. */
static int
RfmImageCmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * Score every customer in one dimension by quantile without sorting them.
 * With the keys in ascending order k_0 <= ... <= k_{n-1}, a key v has
 * L(v) >= T exactly when v > k_{T-1}, so
 *
 *		score(v) = 1 + #{s in 1..bins-1 : v > k_{T_s - 1}},  T_s = ceil(s n / bins)
 *
 * which needs only the bins - 1 cut keys k_{T_s - 1}.  They are selected by
 * key image: a histogram of the top 16 bits locates the bucket holding each
 * cut rank, the keys of those buckets (at most bins - 1 of them) are copied
 * out and sorted, and a last pass scores every customer against the cuts.
 * Three passes over the keys; scratch memory is the histogram and the keys
 * of the cut buckets.
 */
static void
RfmQuantileBySelection(const RfmKeys *keys, uint32 n, int dim, int bins, uint8 *score)
{
	uint32	   *start = palloc0(sizeof(uint32) * (RFM_SELECT_BUCKETS + 1));
	int8	   *slot_of = palloc(RFM_SELECT_BUCKETS);
	uint64	   *picked[RFM_MAX_BINS];
	uint32		fill[RFM_MAX_BINS];
	uint32		cut_bucket[RFM_MAX_BINS];
	uint32		cut_rank[RFM_MAX_BINS];
	uint64		cuts[RFM_MAX_BINS];
	int			ncuts = bins - 1;
	int			nslots = 0;
	int			s;
	uint32		i;
	uint32		b;

	/* histogram, then bucket starts (start[b] = keys in buckets before b) */
	for (i = 0; i < n; i++)
		start[(RfmKeyImage(keys[i].key[dim]) >> (64 - RFM_SELECT_BITS)) + 1]++;
	for (b = 1; b <= RFM_SELECT_BUCKETS; b++)
		start[b] += start[b - 1];

	/* the bucket of each cut rank, and the buckets to copy out */
	memset(slot_of, -1, RFM_SELECT_BUCKETS);
	b = 0;
	for (s = 1; s <= ncuts; s++)
	{
		uint32		rank = (uint32) (((uint64) s * n + bins - 1) / bins) - 1;

		while (start[b + 1] <= rank)
			b++;
		cut_bucket[s] = b;
		cut_rank[s] = rank - start[b];
		if (slot_of[b] < 0)
		{
			slot_of[b] = (int8) nslots;
			picked[nslots] = palloc_extended(sizeof(uint64) * Max(start[b + 1] - start[b], 1),
											 MCXT_ALLOC_HUGE);
			fill[nslots] = 0;
			nslots++;
		}
	}
	for (i = 0; i < n; i++)
	{
		uint64		image = RfmKeyImage(keys[i].key[dim]);
		int			k = slot_of[image >> (64 - RFM_SELECT_BITS)];

		if (k >= 0)
			picked[k][fill[k]++] = image;
	}
	for (s = 0; s < nslots; s++)
		qsort(picked[s], fill[s], sizeof(uint64), RfmImageCmp);
	for (s = 1; s <= ncuts; s++)
		cuts[s] = picked[slot_of[cut_bucket[s]]][cut_rank[s]];

	for (i = 0; i < n; i++)
	{
		uint64		image = RfmKeyImage(keys[i].key[dim]);
		uint8		sc = 1;

		for (s = 1; s <= ncuts; s++)
			sc += (image > cuts[s]);
		score[i] = sc;
	}

	for (s = 0; s < nslots; s++)
		pfree(picked[s]);
	pfree(slot_of);
	pfree(start);
}

/*
 * Threshold score of one key.  The cut points t_1 < ... < t_{bins-1} are in
 * the dimension's natural unit:
 *	- recency (key = -recency_days): score = 1 + #{k : recency_days <= t_k};
 *	  with {30, 90, 180, 365} and 5 bins, <= 30 days -> 5, 31..90 -> 4,
 *	  91..180 -> 3, 181..365 -> 2, > 365 days or no order at all -> 1;
 *	- frequency and monetary (key = the value): score = 1 + #{k : value >= t_k};
 *	  with {2, 4, 8, 16}: 0..1 orders -> 1, 2..3 -> 2, ..., >= 16 -> 5.
 * A NaN key scores 1.  A dimension without thresholds (nthresholds = 0) is
 * scored by quantile in RfmScoreAll; here it scores 1.
 */
int
RfmThresholdScore(const RfmScoring *scoring, RfmDimension dim, double key)
{
	int			nt = scoring->nthresholds[dim];
	const double *t = scoring->thresholds[dim];
	int			score = 1;
	int			k;

	if (isnan(key))
		return 1;
	if (dim == RFM_RECENCY)
	{
		double		days = -key;	/* +Infinity when there is no order */

		for (k = 0; k < nt; k++)
			if (days <= t[k])
				score++;
	}
	else
	{
		for (k = 0; k < nt; k++)
			if (key >= t[k])
				score++;
	}
	return score;
}

/*
 * Ranking key of a recency: minus the days since the last order, and
 * -Infinity for a customer without any order up to as_of (recency_days < 0),
 * so that such customers rank below everyone.
 */
double
RfmRecencyKey(int32 recency_days)
{
	if (recency_days < 0)
		return -get_float8_infinity();
	return -(double) recency_days;
}

/*
 * Ranking key of a monetary value (total or average basket): its float8 value,
 * as numeric::float8 gives it (correctly rounded, so equal numerics give
 * equal keys and the order of distinct numerics is kept or becomes a tie
 * only beyond 15 significant digits).  NaN maps to NaN (ranked best, like
 * float8's order); the aggregates never produce it.
 */
double
RfmMonetaryKey(Numeric monetary)
{
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8_no_overflow,
											  NumericGetDatum(monetary)));
}

/*
 * Check a scoring specification once, before any customer is scored, so that
 * callers report a bad argument instead of producing odd scores.
 */
void
RfmCheckScoring(const RfmScoring *scoring)
{
	int			dim;
	int			with_thresholds = 0;

	if (scoring->bins < RFM_MIN_BINS || scoring->bins > RFM_MAX_BINS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bins must be between %d and %d, not %d",
						RFM_MIN_BINS, RFM_MAX_BINS, scoring->bins)));

	if (!scoring->use_thresholds)
		return;

	for (dim = 0; dim < 3; dim++)
	{
		int			nt = scoring->nthresholds[dim];
		int			k;

		if (nt == 0)
			continue;			/* this dimension is scored by quantile */
		with_thresholds++;
		if (nt != scoring->bins - 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s thresholds must have bins - 1 = %d elements, not %d",
							rfm_dimension_names[dim], scoring->bins - 1, nt),
					 errdetail("With %d bins, %d ascending cut points separate the scores 1 to %d.",
							   scoring->bins, scoring->bins - 1, scoring->bins)));
		for (k = 0; k < nt; k++)
		{
			double		t = scoring->thresholds[dim][k];

			if (isnan(t) || isinf(t))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s thresholds must be finite numbers",
								rfm_dimension_names[dim])));
			if (k > 0 && !(t > scoring->thresholds[dim][k - 1]))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s thresholds must be strictly ascending",
								rfm_dimension_names[dim]),
						 errdetail("Element %d (%g) is not greater than element %d (%g).",
								   k + 1, t, k, scoring->thresholds[dim][k - 1])));
		}
		if (dim == RFM_RECENCY && scoring->thresholds[dim][0] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("recency thresholds must not be negative"),
					 errdetail("They are numbers of days since the last order.")));
	}
	if (with_thresholds == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("threshold scoring needs thresholds for at least one dimension")));
}

/*
 * Scratch memory RfmScoreAll takes for n customers (freed before it
 * returns): one byte per customer and dimension, plus, when some dimension
 * is scored by quantile, at most a key image per customer and a histogram,
 * or a count per value of a narrow range, whichever is larger.  Callers
 * report it.
 */
Size
RfmScoreAllMemory(const RfmScoring *scoring, int n)
{
	Size		bytes = 3 * (Size) Max(n, 0);
	int			dim;

	for (dim = 0; dim < 3; dim++)
		if (!scoring->use_thresholds || scoring->nthresholds[dim] == 0)
			return bytes + Max(sizeof(uint64) * (Size) Max(n, 0) +
							   (sizeof(uint32) + 1) * (RFM_SELECT_BUCKETS + 1),
							   (sizeof(uint32) + 1) * ((Size) RFM_COUNTING_RANGE_PER(Max(n, 0)) + 1));
	return bytes;
}

/*
 * Score n customers at once (rfm.h).  Dimensions with thresholds are scored
 * per customer; the others by quantile, by counting or selection.  Scratch
 * memory (RfmScoreAllMemory: at most 11 bytes per customer and a histogram)
 * is freed before returning.
 */
void
RfmScoreAll(const RfmScoring *scoring, const RfmKeys *keys, int n,
			RfmScore *out)
{
	uint8	   *scores[3];
	int			dim;
	int			i;

	RfmCheckScoring(scoring);
	if (n <= 0)
		return;

	for (dim = 0; dim < 3; dim++)
	{
		scores[dim] = palloc_extended((Size) n, MCXT_ALLOC_HUGE);
		if (scoring->use_thresholds && scoring->nthresholds[dim] > 0)
		{
			for (i = 0; i < n; i++)
				scores[dim][i] = (uint8) RfmThresholdScore(scoring, dim,
														   keys[i].key[dim]);
			continue;
		}
		if (!RfmQuantileByCounting(keys, (uint32) n, dim, scoring->bins, scores[dim]))
			RfmQuantileBySelection(keys, (uint32) n, dim, scoring->bins, scores[dim]);
		CHECK_FOR_INTERRUPTS();
	}

	/*
	 * A customer without an order in the frequency window scores R1 F1 M1
	 * whatever their ranks (rfm.h): no segment that means recent activity
	 * (New, Promising, Champions, ...) may hold them.  They still count in
	 * everyone else's quantiles, so other scores do not move.
	 */
	for (i = 0; i < n; i++)
	{
		if (keys[i].key[RFM_FREQUENCY] <= 0)
			out[i] = RfmScoreMake(1, 1, 1);
		else
			out[i] = RfmScoreMake(scores[RFM_RECENCY][i], scores[RFM_FREQUENCY][i],
								  scores[RFM_MONETARY][i]);
	}

	for (dim = 0; dim < 3; dim++)
		pfree(scores[dim]);
}
