-- pgTAP: access levels give exactly their rights, and nothing goes to PUBLIC.
-- (has_function_privilege() on a table's name raises: the CASEs make sure it
-- only sees functions, whatever order the planner gives the conditions.)
BEGIN;
SELECT plan(16);

CREATE ROLE tap_app;
CREATE ROLE tap_analyst;
CREATE ROLE tap_admin;
CREATE ROLE tap_nobody;
SELECT loyalty.grant_access('tap_app', 'app');
SELECT loyalty.grant_access('tap_analyst', 'analyst');
SELECT loyalty.grant_access('tap_admin', 'admin');

-- no role outside the levels can see into the schema
SELECT ok(NOT has_schema_privilege('tap_nobody', 'loyalty', 'USAGE'),
		  'a role without a level has no USAGE on schema loyalty');
SELECT is((SELECT count(*)::int FROM pg_proc p
		   WHERE p.pronamespace = 'loyalty'::regnamespace
			 AND has_function_privilege('tap_nobody', p.oid, 'EXECUTE')),
		  0, 'a role without a level can execute no loyalty function');

-- app: every registered app function, no table writes anywhere
SELECT ok(has_function_privilege('tap_app', 'loyalty.version()', 'EXECUTE'),
		  'app can call the API');
SELECT is((SELECT count(*)::int FROM loyalty.access_rule r
		   WHERE r.level IN ('app', 'all') AND r.object_type = 'function'
			 AND CASE WHEN r.object_type = 'function'
					  THEN NOT has_function_privilege('tap_app', r.object_name, 'EXECUTE') END),
		  0, 'app can call every function registered for it');
SELECT is((SELECT count(*)::int FROM pg_class c
		   WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
			 AND (has_table_privilege('tap_app', c.oid, 'INSERT')
				  OR has_table_privilege('tap_app', c.oid, 'UPDATE')
				  OR has_table_privilege('tap_app', c.oid, 'DELETE')
				  OR has_table_privilege('tap_app', c.oid, 'TRUNCATE'))),
		  0, 'app can write no loyalty table directly');
SELECT ok(NOT has_function_privilege('tap_app', 'loyalty.grant_access(regrole,text)', 'EXECUTE'),
		  'app cannot hand out access');

-- analyst: reads the views registered for analysts, writes nothing
SELECT is((SELECT count(*)::int FROM loyalty.access_rule r
		   WHERE r.level IN ('analyst', 'all') AND r.object_type = 'view'
			 AND CASE WHEN r.object_type = 'view'
					  THEN NOT has_table_privilege('tap_analyst', r.object_name, 'SELECT') END),
		  0, 'analyst can read every view registered for it');
SELECT is((SELECT count(*)::int FROM pg_class c
		   WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('r', 'p')
			 AND (has_table_privilege('tap_analyst', c.oid, 'INSERT')
				  OR has_table_privilege('tap_analyst', c.oid, 'UPDATE')
				  OR has_table_privilege('tap_analyst', c.oid, 'DELETE'))),
		  0, 'analyst can write no loyalty table');
SELECT is((SELECT count(*)::int FROM loyalty.access_rule r
		   WHERE r.level = 'app' AND r.object_type = 'function'
			 AND CASE WHEN r.object_type = 'function'
					  THEN has_function_privilege('tap_analyst', r.object_name, 'EXECUTE') END),
		  0, 'analyst cannot call app-only functions');

-- admin: everything registered
SELECT is((SELECT count(*)::int FROM loyalty.access_rule r
		   WHERE CASE WHEN r.object_type = 'function'
					  THEN NOT has_function_privilege('tap_admin', r.object_name, 'EXECUTE')
					  ELSE NOT has_table_privilege('tap_admin', r.object_name, split_part(r.privileges, ',', 1)) END),
		  0, 'admin holds every registered privilege');
SELECT ok(has_table_privilege('tap_admin', 'loyalty.access_overview', 'SELECT'),
		  'admin reads the access overview');

-- revoking one of two levels keeps the other's rights
SELECT loyalty.grant_access('tap_analyst', 'app');
SELECT loyalty.revoke_access('tap_analyst', 'app');
SELECT ok(has_schema_privilege('tap_analyst', 'loyalty', 'USAGE'),
		  'revoking app keeps the analyst level''s schema access');
SELECT ok(NOT EXISTS (SELECT 1 FROM loyalty.access_rule r
					  WHERE r.level = 'app' AND r.object_type = 'function'
						AND CASE WHEN r.object_type = 'function'
								 THEN has_function_privilege('tap_analyst', r.object_name, 'EXECUTE') END),
		  'revoking app takes the app functions back');

-- errors
SELECT throws_ok($$SELECT loyalty.grant_access('tap_app', 'owner')$$, '22023',
				 'invalid access level: "owner"', 'unknown level is rejected');
SELECT throws_ok($$SELECT loyalty.grant_access('tap_app', NULL)$$, '22004',
				 NULL, 'null level is rejected');
SET LOCAL ROLE tap_app;
SELECT throws_ok($$SELECT loyalty.grant_access('tap_app', 'admin')$$, '42501',
				 NULL, 'app cannot escalate itself to admin');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
