--
-- points_balance: the direct read through the indexes (points_balance.c)
-- gives exactly what the balance statement gives, which runs whenever the
-- direct read cannot stand in for it (here: its lot index renamed away).
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');
INSERT INTO loyalty.points_program (expiry_months, expiry_rounding)
VALUES (12, 'month');
INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES
	('Bronze', 0, 0, 1), ('Silver', 1, 500, 1.25);

-- lots of every kind: available, pending (due and not), expiring on one
-- local day and on others, never expiring, spent (closed), debt, no account
SELECT count(*) AS receipts FROM (
	SELECT loyalty.earn_points('ann', 100, 'a1', at => '2026-01-10')
	UNION ALL SELECT loyalty.earn_points('ann', 50, 'a2', at => '2026-01-20', expires_at => '2026-03-01 00:00+01')
	UNION ALL SELECT loyalty.earn_points('ann', 70, 'a3', at => '2026-01-21', expires_at => '2026-03-01 12:00+01')
	UNION ALL SELECT loyalty.earn_points('ann', 30, 'a4', at => '2026-01-22', pending_until => '2026-02-15', expires_at => 'infinity')
	UNION ALL SELECT loyalty.earn_points('ann', 600, 'a5', at => '2026-01-23', expires_at => '2026-02-01')
	UNION ALL SELECT loyalty.spend_points('ann', 120, 's1', at => '2026-01-24')
	UNION ALL SELECT loyalty.earn_points('bob', 40, 'b1', at => '2026-01-10', pending_until => '2026-01-25')
	UNION ALL SELECT loyalty.earn_points('bob', 10, 'b2', at => '2026-01-11')
	UNION ALL SELECT loyalty.spend_points('bob', 10, 's2', at => '2026-01-12')
	UNION ALL SELECT loyalty.earn_points('cid', 25, 'c1', at => '2026-01-10')
	UNION ALL SELECT loyalty.spend_points('cid', 25, 's3', at => '2026-01-11')) r;
SELECT (loyalty.reverse_points('c1', at => '2026-01-12')).debt AS cid_debt;

CREATE TEMP TABLE probe AS
SELECT c.customer_id, t.at
FROM unnest(ARRAY['ann', 'bob', 'cid', 'nobody']) c(customer_id),
	 unnest(ARRAY['2026-01-24', '2026-01-25', '2026-01-31 23:59:59+01', '2026-02-01',
				  '2026-02-15', '2026-02-28 23:30+01', '2026-03-01 06:00+01', '2027-06-01']::timestamptz[]) t(at);

CREATE TEMP TABLE direct AS
SELECT p.customer_id, p.at, b.* FROM probe p, loyalty.points_balance(p.customer_id, p.at) b;
SELECT * FROM direct WHERE at IN ('2026-01-25', '2026-02-28 23:30+01') ORDER BY customer_id, at;

-- the same through the statement
BEGIN;
ALTER INDEX loyalty.points_lot_open_idx RENAME TO points_lot_open_idx_away;
SELECT count(*) AS rows_read,
	   count(*) FILTER (WHERE (d.available, d.pending, d.debt, d.next_expiry_date, d.next_expiry_points, d.tier)
						 IS NOT DISTINCT FROM
						 (b.available, b.pending, b.debt, b.next_expiry_date, b.next_expiry_points, b.tier)) AS equal
FROM direct d, loyalty.points_balance(d.customer_id, d.at) b;
ROLLBACK;

-- the caller's snapshot: a change made earlier in the transaction is seen,
-- a REPEATABLE READ snapshot is kept
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT available FROM loyalty.points_balance('bob', '2026-01-26');
SELECT (loyalty.earn_points('bob', 5, 'b3', at => '2026-01-26')).available AS earned;
SELECT available FROM loyalty.points_balance('bob', '2026-01-26');
ROLLBACK;

-- bad input: the same errors as before
SELECT loyalty.points_balance(NULL);
SELECT loyalty.points_balance('');
SELECT loyalty.points_balance('ann', NULL);
SELECT loyalty.points_balance('ann', 'infinity');

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
