--
-- missions (named to run after the points tests: the ledger identities it
-- consumes, rolled back or not, would shift their expected entry ids):
-- targets over a period, recurrence, opt-in, rewards pending until
-- the return window closes, refunds rolling progress back, progress query
-- and analyst view
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
-- one transaction, rolled back: the tests after this one see no trace
BEGIN;

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	d text;
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || ' ' || COALESCE(d, '');
END $$;

INSERT INTO loyalty.mission (mission_id, description, kind, target, category, period, period_days,
							 recurrence, activation, reward_points, pending_days, event) VALUES
	('new-collection', '3 orders of the new collection in 30 days', 'orders', 3, 'new', 'days', 30,
	 'once', 'automatic', 300, 14, NULL),
	('spend-200', 'Spend 200 in a month', 'spend', 200, NULL, 'month', NULL, 'each_period', 'automatic', 100, 0, NULL),
	('streak-4', 'Order 4 months in a row', 'streak', 4, NULL, 'days', NULL, 'once', 'automatic', 500, 0, NULL),
	('reviewer', 'Write 2 reviews in a week', 'event', 2, NULL, 'days', 7, 'repeat', 'opt_in', 20, 0, 'review');
-- a mission's shape is checked
SELECT pg_temp.err($$INSERT INTO loyalty.mission (mission_id, kind, target, period) VALUES ('bad', 'orders', 3, 'days')$$);
SELECT pg_temp.err($$INSERT INTO loyalty.mission (mission_id, kind, target, period, period_days) VALUES ('bad', 'event', 3, 'days', 7)$$);

-- nothing started yet: every open mission the customer is in (reviewer needs an opt-in)
SELECT mission_id, attempt, progress, target, status, message FROM loyalty.mission_progress('c1', at => '2026-01-01');

--
-- orders
--
SELECT * FROM loyalty.mission_order('c1', 'o1', 80, at => '2026-01-05', categories => ARRAY['new', 'shoes']);
SELECT mission_id, progress, status, days_left, message FROM loyalty.mission_progress('c1', at => '2026-01-06');
SELECT * FROM loyalty.mission_order('c1', 'o2', 70, at => '2026-01-10', categories => ARRAY['new']);
-- a repeat counts nothing more
SELECT * FROM loyalty.mission_order('c1', 'o2', 70, at => '2026-01-10', categories => ARRAY['new']);
-- another category: only spend and streak; spend-200 completes (reward 100, no pending)
SELECT * FROM loyalty.mission_order('c1', 'o3', 60, at => '2026-01-20', categories => ARRAY['books']);
-- the third order of the collection completes it: 300 points pending 14 days
SELECT * FROM loyalty.mission_order('c1', 'o4', 30, at => '2026-01-25', categories => ARRAY['new']);
SELECT mission_id, progress, status, message FROM loyalty.mission_progress('c1', at => '2026-01-26');
SELECT customer_id, kind, points, reference FROM loyalty.points_ledger ORDER BY entry_id;
SELECT available, pending FROM loyalty.points_balance('c1', at => '2026-01-26');

--
-- refunds: o4 is returned inside the window: the completion is undone and
-- its reward taken back; the attempt goes on in its period
--
SELECT * FROM loyalty.mission_refund('c1', 'o4', at => '2026-01-28');
SELECT * FROM loyalty.mission_refund('c1', 'o4', at => '2026-01-28');
SELECT available, pending FROM loyalty.points_balance('c1', at => '2026-01-28');
-- o5 completes it again (a new reward reference); spend-200 starts February's attempt
SELECT * FROM loyalty.mission_order('c1', 'o5', 40, at => '2026-02-01', categories => ARRAY['new']);
-- o3 is returned after spend-200's reward settled (no pending days): the completion stands
SELECT * FROM loyalty.mission_refund('c1', 'o3', at => '2026-02-02');
SELECT customer_id, kind, points, reference FROM loyalty.points_ledger WHERE reference LIKE 'mission:%' ORDER BY entry_id;

--
-- the streak: January, February, March... April is missed: the streak
-- breaks and starts again in May; a second order in a month adds nothing
--
SELECT * FROM loyalty.mission_order('c1', 'o6', 25, at => '2026-03-03') WHERE mission_id = 'streak-4';
SELECT * FROM loyalty.mission_order('c1', 'o7', 25, at => '2026-03-04') WHERE mission_id = 'streak-4';
SELECT * FROM loyalty.mission_order('c1', 'o8', 25, at => '2026-05-02') WHERE mission_id = 'streak-4';
SELECT * FROM loyalty.mission_order('c2', 'p1', 25, at => '2026-01-31') WHERE mission_id = 'streak-4';
SELECT * FROM loyalty.mission_order('c2', 'p2', 25, at => '2026-02-01') WHERE mission_id = 'streak-4';
SELECT * FROM loyalty.mission_order('c2', 'p3', 25, at => '2026-03-15') WHERE mission_id = 'streak-4';
SELECT * FROM loyalty.mission_order('c2', 'p4', 25, at => '2026-04-30') WHERE mission_id = 'streak-4';
-- another customer completing the same mission gets a reward of its own
SELECT * FROM loyalty.mission_order('c2', 'p5', 250, at => '2026-04-30') WHERE mission_id = 'spend-200';
SELECT mission_id, attempt, progress, status, message FROM loyalty.mission_progress('c2', at => '2026-05-01')
WHERE mission_id = 'streak-4';

--
-- events (opt-in): nothing before the opt-in; two reviews complete it, the
-- third starts the next attempt (recurrence repeat)
--
SELECT * FROM loyalty.mission_event('c1', 'rev-1', 'review', at => '2026-03-01');
SELECT loyalty.mission_join('c1', 'reviewer', at => '2026-03-02');
SELECT loyalty.mission_join('c1', 'reviewer', at => '2026-03-05');
SELECT * FROM loyalty.mission_event('c1', 'rev-2', 'review', at => '2026-03-03');
SELECT * FROM loyalty.mission_event('c1', 'rev-3', 'review', at => '2026-03-04');
SELECT * FROM loyalty.mission_event('c1', 'rev-4', 'review', at => '2026-03-20');
SELECT * FROM loyalty.mission_event('c1', 'share-1', 'share', at => '2026-03-20');
SELECT pg_temp.err($$SELECT loyalty.mission_join('c1', 'nope')$$);
UPDATE loyalty.mission SET active = false WHERE mission_id = 'reviewer';
SELECT pg_temp.err($$SELECT loyalty.mission_join('c1', 'reviewer')$$);
SELECT pg_temp.err($$SELECT loyalty.mission_order('c1', NULL, 10)$$);

--
-- the analyst view
--
SELECT * FROM loyalty.mission_stats ORDER BY mission_id;
SELECT * FROM loyalty.check_integrity();

ROLLBACK;
