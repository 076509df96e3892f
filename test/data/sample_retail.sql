--
-- test/data/sample_retail.sql: a deterministic sample retail dataset.
--
--   psql -v customers=2000 -f test/data/sample_retail.sql
--
-- Creates schema "shop" (dropped first) with categories, products, customers,
-- orders and order items covering three years of history up to 2026-11-01
-- (the fixed "as of" date of the demo and tests).  Every value comes from
-- md5 of a key, never random(), so the same call always yields the same rows,
-- whatever the plan or the number of workers.
--
-- Shape: about 10% of customers never order; the others order a heavy-tailed
-- number of times (Pareto-like: most once or twice, a few hundreds of times)
-- within an active period that may end long before the as-of date (churn).
-- About 4% of orders are cancelled and 3% refunded.
--
\set ON_ERROR_STOP 1
\if :{?customers}
\else
\set customers 2000
\endif

SET client_min_messages = warning;
DROP SCHEMA IF EXISTS shop CASCADE;
CREATE SCHEMA shop;
RESET client_min_messages;

-- deterministic uniform value in [0, 1) from a key
CREATE FUNCTION shop.rnd(key text)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT ('x' || substr(md5(key), 1, 8))::bit(32)::bigint / 4294967296.0 $$;

CREATE TABLE shop.categories (
	category_id	integer PRIMARY KEY,
	name		text NOT NULL UNIQUE
);

INSERT INTO shop.categories
SELECT i, name
FROM unnest(ARRAY['shoes', 'apparel', 'accessories', 'beauty', 'home',
				  'electronics', 'sports', 'kids', 'grocery', 'books'])
	 WITH ORDINALITY AS t(name, i);

CREATE TABLE shop.products (
	sku			text PRIMARY KEY,
	category_id	integer NOT NULL REFERENCES shop.categories,
	name		text NOT NULL,
	price		numeric(10,2) NOT NULL CHECK (price > 0)
);

INSERT INTO shop.products
SELECT format('%s-%s', upper(substr(c.name, 1, 3)), lpad(p::text, 3, '0')),
	   c.category_id,
	   format('%s item %s', initcap(c.name), p),
	   round((4.99 + shop.rnd('price' || c.category_id || '.' || p) ^ 2
			  * CASE c.name WHEN 'electronics' THEN 600 WHEN 'home' THEN 200
							WHEN 'grocery' THEN 20 WHEN 'books' THEN 40 ELSE 120 END)::numeric, 2)
FROM shop.categories c, generate_series(1, 20) p;

CREATE TABLE shop.customers (
	customer_id			bigint PRIMARY KEY,
	email				text NOT NULL UNIQUE,
	city				text NOT NULL,
	signup_at			timestamptz NOT NULL,
	birth_date			date,
	marketing_consent	boolean NOT NULL
);

INSERT INTO shop.customers
SELECT i,
	   format('customer%s@example.com', i),
	   (ARRAY['Paris', 'Lyon', 'Berlin', 'Madrid', 'Milan', 'Lisbon', 'Vienna', 'Brussels'])
		   [1 + floor(shop.rnd('city' || i) * 8)::int],
	   timestamptz '2023-11-01 00:00+00' + shop.rnd('signup' || i) * interval '1000 days',
	   CASE WHEN shop.rnd('bday?' || i) < 0.8
			THEN date '1950-01-01' + floor(shop.rnd('bday' || i) * 20000)::int END,
	   shop.rnd('consent' || i) < 0.7
FROM generate_series(1, :customers) i;

-- order count per customer: 0 for ~10%, else heavy-tailed (1 .. 300)
CREATE TEMP TABLE customer_plan AS
SELECT c.customer_id,
	   c.signup_at,
	   CASE WHEN shop.rnd('none' || c.customer_id) < 0.10 THEN 0
			ELSE least(300, floor(1.0 / (0.0005 + shop.rnd('n' || c.customer_id)) ^ 0.85)::int)
	   END AS n_orders,
	   -- active period: from signup to a churn point (or the as-of date)
	   least(timestamptz '2026-11-01 00:00+00',
			 c.signup_at + (0.15 + shop.rnd('life' || c.customer_id) * 1.2)
						   * (timestamptz '2026-11-01 00:00+00' - c.signup_at)) AS active_until
FROM shop.customers c;

CREATE TABLE shop.orders (
	order_id	bigint PRIMARY KEY,
	customer_id	bigint NOT NULL REFERENCES shop.customers,
	ordered_at	timestamptz NOT NULL,
	status		text NOT NULL CHECK (status IN ('completed', 'cancelled', 'refunded')),
	currency	text NOT NULL DEFAULT 'EUR',
	shipping	numeric(8,2) NOT NULL,
	amount		numeric(12,2) NOT NULL	-- sum of the items, shipping excluded
);

CREATE TABLE shop.order_items (
	order_id	bigint NOT NULL,
	line_no		integer NOT NULL,
	sku			text NOT NULL REFERENCES shop.products,
	quantity	integer NOT NULL CHECK (quantity > 0),
	unit_price	numeric(10,2) NOT NULL,
	PRIMARY KEY (order_id, line_no)
);

CREATE TEMP TABLE order_plan AS
SELECT row_number() OVER (ORDER BY p.customer_id, k) AS order_id,
	   p.customer_id,
	   p.signup_at + shop.rnd('t' || p.customer_id || '.' || k)
					 * (p.active_until - p.signup_at) AS ordered_at,
	   shop.rnd('s' || p.customer_id || '.' || k) AS status_draw,
	   1 + floor(shop.rnd('lines' || p.customer_id || '.' || k) ^ 2 * 5)::int AS n_lines
FROM customer_plan p, generate_series(1, p.n_orders) k;

-- items first (the order amount is their sum); the foreign key to orders is
-- added once the orders exist
INSERT INTO shop.order_items
SELECT o.order_id, l,
	   pr.sku,
	   1 + floor(shop.rnd('q' || o.order_id || '.' || l) ^ 3 * 4)::int,
	   pr.price
FROM order_plan o
CROSS JOIN LATERAL generate_series(1, o.n_lines) l
JOIN (SELECT sku, price, row_number() OVER (ORDER BY sku) - 1 AS pos FROM shop.products) pr
	ON pr.pos = floor(shop.rnd('sku' || o.order_id || '.' || l) * 200)::int;

INSERT INTO shop.orders
SELECT o.order_id, o.customer_id, o.ordered_at,
	   CASE WHEN o.status_draw < 0.04 THEN 'cancelled'
			WHEN o.status_draw < 0.07 THEN 'refunded'
			ELSE 'completed' END,
	   'EUR',
	   CASE WHEN i.amount >= 50 THEN 0 ELSE 4.90 END,
	   i.amount
FROM order_plan o
JOIN (SELECT order_id, sum(quantity * unit_price) AS amount
	  FROM shop.order_items GROUP BY order_id) i USING (order_id);

ALTER TABLE shop.order_items ADD FOREIGN KEY (order_id) REFERENCES shop.orders;
CREATE INDEX ON shop.orders (customer_id, ordered_at);

-- what most loyalty calls read: completed orders only
CREATE VIEW shop.completed_orders AS
SELECT order_id, customer_id, ordered_at, amount
FROM shop.orders WHERE status = 'completed';

DROP TABLE customer_plan, order_plan;
ANALYZE shop.categories, shop.products, shop.customers, shop.orders, shop.order_items;
