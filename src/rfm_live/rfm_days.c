/*
 * rfm_days.c
 *		loyalty.day_buckets: one customer's order count and spend per day
 *		(of the tracking time zone, rfm_live.h), the part of the live statistics that makes windowed frequency
 *		and monetary computable for any as-of time without reading orders.
 *
 * Buckets are kept sorted by day, each with that day's spend.  Stored values
 * are compact: day deltas, order counts and spends as scaled integers in
 * varints, read in place; a window's spend is an integer sum over its
 * buckets, with no numeric built.  Spends that do not fit 64 bits at the
 * value's decimal scale keep numerics (the numeric form), so money stays
 * exact.  Merging a statement's delta and pruning decode the value, work on
 * the decoded buckets and encode the result.  See rfm_live.h for the layout.
 */
#include "loyalty.h"

#include <ctype.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "common/int.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "rfm_live.h"

PG_FUNCTION_INFO_V1(day_buckets_in);
PG_FUNCTION_INFO_V1(day_buckets_out);
PG_FUNCTION_INFO_V1(day_buckets_recv);
PG_FUNCTION_INFO_V1(day_buckets_send);
PG_FUNCTION_INFO_V1(rfm_days_merge);
PG_FUNCTION_INFO_V1(rfm_days_prune);

/*
 * OID of loyalty.day_buckets, looked up once per backend (the type belongs
 * to the extension, so its OID is stable while the library is loaded in a
 * database; a cached value is re-checked cheaply with the syscache).
 */
Oid
RfmDaysTypeOid(void)
{
	static Oid	typoid = InvalidOid;

	if (!OidIsValid(typoid) || !SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(typoid)))
	{
		Oid			nsp = get_namespace_oid("loyalty", false);

		typoid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
								 CStringGetDatum("day_buckets"),
								 ObjectIdGetDatum(nsp));
		if (!OidIsValid(typoid))
			elog(ERROR, "type loyalty.day_buckets does not exist");
	}
	return typoid;
}

/* ---------------------------------------------------------------------
 * The stored form (layout in rfm_live.h)
 * ---------------------------------------------------------------------
 */

/*
 * One decoded bucket.  In a compact set the day's spend is `spend` scaled by
 * the set's scale; in a numeric set it is `num`.  dscale is the display
 * scale of the day's spend (see rfm_live.h).
 */
typedef struct RfmBucket
{
	DateADT		day;
	int32		orders;
	int32		dscale;
	int64		spend;
	Numeric		num;
} RfmBucket;

/* A decoded value: what merge, prune and the output functions work on. */
typedef struct RfmBuckets
{
	int			n;
	bool		numeric;		/* spends in num, else in spend */
	int			scale;			/* compact: spend = day's spend * 10^scale */
	RfmBucket  *b;
} RfmBuckets;

/* A cursor over the bytes of a stored value. */
typedef struct RfmDaysIter
{
	const uint8 *p;
	const uint8 *end;
	bool		numeric;
	int			scale;
	int			n;				/* buckets in the value */
	int			left;			/* buckets not read yet */
	DateADT		day;			/* day of the last bucket read */
	int			runs_left;		/* display-scale runs not started yet */
	int			run_left;		/* buckets left in the current run */
	int			dscale;			/* display scale of the current run */
} RfmDaysIter;

/* A stored value that does not parse: only corruption can cause this. */
static pg_noinline void
RfmDaysCorrupt(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("corrupted day_buckets value")));
}

/* Read an unsigned LEB128 varint. */
static inline uint64
RfmGetVarint(RfmDaysIter *it)
{
	uint64		v = 0;
	int			shift = 0;

	for (;;)
	{
		uint8		b;

		if (unlikely(it->p >= it->end || shift > 63))
			RfmDaysCorrupt();
		b = *it->p++;
		v |= (uint64) (b & 0x7F) << shift;
		if (!(b & 0x80))
			return v;
		shift += 7;
	}
}

/* Write an unsigned LEB128 varint (at most 10 bytes). */
static inline uint8 *
RfmPutVarint(uint8 *p, uint64 v)
{
	while (v >= 0x80)
	{
		*p++ = (uint8) (v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8) v;
	return p;
}

static inline uint64
RfmZigzag(int64 v)
{
	return ((uint64) v << 1) ^ (uint64) (v >> 63);
}

static inline int64
RfmUnzigzag(uint64 v)
{
	return (int64) (v >> 1) ^ -(int64) (v & 1);
}

/*
 * Start reading a value: parse its header up to the first bucket.  d may
 * have a short varlena header (it is read in place).
 */
static void
RfmDaysIterInit(RfmDays *d, RfmDaysIter *it)
{
	uint8		flags;
	uint64		n;

	it->p = (const uint8 *) VARDATA_ANY(d);
	it->end = it->p + VARSIZE_ANY_EXHDR(d);
	if (it->end - it->p < 2)
		RfmDaysCorrupt();
	flags = *it->p++;
	if ((flags & RFM_DAYS_FORMAT_MASK) != RFM_DAYS_FORMAT_1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("unsupported day_buckets format %d", flags & RFM_DAYS_FORMAT_MASK)));
	it->numeric = (flags & RFM_DAYS_NUMERIC) != 0;
	it->scale = *it->p++;
	n = RfmGetVarint(it);
	if (n > PG_INT32_MAX || it->scale > RFM_DAYS_MAX_SCALE)
		RfmDaysCorrupt();
	it->n = it->left = (int) n;
	it->day = 0;
	if (n > 0)
		it->day = (DateADT) RfmUnzigzag(RfmGetVarint(it));
	it->runs_left = (flags & RFM_DAYS_RUNS) ? (int) RfmGetVarint(it) : 0;
	it->run_left = 0;
	it->dscale = it->scale;
}

/*
 * Read the next bucket into *b (b->num is palloc'd in the numeric form).
 * False when every bucket has been read.
 */
static inline bool
RfmDaysIterNext(RfmDaysIter *it, RfmBucket *b)
{
	uint64		tag;

	if (it->left == 0)
		return false;
	tag = RfmGetVarint(it);
	if (it->left < it->n)
		it->day += (DateADT) (tag >> 2);
	it->left--;
	b->day = it->day;
	b->orders = (tag & 3) ? (int32) (tag & 3) : (int32) RfmUnzigzag(RfmGetVarint(it));
	if (!it->numeric)
	{
		if (unlikely(it->run_left == 0))
		{
			if (it->runs_left > 0)
			{
				it->run_left = (int) RfmGetVarint(it);
				if (it->p >= it->end || it->run_left <= 0)
					RfmDaysCorrupt();
				it->dscale = *it->p++;
				it->runs_left--;
			}
			else
			{
				it->run_left = PG_INT32_MAX;
				it->dscale = it->scale;
			}
		}
		it->run_left--;
		b->dscale = it->dscale;
		b->spend = RfmUnzigzag(RfmGetVarint(it));
		b->num = NULL;
	}
	else
	{
		uint64		len = RfmGetVarint(it);
		int64		unused;

		if (len < sizeof(uint16) || len > (uint64) (it->end - it->p))
			RfmDaysCorrupt();
		b->num = (Numeric) palloc(VARHDRSZ + len);
		SET_VARSIZE(b->num, VARHDRSZ + len);
		memcpy(VARDATA(b->num), it->p, len);
		it->p += len;
		(void) RfmNumericToInt64(b->num, &unused, &b->dscale);
		b->spend = 0;
	}
	return true;
}

/* Decode a value (NULL: no bucket) into a set. */
static void
RfmBucketsDecode(RfmDays *d, RfmBuckets *set)
{
	RfmDaysIter it;
	int			i = 0;

	set->n = 0;
	set->numeric = false;
	set->scale = 0;
	set->b = NULL;
	if (d == NULL)
		return;
	RfmDaysIterInit(d, &it);
	set->numeric = it.numeric;
	set->scale = it.scale;
	set->b = palloc(sizeof(RfmBucket) * Max(it.n, 1));
	while (RfmDaysIterNext(&it, &set->b[i]))
		i++;
	set->n = i;
}

/* Number of buckets of a value (NULL: none). */
int
RfmDaysCount(RfmDays *d)
{
	RfmDaysIter it;

	if (d == NULL)
		return 0;
	RfmDaysIterInit(d, &it);
	return it.n;
}

/* Day of the first bucket of a value with at least one bucket. */
DateADT
RfmDaysFirstDay(RfmDays *d)
{
	RfmDaysIter it;

	RfmDaysIterInit(d, &it);
	Assert(it.n > 0);
	return it.day;
}

/*
 * Days of a value (NULL: none) with at least one order, and the first of
 * them (*first; DATEVAL_NOEND without one): what the all-time order-day
 * count and the first day's spend of customer_stats follow at a fold.
 */
int64
RfmDaysOrderDays(RfmDays *d, DateADT *first)
{
	RfmDaysIter it;
	RfmBucket	b;
	int64		n = 0;

	*first = DATEVAL_NOEND;
	if (d == NULL)
		return 0;
	RfmDaysIterInit(d, &it);
	while (RfmDaysIterNext(&it, &b))
		if (b.orders > 0)
		{
			if (n++ == 0)
				*first = b.day;
		}
	return n;
}

/* The day's spend of bucket b of a compact set as a numeric. */
static Numeric
RfmBucketNumeric(RfmBuckets *set, RfmBucket *b)
{
	if (set->numeric)
		return b->num;
	Assert(b->spend % RfmPow10Int64[set->scale - b->dscale] == 0);
	return RfmNumericFromScaled(b->spend / RfmPow10Int64[set->scale - b->dscale],
								b->dscale);
}

/* Turn a compact set into a numeric one. */
static void
RfmBucketsToNumeric(RfmBuckets *set)
{
	int			i;

	if (set->numeric)
		return;
	for (i = 0; i < set->n; i++)
		set->b[i].num = RfmBucketNumeric(set, &set->b[i]);
	set->numeric = true;
}

/*
 * Raise a compact set's scale to `scale`; false on int64 overflow, the set
 * then left as it was.
 */
static bool
RfmBucketsRescale(RfmBuckets *set, int scale)
{
	int64		f;
	int64	   *spends;
	int			i;

	Assert(!set->numeric && scale >= set->scale && scale <= RFM_DAYS_MAX_SCALE);
	if (scale == set->scale)
		return true;
	f = RfmPow10Int64[scale - set->scale];
	spends = palloc(sizeof(int64) * Max(set->n, 1));
	for (i = 0; i < set->n; i++)
		if (pg_mul_s64_overflow(set->b[i].spend, f, &spends[i]))
		{
			pfree(spends);
			return false;
		}
	for (i = 0; i < set->n; i++)
		set->b[i].spend = spends[i];
	pfree(spends);
	set->scale = scale;
	return true;
}

/*
 * The compact spends of a set at its largest display scale, into out[];
 * false when that scale exceeds RFM_DAYS_MAX_SCALE or a spend does not fit
 * int64 at it.
 */
static bool
RfmBucketsCompactSpends(RfmBuckets *set, int scale, int64 *out)
{
	int			i;

	if (scale > RFM_DAYS_MAX_SCALE)
		return false;
	for (i = 0; i < set->n; i++)
	{
		RfmBucket  *b = &set->b[i];

		if (!set->numeric)
		{
			/* a compact set: its scale only shrinks to the largest dscale */
			Assert(set->scale >= scale &&
				   b->spend % RfmPow10Int64[set->scale - scale] == 0);
			out[i] = b->spend / RfmPow10Int64[set->scale - scale];
		}
		else
		{
			int64		v;
			int			ds;

			if (!RfmNumericToInt64(b->num, &v, &ds) || ds > scale ||
				pg_mul_s64_overflow(v, RfmPow10Int64[scale - ds], &out[i]))
				return false;
		}
	}
	return true;
}

/*
 * Lay out a set; NULL for no buckets (a customer without buckets stores
 * NULL).  The compact form whenever it is exact, else the numeric form.
 */
static RfmDays *
RfmBucketsEncode(RfmBuckets *set)
{
	int64	   *spends;
	Numeric    *nums = NULL;
	int			scale = 0;
	bool		compact;
	Size		cap;
	RfmDays    *d;
	uint8	   *p;
	int			nruns = 0;
	int			i;

	if (set->n == 0)
		return NULL;
	for (i = 0; i < set->n; i++)
		scale = Max(scale, set->b[i].dscale);
	spends = palloc(sizeof(int64) * set->n);
	compact = RfmBucketsCompactSpends(set, scale, spends);

	/* header, then at most 10 + 10 + 10 bytes a bucket (+ a run header) */
	cap = VARHDRSZ + 2 + 10 + 10 + 10 + (Size) set->n * 41;
	if (!compact)
	{
		RfmBucketsToNumeric(set);
		nums = palloc(sizeof(Numeric) * set->n);
		for (i = 0; i < set->n; i++)
		{
			Numeric		num = set->b[i].num;
			int64		unused;
			int			ds;

			/* carry the display scale in the numeric itself */
			(void) RfmNumericToInt64(num, &unused, &ds);
			if (ds != set->b[i].dscale)
				num = DatumGetNumeric(DirectFunctionCall2(numeric_round,
														  NumericGetDatum(num),
														  Int32GetDatum(set->b[i].dscale)));
			nums[i] = num;
			cap += VARSIZE_ANY_EXHDR(num);
		}
	}

	d = (RfmDays *) palloc(cap);
	p = d->data;
	*p++ = RFM_DAYS_FORMAT_1 | (compact ? 0 : RFM_DAYS_NUMERIC);
	*p++ = (uint8) (compact ? scale : 0);
	p = RfmPutVarint(p, (uint64) set->n);
	p = RfmPutVarint(p, RfmZigzag(set->b[0].day));
	if (compact)
	{
		/* display-scale runs, unless every bucket has the value's scale */
		bool		uniform = true;

		for (i = 0; i < set->n; i++)
		{
			if (i == 0 || set->b[i].dscale != set->b[i - 1].dscale)
				nruns++;
			uniform &= set->b[i].dscale == scale;
		}
		if (uniform)
			nruns = 0;
		else
		{
			d->data[0] |= RFM_DAYS_RUNS;
			p = RfmPutVarint(p, (uint64) nruns);
		}
	}
	for (i = 0; i < set->n; i++)
	{
		RfmBucket  *b = &set->b[i];
		uint64		delta = i == 0 ? 0 : (uint64) ((int64) b->day - set->b[i - 1].day);
		uint64		ocode = (b->orders >= 1 && b->orders <= 3) ? (uint64) b->orders : 0;

		Assert(i == 0 || b->day > set->b[i - 1].day);
		p = RfmPutVarint(p, (delta << 2) | ocode);
		if (ocode == 0)
			p = RfmPutVarint(p, RfmZigzag(b->orders));
		if (compact)
		{
			if (nruns > 0 && (i == 0 || b->dscale != set->b[i - 1].dscale))
			{
				/* a run header: how many buckets share this display scale */
				int			k = i;

				while (k < set->n && set->b[k].dscale == b->dscale)
					k++;
				p = RfmPutVarint(p, (uint64) (k - i));
				*p++ = (uint8) b->dscale;
			}
			p = RfmPutVarint(p, RfmZigzag(spends[i]));
		}
		else
		{
			Size		len = VARSIZE_ANY_EXHDR(nums[i]);

			p = RfmPutVarint(p, (uint64) len);
			memcpy(p, VARDATA_ANY(nums[i]), len);
			p += len;
		}
	}
	Assert((Size) (p - (uint8 *) d) <= cap);
	SET_VARSIZE(d, p - (uint8 *) d);
	return d;
}

/*
 * Build a value from buckets sorted by day, each day at most once, with the
 * spend of that day alone; empty buckets (no order, zero spend) are left
 * out, though their display scale carries over to later days as it would
 * in a running sum.
 */
RfmDays *
RfmDaysBuild(RfmDayEntry *entries, int n)
{
	RfmBuckets	set;
	int			dscale = 0;
	int			i;

	set.n = 0;
	set.numeric = true;
	set.scale = 0;
	set.b = palloc(sizeof(RfmBucket) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		RfmBucket  *b = &set.b[set.n];
		int64		unused;
		int			ds;

		(void) RfmNumericToInt64(entries[i].spend, &unused, &ds);
		dscale = Max(dscale, ds);
		if (entries[i].orders == 0 && LoyaltyNumericIsZero(entries[i].spend))
			continue;
		Assert(set.n == 0 || entries[i].day > set.b[set.n - 1].day);
		b->day = entries[i].day;
		b->orders = entries[i].orders;
		b->dscale = dscale;
		b->spend = 0;
		b->num = entries[i].spend;
		set.n++;
	}
	return RfmBucketsEncode(&set);
}

/*
 * Merge two sets of one form (compact ones at one scale) into *out, as
 * RfmDaysMerge describes.  False when a compact day's spend overflows int64.
 */
static bool
RfmBucketsMerge(RfmBuckets *a, RfmBuckets *delta, RfmBuckets *out)
{
	int			dscale_a = 0;	/* display scale of a up to here */
	int			dscale_d = 0;	/* display scale of delta up to here */
	int			i = 0,
				j = 0;

	Assert(a->numeric == delta->numeric && (a->numeric || a->scale == delta->scale));
	out->n = 0;
	out->numeric = a->numeric;
	out->scale = a->scale;
	out->b = palloc(sizeof(RfmBucket) * Max(a->n + delta->n, 1));
	while (i < a->n || j < delta->n)
	{
		RfmBucket  *x = NULL;
		RfmBucket  *y = NULL;
		RfmBucket  *o = &out->b[out->n];
		int64		orders;

		if (j >= delta->n || (i < a->n && a->b[i].day < delta->b[j].day))
			x = &a->b[i++];
		else if (i >= a->n || delta->b[j].day < a->b[i].day)
			y = &delta->b[j++];
		else
		{
			x = &a->b[i++];
			y = &delta->b[j++];
		}
		if (x)
			dscale_a = x->dscale;
		if (y)
			dscale_d = y->dscale;
		orders = (int64) (x ? x->orders : 0) + (y ? y->orders : 0);
		if (orders > PG_INT32_MAX || orders < PG_INT32_MIN)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("too many orders on one day for one customer")));
		o->day = x ? x->day : y->day;
		o->orders = (int32) orders;
		o->dscale = Max(dscale_a, dscale_d);
		o->spend = 0;
		o->num = NULL;
		if (!out->numeric)
		{
			if (x && y)
			{
				if (pg_add_s64_overflow(x->spend, y->spend, &o->spend))
					return false;
			}
			else
				o->spend = x ? x->spend : y->spend;
		}
		else if (x && y)
			o->num = LoyaltyNumericAdd(x->num, y->num);
		else
			o->num = x ? x->num : y->num;
		/* a bucket the delta empties has no order and no spend of its own */
		if (y && o->orders == 0 &&
			(out->numeric ? LoyaltyNumericIsZero(o->num) : o->spend == 0))
			continue;
		out->n++;
	}
	return true;
}

/*
 * Add a delta to a stored value: per day, orders and spends add up; buckets
 * that the delta empties are dropped.  Either argument may be NULL (no
 * buckets).  Compact values merge in int64 at the larger of their scales;
 * when a spend would overflow, both sides are merged as numerics and the
 * result keeps the numeric form if it needs it.
 */
RfmDays *
RfmDaysMerge(RfmDays *a, RfmDays *delta)
{
	RfmBuckets	sa;
	RfmBuckets	sd;
	RfmBuckets	out;

	if (delta == NULL || RfmDaysCount(delta) == 0)
		return a;
	RfmBucketsDecode(a, &sa);
	RfmBucketsDecode(delta, &sd);
	if (!sa.numeric && !sd.numeric)
	{
		int			scale = Max(sa.scale, sd.scale);

		if (RfmBucketsRescale(&sa, scale) && RfmBucketsRescale(&sd, scale) &&
			RfmBucketsMerge(&sa, &sd, &out))
			return RfmBucketsEncode(&out);
	}
	RfmBucketsToNumeric(&sa);
	RfmBucketsToNumeric(&sd);
	(void) RfmBucketsMerge(&sa, &sd, &out);
	return RfmBucketsEncode(&out);
}

/*
 * Drop the buckets of days before `before`.  The buckets kept keep their
 * spends and display scales.
 */
RfmDays *
RfmDaysPrune(RfmDays *a, DateADT before)
{
	RfmBuckets	set;
	int			k = 0;

	if (a == NULL)
		return NULL;
	if (RfmDaysCount(a) == 0 || RfmDaysFirstDay(a) >= before)
		return a;
	RfmBucketsDecode(a, &set);
	while (k < set.n && set.b[k].day < before)
		k++;
	set.b += k;
	set.n -= k;
	return RfmBucketsEncode(&set);
}

/*
 * Orders and spend of the days from..to (inclusive), and the latest day up
 * to `to` with an order (recency when the last order lies after as-of).
 * sum->money is the spend as an exact sum with the display scale of the
 * last bucket in the window (zero, scale 0, without one), what the
 * difference of two cumulative numerics gave; allocations it needs (a
 * numeric beyond 128 bits) go to cxt.  For a compact value this is integer
 * arithmetic only, without allocation.  sum->spend is the same as a
 * numeric, computed only if want_spend.  d may be NULL.
 */
void
RfmDaysWindow(RfmDays *d, DateADT from, DateADT to, RfmDaysSum *sum,
			  bool want_spend, MemoryContext cxt)
{
	RfmDaysIter it;
	RfmBucket	b;
	bool		in_window = false;
	int			dscale = 0;
	int128		acc = 0;		/* compact form: the window's scaled spend */
	Numeric		num = LoyaltyNumericZero(); /* numeric form: its spend */

	sum->orders = 0;
	sum->days = 0;
	sum->spend = LoyaltyNumericZero();
	memset(&sum->money, 0, sizeof(RfmMoney));
	sum->has_order = false;
	sum->last_order_day = 0;
	if (d == NULL)
		return;
	RfmDaysIterInit(d, &it);
	while (RfmDaysIterNext(&it, &b) && b.day <= to)
	{
		if (b.orders > 0)
		{
			sum->has_order = true;
			sum->last_order_day = b.day;
		}
		if (b.day >= from)
		{
			sum->orders += b.orders;
			if (b.orders > 0)
				sum->days++;
			if (!it.numeric)
				acc += b.spend;
			else
				num = LoyaltyNumericAdd(num, b.num);
			dscale = b.dscale;
			in_window = true;
		}
	}
	if (in_window && !it.numeric)
	{
		sum->money.v.i = it.scale == dscale ? acc
			: acc / RfmPow10Int64[it.scale - dscale];
		sum->money.scale = (int16) dscale;
	}
	else if (in_window)
	{
		RfmAmount	amount;

		num = DatumGetNumeric(DirectFunctionCall2(numeric_round, NumericGetDatum(num),
												  Int32GetDatum(dscale)));
		RfmDecodeAmount(LOYALTY_AMOUNT_NUMERIC, NumericGetDatum(num), &amount);
		RfmMoneyAdd(&sum->money, &amount, cxt);
	}
	if (want_spend && in_window)
		sum->spend = RfmMoneyToNumeric(&sum->money);
}

/* ---------------------------------------------------------------------
 * Text and binary I/O
 *
 * Text form: {YYYY-MM-DD:orders:spend,...} with the spend of each day
 * (not cumulative), days strictly ascending, no empty bucket; '{}' is the
 * empty value.  Stored values never have negative order counts.
 * ---------------------------------------------------------------------
 */

/* The empty value of the text form '{}': a header with no bucket. */
static RfmDays *
RfmDaysEmpty(void)
{
	Size		sz = VARHDRSZ + 3;
	RfmDays    *d = (RfmDays *) palloc(sz);

	SET_VARSIZE(d, sz);
	d->data[0] = RFM_DAYS_FORMAT_1;
	d->data[1] = 0;				/* scale */
	d->data[2] = 0;				/* n, as a one-byte varint */
	return d;
}

/* Raise the input-syntax error of day_buckets with a detail sentence. */
static void
RfmDaysSyntaxError(const char *input, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type day_buckets: \"%s\"", input),
			 errdetail("%s", detail)));
}

/*
 * Check one parsed bucket against its predecessor: the rules every stored
 * value obeys, shared by text and binary input.
 */
static void
RfmDaysCheckEntry(const char *input, RfmDayEntry *e, RfmDayEntry *prev)
{
	if (DATE_NOT_FINITE(e->day))
		RfmDaysSyntaxError(input, "A bucket day must be a finite date.");
	if (prev != NULL && e->day <= prev->day)
		RfmDaysSyntaxError(input, "Bucket days must be strictly ascending.");
	if (e->orders < 0)
		RfmDaysSyntaxError(input, "A bucket cannot hold a negative number of orders.");
	if (numeric_is_nan(e->spend) || numeric_is_inf(e->spend))
		RfmDaysSyntaxError(input, "A bucket spend must be a finite number.");
	if (e->orders == 0 && LoyaltyNumericIsZero(e->spend))
		RfmDaysSyntaxError(input, "A bucket cannot be empty (no order and zero spend).");
}

/* Parse YYYY-MM-DD[ BC] into a date, false if it is not a valid date. */
static bool
RfmParseDay(const char *s, DateADT *day)
{
	int			y,
				m,
				d,
				n = 0;
	int			jd;
	int			y2,
				m2,
				d2;
	bool		bc = false;

	if (sscanf(s, "%d-%d-%d%n", &y, &m, &d, &n) != 3 || y < 1 || n == 0)
		return false;
	if (strcmp(s + n, " BC") == 0)
		bc = true;
	else if (s[n] != '\0')
		return false;
	if (bc)
		y = -(y - 1);
	if (!IS_VALID_JULIAN(y, m, d))
		return false;
	jd = date2j(y, m, d);
	j2date(jd, &y2, &m2, &d2);
	if (y2 != y || m2 != m || d2 != d)
		return false;
	*day = jd - POSTGRES_EPOCH_JDATE;
	return !DATE_NOT_FINITE(*day) && IS_VALID_DATE(*day);
}

/* Parse an optionally signed decimal int32, false on anything else. */
static bool
RfmParseCount(const char *s, int32 *out)
{
	char	   *end;
	long		v;

	if (*s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < PG_INT32_MIN || v > PG_INT32_MAX ||
		!(isdigit((unsigned char) *s) || *s == '-' || *s == '+'))
		return false;
	*out = (int32) v;
	return true;
}

/* Whether s is [+-]digits[.digits], what numeric_in then reads without fail. */
static bool
RfmLooksDecimal(const char *s)
{
	bool		digits = false;

	if (*s == '+' || *s == '-')
		s++;
	while (isdigit((unsigned char) *s))
		s++, digits = true;
	if (*s == '.')
	{
		s++;
		while (isdigit((unsigned char) *s))
			s++, digits = true;
	}
	return digits && *s == '\0';
}

/*
 * day_buckets_in: parse the text form.  Days are ISO dates, counts
 * integers, spends plain decimal numbers; anything else is a syntax error
 * of day_buckets naming the part at fault.
 */
Datum
day_buckets_in(PG_FUNCTION_ARGS)
{
	char	   *input = PG_GETARG_CSTRING(0);
	char	   *s = pstrdup(input);
	char	   *p;
	char	   *end;
	int			cap = 8;
	int			n = 0;
	RfmDayEntry *entries = palloc(sizeof(RfmDayEntry) * cap);

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	if (*s != '{' || end == s || end[-1] != '}')
		RfmDaysSyntaxError(input, "A day_buckets value is enclosed in braces, e.g. {2026-10-31:2:120.50}.");
	end[-1] = '\0';
	p = s + 1;
	if (*p != '\0')
	{
		for (;;)
		{
			char	   *comma = strchr(p, ',');
			char	   *c1;
			char	   *c2;
			RfmDayEntry e;
			int32		orders;

			if (comma)
				*comma = '\0';
			c1 = strchr(p, ':');
			c2 = c1 ? strchr(c1 + 1, ':') : NULL;
			if (c1 == NULL || c2 == NULL || strchr(c2 + 1, ':') != NULL)
				RfmDaysSyntaxError(input, "Each bucket is day:orders:spend.");
			*c1 = '\0';
			*c2 = '\0';
			if (*p == '\0' || c1[1] == '\0' || c2[1] == '\0')
				RfmDaysSyntaxError(input, "Each bucket is day:orders:spend.");
			if (!RfmParseDay(p, &e.day))
				RfmDaysSyntaxError(input, "A bucket day is a valid date written YYYY-MM-DD (with \" BC\" for years before 1).");
			if (!RfmParseCount(c1 + 1, &orders))
				RfmDaysSyntaxError(input, "An order count is an integer.");
			if (!RfmLooksDecimal(c2 + 1))
				RfmDaysSyntaxError(input, "A spend is a decimal number such as -12.50.");
			e.orders = orders;
			e.spend = DatumGetNumeric(DirectFunctionCall3(numeric_in,
														  CStringGetDatum(c2 + 1),
														  ObjectIdGetDatum(InvalidOid),
														  Int32GetDatum(-1)));
			RfmDaysCheckEntry(input, &e, n > 0 ? &entries[n - 1] : NULL);
			if (n == cap)
			{
				cap *= 2;
				entries = repalloc(entries, sizeof(RfmDayEntry) * cap);
			}
			entries[n++] = e;
			if (comma == NULL)
				break;
			p = comma + 1;
		}
	}
	if (n == 0)
		PG_RETURN_RFM_DAYS(RfmDaysEmpty());
	PG_RETURN_RFM_DAYS(RfmDaysBuild(entries, n));
}

/* Write a day in ISO form whatever DateStyle says. */
static void
RfmAppendDay(StringInfo buf, DateADT day)
{
	struct pg_tm tm;
	char		s[MAXDATELEN + 1];

	j2date(day + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	EncodeDateOnly(&tm, USE_ISO_DATES, s);
	appendStringInfoString(buf, s);
}

/* day_buckets_out: the text form, with the spend of each day. */
Datum
day_buckets_out(PG_FUNCTION_ARGS)
{
	RfmDays    *d = PG_GETARG_RFM_DAYS(0);
	StringInfoData buf;
	RfmBuckets	set;
	int			i;

	RfmBucketsDecode(d, &set);
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < set.n; i++)
	{
		Numeric		own = RfmBucketNumeric(&set, &set.b[i]);

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		RfmAppendDay(&buf, set.b[i].day);
		appendStringInfo(&buf, ":%d:%s", set.b[i].orders,
						 DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(own))));
	}
	appendStringInfoChar(&buf, '}');
	PG_RETURN_CSTRING(buf.data);
}

/*
 * day_buckets_recv: binary input, int32 count then per bucket int32 day,
 * int32 orders and the day's spend in numeric's binary form; validated like
 * the text form.
 */
Datum
day_buckets_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int32		n = pq_getmsgint(buf, 4);
	RfmDayEntry *entries;
	int			i;

	if (n < 0 || n > (int32) (MaxAllocSize / sizeof(RfmDayEntry)) - 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid bucket count %d in external day_buckets value", n)));
	entries = palloc(sizeof(RfmDayEntry) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		int32		len;
		StringInfoData nbuf;

		entries[i].day = pq_getmsgint(buf, 4);
		entries[i].orders = pq_getmsgint(buf, 4);
		len = pq_getmsgint(buf, 4);
		if (len < 0 || len > buf->len - buf->cursor)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid spend length in external day_buckets value")));
		initReadOnlyStringInfo_compat(&nbuf, &buf->data[buf->cursor], len);
		buf->cursor += len;
		entries[i].spend = DatumGetNumeric(DirectFunctionCall3(numeric_recv,
															   PointerGetDatum(&nbuf),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));
		if (DATE_NOT_FINITE(entries[i].day) || entries[i].orders < 0 ||
			(i > 0 && entries[i].day <= entries[i - 1].day) ||
			numeric_is_nan(entries[i].spend) || numeric_is_inf(entries[i].spend) ||
			(entries[i].orders == 0 && LoyaltyNumericIsZero(entries[i].spend)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid bucket in external day_buckets value"),
					 errdetail("Buckets must have strictly ascending finite days, no negative order count, a finite spend and must not be empty.")));
	}
	if (n == 0)
		PG_RETURN_RFM_DAYS(RfmDaysEmpty());
	PG_RETURN_RFM_DAYS(RfmDaysBuild(entries, n));
}

/* day_buckets_send: the binary form read by day_buckets_recv. */
Datum
day_buckets_send(PG_FUNCTION_ARGS)
{
	RfmDays    *d = PG_GETARG_RFM_DAYS(0);
	StringInfoData buf;
	RfmBuckets	set;
	int			i;

	RfmBucketsDecode(d, &set);
	pq_begintypsend(&buf);
	pq_sendint32(&buf, set.n);
	for (i = 0; i < set.n; i++)
	{
		Numeric		own = RfmBucketNumeric(&set, &set.b[i]);
		bytea	   *nb = DatumGetByteaPP(DirectFunctionCall1(numeric_send, NumericGetDatum(own)));

		pq_sendint32(&buf, set.b[i].day);
		pq_sendint32(&buf, set.b[i].orders);
		pq_sendint32(&buf, VARSIZE_ANY_EXHDR(nb));
		pq_sendbytes(&buf, VARDATA_ANY(nb), VARSIZE_ANY_EXHDR(nb));
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/*
 * loyalty._rfm_days_merge(stored, delta): the stored buckets with a
 * statement's delta added; NULL stands for no bucket on either side.  Used
 * by the upsert of the tracking triggers.
 */
Datum
rfm_days_merge(PG_FUNCTION_ARGS)
{
	RfmDays    *a = PG_ARGISNULL(0) ? NULL : PG_GETARG_RFM_DAYS(0);
	RfmDays    *d = PG_ARGISNULL(1) ? NULL : PG_GETARG_RFM_DAYS(1);
	RfmDays    *r;

	if (a != NULL && RfmDaysCount(a) == 0)
		a = NULL;
	r = RfmDaysMerge(a, d);
	if (r == NULL || RfmDaysCount(r) == 0)
		PG_RETURN_NULL();
	PG_RETURN_RFM_DAYS(r);
}

/*
 * loyalty._rfm_days_prune(buckets, before): the buckets of days on or after
 * `before` (NULL when none is left).  refresh_segments prunes with it.
 */
Datum
rfm_days_prune(PG_FUNCTION_ARGS)
{
	RfmDays    *a = PG_GETARG_RFM_DAYS(0);
	DateADT		before = PG_GETARG_DATEADT(1);
	RfmDays    *r;

	if (RfmDaysCount(a) == 0)
		PG_RETURN_NULL();
	r = RfmDaysPrune(a, before);
	if (r == NULL)
		PG_RETURN_NULL();
	PG_RETURN_RFM_DAYS(r);
}

/*
 * The opposite of a value: every bucket's orders and spend negated (the
 * delta that removes what the value adds).  Pending tracked changes keep
 * the orders a statement removed as a separate, valid day_buckets value
 * (stored values never hold negative counts); this turns it back into a
 * delta.  NULL for NULL or an empty value.
 */
RfmDays *
RfmDaysNegate(RfmDays *d)
{
	RfmBuckets	set;
	RfmDayEntry *entries;
	int			i;

	if (d == NULL || RfmDaysCount(d) == 0)
		return NULL;
	RfmBucketsDecode(d, &set);
	entries = palloc(sizeof(RfmDayEntry) * set.n);
	for (i = 0; i < set.n; i++)
	{
		entries[i].day = set.b[i].day;
		entries[i].orders = -set.b[i].orders;
		entries[i].spend = LoyaltyNumericSub(LoyaltyNumericZero(), RfmBucketNumeric(&set, &set.b[i]));
	}
	return RfmDaysBuild(entries, set.n);
}

PG_FUNCTION_INFO_V1(rfm_days_minus);

/*
 * loyalty._rfm_days_minus(added, removed): added - removed, a delta that
 * may hold negative counts (NULL = no bucket on either side; NULL when
 * nothing is left).  Folds and readers turn the pending changes' added and
 * removed buckets into the delta they apply with it.
 */
Datum
rfm_days_minus(PG_FUNCTION_ARGS)
{
	RfmDays    *a = PG_ARGISNULL(0) ? NULL : PG_GETARG_RFM_DAYS(0);
	RfmDays    *b = PG_ARGISNULL(1) ? NULL : PG_GETARG_RFM_DAYS(1);
	RfmDays    *r;

	if (a != NULL && RfmDaysCount(a) == 0)
		a = NULL;
	b = RfmDaysNegate(b);
	if (a == NULL)
		r = b;
	else
		r = RfmDaysMerge(a, b);
	if (r == NULL || RfmDaysCount(r) == 0)
		PG_RETURN_NULL();
	PG_RETURN_RFM_DAYS(r);
}

PG_FUNCTION_INFO_V1(day_buckets_entries);

/*
 * loyalty.day_buckets_entries(buckets): the buckets as rows (day, orders,
 * spend of that day), for inspection and for checks that compare the live
 * statistics with the orders they come from.
 */
Datum
day_buckets_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RfmDays    *d = PG_GETARG_RFM_DAYS(0);
	RfmBuckets	set;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	RfmBucketsDecode(d, &set);
	for (i = 0; i < set.n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = DateADTGetDatum(set.b[i].day);
		values[1] = Int32GetDatum(set.b[i].orders);
		values[2] = NumericGetDatum(RfmBucketNumeric(&set, &set.b[i]));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
