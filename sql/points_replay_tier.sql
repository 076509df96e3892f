--
-- A repeated earn is a repeat even when the tier ladder changed in between
-- and the repeat, recomputed, would change the tier: it returns the first
-- receipt (it used to hit the reference's unique index and be reported as
-- LP002, another customer's reference).
--
INSERT INTO loyalty.tier (name, rank, threshold) VALUES ('Silver', 1, 100);
SELECT * FROM loyalty.earn_points('dora', 110, 'r1', at => '2026-01-01');
SELECT customer_id, tier, available FROM loyalty.points_account;
-- a tier above Silver that dora's points already reach
INSERT INTO loyalty.tier (name, rank, threshold) VALUES ('Gold', 2, 105);
SELECT * FROM loyalty.earn_points('dora', 110, 'r1', at => '2026-01-01');  -- repeat
-- the same reference with other content is still refused (LP003)
SELECT * FROM loyalty.earn_points('dora', 111, 'r1', at => '2026-01-01');
-- another customer's use of it is still LP002
SELECT * FROM loyalty.earn_points('eve', 110, 'r1', at => '2026-01-01');
-- nothing was written twice; the tier moves at the next new earn or evaluation
SELECT customer_id, tier, available FROM loyalty.points_account;
SELECT count(*) AS entries FROM loyalty.points_ledger WHERE reference = 'r1';
SELECT * FROM loyalty.earn_points('dora', 1, 'r2', at => '2026-01-02');
SELECT customer_id, tier, available FROM loyalty.points_account;
SELECT * FROM loyalty.check_integrity();
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
