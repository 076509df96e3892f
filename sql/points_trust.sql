--
-- points: issue 11 (trust) -- the code an exchange returns, caps and
-- reversals of exchanges, one owner per reference, business times, the
-- program currency, tiers without a foreign key, argument limits
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES
	('Bronze', 0, 0, 1), ('Silver', 1, 1000, 1.25);

--
-- item 3: the code returned is the one this exchange issued, even when a
-- code bound to the customer has a higher coupon_id (another connection's
-- cached ids, or an admin's "sorry" code)
--
SELECT loyalty.create_campaign('Voucher', 'fixed', amount_off => 10) AS voucher \gset
INSERT INTO loyalty.points_reward (campaign_id, points, code_pattern) VALUES (:voucher, 100, 'PTS-####-####');
SELECT (loyalty.earn_points('ann', 1000, 'ann-seed')).available;
SELECT code AS first_code FROM loyalty.exchange_points('ann', :voucher, 'ex-1') \gset
-- an admin binds a code to ann with a much higher id
SELECT setval(pg_get_serial_sequence('loyalty.coupon', 'coupon_id'), 1000000) > 0 AS moved;
SELECT loyalty.generate_codes(:voucher, 1, 'ADM-####-####', ARRAY['ann']) AS admin_codes;
SELECT setval(pg_get_serial_sequence('loyalty.coupon', 'coupon_id'), 500) > 0 AS moved_back;
SELECT code AS second_code FROM loyalty.exchange_points('ann', :voucher, 'ex-2') \gset
SELECT :'second_code' LIKE 'PTS-%' AS second_is_an_exchange_code,
	   :'second_code' <> :'first_code' AS second_is_new;
-- every exchange records the coupon it issued, and returns its code
SELECT e.reference, e.code = c.code::text AS recorded_code_matches, c.customer_id, c.coupon_id > 500 AS id_above_500
FROM loyalty.points_exchange e JOIN loyalty.coupon c ON c.coupon_id = e.coupon_id ORDER BY e.reference;
SELECT count(DISTINCT code) AS distinct_exchange_codes FROM loyalty.points_exchange;

--
-- item 4: no coupon is sold once the campaign's caps are taken (LP009,
-- before any point is spent); unused exchanged codes hold their unit
--
SELECT loyalty.create_campaign('Last one', 'fixed', amount_off => 5, total_cap => 1) AS capped \gset
INSERT INTO loyalty.points_reward (campaign_id, points) VALUES (:capped, 100);
SELECT (loyalty.earn_points('bob', 500, 'bob-seed')).available;
SELECT points FROM loyalty.exchange_points('ann', :capped, 'cap-1');
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('bob', %s, 'cap-2')$$, :capped)) AS total_cap_reached;
SELECT available FROM loyalty.points_balance('bob') AS bob_keeps_his_points;
SELECT count(*) AS no_spend_recorded FROM loyalty.points_ledger WHERE reference = 'exchange:cap-2';
SELECT loyalty.create_campaign('One each', 'fixed', amount_off => 5, per_customer_cap => 1) AS each \gset
INSERT INTO loyalty.points_reward (campaign_id, points) VALUES (:each, 100);
SELECT points FROM loyalty.exchange_points('bob', :each, 'each-1');
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('bob', %s, 'each-2')$$, :each)) AS per_customer_cap_reached;
SELECT points FROM loyalty.exchange_points('ann', :each, 'each-3') AS other_customer_still_can;
-- a customer who redeemed a public code of the campaign has used their unit too
SELECT loyalty.add_public_code(:each, 'EACH5') IS NOT NULL AS public_code;
SELECT loyalty.redeem_coupon('EACH5', 'carl', 'order-c1', 50.00) AS carl_discount;
SELECT (loyalty.earn_points('carl', 500, 'carl-seed')).available;
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('carl', %s, 'each-4')$$, :each)) AS redeemed_counts;

--
-- item 5: reversing an exchange voids its coupon; once the coupon is
-- redeemed (or reserved), the reversal is refused (LP010)
--
SELECT code AS rev_code FROM loyalty.exchange_points('bob', :voucher, 'rev-1') \gset
SELECT valid FROM loyalty.validate_coupon(:'rev_code', 'bob', 50.00) AS valid_before;
SELECT points, available FROM loyalty.reverse_points('exchange:rev-1');
SELECT valid, reason FROM loyalty.validate_coupon(:'rev_code', 'bob', 50.00) AS after_reversal;
SELECT regexp_replace(pg_temp.err(format($$SELECT loyalty.redeem_coupon(%L, 'bob', 'order-b9', 50.00)$$, :'rev_code')), 'PTS-[0-9A-Z-]+', '<code>') AS redeem_voided;
SELECT voided_at IS NOT NULL AS voided FROM loyalty.coupon WHERE code::text = :'rev_code';
-- a repeat of the reversal returns the first result
SELECT points FROM loyalty.reverse_points('exchange:rev-1');
SELECT code AS used_code FROM loyalty.exchange_points('bob', :voucher, 'rev-2') \gset
SELECT loyalty.redeem_coupon(:'used_code', 'bob', 'order-b10', 50.00) AS discount;
SELECT regexp_replace(pg_temp.err($$SELECT loyalty.reverse_points('exchange:rev-2')$$), 'PTS-[0-9A-Z-]+', '<code>') AS reverse_used;
SELECT available FROM loyalty.points_balance('bob') AS points_not_returned;
-- rolled back, the coupon is unused again: now the reversal voids it
SELECT loyalty.rollback_redemption('order-b10');
SELECT points FROM loyalty.reverse_points('exchange:rev-2');
SELECT code AS held_code FROM loyalty.exchange_points('bob', :voucher, 'rev-3') \gset
SELECT discount FROM loyalty.reserve_coupon(:'held_code', 'bob', 'order-b11', 50.00);
SELECT regexp_replace(pg_temp.err($$SELECT loyalty.reverse_points('exchange:rev-3')$$), 'PTS-[0-9A-Z-]+', '<code>') AS reverse_reserved;

--
-- item 6: a reference belongs to one customer, by constraint
--
SELECT (loyalty.earn_points('cA', 5, 'xref1')).points;
SELECT pg_temp.err($$SELECT loyalty.spend_points('bob', 1, 'xref1')$$) AS other_customer_spend;
SELECT pg_temp.err($$SELECT loyalty.earn_points('bob', 1, 'xref1')$$) AS other_customer_earn;
SELECT pg_temp.err($$SELECT loyalty.adjust_points('bob', 1, 'xref1', 'fix')$$) AS other_customer_adjust;
SELECT pg_temp.err($$SELECT loyalty.earn_for_order('bob', 'xref1', 10)$$) AS other_customer_order;
SELECT customer_id FROM loyalty.points_reference WHERE reference = 'xref1';
SELECT points FROM loyalty.reverse_points('xref1');  -- no customer needed: one owner

--
-- item 7: business times at most 5 minutes ahead; not before the last
-- settlement (beyond the same 5 minutes)
--
SELECT err AS future FROM unnest(ARRAY[
	$$SELECT loyalty.earn_points('dan', 5, 'd-1', at => now() + interval '1 year')$$,
	$$SELECT loyalty.spend_points('ann', 1, 'd-2', at => clock_timestamp() + interval '6 minutes')$$,
	$$SELECT loyalty.earn_for_order('dan', 'd-3', 10, at => now() + interval '1 day')$$,
	$$SELECT loyalty.earn_for_action('dan', 'review', 'd-4', at => now() + interval '1 day')$$,
	$$SELECT loyalty.adjust_points('dan', 5, 'd-5', 'fix', at => now() + interval '1 day')$$,
	$$SELECT loyalty.reverse_points('ann-seed', at => now() + interval '1 day')$$,
	$$SELECT loyalty.expire_points(now() + interval '1 year')$$,
	$$SELECT loyalty.evaluate_tiers_batch(now() + interval '1 year', NULL, 10)$$,
	$$SELECT loyalty.exchange_points('ann', 1, 'd-6', at => now() + interval '1 year')$$
]) q, LATERAL (SELECT regexp_replace(pg_temp.err(q), ' is 2.*', '') AS err) e;
SELECT (loyalty.earn_points('dan', 5, 'd-7', at => clock_timestamp() + interval '1 minute')).points AS small_skew_ok;
-- nothing was expired early
SELECT count(*) AS expire_entries FROM loyalty.points_ledger WHERE kind = 'expire';
-- backdating: a lot of erin's expired in a settlement as of 2026-06-01
SELECT (loyalty.earn_points('erin', 10, 'e-1', expires_at => '2026-05-01', at => '2026-01-01')).points;
SELECT (loyalty.earn_points('erin', 20, 'e-2', at => '2026-06-01')).available AS settled_then;
SELECT settled_at FROM loyalty.points_account WHERE customer_id = 'erin';
SELECT pg_temp.err($$SELECT loyalty.spend_points('erin', 5, 'e-3', at => '2026-04-01')$$) AS before_settlement;
SELECT pg_temp.err($$SELECT loyalty.earn_points('erin', 5, 'e-4', at => '2026-05-31 23:56')$$) AS within_skew;
-- a retried call keeps its first result, whatever its time
SELECT points, available FROM loyalty.earn_points('erin', 10, 'e-1', expires_at => '2026-05-01', at => '2026-01-01');
SELECT (loyalty.spend_points('erin', 5, 'e-5', at => '2026-07-01')).available AS later_is_fine;

--
-- item 9 / 13: one program currency; junk currencies earn nothing
--
INSERT INTO loyalty.points_program (tier_basis, currency) VALUES ('spend', 'EUR');
INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('per euro', 'purchase', 1);
SELECT points FROM loyalty.earn_for_order('fay', 'f-1', 600, 'EUR');
SELECT points FROM loyalty.earn_for_order('fay', 'f-2', 100);  -- NULL: the program currency
SELECT err AS other_currency FROM unnest(ARRAY[
	$$SELECT loyalty.earn_for_order('fay', 'f-3', 600, 'JPY')$$,
	$$SELECT loyalty.earn_for_order('fay', 'f-3', 600, 'eur')$$,
	$$SELECT loyalty.earn_for_order('fay', 'f-3', 600, 'EURO')$$,
	$$SELECT loyalty.earn_for_order('fay', 'f-3', 600, '€')$$,
	$$SELECT loyalty.earn_for_order('fay', 'f-3', 600, '')$$,
	$$SELECT loyalty.earn_for_order('fay', 'f-3', 600, 'E1R')$$
]) q, LATERAL (SELECT pg_temp.err(q) AS err) e;
SELECT tier, qualifying FROM loyalty.tier_progress('fay');
SELECT pg_temp.err($$UPDATE loyalty.points_program SET currency = 'euro'$$) AS bad_program_currency;

--
-- item 11: accounts name their tier without a foreign key
--
SELECT count(*) AS tier_fks FROM pg_constraint
WHERE conrelid = 'loyalty.points_account'::regclass AND contype = 'f';
UPDATE loyalty.tier SET name = 'Copper' WHERE name = 'Bronze';
SELECT DISTINCT tier FROM loyalty.points_account ORDER BY 1;
SELECT pg_temp.err($$DELETE FROM loyalty.tier WHERE name = 'Copper'$$) AS delete_in_use;
BEGIN;
ALTER TABLE loyalty.tier DISABLE TRIGGER tier_in_use;
DELETE FROM loyalty.tier WHERE name = 'Silver';
UPDATE loyalty.tier SET name = 'Tin' WHERE name = 'Copper';
SELECT problem, count(*) FROM loyalty.check_integrity() WHERE problem = 'unknown tier' GROUP BY 1;
ROLLBACK;

--
-- item 13: empty and over-long keys are 22023 everywhere; one limit of
-- 256 bytes for references, shared with coupons
--
SELECT err AS bad_keys FROM unnest(ARRAY[
	$$SELECT loyalty.tier_progress('')$$,
	$$SELECT loyalty.tier_progress(repeat('c', 257))$$,
	$$SELECT loyalty.earn_coupon_bonus('', 'order-1')$$,
	$$SELECT loyalty.earn_coupon_bonus('ann', '')$$,
	$$SELECT loyalty.earn_coupon_bonus('ann', repeat('o', 257))$$,
	$$SELECT loyalty.exchange_points('', 1, 'x')$$
]) q, LATERAL (SELECT pg_temp.err(q) AS err) e;
-- an order reference of 256 bytes that coupons accept earns its bonus
INSERT INTO loyalty.coupon_bonus (campaign_id, points) VALUES (:voucher, 25);
SELECT code AS bonus_code FROM loyalty.exchange_points('ann', :voucher, 'bonus-1') \gset
SELECT loyalty.redeem_coupon(:'bonus_code', 'ann', repeat('o', 256), 50.00) AS discount;
SELECT points FROM loyalty.earn_coupon_bonus('ann', repeat('o', 256));
SELECT points < 0 AS taken_back FROM loyalty.reverse_points(repeat('o', 256) || ':coupon-bonus');

SELECT * FROM loyalty.check_integrity();

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
