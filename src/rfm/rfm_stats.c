/*
 * rfm_stats.c
 *		The loyalty.rfm_stats aggregates: one customer's RFM statistics (last
 *		and first order, orders and spend in the window, orders and spend in
 *		total, recency in days) in one pass over their orders, following the
 *		rules of rfm.h.  Also the input conversions the batch path shares.
 *
 * The state is internal (RfmStatsState), with combine, serialize and
 * deserialize functions so the aggregates run in parallel plans, like
 * tdigest.  Money is summed exactly (rfm_money.c).
 */
#include "rfm_stats.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "rfm.h"
#include "rfm_args.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

/* Transition state of loyalty.rfm_stats. */
typedef struct RfmStatsState
{
	TimestampTz as_of;			/* as given */
	Interval	window;			/* as given */
	RfmPeriod	period;
	LoyaltyTimeKind time_kind;
	LoyaltyAmountKind amount_kind;
	struct pg_tz *tz;			/* program zone (NULL: UTC); not serialized,
								 * only the transition reads it */
	TimestampTz last_order;		/* RFM_NO_LAST_ORDER when none */
	TimestampTz first_order;	/* RFM_NO_FIRST_ORDER when none */
	int64		frequency;		/* orders in the window */
	int64		orders_total;	/* orders up to as_of */
	RfmMoney	monetary;		/* amounts in the window */
	RfmMoney	spend_total;	/* amounts up to as_of */
} RfmStatsState;

/* Attributes of the composite type loyalty.rfm_stats, in order. */
enum
{
	RFM_STATS_LAST_ORDER,
	RFM_STATS_FIRST_ORDER,
	RFM_STATS_FREQUENCY,
	RFM_STATS_MONETARY,
	RFM_STATS_ORDERS_TOTAL,
	RFM_STATS_SPEND_TOTAL,
	RFM_STATS_RECENCY_DAYS,
	RFM_STATS_NATTS
};

/*
 * An order time as timestamptz: a date is 00:00 of that day and a
 * timestamp without time zone local time, both in the program zone tz
 * (rfm_zone.c; NULL: UTC), never the session's TimeZone, so that batch and
 * live tracking read the same instants.  Returns false for infinite times:
 * such rows are not dated orders and are ignored.
 */
bool
RfmDecodeTime(LoyaltyTimeKind kind, Datum value, struct pg_tz *tz, TimestampTz *out)
{
	switch (kind)
	{
		case LOYALTY_TIME_TIMESTAMPTZ:
			*out = DatumGetTimestampTz(value);
			return !TIMESTAMP_NOT_FINITE(*out);
		case LOYALTY_TIME_TIMESTAMP:
			{
				Timestamp	ts = DatumGetTimestamp(value);

				if (TIMESTAMP_NOT_FINITE(ts))
					return false;
				*out = RfmZoneLocal(ts, tz);
				return true;
			}
		case LOYALTY_TIME_DATE:
			{
				DateADT		d = DatumGetDateADT(value);

				if (DATE_NOT_FINITE(d))
					return false;
				*out = RfmZoneDayStart(d, tz);
				return true;
			}
	}
	return false;
}

/*
 * The as-of time and the window start as_of - window (timestamptz minus
 * interval with the calendar of the program zone tz).  as_of must be finite
 * and the window positive.
 */
void
RfmMakePeriod(TimestampTz as_of, const Interval *window, struct pg_tz *tz,
			  RfmPeriod *period)
{
	if (TIMESTAMP_NOT_FINITE(as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of must be a finite time")));
	period->as_of = as_of;
	period->start = RfmZoneMinus(as_of, window, tz);
	if (!(period->start < as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("window_length must be positive"),
				 errdetail("as_of minus the window is %s, which is not before as_of.",
						   timestamptz_to_str(period->start))));
}

/* floor((as_of - last order) / 1 day), -1 when there is no order. */
int32
RfmRecencyDays(TimestampTz as_of, TimestampTz last_order)
{
	if (last_order == RFM_NO_LAST_ORDER)
		return -1;
	return (int32) ((as_of - last_order) / USECS_PER_DAY);
}

/*
 * monetary / frequency, exact where the quotient has a finite decimal form:
 * shown with the scale of monetary (2294.77 / 1 is 2294.77, 100.00 / 4 is
 * 25.00) or more digits when needed (100.02 / 4 is 25.005); a quotient
 * without a finite form keeps numeric division's rounding (175.00 / 3 is
 * 58.3333333333333333).  0 without orders.
 */
Numeric
RfmAverageBasket(Numeric monetary, int64 frequency)
{
	Datum		avg;
	Datum		trimmed;
	int32		scale;

	if (frequency == 0)
		return LoyaltyNumericFromInt64(0);
	avg = NumericGetDatum(LoyaltyNumericDiv(monetary, LoyaltyNumericFromInt64(frequency)));
	trimmed = DirectFunctionCall1(numeric_trim_scale, avg);
	scale = DatumGetInt32(DirectFunctionCall1(numeric_scale, NumericGetDatum(monetary)));
	if (DatumGetInt32(DirectFunctionCall1(numeric_scale, trimmed)) >= scale)
		return DatumGetNumeric(trimmed);
	/* fewer digits than the amounts: pad back to their scale (exact) */
	return DatumGetNumeric(DirectFunctionCall2(numeric_round, trimmed, Int32GetDatum(scale)));
}

/* The default window of rfm.h: 12 months. */
static void
RfmDefaultWindow(Interval *window)
{
	window->time = 0;
	window->day = 0;
	window->month = 12;
}

/*
 * The program zone, read once per query (cached in fn_extra): a group
 * starts per customer, and the settings do not change within a statement.
 */
static struct pg_tz *
RfmStatsZone(FunctionCallInfo fcinfo)
{
	struct pg_tz **cached = (struct pg_tz **) fcinfo->flinfo->fn_extra;

	if (cached == NULL)
	{
		struct pg_tz *tz = RfmProgramZone();

		cached = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, sizeof(struct pg_tz *));
		*cached = tz;
		fcinfo->flinfo->fn_extra = cached;
	}
	return *cached;
}

/*
 * First row of a group: read the kinds of the argument types and the period,
 * and allocate the state in the aggregate's context.
 */
static RfmStatsState *
RfmStatsStart(FunctionCallInfo fcinfo, MemoryContext aggcxt,
			  TimestampTz as_of, const Interval *window)
{
	RfmStatsState *state;
	bool		ok;

	state = MemoryContextAllocZero(aggcxt, sizeof(RfmStatsState));
	state->as_of = as_of;
	state->window = *window;
	state->tz = RfmStatsZone(fcinfo);
	RfmMakePeriod(as_of, window, state->tz, &state->period);
	state->time_kind = LoyaltyTimeKindOf(getBaseType(get_fn_expr_argtype(fcinfo->flinfo, 1)), &ok);
	if (!ok)
		elog(ERROR, "rfm_stats: unexpected order time type");
	state->amount_kind = LoyaltyAmountKindOf(getBaseType(get_fn_expr_argtype(fcinfo->flinfo, 2)), &ok);
	if (!ok)
		elog(ERROR, "rfm_stats: unexpected amount type");
	state->last_order = RFM_NO_LAST_ORDER;
	state->first_order = RFM_NO_FIRST_ORDER;
	return state;
}

/* Apply the rules of rfm.h to one row already known to be dated <= as_of. */
static void
RfmStatsAddRow(RfmStatsState *state, TimestampTz t, const RfmAmount *amount,
			   MemoryContext aggcxt)
{
	bool		in_window = t >= state->period.start;

	if (!amount->negative)
	{
		if (t > state->last_order)
			state->last_order = t;
		if (t < state->first_order)
			state->first_order = t;
		state->orders_total++;
		if (in_window)
			state->frequency++;
	}
	RfmMoneyAddFast(&state->spend_total, amount, aggcxt);
	if (in_window)
		RfmMoneyAddFast(&state->monetary, amount, aggcxt);
}

PG_FUNCTION_INFO_V1(rfm_stats_transfn);

/*
 * Transition: rfm_stats(ordered_at, amount, as_of [, window_length]).  Rows
 * with a null or infinite time, or dated after as_of, are ignored; a null
 * amount is an order of 0; a negative amount is a refund.  as_of and the
 * window must be the same for every row of a group.
 */
Datum
rfm_stats_transfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	RfmStatsState *state;
	TimestampTz as_of;
	Interval	window;
	TimestampTz t;
	RfmAmount	amount;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "rfm_stats_transfn called in non-aggregate context");

	LoyaltyArgNotNull(fcinfo, 3, "as_of");
	as_of = PG_GETARG_TIMESTAMPTZ(3);
	if (PG_NARGS() > 4)
	{
		LoyaltyArgNotNull(fcinfo, 4, "window_length");
		window = *PG_GETARG_INTERVAL_P(4);
	}
	else
		RfmDefaultWindow(&window);

	if (PG_ARGISNULL(0))
	{
		RfmCheckAsOf(as_of);
		RfmCheckInterval(&window, "window_length");
		state = RfmStatsStart(fcinfo, aggcxt, as_of, &window);
	}
	else
	{
		state = (RfmStatsState *) PG_GETARG_POINTER(0);
		if (as_of != state->as_of ||
			memcmp(&window, &state->window, sizeof(Interval)) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("as_of and window_length must be the same for every row of a group")));
	}

	if (PG_ARGISNULL(1) ||
		!RfmDecodeTime(state->time_kind, PG_GETARG_DATUM(1), state->tz, &t) ||
		t > state->period.as_of)
		PG_RETURN_POINTER(state);

	if (PG_ARGISNULL(2))
	{
		memset(&amount, 0, sizeof(amount));
		amount.isnull = true;
	}
	else
		RfmDecodeAmount(state->amount_kind, PG_GETARG_DATUM(2), &amount);

	RfmStatsAddRow(state, t, &amount, aggcxt);
	PG_RETURN_POINTER(state);
}

PG_FUNCTION_INFO_V1(rfm_stats_combine);

/*
 * Combine two partial states (parallel aggregation).  The result lives in
 * the aggregate context; numeric fallbacks are copied there.
 */
Datum
rfm_stats_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	RfmStatsState *a;
	RfmStatsState *b;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "rfm_stats_combine called in non-aggregate context");

	a = PG_ARGISNULL(0) ? NULL : (RfmStatsState *) PG_GETARG_POINTER(0);
	b = PG_ARGISNULL(1) ? NULL : (RfmStatsState *) PG_GETARG_POINTER(1);
	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		a = MemoryContextAlloc(aggcxt, sizeof(RfmStatsState));
		*a = *b;
		memset(&a->monetary, 0, sizeof(RfmMoney));
		memset(&a->spend_total, 0, sizeof(RfmMoney));
		RfmMoneyAddMoney(&a->monetary, &b->monetary, aggcxt);
		RfmMoneyAddMoney(&a->spend_total, &b->spend_total, aggcxt);
		PG_RETURN_POINTER(a);
	}

	if (a->as_of != b->as_of ||
		memcmp(&a->window, &b->window, sizeof(Interval)) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of and window_length must be the same for every row of a group")));
	if (b->last_order > a->last_order)
		a->last_order = b->last_order;
	if (b->first_order < a->first_order)
		a->first_order = b->first_order;
	a->frequency += b->frequency;
	a->orders_total += b->orders_total;
	RfmMoneyAddMoney(&a->monetary, &b->monetary, aggcxt);
	RfmMoneyAddMoney(&a->spend_total, &b->spend_total, aggcxt);
	PG_RETURN_POINTER(a);
}

/* Append one sum to a serialized state. */
static void
RfmMoneySend(StringInfo buf, const RfmMoney *m)
{
	pq_sendbyte(buf, m->kind);
	switch ((RfmMoneyKind) m->kind)
	{
		case RFM_MONEY_INT:
			pq_sendint16(buf, m->scale);
			pq_sendint64(buf, (int64) (m->v.i >> 64));
			pq_sendint64(buf, (int64) (uint64) m->v.i);
			break;
		case RFM_MONEY_FLOAT:
			pq_sendfloat8(buf, m->v.f);
			break;
		case RFM_MONEY_BIG:
			pq_sendint32(buf, VARSIZE(m->v.big));
			pq_sendbytes(buf, (const char *) m->v.big, VARSIZE(m->v.big));
			break;
	}
}

/* Read one sum of a serialized state; numerics are allocated in cxt. */
static void
RfmMoneyRecv(StringInfo buf, RfmMoney *m, MemoryContext cxt)
{
	memset(m, 0, sizeof(RfmMoney));
	m->kind = (uint8) pq_getmsgbyte(buf);
	switch ((RfmMoneyKind) m->kind)
	{
		case RFM_MONEY_INT:
			{
				int64		hi;
				uint64		lo;

				m->scale = pq_getmsgint(buf, 2);
				hi = pq_getmsgint64(buf);
				lo = (uint64) pq_getmsgint64(buf);
				m->v.i = (int128) (((uint128) (uint64) hi << 64) | lo);
				break;
			}
		case RFM_MONEY_FLOAT:
			m->v.f = pq_getmsgfloat8(buf);
			break;
		case RFM_MONEY_BIG:
			{
				int32		len = pq_getmsgint(buf, 4);

				m->v.big = MemoryContextAlloc(cxt, len);
				pq_copymsgbytes(buf, (char *) m->v.big, len);
				break;
			}
		default:
			elog(ERROR, "rfm_stats: corrupt serialized state");
	}
}

PG_FUNCTION_INFO_V1(rfm_stats_serialize);

/* Serialize a state to bytea for transfer between parallel workers. */
Datum
rfm_stats_serialize(PG_FUNCTION_ARGS)
{
	RfmStatsState *s;
	StringInfoData buf;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "rfm_stats_serialize called in non-aggregate context");
	s = (RfmStatsState *) PG_GETARG_POINTER(0);

	pq_begintypsend(&buf);
	pq_sendint64(&buf, s->as_of);
	pq_sendint64(&buf, s->window.time);
	pq_sendint32(&buf, s->window.day);
	pq_sendint32(&buf, s->window.month);
	pq_sendint64(&buf, s->period.as_of);
	pq_sendint64(&buf, s->period.start);
	pq_sendbyte(&buf, (uint8) s->time_kind);
	pq_sendbyte(&buf, (uint8) s->amount_kind);
	pq_sendint64(&buf, s->last_order);
	pq_sendint64(&buf, s->first_order);
	pq_sendint64(&buf, s->frequency);
	pq_sendint64(&buf, s->orders_total);
	RfmMoneySend(&buf, &s->monetary);
	RfmMoneySend(&buf, &s->spend_total);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(rfm_stats_deserialize);

/* Rebuild a state from rfm_stats_serialize's bytes, in the aggregate context. */
Datum
rfm_stats_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	bytea	   *bytes;
	StringInfoData buf;
	RfmStatsState *s;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "rfm_stats_deserialize called in non-aggregate context");
	bytes = PG_GETARG_BYTEA_PP(0);

	buf.data = VARDATA_ANY(bytes);
	buf.len = VARSIZE_ANY_EXHDR(bytes);
	buf.maxlen = buf.len;
	buf.cursor = 0;

	s = MemoryContextAllocZero(aggcxt, sizeof(RfmStatsState));
	s->as_of = pq_getmsgint64(&buf);
	s->window.time = pq_getmsgint64(&buf);
	s->window.day = pq_getmsgint(&buf, 4);
	s->window.month = pq_getmsgint(&buf, 4);
	s->period.as_of = pq_getmsgint64(&buf);
	s->period.start = pq_getmsgint64(&buf);
	s->time_kind = (LoyaltyTimeKind) pq_getmsgbyte(&buf);
	s->amount_kind = (LoyaltyAmountKind) pq_getmsgbyte(&buf);
	s->last_order = pq_getmsgint64(&buf);
	s->first_order = pq_getmsgint64(&buf);
	s->frequency = pq_getmsgint64(&buf);
	s->orders_total = pq_getmsgint64(&buf);
	RfmMoneyRecv(&buf, &s->monetary, aggcxt);
	RfmMoneyRecv(&buf, &s->spend_total, aggcxt);
	pq_getmsgend(&buf);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(rfm_stats_final);

/*
 * Final: the loyalty.rfm_stats row.  A group whose rows were all ignored
 * (no dated row up to as_of) gives null times, zero counts and sums, and
 * recency_days -1; no row at all gives null.
 */
Datum
rfm_stats_final(PG_FUNCTION_ARGS)
{
	RfmStatsState *s;
	TupleDesc	tupdesc;
	Datum		values[RFM_STATS_NATTS];
	bool		nulls[RFM_STATS_NATTS];

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "rfm_stats_final called in non-aggregate context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	s = (RfmStatsState *) PG_GETARG_POINTER(0);

	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (tupdesc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "rfm_stats_final must return a composite type");
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		fcinfo->flinfo->fn_extra = tupdesc;
		MemoryContextSwitchTo(old);
	}
	if (tupdesc->natts != RFM_STATS_NATTS)
		elog(ERROR, "loyalty.rfm_stats has %d attributes, expected %d",
			 tupdesc->natts, RFM_STATS_NATTS);

	memset(nulls, false, sizeof(nulls));
	if (s->last_order == RFM_NO_LAST_ORDER)
	{
		nulls[RFM_STATS_LAST_ORDER] = true;
		nulls[RFM_STATS_FIRST_ORDER] = true;
	}
	values[RFM_STATS_LAST_ORDER] = TimestampTzGetDatum(s->last_order);
	values[RFM_STATS_FIRST_ORDER] = TimestampTzGetDatum(s->first_order);
	values[RFM_STATS_FREQUENCY] = Int64GetDatum(s->frequency);
	values[RFM_STATS_MONETARY] = NumericGetDatum(RfmMoneyToNumeric(&s->monetary));
	values[RFM_STATS_ORDERS_TOTAL] = Int64GetDatum(s->orders_total);
	values[RFM_STATS_SPEND_TOTAL] = NumericGetDatum(RfmMoneyToNumeric(&s->spend_total));
	values[RFM_STATS_RECENCY_DAYS] = Int32GetDatum(RfmRecencyDays(s->period.as_of,
																  s->last_order));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
