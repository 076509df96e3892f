/*
 * loyalty_time.c
 *		Local-time arithmetic shared by the families that compute calendars
 *		in the program time zone (see loyalty_time.h).
 */
#include "loyalty_time.h"

#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "compat.h"

/*
 * The instant of a local time in tz: a local time in a DST gap or overlap
 * resolves as timestamptz input resolves it (DetermineTimeZoneOffset).
 * Out of timestamptz's range is the type's own error.
 */
TimestampTz
LoyaltyTimeFromTm(struct pg_tm *tm, fsec_t fsec, pg_tz *tz)
{
	int			tzoff = DetermineTimeZoneOffset(tm, tz);
	TimestampTz result;

	if (tm2timestamp(tm, fsec, &tzoff, &result) != 0 || !IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return result;
}

/*
 * The text of an interval for an error message: interval_out()'s, in the
 * session's IntervalStyle.  A value PostgreSQL 13 and 14 cannot write (a
 * time field of 2^31 hours or more, see compat.h) is written as
 * "M mons D days H:MM:SS[.FFFFFF]" instead: an error about the value must
 * not turn into 22008 while its message is built.
 */
char *
LoyaltyIntervalText(const Interval *iv)
{
	uint64		t;

	if (LoyaltyIntervalOutFits(iv))
		return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)));
	t = iv->time < 0 ? -(uint64) iv->time : (uint64) iv->time;
	return psprintf("%d mons %d days %s" UINT64_FORMAT ":%02d:%02d%s",
					iv->month, iv->day, iv->time < 0 ? "-" : "",
					t / USECS_PER_HOUR,
					(int) (t / USECS_PER_MINUTE % MINS_PER_HOUR),
					(int) (t / USECS_PER_SEC % SECS_PER_MINUTE),
					t % USECS_PER_SEC == 0 ? "" :
					psprintf(".%06d", (int) (t % USECS_PER_SEC)));
}
