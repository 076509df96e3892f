-- test/upgrade/fingerprint.sql: one line per catalog fact of the loyalty
-- extension, independent of OIDs and creation order.  An upgraded install
-- and a fresh install of the same version must print the same lines.
WITH members AS (
	SELECT d.classid, d.objid
	FROM pg_depend d
	JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
	WHERE e.extname = 'loyalty' AND d.deptype = 'e'
)
SELECT fact FROM (
	-- every member object with its comment
	SELECT 'member ' || pg_describe_object(m.classid, m.objid, 0)
		   || coalesce(' -- ' || obj_description(m.objid, c.relname), '') AS fact
	FROM members m JOIN pg_class c ON c.oid = m.classid
	UNION ALL
	-- functions: body, language, flags, settings, privileges
	SELECT format('function %s returns %s lang %s vol %s par %s secdef %s strict %s cfg %s acl %s src %s bin %s',
				  p.oid::regprocedure, pg_get_function_result(p.oid), l.lanname,
				  p.provolatile, p.proparallel, p.prosecdef, p.proisstrict,
				  p.proconfig, p.proacl, md5(p.prosrc), p.probin)
	FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
	WHERE p.pronamespace = 'loyalty'::regnamespace
	UNION ALL
	-- columns of tables, views and composite types
	SELECT format('column %s.%s %s notnull %s default %s', c.relname, a.attname,
				  format_type(a.atttypid, a.atttypmod), a.attnotnull,
				  pg_get_expr(ad.adbin, ad.adrelid))
	FROM pg_class c
	JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
	WHERE c.relnamespace = 'loyalty'::regnamespace
	UNION ALL
	-- column comments of views (every BI view column has one)
	SELECT format('column comment %s.%s: %s', c.relname, a.attname, col_description(c.oid, a.attnum))
	FROM pg_class c
	JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('v', 'm')
	UNION ALL
	SELECT format('relation %s kind %s acl %s options %s', c.relname, c.relkind, c.relacl, c.reloptions)
	FROM pg_class c WHERE c.relnamespace = 'loyalty'::regnamespace
	UNION ALL
	SELECT format('constraint %s on %s: %s', co.conname, co.conrelid::regclass, pg_get_constraintdef(co.oid))
	FROM pg_constraint co WHERE co.connamespace = 'loyalty'::regnamespace
	UNION ALL
	SELECT format('index %s', pg_get_indexdef(i.indexrelid))
	FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	WHERE c.relnamespace = 'loyalty'::regnamespace
	UNION ALL
	SELECT format('view %s: %s', c.relname, md5(pg_get_viewdef(c.oid)))
	FROM pg_class c WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind IN ('v', 'm')
	UNION ALL
	SELECT format('trigger %s on %s: %s', t.tgname, t.tgrelid::regclass, pg_get_triggerdef(t.oid))
	FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
	WHERE c.relnamespace = 'loyalty'::regnamespace AND NOT t.tgisinternal
	UNION ALL
	SELECT format('type %s len %s byval %s align %s storage %s', t.typname, t.typlen, t.typbyval,
				  t.typalign, t.typstorage)
	FROM pg_type t WHERE t.typnamespace = 'loyalty'::regnamespace
	UNION ALL
	SELECT format('operator %s(%s,%s) -> %s commutator %s negator %s hashes %s merges %s',
				  o.oprname, o.oprleft::regtype, o.oprright::regtype, o.oprcode,
				  o.oprcom::regoperator, o.oprnegate::regoperator, o.oprcanhash, o.oprcanmerge)
	FROM pg_operator o WHERE o.oprnamespace = 'loyalty'::regnamespace
	UNION ALL
	SELECT format('access rule %s %s %s %s', level, object_type, object_name, privileges)
	FROM loyalty.access_rule
	UNION ALL
	SELECT format('config dump %s %s', x.cfg::regclass, x.cond)
	FROM pg_extension e,
		 unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
	WHERE e.extname = 'loyalty'
) facts
ORDER BY fact;
