/*
 * clv.h
 *		Customer lifetime value: BG/NBD (Fader, Hardie and Lee 2005) for the
 *		number of future purchases and P(alive), Gamma-Gamma (Fader, Hardie
 *		and Lee 2005b) for the spend per purchase.
 *
 * clv_stats.c  the sufficient statistics (distinct (x, t_x, T) triples and
 *              (x, mean spend) pairs with counts) and their aggregate
 * clv_math.c   log-likelihoods with analytic gradients, predictions
 * clv_fit.c    BFGS on log-parameters, standard errors, the fit function
 * clv_score.c  scoring functions reading a stored model (loyalty.clv_model)
 *
 * Every quantity is in double precision: the models are estimates, money
 * comes back as numeric rounded at the SQL boundary (doc/clv.md).
 */
#ifndef CLV_H
#define CLV_H

#include "loyalty.h"

#include <math.h>

#include "fmgr.h"
#include "lib/stringinfo.h"

/* One distinct (x, t_x, T) triple and the customers having it. */
typedef struct ClvTriple
{
	double		x;				/* repeat purchase periods */
	double		tx;				/* last purchase, since the first */
	double		T;				/* age: as_of since the first purchase */
	double		n;				/* customers */
} ClvTriple;

/* One distinct (x, mean repeat spend) pair of a repeat buyer, with count. */
typedef struct ClvPair
{
	double		x;
	double		m;
	double		n;
} ClvPair;

/*
 * Aggregate state: two arrays appended to and compacted (sorted, equal
 * entries merged) whenever they double, so that memory follows the number
 * of distinct entries, not the number of rows.
 */
typedef struct ClvStats
{
	ClvTriple  *triples;
	int64		ntriples;
	int64		triples_cap;
	int64		triples_compact;	/* ntriples after the last compaction */
	ClvPair    *pairs;
	int64		npairs;
	int64		pairs_cap;
	int64		pairs_compact;
	int64		customers;		/* rows aggregated */
	int64		skipped_spend;	/* repeat buyers without a usable spend */
} ClvStats;

/* BG/NBD parameters and Gamma-Gamma parameters. */
typedef struct ClvBgnbd
{
	double		r;
	double		alpha;
	double		a;
	double		b;
} ClvBgnbd;

typedef struct ClvGammaGamma
{
	double		p;
	double		q;
	double		v;
} ClvGammaGamma;

/* Outcome of one fit. */
typedef struct ClvFitResult
{
	double		params[4];		/* natural scale, time unscaled */
	double		se[4];			/* standard errors (NaN: Hessian singular) */
	double		loglik;			/* total log-likelihood, unpenalised */
	int			iterations;
	const char *status;			/* converged, max_iterations */
} ClvFitResult;

/* clv_stats.c */
extern void ClvStatsCompact(ClvStats *s);
extern ClvStats *ClvStatsFromBytea(bytea *b);

/*
 * P(alive) pieces (clv_math.c explains the form): the term of the
 * log-odds of having dropped out that depends on the frequency x only,
 * and P(alive) of a repeat buyer (x > 0) given that term.  Inline:
 * scoring a million customers is mostly this arithmetic.
 */
static inline double
ClvPAliveXTerm(const ClvBgnbd *m, double x)
{
	return log(m->a / (m->b + x - 1.0));
}

/*
 * P(alive) = 1 / (1 + exp(lo)) from the log-odds lo of having dropped out,
 * evaluated so that it never overflows.
 */
static inline double
ClvPAliveFromLogOdds(double lo)
{
	if (lo > 0)
	{
		double		e = exp(-lo);

		return e / (1.0 + e);
	}
	return 1.0 / (1.0 + exp(lo));
}

static inline double
ClvPAliveWithTerm(const ClvBgnbd *m, double xterm, double x, double tx, double T)
{
	return ClvPAliveFromLogOdds(xterm + (m->r + x) * log1p((T - tx) / (m->alpha + tx)));
}

/* clv_math.c */
extern double ClvDigamma(double x);
extern double ClvBgnbdLogLik(const ClvTriple *t, int64 n, const double *lp,
							 double *grad);
extern double ClvGammaGammaLogLik(const ClvPair *p, int64 n, const double *lp,
								  double *grad);
extern double ClvPAlive(const ClvBgnbd *m, double x, double tx, double T);
extern double ClvExpectedPurchases(const ClvBgnbd *m, double t, double x,
								   double tx, double T);
extern double ClvExpectedSpend(const ClvGammaGamma *g, double x, double mean);
extern double ClvValue(const ClvBgnbd *m, double per_month, double x, double tx,
					   double T, double spend, int months, double discount);

/* clv_fit.c */
typedef double (*ClvObjective) (const void *data, int64 n, const double *lp,
								double *grad);
extern void ClvFit(ClvObjective f, const void *data, int64 n, double weight,
				   int k, const double *start, double penalizer,
				   ClvFitResult *res);

#endif							/* CLV_H */
