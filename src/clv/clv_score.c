/*
 * clv_score.c
 *		Scoring from a stored model: loyalty.clv_p_alive,
 *		clv_expected_purchases, clv_expected_spend and clv_value.
 *
 * Each call site (FmgrInfo) keeps the parameters of the model it last read
 * in fn_extra, so a query scoring a million customers reads
 * loyalty.clv_model once, through SPI with the caller's rights and
 * snapshot, and then does arithmetic only.  Inputs are a customer's summary
 * (frequency, recency, age in the model's time unit: loyalty.clv_summary,
 * loyalty.clv_summary_live).  Money comes back as numeric rounded to 2
 * decimals (doc/clv.md).
 */
#include "clv.h"

#include <math.h>

#include "executor/spi.h"
#include "loyalty_args.h"
#include "loyalty_spi.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

/*
 * Frequencies whose P(alive) term log(a / (b + x - 1)) a cached model keeps
 * (32 kB per call site): most customers buy on fewer days than this.
 */
#define CLV_XTERMS 4096

/*
 * Whole ages and recencies (in the model's time unit) whose log(alpha + t)
 * a cached model keeps (32 kB): eleven years of days.
 */
#define CLV_AGES 4096

/* A stored model's parameters, cached per call site. */
typedef struct ClvModel
{
	char		name[NAMEDATALEN * 2];
	size_t		name_len;
	bool		name_const;		/* the call site passes the name as a constant */
	ClvBgnbd	bg;
	ClvGammaGamma gg;
	double		per_month;		/* time units per month (lifetimes': 30 d, 4.345 w) */
	double		xterm[CLV_XTERMS];	/* ClvPAliveXTerm of x = 1..CLV_XTERMS-1 */
	double		logage[CLV_AGES];	/* log(alpha + t), t = 0..CLV_AGES-1 */
} ClvModel;

/* Read model `name` from loyalty.clv_model; LV007 if there is none. */
static void
ClvModelLoad(const char *name, ClvModel *m)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[1] = {TEXTOID};
	Datum		args[1];
	LoyaltyRow	row;
	char	   *unit;
	bool		isnull;

	args[0] = CStringGetTextDatum(name);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	LoyaltyKeepPlan(&plan,
					"SELECT r, alpha, a, b, p, q, v, time_unit"
					" FROM loyalty.clv_model WHERE model_name OPERATOR(pg_catalog.=) $1",
					1, argtypes, 0);
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "reading loyalty.clv_model failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE('L', 'V', '0', '0', '7')),
				 errmsg("clv model \"%s\" does not exist", name),
				 errdetail("{\"reason\": \"unknown_model\", \"model\": \"%s\"}", name),
				 errhint("Fit one with loyalty.clv_fit().")));
	row = LoyaltySpiRow(0);
	m->bg.r = DatumGetFloat8(LoyaltyColDatum(row, 1, &isnull));
	m->bg.alpha = DatumGetFloat8(LoyaltyColDatum(row, 2, &isnull));
	m->bg.a = DatumGetFloat8(LoyaltyColDatum(row, 3, &isnull));
	m->bg.b = DatumGetFloat8(LoyaltyColDatum(row, 4, &isnull));
	m->gg.p = DatumGetFloat8(LoyaltyColDatum(row, 5, &isnull));
	m->gg.q = DatumGetFloat8(LoyaltyColDatum(row, 6, &isnull));
	m->gg.v = DatumGetFloat8(LoyaltyColDatum(row, 7, &isnull));
	unit = LoyaltyColText(row, 8);
	m->per_month = strcmp(unit, "weeks") == 0 ? 4.345 : 30.0;
	for (int x = 1; x < CLV_XTERMS; x++)
		m->xterm[x] = ClvPAliveXTerm(&m->bg, (double) x);
	for (int t = 0; t < CLV_AGES; t++)
		m->logage[t] = log(m->bg.alpha + t);
	strlcpy(m->name, name, sizeof(m->name));
	m->name_len = strlen(m->name);
	SPI_finish();
}

/*
 * Whether the call site passes argument 0 as a constant (a Const node, not
 * a Param: a PL/pgSQL simple expression keeps its call site while its
 * parameters change).
 */
static bool
ClvArgIsConst(FmgrInfo *flinfo)
{
	Node	   *expr = flinfo->fn_expr;

	return expr != NULL && IsA(expr, FuncExpr) &&
		list_length(((FuncExpr *) expr)->args) > 0 &&
		IsA(linitial(((FuncExpr *) expr)->args), Const);
}

/*
 * The model named by argument 0, from this call site's cache if it is
 * there: without comparing the name again when it is a constant (the usual
 * call: scoring a whole table with one model).
 */
static const ClvModel *
ClvModelArg(FunctionCallInfo fcinfo)
{
	ClvModel   *m = (ClvModel *) fcinfo->flinfo->fn_extra;
	char	   *name;
	text	   *arg;

	if (m != NULL && m->name_const)
		return m;
	LoyaltyArgNotNull(fcinfo, 0, "model_name");
	arg = PG_GETARG_TEXT_PP(0);
	/* the common case, once per row: the model of the previous row */
	if (m != NULL && VARSIZE_ANY_EXHDR(arg) == m->name_len &&
		memcmp(VARDATA_ANY(arg), m->name, VARSIZE_ANY_EXHDR(arg)) == 0)
		return m;
	name = text_to_cstring(arg);
	if (strlen(name) >= sizeof(m->name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name too long")));
	if (m == NULL)
		m = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ClvModel));
	m->name[0] = '\0';
	m->name_len = 0;
	ClvModelLoad(name, m);
	m->name_const = ClvArgIsConst(fcinfo->flinfo);
	fcinfo->flinfo->fn_extra = m;
	return m;
}

/*
 * A customer's summary from arguments 1..3 (frequency, recency, age);
 * false if one is NULL.  Values a summary cannot have are refused.
 */
static bool
ClvSummaryArgs(FunctionCallInfo fcinfo, double *x, double *tx, double *T)
{
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		return false;
	*x = (double) PG_GETARG_INT64(1);
	*tx = PG_GETARG_FLOAT8(2);
	*T = PG_GETARG_FLOAT8(3);
	if (!(*x >= 0 && *tx >= 0 && *tx <= *T && isfinite(*T)) || (*x == 0 && *tx != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid customer summary: frequency %.0f, recency %g, age %g", *x, *tx, *T),
				 errdetail("Recency must lie between 0 and the age, and be 0 without repeat purchase.")));
	return true;
}

/* A double as numeric rounded to 2 decimals; NULL for NaN. */
static Datum
ClvMoney(double v, bool *isnull)
{
	*isnull = !isfinite(v);
	if (*isnull)
		return (Datum) 0;
	return DirectFunctionCall2(numeric_round,
							   DirectFunctionCall1(float8_numeric, Float8GetDatum(v)),
							   Int32GetDatum(2));
}

/* A customer's mean repeat spend from a numeric argument (NULL: 0). */
static double
ClvSpendArg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		return 0.0;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, PG_GETARG_DATUM(argno)));
}

/*
 * clv_p_alive(model_name, frequency, recency, age): P(alive).  The term of
 * the frequency comes from the model's cache (the value ClvPAlive
 * computes); for whole recency and age (day-based summaries) so does
 * log((alpha + T) / (alpha + t_x)), as the difference of two cached
 * logarithms, which leaves one exp per customer.  That difference is
 * within a few units of 1e-15 of ClvPAlive's log1p form (both logarithms
 * are near log(alpha + T) and exact to half an ulp), far below what a
 * probability is read to.
 */
PG_FUNCTION_INFO_V1(clv_p_alive);
Datum
clv_p_alive(PG_FUNCTION_ARGS)
{
	const ClvModel *m = ClvModelArg(fcinfo);
	double		x,
				tx,
				T;

	if (!ClvSummaryArgs(fcinfo, &x, &tx, &T))
		PG_RETURN_NULL();
	if (x <= 0)
		PG_RETURN_FLOAT8(1.0);
	if (x < CLV_XTERMS)
	{
		double		xterm = m->xterm[(int) x];

		/* validated: 0 <= tx <= T */
		if (T < CLV_AGES && (double) (int) T == T && (double) (int) tx == tx)
			PG_RETURN_FLOAT8(ClvPAliveFromLogOdds(xterm + (m->bg.r + x) *
												  (m->logage[(int) T] - m->logage[(int) tx])));
		PG_RETURN_FLOAT8(ClvPAliveWithTerm(&m->bg, xterm, x, tx, T));
	}
	PG_RETURN_FLOAT8(ClvPAlive(&m->bg, x, tx, T));
}

/*
 * clv_expected_purchases(model_name, frequency, recency, age, horizon):
 * expected purchases in the next `horizon` time units.
 */
PG_FUNCTION_INFO_V1(clv_expected_purchases);
Datum
clv_expected_purchases(PG_FUNCTION_ARGS)
{
	const ClvModel *m = ClvModelArg(fcinfo);
	double		x,
				tx,
				T,
				t;

	LoyaltyArgNotNull(fcinfo, 4, "horizon");
	t = PG_GETARG_FLOAT8(4);
	if (!(t >= 0 && t < 1e9))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("horizon must lie between 0 and 1e9 time units, not %g", t)));
	if (!ClvSummaryArgs(fcinfo, &x, &tx, &T))
		PG_RETURN_NULL();
	PG_RETURN_FLOAT8(ClvExpectedPurchases(&m->bg, t, x, tx, T));
}

/*
 * clv_expected_spend(model_name, frequency, monetary_value): Gamma-Gamma
 * expected spend per future purchase (numeric, 2 decimals).
 */
PG_FUNCTION_INFO_V1(clv_expected_spend);
Datum
clv_expected_spend(PG_FUNCTION_ARGS)
{
	const ClvModel *m = ClvModelArg(fcinfo);
	double		x;
	bool		isnull;
	Datum		d;

	if (PG_ARGISNULL(1))
		PG_RETURN_NULL();
	x = (double) PG_GETARG_INT64(1);
	if (x < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("frequency must be >= 0")));
	d = ClvMoney(ClvExpectedSpend(&m->gg, x, ClvSpendArg(fcinfo, 2)), &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(d);
}

/*
 * clv_value(model_name, frequency, recency, age, monetary_value, months,
 * discount_rate): the discounted value of the next `months` months
 * (numeric, 2 decimals).  A repeat buyer's non-positive mean spend is taken
 * as the population's (Gamma-Gamma's support is positive spend).
 */
PG_FUNCTION_INFO_V1(clv_value);
Datum
clv_value(PG_FUNCTION_ARGS)
{
	const ClvModel *m = ClvModelArg(fcinfo);
	double		x,
				tx,
				T,
				mean,
				spend,
				discount;
	int32		months;
	bool		isnull;
	Datum		d;

	LoyaltyArgNotNull(fcinfo, 5, "months");
	LoyaltyArgNotNull(fcinfo, 6, "discount_rate");
	months = PG_GETARG_INT32(5);
	discount = PG_GETARG_FLOAT8(6);
	if (months < 0 || months > 1200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("months must lie between 0 and 1200, not %d", months)));
	if (!(discount > -1 && discount <= 10))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("discount_rate must lie in (-1, 10], not %g", discount)));
	if (!ClvSummaryArgs(fcinfo, &x, &tx, &T))
		PG_RETURN_NULL();
	mean = ClvSpendArg(fcinfo, 4);
	spend = ClvExpectedSpend(&m->gg, mean > 0 ? x : 0, mean);
	d = ClvMoney(ClvValue(&m->bg, m->per_month, x, tx, T, spend, months, discount), &isnull);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(d);
}
