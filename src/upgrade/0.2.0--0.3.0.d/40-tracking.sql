-- 0.2.0 -> 0.3.0, live RFM tracking (issue 11, item 12): tracked statements
-- append per-customer deltas to loyalty.customer_stats_delta instead of
-- updating loyalty.customer_stats; refresh_segments and fold_tracking fold
-- them in, customer_rfm adds the pending ones.
--
-- Data: loyalty.customer_stats keeps its columns and rows unchanged (it is
-- the folded state, which is what 0.2.0's triggers kept current), so every
-- customer's statistics survive as they are; the delta table starts empty
-- and the existing tracking triggers (same function) append to it from the
-- first statement after the update.  Item 2 needs no SQL change (C only).

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

COMMENT ON TABLE loyalty.customer_stats IS
	'Per-customer statistics of the tracked orders tables as of the last fold; pending changes are in loyalty.customer_stats_delta';

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

CREATE INDEX customer_stats_delta_customer ON loyalty.customer_stats_delta (customer_id);

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
	'Net change of orders and spend per UTC day made by one statement, for the days whose order count did not fall';
COMMENT ON COLUMN loyalty.customer_stats_delta.days_removed IS
	'Opposite of the net change per UTC day made by one statement, for the days whose order count fell (stored buckets never hold negative counts)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_stats_delta', '');

COMMENT ON FUNCTION loyalty._rfm_track_trigger() IS
	'Internal: statement trigger of a tracked orders table; appends the statement''s delta to loyalty.customer_stats_delta as the extension''s owner';

CREATE FUNCTION loyalty.fold_tracking(OUT folded_rows bigint, OUT customers bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'rfm_fold_tracking'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.fold_tracking() IS
	'Fold the pending tracked changes (loyalty.customer_stats_delta) into loyalty.customer_stats now, as refresh_segments does first';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.fold_tracking()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

-- Item 2: tracked customer and status columns must now be of a built-in
-- type (see track_orders).  Refuse the update, naming the table (42804,
-- "call loyalty.untrack_orders() before ..."), rather than let every later
-- write to a table tracked with another type fail.
SELECT loyalty._rfm_check_tracked();
