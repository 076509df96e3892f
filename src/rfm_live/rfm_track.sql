/* ---------------------------------------------------------------------------
 * rfm_track.sql: live RFM tracking of the application's orders table
 *
 * loyalty.track_orders() installs statement-level triggers (with transition
 * tables) on the application's orders table; they keep per-customer
 * statistics in loyalty.customer_stats exact inside the application's own
 * transaction.  The statistics carry per-day buckets (days of the program
 * time zone as of tracking, loyalty.tracked_table.timezone; type
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
	'One customer''s orders and spend per day of the tracking time zone (live RFM statistics)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_in(cstring)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_out(loyalty.day_buckets)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_recv(internal)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_send(loyalty.day_buckets)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.day_buckets_entries(buckets loyalty.day_buckets)
RETURNS TABLE (day date, orders integer, spend numeric)
AS 'MODULE_PATHNAME', 'day_buckets_entries'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_entries(loyalty.day_buckets) IS
	'The buckets of a day_buckets value as rows: day (of the tracking time zone), orders and spend of that day';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_entries(loyalty.day_buckets)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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

CREATE FUNCTION loyalty._rfm_days_minus(loyalty.day_buckets, loyalty.day_buckets)
RETURNS loyalty.day_buckets
AS 'MODULE_PATHNAME', 'rfm_days_minus'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_days_minus(loyalty.day_buckets, loyalty.day_buckets) IS
	'Internal: added minus removed day buckets of pending changes, as a delta (NULL = no bucket)';

CREATE AGGREGATE loyalty._rfm_days_fold(loyalty.day_buckets) (
	SFUNC = loyalty._rfm_days_merge,
	STYPE = loyalty.day_buckets
);

COMMENT ON AGGREGATE loyalty._rfm_days_fold(loyalty.day_buckets) IS
	'Internal: the sum of pending day-bucket deltas (NULL = no bucket)';

CREATE FUNCTION loyalty._rfm_days_tally(loyalty.day_buckets, loyalty.day_buckets,
	bigint, date, numeric,
	OUT order_days bigint, OUT first_day date, OUT first_day_spend numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_days_tally'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_days_tally(loyalty.day_buckets, loyalty.day_buckets, bigint, date, numeric) IS
	'Internal: all-time order days and first order day with its spend after a change of the day buckets from old to merged';

/* tables */

CREATE TABLE loyalty.tracked_table (
	orders				regclass PRIMARY KEY,
	customer_column		name NOT NULL,
	ordered_at_column	name NOT NULL,
	amount_column		name NOT NULL,
	status_column		name,
	counted_statuses	text[],
	tracked_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CHECK ((status_column IS NULL) = (counted_statuses IS NULL)),
	timezone			text NOT NULL DEFAULT 'UTC',
	frequency_unit		text NOT NULL DEFAULT 'rows'
		CONSTRAINT tracked_table_frequency_unit_check
		CHECK (frequency_unit IN ('rows', 'days'))
);

COMMENT ON TABLE loyalty.tracked_table IS
	'Orders tables whose rows feed the live RFM statistics (see loyalty.track_orders)';
COMMENT ON COLUMN loyalty.tracked_table.timezone IS
	'Time zone of the day buckets: the program time zone (loyalty.settings) at track_orders or the last rebuild_tracking; refresh_segments refuses to run while they differ';
COMMENT ON COLUMN loyalty.tracked_table.frequency_unit IS
	'What frequency counts: rows (every order row) or days (days with an order, for a line-level table); the same for every tracked table';

SELECT pg_catalog.pg_extension_config_dump('loyalty.tracked_table', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.tracked_table'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.customer_stats (
	customer_id		text COLLATE "C" PRIMARY KEY,
	row_count		bigint NOT NULL DEFAULT 0,
	order_count		bigint NOT NULL DEFAULT 0,
	spend_total		numeric NOT NULL DEFAULT 0,
	first_order		timestamptz,
	last_order		timestamptz,
	days			loyalty.day_buckets,
	score			loyalty.rfm_score,
	segment			text,
	since			timestamptz,
	order_days		bigint NOT NULL DEFAULT 0,
	first_day		date,
	first_day_spend	numeric
) WITH (fillfactor = 90);

COMMENT ON TABLE loyalty.customer_stats IS
	'Per-customer statistics of the tracked orders tables as of the last fold; pending changes are in loyalty.customer_stats_delta';
COMMENT ON COLUMN loyalty.customer_stats.row_count IS
	'Tracked rows of the customer (orders and refunds); 0 = left, removed by the next refresh';
COMMENT ON COLUMN loyalty.customer_stats.order_count IS
	'Orders (rows with an amount >= 0 or null), all time';
COMMENT ON COLUMN loyalty.customer_stats.spend_total IS
	'Sum of all amounts (orders and refunds), all time';
COMMENT ON COLUMN loyalty.customer_stats.days IS
	'Orders and spend per day of the tracking time zone (loyalty.tracked_table.timezone), from the retention horizon on';
COMMENT ON COLUMN loyalty.customer_stats.score IS
	'RFM score at the last refresh_segments (NULL: not scored yet)';
COMMENT ON COLUMN loyalty.customer_stats.segment IS
	'Segment at the last refresh_segments';
COMMENT ON COLUMN loyalty.customer_stats.since IS
	'as_of of the refresh that put the customer into this segment';
COMMENT ON COLUMN loyalty.customer_stats.order_days IS
	'Days (tracking time zone) with at least one order, all time: gained and lost as the day buckets change, kept when buckets are pruned';
COMMENT ON COLUMN loyalty.customer_stats.first_day IS
	'First day (tracking time zone) with an order, as the day buckets last showed it';
COMMENT ON COLUMN loyalty.customer_stats.first_day_spend IS
	'Spend of first_day (orders and refunds of that day): the part of spend_total that is not repeat spend (CLV)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_stats', '');

/*
 * What tracked statements append: one row per statement and customer, the
 * change that statement made to the customer's statistics, unindexed.  The checkout
 * path only inserts here (no shared row updated, nothing read), so tracking
 * cannot make the application's statement fail with a serialization
 * failure or a deadlock; readers add the pending rows to customer_stats and
 * refresh_segments / fold_tracking fold them into it and delete them.
 */
CREATE TABLE loyalty.customer_stats_delta (
	customer_id		text COLLATE "C" NOT NULL,
	row_count		bigint NOT NULL,
	order_count		bigint NOT NULL,
	spend_total		numeric NOT NULL,
	first_added		timestamptz,
	last_added		timestamptz,
	first_removed	timestamptz,
	last_removed	timestamptz,
	days			loyalty.day_buckets,
	days_removed	loyalty.day_buckets
);

/*
 * No index: the checkout path would pay for it on every tracked statement
 * (half of the trigger's cost, measured), while the fold reads every row
 * anyway and customer_rfm's scan of the pending rows of one customer costs
 * about 0.05 ms per 1,000 pending rows (README, Live RFM).
 */

COMMENT ON TABLE loyalty.customer_stats_delta IS
	'Pending changes of the live statistics, appended by the tracking triggers and folded into loyalty.customer_stats by refresh_segments and fold_tracking';
COMMENT ON COLUMN loyalty.customer_stats_delta.row_count IS
	'Tracked rows added minus removed by one statement';
COMMENT ON COLUMN loyalty.customer_stats_delta.order_count IS
	'Orders added minus removed by one statement';
COMMENT ON COLUMN loyalty.customer_stats_delta.spend_total IS
	'Amounts added minus removed by one statement';
COMMENT ON COLUMN loyalty.customer_stats_delta.first_added IS
	'Earliest order time added (NULL: no order added)';
COMMENT ON COLUMN loyalty.customer_stats_delta.last_added IS
	'Latest order time added (NULL: no order added)';
COMMENT ON COLUMN loyalty.customer_stats_delta.first_removed IS
	'Earliest order time removed (NULL: no order removed)';
COMMENT ON COLUMN loyalty.customer_stats_delta.last_removed IS
	'Latest order time removed (NULL: no order removed)';
COMMENT ON COLUMN loyalty.customer_stats_delta.days IS
	'Net change of orders and spend per day (tracking time zone) made by one statement, for the days whose order count did not fall';
COMMENT ON COLUMN loyalty.customer_stats_delta.days_removed IS
	'Opposite of the net change per day (tracking time zone) made by one statement, for the days whose order count fell (stored buckets never hold negative counts)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_stats_delta', '');

/* functions */

/*
 * Not SECURITY DEFINER: the C code switches to the owner of loyalty's
 * tables itself (as PostgreSQL's foreign-key triggers do), which costs far
 * less per statement than the settings save/restore of a SECURITY DEFINER
 * ... SET search_path function; every name it uses is schema-qualified.
 */
CREATE FUNCTION loyalty._rfm_track_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'rfm_track_trigger'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._rfm_track_trigger() IS
	'Internal: statement trigger of a tracked orders table; appends the statement''s delta to loyalty.customer_stats_delta as the extension''s owner';

CREATE FUNCTION loyalty.track_orders(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	status_column name DEFAULT NULL,
	counted_statuses text[] DEFAULT NULL,
	frequency_unit text DEFAULT 'rows',
	OUT tracked_rows bigint,
	OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_track_orders'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.track_orders(regclass, name, name, name, name, text[], text) IS
	'Keep live RFM statistics of an orders table: back-fill them now and install triggers that keep them exact (optionally counting only rows whose status is in counted_statuses; frequency in rows or days)';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.track_orders(regclass,name,name,name,name,text[],text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.untrack_orders(orders regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'rfm_untrack_orders'
LANGUAGE C VOLATILE STRICT
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.untrack_orders(regclass) IS
	'Stop tracking an orders table: drop its triggers and take its rows out of the live statistics';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.untrack_orders(regclass)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rebuild_tracking(OUT tracked_rows bigint, OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_rebuild_tracking'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.rebuild_tracking() IS
	'Recompute the live statistics from the tracked tables (after writes that bypassed the triggers)';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.rebuild_tracking()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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

/* ---------------------------------------------------------------------------
 * Live segmentation: loyalty.refresh_segments() rescores every tracked
 * customer from loyalty.customer_stats alone, with the configuration of
 * loyalty.rfm_config, and records a snapshot: a header
 * (loyalty.segment_snapshot), the customers whose segment changed
 * (loyalty.segment_change: a change log, so that a refresh writes only what
 * moved and the segment of any customer at any snapshot is its latest change
 * up to that snapshot) and per-segment aggregates (loyalty.segment_summary)
 * that the BI views read.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.rfm_config (
	singleton			boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	bins				integer NOT NULL DEFAULT 5,
	scoring_window		interval NOT NULL DEFAULT '12 months',
	monetary			text NOT NULL DEFAULT 'total',
	method				text NOT NULL DEFAULT 'quantile',
	recency_thresholds	integer[],
	frequency_thresholds integer[],
	monetary_thresholds	numeric[],
	bucket_retention	interval NOT NULL DEFAULT '13 months',
	inactive_after		interval NOT NULL DEFAULT '6 months',
	updated_at			timestamptz
);

COMMENT ON TABLE loyalty.rfm_config IS
	'Scoring configuration of refresh_segments (one row; edit it with UPDATE)';
COMMENT ON COLUMN loyalty.rfm_config.bins IS 'Scores per dimension, 2 to 9 (5: scores 1..5)';
COMMENT ON COLUMN loyalty.rfm_config.scoring_window IS
	'Frequency and monetary count the orders of [as_of - scoring_window, as_of], whole days of the tracking time zone';
COMMENT ON COLUMN loyalty.rfm_config.monetary IS
	'total: spend in the window; average: spend / orders in the window';
COMMENT ON COLUMN loyalty.rfm_config.method IS
	'quantile: equal values score equal, 1 + floor(bins * worse / customers); thresholds: fixed cut points';
COMMENT ON COLUMN loyalty.rfm_config.recency_thresholds IS
	'Days since the last order, ascending, bins - 1 of them (method thresholds; NULL: quantile)';
COMMENT ON COLUMN loyalty.rfm_config.frequency_thresholds IS
	'Orders in the window, ascending, bins - 1 of them (method thresholds; NULL: quantile)';
COMMENT ON COLUMN loyalty.rfm_config.monetary_thresholds IS
	'Monetary values, ascending, bins - 1 of them (method thresholds; NULL: quantile)';
COMMENT ON COLUMN loyalty.rfm_config.bucket_retention IS
	'How far back per-day buckets are kept (at least scoring_window): the earliest as_of a refresh accepts';
COMMENT ON COLUMN loyalty.rfm_config.inactive_after IS
	'A customer without an order for this long is inactive (segment_inactivity)';
COMMENT ON COLUMN loyalty.rfm_config.updated_at IS
	'When the configuration was last changed (NULL: the defaults shipped with loyalty)';

INSERT INTO loyalty.rfm_config DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('loyalty.rfm_config', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.rfm_config'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE'::pg_catalog.text);

CREATE TABLE loyalty.segment_snapshot (
	snapshot_id		bigserial PRIMARY KEY,
	as_of			timestamptz NOT NULL,
	taken_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	customers		bigint NOT NULL DEFAULT 0,
	segment_changes	bigint NOT NULL DEFAULT 0,
	score_changes	bigint NOT NULL DEFAULT 0,
	left_customers	bigint NOT NULL DEFAULT 0,
	bins			integer NOT NULL,
	scoring_window	interval NOT NULL,
	monetary		text NOT NULL,
	method			text NOT NULL,
	retained_from	date NOT NULL,
	took_ms			double precision
);

CREATE INDEX segment_snapshot_as_of ON loyalty.segment_snapshot (as_of);

COMMENT ON TABLE loyalty.segment_snapshot IS
	'One row per refresh_segments: when, as of when, with which configuration, how much changed';
COMMENT ON COLUMN loyalty.segment_snapshot.retained_from IS
	'Day buckets are complete from this day on after this refresh (earlier ones may be pruned)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_snapshot', '');
SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_snapshot_snapshot_id_seq', '');

CREATE TABLE loyalty.segment_change (
	customer_id		text COLLATE "C" NOT NULL,
	snapshot_id		bigint NOT NULL,
	segment			text,
	score			loyalty.rfm_score,
	PRIMARY KEY (customer_id, snapshot_id)
);

/* snapshot ids only grow as rows are appended: a BRIN index costs nothing to keep */
CREATE INDEX segment_change_snapshot ON loyalty.segment_change USING brin (snapshot_id);

COMMENT ON TABLE loyalty.segment_change IS
	'Segment changes per refresh: a customer''s segment at a snapshot is the one of their latest row up to it (segment NULL: no longer a customer)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_change', '');

CREATE TABLE loyalty.segment_summary (
	snapshot_id				bigint NOT NULL,
	segment					text NOT NULL,
	customers				bigint NOT NULL,
	revenue					numeric NOT NULL,
	recency_under_3_months	bigint NOT NULL,
	recency_3_to_6_months	bigint NOT NULL,
	recency_over_6_months	bigint NOT NULL,
	no_order				bigint NOT NULL,
	inactive				bigint NOT NULL,
	PRIMARY KEY (snapshot_id, segment)
);

COMMENT ON TABLE loyalty.segment_summary IS
	'Per snapshot and segment: customers, revenue (spend in the scoring window), recency buckets and inactive customers';

SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_summary', '');

/* functions */

CREATE FUNCTION loyalty._rfm_config_validate(
	bins integer, scoring_window interval, monetary text, method text,
	recency_thresholds integer[], frequency_thresholds integer[],
	monetary_thresholds numeric[], bucket_retention interval, inactive_after interval)
RETURNS void
AS 'MODULE_PATHNAME', 'rfm_config_validate'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_config_validate(integer, interval, text, text, integer[], integer[], numeric[], interval, interval) IS
	'Internal: raise an error unless the values make a usable RFM configuration';

/*
 * The configuration is one row.  An INSERT updates that row instead of
 * adding one, so that restoring a dump (which inserts the dumped row into
 * the row CREATE EXTENSION made) keeps the user's values; every change is
 * validated like rfm_segmentation's arguments.
 */
CREATE FUNCTION loyalty._rfm_config_trigger()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	present boolean;
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'the RFM configuration row cannot be deleted'
			USING ERRCODE = 'restrict_violation',
				  HINT = 'UPDATE loyalty.rfm_config to change it.';
	END IF;
	/*
	 * The table the trigger fires on (TG_RELID), not loyalty.rfm_config by
	 * name: on Citus the trigger fires on each placement of the reference
	 * table (a full copy), where reading the table by name would be a
	 * distributed query inside Citus's own write of the placement (its copy
	 * of the table deadlocked on it).  Without Citus it is rfm_config.
	 */
	IF TG_OP = 'INSERT' THEN
		EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %s)', TG_RELID::pg_catalog.regclass)
			INTO present;
		IF present THEN
			EXECUTE pg_catalog.format(
				'UPDATE %s SET bins = ($1).bins, scoring_window = ($1).scoring_window,'
				' monetary = ($1).monetary, method = ($1).method,'
				' recency_thresholds = ($1).recency_thresholds,'
				' frequency_thresholds = ($1).frequency_thresholds,'
				' monetary_thresholds = ($1).monetary_thresholds,'
				' bucket_retention = ($1).bucket_retention,'
				' inactive_after = ($1).inactive_after, updated_at = ($1).updated_at',
				TG_RELID::pg_catalog.regclass) USING NEW;
			RETURN NULL;
		END IF;
	END IF;
	PERFORM loyalty._rfm_config_validate(NEW.bins, NEW.scoring_window, NEW.monetary,
										 NEW.method, NEW.recency_thresholds,
										 NEW.frequency_thresholds, NEW.monetary_thresholds,
										 NEW.bucket_retention, NEW.inactive_after);
	/* a change of the settings that does not set updated_at itself is stamped */
	IF TG_OP = 'UPDATE' AND NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
	   AND (NEW.bins, NEW.scoring_window, NEW.monetary, NEW.method, NEW.recency_thresholds,
			NEW.frequency_thresholds, NEW.monetary_thresholds, NEW.bucket_retention,
			NEW.inactive_after)
		   IS DISTINCT FROM
		   (OLD.bins, OLD.scoring_window, OLD.monetary, OLD.method, OLD.recency_thresholds,
			OLD.frequency_thresholds, OLD.monetary_thresholds, OLD.bucket_retention,
			OLD.inactive_after) THEN
		NEW.updated_at := pg_catalog.now();
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._rfm_config_trigger() IS
	'Internal: keeps loyalty.rfm_config a single validated row';

CREATE TRIGGER rfm_config_check
	BEFORE INSERT OR UPDATE OR DELETE ON loyalty.rfm_config
	FOR EACH ROW EXECUTE FUNCTION loyalty._rfm_config_trigger();

CREATE FUNCTION loyalty._rfm_config_no_truncate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'the RFM configuration row cannot be deleted'
		USING ERRCODE = 'restrict_violation',
			  HINT = 'UPDATE loyalty.rfm_config to change it.';
END;
$$;

COMMENT ON FUNCTION loyalty._rfm_config_no_truncate() IS
	'Internal: refuses TRUNCATE of loyalty.rfm_config';

CREATE TRIGGER rfm_config_no_truncate
	BEFORE TRUNCATE ON loyalty.rfm_config
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._rfm_config_no_truncate();

CREATE FUNCTION loyalty.fold_tracking(OUT folded_rows bigint, OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_fold_tracking'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.fold_tracking() IS
	'Fold the pending tracked changes (loyalty.customer_stats_delta) into loyalty.customer_stats now, as refresh_segments does first';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.fold_tracking()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The default as_of of refresh_segments: the start of the current day in
 * the program time zone (loyalty.settings), read by the C code without the
 * caller needing access to the settings.
 */
CREATE FUNCTION loyalty._rfm_default_as_of()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'rfm_default_as_of'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_default_as_of() IS
	'Internal: the default as_of of refresh_segments, the start of today in the program time zone';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._rfm_default_as_of()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * as_of defaults to the start of the current day in the program time
 * zone.  An as_of more than loyalty.refresh_future_skew (5 minutes) ahead of
 * the clock, or before the latest snapshot's, is refused (22023).
 */
CREATE FUNCTION loyalty.refresh_segments(
	as_of timestamptz DEFAULT loyalty._rfm_default_as_of(),
	OUT snapshot_id bigint,
	OUT scored_as_of timestamptz,
	OUT customers bigint,
	OUT segment_changes bigint,
	OUT score_changes bigint,
	OUT left_customers bigint,
	OUT took_ms double precision)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_refresh_segments'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.refresh_segments(timestamptz) IS
	'Rescore every tracked customer from the live statistics (never reading orders) and record a snapshot as of as_of (default: the start of today in the program time zone)';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.refresh_segments(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Drop the last snapshot taken (a mistaken refresh): its change log rows,
 * summary and header; the customers it moved get back the segment, score
 * and since of the snapshot before (customers it recorded as leaving get
 * their statistics row back, empty, so that the next refresh records them
 * leaving again).  Only the last snapshot: every later one reads the
 * change log up to it.  The retention horizon it reached is kept (given
 * to the snapshot before), since day buckets before it may be pruned.
 * Scores that changed without a segment change keep the dropped value
 * until the next refresh.  Serialized with refresh_segments.
 */
CREATE FUNCTION loyalty.drop_snapshot(snapshot_id bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	d loyalty.segment_snapshot;
	last_id bigint;
	prev_id bigint;
	restored bigint;
BEGIN
	IF drop_snapshot.snapshot_id IS NULL THEN
		RAISE EXCEPTION 'snapshot_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	LOCK TABLE loyalty.segment_snapshot IN EXCLUSIVE MODE;
	SELECT * INTO d FROM loyalty.segment_snapshot s
	WHERE s.snapshot_id OPERATOR(pg_catalog.=) drop_snapshot.snapshot_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'snapshot % does not exist', drop_snapshot.snapshot_id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'loyalty.segment_snapshots lists the snapshots taken by refresh_segments().';
	END IF;
	SELECT pg_catalog.max(s.snapshot_id) INTO last_id FROM loyalty.segment_snapshot s;
	IF last_id OPERATOR(pg_catalog.<>) d.snapshot_id THEN
		RAISE EXCEPTION 'only the last snapshot can be dropped'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.format('Snapshot %s was taken after snapshot %s.', last_id, d.snapshot_id),
				  HINT = 'Drop the later snapshots first.';
	END IF;
	SELECT pg_catalog.max(s.snapshot_id) INTO prev_id FROM loyalty.segment_snapshot s
	WHERE s.snapshot_id OPERATOR(pg_catalog.<) d.snapshot_id;

	/*
	 * Each customer the snapshot moved, with their previous change: rows
	 * back to it; leavers it recorded (their row was deleted) back, empty.
	 */
	WITH moves AS (
		SELECT c.customer_id, c.segment AS dropped_segment, p.segment, p.score, p.as_of
		FROM loyalty.segment_change c
		LEFT JOIN LATERAL (
			SELECT x.segment, x.score, s.as_of
			FROM loyalty.segment_change x
			JOIN loyalty.segment_snapshot s ON s.snapshot_id OPERATOR(pg_catalog.=) x.snapshot_id
			WHERE x.customer_id OPERATOR(pg_catalog.=) c.customer_id
			  AND x.snapshot_id OPERATOR(pg_catalog.<) c.snapshot_id
			ORDER BY x.snapshot_id DESC LIMIT 1) p ON true
		WHERE c.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id
	), upd AS (
		UPDATE loyalty.customer_stats cs
		SET segment = m.segment, score = m.score,
			since = CASE WHEN m.segment IS NULL THEN NULL ELSE m.as_of END
		FROM moves m
		WHERE cs.customer_id OPERATOR(pg_catalog.=) m.customer_id
		RETURNING 1
	), ins AS (
		INSERT INTO loyalty.customer_stats (customer_id, row_count, segment, score, since)
		SELECT m.customer_id, 0, m.segment, m.score, m.as_of
		FROM moves m
		WHERE m.dropped_segment IS NULL AND m.segment IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.customer_stats cs
						  WHERE cs.customer_id OPERATOR(pg_catalog.=) m.customer_id)
		ON CONFLICT (customer_id) DO NOTHING
		RETURNING 1
	)
	SELECT (SELECT pg_catalog.count(*) FROM upd) OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM ins)
	INTO restored;

	UPDATE loyalty.segment_snapshot s SET retained_from = d.retained_from
	WHERE s.snapshot_id OPERATOR(pg_catalog.=) prev_id
	  AND s.retained_from OPERATOR(pg_catalog.<) d.retained_from;
	DELETE FROM loyalty.segment_change c WHERE c.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id;
	DELETE FROM loyalty.segment_summary m WHERE m.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id;
	DELETE FROM loyalty.segment_snapshot s WHERE s.snapshot_id OPERATOR(pg_catalog.=) d.snapshot_id;
	RETURN restored;
END;
$$;

COMMENT ON FUNCTION loyalty.drop_snapshot(bigint) IS
	'Drop the last snapshot taken by refresh_segments (change log, summary, header) and give the customers it moved their previous segment back; returns the customers restored';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.drop_snapshot(bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.customer_rfm(
	customer_id text,
	as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (
	customer_id text,
	orders_total bigint,
	spend_total numeric,
	first_order timestamptz,
	last_order timestamptz,
	recency_days integer,
	frequency bigint,
	monetary numeric,
	score loyalty.rfm_score,
	segment text,
	segment_since timestamptz,
	scored_as_of timestamptz)
AS 'MODULE_PATHNAME', 'rfm_customer_rfm'
LANGUAGE C STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
ROWS 1;

COMMENT ON FUNCTION loyalty.customer_rfm(text, timestamptz) IS
	'One customer''s live RFM statistics as of a time, with the score and segment of the last refresh (no row for an unknown customer)';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.customer_rfm(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Segment migration between two snapshots: only customers with a change
 * log row between them are read; the customers who kept their segment are
 * the segment's size at the first snapshot minus those who moved out.
 */
CREATE FUNCTION loyalty.segment_migration_by_id(from_snapshot bigint, to_snapshot bigint)
RETURNS TABLE (from_segment text, to_segment text, customers bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF from_snapshot IS NULL OR to_snapshot IS NULL THEN
		RAISE EXCEPTION 'snapshot ids must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.segment_snapshot s WHERE s.snapshot_id = from_snapshot)
	   OR NOT EXISTS (SELECT 1 FROM loyalty.segment_snapshot s WHERE s.snapshot_id = to_snapshot) THEN
		RAISE EXCEPTION 'snapshot % or % does not exist', from_snapshot, to_snapshot
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF from_snapshot > to_snapshot THEN
		RAISE EXCEPTION 'from_snapshot % is later than to_snapshot %', from_snapshot, to_snapshot
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	WITH moved AS (
		SELECT DISTINCT ON (c.customer_id) c.customer_id, c.segment AS to_segment
		FROM loyalty.segment_change c
		WHERE c.snapshot_id > from_snapshot AND c.snapshot_id <= to_snapshot
		ORDER BY c.customer_id, c.snapshot_id DESC
	), pairs AS (
		SELECT (SELECT p.segment FROM loyalty.segment_change p
				WHERE p.customer_id = m.customer_id AND p.snapshot_id <= from_snapshot
				ORDER BY p.snapshot_id DESC LIMIT 1) AS from_segment,
			   m.to_segment
		FROM moved m
	), cells AS (
		SELECT p.from_segment, p.to_segment, count(*) AS n
		FROM pairs p
		WHERE p.from_segment IS DISTINCT FROM p.to_segment
		GROUP BY 1, 2
	)
	SELECT c.from_segment, c.to_segment, c.n FROM cells c
	UNION ALL
	SELECT d.segment, d.segment, d.stayed
	FROM (SELECT ss.segment,
				 ss.customers - coalesce((SELECT sum(c.n)::bigint FROM cells c
										  WHERE c.from_segment = ss.segment), 0) AS stayed
		  FROM loyalty.segment_summary ss
		  WHERE ss.snapshot_id = from_snapshot) d
	WHERE d.stayed > 0;
END;
$$;

COMMENT ON FUNCTION loyalty.segment_migration_by_id(bigint, bigint) IS
	'Segment migration matrix between two snapshots (NULL segment: not a customer at that snapshot)';
SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.segment_migration_by_id(bigint, bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.segment_migration(from_date timestamptz, to_date timestamptz)
RETURNS TABLE (from_segment text, to_segment text, customers bigint)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	f bigint;
	t bigint;
BEGIN
	IF from_date IS NULL OR to_date IS NULL THEN
		RAISE EXCEPTION 'dates must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT s.snapshot_id INTO f FROM loyalty.segment_snapshot s
	WHERE s.as_of <= from_date ORDER BY s.as_of DESC, s.snapshot_id DESC LIMIT 1;
	SELECT s.snapshot_id INTO t FROM loyalty.segment_snapshot s
	WHERE s.as_of <= to_date ORDER BY s.as_of DESC, s.snapshot_id DESC LIMIT 1;
	IF f IS NULL OR t IS NULL THEN
		RAISE EXCEPTION 'no snapshot as of % or earlier', CASE WHEN f IS NULL THEN from_date ELSE to_date END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'loyalty.segment_snapshots lists the snapshots taken by refresh_segments().';
	END IF;
	IF f > t THEN
		RAISE EXCEPTION 'the snapshot as of % was taken after the one as of %', from_date, to_date
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY SELECT * FROM loyalty.segment_migration_by_id(f, t);
END;
$$;

COMMENT ON FUNCTION loyalty.segment_migration(timestamptz, timestamptz) IS
	'Segment migration matrix between the latest snapshots as of two dates: from_segment, to_segment, customers';
SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.segment_migration(timestamptz, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

/*
 * The BI views (doc/bi.md): every column an analyst joins or filters on is
 * of a pg_catalog type, so that "JOIN loyalty.segment_map USING (score)",
 * "WHERE score = '555'" or "IN ('555', '554')" resolve pg_catalog's
 * operators under any search_path.  Scores are text ('543') with their
 * integer parts r, f, m beside them; the typed loyalty.rfm_score is kept
 * as the column rfm_score (its operators live in schema loyalty).  Every
 * column has a comment (sql/bi_views.sql checks it).
 */
CREATE VIEW loyalty.customer_segment AS
SELECT s.customer_id, s.score::text AS score, s.segment, s.since,
	   (SELECT p.taken_at FROM loyalty.segment_snapshot p
		ORDER BY p.snapshot_id DESC LIMIT 1) AS refreshed_at,
	   loyalty.recency(s.score) AS r,
	   loyalty.frequency(s.score) AS f,
	   loyalty.monetary(s.score) AS m,
	   s.score AS rfm_score
FROM loyalty.customer_stats s
WHERE s.score IS NOT NULL;

COMMENT ON VIEW loyalty.customer_segment IS
	'Every scored customer''s score and segment at the last refresh, and since when they are in it';
COMMENT ON COLUMN loyalty.customer_segment.customer_id IS
	'Customer key as tracked (text, collation "C"); a bigint shop key joins as o.customer_id::text = customer_id';
COMMENT ON COLUMN loyalty.customer_segment.score IS
	'RFM score at the last refresh as text, three digits (''543''): join and filter on it with any search_path';
COMMENT ON COLUMN loyalty.customer_segment.segment IS 'Segment at the last refresh';
COMMENT ON COLUMN loyalty.customer_segment.since IS
	'as_of of the refresh that put the customer into this segment';
COMMENT ON COLUMN loyalty.customer_segment.refreshed_at IS
	'When the last refresh_segments ran (taken_at of the last snapshot)';
COMMENT ON COLUMN loyalty.customer_segment.r IS 'Recency score (first digit of score; 5 = most recent on the default scale)';
COMMENT ON COLUMN loyalty.customer_segment.f IS 'Frequency score (second digit of score)';
COMMENT ON COLUMN loyalty.customer_segment.m IS 'Monetary score (third digit of score)';
COMMENT ON COLUMN loyalty.customer_segment.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.customer_segment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.segment_snapshots AS
SELECT snapshot_id, as_of, taken_at, customers, segment_changes, score_changes,
	   left_customers, bins, scoring_window, monetary, method, took_ms
FROM loyalty.segment_snapshot;

COMMENT ON VIEW loyalty.segment_snapshots IS
	'Snapshots taken by refresh_segments: as_of, size and changes';
COMMENT ON COLUMN loyalty.segment_snapshots.snapshot_id IS 'Snapshot number, in the order the refreshes ran';
COMMENT ON COLUMN loyalty.segment_snapshots.as_of IS 'The time the customers were scored as of';
COMMENT ON COLUMN loyalty.segment_snapshots.taken_at IS 'When the refresh ran';
COMMENT ON COLUMN loyalty.segment_snapshots.customers IS 'Customers scored';
COMMENT ON COLUMN loyalty.segment_snapshots.segment_changes IS 'Customers whose segment changed (new customers included)';
COMMENT ON COLUMN loyalty.segment_snapshots.score_changes IS 'Customers whose score changed';
COMMENT ON COLUMN loyalty.segment_snapshots.left_customers IS 'Customers who left (no tracked row any more)';
COMMENT ON COLUMN loyalty.segment_snapshots.bins IS 'Scores per dimension used (rfm_config.bins)';
COMMENT ON COLUMN loyalty.segment_snapshots.scoring_window IS 'Window of frequency and monetary used (rfm_config.scoring_window)';
COMMENT ON COLUMN loyalty.segment_snapshots.monetary IS 'Monetary measure used: total or average (rfm_config.monetary)';
COMMENT ON COLUMN loyalty.segment_snapshots.method IS 'Scoring method used: quantile or thresholds (rfm_config.method)';
COMMENT ON COLUMN loyalty.segment_snapshots.took_ms IS 'Duration of the refresh in milliseconds';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_snapshots'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * One row per snapshot and segment, empty segments included (0 customers),
 * so that a chart neither gaps nor joins rows itself; last_of_day and
 * last_of_month mark the latest snapshot (by as_of) of each day and month
 * in the program's time zone (loyalty.settings), so that several refreshes
 * on one day are not counted twice.  The segments are those of the current
 * map and any that a snapshot recorded (renamed or deleted since).
 */
CREATE VIEW loyalty.segment_trend AS
WITH snap AS (
	SELECT p.snapshot_id, p.as_of, p.customers,
		   (p.as_of AT TIME ZONE z.tz)::date AS day
	FROM loyalty.segment_snapshot p
	CROSS JOIN (SELECT coalesce((SELECT st.timezone FROM loyalty.settings st), 'UTC') AS tz) z
), ranked AS (
	SELECT snap.snapshot_id, snap.as_of, snap.customers, snap.day,
		   date_trunc('month', snap.day::timestamp)::date AS month,
		   row_number() OVER (PARTITION BY snap.day
							  ORDER BY snap.as_of DESC, snap.snapshot_id DESC) = 1 AS last_of_day,
		   row_number() OVER (PARTITION BY date_trunc('month', snap.day::timestamp)
							  ORDER BY snap.as_of DESC, snap.snapshot_id DESC) = 1 AS last_of_month
	FROM snap
), names AS (
	SELECT g.name AS segment FROM loyalty.segment g
	UNION
	SELECT ss.segment FROM loyalty.segment_summary ss
)
SELECT k.snapshot_id, k.as_of, n.segment, g.display_order,
	   coalesce(ss.customers, 0) AS customers,
	   coalesce(ss.revenue, 0) AS revenue,
	   round(coalesce(ss.customers, 0)::numeric / NULLIF(k.customers, 0), 4) AS customer_share,
	   k.day, k.month, k.last_of_day, k.last_of_month
FROM ranked k
CROSS JOIN names n
LEFT JOIN loyalty.segment_summary ss ON ss.snapshot_id = k.snapshot_id AND ss.segment = n.segment
LEFT JOIN loyalty.segment g ON g.name = n.segment;

COMMENT ON VIEW loyalty.segment_trend IS
	'Customers and revenue of every segment at every snapshot, 0 for empty segments; last_of_day / last_of_month pick one snapshot per day / month';
COMMENT ON COLUMN loyalty.segment_trend.snapshot_id IS 'Snapshot (segment_snapshots.snapshot_id)';
COMMENT ON COLUMN loyalty.segment_trend.as_of IS 'The time the snapshot scored the customers as of';
COMMENT ON COLUMN loyalty.segment_trend.segment IS 'Segment (every segment of the map, and any a snapshot recorded)';
COMMENT ON COLUMN loyalty.segment_trend.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_trend.customers IS 'Customers in the segment at the snapshot (0: none)';
COMMENT ON COLUMN loyalty.segment_trend.revenue IS 'Their spend in the scoring window (0: none)';
COMMENT ON COLUMN loyalty.segment_trend.customer_share IS 'Share of the snapshot''s customers (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_trend.day IS 'Day of as_of in the program''s time zone (loyalty.settings)';
COMMENT ON COLUMN loyalty.segment_trend.month IS 'First day of the month of day';
COMMENT ON COLUMN loyalty.segment_trend.last_of_day IS
	'True for the latest snapshot (by as_of) of its day: filter on it for a daily chart';
COMMENT ON COLUMN loyalty.segment_trend.last_of_month IS
	'True for the latest snapshot (by as_of) of its month: filter on it for a monthly chart';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_trend'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * A customer's segments over time, from the change log: one row per
 * change, with the segment before it and until when it held.
 */
CREATE VIEW loyalty.segment_history AS
SELECT c.customer_id, c.snapshot_id, p.as_of, c.segment,
	   lag(c.segment) OVER w AS previous_segment,
	   c.score::text AS score,
	   loyalty.recency(c.score) AS r,
	   loyalty.frequency(c.score) AS f,
	   loyalty.monetary(c.score) AS m,
	   lead(c.snapshot_id) OVER w AS until_snapshot_id,
	   lead(p.as_of) OVER w AS until,
	   lead(c.snapshot_id) OVER w IS NULL AS is_current,
	   c.score AS rfm_score
FROM loyalty.segment_change c
LEFT JOIN loyalty.segment_snapshot p ON p.snapshot_id = c.snapshot_id
WINDOW w AS (PARTITION BY c.customer_id ORDER BY c.snapshot_id);

COMMENT ON VIEW loyalty.segment_history IS
	'Segment history per customer: one row per change of segment recorded by refresh_segments';
COMMENT ON COLUMN loyalty.segment_history.customer_id IS 'Customer key as tracked (text, collation "C")';
COMMENT ON COLUMN loyalty.segment_history.snapshot_id IS 'Snapshot that recorded the change';
COMMENT ON COLUMN loyalty.segment_history.as_of IS 'as_of of that snapshot: the customer is in segment from then on';
COMMENT ON COLUMN loyalty.segment_history.segment IS 'Segment entered (NULL: no longer a customer, e.g. every order deleted)';
COMMENT ON COLUMN loyalty.segment_history.previous_segment IS 'Segment before the change (NULL: first scoring, or back after leaving)';
COMMENT ON COLUMN loyalty.segment_history.score IS 'RFM score as text when the segment was entered (NULL when segment is NULL)';
COMMENT ON COLUMN loyalty.segment_history.r IS 'Recency score of score';
COMMENT ON COLUMN loyalty.segment_history.f IS 'Frequency score of score';
COMMENT ON COLUMN loyalty.segment_history.m IS 'Monetary score of score';
COMMENT ON COLUMN loyalty.segment_history.until_snapshot_id IS 'Snapshot of the next change (NULL: still current)';
COMMENT ON COLUMN loyalty.segment_history.until IS 'as_of of the next change (NULL: still current)';
COMMENT ON COLUMN loyalty.segment_history.is_current IS 'True for the customer''s latest change: the segment they are in now';
COMMENT ON COLUMN loyalty.segment_history.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_history'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.segment_overview AS
WITH last AS (
	SELECT p.snapshot_id, p.as_of, p.customers
	FROM loyalty.segment_snapshot p
	ORDER BY p.snapshot_id DESC LIMIT 1
), tot AS (
	SELECT sum(ss.revenue) AS revenue
	FROM loyalty.segment_summary ss JOIN last ON ss.snapshot_id = last.snapshot_id
)
SELECT last.snapshot_id, last.as_of, ss.segment, g.display_order,
	   ss.customers,
	   round(ss.customers::numeric / NULLIF(last.customers, 0), 4) AS customer_share,
	   ss.revenue,
	   round(ss.revenue / NULLIF(tot.revenue, 0), 4) AS revenue_share,
	   round(ss.revenue / NULLIF(ss.customers, 0), 2) AS revenue_per_customer
FROM last
JOIN loyalty.segment_summary ss ON ss.snapshot_id = last.snapshot_id
CROSS JOIN tot
LEFT JOIN loyalty.segment g ON g.name = ss.segment;

COMMENT ON VIEW loyalty.segment_overview IS
	'Segments at the last refresh: customers, share of customers, revenue (spend in the scoring window), share of revenue';
COMMENT ON COLUMN loyalty.segment_overview.snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_overview.as_of IS 'The time it scored the customers as of';
COMMENT ON COLUMN loyalty.segment_overview.segment IS 'Segment';
COMMENT ON COLUMN loyalty.segment_overview.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_overview.customers IS 'Customers in the segment';
COMMENT ON COLUMN loyalty.segment_overview.customer_share IS 'Share of all scored customers (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_overview.revenue IS 'Spend of its customers in the scoring window';
COMMENT ON COLUMN loyalty.segment_overview.revenue_share IS 'Share of the revenue of all segments (0..1, 4 decimals)';
COMMENT ON COLUMN loyalty.segment_overview.revenue_per_customer IS 'revenue / customers, 2 decimals';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_overview'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.segment_recency AS
SELECT p.snapshot_id, p.as_of, ss.segment, g.display_order,
	   b.recency_bucket, b.bucket_order, b.customers,
	   round(b.customers::numeric / NULLIF(ss.customers, 0), 4) AS segment_share
FROM (SELECT * FROM loyalty.segment_snapshot ORDER BY snapshot_id DESC LIMIT 1) p
JOIN loyalty.segment_summary ss ON ss.snapshot_id = p.snapshot_id
LEFT JOIN loyalty.segment g ON g.name = ss.segment
CROSS JOIN LATERAL (VALUES
	('< 3 months', 1, ss.recency_under_3_months),
	('3-6 months', 2, ss.recency_3_to_6_months),
	('> 6 months', 3, ss.recency_over_6_months),
	('no order', 4, ss.no_order)) AS b(recency_bucket, bucket_order, customers);

COMMENT ON VIEW loyalty.segment_recency IS
	'Customers of each segment at the last refresh by time since their last order: < 3 months, 3-6 months, > 6 months, no order';
COMMENT ON COLUMN loyalty.segment_recency.snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_recency.as_of IS 'The time it scored the customers as of';
COMMENT ON COLUMN loyalty.segment_recency.segment IS 'Segment';
COMMENT ON COLUMN loyalty.segment_recency.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_recency.recency_bucket IS 'Time from the last order to as_of: < 3 months, 3-6 months, > 6 months, no order';
COMMENT ON COLUMN loyalty.segment_recency.bucket_order IS 'Order of the bucket, 1 (< 3 months) to 4 (no order)';
COMMENT ON COLUMN loyalty.segment_recency.customers IS 'Customers of the segment in the bucket (0 included)';
COMMENT ON COLUMN loyalty.segment_recency.segment_share IS 'Share of the segment''s customers (0..1, 4 decimals)';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_recency'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.segment_inactivity AS
SELECT p.snapshot_id, p.as_of, ss.segment, g.display_order, ss.customers,
	   ss.inactive AS inactive_customers,
	   round(ss.inactive::numeric / NULLIF(ss.customers, 0), 4) AS inactive_share
FROM (SELECT * FROM loyalty.segment_snapshot ORDER BY snapshot_id DESC LIMIT 1) p
JOIN loyalty.segment_summary ss ON ss.snapshot_id = p.snapshot_id
LEFT JOIN loyalty.segment g ON g.name = ss.segment;

COMMENT ON VIEW loyalty.segment_inactivity IS
	'Share of inactive customers (no order for rfm_config.inactive_after) of each segment at the last refresh';
COMMENT ON COLUMN loyalty.segment_inactivity.snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_inactivity.as_of IS 'The time it scored the customers as of';
COMMENT ON COLUMN loyalty.segment_inactivity.segment IS 'Segment';
COMMENT ON COLUMN loyalty.segment_inactivity.display_order IS 'Display order of the segment (NULL: no longer in the map)';
COMMENT ON COLUMN loyalty.segment_inactivity.customers IS 'Customers in the segment';
COMMENT ON COLUMN loyalty.segment_inactivity.inactive_customers IS 'Of them, without an order for rfm_config.inactive_after before as_of';
COMMENT ON COLUMN loyalty.segment_inactivity.inactive_share IS 'inactive_customers / customers (0..1, 4 decimals)';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_inactivity'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.segment_migration_latest AS
WITH ids AS (
	SELECT (SELECT max(snapshot_id) FROM loyalty.segment_snapshot
			WHERE snapshot_id < (SELECT max(snapshot_id) FROM loyalty.segment_snapshot)) AS from_id,
		   (SELECT max(snapshot_id) FROM loyalty.segment_snapshot) AS to_id
)
SELECT ids.from_id AS from_snapshot_id, ids.to_id AS to_snapshot_id,
	   m.from_segment, m.to_segment, m.customers
FROM ids
CROSS JOIN LATERAL loyalty.segment_migration_by_id(ids.from_id, ids.to_id) m
WHERE ids.from_id IS NOT NULL;

COMMENT ON VIEW loyalty.segment_migration_latest IS
	'Segment migration matrix between the last two snapshots';
COMMENT ON COLUMN loyalty.segment_migration_latest.from_snapshot_id IS 'The snapshot before the last one';
COMMENT ON COLUMN loyalty.segment_migration_latest.to_snapshot_id IS 'The last snapshot';
COMMENT ON COLUMN loyalty.segment_migration_latest.from_segment IS 'Segment at from_snapshot_id (NULL: not a customer then)';
COMMENT ON COLUMN loyalty.segment_migration_latest.to_segment IS 'Segment at to_snapshot_id (NULL: no longer a customer)';
COMMENT ON COLUMN loyalty.segment_migration_latest.customers IS 'Customers who moved from from_segment to to_segment (stayed when equal)';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_migration_latest'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
