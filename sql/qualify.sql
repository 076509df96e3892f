--
-- qualify: every offer a customer could use on a cart (issue 15, item 7):
-- codes bound to the customer, public codes and points rewards, with the
-- discount each would give and the reason for those that do not apply.
-- Each answer is the one validate_coupon gives for the code.  Read-only.
--
-- (in a database of its own: every public code of the database is an offer)
\set regress_db :DBNAME
CREATE DATABASE qualify_db;
\c qualify_db
CREATE EXTENSION loyalty;
SELECT loyalty.create_campaign('q ten', 'percent', percent_off => 10) AS c_ten \gset
SELECT loyalty.create_campaign('q five', 'fixed', amount_off => 5, min_order_amount => 50) AS c_five \gset
SELECT loyalty.create_campaign('q reward', 'fixed', amount_off => 7) AS c_reward \gset
SELECT loyalty.create_campaign('q ended', 'fixed', amount_off => 1,
							   starts_at => now() - interval '2 days', ends_at => now() - interval '1 day') AS c_ended \gset
SELECT loyalty.create_campaign('q paused', 'fixed', amount_off => 2, paused => true) AS c_paused \gset
SELECT loyalty.create_campaign('q usd', 'fixed', amount_off => 3, currency => 'USD') AS c_usd \gset
SELECT loyalty.create_campaign('q exclusive', 'fixed', amount_off => 4, exclusive => true) AS c_excl \gset
SELECT loyalty.add_public_code(:c_ten, 'QTEN') IS NOT NULL AS added;
SELECT loyalty.add_public_code(:c_ended, 'QENDED') IS NOT NULL AS added;
SELECT loyalty.add_public_code(:c_paused, 'QPAUSED') IS NOT NULL AS added;
SELECT loyalty.add_public_code(:c_usd, 'QDOLLAR') IS NOT NULL AS added;
SELECT loyalty.add_public_code(:c_excl, 'QSOLO') IS NOT NULL AS added;
-- bound codes: one each for alice and bob; unbound generated codes are not
-- offers (whoever holds one types it in)
SELECT loyalty.generate_codes(:c_five, 2, 'QF-#####', ARRAY['alice', 'bob']);
SELECT loyalty.generate_codes(:c_ten, 3, 'QT-#####');
INSERT INTO loyalty.points_reward (campaign_id, points) VALUES (:c_reward, 100);

-- a small cart: the bound code's minimum is not met, the reward costs
-- points alice does not have; the ended campaign is not listed
SELECT offer, CASE WHEN offer = 'bound_code' THEN 'QF-*' ELSE code END AS code,
	   campaign, applies, reason, discount, points
FROM loyalty.qualify('alice', '{"amount": 40}');
-- a bigger cart, and points for the reward
SELECT loyalty.adjust_points('alice', 150, 'qualify-gift', 'gift') IS NOT NULL AS credited;
SELECT offer, campaign, applies, reason, discount, points
FROM loyalty.qualify('alice', '{"amount": 60}');
-- each answer is validate_coupon's
SELECT bool_and((q.applies, q.reason, q.discount) IS NOT DISTINCT FROM (v.valid, v.reason, v.discount)) AS same
FROM loyalty.qualify('alice', '{"amount": 60}') q,
	 LATERAL loyalty.validate_coupon(q.code, 'alice', '{"amount": 60}'::jsonb) v
WHERE q.code IS NOT NULL;
-- another customer sees their own bound code, never alice's
SELECT count(*) FILTER (WHERE offer = 'bound_code') AS bound,
	   count(*) FILTER (WHERE offer = 'points_reward' AND reason = 'insufficient_points') AS rewards_too_dear
FROM loyalty.qualify('bob', '{"amount": 60}');
SELECT count(*) AS carol_bound FROM loyalty.qualify('carol', '{"amount": 60}') WHERE offer = 'bound_code';

-- stacking: with the order's exclusive coupon reserved, nothing else stacks
SELECT discount FROM loyalty.reserve_coupon('QSOLO', 'alice', 'q-order-1', '{"amount": 60}'::jsonb, '10 minutes');
SELECT offer, campaign, applies, reason
FROM loyalty.qualify('alice', '{"amount": 60}', order_ref => 'q-order-1');
-- another order context for the same order_ref is a conflict
SELECT DISTINCT reason FROM loyalty.qualify('alice', '{"amount": 70}', order_ref => 'q-order-1');
SELECT loyalty.rollback_redemption('q-order-1');

-- a used bound code is no longer offered
SELECT loyalty.redeem_coupon(code::text, 'alice', 'q-order-2', 60.00) AS bound_redeemed
FROM loyalty.coupon WHERE customer_id = 'alice';
SELECT count(*) AS bound_left FROM loyalty.qualify('alice', '{"amount": 60}') WHERE offer = 'bound_code';

-- budgets show as reasons
SELECT period_cap FROM loyalty.set_campaign_budget(:c_ten, period => 'day', period_cap => 0);
SELECT offer, campaign, applies, reason FROM loyalty.qualify('alice', '{"amount": 60}') WHERE campaign = 'q ten';
-- a sold-out reward campaign: the code it would issue has no cap unit left
SELECT loyalty.update_campaign(:c_reward, '{"total_cap": 0}');
SELECT offer, applies, reason FROM loyalty.qualify('alice', '{"amount": 60}') WHERE offer = 'points_reward';

-- read-only: runs in a read-only transaction
BEGIN TRANSACTION READ ONLY;
SELECT count(*) > 0 AS answered FROM loyalty.qualify('alice', '{"amount": 60}');
COMMIT;
-- bad input is refused as validate_coupon refuses it
SELECT * FROM loyalty.qualify(NULL, '{"amount": 60}');
SELECT * FROM loyalty.qualify('alice', '{"amount": "x"}');

\c :regress_db
DROP DATABASE qualify_db;
