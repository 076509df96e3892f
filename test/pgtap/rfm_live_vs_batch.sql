-- pgTAP property test: live tracking agrees with batch rfm_segmentation.
--
-- Random orders (refunds, null amounts, rows without customer or time), then
-- rounds of random inserts, updates (amount, time, customer), deletes and
-- rolled-back changes.  After every round the live statistics must equal a
-- recomputation from the orders, and refresh_segments' scores, segments and
-- per-customer recency / frequency / monetary must equal
-- loyalty.rfm_segmentation on the same table at the same as_of (a UTC
-- midnight after every order), for quantile, average-basket and threshold
-- scoring.
BEGIN;
SELECT plan(30);

SET LOCAL TimeZone = 'UTC';
SELECT setseed(0.4242);

CREATE TABLE public.pt_orders (
	id			serial PRIMARY KEY,
	customer	integer,
	ordered_at	timestamptz,
	amount		numeric(10,2)
);
CREATE INDEX ON public.pt_orders (customer);

-- 2024-06 .. 2026-11-20, 400 customers with heavy-tailed activity
INSERT INTO public.pt_orders (customer, ordered_at, amount)
SELECT c,
	   timestamptz '2024-06-01 00:00+00' + random() * (timestamptz '2026-11-20 00:00+00' - timestamptz '2024-06-01 00:00+00'),
	   CASE WHEN random() < 0.05 THEN NULL
			WHEN random() < 0.08 THEN -round((random() * 50)::numeric, 2)
			ELSE round((5 + random() ^ 3 * 400)::numeric, 2) END
FROM generate_series(1, 400) c, generate_series(1, 1 + floor(30 * random() ^ 4)::int);
INSERT INTO public.pt_orders (customer, ordered_at, amount) VALUES
	(NULL, '2026-01-01 00:00+00', 5), (7, NULL, 5);

-- the live statistics must equal what the orders say: as a reader sees them
-- (customer_rfm adds the pending tracked changes) and once folded
CREATE FUNCTION pg_temp.stats_differences() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	live bigint;
	folded bigint;
BEGIN
	CREATE TEMP TABLE expected_stats ON COMMIT DROP AS
		SELECT customer::text AS customer_id, count(*) AS row_count,
			   count(*) FILTER (WHERE amount IS NULL OR amount >= 0) AS order_count,
			   coalesce(sum(amount), 0) AS spend_total,
			   min(ordered_at) FILTER (WHERE amount IS NULL OR amount >= 0) AS first_order,
			   max(ordered_at) FILTER (WHERE amount IS NULL OR amount >= 0) AS last_order
		FROM public.pt_orders WHERE customer IS NOT NULL AND ordered_at IS NOT NULL
		GROUP BY 1;
	SELECT count(*) INTO live
	FROM expected_stats e
	FULL JOIN (SELECT r.customer_id, r.orders_total AS order_count, r.spend_total, r.first_order, r.last_order
			   FROM (SELECT customer_id FROM loyalty.customer_stats
					 UNION SELECT customer_id FROM loyalty.customer_stats_delta) c
			   CROSS JOIN LATERAL loyalty.customer_rfm(c.customer_id) r) s USING (customer_id)
	WHERE (e.order_count, e.spend_total, e.first_order, e.last_order)
		  IS DISTINCT FROM (s.order_count, s.spend_total, s.first_order, s.last_order);
	PERFORM loyalty.fold_tracking();
	SELECT count(*) INTO folded
	FROM expected_stats e
	FULL JOIN (SELECT * FROM loyalty.customer_stats WHERE row_count <> 0) s USING (customer_id)
	WHERE (e.row_count, e.order_count, e.spend_total, e.first_order, e.last_order)
		  IS DISTINCT FROM (s.row_count, s.order_count, s.spend_total, s.first_order, s.last_order);
	DROP TABLE expected_stats;
	RETURN live + folded;
END;
$$;

-- refresh, then count customers where live and batch disagree
CREATE FUNCTION pg_temp.live_vs_batch(as_of timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	cfg record;
	n bigint;
BEGIN
	SELECT * INTO cfg FROM loyalty.rfm_config;
	PERFORM loyalty.refresh_segments(as_of);
	SELECT count(*) INTO n
	FROM (SELECT * FROM loyalty.rfm_segmentation('public.pt_orders', 'customer', 'ordered_at', 'amount',
				as_of, cfg.bins, cfg.scoring_window, cfg.monetary,
				cfg.recency_thresholds, cfg.frequency_thresholds::bigint[], cfg.monetary_thresholds)) b
	FULL JOIN (SELECT l.customer_id, l.score, l.segment, r.recency_days, r.frequency, r.monetary
			   FROM loyalty.customer_segment l, loyalty.customer_rfm(l.customer_id, as_of) r) l
		USING (customer_id)
	WHERE (b.score::text, b.segment, b.recency_days, b.frequency, b.monetary)
		  IS DISTINCT FROM (l.score::text, l.segment, l.recency_days, l.frequency, l.monetary);
	RETURN n;
END;
$$;

-- one round of random changes: inserts (new and known customers, refunds,
-- null amounts), updates of amount, time and customer, deletes, and a block
-- of changes rolled back to a savepoint
CREATE FUNCTION pg_temp.random_round() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.pt_orders (customer, ordered_at, amount)
	SELECT 1 + floor(random() * 450)::int,
		   timestamptz '2025-06-01 00:00+00' + random() * (timestamptz '2026-11-20 00:00+00' - timestamptz '2025-06-01 00:00+00'),
		   CASE WHEN random() < 0.05 THEN NULL
				WHEN random() < 0.1 THEN -round((random() * 30)::numeric, 2)
				ELSE round((5 + random() * 200)::numeric, 2) END
	FROM generate_series(1, 40 + floor(random() * 80)::int);
	INSERT INTO public.pt_orders (customer, ordered_at, amount)		-- one order at a time
	VALUES (1 + floor(random() * 450)::int, '2026-11-19 12:00+00', 42.00);
	UPDATE public.pt_orders SET amount = round((random() * 300)::numeric, 2) WHERE random() < 0.03;
	UPDATE public.pt_orders SET ordered_at = ordered_at - random() * interval '400 days' WHERE random() < 0.02;
	UPDATE public.pt_orders SET customer = 1 + floor(random() * 450)::int WHERE random() < 0.02;
	UPDATE public.pt_orders SET amount = -amount WHERE random() < 0.01 AND amount > 0;
	DELETE FROM public.pt_orders WHERE random() < 0.03;
	DELETE FROM public.pt_orders WHERE customer = 1 + floor(random() * 450)::int;
	BEGIN
		INSERT INTO public.pt_orders (customer, ordered_at, amount)
		SELECT 1 + floor(random() * 450)::int, '2026-11-18 00:00+00', 999 FROM generate_series(1, 20);
		DELETE FROM public.pt_orders WHERE random() < 0.2;
		RAISE EXCEPTION 'roll back';
	EXCEPTION WHEN raise_exception THEN
		NULL;
	END;
END;
$$;

SELECT lives_ok($$SELECT loyalty.track_orders('public.pt_orders', 'customer', 'ordered_at', 'amount')$$,
				'track_orders back-fills the random orders');
SELECT is(pg_temp.stats_differences(), 0::bigint, 'back-filled statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-11-21'), 0::bigint, 'first refresh equals batch');

SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 1: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-11-21'), 0::bigint, 'round 1: live equals batch');
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 2: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-11-22'), 0::bigint, 'round 2: live equals batch, a day later');
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 3: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-10'), 0::bigint, 'round 3: live equals batch, weeks later');

UPDATE loyalty.rfm_config SET monetary = 'average';
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 4: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-10'), 0::bigint, 'round 4: live equals batch (average basket)');

UPDATE loyalty.rfm_config SET monetary = 'total', bins = 4;
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 5: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-11'), 0::bigint, 'round 5: live equals batch (4 bins)');

UPDATE loyalty.rfm_config SET bins = 5, method = 'thresholds',
	recency_thresholds = '{30,90,180,365}', frequency_thresholds = '{2,4,8,16}',
	monetary_thresholds = '{50,200,500,1000}';
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 6: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-11'), 0::bigint, 'round 6: live equals batch (thresholds)');

UPDATE loyalty.rfm_config SET method = 'quantile', recency_thresholds = NULL,
	frequency_thresholds = NULL, monetary_thresholds = NULL, scoring_window = '6 months';
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 7: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-12'), 0::bigint, 'round 7: live equals batch (6-month window)');

UPDATE loyalty.rfm_config SET scoring_window = '12 months';
SELECT pg_temp.random_round();
SELECT pg_temp.random_round();
SELECT is(pg_temp.stats_differences(), 0::bigint, 'round 8: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-20'), 0::bigint, 'round 8: live equals batch');

-- a bulk load and a bulk delete in single statements
INSERT INTO public.pt_orders (customer, ordered_at, amount)
SELECT 1 + g % 500, timestamptz '2026-01-01 00:00+00' + g * interval '37 minutes', g % 97
FROM generate_series(1, 5000) g;
SELECT is(pg_temp.stats_differences(), 0::bigint, 'bulk insert: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-20'), 0::bigint, 'bulk insert: live equals batch');
DELETE FROM public.pt_orders WHERE customer % 3 = 0;
SELECT is(pg_temp.stats_differences(), 0::bigint, 'bulk delete: statistics equal the orders');
SELECT is(pg_temp.live_vs_batch('2026-12-21'), 0::bigint, 'bulk delete: live equals batch');
SELECT is((SELECT count(*) FROM loyalty.customer_stats WHERE row_count = 0), 0::bigint,
		  'customers who left were removed by the refresh');

-- the change log replays to the current segments
SELECT is((SELECT count(*) FROM loyalty.customer_segment s
		   FULL JOIN (SELECT DISTINCT ON (customer_id) customer_id, segment
					  FROM loyalty.segment_change ORDER BY customer_id, snapshot_id DESC) c
		   USING (customer_id)
		   WHERE s.segment IS DISTINCT FROM c.segment), 0::bigint,
		  'replaying the change log gives every customer''s current segment');
SELECT is((SELECT sum(customers)::bigint FROM loyalty.segment_migration_latest
		   WHERE to_segment IS NOT NULL),
		  (SELECT count(*) FROM loyalty.customer_segment),
		  'the latest migration matrix ends with every scored customer');
SELECT is((SELECT sum(customers)::bigint FROM loyalty.segment_migration_latest
		   WHERE from_segment IS NOT NULL),
		  (SELECT customers FROM loyalty.segment_snapshot ORDER BY snapshot_id DESC OFFSET 1 LIMIT 1),
		  'the latest migration matrix starts with every customer of the snapshot before');

-- TRUNCATE and rebuild
TRUNCATE public.pt_orders;
SELECT is(pg_temp.stats_differences(), 0::bigint, 'truncate: statistics equal the (no) orders');
SELECT is(pg_temp.live_vs_batch('2026-12-21'), 0::bigint, 'truncate: live equals batch (nobody)');
SELECT is((SELECT sum(customers)::bigint FROM loyalty.segment_migration_latest WHERE to_segment IS NULL),
		  (SELECT customers FROM loyalty.segment_snapshot ORDER BY snapshot_id DESC OFFSET 1 LIMIT 1),
		  'after truncate every customer left their segment');

SELECT * FROM finish();
ROLLBACK;
