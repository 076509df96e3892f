--
-- loyalty: code running as the extension owner never runs what another
-- role can define or redefine (issue 11, item 2: audit of the SECURITY
-- DEFINER paths).
--
-- Coupon eligibility check functions (loyalty.eligibility_kind) are called
-- inside validate_coupon / reserve_coupon / redeem_coupon, which run as the
-- extension owner (a superuser).  A check function owned by an ordinary
-- role is refused at every call: its owner could replace its body at any
-- time and so run code as a superuser.
--
SET client_min_messages = warning;
CREATE ROLE regress_loyalty_mallory NOSUPERUSER;
CREATE ROLE regress_loyalty_shop NOSUPERUSER;
SELECT loyalty.grant_access('regress_loyalty_shop', 'app');
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text;
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || msg || CASE WHEN det <> '' THEN ' / ' || det ELSE '' END;
END
$$;
RESET client_min_messages;

BEGIN;
CREATE SCHEMA mallory AUTHORIZATION regress_loyalty_mallory;
SET LOCAL ROLE regress_loyalty_mallory;
CREATE TABLE mallory.marker (who name, super boolean);
-- the trap: records who runs it (a superuser, if it runs as the definer)
CREATE FUNCTION mallory.check(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO mallory.marker
	SELECT current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
	RETURN true;
END
$$;
RESET ROLE;
-- the owner registers the role's function as a rule kind
INSERT INTO loyalty.eligibility_kind (kind, check_function, description)
VALUES ('mallory_kind', 'mallory.check(text, jsonb, jsonb)', 'a check function another role owns');
SELECT loyalty.create_campaign('definer audit', 'percent', percent_off => 10, max_discount => 5) AS c \gset
SELECT loyalty.add_campaign_rule(:c, 'mallory_kind', '{}') > 0 AS rule_added;
SELECT loyalty.add_public_code(:c, 'auditcode') AS code;

-- the shop's app validates, reserves, redeems: refused, the function never runs
SET LOCAL ROLE regress_loyalty_shop;
SELECT pg_temp.try($$SELECT loyalty.validate_coupon('auditcode', 'cust-1', 100::numeric)$$);
SELECT pg_temp.try($$SELECT loyalty.reserve_coupon('auditcode', 'cust-1', 'order-1', 100::numeric)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('auditcode', 'cust-1', 'order-1', 100::numeric)$$);
RESET ROLE;
SELECT count(*) AS trap_runs FROM mallory.marker;

-- once a superuser owns it (after review), it is called
ALTER FUNCTION mallory.check(text, jsonb, jsonb) OWNER TO CURRENT_USER;
SET LOCAL ROLE regress_loyalty_shop;
SELECT valid, reason FROM loyalty.validate_coupon('auditcode', 'cust-1', 100::numeric);
RESET ROLE;
SELECT count(*) AS checks_run, bool_and(super) AS as_superuser FROM mallory.marker;

-- the schema's owner cannot swap it: the row names the function by OID,
-- and a function re-created under the same name is another one
SET LOCAL ROLE regress_loyalty_mallory;
DROP FUNCTION mallory.check(text, jsonb, jsonb);
CREATE FUNCTION mallory.check(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean LANGUAGE sql AS $$ INSERT INTO mallory.marker VALUES ('swapped', NULL) RETURNING true $$;
SET LOCAL ROLE regress_loyalty_shop;
SELECT pg_temp.try($$SELECT loyalty.validate_coupon('auditcode', 'cust-1', 100::numeric)$$) ~ '^42883: check function of eligibility rule kind "mallory_kind" does not exist' AS refused;
RESET ROLE;
SELECT count(*) FILTER (WHERE who = 'swapped') AS swapped_runs FROM mallory.marker;
ROLLBACK;

-- every SECURITY DEFINER function pins search_path to pg_catalog, pg_temp
-- (so no name in it resolves to a schema another role can write) and is
-- not executable by PUBLIC
SELECT p.oid::regprocedure AS definer_without_pinned_path
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'loyalty'
WHERE p.prosecdef
  AND (p.proconfig IS NULL OR NOT 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
	   OR has_function_privilege('public', p.oid, 'EXECUTE'))
ORDER BY 1;

-- clean up
SET client_min_messages = warning;
SELECT loyalty.revoke_access('regress_loyalty_shop', 'app');
DROP ROLE regress_loyalty_shop;
DROP ROLE regress_loyalty_mallory;
