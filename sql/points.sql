--
-- loyalty points: ledger, lots, balance, rules, tiers, reversal, expiry, integrity
--
-- Every call passes its business time (at / as_of), so the file does not
-- depend on the clock.  The ledger cannot be emptied (it is append-only), so
-- the file ends by re-creating the extension.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- the SQLSTATE and message of a statement that fails, or 'ok'
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- row counts of every points table, to show that a failed call wrote nothing
CREATE FUNCTION pg_temp.counts() RETURNS text LANGUAGE sql AS $$
	SELECT format('accounts %s, lots %s, entries %s, buckets %s, history %s',
				  (SELECT count(*) FROM loyalty.points_account),
				  (SELECT count(*) FROM loyalty.points_lot),
				  (SELECT count(*) FROM loyalty.points_ledger),
				  (SELECT count(*) FROM loyalty.points_qualifying),
				  (SELECT count(*) FROM loyalty.tier_history))
$$;

-- the program: expiry at the end of the month 12 months after earning, in
-- Paris time; a three-tier ladder on qualifying points
INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');
INSERT INTO loyalty.points_program (expiry_months, expiry_rounding, tier_grace_days)
VALUES (12, 'month', 30);
INSERT INTO loyalty.tier (name, rank, threshold, multiplier, discount, perks) VALUES
	('Bronze', 0, 0, 1, 0, '{}'),
	('Silver', 1, 500, 1.25, 5, '{"free_shipping": true}'),
	('Gold', 2, 1000, 1.5, 10, '{"free_shipping": true, "lounge": true}');

-- a ladder that does not rise is refused at commit
INSERT INTO loyalty.tier (name, rank, threshold) VALUES ('Platinum', 3, 900);
SELECT count(*) AS tiers FROM loyalty.tier;

--
-- earning: the receipt, the account (created on first credit), idempotency
--
SELECT * FROM loyalty.earn_points('alice', 100, 'welcome', 'welcome bonus', at => '2026-01-10 12:00+01');
-- a repeat returns the first result, even later
SELECT * FROM loyalty.earn_points('alice', 100, 'welcome', 'welcome bonus', at => '2026-01-11');
-- the same reference with another content is an error (LP002)
SELECT pg_temp.err($$SELECT loyalty.earn_points('alice', 101, 'welcome', 'welcome bonus')$$) AS other_points;
SELECT pg_temp.err($$SELECT loyalty.earn_points('alice', 100, 'welcome', 'other reason')$$) AS other_reason;
SELECT pg_temp.err($$SELECT loyalty.earn_points('bob', 100, 'welcome', 'welcome bonus')$$) AS other_customer;
-- the default expiry: end of January 2027, Paris time
SELECT lot_id, state, points, remaining, earned_at, available_at, expires_at
FROM loyalty.points_lot WHERE customer_id = 'alice' ORDER BY lot_id;
SELECT customer_id, available, pending, debt, lifetime_earned, qualifying, tier, tier_since, next_event_at
FROM loyalty.points_account;
SELECT customer_id, from_tier, to_tier, change FROM loyalty.tier_history ORDER BY history_id;

--
-- pending points: counted as pending, not spendable, available at their time
-- without any job
--
SELECT * FROM loyalty.earn_points('alice', 50, 'order-1', pending_until => '2026-02-10 00:00+01',
								  expires_at => '2026-06-30 00:00+02', at => '2026-01-11');
SELECT * FROM loyalty.points_balance('alice', '2026-01-12');
SELECT * FROM loyalty.spend_points('alice', 120, 'cart-1', at => '2026-01-12');
SELECT * FROM loyalty.points_balance('alice', '2026-02-10');
-- the spend settles the account first, then takes the soonest-expiring lot first
SELECT * FROM loyalty.spend_points('alice', 120, 'cart-1', at => '2026-02-11');
SELECT * FROM loyalty.spend_points('alice', 120, 'cart-1', at => '2026-02-12');  -- repeat
SELECT pg_temp.err($$SELECT loyalty.spend_points('alice', 10, 'cart-1', at => '2026-02-12')$$) AS other_amount;
SELECT entry_id, kind, points, reference, lot_ids, lot_points, available_after, pending_after
FROM loyalty.points_ledger WHERE customer_id = 'alice' ORDER BY entry_id;
SELECT lot_id, state, points, remaining FROM loyalty.points_lot WHERE customer_id = 'alice' ORDER BY lot_id;

-- short balances: LP001 with the available points in the detail
SELECT * FROM loyalty.spend_points('alice', 31, 'cart-2', at => '2026-02-12');
SELECT * FROM loyalty.spend_points('nobody', 1, 'cart-3', at => '2026-02-12');
SELECT pg_temp.counts();

--
-- FIFO order: soonest expiry first, never-expiring last, then earliest earned
--
SELECT (loyalty.earn_points('carol', 10, 'c-never', expires_at => 'infinity', at => '2026-01-01')).points;
SELECT (loyalty.earn_points('carol', 10, 'c-late', expires_at => '2027-06-01 00:00+02', at => '2026-01-02')).points;
SELECT (loyalty.earn_points('carol', 10, 'c-soon', expires_at => '2026-12-01 00:00+01', at => '2026-01-03')).points;
SELECT (loyalty.earn_points('carol', 10, 'c-soon-2', expires_at => '2026-12-01 00:00+01', at => '2026-01-04')).points;
SELECT (loyalty.earn_points('carol', 10, 'c-pending', pending_until => '2026-12-05',
							expires_at => '2027-12-01 00:00+01', at => '2026-01-04')).points;
SELECT (loyalty.spend_points('carol', 15, 'c-spend', at => '2026-01-05')).available;
SELECT l.lot_id, l.expires_at, l.earned_at, l.remaining
FROM loyalty.points_lot l WHERE l.customer_id = 'carol' ORDER BY l.lot_id;
SELECT lot_ids, lot_points FROM loyalty.points_ledger WHERE reference = 'c-spend';

--
-- expiry: read time is exact before any job; the job writes the entries.
-- The next expiry date is the last day (Paris time) the points can be used.
--
SELECT * FROM loyalty.points_balance('carol', '2026-11-30 23:59:59+01');
SELECT * FROM loyalty.points_balance('carol', '2026-12-01 00:00+01');
SELECT * FROM loyalty.points_balance('carol', '2026-12-05');
SELECT accounts FROM loyalty.expire_points('2026-12-01', 1);  -- at most one account
SELECT * FROM loyalty.expire_points('2026-12-01');
SELECT entry_id, kind, points, reference, lot_ids, lot_points, available_after, effective_at
FROM loyalty.points_ledger WHERE customer_id = 'carol' AND kind = 'expire';
SELECT customer_id, available, pending, next_event_at FROM loyalty.points_account WHERE customer_id = 'carol';
-- the procedure for cron: batches, each committed; the pending lot becomes available
CALL loyalty.run_points_maintenance(1, '2026-12-05');
SELECT customer_id, available, pending, next_event_at FROM loyalty.points_account WHERE customer_id = 'carol';
SELECT * FROM loyalty.expire_points('2026-12-05');  -- nothing left to do

--
-- earning rules: per unit, weekend double points, minimum amount, caps,
-- tier multipliers, pending days; floor per rule
--
INSERT INTO loyalty.earning_rule (name, event, points_per_unit, pending_days, description)
VALUES ('base', 'purchase', 1, 30, '1 point per EUR, available after the 30-day return window');
INSERT INTO loyalty.earning_rule (name, event, points_per_unit, weekdays, pending_days, apply_tier_multiplier)
VALUES ('weekend double', 'purchase', 1, '{6,7}', 30, false);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, min_amount, pending_days)
VALUES ('big basket', 'purchase', 50, 200, 30);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period)
VALUES ('review', 'review', 20, 40, 'month');
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period, qualifying, expiry_months)
VALUES ('signup', 'signup', 200, 200, 'lifetime', false, 0);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, valid_from, valid_until)
VALUES ('launch week review bonus', 'review', 5, '2026-03-02 00:00+01', '2026-03-09 00:00+01');

-- Friday 123.45 EUR: floor(123.45) = 123, pending 30 days
SELECT * FROM loyalty.earn_for_order('dave', 'D-1', 123.45, 'EUR', at => '2026-03-06 18:00+01');
-- Saturday 250 EUR: base 250 + weekend 250 + big basket 50
SELECT * FROM loyalty.earn_for_order('dave', 'D-2', 250, at => '2026-03-07 10:00+01');
SELECT entry_id, points, qualifying, amount, lot_ids, detail FROM loyalty.points_ledger
WHERE reference IN ('D-1', 'D-2') ORDER BY entry_id;
SELECT lot_id, state, points, earned_at, available_at, expires_at FROM loyalty.points_lot
WHERE customer_id = 'dave' ORDER BY lot_id;
-- 723 qualifying points: upgraded to Silver at once, inside the earning call
SELECT customer_id, tier, tier_since, qualifying, qualifying_spend FROM loyalty.points_account WHERE customer_id = 'dave';
SELECT * FROM loyalty.tier_progress('dave', '2026-03-07');
-- reviews: 20 x 1.25 (Silver) + floor(5 x 1.25) in launch week; the review rule is
-- capped at 40 points a month
SELECT points FROM loyalty.earn_for_action('dave', 'review', 'D-review-1', at => '2026-03-08');
SELECT points FROM loyalty.earn_for_action('dave', 'review', 'D-review-2', at => '2026-03-10');
SELECT points FROM loyalty.earn_for_action('dave', 'review', 'D-review-3', at => '2026-03-11');
SELECT * FROM loyalty.points_rule_usage WHERE customer_id = 'dave' ORDER BY period_start;
-- a lifetime cap: the signup bonus once; non-qualifying and never expiring
SELECT points FROM loyalty.earn_for_action('dave', 'signup', 'D-signup-1', at => '2026-03-12');
SELECT points FROM loyalty.earn_for_action('dave', 'signup', 'D-signup-2', at => '2026-03-13');
SELECT qualifying, expires_at FROM loyalty.points_ledger e JOIN loyalty.points_lot l ON l.lot_id = e.lot_ids[1]
WHERE e.reference = 'D-signup-1';
-- an action no rule names, and purchases through the action entry point
SELECT pg_temp.err($$SELECT loyalty.earn_for_action('dave', 'tweet', 'D-x', at => '2026-03-13')$$) AS unknown_action;
SELECT pg_temp.err($$SELECT loyalty.earn_for_action('dave', 'purchase', 'D-x', at => '2026-03-13')$$) AS purchase_action;
-- an order's repeat, and its content check (the amount compared as a number)
SELECT points FROM loyalty.earn_for_order('dave', 'D-2', 250.00, at => '2026-03-20');
SELECT pg_temp.err($$SELECT loyalty.earn_for_order('dave', 'D-2', 251, at => '2026-03-20')$$) AS other_amount;
-- a Monday order of 0.50 EUR earns floor(0.50 x 1.25) = 0 points: the entry
-- still records the reference and the qualifying spend
SELECT points, available, pending FROM loyalty.earn_for_order('dave', 'D-3', 0.50, at => '2026-03-16');
SELECT qualifying_spend FROM loyalty.points_account WHERE customer_id = 'dave';

--
-- reversal (a refund)
--
-- an order that spent and earned: the earned points (still pending) are
-- taken back and the spent points come back with their original expiry
SELECT points, available, pending FROM loyalty.spend_points('dave', 100, 'D-4', at => '2026-03-20');
SELECT points, available, pending FROM loyalty.earn_for_order('dave', 'D-4', 80, at => '2026-03-20');
SELECT * FROM loyalty.reverse_points('D-4', at => '2026-03-21');
SELECT * FROM loyalty.reverse_points('D-4', at => '2026-03-22');  -- repeat: the first result
SELECT entry_id, kind, points, qualifying, amount, lot_ids, lot_points, debt_change, reverses
FROM loyalty.points_ledger WHERE reference = 'D-4' ORDER BY entry_id;
-- a new month of reviews
SELECT points FROM loyalty.earn_for_action('dave', 'review', 'D-review-4', at => '2026-04-01 00:00+02');
SELECT * FROM loyalty.points_rule_usage WHERE customer_id = 'dave' ORDER BY period_start;
-- reversing an action gives its cap room back
SELECT points FROM loyalty.reverse_points('D-review-4', at => '2026-04-02');
SELECT * FROM loyalty.points_rule_usage WHERE customer_id = 'dave' ORDER BY period_start;
-- unknown and ambiguous references
SELECT pg_temp.err($$SELECT loyalty.reverse_points('no-such-order', at => '2026-03-22')$$) AS unknown_reference;
SELECT pg_temp.err($$SELECT loyalty.reverse_points('D-1', 'alice', at => '2026-12-02')$$) AS wrong_customer;

-- points already spent: clawed back from other lots, the rest is debt,
-- repaid first from the next credits; the balance never goes negative
SELECT points, available FROM loyalty.earn_points('erin', 100, 'E-1', at => '2026-01-01');
SELECT points, available FROM loyalty.earn_points('erin', 30, 'E-2', at => '2026-01-02');
SELECT points, available FROM loyalty.spend_points('erin', 120, 'E-3', at => '2026-01-03');
SELECT * FROM loyalty.reverse_points('E-1', at => '2026-01-04');
SELECT * FROM loyalty.points_balance('erin', '2026-01-04');
SELECT * FROM loyalty.earn_points('erin', 50, 'E-4', at => '2026-01-05');
-- returning the spend repays the rest of the debt first
SELECT * FROM loyalty.reverse_points('E-3', at => '2026-01-06');
SELECT entry_id, kind, points, lot_ids, lot_points, debt_change, available_after, debt_after
FROM loyalty.points_ledger WHERE customer_id = 'erin' ORDER BY entry_id;
-- a reversed reference takes no new earning or spending (LP005)
SELECT pg_temp.err($$SELECT loyalty.spend_points('erin', 5, 'E-1', at => '2026-01-07')$$) AS spend_after_reversal;
-- nor does a reference of another customer (LP002)
SELECT pg_temp.err($$SELECT loyalty.spend_points('alice', 5, 'E-1', at => '2026-12-02')$$) AS other_customer;

-- expired points of a reversed earning are not taken back a second time
SELECT points FROM loyalty.earn_points('frank', 40, 'F-1', expires_at => '2026-02-01', at => '2026-01-01');
SELECT points FROM loyalty.earn_points('frank', 10, 'F-2', at => '2026-01-01');
SELECT * FROM loyalty.reverse_points('F-1', at => '2026-03-01');

--
-- manual adjustments (admin): credit, debit, with a required reason
--
SELECT * FROM loyalty.adjust_points('frank', 25, 'ticket-17', 'goodwill after a late delivery', at => '2026-03-02');
SELECT * FROM loyalty.adjust_points('frank', -40, 'ticket-18', 'fraudulent review', at => '2026-03-03');
SELECT pg_temp.err($$SELECT loyalty.adjust_points('frank', 5, 'ticket-19', '', at => '2026-03-03')$$) AS empty_reason;
SELECT pg_temp.err($$SELECT loyalty.adjust_points('frank', 0, 'ticket-19', 'x', at => '2026-03-03')$$) AS zero;

--
-- tiers: downgrade only at evaluation, after the grace period, one step
--
SELECT points FROM loyalty.earn_points('gina', 1200, 'G-1', at => '2026-01-15');
SELECT tier FROM loyalty.points_account WHERE customer_id = 'gina';
SELECT * FROM loyalty.reverse_points('G-1', at => '2026-01-20');
-- the refund does not lower the tier; evaluation starts the grace period
SELECT tier, below_since FROM loyalty.points_account WHERE customer_id = 'gina';
SELECT * FROM loyalty.tier_progress('gina', '2026-01-20');
SELECT upgrades, downgrades FROM loyalty.evaluate_tiers_batch('2026-02-01', NULL, 1000);
SELECT tier, below_since FROM loyalty.points_account WHERE customer_id = 'gina';
-- 29 days later: still in grace
SELECT downgrades FROM loyalty.evaluate_tiers_batch('2026-03-02', NULL, 1000);
-- 30 days: one step down (Gold -> Silver), and a new grace period for Silver
SELECT downgrades FROM loyalty.evaluate_tiers_batch('2026-03-03', NULL, 1000);
SELECT tier, tier_since, below_since FROM loyalty.points_account WHERE customer_id = 'gina';
CALL loyalty.evaluate_tiers('2026-04-02', 2);
SELECT tier FROM loyalty.points_account WHERE customer_id = 'gina';
SELECT from_tier, to_tier, change, changed_at, qualifying FROM loyalty.tier_history
WHERE customer_id = 'gina' ORDER BY history_id;
-- batches walk the accounts in customer_id order
SELECT last_customer, accounts FROM loyalty.evaluate_tiers_batch('2026-04-02', NULL, 3);
SELECT last_customer, accounts FROM loyalty.evaluate_tiers_batch('2026-04-02', 'dave', 3);

-- a rolling window on spend: 12 calendar months, Paris time
UPDATE loyalty.points_program SET tier_basis = 'spend', tier_window_months = 12;
UPDATE loyalty.tier SET threshold = threshold / 2 WHERE rank > 0;  -- Silver 250, Gold 500 EUR
SELECT * FROM loyalty.tier_progress('dave', '2026-03-31');
SELECT * FROM loyalty.tier_progress('dave', '2027-02-28');  -- still in the window
SELECT * FROM loyalty.tier_progress('dave', '2027-03-01');  -- March 2026 left the window
SELECT points, available FROM loyalty.earn_for_order('harry', 'H-1', 300, at => '2026-05-01');
SELECT tier FROM loyalty.points_account WHERE customer_id = 'harry';
UPDATE loyalty.points_program SET tier_basis = 'points', tier_window_months = NULL;
UPDATE loyalty.tier SET threshold = threshold * 2 WHERE rank > 0;

--
-- bad input: a clear error each, nothing written
--
SELECT pg_temp.counts() AS before;
SELECT q, pg_temp.err(q) AS result FROM unnest(ARRAY[
	$$SELECT loyalty.earn_points('x', 0, 'bad-1')$$,
	$$SELECT loyalty.earn_points('x', -5, 'bad-1')$$,
	$$SELECT loyalty.earn_points(NULL, 5, 'bad-1')$$,
	$$SELECT loyalty.earn_points('x', NULL, 'bad-1')$$,
	$$SELECT loyalty.earn_points('x', 5, NULL)$$,
	$$SELECT loyalty.earn_points('', 5, 'bad-1')$$,
	$$SELECT loyalty.earn_points('x', 5, '')$$,
	$$SELECT loyalty.earn_points('x', 5, repeat('r', 257))$$,
	$$SELECT loyalty.earn_points('x', 5, 'bad-1', at => NULL)$$,
	$$SELECT loyalty.earn_points('x', 5, 'bad-1', at => 'infinity')$$,
	$$SELECT loyalty.earn_points('x', 5, 'bad-1', qualifying => NULL)$$,
	$$SELECT loyalty.earn_points('x', 5, 'bad-1', expires_at => '2020-01-01', at => '2026-01-01')$$,
	$$SELECT loyalty.earn_points('x', 5, 'bad-1', pending_until => '2026-03-01', expires_at => '2026-02-01', at => '2026-01-01')$$,
	$$SELECT loyalty.earn_points('alice', 9223372036854775807, 'bad-2', at => '2026-12-02')$$,
	$$SELECT loyalty.adjust_points('alice', 9223372036854775807, 'bad-2', 'overflow', at => '2026-12-02')$$,
	$$SELECT loyalty.spend_points(NULL, 5, 'bad-3')$$,
	$$SELECT loyalty.spend_points('alice', 5, 'bad-3', at => NULL)$$,
	$$SELECT loyalty.earn_for_action('x', NULL, 'bad-5')$$,
	$$SELECT loyalty.earn_for_action('x', 'review', 'bad-5', at => '-infinity')$$,
	$$SELECT loyalty.points_balance(NULL)$$,
	$$SELECT loyalty.tier_progress(NULL)$$,
	$$SELECT loyalty.spend_points('alice', 0, 'bad-3')$$,
	$$SELECT loyalty.spend_points('alice', 5, NULL)$$,
	$$SELECT loyalty.reverse_points(NULL)$$,
	$$SELECT loyalty.reverse_points('D-1', '')$$,
	$$SELECT loyalty.earn_for_order('x', 'bad-4', -1)$$,
	$$SELECT loyalty.earn_for_order('x', 'bad-4', 'NaN')$$,
	$$SELECT loyalty.earn_for_order('x', 'bad-4', NULL)$$,
	$$SELECT loyalty.earn_for_order('x', 'bad-4', 1e30, at => '2026-03-10')$$,
	$$SELECT loyalty.expire_points(NULL)$$,
	$$SELECT loyalty.expire_points('2026-01-01', 0)$$
]) q;
SELECT pg_temp.counts() AS after;
SELECT count(*) AS accounts_named_x FROM loyalty.points_account WHERE customer_id = 'x';

--
-- the ledger is append-only, even for its owner (a superuser here)
--
UPDATE loyalty.points_ledger SET points = 0 WHERE entry_id = 1;
DELETE FROM loyalty.points_ledger WHERE entry_id = 1;
TRUNCATE loyalty.points_ledger;
-- even with triggers of replication sessions off
SET session_replication_role = replica;
DELETE FROM loyalty.points_ledger WHERE entry_id = 1;
RESET session_replication_role;
-- (a superuser bypasses privileges; the triggers stop it)
SELECT EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) a
			   WHERE c.oid = 'loyalty.points_ledger'::regclass
				 AND a.privilege_type IN ('UPDATE', 'DELETE', 'TRUNCATE')) AS anyone_may_write;

--
-- the app role: calls the API, writes no table
--
CREATE ROLE loyalty_points_app;
SELECT loyalty.grant_access('loyalty_points_app', 'app');
SET ROLE loyalty_points_app;
SELECT points, available FROM loyalty.earn_points('ivy', 10, 'I-1', at => '2026-03-01');
SELECT available FROM loyalty.points_balance('ivy', '2026-03-01');
SELECT message FROM loyalty.tier_progress('ivy', '2026-03-01');
INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, available_after, pending_after, debt_after, effective_at)
VALUES ('ivy', 'adjust', 1000, 'hack', 1000, 0, 0, now());
UPDATE loyalty.points_account SET available = 1000000 WHERE customer_id = 'ivy';
SELECT loyalty.adjust_points('ivy', 1000, 'hack', 'app cannot adjust');
SELECT loyalty.expire_points();
RESET ROLE;
SELECT loyalty.revoke_access('loyalty_points_app', 'app');
DROP ROLE loyalty_points_app;

--
-- views and the integrity check
--
SELECT * FROM loyalty.tier_distribution ORDER BY rank;
SELECT * FROM loyalty.points_liability ORDER BY expiry_month NULLS LAST;
SELECT * FROM loyalty.check_integrity();
-- a corrupted account is reported (the check is not vacuous)
BEGIN;
UPDATE loyalty.points_account SET available = available + 1 WHERE customer_id = 'alice';
UPDATE loyalty.points_lot SET remaining = remaining - 1 WHERE customer_id = 'carol' AND state = 'available';
SELECT problem, customer_id FROM loyalty.check_integrity();
ROLLBACK;

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
