--
-- Reversal of earned points that were already spent: the shortfall becomes
-- debt (issue 11 class: a non-qualifying earning, e.g. a referral reward,
-- spent entirely and then reversed was written without lowering the
-- account's lifetime total; check_integrity: "totals differ from ledger").
-- The account's lifetime total must stay equal to what
-- check_integrity() derives from the ledger (earned minus taken back) in
-- every variant: all spent, partly spent, debt repaid by a later credit,
-- the earning partly expired, remaining lots expiring, the spend reversed
-- too, and repeats of the reversal.  check_integrity() is empty after each.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

CREATE FUNCTION pg_temp.acct(c text) RETURNS text LANGUAGE sql AS $$
	SELECT format('available %s pending %s debt %s lifetime %s',
				  a.available, a.pending, a.debt, a.lifetime_earned)
	FROM loyalty.points_account a WHERE a.customer_id = c
$$;

-- the minimal case: everything earned is spent, then the earning is reversed
SELECT (loyalty.points_earn('d1', 'd1-e', 100, at => '2026-01-01', qualifying => false)).available;
SELECT (loyalty.points_spend('d1', 'd1-s', 100, at => '2026-01-02')).available;
SELECT points, available, pending, debt FROM loyalty.points_reverse('d1', 'd1-e', at => '2026-01-03');
SELECT pg_temp.acct('d1');
SELECT * FROM loyalty.check_integrity();

-- partly spent: the rest of the lot is taken back, the spent part is debt
SELECT (loyalty.points_earn('d2', 'd2-e', 100, at => '2026-01-01', qualifying => false)).available;
SELECT (loyalty.points_spend('d2', 'd2-s', 60, at => '2026-01-02')).available;
SELECT points, available, pending, debt FROM loyalty.points_reverse('d2', 'd2-e', at => '2026-01-03');
SELECT pg_temp.acct('d2');
SELECT * FROM loyalty.check_integrity();

-- a later earning repays the debt first (partly, then the rest and more)
SELECT points, available, debt FROM loyalty.points_earn('d2', 'd2-e2', 40, at => '2026-01-04', qualifying => false);
SELECT pg_temp.acct('d2');
SELECT * FROM loyalty.check_integrity();
SELECT points, available, debt FROM loyalty.points_earn('d2', 'd2-e3', 50, at => '2026-01-05', qualifying => false);
SELECT pg_temp.acct('d2');
SELECT * FROM loyalty.check_integrity();

-- the earning partly expired before the reversal: only the spent part is debt
SELECT (loyalty.points_earn('d3', 'd3-e', 100, at => '2026-01-01', qualifying => false, expires_at => '2026-02-01')).available;
SELECT (loyalty.points_spend('d3', 'd3-s', 30, at => '2026-01-02')).available;
SELECT available, pending, debt FROM loyalty.points_balance('d3', at => '2026-02-02');
SELECT points, available, pending, debt FROM loyalty.points_reverse('d3', 'd3-e', at => '2026-02-03');
SELECT pg_temp.acct('d3');
SELECT * FROM loyalty.check_integrity();
-- the debt is repaid by a new earning whose remaining lot expires in turn
SELECT points, available, debt FROM loyalty.points_earn('d3', 'd3-e2', 50, at => '2026-02-04', qualifying => false, expires_at => '2026-03-01');
SELECT available, pending, debt FROM loyalty.points_balance('d3', at => '2026-03-02');
SELECT (loyalty.points_earn('d3', 'd3-e3', 1, at => '2026-03-02', qualifying => false)).available;
SELECT pg_temp.acct('d3');
SELECT * FROM loyalty.check_integrity();

-- the spending that caused the debt is reversed too: its points come back
-- and repay the debt; repeats of either reversal return the first result
SELECT (loyalty.points_earn('d4', 'd4-e', 100, at => '2026-01-01', qualifying => false)).available;
SELECT (loyalty.points_spend('d4', 'd4-s', 100, at => '2026-01-02')).available;
SELECT points, available, pending, debt FROM loyalty.points_reverse('d4', 'd4-e', at => '2026-01-03');
SELECT points, available, pending, debt FROM loyalty.points_reverse('d4', 'd4-e', at => '2026-01-04');
SELECT pg_temp.acct('d4');
SELECT * FROM loyalty.check_integrity();
SELECT points, available, pending, debt FROM loyalty.points_reverse('d4', 'd4-s', at => '2026-01-05');
SELECT points, available, pending, debt FROM loyalty.points_reverse('d4', 'd4-s', at => '2026-01-06');
SELECT pg_temp.acct('d4');
SELECT count(*) FROM loyalty.points_ledger WHERE customer_id = 'd4' AND kind = 'reverse';
SELECT * FROM loyalty.check_integrity();

-- a qualifying earning, all spent, then reversed: lifetime and qualifying drop
SELECT (loyalty.points_earn('d5', 'd5-e', 100, at => '2026-01-01')).available;
SELECT (loyalty.points_spend('d5', 'd5-s', 100, at => '2026-01-02')).available;
SELECT points, available, pending, debt FROM loyalty.points_reverse('d5', 'd5-e', at => '2026-01-03');
SELECT pg_temp.acct('d5'), qualifying FROM loyalty.points_account WHERE customer_id = 'd5';
SELECT * FROM loyalty.check_integrity();

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
