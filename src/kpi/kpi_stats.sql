
/* ---------------------------------------------------------------------------
 * kpi_stats.sql: the statistics of campaign lift (kpi family)
 *
 * loyalty.lift_interval(outcome, treated, covariate): the difference of
 * the mean outcome of the treated group and of the control group (the
 * hold-out) with a 95% Welch t interval; with a pre-period covariate on
 * every row, CUPED-adjusted.  A parallel-safe aggregate (combine,
 * serialize, deserialize).  loyalty.t_quantile / t_cdf: Student's t
 * distribution for any positive degrees of freedom.  See
 * doc/campaign_kpi.md.
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.lift_estimate AS (
	n_treated		bigint,
	n_control		bigint,
	mean_treated	double precision,
	mean_control	double precision,
	difference		double precision,
	std_error		double precision,
	df				double precision,
	lower			double precision,
	upper			double precision,
	t_critical		double precision,
	theta			double precision
);

COMMENT ON TYPE loyalty.lift_estimate IS
	'Result of loyalty.lift_interval: treated minus control mean with a 95% Welch t interval (CUPED-adjusted means when theta is not null)';
COMMENT ON COLUMN loyalty.lift_estimate.n_treated IS 'Rows of the treated group';
COMMENT ON COLUMN loyalty.lift_estimate.n_control IS 'Rows of the control group (hold-out)';
COMMENT ON COLUMN loyalty.lift_estimate.mean_treated IS 'Mean outcome of the treated group (CUPED-adjusted when theta is set)';
COMMENT ON COLUMN loyalty.lift_estimate.mean_control IS 'Mean outcome of the control group (CUPED-adjusted when theta is set)';
COMMENT ON COLUMN loyalty.lift_estimate.difference IS 'mean_treated - mean_control: the estimated effect per member';
COMMENT ON COLUMN loyalty.lift_estimate.std_error IS 'Standard error of the difference (Welch: unequal variances); null with fewer than 2 rows in a group or no variance';
COMMENT ON COLUMN loyalty.lift_estimate.df IS 'Welch-Satterthwaite degrees of freedom';
COMMENT ON COLUMN loyalty.lift_estimate.lower IS 'Lower end of the 95% confidence interval of the difference';
COMMENT ON COLUMN loyalty.lift_estimate.upper IS 'Upper end of the 95% confidence interval of the difference';
COMMENT ON COLUMN loyalty.lift_estimate.t_critical IS 'The 0.975 quantile of Student''s t with df degrees of freedom';
COMMENT ON COLUMN loyalty.lift_estimate.theta IS 'CUPED coefficient cov(covariate, outcome) / var(covariate) over both groups; null without a covariate';

/* functions */

CREATE FUNCTION loyalty.t_quantile(p double precision, df double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'kpi_t_quantile'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.t_quantile(double precision, double precision) IS
	'The p-quantile of Student''s t distribution with df (> 0, any real, infinity = normal) degrees of freedom';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.t_quantile(double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.t_cdf(t double precision, df double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'kpi_t_cdf'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.t_cdf(double precision, double precision) IS
	'P(T <= t) for Student''s t distribution with df (> 0, infinity = normal) degrees of freedom';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.t_cdf(double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._lift_trans(internal, double precision, boolean, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_transfn'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_trans(internal, double precision, boolean, double precision) IS
	'Internal: transition function of loyalty.lift_interval';

CREATE FUNCTION loyalty._lift_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_combine(internal, internal) IS
	'Internal: combine function of loyalty.lift_interval (parallel aggregation)';

CREATE FUNCTION loyalty._lift_serial(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'kpi_lift_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_serial(internal) IS
	'Internal: serialize function of loyalty.lift_interval (parallel aggregation)';

CREATE FUNCTION loyalty._lift_deserial(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_deserial(bytea, internal) IS
	'Internal: deserialize function of loyalty.lift_interval (parallel aggregation)';

CREATE FUNCTION loyalty._lift_final(internal)
RETURNS loyalty.lift_estimate
AS 'MODULE_PATHNAME', 'kpi_lift_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_final(internal) IS
	'Internal: final function of loyalty.lift_interval';

/* aggregates */

CREATE AGGREGATE loyalty.lift_interval(outcome double precision, treated boolean, covariate double precision) (
	SFUNC = loyalty._lift_trans,
	STYPE = internal,
	FINALFUNC = loyalty._lift_final,
	COMBINEFUNC = loyalty._lift_combine,
	SERIALFUNC = loyalty._lift_serial,
	DESERIALFUNC = loyalty._lift_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.lift_interval(double precision, boolean, double precision) IS
	'Treated minus control mean of outcome with a 95% Welch t interval; a covariate (pre-period value, on every row or on none) makes it CUPED-adjusted';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.lift_interval(double precision, boolean, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* the moments of one group, paired afterwards (loyalty.campaign_kpi) */

CREATE FUNCTION loyalty._lift_moments_trans(internal, double precision, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'kpi_lift_moments_transfn'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_moments_trans(internal, double precision, double precision) IS
	'Internal: transition function of loyalty._lift_moments';

CREATE FUNCTION loyalty._lift_moments_final(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'kpi_lift_moments_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_moments_final(internal) IS
	'Internal: final function of loyalty._lift_moments (the moments as bytes)';

CREATE AGGREGATE loyalty._lift_moments(outcome double precision, covariate double precision) (
	SFUNC = loyalty._lift_moments_trans,
	STYPE = internal,
	FINALFUNC = loyalty._lift_moments_final,
	COMBINEFUNC = loyalty._lift_combine,
	SERIALFUNC = loyalty._lift_serial,
	DESERIALFUNC = loyalty._lift_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty._lift_moments(double precision, double precision) IS
	'Internal: count, means, second moments and co-moment of outcome and covariate of one group (Welford), as bytes for loyalty._lift_estimate: lets a query collect them per variant in the pass of its other aggregates';

CREATE FUNCTION loyalty._lift_estimate(treated bytea, controls bytea[])
RETURNS loyalty.lift_estimate
AS 'MODULE_PATHNAME', 'kpi_lift_from_moments'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._lift_estimate(bytea, bytea[]) IS
	'Internal: loyalty.lift_interval''s estimate from loyalty._lift_moments of the treated group and of the control groups (merged); null treated: null';
