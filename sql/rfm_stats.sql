--
-- rfm_stats: per-customer RFM statistics aggregates
--
SET TimeZone = 'UTC';

-- a customer's orders, with every kind of row the rules of rfm.h name
CREATE TABLE rfm_t (
	customer	int,
	t			timestamptz,
	amount		numeric
);
INSERT INTO rfm_t VALUES
	(1, '2026-10-31 12:00+00', 10.10),	-- in the window
	(1, '2026-03-01 00:00+00', 5),		-- in the window
	(1, '2025-11-01 00:00+00', 1.5),	-- exactly as_of - 12 months: in
	(1, '2025-10-31 23:59:59.999999+00', 100),	-- just before the window
	(1, '2026-10-15 00:00+00', -3.25),	-- refund: spend only
	(1, '2026-11-01 00:00+00', 2),		-- exactly as_of: counts
	(1, '2026-11-01 00:00:00.000001+00', 1000),	-- after as_of: ignored
	(1, NULL, 7),						-- no time: ignored
	(1, 'infinity', 7),					-- infinite time: ignored
	(1, '-infinity', 7),				-- infinite time: ignored
	(1, '2024-06-01 00:00+00', NULL),	-- null amount: an order of 0
	(2, '2026-12-24 00:00+00', 50),		-- only future orders
	(3, '2026-10-20 00:00+00', -20),	-- only a refund
	(4, '2023-01-01 00:00+00', 40);		-- only old orders

SELECT customer, (loyalty.rfm_stats(t, amount, '2026-11-01')).*
FROM rfm_t GROUP BY customer ORDER BY customer;

-- the same numbers from plain SQL, written from the rules independently
SELECT customer,
	   max(t) FILTER (WHERE amount >= 0 OR amount IS NULL) AS last_order,
	   min(t) FILTER (WHERE amount >= 0 OR amount IS NULL) AS first_order,
	   count(*) FILTER (WHERE (amount >= 0 OR amount IS NULL)
						  AND t >= timestamptz '2026-11-01' - interval '12 months') AS frequency,
	   coalesce(sum(amount) FILTER (WHERE t >= timestamptz '2026-11-01' - interval '12 months'), 0) AS monetary,
	   count(*) FILTER (WHERE amount >= 0 OR amount IS NULL) AS orders_total,
	   coalesce(sum(amount), 0) AS spend_total
FROM rfm_t
WHERE t <= '2026-11-01' AND isfinite(t)
GROUP BY customer ORDER BY customer;

-- window_length: 30 days; recency in whole days (floor)
SELECT customer, (loyalty.rfm_stats(t, amount, '2026-11-01 11:59', '30 days')).*
FROM rfm_t WHERE customer = 1 GROUP BY customer;

-- no row at all: null; only ignored rows: an empty statistic
SELECT loyalty.rfm_stats(t, amount, '2026-11-01') FROM rfm_t WHERE false;
SELECT loyalty.rfm_stats(t, amount, '2026-11-01') FROM rfm_t WHERE customer = 2;

-- every input type: date or timestamptz times (timestamp converts), numeric,
-- bigint, integer or double precision amounts
SELECT (loyalty.rfm_stats(t::date, amount, '2026-11-01')).frequency AS date_numeric,
	   (loyalty.rfm_stats(t::timestamp, amount, '2026-11-01')).frequency AS timestamp_numeric,
	   (loyalty.rfm_stats(t, round(amount)::bigint, '2026-11-01')).monetary AS bigint_sum,
	   (loyalty.rfm_stats(t::date, round(amount)::int, '2026-11-01')).monetary AS int_sum,
	   (loyalty.rfm_stats(t, amount::float8, '2026-11-01')).monetary AS float8_sum,
	   (loyalty.rfm_stats(t::date, amount::float8, '2026-11-01', '1 year')).spend_total AS float8_total
FROM rfm_t WHERE customer = 1 AND isfinite(t);
SELECT pg_typeof(loyalty.rfm_stats(t::date, amount, now())) FROM rfm_t LIMIT 1;

-- a date is midnight in the program time zone (loyalty.settings; issue 13,
-- item 6: no longer the session's TimeZone, which only shows the results)
INSERT INTO loyalty.settings (timezone) VALUES ('Pacific/Auckland');
SET TimeZone = 'Pacific/Auckland';
SELECT (loyalty.rfm_stats(d, 1::bigint, '2026-11-01 00:00+13')).*
FROM (VALUES (date '2026-10-31'), (date '2026-11-01')) v(d);
SET TimeZone = 'UTC';
SELECT (loyalty.rfm_stats(d, 1::bigint, '2026-11-01 00:00+13')).*
FROM (VALUES (date '2026-10-31'), (date '2026-11-01')) v(d);
DELETE FROM loyalty.settings;

-- money is exact: 0.1 added ten times is 1.0, as sum(numeric) says; the
-- display scale is the largest of the amounts'
SELECT (loyalty.rfm_stats(now(), 0.1, now())).monetary AS ten_tenths,
	   sum(0.1) AS sql_sum
FROM generate_series(1, 10);
SELECT (loyalty.rfm_stats(now(), x, now())).monetary, sum(x)
FROM (VALUES (1.5), (2.25), (3), (-0.125)) v(x);
-- while double precision amounts are summed as doubles, like sum(float8),
-- and the sum is then converted to numeric (15 significant digits)
SELECT (loyalty.rfm_stats(now(), x, now())).monetary AS float_sum,
	   sum(x) AS sql_float_sum,
	   (loyalty.rfm_stats(now(), x, now())).monetary = sum(x)::numeric AS same,
	   (loyalty.rfm_stats(now(), x::numeric, now())).monetary AS numeric_sum
FROM (SELECT 0.1::float8 AS x FROM generate_series(1, 3)
	  UNION ALL SELECT 1e16) s;

-- beyond 128-bit integers the sum continues in numeric, still exact
SELECT (loyalty.rfm_stats(now(), x, now())).monetary = sum(x) AS equal,
	   (loyalty.rfm_stats(now(), x, now())).monetary::text = sum(x)::text AS same_text,
	   sum(x)
FROM (SELECT 9e36::numeric + g AS x FROM generate_series(1, 40) g) s;
SELECT (loyalty.rfm_stats(now(), x, now())).monetary::text = sum(x)::text AS same_text
FROM (VALUES (1e-40), (123456789012345678901234567890.123456789), (-5), (0.000)) v(x);
SELECT (loyalty.rfm_stats(now(), x, now())).monetary AS big_bigints
FROM (VALUES (9223372036854775807::bigint), (9223372036854775807), (9223372036854775807)) v(x);

-- one amount comes back unchanged, digit for digit, whatever its size and
-- scale (from 1e-20 to 5e24, 0 to 29 decimals, both signs)
SELECT count(*) AS amounts,
	   count(*) FILTER (WHERE (s).monetary::text <> x::text) AS changed
FROM (SELECT x, loyalty.rfm_stats(now(), x, now()) OVER (PARTITION BY g) AS s
	  FROM (SELECT g, round(((g * 7919) % 100003 - 50000)::numeric
							* power(10::numeric, g % 41 - 20), g % 30) AS x
			FROM generate_series(1, 5000) g) v) q;

-- random amounts with mixed scales and signs: equal to sum() in value and text
CREATE TABLE rfm_money AS
SELECT g % 500 AS customer,
	   timestamptz '2026-01-01' + (g % 97) * interval '1 day' AS t,
	   CASE g % 7
		   WHEN 0 THEN round((random() * 1000 - 300)::numeric, 2)
		   WHEN 1 THEN round((random() * 10)::numeric, 5)
		   WHEN 2 THEN round((random() * 1e12)::numeric, 0)
		   WHEN 3 THEN (random() * 1e20)::numeric(30, 4)
		   WHEN 4 THEN NULL
		   WHEN 5 THEN -round((random() * 100)::numeric, 1)
		   ELSE round((random() * 1e6)::numeric, 3)
	   END AS amount
FROM generate_series(1, 20000) g;
SELECT count(*) AS customers,
	   count(*) FILTER (WHERE (s).spend_total::text <> coalesce(sql_sum, 0)::text) AS text_mismatches,
	   count(*) FILTER (WHERE (s).orders_total <> sql_orders) AS count_mismatches
FROM (SELECT customer, loyalty.rfm_stats(t, amount, '2026-11-01') AS s,
			 sum(amount) AS sql_sum,
			 count(*) FILTER (WHERE amount >= 0 OR amount IS NULL) AS sql_orders
	  FROM rfm_money GROUP BY customer) q;

-- parallel plans (partial aggregation, serialize, combine, deserialize)
-- give the same rows as a serial plan
CREATE FUNCTION pg_temp.plan_mentions(query text, word text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
	line text;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || query LOOP
		IF line LIKE '%' || word || '%' THEN
			RETURN true;
		END IF;
	END LOOP;
	RETURN false;
END;
$$;
CREATE TABLE rfm_serial AS
SELECT customer, loyalty.rfm_stats(t, amount, '2026-11-01', '6 months') AS s FROM rfm_money GROUP BY customer;
CREATE TABLE rfm_serial_f AS
SELECT customer, loyalty.rfm_stats(t::date, amount::float8, '2026-11-01') AS s FROM rfm_money GROUP BY customer;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
SELECT pg_temp.plan_mentions('SELECT customer, loyalty.rfm_stats(t, amount, ''2026-11-01'', ''6 months'') FROM rfm_money GROUP BY customer', 'Partial') AS partial_aggregate,
	   pg_temp.plan_mentions('SELECT customer, loyalty.rfm_stats(t, amount, ''2026-11-01'', ''6 months'') FROM rfm_money GROUP BY customer', 'Gather') AS gather;
SELECT count(*) AS differences FROM (
	(SELECT customer, loyalty.rfm_stats(t, amount, '2026-11-01', '6 months')::text FROM rfm_money GROUP BY customer
	 EXCEPT SELECT customer, s::text FROM rfm_serial)
	UNION ALL
	(SELECT customer, s::text FROM rfm_serial
	 EXCEPT SELECT customer, loyalty.rfm_stats(t, amount, '2026-11-01', '6 months')::text FROM rfm_money GROUP BY customer)) d;
-- (double precision sums may differ in the last digits, as sum(float8) does:
-- floating-point addition depends on the order of the rows)
SELECT count(*) AS differences
FROM (SELECT customer, loyalty.rfm_stats(t::date, amount::float8, '2026-11-01') AS s
	  FROM rfm_money GROUP BY customer) p
JOIN rfm_serial_f f USING (customer)
WHERE ((p.s).last_order, (p.s).first_order, (p.s).frequency, (p.s).orders_total, (p.s).recency_days)
	  IS DISTINCT FROM ((f.s).last_order, (f.s).first_order, (f.s).frequency, (f.s).orders_total, (f.s).recency_days)
   OR abs((p.s).monetary - (f.s).monetary) > 1e-9 * greatest(1, abs((f.s).monetary))
   OR abs((p.s).spend_total - (f.s).spend_total) > 1e-9 * greatest(1, abs((f.s).spend_total));
-- one aggregate over the whole table: every worker's state is combined
SELECT loyalty.rfm_stats(t, amount, '2026-11-01', '6 months')::text
	   = (SELECT loyalty.rfm_stats(t, amount, '2026-11-01', '6 months')::text
		  FROM (SELECT * FROM rfm_money OFFSET 0) q) AS whole_table_same
FROM rfm_money;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;

-- partitionwise partial aggregation combines states deterministically (one
-- partial state per partition, a customer's orders spread over partitions)
CREATE TABLE rfm_part (customer int, t timestamptz, amount numeric) PARTITION BY RANGE (t);
CREATE TABLE rfm_part_1 PARTITION OF rfm_part FOR VALUES FROM ('2026-01-01') TO ('2026-02-15');
CREATE TABLE rfm_part_2 PARTITION OF rfm_part FOR VALUES FROM ('2026-02-15') TO ('2026-04-01');
CREATE TABLE rfm_part_3 PARTITION OF rfm_part FOR VALUES FROM ('2026-04-01') TO (MAXVALUE);
INSERT INTO rfm_part SELECT * FROM rfm_money;
ANALYZE rfm_part;
SET enable_partitionwise_aggregate = on;
SET max_parallel_workers_per_gather = 0;
SELECT pg_temp.plan_mentions('SELECT customer, loyalty.rfm_stats(t, amount, ''2026-11-01'', ''6 months'') FROM rfm_part GROUP BY customer', 'Partial') AS partial_aggregate;
SELECT count(*) AS differences FROM (
	SELECT customer, loyalty.rfm_stats(t, amount, '2026-11-01', '6 months')::text FROM rfm_part GROUP BY customer
	EXCEPT SELECT customer, s::text FROM rfm_serial) d;
RESET enable_partitionwise_aggregate;
RESET max_parallel_workers_per_gather;

-- as a window function: a running statistic
SELECT t::date, (loyalty.rfm_stats(t, amount, '2026-11-01') OVER (ORDER BY t)).frequency
FROM rfm_t WHERE customer = 1 AND t <= '2026-11-01' ORDER BY t;

-- bad input: clear errors
\set VERBOSITY terse
SELECT loyalty.rfm_stats(t, amount, NULL) FROM rfm_t;
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(t, amount, '2026-11-01', NULL) FROM rfm_t;
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(t, amount, '2026-11-01', '-1 day') FROM rfm_t;
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(t, amount, '2026-11-01', '1 month -40 days') FROM rfm_t;
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(t, amount, 'infinity') FROM rfm_t;
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(t, amount, t) FROM rfm_t WHERE customer = 1;
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(now(), 'NaN'::numeric, now());
\echo :LAST_ERROR_SQLSTATE
-- (numeric has an infinity from PostgreSQL 14; on 13 float8's stands in)
SELECT CASE WHEN current_setting('server_version_num')::integer >= 140000
			THEN 'numeric' ELSE 'float8' END AS infinite_type \gset
SELECT loyalty.rfm_stats(now(), CAST('Infinity' AS :infinite_type), now());
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(now(), 'NaN'::float8, now());
\echo :LAST_ERROR_SQLSTATE
SELECT loyalty.rfm_stats(now(), 'x'::text, now());
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default

DROP TABLE rfm_t, rfm_money, rfm_serial, rfm_serial_f, rfm_part;
