--
-- loyalty: module loading, version, access levels (the loyalty.* settings'
-- prefix: guc_prefix.sql)
--

-- the loaded library matches the installed SQL objects
SELECT loyalty.version() = extversion AS version_matches
FROM pg_extension WHERE extname = 'loyalty';

-- the extension lives in its own schema and cannot be relocated
SELECT extrelocatable, extnamespace::regnamespace AS schema
FROM pg_extension WHERE extname = 'loyalty';
ALTER EXTENSION loyalty SET SCHEMA public;

-- nothing is granted to PUBLIC
SELECT count(*) AS public_function_grants
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.pronamespace = 'loyalty'::regnamespace AND a.grantee = 0;
SELECT count(*) AS functions_executable_by_public_by_default
FROM pg_proc p
WHERE p.pronamespace = 'loyalty'::regnamespace AND p.proacl IS NULL;
SELECT count(*) AS public_relation_grants
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'loyalty'::regnamespace AND a.grantee = 0;
SELECT has_schema_privilege('public', 'loyalty', 'USAGE') AS public_schema_usage;

-- every access rule names an existing object
SELECT count(*) AS dangling_rules
FROM loyalty.access_rule r
WHERE CASE WHEN r.object_type = 'function' THEN to_regprocedure(r.object_name) IS NULL
		   ELSE to_regclass(r.object_name) IS NULL END;

-- every function and relation in the schema is covered by some level
SELECT p.oid::regprocedure AS unregistered_function
FROM pg_proc p
WHERE p.pronamespace = 'loyalty'::regnamespace
  AND p.proname NOT LIKE '\_%'
  AND p.oid::regprocedure::text NOT IN (SELECT object_name FROM loyalty.access_rule)
  AND p.oid::regprocedure::text NOT IN (
		'loyalty.grant_access(regrole,text)',
		'loyalty.revoke_access(regrole,text)',
		'loyalty.reapply_grants()')
ORDER BY 1;

-- access levels
CREATE ROLE loyalty_t_app;
CREATE ROLE loyalty_t_analyst;
SELECT loyalty.grant_access('loyalty_t_app', 'app');
SELECT loyalty.grant_access('loyalty_t_analyst', 'analyst');
SELECT loyalty.grant_access('loyalty_t_app', 'app');  -- again: no duplicate
SELECT role_name, level FROM loyalty.access_grant ORDER BY 1, 2;

-- bad levels and roles are clear errors
SELECT loyalty.grant_access('loyalty_t_app', 'superuser');
SELECT loyalty.grant_access('no_such_role', 'app');
SELECT loyalty.grant_access(NULL, 'app');

SET ROLE loyalty_t_app;
SELECT loyalty.version() IS NOT NULL AS app_can_call;
SELECT * FROM loyalty.access_grant;          -- no direct table access
INSERT INTO loyalty.access_grant VALUES ('x', 'app');
SELECT loyalty.grant_access('loyalty_t_app', 'admin');  -- cannot escalate
RESET ROLE;

-- revoking keeps nothing behind
SELECT loyalty.revoke_access('loyalty_t_app', 'app');
SELECT has_schema_privilege('loyalty_t_app', 'loyalty', 'USAGE') AS app_schema_usage,
	   has_function_privilege('loyalty_t_app', 'loyalty.version()', 'EXECUTE') AS app_execute;
SELECT role_name, level FROM loyalty.access_grant ORDER BY 1, 2;

-- re-applying after an upgrade re-grants recorded levels
REVOKE USAGE ON SCHEMA loyalty FROM loyalty_t_analyst;
SELECT loyalty.reapply_grants();
SELECT has_schema_privilege('loyalty_t_analyst', 'loyalty', 'USAGE') AS analyst_usage_back;

SELECT loyalty.revoke_access('loyalty_t_analyst', 'analyst');
DROP ROLE loyalty_t_app;
DROP ROLE loyalty_t_analyst;
