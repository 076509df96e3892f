/*
 * points_time.c
 *		Calendar arithmetic in the program's time zone: expiry dates (N months
 *		later, rounded to the end of the month or year), pending days, the
 *		month of a qualifying bucket, cap periods and weekdays.
 *
 * All of it is local-time arithmetic, like timestamptz + interval with the
 * zone of loyalty.points_program instead of the session's TimeZone, so every
 * session computes the same dates whatever its own setting.
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "pgtime.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "loyalty_time.h"
#include "points.h"

/* Broken-down local time of t in the zone; out of range is an error. */
static void
PointsToTm(TimestampTz t, pg_tz *tz, struct pg_tm *tm, fsec_t *fsec)
{
	int			tzoff;

	if (TIMESTAMP_NOT_FINITE(t) || timestamp2tm(t, &tzoff, tm, fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
}

/*
 * t plus a number of calendar months in the zone, like timestamptz +
 * interval (a day past the end of the shorter month becomes its last day),
 * then rounded up to the end of that month or year: the first instant of the
 * next month or year, local time.
 */
TimestampTz
PointsAddMonths(TimestampTz t, int months, PointsRounding rounding, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			m;
	int			years;

	PointsToTm(t, tz, &tm, &fsec);
	/* zero-based month count, floor division for negative months */
	m = tm.tm_mon - 1 + months;
	years = (m >= 0) ? m / MONTHS_PER_YEAR : -((-m + MONTHS_PER_YEAR - 1) / MONTHS_PER_YEAR);
	tm.tm_year += years;
	tm.tm_mon = m - years * MONTHS_PER_YEAR + 1;
	switch (rounding)
	{
		case POINTS_ROUND_NONE:
			if (tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1])
				tm.tm_mday = day_tab[isleap(tm.tm_year)][tm.tm_mon - 1];
			break;
		case POINTS_ROUND_MONTH:
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
			fsec = 0;
			if (++tm.tm_mon > MONTHS_PER_YEAR)
			{
				tm.tm_mon = 1;
				tm.tm_year++;
			}
			break;
		case POINTS_ROUND_YEAR:
			tm.tm_mon = 1;
			tm.tm_mday = 1;
			tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
			fsec = 0;
			tm.tm_year++;
			break;
	}
	return LoyaltyTimeFromTm(&tm, fsec, tz);
}

/* t plus a number of calendar days, local time of day kept (DST-safe). */
TimestampTz
PointsAddDays(TimestampTz t, int days, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	PointsToTm(t, tz, &tm, &fsec);
	j2date(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) + days, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	return LoyaltyTimeFromTm(&tm, fsec, tz);
}

/* First day of the local calendar month of t. */
DateADT
PointsMonthOf(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	PointsToTm(t, tz, &tm, &fsec);
	return date2j(tm.tm_year, tm.tm_mon, 1) - POSTGRES_EPOCH_JDATE;
}

/* First day of the cap period (day, ISO week, month, year, lifetime) containing t. */
DateADT
PointsPeriodStart(TimestampTz t, const char *period, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			j;

	if (strcmp(period, "lifetime") == 0)
	{
		DateADT		d;

		DATE_NOBEGIN(d);
		return d;
	}
	PointsToTm(t, tz, &tm, &fsec);
	if (strcmp(period, "year") == 0)
		j = date2j(tm.tm_year, 1, 1);
	else if (strcmp(period, "month") == 0)
		j = date2j(tm.tm_year, tm.tm_mon, 1);
	else
	{
		j = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
		if (strcmp(period, "week") == 0)
			j -= (j2day(j) + 6) % 7;	/* back to Monday */
	}
	return j - POSTGRES_EPOCH_JDATE;
}

/* ISO day of the week of t in the zone, 1 = Monday .. 7 = Sunday. */
int
PointsIsoDow(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			dow;

	PointsToTm(t, tz, &tm, &fsec);
	dow = j2day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday));
	return dow == 0 ? 7 : dow;
}

/* Local date of the last instant before t (the last day points expiring at t are usable). */
DateADT
PointsLastDayBefore(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	PointsToTm(t - 1, tz, &tm, &fsec);
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* The rounding named in points_program / earning_rule (CHECK constraints admit only these). */
PointsRounding
PointsParseRounding(const char *s)
{
	if (s == NULL || strcmp(s, "none") == 0)
		return POINTS_ROUND_NONE;
	if (strcmp(s, "month") == 0)
		return POINTS_ROUND_MONTH;
	if (strcmp(s, "year") == 0)
		return POINTS_ROUND_YEAR;
	elog(ERROR, "unknown expiry rounding \"%s\"", s);
	return POINTS_ROUND_NONE;	/* keep compiler quiet */
}

/* The program's zone (UTC when the program has no row). */
pg_tz *
PointsZone(const char *name)
{
	pg_tz	   *tz = pg_tzset(name ? name : "UTC");

	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", name),
				 errhint("Set a valid zone in loyalty.settings.timezone.")));
	return tz;
}
