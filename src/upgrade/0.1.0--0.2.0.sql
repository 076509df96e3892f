-- loyalty 0.1.0 -> 0.2.0: head of the upgrade script.
--
-- The Makefile appends every install-script part added since 0.1.0 (RFM,
-- segments, coupon codes, coupons, ...), then grants.sql, then re-applies
-- the recorded access levels.  When 0.2.0 is released the built script is
-- frozen into src/ (see README, "Releasing").

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION loyalty UPDATE TO '0.2.0'" to load this file. \quit

/* 0.1.0 recorded multi-argument functions under names GRANT cannot parse */
CREATE OR REPLACE FUNCTION loyalty._register_function(level text, fn regprocedure, privileges text DEFAULT 'EXECUTE')
RETURNS void
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO loyalty.access_rule (level, object_type, object_name, privileges)
	VALUES ($1, 'function', $2::pg_catalog.text, $3)
$$;


/*
 * 0.2.0 grants levels ON ROUTINE, not ON FUNCTION: a level may now include
 * procedures (loyalty.run_points_maintenance, loyalty.evaluate_tiers), which
 * GRANT ... ON FUNCTION refuses.
 */
CREATE OR REPLACE FUNCTION loyalty._apply_level(role_name name, level text)
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

CREATE OR REPLACE FUNCTION loyalty.revoke_access(role regrole, level text)
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
