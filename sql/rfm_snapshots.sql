--
-- loyalty: the as_of of refresh_segments and the snapshots it records
-- (issue 13, items 4 and 5): no as_of in the future or before the latest
-- snapshot, the latest snapshot by as_of, drop_snapshot, and a default as_of
-- at the start of the day in the program time zone.
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
-- the default skew (the test cluster widens it for the fixed-date fixtures)
SET loyalty.refresh_future_skew = '5min';
CREATE SCHEMA snap;
CREATE TABLE snap.orders (customer text, ordered_at timestamptz, amount numeric(10,2));
CREATE FUNCTION snap.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END;
$$;
-- snapshot ids from 1 (earlier tests left the table empty)
SELECT count(*) AS snapshots_left_by_earlier_tests FROM loyalty.segment_snapshot;
SELECT setval('loyalty.segment_snapshot_snapshot_id_seq', 1, false);
RESET client_min_messages;

INSERT INTO snap.orders VALUES
	('ann', '2026-10-30 10:00+00', 120.00), ('ann', '2026-09-15 10:00+00', 80.00),
	('bob', '2026-10-20 10:00+00', 15.00),
	('cid', '2025-12-01 10:00+00', 300.00), ('cid', '2025-06-01 10:00+00', 500.00),
	('dee', '2026-07-01 10:00+00', 40.00), ('dee', '2026-07-10 10:00+00', 45.00),
	('eve', '2026-10-01 10:00+00', 60.00),
	('fay', '2026-03-01 10:00+00', 25.00);
SELECT * FROM loyalty.track_orders('snap.orders', 'customer', 'ordered_at', 'amount');
SELECT snapshot_id, scored_as_of, customers FROM loyalty.refresh_segments('2026-11-01');
SELECT snapshot_id, scored_as_of, customers FROM loyalty.refresh_segments('2026-11-08');

-- item 4: an as_of before the latest snapshot's, or in the future beyond
-- the skew, is refused (22023); the same as_of again is accepted
SELECT snap.try($$SELECT * FROM loyalty.refresh_segments('2026-11-05')$$) AS earlier;
SELECT snap.try($$SELECT * FROM loyalty.refresh_segments(now() + interval '1 hour')$$) AS future;
BEGIN;
SELECT snap.try($$SELECT * FROM loyalty.refresh_segments(now() + interval '1 minute')$$) AS within_skew;
ROLLBACK;
-- (the rolled back refresh took snapshot id 3)
\set VERBOSITY default
SELECT * FROM loyalty.refresh_segments('2026-11-05');
SELECT snapshot_id, scored_as_of FROM loyalty.refresh_segments('2026-11-08');
SELECT count(*) AS snapshots FROM loyalty.segment_snapshot;

-- a mistaken refresh far ahead (an administrator widened the skew): eve
-- has no orders left by then, everybody else slips
SET loyalty.refresh_future_skew = '400d';
DELETE FROM snap.orders WHERE customer = 'eve';
CREATE TEMP TABLE before_mistake AS
SELECT customer_id, score, segment, since FROM loyalty.customer_stats;
SELECT snapshot_id, scored_as_of, left_customers FROM loyalty.refresh_segments('2027-06-01');
SET loyalty.refresh_future_skew = '5min';
SELECT count(*) AS customers_moved FROM loyalty.segment_change c
WHERE c.snapshot_id = (SELECT max(snapshot_id) FROM loyalty.segment_snapshot);
-- the migration matrix from the day before to today reads the snapshots by
-- as_of: the mistaken one is not "today"
SELECT * FROM loyalty.segment_migration('2026-11-08', '2026-11-20') ORDER BY 1, 2;
-- now nothing earlier can be scored
SELECT snap.try($$SELECT * FROM loyalty.refresh_segments('2026-11-20')$$) AS after_mistake;

-- drop_snapshot: only the last one; null and unknown ids are errors
SELECT snap.try($$SELECT loyalty.drop_snapshot(4)$$) AS not_the_last,
	   snap.try($$SELECT loyalty.drop_snapshot(NULL)$$) AS null_id,
	   snap.try($$SELECT loyalty.drop_snapshot(999)$$) AS unknown_id;
SELECT retained_from AS dropped_horizon FROM loyalty.segment_snapshot WHERE snapshot_id = 5 \gset
SELECT loyalty.drop_snapshot(5) AS restored;
SELECT snapshot_id, as_of FROM loyalty.segment_snapshot ORDER BY 1;
SELECT count(*) FROM loyalty.segment_change WHERE snapshot_id = 5;
SELECT count(*) FROM loyalty.segment_summary WHERE snapshot_id = 5;
-- every customer is back in the segment (and since) of snapshot 4; eve,
-- who left at the dropped snapshot, is back as a customer without rows
SELECT b.customer_id, s.segment = b.segment AS same_segment, s.since = b.since AS same_since,
	   s.row_count
FROM before_mistake b LEFT JOIN loyalty.customer_stats s USING (customer_id)
ORDER BY 1;
-- the retention horizon the dropped refresh reached is kept
-- (the horizon depends on the day the test runs: compared, not printed)
SELECT retained_from = :'dropped_horizon'::date AS horizon_kept FROM loyalty.segment_snapshot WHERE snapshot_id = 4;
-- scoring resumes from 2026-11-08; eve leaves her segment again
SELECT snapshot_id, scored_as_of, left_customers FROM loyalty.refresh_segments('2026-11-20');
SELECT customer_id, segment FROM loyalty.segment_change WHERE snapshot_id = 6 AND segment IS NULL;
SELECT * FROM loyalty.segment_migration('2026-11-08', '2026-11-20')
WHERE from_segment IS DISTINCT FROM to_segment ORDER BY 1, 2;
-- drop_snapshot is for administrators
SELECT level, privileges FROM loyalty.access_rule WHERE object_name LIKE 'loyalty.drop_snapshot(%';

-- item 5: refresh_segments() scores as of the start of the current day in
-- the program time zone (a pg_cron job at 00:05 scores as of midnight), as
-- batch does for that as_of
INSERT INTO loyalty.settings (timezone) VALUES ('Pacific/Kiritimati');
SELECT * FROM loyalty.rebuild_tracking();
BEGIN;
SELECT scored_as_of = (date_trunc('day', now() AT TIME ZONE 'Pacific/Kiritimati')
					   AT TIME ZONE 'Pacific/Kiritimati') AS midnight_in_program_zone,
	   scored_as_of <= now() AS not_ahead,
	   scored_as_of > now() - interval '1 day' AS today
FROM loyalty.refresh_segments();
SELECT count(*) AS differences
FROM loyalty.customer_stats s
FULL JOIN loyalty.rfm_segmentation('snap.orders', 'customer', 'ordered_at', 'amount',
								   (SELECT as_of FROM loyalty.segment_snapshot
									ORDER BY as_of DESC LIMIT 1)) b USING (customer_id)
WHERE s.row_count > 0 AND (s.score::text, s.segment) IS DISTINCT FROM (b.score::text, b.segment);
ROLLBACK;
SELECT pg_get_function_arguments('loyalty.refresh_segments(timestamptz)'::regprocedure);

-- clean up
SET client_min_messages = warning;
SELECT loyalty.untrack_orders('snap.orders');
DROP SCHEMA snap CASCADE;
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
DELETE FROM loyalty.settings;
RESET loyalty.refresh_future_skew;
RESET client_min_messages;
