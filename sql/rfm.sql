--
-- rfm: loyalty.rfm_segmentation() and its scoring
--
SET TimeZone = 'UTC';

-- a small shop; the answers for its completed orders are worked out by
-- hand (as of 2026-11-01, window 12 months, 9 customers with a row up to
-- as_of, scores 1 + floor(5 L / 9) with L the number of customers strictly
-- worse):
--   recency days: c7 none, c5 1035, c4 335, c10 184, c3 92, c1 = c2 = c9 = 7,
--     c6 1 -> L 0,1,2,3,4,5,5,5,8 -> R 1,1,2,2,3,3,3,3,5
--   frequency: c5 = c7 = 0; c3 = c4 = c6 = c9 = 1; c2 2; c1 3; c10 4
--     -> L 0,0; 2,2,2,2; 6; 7; 8 -> F 1,1; 2,2,2,2; 4; 4; 5
--   monetary: c7 -30; c5 = c6 = c9 = 0; c4 20; c10 160; c1 = c2 = 175; c3 500
--     -> L 0; 1,1,1; 4; 5; 6,6; 8 -> M 1; 1,1,1; 3; 3; 4,4; 5
--   so c1 344, c2 344, c3 325, c4 223, c5 111, c6 521, c7 111, c9 321, c10 253
CREATE TABLE rfm_orders (
	order_id	serial PRIMARY KEY,
	cust		bigint,
	t			timestamptz,
	amount		numeric(10,2),
	status		text NOT NULL DEFAULT 'completed'
);
INSERT INTO rfm_orders (cust, t, amount) VALUES
	(1, '2026-10-25', 100), (1, '2026-09-01', 50), (1, '2026-06-01', 25),
	(2, '2026-10-25', 100), (2, '2026-01-15', 75),
	(3, '2026-08-01', 500),
	(4, '2025-12-01', 20), (4, '2025-06-01', 300),
	(5, '2024-01-01', 1000),
	(6, '2026-10-31', 10), (6, '2026-10-30', -10),		-- a refund
	(7, '2026-10-01', -30),								-- only a refund
	(8, '2027-01-01', 99),								-- only in the future
	(9, NULL, 5), (9, '2026-10-25', NULL),				-- no time; no amount
	(10, '2026-02-01', 40), (10, '2026-03-01', 40), (10, '2026-04-01', 40), (10, '2026-05-01', 40),
	(NULL, '2026-10-01', 1);							-- no customer
INSERT INTO rfm_orders (cust, t, amount, status) VALUES
	(3, '2026-10-31', 900, 'cancelled');

-- a view as input: completed orders only
CREATE VIEW rfm_completed AS
SELECT cust, t, amount FROM rfm_orders WHERE status = 'completed';
SELECT * FROM loyalty.rfm_segmentation('rfm_completed', 'cust', 't', 'amount', '2026-11-01')
ORDER BY customer_id::int;

-- the whole table: customer 3's cancelled order now counts
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01')
ORDER BY customer_id::int;

-- segments come from the segment map
SELECT count(*) AS segment_mismatches
FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01')
WHERE segment IS DISTINCT FROM loyalty.segment_of(score);

-- an independent reference in plain SQL: statistics by GROUP BY, scores by
-- 1 + floor(bins * (rank() - 1) / count(*)) on each key
CREATE FUNCTION pg_temp.rfm_reference(rel regclass, as_of timestamptz, bins int,
									  win interval DEFAULT '12 months',
									  average boolean DEFAULT false)
RETURNS TABLE (customer_id text, last_order timestamptz, recency_days int,
			   frequency bigint, monetary numeric, r int, f int, m int)
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY EXECUTE format($q$
		WITH s AS (
			SELECT cust::text AS customer_id,
				   max(t) FILTER (WHERE amount >= 0 OR amount IS NULL) AS last_order,
				   count(*) FILTER (WHERE (amount >= 0 OR amount IS NULL) AND t >= $1 - $3) AS frequency,
				   coalesce(sum(amount) FILTER (WHERE t >= $1 - $3), 0) AS spend
			FROM %s
			WHERE cust IS NOT NULL AND t <= $1 AND isfinite(t)
			GROUP BY cust),
		k AS (
			SELECT s.customer_id, s.last_order, s.frequency,
				   CASE WHEN s.last_order IS NULL THEN -1
						ELSE floor(extract(epoch FROM $1 - s.last_order) / 86400)::int END AS recency_days,
				   CASE WHEN NOT $4 THEN s.spend
						WHEN s.frequency = 0 THEN 0
						-- the quotient with the amounts' scale, or more digits when needed
						ELSE round(trim_scale(s.spend / s.frequency),
								   greatest(scale(trim_scale(s.spend / s.frequency)), scale(s.spend)))
				   END AS monetary
			FROM s)
		-- a customer without an order in the window scores 111 (issue 13, item 1)
		SELECT customer_id, last_order, recency_days, frequency, monetary,
			   CASE WHEN frequency = 0 THEN 1 ELSE qr END,
			   CASE WHEN frequency = 0 THEN 1 ELSE qf END,
			   CASE WHEN frequency = 0 THEN 1 ELSE qm END
		FROM (SELECT customer_id, last_order, recency_days, frequency, monetary,
			   (1 + ($2 * (rank() OVER (ORDER BY CASE WHEN recency_days < 0 THEN '-infinity'::float8
													  ELSE -recency_days END) - 1))
					/ count(*) OVER ())::int AS qr,
			   (1 + ($2 * (rank() OVER (ORDER BY frequency) - 1)) / count(*) OVER ())::int AS qf,
			   (1 + ($2 * (rank() OVER (ORDER BY monetary::float8) - 1)) / count(*) OVER ())::int AS qm
		FROM k) q $q$, rel)
	USING as_of, bins, win, average;
END;
$$;

-- rows of rfm_segmentation and of the reference that differ (both ways)
CREATE FUNCTION pg_temp.rfm_differences(rel regclass, as_of timestamptz, bins int,
										win interval DEFAULT '12 months',
										average boolean DEFAULT false)
RETURNS bigint
LANGUAGE sql AS $$
	WITH mine AS (
		SELECT customer_id, last_order, recency_days, frequency, monetary::text AS monetary,
			   substr(score::text, 1, 1)::int AS r, substr(score::text, 2, 1)::int AS f,
			   substr(score::text, 3, 1)::int AS m
		FROM loyalty.rfm_segmentation(rel, 'cust', 't', 'amount', as_of, bins,
									  window_length => win,
									  monetary_mode => CASE WHEN average THEN 'average' ELSE 'total' END)),
	ref AS (
		SELECT customer_id, last_order, recency_days, frequency, monetary::text, r, f, m
		FROM pg_temp.rfm_reference(rel, as_of, bins, win, average))
	SELECT count(*) FROM ((SELECT * FROM mine EXCEPT ALL SELECT * FROM ref)
						  UNION ALL
						  (SELECT * FROM ref EXCEPT ALL SELECT * FROM mine)) d
$$;

SELECT pg_temp.rfm_differences('rfm_orders', '2026-11-01', 5) AS differences,
	   pg_temp.rfm_differences('rfm_completed', '2026-11-01', 5) AS differences_completed;
SELECT * FROM pg_temp.rfm_reference('rfm_completed', '2026-11-01', 5) ORDER BY customer_id::int;

-- random data with many ties (amounts in steps of 5, a few days apart, a few
-- orders each, refunds): same as the reference for every number of bins,
-- every window and both monetary modes
CREATE FUNCTION pg_temp.rnd(key text) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
	SELECT ('x' || substr(md5(key), 1, 8))::bit(32)::bigint / 4294967296.0
$$;
CREATE TABLE rfm_rand AS
SELECT (pg_temp.rnd('c' || g) * 2999)::int AS cust,
	   timestamptz '2026-11-01' - floor(pg_temp.rnd('d' || g) * 900) * interval '1 day'
		 + CASE WHEN pg_temp.rnd('h' || g) < 0.3 THEN interval '5 hours' ELSE interval '0' END AS t,
	   (round(pg_temp.rnd('a' || g) * 20) * 5
		- CASE WHEN pg_temp.rnd('r' || g) < 0.05 THEN 120 ELSE 0 END)::numeric(8,2) AS amount
FROM generate_series(1, 15000) g;
SELECT bins, pg_temp.rfm_differences('rfm_rand', '2026-11-01', bins) AS differences
FROM generate_series(2, 9) bins;
SELECT pg_temp.rfm_differences('rfm_rand', '2026-11-01', 5, '90 days') AS window_90_days,
	   pg_temp.rfm_differences('rfm_rand', '2026-06-15 12:00', 4, '2 years') AS earlier_as_of,
	   pg_temp.rfm_differences('rfm_rand', '2026-11-01', 5, average => true) AS average_basket,
	   pg_temp.rfm_differences('rfm_rand', '2026-11-01', 7, '6 months', true) AS average_7_bins;

-- recency spread over more days than 4 x customers + 1024 is scored by
-- selecting cut keys, not by counting the customers of each day: same as the reference
CREATE TABLE rfm_wide AS
SELECT g % 7 AS cust, timestamptz '2026-11-01' - (g * 397) * interval '1 day' AS t,
	   (10 * g)::numeric(8,2) AS amount
FROM generate_series(0, 20) g;
SELECT pg_temp.rfm_differences('rfm_wide', '2026-11-01', bins, '10 years') AS wide_recency_range
FROM generate_series(2, 9, 3) bins;

-- ties: customers with equal keys always share a score; ntile() splits them
WITH mine AS (
	SELECT frequency, monetary, score
	FROM loyalty.rfm_segmentation('rfm_rand', 'cust', 't', 'amount', '2026-11-01')),
nt AS (
	SELECT frequency, ntile(5) OVER (ORDER BY frequency) AS f_ntile FROM mine)
SELECT (SELECT count(*) FROM (SELECT frequency FROM mine GROUP BY frequency
							  HAVING count(DISTINCT substr(score::text, 2, 1)) > 1) x) AS rfm_split_frequency_ties,
	   (SELECT count(*) FROM (SELECT monetary FROM mine GROUP BY monetary
							  HAVING count(DISTINCT substr(score::text, 3, 1)) > 1) x) AS rfm_split_monetary_ties,
	   (SELECT count(*) FROM (SELECT frequency FROM nt GROUP BY frequency
							  HAVING count(DISTINCT f_ntile) > 1) x) > 0 AS ntile_splits_ties;

-- the score counts: a big tie takes a whole bin or more, so bins are unequal
SELECT substr(score::text, 2, 1) AS f, min(frequency), max(frequency), count(*)
FROM loyalty.rfm_segmentation('rfm_rand', 'cust', 't', 'amount', '2026-11-01')
GROUP BY 1 ORDER BY 1;

-- the hand-made shop with other numbers of bins
SELECT customer_id, score AS bins_2,
	   (SELECT score FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', 9) s9
		WHERE s9.customer_id = s2.customer_id) AS bins_9
FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', 2) s2
ORDER BY customer_id::int;

-- average basket: monetary = spend in the window / orders in the window
SELECT customer_id, frequency, monetary, score
FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01',
							  monetary_mode => 'average')
ORDER BY customer_id::int;

-- thresholds: recency <= 30 / 90 / 180 / 365 days, frequency >= 2 / 3 / 5 /
-- 10 orders, monetary >= 50 / 100 / 500 / 1000
SELECT customer_id, recency_days, frequency, monetary, score
FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01',
							  recency_thresholds => '{30,90,180,365}',
							  frequency_thresholds => '{2,3,5,10}',
							  monetary_thresholds => '{50,100,500,1000}')
ORDER BY customer_id::int;
SELECT count(*) AS threshold_mismatches
FROM loyalty.rfm_segmentation('rfm_rand', 'cust', 't', 'amount', '2026-11-01',
							  recency_thresholds => '{30,90,180,365}',
							  frequency_thresholds => '{2,3,5,10}',
							  monetary_thresholds => '{50,100,500,1000}')
WHERE score::text <> concat(
		CASE WHEN recency_days < 0 THEN 1
			 ELSE 1 + (recency_days <= 30)::int + (recency_days <= 90)::int
					+ (recency_days <= 180)::int + (recency_days <= 365)::int END,
		1 + (frequency >= 2)::int + (frequency >= 3)::int + (frequency >= 5)::int + (frequency >= 10)::int,
		1 + (monetary >= 50)::int + (monetary >= 100)::int + (monetary >= 500)::int + (monetary >= 1000)::int);
-- thresholds for one dimension only: the others stay quantiles
SELECT count(*) AS mixed_mismatches
FROM loyalty.rfm_segmentation('rfm_rand', 'cust', 't', 'amount', '2026-11-01', 3,
							  recency_thresholds => '{60,365}') s
JOIN pg_temp.rfm_reference('rfm_rand', '2026-11-01', 3) r USING (customer_id)
WHERE score::text <> concat(CASE WHEN s.recency_days < 0 THEN 1
								 ELSE 1 + (s.recency_days <= 60)::int + (s.recency_days <= 365)::int END,
							r.f, r.m);

-- any column names and types: keys int, text, uuid, numeric (hashed through
-- its opclass) and bytea; times date and timestamp; amounts integer,
-- bigint, double precision and a domain over numeric; a partitioned table,
-- a materialized view and a temporary table
CREATE DOMAIN rfm_money AS numeric(12,2) CHECK (VALUE > -1e6);
CREATE TABLE "Odd Orders" ("Customer Id" text, "When" date, "Amount €" rfm_money);
INSERT INTO "Odd Orders" SELECT 'c-' || cust, t::date, amount FROM rfm_orders;
SELECT customer_id, recency_days, frequency, monetary, score
FROM loyalty.rfm_segmentation('"Odd Orders"', 'Customer Id', 'When', 'Amount €', '2026-11-01')
ORDER BY customer_id;

CREATE TABLE rfm_kinds AS
SELECT cust, cust::int AS k_int, cust::text AS k_text, cust::numeric AS k_numeric,
	   ('00000000-0000-0000-0000-' || lpad(cust::text, 12, '0'))::uuid AS k_uuid,
	   convert_to(cust::text, 'UTF8') AS k_bytea,
	   t, t::timestamp AS t_timestamp, amount,
	   (amount * 100)::int AS cents_int, (amount * 100)::bigint AS cents_bigint,
	   amount::float8 AS amount_float
FROM rfm_rand;
CREATE FUNCTION pg_temp.rfm_scores(rel regclass, k name, tcol name, a name)
RETURNS TABLE (scores text, total numeric)
LANGUAGE sql AS $$
	SELECT string_agg(score::text, '' ORDER BY recency_days, frequency, monetary, score),
		   sum(monetary)
	FROM loyalty.rfm_segmentation(rel, k, tcol, a, '2026-11-01')
$$;
SELECT k, (pg_temp.rfm_scores('rfm_kinds', k, 't', 'amount')).scores
		  = (pg_temp.rfm_scores('rfm_kinds', 'cust', 't', 'amount')).scores AS same_scores
FROM unnest(ARRAY['k_int', 'k_text', 'k_numeric', 'k_uuid', 'k_bytea']::name[]) k;
SELECT (pg_temp.rfm_scores('rfm_kinds', 'cust', 't_timestamp', 'amount')).scores
	   = (pg_temp.rfm_scores('rfm_kinds', 'cust', 't', 'amount')).scores AS timestamp_same;
SELECT a, (pg_temp.rfm_scores('rfm_kinds', 'cust', 't', a)).scores
		  = (pg_temp.rfm_scores('rfm_kinds', 'cust', 't', 'amount')).scores AS same_scores,
	   (pg_temp.rfm_scores('rfm_kinds', 'cust', 't', a)).total
FROM unnest(ARRAY['amount', 'cents_int', 'cents_bigint', 'amount_float']::name[]) a;
SELECT customer_id FROM loyalty.rfm_segmentation('rfm_kinds', 'k_uuid', 't', 'amount', '2026-11-01')
ORDER BY 1 LIMIT 2;
SELECT customer_id FROM loyalty.rfm_segmentation('rfm_kinds', 'k_bytea', 't', 'amount', '2026-11-01')
ORDER BY 1 LIMIT 2;

CREATE TABLE rfm_parted (cust bigint, t timestamptz, amount numeric) PARTITION BY RANGE (t);
CREATE TABLE rfm_parted_old PARTITION OF rfm_parted FOR VALUES FROM (MINVALUE) TO ('2026-01-01');
CREATE TABLE rfm_parted_new PARTITION OF rfm_parted FOR VALUES FROM ('2026-01-01') TO (MAXVALUE);
INSERT INTO rfm_parted SELECT cust, t, amount FROM rfm_rand;
CREATE MATERIALIZED VIEW rfm_mat AS SELECT cust, t, amount FROM rfm_rand;
CREATE TEMP TABLE rfm_temp AS SELECT cust, t, amount FROM rfm_rand;
SELECT pg_temp.rfm_differences('rfm_parted', '2026-11-01', 5) AS partitioned,
	   pg_temp.rfm_differences('rfm_mat', '2026-11-01', 5) AS materialized_view,
	   pg_temp.rfm_differences('rfm_temp', '2026-11-01', 5) AS temporary_table;

-- money stays exact whatever the amounts: mixed scales, sums beyond 64 and
-- 128 bits, amounts of 42 digits; the same as sum(numeric), to the digit
CREATE TABLE rfm_big (cust int, t timestamptz, amount numeric);
INSERT INTO rfm_big
SELECT g % 7, '2026-10-01',
	   CASE g % 5 WHEN 0 THEN 9e18 WHEN 1 THEN 0.001 WHEN 2 THEN 4e37 WHEN 3 THEN -1.5
			ELSE 123456789012345678901234567890123456789012 END
FROM generate_series(1, 200) g;
INSERT INTO rfm_big SELECT 10, '2026-10-01', 9e18 FROM generate_series(1, 5);
INSERT INTO rfm_big SELECT 11, '2026-10-01', x FROM unnest('{1, 0.5, 0.25, 0.125, -3}'::numeric[]) x;
SELECT r.customer_id, r.monetary, r.monetary::text = s.total::text AS same_as_sum
FROM loyalty.rfm_segmentation('rfm_big', 'cust', 't', 'amount', '2026-11-01') r
JOIN (SELECT cust::text AS customer_id, sum(amount) AS total FROM rfm_big GROUP BY 1) s
	USING (customer_id)
ORDER BY r.customer_id::int;

-- no customer at all: no rows
SELECT count(*) FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2000-01-01');

-- the default as_of is now()
SELECT (SELECT array_agg(score ORDER BY customer_id)
		FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount'))
	   = (SELECT array_agg(score ORDER BY customer_id)
		  FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', now())) AS default_as_of_is_now;

-- privileges: the caller's own (SECURITY INVOKER); every level may call it
CREATE ROLE rfm_t_analyst;
SELECT loyalty.grant_access('rfm_t_analyst', 'analyst');
SET ROLE rfm_t_analyst;
\set VERBOSITY terse
SELECT count(*) FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT SELECT (cust, t, amount) ON rfm_orders TO rfm_t_analyst;
SET ROLE rfm_t_analyst;
SELECT count(*) FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01');
RESET ROLE;

-- bad input: each a clear error naming the problem
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'customer', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 'ordered_at', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'total', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 'xmin', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 'status', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'status', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE rfm_json (cust json, t timestamptz, amount numeric);
SELECT * FROM loyalty.rfm_segmentation('rfm_json', 'cust', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', 10);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', window_length => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', monetary_mode => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', window_length => '0');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', monetary_mode => 'median');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', recency_thresholds => '{30,90,180}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', frequency_thresholds => '{1,2,2,3}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', monetary_thresholds => '{1,NULL,3,4}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', monetary_thresholds => '{1,NaN,3,4}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', recency_thresholds => '{-30,90,180,365}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', recency_thresholds => '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount', '2026-11-01', recency_thresholds => '{{30,90},{180,365}}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders_pkey', 'cust', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation(1::oid::regclass, 'cust', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('no_such_table', 'cust', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation(NULL, 'cust', 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', NULL, 't', 'amount', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO rfm_kinds (cust, t, amount_float) VALUES (1, '2026-10-01', 'NaN');
SELECT * FROM loyalty.rfm_segmentation('rfm_kinds', 'cust', 't', 'amount_float', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
-- names are identifiers, never SQL: an injection attempt is just a missing column
SELECT * FROM loyalty.rfm_segmentation('rfm_orders', 'cust', 't', 'amount FROM pg_authid --', '2026-11-01');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

SELECT loyalty.revoke_access('rfm_t_analyst', 'analyst');
REVOKE ALL ON rfm_orders FROM rfm_t_analyst;
DROP ROLE rfm_t_analyst;
DROP VIEW rfm_completed;
DROP MATERIALIZED VIEW rfm_mat;
DROP TABLE rfm_orders, rfm_rand, "Odd Orders", rfm_kinds, rfm_parted, rfm_temp, rfm_json, rfm_big;
DROP DOMAIN rfm_money;
