-- Statistics of campaign lift (issue 15 item 8): Student's t quantiles
-- against published table values, Welch's interval against a hand
-- computation, CUPED, parallel plans, and the statistical-honesty bar: a
-- simulation with a fixed seed where the 95% interval must cover the true
-- lift in 93-97% of the replications, and cover 0 in about 95% when there
-- is no effect.
SET extra_float_digits = 0;

-- t quantiles (published values to 9 significant digits)
SELECT df, p, round(loyalty.t_quantile(p, df)::numeric, 8) AS q
FROM (VALUES (1::float8, 0.975::float8), (2, 0.975), (3, 0.975), (5, 0.975),
			 (10, 0.975), (30, 0.975), (100, 0.975), ('infinity', 0.975),
			 (7, 0.95), (7, 0.05), (4, 0.995), (2.5, 0.975), (1, 0.5)) v(df, p);
-- the CDF inverts the quantile, also for fractional degrees of freedom
SELECT bool_and(abs(loyalty.t_cdf(loyalty.t_quantile(p, df), df) - p) < 1e-12) AS inverse
FROM generate_series(1, 40) d, LATERAL (SELECT d / 8.0::float8 AS df) a,
	 unnest(ARRAY[0.001, 0.025, 0.3, 0.9, 0.975, 0.9999]::float8[]) p;
-- out of range
SELECT loyalty.t_quantile(0, 5);
SELECT loyalty.t_quantile(1, 5);
SELECT loyalty.t_quantile(0.5, 0);
SELECT loyalty.t_quantile('NaN', 3);

-- Welch on a small hand-checked example:
-- treated 1..5 (mean 3, var 2.5), control 2,2,3,3 (mean 2.5, var 1/3);
-- se = sqrt(2.5/5 + (1/3)/4) = 0.763763, df = 5.25
SELECT n_treated, n_control, mean_treated, mean_control, difference,
	   round(std_error::numeric, 6) AS se, round(df::numeric, 4) AS df,
	   round(t_critical::numeric, 6) AS t, round(lower::numeric, 5) AS lower,
	   round(upper::numeric, 5) AS upper, theta
FROM (SELECT (loyalty.lift_interval(y, g, NULL)).*
	  FROM (VALUES (1::float8, true), (2, true), (3, true), (4, true), (5, true),
				   (2, false), (2, false), (3, false), (3, false)) v(y, g)) s;
-- the same by hand with the library's quantile
SELECT round((0.5 - loyalty.t_quantile(0.975, d) * se)::numeric, 5) AS lower,
	   round((0.5 + loyalty.t_quantile(0.975, d) * se)::numeric, 5) AS upper
FROM (SELECT sqrt(2.5 / 5 + (1.0 / 3) / 4) AS se,
			 (2.5 / 5 + (1.0 / 3) / 4) ^ 2
			 / ((2.5 / 5) ^ 2 / 4 + ((1.0 / 3) / 4) ^ 2 / 3) AS d) h;

-- edge cases: null rows ignored, one group empty or of one row, no variance
SELECT n_treated, n_control, difference, std_error, lower
FROM (SELECT (loyalty.lift_interval(y, g, NULL)).*
	  FROM (VALUES (1::float8, true), (NULL, true), (2, NULL), (3, false)) v(y, g)) s;
SELECT n_treated, n_control, difference, std_error
FROM (SELECT (loyalty.lift_interval(y, true, NULL)).* FROM (VALUES (1::float8), (2)) v(y)) s;
SELECT n_treated, n_control, difference, std_error
FROM (SELECT (loyalty.lift_interval(1, g, NULL)).*
	  FROM (VALUES (true), (true), (false), (false)) v(g)) s;
SELECT loyalty.lift_interval(y, true, NULL) IS NULL AS no_rows
FROM (SELECT 1::float8 WHERE false) v(y);
-- a covariate on some rows only, infinite values
SELECT loyalty.lift_interval(y, g, x)
FROM (VALUES (1::float8, true, 1::float8), (2, false, NULL)) v(y, g, x);
SELECT loyalty.lift_interval('infinity', true, NULL);

-- CUPED: y = x + effect + small noise; the adjusted interval is much
-- narrower than the plain one and both contain the true effect 5
CREATE TEMP TABLE cuped AS
SELECT i, i % 2 = 0 AS treated, x,
	   x + CASE WHEN i % 2 = 0 THEN 5 ELSE 0 END + ((i * 7919) % 11 - 5) AS y
FROM generate_series(1, 2000) i, LATERAL (SELECT ((i * 104729) % 1000)::float8 AS x) a;
SELECT round(plain.difference::numeric, 1) AS plain_diff,
	   round(adj.difference::numeric, 1) AS cuped_diff,
	   plain.lower < 5 AND 5 < plain.upper AS plain_covers,
	   adj.lower < 5 AND 5 < adj.upper AS cuped_covers,
	   (adj.upper - adj.lower) < (plain.upper - plain.lower) / 20 AS cuped_narrower,
	   round(adj.theta::numeric, 2) AS theta
FROM (SELECT (loyalty.lift_interval(y, treated, NULL)).* FROM cuped) plain,
	 (SELECT (loyalty.lift_interval(y, treated, x)).* FROM cuped) adj;

-- parallel plan (partial aggregation, serialize / combine) gives the same
-- estimate as a serial one
CREATE TABLE kpi_par AS
SELECT i, i % 3 = 0 AS treated, (i % 97)::float8 AS x,
	   ((i % 97) + (i % 13) + CASE WHEN i % 3 = 0 THEN 2 ELSE 0 END)::float8 AS y
FROM generate_series(1, 200000) i;
ANALYZE kpi_par;
CREATE TEMP TABLE kpi_serial AS
SELECT (loyalty.lift_interval(y, treated, x)).* FROM kpi_par;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT loyalty.lift_interval(y, treated, x) FROM kpi_par;
SELECT abs(p.difference - s.difference) < 1e-9 AS same_difference,
	   abs(p.lower - s.lower) < 1e-9 AS same_lower,
	   abs(p.df - s.df) < 1e-6 AS same_df, p.n_treated = s.n_treated AS same_n
FROM (SELECT (loyalty.lift_interval(y, treated, x)).* FROM kpi_par) p, kpi_serial s;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
DROP TABLE kpi_par;

-- Statistical honesty.  1,000 replications of an experiment with 150
-- treated and 100 control members; revenue per member is skewed (a
-- purchase with probability 0.4, basket lognormal-ish), the treatment adds
-- a known 8.0 to the mean (true lift) or nothing.  Normal draws by
-- Box-Muller from the seeded random().
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.15);
CREATE TEMP TABLE sim AS
SELECT r, treated,
	   CASE WHEN u0 < 0.4 THEN 20 * exp(0.5 * z) ELSE 0 END AS base,
	   z2 AS noise
FROM (SELECT r, m <= 150 AS treated, random() AS u0,
			 sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z,
			 sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z2
	  FROM generate_series(1, 1000) r, generate_series(1, 250) m) d;
-- with a true lift of 8.0 (added to every treated member)
SELECT count(*) AS replications,
	   avg(((e).lower <= 8.0 AND 8.0 <= (e).upper)::int) BETWEEN 0.93 AND 0.97 AS covers_truth,
	   avg(((e).lower <= 0 AND 0 <= (e).upper)::int) < 0.5 AS usually_excludes_zero
FROM (SELECT r, loyalty.lift_interval(base + CASE WHEN treated THEN 8.0 ELSE 0 END, treated, NULL) AS e
	  FROM sim GROUP BY r) x;
-- no effect: covers 0 in about 95%
SELECT avg(((e).lower <= 0 AND 0 <= (e).upper)::int) BETWEEN 0.93 AND 0.97 AS covers_zero
FROM (SELECT r, loyalty.lift_interval(base, treated, NULL) AS e FROM sim GROUP BY r) x;
-- CUPED with a pre-period covariate correlated with the outcome
-- (outcome = pre-period spend + noise + lift): same coverage, narrower
SELECT avg(((e).lower <= 8.0 AND 8.0 <= (e).upper)::int) BETWEEN 0.93 AND 0.97 AS cuped_covers_truth,
	   avg((e).upper - (e).lower) < avg((p).upper - (p).lower) / 2 AS cuped_narrower
FROM (SELECT r,
			 loyalty.lift_interval(base + 5 * noise + CASE WHEN treated THEN 8.0 ELSE 0 END, treated, base) AS e,
			 loyalty.lift_interval(base + 5 * noise + CASE WHEN treated THEN 8.0 ELSE 0 END, treated, NULL) AS p
	  FROM sim GROUP BY r) x;
SELECT avg(((e).lower <= 0 AND 0 <= (e).upper)::int) BETWEEN 0.93 AND 0.97 AS cuped_covers_zero
FROM (SELECT r, loyalty.lift_interval(base + 5 * noise, treated, base) AS e FROM sim GROUP BY r) x;
RESET max_parallel_workers_per_gather;
