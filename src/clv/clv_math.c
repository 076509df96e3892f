/*
 * clv_math.c
 *		The BG/NBD and Gamma-Gamma log-likelihoods with their analytic
 *		gradients on log-parameters, and the predictions: P(alive), expected
 *		purchases, expected spend, discounted value.
 *
 * Numerical forms (doc/clv.md gives the formulas and references):
 * - the BG/NBD likelihood of a customer is a sum of two terms; it is taken
 *   as log-sum-exp of their logarithms, so heavy buyers (large x) and long
 *   ages never overflow or underflow;
 * - P(alive) is a logistic function of a log-odds, with no hypergeometric
 *   function at all;
 * - expected purchases use Euler's transformation of the Gauss
 *   hypergeometric function: its parameters then no longer grow with x, so
 *   the series terms shrink for heavy buyers instead of exploding.
 * Pure C: no palloc, no ereport.
 */
#include "postgres.h"

#include <math.h>

#include "clv.h"

/*
 * Digamma psi(x) for x > 0: shift x above 6 with psi(x) = psi(x + 1) - 1/x,
 * then the asymptotic series (error below 1e-15 there).
 */
double
ClvDigamma(double x)
{
	double		acc = 0.0;
	double		inv;
	double		inv2;

	while (x < 6.0)
	{
		acc -= 1.0 / x;
		x += 1.0;
	}
	inv = 1.0 / x;
	inv2 = inv * inv;
	return acc + log(x) - 0.5 * inv -
		inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (1.0 / 240 - inv2 * (1.0 / 132)))));
}

/* log(exp(u) + exp(w)) without overflow. */
static inline double
ClvLogAddExp(double u, double w)
{
	double		m = Max(u, w);

	return m + log(exp(u - m) + exp(w - m));
}

/*
 * Total BG/NBD log-likelihood of the triples (weighted by their counts) at
 * log-parameters lp = (log r, log alpha, log a, log b); grad, if not NULL,
 * receives its gradient with respect to lp.  The triples are sorted by x
 * (ClvStatsCompact), so the terms depending on x alone are computed once per
 * distinct x.
 */
double
ClvBgnbdLogLik(const ClvTriple *t, int64 n, const double *lp, double *grad)
{
	double		r = exp(lp[0]);
	double		alpha = exp(lp[1]);
	double		a = exp(lp[2]);
	double		b = exp(lp[3]);
	double		lalpha = lp[1];
	double		base = lgamma(a + b) - lgamma(b) - lgamma(r);
	double		psi_r = ClvDigamma(r);
	double		psi_ab = ClvDigamma(a + b);
	double		psi_b = ClvDigamma(b);
	double		total = 0.0;
	double		g[4] = {0, 0, 0, 0};
	double		cur_x = -1.0;
	double		la = lp[2];
	double		xterm = 0.0,
				dr_x = 0.0,
				da_x = 0.0,
				db_x = 0.0,
				lbx1 = 0.0,
				ibx1 = 0.0;
	int64		i;

	for (i = 0; i < n; i++)
	{
		double		x = t[i].x;
		double		w = t[i].n;
		double		rx = r + x;
		double		l3 = log(alpha + t[i].T);
		double		A3 = -rx * l3;
		double		ll;
		double		w3 = 1.0,
					w4 = 0.0;
		double		l4 = 0.0;

		if (x != cur_x)
		{
			cur_x = x;
			/* A1 + A2 without the r log(alpha) part */
			xterm = lgamma(rx) + lgamma(b + x) - lgamma(a + b + x) + base;
			dr_x = ClvDigamma(rx) - psi_r;
			da_x = psi_ab - ClvDigamma(a + b + x);
			db_x = da_x + ClvDigamma(b + x) - psi_b;
			lbx1 = x > 0 ? log(b + x - 1.0) : 0.0;
			ibx1 = x > 0 ? 1.0 / (b + x - 1.0) : 0.0;
		}
		ll = xterm + r * lalpha;
		if (x > 0)
		{
			double		A4;
			double		lse;

			l4 = log(alpha + t[i].tx);
			A4 = la - lbx1 - rx * l4;
			lse = ClvLogAddExp(A3, A4);
			w3 = exp(A3 - lse);
			w4 = exp(A4 - lse);
			ll += lse;
		}
		else
			ll += A3;
		total += w * ll;
		if (grad)
		{
			g[0] += w * (dr_x + lalpha - w3 * l3 - w4 * l4);
			g[1] += w * (r / alpha - w3 * rx / (alpha + t[i].T) -
						 (x > 0 ? w4 * rx / (alpha + t[i].tx) : 0.0));
			g[2] += w * (da_x + w4 / a);
			g[3] += w * (db_x - w4 * ibx1);
		}
	}
	if (grad)
	{
		grad[0] = g[0] * r;
		grad[1] = g[1] * alpha;
		grad[2] = g[2] * a;
		grad[3] = g[3] * b;
	}
	return total;
}

/*
 * Total Gamma-Gamma log-likelihood of the (x, mean spend) pairs at
 * lp = (log p, log q, log v), with its gradient with respect to lp.
 */
double
ClvGammaGammaLogLik(const ClvPair *pr, int64 n, const double *lp, double *grad)
{
	double		p = exp(lp[0]);
	double		q = exp(lp[1]);
	double		v = exp(lp[2]);
	double		lv = lp[2];
	double		lgq = lgamma(q);
	double		psi_q = ClvDigamma(q);
	double		total = 0.0;
	double		g[3] = {0, 0, 0};
	int64		i;

	for (i = 0; i < n; i++)
	{
		double		x = pr[i].x;
		double		m = pr[i].m;
		double		w = pr[i].n;
		double		px = p * x;
		double		lm = log(m);
		double		lx = log(x);
		double		lvxm = log(v + x * m);

		total += w * (lgamma(px + q) - lgamma(px) - lgq + q * lv +
					  (px - 1.0) * lm + px * lx - (px + q) * lvxm);
		if (grad)
		{
			double		psi_pxq = ClvDigamma(px + q);

			g[0] += w * x * (psi_pxq - ClvDigamma(px) + lm + lx - lvxm);
			g[1] += w * (psi_pxq - psi_q + lv - lvxm);
			g[2] += w * (q / v - (px + q) / (v + x * m));
		}
	}
	if (grad)
	{
		grad[0] = g[0] * p;
		grad[1] = g[1] * q;
		grad[2] = g[2] * v;
	}
	return total;
}

/*
 * Log-odds of having dropped out against being alive, for a repeat buyer:
 * log(a / (b + x - 1)) + (r + x) log((alpha + T) / (alpha + t_x)), with two
 * logarithms instead of four (scoring a million customers is mostly this
 * arithmetic): the second as log1p((T - t_x) / (alpha + t_x)), which is
 * also exact for a recent buyer (T close to t_x).  The first term depends
 * on x only (ClvPAliveXTerm), so scorers keep it per model and frequency
 * and call ClvPAliveWithTerm (clv.h).
 */
double
ClvPAlive(const ClvBgnbd *m, double x, double tx, double T)
{
	if (x <= 0)
		return 1.0;
	return ClvPAliveWithTerm(m, ClvPAliveXTerm(m, x), x, tx, T);
}

/*
 * Gauss hypergeometric series 2F1(A, B; C; z) for 0 <= z < 1, summed until a
 * term no longer changes the sum (or 200,000 terms: z within 1e-4 of 1).
 */
static double
ClvHyp2F1(double A, double B, double C, double z)
{
	double		term = 1.0;
	double		sum = 1.0;
	int			k;

	for (k = 0; k < 200000; k++)
	{
		term *= (A + k) * (B + k) / ((C + k) * (k + 1.0)) * z;
		sum += term;
		if (fabs(term) <= 1e-16 * fabs(sum))
			break;
	}
	return sum;
}

/*
 * E[purchases in (T, T + t] | x, t_x, T] for a = 1 exactly excluded:
 * (a+b+x-1)/(a-1) * (1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)) * P(alive)
 * with z = t / (alpha + T + t): the Euler transform of the paper's
 * ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z).
 */
static double
ClvExpectedPurchasesAt(const ClvBgnbd *m, double t, double x, double tx, double T)
{
	double		a = m->a;
	double		z = t / (m->alpha + T + t);
	double		l1z = log(m->alpha + T) - log(m->alpha + T + t);
	double		F = ClvHyp2F1(m->a + m->b - 1.0 - m->r, a - 1.0,
							  a + m->b + x - 1.0, z);
	double		bracket = 1.0 - exp((a - 1.0) * l1z) * F;

	return (a + m->b + x - 1.0) / (a - 1.0) * bracket * ClvPAlive(m, x, tx, T);
}

/*
 * Expected purchases in the next t periods of a customer (x, t_x, T).  At
 * a = 1 the formula is 0/0: the mean of both sides of the singularity is
 * taken instead (its limit, to the precision of double).
 */
double
ClvExpectedPurchases(const ClvBgnbd *m, double t, double x, double tx, double T)
{
	if (t <= 0)
		return 0.0;
	if (fabs(m->a - 1.0) < 1e-6)
	{
		ClvBgnbd	lo = *m;
		ClvBgnbd	hi = *m;

		lo.a = 1.0 - 1e-6;
		hi.a = 1.0 + 1e-6;
		return 0.5 * (ClvExpectedPurchasesAt(&lo, t, x, tx, T) +
					  ClvExpectedPurchasesAt(&hi, t, x, tx, T));
	}
	return ClvExpectedPurchasesAt(m, t, x, tx, T);
}

/*
 * Gamma-Gamma expected mean spend per purchase of a customer with x repeat
 * purchases of mean spend `mean`: p (v + x mean) / (p x + q - 1), the
 * population mean p v / (q - 1) at x = 0.  NaN when q <= 1 (no finite mean).
 */
double
ClvExpectedSpend(const ClvGammaGamma *g, double x, double mean)
{
	if (g->q <= 1.0)
		return NAN;
	if (x <= 0)
		return g->p * g->v / (g->q - 1.0);
	return g->p * (g->v + x * mean) / (g->p * x + g->q - 1.0);
}

/*
 * Discounted value over `months` months, as lifetimes'
 * customer_lifetime_value: month k (of per_month periods) brings spend times
 * the expected purchases of that month, divided by (1 + discount)^k.
 */
double
ClvValue(const ClvBgnbd *m, double per_month, double x, double tx, double T,
		 double spend, int months, double discount)
{
	double		value = 0.0;
	double		prev = 0.0;
	int			k;

	for (k = 1; k <= months; k++)
	{
		double		cum = ClvExpectedPurchases(m, k * per_month, x, tx, T);

		value += spend * (cum - prev) / pow(1.0 + discount, k);
		prev = cum;
	}
	return value;
}
