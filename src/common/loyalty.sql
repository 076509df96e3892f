-- loyalty install script, built by the Makefile from the src/ SQL parts in order

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION loyalty" to load this file. \quit

/* ---------------------------------------------------------------------------
 * Refuse a schema someone else prepared (the CVE-2022-2625 class).
 *
 * The control file says schema = loyalty.  CREATE EXTENSION creates that
 * schema, owned by the installing role, when it does not exist; when it
 * exists it installs into it as it is, and runs this script with
 * search_path = loyalty, pg_temp (extension.c; the same in PostgreSQL 13 to
 * 18).  A function, operator, type or table another role planted there
 * beforehand would then be resolved by the script and run with the
 * installing superuser's rights.  Nor does the schema ever become a member
 * of the extension in 13 to 18 (it is created before the pg_extension row,
 * outside creating_extension; only a CREATE SCHEMA inside a script would
 * be), so neither DROP EXTENSION nor pg_depend tell a pre-existing schema
 * from a created one: the schema itself is checked.  It must
 *   - be owned by the installing role (current_user) or by a superuser
 *     (pg_restore creates the schema and gives it its original owner, a
 *     superuser, before it runs CREATE EXTENSION, perhaps as another
 *     superuser; an owner that is no superuser could plant objects at will),
 *   - hold nothing at all (no catalog row naming it as its namespace),
 *   - grant CREATE to no role but its owner and superusers (nor to
 *     PUBLIC).
 * This block is the first statement of the script and resolves nothing
 * another role can define: every function and operator is pg_catalog's,
 * named so (the search path puts the schema under test second, where an
 * overload with a better-matching signature would win).
 * ------------------------------------------------------------------------ */
DO LANGUAGE plpgsql $loyalty_schema_check$
DECLARE
	nsp			pg_catalog.oid;
	owner_name	pg_catalog.name;
	owner_super pg_catalog.bool;
	found_kind	pg_catalog.text;
	found_name	pg_catalog.text;
	grantee_name pg_catalog.text;
BEGIN
	SELECT n.oid, a.rolname, a.rolsuper INTO nsp, owner_name, owner_super
	FROM pg_catalog.pg_namespace n
	LEFT JOIN pg_catalog.pg_roles a ON a.oid OPERATOR(pg_catalog.=) n.nspowner
	WHERE n.nspname OPERATOR(pg_catalog.=) 'loyalty'::pg_catalog.name;

	IF owner_name IS NULL
	   OR (owner_name OPERATOR(pg_catalog.<>) CURRENT_USER AND owner_super IS NOT TRUE) THEN
		RAISE EXCEPTION 'schema "loyalty" is owned by role "%", which is neither the installing role "%" nor a superuser',
			owner_name, CURRENT_USER
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'CREATE EXTENSION loyalty installs into the schema loyalty; a schema another role owns could hold objects that the install script, running as a superuser, would call.',
				  HINT = 'Drop the schema (or rename it) and run CREATE EXTENSION loyalty again: it creates the schema itself.';
	END IF;

	SELECT x.kind, x.name INTO found_kind, found_name
	FROM (
		SELECT 'relation'::pg_catalog.text AS kind, c.relname::pg_catalog.text AS name
		FROM pg_catalog.pg_class c WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'function', p.proname::pg_catalog.text
		FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'type', t.typname::pg_catalog.text
		FROM pg_catalog.pg_type t WHERE t.typnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator', o.oprname::pg_catalog.text
		FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'collation', co.collname::pg_catalog.text
		FROM pg_catalog.pg_collation co WHERE co.collnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'conversion', cv.conname::pg_catalog.text
		FROM pg_catalog.pg_conversion cv WHERE cv.connamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator class', oc.opcname::pg_catalog.text
		FROM pg_catalog.pg_opclass oc WHERE oc.opcnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator family', ofa.opfname::pg_catalog.text
		FROM pg_catalog.pg_opfamily ofa WHERE ofa.opfnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search configuration', tc.cfgname::pg_catalog.text
		FROM pg_catalog.pg_ts_config tc WHERE tc.cfgnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search dictionary', td.dictname::pg_catalog.text
		FROM pg_catalog.pg_ts_dict td WHERE td.dictnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search parser', tp.prsname::pg_catalog.text
		FROM pg_catalog.pg_ts_parser tp WHERE tp.prsnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search template', tt.tmplname::pg_catalog.text
		FROM pg_catalog.pg_ts_template tt WHERE tt.tmplnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'statistics object', se.stxname::pg_catalog.text
		FROM pg_catalog.pg_statistic_ext se WHERE se.stxnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'constraint', cn.conname::pg_catalog.text
		FROM pg_catalog.pg_constraint cn WHERE cn.connamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'extension', e.extname::pg_catalog.text
		FROM pg_catalog.pg_extension e WHERE e.extnamespace OPERATOR(pg_catalog.=) nsp
		  AND e.extname OPERATOR(pg_catalog.<>) 'loyalty'::pg_catalog.name
		UNION ALL
		SELECT 'default privileges', NULL::pg_catalog.text
		FROM pg_catalog.pg_default_acl d WHERE d.defaclnamespace OPERATOR(pg_catalog.=) nsp
	) x
	LIMIT 1;

	IF found_kind IS NOT NULL THEN
		RAISE EXCEPTION 'schema "loyalty" is not empty'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = pg_catalog.format('It already holds %s%s.  CREATE EXTENSION loyalty installs into the schema loyalty; an object already there could be called by the install script, running as a superuser.',
									 found_kind,
									 COALESCE(' ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(found_name), '')),
				  HINT = 'Install into a schema that does not exist yet (CREATE EXTENSION creates it), or drop the objects in schema loyalty first.';
	END IF;

	SELECT COALESCE(g.rolname::pg_catalog.text, 'PUBLIC') INTO grantee_name
	FROM pg_catalog.pg_namespace n,
		 pg_catalog.aclexplode(n.nspacl) x
	LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) x.grantee
	WHERE n.oid OPERATOR(pg_catalog.=) nsp
	  AND x.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
	  AND x.grantee OPERATOR(pg_catalog.<>) n.nspowner
	  AND g.rolsuper IS NOT TRUE
	LIMIT 1;

	IF grantee_name IS NOT NULL THEN
		RAISE EXCEPTION 'schema "loyalty" grants CREATE to role "%"', grantee_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'CREATE EXTENSION loyalty installs into the schema loyalty; a role that may create objects there could plant one the install script, running as a superuser, would call.',
				  HINT = pg_catalog.format('Revoke it (REVOKE CREATE ON SCHEMA loyalty FROM %s) or drop the schema, then run CREATE EXTENSION loyalty again.',
								   grantee_name);
	END IF;
END
$loyalty_schema_check$;

/* ---------------------------------------------------------------------------
 * loyalty.sql: module-level functions
 * ------------------------------------------------------------------------ */

COMMENT ON SCHEMA loyalty IS
	'Retail loyalty: RFM segmentation, coupons, points and tiers';

CREATE FUNCTION loyalty.version()
RETURNS text
AS 'MODULE_PATHNAME', 'loyalty_version'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.version() IS
	'Version of the loaded loyalty shared library';
