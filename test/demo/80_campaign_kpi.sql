-- Demo part 80: did the win-back pay?  A week of simulated orders after
-- part 70's publication (treated customers come back more often; code15
-- buyers redeem their bound code), then the KPI report per variant with
-- the lift against the untreated hold-out and its 95% interval.
\pset footer off
SET TimeZone = 'UTC';
SELECT marketing_campaign_id AS winback FROM loyalty.marketing_campaign WHERE name = 'Win-back At Risk' \gset

\echo
\echo '=== campaign KPIs: a week of orders after the win-back offer ==='
\echo '--- simulated orders 2026-11-02..08 (deterministic): hold-out 8% come back, treated 20% ---'
CREATE TEMP TABLE week_orders AS
SELECT a.customer_id, a.variant, p.code::text AS code,
	   timestamptz '2026-11-02 10:00+00' + (abs(hashtext(a.customer_id || 'day')) % 7) * interval '1 day' AS ordered_at,
	   (30 + abs(hashtext(a.customer_id || 'amount')) % 90)::numeric(12,2) AS amount
FROM loyalty.experiment_assignment a
JOIN loyalty.marketing_campaign m ON m.experiment_id = a.experiment_id
LEFT JOIN loyalty.campaign_publication p
	ON p.customer_id = a.customer_id AND p.marketing_campaign_id = m.marketing_campaign_id
WHERE m.marketing_campaign_id = :winback
  AND abs(hashtext(a.customer_id || 'buys')) % 100 < CASE WHEN a.holdout THEN 8 ELSE 20 END;
INSERT INTO shop.orders (order_id, customer_id, ordered_at, status, currency, shipping, amount)
SELECT (SELECT max(order_id) FROM shop.orders) + row_number() OVER (ORDER BY ordered_at, customer_id),
	   customer_id::bigint, ordered_at, 'completed', 'EUR', 4.90, amount
FROM week_orders;
\echo '--- the code15 buyers use their code at checkout (redeem inside the order''s transaction) ---'
SELECT count(loyalty.redeem_coupon(code, customer_id, 'week-' || customer_id,
								   jsonb_build_object('amount', amount, 'cost', round(amount * 0.55, 2))))
	   AS codes_redeemed
FROM week_orders WHERE variant = 'code15' AND code IS NOT NULL;
SELECT variant, count(*) AS orders, sum(amount) AS revenue FROM week_orders GROUP BY 1 ORDER BY 1;
\echo '--- the nightly fold: the tracked orders reach the live statistics (no rescan later) ---'
SELECT folded_rows FROM loyalty.fold_tracking();

\echo
\echo '--- the funnel: offered, filtered out by reason, per variant ---'
SELECT variant, step, reason, customers FROM loyalty.campaign_funnel
WHERE marketing_campaign_id = :winback ORDER BY 1, 2, 3;

\echo
\echo '--- the KPI report (7-day window): redemption, cost, revenue, repurchase, basket ---'
SELECT variant, holdout, audience, offered, redeemed, round(redemption_rate::numeric, 3) AS redemption_rate,
	   discount_cost, redeemed_revenue, redeemed_margin, round(repurchase_rate::numeric, 3) AS repurchase_rate,
	   avg_basket_before, avg_basket_after
FROM loyalty.campaign_kpi(:winback, window_days => 7);
\echo '--- lift: incremental revenue per member vs the hold-out, 95% Welch interval (CUPED on the'
\echo '    pre-period spend from the live statistics), and ROI at a 45% gross margin ---'
SELECT variant, round(revenue_per_member::numeric, 2) AS revenue_per_member,
	   round(incremental_revenue_per_member::numeric, 2) AS lift_per_member,
	   round(lift_lower::numeric, 2) AS lift_95_lower, round(lift_upper::numeric, 2) AS lift_95_upper,
	   round(lift_df::numeric, 1) AS df, round(incremental_revenue::numeric, 2) AS incremental_revenue,
	   round(roi::numeric, 2) AS roi
FROM loyalty.campaign_kpi(:winback, window_days => 7, margin_rate => 0.45);
\echo '--- the same without CUPED (dormant customers spent little before: CUPED gains little here) ---'
SELECT variant, round(lift_lower::numeric, 2) AS lift_95_lower, round(lift_upper::numeric, 2) AS lift_95_upper
FROM loyalty.campaign_kpi(:winback, window_days => 7, cuped => false) WHERE NOT holdout;

\echo
\echo '--- budgets: the win-back coupons may grant 2,000.00 in all and 50 redemptions a day ---'
SELECT discount_budget, period, period_cap
FROM loyalty.set_campaign_budget((SELECT campaign_id FROM loyalty.campaign WHERE name = 'Win-back 15%'),
								 discount_budget => 2000, period => 'day', period_cap => 50);
SELECT name, discount_budget, discount_used, discount_left, period, period_cap
FROM loyalty.campaign_budget_status;

\echo
\echo '--- qualify: what a treated customer can use on a 90.00 cart right now ---'
SELECT offer, code, campaign, applies, reason, discount
FROM loyalty.qualify((SELECT p.customer_id FROM loyalty.campaign_publication p
					  WHERE p.marketing_campaign_id = :winback AND p.variant = 'code15'
						AND NOT EXISTS (SELECT 1 FROM loyalty.redemption r WHERE r.customer_id = p.customer_id)
					  ORDER BY p.customer_id LIMIT 1),
					 '{"amount": 90.00}');
