-- Demo part 75: missions on the sample shop.
--
-- Two missions: order 3 months in a row (a streak, 300 points) and spend
-- 150 in a month (each month, 50 points, pending 14 days).  shop.orders is
-- tracked (part 20): the tracking trigger feeds the new orders to the
-- missions, no call and no trigger of the shop's own; reading progress
-- folds them.  Two newcomers order from August to November 2026: one keeps
-- the streak, the other misses September and starts over; the refund of
-- the order that completed both of October's missions, reported on
-- 2026-10-15 under the tracked order's reference, undoes the monthly one
-- (its reward was still pending) and leaves the streak's (already
-- settled).
\pset footer off
SET search_path = loyalty, public;

\echo
\echo '=== missions ==='
INSERT INTO mission (mission_id, description, kind, target, recurrence, reward_points)
VALUES ('streak-3', 'Order 3 months in a row', 'streak', 3, 'once', 300);
INSERT INTO mission (mission_id, description, kind, target, period, recurrence, reward_points, pending_days)
VALUES ('spend-150', 'Spend 150 in a month', 'spend', 150, 'month', 'each_period', 50, 14);

\echo
\echo '--- no trigger of the shop''s own: the tracked orders feed the missions ---'

-- two customers who sign up now (earlier parts gave every sample customer
-- orders, points or offers already)
INSERT INTO shop.customers (customer_id, email, city, signup_at, marketing_consent)
SELECT x.m + i, 'mission-' || i || '@example.com', 'Lyon', '2026-08-01', true
FROM (SELECT max(customer_id) AS m FROM shop.customers) x, generate_series(1, 2) i;
SELECT max(customer_id) - 1 AS keeper, max(customer_id) AS skipper FROM shop.customers \gset

INSERT INTO shop.orders (order_id, customer_id, ordered_at, status, shipping, amount)
SELECT (SELECT max(order_id) FROM shop.orders) + row_number() OVER (ORDER BY v.at, v.c), v.c, v.at, 'completed', 4.90, v.amount
FROM (VALUES (:'keeper'::bigint, timestamptz '2026-08-12 10:00+00', 60.00),
			 (:'keeper', '2026-09-03 18:30+00', 95.00),
			 (:'keeper', '2026-09-21 09:15+00', 70.00),
			 (:'keeper', '2026-10-08 12:00+00', 160.00),
			 (:'skipper', '2026-08-20 11:00+00', 30.00),
			 (:'skipper', '2026-10-02 16:45+00', 55.00),
			 (:'skipper', '2026-11-05 08:00+00', 35.00)) AS v(c, at, amount)
ORDER BY v.at;

\echo
\echo '--- progress as each customer sees it (on 2026-11-06) ---'
SELECT p.customer, m.mission_id, m.progress, m.status, m.message
FROM (VALUES (:'keeper'), (:'skipper')) AS p(customer),
	 LATERAL mission_progress(p.customer, at => '2026-11-06') m
ORDER BY p.customer, m.mission_id;

\echo
\echo '--- the keeper''s rewards: September''s and October''s spend (pending 14 days), the streak ---'
SELECT customer_id, kind, points, reference, effective_at::date FROM points_ledger
WHERE customer_id = :'keeper' ORDER BY entry_id;

\echo
\echo '--- the October order (160) is returned on 2026-10-15: October''s spend is undone, the streak stands ---'
SELECT DISTINCT k.source_ref AS oct_order FROM mission_contribution k
WHERE k.customer_id = :'keeper' AND k.at = '2026-10-08 12:00+00' \gset
\echo 'the tracked order''s reference:' :'oct_order'
SELECT * FROM mission_refund(:'keeper', :'oct_order', at => '2026-10-15');
SELECT customer_id, kind, points, reference FROM points_ledger WHERE customer_id = :'keeper' ORDER BY entry_id;

\echo
\echo '--- the analyst view ---'
SELECT * FROM mission_stats ORDER BY mission_id;
