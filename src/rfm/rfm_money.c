/*
 * rfm_money.c
 *		Exact money sums for the RFM statistics: numeric amounts decoded to
 *		scaled 128-bit integers, added without allocation, and encoded back
 *		to numeric once per customer.
 *
 * Summing numerics with numeric_add allocates a result per row; the batch
 * path and the aggregates add one amount per order row, so they decode each
 * amount to (int128 value, display scale) instead and add integers, rescaling
 * when a larger display scale shows up.  The sum's display scale is the
 * largest of its addends', as for SQL sum(numeric), so results print the
 * same.  Anything that does not fit (more than 34 digits, a sum beyond 38)
 * falls back to numeric arithmetic: results are exact in every case.
 *
 * Decoding and encoding read and write numeric's on-disk format directly
 * (the format pg_upgrade keeps stable: a 16-bit header with sign, display
 * scale and, in the short form, the weight; then base-10000 digits).  The
 * encoder produces exactly what numeric.c's make_result() produces: leading
 * and trailing zero digits stripped, zero positive with weight 0, the short
 * header whenever scale and weight fit.
 */
#include "rfm_stats.h"

#include <math.h>

#include "fmgr.h"
#include "rfm.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"

/* numeric's on-disk header, as in utils/adt/numeric.c */
#define RFM_NUMERIC_SIGN_MASK		0xC000
#define RFM_NUMERIC_POS				0x0000
#define RFM_NUMERIC_NEG				0x4000
#define RFM_NUMERIC_SHORT			0x8000
#define RFM_NUMERIC_SPECIAL			0xC000
#define RFM_NUMERIC_DSCALE_MASK		0x3FFF
#define RFM_SHORT_SIGN_MASK			0x2000
#define RFM_SHORT_DSCALE_MASK		0x1F80
#define RFM_SHORT_DSCALE_SHIFT		7
#define RFM_SHORT_DSCALE_MAX		(RFM_SHORT_DSCALE_MASK >> RFM_SHORT_DSCALE_SHIFT)
#define RFM_SHORT_WEIGHT_SIGN_MASK	0x0040
#define RFM_SHORT_WEIGHT_MASK		0x003F
#define RFM_SHORT_WEIGHT_MAX		RFM_SHORT_WEIGHT_MASK
#define RFM_SHORT_WEIGHT_MIN		(-(RFM_SHORT_WEIGHT_MASK + 1))
#define RFM_NBASE					10000
#define RFM_DEC_DIGITS				4

/*
 * Largest number of decimal digits (integer part rounded up to whole base
 * 10000 digits, plus the display scale) decoded to int128: the digit
 * accumulator then stays below 10^38 < 2^127.
 */
#define RFM_MAX_FAST_DIGITS			34

/* Largest power of ten that fits int128 is 10^38. */
#define RFM_MAX_POW10				38

typedef int16 RfmNumericDigit;

/* 10^k as int64, k = 0..18 (10^18 is the largest below 2^63). */
const int64 RfmPow10Int64[RFM_POW10_INT64_COUNT] = {
	INT64CONST(1), INT64CONST(10), INT64CONST(100), INT64CONST(1000),
	INT64CONST(10000), INT64CONST(100000), INT64CONST(1000000),
	INT64CONST(10000000), INT64CONST(100000000), INT64CONST(1000000000),
	INT64CONST(10000000000), INT64CONST(100000000000),
	INT64CONST(1000000000000), INT64CONST(10000000000000),
	INT64CONST(100000000000000), INT64CONST(1000000000000000),
	INT64CONST(10000000000000000), INT64CONST(100000000000000000),
	INT64CONST(1000000000000000000)
};

static int128 rfm_pow10[RFM_MAX_POW10 + 1];
static bool rfm_pow10_ready = false;

/* Powers of ten as int128, computed once per backend. */
static inline const int128 *
RfmPow10(void)
{
	if (unlikely(!rfm_pow10_ready))
	{
		int			k;

		rfm_pow10[0] = 1;
		for (k = 1; k <= RFM_MAX_POW10; k++)
			rfm_pow10[k] = rfm_pow10[k - 1] * 10;
		rfm_pow10_ready = true;
	}
	return rfm_pow10;
}

/* Largest int128 (c.h defines no PG_INT128_MAX in every version). */
#define RFM_INT128_MAX	((int128) (((uint128) 1 << 127) - 1))

/* *x *= 10^k, or false (x unchanged) on overflow. */
static inline bool
RfmMulPow10(int128 *x, int k)
{
	int128		p;
	int128		limit;

	if (k == 0 || *x == 0)
		return true;
	if (k > RFM_MAX_POW10)
		return false;
	p = RfmPow10()[k];
	limit = RFM_INT128_MAX / p;
	if (*x > limit || *x < -limit)
		return false;
	*x *= p;
	return true;
}

/* *x += y, or false (x unchanged) on overflow. */
static inline bool
RfmAdd128(int128 *x, int128 y)
{
	int128		r = (int128) ((uint128) *x + (uint128) y);

	if (((*x ^ r) & (y ^ r)) < 0)
		return false;
	*x = r;
	return true;
}

/*
 * Decode a numeric datum (possibly a packed short varlena straight from a
 * tuple) into value * 10^dscale.  Returns false, leaving *special set for
 * NaN and infinities, when the value does not fit the fast path.
 */
static bool
RfmNumericToScaled(struct varlena *v, int128 *value, int16 *scale,
				   bool *special)
{
	const char *p = VARDATA_ANY(v);
	int			len = VARSIZE_ANY_EXHDR(v);
	uint16		header;
	int			weight;
	int			dscale;
	bool		negative;
	const char *digits;
	int			ndigits;
	int128		acc = 0;
	int			exponent;
	int			i;

	*special = false;
	memcpy(&header, p, sizeof(uint16));
	if ((header & RFM_NUMERIC_SIGN_MASK) == RFM_NUMERIC_SPECIAL)
	{
		*special = true;
		return false;
	}
	if (header & RFM_NUMERIC_SHORT)
	{
		negative = (header & RFM_SHORT_SIGN_MASK) != 0;
		dscale = (header & RFM_SHORT_DSCALE_MASK) >> RFM_SHORT_DSCALE_SHIFT;
		weight = (header & RFM_SHORT_WEIGHT_MASK);
		if (header & RFM_SHORT_WEIGHT_SIGN_MASK)
			weight |= ~RFM_SHORT_WEIGHT_MASK;
		digits = p + sizeof(uint16);
		ndigits = (len - (int) sizeof(uint16)) / (int) sizeof(RfmNumericDigit);
	}
	else
	{
		int16		w;

		negative = (header & RFM_NUMERIC_SIGN_MASK) == RFM_NUMERIC_NEG;
		dscale = header & RFM_NUMERIC_DSCALE_MASK;
		memcpy(&w, p + sizeof(uint16), sizeof(int16));
		weight = w;
		digits = p + sizeof(uint16) + sizeof(int16);
		ndigits = (len - (int) (sizeof(uint16) + sizeof(int16))) / (int) sizeof(RfmNumericDigit);
	}

	if (dscale > RFM_MAX_FAST_DIGITS)
		return false;
	*scale = (int16) dscale;
	if (ndigits == 0)
	{
		*value = 0;
		return true;
	}
	if (RFM_DEC_DIGITS * (weight + 1) + dscale > RFM_MAX_FAST_DIGITS)
		return false;

	/* the last digit stands for 10000^(weight - ndigits + 1) */
	exponent = RFM_DEC_DIGITS * (weight - ndigits + 1) + dscale;
	if (ndigits <= 4 && exponent <= 0)
	{
		/* the common case (up to 16 digits): 64-bit arithmetic only */
		uint64		acc64 = 0;

		for (i = 0; i < ndigits; i++)
		{
			RfmNumericDigit d;

			memcpy(&d, digits + i * sizeof(RfmNumericDigit), sizeof(d));
			acc64 = acc64 * RFM_NBASE + d;
		}
		switch (exponent)
		{
			case -3:
				if (acc64 % 1000 != 0)
					return false;	/* digits beyond dscale: not canonical */
				acc64 /= 1000;
				break;
			case -2:
				if (acc64 % 100 != 0)
					return false;
				acc64 /= 100;
				break;
			case -1:
				if (acc64 % 10 != 0)
					return false;
				acc64 /= 10;
				break;
		}
		acc = (int128) acc64;
	}
	else
	{
		for (i = 0; i < ndigits; i++)
		{
			RfmNumericDigit d;

			memcpy(&d, digits + i * sizeof(RfmNumericDigit), sizeof(d));
			acc = acc * RFM_NBASE + d;
		}
		if (exponent >= 0)
			acc *= RfmPow10()[exponent];
		else
		{
			int128		p10 = RfmPow10()[-exponent];

			if (acc % p10 != 0)
				return false;	/* digits beyond dscale: not canonical */
			acc /= p10;
		}
	}
	*value = negative ? -acc : acc;
	return true;
}

/*
 * A finite numeric as value * 10^dscale in 64 bits, for the compact form of
 * loyalty.day_buckets.  *dscale is always set (0 for NaN and infinities);
 * the result is false when the numeric is special, has digits beyond its
 * display scale or does not fit int64 at its display scale.
 */
bool
RfmNumericToInt64(Numeric num, int64 *value, int *dscale)
{
	struct varlena *v = (struct varlena *) num;
	uint16		header;
	int128		i;
	int16		scale;
	bool		special;

	memcpy(&header, VARDATA_ANY(v), sizeof(uint16));
	if ((header & RFM_NUMERIC_SIGN_MASK) == RFM_NUMERIC_SPECIAL)
		*dscale = 0;
	else if (header & RFM_NUMERIC_SHORT)
		*dscale = (header & RFM_SHORT_DSCALE_MASK) >> RFM_SHORT_DSCALE_SHIFT;
	else
		*dscale = header & RFM_NUMERIC_DSCALE_MASK;
	if (!RfmNumericToScaled(v, &i, &scale, &special) ||
		i > PG_INT64_MAX || i < PG_INT64_MIN)
		return false;
	Assert(scale == *dscale);
	*value = (int64) i;
	return true;
}

/*
 * Build a numeric from base-10000 digits, most significant first, exactly as
 * numeric.c's make_result() would (so the datum is the canonical one).
 */
static Numeric
RfmBuildNumeric(const RfmNumericDigit *digits, int ndigits, int weight,
				bool negative, int dscale)
{
	Numeric		result;
	Size		len;
	char	   *p;

	while (ndigits > 0 && digits[0] == 0)
	{
		digits++;
		ndigits--;
		weight--;
	}
	while (ndigits > 0 && digits[ndigits - 1] == 0)
		ndigits--;
	if (ndigits == 0)
	{
		weight = 0;
		negative = false;
	}

	if (dscale <= RFM_SHORT_DSCALE_MAX &&
		weight <= RFM_SHORT_WEIGHT_MAX && weight >= RFM_SHORT_WEIGHT_MIN)
	{
		uint16		header;

		len = VARHDRSZ + sizeof(uint16) + ndigits * sizeof(RfmNumericDigit);
		result = (Numeric) palloc(len);
		SET_VARSIZE(result, len);
		header = RFM_NUMERIC_SHORT
			| (negative ? RFM_SHORT_SIGN_MASK : 0)
			| (dscale << RFM_SHORT_DSCALE_SHIFT)
			| (weight < 0 ? RFM_SHORT_WEIGHT_SIGN_MASK : 0)
			| (weight & RFM_SHORT_WEIGHT_MASK);
		p = VARDATA(result);
		memcpy(p, &header, sizeof(uint16));
		p += sizeof(uint16);
	}
	else
	{
		uint16		header;
		int16		w = (int16) weight;

		len = VARHDRSZ + sizeof(uint16) + sizeof(int16)
			+ ndigits * sizeof(RfmNumericDigit);
		result = (Numeric) palloc(len);
		SET_VARSIZE(result, len);
		header = (negative ? RFM_NUMERIC_NEG : RFM_NUMERIC_POS)
			| (dscale & RFM_NUMERIC_DSCALE_MASK);
		p = VARDATA(result);
		memcpy(p, &header, sizeof(uint16));
		memcpy(p + sizeof(uint16), &w, sizeof(int16));
		p += sizeof(uint16) + sizeof(int16);
	}
	if (ndigits > 0)
		memcpy(p, digits, ndigits * sizeof(RfmNumericDigit));
	return result;
}

/* floor(x / 4) for negative x too (C division truncates toward zero). */
static inline int
RfmFloorDiv4(int x)
{
	return x >= 0 ? x / 4 : -((-x + 3) / 4);
}

/*
 * The numeric equal to value / 10^scale, display scale "scale".  Values that
 * fit 64 bits once aligned to a whole base-10000 digit take a short loop; the
 * rest go digit by digit through 128-bit arithmetic.
 */
Numeric
RfmNumericFromScaled(int128 value, int scale)
{
	bool		negative = value < 0;
	uint128		mag = negative ? -(uint128) value : (uint128) value;
	int			pad = (RFM_DEC_DIGITS - scale % RFM_DEC_DIGITS) % RFM_DEC_DIGITS;
	RfmNumericDigit buf[16];
	int			n = 0;
	int			low_weight;
	int			k;

	Assert(scale >= 0);
	if (mag == 0)
		return RfmBuildNumeric(NULL, 0, 0, false, scale);

	/* low_weight: weight of the least significant base-10000 digit */
	low_weight = -((scale + pad) / RFM_DEC_DIGITS);
	if (mag <= (uint128) (PG_UINT64_MAX / 1000))
	{
		uint64		m = (uint64) mag;

		for (k = 0; k < pad; k++)
			m *= 10;
		while (m > 0)
		{
			buf[n++] = (RfmNumericDigit) (m % RFM_NBASE);
			m /= RFM_NBASE;
		}
	}
	else
	{
		/*
		 * Decimal digit by digit: dec digit j (least significant first) has
		 * exponent j - scale; put it into base-10000 digit floor((j - scale)
		 * / 4).
		 */
		int			j = 0;

		memset(buf, 0, sizeof(buf));
		low_weight = RfmFloorDiv4(-scale);
		while (mag > 0)
		{
			int			x = j - scale;
			int			w = RfmFloorDiv4(x);
			int			d = (int) (mag % 10);

			buf[w - low_weight] += (RfmNumericDigit) (d * (int) RfmPow10()[x - 4 * w]);
			n = Max(n, w - low_weight + 1);
			mag /= 10;
			j++;
		}
	}

	/* buf holds digits least significant first; reverse into order */
	{
		RfmNumericDigit ordered[16];

		for (k = 0; k < n; k++)
			ordered[k] = buf[n - 1 - k];
		return RfmBuildNumeric(ordered, n, low_weight + n - 1, negative, scale);
	}
}

/*
 * Decode one amount of the given kind for RfmMoneyAdd.  NaN and infinite
 * amounts are rejected: they are not money and would poison every sum.
 */
void
RfmDecodeAmount(LoyaltyAmountKind kind, Datum value, RfmAmount *out)
{
	out->isnull = false;
	out->is_float = false;
	out->is_big = false;
	out->scale = 0;
	switch (kind)
	{
		case LOYALTY_AMOUNT_NUMERIC:
			{
				struct varlena *v = pg_detoast_datum_packed((struct varlena *) DatumGetPointer(value));
				bool		special;

				if (RfmNumericToScaled(v, &out->i, &out->scale, &special))
				{
					out->negative = out->i < 0;
					return;
				}
				if (special)
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("order amount must be a finite number"),
							 errdetail("NaN and infinite amounts cannot be summed as money.")));
				out->is_big = true;
				out->num = DatumGetNumeric(value);
				out->negative = LoyaltyNumericCmp(out->num, LoyaltyNumericZero()) < 0;
				return;
			}
		case LOYALTY_AMOUNT_INT2:
			out->i = DatumGetInt16(value);
			break;
		case LOYALTY_AMOUNT_INT4:
			out->i = DatumGetInt32(value);
			break;
		case LOYALTY_AMOUNT_INT8:
			out->i = DatumGetInt64(value);
			break;
		case LOYALTY_AMOUNT_FLOAT4:
		case LOYALTY_AMOUNT_FLOAT8:
			out->is_float = true;
			out->f = kind == LOYALTY_AMOUNT_FLOAT4 ? (double) DatumGetFloat4(value)
				: DatumGetFloat8(value);
			if (isnan(out->f) || isinf(out->f))
				ereport(ERROR,
						(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
						 errmsg("order amount must be a finite number"),
						 errdetail("NaN and infinite amounts cannot be summed as money.")));
			out->negative = out->f < 0;
			return;
	}
	out->negative = out->i < 0;
}

/* Turn an integer sum into a numeric one, allocated in cxt. */
static void
RfmMoneyPromote(RfmMoney *sum, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);

	sum->v.big = RfmNumericFromScaled(sum->v.i, sum->scale);
	sum->kind = RFM_MONEY_BIG;
	MemoryContextSwitchTo(old);
}

/* sum->v.big += num, the result allocated in cxt. */
static void
RfmMoneyAddNumeric(RfmMoney *sum, Numeric num, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Numeric		prev = sum->v.big;

	sum->v.big = LoyaltyNumericAdd(prev, num);
	pfree(prev);
	MemoryContextSwitchTo(old);
}

/*
 * sum += amount.  Integer amounts are added as scaled integers (rescaling the
 * smaller scale up); on overflow the sum becomes a numeric.  Allocations, if
 * any, go to cxt, the context that owns the sum.
 */
void
RfmMoneyAdd(RfmMoney *sum, const RfmAmount *amount, MemoryContext cxt)
{
	if (amount->isnull)
		return;

	if (amount->is_float)
	{
		if (sum->kind == RFM_MONEY_INT)
		{
			double		prev = (double) sum->v.i / pow(10.0, sum->scale);

			sum->kind = RFM_MONEY_FLOAT;
			sum->v.f = prev;
		}
		if (sum->kind == RFM_MONEY_FLOAT)
		{
			sum->v.f += amount->f;
			return;
		}
		/* a numeric sum receiving a double: keep it numeric */
		RfmMoneyAddNumeric(sum,
						   DatumGetNumeric(DirectFunctionCall1(float8_numeric,
															   Float8GetDatum(amount->f))),
						   cxt);
		return;
	}

	if (sum->kind == RFM_MONEY_FLOAT)
	{
		double		add;

		if (amount->is_big)
			add = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
													 NumericGetDatum(amount->num)));
		else
			add = (double) amount->i / pow(10.0, amount->scale);
		sum->v.f += add;
		return;
	}

	if (sum->kind == RFM_MONEY_INT && !amount->is_big)
	{
		int128		acc = sum->v.i;
		int128		add = amount->i;
		int16		scale = Max(sum->scale, amount->scale);

		/* rescale the side with the smaller scale; on overflow promote */
		if (RfmMulPow10(&acc, scale - sum->scale) &&
			RfmMulPow10(&add, scale - amount->scale) &&
			RfmAdd128(&acc, add))
		{
			sum->v.i = acc;
			sum->scale = scale;
			return;
		}
	}

	if (sum->kind == RFM_MONEY_INT)
		RfmMoneyPromote(sum, cxt);
	if (amount->is_big)
		RfmMoneyAddNumeric(sum, amount->num, cxt);
	else
	{
		Numeric		num = RfmNumericFromScaled(amount->i, amount->scale);

		RfmMoneyAddNumeric(sum, num, cxt);
		pfree(num);
	}
}

/* sum += other (the combine step of the aggregates). */
void
RfmMoneyAddMoney(RfmMoney *sum, const RfmMoney *other, MemoryContext cxt)
{
	RfmAmount	a;

	memset(&a, 0, sizeof(a));
	switch ((RfmMoneyKind) other->kind)
	{
		case RFM_MONEY_INT:
			if (other->v.i == 0 && other->scale <= sum->scale)
				return;			/* nothing to add, scale unchanged */
			a.i = other->v.i;
			a.scale = other->scale;
			break;
		case RFM_MONEY_BIG:
			a.is_big = true;
			a.num = other->v.big;
			break;
		case RFM_MONEY_FLOAT:
			a.is_float = true;
			a.f = other->v.f;
			break;
	}
	RfmMoneyAdd(sum, &a, cxt);
}

/* The sum as a numeric, allocated in the current memory context. */
Numeric
RfmMoneyToNumeric(const RfmMoney *sum)
{
	switch ((RfmMoneyKind) sum->kind)
	{
		case RFM_MONEY_INT:
			return RfmNumericFromScaled(sum->v.i, sum->scale);
		case RFM_MONEY_BIG:
			return DatumGetNumeric(datumCopy(NumericGetDatum(sum->v.big), false, -1));
		case RFM_MONEY_FLOAT:
			return DatumGetNumeric(DirectFunctionCall1(float8_numeric,
													   Float8GetDatum(sum->v.f)));
	}
	pg_unreachable();
}

/*
 * The ranking key of a sum: RfmMonetaryKey() of RfmMoneyToNumeric(), i.e.
 * numeric::float8.  An integer below 2^53 divided by an exact power of ten
 * (<= 10^22) is the correctly rounded double of the decimal, which is what
 * numeric::float8 (strtod) returns too, so the common case skips the text
 * round trip.
 */
double
RfmMoneyKey(const RfmMoney *sum)
{
	static const double pow10d[] = {
		1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
		1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
	};
	const int128 limit = ((int128) 1) << 53;
	Numeric		num;
	double		key;

	if (sum->kind == RFM_MONEY_INT && sum->scale <= 22 &&
		sum->v.i < limit && sum->v.i > -limit)
		return (double) (int64) sum->v.i / pow10d[sum->scale];

	num = RfmMoneyToNumeric(sum);
	key = RfmMonetaryKey(num);
	pfree(num);
	return key;
}
