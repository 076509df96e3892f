
/* ---------------------------------------------------------------------------
 * access.sql: access levels (app / analyst / admin)
 *
 * Nothing in the loyalty schema is granted to PUBLIC (grants.sql revokes the
 * default EXECUTE at the end of the script).  Rights are handed out per level
 * with loyalty.grant_access():
 *   app      may call the API functions (which run SECURITY DEFINER); it can
 *            never write a loyalty table directly;
 *   analyst  may read the reporting views;
 *   admin    both, plus the configuration functions and tables.
 * Every feature file registers its objects in loyalty.access_rule; the roles
 * given access are remembered in loyalty.access_grant so that upgrade scripts
 * can extend their rights to new objects (loyalty.reapply_grants()).
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.access_rule (
	level		text NOT NULL
		CHECK (level IN ('all', 'app', 'analyst', 'admin')),
	object_type	text NOT NULL
		CHECK (object_type IN ('function', 'table', 'view', 'sequence')),
	object_name	text NOT NULL,
	privileges	text NOT NULL
		CHECK (privileges ~ '^(EXECUTE|SELECT|INSERT|UPDATE|DELETE|USAGE)(, (SELECT|INSERT|UPDATE|DELETE|USAGE))*$'),
	PRIMARY KEY (level, object_type, object_name)
);

COMMENT ON TABLE loyalty.access_rule IS
	'Which privileges each access level receives on each loyalty object (level all = every level)';

CREATE TABLE loyalty.access_grant (
	role_name	name NOT NULL,
	level		text NOT NULL CHECK (level IN ('app', 'analyst', 'admin')),
	granted_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	granted_by	name NOT NULL DEFAULT CURRENT_USER,
	PRIMARY KEY (role_name, level)
);

COMMENT ON TABLE loyalty.access_grant IS
	'Roles given an access level with loyalty.grant_access()';

SELECT pg_catalog.pg_extension_config_dump('loyalty.access_grant', '');

/* functions */

/*
 * Register objects in access_rule under their schema-qualified names.  A
 * function is recorded as its regprocedure text computed with search_path =
 * pg_catalog (the SET below), so the name and every argument type outside
 * pg_catalog are schema-qualified and argument names are left out:
 * 'loyalty.f(loyalty.rfm_score,integer)'.  That is the spelling
 * oid::regprocedure::text gives outside the install script, which the checks
 * in sql/loyalty.sql and test/pgtap compare with, and which GRANT,
 * has_function_privilege() and to_regprocedure() all accept (identity
 * arguments would carry argument names and ", " separators, which the last
 * two reject).  Used by every part of the install script.
 */
CREATE FUNCTION loyalty._register_function(level text, fn regprocedure, privileges text DEFAULT 'EXECUTE')
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO loyalty.access_rule (level, object_type, object_name, privileges)
	VALUES ($1, 'function', $2::pg_catalog.text, $3)
$$;

COMMENT ON FUNCTION loyalty._register_function(text, regprocedure, text) IS
	'Internal: register the privileges an access level receives on a function';

CREATE FUNCTION loyalty._register_relation(level text, rel regclass, privileges text DEFAULT 'SELECT')
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO loyalty.access_rule (level, object_type, object_name, privileges)
	SELECT $1,
		   CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
						  WHEN 'm' THEN 'view' ELSE 'table' END,
		   pg_catalog.format('%I.%I', n.nspname, c.relname),
		   $3
	FROM pg_catalog.pg_class c
	JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.oid = $2
$$;

COMMENT ON FUNCTION loyalty._register_relation(text, regclass, text) IS
	'Internal: register the privileges an access level receives on a table, view or sequence';

/*
 * Grant the privileges of one level to one role.  Runs with the caller's
 * rights: only the owner of the loyalty objects (the superuser who created
 * the extension) or a role holding grant options can hand them out.
 */
CREATE FUNCTION loyalty._apply_level(role_name name, level text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
BEGIN
	EXECUTE format('GRANT USAGE ON SCHEMA loyalty TO %I', role_name);
	FOR r IN
		SELECT ar.object_type, ar.object_name, ar.privileges
		FROM loyalty.access_rule ar
		WHERE ar.level = 'all'
		   OR ar.level = _apply_level.level
		   OR _apply_level.level = 'admin'
		ORDER BY ar.object_type, ar.object_name
	LOOP
		EXECUTE format('GRANT %s ON %s %s TO %I',
					   r.privileges,
					   CASE r.object_type
						   WHEN 'function' THEN 'ROUTINE'
						   WHEN 'sequence' THEN 'SEQUENCE'
						   ELSE 'TABLE' END,
					   r.object_name, role_name);
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._apply_level(name, text) IS
	'Internal: grant the registered privileges of one access level to a role';

CREATE FUNCTION loyalty.grant_access(role regrole, level text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	rname name := (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = role);
BEGIN
	IF role IS NULL OR level IS NULL THEN
		RAISE EXCEPTION 'role and level must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF level NOT IN ('app', 'analyst', 'admin') THEN
		RAISE EXCEPTION 'invalid access level: "%"', level
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Valid levels are app, analyst and admin.';
	END IF;
	IF rname IS NULL THEN
		RAISE EXCEPTION 'role with OID % does not exist', role::oid
			USING ERRCODE = 'undefined_object';
	END IF;
	PERFORM loyalty._apply_level(rname, level);
	INSERT INTO loyalty.access_grant AS g (role_name, level)
	VALUES (rname, level)
	ON CONFLICT (role_name, level) DO UPDATE
		SET granted_at = pg_catalog.now(), granted_by = CURRENT_USER;
END;
$$;

COMMENT ON FUNCTION loyalty.grant_access(regrole, text) IS
	'Give a role the rights of an access level: app (call API functions), analyst (read views) or admin (both plus configuration)';

/*
 * Take a level away: revoke everything the level gave, then re-apply the
 * levels the role still holds so that rights shared between levels survive.
 */
CREATE FUNCTION loyalty.revoke_access(role regrole, level text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rname name := (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = role);
	r record;
BEGIN
	IF role IS NULL OR level IS NULL THEN
		RAISE EXCEPTION 'role and level must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF level NOT IN ('app', 'analyst', 'admin') THEN
		RAISE EXCEPTION 'invalid access level: "%"', level
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Valid levels are app, analyst and admin.';
	END IF;
	DELETE FROM loyalty.access_grant g
	WHERE g.role_name = rname AND g.level = revoke_access.level;

	FOR r IN
		SELECT ar.object_type, ar.object_name, ar.privileges
		FROM loyalty.access_rule ar
		WHERE ar.level = 'all'
		   OR ar.level = revoke_access.level
		   OR revoke_access.level = 'admin'
	LOOP
		EXECUTE format('REVOKE %s ON %s %s FROM %I',
					   r.privileges,
					   CASE r.object_type
						   WHEN 'function' THEN 'ROUTINE'
						   WHEN 'sequence' THEN 'SEQUENCE'
						   ELSE 'TABLE' END,
					   r.object_name, rname);
	END LOOP;
	EXECUTE format('REVOKE USAGE ON SCHEMA loyalty FROM %I', rname);

	FOR r IN
		SELECT g.level FROM loyalty.access_grant g WHERE g.role_name = rname
	LOOP
		PERFORM loyalty._apply_level(rname, r.level);
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.revoke_access(regrole, text) IS
	'Take an access level away from a role, keeping the rights of the levels it still holds';

/*
 * Re-grant every recorded level, e.g. after ALTER EXTENSION UPDATE added new
 * objects or after a restore into a cluster where the grants were lost.
 * Roles that no longer exist are skipped and reported.
 */
CREATE FUNCTION loyalty.reapply_grants()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	n integer := 0;
BEGIN
	FOR r IN
		SELECT g.role_name, g.level FROM loyalty.access_grant g
		ORDER BY g.role_name, g.level
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.role_name) THEN
			RAISE WARNING 'role "%" recorded with access level % no longer exists',
				r.role_name, r.level;
			CONTINUE;
		END IF;
		PERFORM loyalty._apply_level(r.role_name, r.level);
		n := n + 1;
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.reapply_grants() IS
	'Re-grant every recorded access level (run by upgrade scripts); returns the number of grants applied';

/*
 * A recorded level is granted when its row is inserted, whoever inserts it.
 * This is what brings a role's rights back after pg_dump / pg_restore:
 * the rights reapply_grants() gives inside ALTER EXTENSION UPDATE are
 * recorded by PostgreSQL as the extension's initial privileges (every GRANT
 * an extension script runs is), so pg_dump leaves them out, and CREATE
 * EXTENSION on restore does not give them; the restored access_grant rows
 * then grant them here, outside any extension script, as ordinary
 * privileges.  (grant_access applies the level itself too, for the update
 * of an existing row.)  A role that does not exist is skipped and reported.
 */
CREATE FUNCTION loyalty._access_grant_applied()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = NEW.role_name) THEN
		RAISE WARNING 'role "%" recorded with access level % does not exist', NEW.role_name, NEW.level;
		RETURN NULL;
	END IF;
	PERFORM loyalty._apply_level(NEW.role_name, NEW.level);
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._access_grant_applied() IS
	'Internal: trigger granting a recorded access level when its row is inserted (a restore of loyalty.access_grant gives the rights back)';

CREATE TRIGGER access_grant_applied
	AFTER INSERT ON loyalty.access_grant
	FOR EACH ROW EXECUTE FUNCTION loyalty._access_grant_applied();

COMMENT ON TRIGGER access_grant_applied ON loyalty.access_grant IS
	'Grants a recorded access level when its row is inserted (grant_access, or pg_restore of the table''s rows)';

/* views */

CREATE VIEW loyalty.access_overview AS
SELECT g.role_name, g.level, g.granted_at, g.granted_by,
	   (r.rolname IS NOT NULL) AS role_exists
FROM loyalty.access_grant g
LEFT JOIN pg_catalog.pg_roles r ON r.rolname = g.role_name;

COMMENT ON VIEW loyalty.access_overview IS
	'Roles holding a loyalty access level';
COMMENT ON COLUMN loyalty.access_overview.role_name IS 'Role given the level';
COMMENT ON COLUMN loyalty.access_overview.level IS 'app, analyst or admin';
COMMENT ON COLUMN loyalty.access_overview.granted_at IS 'When grant_access() last gave it';
COMMENT ON COLUMN loyalty.access_overview.granted_by IS 'Role that called grant_access()';
COMMENT ON COLUMN loyalty.access_overview.role_exists IS 'False when the role was dropped since (reapply_grants() skips it)';

/* registrations */

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.version()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.access_overview'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
