--
-- referral programs: codes, joins, abuse rules, rewards pending until the
-- return window closes, clawback on refund, rising rewards, leaderboard, KPIs
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
-- one transaction, rolled back: the tests after this one see no trace
BEGIN;

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	d text;
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
	-- generated codes are random: masked
	RETURN regexp_replace(SQLSTATE || ': ' || SQLERRM || ' ' || COALESCE(d, ''),
						  'REF-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]+', 'REF-####-####-###', 'g');
END $$;

--
-- identifiers: the exact normal forms
--
SELECT k, v, loyalty.referral_normalize(k, v) FROM (VALUES
	('email', '  Ali.Ce+promo@GoogleMail.com '),
	('email', 'a.l.i.c.e@gmail.com'),
	('email', 'Jean.Dupont+x@Example.FR'),
	('email', 'first@second@shop.com'),
	('email', 'no-at-sign'),
	('email', '+tag@gmail.com'),
	('email', 'x@'),
	('phone', '+33 (0)6 12-34-56-78'),
	('phone', '0033 6 12 34 56 78'),
	('phone', 'none'),
	('device', '  ABCDEF0123 '),
	('payment', '')) AS t(k, v);
SELECT pg_temp.err($$SELECT loyalty.referral_normalize('fax', '1')$$);

--
-- a program: 100 points to the referrer (150 from the 3rd friend, 300 from
-- the 10th), 50 to the friend, orders from 20, 14-day return window,
-- at most 3 successful referrals per month and 4 ever
--
INSERT INTO loyalty.referral_program (program, referrer_points, referee_points, return_window_days,
									  min_order_amount, cap_per_period, cap_lifetime, point_value)
VALUES ('friends', 100, 50, 14, 20, 3, 4, 0.01);
INSERT INTO loyalty.referral_reward_tier (program, from_count, referrer_points)
VALUES ('friends', 3, 150), ('friends', 10, 300);
INSERT INTO loyalty.referral_program (program, active) VALUES ('closed', false);

--
-- codes: created on demand, the same on every call
--
SELECT loyalty.referral_code('ann', 'friends', email => 'Ann.Smith+ref@gmail.com', phone => '+44 7700 900123') AS ann_code \gset
SELECT :'ann_code' LIKE 'REF-____-____-%' AS from_pattern,
	   loyalty.coupon_code_check(:'ann_code') IS NULL AS valid_check_characters,
	   loyalty.referral_code('ann', 'friends') = :'ann_code' AS same_again;
SELECT loyalty.referral_code('bob', 'friends', vanity => 'BOBSFRIENDS', device_hash => 'DEV-BOB');
SELECT loyalty.referral_code('bob', 'friends', vanity => 'bobsfriends');
SELECT kind, converted FROM loyalty.referral_code ORDER BY customer_id;
-- a vanity word of another referrer, another vanity word later, a closed or unknown program
SELECT pg_temp.err($$SELECT loyalty.referral_code('cid', 'friends', vanity => 'BOBSFRIENDS')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_code('bob', 'friends', vanity => 'BOBBY')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_code('cid', 'closed')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_code('cid', 'nope')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_code(NULL, 'friends')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_code('cid', 'friends', email => 'nothing')$$);
-- a refused call leaves no code behind
SELECT count(*) FROM loyalty.referral_code_key WHERE customer_id = 'cid';

--
-- joining: once, idempotent on the reference
--
SELECT * FROM loyalty.referral_join('f1', 'join-f1', 'bobsfriends', at => '2026-01-05', email => 'f1@shop.test');
SELECT * FROM loyalty.referral_join('f1', 'join-f1', 'BOBS-FRIENDS', at => '2026-01-06');
SELECT pg_temp.err($$SELECT loyalty.referral_join('f1', 'join-f1-again', 'BOBSFRIENDS')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_join('f1', 'join-f1', '$$ || :'ann_code' || $$')$$);
SELECT count(*) AS referrals FROM loyalty.referral;

--
-- every refusal has its reason, and leaves nothing behind
--
-- LR001: unknown code, bad check character
SELECT pg_temp.err($$SELECT loyalty.referral_join('f2', 'j', 'NOSUCHCODE')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_join('f2', 'j', '$$ || overlay(:'ann_code' placing (CASE WHEN substr(:'ann_code', 5, 1) = 'A' THEN 'B' ELSE 'A' END) from 5 for 1) || $$')$$);
-- LR003: self-referral by customer key, by email (gmail dots and plus tag), by phone
SELECT pg_temp.err($$SELECT loyalty.referral_join('ann', 'j', '$$ || :'ann_code' || $$')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_join('ann2', 'j', '$$ || :'ann_code' || $$', email => 'annsmith@googlemail.com')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_join('ann3', 'j', '$$ || :'ann_code' || $$', phone => '0044-7700-900-123')$$);
SELECT pg_temp.err($$SELECT loyalty.referral_join('bob2', 'j', '$$ || :'ann_code' || $$', device_hash => 'dev-bob')$$);
-- LR008: an identifier another referee already used
SELECT pg_temp.err($$SELECT loyalty.referral_join('f2', 'j', '$$ || :'ann_code' || $$', email => 'F1+second@Shop.Test')$$);
-- LR005: not a new customer (a purchase earning in the ledger)
SELECT (loyalty.points_earn_for_order('old', 'old-order-1', 30, at => '2026-01-01')).customer_id;
SELECT pg_temp.err($$SELECT loyalty.referral_join('old', 'j', '$$ || :'ann_code' || $$')$$);
-- LR002: program switched off
UPDATE loyalty.referral_program SET active = false WHERE program = 'friends';
SELECT pg_temp.err($$SELECT loyalty.referral_join('f2', 'j', '$$ || :'ann_code' || $$')$$);
UPDATE loyalty.referral_program SET active = true WHERE program = 'friends';
-- LR006: the referrer must have an order (configurable)
UPDATE loyalty.referral_program SET referrer_min_orders = 1 WHERE program = 'friends';
SELECT pg_temp.err($$SELECT loyalty.referral_join('f2', 'j', '$$ || :'ann_code' || $$')$$);
SELECT (loyalty.points_earn_for_order('ann', 'ann-order-1', 40, at => '2026-01-02')).customer_id;
SELECT program, referrer_id, status FROM loyalty.referral_join('f2', 'join-f2', :'ann_code', at => '2026-01-05', email => 'f2@shop.test');
UPDATE loyalty.referral_program SET referrer_min_orders = 0 WHERE program = 'friends';
-- nothing of the refusals was kept: no referral row, no claimed identifier
SELECT customer_id, referrer_id FROM loyalty.referral ORDER BY customer_id;
SELECT customer_id, kind FROM loyalty.referral_claim ORDER BY customer_id, kind;
SELECT pg_temp.err($$SELECT loyalty.referral_join('f3', 'j', 'BOBSFRIENDS', at => now() + interval '1 day')$$);

--
-- the first qualifying purchase rewards both sides, pending 14 days
--
SELECT * FROM loyalty.referral_order('f1', 'f1-o1', 19.99, at => '2026-01-10');
SELECT * FROM loyalty.referral_order('nobody', 'x-o1', 50, at => '2026-01-10');
SELECT * FROM loyalty.referral_order('f1', 'f1-o2', 25, at => '2026-01-10');
SELECT * FROM loyalty.referral_order('f1', 'f1-o2', 25, at => '2026-01-10');
SELECT * FROM loyalty.referral_order('f1', 'f1-o3', 80, at => '2026-01-11');
SELECT customer_id, kind, points, reference FROM loyalty.points_ledger
WHERE reference LIKE 'referral:%' ORDER BY entry_id;
SELECT c, d, b.available, b.pending
FROM (VALUES ('f1', '2026-01-20'::timestamptz), ('bob', '2026-01-20'), ('bob', '2026-01-25')) AS v(c, d),
	 LATERAL loyalty.points_balance(c, at => d) b;

--
-- rising rewards and caps: bob's 2nd and 3rd friends (150 from the 3rd),
-- then the month cap (3) refuses the 4th; next month the 4th succeeds and the
-- lifetime cap (4) refuses the 5th
--
SELECT c.n, j.status FROM generate_series(2, 6) AS c(n),
	 LATERAL loyalty.referral_join('f1' || c.n, 'join', 'BOBSFRIENDS', at => '2026-01-12') j
ORDER BY c.n;
SELECT c.n, o.status, o.reason, o.referrer_points
FROM (VALUES (2, '2026-01-20'::timestamptz), (3, '2026-01-20'), (4, '2026-01-21'), (5, '2026-02-02'), (6, '2026-02-02')) AS c(n, d),
	 LATERAL loyalty.referral_order('f1' || c.n, 'f1' || c.n || '-o1', 30, at => c.d) o
ORDER BY c.n;
-- bob has 4: a join is now refused up front
SELECT pg_temp.err($$SELECT loyalty.referral_join('f17', 'j', 'BOBSFRIENDS')$$);
SELECT customer_id, program, period_start, converted FROM loyalty.referral_period ORDER BY period_start;

--
-- a refund of the qualifying order takes both rewards back and frees the cap
--
SELECT * FROM loyalty.referral_refund('f1', 'f1-o1', at => '2026-02-03');
SELECT * FROM loyalty.referral_refund('f12', 'f12-o1', at => '2026-02-03');
SELECT * FROM loyalty.referral_refund('f12', 'f12-o1', at => '2026-02-03');
SELECT customer_id, kind, points, reference FROM loyalty.points_ledger
WHERE reference LIKE 'referral:f12:%' ORDER BY entry_id;
SELECT available, pending, debt FROM loyalty.points_balance('f12', at => '2026-02-03');
SELECT converted FROM loyalty.referral_code WHERE customer_id = 'bob';
SELECT * FROM loyalty.referral_order('f12', 'f12-o2', 30, at => '2026-02-04');
-- the freed unit goes to the next friend
SELECT * FROM loyalty.referral_join('f18', 'join', 'BOBSFRIENDS', at => '2026-02-04');
SELECT status, referrer_points FROM loyalty.referral_order('f18', 'f18-o1', 30, at => '2026-02-05');

--
-- good standing at the purchase: a referrer in points debt is not rewarded
--
SELECT * FROM loyalty.referral_order('f2', 'f2-o1', 30, at => '2026-02-06');
SELECT loyalty.referral_join('f19', 'join', :'ann_code', at => '2026-02-06') IS NOT NULL;
-- ann spends her reward once available, then f2 returns the order: ann owes it
SELECT (loyalty.points_spend('ann', 'ann-spend', 100, at => '2026-02-25')).available;
SELECT status, referrer_points FROM loyalty.referral_refund('f2', 'f2-o1', at => '2026-02-26');
SELECT available, pending, debt FROM loyalty.points_balance('ann', at => '2026-02-26');
SELECT * FROM loyalty.referral_order('f19', 'f19-o1', 30, at => '2026-02-27');
SELECT * FROM loyalty.referral_order('f19', 'f19-o2', 30, at => '2026-02-28');

--
-- the analyst views
--
SELECT program, referrer_id, joined, successful, points_earned, rank
FROM loyalty.referral_leaderboard ORDER BY program, rank, referrer_id;
SELECT program, codes, invites_used, conversions, conversion_rate, refused, revoked,
	   points_cost, cost, qualifying_revenue, referred_revenue, roi
FROM loyalty.referral_kpi ORDER BY program;
-- ledger, lots and balances agree, ann included: her reward, spent and
-- then clawed back into debt, is out of her lifetime total too
SELECT * FROM loyalty.check_integrity();

ROLLBACK;
