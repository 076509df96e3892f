-- Demo part 0: the extension and the sample shop it works on.
\pset footer off
\echo
\echo '=== loyalty demo ==='
SELECT loyalty.version() AS loyalty_version,
	   current_setting('server_version') AS postgresql;

\echo
\echo '--- the sample shop (deterministic, three years up to 2026-11-01) ---'
SELECT (SELECT count(*) FROM shop.customers) AS customers,
	   (SELECT count(*) FROM shop.orders) AS orders,
	   (SELECT count(*) FROM shop.order_items) AS order_items,
	   (SELECT count(*) FROM shop.products) AS products,
	   (SELECT count(*) FROM shop.categories) AS categories;

SELECT extract(year FROM ordered_at)::int AS year,
	   count(*) AS orders,
	   count(DISTINCT customer_id) AS buyers,
	   sum(amount) FILTER (WHERE status = 'completed') AS revenue_eur,
	   round(avg(amount) FILTER (WHERE status = 'completed'), 2) AS avg_basket
FROM shop.orders
GROUP BY 1 ORDER BY 1;

SELECT c.name AS category, sum(i.quantity * i.unit_price) AS sales_eur
FROM shop.order_items i
JOIN shop.products p USING (sku)
JOIN shop.categories c USING (category_id)
GROUP BY 1 ORDER BY 2 DESC LIMIT 5;

\echo
\echo '--- access levels: roles get exactly the rights of their level ---'
SET client_min_messages = warning;
DROP ROLE IF EXISTS demo_checkout_app;
CREATE ROLE demo_checkout_app;
RESET client_min_messages;
SELECT loyalty.grant_access('demo_checkout_app', 'app');
SELECT role_name, level FROM loyalty.access_grant;
SELECT has_function_privilege('demo_checkout_app', 'loyalty.version()', 'EXECUTE') AS app_may_call_api,
	   has_table_privilege('demo_checkout_app', 'loyalty.access_grant', 'INSERT') AS app_may_write_tables;
SELECT loyalty.revoke_access('demo_checkout_app', 'app');
DROP ROLE demo_checkout_app;
