/*
 * rfm_stats.h
 *		Per-customer RFM statistics as the batch path computes them: exact
 *		money sums (RfmMoney), the input conversions shared by the
 *		loyalty.rfm_stats aggregates and loyalty.rfm_segmentation, and the
 *		rules of rfm.h applied to one order row.
 *
 * Money: a numeric or integer amount is held as a 128-bit integer scaled by
 * 10^scale, scale being the largest display scale seen so far (what SQL
 * sum(numeric) shows).  Adding is an integer addition; the sum falls back to
 * a numeric value only if it would overflow 128 bits (about 38 digits) or an
 * amount has too many digits, so results are exact in every case.  Double
 * precision amounts are summed as double (documented as such).
 */
#ifndef LOYALTY_RFM_STATS_H
#define LOYALTY_RFM_STATS_H

#include "loyalty.h"
#include "loyalty_kinds.h"
#include "loyalty_numeric.h"

#include "datatype/timestamp.h"
#include "utils/numeric.h"

#ifndef HAVE_INT128
#error "loyalty needs a C compiler with 128-bit integers (gcc or clang)"
#endif

/* How an RfmMoney holds its value. */
typedef enum RfmMoneyKind
{
	RFM_MONEY_INT = 0,			/* v.i: exact, int128 scaled by 10^scale */
	RFM_MONEY_BIG = 1,			/* v.big: exact numeric (overflow fallback) */
	RFM_MONEY_FLOAT = 2			/* v.f: double precision sum */
} RfmMoneyKind;

/* An exact running sum; all-zero bytes are a valid zero. */
typedef struct RfmMoney
{
	union
	{
		int128		i;
		double		f;
		Numeric		big;
	}			v;
	int16		scale;			/* RFM_MONEY_INT: display scale */
	uint8		kind;			/* RfmMoneyKind */
} RfmMoney;

/* One decoded amount. */
typedef struct RfmAmount
{
	bool		isnull;			/* null: an order of amount 0 */
	bool		negative;		/* a refund */
	bool		is_float;		/* f holds it (float column) */
	bool		is_big;			/* num holds it (too many digits) */
	int16		scale;			/* display scale of i */
	int128		i;				/* value * 10^scale */
	double		f;
	Numeric		num;
} RfmAmount;

/* The as-of time and the window start (as_of - window), both finite. */
typedef struct RfmPeriod
{
	TimestampTz as_of;
	TimestampTz start;
} RfmPeriod;

/* Sentinels of "no order yet". */
#define RFM_NO_LAST_ORDER	DT_NOBEGIN
#define RFM_NO_FIRST_ORDER	DT_NOEND

/* rfm_money.c */
#define RFM_POW10_INT64_COUNT	19
extern const int64 RfmPow10Int64[RFM_POW10_INT64_COUNT];
extern void RfmDecodeAmount(LoyaltyAmountKind kind, Datum value, RfmAmount *out);
extern void RfmMoneyAdd(RfmMoney *sum, const RfmAmount *amount,
						MemoryContext cxt);
extern void RfmMoneyAddMoney(RfmMoney *sum, const RfmMoney *other,
							 MemoryContext cxt);
extern Numeric RfmMoneyToNumeric(const RfmMoney *sum);
extern double RfmMoneyKey(const RfmMoney *sum);
extern Numeric RfmNumericFromScaled(int128 value, int scale);
extern bool RfmNumericToInt64(Numeric num, int64 *value, int *dscale);

/*
 * sum += amount, inline for the common case (same scale, no overflow) that
 * every order row takes; everything else goes through RfmMoneyAdd.
 */
static inline void
RfmMoneyAddFast(RfmMoney *sum, const RfmAmount *amount, MemoryContext cxt)
{
	if (likely(sum->kind == RFM_MONEY_INT && !amount->isnull &&
			   !amount->is_big && !amount->is_float &&
			   amount->scale == sum->scale))
	{
		int128		r = (int128) ((uint128) sum->v.i + (uint128) amount->i);

		if (likely(((sum->v.i ^ r) & (amount->i ^ r)) >= 0))
		{
			sum->v.i = r;
			return;
		}
	}
	RfmMoneyAdd(sum, amount, cxt);
}

/* rfm_stats.c */
struct pg_tz;
extern bool RfmDecodeTime(LoyaltyTimeKind kind, Datum value, struct pg_tz *tz,
						  TimestampTz *out);
extern void RfmMakePeriod(TimestampTz as_of, const Interval *window,
						  struct pg_tz *tz, RfmPeriod *period);
extern int32 RfmRecencyDays(TimestampTz as_of, TimestampTz last_order);
extern Numeric RfmAverageBasket(Numeric monetary, int64 frequency);

#endif							/* LOYALTY_RFM_STATS_H */
