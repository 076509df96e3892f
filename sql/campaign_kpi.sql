--
-- campaign_kpi: KPIs of a marketing campaign per variant (issue 15, item 8):
-- audience, offered, filtered, redeemed, redemption rate, discount cost,
-- revenue and margin of redeemed orders, repurchase rate and basket before
-- / after, incremental revenue per member vs the hold-out with its 95%
-- Welch (CUPED) interval, ROI.  Outcomes come from the live day buckets of
-- a tracked orders table; the figures are checked against the same
-- figures computed by hand from the orders table.
--
-- (in a database of its own, as the other campaign tests: the ledger and
-- snapshot ids other tests print stay put)
\set regress_db :DBNAME
CREATE DATABASE campaign_kpi_db;
\c campaign_kpi_db
CREATE EXTENSION loyalty;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

-- a tracked shop: 300 customers, orders in the 14 days before the offer
-- (2026-10-01) and in the 14 days from it
CREATE TABLE shop_orders (customer text, at timestamptz, amount numeric(10,2), note jsonb);
SELECT tracked_rows FROM loyalty.track_orders('shop_orders', 'customer', 'at', 'amount');
INSERT INTO shop_orders (customer, at, amount)
SELECT 'k' || i, timestamptz '2026-09-17 12:00+00' + (i % 14) * interval '1 day', 20 + (i * 37) % 50
FROM generate_series(1, 300) i WHERE i % 3 <> 0;
SELECT count(loyalty.set_consent('k' || i, 'email', i % 50 <> 7, 'test')) FROM generate_series(1, 300) i;

-- a 10-off public code offered to variant "ten", a 5-off one to "five";
-- 20% hold-out
SELECT loyalty.create_campaign('kpi ten', 'fixed', amount_off => 10) AS c_ten \gset
SELECT loyalty.create_campaign('kpi five', 'fixed', amount_off => 5) AS c_five \gset
SELECT loyalty.add_public_code(:c_ten, 'KPITEN') IS NOT NULL AS added,
	   loyalty.add_public_code(:c_five, 'KPIFIVE') IS NOT NULL AS added;
SELECT loyalty.create_experiment('kpi test', format('[
	{"variant": "ten", "weight": 40},
	{"variant": "five", "weight": 40, "offer_kind": "public_code", "coupon_campaign_id": %s, "public_code": "KPIFIVE"},
	{"variant": "hold", "weight": 20, "holdout": true}]', :c_five)::jsonb, salt => 'kpi salt') AS ex \gset
SELECT loyalty.create_marketing_campaign('kpi campaign', 'customers',
	(SELECT jsonb_build_object('customers', jsonb_agg('k' || i)) FROM generate_series(1, 300) i),
	'public_code', coupon_campaign_id => :c_ten, public_code => 'KPITEN', experiment_id => :ex) AS mc \gset
SELECT * FROM loyalty.publish_marketing_campaign(:mc, '2026-10-01 09:00+00') ORDER BY 1;

-- after the offer: treated members buy more; a third of the offered redeem
-- (their orders carry a cost), one redemption is rolled back
INSERT INTO shop_orders (customer, at, amount)
SELECT a.customer_id, timestamptz '2026-10-02 12:00+00' + (i % 10) * interval '1 day',
	   CASE WHEN a.holdout THEN 25 ELSE 40 END + (i * 13) % 30
FROM loyalty.experiment_assignment a
JOIN (SELECT i, 'k' || i AS customer_id FROM generate_series(1, 300) i) g USING (customer_id)
WHERE a.experiment_id = :ex AND i % CASE WHEN a.holdout THEN 3 ELSE 2 END = 0;
-- an order outside the 14-day window does not count
INSERT INTO shop_orders (customer, at, amount) VALUES ('k2', '2026-11-20 12:00+00', 999);
SELECT count(loyalty.redeem_coupon(p.code::text, p.customer_id, 'kpi-' || p.customer_id,
								   jsonb_build_object('amount', 80, 'cost', 50)))
FROM loyalty.campaign_publication p
WHERE p.marketing_campaign_id = :mc AND substr(p.customer_id, 2)::int % 3 = 1;
SELECT loyalty.rollback_redemption('kpi-' || min(customer_id)) FROM loyalty.campaign_publication
WHERE marketing_campaign_id = :mc AND variant = 'ten' AND substr(customer_id, 2)::int % 3 = 1;
SELECT folded_rows > 0 AS folded FROM loyalty.fold_tracking();

-- the report
SELECT variant, holdout, audience, offered, filtered, redeemed, round(redemption_rate::numeric, 4) AS rate,
	   discount_cost, redeemed_revenue, redeemed_margin, round(repurchase_rate::numeric, 4) AS repurchase,
	   avg_basket_before, avg_basket_after, round(revenue_per_member::numeric, 2) AS per_member
FROM loyalty.campaign_kpi(:mc, window_days => 14);
-- the same figures by hand from the orders table and the logs
WITH m AS (
	SELECT a.customer_id, a.variant, a.holdout,
		   (SELECT coalesce(sum(o.amount), 0) FROM shop_orders o WHERE o.customer = a.customer_id
			  AND o.at >= '2026-10-01' AND o.at < '2026-10-15') AS after,
		   (SELECT count(*) FROM shop_orders o WHERE o.customer = a.customer_id
			  AND o.at >= '2026-10-01' AND o.at < '2026-10-15') AS n_after,
		   (SELECT coalesce(sum(o.amount), 0) FROM shop_orders o WHERE o.customer = a.customer_id
			  AND o.at >= '2026-09-17' AND o.at < '2026-10-01') AS before,
		   (SELECT count(*) FROM shop_orders o WHERE o.customer = a.customer_id
			  AND o.at >= '2026-09-17' AND o.at < '2026-10-01') AS n_before
	FROM loyalty.experiment_assignment a WHERE a.experiment_id = :ex)
SELECT m.variant, count(*) AS audience,
	   round(count(*) FILTER (WHERE n_after > 0)::numeric / count(*), 4) AS repurchase,
	   round(sum(before) / nullif(sum(n_before), 0), 2) AS basket_before,
	   round(sum(after) / nullif(sum(n_after), 0), 2) AS basket_after,
	   round(avg(after), 2) AS per_member
FROM m GROUP BY m.variant ORDER BY bool_or(holdout) DESC, m.variant;

-- lift: plain Welch from the orders table by hand = the report without CUPED
WITH m AS (
	SELECT a.variant, a.holdout,
		   (SELECT coalesce(sum(o.amount), 0) FROM shop_orders o WHERE o.customer = a.customer_id
			  AND o.at >= '2026-10-01' AND o.at < '2026-10-15')::float8 AS y
	FROM loyalty.experiment_assignment a WHERE a.experiment_id = :ex),
g AS (SELECT variant, holdout, count(*) AS n, avg(y) AS mean, var_samp(y) AS var FROM m GROUP BY 1, 2),
hand AS (
	SELECT t.variant, t.mean - h.mean AS diff,
		   sqrt(t.var / t.n + h.var / h.n) AS se,
		   (t.var / t.n + h.var / h.n) ^ 2 / ((t.var / t.n) ^ 2 / (t.n - 1) + (h.var / h.n) ^ 2 / (h.n - 1)) AS df
	FROM g t, g h WHERE NOT t.holdout AND h.holdout)
SELECT k.variant, round(k.incremental_revenue_per_member::numeric, 6) = round(hand.diff::numeric, 6) AS same_diff,
	   round(k.lift_df::numeric, 6) = round(hand.df::numeric, 6) AS same_df,
	   round(k.lift_lower::numeric, 6) = round((hand.diff - loyalty.t_quantile(0.975, hand.df) * hand.se)::numeric, 6) AS same_lower,
	   k.lift_lower > 0 AS significant
FROM loyalty.campaign_kpi(:mc, window_days => 14, cuped => false) k JOIN hand USING (variant)
ORDER BY 1;
-- CUPED: same members, an interval no wider; the hold-out has no lift
SELECT c.variant, c.lift_upper - c.lift_lower <= p.lift_upper - p.lift_lower AS cuped_not_wider,
	   c.lift_lower < c.incremental_revenue_per_member AND c.incremental_revenue_per_member < c.lift_upper AS inside
FROM loyalty.campaign_kpi(:mc, window_days => 14) c
JOIN loyalty.campaign_kpi(:mc, window_days => 14, cuped => false) p USING (variant)
WHERE NOT c.holdout ORDER BY 1;
SELECT variant, incremental_revenue_per_member, lift_lower, roi FROM loyalty.campaign_kpi(:mc) WHERE holdout;
-- ROI = (incremental margin - cost) / cost: with the redeemed orders' margin
-- share (cost given in their context), and with a margin rate given
SELECT variant, round(roi::numeric, 6) = round(((incremental_revenue * 30 / 80 - discount_cost) / discount_cost)::numeric, 6) AS roi_observed
FROM loyalty.campaign_kpi(:mc, window_days => 14) WHERE NOT holdout ORDER BY 1;
SELECT variant, round(roi::numeric, 6) = round(((incremental_revenue * 0.25 - discount_cost) / discount_cost)::numeric, 6) AS roi_rate
FROM loyalty.campaign_kpi(:mc, window_days => 14, margin_rate => 0.25) WHERE NOT holdout ORDER BY 1;

-- members, for an analyst's own breakdowns
SELECT variant, count(*), count(*) FILTER (WHERE redeemed) AS redeemed, sum(redemptions) AS redemptions
FROM loyalty.campaign_members(:mc, 14) GROUP BY 1 ORDER BY 1;

-- the funnel and the BI views
SELECT variant, step, reason, customers FROM loyalty.campaign_funnel
WHERE marketing_campaign_id = :mc ORDER BY 1, 2, 3;
SELECT name, variant, audience, offered, redeemed FROM loyalty.campaign_kpis ORDER BY 2;

-- a campaign without an experiment: one row, no lift
SELECT loyalty.create_marketing_campaign('kpi plain', 'customers', '{"customers": ["k1", "k2", "k4", "k7"]}',
	'public_code', coupon_campaign_id => :c_ten, public_code => 'KPITEN') AS plain \gset
SELECT outcome, customers FROM loyalty.publish_marketing_campaign(:plain, '2026-10-03 09:00+00') ORDER BY 1;
SELECT variant, audience, offered, filtered, incremental_revenue_per_member, roi
FROM loyalty.campaign_kpi(:plain, window_days => 7);

-- bad arguments
SELECT * FROM loyalty.campaign_kpi(NULL);
SELECT * FROM loyalty.campaign_kpi(:mc, window_days => 0);
SELECT * FROM loyalty.campaign_kpi(:mc, margin_rate => 2);
SELECT * FROM loyalty.campaign_kpi(424242);

\c :regress_db
DROP DATABASE campaign_kpi_db;
