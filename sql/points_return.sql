--
-- points_return_for_order: a partial return takes back the points of the returned
-- share of an order (issue 13 item 10): cumulative shares rounded down, all
-- returns of the whole amount take exactly what a full reversal takes,
-- spendable first then debt as reverse_points, qualifying points and spend
-- reduced, idempotent on the return reference.
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

-- what an account holds, and whether the ledger agrees with it
CREATE FUNCTION pg_temp.acct(c text) RETURNS text LANGUAGE sql AS $$
	SELECT format('available %s pending %s debt %s lifetime %s qualifying %s spend %s',
				  a.available, a.pending, a.debt, a.lifetime_earned, a.qualifying, a.qualifying_spend)
	FROM loyalty.points_account a WHERE a.customer_id = c
$$;

-- 1.5 points per EUR, rounded down per rule: 99.99 EUR earn 149 points
INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('base', 'purchase', 1.5);

SELECT points, available FROM loyalty.earn_for_order('ann', 'A-1', 99.99, at => '2026-01-01');
-- three returns of a third each: 49 (floor of 149/3), then 99 - 49, then the rest
SELECT points, available FROM loyalty.points_return_for_order('ann', 'A-1', 'A-1-r1', 33.33, at => '2026-01-02');
SELECT points, available FROM loyalty.points_return_for_order('ann', 'A-1', 'A-1-r2', 33.33, at => '2026-01-03');
SELECT points, available FROM loyalty.points_return_for_order('ann', 'A-1', 'A-1-r3', 33.33, at => '2026-01-04');
SELECT pg_temp.acct('ann');
SELECT kind, points, reference, qualifying, amount, detail, reverses IS NOT NULL AS reverses_earning
FROM loyalty.points_ledger WHERE customer_id = 'ann' ORDER BY entry_id;
-- the same order reversed whole takes the same points
SELECT points FROM loyalty.earn_for_order('bob', 'B-1', 99.99, at => '2026-01-01');
SELECT points, available FROM loyalty.reverse_points('B-1', at => '2026-01-04');
SELECT pg_temp.acct('bob');
-- nothing is left to return (LP012); the order can still be reversed: nothing more is taken
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('ann', 'A-1', 'A-1-r4', 0.01, at => '2026-01-05')$$) AS nothing_left;
SELECT points, available FROM loyalty.reverse_points('A-1', at => '2026-01-05');
SELECT pg_temp.acct('ann');

-- idempotent on the return reference
SELECT points FROM loyalty.earn_for_order('cat', 'C-1', 200, at => '2026-01-01');
SELECT entry_id AS first_return, points, available
FROM loyalty.points_return_for_order('cat', 'C-1', 'C-1-r1', 50, at => '2026-01-02') \gset
SELECT entry_id = :first_return AS same_entry, points, available
FROM loyalty.points_return_for_order('cat', 'C-1', 'C-1-r1', 50.00, at => '2026-01-03');
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r1', 60, at => '2026-01-03')$$) AS other_amount;
SELECT points FROM loyalty.earn_points('dan', 10, 'D-1', at => '2026-01-01');
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('dan', 'D-1', 'C-1-r1', 5, at => '2026-01-03')$$) AS return_ref_of_another;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('dan', 'C-1', 'D-1-r1', 50, at => '2026-01-03')$$) AS order_of_another;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r2', 150.01, at => '2026-01-03')$$) AS too_much;
-- bad amounts, unknown orders, an earning that was not an order, a reversed order
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r2', 0)$$) AS zero;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r2', -1)$$) AS negative;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r2', 'NaN')$$) AS nan;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r2', NULL)$$) AS null_amount;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', '', 1)$$) AS empty_return_ref;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-9', 'C-9-r1', 1, at => '2026-01-03')$$) AS unknown_order;
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('nobody', 'C-1', 'N-r1', 1, at => '2026-01-03')$$) AS no_account;
SELECT points FROM loyalty.earn_points('cat', 10, 'C-2', at => '2026-01-03');
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-2', 'C-2-r1', 1, at => '2026-01-03')$$) AS not_an_order;
SELECT points FROM loyalty.reverse_points('C-1', at => '2026-01-04');
SELECT pg_temp.err($$SELECT loyalty.points_return_for_order('cat', 'C-1', 'C-1-r3', 10, at => '2026-01-04')$$) AS reversed;
SELECT pg_temp.acct('cat');

-- spendable first, then debt, as reverse_points: the order's own lots first,
-- then the other available lots FIFO, then pending, then debt
SELECT points FROM loyalty.earn_points('eve', 20, 'E-0', at => '2026-01-01');
SELECT points FROM loyalty.earn_for_order('eve', 'E-1', 100, at => '2026-01-01');    -- 150 points
SELECT points, available FROM loyalty.spend_points('eve', 160, 'E-2', at => '2026-01-02');
-- 40 of 100 EUR: 60 points; E-1's lot has 10 left, nothing else is open: debt 50
SELECT points, available, debt FROM loyalty.points_return_for_order('eve', 'E-1', 'E-1-r1', 40, at => '2026-01-03');
SELECT kind, points, lot_points, debt_change, available_after, debt_after
FROM loyalty.points_ledger WHERE customer_id = 'eve' ORDER BY entry_id;
-- the debt is repaid by the next credit
SELECT points, available, debt FROM loyalty.earn_points('eve', 100, 'E-3', at => '2026-01-04');
-- the rest of the order reversed: only the rest is taken
SELECT points, available, debt FROM loyalty.reverse_points('E-1', at => '2026-01-05');
SELECT pg_temp.acct('eve');

-- expired points of the order are not taken back: they count against the last part returned
SELECT points FROM loyalty.earn_for_order('fay', 'F-1', 10, at => '2026-01-01');     -- 15 points
UPDATE loyalty.earning_rule SET expiry_months = 1;
SELECT points FROM loyalty.earn_for_order('fay', 'F-2', 10, at => '2026-01-01');     -- 15 points, expire 2026-02-01
UPDATE loyalty.earning_rule SET expiry_months = NULL;
SELECT points, available FROM loyalty.points_return_for_order('fay', 'F-2', 'F-2-r1', 5, at => '2026-01-15');   -- 7
SELECT points, available FROM loyalty.points_return_for_order('fay', 'F-2', 'F-2-r2', 5, at => '2026-03-01');   -- 8 expired: 0
SELECT pg_temp.acct('fay');

-- tiers on spend: the qualifying spend and its month's bucket lose the amount
INSERT INTO loyalty.points_program (tier_basis) VALUES ('spend');
SELECT points FROM loyalty.earn_for_order('gus', 'G-1', 80.50, at => '2026-02-10');
SELECT points FROM loyalty.points_return_for_order('gus', 'G-1', 'G-1-r1', 30.25, at => '2026-03-01');
SELECT month, points, spend FROM loyalty.points_qualifying WHERE customer_id = 'gus';
SELECT qualifying, message FROM loyalty.tier_progress('gus', '2026-03-01');

-- capped rules get their room back once the whole order is returned
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period)
VALUES ('order bonus', 'purchase', 5, 5, 'month');
SELECT points FROM loyalty.earn_for_order('hal', 'H-1', 10, at => '2026-04-01');   -- 15 + 5
SELECT points FROM loyalty.points_return_for_order('hal', 'H-1', 'H-1-r1', 4, at => '2026-04-02');
SELECT points FROM loyalty.points_rule_usage WHERE customer_id = 'hal';
SELECT points FROM loyalty.points_return_for_order('hal', 'H-1', 'H-1-r2', 6, at => '2026-04-03');
SELECT points FROM loyalty.points_rule_usage WHERE customer_id = 'hal';
SELECT points FROM loyalty.earn_for_order('hal', 'H-2', 10, at => '2026-04-04');   -- the bonus again

SELECT * FROM loyalty.check_integrity();

-- the app level may call it
SELECT level, privileges FROM loyalty.access_rule
WHERE object_name = 'loyalty.points_return_for_order(text,text,text,numeric,timestamp with time zone)';

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
