/*
 * kpi_lift.c
 *		The loyalty.lift_interval aggregate: the difference of the mean
 *		outcome of a treated group and a control group (hold-out) with a
 *		95% Welch t interval, optionally CUPED-adjusted by a pre-period
 *		covariate.
 *
 * The state holds, per group, the count, the means of outcome and
 * covariate and their centred second moments and co-moment, updated with
 * Welford's recurrences and merged with Chan's pairwise formulas: exact
 * enough for money-sized values over millions of rows, and combinable, so
 * the aggregate runs in parallel plans (combine / serialize / deserialize,
 * like tdigest).
 *
 * CUPED (Deng et al. 2013): with a covariate x known before the treatment,
 * y' = y - theta (x - mean(x)), theta = cov(x, y) / var(x) over both groups
 * pooled.  The difference of the means of y' estimates the same effect as
 * that of y with a variance smaller by the factor 1 - rho^2.  The group
 * means and variances of y' follow from the moments in the state, so no
 * second pass is needed.  The degrees of freedom are Welch-Satterthwaite's
 * (the one degree spent on theta is ignored, as is usual: it matters only
 * for tiny groups).
 */
#include "kpi.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"

/* Running moments of one group. */
typedef struct KpiMoments
{
	int64		n;
	double		mean_y;
	double		mean_x;
	double		m2_y;			/* sum of (y - mean_y)^2 */
	double		m2_x;			/* sum of (x - mean_x)^2 */
	double		c_xy;			/* sum of (x - mean_x)(y - mean_y) */
} KpiMoments;

/* Transition state: treated and control groups, covariate bookkeeping. */
typedef struct KpiLiftState
{
	KpiMoments	group[2];		/* [0] control, [1] treated */
	int64		with_covariate; /* rows that carried a covariate */
} KpiLiftState;

#define KPI_LIFT_NATTS 11

/* Add one observation (Welford); x is 0 when there is no covariate. */
static void
MomentsAdd(KpiMoments *m, double y, double x)
{
	double		dy;
	double		dx;

	m->n++;
	dy = y - m->mean_y;
	dx = x - m->mean_x;
	m->mean_y += dy / m->n;
	m->mean_x += dx / m->n;
	m->m2_y += dy * (y - m->mean_y);
	m->m2_x += dx * (x - m->mean_x);
	m->c_xy += dx * (y - m->mean_y);
}

/* Merge b into a (Chan et al.). */
static void
MomentsMerge(KpiMoments *a, const KpiMoments *b)
{
	double		n;
	double		dy;
	double		dx;
	double		w;

	if (b->n == 0)
		return;
	if (a->n == 0)
	{
		*a = *b;
		return;
	}
	n = (double) a->n + (double) b->n;
	dy = b->mean_y - a->mean_y;
	dx = b->mean_x - a->mean_x;
	w = (double) a->n * (double) b->n / n;
	a->mean_y += dy * b->n / n;
	a->mean_x += dx * b->n / n;
	a->m2_y += b->m2_y + dy * dy * w;
	a->m2_x += b->m2_x + dx * dx * w;
	a->c_xy += b->c_xy + dx * dy * w;
	a->n += b->n;
}

/* The state of this group, allocated in the aggregate context if new. */
static KpiLiftState *
LiftState(FunctionCallInfo fcinfo, const char *caller)
{
	MemoryContext aggcxt;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "%s called in non-aggregate context", caller);
	if (!PG_ARGISNULL(0))
		return (KpiLiftState *) PG_GETARG_POINTER(0);
	return (KpiLiftState *) MemoryContextAllocZero(aggcxt, sizeof(KpiLiftState));
}

/*
 * Add the outcome in argument yarg and the covariate in argument xarg to
 * group g of the state: a null outcome leaves the row out (as avg() leaves
 * out nulls), a null covariate marks a row without one (CUPED needs it on
 * every row).
 */
static void
LiftAdd(KpiLiftState *s, int g, FunctionCallInfo fcinfo, int yarg, int xarg)
{
	double		y;
	double		x = 0.0;

	if (PG_ARGISNULL(yarg))
		return;
	y = PG_GETARG_FLOAT8(yarg);
	if (!PG_ARGISNULL(xarg))
	{
		x = PG_GETARG_FLOAT8(xarg);
		s->with_covariate++;
	}
	if (!isfinite(y) || !isfinite(x))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("lift_interval values must be finite"),
				 errdetail("An outcome or covariate was infinite or NaN.")));
	MomentsAdd(&s->group[g], y, x);
}

PG_FUNCTION_INFO_V1(kpi_lift_transfn);

/*
 * Transition: lift_interval(outcome, treated, covariate).  Rows with a null
 * outcome or a null group are left out; see LiftAdd.
 */
Datum
kpi_lift_transfn(PG_FUNCTION_ARGS)
{
	KpiLiftState *s = LiftState(fcinfo, "kpi_lift_transfn");

	if (PG_ARGISNULL(2))
		PG_RETURN_POINTER(s);
	LiftAdd(s, PG_GETARG_BOOL(2) ? 1 : 0, fcinfo, 1, 3);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(kpi_lift_moments_transfn);

/*
 * Transition of loyalty._lift_moments(outcome, covariate): the moments of
 * one group (kept as the treated group of the state), so that a query can
 * collect them per variant in the same pass as its other aggregates and
 * pair each treated variant with the hold-out afterwards
 * (loyalty._lift_estimate) instead of scanning the rows again.
 */
Datum
kpi_lift_moments_transfn(PG_FUNCTION_ARGS)
{
	KpiLiftState *s = LiftState(fcinfo, "kpi_lift_moments_transfn");

	LiftAdd(s, 1, fcinfo, 1, 2);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(kpi_lift_combine);

/* Combine two partial states (parallel aggregation). */
Datum
kpi_lift_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	KpiLiftState *a;
	KpiLiftState *b;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "kpi_lift_combine called in non-aggregate context");
	a = PG_ARGISNULL(0) ? NULL : (KpiLiftState *) PG_GETARG_POINTER(0);
	b = PG_ARGISNULL(1) ? NULL : (KpiLiftState *) PG_GETARG_POINTER(1);
	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		a = MemoryContextAlloc(aggcxt, sizeof(KpiLiftState));
		*a = *b;
		PG_RETURN_POINTER(a);
	}
	MomentsMerge(&a->group[0], &b->group[0]);
	MomentsMerge(&a->group[1], &b->group[1]);
	a->with_covariate += b->with_covariate;
	PG_RETURN_POINTER(a);
}

/* Write one group's moments. */
static void
MomentsSend(StringInfo buf, const KpiMoments *m)
{
	pq_sendint64(buf, m->n);
	pq_sendfloat8(buf, m->mean_y);
	pq_sendfloat8(buf, m->mean_x);
	pq_sendfloat8(buf, m->m2_y);
	pq_sendfloat8(buf, m->m2_x);
	pq_sendfloat8(buf, m->c_xy);
}

/* Read one group's moments. */
static void
MomentsRecv(StringInfo buf, KpiMoments *m)
{
	m->n = pq_getmsgint64(buf);
	m->mean_y = pq_getmsgfloat8(buf);
	m->mean_x = pq_getmsgfloat8(buf);
	m->m2_y = pq_getmsgfloat8(buf);
	m->m2_x = pq_getmsgfloat8(buf);
	m->c_xy = pq_getmsgfloat8(buf);
}

/* A state as bytes (kpi_lift_serialize, loyalty._lift_moments). */
static bytea *
LiftSerialize(const KpiLiftState *s)
{
	StringInfoData buf;

	pq_begintypsend(&buf);
	MomentsSend(&buf, &s->group[0]);
	MomentsSend(&buf, &s->group[1]);
	pq_sendint64(&buf, s->with_covariate);
	return pq_endtypsend(&buf);
}

/* Rebuild a state from LiftSerialize's bytes into *s. */
static void
LiftDeserialize(bytea *bytes, KpiLiftState *s)
{
	StringInfoData buf;

	buf.data = VARDATA_ANY(bytes);
	buf.len = VARSIZE_ANY_EXHDR(bytes);
	buf.maxlen = buf.len;
	buf.cursor = 0;
	MomentsRecv(&buf, &s->group[0]);
	MomentsRecv(&buf, &s->group[1]);
	s->with_covariate = pq_getmsgint64(&buf);
	pq_getmsgend(&buf);
}

PG_FUNCTION_INFO_V1(kpi_lift_serialize);

/* Serialize a state to bytea for transfer between parallel workers. */
Datum
kpi_lift_serialize(PG_FUNCTION_ARGS)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "kpi_lift_serialize called in non-aggregate context");
	PG_RETURN_BYTEA_P(LiftSerialize((KpiLiftState *) PG_GETARG_POINTER(0)));
}

PG_FUNCTION_INFO_V1(kpi_lift_deserialize);

/* Rebuild a state from kpi_lift_serialize's bytes. */
Datum
kpi_lift_deserialize(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	KpiLiftState *s;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "kpi_lift_deserialize called in non-aggregate context");
	s = MemoryContextAllocZero(aggcxt, sizeof(KpiLiftState));
	LiftDeserialize(PG_GETARG_BYTEA_PP(0), s);
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(kpi_lift_moments_final);

/*
 * Final of loyalty._lift_moments: the state's bytes (null without rows),
 * read back by loyalty._lift_estimate.
 */
Datum
kpi_lift_moments_final(PG_FUNCTION_ARGS)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "kpi_lift_moments_final called in non-aggregate context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(LiftSerialize((KpiLiftState *) PG_GETARG_POINTER(0)));
}

/*
 * The estimate from a final state into values/nulls (KPI_LIFT_NATTS
 * columns, see loyalty.lift_estimate): group sizes and (adjusted) means
 * always; the difference, its standard error, the degrees of freedom and
 * the interval when both groups have at least two rows and some variance.
 */
static void
LiftEstimate(const KpiLiftState *s, Datum *values, bool *nulls)
{
	const KpiMoments *c = &s->group[0];
	const KpiMoments *t = &s->group[1];
	int64		n = c->n + t->n;
	bool		cuped = s->with_covariate > 0;
	double		theta = 0.0;
	double		mean[2];
	double		var[2];
	int			g;

	if (cuped && s->with_covariate != n)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lift_interval covariate is null on some rows"),
				 errdetail("CUPED needs the covariate on every row: pass it on all rows, or null on all rows for a plain Welch interval.")));
	if (cuped)
	{
		KpiMoments all = *c;

		MomentsMerge(&all, t);
		if (all.m2_x > 0.0)
			theta = all.c_xy / all.m2_x;
		for (g = 0; g < 2; g++)
			mean[g] = s->group[g].mean_y - theta * (s->group[g].mean_x - all.mean_x);
	}
	else
		for (g = 0; g < 2; g++)
			mean[g] = s->group[g].mean_y;
	for (g = 0; g < 2; g++)
	{
		const KpiMoments *m = &s->group[g];
		double		ss = m->m2_y - 2.0 * theta * m->c_xy + theta * theta * m->m2_x;

		var[g] = m->n > 1 ? Max(ss, 0.0) / (m->n - 1) : NAN;
	}

	memset(nulls, true, sizeof(bool) * KPI_LIFT_NATTS);
	values[0] = Int64GetDatum(t->n);
	values[1] = Int64GetDatum(c->n);
	nulls[0] = nulls[1] = false;
	if (t->n > 0)
		values[2] = Float8GetDatum(mean[1]), nulls[2] = false;
	if (c->n > 0)
		values[3] = Float8GetDatum(mean[0]), nulls[3] = false;
	if (t->n > 0 && c->n > 0)
		values[4] = Float8GetDatum(mean[1] - mean[0]), nulls[4] = false;
	if (cuped)
		values[10] = Float8GetDatum(theta), nulls[10] = false;
	if (t->n > 1 && c->n > 1)
	{
		double		vt = var[1] / t->n;
		double		vc = var[0] / c->n;
		double		se = sqrt(vt + vc);
		double		df;
		double		q;

		if (se > 0.0)
		{
			df = (vt + vc) * (vt + vc) /
				(vt * vt / (t->n - 1) + vc * vc / (c->n - 1));
			q = KpiStudentTQuantile(0.5 + KPI_CONFIDENCE / 2.0, df);
			values[5] = Float8GetDatum(se);
			values[6] = Float8GetDatum(df);
			values[7] = Float8GetDatum(mean[1] - mean[0] - q * se);
			values[8] = Float8GetDatum(mean[1] - mean[0] + q * se);
			values[9] = Float8GetDatum(q);
			nulls[5] = nulls[6] = nulls[7] = nulls[8] = nulls[9] = false;
		}
	}
}

/* The loyalty.lift_estimate row of a state, for this function's result. */
static Datum
LiftEstimateDatum(FunctionCallInfo fcinfo, const KpiLiftState *s)
{
	TupleDesc	tupdesc;
	Datum		values[KPI_LIFT_NATTS];
	bool		nulls[KPI_LIFT_NATTS];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "function returning loyalty.lift_estimate called in a context that cannot accept it");
	tupdesc = BlessTupleDesc(tupdesc);
	if (tupdesc->natts != KPI_LIFT_NATTS)
		elog(ERROR, "loyalty.lift_estimate has %d columns, expected %d",
			 tupdesc->natts, KPI_LIFT_NATTS);
	LiftEstimate(s, values, nulls);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

PG_FUNCTION_INFO_V1(kpi_lift_final);

/*
 * Final: the loyalty.lift_estimate row; null for a group without rows at
 * all.
 */
Datum
kpi_lift_final(PG_FUNCTION_ARGS)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "kpi_lift_final called in non-aggregate context");
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_DATUM(LiftEstimateDatum(fcinfo, (KpiLiftState *) PG_GETARG_POINTER(0)));
}

PG_FUNCTION_INFO_V1(kpi_lift_from_moments);

/*
 * loyalty._lift_estimate(treated bytea, controls bytea[]): the estimate of
 * lift_interval from the moments of the treated group and of the control
 * groups (loyalty._lift_moments; the controls merged, null elements and a
 * null array are no rows).  The same state as lift_interval over the same
 * rows in the same order, hence the same figures; null treated: null.
 */
Datum
kpi_lift_from_moments(PG_FUNCTION_ARGS)
{
	KpiLiftState s;
	KpiLiftState part;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	memset(&s, 0, sizeof(s));
	LiftDeserialize(PG_GETARG_BYTEA_PP(0), &part);
	s.group[1] = part.group[1];
	s.with_covariate = part.with_covariate;
	if (!PG_ARGISNULL(1))
	{
		ArrayType  *controls = PG_GETARG_ARRAYTYPE_P(1);
		ArrayIterator it = array_create_iterator(controls, 0, NULL);
		Datum		d;
		bool		isnull;

		while (array_iterate(it, &d, &isnull))
		{
			if (isnull)
				continue;
			LiftDeserialize(DatumGetByteaPP(d), &part);
			MomentsMerge(&s.group[0], &part.group[1]);
			s.with_covariate += part.with_covariate;
		}
		array_free_iterator(it);
	}
	PG_RETURN_DATUM(LiftEstimateDatum(fcinfo, &s));
}
