-- Live RFM tracking: an application's orders table tracked with a status
-- filter, a second tracked table, live statistics with buckets, an edited
-- scoring configuration and two refreshes (snapshots, change log, summary).
-- The restore must bring back the same rows in every loyalty table (the
-- tracking triggers come back with the application's tables).
SET TimeZone = 'UTC';
CREATE SCHEMA dump_shop;
CREATE TABLE dump_shop.orders (
	id			serial PRIMARY KEY,
	customer	bigint NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2),
	status		text NOT NULL
);
INSERT INTO dump_shop.orders (customer, ordered_at, amount, status)
SELECT 1 + g % 40, timestamptz '2025-11-01 00:00+00' + g * interval '17 hours',
	   CASE WHEN g % 23 = 0 THEN -5 ELSE g % 90 END,
	   CASE WHEN g % 11 = 0 THEN 'cancelled' ELSE 'completed' END
FROM generate_series(1, 500) g;
CREATE TABLE dump_shop.store_sales (sold_on date, client text, total integer);
INSERT INTO dump_shop.store_sales VALUES ('2026-10-01', '3', 120), ('2026-10-02', 'walk-in', 15);
SELECT loyalty.track_orders('dump_shop.orders', 'customer', 'ordered_at', 'amount',
							'status', '{completed}');
SELECT loyalty.track_orders('dump_shop.store_sales', 'client', 'sold_on', 'total');
UPDATE loyalty.rfm_config SET bins = 4, inactive_after = '90 days';
SELECT loyalty.refresh_segments('2026-10-15');
INSERT INTO dump_shop.orders (customer, ordered_at, amount, status)
VALUES (1, '2026-10-20 10:00+00', 900, 'completed'), (99, '2026-10-21 10:00+00', 10, 'completed');
DELETE FROM dump_shop.orders WHERE customer = 2;
SELECT loyalty.refresh_segments('2026-10-22');
-- changes still pending at dump time (appended by the triggers, not folded
-- yet): they are extension data too and must survive the restore
INSERT INTO dump_shop.orders (customer, ordered_at, amount, status)
VALUES (4, '2026-10-22 12:00+00', 42, 'completed');
DELETE FROM dump_shop.orders WHERE customer = 99;
