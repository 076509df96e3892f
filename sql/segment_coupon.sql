--
-- segment_coupon: campaigns restricted to RFM segments read the segment each
-- customer had at the last loyalty.refresh_segments() (live tracking).
--
SET timezone = 'UTC';
CREATE TABLE cs_orders (
	order_id	serial PRIMARY KEY,
	customer	text NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2) NOT NULL
);
-- a: frequent and recent; b: frequent long ago; c: one recent order;
-- d: one order long ago
INSERT INTO cs_orders (customer, ordered_at, amount)
SELECT 'a', timestamptz '2026-10-01' + k * interval '2 days', 50 FROM generate_series(1, 10) k
UNION ALL
SELECT 'b', timestamptz '2025-12-01' + k * interval '2 days', 50 FROM generate_series(1, 10) k
UNION ALL
SELECT 'c', timestamptz '2026-10-25', 20
UNION ALL
SELECT 'd', timestamptz '2025-11-20', 20;

SELECT tracked_rows, customers
FROM loyalty.track_orders('cs_orders', 'customer', 'ordered_at', 'amount');
SELECT customers FROM loyalty.refresh_segments('2026-11-01');
SELECT customer_id, score, segment FROM loyalty.customer_segment
WHERE customer_id IN ('a', 'b', 'c', 'd') ORDER BY customer_id;

-- a campaign for frequent buyers' segments only
SELECT loyalty.create_campaign('cs frequent', 'fixed', amount_off => 5) AS cs_campaign \gset
SELECT loyalty.add_campaign_rule(:cs_campaign, 'segment',
	'{"segments": ["Loyal", "Need Attention", "At Risk"]}') > 0 AS rule_added;
SELECT loyalty.add_public_code(:cs_campaign, 'FREQUENT5');

SELECT c AS customer, v.valid, v.reason, v.discount
FROM unnest(ARRAY['a', 'b', 'c', 'd', 'nobody']) c,
	 loyalty.validate_coupon('FREQUENT5', c, 40.00) v
ORDER BY c;

-- redeeming follows the same rule
SELECT loyalty.redeem_coupon('FREQUENT5', 'a', 'cs-order-1', 40.00) AS discount_a;
SELECT loyalty.redeem_coupon('FREQUENT5', 'c', 'cs-order-2', 40.00) AS discount_c;
SELECT count(*) AS redemptions_of_c FROM loyalty.redemption WHERE order_ref = 'cs-order-2';

-- the segment is the one of the last refresh: d's new orders make it
-- eligible only once the segments are refreshed
INSERT INTO cs_orders (customer, ordered_at, amount)
SELECT 'd', timestamptz '2026-10-10' + k * interval '1 day', 50 FROM generate_series(1, 12) k;
SELECT v.valid, v.reason FROM loyalty.validate_coupon('FREQUENT5', 'd', 40.00) v;
SELECT customers FROM loyalty.refresh_segments('2026-11-01');
SELECT customer_id, score, segment FROM loyalty.customer_segment
WHERE customer_id = 'd';
SELECT v.valid, v.reason, v.discount FROM loyalty.validate_coupon('FREQUENT5', 'd', 40.00) v;
SELECT loyalty.redeem_coupon('FREQUENT5', 'd', 'cs-order-3', 40.00) AS discount_d;

-- clean up
SELECT loyalty.rollback_redemption('cs-order-1');
SELECT loyalty.rollback_redemption('cs-order-3');
SELECT loyalty.untrack_orders('cs_orders');
DROP TABLE cs_orders;
