-- Demo part 70: a referral chain on the sample shop.
--
-- The shop's best customer invites a customer who never ordered; that
-- friend's first order rewards both (pending during the 14-day return
-- window), the friend gets a code in turn and invites another newcomer; a
-- self-referral and a reused email are refused with their reasons; a refund
-- takes one pair of rewards back; then the leaderboard and the KPIs.
\pset footer off
SET search_path = loyalty, public;

\echo
\echo '=== referrals ==='
\echo
\echo '--- the program: 200 points to the referrer (300 from the 3rd friend), 100 to the friend, orders from 30 ---'
INSERT INTO referral_program (program, referrer_points, referee_points, return_window_days, min_order_amount,
							  referrer_min_orders, cap_per_period, cap_lifetime, point_value)
VALUES ('friends', 200, 100, 14, 30, 1, 3, 10, 0.01);
INSERT INTO referral_reward_tier (program, from_count, referrer_points) VALUES ('friends', 3, 300), ('friends', 10, 500);

SELECT o.customer_id::text AS champion FROM shop.orders o
GROUP BY o.customer_id ORDER BY count(*) DESC, o.customer_id LIMIT 1 \gset
SELECT string_agg(c.customer_id::text, ' ' ORDER BY c.customer_id) AS newcomers
FROM (SELECT c.customer_id FROM shop.customers c
	  WHERE NOT EXISTS (SELECT 1 FROM shop.orders o WHERE o.customer_id = c.customer_id)
	  ORDER BY c.customer_id LIMIT 3) c \gset
SELECT split_part(:'newcomers', ' ', 1) AS n1, split_part(:'newcomers', ' ', 2) AS n2,
	   split_part(:'newcomers', ' ', 3) AS n3 \gset

\echo
\echo '--- the champion asks for a personal code (the same code on every call) ---'
SELECT referral_code(:'champion', 'friends',
					 email => (SELECT email FROM shop.customers WHERE customer_id = :'champion'::bigint)) AS champion_code \gset
SELECT :'champion' AS referrer, :'champion_code' AS code,
	   referral_code(:'champion', 'friends') = :'champion_code' AS same_again;

\echo
\echo '--- a newcomer joins with it (typed in lower case, without dashes) and orders 45.90 ---'
SELECT * FROM referral_join(:'n1', 'signup-' || :'n1', lower(replace(:'champion_code', '-', '')),
							email => (SELECT email FROM shop.customers WHERE customer_id = :'n1'::bigint));
BEGIN;
INSERT INTO shop.orders (order_id, customer_id, ordered_at, status, shipping, amount)
SELECT max(order_id) + 1, :'n1'::bigint, now(), 'completed', 4.90, 45.90 FROM shop.orders
RETURNING order_id AS o1 \gset
SELECT * FROM referral_order(:'n1', :'o1', 45.90);
COMMIT;
SELECT customer_id, kind, points, reference FROM points_ledger WHERE reference LIKE 'referral:%' ORDER BY entry_id;
SELECT :'n1' AS customer, available, pending FROM points_balance(:'n1');

\echo
\echo '--- the chain goes on: the friend refers another newcomer, who orders 25 (under 30) then 60 ---'
SELECT referral_code(:'n1', 'friends', vanity => 'FRIENDOFCHAMP') AS n1_code;
SELECT status, referrer_id FROM referral_join(:'n2', 'signup-' || :'n2', 'FRIENDOFCHAMP');
BEGIN;
INSERT INTO shop.orders (order_id, customer_id, ordered_at, status, shipping, amount)
SELECT max(order_id) + 1, :'n2'::bigint, now(), 'completed', 4.90, 25 FROM shop.orders
RETURNING order_id AS o2 \gset
SELECT status, reason FROM referral_order(:'n2', :'o2', 25);
COMMIT;
BEGIN;
INSERT INTO shop.orders (order_id, customer_id, ordered_at, status, shipping, amount)
SELECT max(order_id) + 1, :'n2'::bigint, now(), 'completed', 4.90, 60 FROM shop.orders
RETURNING order_id AS o3 \gset
SELECT status, referrer_points, referee_points, pending_until::date FROM referral_order(:'n2', :'o3', 60);
COMMIT;

SELECT set_config('demo.champion', :'champion', false), set_config('demo.code', :'champion_code', false),
	   set_config('demo.n3', :'n3', false),
	   set_config('demo.n1_email', (SELECT email FROM shop.customers WHERE customer_id = :'n1'::bigint), false) \gset

\echo
\echo '--- abuse refused, each with its reason: the champion''s own code; a third newcomer using the first friend''s email (plus tag added) on the first friend''s code ---'
DO $$
DECLARE
	d text;
	calls text[] := ARRAY[
		format('SELECT loyalty.referral_join(%L, %L, %L)', current_setting('demo.champion'), 'x', current_setting('demo.code')),
		format('SELECT loyalty.referral_join(%L, %L, %L, email => %L)', current_setting('demo.n3'), 'x', 'FRIENDOFCHAMP',
			   replace(current_setting('demo.n1_email'), '@', '+promo@'))];
	q text;
BEGIN
	FOREACH q IN ARRAY calls LOOP
		BEGIN
			EXECUTE q;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
			RAISE NOTICE '% %: %', SQLSTATE, SQLERRM, d;
		END;
	END LOOP;
END $$;

\echo
\echo '--- the second friend returns the order: both rewards are taken back ---'
BEGIN;
UPDATE shop.orders SET status = 'refunded' WHERE order_id = :'o3'::bigint;
SELECT * FROM referral_refund(:'n2', :'o3');
COMMIT;

\echo
\echo '--- the leaderboard and the referral KPIs ---'
SELECT program, referrer_id, code, joined, successful, pending, points_earned, rank
FROM referral_leaderboard ORDER BY rank, referrer_id;
SELECT program, codes, invites_used, conversions, conversion_rate, revoked, points_cost, cost, qualifying_revenue, roi
FROM referral_kpi;
