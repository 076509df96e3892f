-- Demo part 60: the BI views as a BI tool sees them.  A role with the
-- analyst level and the default search_path (no loyalty on it) queries the
-- views as they are: joins and filters on the text score, the customer
-- profile, a segment history, the daily trend, and the shop's bigint
-- customer key joined to loyalty's text key.
\pset footer off
SET TimeZone = 'UTC';

\echo
\echo '=== BI: the analyst views, from a role with the default search_path ==='
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'loyalty_demo_analyst') THEN
		CREATE ROLE loyalty_demo_analyst;
	END IF;
END $$;
SELECT loyalty.grant_access('loyalty_demo_analyst', 'analyst');
GRANT USAGE ON SCHEMA shop TO loyalty_demo_analyst;
GRANT SELECT ON shop.orders TO loyalty_demo_analyst;
-- the index the shop-key join below uses (collation "C", as loyalty's keys)
CREATE INDEX IF NOT EXISTS orders_customer_id_text ON shop.orders ((customer_id::text) COLLATE "C");

SET ROLE loyalty_demo_analyst;
RESET search_path;
SELECT current_user AS "role", current_setting('search_path') AS search_path;

\echo
\echo '--- scores are text (''543''): filter and join them with no search_path ---'
SELECT c.score, c.r, c.f, c.m, m.segment, count(*) AS customers
FROM loyalty.customer_segment c JOIN loyalty.segment_map m USING (score)
WHERE c.score IN ('555', '554', '545')
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1 DESC;

\echo
\echo '--- customer_profile: RFM values and scores of the last refresh, segment, tier, points now ---'
SELECT customer_id, last_order::date, recency_days, frequency, monetary, score, segment,
	   segment_since::date, tier, points_available, points_pending
FROM loyalty.customer_profile
WHERE tier IS NOT NULL
ORDER BY points_available DESC, customer_id LIMIT 5;

\echo
\echo '--- customers per segment and tier ---'
SELECT coalesce(segment, '(not scored)') AS segment,
	   count(*) FILTER (WHERE tier = 'Platinum') AS platinum,
	   count(*) FILTER (WHERE tier = 'Gold') AS gold,
	   count(*) FILTER (WHERE tier = 'Silver') AS silver,
	   count(*) FILTER (WHERE tier = 'Bronze') AS bronze,
	   count(*) FILTER (WHERE tier IS NULL) AS no_tier,
	   sum(points_available) AS points_available
FROM loyalty.customer_profile
GROUP BY segment ORDER BY min(score) DESC NULLS LAST;

\echo
\echo '--- segment_history: the customers who moved at the last refresh, with where from ---'
SELECT customer_id, previous_segment, segment, as_of::date, score
FROM loyalty.segment_history
WHERE is_current AND previous_segment IS NOT NULL
ORDER BY customer_id LIMIT 5;

\echo
\echo '--- segment_trend: one snapshot per day (last_of_day), empty segments as 0 ---'
SELECT day, sum(customers) FILTER (WHERE segment = 'Champions') AS champions,
	   sum(customers) FILTER (WHERE segment = 'At Risk') AS at_risk,
	   sum(customers) FILTER (WHERE segment = 'New') AS new,
	   sum(customers) AS all_segments
FROM loyalty.segment_trend WHERE last_of_day GROUP BY day ORDER BY day;

\echo
\echo '--- the shop''s bigint key joined as o.customer_id::text = c.customer_id: October revenue per segment ---'
SELECT c.segment, count(DISTINCT o.customer_id) AS buyers, sum(o.amount) AS revenue_eur
FROM shop.orders o
JOIN loyalty.customer_profile c ON o.customer_id::text = c.customer_id
WHERE o.status = 'completed' AND o.ordered_at >= '2026-10-01' AND o.ordered_at < '2026-11-01'
GROUP BY c.segment ORDER BY revenue_eur DESC;

\echo
\echo '--- every view column is described (COMMENT ON COLUMN), e.g. customer_profile ---'
SELECT a.attname AS "column", col_description(a.attrelid, a.attnum) AS description
FROM pg_attribute a
WHERE a.attrelid = 'loyalty.customer_profile'::regclass AND a.attnum > 0
ORDER BY a.attnum LIMIT 6;

RESET ROLE;
SELECT loyalty.revoke_access('loyalty_demo_analyst', 'analyst');
REVOKE ALL ON shop.orders FROM loyalty_demo_analyst;
REVOKE ALL ON SCHEMA shop FROM loyalty_demo_analyst;
DROP ROLE loyalty_demo_analyst;
