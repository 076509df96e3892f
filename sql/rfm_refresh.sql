--
-- loyalty: live segmentation (refresh_segments, customer_rfm, rfm_config,
-- snapshots, the BI views, segment migration)
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE SCHEMA rf;
CREATE TABLE rf.orders (
	id			serial PRIMARY KEY,
	customer	text NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2)
);
CREATE INDEX ON rf.orders (customer);
-- live results against batch rfm_segmentation on the same orders: every
-- customer whose score, segment or statistics differ
CREATE FUNCTION rf.live_vs_batch(as_of timestamptz, average boolean DEFAULT false)
RETURNS TABLE (customer_id text, live text, batch text)
LANGUAGE sql AS $$
	WITH b AS (SELECT * FROM loyalty.rfm_segmentation('rf.orders', 'customer', 'ordered_at', 'amount',
							as_of, monetary_mode => CASE WHEN average THEN 'average' ELSE 'total' END)),
		 l AS (SELECT s.customer_id, s.score, s.segment, r.recency_days, r.frequency, r.monetary
			   FROM loyalty.customer_segment s, loyalty.customer_rfm(s.customer_id, as_of) r)
	SELECT coalesce(l.customer_id, b.customer_id),
		   format('%s %s %s/%s/%s', l.score, l.segment, l.recency_days, l.frequency, l.monetary),
		   format('%s %s %s/%s/%s', b.score, b.segment, b.recency_days, b.frequency, b.monetary)
	FROM l FULL JOIN b USING (customer_id)
	WHERE (l.score::text, l.segment, l.recency_days, l.frequency, l.monetary)
		  IS DISTINCT FROM (b.score::text, b.segment, b.recency_days, b.frequency, b.monetary)
$$;
RESET client_min_messages;

-- twelve customers with distinct habits, up to 2026-10-31
INSERT INTO rf.orders (customer, ordered_at, amount) VALUES
	('ann',   '2026-10-30 10:00+00', 120.00), ('ann', '2026-09-15 10:00+00', 80.00),
	('ann',   '2026-08-01 10:00+00', 200.00), ('ann', '2026-05-01 10:00+00', 50.00),
	('bob',   '2026-10-20 10:00+00', 15.00),
	('cid',   '2025-12-01 10:00+00', 300.00), ('cid', '2025-06-01 10:00+00', 500.00),
	('dee',   '2026-07-01 10:00+00', 40.00), ('dee', '2026-07-10 10:00+00', 45.00),
	('eve',   '2024-03-01 10:00+00', 999.00),
	('fay',   '2026-10-01 10:00+00', 60.00), ('fay', '2026-10-15 10:00+00', -20.00),
	('gus',   '2026-02-14 10:00+00', NULL),
	('hal',   '2026-10-31 23:00+00', 10.00), ('hal', '2026-10-31 23:30+00', 10.00),
	('ivy',   '2026-04-01 10:00+00', 75.00), ('ivy', '2026-06-01 10:00+00', 75.00),
	('jon',   '2026-01-10 10:00+00', -30.00),			-- only a refund
	('kim',   '2026-09-01 10:00+00', 500.00),
	('lea',   '2026-03-03 10:00+00', 25.00), ('lea', '2026-03-04 10:00+00', 25.00);

SELECT * FROM loyalty.track_orders('rf.orders', 'customer', 'ordered_at', 'amount');
SELECT loyalty.day_buckets_entries(days) FROM loyalty.customer_stats WHERE customer_id = 'cid';

-- the configuration: one row, validated
SELECT bins, scoring_window, monetary, method, recency_thresholds, frequency_thresholds,
	   monetary_thresholds, bucket_retention, inactive_after
FROM loyalty.rfm_config;

-- the first refresh rewrites the statistics compactly after scoring
-- everyone: the superseded row versions do not survive (CLUSTER would keep
-- them, their deleter still running), so the table grows only by the
-- scores and segments written, not to twice its size
BEGIN;
INSERT INTO rf.orders (customer, ordered_at, amount)
SELECT 'bulk' || g, timestamptz '2026-06-01 10:00+00' + g * interval '1 hour', g % 90
FROM generate_series(1, 3000) g;
-- (tracked statements append their changes; fold them as the refresh would)
SELECT folded_rows, customers FROM loyalty.fold_tracking();
SELECT pg_relation_size('loyalty.customer_stats') AS stats_size \gset
SELECT customers FROM loyalty.refresh_segments('2026-11-01');
SELECT pg_relation_size('loyalty.customer_stats') < 1.5 * :stats_size AS compact,
	   (SELECT count(*) FROM loyalty.customer_stats) AS customers;
ROLLBACK;

-- unless this session still reads them (an open cursor): then it keeps
-- the table as it is rather than fail
SELECT pg_relation_filenode('loyalty.customer_stats') AS stats_node \gset
BEGIN;
DECLARE stats_cursor CURSOR FOR SELECT customer_id FROM loyalty.customer_stats;
FETCH 1 FROM stats_cursor \g /dev/null
SELECT customers FROM loyalty.refresh_segments('2026-11-01');
SELECT pg_relation_filenode('loyalty.customer_stats') = :stats_node AS kept_with_cursor_open;
ROLLBACK;

-- the first refresh scores everyone; live equals batch
SELECT scored_as_of, customers, segment_changes, score_changes, left_customers
FROM loyalty.refresh_segments('2026-11-01');
SELECT pg_relation_filenode('loyalty.customer_stats') <> :stats_node AS rewritten;
SELECT pg_relation_filenode('loyalty.customer_stats') AS stats_node \gset
SELECT customer_id, score, segment, since FROM loyalty.customer_segment ORDER BY customer_id;
SELECT * FROM rf.live_vs_batch('2026-11-01');
-- buckets older than bucket_retention before as_of were pruned on the way
SELECT loyalty.day_buckets_entries(days) FROM loyalty.customer_stats WHERE customer_id = 'cid';

-- one customer's live view: statistics as of any time, score of the refresh
SELECT * FROM loyalty.customer_rfm('ann', '2026-11-01');
SELECT customer_id, recency_days, frequency, monetary, score
FROM loyalty.customer_rfm('ann', '2026-12-01');
SELECT * FROM loyalty.customer_rfm('nobody');
SELECT customer_id, recency_days, frequency, monetary FROM loyalty.customer_rfm('jon', '2026-11-01');

-- the BI views read the last snapshot
SELECT segment, customers, customer_share, revenue, revenue_share, revenue_per_customer
FROM loyalty.segment_overview ORDER BY display_order;
SELECT segment, recency_bucket, customers, segment_share
FROM loyalty.segment_recency WHERE customers > 0 ORDER BY display_order, bucket_order;
SELECT segment, customers, inactive_customers, inactive_share
FROM loyalty.segment_inactivity ORDER BY display_order;
SELECT as_of, customers, segment_changes, score_changes, left_customers, bins, scoring_window,
	   monetary, method
FROM loyalty.segment_snapshots ORDER BY as_of;
SELECT count(*) AS migration_rows_with_one_snapshot FROM loyalty.segment_migration_latest;

-- refreshing again as of the same time changes nothing (and later
-- refreshes leave the table in place: VACUUM reclaims their few rows)
SELECT segment_changes, score_changes FROM loyalty.refresh_segments('2026-11-01');
SELECT pg_relation_filenode('loyalty.customer_stats') = :stats_node AS kept;

-- a week later, with new orders and a customer who leaves: only what moved
-- is written; since keeps the date a customer entered the segment
INSERT INTO rf.orders (customer, ordered_at, amount) VALUES
	('eve', '2026-11-05 10:00+00', 50.00),
	('bob', '2026-11-03 10:00+00', 400.00), ('bob', '2026-11-04 10:00+00', 400.00),
	('new', '2026-11-06 10:00+00', 35.00);
DELETE FROM rf.orders WHERE customer = 'lea';
SELECT scored_as_of, customers, segment_changes, score_changes, left_customers
FROM loyalty.refresh_segments('2026-11-08');
SELECT customer_id, score, segment, since FROM loyalty.customer_segment ORDER BY customer_id;
SELECT * FROM rf.live_vs_batch('2026-11-08');
SELECT count(*) AS lea_rows FROM loyalty.customer_stats WHERE customer_id = 'lea';

-- the change log holds only changes; a NULL segment means the customer left
SELECT p.as_of, c.customer_id, c.segment, c.score
FROM loyalty.segment_change c JOIN loyalty.segment_snapshot p USING (snapshot_id)
WHERE p.as_of = '2026-11-08' ORDER BY c.customer_id;

-- migration matrix between the two dates (and the view of the last two)
SELECT * FROM loyalty.segment_migration('2026-11-01', '2026-11-08')
ORDER BY from_segment NULLS FIRST, to_segment NULLS FIRST;
SELECT from_segment, to_segment, customers FROM loyalty.segment_migration_latest
EXCEPT ALL
SELECT * FROM loyalty.segment_migration('2026-11-01', '2026-11-08');
SELECT * FROM loyalty.segment_migration('2026-11-03', '2026-11-30')
ORDER BY from_segment NULLS FIRST, to_segment NULLS FIRST;
SELECT * FROM loyalty.segment_migration('2026-10-01', '2026-11-08');
SELECT * FROM loyalty.segment_migration('2026-11-08', '2026-11-01');
SELECT * FROM loyalty.segment_trend WHERE segment = 'Champions' ORDER BY as_of, snapshot_id;

-- the average basket and threshold scoring, compared with batch
UPDATE loyalty.rfm_config SET monetary = 'average';
SELECT segment_changes > 0 AS some_changed FROM loyalty.refresh_segments('2026-11-08');
SELECT * FROM rf.live_vs_batch('2026-11-08', average => true);
UPDATE loyalty.rfm_config SET monetary = 'total', method = 'thresholds',
	recency_thresholds = '{30,90,180,365}', frequency_thresholds = '{2,3,4,5}',
	monetary_thresholds = NULL;
SELECT customers FROM loyalty.refresh_segments('2026-11-08');
SELECT customer_id, score FROM loyalty.customer_segment ORDER BY customer_id;
WITH b AS (SELECT * FROM loyalty.rfm_segmentation('rf.orders', 'customer', 'ordered_at', 'amount',
						'2026-11-08', recency_thresholds => '{30,90,180,365}',
						frequency_thresholds => '{2,3,4,5}'))
SELECT count(*) AS threshold_differences
FROM b FULL JOIN loyalty.customer_segment l USING (customer_id)
WHERE b.score::text IS DISTINCT FROM l.score::text OR b.segment IS DISTINCT FROM l.segment;

-- configuration errors name the problem
\set SHOW_CONTEXT never
UPDATE loyalty.rfm_config SET bins = 10;
UPDATE loyalty.rfm_config SET bins = 4;			-- thresholds now have a wrong length
UPDATE loyalty.rfm_config SET recency_thresholds = '{30,20,180,365}';
UPDATE loyalty.rfm_config SET recency_thresholds = '{30,90,180,365,400,500,600,700,800}';
UPDATE loyalty.rfm_config SET method = 'quantile';
UPDATE loyalty.rfm_config SET method = 'ranking';
UPDATE loyalty.rfm_config SET monetary = 'median';
UPDATE loyalty.rfm_config SET scoring_window = '-1 month';
UPDATE loyalty.rfm_config SET bucket_retention = '6 months';
UPDATE loyalty.rfm_config SET inactive_after = '0';
DELETE FROM loyalty.rfm_config;
TRUNCATE loyalty.rfm_config;
\set SHOW_CONTEXT errors
-- an INSERT replaces the row (what restoring a dump does)
INSERT INTO loyalty.rfm_config (bins, scoring_window) VALUES (3, '6 months');
SELECT count(*), min(bins), min(scoring_window), min(method) FROM loyalty.rfm_config;
UPDATE loyalty.rfm_config SET bins = 5, scoring_window = '12 months', monetary = 'total',
	method = 'quantile', recency_thresholds = NULL, frequency_thresholds = NULL,
	monetary_thresholds = NULL, bucket_retention = '13 months', inactive_after = '6 months';

-- refresh errors: as_of too early for the kept buckets, null, infinite,
-- REPEATABLE READ
SELECT * FROM loyalty.refresh_segments('2025-06-01');
SELECT * FROM loyalty.customer_rfm('ann', '2025-06-01');
SELECT * FROM loyalty.refresh_segments(NULL);
SELECT * FROM loyalty.refresh_segments('infinity');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM loyalty.refresh_segments('2026-11-08');
ROLLBACK;

-- as_of before some orders: frequency and monetary count whole UTC days up
-- to as_of; recency comes from the latest day with an order up to as_of
SELECT customer_id, recency_days, frequency, monetary, last_order
FROM loyalty.customer_rfm('bob', '2026-11-03 12:00');
SELECT customer_id, recency_days, frequency, monetary
FROM loyalty.customer_rfm('bob', '2026-11-02');

-- indexes someone added to customer_stats (one on segment for BI, one on
-- an expression with a predicate) get their entries from the refresh's
-- writes and from the triggers; amcheck finds every row in each index
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS amcheck;
RESET client_min_messages;
CREATE INDEX stats_segment ON loyalty.customer_stats (segment);
CREATE INDEX stats_upper ON loyalty.customer_stats (upper(customer_id)) WHERE score IS NOT NULL;
INSERT INTO rf.orders (customer, ordered_at, amount) VALUES ('ann', '2026-11-20 10:00+00', 5.00);
SELECT segment_changes > 0 AS some_changed FROM loyalty.refresh_segments('2027-03-01');
SELECT c.relname, bt_index_check(c.oid, true)::text AS amcheck_errors
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'loyalty.customer_stats'::regclass ORDER BY 1;
SET LOCAL enable_seqscan = off;
SELECT segment, count(*) FROM loyalty.customer_stats WHERE segment IS NOT NULL
GROUP BY 1 ORDER BY 1;
ROLLBACK;

-- clean up
SET client_min_messages = warning;
SELECT loyalty.untrack_orders('rf.orders');
DROP SCHEMA rf CASCADE;
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
