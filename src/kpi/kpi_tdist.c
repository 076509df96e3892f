/*
 * kpi_tdist.c
 *		Student's t distribution: the cumulative distribution function from
 *		the regularized incomplete beta function (continued fraction,
 *		modified Lentz), and its inverse by safeguarded bisection.  Any
 *		positive (also non-integer) degrees of freedom, as Welch's
 *		approximation produces; infinite degrees of freedom is the normal
 *		distribution.  Accurate to about 1e-12, tested against published
 *		table values in sql/kpi_stats.sql.
 */
#include "kpi.h"

#include <math.h>

#include "fmgr.h"
#include "utils/float.h"

#define KPI_BETA_EPS 1e-15
#define KPI_BETA_TINY 1e-300
#define KPI_BETA_MAX_ITER 500

/*
 * The continued fraction of the incomplete beta function I_x(a, b)
 * (converges fast for x < (a + 1) / (a + b + 2)).
 */
static double
BetaContinuedFraction(double a, double b, double x)
{
	double		qab = a + b;
	double		qap = a + 1.0;
	double		qam = a - 1.0;
	double		c = 1.0;
	double		d = 1.0 - qab * x / qap;
	double		h;
	int			m;

	if (fabs(d) < KPI_BETA_TINY)
		d = KPI_BETA_TINY;
	d = 1.0 / d;
	h = d;
	for (m = 1; m <= KPI_BETA_MAX_ITER; m++)
	{
		int			m2 = 2 * m;
		double		aa = m * (b - m) * x / ((qam + m2) * (a + m2));
		double		del;

		d = 1.0 + aa * d;
		if (fabs(d) < KPI_BETA_TINY)
			d = KPI_BETA_TINY;
		c = 1.0 + aa / c;
		if (fabs(c) < KPI_BETA_TINY)
			c = KPI_BETA_TINY;
		d = 1.0 / d;
		h *= d * c;
		aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
		d = 1.0 + aa * d;
		if (fabs(d) < KPI_BETA_TINY)
			d = KPI_BETA_TINY;
		c = 1.0 + aa / c;
		if (fabs(c) < KPI_BETA_TINY)
			c = KPI_BETA_TINY;
		d = 1.0 / d;
		del = d * c;
		h *= del;
		if (fabs(del - 1.0) < KPI_BETA_EPS)
			break;
	}
	return h;
}

/* The regularized incomplete beta function I_x(a, b), 0 <= x <= 1. */
static double
IncompleteBeta(double a, double b, double x)
{
	double		front;

	if (x <= 0.0)
		return 0.0;
	if (x >= 1.0)
		return 1.0;
	front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) +
				a * log(x) + b * log1p(-x));
	if (x < (a + 1.0) / (a + b + 2.0))
		return front * BetaContinuedFraction(a, b, x) / a;
	return 1.0 - front * BetaContinuedFraction(b, a, 1.0 - x) / b;
}

/*
 * P(T <= t) for Student's t with df degrees of freedom (df > 0, possibly
 * infinite: the standard normal).
 */
double
KpiStudentTCdf(double t, double df)
{
	double		tail;

	if (isinf(df))
		return 0.5 * erfc(-t / M_SQRT2);
	if (isinf(t))
		return t > 0 ? 1.0 : 0.0;
	/* P(|T| > |t|) = I_{df / (df + t^2)}(df / 2, 1 / 2) */
	tail = 0.5 * IncompleteBeta(0.5 * df, 0.5, df / (df + t * t));
	return t >= 0 ? 1.0 - tail : tail;
}

/*
 * The p-quantile of Student's t with df degrees of freedom (0 < p < 1):
 * bisection on the CDF inside a bracket found by doubling; the CDF is
 * monotone, so this cannot fail to converge.  Symmetry gives p < 0.5.
 */
double
KpiStudentTQuantile(double p, double df)
{
	double		lo = 0.0;
	double		hi = 1.0;
	int			i;

	if (p == 0.5)
		return 0.0;
	if (p < 0.5)
		return -KpiStudentTQuantile(1.0 - p, df);
	while (KpiStudentTCdf(hi, df) < p && hi < 1e300)
		hi *= 2.0;
	for (i = 0; i < 200 && hi - lo > 1e-14 * Max(1.0, hi); i++)
	{
		double		mid = 0.5 * (lo + hi);

		if (KpiStudentTCdf(mid, df) < p)
			lo = mid;
		else
			hi = mid;
	}
	return 0.5 * (lo + hi);
}

PG_FUNCTION_INFO_V1(kpi_t_quantile);

/*
 * loyalty.t_quantile(p double precision, df double precision): the
 * p-quantile of Student's t distribution (df = 'infinity': the normal).
 */
Datum
kpi_t_quantile(PG_FUNCTION_ARGS)
{
	double		p = PG_GETARG_FLOAT8(0);
	double		df = PG_GETARG_FLOAT8(1);

	if (isnan(p) || p <= 0.0 || p >= 1.0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("probability %g is out of range", p),
				 errdetail("The probability must lie strictly between 0 and 1.")));
	if (isnan(df) || df <= 0.0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("degrees of freedom %g are out of range", df),
				 errdetail("The degrees of freedom must be positive.")));
	PG_RETURN_FLOAT8(KpiStudentTQuantile(p, df));
}

PG_FUNCTION_INFO_V1(kpi_t_cdf);

/*
 * loyalty.t_cdf(t double precision, df double precision): P(T <= t) under
 * Student's t distribution.
 */
Datum
kpi_t_cdf(PG_FUNCTION_ARGS)
{
	double		t = PG_GETARG_FLOAT8(0);
	double		df = PG_GETARG_FLOAT8(1);

	if (isnan(t) || isnan(df) || df <= 0.0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("degrees of freedom %g are out of range", df),
				 errdetail("The degrees of freedom must be positive and t a number.")));
	PG_RETURN_FLOAT8(KpiStudentTCdf(t, df));
}
