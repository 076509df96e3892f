--
-- missions fed by order tracking: the tracking statement trigger appends
-- the orders of a tracked table (while an active mission counts orders),
-- folded when progress is read, when the app reports an order, or by
-- mission_fold; progress from tracked inserts equals progress from the
-- function-call path (mission_order); deletes and refunded statuses roll
-- progress back, undoing a completion whose reward is still pending.
-- (Named to run after the points tests, as reward_missions.)
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
BEGIN;

CREATE SCHEMA shop;
CREATE TABLE shop.orders (
	order_id	integer PRIMARY KEY,
	customer	text NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2),
	categories	text[],
	status		text NOT NULL DEFAULT 'paid',
	note		text
);
SELECT * FROM loyalty.track_orders('shop.orders', 'customer', 'ordered_at', 'amount',
								   status_column => 'status', counted_statuses => ARRAY['paid']);

-- no mission: the trigger appends nothing
INSERT INTO shop.orders (order_id, customer, ordered_at, amount) VALUES (1, 'zero', '2026-01-02', 10);
SELECT count(*) AS pending FROM loyalty.mission_order_delta;

-- the missions of reward_missions (an event mission alone would not feed)
INSERT INTO loyalty.mission (mission_id, description, kind, target, period, period_days, recurrence,
							 reward_points, event, activation)
VALUES ('reviewer', 'Write 2 reviews', 'event', 2, 'days', 7, 'repeat', 20, 'review', 'opt_in');
INSERT INTO shop.orders (order_id, customer, ordered_at, amount) VALUES (2, 'zero', '2026-01-02', 10);
SELECT count(*) AS pending FROM loyalty.mission_order_delta;
INSERT INTO loyalty.mission (mission_id, description, kind, target, category, period, period_days,
							 recurrence, activation, reward_points, pending_days) VALUES
	('new-collection', '3 orders of the new collection in 30 days', 'orders', 3, 'new', 'days', 30,
	 'once', 'automatic', 300, 14),
	('spend-200', 'Spend 200 in a month', 'spend', 200, NULL, 'month', NULL, 'each_period', 'automatic', 100, 0),
	('streak-4', 'Order 4 months in a row', 'streak', 4, NULL, 'days', NULL, 'once', 'automatic', 500, 0);
-- categories are read from the column mission_order_source names
INSERT INTO loyalty.mission_order_source VALUES ('shop.orders', 'categories');

--
-- the same orders, tracked for t1 and reported by calls for f1
--
CREATE TEMP TABLE script (n int, ref text, amount numeric, at timestamptz, categories text[]);
INSERT INTO script VALUES
	(1, 'o1', 80, '2026-01-05', ARRAY['new', 'shoes']),
	(2, 'o2', 70, '2026-01-10', ARRAY['new']),
	(3, 'o3', 60, '2026-01-20', ARRAY['books']),
	(4, 'o4', 30, '2026-01-25', ARRAY['new']),
	(5, 'o5', 40, '2026-02-01', ARRAY['new']),
	(6, 'o6', 25, '2026-03-03', NULL),
	(7, 'o7', 25, '2026-03-04', NULL),
	(8, 'o8', 25, '2026-03-04', NULL),	-- equal to o7: counted apart
	(9, 'o9', 25, '2026-04-30', NULL),
	(10, 'o10', 250, '2026-04-30', ARRAY['new']);
INSERT INTO shop.orders (order_id, customer, ordered_at, amount, categories)
SELECT 100 + n, 't1', at, amount, categories FROM script WHERE n <= 5 ORDER BY n;
-- one statement, several orders (o8 equals o7)
INSERT INTO shop.orders (order_id, customer, ordered_at, amount, categories)
SELECT 100 + n, 't1', at, amount, categories FROM script WHERE n > 5 ORDER BY n;
SELECT count(*) AS pending, count(*) FILTER (WHERE categories IS NOT NULL) AS with_categories
FROM loyalty.mission_order_delta WHERE customer_id = 't1';
-- nothing counted before a fold
SELECT count(*) AS attempts FROM loyalty.mission_attempt WHERE customer_id = 't1';
SELECT count(*) FROM (
	SELECT (loyalty.mission_order('f1', ref, amount, at => at, categories => categories)).*
	FROM script ORDER BY n) x;

-- reading progress folds
SELECT mission_id, attempt, progress, status, message FROM loyalty.mission_progress('t1', at => '2026-05-01');
SELECT count(*) AS pending FROM loyalty.mission_order_delta WHERE customer_id = 't1';
SELECT mission_id, attempt, progress, status, message FROM loyalty.mission_progress('f1', at => '2026-05-01');

-- the two paths agree: every column of the attempts but the customer, and the rewards
CREATE TEMP VIEW attempts AS
SELECT customer_id, mission_id, attempt, started_at, ends_at, progress, last_month, status, completed_at, reward_points, pending_until, undone FROM loyalty.mission_attempt;
SELECT (SELECT count(*) FROM attempts WHERE customer_id = 't1') AS t1_attempts,
	   (SELECT count(*) FROM attempts WHERE customer_id = 'f1') AS f1_attempts,
	   (SELECT count(*) FROM ((SELECT mission_id, attempt, started_at, ends_at, progress, last_month, status, completed_at, reward_points, pending_until, undone FROM attempts WHERE customer_id = 't1'
							   EXCEPT SELECT mission_id, attempt, started_at, ends_at, progress, last_month, status, completed_at, reward_points, pending_until, undone FROM attempts WHERE customer_id = 'f1')
							  UNION ALL
							  (SELECT mission_id, attempt, started_at, ends_at, progress, last_month, status, completed_at, reward_points, pending_until, undone FROM attempts WHERE customer_id = 'f1'
							   EXCEPT SELECT mission_id, attempt, started_at, ends_at, progress, last_month, status, completed_at, reward_points, pending_until, undone FROM attempts WHERE customer_id = 't1')) d) AS differences;
SELECT customer_id, kind, points, split_part(reference, ':', 2) AS mission, split_part(reference, ':', 4) AS attempt
FROM loyalty.points_ledger WHERE reference LIKE 'mission:%' ORDER BY customer_id, entry_id;
SELECT source_ref, mission_id, delta FROM loyalty.mission_contribution
WHERE customer_id = 't1' AND mission_id = 'streak-4' ORDER BY at, source_ref;

--
-- changes of tracked rows: an update that leaves the order as it was
-- appends nothing; a refunded status takes the order back (at the
-- statement's time: long after these rewards settled, the completions
-- stand), as mission_refund does
--
UPDATE shop.orders SET note = 'gift wrap' WHERE customer = 't1';
SELECT count(*) AS pending FROM loyalty.mission_order_delta;
UPDATE shop.orders SET status = 'refunded' WHERE order_id = 110;
SELECT * FROM loyalty.mission_refund('f1', 'o10', at => statement_timestamp());
SELECT mission_id, attempt, progress, status FROM loyalty.mission_progress('t1', at => '2026-05-01');
SELECT mission_id, attempt, progress, status FROM loyalty.mission_progress('f1', at => '2026-05-01');
SELECT count(*) AS differences FROM ((SELECT mission_id, attempt, progress, status FROM attempts WHERE customer_id = 't1'
									  EXCEPT SELECT mission_id, attempt, progress, status FROM attempts WHERE customer_id = 'f1')
									 UNION ALL
									 (SELECT mission_id, attempt, progress, status FROM attempts WHERE customer_id = 'f1'
									  EXCEPT SELECT mission_id, attempt, progress, status FROM attempts WHERE customer_id = 't1')) d;
-- an equal order removed takes back one of the two
DELETE FROM shop.orders WHERE order_id = 108;
SELECT loyalty.mission_fold('t1');
SELECT source_ref, mission_id, delta, rolled_back_at IS NOT NULL AS rolled_back FROM loyalty.mission_contribution
WHERE customer_id = 't1' AND source_ref LIKE 'tracked:20260304%' ORDER BY source_ref, mission_id;

--
-- a completion undone: the completing order is deleted before the reward
-- settles (14 pending days from the order)
--
INSERT INTO loyalty.mission (mission_id, kind, target, period, period_days, reward_points, pending_days)
VALUES ('quick', 'orders', 2, 'days', 30, 70, 14);
INSERT INTO shop.orders (order_id, customer, ordered_at, amount)
VALUES (201, 't2', now() - interval '2 days', 15), (202, 't2', now() - interval '1 day', 15);
SELECT loyalty.mission_fold();
SELECT attempt, progress, status, undone FROM loyalty.mission_attempt WHERE customer_id = 't2' AND mission_id = 'quick';
DELETE FROM shop.orders WHERE order_id = 202;
-- the reader folds it: undone, the reward taken back
SELECT mission_id, attempt, progress, status FROM loyalty.mission_progress('t2') WHERE mission_id = 'quick';
SELECT attempt, progress, status, undone FROM loyalty.mission_attempt WHERE customer_id = 't2' AND mission_id = 'quick';
SELECT kind, points FROM loyalty.points_ledger WHERE customer_id = 't2' AND reference LIKE 'mission:quick:%' ORDER BY entry_id;
SELECT available, pending FROM loyalty.points_balance('t2');

--
-- a scalar category column; a missing one gives no categories (the
-- statement never fails)
--
CREATE TABLE shop.pos_sales (customer text, sold_at timestamptz, total integer, dept varchar(10));
SELECT tracked_rows FROM loyalty.track_orders('shop.pos_sales', 'customer', 'sold_at', 'total');
INSERT INTO loyalty.mission_order_source VALUES ('shop.pos_sales', 'dept');
INSERT INTO shop.pos_sales VALUES ('p1', '2026-01-05', 20, 'new'), ('p1', '2026-01-06', 20, 'toys');
UPDATE loyalty.mission_order_source SET category_column = 'nope' WHERE orders = 'shop.pos_sales'::regclass;
INSERT INTO shop.pos_sales VALUES ('p1', '2026-01-07', 20, 'new');
SELECT amount, categories, sign FROM loyalty.mission_order_delta WHERE customer_id = 'p1' ORDER BY ordered_at;
SELECT mission_id, progress FROM loyalty.mission_progress('p1', at => '2026-01-08')
WHERE mission_id IN ('new-collection', 'quick');

-- paused missions: nothing more is appended
UPDATE loyalty.mission SET active = false;
INSERT INTO shop.orders (order_id, customer, ordered_at, amount) VALUES (3, 'zero', '2026-01-02', 10);
SELECT count(*) AS pending FROM loyalty.mission_order_delta WHERE customer_id = 'zero';
SELECT * FROM loyalty.check_integrity();

ROLLBACK;
