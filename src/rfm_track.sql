/* ---------------------------------------------------------------------------
 * rfm_track.sql: live RFM tracking of the application's orders table
 *
 * loyalty.track_orders() installs statement-level triggers (with transition
 * tables) on the application's orders table; they keep per-customer
 * statistics in loyalty.customer_stats exact inside the application's own
 * transaction.  The statistics carry per-UTC-day buckets (type
 * loyalty.day_buckets), so that windowed frequency and monetary can be
 * computed for any as-of time without reading the orders again.
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.day_buckets;

CREATE FUNCTION loyalty.day_buckets_in(cstring)
RETURNS loyalty.day_buckets
AS 'MODULE_PATHNAME', 'day_buckets_in'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_in(cstring) IS
	'Text input of day_buckets: {YYYY-MM-DD:orders:spend,...}, days ascending';

CREATE FUNCTION loyalty.day_buckets_out(loyalty.day_buckets)
RETURNS cstring
AS 'MODULE_PATHNAME', 'day_buckets_out'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_out(loyalty.day_buckets) IS
	'Text output of day_buckets: {YYYY-MM-DD:orders:spend,...}';

CREATE FUNCTION loyalty.day_buckets_recv(internal)
RETURNS loyalty.day_buckets
AS 'MODULE_PATHNAME', 'day_buckets_recv'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_recv(internal) IS
	'Binary input of day_buckets, validated like the text input';

CREATE FUNCTION loyalty.day_buckets_send(loyalty.day_buckets)
RETURNS bytea
AS 'MODULE_PATHNAME', 'day_buckets_send'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_send(loyalty.day_buckets) IS
	'Binary output of day_buckets';

CREATE TYPE loyalty.day_buckets (
	INPUT = loyalty.day_buckets_in,
	OUTPUT = loyalty.day_buckets_out,
	RECEIVE = loyalty.day_buckets_recv,
	SEND = loyalty.day_buckets_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = int4,
	STORAGE = extended
);

COMMENT ON TYPE loyalty.day_buckets IS
	'One customer''s orders and spend per UTC day (live RFM statistics)';

SELECT loyalty._register_function('all', 'loyalty.day_buckets_in(cstring)');
SELECT loyalty._register_function('all', 'loyalty.day_buckets_out(loyalty.day_buckets)');
SELECT loyalty._register_function('all', 'loyalty.day_buckets_recv(internal)');
SELECT loyalty._register_function('all', 'loyalty.day_buckets_send(loyalty.day_buckets)');

CREATE FUNCTION loyalty._rfm_days_merge(loyalty.day_buckets, loyalty.day_buckets)
RETURNS loyalty.day_buckets
AS 'MODULE_PATHNAME', 'rfm_days_merge'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_days_merge(loyalty.day_buckets, loyalty.day_buckets) IS
	'Internal: stored day buckets plus a statement''s delta (NULL = no bucket)';

CREATE FUNCTION loyalty._rfm_days_prune(loyalty.day_buckets, date)
RETURNS loyalty.day_buckets
AS 'MODULE_PATHNAME', 'rfm_days_prune'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_days_prune(loyalty.day_buckets, date) IS
	'Internal: the day buckets of days on or after the given date';

/* tables */

CREATE TABLE loyalty.tracked_table (
	orders				regclass PRIMARY KEY,
	customer_column		name NOT NULL,
	ordered_at_column	name NOT NULL,
	amount_column		name NOT NULL,
	status_column		name,
	counted_statuses	text[],
	tracked_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CHECK ((status_column IS NULL) = (counted_statuses IS NULL))
);

COMMENT ON TABLE loyalty.tracked_table IS
	'Orders tables whose rows feed the live RFM statistics (see loyalty.track_orders)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.tracked_table', '');
SELECT loyalty._register_relation('admin', 'loyalty.tracked_table');

CREATE TABLE loyalty.customer_stats (
	customer_id		text COLLATE "C" PRIMARY KEY,
	row_count		bigint NOT NULL DEFAULT 0,
	order_count		bigint NOT NULL DEFAULT 0,
	spend_total		numeric NOT NULL DEFAULT 0,
	first_order		timestamptz,
	last_order		timestamptz,
	days			loyalty.day_buckets
) WITH (fillfactor = 90);

COMMENT ON TABLE loyalty.customer_stats IS
	'Live per-customer statistics of the tracked orders tables, kept current by their triggers';
COMMENT ON COLUMN loyalty.customer_stats.row_count IS
	'Tracked rows of the customer (orders and refunds); 0 = left, removed by the next refresh';
COMMENT ON COLUMN loyalty.customer_stats.order_count IS
	'Orders (rows with an amount >= 0 or null), all time';
COMMENT ON COLUMN loyalty.customer_stats.spend_total IS
	'Sum of all amounts (orders and refunds), all time';
COMMENT ON COLUMN loyalty.customer_stats.days IS
	'Orders and spend per UTC day, from the retention horizon on';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_stats', '');

/* functions */

CREATE FUNCTION loyalty._rfm_track_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'rfm_track_trigger'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty._rfm_track_trigger() IS
	'Internal: statement trigger of a tracked orders table; applies the statement''s delta to loyalty.customer_stats';

CREATE FUNCTION loyalty.track_orders(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	status_column name DEFAULT NULL,
	counted_statuses text[] DEFAULT NULL,
	OUT tracked_rows bigint,
	OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_track_orders'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.track_orders(regclass, name, name, name, name, text[]) IS
	'Keep live RFM statistics of an orders table: back-fill them now and install triggers that keep them exact (optionally counting only rows whose status is in counted_statuses)';
SELECT loyalty._register_function('admin', 'loyalty.track_orders(regclass,name,name,name,name,text[])');

CREATE FUNCTION loyalty.untrack_orders(orders regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'rfm_untrack_orders'
LANGUAGE C VOLATILE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.untrack_orders(regclass) IS
	'Stop tracking an orders table: drop its triggers and take its rows out of the live statistics';
SELECT loyalty._register_function('admin', 'loyalty.untrack_orders(regclass)');

CREATE FUNCTION loyalty.rebuild_tracking(OUT tracked_rows bigint, OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_rebuild_tracking'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.rebuild_tracking() IS
	'Recompute the live statistics from the tracked tables (after writes that bypassed the triggers)';
SELECT loyalty._register_function('admin', 'loyalty.rebuild_tracking()');

CREATE FUNCTION loyalty._rfm_check_tracked()
RETURNS void
AS 'MODULE_PATHNAME', 'rfm_check_tracked'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty._rfm_check_tracked() IS
	'Internal: raise an error if a tracked table lost or retyped a tracked column';

/*
 * Event triggers: a tracked table, one of its tracked columns or one of the
 * tracking triggers cannot be dropped, and an ALTER TABLE cannot rename or
 * retype a tracked column, while the table is tracked (the statistics would
 * silently stop following the orders, or every later write would fail).
 */
CREATE FUNCTION loyalty._rfm_guard_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	t record;
BEGIN
	IF pg_catalog.to_regclass('loyalty.tracked_table') IS NULL THEN
		RETURN;
	END IF;
	FOR r IN SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() LOOP
		IF r.object_type = 'table' THEN
			SELECT * INTO t FROM loyalty.tracked_table tt
			WHERE tt.orders::pg_catalog.oid = r.objid;
			IF FOUND THEN
				RAISE EXCEPTION 'cannot drop table % because loyalty tracks it', r.object_identity
					USING ERRCODE = 'dependent_objects_still_exist',
						  HINT = pg_catalog.format('Call loyalty.untrack_orders(%L) first.', r.object_identity);
			END IF;
		ELSIF r.object_type = 'table column' THEN
			SELECT * INTO t FROM loyalty.tracked_table tt
			WHERE tt.orders::pg_catalog.oid = r.objid
			  AND r.address_names[3] IN (tt.customer_column, tt.ordered_at_column,
										 tt.amount_column, tt.status_column);
			IF FOUND THEN
				RAISE EXCEPTION 'cannot drop column % because loyalty tracks it', r.object_identity
					USING ERRCODE = 'dependent_objects_still_exist',
						  HINT = 'Call loyalty.untrack_orders() on its table first.';
			END IF;
		ELSIF r.object_type = 'trigger' AND r.address_names[3] LIKE 'loyalty\_rfm\_track\_%' THEN
			SELECT * INTO t FROM loyalty.tracked_table tt
			WHERE tt.orders::pg_catalog.oid = pg_catalog.to_regclass(
				pg_catalog.format('%I.%I', r.address_names[1], r.address_names[2]));
			IF FOUND THEN
				RAISE EXCEPTION 'cannot drop trigger % because loyalty tracking needs it', r.object_identity
					USING ERRCODE = 'dependent_objects_still_exist',
						  HINT = 'Call loyalty.untrack_orders() on its table instead.';
			END IF;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._rfm_guard_drop() IS
	'Internal: event trigger refusing to drop a tracked table, column or tracking trigger';

CREATE FUNCTION loyalty._rfm_guard_alter()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pg_catalog.to_regclass('loyalty.tracked_table') IS NOT NULL
	   AND EXISTS (SELECT 1 FROM loyalty.tracked_table) THEN
		PERFORM loyalty._rfm_check_tracked();
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._rfm_guard_alter() IS
	'Internal: event trigger refusing an ALTER TABLE that breaks a tracked column';

CREATE EVENT TRIGGER loyalty_rfm_guard_drop ON sql_drop
	EXECUTE FUNCTION loyalty._rfm_guard_drop();

CREATE EVENT TRIGGER loyalty_rfm_guard_alter ON ddl_command_end
	WHEN TAG IN ('ALTER TABLE')
	EXECUTE FUNCTION loyalty._rfm_guard_alter();

COMMENT ON EVENT TRIGGER loyalty_rfm_guard_drop IS
	'Refuses to drop a table, column or trigger that loyalty tracking depends on';
COMMENT ON EVENT TRIGGER loyalty_rfm_guard_alter IS
	'Refuses an ALTER TABLE that renames or retypes a column loyalty tracks';
