-- Demo part 20: live RFM.  The shop's orders table is tracked (completed
-- orders only, through the status filter), segments are refreshed from the
-- live statistics, a day of orders arrives, and the next refresh shows who
-- moved.
\pset footer off
SET TimeZone = 'UTC';

\echo
\echo '=== live RFM: loyalty tracks shop.orders and keeps per-customer statistics current ==='
\echo '--- track_orders: back-fill from the existing rows, then triggers on the table ---'
SELECT * FROM loyalty.track_orders('shop.orders', 'customer_id', 'ordered_at', 'amount',
								   status_column => 'status', counted_statuses => '{completed}');

\echo
\echo '--- refresh_segments as of 2026-11-01: every customer rescored from the statistics alone ---'
SELECT scored_as_of, customers, segment_changes FROM loyalty.refresh_segments('2026-11-01');

\echo
\echo '--- segment sizes, share and revenue (spend in the last 12 months) ---'
SELECT segment, customers, round(100 * customer_share, 1) AS "customers %",
	   revenue AS revenue_eur, round(100 * revenue_share, 1) AS "revenue %",
	   revenue_per_customer AS per_customer_eur
FROM loyalty.segment_overview ORDER BY display_order;

\echo
\echo '--- recency buckets and inactive customers (no order for 6 months) per segment ---'
SELECT r.segment,
	   sum(r.customers) FILTER (WHERE r.recency_bucket = '< 3 months') AS "< 3 months",
	   sum(r.customers) FILTER (WHERE r.recency_bucket = '3-6 months') AS "3-6 months",
	   sum(r.customers) FILTER (WHERE r.recency_bucket = '> 6 months') AS "> 6 months",
	   round(100 * min(i.inactive_share), 1) AS "inactive %"
FROM loyalty.segment_recency r
JOIN loyalty.segment_inactivity i USING (segment)
GROUP BY r.segment, r.display_order ORDER BY r.display_order;

\echo
\echo '--- a day of business in one transaction: new orders, one cancelled ---'
BEGIN;
INSERT INTO shop.orders (order_id, customer_id, ordered_at, status, shipping, amount)
SELECT (SELECT max(order_id) FROM shop.orders) + g,
	   c.customer_id,
	   timestamptz '2026-11-01 09:00+00' + g * interval '20 minutes',
	   'completed', 0, 80 + (g * 37) % 400
FROM (SELECT customer_id, row_number() OVER (ORDER BY customer_id) AS g
	  FROM shop.customers WHERE customer_id % 97 = 0) c;
UPDATE shop.orders SET status = 'cancelled'
WHERE order_id = (SELECT max(order_id) FROM shop.orders
				  WHERE customer_id = 42 AND status = 'completed');
COMMIT;
SELECT customer_id, orders_total, spend_total, last_order, recency_days, frequency, monetary,
	   score, segment
FROM loyalty.customer_rfm('97', '2026-11-02');

\echo
\echo '--- refresh_segments as of 2026-11-02: only customers whose score or segment moved are written ---'
SELECT scored_as_of, customers, segment_changes, score_changes FROM loyalty.refresh_segments('2026-11-02');

\echo
\echo '--- who moved between the two snapshots (segment migration matrix) ---'
SELECT coalesce(from_segment, '(new)') AS from_segment, to_segment, customers
FROM loyalty.segment_migration('2026-11-01', '2026-11-02')
WHERE from_segment IS DISTINCT FROM to_segment
ORDER BY customers DESC, from_segment, to_segment;

\echo
\echo '--- the live result equals the batch rfm_segmentation over the completed orders ---'
SELECT count(*) AS customers, count(*) FILTER (WHERE b.segment IS DISTINCT FROM l.segment
											 OR b.score::text IS DISTINCT FROM l.score::text) AS differences
FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
							  '2026-11-02') b
FULL JOIN loyalty.customer_segment l USING (customer_id);
