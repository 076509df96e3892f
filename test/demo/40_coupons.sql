-- Demo part 40: coupons.  A win-back campaign for "At Risk" customers with
-- codes bound to each of them, redeemed inside the app's own transactions,
-- one checkout abandoned, one two-step payment, one refund, and the
-- campaign's figures.  Generated codes are random, so they are never
-- printed; everything shown is deterministic.
\pset footer off
\echo
\echo '=== coupons: a win-back campaign for At Risk customers ==='

-- Who is At Risk: the live segments (loyalty.customer_segment) when they
-- are there, else a batch RFM run over the completed orders as of
-- 2026-11-01, else the same idea spelt out in SQL.  The batch run scores
-- recency on business thresholds (30 / 90 / 180 / 365 days): with quantile
-- recency and a 12-month frequency window, customers who used to buy often
-- but stopped a while ago score F = 1 and land in Lost or Hibernating, so
-- At Risk would be empty in the sample shop.
SELECT to_regclass('loyalty.customer_segment') IS NOT NULL AS has_segment_table,
	   to_regproc('loyalty.rfm_segmentation') IS NOT NULL AS has_rfm \gset
\set has_segments false
\if :has_segment_table
SELECT count(*) > 0 AS has_segments FROM loyalty.customer_segment WHERE segment = 'At Risk' \gset
\endif

CREATE TEMP TABLE at_risk (customer_id text PRIMARY KEY);
\if :has_segments
\echo '(At Risk customers from loyalty.customer_segment)'
INSERT INTO at_risk
SELECT customer_id FROM loyalty.customer_segment WHERE segment = 'At Risk';
\elif :has_rfm
\echo '(At Risk customers from loyalty.rfm_segmentation of shop.completed_orders as of 2026-11-01,'
\echo ' recency thresholds 30 / 90 / 180 / 365 days)'
INSERT INTO at_risk
SELECT customer_id
FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
							  as_of => '2026-11-01',
							  recency_thresholds => ARRAY[30, 90, 180, 365])
WHERE segment = 'At Risk';
\else
\echo '(At Risk approximated in SQL: 3 or more completed orders, the last one 6 to 12 months before 2026-11-01)'
INSERT INTO at_risk
SELECT customer_id::text
FROM shop.completed_orders
GROUP BY customer_id
HAVING count(*) >= 3
   AND max(ordered_at) BETWEEN timestamptz '2026-11-01' - interval '365 days'
						   AND timestamptz '2026-11-01' - interval '180 days';
\endif

\echo
\echo '--- the campaign: 15% off (at most 25 EUR), once per customer, codes bound to each customer ---'
SELECT loyalty.create_campaign('Win back At Risk', 'percent', percent_off => 15, max_discount => 25,
							   per_customer_cap => 1,
							   ends_at => now() + interval '30 days') AS win_back \gset
\if :has_segments
-- and the segment itself is a rule: a customer who left At Risk meanwhile cannot use the code
SELECT loyalty.add_campaign_rule(:win_back, 'segment', '{"segments": ["At Risk"]}') AS rule_id \gset
\endif
SELECT loyalty.generate_codes(:win_back, count(*)::integer, 'WB-####-####',
							  array_agg(customer_id ORDER BY customer_id)) AS codes_issued
FROM at_risk;
SELECT count(*) AS codes, count(DISTINCT customer_id) AS customers,
	   bool_and(loyalty.coupon_code_kind(code) = 'generated') AS all_generated,
	   bool_and(max_uses = 1) AS all_single_use
FROM loyalty.coupon WHERE campaign_id = :win_back;

-- five of them come back: each repeats the basket of their last order
CREATE TEMP TABLE demo_basket AS
SELECT row_number() OVER (ORDER BY b.customer_id::bigint) AS n,
	   b.customer_id, b.code, 'checkout-' || b.customer_id AS order_ref,
	   jsonb_build_object(
		   'currency', 'EUR', 'amount', o.amount, 'shipping', o.shipping,
		   'items', (SELECT jsonb_agg(jsonb_build_object('sku', i.sku, 'category', c.name,
														 'price', i.unit_price, 'quantity', i.quantity)
									  ORDER BY i.line_no)
					 FROM shop.order_items i
					 JOIN shop.products p USING (sku)
					 JOIN shop.categories c USING (category_id)
					 WHERE i.order_id = o.order_id)) AS ctx
FROM (SELECT a.customer_id, k.code::text AS code
	  FROM at_risk a
	  JOIN loyalty.coupon k ON k.customer_id = a.customer_id AND k.campaign_id = :win_back
	  ORDER BY a.customer_id::bigint LIMIT 5) b
CROSS JOIN LATERAL (SELECT o.order_id, o.amount, o.shipping FROM shop.orders o
					WHERE o.customer_id = b.customer_id::bigint AND o.status = 'completed'
					ORDER BY o.ordered_at DESC LIMIT 1) o;

-- the app's own orders table
CREATE SCHEMA checkout;
CREATE TABLE checkout.orders (
	order_ref	text PRIMARY KEY,
	customer_id	text NOT NULL,
	amount		numeric(12,2) NOT NULL,
	discount	numeric(12,2) NOT NULL DEFAULT 0,
	status		text NOT NULL DEFAULT 'paid'
);

\echo
\echo '--- a checkout: the order and the coupon in one transaction ---'
SELECT order_ref AS o1, customer_id AS c1, code AS k1, ctx AS x1 FROM demo_basket WHERE n = 1 \gset
SELECT :'o1' AS order_ref, :'c1' AS customer_id, :'x1'::jsonb -> 'amount' AS amount,
	   jsonb_array_length(:'x1'::jsonb -> 'items') AS items;
BEGIN;
INSERT INTO checkout.orders (order_ref, customer_id, amount)
VALUES (:'o1', :'c1', (:'x1'::jsonb ->> 'amount')::numeric);
SELECT valid, reason, discount FROM loyalty.coupon_validate(:'c1', :'k1', :'x1'::jsonb);
UPDATE checkout.orders
SET discount = loyalty.coupon_redeem(:'c1', :'o1', :'k1', :'x1'::jsonb)
WHERE order_ref = :'o1'
RETURNING order_ref, amount, discount, amount - discount AS to_pay;
COMMIT;

\echo
\echo '--- the same code again: for the same order it is the same redemption; elsewhere it is used up ---'
SELECT loyalty.coupon_redeem(:'c1', :'o1', :'k1', :'x1'::jsonb) AS retried_redeem_same_order;
SELECT valid, reason FROM loyalty.coupon_validate(:'c1', :'k1', '{"amount": 80.00}');
SELECT d2.customer_id AS someone_else, v.valid, v.reason
FROM demo_basket d2, loyalty.coupon_validate(d2.customer_id, :'k1', d2.ctx) v WHERE d2.n = 2;

\echo
\echo '--- two more checkouts, each in its own transaction ---'
SELECT format($sql$
	BEGIN;
	INSERT INTO checkout.orders (order_ref, customer_id, amount) VALUES (%1$L, %2$L, %4$s);
	UPDATE checkout.orders SET discount = loyalty.coupon_redeem(%2$L, %1$L, %3$L, %5$L::jsonb)
	WHERE order_ref = %1$L;
	COMMIT;
	$sql$, order_ref, customer_id, code, ctx ->> 'amount', ctx)
FROM demo_basket WHERE n IN (2, 3) ORDER BY n \gexec

\echo
\echo '--- a payment that fails: the app rolls back, and the coupon is not used ---'
SELECT order_ref AS o4, customer_id AS c4, code AS k4, ctx AS x4 FROM demo_basket WHERE n = 4 \gset
BEGIN;
INSERT INTO checkout.orders (order_ref, customer_id, amount)
VALUES (:'o4', :'c4', (:'x4'::jsonb ->> 'amount')::numeric);
SELECT loyalty.coupon_redeem(:'c4', :'o4', :'k4', :'x4'::jsonb) AS discount_before_payment;
ROLLBACK;
SELECT count(*) AS redemptions_of_failed_order FROM loyalty.redemption WHERE order_ref = :'o4';
SELECT valid AS code_still_valid FROM loyalty.coupon_validate(:'c4', :'k4', :'x4'::jsonb);

\echo
\echo '--- a two-step payment: reserve at authorisation, redeem at capture ---'
SELECT order_ref AS o5, customer_id AS c5, code AS k5, ctx AS x5 FROM demo_basket WHERE n = 5 \gset
SELECT discount, expires_at > now() AS held
FROM loyalty.coupon_reserve(:'c5', :'o5', :'k5', :'x5'::jsonb, '20 minutes');
SELECT active_reservations FROM loyalty.campaign_stats WHERE campaign_id = :win_back;
BEGIN;
INSERT INTO checkout.orders (order_ref, customer_id, amount)
VALUES (:'o5', :'c5', (:'x5'::jsonb ->> 'amount')::numeric);
UPDATE checkout.orders SET discount = loyalty.coupon_redeem(:'c5', :'o5', :'k5', :'x5'::jsonb)
WHERE order_ref = :'o5';
COMMIT;
SELECT state AS reservation FROM loyalty.reservation WHERE order_ref = :'o5';

\echo
\echo '--- a refund: the order is rolled back, the use is given back, the history stays ---'
SELECT order_ref AS refunded, customer_id AS refunded_customer FROM demo_basket WHERE n = 2 \gset
BEGIN;
UPDATE checkout.orders SET status = 'refunded' WHERE order_ref = :'refunded';
SELECT loyalty.coupon_rollback(:'refunded_customer', :'refunded') AS rolled_back;
COMMIT;
SELECT loyalty.coupon_rollback(:'refunded_customer', :'refunded') AS again;
SELECT o.order_ref, o.amount, o.discount, o.status,
	   (SELECT string_agg(r.kind || ' ' || r.discount, ', ' ORDER BY r.redemption_id)
		FROM loyalty.redemption r WHERE r.order_ref = o.order_ref) AS ledger
FROM checkout.orders o ORDER BY o.customer_id::bigint;

\echo
\echo '--- the campaign''s figures (loyalty.campaign_stats, for analysts) ---'
SELECT name, status, codes, redemptions, rollbacks, active_redemptions, customers,
	   discount_total, active_reservations
FROM loyalty.campaign_stats WHERE campaign_id = :win_back;

SET client_min_messages = warning;
DROP SCHEMA checkout CASCADE;
DROP TABLE demo_basket, at_risk;
RESET client_min_messages;
