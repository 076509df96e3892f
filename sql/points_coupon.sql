--
-- points and coupons: exchanging points for a coupon, bonus points for using
-- a coupon, coupon eligibility by points tier
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
	('Bronze', 0, 0, 1), ('Silver', 1, 500, 1.25), ('Gold', 2, 1000, 1.5);

--
-- the reward catalogue: a 10 EUR voucher for 300 points
--
SELECT loyalty.create_campaign('Voucher 10', 'fixed', amount_off => 10) AS voucher \gset
INSERT INTO loyalty.points_reward (campaign_id, points, code_pattern, description)
VALUES (:voucher, 300, 'PTS-####-####', '10 EUR off for 300 points');

SELECT (loyalty.earn_points('ann', 700, 'ann-1', at => '2026-01-01')).available;
-- the exchange spends the points and issues a code bound to the customer
SELECT length(code) AS code_length, code LIKE 'PTS-%' AS from_pattern, points, available
FROM loyalty.exchange_points('ann', :voucher, 'swap-1', at => '2026-01-02');
SELECT e.points, e.customer_id, c.customer_id AS bound_to, c.max_uses, l.kind, l.points AS ledger_points, l.reference
FROM loyalty.points_exchange e
JOIN loyalty.coupon c ON c.coupon_id = e.coupon_id
JOIN loyalty.points_ledger l ON l.entry_id = e.entry_id
WHERE e.reference = 'swap-1';
-- a repeat returns the same code and spends nothing more
SELECT (SELECT code FROM loyalty.exchange_points('ann', :voucher, 'swap-1', at => '2026-01-03'))
	   = (SELECT code FROM loyalty.points_exchange WHERE reference = 'swap-1') AS same_code,
	   (SELECT available FROM loyalty.points_balance('ann', '2026-01-03')) AS available,
	   (SELECT count(*) FROM loyalty.coupon WHERE campaign_id = :voucher) AS codes;
-- a second voucher; a third is short (LP001) and issues nothing
SELECT points, available FROM loyalty.exchange_points('ann', :voucher, 'swap-2', at => '2026-01-04');
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('ann', %s, 'swap-3', at => '2026-01-05')$$, :voucher)) AS third;
SELECT count(*) AS codes FROM loyalty.coupon WHERE campaign_id = :voucher;
-- the reference of another exchange (LP002), a campaign not in the catalogue (LP007),
-- a paused campaign (LP008), bad arguments
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('bob', %s, 'swap-1')$$, :voucher)) AS other_customer;
SELECT loyalty.create_campaign('Not for points', 'percent', percent_off => 5) AS other \gset
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('ann', %s, 'swap-4')$$, :other)) AS not_offered;
SELECT loyalty.pause_campaign(:voucher);
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('ann', %s, 'swap-4')$$, :voucher)) AS paused;
SELECT loyalty.resume_campaign(:voucher);
SELECT pg_temp.err($$SELECT loyalty.exchange_points(NULL, 1, 'swap-5')$$) AS null_customer;
SELECT pg_temp.err($$SELECT loyalty.exchange_points('ann', 1, repeat('r', 257))$$) AS long_reference;
-- a spend under the exchange's derived reference is not an exchange
SELECT (loyalty.earn_points('ann', 300, 'ann-2', at => '2026-01-06')).available;
SELECT (loyalty.spend_points('ann', 300, 'exchange:swap-6', at => '2026-01-06')).points;
SELECT pg_temp.err(format($$SELECT loyalty.exchange_points('ann', %s, 'swap-6', at => '2026-01-07')$$, :voucher)) AS foreign_spend;

-- the code works at checkout, for its customer only
SELECT code AS ann_code FROM loyalty.points_exchange WHERE reference = 'swap-1' \gset
SELECT regexp_replace(pg_temp.err(format($$SELECT loyalty.redeem_coupon(%L, 'bob', 'order-b1', 80.00)$$, :'ann_code')),
					  'PTS-[0-9A-Z-]+', '<code>') AS by_bob;
SELECT loyalty.redeem_coupon(:'ann_code', 'ann', 'order-a1', 80.00) AS discount;

--
-- bonus points for using a coupon, in the checkout transaction
--
SELECT loyalty.create_campaign('Spring', 'percent', percent_off => 10) AS spring \gset
SELECT loyalty.add_public_code(:spring, 'SPRING10');
INSERT INTO loyalty.coupon_bonus (campaign_id, points, description) VALUES (:spring, 50, 'use SPRING10, get 50 points');
BEGIN;
SELECT loyalty.redeem_coupon('SPRING10', 'ann', 'order-a2', 120.00) AS discount;
SELECT * FROM loyalty.earn_coupon_bonus('ann', 'order-a2', at => '2026-02-01');
COMMIT;
SELECT entry_id, kind, points, reference, reason, qualifying FROM loyalty.points_ledger
WHERE reference = 'order-a2:coupon-bonus';
-- a repeat returns the first result
SELECT entry_id, points FROM loyalty.earn_coupon_bonus('ann', 'order-a2', at => '2026-02-02');
-- an order whose coupons earn no bonus, and a customer who did not redeem
SELECT loyalty.earn_coupon_bonus('ann', 'order-a1', at => '2026-02-02') IS NULL AS no_bonus_campaign;
SELECT loyalty.earn_coupon_bonus('bob', 'order-a2', at => '2026-02-02') IS NULL AS not_bobs;
-- the refund: the coupon is rolled back and the bonus taken back
SELECT loyalty.rollback_redemption('order-a2');
SELECT points, available FROM loyalty.reverse_points('order-a2:coupon-bonus', at => '2026-02-03');
-- a rolled-back redemption earns no bonus
SELECT loyalty.redeem_coupon('SPRING10', 'ann', 'order-a3', 60.00) AS discount;
SELECT loyalty.rollback_redemption('order-a3');
SELECT loyalty.earn_coupon_bonus('ann', 'order-a3', at => '2026-02-04') IS NULL AS rolled_back;

--
-- coupon eligibility by tier
--
SELECT loyalty.create_campaign('Gold club', 'percent', percent_off => 20) AS gold \gset
SELECT loyalty.add_public_code(:gold, 'GOLDCLUB');
SELECT loyalty.create_campaign('Silver and Gold', 'percent', percent_off => 5) AS sg \gset
SELECT loyalty.add_public_code(:sg, 'SILVERGOLD');
SELECT loyalty.create_campaign('Newcomers', 'percent', percent_off => 5) AS newbie \gset
SELECT loyalty.add_public_code(:newbie, 'WELCOME5');
-- rule parameters are checked when the rule is added
SELECT pg_temp.err(format($$SELECT loyalty.add_campaign_rule(%s, 'tier', '{"min_tier": "Diamond"}')$$, :gold)) AS unknown_tier;
SELECT pg_temp.err(format($$SELECT loyalty.add_campaign_rule(%s, 'tier', '{"tiers": []}')$$, :gold)) AS empty_list;
SELECT pg_temp.err(format($$SELECT loyalty.add_campaign_rule(%s, 'tier', '{"tiers": ["Gold"], "min_tier": "Gold"}')$$, :gold)) AS both;
SELECT loyalty.add_campaign_rule(:gold, 'tier', '{"min_tier": "Gold"}') > 0 AS gold_rule;
SELECT loyalty.add_campaign_rule(:sg, 'tier', '{"tiers": ["Silver", "Gold"]}') > 0 AS list_rule;
SELECT loyalty.add_campaign_rule(:newbie, 'tier', '{"tiers": ["Bronze"]}') > 0 AS bronze_rule;
SELECT (loyalty.earn_points('cleo', 1200, 'cleo-1', at => '2026-01-01')).points;
SELECT (loyalty.earn_points('dan', 600, 'dan-1', at => '2026-01-01')).points;
SELECT c.customer, t.tier, v.code, v.valid, v.reason
FROM (VALUES ('cleo'), ('dan'), ('ann'), ('new customer')) c(customer)
LEFT JOIN loyalty.points_account t ON t.customer_id = c.customer
CROSS JOIN LATERAL (VALUES ('GOLDCLUB'), ('SILVERGOLD'), ('WELCOME5')) k(code)
CROSS JOIN LATERAL (SELECT k.code, x.valid, x.reason FROM loyalty.validate_coupon(k.code, c.customer, 100.00) x) v
ORDER BY c.customer, v.code;
-- the tier after evaluation is what counts: cleo drops to Silver, then Gold is refused
SELECT points FROM loyalty.reverse_points('cleo-1', at => '2026-01-02');
SELECT (loyalty.earn_points('cleo', 700, 'cleo-2', at => '2026-01-03')).points;
SELECT valid FROM loyalty.validate_coupon('GOLDCLUB', 'cleo', 100.00);
UPDATE loyalty.points_program SET tier_grace_days = 0;
INSERT INTO loyalty.points_program (tier_grace_days) SELECT 0 WHERE NOT EXISTS (SELECT FROM loyalty.points_program);
SELECT downgrades FROM loyalty.evaluate_tiers_batch('2026-02-01', NULL, 100);
SELECT tier FROM loyalty.points_account WHERE customer_id = 'cleo';
SELECT valid, reason FROM loyalty.validate_coupon('GOLDCLUB', 'cleo', 100.00);
SELECT valid FROM loyalty.validate_coupon('SILVERGOLD', 'cleo', 100.00);

SELECT * FROM loyalty.check_integrity();

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
