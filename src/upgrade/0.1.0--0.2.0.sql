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

