
/* ---------------------------------------------------------------------------
 * settings.sql: settings every family reads
 *
 * One time zone for the whole program: the days of RFM recency (batch and
 * live tracking), the nightly default as_of of refresh_segments, date-only
 * campaign ends, and the points calendar (expiry dates, pending days, tier
 * months, cap periods, weekdays) are all computed in it.  It lives here, at
 * the bottom of the family order, so that every family may read it.  A
 * plain table with a CHECK and no trigger, so that it can become a Citus
 * reference table.
 * ------------------------------------------------------------------------ */

CREATE TABLE loyalty.settings (
	singleton	boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	-- an unknown zone raises here
	timezone	text NOT NULL DEFAULT 'UTC'
		CONSTRAINT settings_timezone_check
		CHECK (pg_catalog.timezone(timezone, '2000-01-01 00:00:00+00'::pg_catalog.timestamptz) IS NOT NULL)
);

COMMENT ON TABLE loyalty.settings IS
	'Program-wide settings, at most one row (no row: the defaults). Change them with INSERT ... ON CONFLICT (singleton) DO UPDATE';
COMMENT ON COLUMN loyalty.settings.singleton IS
	'Always true: the table holds at most one row';
COMMENT ON COLUMN loyalty.settings.timezone IS
	'The program time zone (default UTC): RFM days, the default as_of of refresh_segments, date-only campaign ends and the points calendar are computed in it';

SELECT pg_catalog.pg_extension_config_dump('loyalty.settings'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.settings'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.settings'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
