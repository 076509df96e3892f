/*
 * clv_stats.c
 *		loyalty.clv_stats(frequency, recency, age, monetary_value): the
 *		sufficient statistics of both models, as a parallel-safe aggregate.
 *
 * BG/NBD's likelihood depends on a customer only through (x, t_x, T), and
 * Gamma-Gamma's only through (x, mean repeat spend): the state keeps the
 * distinct values of each with their counts, nothing per row.  Rows are
 * appended to two arrays that are compacted (sorted, duplicates merged)
 * whenever they fill up; the capacity doubles only if the compacted array
 * still fills more than half of it, so memory stays within twice the
 * distinct entries (plus the growth step).  Combine concatenates and
 * compacts; the serialized form is the compacted arrays, which is also
 * what the final function returns (bytea, read by clv_fit_stats).
 */
#include "clv.h"

#include <math.h>

#include "access/htup_details.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#define CLV_INITIAL_CAP		1024

/* Order of triples: by x first (ClvBgnbdLogLik caches per x), then t_x, T. */
static int
ClvTripleCmp(const void *pa, const void *pb)
{
	const ClvTriple *a = pa;
	const ClvTriple *b = pb;

	if (a->x != b->x)
		return a->x < b->x ? -1 : 1;
	if (a->tx != b->tx)
		return a->tx < b->tx ? -1 : 1;
	if (a->T != b->T)
		return a->T < b->T ? -1 : 1;
	return 0;
}

/* Order of pairs: by x, then mean spend. */
static int
ClvPairCmp(const void *pa, const void *pb)
{
	const ClvPair *a = pa;
	const ClvPair *b = pb;

	if (a->x != b->x)
		return a->x < b->x ? -1 : 1;
	if (a->m != b->m)
		return a->m < b->m ? -1 : 1;
	return 0;
}

/* Sort and merge equal triples and pairs (counts added). */
void
ClvStatsCompact(ClvStats *s)
{
	int64		i,
				k;

	if (s->ntriples > 1)
	{
		qsort(s->triples, s->ntriples, sizeof(ClvTriple), ClvTripleCmp);
		for (i = 1, k = 0; i < s->ntriples; i++)
		{
			if (ClvTripleCmp(&s->triples[k], &s->triples[i]) == 0)
				s->triples[k].n += s->triples[i].n;
			else
				s->triples[++k] = s->triples[i];
		}
		s->ntriples = k + 1;
	}
	s->triples_compact = s->ntriples;
	if (s->npairs > 1)
	{
		qsort(s->pairs, s->npairs, sizeof(ClvPair), ClvPairCmp);
		for (i = 1, k = 0; i < s->npairs; i++)
		{
			if (ClvPairCmp(&s->pairs[k], &s->pairs[i]) == 0)
				s->pairs[k].n += s->pairs[i].n;
			else
				s->pairs[++k] = s->pairs[i];
		}
		s->npairs = k + 1;
	}
	s->pairs_compact = s->npairs;
}

/*
 * Make room for `more` triples and `more_pairs` pairs: compact first when
 * full, grow (doubling) only when compaction left the array over half full,
 * so that appends stay amortised constant and memory within about four
 * times the distinct entries.
 */
static void
ClvStatsReserve(ClvStats *s, int64 more, int64 more_pairs)
{
	if (s->ntriples + more <= s->triples_cap && s->npairs + more_pairs <= s->pairs_cap)
		return;
	ClvStatsCompact(s);
	if (s->ntriples + more > s->triples_cap / 2)
	{
		int64		cap = Max(s->triples_cap * 2, 2 * (s->ntriples + more));

		s->triples = repalloc_huge(s->triples, cap * sizeof(ClvTriple));
		s->triples_cap = cap;
	}
	if (s->npairs + more_pairs > s->pairs_cap / 2)
	{
		int64		cap = Max(s->pairs_cap * 2, 2 * (s->npairs + more_pairs));

		s->pairs = repalloc_huge(s->pairs, cap * sizeof(ClvPair));
		s->pairs_cap = cap;
	}
}

/* A new, empty state in the aggregate's context. */
static ClvStats *
ClvStatsNew(MemoryContext cxt)
{
	ClvStats   *s = MemoryContextAllocZero(cxt, sizeof(ClvStats));

	s->triples = MemoryContextAllocHuge(cxt, CLV_INITIAL_CAP * sizeof(ClvTriple));
	s->triples_cap = CLV_INITIAL_CAP;
	s->pairs = MemoryContextAllocHuge(cxt, CLV_INITIAL_CAP * sizeof(ClvPair));
	s->pairs_cap = CLV_INITIAL_CAP;
	return s;
}

/* A finite, non-negative double argument, or 22023. */
static double
ClvArgTime(FunctionCallInfo fcinfo, int argno, const char *name)
{
	double		v = PG_GETARG_FLOAT8(argno);

	if (!isfinite(v) || v < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite number >= 0, not %g", name, v),
				 errdetail("Recency and age are times since the customer's first purchase.")));
	return v;
}

/*
 * Transition: one customer (x, t_x, T, mean repeat spend).  Rows with a
 * NULL x, t_x or T are ignored; x < 0, t_x > T, or x = 0 with t_x > 0 are
 * refused.  A repeat buyer's spend enters the Gamma-Gamma pairs only when
 * it is positive (the model's support); the others are counted.
 */
PG_FUNCTION_INFO_V1(clv_stats_transfn);
Datum
clv_stats_transfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	ClvStats   *s;
	int64		x;
	double		tx,
				T;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clv_stats_transfn called in non-aggregate context");
	s = PG_ARGISNULL(0) ? ClvStatsNew(aggcxt) : (ClvStats *) PG_GETARG_POINTER(0);
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		PG_RETURN_POINTER(s);
	x = PG_GETARG_INT64(1);
	tx = ClvArgTime(fcinfo, 2, "recency");
	T = ClvArgTime(fcinfo, 3, "age");
	if (x < 0 || x > (INT64CONST(1) << 52))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("frequency must be >= 0, not " INT64_FORMAT, x),
				 errdetail("Frequency counts repeat purchase periods.")));
	if (tx > T || (x == 0 && tx != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid customer summary: frequency " INT64_FORMAT ", recency %g, age %g", x, tx, T),
				 errdetail("Recency must lie between 0 and the age, and be 0 without repeat purchase.")));

	ClvStatsReserve(s, 1, 1);
	s->triples[s->ntriples].x = (double) x;
	s->triples[s->ntriples].tx = tx;
	s->triples[s->ntriples].T = T;
	s->triples[s->ntriples].n = 1;
	s->ntriples++;
	s->customers++;
	if (x > 0)
	{
		double		m = PG_ARGISNULL(4) ? NAN : PG_GETARG_FLOAT8(4);

		if (isfinite(m) && m > 0)
		{
			s->pairs[s->npairs].x = (double) x;
			s->pairs[s->npairs].m = m;
			s->pairs[s->npairs].n = 1;
			s->npairs++;
		}
		else
			s->skipped_spend++;
	}
	PG_RETURN_POINTER(s);
}

/* Combine two partial states (parallel aggregation). */
PG_FUNCTION_INFO_V1(clv_stats_combine);
Datum
clv_stats_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	ClvStats   *a;
	ClvStats   *b;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clv_stats_combine called in non-aggregate context");
	a = PG_ARGISNULL(0) ? NULL : (ClvStats *) PG_GETARG_POINTER(0);
	b = PG_ARGISNULL(1) ? NULL : (ClvStats *) PG_GETARG_POINTER(1);
	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
		a = ClvStatsNew(aggcxt);
	ClvStatsReserve(a, b->ntriples, b->npairs);
	memcpy(a->triples + a->ntriples, b->triples, b->ntriples * sizeof(ClvTriple));
	a->ntriples += b->ntriples;
	memcpy(a->pairs + a->npairs, b->pairs, b->npairs * sizeof(ClvPair));
	a->npairs += b->npairs;
	a->customers += b->customers;
	a->skipped_spend += b->skipped_spend;
	ClvStatsCompact(a);
	PG_RETURN_POINTER(a);
}

/* The compacted state as bytes: counts, then the two arrays. */
static bytea *
ClvStatsToBytea(ClvStats *s)
{
	StringInfoData buf;
	int64		i;

	ClvStatsCompact(s);
	pq_begintypsend(&buf);
	pq_sendint64(&buf, s->customers);
	pq_sendint64(&buf, s->skipped_spend);
	pq_sendint64(&buf, s->ntriples);
	pq_sendint64(&buf, s->npairs);
	for (i = 0; i < s->ntriples; i++)
	{
		pq_sendfloat8(&buf, s->triples[i].x);
		pq_sendfloat8(&buf, s->triples[i].tx);
		pq_sendfloat8(&buf, s->triples[i].T);
		pq_sendfloat8(&buf, s->triples[i].n);
	}
	for (i = 0; i < s->npairs; i++)
	{
		pq_sendfloat8(&buf, s->pairs[i].x);
		pq_sendfloat8(&buf, s->pairs[i].m);
		pq_sendfloat8(&buf, s->pairs[i].n);
	}
	return pq_endtypsend(&buf);
}

/*
 * Read statistics back (serialized state or clv_stats' result), checking
 * sizes and values: the bytes may come from a user.
 */
ClvStats *
ClvStatsFromBytea(bytea *b)
{
	StringInfoData buf;
	ClvStats   *s = palloc0(sizeof(ClvStats));
	int64		i;
	int64		len = VARSIZE_ANY_EXHDR(b);

	buf.data = VARDATA_ANY(b);
	buf.len = len;
	buf.maxlen = len;
	buf.cursor = 0;
	if (len < 32)
		goto corrupt;
	s->customers = pq_getmsgint64(&buf);
	s->skipped_spend = pq_getmsgint64(&buf);
	s->ntriples = pq_getmsgint64(&buf);
	s->npairs = pq_getmsgint64(&buf);
	if (s->ntriples < 0 || s->npairs < 0 ||
		s->ntriples > len / 32 || s->npairs > len / 24 ||
		32 + s->ntriples * 32 + s->npairs * 24 != len)
		goto corrupt;
	s->triples = palloc_extended(Max(s->ntriples, 1) * sizeof(ClvTriple), MCXT_ALLOC_HUGE);
	s->pairs = palloc_extended(Max(s->npairs, 1) * sizeof(ClvPair), MCXT_ALLOC_HUGE);
	s->triples_cap = s->ntriples;
	s->pairs_cap = s->npairs;
	for (i = 0; i < s->ntriples; i++)
	{
		ClvTriple  *t = &s->triples[i];

		t->x = pq_getmsgfloat8(&buf);
		t->tx = pq_getmsgfloat8(&buf);
		t->T = pq_getmsgfloat8(&buf);
		t->n = pq_getmsgfloat8(&buf);
		if (!(t->x >= 0 && t->tx >= 0 && t->tx <= t->T && isfinite(t->T) &&
			  t->n > 0 && isfinite(t->n) && t->x == floor(t->x) && t->x < 1e15))
			goto corrupt;
	}
	for (i = 0; i < s->npairs; i++)
	{
		ClvPair    *p = &s->pairs[i];

		p->x = pq_getmsgfloat8(&buf);
		p->m = pq_getmsgfloat8(&buf);
		p->n = pq_getmsgfloat8(&buf);
		if (!(p->x >= 1 && p->m > 0 && isfinite(p->m) && p->n > 0 &&
			  isfinite(p->n) && p->x < 1e15))
			goto corrupt;
	}
	s->triples_compact = s->ntriples;
	s->pairs_compact = s->npairs;
	return s;

corrupt:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid clv statistics"),
			 errdetail("The value is not a result of loyalty.clv_stats.")));
	return NULL;
}

/* Serialize a partial state for a parallel worker's result. */
PG_FUNCTION_INFO_V1(clv_stats_serialize);
Datum
clv_stats_serialize(PG_FUNCTION_ARGS)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "clv_stats_serialize called in non-aggregate context");
	PG_RETURN_BYTEA_P(ClvStatsToBytea((ClvStats *) PG_GETARG_POINTER(0)));
}

/* Deserialize a partial state into the aggregate's context. */
PG_FUNCTION_INFO_V1(clv_stats_deserialize);
Datum
clv_stats_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	MemoryContext old;
	ClvStats   *s;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clv_stats_deserialize called in non-aggregate context");
	old = MemoryContextSwitchTo(aggcxt);
	s = ClvStatsFromBytea(PG_GETARG_BYTEA_PP(0));
	MemoryContextSwitchTo(old);
	PG_RETURN_POINTER(s);
}

/* Final: the compacted statistics as bytea (NULL without any row). */
PG_FUNCTION_INFO_V1(clv_stats_final);
Datum
clv_stats_final(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(ClvStatsToBytea((ClvStats *) PG_GETARG_POINTER(0)));
}

/*
 * clv_stats_info(stats): what the statistics hold (customers, distinct
 * triples, repeat buyers kept for Gamma-Gamma, repeat buyers left out).
 */
PG_FUNCTION_INFO_V1(clv_stats_info);
Datum
clv_stats_info(PG_FUNCTION_ARGS)
{
	ClvStats   *s = ClvStatsFromBytea(PG_GETARG_BYTEA_PP(0));
	TupleDesc	desc;
	Datum		v[5];
	bool		nl[5] = {false, false, false, false, false};
	double		repeat = 0;
	int64		i;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "clv_stats_info must return a row");
	for (i = 0; i < s->npairs; i++)
		repeat += s->pairs[i].n;
	v[0] = Int64GetDatum(s->customers);
	v[1] = Int64GetDatum(s->ntriples);
	v[2] = Int64GetDatum(s->npairs);
	v[3] = Int64GetDatum((int64) repeat);
	v[4] = Int64GetDatum(s->skipped_spend);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), v, nl)));
}
