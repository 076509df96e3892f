--
-- loyalty: the argument contract of the RFM entry points (issue 11, item 13):
-- customer ids of customer_rfm, as_of and windows of rfm_stats,
-- rfm_segmentation, refresh_segments, customer_rfm and rfm_config.  Each
-- bad value is a documented error (22004 null, 22023 otherwise) raised
-- before any computation, never an empty result or a datetime overflow
-- (22008).
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE SCHEMA rin;
CREATE TABLE rin.orders (customer text NOT NULL, ordered_at timestamptz NOT NULL, amount numeric);
INSERT INTO rin.orders VALUES
	('ann', '2026-10-30 10:00+00', 120.00), ('bob', '2026-09-01 10:00+00', 15.00),
	(repeat('y', 200), '2026-08-01 10:00+00', 7.00);
SELECT loyalty.track_orders('rin.orders', 'customer', 'ordered_at', 'amount');
-- run a statement, show its SQLSTATE, message and detail (or "ok")
CREATE FUNCTION rin.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text;
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || msg || CASE WHEN det <> '' THEN ' / ' || det ELSE '' END;
END
$$;
RESET client_min_messages;

-- customer_rfm: the customer id
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm(NULL)$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm(NULL, '2026-11-01')$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('')$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm(repeat('x', 201))$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm(repeat('é', 201))$$);
-- at the limit (characters, not bytes), and unknown customers: no row
SELECT customer_id = repeat('y', 200) AS found, frequency
FROM loyalty.customer_rfm(repeat('y', 200), '2026-11-01');
SELECT count(*) FROM loyalty.customer_rfm(repeat('é', 200), '2026-11-01');
SELECT count(*) FROM loyalty.customer_rfm('nobody', '2026-11-01');
SELECT customer_id, frequency FROM loyalty.customer_rfm('ann', '2026-11-01');

-- customer_rfm: as_of
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('ann', NULL)$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('ann', '4713-01-01 BC')$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('ann', 'infinity')$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('ann', '10000-01-01 00:00+00')$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('ann', '0001-01-01 00:00+00')$$);
SELECT rin.try($$SELECT * FROM loyalty.customer_rfm('ann', '9999-12-31 23:59:59.999999+00')$$);

-- refresh_segments: as_of (nothing is recorded by a refused call)
SELECT rin.try($$SELECT * FROM loyalty.refresh_segments('4713-01-01 BC')$$);
SELECT rin.try($$SELECT * FROM loyalty.refresh_segments('0001-01-01 00:00+00'::timestamptz - interval '1 microsecond')$$);
SELECT rin.try($$SELECT * FROM loyalty.refresh_segments('200000-01-01')$$);
SELECT rin.try($$SELECT * FROM loyalty.refresh_segments('-infinity')$$);
SELECT rin.try($$SELECT * FROM loyalty.refresh_segments(NULL)$$);
SELECT count(*) FROM loyalty.segment_snapshot;

-- rfm_stats: as_of and window_length
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '4713-01-01 BC') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '170000000 years') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '-170000000 years') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '2147483647 days') FROM rin.orders$$);
-- 2562047788 hours, written as a sum: PostgreSQL 13 reads at most 2147483647
-- in one field, and cannot write the value (expected/rfm_input_1.out has the
-- DETAIL the extension writes there instead, see LoyaltyIntervalText)
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01',
									  interval '2147483647 hours' + interval '414564141 hours') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '1000 years 1 day') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '2000 years -400000 days') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '1000 years') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at::date, amount::integer, '0001-01-01 00:00+00', '1000 years') FROM rin.orders$$);
SELECT rin.try($$SELECT loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '0 days') FROM rin.orders$$);

-- rfm_segmentation: as_of and window_length
SELECT rin.try($$SELECT * FROM loyalty.rfm_segmentation('rin.orders', 'customer', 'ordered_at', 'amount', '4713-01-01 BC')$$);
SELECT rin.try($$SELECT * FROM loyalty.rfm_segmentation('rin.orders', 'customer', 'ordered_at', 'amount', '2026-11-01', 5, '170000000 years')$$);
SELECT rin.try($$SELECT * FROM loyalty.rfm_segmentation('rin.orders', 'customer', 'ordered_at', 'amount', '9999-12-31', 5, '-1000 years')$$);
SELECT rin.try($$SELECT * FROM loyalty.rfm_segmentation('rin.orders', 'customer', 'ordered_at', 'amount', '0001-01-01 00:00+00', 5, '1000 years')$$);

-- rfm_config: scoring_window, bucket_retention, inactive_after
SELECT rin.try($$UPDATE loyalty.rfm_config SET scoring_window = '170000000 years', bucket_retention = '170000000 years'$$);
SELECT rin.try($$UPDATE loyalty.rfm_config SET bucket_retention = '1001 years'$$);
SELECT rin.try($$UPDATE loyalty.rfm_config SET inactive_after = '178000000 years'$$);
SELECT rin.try($$UPDATE loyalty.rfm_config SET scoring_window = '1000 years', bucket_retention = '1000 years', inactive_after = '1000 years'$$);
SELECT scoring_window, bucket_retention, inactive_after FROM loyalty.rfm_config;
-- at the bounds everything is computable
SELECT customer_id, frequency FROM loyalty.customer_rfm('ann', '0001-01-01 00:00+00');
SELECT customer_id, frequency FROM loyalty.customer_rfm('ann', '9999-12-31 00:00+00');

-- clean up
SET client_min_messages = warning;
UPDATE loyalty.rfm_config SET scoring_window = '12 months', bucket_retention = '13 months',
	inactive_after = '6 months', updated_at = NULL;
SELECT loyalty.untrack_orders('rin.orders');
DROP SCHEMA rin CASCADE;
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
