
/* ---------------------------------------------------------------------------
 * rfm.sql: per-customer RFM statistics and batch segmentation
 *
 * loyalty.rfm_stats(ordered_at, amount, as_of [, window_length]): aggregates
 * computing one customer's statistics (rules in src/rfm.h) in one pass,
 * parallel safe.  loyalty.rfm_segmentation(): scores and names every
 * customer of an orders table or view in one call (src/rfm_segmentation.c).
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.rfm_stats AS (
	last_order		timestamptz,	-- last order up to as_of (null: none)
	first_order		timestamptz,	-- first order (null: none)
	frequency		bigint,			-- orders in [as_of - window, as_of]
	monetary		numeric,		-- orders and refunds in that window
	orders_total	bigint,			-- orders up to as_of
	spend_total		numeric,		-- orders and refunds up to as_of
	recency_days	integer			-- whole days since last_order, -1: none
);

COMMENT ON TYPE loyalty.rfm_stats IS
	'One customer''s RFM statistics as of a time: result of the loyalty.rfm_stats aggregates';

/* functions: support of the rfm_stats aggregates */

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, numeric, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, numeric, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, numeric, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, numeric, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, bigint, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, bigint, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, bigint, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, bigint, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, integer, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, integer, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, integer, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, integer, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, double precision, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, double precision, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, double precision, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamptz, double precision, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, numeric, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, numeric, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, numeric, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, numeric, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, bigint, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, bigint, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, bigint, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, bigint, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, integer, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, integer, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, integer, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, integer, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, double precision, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, double precision, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, date, double precision, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, date, double precision, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, numeric, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, bigint, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, integer, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz, interval)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_transfn'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_trans(internal, timestamp, double precision, timestamptz, interval) IS
	'Internal: transition function of loyalty.rfm_stats';

CREATE FUNCTION loyalty._rfm_stats_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_combine'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_combine(internal, internal) IS
	'Internal: combine function of loyalty.rfm_stats (parallel aggregation)';

CREATE FUNCTION loyalty._rfm_stats_serial(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'rfm_stats_serialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_serial(internal) IS
	'Internal: serialize function of loyalty.rfm_stats (parallel aggregation)';

CREATE FUNCTION loyalty._rfm_stats_deserial(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'rfm_stats_deserialize'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_deserial(bytea, internal) IS
	'Internal: deserialize function of loyalty.rfm_stats (parallel aggregation)';

CREATE FUNCTION loyalty._rfm_stats_final(internal)
RETURNS loyalty.rfm_stats
AS 'MODULE_PATHNAME', 'rfm_stats_final'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._rfm_stats_final(internal) IS
	'Internal: final function of loyalty.rfm_stats';

/*
 * aggregates: rfm_stats(ordered_at, amount, as_of [, window_length]) for
 * ordered_at date, timestamp or timestamptz (a date is 00:00 and a timestamp
 * local time in the program time zone, loyalty.settings) and amount
 * numeric, bigint, integer or double precision (summed as double).  Without
 * window_length the window is 12 months.  Aggregates take no named or default
 * arguments in PostgreSQL, hence the overloads.
 */

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount numeric, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, numeric, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount numeric, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, numeric, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, numeric, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount bigint, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, bigint, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount bigint, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, bigint, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, bigint, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount integer, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, integer, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, integer, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount integer, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, integer, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, integer, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount double precision, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, double precision, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, double precision, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamptz, amount double precision, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamptz, double precision, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamptz, double precision, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount numeric, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, numeric, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount numeric, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, numeric, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, numeric, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount bigint, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, bigint, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount bigint, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, bigint, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, bigint, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount integer, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, integer, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, integer, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount integer, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, integer, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, integer, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount double precision, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, double precision, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, double precision, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at date, amount double precision, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(date, double precision, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(date, double precision, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount numeric, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, numeric, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount numeric, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, numeric, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; numeric amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, numeric, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount bigint, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, bigint, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount bigint, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, bigint, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; bigint amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, bigint, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount integer, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, integer, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, integer, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount integer, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, integer, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; integer amounts summed exactly';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, integer, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount double precision, as_of timestamptz) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, double precision, timestamptz) IS
	'One customer''s RFM statistics as of as_of over a window of 12 months; order times are local times of the program time zone; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, double precision, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.rfm_stats(ordered_at timestamp, amount double precision, as_of timestamptz, window_length interval) (
	SFUNC = loyalty._rfm_stats_trans,
	STYPE = internal,
	FINALFUNC = loyalty._rfm_stats_final,
	COMBINEFUNC = loyalty._rfm_stats_combine,
	SERIALFUNC = loyalty._rfm_stats_serial,
	DESERIALFUNC = loyalty._rfm_stats_deserial,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE loyalty.rfm_stats(timestamp, double precision, timestamptz, interval) IS
	'One customer''s RFM statistics as of as_of over a window of window_length; order times are local times of the program time zone; double precision amounts summed as double precision';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_stats(timestamp, double precision, timestamptz, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: batch segmentation */

/*
 * Scores and names every customer of an orders table or view: one scan run
 * with the caller's rights (SECURITY INVOKER: the caller must be able to read
 * the columns), one row per customer having a row dated up to as_of.
 * Quantile scoring by default; threshold arrays (bins - 1 ascending cut
 * points each) switch their dimension to fixed business thresholds.
 * frequency_unit: 'rows' counts order rows, 'orders' distinct values of
 * order_column (a line-level table), 'days' distinct days with an order in
 * the program time zone.  Rows without customer or time are ignored and
 * counted in a NOTICE.  A customer without an order in the window scores
 * 111 (rfm.h).  PARALLEL RESTRICTED: the relation may be a temporary table.
 */
CREATE FUNCTION loyalty.rfm_segmentation(
	orders regclass,
	customer_column name,
	ordered_at_column name,
	amount_column name,
	as_of timestamptz DEFAULT pg_catalog.now(),
	bins integer DEFAULT 5,
	window_length interval DEFAULT '12 months',
	monetary_mode text DEFAULT 'total',
	recency_thresholds integer[] DEFAULT NULL,
	frequency_thresholds bigint[] DEFAULT NULL,
	monetary_thresholds numeric[] DEFAULT NULL,
	frequency_unit text DEFAULT 'rows',
	order_column name DEFAULT NULL)
RETURNS TABLE (
	customer_id text,
	last_order timestamptz,
	recency_days integer,
	frequency bigint,
	monetary numeric,
	score loyalty.rfm_score,
	segment text)
AS 'MODULE_PATHNAME', 'rfm_segmentation'
LANGUAGE C STABLE PARALLEL RESTRICTED;

COMMENT ON FUNCTION loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[], text, name) IS
	'RFM score and segment of every customer of an orders table or view as of a time (quantiles, or thresholds per dimension; frequency counts rows, distinct orders or distinct days)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[], text, name)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
