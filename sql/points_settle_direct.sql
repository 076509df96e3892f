--
-- expire_points writes below the executor (SettleDirect, points_expire.c)
-- only while the tables are as the extension made them, and then exactly
-- as the statements would: the same rows whatever path ran, the other path
-- taken when a lot has a trigger or the ledger an extra column (which then
-- gets its default), and the tables' CHECK constraints enforced on the
-- direct path too.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');

SELECT count(*) AS receipts FROM (
	SELECT loyalty.earn_points('ann', 100, 'a1', at => '2026-01-10', expires_at => '2026-02-01')
	UNION ALL SELECT loyalty.earn_points('ann', 70, 'a2', at => '2026-01-12', pending_until => '2026-01-20', expires_at => '2026-03-01')
	UNION ALL SELECT loyalty.spend_points('ann', 20, 's1', at => '2026-01-14')
	UNION ALL SELECT loyalty.earn_points('bob', 40, 'b1', at => '2026-01-10', pending_until => '2026-01-25', expires_at => '2026-01-30')
	UNION ALL SELECT loyalty.earn_points('bob', 10, 'b2', at => '2026-01-11', expires_at => 'infinity')
	UNION ALL SELECT loyalty.earn_points('dan', 60, 'd1', at => '2026-01-10', expires_at => '2026-01-20')) r;

CREATE TEMP VIEW settled AS
SELECT (SELECT string_agg(format('%s %s/%s/%s %s %s', customer_id, available, pending, debt, next_event_at, settled_at),
						  '; ' ORDER BY customer_id) FROM loyalty.points_account) AS accounts,
	   (SELECT string_agg(format('%s %s %s %s', lot_id, state, remaining, expired), '; ' ORDER BY lot_id)
		FROM loyalty.points_lot) AS lots,
	   (SELECT string_agg(format('%s %s %s %s %s %s/%s/%s %s', customer_id, kind, points, lot_ids, lot_points,
								 available_after, pending_after, debt_after, effective_at), '; ' ORDER BY entry_id)
		FROM loyalty.points_ledger WHERE kind = 'expire') AS entries;

-- a trigger on the lots: the statements update them (and fire it)
CREATE FUNCTION pg_temp.count_lot_updates() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN PERFORM pg_catalog.set_config('test.lot_updates',
	(coalesce(nullif(pg_catalog.current_setting('test.lot_updates', true), ''), '0')::int + 1)::text, true);
	RETURN NEW; END$$;
BEGIN;
CREATE TRIGGER count_updates BEFORE UPDATE ON loyalty.points_lot
	FOR EACH ROW EXECUTE FUNCTION pg_temp.count_lot_updates();
SELECT * FROM loyalty.expire_points('2026-02-02');
SELECT current_setting('test.lot_updates') AS lot_updates_seen_by_trigger;
SELECT accounts AS sql_accounts, lots AS sql_lots, entries AS sql_entries FROM settled \gset
ROLLBACK;

-- an extra ledger column with a default: the statements insert, the default applies
BEGIN;
ALTER TABLE loyalty.points_ledger ADD COLUMN note text DEFAULT 'by statement';
SELECT * FROM loyalty.expire_points('2026-02-02');
SELECT customer_id, note FROM loyalty.points_ledger WHERE kind = 'expire' ORDER BY entry_id;
SELECT accounts = :'sql_accounts' AS same_accounts, lots = :'sql_lots' AS same_lots,
	   entries = :'sql_entries' AS same_entries
FROM settled;
ROLLBACK;

-- a CHECK constraint the direct path must enforce, as the UPDATE would
-- (terse: the failing account row shows its creation time)
\set VERBOSITY terse
BEGIN;
ALTER TABLE loyalty.points_lot ADD CONSTRAINT no_expiry CHECK (expired = 0) NOT VALID;
SAVEPOINT s;
SELECT * FROM loyalty.expire_points('2026-02-02');
ROLLBACK TO s;
ALTER TABLE loyalty.points_account ADD CONSTRAINT keep_something CHECK (available + pending > 0) NOT VALID;
ALTER TABLE loyalty.points_lot DROP CONSTRAINT no_expiry;
SELECT * FROM loyalty.expire_points('2026-02-02');
ROLLBACK;
\set VERBOSITY default

-- directly: the same rows
SELECT * FROM loyalty.expire_points('2026-02-02');
SELECT accounts = :'sql_accounts' AS same_accounts, lots = :'sql_lots' AS same_lots,
	   entries = :'sql_entries' AS same_entries
FROM settled;
SELECT customer_id, points, lot_ids, lot_points, available_after, pending_after, debt_after
FROM loyalty.points_ledger WHERE kind = 'expire' ORDER BY entry_id;
SELECT * FROM loyalty.check_integrity();

DROP VIEW settled;
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
