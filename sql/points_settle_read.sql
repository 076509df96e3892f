--
-- expire_points: the open lots of a batch read through the lot index
-- without the executor (points_expire.c) settle exactly as when they are
-- read by the SQL statement, which runs whenever the direct read cannot
-- stand in for it (here: the lot index renamed away).
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');
INSERT INTO loyalty.points_program (expiry_months, expiry_rounding)
VALUES (12, 'month');

-- lots of every kind over several accounts: expiring by the run, pending
-- lots whose time came (and some that also expired), pending lots still
-- waiting, never expiring lots, spent (closed) lots, an account with debt
SELECT count(*) AS receipts FROM (
	SELECT loyalty.earn_points('ann', 100, 'a1', at => '2026-01-10', expires_at => '2026-02-01')
	UNION ALL SELECT loyalty.earn_points('ann', 50, 'a2', at => '2026-01-11', expires_at => '2026-02-03')
	UNION ALL SELECT loyalty.earn_points('ann', 70, 'a3', at => '2026-01-12', pending_until => '2026-01-20', expires_at => '2026-03-01')
	UNION ALL SELECT loyalty.earn_points('ann', 30, 'a4', at => '2026-01-13', pending_until => '2026-02-20', expires_at => 'infinity')
	UNION ALL SELECT loyalty.spend_points('ann', 20, 's1', at => '2026-01-14')
	UNION ALL SELECT loyalty.earn_points('bob', 40, 'b1', at => '2026-01-10', pending_until => '2026-01-25', expires_at => '2026-01-30')
	UNION ALL SELECT loyalty.earn_points('bob', 10, 'b2', at => '2026-01-11', expires_at => 'infinity')
	UNION ALL SELECT loyalty.earn_points('cid', 25, 'c1', at => '2026-01-10', expires_at => '2026-01-31')
	UNION ALL SELECT loyalty.spend_points('cid', 25, 's2', at => '2026-01-11')
	UNION ALL SELECT loyalty.earn_points('dan', 60, 'd1', at => '2026-01-10', expires_at => '2026-01-20')
	UNION ALL SELECT loyalty.earn_points('dan', 60, 'd2', at => '2026-01-10', expires_at => '2026-01-21')
	UNION ALL SELECT loyalty.earn_points('eve', 5, 'e1', at => '2026-01-10', expires_at => 'infinity')) r;
SELECT (loyalty.reverse_points('c1', at => '2026-01-12')).debt AS cid_debt;

-- everything a settlement writes, as one text (entry ids left out: the
-- identity does not roll back)
CREATE TEMP VIEW settled AS
SELECT (SELECT string_agg(format('%s %s/%s/%s %s %s', customer_id, available, pending, debt, next_event_at, settled_at),
						  '; ' ORDER BY customer_id) FROM loyalty.points_account) AS accounts,
	   (SELECT string_agg(format('%s %s %s %s', lot_id, state, remaining, expired), '; ' ORDER BY lot_id)
		FROM loyalty.points_lot) AS lots,
	   (SELECT string_agg(format('%s %s %s %s %s %s/%s/%s %s', customer_id, kind, points, lot_ids, lot_points,
								 available_after, pending_after, debt_after, effective_at), '; ' ORDER BY entry_id)
		FROM loyalty.points_ledger WHERE kind = 'expire') AS entries;

-- through the statement
BEGIN;
ALTER INDEX loyalty.points_lot_open_idx RENAME TO points_lot_open_idx_away;
SELECT * FROM loyalty.expire_points('2026-02-02');
SELECT accounts AS sql_accounts, lots AS sql_lots, entries AS sql_entries FROM settled \gset
ROLLBACK;

-- directly
SELECT * FROM loyalty.expire_points('2026-02-02');
SELECT accounts = :'sql_accounts' AS same_accounts, lots = :'sql_lots' AS same_lots,
	   entries = :'sql_entries' AS same_entries
FROM settled;
SELECT customer_id, points, lot_ids, lot_points, available_after, pending_after, debt_after
FROM loyalty.points_ledger WHERE kind = 'expire' ORDER BY entry_id;
SELECT customer_id, available, pending, debt, next_event_at FROM loyalty.points_account ORDER BY customer_id;
SELECT * FROM loyalty.check_integrity();

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP VIEW settled;
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
