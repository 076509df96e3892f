-- CLV: BG/NBD and Gamma-Gamma (src/clv, doc/clv.md).
-- 1. The published CDNOW check (Fader, Hardie and Lee 2005): the 39-week
--    calibration summary of 2,357 customers, as shipped by lifetimes.
SET extra_float_digits = 0;
CREATE TABLE cdnow (id integer, x bigint, t_x double precision, "T" double precision, zbar numeric);
\copy cdnow FROM 'test/data/cdnow_customers_summary_with_transactions.csv' WITH (FORMAT csv, HEADER)
SELECT count(*) AS customers, count(*) FILTER (WHERE x > 0) AS repeat_buyers FROM cdnow;
CREATE TABLE cdnow_stats AS
SELECT loyalty.clv_stats(x, t_x, "T", zbar::float8) AS stats FROM cdnow;
SELECT * FROM loyalty.clv_stats_info((SELECT stats FROM cdnow_stats));
CREATE TABLE cdnow_fit AS
SELECT f.* FROM cdnow_stats, loyalty.clv_fit_stats(stats) f;
-- the paper's values, and lifetimes' own fit to 1e-5
SELECT round(r::numeric, 3) AS r, round(alpha::numeric, 3) AS alpha,
	   round(a::numeric, 3) AS a, round(b::numeric, 3) AS b,
	   round(bgnbd_loglik::numeric, 1) AS loglik, bgnbd_status,
	   abs(r - 0.242593) < 1e-5 AND abs(alpha - 4.413532) < 1e-5
	   AND abs(a - 0.792886) < 1e-5 AND abs(b - 2.425753) < 1e-5 AS lifetimes_fit,
	   customers, repeat_customers, max_age
FROM cdnow_fit;
-- standard errors from the inverse Hessian (lifetimes: 0.0126, 0.378, 0.186, 0.705)
SELECT round(r_se::numeric, 4) AS r_se, round(alpha_se::numeric, 3) AS alpha_se,
	   round(a_se::numeric, 3) AS a_se, round(b_se::numeric, 3) AS b_se
FROM cdnow_fit;
-- Gamma-Gamma on the 946 repeat buyers
SELECT round(p::numeric, 2) AS p, round(q::numeric, 2) AS q, round(v::numeric, 2) AS v,
	   gamma_gamma_status, round(p_se::numeric, 2) AS p_se, round(q_se::numeric, 2) AS q_se,
	   round(v_se::numeric, 2) AS v_se
FROM cdnow_fit;
-- the penalizer shrinks the parameters (lifetimes' penalizer_coef)
SELECT f.r < c.r AND f.b < c.b AS shrunk, f.bgnbd_status
FROM cdnow_stats, loyalty.clv_fit_stats(stats, penalizer => 0.1) f, cdnow_fit c;

-- 2. Predictions at the paper's published parameters.
INSERT INTO loyalty.clv_model (model_name, source, as_of, purchase_unit, time_unit, penalizer,
	customers, repeat_customers, distinct_triples, r, alpha, a, b, bgnbd_loglik, bgnbd_iterations,
	bgnbd_status, p, q, v, gamma_gamma_loglik, gamma_gamma_iterations, gamma_gamma_status)
VALUES ('paper', 'Fader, Hardie and Lee 2005', '1997-09-30', 'day', 'weeks', 0,
	2357, 946, 0, 0.243, 4.414, 0.793, 2.426, -9582.4, 0, 'published',
	6.25, 3.74, 15.44, -4055.9, 0, 'published');
-- customer 1 (x = 2, t_x = 30.43, T = 38.86): 1.226 purchases in the next 39 weeks
SELECT round(loyalty.clv_expected_purchases('paper', 2, 30.43, 38.86, 39)::numeric, 3) AS customer_1_next_39_weeks,
	   round(loyalty.clv_p_alive('paper', 2, 30.43, 38.86)::numeric, 3) AS customer_1_p_alive,
	   loyalty.clv_p_alive('paper', 0, 0, 38.86) AS one_time_buyer_p_alive,
	   loyalty.clv_expected_purchases('paper', 2, 30.43, 38.86, 0) AS no_horizon;
-- Gamma-Gamma: customer 1 (mean repeat spend 22.35), a one-time buyer (the
-- population mean p v / (q - 1)), and the 946 repeat buyers on average
SELECT loyalty.clv_expected_spend('paper', 2, 22.35) AS customer_1_spend,
	   loyalty.clv_expected_spend('paper', 0, NULL) AS population_mean;
SELECT (loyalty._clv_store('cdnow', stats, 0, 'CDNOW summary', '1997-09-30', 'day', 'weeks', NULL, NULL)).model_name AS stored
FROM cdnow_stats;
SELECT round(avg(loyalty.clv_expected_spend('cdnow', x, zbar)), 2) AS conditional_mean_spend,
	   round(avg(zbar), 2) AS observed_mean_spend
FROM cdnow WHERE x > 0;
-- the expected purchases of the cohort in the next 39 weeks
SELECT round(sum(loyalty.clv_expected_purchases('cdnow', x, t_x, "T", 39))::numeric, 0) AS cohort_next_39_weeks
FROM cdnow;
-- CLV: 12 months of 4.345 weeks discounted 1% a month, as lifetimes
SELECT loyalty.clv_value('cdnow', 2, 30.43, 38.86, 22.35) AS customer_1_clv,
	   loyalty.clv_value('cdnow', 2, 30.43, 38.86, 22.35, months => 24, discount_rate => 0) AS undiscounted_24,
	   loyalty.clv_value('cdnow', 2, 30.43, 38.86, 22.35, months => 0) AS no_months;
-- stability: heavy buyers and long horizons stay finite (no overflow)
SELECT loyalty.clv_p_alive('cdnow', 100000, 38, 38.86) AS heavy_recent_gone,
	   loyalty.clv_p_alive('cdnow', 100000, 38.86, 38.86) AS heavy_today_alive,
	   loyalty.clv_expected_purchases('cdnow', 5000, 38.8, 38.86, 52) > 1000 AS heavy_expected_finite,
	   loyalty.clv_expected_purchases('cdnow', 2, 30.43, 38.86, 1e6) > loyalty.clv_expected_purchases('cdnow', 2, 30.43, 38.86, 1e5) AS long_horizon_grows;

-- 3. Summaries from an orders table: periods, as_of, refunds, spend.
CREATE TABLE clv_orders (customer text, ordered_at timestamptz, amount numeric);
INSERT INTO clv_orders VALUES
	('one-time', '2026-10-01 10:00+00', 40),
	('two-days', '2026-09-01 09:00+00', 10), ('two-days', '2026-09-01 18:00+00', 5),
	('two-days', '2026-09-15 12:00+00', 30), ('two-days', '2026-09-16 12:00+00', -30),
	('two-days', '2026-10-31 12:00+00', 50), ('two-days', '2026-10-31 13:00+00', -20),
	('refund-only-day', '2026-08-01 10:00+00', 20), ('refund-only-day', '2026-08-20 10:00+00', -20),
	('zero-spend', '2026-07-01 10:00+00', 0), ('zero-spend', '2026-07-08 10:00+00', 0),
	('negative', '2026-06-01 10:00+00', 100), ('negative', '2026-06-02 10:00+00', 5), ('negative', '2026-06-02 11:00+00', -50),
	('future', '2026-11-02 10:00+00', 99),
	('late-first', '2026-10-20 10:00+00', 10), ('late-first', '2026-11-05 10:00+00', 10),
	(NULL, '2026-10-01 10:00+00', 1), ('no-time', NULL, 1);
SELECT * FROM loyalty.clv_summary('clv_orders', 'customer', 'ordered_at', 'amount', '2026-11-01')
ORDER BY customer_id;
SELECT customer_id, frequency, recency, age, monetary_value, first_period
FROM loyalty.clv_summary('clv_orders', 'customer', 'ordered_at', 'amount', '2026-11-01', unit => 'week', period => 'weeks')
ORDER BY customer_id;
-- timestamp (local in the program zone) and date columns
CREATE TABLE clv_orders_local AS
SELECT customer, (ordered_at AT TIME ZONE 'UTC') AS ordered_local, ordered_at::date AS ordered_day, amount FROM clv_orders;
SELECT count(*) AS differences FROM (
	SELECT * FROM loyalty.clv_summary('clv_orders', 'customer', 'ordered_at', 'amount', '2026-11-01')
	EXCEPT SELECT * FROM loyalty.clv_summary('clv_orders_local', 'customer', 'ordered_local', 'amount', '2026-11-01')
	EXCEPT SELECT * FROM loyalty.clv_summary('clv_orders_local', 'customer', 'ordered_day', 'amount', '2026-11-01')) d;
-- bad arguments
SELECT * FROM loyalty.clv_summary('clv_orders', 'customer', 'ordered_at', 'amount', '2026-11-01', unit => 'month');
SELECT * FROM loyalty.clv_summary('clv_orders', 'customer', 'ordered_at', 'amount', '2026-11-01', period => 'hours');
SELECT * FROM loyalty.clv_summary('clv_orders', 'customer', 'amount', 'amount', '2026-11-01');
SELECT * FROM loyalty.clv_summary('clv_orders', 'nobody', 'ordered_at', 'amount', '2026-11-01');
SELECT * FROM loyalty.clv_summary('clv_orders', 'customer', 'ordered_at', 'amount', NULL);

-- 4. Data that cannot be fitted: reason-coded errors, nothing stored.
-- each error as its SQLSTATE, message, DETAIL and HINT (the same on every
-- PostgreSQL version: psql's verbose mode would print source locations)
CREATE FUNCTION pg_temp.fit_error(statement text,
	OUT code text, OUT message text, OUT detail text, OUT hint text)
LANGUAGE plpgsql AS $f$
BEGIN
	EXECUTE statement;
	message := 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
		detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
END
$f$;
\x on
-- no customer at all
SELECT * FROM pg_temp.fit_error($$SELECT loyalty.clv_fit('none', 'clv_orders', 'customer', 'ordered_at', 'amount', '2020-01-01')$$);
-- a single customer
SELECT * FROM pg_temp.fit_error($$SELECT loyalty.clv_fit('single', 'clv_orders', 'customer', 'ordered_at', 'amount', '2026-06-01 12:00+00')$$);
-- all customers identical
CREATE TABLE clv_same (c text, t timestamptz, amount numeric);
INSERT INTO clv_same SELECT 'c' || i, '2026-01-01 10:00+00', 10 FROM generate_series(1, 50) i;
INSERT INTO clv_same SELECT 'c' || i, '2026-02-01 10:00+00', 12 FROM generate_series(1, 50) i;
SELECT * FROM pg_temp.fit_error($$SELECT loyalty.clv_fit('same', 'clv_same', 'c', 't', 'amount', '2026-03-01')$$);
-- nobody came back
CREATE TABLE clv_once (c text, t timestamptz, amount numeric);
INSERT INTO clv_once SELECT 'c' || i, '2026-01-01 10:00+00'::timestamptz + i * interval '1 day', 10 FROM generate_series(1, 50) i;
SELECT * FROM pg_temp.fit_error($$SELECT loyalty.clv_fit('once', 'clv_once', 'c', 't', 'amount', '2026-03-01')$$);
-- repeat buyers, but no positive spend to fit Gamma-Gamma
INSERT INTO clv_once SELECT 'c' || i, '2026-02-20 10:00+00'::timestamptz + i * interval '1 hour', 0 FROM generate_series(1, 10) i;
SELECT * FROM pg_temp.fit_error($$SELECT loyalty.clv_fit('nospend', 'clv_once', 'c', 't', 'amount', '2026-03-01')$$);
\x off
\set VERBOSITY default
SELECT count(*) AS models_stored FROM loyalty.clv_model WHERE model_name IN ('none', 'single', 'same', 'once', 'nospend');
-- statistics not made by clv_stats, and invalid summaries
SELECT * FROM loyalty.clv_fit_stats('\x00'::bytea);
SELECT * FROM loyalty.clv_fit_stats((SELECT stats FROM cdnow_stats), penalizer => -1);
SELECT loyalty.clv_stats(1, 5, 4, 10) FROM (VALUES (1)) v;
SELECT loyalty.clv_stats(0, 1, 4, 10) FROM (VALUES (1)) v;
SELECT loyalty.clv_stats(-1, 0, 4, 10) FROM (VALUES (1)) v;
SELECT loyalty.clv_stats(1, 'NaN', 4, 10) FROM (VALUES (1)) v;
SELECT customers FROM loyalty.clv_stats_info((SELECT loyalty.clv_stats(NULL, 0, 4, 10) FROM (VALUES (1)) v));
SELECT loyalty.clv_p_alive('paper', 1, 5, 4);
SELECT loyalty.clv_p_alive('nope', 1, 1, 4);
SELECT loyalty.clv_p_alive('paper', NULL, 1, 4) IS NULL AS null_in_null_out;
SELECT loyalty.clv_expected_purchases('paper', 1, 1, 4, -1);
SELECT loyalty.clv_value('paper', 1, 1, 4, 10, months => -1);
-- the table itself refuses NaN and infinite parameters
\set VERBOSITY terse
UPDATE loyalty.clv_model SET r = 'NaN' WHERE model_name = 'paper';
UPDATE loyalty.clv_model SET v = 'Infinity' WHERE model_name = 'paper';
\set VERBOSITY default

-- 5. A fit from an orders table, stored and scored; refitting replaces.
-- Spend hardly varies between these customers: Gamma-Gamma's q and v run
-- off to infinity, the fit is refused (nothing stored); a penalizer fits.
CREATE TABLE clv_shop (customer bigint, ordered_at timestamptz, amount numeric);
INSERT INTO clv_shop
SELECT c, '2025-01-01 12:00+00'::timestamptz + (c % 97) * interval '1 day'
		  + k * ((c % 13) + 3) * interval '1 day',
	   round((20 + (c * 7 + k * 13) % 80)::numeric, 2)
FROM generate_series(1, 400) c, generate_series(0, 30) k
WHERE k <= (c * 31) % 23 AND k * ((c % 13) + 3) < 300 + (c % 200);
SELECT model_name, customers, repeat_customers, bgnbd_status, gamma_gamma_status,
	   time_unit, purchase_unit, first_period, last_period,
	   r > 0 AND alpha > 0 AND a > 0 AND b > 0 AND p > 0 AND q > 0 AND v > 0 AS positive
FROM loyalty.clv_fit('shop', 'clv_shop', 'customer', 'ordered_at', 'amount', '2026-06-01');
SELECT fitted_at = now() AS refitted, customers, penalizer
FROM loyalty.clv_fit('shop', 'clv_shop', 'customer', 'ordered_at', 'amount', '2026-06-01', penalizer => 0.01);
SELECT count(*) AS shop_models FROM loyalty.clv_model WHERE model_name = 'shop';
SELECT source FROM loyalty.clv_model WHERE model_name = 'shop';
-- every score is finite and in range
SELECT count(*) AS customers,
	   count(*) FILTER (WHERE p NOT BETWEEN 0 AND 1 OR e < 0 OR e = 'Infinity' OR v < 0) AS out_of_range
FROM (SELECT loyalty.clv_p_alive('shop', frequency, recency, age) AS p,
			 loyalty.clv_expected_purchases('shop', frequency, recency, age, 365) AS e,
			 loyalty.clv_value('shop', frequency, recency, age, monetary_value) AS v
	  FROM loyalty.clv_summary('clv_shop', 'customer', 'ordered_at', 'amount', '2026-06-01')) s;

-- 6. Parallel aggregation: forced parallel plans give the same statistics.
CREATE TABLE clv_many AS
SELECT i AS id, (i % 17)::bigint AS x,
	   CASE WHEN i % 17 = 0 THEN 0 ELSE (i % 29)::float8 END AS tx,
	   (29 + i % 11)::float8 AS age, (10 + i % 37)::float8 AS m
FROM generate_series(1, 60000) i;
ANALYZE clv_many;
CREATE TABLE clv_many_serial AS SELECT loyalty.clv_stats(x, tx, age, m) AS s FROM clv_many;
CREATE FUNCTION pg_temp.plan_mentions(q text, what text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	line text;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
		IF position(what IN line) > 0 THEN
			RETURN true;
		END IF;
	END LOOP;
	RETURN false;
END;
$$;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
SELECT pg_temp.plan_mentions('SELECT loyalty.clv_stats(x, tx, age, m) FROM clv_many', 'Partial Aggregate') AS partial_aggregate,
	   pg_temp.plan_mentions('SELECT loyalty.clv_stats(x, tx, age, m) FROM clv_many', 'Gather') AS gather;
SELECT loyalty.clv_stats(x, tx, age, m) = (SELECT s FROM clv_many_serial) AS same_statistics
FROM clv_many;
SELECT * FROM loyalty.clv_stats_info((SELECT loyalty.clv_stats(x, tx, age, m) FROM clv_many));
-- grouped, and with the debug mode forcing a Gather everywhere
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
					   THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'on', false) IS NOT NULL AS forced;
SELECT count(*) AS groups_differing FROM (
	SELECT id % 3 AS g, loyalty.clv_stats(x, tx, age, m) AS s FROM clv_many GROUP BY 1) p
JOIN (SELECT id % 3 AS g, loyalty.clv_stats(x, tx, age, m) AS s
	  FROM (SELECT * FROM clv_many OFFSET 0) q GROUP BY 1) q USING (g)
WHERE p.s IS DISTINCT FROM q.s;
SELECT round(r::numeric, 3) AS r, bgnbd_status FROM loyalty.clv_fit_stats((SELECT loyalty.clv_stats(x, t_x, "T", zbar::float8) FROM cdnow));
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
					   THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'off', false) IS NOT NULL AS unforced;
-- the state holds distinct entries only: 60,000 rows, about 5,700 entries
SELECT octet_length(s) = 32 + 32 * i.distinct_triples + 24 * i.distinct_spend_pairs AS compact,
	   i.distinct_triples < 6000 AS few_triples
FROM clv_many_serial, loyalty.clv_stats_info(s) i;

-- 7. Live summaries from the tracked statistics equal the batch ones, after
-- inserts, updates and deletes (first orders included) and a rebuild.
SELECT tracked_rows > 0 AS tracked FROM loyalty.track_orders('clv_shop', 'customer', 'ordered_at', 'amount');
CREATE FUNCTION pg_temp.live_vs_batch() RETURNS TABLE (customers bigint, differ bigint)
LANGUAGE sql AS $$
	SELECT count(*), count(*) FILTER (WHERE (l.frequency, l.recency, l.age, l.monetary_value, l.first_period)
		IS DISTINCT FROM (b.frequency, b.recency, b.age, b.monetary_value, b.first_period))
	FROM loyalty.clv_summary('clv_shop', 'customer', 'ordered_at', 'amount', '2027-01-01') b
	FULL JOIN loyalty.clv_summary_live('2027-01-01') l USING (customer_id)
$$;
SELECT * FROM pg_temp.live_vs_batch();
INSERT INTO clv_shop SELECT c, '2026-08-01 10:00+00'::timestamptz + c * interval '1 hour', 33 FROM generate_series(1, 50) c;
INSERT INTO clv_shop VALUES (1001, '2026-08-02 10:00+00', 12), (1001, '2026-08-09 10:00+00', 24);
DELETE FROM clv_shop WHERE (customer, ordered_at) IN (SELECT customer, min(ordered_at) FROM clv_shop WHERE customer BETWEEN 100 AND 140 GROUP BY 1);
UPDATE clv_shop SET amount = amount + 1 WHERE customer BETWEEN 200 AND 220;
SELECT folded_rows > 0 AS folded FROM loyalty.fold_tracking();
SELECT * FROM pg_temp.live_vs_batch();
SELECT customer_id, order_days, first_day, first_day_spend FROM loyalty.customer_stats WHERE customer_id = '1001';
SELECT tracked_rows > 0 AS rebuilt FROM loyalty.rebuild_tracking();
SELECT * FROM pg_temp.live_vs_batch();
-- fitted from the live statistics: the same model as from the orders table
SELECT abs(l.r - b.r) < 1e-9 AND abs(l.alpha - b.alpha) < 1e-6 AND abs(l.p - b.p) < 1e-9 AS same_fit, l.source
FROM loyalty.clv_fit_live('live', '2027-01-01', penalizer => 0.01) l,
	 loyalty.clv_fit('batch', 'clv_shop', 'customer', 'ordered_at', 'amount', '2027-01-01', penalizer => 0.01) b;
-- the audience: valuable (top 20% of spend) but slipping away (P(alive) < 0.5)
SELECT count(*) > 0 AS some, bool_and(p_alive < 0.5) AS all_slipping,
	   bool_and(spend_total >= (SELECT percentile_disc(0.8) WITHIN GROUP (ORDER BY spend_total)
								FROM loyalty.clv_summary_live('2027-01-01') WHERE frequency > 0)) AS all_valuable
FROM loyalty.clv_slipping_away('live', as_of => '2027-01-01');
SELECT count(*) AS none_at_zero FROM loyalty.clv_slipping_away('live', max_p_alive => 0, as_of => '2027-01-01');
SELECT loyalty.clv_slipping_away('nope');
SELECT loyalty.clv_slipping_away('live', top_share => 0);
-- the analyst view scores every tracked customer with the latest day model
SELECT count(*) = (SELECT count(*) FROM loyalty.customer_stats WHERE order_days > 0) AS every_customer,
	   bool_and(p_alive BETWEEN 0 AND 1) AS p_in_range, min(model_name) AS model
FROM loyalty.clv_customers;
SELECT loyalty.untrack_orders('clv_shop');
