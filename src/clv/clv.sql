
/* ---------------------------------------------------------------------------
 * clv.sql: customer lifetime value, BG/NBD and Gamma-Gamma (doc/clv.md)
 *
 * Summaries per customer (x repeat purchase periods, t_x recency, T age,
 * mean repeat spend) in batch from any orders table (clv_summary) or from
 * the live statistics (clv_summary_live); their sufficient statistics in
 * the parallel-safe aggregate clv_stats; fits in C (clv_fit, clv_fit_live)
 * stored as named rows of clv_model; scoring functions reading a stored
 * model; the analyst view clv_customers and the audience function
 * clv_slipping_away ("valuable but slipping away").
 * ------------------------------------------------------------------------ */

/* tables */

/*
 * Fitted models: configuration-like (a few rows, no customer key, no
 * trigger): a Citus reference table.  The CHECKs keep a NaN or infinite
 * parameter out whatever writes the row.
 */
CREATE TABLE loyalty.clv_model (
	model_name			text PRIMARY KEY
		CHECK (pg_catalog.length(model_name) BETWEEN 1 AND 100),
	fitted_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	source				text NOT NULL,
	as_of				timestamptz NOT NULL,
	purchase_unit		text NOT NULL CHECK (purchase_unit IN ('day', 'week')),
	time_unit			text NOT NULL CHECK (time_unit IN ('days', 'weeks')),
	first_period		date,
	last_period			date,
	penalizer			double precision NOT NULL CHECK (penalizer >= 0 AND penalizer < 'Infinity'),
	customers			bigint NOT NULL,
	repeat_customers	bigint NOT NULL,
	distinct_triples	bigint NOT NULL,
	r					double precision NOT NULL CHECK (r > 0 AND r < 'Infinity'),
	alpha				double precision NOT NULL CHECK (alpha > 0 AND alpha < 'Infinity'),
	a					double precision NOT NULL CHECK (a > 0 AND a < 'Infinity'),
	b					double precision NOT NULL CHECK (b > 0 AND b < 'Infinity'),
	bgnbd_loglik		double precision NOT NULL CHECK (bgnbd_loglik < 'Infinity'),
	bgnbd_iterations	integer NOT NULL,
	bgnbd_status		text NOT NULL,
	r_se				double precision,
	alpha_se			double precision,
	a_se				double precision,
	b_se				double precision,
	p					double precision NOT NULL CHECK (p > 0 AND p < 'Infinity'),
	q					double precision NOT NULL CHECK (q > 0 AND q < 'Infinity'),
	v					double precision NOT NULL CHECK (v > 0 AND v < 'Infinity'),
	gamma_gamma_loglik	double precision NOT NULL CHECK (gamma_gamma_loglik < 'Infinity'),
	gamma_gamma_iterations integer NOT NULL,
	gamma_gamma_status	text NOT NULL,
	p_se				double precision,
	q_se				double precision,
	v_se				double precision
);

COMMENT ON TABLE loyalty.clv_model IS
	'Fitted BG/NBD + Gamma-Gamma models by name (loyalty.clv_fit / clv_fit_live): parameters, standard errors, fit statistics, data window, units, as_of';
COMMENT ON COLUMN loyalty.clv_model.model_name IS 'Name the scoring functions take; fitting again under a name replaces the model';
COMMENT ON COLUMN loyalty.clv_model.fitted_at IS 'When the model was fitted';
COMMENT ON COLUMN loyalty.clv_model.source IS 'What the summaries were computed from: the orders relation and its columns, or live tracking';
COMMENT ON COLUMN loyalty.clv_model.as_of IS 'Observation end: orders after it were ignored, ages run to it';
COMMENT ON COLUMN loyalty.clv_model.purchase_unit IS 'What counts as one purchase: a day or a week (Monday-based) with at least one order, program time zone';
COMMENT ON COLUMN loyalty.clv_model.time_unit IS 'Unit of recency, age, alpha and the horizons of the scoring functions: days or weeks';
COMMENT ON COLUMN loyalty.clv_model.first_period IS 'First purchase period of the data (start of the data window)';
COMMENT ON COLUMN loyalty.clv_model.last_period IS 'Last purchase period of the data up to as_of';
COMMENT ON COLUMN loyalty.clv_model.penalizer IS 'L2 penalty on the parameters (lifetimes'' penalizer_coef; 0: plain maximum likelihood)';
COMMENT ON COLUMN loyalty.clv_model.customers IS 'Customers with a first purchase up to as_of';
COMMENT ON COLUMN loyalty.clv_model.repeat_customers IS 'Customers with at least one repeat purchase period';
COMMENT ON COLUMN loyalty.clv_model.distinct_triples IS 'Distinct (x, t_x, T) summaries the BG/NBD fit iterated over';
COMMENT ON COLUMN loyalty.clv_model.r IS 'BG/NBD: shape of the gamma distribution of purchase rates';
COMMENT ON COLUMN loyalty.clv_model.alpha IS 'BG/NBD: scale of the gamma distribution of purchase rates, in time_unit';
COMMENT ON COLUMN loyalty.clv_model.a IS 'BG/NBD: beta distribution of the dropout probability, a';
COMMENT ON COLUMN loyalty.clv_model.b IS 'BG/NBD: beta distribution of the dropout probability, b';
COMMENT ON COLUMN loyalty.clv_model.bgnbd_loglik IS 'BG/NBD log-likelihood at the parameters (time in time_unit, unpenalised)';
COMMENT ON COLUMN loyalty.clv_model.bgnbd_iterations IS 'BFGS iterations of the BG/NBD fit';
COMMENT ON COLUMN loyalty.clv_model.bgnbd_status IS 'converged (gradient vanished, or no further decrease possible at the optimum) or max_iterations';
COMMENT ON COLUMN loyalty.clv_model.r_se IS 'Standard error of r (inverse Hessian; NULL: not positive definite)';
COMMENT ON COLUMN loyalty.clv_model.alpha_se IS 'Standard error of alpha';
COMMENT ON COLUMN loyalty.clv_model.a_se IS 'Standard error of a';
COMMENT ON COLUMN loyalty.clv_model.b_se IS 'Standard error of b';
COMMENT ON COLUMN loyalty.clv_model.p IS 'Gamma-Gamma: shape of the gamma distribution of a purchase''s spend';
COMMENT ON COLUMN loyalty.clv_model.q IS 'Gamma-Gamma: shape of the gamma prior of the spend scale (q > 1: finite mean spend)';
COMMENT ON COLUMN loyalty.clv_model.v IS 'Gamma-Gamma: scale of the gamma prior of the spend scale, in money';
COMMENT ON COLUMN loyalty.clv_model.gamma_gamma_loglik IS 'Gamma-Gamma log-likelihood of the repeat buyers with positive mean spend';
COMMENT ON COLUMN loyalty.clv_model.gamma_gamma_iterations IS 'BFGS iterations of the Gamma-Gamma fit';
COMMENT ON COLUMN loyalty.clv_model.gamma_gamma_status IS 'converged or max_iterations';
COMMENT ON COLUMN loyalty.clv_model.p_se IS 'Standard error of p';
COMMENT ON COLUMN loyalty.clv_model.q_se IS 'Standard error of q';
COMMENT ON COLUMN loyalty.clv_model.v_se IS 'Standard error of v';

SELECT pg_catalog.pg_extension_config_dump('loyalty.clv_model'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.clv_model'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('all'::pg_catalog.text, 'loyalty.clv_model'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions: support of the clv_stats aggregate */

CREATE FUNCTION loyalty._clv_stats_trans(internal, bigint, double precision, double precision, double precision)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_stats_transfn'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_trans(internal, bigint, double precision, double precision, double precision) IS
	'Internal: transition function of loyalty.clv_stats';

CREATE FUNCTION loyalty._clv_stats_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_stats_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_combine(internal, internal) IS
	'Internal: combine function of loyalty.clv_stats (parallel aggregation)';

CREATE FUNCTION loyalty._clv_stats_serial(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'clv_stats_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_serial(internal) IS
	'Internal: serialize function of loyalty.clv_stats (parallel aggregation)';

CREATE FUNCTION loyalty._clv_stats_deserial(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_stats_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_deserial(bytea, internal) IS
	'Internal: deserialize function of loyalty.clv_stats (parallel aggregation)';

CREATE FUNCTION loyalty._clv_stats_final(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'clv_stats_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_stats_final(internal) IS
	'Internal: final function of loyalty.clv_stats';

/* aggregates */

CREATE AGGREGATE loyalty.clv_stats(frequency bigint, recency double precision, age double precision, monetary_value double precision) (
	SFUNC = loyalty._clv_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._clv_stats_final,
	COMBINEFUNC = loyalty._clv_stats_combine,
	SERIALFUNC = loyalty._clv_stats_serial,
	DESERIALFUNC = loyalty._clv_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.clv_stats(bigint, double precision, double precision, double precision) IS
	'Sufficient statistics of BG/NBD and Gamma-Gamma over customer summaries: distinct (x, t_x, T) and (x, mean spend) with counts, as bytea for loyalty.clv_fit_stats';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_stats(bigint, double precision, double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: statistics and fits */

CREATE FUNCTION loyalty.clv_stats_info(stats bytea,
	OUT customers bigint, OUT distinct_triples bigint, OUT distinct_spend_pairs bigint,
	OUT spend_customers bigint, OUT spend_excluded bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'clv_stats_info'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_stats_info(bytea) IS
	'What clv_stats collected: customers, distinct (x, t_x, T) triples, distinct (x, spend) pairs, repeat buyers kept for Gamma-Gamma and left out (mean spend <= 0)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_stats_info(bytea)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_fit_stats(stats bytea, penalizer double precision DEFAULT 0,
	OUT r double precision, OUT alpha double precision, OUT a double precision, OUT b double precision,
	OUT bgnbd_loglik double precision, OUT bgnbd_iterations integer, OUT bgnbd_status text,
	OUT r_se double precision, OUT alpha_se double precision, OUT a_se double precision, OUT b_se double precision,
	OUT p double precision, OUT q double precision, OUT v double precision,
	OUT gamma_gamma_loglik double precision, OUT gamma_gamma_iterations integer, OUT gamma_gamma_status text,
	OUT p_se double precision, OUT q_se double precision, OUT v_se double precision,
	OUT customers bigint, OUT repeat_customers bigint, OUT distinct_triples bigint, OUT max_age double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'clv_fit_stats'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_fit_stats(bytea, double precision) IS
	'Fit BG/NBD and Gamma-Gamma to statistics of loyalty.clv_stats (BFGS on log-parameters, time scaled to max age 1, optional L2 penalizer); reason-coded LV0nn errors for data that cannot be fitted';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_fit_stats(bytea, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* types */

CREATE TYPE loyalty.clv_customer_summary AS (
	frequency		bigint,			-- repeat purchase periods (x)
	recency			double precision,	-- last purchase period - first (t_x)
	age				double precision,	-- as_of's period - first (T)
	monetary_value	numeric,		-- mean spend of the repeat periods
	first_period	date,
	last_period		date
);

COMMENT ON TYPE loyalty.clv_customer_summary IS
	'One customer''s CLV summary: result of loyalty._clv_customer';

CREATE FUNCTION loyalty._clv_customer_trans(internal, timestamptz, numeric, timestamptz, text, text)
RETURNS internal
AS 'MODULE_PATHNAME', 'clv_customer_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_customer_trans(internal, timestamptz, numeric, timestamptz, text, text) IS
	'Internal: transition function of loyalty._clv_customer';

CREATE FUNCTION loyalty._clv_customer_final(internal, timestamptz, numeric, timestamptz, text, text)
RETURNS loyalty.clv_customer_summary
AS 'MODULE_PATHNAME', 'clv_customer_final'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._clv_customer_final(internal, timestamptz, numeric, timestamptz, text, text) IS
	'Internal: final function of loyalty._clv_customer';

/*
 * One customer's CLV summary from their order rows (src/clv/clv_summary.c):
 * purchase periods of the program time zone, exact spend.  Used by
 * clv_summary and clv_fit with GROUP BY customer.
 */
CREATE AGGREGATE loyalty._clv_customer(ordered_at timestamptz, amount numeric, as_of timestamptz, unit text, period text) (
	SFUNC = loyalty._clv_customer_trans,
	STYPE = internal,
	FINALFUNC = loyalty._clv_customer_final,
	FINALFUNC_EXTRA,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty._clv_customer(timestamptz, numeric, timestamptz, text, text) IS
	'Internal: one customer''s CLV summary (frequency, recency, age, mean repeat spend, first and last period) from their orders';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty._clv_customer(timestamptz, numeric, timestamptz, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The summary query over an orders relation: $1 = as_of, $2 = program time
 * zone.  Identifiers are quoted with format(%I), unit and period (checked
 * against their lists) with %L.  One GROUP BY customer (native key type,
 * text at the end) with loyalty._clv_customer; rules in clv_summary.c.
 */
CREATE FUNCTION loyalty._clv_summary_sql(orders regclass, customer_column name,
	ordered_at_column name, amount_column name, unit text, period text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ttype regtype;
	time_expr text;
	until text;
BEGIN
	IF orders IS NULL OR customer_column IS NULL OR ordered_at_column IS NULL OR amount_column IS NULL THEN
		RAISE EXCEPTION 'orders, customer_column, ordered_at_column and amount_column must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF unit IS NULL OR unit NOT IN ('day', 'week') THEN
		RAISE EXCEPTION 'invalid unit: "%"', unit
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid units are day and week.';
	END IF;
	IF period IS NULL OR period NOT IN ('days', 'weeks') THEN
		RAISE EXCEPTION 'invalid period: "%"', period
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid periods are days and weeks.';
	END IF;
	SELECT a.atttypid::regtype INTO ttype FROM pg_attribute a
	WHERE a.attrelid = orders AND a.attname = ordered_at_column AND a.attnum > 0 AND NOT a.attisdropped;
	IF ttype IS NULL THEN
		RAISE EXCEPTION 'column "%" of relation % does not exist', ordered_at_column, orders
			USING ERRCODE = 'undefined_column';
	END IF;
	PERFORM 1 FROM pg_attribute a
	WHERE a.attrelid = orders AND a.attname IN (customer_column, amount_column)
	  AND a.attnum > 0 AND NOT a.attisdropped
	HAVING count(DISTINCT a.attname) = (CASE WHEN customer_column = amount_column THEN 1 ELSE 2 END);
	IF NOT FOUND THEN
		RAISE EXCEPTION 'column "%" or "%" of relation % does not exist', customer_column, amount_column, orders
			USING ERRCODE = 'undefined_column';
	END IF;
	IF ttype = 'timestamp with time zone'::regtype THEN
		time_expr := format('o.%I', ordered_at_column);
		until := format('o.%I OPERATOR(pg_catalog.<=) $1', ordered_at_column);
	ELSIF ttype = 'timestamp without time zone'::regtype THEN
		time_expr := format('pg_catalog.timezone($2, o.%I)', ordered_at_column);
		until := format('o.%I OPERATOR(pg_catalog.<=) pg_catalog.timezone($2, $1)', ordered_at_column);
	ELSIF ttype = 'date'::regtype THEN
		time_expr := format('pg_catalog.timezone($2, o.%I::pg_catalog.timestamp)', ordered_at_column);
		until := format('o.%I OPERATOR(pg_catalog.<=) pg_catalog.timezone($2, $1)::pg_catalog.date', ordered_at_column);
	ELSE
		RAISE EXCEPTION 'column "%" of relation % has type %, not timestamptz, timestamp or date', ordered_at_column, orders, ttype
			USING ERRCODE = 'datatype_mismatch';
	END IF;
	RETURN format($q$
SELECT q.cid AS customer_id, (q.s).frequency, (q.s).recency, (q.s).age, (q.s).monetary_value,
	   (q.s).first_period, (q.s).last_period
FROM (SELECT o.%1$I::pg_catalog.text AS cid,
			 loyalty._clv_customer(%2$s, o.%3$I::pg_catalog.numeric, $1, %4$L, %5$L) AS s
	  FROM %6$s o
	  WHERE o.%1$I IS NOT NULL AND %7$s
	  GROUP BY o.%1$I) q
WHERE q.s IS DISTINCT FROM NULL$q$,
		customer_column, time_expr, amount_column, unit, period, orders, until);
END;
$$;

COMMENT ON FUNCTION loyalty._clv_summary_sql(regclass, name, name, name, text, text) IS
	'Internal: the query computing CLV summaries from an orders relation ($1 as_of, $2 time zone)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty._clv_summary_sql(regclass, name, name, name, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* The program time zone (no settings row: UTC). */
CREATE FUNCTION loyalty._clv_zone()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT COALESCE((SELECT s.timezone FROM loyalty.settings s), 'UTC')
$$;

COMMENT ON FUNCTION loyalty._clv_zone() IS
	'Internal: the program time zone of the CLV summaries';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty._clv_zone()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * CLV summary of every customer of an orders relation as of a time, with
 * the caller's rights (SECURITY INVOKER).  Customers whose first order is
 * after as_of are absent; rows without customer or time are ignored.
 */
CREATE FUNCTION loyalty.clv_summary(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	as_of timestamptz DEFAULT pg_catalog.now(),
	unit text DEFAULT 'day',
	period text DEFAULT 'days')
RETURNS TABLE (
	customer_id text,
	frequency bigint,
	recency double precision,
	age double precision,
	monetary_value numeric,
	first_period date,
	last_period date)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY EXECUTE loyalty._clv_summary_sql(orders, customer_column, ordered_at_column, amount_column, unit, period)
		USING as_of, loyalty._clv_zone();
END;
$$;

COMMENT ON FUNCTION loyalty.clv_summary(regclass, name, name, name, timestamptz, text, text) IS
	'CLV summary per customer of an orders table or view as of a time: frequency x (repeat purchase periods), recency t_x, age T (in period units), mean repeat spend';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_summary(regclass, name, name, name, timestamptz, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Store a fit (clv_fit_stats' row) under a name, replacing a model of that
 * name.  Runs with the caller's rights: admins may write clv_model.
 */
CREATE FUNCTION loyalty._clv_store(model_name text, stats bytea, penalizer double precision,
	source text, as_of timestamptz, unit text, period text, first_period date, last_period date)
RETURNS loyalty.clv_model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	f record;
	m loyalty.clv_model;
BEGIN
	IF model_name IS NULL THEN
		RAISE EXCEPTION 'model_name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF stats IS NULL THEN
		RAISE EXCEPTION 'too few customers to fit a clv model'
			USING ERRCODE = 'LV001', DETAIL = '{"reason": "too_few_customers", "customers": 0}',
				  HINT = 'No customer has a first purchase up to as_of.';
	END IF;
	SELECT * INTO f FROM loyalty.clv_fit_stats(stats, penalizer);
	INSERT INTO loyalty.clv_model AS c (model_name, fitted_at, source, as_of, purchase_unit, time_unit,
		first_period, last_period, penalizer, customers, repeat_customers, distinct_triples,
		r, alpha, a, b, bgnbd_loglik, bgnbd_iterations, bgnbd_status, r_se, alpha_se, a_se, b_se,
		p, q, v, gamma_gamma_loglik, gamma_gamma_iterations, gamma_gamma_status, p_se, q_se, v_se)
	VALUES (model_name, pg_catalog.now(), source, as_of, unit, period,
		first_period, last_period, penalizer, f.customers, f.repeat_customers, f.distinct_triples,
		f.r, f.alpha, f.a, f.b, f.bgnbd_loglik, f.bgnbd_iterations, f.bgnbd_status, f.r_se, f.alpha_se, f.a_se, f.b_se,
		f.p, f.q, f.v, f.gamma_gamma_loglik, f.gamma_gamma_iterations, f.gamma_gamma_status, f.p_se, f.q_se, f.v_se)
	ON CONFLICT ON CONSTRAINT clv_model_pkey DO UPDATE SET
		fitted_at = excluded.fitted_at, source = excluded.source, as_of = excluded.as_of,
		purchase_unit = excluded.purchase_unit, time_unit = excluded.time_unit,
		first_period = excluded.first_period, last_period = excluded.last_period,
		penalizer = excluded.penalizer, customers = excluded.customers,
		repeat_customers = excluded.repeat_customers, distinct_triples = excluded.distinct_triples,
		r = excluded.r, alpha = excluded.alpha, a = excluded.a, b = excluded.b,
		bgnbd_loglik = excluded.bgnbd_loglik, bgnbd_iterations = excluded.bgnbd_iterations,
		bgnbd_status = excluded.bgnbd_status, r_se = excluded.r_se, alpha_se = excluded.alpha_se,
		a_se = excluded.a_se, b_se = excluded.b_se, p = excluded.p, q = excluded.q, v = excluded.v,
		gamma_gamma_loglik = excluded.gamma_gamma_loglik,
		gamma_gamma_iterations = excluded.gamma_gamma_iterations,
		gamma_gamma_status = excluded.gamma_gamma_status,
		p_se = excluded.p_se, q_se = excluded.q_se, v_se = excluded.v_se
	RETURNING * INTO m;
	RETURN m;
END;
$$;

COMMENT ON FUNCTION loyalty._clv_store(text, bytea, double precision, text, timestamptz, text, text, date, date) IS
	'Internal: fit statistics and store the model under a name (caller''s rights)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._clv_store(text, bytea, double precision, text, timestamptz, text, text, date, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Fit both models on an orders relation and store them as model_name: one
 * statement, summary and statistics in one (parallel-capable) query, the
 * optimisation in C on the distinct triples.  Caller's rights.
 */
CREATE FUNCTION loyalty.clv_fit(
	model_name text,
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	as_of timestamptz DEFAULT pg_catalog.now(),
	unit text DEFAULT 'day',
	period text DEFAULT 'days',
	penalizer double precision DEFAULT 0)
RETURNS loyalty.clv_model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stats bytea;
	fp date;
	lp date;
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	EXECUTE 'SELECT loyalty.clv_stats(s.frequency, s.recency, s.age, s.monetary_value::pg_catalog.float8),'
			' pg_catalog.min(s.first_period), pg_catalog.max(s.last_period) FROM ('
			|| loyalty._clv_summary_sql(orders, customer_column, ordered_at_column, amount_column, unit, period)
			|| ') s'
		INTO stats, fp, lp
		USING as_of, loyalty._clv_zone();
	RETURN loyalty._clv_store(model_name, stats, penalizer,
		pg_catalog.format('%s (%I, %I, %I)', orders, customer_column, ordered_at_column, amount_column),
		as_of, unit, period, fp, lp);
END;
$$;

COMMENT ON FUNCTION loyalty.clv_fit(text, regclass, name, name, name, timestamptz, text, text, double precision) IS
	'Fit BG/NBD and Gamma-Gamma on an orders table or view as of a time and store them as a named model (replacing one of that name)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.clv_fit(text, regclass, name, name, name, timestamptz, text, text, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: scoring */

CREATE FUNCTION loyalty.clv_p_alive(model_name text, frequency bigint, recency double precision, age double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'clv_p_alive'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_p_alive(text, bigint, double precision, double precision) IS
	'BG/NBD probability that a customer (frequency, recency, age in the model''s time unit) is still active, from a stored model';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_p_alive(text, bigint, double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_expected_purchases(model_name text, frequency bigint, recency double precision,
	age double precision, horizon double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'clv_expected_purchases'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_expected_purchases(text, bigint, double precision, double precision, double precision) IS
	'BG/NBD expected purchases of a customer in the next horizon time units, from a stored model';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_expected_purchases(text, bigint, double precision, double precision, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_expected_spend(model_name text, frequency bigint, monetary_value numeric)
RETURNS numeric
AS 'MODULE_PATHNAME', 'clv_expected_spend'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_expected_spend(text, bigint, numeric) IS
	'Gamma-Gamma expected spend per future purchase of a customer (frequency, mean repeat spend), rounded to 2 decimals; NULL when the model has q <= 1';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_expected_spend(text, bigint, numeric)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.clv_value(model_name text, frequency bigint, recency double precision,
	age double precision, monetary_value numeric,
	months integer DEFAULT 12, discount_rate double precision DEFAULT 0.01)
RETURNS numeric
AS 'MODULE_PATHNAME', 'clv_value'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.clv_value(text, bigint, double precision, double precision, numeric, integer, double precision) IS
	'Customer lifetime value over the next months (expected purchases per month times expected spend, discounted monthly at discount_rate, as lifetimes), rounded to 2 decimals';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.clv_value(text, bigint, double precision, double precision, numeric, integer, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: live summaries (tracked orders, src/rfm_live) */

/*
 * CLV summary of every tracked customer from loyalty.customer_stats as of
 * its last fold: x = order_days - 1 (all-time days with an order), t_x and
 * T from first_day (tracking zone) to the day of last_order and of as_of,
 * mean repeat spend = (spend_total - first_day_spend) / x.  SECURITY
 * DEFINER: analysts read it without reading customer_stats.
 */
CREATE FUNCTION loyalty.clv_summary_live(
	as_of timestamptz DEFAULT pg_catalog.now(),
	period text DEFAULT 'days')
RETURNS TABLE (
	customer_id text,
	frequency bigint,
	recency double precision,
	age double precision,
	monetary_value numeric,
	first_period date,
	last_period date,
	spend_total numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	zone text := loyalty._clv_zone();
	asof_day date;
	k double precision;
BEGIN
	IF as_of IS NULL THEN
		RAISE EXCEPTION 'as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF period IS NULL OR period NOT IN ('days', 'weeks') THEN
		RAISE EXCEPTION 'invalid period: "%"', period
			USING ERRCODE = 'invalid_parameter_value', HINT = 'Valid periods are days and weeks.';
	END IF;
	asof_day := timezone(zone, as_of)::date;
	k := CASE period WHEN 'weeks' THEN 7.0 ELSE 1.0 END;
	RETURN QUERY
	SELECT s.customer_id::text,
		   s.order_days - 1,
		   CASE WHEN s.order_days > 1 THEN
			   GREATEST(0, LEAST(timezone(zone, s.last_order)::date, asof_day) - s.first_day)::float8 / k
		   ELSE 0 END,
		   (asof_day - s.first_day)::float8 / k,
		   CASE WHEN s.order_days > 1 THEN
			   (s.spend_total - COALESCE(s.first_day_spend, 0)) / (s.order_days - 1)
		   END,
		   s.first_day,
		   LEAST(timezone(zone, s.last_order)::date, asof_day),
		   s.spend_total
	FROM loyalty.customer_stats s
	WHERE s.order_days > 0 AND s.first_day <= asof_day AND s.last_order IS NOT NULL;
END;
$$;

COMMENT ON FUNCTION loyalty.clv_summary_live(timestamptz, text) IS
	'CLV summary per tracked customer from the live statistics (as of their last fold): frequency, recency, age (days or weeks), mean repeat spend, all-time spend';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.clv_summary_live(timestamptz, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* Fit both models on the live statistics and store them as model_name. */
CREATE FUNCTION loyalty.clv_fit_live(
	model_name text,
	as_of timestamptz DEFAULT pg_catalog.now(),
	period text DEFAULT 'days',
	penalizer double precision DEFAULT 0)
RETURNS loyalty.clv_model
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stats bytea;
	fp date;
	lp date;
BEGIN
	SELECT loyalty.clv_stats(s.frequency, s.recency, s.age, s.monetary_value::float8),
		   min(s.first_period), max(s.last_period)
	INTO stats, fp, lp
	FROM loyalty.clv_summary_live(as_of, period) s;
	RETURN loyalty._clv_store(model_name, stats, penalizer, 'live tracking (loyalty.customer_stats)',
		as_of, 'day', period, fp, lp);
END;
$$;

COMMENT ON FUNCTION loyalty.clv_fit_live(text, timestamptz, text, double precision) IS
	'Fit BG/NBD and Gamma-Gamma on the live statistics of the tracked orders and store them as a named model';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.clv_fit_live(text, timestamptz, text, double precision)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * "Valuable but slipping away": the repeat buyers in the top top_share of
 * all-time spend (ties share their rank: cume_dist) whose P(alive) under
 * the model is below max_p_alive, most valuable first.  customer_id first:
 * usable as a campaign audience.
 */
CREATE FUNCTION loyalty.clv_slipping_away(
	model_name text,
	max_p_alive double precision DEFAULT 0.5,
	top_share double precision DEFAULT 0.2,
	as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (
	customer_id text,
	segment text,
	spend_total numeric,
	frequency bigint,
	recency double precision,
	age double precision,
	p_alive double precision,
	clv_12m numeric)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	unit text;
	tunit text;
BEGIN
	IF max_p_alive IS NULL OR NOT (max_p_alive >= 0 AND max_p_alive <= 1) THEN
		RAISE EXCEPTION 'max_p_alive must lie between 0 and 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF top_share IS NULL OR NOT (top_share > 0 AND top_share <= 1) THEN
		RAISE EXCEPTION 'top_share must lie in (0, 1]' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT m.purchase_unit, m.time_unit INTO unit, tunit
	FROM loyalty.clv_model m WHERE m.model_name = clv_slipping_away.model_name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'clv model "%" does not exist', model_name
			USING ERRCODE = 'LV007',
				  DETAIL = format('{"reason": "unknown_model", "model": %s}', to_json(model_name)),
				  HINT = 'Fit one with loyalty.clv_fit().';
	END IF;
	IF unit <> 'day' THEN
		RAISE EXCEPTION 'clv model "%" counts weeks, the live statistics count days', model_name
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	SELECT v.customer_id, g.segment, v.spend_total, v.frequency, v.recency, v.age, v.p_alive,
		   loyalty.clv_value(clv_slipping_away.model_name, v.frequency, v.recency, v.age, v.monetary_value)
	FROM (SELECT s.*, cume_dist() OVER (ORDER BY s.spend_total DESC) AS share,
				 loyalty.clv_p_alive(clv_slipping_away.model_name, s.frequency, s.recency, s.age) AS p_alive
		  FROM loyalty.clv_summary_live(as_of, tunit) s
		  WHERE s.frequency > 0) v
	LEFT JOIN loyalty.customer_segment g ON g.customer_id = v.customer_id
	WHERE v.share <= top_share AND v.p_alive < max_p_alive
	ORDER BY v.spend_total DESC, v.customer_id;
END;
$$;

COMMENT ON FUNCTION loyalty.clv_slipping_away(text, double precision, double precision, timestamptz) IS
	'Valuable but slipping away: repeat buyers in the top share of all-time spend whose P(alive) is below max_p_alive (campaign audience: customer_id first)';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.clv_slipping_away(text, double precision, double precision, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.clv_customers AS
SELECT s.customer_id, g.segment, g.score, m.model_name,
	   s.frequency, s.recency, s.age, s.monetary_value, s.spend_total,
	   loyalty.clv_p_alive(m.model_name, s.frequency, s.recency, s.age) AS p_alive,
	   loyalty.clv_expected_purchases(m.model_name, s.frequency, s.recency, s.age,
		   12 * CASE m.time_unit WHEN 'weeks' THEN 4.345 ELSE 30 END) AS expected_purchases_12m,
	   loyalty.clv_expected_spend(m.model_name, s.frequency, s.monetary_value) AS expected_spend,
	   loyalty.clv_value(m.model_name, s.frequency, s.recency, s.age, s.monetary_value) AS clv_12m
FROM (SELECT c.model_name, c.time_unit FROM loyalty.clv_model c
	  WHERE c.purchase_unit = 'day'
	  ORDER BY c.fitted_at DESC, c.model_name LIMIT 1) m
CROSS JOIN LATERAL loyalty.clv_summary_live(pg_catalog.now(), m.time_unit) s
LEFT JOIN loyalty.customer_segment g ON g.customer_id = s.customer_id;

COMMENT ON VIEW loyalty.clv_customers IS
	'Every tracked customer scored by the most recently fitted day-based CLV model, now, beside the RFM segment';
COMMENT ON COLUMN loyalty.clv_customers.customer_id IS 'Customer key as tracked';
COMMENT ON COLUMN loyalty.clv_customers.segment IS 'RFM segment at the last refresh (NULL: not scored yet)';
COMMENT ON COLUMN loyalty.clv_customers.score IS 'RFM score at the last refresh, as text';
COMMENT ON COLUMN loyalty.clv_customers.model_name IS 'The model scoring the row (latest fitted_at among day-based models)';
COMMENT ON COLUMN loyalty.clv_customers.frequency IS 'Repeat purchase days (x)';
COMMENT ON COLUMN loyalty.clv_customers.recency IS 'Last purchase since the first (t_x), in the model''s time unit';
COMMENT ON COLUMN loyalty.clv_customers.age IS 'Now since the first purchase (T), in the model''s time unit';
COMMENT ON COLUMN loyalty.clv_customers.monetary_value IS 'Mean spend of the repeat purchase days (NULL: none)';
COMMENT ON COLUMN loyalty.clv_customers.spend_total IS 'All-time spend (orders and refunds)';
COMMENT ON COLUMN loyalty.clv_customers.p_alive IS 'BG/NBD probability of being still active';
COMMENT ON COLUMN loyalty.clv_customers.expected_purchases_12m IS 'Expected purchase days in the next 12 months (of 30 days / 4.345 weeks)';
COMMENT ON COLUMN loyalty.clv_customers.expected_spend IS 'Gamma-Gamma expected spend per purchase';
COMMENT ON COLUMN loyalty.clv_customers.clv_12m IS 'Value of the next 12 months, discounted 1% a month';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.clv_customers'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
