--
-- loyalty: the stored form of loyalty.day_buckets (compact scaled integers,
-- numeric fallback) under its unchanged SQL behaviour: text and binary round
-- trips, merge, prune, windows and size
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE SCHEMA dbk;
-- the stored form, read through a binary-coercible cast: byte 0 is the
-- format version (1) plus flags (8: numeric form, 16: display-scale runs),
-- byte 1 the scale of the compact form
CREATE CAST (loyalty.day_buckets AS bytea) WITHOUT FUNCTION;
CREATE FUNCTION dbk.form(v loyalty.day_buckets) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
	SELECT 'v' || (get_byte(v::bytea, 0) & 7) || ' '
		   || CASE WHEN get_byte(v::bytea, 0) & 8 <> 0 THEN 'numeric'
				   ELSE 'compact/' || get_byte(v::bytea, 1) END
		   || CASE WHEN get_byte(v::bytea, 0) & 16 <> 0 THEN '+runs' ELSE '' END
$$;
CREATE TABLE dbk.vals (id int PRIMARY KEY, v loyalty.day_buckets);
RESET client_min_messages;

-- text round trips: 0, 2 and 4 decimals, refunds, display scales growing
-- along the days (a day shows the largest scale seen up to it), extreme
-- dates and counts; then values that need the numeric form: a day's spend
-- beyond int64 at its scale (9e17 with 2 decimals), a scale above 15
INSERT INTO dbk.vals VALUES
	(1, '{2026-01-01:1:40,2026-01-03:3:15,2026-02-01:0:-7}'),
	(2, '{2026-10-31:2:120.50,2026-11-02:1:0.00,2026-11-05:0:-5.00}'),
	(3, '{2026-01-01:1:19.9900,2026-01-02:1:0.0001,2026-03-01:4:-0.5000}'),
	(4, '{2026-01-01:1:5,2026-01-02:2:1.25,2026-01-03:1:3.10,2026-01-09:1:0.125}'),
	(5, '{2026-03-01:0:-12.34}'),
	(6, '{4713-01-01 BC:1:1,2000-01-01:2147483647:0,5874897-12-31:1:-1}'),
	(7, '{2026-01-01:1:9223372036854775807,2026-01-02:1:-9223372036854775808}'),
	(8, '{2026-01-01:1:0.000000000000001}'),
	(10, '{2026-01-01:1:900000000000000000.00}'),
	(11, '{2026-01-01:1:19.99,2026-01-02:1:900000000000000000.00,2026-01-05:2:5.00}'),
	(12, '{2026-01-01:1:9223372036854775808}'),
	(13, '{2026-01-01:1:0.0000000000000001,2026-01-02:1:2.0000000000000000}'),
	(14, '{2026-01-01:1:1,2026-01-02:1:0.0000000000000001}');
SELECT id, dbk.form(v), v::text, v::text::loyalty.day_buckets::text = v::text AS round_trip
FROM dbk.vals ORDER BY id;
SELECT id, e.* FROM dbk.vals, loyalty.day_buckets_entries(v) e WHERE id IN (4, 11, 14) ORDER BY id, day;

-- binary: the wire format is unchanged (int32 count, then per bucket int32
-- day, int32 orders and the day's spend as numeric_send gives it) and COPY
-- BINARY round-trips every form
SELECT loyalty.day_buckets_send('{2026-10-31:2:120.50,2026-11-05:0:-5}') AS send_compact,
	   loyalty.day_buckets_send('{2026-01-01:1:900000000000000000.00}') AS send_numeric;
CREATE TABLE dbk.copied (id int PRIMARY KEY, v loyalty.day_buckets);
CREATE FUNCTION pg_temp.copy_roundtrip() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	f text := '/tmp/loyalty_day_buckets_' || pg_backend_pid() || '.bin';
BEGIN
	EXECUTE format('COPY dbk.vals TO %L (FORMAT binary)', f);
	EXECUTE format('COPY dbk.copied FROM PROGRAM %L (FORMAT binary)',
				   format('cat %s && rm -f %s', f, f));
END;
$$;
SELECT pg_temp.copy_roundtrip();
SELECT a.id, a.v::text = b.v::text AS same_text, a.v::bytea = b.v::bytea AS same_bytes
FROM dbk.vals a JOIN dbk.copied b USING (id) ORDER BY a.id;

-- merge: a delta with a larger scale rescales the stored buckets; same-day
-- spends add up; buckets the delta empties go; NULL is no bucket
SELECT m, dbk.form(m)
FROM (VALUES
	(loyalty._rfm_days_merge('{2026-01-01:1:10,2026-01-05:1:20}', '{2026-01-03:1:0.5}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:10}', '{2026-01-01:1:0.25}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:5,2026-01-03:1:7}', '{2026-01-02:1:1.5}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:19.99}', '{2026-01-01:0:-19.99,2026-01-02:1:4.50}')),
	(loyalty._rfm_days_merge(NULL, '{2026-01-01:1:1.000}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:1.000}', NULL))) AS t(m);
SELECT loyalty._rfm_days_merge('{2026-01-01:0:5.00}', '{2026-01-01:0:-5.00}') IS NULL AS emptied;
-- merges that leave int64: a same-day sum (5e18 + 5e18 at scale 2), a
-- rescale (9e17 to 2 decimals); mixed forms; a display scale above 15 stays
-- (numeric form) even when its spend is refunded; back to compact when the
-- big spend is refunded
SELECT m, dbk.form(m)
FROM (VALUES
	(loyalty._rfm_days_merge('{2026-01-01:1:50000000000000000.00}', '{2026-01-01:1:50000000000000000.00}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:900000000000000000}', '{2026-01-02:1:0.01}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:900000000000000000.00}', '{2026-01-02:1:1.5}')),
	(loyalty._rfm_days_merge('{2026-01-02:1:1.5}', '{2026-01-01:1:900000000000000000.00}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:0.0000000000000001}', '{2026-01-01:0:-0.0000000000000001,2026-01-02:1:3}')),
	(loyalty._rfm_days_merge('{2026-01-01:1:900000000000000000.00,2026-01-02:1:1}',
							 '{2026-01-01:0:-900000000000000000.00}'))) AS t(m);

-- prune: the kept buckets keep their spends and display scales, in both forms
SELECT p, dbk.form(p)
FROM (VALUES
	(loyalty._rfm_days_prune('{2026-01-01:1:5,2026-01-02:1:1.25,2026-01-03:1:3}', '2026-01-02')),
	(loyalty._rfm_days_prune('{2026-01-01:1:1.25,2026-01-02:1:3}', '2026-01-02')),
	(loyalty._rfm_days_prune('{2026-01-01:1:1.25,2026-01-02:1:3}', '2026-01-01')),
	(loyalty._rfm_days_prune('{2026-01-01:1:900000000000000000.00,2026-01-02:1:1}', '2026-01-02')),
	(loyalty._rfm_days_prune('{2026-01-01:1:1,2026-01-02:1:900000000000000000.00,2026-01-03:1:2}', '2026-01-02')),
	(loyalty._rfm_days_prune('{2026-01-01:1:1.25,2026-01-02:1:3}', '2026-01-03'))) AS t(p);

-- windows: customer_rfm sums the buckets of the window's days (12 months up
-- to as_of) from stored values of every form, read in place; its frequency
-- and monetary equal the sums of the entries of those days
BEGIN;
INSERT INTO loyalty.customer_stats (customer_id, row_count, order_count, spend_total,
									first_order, last_order, days)
SELECT 'dbk-' || id, 1, 1, 0, '2000-01-01', '2026-01-01', v FROM dbk.vals;
INSERT INTO loyalty.customer_stats (customer_id, row_count, order_count, spend_total,
									first_order, last_order, days)
VALUES ('dbk-20', 1, 1, 0, '2024-01-01', '2026-10-31',
		'{2024-01-01:1:1000.00,2025-10-31:1:7.5,2025-11-01:2:10.25,2026-10-31:1:900000000000000000.00,2026-11-02:1:3}'),
	   ('dbk-21', 1, 1, 0, '2024-01-01', '2026-10-31',
		'{2024-01-01:1:1000.00,2025-10-31:1:7.5,2025-11-01:2:10.25,2026-10-31:1:-3.333,2026-11-02:1:3}');
SELECT s.customer_id, r.frequency, r.monetary,
	   (r.frequency, r.monetary::text) = (e.orders, e.spend::text) AS matches_entries
FROM loyalty.customer_stats s,
	 loyalty.customer_rfm(s.customer_id, '2026-11-01') r,
	 LATERAL (SELECT coalesce(sum(d.orders), 0) AS orders, coalesce(sum(d.spend), 0) AS spend
			  FROM loyalty.day_buckets_entries(s.days) d
			  WHERE d.day BETWEEN '2025-11-01' AND '2026-11-01') e
WHERE s.customer_id LIKE 'dbk-%'
ORDER BY s.customer_id;
ROLLBACK;

-- size: a typical customer (10 order days a week or so apart, 1-3 orders,
-- retail amounts) takes a few bytes a bucket, stored with a 1-byte header
INSERT INTO dbk.vals
SELECT 30, ('{' || string_agg(format('%s:%s:%s', date '2026-01-01' + 9 * k + k % 4,
									 1 + k % 3, 19.99 + k * 7.25), ',' ORDER BY k) || '}')::loyalty.day_buckets
FROM generate_series(0, 9) k;
SELECT v, dbk.form(v), pg_column_size(v) AS stored_bytes, pg_column_size(v) < 80 AS compact,
	   pg_column_size(v::text::loyalty.day_buckets) AS in_memory_bytes
FROM dbk.vals WHERE id = 30;

SET client_min_messages = warning;
DROP CAST (loyalty.day_buckets AS bytea);
DROP SCHEMA dbk CASCADE;
RESET client_min_messages;
