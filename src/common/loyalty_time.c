/*
 * loyalty_time.c
 *		Local-time arithmetic shared by the families that compute calendars
 *		in the program time zone (see loyalty_time.h).
 */
#include "loyalty_time.h"

#include "utils/datetime.h"
#include "utils/timestamp.h"

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
