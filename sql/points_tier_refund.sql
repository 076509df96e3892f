--
-- issue 13 item 11: a reversed earning is not replayed (LP005, as
-- documented, not a receipt with a stale balance); tier_progress answers
-- with the current thresholds; a refund can undo the upgrade its order
-- caused (points_program.tier_downgrade = 'on_refund'), in tier_history.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES
	('Bronze', 0, 0, 1), ('Silver', 1, 500, 1), ('Gold', 2, 1000, 1);
INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('base', 'purchase', 1);

--
-- replaying a reversed call
--
SELECT points, available FROM loyalty.earn_points('ann', 100, 'R-1', at => '2026-01-01');
SELECT points, available FROM loyalty.reverse_points('R-1', at => '2026-01-02');
-- the earn repeated (a client retry after the refund): LP005, not "available 100"
SELECT pg_temp.err($$SELECT loyalty.earn_points('ann', 100, 'R-1', at => '2026-01-01')$$) AS earn_replay;
SELECT pg_temp.err($$SELECT loyalty.earn_for_order('ann', 'R-1', 100, at => '2026-01-01')$$) AS order_under_it;
SELECT points, available FROM loyalty.earn_for_order('ann', 'R-2', 100, at => '2026-01-03');
SELECT points, available FROM loyalty.reverse_points('R-2', at => '2026-01-04');
SELECT pg_temp.err($$SELECT loyalty.earn_for_order('ann', 'R-2', 100, at => '2026-01-03')$$) AS order_replay;
SELECT points FROM loyalty.earn_points('ann', 50, 'R-3', at => '2026-01-05');
SELECT points, available FROM loyalty.spend_points('ann', 20, 'R-4', at => '2026-01-05');
SELECT points, available FROM loyalty.reverse_points('R-4', at => '2026-01-06');
SELECT pg_temp.err($$SELECT loyalty.spend_points('ann', 20, 'R-4', at => '2026-01-05')$$) AS spend_replay;
-- the reversal itself still replays (its receipt is the latest word on the reference)
SELECT points FROM loyalty.reverse_points('R-4', at => '2026-01-07');
-- a replay of a call that was not reversed still returns its first receipt
SELECT points, available FROM loyalty.earn_points('ann', 50, 'R-3', at => '2026-01-05');
SELECT available FROM loyalty.points_balance('ann', '2026-01-07');

--
-- tier_progress with the current thresholds
--
SELECT points FROM loyalty.earn_for_order('bob', 'B-1', 800, at => '2026-01-01');
SELECT tier, qualifying, next_tier, missing, keeps_tier, message FROM loyalty.tier_progress('bob', '2026-01-02');
-- Gold lowered to 700: bob qualifies for it at once (before any evaluate_tiers)
UPDATE loyalty.tier SET threshold = 700 WHERE name = 'Gold';
SELECT tier, qualifying, next_tier, missing, keeps_tier, message FROM loyalty.tier_progress('bob', '2026-01-02');
-- Gold raised to 2000, Silver to 900: held Silver is no longer met
UPDATE loyalty.tier SET threshold = 2000 WHERE name = 'Gold';
UPDATE loyalty.tier SET threshold = 900 WHERE name = 'Silver';
SELECT tier, qualifying, next_tier, missing, keeps_tier, message FROM loyalty.tier_progress('bob', '2026-01-02');
UPDATE loyalty.tier SET threshold = 500 WHERE name = 'Silver';
UPDATE loyalty.tier SET threshold = 1000 WHERE name = 'Gold';
SELECT tier, qualifying, next_tier, missing, keeps_tier, message FROM loyalty.tier_progress('bob', '2026-01-02');

--
-- a refund and the upgrade its order caused
--
-- default tier_downgrade 'none': the tier stays until evaluate_tiers
SELECT points FROM loyalty.earn_for_order('cat', 'C-1', 300, at => '2026-02-01');
SELECT points FROM loyalty.earn_for_order('cat', 'C-2', 400, at => '2026-02-02');   -- Silver
SELECT tier FROM loyalty.points_balance('cat', '2026-02-02');
SELECT points FROM loyalty.reverse_points('C-2', at => '2026-02-03');
SELECT tier FROM loyalty.points_balance('cat', '2026-02-03');

INSERT INTO loyalty.points_program (tier_downgrade) VALUES ('on_refund');
SELECT pg_temp.err($$UPDATE loyalty.points_program SET tier_downgrade = 'always'$$) AS bad_mode;
-- on_refund: reversing the order that upgraded dan undoes it at once
SELECT points FROM loyalty.earn_for_order('dan', 'D-1', 300, at => '2026-02-01');
SELECT points FROM loyalty.earn_for_order('dan', 'D-2', 800, at => '2026-02-02');   -- Bronze -> Gold
SELECT points FROM loyalty.reverse_points('D-2', at => '2026-02-03');
SELECT tier FROM loyalty.points_balance('dan', '2026-02-03');
SELECT changed_at, from_tier, to_tier, change, qualifying FROM loyalty.tier_history
WHERE customer_id = 'dan' ORDER BY history_id;
-- a partial return too, down to the tier the rest still reaches (Silver),
-- never below the tier held before the order
SELECT points FROM loyalty.earn_for_order('eve', 'E-1', 100, at => '2026-02-01');
SELECT points FROM loyalty.earn_for_order('eve', 'E-2', 1000, at => '2026-02-02');  -- Bronze -> Gold
SELECT points FROM loyalty.points_return_for_order('eve', 'E-2', 'E-2-r1', 100, at => '2026-02-03');  -- 1000: Gold kept
SELECT tier FROM loyalty.points_balance('eve', '2026-02-03');
SELECT points FROM loyalty.points_return_for_order('eve', 'E-2', 'E-2-r2', 500, at => '2026-02-04');  -- 500: Silver
SELECT tier FROM loyalty.points_balance('eve', '2026-02-04');
SELECT points FROM loyalty.points_return_for_order('eve', 'E-2', 'E-2-r3', 400, at => '2026-02-05');  -- 100: Bronze
SELECT tier FROM loyalty.points_balance('eve', '2026-02-05');
SELECT from_tier, to_tier, change, qualifying FROM loyalty.tier_history
WHERE customer_id = 'eve' ORDER BY history_id;
-- a refunded order that caused no upgrade lowers nothing (evaluate_tiers
-- judges the rest, with its grace period)
SELECT points FROM loyalty.earn_for_order('fay', 'F-1', 100, at => '2026-02-01');   -- Bronze
SELECT points FROM loyalty.earn_for_order('fay', 'F-2', 900, at => '2026-02-02');   -- Bronze -> Gold
SELECT points FROM loyalty.reverse_points('F-1', at => '2026-02-03');   -- 900 left: Gold kept
SELECT tier FROM loyalty.points_balance('fay', '2026-02-03');
SELECT points FROM loyalty.reverse_points('F-2', at => '2026-02-04');   -- the upgrading order: Bronze
SELECT tier FROM loyalty.points_balance('fay', '2026-02-04');
SELECT from_tier, to_tier, change, qualifying FROM loyalty.tier_history
WHERE customer_id = 'fay' ORDER BY history_id;
-- never below the tier held before the order: hal kept Silver while below
-- it (mode none), then an order made him Gold; its refund gives Silver back
UPDATE loyalty.points_program SET tier_downgrade = 'none';
SELECT points FROM loyalty.earn_for_order('hal', 'H-1', 600, at => '2026-02-01');   -- Silver
SELECT points FROM loyalty.points_return_for_order('hal', 'H-1', 'H-1-r1', 300, at => '2026-02-02');
SELECT tier FROM loyalty.points_balance('hal', '2026-02-02');
UPDATE loyalty.points_program SET tier_downgrade = 'on_refund';
SELECT points FROM loyalty.earn_for_order('hal', 'H-2', 800, at => '2026-02-03');   -- 1100: Gold
SELECT points FROM loyalty.reverse_points('H-2', at => '2026-02-04');   -- 300 left: Silver, not Bronze
SELECT tier, below_since FROM loyalty.points_account WHERE customer_id = 'hal';  -- below Silver: grace starts
SELECT from_tier, to_tier, change, qualifying FROM loyalty.tier_history
WHERE customer_id = 'hal' ORDER BY history_id;
-- an upgrade the rest of the value still earns is kept
SELECT points FROM loyalty.earn_for_order('gus', 'G-1', 1200, at => '2026-02-01');  -- Gold
SELECT points FROM loyalty.earn_for_order('gus', 'G-2', 10, at => '2026-02-02');
SELECT points FROM loyalty.reverse_points('G-2', at => '2026-02-03');
SELECT tier FROM loyalty.points_balance('gus', '2026-02-03');

SELECT * FROM loyalty.check_integrity();

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
