/*
 * rfm_args.c
 *		Argument checks of the RFM entry points.
 *
 * Why bounds: as_of minus a window is computed with timestamptz - interval,
 * which raises 22008 (datetime field overflow) when either is near the ends
 * of the timestamp range ('4713-01-01 BC', '170000000 years').  The entry
 * points check their arguments first against bounds that make every later
 * computation safe and give a clear 22023 with the value in the detail:
 * as_of between 0001-01-01 and 9999-12-31 (UTC), and windows, retentions
 * and inactivity periods of at most 1000 years, each of their month, day
 * and time fields too (the fields of an interval are applied one after the
 * other, so each must be bounded): as_of minus or plus such an interval
 * stays between about 3100 BC and 13100 AD, well inside the range.
 */
#include "rfm_args.h"

#include "loyalty_time.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

/* The same limit as the points and coupon keys (POINTS_MAX_KEY_LENGTH). */
#define RFM_MAX_KEY_LENGTH	200

/*
 * as_of: finite and within [RFM_AS_OF_MIN_YEAR, RFM_AS_OF_MAX_YEAR] in UTC.
 * The caller has refused NULL.
 */
void
RfmCheckAsOf(TimestampTz as_of)
{
	TimestampTz lo = (TimestampTz) (date2j(RFM_AS_OF_MIN_YEAR, 1, 1) - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY;
	TimestampTz hi = (TimestampTz) (date2j(RFM_AS_OF_MAX_YEAR + 1, 1, 1) - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY;

	if (TIMESTAMP_NOT_FINITE(as_of))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of must be a finite time")));
	if (as_of < lo || as_of >= hi)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("as_of must lie between the years %d and %d",
						RFM_AS_OF_MIN_YEAR, RFM_AS_OF_MAX_YEAR),
				 errdetail("as_of is %s; RFM statistics are computed for times from 0001-01-01 to 9999-12-31 (UTC).",
						   timestamptz_to_str(as_of))));
}

/*
 * A window, retention or inactivity period: its month, day and time fields
 * each, and the whole as intervals compare (30-day months), at most
 * RFM_MAX_INTERVAL_YEARS years in absolute value.  Whether it must be
 * positive is the caller's rule.  The caller has refused NULL.
 */
void
RfmCheckInterval(const Interval *iv, const char *name)
{
	const int64 max_months = (int64) RFM_MAX_INTERVAL_YEARS * MONTHS_PER_YEAR;
	const int64 max_days = (int64) RFM_MAX_INTERVAL_YEARS * 366;
	const int64 max_time = max_days * USECS_PER_DAY;
	Interval	limit;
	Interval	neg;

	memset(&limit, 0, sizeof(limit));
	limit.month = (int32) max_months;
	memset(&neg, 0, sizeof(neg));
	neg.month = (int32) -max_months;

	if ((int64) iv->month > max_months || (int64) iv->month < -max_months ||
		(int64) iv->day > max_days || (int64) iv->day < -max_days ||
		iv->time > max_time || iv->time < -max_time ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(iv),
										  IntervalPGetDatum(&limit))) > 0 ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(iv),
										  IntervalPGetDatum(&neg))) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %d years long", name, RFM_MAX_INTERVAL_YEARS),
				 errdetail("%s is \"%s\"; it may span at most %d years, and so may each of its months, days and time.",
						   name,
						   LoyaltyIntervalText(iv),
						   RFM_MAX_INTERVAL_YEARS)));
}

/*
 * A customer id argument: not null (22004), not empty and at most
 * RFM_MAX_KEY_LENGTH characters (22023), as the points functions check
 * theirs.
 */
text *
RfmArgCustomer(FunctionCallInfo fcinfo, int argno, const char *name)
{
	text	   *t;
	int			len;

	LoyaltyArgNotNull(fcinfo, argno, name);
	t = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", name)));
	if (len > RFM_MAX_KEY_LENGTH &&
		pg_mbstrlen_with_len(VARDATA_ANY(t), len) > RFM_MAX_KEY_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %d characters long", name, RFM_MAX_KEY_LENGTH),
				 errdetail("Customer ids are at most %d characters long, as in the points functions.",
						   RFM_MAX_KEY_LENGTH)));
	return t;
}
