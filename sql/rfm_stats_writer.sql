--
-- loyalty: the one writer of loyalty.customer_stats (stats_store.c) writes
-- below the executor only while the table is as the extension creates it.
-- When an administrator adds a trigger, an index, a CHECK constraint or row
-- level security, folds and refreshes write through the executor instead:
-- the trigger fires for every row written, the index holds every row, the
-- constraint is enforced, and the statistics and scores stay those of batch
-- rfm_segmentation over the same orders.
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE EXTENSION IF NOT EXISTS amcheck;
CREATE SCHEMA sw;
CREATE TABLE sw.orders (
	id			serial PRIMARY KEY,
	customer	text NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2)
);
CREATE INDEX ON sw.orders (customer);
-- live results against batch rfm_segmentation: every customer that differs
CREATE FUNCTION sw.live_vs_batch(as_of timestamptz)
RETURNS TABLE (customer_id text, live text, batch text)
LANGUAGE sql AS $$
	WITH b AS (SELECT * FROM loyalty.rfm_segmentation('sw.orders', 'customer', 'ordered_at', 'amount', as_of)),
		 l AS (SELECT s.customer_id, s.score, s.segment, r.recency_days, r.frequency, r.monetary
			   FROM loyalty.customer_segment s, loyalty.customer_rfm(s.customer_id, as_of) r)
	SELECT coalesce(l.customer_id, b.customer_id),
		   format('%s %s %s/%s/%s', l.score, l.segment, l.recency_days, l.frequency, l.monetary),
		   format('%s %s %s/%s/%s', b.score, b.segment, b.recency_days, b.frequency, b.monetary)
	FROM l FULL JOIN b USING (customer_id)
	WHERE (l.score::text, l.segment, l.recency_days, l.frequency, l.monetary)
		  IS DISTINCT FROM (b.score::text, b.segment, b.recency_days, b.frequency, b.monetary)
$$;
-- what a trigger on customer_stats sees: every row inserted or updated
CREATE TABLE sw.audit (n serial, op text, customer_id text, row_count bigint, score text,
					   segment text);
CREATE FUNCTION sw.audit_stats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO sw.audit (op, customer_id, row_count, score, segment)
	VALUES (TG_OP, NEW.customer_id, NEW.row_count, NEW.score::text, NEW.segment);
	RETURN NEW;
END $$;
RESET client_min_messages;

INSERT INTO sw.orders (customer, ordered_at, amount) VALUES
	('sw-ann', '2026-10-30 10:00+00', 120.00), ('sw-ann', '2026-09-15 10:00+00', 80.00),
	('sw-bob', '2026-10-20 10:00+00', 15.00),
	('sw-cid', '2025-12-01 10:00+00', 300.00), ('sw-cid', '2025-06-01 10:00+00', 500.00),
	('sw-dee', '2026-07-01 10:00+00', 40.00), ('sw-dee', '2026-07-10 10:00+00', 45.00),
	('sw-eve', '2024-03-01 10:00+00', 999.00),
	('sw-fay', '2026-10-01 10:00+00', 60.00),
	('sw-gus', '2026-02-14 10:00+00', 35.00);
SELECT * FROM loyalty.track_orders('sw.orders', 'customer', 'ordered_at', 'amount');
SELECT customers, segment_changes FROM loyalty.refresh_segments('2026-11-01');

-- a trigger on customer_stats: the fold updates existing customers and
-- inserts new ones through the executor, so it sees each of them
CREATE TRIGGER sw_audit AFTER INSERT OR UPDATE ON loyalty.customer_stats
	FOR EACH ROW EXECUTE FUNCTION sw.audit_stats();
INSERT INTO sw.orders (customer, ordered_at, amount) VALUES
	('sw-ann', '2026-11-02 10:00+00', 10.00), ('sw-cid', '2026-11-02 11:00+00', 20.00),
	('sw-hal', '2026-11-02 12:00+00', 30.00);
DELETE FROM sw.orders WHERE customer = 'sw-gus';
SELECT folded_rows, customers FROM loyalty.fold_tracking();
SELECT op, customer_id, row_count FROM sw.audit ORDER BY customer_id, n;
TRUNCATE sw.audit;

-- a refresh with pending additions (sw-bob, new sw-ivy) and changed scores:
-- the trigger sees every row the refresh writes, with its new score
INSERT INTO sw.orders (customer, ordered_at, amount) VALUES
	('sw-bob', '2026-11-20 10:00+00', 500.00), ('sw-bob', '2026-11-21 10:00+00', 500.00),
	('sw-ivy', '2026-11-25 10:00+00', 70.00);
SELECT customers, segment_changes, left_customers FROM loyalty.refresh_segments('2026-12-01');
SELECT a.op, a.customer_id, a.row_count, a.score, a.segment
FROM sw.audit a ORDER BY a.customer_id, a.n;
-- and the rows the refresh did not write are those whose score held
SELECT s.customer_id, s.score, s.segment
FROM loyalty.customer_stats s
WHERE s.customer_id LIKE 'sw-%' AND s.score IS NOT NULL
  AND NOT EXISTS (SELECT FROM sw.audit a WHERE a.customer_id = s.customer_id)
ORDER BY 1;
SELECT * FROM sw.live_vs_batch('2026-12-01');
TRUNCATE sw.audit;

-- an index someone added: every row written reaches it (amcheck finds each
-- heap row in each index; a scan through the new index sees what a
-- sequential scan sees)
CREATE INDEX sw_stats_segment ON loyalty.customer_stats (segment);
INSERT INTO sw.orders (customer, ordered_at, amount) VALUES
	('sw-dee', '2026-12-10 10:00+00', 900.00), ('sw-jon', '2026-12-11 10:00+00', 5.00);
SELECT customers, segment_changes FROM loyalty.refresh_segments('2026-12-15');
SELECT count(*) > 0 AS trigger_fired FROM sw.audit;
SELECT c.relname, bt_index_check(c.oid, true)::text AS amcheck_errors
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'loyalty.customer_stats'::regclass ORDER BY 1;
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
CREATE TEMP TABLE sw_via_index ON COMMIT DROP AS
	SELECT customer_id, segment FROM loyalty.customer_stats
	WHERE segment >= '' AND customer_id LIKE 'sw-%';
SET LOCAL enable_seqscan = on;
SET LOCAL enable_indexscan = off;
SELECT count(*) AS via_index,
	   (SELECT count(*) FROM loyalty.customer_stats
		WHERE segment >= '' AND customer_id LIKE 'sw-%') AS via_seqscan,
	   (SELECT count(*) FROM (SELECT customer_id, segment FROM loyalty.customer_stats
							 WHERE segment >= '' AND customer_id LIKE 'sw-%'
							 EXCEPT SELECT * FROM sw_via_index) d) AS missing_in_index
FROM sw_via_index;
COMMIT;
SELECT * FROM sw.live_vs_batch('2026-12-15');
DROP TRIGGER sw_audit ON loyalty.customer_stats;
DROP INDEX loyalty.sw_stats_segment;

-- a CHECK constraint is enforced on the refresh's writes (the whole
-- refresh fails and changes nothing)
ALTER TABLE loyalty.customer_stats ADD CONSTRAINT sw_few_rows CHECK (row_count < 6);
INSERT INTO sw.orders (customer, ordered_at, amount) VALUES
	('sw-bob', '2026-12-20 10:00+00', 1.00), ('sw-bob', '2026-12-21 10:00+00', 1.00),
	('sw-bob', '2026-12-22 10:00+00', 1.00);
\set VERBOSITY terse
SELECT customers FROM loyalty.refresh_segments('2027-01-01');
\set VERBOSITY default
SELECT count(*) AS snapshots_after_failure FROM loyalty.segment_snapshot WHERE as_of = '2027-01-01';
ALTER TABLE loyalty.customer_stats DROP CONSTRAINT sw_few_rows;

-- row level security on the table: the refresh still scores everyone
ALTER TABLE loyalty.customer_stats ENABLE ROW LEVEL SECURITY;
SELECT customers, segment_changes FROM loyalty.refresh_segments('2027-01-01');
SELECT * FROM sw.live_vs_batch('2027-01-01');
ALTER TABLE loyalty.customer_stats DISABLE ROW LEVEL SECURITY;

-- clean up
SET client_min_messages = warning;
SELECT loyalty.untrack_orders('sw.orders');
DROP SCHEMA sw CASCADE;
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
