-- loyalty install script, built by the Makefile from the src/ SQL parts in order

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION loyalty" to load this file. \quit

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
