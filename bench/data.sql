--
-- bench/data.sql: benchmark data, sized by psql variable "customers".
--
-- bench.orders: about ten orders per customer on average with a heavy tail
-- (most customers order once or twice, a few order hundreds of times),
-- spread over the three years up to 2026-11-01, amounts 5..500 EUR.
-- Uses setseed() + random(): fast, and the same for the same scale.
--
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
RESET client_min_messages;
SET max_parallel_workers_per_gather = 0;	-- one process: setseed() holds

SELECT setseed(0.4242) \g /dev/null
CREATE UNLOGGED TABLE bench.customer_plan AS
SELECT c AS customer_id,
	   least(5000, floor(1.8 / (1e-9 + random()) ^ 0.88))::int AS n_orders
FROM generate_series(1, :customers) c;

CREATE TABLE bench.orders (
	order_id	bigint GENERATED ALWAYS AS IDENTITY,
	customer_id	bigint NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(12,2) NOT NULL
);

INSERT INTO bench.orders (customer_id, ordered_at, amount)
SELECT p.customer_id,
	   timestamptz '2023-11-01 00:00+00' + random() * interval '1096 days',
	   round((5 + random() ^ 3 * 495)::numeric, 2)
FROM bench.customer_plan p, generate_series(1, p.n_orders);

DROP TABLE bench.customer_plan;
ALTER TABLE bench.orders ADD PRIMARY KEY (order_id);
VACUUM ANALYZE bench.orders;
