-- Demo part 10: RFM segmentation of the sample shop in one call, as of
-- 2026-11-01, over its completed orders (a view: no copy of the data).
\pset footer off
SET TimeZone = 'UTC';

\echo
\echo '=== RFM segmentation in batch: loyalty.rfm_segmentation() ==='
\echo
\echo '--- segment summary: customers, share, revenue in the last 12 months ---'
SELECT r.segment,
	   count(*) AS customers,
	   round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS "share %",
	   sum(r.monetary) AS revenue_12m_eur,
	   round(100.0 * sum(r.monetary) / sum(sum(r.monetary)) OVER (), 1) AS "revenue %",
	   round(avg(r.recency_days)) AS avg_recency_days,
	   round(avg(r.frequency), 1) AS avg_orders_12m
FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
							  as_of => '2026-11-01') r
LEFT JOIN loyalty.segment s ON s.name = r.segment
GROUP BY r.segment, s.display_order
ORDER BY s.display_order;

\echo
\echo '--- the best customer of each segment (highest spend, then lowest id) ---'
SELECT DISTINCT ON (s.display_order)
	   r.segment, r.customer_id, r.last_order::date, r.recency_days, r.frequency,
	   r.monetary, r.score
FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
							  as_of => '2026-11-01') r
JOIN loyalty.segment s ON s.name = r.segment
ORDER BY s.display_order, r.monetary DESC, r.customer_id::bigint;

\echo
\echo '--- ties: every customer with the same number of orders gets the same F score;'
\echo '--- ntile(5) in SQL would split them across scores arbitrarily ---'
WITH r AS (
	SELECT frequency, substr(score::text, 2, 1) AS f
	FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
								  as_of => '2026-11-01'))
SELECT frequency AS orders_12m, count(*) AS customers,
	   string_agg(DISTINCT f, ',') AS loyalty_f_scores,
	   (SELECT string_agg(DISTINCT n::text, ',')
		FROM (SELECT frequency AS fq, ntile(5) OVER (ORDER BY frequency) AS n FROM r) x
		WHERE x.fq = r.frequency) AS ntile_scores
FROM r
WHERE frequency <= 4
GROUP BY frequency ORDER BY frequency;

\echo
\echo '--- business thresholds instead of quantiles: recency <= 30/90/180/365 days,'
\echo '--- orders >= 2/3/5/10, spend >= 100/250/500/1000 EUR; average basket on request ---'
SELECT score, count(*) AS customers, min(segment) AS segment
FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
							  as_of => '2026-11-01',
							  recency_thresholds => '{30,90,180,365}',
							  frequency_thresholds => '{2,3,5,10}',
							  monetary_thresholds => '{100,250,500,1000}')
GROUP BY score ORDER BY count(*) DESC, score DESC LIMIT 5;
SELECT customer_id, frequency, monetary AS avg_basket_eur, score
FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
							  as_of => '2026-11-01', monetary_mode => 'average')
ORDER BY monetary DESC, customer_id::bigint LIMIT 3;

\echo
\echo '--- the statistics behind it, as an aggregate (parallel safe, exact money) ---'
SELECT customer_id, (loyalty.rfm_stats(ordered_at, amount, '2026-11-01', '12 months')).*
FROM shop.completed_orders
WHERE customer_id IN (SELECT customer_id FROM shop.completed_orders
					  GROUP BY customer_id ORDER BY count(*) DESC, customer_id LIMIT 2)
GROUP BY customer_id ORDER BY customer_id;
