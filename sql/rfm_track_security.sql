--
-- loyalty: the tracking trigger never runs code another role defined while
-- it acts as loyalty's owner (issue 11, item 2).  A role owning an enum
-- could CREATE CAST (text AS its_enum) WITH FUNCTION ..., retype the tracked
-- customer column to that enum, and the re-read of first/last order times
-- after a DELETE cast text[] to the enum's array type as the superuser.
--
SET client_min_messages = warning;
SET TimeZone = 'UTC';
CREATE ROLE regress_trk_attacker;
CREATE SCHEMA trs AUTHORIZATION regress_trk_attacker;

SET ROLE regress_trk_attacker;
CREATE TABLE trs.seen (who text, super boolean);
CREATE TYPE trs.cust AS ENUM ('c1', 'c2');
CREATE FUNCTION trs.to_cust(t text) RETURNS trs.cust
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO trs.seen
	SELECT current_user, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user;
	RETURN (SELECT e FROM unnest(enum_range(NULL::trs.cust)) e WHERE e::text = t);
END;
$$;
CREATE CAST (text AS trs.cust) WITH FUNCTION trs.to_cust(text);
CREATE TABLE trs.orders (customer text, ordered_at timestamptz, amount numeric);
INSERT INTO trs.orders VALUES ('c1', '2026-01-01', 10), ('c1', '2026-02-01', 20);
RESET ROLE;

-- an administrator tracks the role's table
SELECT * FROM loyalty.track_orders('trs.orders', 'customer', 'ordered_at', 'amount');

-- the owner retypes the tracked column to its enum: refused (42804)
SET ROLE regress_trk_attacker;
\set VERBOSITY default
ALTER TABLE trs.orders ALTER COLUMN customer TYPE trs.cust USING CASE customer WHEN 'c1' THEN 'c1'::trs.cust ELSE 'c2'::trs.cust END;
\set VERBOSITY terse
RESET ROLE;

-- a DELETE of a customer's last order by anyone re-reads the order times
DELETE FROM trs.orders WHERE ordered_at = '2026-02-01';
SELECT customer_id, last_order FROM loyalty.customer_rfm('c1', '2026-03-01');
-- the role's cast never ran as a superuser
SELECT who, super FROM trs.seen WHERE super;

-- track_orders itself refuses such a column (42804, with the accepted list)
SELECT loyalty.untrack_orders('trs.orders');
SET ROLE regress_trk_attacker;
ALTER TABLE trs.orders ALTER COLUMN customer TYPE trs.cust USING CASE customer WHEN 'c1' THEN 'c1'::trs.cust ELSE 'c2'::trs.cust END;
RESET ROLE;
\set VERBOSITY default
SELECT * FROM loyalty.track_orders('trs.orders', 'customer', 'ordered_at', 'amount');
-- a status column of a composite type is refused as well
CREATE TYPE trs.st AS (code text);
CREATE TABLE trs.orders2 (customer text, ordered_at timestamptz, amount numeric, status trs.st);
SELECT * FROM loyalty.track_orders('trs.orders2', 'customer', 'ordered_at', 'amount', 'status', '{(paid)}');
\set VERBOSITY terse
SELECT who, super FROM trs.seen WHERE super;

DO $$
DECLARE
	t regclass;
BEGIN
	FOR t IN SELECT orders FROM loyalty.tracked_table WHERE orders::text LIKE 'trs.%' LOOP
		PERFORM loyalty.untrack_orders(t);
	END LOOP;
END;
$$;
DROP SCHEMA trs CASCADE;
DELETE FROM loyalty.customer_stats WHERE customer_id = 'c1';
DROP ROLE regress_trk_attacker;
