--
-- sold_cap_units: a code sold for points holds the cap unit it was sold
-- for (issue 11, item 4): until it is used or voided, no other code of the
-- campaign (a public code included) can take that unit of the total cap,
-- nor of the buyer's per-customer cap.  The coupon family counts it
-- (loyalty.coupon.holds_cap_unit), without reading points tables.
--
-- Everything runs in one transaction that is rolled back (named to run
-- after the points tests: the points calls still advance the sequences).
--
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, 'campaign [0-9]+', 'campaign N');
END $$;

BEGIN;
SELECT (loyalty.earn_points('ann', 1000, 'sold-ann')).available;
SELECT (loyalty.earn_points('bob', 1000, 'sold-bob')).available;

--
-- total cap: the last unit, sold for points, is not given to a public code
--
SELECT loyalty.create_campaign('Sold total', 'fixed', amount_off => 5, total_cap => 2) AS total \gset
INSERT INTO loyalty.points_reward (campaign_id, points, code_pattern) VALUES (:total, 100, 'XCH-####-####');
SELECT loyalty.add_public_code(:total, 'SOLDPUB') AS code;
SELECT loyalty.redeem_coupon('SOLDPUB', 'carl', 'sold-o1', 20.00) AS first_unit;
SELECT code AS ann_code FROM loyalty.exchange_points('ann', :total, 'sold-x1') \gset
SELECT holds_cap_unit FROM loyalty.coupon WHERE code::text = :'ann_code';
SELECT valid, reason FROM loyalty.validate_coupon('SOLDPUB', 'dora', 20.00);
SELECT pg_temp.err($$SELECT loyalty.redeem_coupon('SOLDPUB', 'dora', 'sold-o2', 20.00)$$) AS public_code;
SELECT pg_temp.err($$SELECT * FROM loyalty.reserve_coupon('SOLDPUB', 'dora', 'sold-o2', 20.00)$$) AS public_reserve;
-- the buyer's own code takes its unit
SELECT valid, reason FROM loyalty.validate_coupon(:'ann_code', 'ann', 20.00);
SELECT loyalty.redeem_coupon(:'ann_code', 'ann', 'sold-o3', 20.00) AS sold_code;
SELECT pg_temp.err($$SELECT loyalty.redeem_coupon('SOLDPUB', 'dora', 'sold-o2', 20.00)$$) AS still_exhausted;
-- rolled back, the sold code holds its unit again
SELECT loyalty.rollback_redemption('sold-o3');
SELECT pg_temp.err($$SELECT loyalty.redeem_coupon('SOLDPUB', 'dora', 'sold-o2', 20.00)$$) AS public_after_rollback;
-- voided (the exchange reversed), the unit is free
SELECT (loyalty.reverse_points('exchange:sold-x1')).points;
SELECT voided_at IS NOT NULL AS voided FROM loyalty.coupon WHERE code::text = :'ann_code';
SELECT pg_temp.err($$SELECT loyalty.redeem_coupon('SOLDPUB', 'dora', 'sold-o2', 20.00)$$) AS public_after_void;

--
-- per-customer cap: the buyer's sold code holds the buyer's unit
--
SELECT loyalty.create_campaign('Sold each', 'fixed', amount_off => 5, per_customer_cap => 1) AS each \gset
INSERT INTO loyalty.points_reward (campaign_id, points, code_pattern) VALUES (:each, 100, 'XCH-####-####');
SELECT loyalty.add_public_code(:each, 'SOLDEACH') AS code;
SELECT code AS bob_code FROM loyalty.exchange_points('bob', :each, 'sold-x2') \gset
SELECT valid, reason FROM loyalty.validate_coupon('SOLDEACH', 'bob', 20.00);
SELECT pg_temp.err($$SELECT loyalty.redeem_coupon('SOLDEACH', 'bob', 'sold-o4', 20.00)$$) AS bob_public;
SELECT loyalty.redeem_coupon('SOLDEACH', 'ann', 'sold-o5', 20.00) AS other_customer;
SELECT loyalty.redeem_coupon(:'bob_code', 'bob', 'sold-o6', 20.00) AS bob_sold_code;
-- and an exchange still counts what the coupon side counts
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('ann', %s, 'sold-x3')$$, :each)) AS ann_exchange;

SELECT count(*) AS problems FROM loyalty.check_integrity();
ROLLBACK;
