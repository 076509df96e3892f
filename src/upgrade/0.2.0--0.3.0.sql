-- loyalty 0.2.0 -> 0.3.0: head of the upgrade script.
--
-- The Makefile appends the fragments in src/upgrade/0.2.0--0.3.0.d/ (one per
-- concern, in name order), then grants.sql, then re-applies the recorded
-- access levels.  When 0.3.0 is released the built script is frozen into
-- src/ (see README, "Releasing").

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION loyalty UPDATE TO '0.3.0'" to load this file. \quit

/*
 * Refuse to update in a schema another role has prepared (the
 * CVE-2022-2625 class; see the check at the top of the install script).
 * ALTER EXTENSION runs this script as a superuser with search_path =
 * loyalty, pg_temp, so an object planted in the schema loyalty by a role
 * holding CREATE there (or owning it) would be resolved by the statements
 * below and run with the superuser's rights.  Before anything else:
 *   - the schema must be owned by a superuser;
 *   - it must grant CREATE to no role that is not a superuser (such a role
 *     could still add an object while this script runs);
 *   - every object in it that a name can resolve to must be a member of
 *     the extension (pg_depend deptype 'e'); implicit array and row types,
 *     the relation of a composite type and indexes of member tables count
 *     with what they belong to.
 * Everything here is pg_catalog's, named so.
 */
DO LANGUAGE plpgsql $loyalty_schema_check$
DECLARE
	nsp			pg_catalog.oid;
	ext			pg_catalog.oid;
	owner_name	pg_catalog.name;
	owner_super pg_catalog.bool;
	found_kind	pg_catalog.text;
	found_name	pg_catalog.text;
	grantee_name pg_catalog.text;
BEGIN
	SELECT e.oid, n.oid, r.rolname, r.rolsuper
	INTO ext, nsp, owner_name, owner_super
	FROM pg_catalog.pg_extension e
	JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
	LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) n.nspowner
	WHERE e.extname OPERATOR(pg_catalog.=) 'loyalty'::pg_catalog.name;

	IF owner_super IS NOT TRUE THEN
		RAISE EXCEPTION 'schema "loyalty" is owned by role "%", which is not a superuser', owner_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The owner of the schema loyalty can replace the objects the update script, running as a superuser, calls.',
				  HINT = 'Make a superuser own the schema (ALTER SCHEMA loyalty OWNER TO ...) after checking its contents, then update again.';
	END IF;

	SELECT COALESCE(g.rolname::pg_catalog.text, 'PUBLIC') INTO grantee_name
	FROM pg_catalog.pg_namespace n,
		 pg_catalog.aclexplode(n.nspacl) x
	LEFT JOIN pg_catalog.pg_roles g ON g.oid OPERATOR(pg_catalog.=) x.grantee
	WHERE n.oid OPERATOR(pg_catalog.=) nsp
	  AND x.privilege_type OPERATOR(pg_catalog.=) 'CREATE'::pg_catalog.text
	  AND g.rolsuper IS NOT TRUE
	LIMIT 1;

	SELECT x.kind, x.name INTO found_kind, found_name
	FROM (
		SELECT 'relation'::pg_catalog.text AS kind, c.relname::pg_catalog.text AS name,
			   'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid AS objid
		FROM pg_catalog.pg_class c
		WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		  AND c.relkind OPERATOR(pg_catalog.<>) ALL (ARRAY['i', 'I', 'c']::pg_catalog."char"[])
		UNION ALL
		SELECT 'type', c.relname::pg_catalog.text, 'pg_catalog.pg_type'::pg_catalog.regclass, c.reltype
		FROM pg_catalog.pg_class c
		WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		  AND c.relkind OPERATOR(pg_catalog.=) 'c'::pg_catalog."char"
		UNION ALL
		SELECT 'index', c.relname::pg_catalog.text, 'pg_catalog.pg_class'::pg_catalog.regclass, i.indrelid
		FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_index i ON i.indexrelid OPERATOR(pg_catalog.=) c.oid
		WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'function', p.proname::pg_catalog.text, 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid
		FROM pg_catalog.pg_proc p WHERE p.pronamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'type', t.typname::pg_catalog.text, 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
		FROM pg_catalog.pg_type t
		WHERE t.typnamespace OPERATOR(pg_catalog.=) nsp
		  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
						  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
							AND d.objid OPERATOR(pg_catalog.=) t.oid
							AND d.deptype OPERATOR(pg_catalog.=) 'i'::pg_catalog."char")
		UNION ALL
		SELECT 'operator', o.oprname::pg_catalog.text, 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid
		FROM pg_catalog.pg_operator o WHERE o.oprnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'collation', co.collname::pg_catalog.text, 'pg_catalog.pg_collation'::pg_catalog.regclass, co.oid
		FROM pg_catalog.pg_collation co WHERE co.collnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'conversion', cv.conname::pg_catalog.text, 'pg_catalog.pg_conversion'::pg_catalog.regclass, cv.oid
		FROM pg_catalog.pg_conversion cv WHERE cv.connamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator class', oc.opcname::pg_catalog.text, 'pg_catalog.pg_opclass'::pg_catalog.regclass, oc.oid
		FROM pg_catalog.pg_opclass oc WHERE oc.opcnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'operator family', ofa.opfname::pg_catalog.text, 'pg_catalog.pg_opfamily'::pg_catalog.regclass, ofa.oid
		FROM pg_catalog.pg_opfamily ofa WHERE ofa.opfnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search configuration', tc.cfgname::pg_catalog.text, 'pg_catalog.pg_ts_config'::pg_catalog.regclass, tc.oid
		FROM pg_catalog.pg_ts_config tc WHERE tc.cfgnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search dictionary', td.dictname::pg_catalog.text, 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, td.oid
		FROM pg_catalog.pg_ts_dict td WHERE td.dictnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search parser', tp.prsname::pg_catalog.text, 'pg_catalog.pg_ts_parser'::pg_catalog.regclass, tp.oid
		FROM pg_catalog.pg_ts_parser tp WHERE tp.prsnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'text search template', tt.tmplname::pg_catalog.text, 'pg_catalog.pg_ts_template'::pg_catalog.regclass, tt.oid
		FROM pg_catalog.pg_ts_template tt WHERE tt.tmplnamespace OPERATOR(pg_catalog.=) nsp
		UNION ALL
		SELECT 'extension', e.extname::pg_catalog.text, NULL, NULL
		FROM pg_catalog.pg_extension e
		WHERE e.extnamespace OPERATOR(pg_catalog.=) nsp
		  AND e.oid OPERATOR(pg_catalog.<>) ext
	) x
	WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
					  WHERE d.classid OPERATOR(pg_catalog.=) x.classid
						AND d.objid OPERATOR(pg_catalog.=) x.objid
						AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
						AND d.refobjid OPERATOR(pg_catalog.=) ext
						AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog."char")
	ORDER BY x.kind, x.name
	LIMIT 1;

	IF found_kind IS NOT NULL THEN
		RAISE EXCEPTION 'schema "loyalty" holds % % that is not part of extension loyalty',
			found_kind, found_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'The update script runs as a superuser with the schema loyalty first in its search path; an object another role put there could be called by it.',
				  HINT = 'Check who created it, drop it or move it to another schema (ALTER ... SET SCHEMA), then update again.';
	END IF;

	IF grantee_name IS NOT NULL THEN
		RAISE EXCEPTION 'schema "loyalty" grants CREATE to role "%"', grantee_name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A role that may create objects in the schema loyalty could add one the update script, running as a superuser, would call.',
				  HINT = pg_catalog.format('Revoke it (REVOKE CREATE ON SCHEMA loyalty FROM %s), then update again.',
								   grantee_name);
	END IF;
END
$loyalty_schema_check$;
