--
-- loyalty: live tracking of an orders table (track_orders, the triggers,
-- untrack_orders, rebuild_tracking, the day_buckets type)
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
CREATE SCHEMA trk;

-- the live statistics as they should be, recomputed from the tracked tables
-- (rows with customer and finite time; status filter; refunds are amounts
-- < 0; a null amount is an order of 0); every difference is listed
CREATE FUNCTION trk.tracked_rows()
RETURNS TABLE (c text, t timestamptz, a numeric)
LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT * FROM loyalty.tracked_table LOOP
		RETURN QUERY EXECUTE format(
			'SELECT %1$I::text, CASE WHEN pg_typeof(%2$I) = ''date''::regtype
								   THEN (%2$I::text || '' 00:00+00'')::timestamptz
								   ELSE (%2$I::text || CASE WHEN pg_typeof(%2$I) = ''timestamp''::regtype THEN ''+00'' ELSE '''' END)::timestamptz END,
					%3$I::numeric
			 FROM %4$s WHERE %1$I IS NOT NULL AND %2$I IS NOT NULL AND isfinite(%2$I) %5$s',
			r.customer_column, r.ordered_at_column, r.amount_column, r.orders,
			CASE WHEN r.status_column IS NULL THEN ''
				 ELSE format('AND %I::text = ANY (%L::text[])', r.status_column, r.counted_statuses) END);
	END LOOP;
END;
$$;
CREATE FUNCTION trk.expected()
RETURNS TABLE (customer_id text, row_count bigint, order_count bigint,
			   spend_total numeric, first_order timestamptz, last_order timestamptz)
LANGUAGE sql AS $$
	SELECT c, count(*), count(*) FILTER (WHERE a IS NULL OR a >= 0), coalesce(sum(a), 0),
		   min(t) FILTER (WHERE a IS NULL OR a >= 0), max(t) FILTER (WHERE a IS NULL OR a >= 0)
	FROM trk.tracked_rows()
	GROUP BY c
$$;
-- the statistics with every pending tracked change folded in (tracked
-- statements append deltas; fold_tracking folds them as refresh_segments does)
CREATE FUNCTION trk.live_stats() RETURNS SETOF loyalty.customer_stats
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM loyalty.fold_tracking();
	RETURN QUERY SELECT * FROM loyalty.customer_stats;
END;
$$;
CREATE FUNCTION trk.check()
RETURNS TABLE (customer_id text, problem text)
LANGUAGE sql AS $$
	WITH e AS (SELECT * FROM trk.expected()),
		 s AS (SELECT * FROM trk.live_stats() WHERE row_count <> 0),
		 ed AS (SELECT c, (t AT TIME ZONE 'UTC')::date AS day,
					   count(*) FILTER (WHERE a IS NULL OR a >= 0)::int AS orders,
					   coalesce(sum(a), 0) AS spend
				FROM trk.tracked_rows() GROUP BY 1, 2),
		 sd AS (SELECT s.customer_id AS c, d.* FROM s, loyalty.day_buckets_entries(s.days) d)
	SELECT coalesce(e.customer_id, s.customer_id), 'totals differ'
	FROM e FULL JOIN s USING (customer_id)
	WHERE (e.row_count, e.order_count, e.spend_total, e.first_order, e.last_order)
		  IS DISTINCT FROM (s.row_count, s.order_count, s.spend_total, s.first_order, s.last_order)
	UNION ALL
	SELECT coalesce(ed.c, sd.c), 'bucket ' || coalesce(ed.day, sd.day) || ' differs'
	FROM ed FULL JOIN sd ON sd.c = ed.c AND sd.day = ed.day
	WHERE (ed.orders, ed.spend) IS DISTINCT FROM (sd.orders, sd.spend)
	  AND NOT (ed.c IS NULL AND sd.orders = 0 AND sd.spend = 0)
	  AND NOT (sd.c IS NULL AND ed.orders = 0 AND ed.spend = 0)
$$;
CREATE VIEW trk.stats AS
SELECT customer_id, row_count, order_count, spend_total, first_order, last_order, days
FROM trk.live_stats() ORDER BY customer_id;
RESET client_min_messages;

-- the day_buckets type: text form, validation, round trip
SELECT '{2026-10-31:2:120.50,2026-11-01:0:-5.00}'::loyalty.day_buckets;
SELECT ' {} '::loyalty.day_buckets;
SELECT '{2026-10-31:2:120.50}'::loyalty.day_buckets::text::loyalty.day_buckets;
SELECT * FROM loyalty.day_buckets_entries('{2026-10-31:2:120.50,2026-11-02:1:0,2026-11-05:0:-5}');
SELECT '2026-10-31:2:1'::loyalty.day_buckets;				-- no braces
SELECT '{2026-10-31:2}'::loyalty.day_buckets;				-- missing spend
SELECT '{2026-10-31:2:1:4}'::loyalty.day_buckets;			-- too many parts
SELECT '{2026-11-01:1:1,2026-10-31:1:1}'::loyalty.day_buckets;	-- not ascending
SELECT '{2026-11-01:1:1,2026-11-01:1:1}'::loyalty.day_buckets;	-- same day twice
SELECT '{2026-11-01:-1:1}'::loyalty.day_buckets;			-- negative orders
SELECT '{2026-11-01:0:0.00}'::loyalty.day_buckets;			-- empty bucket
SELECT '{2026-11-01:1:NaN}'::loyalty.day_buckets;			-- NaN spend
SELECT '{2026-11-01:1:1e3}'::loyalty.day_buckets;			-- not plain decimal
SELECT '{2026-02-30:1:1}'::loyalty.day_buckets;			-- no such day
SELECT '{0044-03-15 BC:1:1}'::loyalty.day_buckets;		-- BC dates round-trip
SELECT '{infinity:1:1}'::loyalty.day_buckets;				-- infinite day
SELECT '{2026-13-01:1:1}'::loyalty.day_buckets;			-- bad date
SELECT '{2026-11-01:x:1}'::loyalty.day_buckets;			-- bad count
SELECT '{2026-11-01:1:1,}'::loyalty.day_buckets;			-- trailing comma

-- an orders table with every kind of row, tracked after the fact
CREATE TABLE trk.orders (
	id			bigserial PRIMARY KEY,
	customer	bigint,
	ordered_at	timestamptz,
	amount		numeric(10,2),
	status		text NOT NULL DEFAULT 'completed',
	note		text
);
CREATE INDEX ON trk.orders (customer);
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES
	(1, '2026-01-01 10:00+00', 10.00),
	(1, '2026-01-02 10:00+00', 20.00),
	(2, '2026-01-01 23:00+00', -5.00),		-- refund: spend, not an order
	(2, '2026-01-01 01:00+00', 7.00),
	(3, '2026-03-01 12:00+00', NULL),		-- null amount: an order of 0
	(4, NULL, 5.00),						-- no time: ignored
	(NULL, '2026-03-01 12:00+00', 5.00),	-- no customer: ignored
	(5, 'infinity', 5.00),					-- infinite time: ignored
	(6, '2027-06-01 00:00+00', 9.99);		-- future-dated: tracked like any row

SELECT * FROM loyalty.track_orders('trk.orders', 'customer', 'ordered_at', 'amount');
SELECT * FROM trk.stats;
SELECT * FROM trk.check();
SELECT orders, customer_column, ordered_at_column, amount_column, status_column, counted_statuses
FROM loyalty.tracked_table;
SELECT tgname, tgtype, tgoldtable, tgnewtable, tgfoid::regproc
FROM pg_trigger WHERE tgrelid = 'trk.orders'::regclass ORDER BY tgname;

-- INSERT: one order, then many in one statement (one upsert for all)
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (1, '2026-01-02 12:00+00', 5.00);
INSERT INTO trk.orders (customer, ordered_at, amount)
SELECT 10 + g % 3, timestamptz '2026-02-01 00:00+00' + g * interval '7 hours', g
FROM generate_series(1, 12) g;
SELECT * FROM trk.stats WHERE customer_id IN ('1', '10', '11', '12');
SELECT * FROM trk.check();

-- UPDATE: amount, time within the day, time to another day, customer change,
-- a column loyalty does not track (changes nothing)
UPDATE trk.orders SET amount = 25.00 WHERE customer = 1 AND ordered_at = '2026-01-02 10:00+00';
UPDATE trk.orders SET ordered_at = '2026-01-02 13:00+00' WHERE customer = 1 AND ordered_at = '2026-01-02 12:00+00';
UPDATE trk.orders SET ordered_at = '2025-12-31 09:00+00' WHERE customer = 1 AND ordered_at = '2026-01-01 10:00+00';
SELECT * FROM trk.stats WHERE customer_id = '1';
UPDATE trk.orders SET customer = 3 WHERE customer = 2 AND amount > 0;
SELECT * FROM trk.stats WHERE customer_id IN ('2', '3');
UPDATE trk.orders SET note = 'gift wrap';
SELECT * FROM trk.check();

-- DELETE: the latest order (last_order read again), the earliest, then a
-- customer's last row (row_count 0: left, removed by the next refresh)
DELETE FROM trk.orders WHERE customer = 1 AND ordered_at = '2026-01-02 13:00+00';
DELETE FROM trk.orders WHERE customer = 1 AND ordered_at = '2025-12-31 09:00+00';
SELECT * FROM trk.stats WHERE customer_id = '1';
DELETE FROM trk.orders WHERE customer = 2;
SELECT * FROM trk.stats WHERE customer_id = '2';
SELECT * FROM trk.check();

-- rolled back work leaves no trace, committed work after a rolled back
-- savepoint counts once
BEGIN;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (20, '2026-05-01 10:00+00', 100);
DELETE FROM trk.orders WHERE customer = 10;
ROLLBACK;
BEGIN;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (21, '2026-05-01 10:00+00', 100);
SAVEPOINT s;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (21, '2026-05-02 10:00+00', 50);
ROLLBACK TO SAVEPOINT s;
UPDATE trk.orders SET amount = 90 WHERE customer = 21;
COMMIT;
SELECT * FROM trk.stats WHERE customer_id IN ('10', '20', '21');
SELECT * FROM trk.check();

-- COPY, INSERT ... ON CONFLICT and MERGE go through the same triggers
COPY trk.orders (id, customer, ordered_at, amount) FROM stdin;
1001	30	2026-06-01 10:00:00+00	12.50
1002	30	2026-06-02 10:00:00+00	-2.50
\.
INSERT INTO trk.orders (id, customer, ordered_at, amount) VALUES (1002, 30, '2026-06-02 10:00+00', 7.50)
ON CONFLICT (id) DO UPDATE SET amount = excluded.amount;
-- (MERGE exists from PostgreSQL 15; before it, the same changes as an
-- UPDATE and an INSERT)
SELECT current_setting('server_version_num')::integer >= 150000 AS has_merge \gset
\if :has_merge
MERGE INTO trk.orders o
USING (VALUES (1001::bigint, 31::bigint), (1003, 31)) AS v(id, customer) ON o.id = v.id
WHEN MATCHED THEN UPDATE SET customer = v.customer
WHEN NOT MATCHED THEN INSERT (id, customer, ordered_at, amount) VALUES (v.id, v.customer, '2026-06-03 10:00+00', 1);
\else
UPDATE trk.orders SET customer = 31 WHERE id = 1001;
INSERT INTO trk.orders (id, customer, ordered_at, amount) VALUES (1003, 31, '2026-06-03 10:00+00', 1);
\endif
SELECT * FROM trk.stats WHERE customer_id IN ('30', '31');
SELECT * FROM trk.check();

-- NaN and infinite amounts are refused, as rfm_segmentation refuses them
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (40, now(), 'NaN');

-- a second tracked table feeds the same statistics: a shop's store orders,
-- with date times, integer amounts and a status filter
CREATE TABLE trk.store_orders (
	ticket		integer PRIMARY KEY,
	client		text,
	sold_on		date,
	total		integer,
	state		varchar(10)
);
INSERT INTO trk.store_orders VALUES
	(1, '1', '2026-01-05', 40, 'paid'),
	(2, '1', '2026-01-06', 60, 'void'),
	(3, '50', '2026-02-01', 15, 'paid');
SELECT * FROM loyalty.track_orders('trk.store_orders', 'client', 'sold_on', 'total',
								   'state', ARRAY['paid', 'refunded']);
SELECT * FROM trk.stats WHERE customer_id IN ('1', '50');
-- a status change moves an order in or out of what is counted
UPDATE trk.store_orders SET state = 'paid' WHERE ticket = 2;
UPDATE trk.store_orders SET state = 'void' WHERE ticket = 3;
SELECT * FROM trk.stats WHERE customer_id IN ('1', '50');
SELECT * FROM trk.check();

-- TRUNCATE of one tracked table rebuilds from the others
TRUNCATE trk.store_orders;
SELECT * FROM trk.stats WHERE customer_id IN ('1', '50');
SELECT * FROM trk.check();

-- a partitioned table is tracked through its parent
CREATE TABLE trk.web_orders (
	customer	bigint,
	placed		timestamp,
	amount		double precision
) PARTITION BY RANGE (placed);
CREATE TABLE trk.web_orders_2026 PARTITION OF trk.web_orders
	FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO trk.web_orders VALUES (60, '2026-07-01 08:00', 19.99);
SELECT * FROM loyalty.track_orders('trk.web_orders', 'customer', 'placed', 'amount');
INSERT INTO trk.web_orders VALUES (60, '2026-07-02 08:00', 0.01), (61, '2026-07-02 09:00', 3.5);
SELECT * FROM trk.stats WHERE customer_id IN ('60', '61');
SELECT * FROM trk.check();
SELECT * FROM loyalty.track_orders('trk.web_orders_2026', 'customer', 'placed', 'amount');

-- what cannot be tracked, and bad columns, name the problem
CREATE VIEW trk.order_view AS SELECT * FROM trk.orders;
SELECT * FROM loyalty.track_orders('trk.order_view', 'customer', 'ordered_at', 'amount');
DROP VIEW trk.order_view;
CREATE SEQUENCE trk.seq;
SELECT * FROM loyalty.track_orders('trk.seq', 'customer', 'ordered_at', 'amount');
CREATE TABLE trk.parent (customer bigint, ordered_at timestamptz, amount numeric);
CREATE TABLE trk.child () INHERITS (trk.parent);
SELECT * FROM loyalty.track_orders('trk.parent', 'customer', 'ordered_at', 'amount');
CREATE TEMP TABLE tmp_orders (customer bigint, ordered_at timestamptz, amount numeric);
SELECT * FROM loyalty.track_orders('tmp_orders', 'customer', 'ordered_at', 'amount');
SELECT * FROM loyalty.track_orders('loyalty.customer_stats', 'customer_id', 'first_order', 'spend_total');
SELECT * FROM loyalty.track_orders('trk.orders', 'customer', 'ordered_at', 'amount');
CREATE TABLE trk.other (customer bigint, ordered_at timestamptz, amount numeric, label text, day text);
SELECT * FROM loyalty.track_orders('trk.other', 'client', 'ordered_at', 'amount');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'day', 'amount');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'label');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', NULL);
SELECT * FROM loyalty.track_orders(NULL, 'customer', 'ordered_at', 'amount');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'amount', 'label');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'amount', 'label', '{}');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'amount', 'label', '{a,NULL}');
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'amount', 'nope', '{a}');
SELECT loyalty.untrack_orders('trk.other');
SELECT loyalty.untrack_orders('trk.no_such_table');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'amount');
ROLLBACK;

-- while tracked, the table and its tracked columns cannot be dropped, and
-- the tracked columns cannot be renamed or retyped
DROP TABLE trk.orders;
SET client_min_messages = warning;
DROP SCHEMA trk CASCADE;
RESET client_min_messages;
ALTER TABLE trk.orders DROP COLUMN amount;
ALTER TABLE trk.orders RENAME COLUMN customer TO client;
ALTER TABLE trk.orders ALTER COLUMN amount TYPE text;
DROP TRIGGER loyalty_rfm_track_insert ON trk.orders;
ALTER TABLE trk.orders DROP COLUMN note;		-- untracked column: fine
ALTER TABLE trk.orders RENAME COLUMN status TO state;	-- fine
ALTER TABLE trk.orders ALTER COLUMN amount TYPE numeric(12,2);	-- still a number: fine
SELECT * FROM trk.check();

-- the application's role needs no right on loyalty: with only the app level
-- and its own table it inserts, updates and deletes orders; it cannot touch
-- loyalty's tables, nor track tables (admin level)
CREATE ROLE trk_app;
SELECT loyalty.grant_access('trk_app', 'app');
GRANT USAGE ON SCHEMA trk TO trk_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON trk.orders TO trk_app;
GRANT USAGE ON SEQUENCE trk.orders_id_seq TO trk_app;
SET ROLE trk_app;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (70, '2026-08-01 10:00+00', 33.00);
UPDATE trk.orders SET amount = 34.00 WHERE customer = 70;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (70, '2026-08-02 10:00+00', 1.00);
DELETE FROM trk.orders WHERE customer = 70 AND amount = 1.00;
SELECT customer_id, orders_total, spend_total, last_order FROM loyalty.customer_rfm('70', '2026-09-01');
SELECT * FROM loyalty.customer_stats;
SELECT * FROM loyalty.customer_stats_delta;
UPDATE loyalty.customer_stats SET row_count = 0;
SELECT * FROM loyalty.track_orders('trk.orders', 'customer', 'ordered_at', 'amount');
RESET ROLE;
SELECT * FROM trk.stats WHERE customer_id = '70';
SELECT * FROM trk.check();

-- an admin-level role may track only tables it may read and put triggers on
CREATE ROLE trk_admin;
SELECT loyalty.grant_access('trk_admin', 'admin');
GRANT USAGE ON SCHEMA trk TO trk_admin;
SET ROLE trk_admin;
SELECT * FROM loyalty.track_orders('trk.other', 'customer', 'ordered_at', 'amount');
RESET ROLE;

-- rebuild_tracking recomputes everything (e.g. after rows were written with
-- the triggers off); it finds what the triggers could not see
SET session_replication_role = replica;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (80, '2026-09-01 10:00+00', 8.00);
RESET session_replication_role;
SELECT count(*) AS differences_before FROM trk.check();
SELECT * FROM loyalty.rebuild_tracking();
SELECT * FROM trk.check();

-- untrack: triggers dropped, the table's rows leave the statistics (its
-- customers stay as rows with row_count 0 until the next refresh)
SELECT loyalty.untrack_orders('trk.web_orders');
SELECT loyalty.untrack_orders('trk.store_orders');
SELECT orders FROM loyalty.tracked_table;
SELECT * FROM trk.stats WHERE customer_id IN ('60', '61');
SELECT * FROM trk.check();
SELECT loyalty.untrack_orders('trk.orders');
SELECT count(*) AS triggers_left FROM pg_trigger
WHERE tgrelid IN ('trk.orders'::regclass, 'trk.store_orders'::regclass, 'trk.web_orders'::regclass);
SELECT count(*) AS customers_with_rows FROM loyalty.customer_stats WHERE row_count <> 0;
INSERT INTO trk.orders (customer, ordered_at, amount) VALUES (90, now(), 1);
SELECT count(*) AS untracked_insert_counted FROM trk.live_stats() WHERE customer_id = '90';

-- a session that already used a tracking trigger reads the table with its
-- new definition after ALTER TABLE (the backend's cached columns go): an
-- amount retyped from numeric to double precision, then a status filter
-- added by tracking again
CREATE TABLE trk.retyped (id serial PRIMARY KEY, customer bigint, ordered_at timestamptz,
	amount numeric, state text);
SELECT * FROM loyalty.track_orders('trk.retyped', 'customer', 'ordered_at', 'amount');
INSERT INTO trk.retyped (customer, ordered_at, amount) VALUES (95, '2026-08-01 10:00+00', 2.50);
ALTER TABLE trk.retyped ALTER COLUMN amount TYPE double precision;
INSERT INTO trk.retyped (customer, ordered_at, amount) VALUES (95, '2026-08-02 10:00+00', 0.25);
SELECT order_count, spend_total FROM trk.live_stats() WHERE customer_id = '95';
SELECT loyalty.untrack_orders('trk.retyped');
SELECT * FROM loyalty.track_orders('trk.retyped', 'customer', 'ordered_at', 'amount', 'state', '{paid}');
INSERT INTO trk.retyped (customer, ordered_at, amount, state)
VALUES (95, '2026-08-03 10:00+00', 4, 'paid'), (95, '2026-08-04 10:00+00', 8, 'cart');
SELECT order_count, spend_total FROM trk.live_stats() WHERE customer_id = '95';
SELECT loyalty.untrack_orders('trk.retyped');

-- clean up
SET client_min_messages = warning;
DROP SCHEMA trk CASCADE;
DELETE FROM loyalty.customer_stats;
DELETE FROM loyalty.customer_stats_delta;
SELECT loyalty.revoke_access('trk_app', 'app');
SELECT loyalty.revoke_access('trk_admin', 'admin');
DROP ROLE trk_app;
DROP ROLE trk_admin;
