/*
 * clv_fit.c
 *		Maximum likelihood fits of BG/NBD and Gamma-Gamma over sufficient
 *		statistics: BFGS on log-parameters with analytic gradients, standard
 *		errors from the inverse Hessian, and loyalty._clv_fit_stats().
 *
 * The objective is lifetimes': minus the mean log-likelihood plus
 * penalizer * (sum of squared parameters), the BG/NBD times scaled so that
 * the largest age is 1 (alpha is scaled back afterwards).  Working on the
 * mean keeps the tolerances independent of the number of customers; working
 * on log-parameters keeps every parameter positive without constraints.
 *
 * Convergence: the largest gradient component below CLV_GTOL, or a line
 * search that can no longer decrease the objective while the gradient is
 * below CLV_GTOL_STALL ("no further decrease possible" at the optimum is
 * convergence, not failure).  A fit that ends elsewhere is reported as
 * max_iterations or refused (clv_fit raises a reason-coded error: never a
 * NaN or infinite parameter is returned).
 */
#include "clv.h"

#include <math.h>

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "loyalty_args.h"
#include "utils/builtins.h"

#define CLV_MAX_ITER		500
#define CLV_GTOL			1e-9
#define CLV_GTOL_STALL		1e-5
#define CLV_MAX_STEP		4.0		/* largest change of a log-parameter */
#define CLV_MAX_PARAMS		4

/* Penalised objective: -LL / weight + pen * sum exp(2 lp); its gradient. */
static double
ClvObjectiveAt(ClvObjective f, const void *data, int64 n, double weight,
			   int k, const double *lp, double penalizer, double *grad)
{
	double		g[CLV_MAX_PARAMS];
	double		val = -f(data, n, lp, g) / weight;
	int			i;

	for (i = 0; i < k; i++)
	{
		double		e2 = exp(2.0 * lp[i]);

		val += penalizer * e2;
		grad[i] = -g[i] / weight + 2.0 * penalizer * e2;
	}
	return val;
}

/* Largest absolute component. */
static double
ClvNormInf(const double *v, int k)
{
	double		m = 0;
	int			i;

	for (i = 0; i < k; i++)
		m = Max(m, fabs(v[i]));
	return m;
}

/*
 * Invert a small symmetric matrix in place (Gauss-Jordan with partial
 * pivoting); false if it is singular.
 */
static bool
ClvInvert(double *m, int k)
{
	double		inv[CLV_MAX_PARAMS * CLV_MAX_PARAMS];
	int			i,
				j,
				c;

	for (i = 0; i < k; i++)
		for (j = 0; j < k; j++)
			inv[i * k + j] = (i == j);
	for (c = 0; c < k; c++)
	{
		int			piv = c;
		double		d;

		for (i = c + 1; i < k; i++)
			if (fabs(m[i * k + c]) > fabs(m[piv * k + c]))
				piv = i;
		if (!(fabs(m[piv * k + c]) > 1e-300))
			return false;
		for (j = 0; j < k; j++)
		{
			double		t = m[c * k + j];

			m[c * k + j] = m[piv * k + j];
			m[piv * k + j] = t;
			t = inv[c * k + j];
			inv[c * k + j] = inv[piv * k + j];
			inv[piv * k + j] = t;
		}
		d = m[c * k + c];
		for (j = 0; j < k; j++)
		{
			m[c * k + j] /= d;
			inv[c * k + j] /= d;
		}
		for (i = 0; i < k; i++)
		{
			double		fct = m[i * k + c];

			if (i == c || fct == 0)
				continue;
			for (j = 0; j < k; j++)
			{
				m[i * k + j] -= fct * m[c * k + j];
				inv[i * k + j] -= fct * inv[c * k + j];
			}
		}
	}
	memcpy(m, inv, sizeof(double) * k * k);
	return true;
}

/*
 * Standard errors of the parameters: the Hessian of the total penalised
 * objective in log-parameters by central differences of the analytic
 * gradient, inverted, then carried to the natural scale by the delta method
 * (se = parameter * sqrt(variance of its logarithm)).  NaN when the Hessian
 * is not positive definite.
 */
static void
ClvStandardErrors(ClvObjective f, const void *data, int64 n, double weight,
				  int k, const double *lp, double penalizer, double *se)
{
	double		H[CLV_MAX_PARAMS * CLV_MAX_PARAMS];
	double		x[CLV_MAX_PARAMS];
	double		gp[CLV_MAX_PARAMS];
	double		gm[CLV_MAX_PARAMS];
	int			i,
				j;

	for (i = 0; i < k; i++)
	{
		double		h = 1e-5;

		memcpy(x, lp, sizeof(double) * k);
		x[i] = lp[i] + h;
		ClvObjectiveAt(f, data, n, weight, k, x, penalizer, gp);
		x[i] = lp[i] - h;
		ClvObjectiveAt(f, data, n, weight, k, x, penalizer, gm);
		for (j = 0; j < k; j++)
			H[i * k + j] = (gp[j] - gm[j]) / (2 * h) * weight;
	}
	for (i = 0; i < k; i++)
		for (j = 0; j < i; j++)
			H[i * k + j] = H[j * k + i] = 0.5 * (H[i * k + j] + H[j * k + i]);
	if (!ClvInvert(H, k))
	{
		for (i = 0; i < k; i++)
			se[i] = NAN;
		return;
	}
	for (i = 0; i < k; i++)
		se[i] = H[i * k + i] > 0 ? exp(lp[i]) * sqrt(H[i * k + i]) : NAN;
}

/*
 * Minimise the penalised objective from `start` (log-parameters) with BFGS
 * (inverse Hessian update, backtracking Armijo line search, step capped in
 * log space so that no evaluation overflows).  res receives the
 * log-parameters, the unpenalised total log-likelihood, the iterations, the
 * status and the standard errors.
 */
void
ClvFit(ClvObjective f, const void *data, int64 n, double weight, int k,
	   const double *start, double penalizer, ClvFitResult *res)
{
	double		x[CLV_MAX_PARAMS],
				g[CLV_MAX_PARAMS],
				d[CLV_MAX_PARAMS],
				xn[CLV_MAX_PARAMS],
				gn[CLV_MAX_PARAMS];
	double		Hi[CLV_MAX_PARAMS * CLV_MAX_PARAMS];
	double		fx;
	int			iter;
	int			i,
				j;

	memcpy(x, start, sizeof(double) * k);
	fx = ClvObjectiveAt(f, data, n, weight, k, x, penalizer, g);
	for (i = 0; i < k * k; i++)
		Hi[i] = (i % (k + 1)) == 0;
	res->status = "max_iterations";
	for (iter = 0; iter < CLV_MAX_ITER; iter++)
	{
		double		slope = 0,
					step = 1.0,
					dmax,
					fn = 0;
		bool		decreased = false;
		int			tries;

		CHECK_FOR_INTERRUPTS();
		if (ClvNormInf(g, k) < CLV_GTOL)
		{
			res->status = "converged";
			break;
		}
		for (i = 0; i < k; i++)
		{
			d[i] = 0;
			for (j = 0; j < k; j++)
				d[i] -= Hi[i * k + j] * g[j];
			slope += d[i] * g[i];
		}
		if (!(slope < 0))
		{
			/* not a descent direction: restart from steepest descent */
			for (i = 0; i < k * k; i++)
				Hi[i] = (i % (k + 1)) == 0;
			for (i = 0, slope = 0; i < k; i++)
			{
				d[i] = -g[i];
				slope -= g[i] * g[i];
			}
		}
		dmax = ClvNormInf(d, k);
		if (dmax > CLV_MAX_STEP)
			step = CLV_MAX_STEP / dmax;
		for (tries = 0; tries < 60; tries++, step *= 0.5)
		{
			for (i = 0; i < k; i++)
				xn[i] = x[i] + step * d[i];
			fn = ClvObjectiveAt(f, data, n, weight, k, xn, penalizer, gn);
			if (isfinite(fn) && fn <= fx + 1e-4 * step * slope)
			{
				decreased = true;
				break;
			}
		}
		if (!decreased)
		{
			/* no further decrease possible: the optimum if flat enough */
			if (ClvNormInf(g, k) < CLV_GTOL_STALL)
				res->status = "converged";
			else
				res->status = "stalled";
			break;
		}
		{
			double		s[CLV_MAX_PARAMS],
						y[CLV_MAX_PARAMS],
						Hy[CLV_MAX_PARAMS];
			double		sy = 0,
						yHy = 0;

			for (i = 0; i < k; i++)
			{
				s[i] = xn[i] - x[i];
				y[i] = gn[i] - g[i];
				sy += s[i] * y[i];
			}
			for (i = 0; i < k; i++)
			{
				Hy[i] = 0;
				for (j = 0; j < k; j++)
					Hy[i] += Hi[i * k + j] * y[j];
				yHy += y[i] * Hy[i];
			}
			if (sy > 1e-14)
				for (i = 0; i < k; i++)
					for (j = 0; j < k; j++)
						Hi[i * k + j] += (sy + yHy) * s[i] * s[j] / (sy * sy) -
							(Hy[i] * s[j] + s[i] * Hy[j]) / sy;
		}
		memcpy(x, xn, sizeof(double) * k);
		memcpy(g, gn, sizeof(double) * k);
		if (fabs(fx - fn) <= 1e-15 * Max(1.0, fabs(fx)) &&
			ClvNormInf(g, k) < CLV_GTOL_STALL)
		{
			fx = fn;
			res->status = "converged";
			iter++;
			break;
		}
		fx = fn;
	}
	res->iterations = iter;
	memcpy(res->params, x, sizeof(double) * k);
	res->loglik = f(data, n, x, NULL);
	ClvStandardErrors(f, data, n, weight, k, x, penalizer, res->se);
}

/* ClvObjective adapters of the two log-likelihoods. */
static double
ClvBgnbdObjective(const void *data, int64 n, const double *lp, double *grad)
{
	return ClvBgnbdLogLik((const ClvTriple *) data, n, lp, grad);
}

static double
ClvGammaGammaObjective(const void *data, int64 n, const double *lp, double *grad)
{
	return ClvGammaGammaLogLik((const ClvPair *) data, n, lp, grad);
}

/*
 * Refuse data the models cannot be fitted to: SQLSTATE LV0nn, DETAIL one
 * JSON object with the reason first (doc/errors.md, doc/clv.md).
 */
static void
ClvRefuse(int sqlstate, const char *reason, const char *msg, const char *json_tail,
		  const char *hint)
{
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s", msg),
			 errdetail("{\"reason\": \"%s\"%s}", reason, json_tail),
			 hint ? errhint("%s", hint) : 0));
}

#define CLV_ERR(c)	MAKE_SQLSTATE('L', 'V', '0', '0', c)

/* A parameter the optimiser may hand back: finite and not at a boundary. */
static bool
ClvUsable(double v)
{
	return isfinite(v) && v > 1e-10 && v < 1e10;
}

/* Checks on the data before the BG/NBD fit; returns the largest age. */
static double
ClvCheckBgnbdData(const ClvStats *s)
{
	double		maxT = 0;
	double		repeat = 0;
	char		tail[64];
	int64		i;

	snprintf(tail, sizeof(tail), ", \"customers\": " INT64_FORMAT, s->customers);
	if (s->customers < 2)
		ClvRefuse(CLV_ERR('1'), "too_few_customers",
				  "too few customers to fit a clv model", tail,
				  "BG/NBD needs a cohort: at least two customers, in practice hundreds.");
	for (i = 0; i < s->ntriples; i++)
	{
		maxT = Max(maxT, s->triples[i].T);
		if (s->triples[i].x > 0)
			repeat += s->triples[i].n;
	}
	if (s->ntriples < 2)
		ClvRefuse(CLV_ERR('2'), "identical_customers",
				  "every customer has the same frequency, recency and age", tail,
				  "The likelihood has no unique maximum when all customers look alike.");
	if (repeat == 0)
		ClvRefuse(CLV_ERR('3'), "no_repeat_purchases",
				  "no customer made a repeat purchase", tail,
				  "Without repeat purchases purchase rate and dropout cannot be told apart.");
	if (maxT <= 0)
		ClvRefuse(CLV_ERR('4'), "no_time_elapsed",
				  "no time elapsed since any customer's first purchase", tail, NULL);
	return maxT;
}

/* Fit BG/NBD on the triples, times scaled by 1 / maxT; results unscaled. */
static void
ClvFitBgnbd(const ClvStats *s, double maxT, double penalizer, ClvFitResult *res)
{
	ClvTriple  *scaled = palloc_extended(s->ntriples * sizeof(ClvTriple), MCXT_ALLOC_HUGE);
	double		scale = 1.0 / maxT;
	double		start[4] = {0, 0, 0, 0};
	double		lp[4];
	int64		i;

	for (i = 0; i < s->ntriples; i++)
	{
		scaled[i] = s->triples[i];
		scaled[i].tx *= scale;
		scaled[i].T *= scale;
	}
	ClvFit(ClvBgnbdObjective, scaled, s->ntriples, (double) s->customers, 4,
		   start, penalizer, res);
	memcpy(lp, res->params, sizeof(lp));
	lp[1] -= log(scale);
	for (i = 0; i < 4; i++)
		res->params[i] = exp(lp[i]);
	res->se[1] /= scale;
	res->loglik = ClvBgnbdLogLik(s->triples, s->ntriples, lp, NULL);
	pfree(scaled);
}

/* Fit Gamma-Gamma on the (x, mean spend) pairs of the repeat buyers. */
static void
ClvFitGammaGamma(const ClvStats *s, double penalizer, ClvFitResult *res)
{
	double		start[3] = {0, 0, 0};
	double		w = 0,
				msum = 0;
	char		tail[64];
	int64		i;

	for (i = 0; i < s->npairs; i++)
	{
		w += s->pairs[i].n;
		msum += s->pairs[i].n * s->pairs[i].m;
	}
	snprintf(tail, sizeof(tail), ", \"repeat_buyers\": " INT64_FORMAT, (int64) w);
	if (s->npairs < 2)
		ClvRefuse(CLV_ERR('5'), "too_few_repeat_buyers",
				  "too few repeat buyers with distinct positive spend to fit the spend model", tail,
				  "Gamma-Gamma needs repeat buyers whose mean repeat spend is positive and varies.");
	start[2] = log(msum / w);
	ClvFit(ClvGammaGammaObjective, s->pairs, s->npairs, w, 3, start, penalizer, res);
	for (i = 0; i < 3; i++)
		res->params[i] = exp(res->params[i]);
	res->params[3] = 0;
}

/* Refuse a fit whose parameters are not usable (diverged to a boundary). */
static void
ClvCheckFit(const char *model, const ClvFitResult *res, int k)
{
	int			i;

	for (i = 0; i < k; i++)
		if (!ClvUsable(res->params[i]) || !isfinite(res->loglik) ||
			strcmp(res->status, "stalled") == 0)
		{
			char		tail[160];

			snprintf(tail, sizeof(tail),
					 ", \"model\": \"%s\", \"status\": \"%s\", \"iterations\": %d",
					 model, res->status, res->iterations);
			ClvRefuse(CLV_ERR('6'), "not_converged",
					  "the clv model did not converge to usable parameters", tail,
					  "The data may be degenerate; a penalizer (e.g. 0.001) keeps the parameters finite.");
		}
}

/*
 * loyalty._clv_fit_stats(stats bytea, penalizer float8): fit both models
 * on statistics collected by loyalty.clv_stats and return the parameters,
 * standard errors and fit statistics as one row.  Reason-coded errors for
 * data that cannot be fitted.
 */
PG_FUNCTION_INFO_V1(clv_fit_stats);
Datum
clv_fit_stats(PG_FUNCTION_ARGS)
{
	ClvStats   *s;
	double		penalizer;
	double		maxT;
	ClvFitResult bg;
	ClvFitResult gg;
	TupleDesc	desc;
	Datum		v[24];
	bool		nl[24];
	double		repeat = 0;
	int			i;

	LoyaltyCheckNotNull(PG_ARGISNULL(0), "stats");
	LoyaltyCheckNotNull(PG_ARGISNULL(1), "penalizer");
	penalizer = PG_GETARG_FLOAT8(1);
	if (!(penalizer >= 0 && penalizer <= 1e6))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("penalizer must lie between 0 and 1000000, not %g", penalizer)));
	s = ClvStatsFromBytea(PG_GETARG_BYTEA_PP(0));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE || desc->natts != 24)
		elog(ERROR, "_clv_fit_stats must return a row of 24 columns");

	maxT = ClvCheckBgnbdData(s);
	ClvFitBgnbd(s, maxT, penalizer, &bg);
	ClvCheckFit("bgnbd", &bg, 4);
	ClvFitGammaGamma(s, penalizer, &gg);
	ClvCheckFit("gamma_gamma", &gg, 3);
	for (i = 0; i < s->ntriples; i++)
		if (s->triples[i].x > 0)
			repeat += s->triples[i].n;

	memset(nl, 0, sizeof(nl));
	for (i = 0; i < 4; i++)
	{
		v[i] = Float8GetDatum(bg.params[i]);
		v[7 + i] = Float8GetDatum(bg.se[i]);
		nl[7 + i] = !isfinite(bg.se[i]);
	}
	v[4] = Float8GetDatum(bg.loglik);
	v[5] = Int32GetDatum(bg.iterations);
	v[6] = CStringGetTextDatum(bg.status);
	for (i = 0; i < 3; i++)
	{
		v[11 + i] = Float8GetDatum(gg.params[i]);
		v[17 + i] = Float8GetDatum(gg.se[i]);
		nl[17 + i] = !isfinite(gg.se[i]);
	}
	v[14] = Float8GetDatum(gg.loglik);
	v[15] = Int32GetDatum(gg.iterations);
	v[16] = CStringGetTextDatum(gg.status);
	v[20] = Int64GetDatum(s->customers);
	v[21] = Int64GetDatum((int64) repeat);
	v[22] = Int64GetDatum(s->ntriples);
	v[23] = Float8GetDatum(maxT);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), v, nl)));
}
