-- Demo part 70: customer lifetime value.  BG/NBD and Gamma-Gamma are
-- fitted from the live statistics of the tracked orders (part 20), stored
-- as a named model, and used to find the customers marketing most wants to
-- win back: valuable, but probably gone.
\pset footer off
SET TimeZone = 'UTC';

\echo
\echo '=== customer lifetime value: BG/NBD + Gamma-Gamma fitted inside PostgreSQL ==='
\echo '--- clv_fit_live: summaries from the tracked statistics, sufficient statistics, C fit, stored as "shop" ---'
SELECT model_name, customers, repeat_customers, distinct_triples,
	   round(r::numeric, 3) AS r, round(alpha::numeric, 2) AS alpha,
	   round(a::numeric, 3) AS a, round(b::numeric, 3) AS b, bgnbd_status,
	   round(p::numeric, 2) AS p, round(q::numeric, 2) AS q, round(v::numeric, 1) AS v, gamma_gamma_status
FROM loyalty.clv_fit_live('shop', as_of => '2026-11-01');

\echo
\echo '--- the same model from the orders table itself (any table or view, days as purchase periods) ---'
SELECT model_name, customers, round(r::numeric, 3) AS r, round(alpha::numeric, 2) AS alpha,
	   round(a::numeric, 3) AS a, round(b::numeric, 3) AS b
FROM loyalty.clv_fit('shop_batch', 'shop.orders', 'customer_id', 'ordered_at', 'amount', as_of => '2026-11-01');

\echo
\echo '--- valuable but slipping away: top 20% of spend, P(alive) below 0.3 (a campaign audience) ---'
SELECT customer_id, segment, spend_total AS spent_eur, frequency AS repeat_days,
	   age - recency AS days_silent, round(p_alive::numeric, 2) AS p_alive, clv_12m AS clv_12m_eur
FROM loyalty.clv_slipping_away('shop', max_p_alive => 0.3, as_of => '2026-11-01')
LIMIT 10;

\echo
\echo '--- what the model expects of the RFM segments: P(alive) and 12-month value ---'
SELECT s.segment, count(*) AS customers,
	   round(avg(loyalty.clv_p_alive('shop', s.frequency, s.recency, s.age))::numeric, 2) AS avg_p_alive,
	   sum(loyalty.clv_value('shop', s.frequency, s.recency, s.age, s.monetary_value)) AS clv_12m_eur
FROM (SELECT l.*, g.segment FROM loyalty.clv_summary_live('2026-11-01') l
	  JOIN loyalty.customer_segment g USING (customer_id)) s
GROUP BY s.segment ORDER BY clv_12m_eur DESC;
