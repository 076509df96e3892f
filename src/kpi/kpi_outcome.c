/*
 * kpi_outcome.c
 *		Outcomes of a campaign member read from the live RFM statistics:
 *		the orders and spend of a window of days, from the day buckets the
 *		tracking triggers keep per customer (loyalty.customer_stats.days),
 *		so that the KPIs never scan the orders table again.
 */
#include "kpi.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/date.h"
#include "utils/numeric.h"

#include "loyalty_numeric.h"

#include "rfm_live.h"

PG_FUNCTION_INFO_V1(kpi_day_buckets_window);

/*
 * loyalty.day_buckets_window(days day_buckets, from_day date, to_day date,
 * OUT orders bigint, OUT spend numeric): the orders and the exact spend of
 * the days from_day..to_day (inclusive) of one customer's buckets
 * (RfmDaysWindow).  Days outside the retention of the buckets count as
 * empty.
 */
Datum
kpi_day_buckets_window(PG_FUNCTION_ARGS)
{
	RfmDays    *days = DatumGetRfmDays(PG_GETARG_DATUM(0));
	DateADT		from = PG_GETARG_DATEADT(1);
	DateADT		to = PG_GETARG_DATEADT(2);
	RfmDaysSum	sum;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	if (DATE_NOT_FINITE(from) || DATE_NOT_FINITE(to))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("day_buckets_window needs finite days"),
				 errdetail("from_day and to_day must be finite dates.")));
	RfmDaysWindow(days, from, to, &sum, true, CurrentMemoryContext);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "day_buckets_window must return a composite type");
	values[0] = Int64GetDatum(sum.orders);
	values[1] = NumericGetDatum(sum.spend);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

PG_FUNCTION_INFO_V1(kpi_member_windows);

/*
 * loyalty._kpi_windows(days day_buckets, ref_day date, window_days integer)
 * RETURNS numeric[]: {orders, spend} of the window_days days before
 * ref_day and {orders, spend} of ref_day and the window_days - 1 days after
 * it, in one call per campaign member (the KPI query reads one array
 * instead of two set-returning calls).  days NULL (a customer without
 * tracked orders): zeros.
 */
Datum
kpi_member_windows(PG_FUNCTION_ARGS)
{
	RfmDays    *days = PG_ARGISNULL(0) ? NULL : DatumGetRfmDays(PG_GETARG_DATUM(0));
	DateADT		ref;
	int32		window;
	RfmDaysSum	before;
	RfmDaysSum	after;
	Datum		elems[4];

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	ref = PG_GETARG_DATEADT(1);
	window = PG_GETARG_INT32(2);
	if (DATE_NOT_FINITE(ref) || window < 1 || window > 36600)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid KPI window"),
				 errdetail("The reference day must be finite and the window 1 to 36600 days.")));
	RfmDaysWindow(days, ref - window, ref - 1, &before, true, CurrentMemoryContext);
	RfmDaysWindow(days, ref, ref + window - 1, &after, true, CurrentMemoryContext);
	elems[0] = NumericGetDatum(LoyaltyNumericFromInt64(before.orders));
	elems[1] = NumericGetDatum(before.spend);
	elems[2] = NumericGetDatum(LoyaltyNumericFromInt64(after.orders));
	elems[3] = NumericGetDatum(after.spend);
	PG_RETURN_ARRAYTYPE_P(construct_array(elems, 4, NUMERICOID, -1, false,
										  TYPALIGN_INT));
}
