-- pgTAP: the coupon API as an application sees it: signatures and labels,
-- one documented SQLSTATE per reason, and the transaction semantics
-- (everything or nothing, savepoints, idempotent repeats).
BEGIN;
SELECT plan(44);

-- signatures, return types, labels
SELECT function_returns('loyalty', 'redeem_coupon', ARRAY['text', 'text', 'text', 'jsonb'], 'numeric');
SELECT function_returns('loyalty', 'redeem_coupon', ARRAY['text', 'text', 'text', 'numeric'], 'numeric');
SELECT function_returns('loyalty', 'rollback_redemption', ARRAY['text'], 'boolean');
SELECT function_returns('loyalty', 'generate_codes', ARRAY['bigint', 'integer', 'text', 'text[]'], 'bigint');
SELECT volatility_is('loyalty', 'validate_coupon', ARRAY['text', 'text', 'jsonb', 'text'], 'stable');
SELECT volatility_is('loyalty', 'redeem_coupon', ARRAY['text', 'text', 'text', 'jsonb'], 'volatile');
SELECT is_definer('loyalty', 'redeem_coupon', ARRAY['text', 'text', 'text', 'jsonb']);
SELECT is_definer('loyalty', 'reserve_coupon', ARRAY['text', 'text', 'text', 'jsonb', 'interval']);
SELECT is_definer('loyalty', 'rollback_redemption', ARRAY['text']);
SELECT is((SELECT count(*)::int FROM pg_proc p
		   WHERE p.pronamespace = 'loyalty'::regnamespace AND p.prosecdef
			 AND (p.proconfig IS NULL
				  OR NOT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig))),
		  0, 'every SECURITY DEFINER function pins search_path');

-- fixtures
SELECT loyalty.create_campaign('tap coupons', 'fixed', amount_off => 10, total_cap => 5,
							   per_customer_cap => 1, min_order_amount => 20);
SELECT loyalty.add_public_code(campaign_id, 'TAPCODE', max_uses => 3)
FROM loyalty.campaign WHERE name = 'tap coupons';
SELECT loyalty.add_public_code(campaign_id, 'TAPCODE-TWO')
FROM loyalty.campaign WHERE name = 'tap coupons';
SELECT loyalty.generate_codes(campaign_id, 1, 'TAP-####-####', ARRAY['tap-bound'])
FROM loyalty.campaign WHERE name = 'tap coupons';
SELECT loyalty.create_campaign('tap future', 'fixed', amount_off => 1, starts_at => now() + interval '1 day');
SELECT loyalty.add_public_code(campaign_id, 'TAPLATER') FROM loyalty.campaign WHERE name = 'tap future';
SELECT loyalty.create_campaign('tap past', 'fixed', amount_off => 1, ends_at => now() - interval '1 day');
SELECT loyalty.add_public_code(campaign_id, 'TAPGONE') FROM loyalty.campaign WHERE name = 'tap past';
SELECT loyalty.create_campaign('tap paused', 'fixed', amount_off => 1, paused => true);
SELECT loyalty.add_public_code(campaign_id, 'TAPPAUSED') FROM loyalty.campaign WHERE name = 'tap paused';
SELECT loyalty.create_campaign('tap new', 'fixed', amount_off => 1, new_customers_only => true);
SELECT loyalty.add_public_code(campaign_id, 'TAPNEW') FROM loyalty.campaign WHERE name = 'tap new';
SELECT loyalty.create_campaign('tap shoes', 'fixed', amount_off => 1, include_categories => ARRAY['shoes']);
SELECT loyalty.add_public_code(campaign_id, 'TAPSHOES') FROM loyalty.campaign WHERE name = 'tap shoes';
SELECT loyalty.create_campaign('tap alone', 'fixed', amount_off => 1, exclusive => true);
SELECT loyalty.add_public_code(campaign_id, 'TAPALONE') FROM loyalty.campaign WHERE name = 'tap alone';
SELECT loyalty.create_campaign('tap usd', 'fixed', amount_off => 1, currency => 'USD');
SELECT loyalty.add_public_code(campaign_id, 'TAPUSD') FROM loyalty.campaign WHERE name = 'tap usd';
SELECT loyalty.create_campaign('tap single', 'fixed', amount_off => 1);
SELECT loyalty.add_public_code(campaign_id, 'TAPSINGLE', max_uses => 1) FROM loyalty.campaign WHERE name = 'tap single';
CREATE TEMP TABLE tap_bound AS
SELECT code::text AS code FROM loyalty.coupon WHERE customer_id = 'tap-bound';

-- the happy path and its repeat
SELECT is(loyalty.redeem_coupon('tapcode', 'tap-a', 'tap-o1', 50.00), 10.00::numeric,
		  'redeem returns the discount');
SELECT is(loyalty.redeem_coupon('TAP-CODE', 'tap-a', 'tap-o1', 50.00), 10.00::numeric,
		  'a repeat for the same order returns the first discount');
SELECT is((SELECT count(*)::int FROM loyalty.redemption WHERE order_ref = 'tap-o1'), 1,
		  'and records one redemption');

-- one SQLSTATE per reason
SELECT throws_ok($$SELECT loyalty.redeem_coupon(overlay(code placing CASE WHEN substr(code, 8, 1) = 'Z' THEN 'Y' ELSE 'Z' END from 8), 'tap-b', 'tap-x', 50.00) FROM tap_bound$$,
				 'LY001', NULL, 'a mistyped generated code: LY001 invalid_code');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('NOSUCHCODE', 'tap-b', 'tap-x', 50.00)$$,
				 'LY002', NULL, 'unknown code: LY002 not_found');
SELECT throws_ok($$SELECT loyalty.redeem_coupon(code, 'tap-b', 'tap-x', 50.00) FROM tap_bound$$,
				 'LY003', NULL, 'code bound to someone else: LY003 wrong_customer');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPUSD', 'tap-b', 'tap-x', '{"amount": 50, "currency": "EUR"}'::jsonb)$$,
				 'LY004', NULL, 'other currency: LY004 currency_mismatch');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPGONE', 'tap-b', 'tap-x', 50.00)$$,
				 'LY005', NULL, 'campaign over: LY005 expired');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPLATER', 'tap-b', 'tap-x', 50.00)$$,
				 'LY006', NULL, 'campaign ahead: LY006 not_started');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPPAUSED', 'tap-b', 'tap-x', 50.00)$$,
				 'LY007', NULL, 'campaign paused: LY007 paused');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPNEW', 'tap-b', 'tap-x', '{"amount": 50, "new_customer": false}'::jsonb)$$,
				 'LY008', NULL, 'rule refuses: LY008 not_eligible');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPCODE', 'tap-b', 'tap-x', 19.99)$$,
				 'LY009', NULL, 'order too small: LY009 min_amount');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPSHOES', 'tap-b', 'tap-x', '{"items": [{"sku": "H", "category": "hats", "price": 9, "quantity": 1}]}'::jsonb)$$,
				 'LY010', NULL, 'nothing eligible: LY010 no_eligible_items');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPALONE', 'tap-a', 'tap-o1', 50.00)$$,
				 'LY011', NULL, 'exclusive coupon on an order with another: LY011 not_stackable');
SELECT lives_ok($$SELECT loyalty.redeem_coupon('TAPSINGLE', 'tap-c', 'tap-o2', 50.00)$$,
				'a single-use code is used once');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPSINGLE', 'tap-d', 'tap-o3', 50.00)$$,
				 'LY012', NULL, 'used up: LY012 exhausted');
SELECT lives_ok($$SELECT discount FROM loyalty.reserve_coupon('TAPCODE', 'tap-e', 'tap-o4', 50.00, '1 hour')$$,
				'a reservation holds a unit');
SELECT lives_ok($$SELECT loyalty.redeem_coupon('TAPCODE', 'tap-f', 'tap-o5', 50.00)$$,
				'the last free unit of the code goes');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPCODE', 'tap-g', 'tap-o6', 50.00)$$,
				 'LY013', NULL, 'the held unit is not for others: LY013 reserved');
SELECT lives_ok($$SELECT loyalty.redeem_coupon(code, 'tap-bound', 'tap-o7', 50.00) FROM tap_bound$$,
				'the bound customer uses the bound code');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPCODE-TWO', 'tap-a', 'tap-o8', 50.00)$$,
				 'LY014', NULL, 'second order of a once-per-customer campaign: LY014 customer_limit');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPCODE', 'tap-a', 'tap-o1', 60.00)$$,
				 'LY020', NULL, 'same order, other amount: LY020 order_conflict');
SELECT ok(loyalty.rollback_redemption('tap-o2'), 'rollback gives the use back');
SELECT ok(NOT loyalty.rollback_redemption('tap-o2'), 'a repeated rollback is a no-op');
SELECT throws_ok($$SELECT loyalty.redeem_coupon('TAPSINGLE', 'tap-c', 'tap-o2', 50.00)$$,
				 'LY021', NULL, 'a rolled-back order takes no coupon: LY021 order_rolled_back');
SELECT lives_ok($$SELECT loyalty.redeem_coupon('TAPCODE', 'tap-e', 'tap-o4', 50.00)$$,
				'the reserving order redeems its hold');
SELECT throws_ok($$SELECT discount FROM loyalty.reserve_coupon('TAPCODE', 'tap-e', 'tap-o4', 50.00)$$,
				 'LY022', NULL, 'reserving after redeeming: LY022 already_redeemed');

-- transaction semantics
SAVEPOINT before_redeem;
SELECT loyalty.redeem_coupon('TAPSINGLE', 'tap-h', 'tap-o9', 50.00);
ROLLBACK TO SAVEPOINT before_redeem;
SELECT is((SELECT count(*)::int FROM loyalty.redemption WHERE order_ref = 'tap-o9'), 0,
		  'a redemption rolled back with the app''s (sub)transaction leaves nothing');
SELECT is(loyalty.redeem_coupon('TAPSINGLE', 'tap-h', 'tap-o9', 50.00), 1.00::numeric,
		  'and the code can be used again');
SELECT is((SELECT uses FROM loyalty.coupon WHERE code::text = 'TAPSINGLE'), 1::bigint,
		  'the code counts exactly one active use');
SELECT is((SELECT count(*)::int FROM loyalty.coupon_order WHERE order_ref LIKE 'tap-x%'), 0,
		  'failed redeems left no order rows');
SELECT results_eq(
	$$SELECT valid, reason FROM loyalty.validate_coupon('TAPSINGLE', 'tap-i', 50.00)$$,
	$$VALUES (false, 'exhausted')$$,
	'validate reports the reason as data');
SELECT results_eq(
	$$SELECT valid, reason, discount FROM loyalty.validate_coupon('TAPSINGLE', 'tap-h', 50.00, 'tap-o9')$$,
	$$VALUES (true, 'already_redeemed', 1.00::numeric)$$,
	'validate with the order_ref of a redemption: already_redeemed');
SELECT results_eq(
	$$SELECT redemptions, active_reservations, remaining_cap FROM loyalty.campaign_stats WHERE name = 'tap coupons'$$,
	$$VALUES (4::bigint, 0::bigint, 1::bigint)$$,
	'campaign figures: 4 redemptions of a cap of 5, the reservation consumed');

SELECT * FROM finish();
ROLLBACK;
