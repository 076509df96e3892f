/*
 * rfm_days.c
 *		loyalty.day_buckets: one customer's order count and spend per UTC
 *		day, the part of the live statistics that makes windowed frequency
 *		and monetary computable for any as-of time without reading orders.
 *
 * Buckets are kept sorted by day with their spend stored cumulatively, so a
 * window is a range of buckets and its spend is one subtraction; adding a
 * statement's delta (usually one bucket, usually the last day) rewrites only
 * the buckets from the first changed day on.  See rfm_live.h for the layout.
 */
#include "loyalty.h"

#include <ctype.h>

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "rfm_live.h"

PG_FUNCTION_INFO_V1(day_buckets_in);
PG_FUNCTION_INFO_V1(day_buckets_out);
PG_FUNCTION_INFO_V1(day_buckets_recv);
PG_FUNCTION_INFO_V1(day_buckets_send);
PG_FUNCTION_INFO_V1(rfm_days_merge);
PG_FUNCTION_INFO_V1(rfm_days_prune);

/*
 * A numeric zero, built once per backend: the neutral element of every sum
 * below and the value compared with to find empty buckets.
 */
Numeric
RfmNumericZero(void)
{
	static Numeric zero = NULL;

	if (zero == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		zero = DatumGetNumeric(DirectFunctionCall1(int4_numeric, Int32GetDatum(0)));
		MemoryContextSwitchTo(old);
	}
	return zero;
}

/* Whether a numeric equals zero (whatever its display scale). */
bool
RfmNumericIsZero(Numeric n)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, NumericGetDatum(n),
											 NumericGetDatum(RfmNumericZero()))) == 0;
}

/* Exact numeric addition; overflow raises the usual numeric error. */
Numeric
RfmNumericAdd(Numeric a, Numeric b)
{
	return numeric_add_opt_error(a, b, NULL);
}

/* Exact numeric subtraction. */
Numeric
RfmNumericSub(Numeric a, Numeric b)
{
	return numeric_sub_opt_error(a, b, NULL);
}

/*
 * OID of loyalty.day_buckets, looked up once per backend (the type belongs
 * to the extension, so its OID is stable while the library is loaded in a
 * database; a cached value is re-checked cheaply with the syscache).
 */
Oid
RfmDaysTypeOid(void)
{
	static Oid	typoid = InvalidOid;

	if (!OidIsValid(typoid) || !SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(typoid)))
	{
		Oid			nsp = get_namespace_oid("loyalty", false);

		typoid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
								 CStringGetDatum("day_buckets"),
								 ObjectIdGetDatum(nsp));
		if (!OidIsValid(typoid))
			elog(ERROR, "type loyalty.day_buckets does not exist");
	}
	return typoid;
}

/*
 * Size of a value with n buckets whose cumulative spends are cums[]: the
 * fixed part, then each numeric at an int-aligned offset.
 */
static Size
RfmDaysSize(int n, Numeric *cums)
{
	Size		sz = INTALIGN(sizeof(RfmDays) + 2 * sizeof(int32) * n);
	int			i;

	for (i = 0; i < n; i++)
		sz += INTALIGN(VARSIZE(cums[i]));
	return sz;
}

/*
 * Lay out a value from parallel arrays of days, orders and cumulative
 * spends (already free of empty buckets).  Returns NULL for no buckets: a
 * customer without buckets stores NULL.
 */
static RfmDays *
RfmDaysAssemble(int n, int32 *days, int32 *orders, Numeric *cums)
{
	Size		sz;
	RfmDays    *d;
	char	   *p;
	int			i;

	if (n == 0)
		return NULL;
	sz = RfmDaysSize(n, cums);
	d = (RfmDays *) palloc0(sz);
	SET_VARSIZE(d, sz);
	d->n = n;
	memcpy(RfmDaysDay(d), days, sizeof(int32) * n);
	memcpy(RfmDaysOrders(d), orders, sizeof(int32) * n);
	p = RfmDaysFirstSpend(d);
	for (i = 0; i < n; i++)
	{
		memcpy(p, cums[i], VARSIZE(cums[i]));
		p = RfmDaysNextSpend(p);
	}
	return d;
}

/*
 * Build a value from buckets sorted by day, each day at most once, with the
 * spend of that day alone; empty buckets (no order, zero spend) are left
 * out.
 */
RfmDays *
RfmDaysBuild(RfmDayEntry *entries, int n)
{
	int32	   *days = palloc(sizeof(int32) * Max(n, 1));
	int32	   *orders = palloc(sizeof(int32) * Max(n, 1));
	Numeric    *cums = palloc(sizeof(Numeric) * Max(n, 1));
	Numeric		cum = RfmNumericZero();
	int			m = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (entries[i].orders == 0 && RfmNumericIsZero(entries[i].spend))
			continue;
		Assert(m == 0 || entries[i].day > days[m - 1]);
		cum = RfmNumericAdd(cum, entries[i].spend);
		days[m] = entries[i].day;
		orders[m] = entries[i].orders;
		cums[m] = cum;
		m++;
	}
	return RfmDaysAssemble(m, days, orders, cums);
}

/* Pointers to the n cumulative spends of a value, in bucket order. */
static Numeric *
RfmDaysCums(RfmDays *d)
{
	Numeric    *cums = palloc(sizeof(Numeric) * Max(d->n, 1));
	char	   *p = RfmDaysFirstSpend(d);
	int			i;

	for (i = 0; i < d->n; i++)
	{
		cums[i] = (Numeric) p;
		p = RfmDaysNextSpend(p);
	}
	return cums;
}

/*
 * Add a delta to a stored value.  A bucket of a present before the first
 * day of the delta keeps its cumulative spend as is; every later bucket
 * gets the delta's cumulative spend up to its day added.  Buckets that the
 * delta empties are dropped (their spend is zero, so later cumulative
 * spends do not change).  Either argument may be NULL (no buckets).
 */
RfmDays *
RfmDaysMerge(RfmDays *a, RfmDays *delta)
{
	int			na = a ? a->n : 0;
	int			nd = delta ? delta->n : 0;
	int32	   *days;
	int32	   *orders;
	Numeric    *cums;
	Numeric    *ca = a ? RfmDaysCums(a) : NULL;
	Numeric    *cd = delta ? RfmDaysCums(delta) : NULL;
	Numeric		zero = RfmNumericZero();
	Numeric		run_a = zero;	/* cumulative spend of a up to here */
	Numeric		run_d = zero;	/* cumulative spend of delta up to here */
	Numeric		prev_out = zero;
	int			i = 0,
				j = 0,
				m = 0;

	if (nd == 0)
		return a;
	days = palloc(sizeof(int32) * (na + nd));
	orders = palloc(sizeof(int32) * (na + nd));
	cums = palloc(sizeof(Numeric) * (na + nd));

	while (i < na || j < nd)
	{
		int32		day;
		int64		o;
		Numeric		cum;
		bool		from_a = (j >= nd || (i < na && RfmDaysDay(a)[i] < RfmDaysDay(delta)[j]));
		bool		from_d = (i >= na || (j < nd && RfmDaysDay(delta)[j] < RfmDaysDay(a)[i]));

		if (from_a)
		{
			day = RfmDaysDay(a)[i];
			o = RfmDaysOrders(a)[i];
			run_a = ca[i];
			i++;
		}
		else if (from_d)
		{
			day = RfmDaysDay(delta)[j];
			o = RfmDaysOrders(delta)[j];
			run_d = cd[j];
			j++;
		}
		else
		{
			day = RfmDaysDay(a)[i];
			o = (int64) RfmDaysOrders(a)[i] + RfmDaysOrders(delta)[j];
			run_a = ca[i];
			run_d = cd[j];
			i++;
			j++;
		}
		if (o > PG_INT32_MAX || o < PG_INT32_MIN)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("too many orders on one day for one customer")));
		/* untouched prefix: keep the stored cumulative spend */
		if (run_d == zero)
			cum = run_a;
		else if (run_a == zero)
			cum = run_d;
		else
			cum = RfmNumericAdd(run_a, run_d);
		/* an emptied bucket has no order and no spend of its own */
		if (o == 0 && !from_a)
		{
			Numeric		own = RfmNumericSub(cum, prev_out);

			if (RfmNumericIsZero(own))
				continue;
		}
		days[m] = day;
		orders[m] = (int32) o;
		cums[m] = cum;
		prev_out = cum;
		m++;
	}
	return RfmDaysAssemble(m, days, orders, cums);
}

/*
 * Drop the buckets of days before `before`.  Later cumulative spends are
 * rebased on the first bucket kept so that they stay sums of kept buckets.
 */
RfmDays *
RfmDaysPrune(RfmDays *a, DateADT before)
{
	Numeric    *ca;
	Numeric		base;
	int			k = 0;
	int			i;
	Numeric    *cums;

	if (a == NULL)
		return NULL;
	while (k < a->n && RfmDaysDay(a)[k] < before)
		k++;
	if (k == 0)
		return a;
	if (k == a->n)
		return NULL;
	ca = RfmDaysCums(a);
	base = ca[k - 1];
	cums = palloc(sizeof(Numeric) * (a->n - k));
	for (i = k; i < a->n; i++)
		cums[i - k] = RfmNumericSub(ca[i], base);
	return RfmDaysAssemble(a->n - k, RfmDaysDay(a) + k, RfmDaysOrders(a) + k, cums);
}

/*
 * Orders and spend of the days from..to (inclusive), and the latest day up
 * to `to` with an order (recency when the last order lies after as-of).
 * The spend is sum->cum_end - sum->cum_before (either NULL: zero, the
 * pointers point into d); it is computed as a numeric only if want_spend.
 * d may be NULL.
 */
void
RfmDaysWindow(RfmDays *d, DateADT from, DateADT to, RfmDaysSum *sum, bool want_spend)
{
	char	   *p;
	int			i;

	sum->orders = 0;
	sum->spend = RfmNumericZero();
	sum->cum_before = NULL;
	sum->cum_end = NULL;
	sum->has_order = false;
	sum->last_order_day = 0;
	if (d == NULL)
		return;
	p = RfmDaysFirstSpend(d);
	for (i = 0; i < d->n; i++)
	{
		int32		day = RfmDaysDay(d)[i];

		if (day > to)
			break;
		if (RfmDaysOrders(d)[i] > 0)
		{
			sum->has_order = true;
			sum->last_order_day = day;
		}
		if (day < from)
			sum->cum_before = (Numeric) p;
		else
		{
			sum->orders += RfmDaysOrders(d)[i];
			sum->cum_end = (Numeric) p;
		}
		p = RfmDaysNextSpend(p);
	}
	if (want_spend && sum->cum_end != NULL)
		sum->spend = sum->cum_before ? RfmNumericSub(sum->cum_end, sum->cum_before)
			: sum->cum_end;
}

/* ---------------------------------------------------------------------
 * Text and binary I/O
 *
 * Text form: {YYYY-MM-DD:orders:spend,...} with the spend of each day
 * (not cumulative), days strictly ascending, no empty bucket; '{}' is the
 * empty value.  Stored values never have negative order counts.
 * ---------------------------------------------------------------------
 */

/* Raise the input-syntax error of day_buckets with a detail sentence. */
static void
RfmDaysSyntaxError(const char *input, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type day_buckets: \"%s\"", input),
			 errdetail("%s", detail)));
}

/*
 * Check one parsed bucket against its predecessor: the rules every stored
 * value obeys, shared by text and binary input.
 */
static void
RfmDaysCheckEntry(const char *input, RfmDayEntry *e, RfmDayEntry *prev)
{
	if (DATE_NOT_FINITE(e->day))
		RfmDaysSyntaxError(input, "A bucket day must be a finite date.");
	if (prev != NULL && e->day <= prev->day)
		RfmDaysSyntaxError(input, "Bucket days must be strictly ascending.");
	if (e->orders < 0)
		RfmDaysSyntaxError(input, "A bucket cannot hold a negative number of orders.");
	if (numeric_is_nan(e->spend) || numeric_is_inf_compat(e->spend))
		RfmDaysSyntaxError(input, "A bucket spend must be a finite number.");
	if (e->orders == 0 && RfmNumericIsZero(e->spend))
		RfmDaysSyntaxError(input, "A bucket cannot be empty (no order and zero spend).");
}

/* Parse YYYY-MM-DD[ BC] into a date, false if it is not a valid date. */
static bool
RfmParseDay(const char *s, DateADT *day)
{
	int			y,
				m,
				d,
				n = 0;
	int			jd;
	int			y2,
				m2,
				d2;
	bool		bc = false;

	if (sscanf(s, "%d-%d-%d%n", &y, &m, &d, &n) != 3 || y < 1 || n == 0)
		return false;
	if (strcmp(s + n, " BC") == 0)
		bc = true;
	else if (s[n] != '\0')
		return false;
	if (bc)
		y = -(y - 1);
	if (!IS_VALID_JULIAN(y, m, d))
		return false;
	jd = date2j(y, m, d);
	j2date(jd, &y2, &m2, &d2);
	if (y2 != y || m2 != m || d2 != d)
		return false;
	*day = jd - POSTGRES_EPOCH_JDATE;
	return !DATE_NOT_FINITE(*day) && IS_VALID_DATE(*day);
}

/* Parse an optionally signed decimal int32, false on anything else. */
static bool
RfmParseCount(const char *s, int32 *out)
{
	char	   *end;
	long		v;

	if (*s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < PG_INT32_MIN || v > PG_INT32_MAX ||
		!(isdigit((unsigned char) *s) || *s == '-' || *s == '+'))
		return false;
	*out = (int32) v;
	return true;
}

/* Whether s is [+-]digits[.digits], what numeric_in then reads without fail. */
static bool
RfmLooksDecimal(const char *s)
{
	bool		digits = false;

	if (*s == '+' || *s == '-')
		s++;
	while (isdigit((unsigned char) *s))
		s++, digits = true;
	if (*s == '.')
	{
		s++;
		while (isdigit((unsigned char) *s))
			s++, digits = true;
	}
	return digits && *s == '\0';
}

/*
 * day_buckets_in: parse the text form.  Days are ISO dates, counts
 * integers, spends plain decimal numbers; anything else is a syntax error
 * of day_buckets naming the part at fault.
 */
Datum
day_buckets_in(PG_FUNCTION_ARGS)
{
	char	   *input = PG_GETARG_CSTRING(0);
	char	   *s = pstrdup(input);
	char	   *p;
	char	   *end;
	int			cap = 8;
	int			n = 0;
	RfmDayEntry *entries = palloc(sizeof(RfmDayEntry) * cap);

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	if (*s != '{' || end == s || end[-1] != '}')
		RfmDaysSyntaxError(input, "A day_buckets value is enclosed in braces, e.g. {2026-10-31:2:120.50}.");
	end[-1] = '\0';
	p = s + 1;
	if (*p != '\0')
	{
		for (;;)
		{
			char	   *comma = strchr(p, ',');
			char	   *c1;
			char	   *c2;
			RfmDayEntry e;
			int32		orders;

			if (comma)
				*comma = '\0';
			c1 = strchr(p, ':');
			c2 = c1 ? strchr(c1 + 1, ':') : NULL;
			if (c1 == NULL || c2 == NULL || strchr(c2 + 1, ':') != NULL)
				RfmDaysSyntaxError(input, "Each bucket is day:orders:spend.");
			*c1 = '\0';
			*c2 = '\0';
			if (*p == '\0' || c1[1] == '\0' || c2[1] == '\0')
				RfmDaysSyntaxError(input, "Each bucket is day:orders:spend.");
			if (!RfmParseDay(p, &e.day))
				RfmDaysSyntaxError(input, "A bucket day is a valid date written YYYY-MM-DD (with \" BC\" for years before 1).");
			if (!RfmParseCount(c1 + 1, &orders))
				RfmDaysSyntaxError(input, "An order count is an integer.");
			if (!RfmLooksDecimal(c2 + 1))
				RfmDaysSyntaxError(input, "A spend is a decimal number such as -12.50.");
			e.orders = orders;
			e.spend = DatumGetNumeric(DirectFunctionCall3(numeric_in,
														  CStringGetDatum(c2 + 1),
														  ObjectIdGetDatum(InvalidOid),
														  Int32GetDatum(-1)));
			RfmDaysCheckEntry(input, &e, n > 0 ? &entries[n - 1] : NULL);
			if (n == cap)
			{
				cap *= 2;
				entries = repalloc(entries, sizeof(RfmDayEntry) * cap);
			}
			entries[n++] = e;
			if (comma == NULL)
				break;
			p = comma + 1;
		}
	}
	if (n == 0)
	{
		/* the empty value: a header with no bucket */
		RfmDays    *d = palloc0(INTALIGN(sizeof(RfmDays)));

		SET_VARSIZE(d, INTALIGN(sizeof(RfmDays)));
		PG_RETURN_RFM_DAYS(d);
	}
	PG_RETURN_RFM_DAYS(RfmDaysBuild(entries, n));
}

/* Write a day in ISO form whatever DateStyle says. */
static void
RfmAppendDay(StringInfo buf, DateADT day)
{
	struct pg_tm tm;
	char		s[MAXDATELEN + 1];

	j2date(day + POSTGRES_EPOCH_JDATE, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	EncodeDateOnly(&tm, USE_ISO_DATES, s);
	appendStringInfoString(buf, s);
}

/* day_buckets_out: the text form, with the spend of each day. */
Datum
day_buckets_out(PG_FUNCTION_ARGS)
{
	RfmDays    *d = PG_GETARG_RFM_DAYS(0);
	StringInfoData buf;
	Numeric    *cums = RfmDaysCums(d);
	Numeric		prev = RfmNumericZero();
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (i = 0; i < d->n; i++)
	{
		Numeric		own = RfmNumericSub(cums[i], prev);

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		RfmAppendDay(&buf, RfmDaysDay(d)[i]);
		appendStringInfo(&buf, ":%d:%s", RfmDaysOrders(d)[i],
						 DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(own))));
		prev = cums[i];
	}
	appendStringInfoChar(&buf, '}');
	PG_RETURN_CSTRING(buf.data);
}

/*
 * day_buckets_recv: binary input, int32 count then per bucket int32 day,
 * int32 orders and the day's spend in numeric's binary form; validated like
 * the text form.
 */
Datum
day_buckets_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int32		n = pq_getmsgint(buf, 4);
	RfmDayEntry *entries;
	int			i;

	if (n < 0 || n > (int32) (MaxAllocSize / sizeof(RfmDayEntry)) - 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid bucket count %d in external day_buckets value", n)));
	entries = palloc(sizeof(RfmDayEntry) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		int32		len;
		StringInfoData nbuf;

		entries[i].day = pq_getmsgint(buf, 4);
		entries[i].orders = pq_getmsgint(buf, 4);
		len = pq_getmsgint(buf, 4);
		if (len < 0 || len > buf->len - buf->cursor)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid spend length in external day_buckets value")));
		initReadOnlyStringInfo_compat(&nbuf, &buf->data[buf->cursor], len);
		buf->cursor += len;
		entries[i].spend = DatumGetNumeric(DirectFunctionCall3(numeric_recv,
															   PointerGetDatum(&nbuf),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));
		if (DATE_NOT_FINITE(entries[i].day) || entries[i].orders < 0 ||
			(i > 0 && entries[i].day <= entries[i - 1].day) ||
			numeric_is_nan(entries[i].spend) || numeric_is_inf_compat(entries[i].spend) ||
			(entries[i].orders == 0 && RfmNumericIsZero(entries[i].spend)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("invalid bucket in external day_buckets value"),
					 errdetail("Buckets must have strictly ascending finite days, no negative order count, a finite spend and must not be empty.")));
	}
	if (n == 0)
	{
		RfmDays    *d = palloc0(INTALIGN(sizeof(RfmDays)));

		SET_VARSIZE(d, INTALIGN(sizeof(RfmDays)));
		PG_RETURN_RFM_DAYS(d);
	}
	PG_RETURN_RFM_DAYS(RfmDaysBuild(entries, n));
}

/* day_buckets_send: the binary form read by day_buckets_recv. */
Datum
day_buckets_send(PG_FUNCTION_ARGS)
{
	RfmDays    *d = PG_GETARG_RFM_DAYS(0);
	StringInfoData buf;
	Numeric    *cums = RfmDaysCums(d);
	Numeric		prev = RfmNumericZero();
	int			i;

	pq_begintypsend(&buf);
	pq_sendint32(&buf, d->n);
	for (i = 0; i < d->n; i++)
	{
		Numeric		own = RfmNumericSub(cums[i], prev);
		bytea	   *nb = DatumGetByteaPP(DirectFunctionCall1(numeric_send, NumericGetDatum(own)));

		pq_sendint32(&buf, RfmDaysDay(d)[i]);
		pq_sendint32(&buf, RfmDaysOrders(d)[i]);
		pq_sendint32(&buf, VARSIZE_ANY_EXHDR(nb));
		pq_sendbytes(&buf, VARDATA_ANY(nb), VARSIZE_ANY_EXHDR(nb));
		prev = cums[i];
	}
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/*
 * loyalty._rfm_days_merge(stored, delta): the stored buckets with a
 * statement's delta added; NULL stands for no bucket on either side.  Used
 * by the upsert of the tracking triggers.
 */
Datum
rfm_days_merge(PG_FUNCTION_ARGS)
{
	RfmDays    *a = PG_ARGISNULL(0) ? NULL : PG_GETARG_RFM_DAYS(0);
	RfmDays    *d = PG_ARGISNULL(1) ? NULL : PG_GETARG_RFM_DAYS(1);
	RfmDays    *r;

	if (a != NULL && a->n == 0)
		a = NULL;
	r = RfmDaysMerge(a, d);
	if (r == NULL || r->n == 0)
		PG_RETURN_NULL();
	PG_RETURN_RFM_DAYS(r);
}

/*
 * loyalty._rfm_days_prune(buckets, before): the buckets of days on or after
 * `before` (NULL when none is left).  refresh_segments prunes with it.
 */
Datum
rfm_days_prune(PG_FUNCTION_ARGS)
{
	RfmDays    *a = PG_GETARG_RFM_DAYS(0);
	DateADT		before = PG_GETARG_DATEADT(1);
	RfmDays    *r;

	if (a->n == 0)
		PG_RETURN_NULL();
	r = RfmDaysPrune(a, before);
	if (r == NULL)
		PG_RETURN_NULL();
	PG_RETURN_RFM_DAYS(r);
}

PG_FUNCTION_INFO_V1(day_buckets_entries);

/*
 * loyalty.day_buckets_entries(buckets): the buckets as rows (day, orders,
 * spend of that day), for inspection and for checks that compare the live
 * statistics with the orders they come from.
 */
Datum
day_buckets_entries(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RfmDays    *d = PG_GETARG_RFM_DAYS(0);
	Numeric    *cums;
	Numeric		prev = RfmNumericZero();
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	cums = RfmDaysCums(d);
	for (i = 0; i < d->n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = DateADTGetDatum(RfmDaysDay(d)[i]);
		values[1] = Int32GetDatum(RfmDaysOrders(d)[i]);
		values[2] = NumericGetDatum(RfmNumericSub(cums[i], prev));
		prev = cums[i];
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
