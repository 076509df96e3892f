--
-- BI views as an analyst sees them (issue 13, items 12 and 13): a role with
-- the analyst level and the DEFAULT search_path (no loyalty in it) joins
-- and filters on the views' score columns, reads every view, and joins a
-- shop's bigint customer key; every view column has a comment; the
-- customer profile agrees with customer_rfm() and points_balance().
--
-- Before 0.3.0 the score columns were of type loyalty.rfm_score, whose
-- operators live in schema loyalty: the analyst's joins and filters below
-- failed with 42883 (operator does not exist).
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
RESET search_path;

-- no live RFM state left by an earlier file: snapshots numbered from 1
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.segment_change;
DELETE FROM loyalty.segment_summary;
DELETE FROM loyalty.segment_snapshot;
DO $$ BEGIN PERFORM setval('loyalty.segment_snapshot_snapshot_id_seq', 1, false); END $$;

-- a shop whose customer key is a bigint, tracked by loyalty
CREATE SCHEMA bi;
CREATE TABLE bi.orders (
	order_id	bigserial PRIMARY KEY,
	customer_id	bigint NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2) NOT NULL
);
-- the expression index the join o.customer_id::text = <view>.customer_id uses (doc/bi.md)
CREATE INDEX orders_customer_text ON bi.orders ((customer_id::text) COLLATE "C");
INSERT INTO bi.orders (customer_id, ordered_at, amount)
SELECT c, timestamptz '2026-06-30 12:00+00' - ((c * 37 + k * 53) % 420) * interval '1 day'
		  - k * interval '1 hour',
	   10 + (c * k * 13) % 90
FROM generate_series(1, 24) c, generate_series(1, 1 + c % 6) k;
SELECT * FROM loyalty.track_orders('bi.orders', 'customer_id', 'ordered_at', 'amount');

-- two refreshes on one day, one in the next month
SELECT snapshot_id, scored_as_of, customers FROM loyalty.refresh_segments('2026-06-01 00:00+00');
SELECT snapshot_id, scored_as_of, customers FROM loyalty.refresh_segments('2026-06-01 18:00+00');
SELECT snapshot_id, scored_as_of, customers FROM loyalty.refresh_segments('2026-07-01 00:00+00');
-- late orders, dated after the last refresh's as_of, folded in
INSERT INTO bi.orders (customer_id, ordered_at, amount)
VALUES (3, '2026-07-10 09:00+00', 40), (4, '2026-07-10 10:00+00', 25), (99, '2026-07-11 10:00+00', 60);
SELECT * FROM loyalty.fold_tracking();

-- points: tiers, a purchase rule (pending 14 days, never expiring) and an
-- action rule (expiring after a month)
INSERT INTO loyalty.tier (name, rank, threshold) VALUES ('Bronze', 0, 0), ('Silver', 1, 100);
INSERT INTO loyalty.earning_rule (name, event, points_per_unit, pending_days, expiry_months)
VALUES ('bi purchase', 'purchase', 1, 14, 0);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, expiry_months)
VALUES ('bi review', 'review', 50, 1);
-- 1: pending points that became available since (the account still says pending)
SELECT points FROM loyalty.earn_for_order(customer_id => '1', reference => 'bi-o-1', amount => 80,
										  at => '2026-01-10 12:00+00');
-- 2: points that expired since (the account still says available)
SELECT points FROM loyalty.earn_for_action(customer_id => '2', action => 'review', reference => 'bi-r-2',
										   at => '2026-01-10 12:00+00');
-- 3: pending now, and Silver
SELECT points FROM loyalty.earn_for_order(customer_id => '3', reference => 'bi-o-3', amount => 120);
-- a customer with points and no tracked order
SELECT points FROM loyalty.earn_for_action(customer_id => 'bi-points-only', action => 'review',
										   reference => 'bi-r-p');

-- the analyst
CREATE ROLE bi_analyst;
SELECT loyalty.grant_access('bi_analyst', 'analyst');
GRANT USAGE ON SCHEMA bi TO bi_analyst;
GRANT SELECT ON bi.orders TO bi_analyst;

SET ROLE bi_analyst;
SHOW search_path;

-- joins and filters on the score (42883 before 0.3.0)
SELECT count(*) AS scored, count(m.segment) AS joined,
	   count(*) FILTER (WHERE m.segment = c.segment) AS same_segment
FROM loyalty.customer_segment c JOIN loyalty.segment_map m USING (score);
SELECT customer_id, score, r, f, m, segment
FROM loyalty.customer_segment WHERE score = '555' ORDER BY customer_id;
SELECT score, count(*) FROM loyalty.customer_segment
WHERE score IN ('555', '554', '545', '111', '112') GROUP BY score ORDER BY score;
SELECT customer_id, score FROM loyalty.customer_segment
WHERE score > '500' AND score <> '555' ORDER BY score DESC, customer_id LIMIT 3;
SELECT count(*) AS profile_map_agree
FROM loyalty.customer_profile p JOIN loyalty.segment_map m USING (score)
WHERE p.segment = m.segment AND (p.r, p.f, p.m) = (m.r, m.f, m.m);
SELECT r, count(*) FROM loyalty.customer_segment GROUP BY r ORDER BY r;
SELECT count(*) AS history_rows FROM loyalty.segment_history h
JOIN loyalty.segment_map m USING (score) WHERE h.segment = m.segment;

-- the shop's bigint key: o.customer_id::text = customer_id
SELECT count(*) AS order_rows, count(DISTINCT c.customer_id) AS customers
FROM bi.orders o JOIN loyalty.customer_profile c ON o.customer_id::text = c.customer_id;

-- the customer profile
SELECT customer_id, last_order, recency_days, frequency, monetary, r, f, m, score, segment,
	   segment_since, tier, points_available, points_pending
FROM loyalty.customer_profile
WHERE customer_id IN ('1', '2', '3', '4', '99', 'bi-points-only') ORDER BY customer_id;

-- a customer's segment history
SELECT customer_id, snapshot_id, as_of, previous_segment, segment, score, until, is_current
FROM loyalty.segment_history WHERE customer_id IN ('3', '5') ORDER BY customer_id, snapshot_id;

-- the trend: a row for every segment at every snapshot, one snapshot per day and month
SELECT snapshot_id, day, month, last_of_day, last_of_month, count(*) AS segments,
	   count(*) FILTER (WHERE customers = 0) AS empty_segments, sum(customers) AS customers
FROM loyalty.segment_trend GROUP BY 1, 2, 3, 4, 5 ORDER BY 1;
SELECT segment, customers, revenue, customer_share
FROM loyalty.segment_trend WHERE last_of_month AND month = '2026-07-01' ORDER BY display_order;

-- any other search_path works alike
SET search_path = '';
SELECT count(*) AS joined FROM loyalty.customer_segment JOIN loyalty.segment_map USING (score)
WHERE score IN ('555', '554') OR score = '111';
SET search_path = pg_catalog, pg_temp;
SELECT count(*) AS joined FROM loyalty.customer_profile JOIN loyalty.segment_map USING (score);
RESET search_path;

-- every view the analyst may read, read
DO $$
DECLARE
	v regclass;
	n bigint;
BEGIN
	FOR v IN SELECT c.oid::regclass FROM pg_catalog.pg_class c
			 WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind = 'v'
			   AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
			 ORDER BY c.relname LOOP
		EXECUTE pg_catalog.format('SELECT count(*) FROM %s', v) INTO n;
		RAISE WARNING 'read %', v;
	END LOOP;
END $$;
RESET ROLE;

-- every view registered for analysts is one the analyst read above
-- (CASE: the planner may evaluate the privilege test before the type test)
SELECT r.object_name FROM loyalty.access_rule r
WHERE r.level = 'analyst' AND r.object_type = 'view'
  AND CASE WHEN r.object_type = 'view'
		   THEN NOT has_table_privilege('bi_analyst', r.object_name, 'SELECT') END;

-- no view column lacks a comment
SELECT c.relname, a.attname
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('v', 'm')
  AND col_description(c.oid, a.attnum) IS NULL
ORDER BY 1, 2;

-- the only view columns of a type outside pg_catalog are the typed scores
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('v', 'm')
  AND t.typnamespace <> 'pg_catalog'::regnamespace
ORDER BY 1, 2;

-- the profile's RFM values are customer_rfm's as of the last refresh
CREATE FUNCTION pg_temp.profile_vs_customer_rfm()
RETURNS TABLE (customers bigint, differences bigint)
LANGUAGE sql AS $$
	SELECT count(*),
		   count(*) FILTER (WHERE (p.last_order, p.recency_days, p.frequency, p.score, p.segment,
								   p.segment_since, p.orders_total, p.spend_total)
								  IS DISTINCT FROM
								  (r.last_order, nullif(r.recency_days, -1), r.frequency, r.score::text,
								   r.segment, r.segment_since, r.orders_total, r.spend_total)
							   OR p.monetary <> r.monetary)
	FROM loyalty.customer_profile p
	CROSS JOIN LATERAL loyalty.customer_rfm(p.customer_id, p.scored_as_of) r
	WHERE p.scored_as_of IS NOT NULL
$$;
SELECT * FROM pg_temp.profile_vs_customer_rfm();
-- a customer whose last order is after the refresh's as_of: recency from the day buckets
SELECT p.customer_id, p.last_order > p.scored_as_of AS ordered_since, p.recency_days, r.recency_days AS customer_rfm
FROM loyalty.customer_profile p, loyalty.customer_rfm(p.customer_id, p.scored_as_of) r
WHERE p.customer_id IN ('3', '4') ORDER BY 1;
-- the average basket as monetary
UPDATE loyalty.rfm_config SET monetary = 'average';
SELECT snapshot_id FROM loyalty.refresh_segments('2026-07-12 00:00+00');
SELECT * FROM pg_temp.profile_vs_customer_rfm();
SELECT customer_id, frequency, monetary FROM loyalty.customer_profile
WHERE customer_id IN ('5', '99') ORDER BY 1;

-- the profile's points are points_balance()'s now, not the account's as last settled
SELECT count(*) AS accounts,
	   count(*) FILTER (WHERE (p.points_available, p.points_pending, p.tier)
							  IS DISTINCT FROM (b.available, b.pending, b.tier)) AS differences,
	   count(*) FILTER (WHERE (p.points_available, p.points_pending)
							  IS DISTINCT FROM (a.available, a.pending)) AS account_columns_stale
FROM loyalty.points_account a
JOIN loyalty.customer_profile p ON p.customer_id = a.customer_id
CROSS JOIN LATERAL loyalty.points_balance(a.customer_id) b;

-- the days of segment_trend are the program's (loyalty.settings)
INSERT INTO loyalty.settings (timezone) VALUES ('America/New_York');
SELECT DISTINCT snapshot_id, as_of, day, last_of_day FROM loyalty.segment_trend ORDER BY 1;
DELETE FROM loyalty.settings;

-- clean up: the ledger cannot be emptied, so start the extension afresh
SELECT loyalty.untrack_orders('bi.orders');
SELECT loyalty.revoke_access('bi_analyst', 'analyst');
DROP SCHEMA bi CASCADE;
DROP ROLE bi_analyst;
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
