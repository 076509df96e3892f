/*
 * rfm_zone.c
 *		The program time zone (loyalty.settings.timezone) as the RFM family
 *		uses it: the calendar day of an order, the instant a date or a
 *		timestamp without time zone column stands for, the start of a day
 *		and as_of minus a window.  Batch (rfm_segmentation, rfm_stats) and
 *		live tracking (rfm_live/) both go through here, so that they agree
 *		whatever the TimeZone of the session that runs them (rfm.h).
 *
 * A NULL pg_tz stands for UTC, computed without the zone machinery (the
 * tracking trigger converts every row's time).
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "loyalty_time.h"
#include "rfm.h"

/*
 * The zone name of loyalty.settings ('UTC' without a row), palloc'd.  Read
 * with a plain scan of the one-row table, not through SQL: the batch path
 * runs with the caller's rights, and a role allowed to segment its orders
 * need not be allowed to read the settings.
 */
char *
RfmProgramZoneName(void)
{
	Oid			nsp = get_namespace_oid("loyalty", false);
	Oid			relid = get_relname_relid("settings", nsp);
	char	   *result = NULL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Snapshot	snap;
	TupleDesc	desc;
	int			att = 0;
	int			i;

	if (!OidIsValid(relid))
		return pstrdup("UTC");	/* the 0.2.0 schema, before the update */
	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	for (i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped &&
			strcmp(NameStr(TupleDescAttr(desc, i)->attname), "timezone") == 0)
			att = i + 1;
	if (att == 0)
		elog(ERROR, "loyalty.settings lacks the column timezone");
	snap = RegisterSnapshot(ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	if ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, att, desc, &isnull);

		if (!isnull)
			result = TextDatumGetCString(d);
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return result ? result : pstrdup("UTC");
}

/*
 * The pg_tz of a zone name, NULL for UTC (the fast path).  An unknown name
 * (the settings' CHECK accepts what timezone() accepts) is an error.
 */
pg_tz *
RfmZoneLookup(const char *name)
{
	pg_tz	   *tz;

	if (name == NULL || pg_strcasecmp(name, "UTC") == 0)
		return NULL;
	tz = pg_tzset(name);
	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", name),
				 errhint("Set a zone name such as Europe/Paris in loyalty.settings.timezone.")));
	return tz;
}

/* The program zone now (NULL: UTC). */
pg_tz *
RfmProgramZone(void)
{
	return RfmZoneLookup(RfmProgramZoneName());
}

/* The real UTC zone, for the calendar arithmetic of a NULL (UTC) zone. */
static pg_tz *
RfmZoneOrUtc(pg_tz *tz)
{
	static pg_tz *utc = NULL;

	if (tz != NULL)
		return tz;
	if (utc == NULL)
		utc = pg_tzset("UTC");
	if (utc == NULL)
		elog(ERROR, "time zone \"UTC\" not found");
	return utc;
}

/* Broken-down local time of t in tz; false when out of range. */
static bool
RfmZoneToTm(TimestampTz t, pg_tz *tz, struct pg_tm *tm, fsec_t *fsec)
{
	int			tzoff;

	tz = RfmZoneOrUtc(tz);
	return !TIMESTAMP_NOT_FINITE(t) &&
		timestamp2tm(t, &tzoff, tm, fsec, NULL, tz) == 0;
}

/* Calendar day of t in tz (DateADT: days since 2000-01-01). */
DateADT
RfmZoneDay(TimestampTz t, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (tz == NULL)
	{
		if (t >= 0)
			return (DateADT) (t / USECS_PER_DAY);
		return (DateADT) (-((-t - 1) / USECS_PER_DAY) - 1);
	}
	if (!RfmZoneToTm(t, tz, &tm, &fsec))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - POSTGRES_EPOCH_JDATE;
}

/* 00:00 local time of day d in tz. */
TimestampTz
RfmZoneDayStart(DateADT d, pg_tz *tz)
{
	struct pg_tm tm;

	if (tz == NULL)
		return (TimestampTz) d * USECS_PER_DAY;
	memset(&tm, 0, sizeof(tm));
	j2date(d + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	return LoyaltyTimeFromTm(&tm, 0, RfmZoneOrUtc(tz));
}

/* A timestamp without time zone read as local time in tz. */
TimestampTz
RfmZoneLocal(Timestamp ts, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (tz == NULL)
		return (TimestampTz) ts;
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return LoyaltyTimeFromTm(&tm, fsec, RfmZoneOrUtc(tz));
}

/*
 * t minus an interval with the calendar of tz, as timestamptz - interval
 * computes it in a session whose TimeZone is tz: months, then days, in
 * local time (a day past the end of the shorter month becomes its last
 * day), then the time part.
 */
TimestampTz
RfmZoneMinus(TimestampTz t, const Interval *iv, pg_tz *tz)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(t))
		return t;
	if (iv->month != 0)
	{
		if (!RfmZoneToTm(t, tz, &tm, &fsec))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		tm.tm_mon -= iv->month;
		if (tm.tm_mon > MONTHS_PER_YEAR)
		{
			tm.tm_year += (tm.tm_mon - 1) / MONTHS_PER_YEAR;
			tm.tm_mon = ((tm.tm_mon - 1) % MONTHS_PER_YEAR) + 1;
		}
		else if (tm.tm_mon < 1)
		{
			tm.tm_year += tm.tm_mon / MONTHS_PER_YEAR - 1;
			tm.tm_mon = tm.tm_mon % MONTHS_PER_YEAR + MONTHS_PER_YEAR;
		}
		if (tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1])
			tm.tm_mday = day_tab[isleap(tm.tm_year)][tm.tm_mon - 1];
		t = LoyaltyTimeFromTm(&tm, fsec, RfmZoneOrUtc(tz));
	}
	if (iv->day != 0)
	{
		int			julian;

		if (!RfmZoneToTm(t, tz, &tm, &fsec))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		julian = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday) - iv->day;
		j2date(julian, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
		t = LoyaltyTimeFromTm(&tm, fsec, RfmZoneOrUtc(tz));
	}
	t -= iv->time;
	if (!IS_VALID_TIMESTAMP(t))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return t;
}

/*
 * Start of the current day in the program zone: the default as_of of
 * refresh_segments, so that a nightly job scores as of midnight whatever
 * minute it runs.
 */
TimestampTz
RfmProgramDayStart(TimestampTz now, pg_tz *tz)
{
	return RfmZoneDayStart(RfmZoneDay(now, tz), tz);
}
