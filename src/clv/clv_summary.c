/*
 * clv_summary.c
 *		loyalty._clv_customer(ordered_at, amount, as_of, unit, period): one
 *		customer's CLV summary in one pass over their order rows, the
 *		aggregate behind loyalty.clv_summary and loyalty.clv_fit.
 *
 * A GROUP BY customer with this aggregate is one hash aggregation over the
 * orders, as cheap as GROUP BY customer: min, max, count(DISTINCT day),
 * sum.  The state holds the distinct purchase periods (4 bytes each, for the
 * count and the recency), the exact total spend and the spend of the first
 * purchase period (rfm_money.c's exact sums): nothing per order row.
 *
 * Rules (doc/clv.md): a period (a day, or a Monday-based week, of the
 * program time zone) is a purchase period when it holds an order row
 * (amount >= 0 or NULL); refunds (amount < 0) lower the total spend, and the
 * first period's spend when they fall in it.  A refund dated in a period
 * that becomes the first purchase period only later in the scan, while an
 * earlier refund-only period exists, is not subtracted from the first
 * period (the first period's spend then holds its orders only).
 */
#include "clv.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "loyalty_args.h"
#include "rfm.h"
#include "rfm_stats.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/timestamp.h"

/* Per-customer state. */
typedef struct ClvCustomer
{
	int32	   *periods;		/* distinct purchase periods, unordered */
	int32		nperiods;
	int32		cap;
	int32		first;			/* first purchase period (valid if nperiods) */
	int32		last;
	bool		has_any;		/* any_first valid */
	int32		any_first;		/* first period of any row */
	int32		asof_period;
	bool		weeks;			/* unit week */
	double		divisor;		/* 1 (days) or 7 (weeks) */
	struct pg_tz *tz;
	RfmMoney	total;			/* every amount */
	RfmMoney	first_spend;	/* amounts of the first purchase period */
	RfmMoney	any_spend;		/* amounts of any_first */
} ClvCustomer;

/* The period of a day: itself, or the Monday of its week. */
static inline int32
ClvPeriodOf(DateADT day, bool weeks)
{
	if (!weeks)
		return day;
	/* DateADT 0 is 2000-01-01, a Saturday: Monday is day 2 modulo 7 */
	return day - (((day - 2) % 7) + 7) % 7;
}

/*
 * What every group of a query shares (the arguments are constants of the
 * query): the program zone (read from loyalty.settings once per query, not
 * once per customer), the period rule and as_of's period.  Kept in the
 * transition function's fn_extra.
 */
typedef struct ClvCustomerSetup
{
	TimestampTz as_of;
	bool		weeks;
	double		divisor;
	struct pg_tz *tz;
	int32		asof_period;
} ClvCustomerSetup;

/* Create the state at a group's first row. */
static ClvCustomer *
ClvCustomerStart(FunctionCallInfo fcinfo, MemoryContext cxt)
{
	ClvCustomerSetup *setup = (ClvCustomerSetup *) fcinfo->flinfo->fn_extra;
	ClvCustomer *c = MemoryContextAllocZero(cxt, sizeof(ClvCustomer));
	TimestampTz as_of;

	LoyaltyArgNotNull(fcinfo, 3, "as_of");
	LoyaltyArgNotNull(fcinfo, 4, "unit");
	LoyaltyArgNotNull(fcinfo, 5, "period");
	as_of = PG_GETARG_TIMESTAMPTZ(3);
	if (setup == NULL || setup->as_of != as_of)
	{
		char	   *unit = text_to_cstring(PG_GETARG_TEXT_PP(4));
		char	   *period = text_to_cstring(PG_GETARG_TEXT_PP(5));

		if ((strcmp(unit, "day") != 0 && strcmp(unit, "week") != 0) ||
			(strcmp(period, "days") != 0 && strcmp(period, "weeks") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid unit or period: \"%s\", \"%s\"", unit, period),
					 errhint("Valid units are day and week, valid periods days and weeks.")));
		if (setup == NULL)
			setup = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ClvCustomerSetup));
		setup->as_of = as_of;
		setup->weeks = strcmp(unit, "week") == 0;
		setup->divisor = strcmp(period, "weeks") == 0 ? 7.0 : 1.0;
		setup->tz = RfmProgramZone();
		setup->asof_period = ClvPeriodOf(RfmZoneDay(as_of, setup->tz), setup->weeks);
		fcinfo->flinfo->fn_extra = setup;
	}
	c->weeks = setup->weeks;
	c->divisor = setup->divisor;
	c->tz = setup->tz;
	c->asof_period = setup->asof_period;
	c->cap = 4;
	c->periods = MemoryContextAlloc(cxt, sizeof(int32) * c->cap);
	return c;
}

/* Record a purchase period (once). */
static void
ClvCustomerAddPeriod(ClvCustomer *c, int32 p)
{
	int32		i;

	for (i = c->nperiods - 1; i >= 0; i--)
		if (c->periods[i] == p)
			return;
	if (c->nperiods == c->cap)
	{
		c->cap *= 2;
		c->periods = repalloc(c->periods, sizeof(int32) * c->cap);
	}
	c->periods[c->nperiods++] = p;
}

/* sum := other (an exact copy). */
static void
ClvMoneySet(RfmMoney *sum, const RfmMoney *other, MemoryContext cxt)
{
	memset(sum, 0, sizeof(RfmMoney));
	RfmMoneyAddMoney(sum, other, cxt);
}

/*
 * Transition: one order row.  Rows without a time, or with an infinite one,
 * are ignored (the caller's WHERE keeps rows up to as_of).
 */
PG_FUNCTION_INFO_V1(clv_customer_transfn);
Datum
clv_customer_transfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	ClvCustomer *c;
	TimestampTz t;
	RfmAmount	amount;
	int32		p;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clv_customer_transfn called in non-aggregate context");
	c = PG_ARGISNULL(0) ? ClvCustomerStart(fcinfo, aggcxt) : (ClvCustomer *) PG_GETARG_POINTER(0);
	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(c);
	t = PG_GETARG_TIMESTAMPTZ(1);
	if (TIMESTAMP_NOT_FINITE(t))
		PG_RETURN_POINTER(c);
	p = ClvPeriodOf(RfmZoneDay(t, c->tz), c->weeks);
	memset(&amount, 0, sizeof(amount));
	if (PG_ARGISNULL(2))
		amount.isnull = true;
	else
	{
		RfmDecodeAmount(LOYALTY_AMOUNT_NUMERIC, PG_GETARG_DATUM(2), &amount);
		RfmMoneyAdd(&c->total, &amount, aggcxt);
	}

	/* the first period of any row and its spend */
	if (!c->has_any || p < c->any_first)
	{
		c->has_any = true;
		c->any_first = p;
		memset(&c->any_spend, 0, sizeof(RfmMoney));
	}
	if (p == c->any_first && !amount.isnull)
		RfmMoneyAdd(&c->any_spend, &amount, aggcxt);

	/* the first purchase period and its spend */
	if ((amount.isnull || !amount.negative) && (c->nperiods == 0 || p < c->first))
	{
		c->first = p;
		if (p == c->any_first)
			ClvMoneySet(&c->first_spend, &c->any_spend, aggcxt);
		else
		{
			memset(&c->first_spend, 0, sizeof(RfmMoney));
			if (!amount.isnull)
				RfmMoneyAdd(&c->first_spend, &amount, aggcxt);
		}
	}
	else if (c->nperiods > 0 && p == c->first && !amount.isnull)
		RfmMoneyAdd(&c->first_spend, &amount, aggcxt);

	if (amount.isnull || !amount.negative)
	{
		if (c->nperiods == 0 || p > c->last)
			c->last = p;
		ClvCustomerAddPeriod(c, p);
	}
	PG_RETURN_POINTER(c);
}

/*
 * Final: (frequency, recency, age, monetary_value, first_period,
 * last_period), NULL for a customer without a purchase period.
 */
PG_FUNCTION_INFO_V1(clv_customer_final);
Datum
clv_customer_final(PG_FUNCTION_ARGS)
{
	ClvCustomer *c;
	TupleDesc	desc;
	Datum		v[6];
	bool		nl[6] = {false, false, false, false, false, false};
	int64		x;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	c = (ClvCustomer *) PG_GETARG_POINTER(0);
	if (c->nperiods == 0)
		PG_RETURN_NULL();
	desc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE || desc->natts != 6)
			elog(ERROR, "_clv_customer must return a row of 6 columns");
		desc = BlessTupleDesc(CreateTupleDescCopy(desc));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = desc;
	}
	x = c->nperiods - 1;
	v[0] = Int64GetDatum(x);
	v[1] = Float8GetDatum((c->last - c->first) / c->divisor);
	v[2] = Float8GetDatum((c->asof_period - c->first) / c->divisor);
	if (x > 0)
	{
		Numeric		total;
		Numeric		first;

		total = RfmMoneyToNumeric(&c->total);
		first = RfmMoneyToNumeric(&c->first_spend);
		v[3] = DirectFunctionCall2(numeric_div,
								   DirectFunctionCall2(numeric_sub, NumericGetDatum(total),
													   NumericGetDatum(first)),
								   DirectFunctionCall1(int8_numeric, Int64GetDatum(x)));
	}
	else
		nl[3] = true;
	v[4] = DateADTGetDatum(c->first);
	v[5] = DateADTGetDatum(c->last);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, v, nl)));
}
