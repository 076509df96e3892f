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


/*
 * 0.2.0 grants levels ON ROUTINE, not ON FUNCTION: a level may now include
 * procedures (loyalty.run_points_maintenance, loyalty.evaluate_tiers), which
 * GRANT ... ON FUNCTION refuses.
 */
CREATE OR REPLACE FUNCTION loyalty._apply_level(role_name name, level text)
RETURNS void
LANGUAGE plpgsql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
BEGIN
	EXECUTE format('GRANT USAGE ON SCHEMA loyalty TO %I', role_name);
	FOR r IN
		SELECT ar.object_type, ar.object_name, ar.privileges
		FROM loyalty.access_rule ar
		WHERE ar.level = 'all'
		   OR ar.level = _apply_level.level
		   OR _apply_level.level = 'admin'
		ORDER BY ar.object_type, ar.object_name
	LOOP
		EXECUTE format('GRANT %s ON %s %s TO %I',
					   r.privileges,
					   CASE r.object_type
						   WHEN 'function' THEN 'ROUTINE'
						   WHEN 'sequence' THEN 'SEQUENCE'
						   ELSE 'TABLE' END,
					   r.object_name, role_name);
	END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION loyalty.revoke_access(role regrole, level text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rname name := (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = role);
	r record;
BEGIN
	IF role IS NULL OR level IS NULL THEN
		RAISE EXCEPTION 'role and level must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF level NOT IN ('app', 'analyst', 'admin') THEN
		RAISE EXCEPTION 'invalid access level: "%"', level
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Valid levels are app, analyst and admin.';
	END IF;
	DELETE FROM loyalty.access_grant g
	WHERE g.role_name = rname AND g.level = revoke_access.level;

	FOR r IN
		SELECT ar.object_type, ar.object_name, ar.privileges
		FROM loyalty.access_rule ar
		WHERE ar.level = 'all'
		   OR ar.level = revoke_access.level
		   OR revoke_access.level = 'admin'
	LOOP
		EXECUTE format('REVOKE %s ON %s %s FROM %I',
					   r.privileges,
					   CASE r.object_type
						   WHEN 'function' THEN 'ROUTINE'
						   WHEN 'sequence' THEN 'SEQUENCE'
						   ELSE 'TABLE' END,
					   r.object_name, rname);
	END LOOP;
	EXECUTE format('REVOKE USAGE ON SCHEMA loyalty FROM %I', rname);

	FOR r IN
		SELECT g.level FROM loyalty.access_grant g WHERE g.role_name = rname
	LOOP
		PERFORM loyalty._apply_level(rname, r.level);
	END LOOP;
END;
$$;

/* ---------------------------------------------------------------------------
 * rfm_score.sql: the loyalty.rfm_score type
 *
 * Three scores 1..9 (recency, frequency, monetary), text form '543'.  Stored
 * pass-by-value like int2 as r * 100 + f * 10 + m, so the integer order is
 * the lexicographic order of (r, f, m): comparison, sorting and hashing bind
 * PostgreSQL's own int2 functions (as contrib/isn binds int8's for ean13).
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.rfm_score;

CREATE FUNCTION loyalty.rfm_score_in(cstring)
RETURNS loyalty.rfm_score
AS 'MODULE_PATHNAME', 'rfm_score_in'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.rfm_score_in(cstring) IS
	'Text input of rfm_score: three digits 1 to 9, optional surrounding whitespace';

CREATE FUNCTION loyalty.rfm_score_out(loyalty.rfm_score)
RETURNS cstring
AS 'MODULE_PATHNAME', 'rfm_score_out'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.rfm_score_out(loyalty.rfm_score) IS
	'Text output of rfm_score: three digits, e.g. 543';

CREATE FUNCTION loyalty.rfm_score_recv(internal)
RETURNS loyalty.rfm_score
AS 'MODULE_PATHNAME', 'rfm_score_recv'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.rfm_score_recv(internal) IS
	'Binary input of rfm_score: an int2 r*100+f*10+m, validated like text input';

CREATE FUNCTION loyalty.rfm_score_send(loyalty.rfm_score)
RETURNS bytea
AS 'MODULE_PATHNAME', 'rfm_score_send'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.rfm_score_send(loyalty.rfm_score) IS
	'Binary output of rfm_score: an int2 r*100+f*10+m';

CREATE TYPE loyalty.rfm_score (
	INPUT = loyalty.rfm_score_in,
	OUTPUT = loyalty.rfm_score_out,
	RECEIVE = loyalty.rfm_score_recv,
	SEND = loyalty.rfm_score_send,
	INTERNALLENGTH = 2,
	PASSEDBYVALUE,
	ALIGNMENT = int2,
	STORAGE = plain
);

COMMENT ON TYPE loyalty.rfm_score IS
	'RFM score: recency, frequency and monetary scores 1 to 9 (5 = best on the default scale), text form ''543''';

/* registered only now: regprocedure cannot name a shell type */
SELECT loyalty._register_function('all', 'loyalty.rfm_score_in(cstring)');
SELECT loyalty._register_function('all', 'loyalty.rfm_score_out(loyalty.rfm_score)');
SELECT loyalty._register_function('all', 'loyalty.rfm_score_recv(internal)');
SELECT loyalty._register_function('all', 'loyalty.rfm_score_send(loyalty.rfm_score)');

/* functions */

CREATE FUNCTION loyalty.recency(loyalty.rfm_score)
RETURNS integer
AS 'MODULE_PATHNAME', 'rfm_score_recency'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.recency(loyalty.rfm_score) IS
	'Recency part of an rfm_score (first digit, 1 to 9)';
SELECT loyalty._register_function('all', 'loyalty.recency(loyalty.rfm_score)');

CREATE FUNCTION loyalty.frequency(loyalty.rfm_score)
RETURNS integer
AS 'MODULE_PATHNAME', 'rfm_score_frequency'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.frequency(loyalty.rfm_score) IS
	'Frequency part of an rfm_score (second digit, 1 to 9)';
SELECT loyalty._register_function('all', 'loyalty.frequency(loyalty.rfm_score)');

CREATE FUNCTION loyalty.monetary(loyalty.rfm_score)
RETURNS integer
AS 'MODULE_PATHNAME', 'rfm_score_monetary'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.monetary(loyalty.rfm_score) IS
	'Monetary part of an rfm_score (third digit, 1 to 9)';
SELECT loyalty._register_function('all', 'loyalty.monetary(loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score(recency integer, frequency integer, monetary integer)
RETURNS loyalty.rfm_score
AS 'MODULE_PATHNAME', 'rfm_score_make'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.rfm_score(integer, integer, integer) IS
	'Build an rfm_score from its three parts, each 1 to 9 (22003 otherwise)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score(integer, integer, integer)');

/*
 * Comparison, sort support and hashing: int2's own functions, valid because
 * rfm_score is binary-identical to int2 and ordered the same way.
 */
CREATE FUNCTION loyalty.rfm_score_eq(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2eq' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_eq(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score = operator';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_eq(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_ne(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2ne' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_ne(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score <> operator';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_ne(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_lt(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2lt' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_lt(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score < operator (order of recency, then frequency, then monetary)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_lt(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_le(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2le' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_le(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score <= operator';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_le(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_gt(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2gt' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_gt(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score > operator';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_gt(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_ge(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2ge' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_ge(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score >= operator';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_ge(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score)
RETURNS integer AS 'btint2cmp' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score) IS
	'Three-way comparison of rfm_scores (btree support function)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_sortsupport(internal)
RETURNS void AS 'btint2sortsupport' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.rfm_score_sortsupport(internal) IS
	'Sort support for rfm_score (btree support function 2)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_sortsupport(internal)');

CREATE FUNCTION loyalty.rfm_score_hash(loyalty.rfm_score)
RETURNS integer AS 'hashint2' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_hash(loyalty.rfm_score) IS
	'Hash of an rfm_score (hash support function 1)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_hash(loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint)
RETURNS bigint AS 'hashint2extended' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint) IS
	'Seeded 64-bit hash of an rfm_score (hash support function 2, used by hash partitioning)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint)');

CREATE FUNCTION loyalty.rfm_score_smaller(loyalty.rfm_score, loyalty.rfm_score)
RETURNS loyalty.rfm_score AS 'int2smaller' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.rfm_score_smaller(loyalty.rfm_score, loyalty.rfm_score) IS
	'The smaller of two rfm_scores (state function of min)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_smaller(loyalty.rfm_score, loyalty.rfm_score)');

CREATE FUNCTION loyalty.rfm_score_larger(loyalty.rfm_score, loyalty.rfm_score)
RETURNS loyalty.rfm_score AS 'int2larger' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.rfm_score_larger(loyalty.rfm_score, loyalty.rfm_score) IS
	'The larger of two rfm_scores (state function of max)';
SELECT loyalty._register_function('all', 'loyalty.rfm_score_larger(loyalty.rfm_score, loyalty.rfm_score)');

/* operators */

CREATE OPERATOR loyalty.= (
	LEFTARG = loyalty.rfm_score, RIGHTARG = loyalty.rfm_score,
	FUNCTION = loyalty.rfm_score_eq,
	COMMUTATOR = OPERATOR(loyalty.=), NEGATOR = OPERATOR(loyalty.<>),
	RESTRICT = eqsel, JOIN = eqjoinsel, HASHES, MERGES
);
COMMENT ON OPERATOR loyalty.= (loyalty.rfm_score, loyalty.rfm_score) IS 'equal';

CREATE OPERATOR loyalty.<> (
	LEFTARG = loyalty.rfm_score, RIGHTARG = loyalty.rfm_score,
	FUNCTION = loyalty.rfm_score_ne,
	COMMUTATOR = OPERATOR(loyalty.<>), NEGATOR = OPERATOR(loyalty.=),
	RESTRICT = neqsel, JOIN = neqjoinsel
);
COMMENT ON OPERATOR loyalty.<> (loyalty.rfm_score, loyalty.rfm_score) IS 'not equal';

CREATE OPERATOR loyalty.< (
	LEFTARG = loyalty.rfm_score, RIGHTARG = loyalty.rfm_score,
	FUNCTION = loyalty.rfm_score_lt,
	COMMUTATOR = OPERATOR(loyalty.>), NEGATOR = OPERATOR(loyalty.>=),
	RESTRICT = scalarltsel, JOIN = scalarltjoinsel
);
COMMENT ON OPERATOR loyalty.< (loyalty.rfm_score, loyalty.rfm_score) IS
	'less than (by recency, then frequency, then monetary)';

CREATE OPERATOR loyalty.<= (
	LEFTARG = loyalty.rfm_score, RIGHTARG = loyalty.rfm_score,
	FUNCTION = loyalty.rfm_score_le,
	COMMUTATOR = OPERATOR(loyalty.>=), NEGATOR = OPERATOR(loyalty.>),
	RESTRICT = scalarlesel, JOIN = scalarlejoinsel
);
COMMENT ON OPERATOR loyalty.<= (loyalty.rfm_score, loyalty.rfm_score) IS
	'less than or equal';

CREATE OPERATOR loyalty.> (
	LEFTARG = loyalty.rfm_score, RIGHTARG = loyalty.rfm_score,
	FUNCTION = loyalty.rfm_score_gt,
	COMMUTATOR = OPERATOR(loyalty.<), NEGATOR = OPERATOR(loyalty.<=),
	RESTRICT = scalargtsel, JOIN = scalargtjoinsel
);
COMMENT ON OPERATOR loyalty.> (loyalty.rfm_score, loyalty.rfm_score) IS
	'greater than (by recency, then frequency, then monetary)';

CREATE OPERATOR loyalty.>= (
	LEFTARG = loyalty.rfm_score, RIGHTARG = loyalty.rfm_score,
	FUNCTION = loyalty.rfm_score_ge,
	COMMUTATOR = OPERATOR(loyalty.<=), NEGATOR = OPERATOR(loyalty.<),
	RESTRICT = scalargesel, JOIN = scalargejoinsel
);
COMMENT ON OPERATOR loyalty.>= (loyalty.rfm_score, loyalty.rfm_score) IS
	'greater than or equal';

/* aggregates (after the operators: SORTOP lets min/max use an index) */

CREATE AGGREGATE loyalty.min(loyalty.rfm_score) (
	SFUNC = loyalty.rfm_score_smaller,
	STYPE = loyalty.rfm_score,
	COMBINEFUNC = loyalty.rfm_score_smaller,
	SORTOP = OPERATOR(loyalty.<),
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.min(loyalty.rfm_score) IS
	'Lowest rfm_score (by recency, then frequency, then monetary)';
SELECT loyalty._register_function('all', 'loyalty.min(loyalty.rfm_score)');

CREATE AGGREGATE loyalty.max(loyalty.rfm_score) (
	SFUNC = loyalty.rfm_score_larger,
	STYPE = loyalty.rfm_score,
	COMBINEFUNC = loyalty.rfm_score_larger,
	SORTOP = OPERATOR(loyalty.>),
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.max(loyalty.rfm_score) IS
	'Highest rfm_score (by recency, then frequency, then monetary)';
SELECT loyalty._register_function('all', 'loyalty.max(loyalty.rfm_score)');

/* operator classes */

CREATE OPERATOR CLASS loyalty.rfm_score_ops
DEFAULT FOR TYPE loyalty.rfm_score USING btree AS
	OPERATOR 1 loyalty.<,
	OPERATOR 2 loyalty.<=,
	OPERATOR 3 loyalty.=,
	OPERATOR 4 loyalty.>=,
	OPERATOR 5 loyalty.>,
	FUNCTION 1 loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score),
	FUNCTION 2 loyalty.rfm_score_sortsupport(internal);

COMMENT ON OPERATOR CLASS loyalty.rfm_score_ops USING btree IS
	'Default btree operator class for rfm_score: sorts by recency, then frequency, then monetary';

CREATE OPERATOR CLASS loyalty.rfm_score_hash_ops
DEFAULT FOR TYPE loyalty.rfm_score USING hash AS
	OPERATOR 1 loyalty.=,
	FUNCTION 1 loyalty.rfm_score_hash(loyalty.rfm_score),
	FUNCTION 2 loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint);

COMMENT ON OPERATOR CLASS loyalty.rfm_score_hash_ops USING hash IS
	'Default hash operator class for rfm_score: hash joins, hash aggregation, hash indexes and partitioning';

COMMENT ON OPERATOR FAMILY loyalty.rfm_score_ops USING btree IS
	'Btree operator family of rfm_score';
COMMENT ON OPERATOR FAMILY loyalty.rfm_score_hash_ops USING hash IS
	'Hash operator family of rfm_score';

/* ---------------------------------------------------------------------------
 * segment.sql: named RFM segments
 *
 * The map from scores to segments is user configuration: loyalty.segment
 * (the names) and loyalty.segment_rule (boxes of scores on the 1..5 scale).
 * Every score 111..555 must fall in exactly one rule; a deferred constraint
 * trigger checks it at commit, so a re-partition may take several
 * statements.  loyalty.segment_of() answers from a per-backend cache of the
 * map (segment.c), dropped in every backend when the map changes.
 *
 * Default map and dump/restore: the rows shipped here carry builtin = true.
 * The first edit of either table (any INSERT, UPDATE or DELETE) turns every
 * row of both tables into the user's (builtin = false): the map is then the
 * user's as a whole.  pg_dump saves only rows with builtin = false, so an
 * untouched map is not dumped (CREATE EXTENSION recreates it on restore) and
 * an edited map is dumped whole.  Restoring it inserts rows that carry
 * builtin = false explicitly into the freshly created default map; the first
 * such row replaces the default map instead of adding to it.  Dump/restore
 * thus neither loses edits (deleted or renamed defaults included) nor
 * duplicates defaults.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.segment (
	name		text PRIMARY KEY
		CHECK (name = btrim(name) AND name <> ''),
	display_order integer NOT NULL UNIQUE,
	description text,
	builtin		boolean NOT NULL
);

COMMENT ON TABLE loyalty.segment IS
	'RFM segments (Champions, Lost, ...): the names loyalty.segment_rule maps scores to';
COMMENT ON COLUMN loyalty.segment.name IS 'Segment name, as segment_of() returns it';
COMMENT ON COLUMN loyalty.segment.display_order IS 'Order in reports (1 first)';
COMMENT ON COLUMN loyalty.segment.description IS 'What the segment means and what to offer it';
COMMENT ON COLUMN loyalty.segment.builtin IS
	'True while the map is the untouched default shipped with loyalty; the first edit of the map sets it to false on every row. Leave it out of INSERTs.';

CREATE TABLE loyalty.segment_rule (
	segment		text NOT NULL
		REFERENCES loyalty.segment (name) ON UPDATE CASCADE,
	r_min		smallint NOT NULL CHECK (r_min BETWEEN 1 AND 5),
	r_max		smallint NOT NULL CHECK (r_max BETWEEN 1 AND 5),
	f_min		smallint NOT NULL CHECK (f_min BETWEEN 1 AND 5),
	f_max		smallint NOT NULL CHECK (f_max BETWEEN 1 AND 5),
	m_min		smallint NOT NULL CHECK (m_min BETWEEN 1 AND 5),
	m_max		smallint NOT NULL CHECK (m_max BETWEEN 1 AND 5),
	builtin		boolean NOT NULL,
	CHECK (r_min <= r_max),
	CHECK (f_min <= f_max),
	CHECK (m_min <= m_max)
);

CREATE INDEX segment_rule_segment ON loyalty.segment_rule (segment);

COMMENT ON TABLE loyalty.segment_rule IS
	'Segment map on the 1..5 scale: scores with r_min <= R <= r_max, f_min <= F <= f_max and m_min <= M <= m_max belong to the segment; every score 111..555 in exactly one rule (checked at commit)';
COMMENT ON COLUMN loyalty.segment_rule.segment IS 'Segment of the scores in this box';
COMMENT ON COLUMN loyalty.segment_rule.builtin IS
	'True while the map is the untouched default shipped with loyalty; the first edit of the map sets it to false on every row. Leave it out of INSERTs.';

/* only the user's rows: an untouched default map is recreated by CREATE EXTENSION */
SELECT pg_catalog.pg_extension_config_dump('loyalty.segment', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('loyalty.segment_rule', 'WHERE NOT builtin');

/* functions */

CREATE FUNCTION loyalty.segment_of(loyalty.rfm_score)
RETURNS text
AS 'MODULE_PATHNAME', 'segment_of'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

/*
 * STABLE: reads the map table (through the cache).  PARALLEL SAFE: a worker
 * reads the map with one read-only SPI query under the query's snapshot,
 * which parallel workers share with the leader, and keeps it only for that
 * transaction; nothing is written and no new snapshot is taken.
 */
COMMENT ON FUNCTION loyalty.segment_of(loyalty.rfm_score) IS
	'Segment of a score on the 1..5 scale, from the map in loyalty.segment_rule (cached per session)';
SELECT loyalty._register_function('all', 'loyalty.segment_of(loyalty.rfm_score)');

CREATE FUNCTION loyalty.segment_of(score loyalty.rfm_score, bins integer)
RETURNS text
AS 'MODULE_PATHNAME', 'segment_of_bins'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.segment_of(loyalty.rfm_score, integer) IS
	'Segment of a score of 1..bins (bins 2..9): each part is rescaled to 1..5 as round(1 + (s - 1) * 4 / (bins - 1)), halves up';
SELECT loyalty._register_function('all', 'loyalty.segment_of(loyalty.rfm_score, integer)');

CREATE FUNCTION loyalty._segment_rule_check()
RETURNS trigger
AS 'MODULE_PATHNAME', 'segment_rule_check'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._segment_rule_check() IS
	'Internal: deferred check that every score 111..555 matches exactly one segment rule';

CREATE FUNCTION loyalty._segment_map_invalidate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'segment_map_invalidate'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._segment_map_invalidate() IS
	'Internal: drop the cached segment map in every session when the map changes';

/*
 * Serialise edits of the map, so that the check at commit judges the map
 * that is committed.  segment_of() readers are not blocked.
 */
CREATE FUNCTION loyalty._segment_map_lock()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	LOCK TABLE loyalty.segment_rule IN SHARE ROW EXCLUSIVE MODE;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_lock() IS
	'Internal: serialise edits of the segment map';

/*
 * TRUNCATE fires no row triggers, so it would bypass the coverage check;
 * refuse it (except from our own trigger, which replaces the default map
 * during a restore).
 */
CREATE FUNCTION loyalty._segment_map_no_truncate()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	RAISE EXCEPTION 'cannot truncate %.%', TG_TABLE_SCHEMA, TG_TABLE_NAME
		USING ERRCODE = 'feature_not_supported',
			  DETAIL = 'TRUNCATE would bypass the check that every score has exactly one segment.',
			  HINT = 'Use DELETE, and insert the new map in the same transaction.';
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_no_truncate() IS
	'Internal: refuse TRUNCATE of the segment map tables';

/*
 * Row trigger (BEFORE INSERT OR UPDATE) on both map tables: maintain
 * builtin (see the top of this file).  A row inserted with builtin left out
 * is the user's; one inserted with builtin = false explicitly while the
 * default map is untouched belongs to a saved map being loaded (pg_restore),
 * which replaces the default map.
 */
CREATE FUNCTION loyalty._segment_map_row()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.builtin THEN
		IF TG_OP = 'UPDATE' AND OLD.builtin THEN
			NEW.builtin := false;	-- editing a default row makes the map the user's
			RETURN NEW;
		END IF;
		RAISE EXCEPTION 'builtin rows of %.% are created only by the loyalty extension', TG_TABLE_SCHEMA, TG_TABLE_NAME
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave the builtin column out of INSERT and UPDATE.';
	END IF;
	IF TG_OP = 'UPDATE' OR NEW.builtin IS NULL THEN
		NEW.builtin := false;
		RETURN NEW;
	END IF;

	-- builtin = false given explicitly: a saved map is being loaded
	IF EXISTS (SELECT 1 FROM loyalty.segment WHERE builtin)
	   OR EXISTS (SELECT 1 FROM loyalty.segment_rule WHERE builtin) THEN
		IF TG_TABLE_NAME = 'segment' THEN
			-- segments are loaded first (segment_rule references them):
			-- drop the default map; its rules go without a coverage check,
			-- the loaded rules that follow are checked at their commit
			TRUNCATE loyalty.segment_rule;
			DELETE FROM loyalty.segment WHERE builtin;
		ELSE
			DELETE FROM loyalty.segment_rule WHERE builtin;
			UPDATE loyalty.segment SET builtin = false WHERE builtin;
		END IF;
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_row() IS
	'Internal: keep the builtin flag of the segment map right, and let a restored map replace the default one';

/*
 * Row trigger (AFTER INSERT, UPDATE or DELETE) on both map tables: once the
 * user has changed a row of the map, no row of either table is builtin, so
 * pg_dump saves the whole map.  Row-level because statement triggers also
 * fire for statements that change nothing, such as the empty COPY a restore
 * of an untouched map runs.
 */
CREATE FUNCTION loyalty._segment_map_take_over()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF EXISTS (SELECT 1 FROM loyalty.segment_rule WHERE builtin) THEN
		UPDATE loyalty.segment_rule SET builtin = false WHERE builtin;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.segment WHERE builtin) THEN
		UPDATE loyalty.segment SET builtin = false WHERE builtin;
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_take_over() IS
	'Internal: after the first edit of the segment map, every row of it is the user''s';

/* triggers */

CREATE TRIGGER segment_lock
	BEFORE INSERT OR UPDATE OR DELETE ON loyalty.segment
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._segment_map_lock();
CREATE TRIGGER segment_no_truncate
	BEFORE TRUNCATE ON loyalty.segment
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._segment_map_no_truncate();
CREATE TRIGGER segment_row
	BEFORE INSERT OR UPDATE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_map_row();
CREATE TRIGGER segment_take_over
	AFTER INSERT OR UPDATE OR DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_map_take_over();
CREATE TRIGGER segment_invalidate
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.segment
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._segment_map_invalidate();

CREATE TRIGGER segment_rule_lock
	BEFORE INSERT OR UPDATE OR DELETE ON loyalty.segment_rule
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._segment_map_lock();
CREATE TRIGGER segment_rule_no_truncate
	BEFORE TRUNCATE ON loyalty.segment_rule
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._segment_map_no_truncate();
CREATE TRIGGER segment_rule_row
	BEFORE INSERT OR UPDATE ON loyalty.segment_rule
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_map_row();
CREATE TRIGGER segment_rule_take_over
	AFTER INSERT OR UPDATE OR DELETE ON loyalty.segment_rule
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_map_take_over();
CREATE TRIGGER segment_rule_invalidate
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.segment_rule
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._segment_map_invalidate();
CREATE CONSTRAINT TRIGGER segment_rule_coverage
	AFTER INSERT OR UPDATE OR DELETE ON loyalty.segment_rule
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_rule_check();

COMMENT ON TRIGGER segment_rule_coverage ON loyalty.segment_rule IS
	'At commit: every score 111..555 matches exactly one rule (SQLSTATE 23514 otherwise)';

/*
 * The default map over recency and frequency (monetary 1..5 throughout),
 * with recency as rows and frequency as columns:
 *
 *	R5 | New               Potential Loyalist  Potential Loyalist  Champions   Champions
 *	R4 | Promising         Potential Loyalist  Potential Loyalist  Loyal       Champions
 *	R3 | About to Sleep    About to Sleep      Need Attention      Loyal       Loyal
 *	R2 | Hibernating       Hibernating         At Risk             At Risk     Cannot Lose Them
 *	R1 | Lost              Lost                At Risk             At Risk     Cannot Lose Them
 *	     F1                F2                  F3                  F4          F5
 *
 * loyalty.reset_segment_map() (re)installs it; the install script calls it.
 * The rows it writes are the only builtin ones, so it runs with
 * session_replication_role = replica, which silences the triggers that refuse
 * builtin rows (the invalidation triggers fire ALWAYS).
 */
CREATE FUNCTION loyalty.reset_segment_map()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica
AS $$
BEGIN
	LOCK TABLE loyalty.segment_rule IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM loyalty.segment_rule;
	DELETE FROM loyalty.segment;
	INSERT INTO loyalty.segment (name, display_order, description, builtin) VALUES
		('Champions', 1, 'Bought recently and buy often: reward them, they become advocates and early adopters', true),
		('Loyal', 2, 'Buy often and fairly recently: upsell, ask for reviews, offer the loyalty programme', true),
		('Potential Loyalist', 3, 'Recent customers with a few orders: offer membership and recommendations', true),
		('New', 4, 'First orders very recently: onboard them and build the relationship early', true),
		('Promising', 5, 'Recent buyers with a single order or few: build awareness, offer a second purchase', true),
		('Need Attention', 6, 'Middling recency and frequency: limited-time offers based on past purchases', true),
		('About to Sleep', 7, 'Fading recency and few orders: reactivate with popular products and discounts', true),
		('At Risk', 8, 'Used to buy fairly often but not for a long time: personalised win-back offers', true),
		('Cannot Lose Them', 9, 'Were the most frequent buyers but have not returned for long: win them back now', true),
		('Hibernating', 10, 'Long since the last order and few orders: low-cost generic offers', true),
		('Lost', 11, 'Longest since the last order and fewest orders: last revival campaign or let go', true);

	INSERT INTO loyalty.segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max, builtin) VALUES
		('Champions',          4, 5, 5, 5, 1, 5, true),
		('Champions',          5, 5, 4, 4, 1, 5, true),
		('Loyal',              3, 3, 4, 5, 1, 5, true),
		('Loyal',              4, 4, 4, 4, 1, 5, true),
		('Potential Loyalist', 4, 5, 2, 3, 1, 5, true),
		('New',                5, 5, 1, 1, 1, 5, true),
		('Promising',          4, 4, 1, 1, 1, 5, true),
		('Need Attention',     3, 3, 3, 3, 1, 5, true),
		('About to Sleep',     3, 3, 1, 2, 1, 5, true),
		('At Risk',            1, 2, 3, 4, 1, 5, true),
		('Cannot Lose Them',   1, 2, 5, 5, 1, 5, true),
		('Hibernating',        2, 2, 1, 2, 1, 5, true),
		('Lost',               1, 1, 1, 2, 1, 5, true);
END;
$$;

COMMENT ON FUNCTION loyalty.reset_segment_map() IS
	'Replace the segment map with the default one shipped with loyalty (builtin again, so upgrades may refresh it)';
SELECT loyalty._register_function('admin', 'loyalty.reset_segment_map()');

ALTER TABLE loyalty.segment ENABLE ALWAYS TRIGGER segment_invalidate;
ALTER TABLE loyalty.segment_rule ENABLE ALWAYS TRIGGER segment_rule_invalidate;

SELECT loyalty.reset_segment_map();

/* views */

CREATE VIEW loyalty.segment_map AS
SELECT loyalty.rfm_score(r.r, f.f, m.m) AS score,
	   r.r AS recency, f.f AS frequency, m.m AS monetary,
	   sr.segment, s.display_order
FROM pg_catalog.generate_series(1, 5) AS r(r)
CROSS JOIN pg_catalog.generate_series(1, 5) AS f(f)
CROSS JOIN pg_catalog.generate_series(1, 5) AS m(m)
LEFT JOIN loyalty.segment_rule sr
	   ON r.r BETWEEN sr.r_min AND sr.r_max
	  AND f.f BETWEEN sr.f_min AND sr.f_max
	  AND m.m BETWEEN sr.m_min AND sr.m_max
LEFT JOIN loyalty.segment s ON s.name = sr.segment;

COMMENT ON VIEW loyalty.segment_map IS
	'The segment of each of the 125 scores 111..555 (for BI tools and documentation)';

/* registrations */

SELECT loyalty._register_relation('all', 'loyalty.segment', 'SELECT');
SELECT loyalty._register_relation('admin', 'loyalty.segment', 'SELECT, INSERT, UPDATE, DELETE');
SELECT loyalty._register_relation('all', 'loyalty.segment_rule', 'SELECT');
SELECT loyalty._register_relation('admin', 'loyalty.segment_rule', 'SELECT, INSERT, UPDATE, DELETE');
SELECT loyalty._register_relation('analyst', 'loyalty.segment_map', 'SELECT');

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
 * ordered_at date or timestamptz (timestamp converts implicitly) and amount
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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, numeric, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, numeric, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, bigint, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, bigint, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, integer, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, integer, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, double precision, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(timestamptz, double precision, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, numeric, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, numeric, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, bigint, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, bigint, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, integer, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, integer, timestamptz, interval)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, double precision, timestamptz)');

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

SELECT loyalty._register_function('all', 'loyalty.rfm_stats(date, double precision, timestamptz, interval)');

/* functions: batch segmentation */

/*
 * Scores and names every customer of an orders table or view: one scan run
 * with the caller's rights (SECURITY INVOKER: the caller must be able to read
 * the three columns), one row per customer having a row dated up to as_of.
 * Quantile scoring by default; threshold arrays (bins - 1 ascending cut
 * points each) switch their dimension to fixed business thresholds.
 * PARALLEL RESTRICTED: the relation may be a temporary table.
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
	monetary_thresholds numeric[] DEFAULT NULL)
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

COMMENT ON FUNCTION loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[]) IS
	'RFM score and segment of every customer of an orders table or view as of a time (quantiles, or thresholds per dimension)';

SELECT loyalty._register_function('all', 'loyalty.rfm_segmentation(regclass, name, name, name, timestamptz, integer, interval, text, integer[], bigint[], numeric[])');
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

CREATE FUNCTION loyalty.day_buckets_entries(buckets loyalty.day_buckets)
RETURNS TABLE (day date, orders integer, spend numeric)
AS 'MODULE_PATHNAME', 'day_buckets_entries'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_entries(loyalty.day_buckets) IS
	'The buckets of a day_buckets value as rows: UTC day, orders and spend of that day';
SELECT loyalty._register_function('all', 'loyalty.day_buckets_entries(loyalty.day_buckets)');

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
	days			loyalty.day_buckets,
	score			loyalty.rfm_score,
	segment			text,
	since			timestamptz
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
COMMENT ON COLUMN loyalty.customer_stats.score IS
	'RFM score at the last refresh_segments (NULL: not scored yet)';
COMMENT ON COLUMN loyalty.customer_stats.segment IS
	'Segment at the last refresh_segments';
COMMENT ON COLUMN loyalty.customer_stats.since IS
	'as_of of the refresh that put the customer into this segment';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_stats', '');

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
	'Internal: statement trigger of a tracked orders table; applies the statement''s delta to loyalty.customer_stats as the extension''s owner';

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
	'Frequency and monetary count the orders of [as_of - scoring_window, as_of], whole UTC days';
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
SELECT loyalty._register_relation('admin', 'loyalty.rfm_config', 'SELECT, INSERT, UPDATE');

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
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'the RFM configuration row cannot be deleted'
			USING ERRCODE = 'restrict_violation',
				  HINT = 'UPDATE loyalty.rfm_config to change it.';
	END IF;
	IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM loyalty.rfm_config) THEN
		UPDATE loyalty.rfm_config c
		SET bins = NEW.bins, scoring_window = NEW.scoring_window,
			monetary = NEW.monetary, method = NEW.method,
			recency_thresholds = NEW.recency_thresholds,
			frequency_thresholds = NEW.frequency_thresholds,
			monetary_thresholds = NEW.monetary_thresholds,
			bucket_retention = NEW.bucket_retention,
			inactive_after = NEW.inactive_after,
			updated_at = NEW.updated_at;
		RETURN NULL;
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

CREATE FUNCTION loyalty.refresh_segments(
	as_of timestamptz DEFAULT pg_catalog.now(),
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
	'Rescore every tracked customer from the live statistics (never reading orders) and record a snapshot';
SELECT loyalty._register_function('admin', 'loyalty.refresh_segments(timestamptz)');

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
SELECT loyalty._register_function('app', 'loyalty.customer_rfm(text, timestamptz)');

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
SELECT loyalty._register_function('analyst', 'loyalty.segment_migration_by_id(bigint, bigint)');

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
SELECT loyalty._register_function('analyst', 'loyalty.segment_migration(timestamptz, timestamptz)');

/* views */

CREATE VIEW loyalty.customer_segment AS
SELECT s.customer_id, s.score, s.segment, s.since,
	   (SELECT p.taken_at FROM loyalty.segment_snapshot p
		ORDER BY p.snapshot_id DESC LIMIT 1) AS refreshed_at
FROM loyalty.customer_stats s
WHERE s.score IS NOT NULL;

COMMENT ON VIEW loyalty.customer_segment IS
	'Every scored customer''s score and segment at the last refresh, and since when they are in it';
SELECT loyalty._register_relation('analyst', 'loyalty.customer_segment');

CREATE VIEW loyalty.segment_snapshots AS
SELECT snapshot_id, as_of, taken_at, customers, segment_changes, score_changes,
	   left_customers, bins, scoring_window, monetary, method, took_ms
FROM loyalty.segment_snapshot;

COMMENT ON VIEW loyalty.segment_snapshots IS
	'Snapshots taken by refresh_segments: as_of, size and changes';
SELECT loyalty._register_relation('analyst', 'loyalty.segment_snapshots');

CREATE VIEW loyalty.segment_trend AS
SELECT p.snapshot_id, p.as_of, ss.segment, g.display_order, ss.customers, ss.revenue
FROM loyalty.segment_snapshot p
JOIN loyalty.segment_summary ss ON ss.snapshot_id = p.snapshot_id
LEFT JOIN loyalty.segment g ON g.name = ss.segment;

COMMENT ON VIEW loyalty.segment_trend IS
	'Customers and revenue of every segment at every snapshot';
SELECT loyalty._register_relation('analyst', 'loyalty.segment_trend');

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
SELECT loyalty._register_relation('analyst', 'loyalty.segment_overview');

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
SELECT loyalty._register_relation('analyst', 'loyalty.segment_recency');

CREATE VIEW loyalty.segment_inactivity AS
SELECT p.snapshot_id, p.as_of, ss.segment, g.display_order, ss.customers,
	   ss.inactive AS inactive_customers,
	   round(ss.inactive::numeric / NULLIF(ss.customers, 0), 4) AS inactive_share
FROM (SELECT * FROM loyalty.segment_snapshot ORDER BY snapshot_id DESC LIMIT 1) p
JOIN loyalty.segment_summary ss ON ss.snapshot_id = p.snapshot_id
LEFT JOIN loyalty.segment g ON g.name = ss.segment;

COMMENT ON VIEW loyalty.segment_inactivity IS
	'Share of inactive customers (no order for rfm_config.inactive_after) of each segment at the last refresh';
SELECT loyalty._register_relation('analyst', 'loyalty.segment_inactivity');

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
SELECT loyalty._register_relation('analyst', 'loyalty.segment_migration_latest');
/* ---------------------------------------------------------------------------
 * coupon_code.sql: the coupon_code type, code utilities, random_codes()
 *
 * Generated codes: Crockford base32 (0-9, A-Z without I, L, O, U) with three
 * check characters (a Reed-Solomon code over GF(32): any one, two or three
 * wrong characters and any transposition are caught, a missing or extra
 * character nearly always).  Vanity codes: any letters and digits, no
 * check.  Input upper-cases, drops separators ('-', '_', '.', spaces) and
 * reads O as 0, I and L as 1; a mistyped generated code is rejected at
 * input (22P02).  See src/coupon_code.h.
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.coupon_code;

CREATE FUNCTION loyalty.coupon_code_in(cstring)
RETURNS loyalty.coupon_code
AS 'MODULE_PATHNAME', 'coupon_code_in'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_in(cstring) IS
	'Input function of coupon_code: normalises and rejects a mistyped generated code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_in(cstring)');

CREATE FUNCTION loyalty.coupon_code_out(loyalty.coupon_code)
RETURNS cstring
AS 'MODULE_PATHNAME', 'coupon_code_out'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_out(loyalty.coupon_code) IS
	'Output function of coupon_code: the display text';

CREATE FUNCTION loyalty.coupon_code_recv(internal)
RETURNS loyalty.coupon_code
AS 'MODULE_PATHNAME', 'coupon_code_recv'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_recv(internal) IS
	'Binary input function of coupon_code: validates like the text input';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_recv(internal)');

CREATE FUNCTION loyalty.coupon_code_send(loyalty.coupon_code)
RETURNS bytea
AS 'MODULE_PATHNAME', 'coupon_code_send'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_send(loyalty.coupon_code) IS
	'Binary output function of coupon_code';

CREATE TYPE loyalty.coupon_code (
	INPUT = loyalty.coupon_code_in,
	OUTPUT = loyalty.coupon_code_out,
	RECEIVE = loyalty.coupon_code_recv,
	SEND = loyalty.coupon_code_send,
	INTERNALLENGTH = VARIABLE,
	ALIGNMENT = int4,
	STORAGE = extended
);

COMMENT ON TYPE loyalty.coupon_code IS
	'Coupon code: generated (base32 with three check characters) or vanity (any letters and digits); compares without separators, case, O/0 and I/L/1 differences';

/* the output functions name the type, so they register once it is complete */
SELECT loyalty._register_function('all', 'loyalty.coupon_code_out(loyalty.coupon_code)');
SELECT loyalty._register_function('all', 'loyalty.coupon_code_send(loyalty.coupon_code)');

CREATE CAST (text AS loyalty.coupon_code) WITH INOUT AS ASSIGNMENT;

COMMENT ON CAST (text AS loyalty.coupon_code) IS
	'Parse a code from text (explicit and on assignment)';

/* functions */

CREATE FUNCTION loyalty.coupon_code_eq(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_eq'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_eq(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of = for coupon_code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_eq(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_ne(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_ne'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_ne(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of <> for coupon_code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_ne(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_lt(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_lt'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_lt(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of < for coupon_code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_lt(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_le(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_le'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_le(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of <= for coupon_code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_le(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_gt(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_gt'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_gt(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of > for coupon_code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_gt(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_ge(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_ge'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_ge(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of >= for coupon_code';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_ge(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_code_cmp'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code) IS
	'Three-way comparison of coupon codes (btree support)';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_hash(loyalty.coupon_code)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_code_hash'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_hash(loyalty.coupon_code) IS
	'Hash of a coupon code (hash support)';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_hash(loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_code_hash_extended'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint) IS
	'Seeded 64-bit hash of a coupon code (hash support)';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint)');

CREATE FUNCTION loyalty.coupon_code_kind(loyalty.coupon_code)
RETURNS text
AS 'MODULE_PATHNAME', 'coupon_code_kind'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_kind(loyalty.coupon_code) IS
	'Kind of a coupon code: generated or vanity';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_kind(loyalty.coupon_code)');

CREATE FUNCTION loyalty.coupon_code_check(code text)
RETURNS text
AS 'MODULE_PATHNAME', 'coupon_code_check'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_check(text) IS
	'NULL if the text is a valid coupon code, else why not: empty, invalid_character, too_long or check_mismatch';

SELECT loyalty._register_function('all', 'loyalty.coupon_code_check(text)');

CREATE FUNCTION loyalty.vanity_code(code text)
RETURNS loyalty.coupon_code
AS 'MODULE_PATHNAME', 'coupon_code_vanity'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.vanity_code(text) IS
	'A public vanity code (e.g. SUMMER25); refuses words that read as a generated code or a typo of one';

SELECT loyalty._register_function('all', 'loyalty.vanity_code(text)');

CREATE FUNCTION loyalty.random_codes(pattern text, count integer)
RETURNS SETOF loyalty.coupon_code
AS 'MODULE_PATHNAME', 'coupon_code_random'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE
ROWS 1000;

COMMENT ON FUNCTION loyalty.random_codes(text, integer) IS
	'count cryptographically random codes of a pattern such as SMR-####-#### (# = random character, check characters appended); independent draws, uniqueness is the caller''s';

SELECT loyalty._register_function('admin', 'loyalty.random_codes(text, integer)');

/* operators */

CREATE OPERATOR loyalty.= (
	LEFTARG = loyalty.coupon_code,
	RIGHTARG = loyalty.coupon_code,
	FUNCTION = loyalty.coupon_code_eq,
	COMMUTATOR = OPERATOR(loyalty.=),
	NEGATOR = OPERATOR(loyalty.<>),
	RESTRICT = eqsel,
	JOIN = eqjoinsel,
	HASHES,
	MERGES
);

COMMENT ON OPERATOR loyalty.= (loyalty.coupon_code, loyalty.coupon_code) IS
	'Same code (ignoring separators, case, O/0 and I/L/1)';

CREATE OPERATOR loyalty.<> (
	LEFTARG = loyalty.coupon_code,
	RIGHTARG = loyalty.coupon_code,
	FUNCTION = loyalty.coupon_code_ne,
	COMMUTATOR = OPERATOR(loyalty.<>),
	NEGATOR = OPERATOR(loyalty.=),
	RESTRICT = neqsel,
	JOIN = neqjoinsel
);

COMMENT ON OPERATOR loyalty.<> (loyalty.coupon_code, loyalty.coupon_code) IS
	'Different codes';

CREATE OPERATOR loyalty.< (
	LEFTARG = loyalty.coupon_code,
	RIGHTARG = loyalty.coupon_code,
	FUNCTION = loyalty.coupon_code_lt,
	COMMUTATOR = OPERATOR(loyalty.>),
	NEGATOR = OPERATOR(loyalty.>=),
	RESTRICT = scalarltsel,
	JOIN = scalarltjoinsel
);

COMMENT ON OPERATOR loyalty.< (loyalty.coupon_code, loyalty.coupon_code) IS
	'Sorts before (byte order of the normalised code)';

CREATE OPERATOR loyalty.<= (
	LEFTARG = loyalty.coupon_code,
	RIGHTARG = loyalty.coupon_code,
	FUNCTION = loyalty.coupon_code_le,
	COMMUTATOR = OPERATOR(loyalty.>=),
	NEGATOR = OPERATOR(loyalty.>),
	RESTRICT = scalarlesel,
	JOIN = scalarlejoinsel
);

COMMENT ON OPERATOR loyalty.<= (loyalty.coupon_code, loyalty.coupon_code) IS
	'Sorts before or equal';

CREATE OPERATOR loyalty.> (
	LEFTARG = loyalty.coupon_code,
	RIGHTARG = loyalty.coupon_code,
	FUNCTION = loyalty.coupon_code_gt,
	COMMUTATOR = OPERATOR(loyalty.<),
	NEGATOR = OPERATOR(loyalty.<=),
	RESTRICT = scalargtsel,
	JOIN = scalargtjoinsel
);

COMMENT ON OPERATOR loyalty.> (loyalty.coupon_code, loyalty.coupon_code) IS
	'Sorts after';

CREATE OPERATOR loyalty.>= (
	LEFTARG = loyalty.coupon_code,
	RIGHTARG = loyalty.coupon_code,
	FUNCTION = loyalty.coupon_code_ge,
	COMMUTATOR = OPERATOR(loyalty.<=),
	NEGATOR = OPERATOR(loyalty.<),
	RESTRICT = scalargesel,
	JOIN = scalargejoinsel
);

COMMENT ON OPERATOR loyalty.>= (loyalty.coupon_code, loyalty.coupon_code) IS
	'Sorts after or equal';

/* opclasses */

CREATE OPERATOR CLASS loyalty.coupon_code_ops
DEFAULT FOR TYPE loyalty.coupon_code USING btree AS
	OPERATOR 1 loyalty.< ,
	OPERATOR 2 loyalty.<= ,
	OPERATOR 3 loyalty.= ,
	OPERATOR 4 loyalty.>= ,
	OPERATOR 5 loyalty.> ,
	FUNCTION 1 loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code);

COMMENT ON OPERATOR CLASS loyalty.coupon_code_ops USING btree IS
	'Default btree operator class of coupon_code (unique indexes, ordering)';

CREATE OPERATOR CLASS loyalty.coupon_code_ops
DEFAULT FOR TYPE loyalty.coupon_code USING hash AS
	OPERATOR 1 loyalty.= ,
	FUNCTION 1 loyalty.coupon_code_hash(loyalty.coupon_code),
	FUNCTION 2 loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint);

COMMENT ON OPERATOR CLASS loyalty.coupon_code_ops USING hash IS
	'Default hash operator class of coupon_code (hash joins, hash aggregation)';


/* ---------------------------------------------------------------------------
 * coupon.sql: campaigns, coupons, reservations, redemptions
 *
 * Admin level: campaigns (create / update / pause / resume, eligibility
 * rules), codes (generate_codes, add_public_code).  App level: the
 * lifecycle, each a C function running SECURITY DEFINER inside the caller's
 * transaction: validate_coupon (read-only), reserve_coupon, redeem_coupon,
 * rollback_redemption.  Analyst level: loyalty.campaign_stats.
 *
 * Concurrency (see coupon_store.c): locks are taken in one global order,
 * order row -> coupon rows -> campaign gates -> capped campaign rows ->
 * customer locks; caps count active redemptions plus unexpired reservations
 * under those locks.  The tables back that up: a code's uses can never
 * exceed its max_uses (CHECK), a campaign's counter never its total_cap
 * (CHECK), and an (order_ref, code) pair is redeemed at most once (unique
 * index).
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.campaign (
	campaign_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	kind			text NOT NULL,
	currency		text NOT NULL DEFAULT 'EUR',
	percent_off		numeric,
	max_discount	numeric,
	amount_off		numeric,
	buy_quantity	integer,
	get_quantity	integer,
	free_sku		text,
	free_quantity	integer,
	starts_at		timestamptz,
	ends_at			timestamptz,
	paused			boolean NOT NULL DEFAULT false,
	paused_at		timestamptz,
	total_cap		bigint,
	per_customer_cap integer,
	min_order_amount numeric,
	include_skus	text[],
	exclude_skus	text[],
	include_categories text[],
	exclude_categories text[],
	exclusive		boolean NOT NULL DEFAULT false,
	max_coupons_per_order integer,
	uses			bigint NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT campaign_name_key UNIQUE (name),
	CONSTRAINT campaign_uses_within_cap
		CHECK (uses >= 0 AND (total_cap IS NULL OR uses <= total_cap))
);

COMMENT ON TABLE loyalty.campaign IS
	'Coupon campaigns: discount kind, dates, pause switch, caps, eligibility, product lists, stacking (write through the admin functions)';
COMMENT ON COLUMN loyalty.campaign.paused_at IS 'When the campaign was paused; null while it runs';
COMMENT ON COLUMN loyalty.campaign.uses IS
	'Active redemptions counted against total_cap; maintained while total_cap is set, recounted when a cap is set';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.campaign', 'campaign_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.campaign');

CREATE TABLE loyalty.eligibility_kind (
	kind			text PRIMARY KEY,
	check_function	regprocedure,
	builtin			boolean NOT NULL DEFAULT false,
	description		text NOT NULL,
	CONSTRAINT eligibility_kind_name_check CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
	CONSTRAINT eligibility_kind_function_check
		CHECK (builtin OR check_function IS NOT NULL)
);

COMMENT ON TABLE loyalty.eligibility_kind IS
	'Kinds of campaign eligibility rules; a non-built-in kind names a check function (customer_id text, params jsonb, order_context jsonb) RETURNS boolean, registered by the extension owner (e.g. ''tier'' by the tier module)';

INSERT INTO loyalty.eligibility_kind (kind, check_function, builtin, description) VALUES
	('segment', NULL, true,
	 'The customer''s current segment in loyalty.customer_segment is one of params.segments'),
	('new_customer', NULL, true,
	 'The order context''s "new_customer" flag equals params.new (default true)');

SELECT pg_catalog.pg_extension_config_dump('loyalty.eligibility_kind', 'WHERE NOT builtin');
SELECT loyalty._register_relation('admin', 'loyalty.eligibility_kind');

CREATE TABLE loyalty.campaign_rule (
	rule_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	campaign_id		bigint NOT NULL REFERENCES loyalty.campaign,
	kind			text NOT NULL REFERENCES loyalty.eligibility_kind,
	params			jsonb NOT NULL DEFAULT '{}',
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT campaign_rule_params_check CHECK (pg_catalog.jsonb_typeof(params) = 'object')
);

CREATE INDEX campaign_rule_campaign_idx ON loyalty.campaign_rule (campaign_id);

COMMENT ON TABLE loyalty.campaign_rule IS
	'Eligibility rules of campaigns; all rules of a campaign must hold';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_rule', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.campaign_rule', 'rule_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.campaign_rule');

/*
 * Codes.  No foreign key to campaign: generate_codes checks the campaign
 * once per call instead of once per row (millions of rows), and campaigns
 * are never deleted by the API.  The one CHECK is the last line of defence
 * of the per-code cap; the other rules on codes are enforced by the
 * functions that write them (PostgreSQL re-reads every CHECK expression of
 * a table on each statement that writes it, so hot tables keep few).
 */
CREATE TABLE loyalty.coupon (
	coupon_id		bigint GENERATED ALWAYS AS IDENTITY (CACHE 100) PRIMARY KEY,
	code			loyalty.coupon_code NOT NULL,
	campaign_id		bigint NOT NULL,
	customer_id		text,
	max_uses		bigint,
	uses			bigint NOT NULL DEFAULT 0,
	reservations	bigint NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT coupon_code_key UNIQUE (code),
	CONSTRAINT coupon_uses_within_cap
		CHECK (uses >= 0 AND (max_uses IS NULL OR (max_uses >= 1 AND uses <= max_uses)))
);

CREATE INDEX coupon_customer_idx ON loyalty.coupon (customer_id)
	WHERE customer_id IS NOT NULL;

COMMENT ON TABLE loyalty.coupon IS
	'Coupon codes: generated (single-use, random, check characters) or public vanity codes; optionally bound to one customer';
COMMENT ON COLUMN loyalty.coupon.uses IS 'Active redemptions of this code';
COMMENT ON COLUMN loyalty.coupon.reservations IS 'Reservations ever made on this code';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.coupon', 'coupon_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.coupon');

CREATE TABLE loyalty.coupon_order (
	order_ref		text PRIMARY KEY,
	customer_id		text NOT NULL,
	context_hash	bigint NOT NULL,
	amount			numeric NOT NULL,
	currency		text,
	state			text NOT NULL DEFAULT 'open',
	created_at		timestamptz NOT NULL,
	updated_at		timestamptz NOT NULL,
	closed_at		timestamptz
);

COMMENT ON TABLE loyalty.coupon_order IS
	'Orders that reserved or redeemed coupons: customer and order-context fingerprint every call must repeat; state open or rolled_back (closes the order_ref, closed_at set)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_order', '');
SELECT loyalty._register_relation('admin', 'loyalty.coupon_order');

/*
 * The redemption ledger, append-only: kind 'redeem' rows (uses 1, discount
 * >= 0) and, per rolled-back redemption, one kind 'reversal' row (uses -1,
 * the discount negated, reverses = the redemption_id it reverses).  Only the
 * lifecycle functions write it (no role gets INSERT, UPDATE or DELETE on
 * it); the unique indexes below make a second redemption of one
 * (order_ref, code) and a second reversal of one redemption impossible.
 * No CHECK or foreign key: this is the hottest table, and PostgreSQL
 * re-reads CHECK expressions and runs a trigger per row for a foreign key.
 */
CREATE TABLE loyalty.redemption (
	redemption_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind			text NOT NULL,
	reverses		bigint,
	coupon_id		bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	customer_id		text NOT NULL,
	order_ref		text NOT NULL,
	uses			integer NOT NULL,
	discount		numeric NOT NULL,
	on_shipping		boolean NOT NULL,
	currency		text NOT NULL,
	created_at		timestamptz NOT NULL
);

CREATE UNIQUE INDEX redemption_order_coupon_key ON loyalty.redemption (order_ref, coupon_id)
	WHERE kind = 'redeem';
CREATE UNIQUE INDEX redemption_reverses_key ON loyalty.redemption (reverses)
	WHERE reverses IS NOT NULL;
CREATE INDEX redemption_campaign_customer_idx ON loyalty.redemption (campaign_id, customer_id);

COMMENT ON TABLE loyalty.redemption IS
	'Redemption ledger (append-only): one redeem row per (order_ref, code), one reversal row per rolled-back redemption';

SELECT pg_catalog.pg_extension_config_dump('loyalty.redemption', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.redemption', 'redemption_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.redemption');

/*
 * Reservations: state 'held' until consumed by the redeem of the same
 * order, released by its rollback, or marked expired when a new hold of the
 * same order and code replaces it.  A held row counts against the caps only
 * while expires_at is in the future, so an expired hold frees itself.
 */
CREATE TABLE loyalty.reservation (
	reservation_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	coupon_id		bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	customer_id		text NOT NULL,
	order_ref		text NOT NULL,
	discount		numeric NOT NULL,
	on_shipping		boolean NOT NULL,
	created_at		timestamptz NOT NULL,
	expires_at		timestamptz NOT NULL,
	state			text NOT NULL DEFAULT 'held',
	ended_at		timestamptz,
	CONSTRAINT reservation_state_check
		CHECK (state IN ('held', 'consumed', 'released', 'expired')
			   AND (state = 'held') = (ended_at IS NULL)
			   AND expires_at > created_at AND discount >= 0)
);

CREATE UNIQUE INDEX reservation_order_coupon_key ON loyalty.reservation (order_ref, coupon_id)
	WHERE state = 'held';
CREATE INDEX reservation_coupon_idx ON loyalty.reservation (coupon_id, expires_at)
	WHERE state = 'held';
CREATE INDEX reservation_campaign_idx ON loyalty.reservation (campaign_id, expires_at)
	WHERE state = 'held';
CREATE INDEX reservation_customer_idx ON loyalty.reservation (campaign_id, customer_id)
	WHERE state = 'held';

COMMENT ON TABLE loyalty.reservation IS
	'Coupon reservations of checkouts; a held row counts against the caps until expires_at';

SELECT pg_catalog.pg_extension_config_dump('loyalty.reservation', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.reservation', 'reservation_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.reservation');

/* functions: internal helpers (C) */

CREATE FUNCTION loyalty._campaign_gate(campaign_id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'coupon_campaign_gate'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._campaign_gate(bigint) IS
	'Internal: lock a campaign''s gate exclusively until the end of the transaction (waits for redemptions in flight)';

CREATE FUNCTION loyalty._campaign_active_uses(campaign_id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_campaign_active_uses'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._campaign_active_uses(bigint) IS
	'Internal: active redemptions of a campaign, counted with the newest snapshot';

/* triggers: every configuration change flushes the backends' campaign caches */

CREATE FUNCTION loyalty._campaign_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'coupon_campaign_changed'
LANGUAGE C;

COMMENT ON FUNCTION loyalty._campaign_changed() IS
	'Internal trigger: a campaign, rule or rule kind changed; invalidate the campaign caches of all backends';

CREATE TRIGGER campaign_changed
	AFTER INSERT OR DELETE OR TRUNCATE ON loyalty.campaign
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

-- every column but the cap counter "uses", which redemptions update
CREATE TRIGGER campaign_config_changed
	AFTER UPDATE OF campaign_id, name, kind, currency, percent_off, max_discount,
		amount_off, buy_quantity, get_quantity, free_sku, free_quantity,
		starts_at, ends_at, paused, paused_at, total_cap, per_customer_cap,
		min_order_amount, include_skus, exclude_skus, include_categories,
		exclude_categories, exclusive, max_coupons_per_order, created_at,
		updated_at
	ON loyalty.campaign
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

CREATE TRIGGER campaign_rule_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.campaign_rule
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

CREATE TRIGGER eligibility_kind_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.eligibility_kind
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

/* functions: campaign administration (admin) */

/*
 * Check a campaign row before it is written, with messages that say which
 * field is wrong (the table's CHECK constraints back this up).
 */
CREATE FUNCTION loyalty._campaign_check(c loyalty.campaign)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	problem text;
BEGIN
	problem := CASE
		WHEN c.name IS NULL OR c.name = '' THEN
			'name must be a non-empty text'
		WHEN c.kind IS NULL OR c.kind NOT IN ('percent', 'fixed', 'free_shipping', 'buy_x_get_y', 'free_item') THEN
			format('kind must be percent, fixed, free_shipping, buy_x_get_y or free_item, not %L', c.kind)
		WHEN c.currency IS NULL OR c.currency !~ '^[A-Z]{3}$' THEN
			'currency must be three upper-case letters (ISO 4217)'
		WHEN c.kind = 'percent' AND (c.percent_off IS NULL OR c.percent_off <= 0 OR c.percent_off > 100) THEN
			'a percent campaign needs percent_off in (0, 100]'
		WHEN c.kind <> 'percent' AND c.percent_off IS NOT NULL THEN
			'percent_off applies to percent campaigns only'
		WHEN c.kind = 'fixed' AND (c.amount_off IS NULL OR c.amount_off <= 0) THEN
			'a fixed campaign needs a positive amount_off'
		WHEN c.kind <> 'fixed' AND c.amount_off IS NOT NULL THEN
			'amount_off applies to fixed campaigns only'
		WHEN c.kind = 'fixed' AND c.max_discount IS NOT NULL THEN
			'max_discount does not apply to fixed campaigns'
		WHEN c.max_discount IS NOT NULL AND c.max_discount <= 0 THEN
			'max_discount must be positive'
		WHEN c.kind = 'buy_x_get_y' AND (c.buy_quantity IS NULL OR c.buy_quantity < 1
										OR c.get_quantity IS NULL OR c.get_quantity < 1) THEN
			'a buy_x_get_y campaign needs buy_quantity >= 1 and get_quantity >= 1'
		WHEN c.kind <> 'buy_x_get_y' AND (c.buy_quantity IS NOT NULL OR c.get_quantity IS NOT NULL) THEN
			'buy_quantity and get_quantity apply to buy_x_get_y campaigns only'
		WHEN c.kind = 'free_item' AND (c.free_sku IS NULL OR c.free_sku = '') THEN
			'a free_item campaign needs free_sku'
		WHEN c.kind = 'free_item' AND (c.free_quantity IS NULL OR c.free_quantity < 1) THEN
			'free_quantity must be at least 1'
		WHEN c.kind <> 'free_item' AND (c.free_sku IS NOT NULL OR c.free_quantity IS NOT NULL) THEN
			'free_sku and free_quantity apply to free_item campaigns only'
		WHEN c.starts_at IS NOT NULL AND c.ends_at IS NOT NULL AND c.ends_at <= c.starts_at THEN
			'ends_at must be after starts_at'
		WHEN c.total_cap IS NOT NULL AND c.total_cap < 0 THEN
			'total_cap must not be negative'
		WHEN c.per_customer_cap IS NOT NULL AND c.per_customer_cap < 1 THEN
			'per_customer_cap must be at least 1'
		WHEN c.max_coupons_per_order IS NOT NULL AND c.max_coupons_per_order < 1 THEN
			'max_coupons_per_order must be at least 1'
		WHEN c.min_order_amount IS NOT NULL AND c.min_order_amount < 0 THEN
			'min_order_amount must not be negative'
		WHEN c.exclusive IS NULL THEN
			'exclusive must be true or false'
		WHEN array_position(c.include_skus, NULL) IS NOT NULL
		  OR array_position(c.exclude_skus, NULL) IS NOT NULL
		  OR array_position(c.include_categories, NULL) IS NOT NULL
		  OR array_position(c.exclude_categories, NULL) IS NOT NULL
		  OR '' = ANY (c.include_skus) OR '' = ANY (c.exclude_skus)
		  OR '' = ANY (c.include_categories) OR '' = ANY (c.exclude_categories) THEN
			'sku and category lists must not contain nulls or empty texts'
		WHEN cardinality(c.include_skus) = 0 OR cardinality(c.exclude_skus) = 0
		  OR cardinality(c.include_categories) = 0 OR cardinality(c.exclude_categories) = 0 THEN
			'an empty sku or category list must be null'
	END;
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: %', problem
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_check(loyalty.campaign) IS
	'Internal: raise 22023 naming the first invalid field of a campaign row';

CREATE FUNCTION loyalty.create_campaign(
	name text,
	kind text,
	percent_off numeric DEFAULT NULL,
	max_discount numeric DEFAULT NULL,
	amount_off numeric DEFAULT NULL,
	buy_quantity integer DEFAULT NULL,
	get_quantity integer DEFAULT NULL,
	free_sku text DEFAULT NULL,
	free_quantity integer DEFAULT NULL,
	currency text DEFAULT 'EUR',
	starts_at timestamptz DEFAULT NULL,
	ends_at timestamptz DEFAULT NULL,
	total_cap bigint DEFAULT NULL,
	per_customer_cap integer DEFAULT NULL,
	min_order_amount numeric DEFAULT NULL,
	include_skus text[] DEFAULT NULL,
	exclude_skus text[] DEFAULT NULL,
	include_categories text[] DEFAULT NULL,
	exclude_categories text[] DEFAULT NULL,
	exclusive boolean DEFAULT false,
	max_coupons_per_order integer DEFAULT NULL,
	segments text[] DEFAULT NULL,
	new_customers_only boolean DEFAULT false,
	paused boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.campaign;
	id bigint;
BEGIN
	c.name := create_campaign.name;
	c.kind := create_campaign.kind;
	c.currency := create_campaign.currency;
	c.percent_off := create_campaign.percent_off;
	c.max_discount := create_campaign.max_discount;
	c.amount_off := create_campaign.amount_off;
	c.buy_quantity := create_campaign.buy_quantity;
	c.get_quantity := create_campaign.get_quantity;
	c.free_sku := create_campaign.free_sku;
	c.free_quantity := CASE WHEN create_campaign.kind = 'free_item'
							THEN coalesce(create_campaign.free_quantity, 1)
							ELSE create_campaign.free_quantity END;
	c.starts_at := create_campaign.starts_at;
	c.ends_at := create_campaign.ends_at;
	c.total_cap := create_campaign.total_cap;
	c.per_customer_cap := create_campaign.per_customer_cap;
	c.min_order_amount := create_campaign.min_order_amount;
	c.include_skus := create_campaign.include_skus;
	c.exclude_skus := create_campaign.exclude_skus;
	c.include_categories := create_campaign.include_categories;
	c.exclude_categories := create_campaign.exclude_categories;
	c.exclusive := create_campaign.exclusive;
	c.max_coupons_per_order := create_campaign.max_coupons_per_order;
	PERFORM loyalty._campaign_check(c);
	IF EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.name = c.name) THEN
		RAISE EXCEPTION 'campaign "%" already exists', c.name
			USING ERRCODE = 'unique_violation';
	END IF;
	IF create_campaign.paused IS NULL OR new_customers_only IS NULL THEN
		RAISE EXCEPTION 'invalid campaign: paused and new_customers_only must be true or false'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	INSERT INTO loyalty.campaign AS t
		(name, kind, currency, percent_off, max_discount, amount_off,
		 buy_quantity, get_quantity, free_sku, free_quantity, starts_at, ends_at,
		 paused, paused_at, total_cap, per_customer_cap, min_order_amount,
		 include_skus, exclude_skus, include_categories, exclude_categories,
		 exclusive, max_coupons_per_order)
	VALUES (c.name, c.kind, c.currency, c.percent_off, c.max_discount, c.amount_off,
			c.buy_quantity, c.get_quantity, c.free_sku, c.free_quantity,
			c.starts_at, c.ends_at, create_campaign.paused,
			CASE WHEN create_campaign.paused THEN now() END,
			c.total_cap, c.per_customer_cap, c.min_order_amount,
			c.include_skus, c.exclude_skus, c.include_categories,
			c.exclude_categories, c.exclusive, c.max_coupons_per_order)
	RETURNING t.campaign_id INTO id;

	IF segments IS NOT NULL THEN
		PERFORM loyalty.add_campaign_rule(id, 'segment',
										  jsonb_build_object('segments', to_jsonb(segments)));
	END IF;
	IF new_customers_only THEN
		PERFORM loyalty.add_campaign_rule(id, 'new_customer', '{"new": true}');
	END IF;
	RETURN id;
END;
$$;

COMMENT ON FUNCTION loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean) IS
	'Create a coupon campaign (use named arguments); returns its id';

SELECT loyalty._register_function('admin', 'loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean)');

/*
 * Change a running campaign: keys of changes are column names, values the
 * new values (null clears).  kind and currency never change (redemptions
 * are recorded in them); pause with pause_campaign.  Takes the campaign's
 * gate exclusively, so the change applies to every redemption that starts
 * after it commits.
 */
CREATE FUNCTION loyalty.update_campaign(campaign_id bigint, changes jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.campaign;
	n loyalty.campaign;
	bad text;
BEGIN
	IF campaign_id IS NULL OR changes IS NULL THEN
		RAISE EXCEPTION 'campaign_id and changes must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF jsonb_typeof(changes) <> 'object' THEN
		RAISE EXCEPTION 'changes must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT string_agg(k, ', ' ORDER BY k) INTO bad
	FROM jsonb_object_keys(changes) AS k
	WHERE k NOT IN ('name', 'percent_off', 'max_discount', 'amount_off',
					'buy_quantity', 'get_quantity', 'free_sku', 'free_quantity',
					'starts_at', 'ends_at', 'total_cap', 'per_customer_cap',
					'min_order_amount', 'include_skus', 'exclude_skus',
					'include_categories', 'exclude_categories', 'exclusive',
					'max_coupons_per_order');
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'cannot change campaign field(s): %', bad
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'kind and currency are fixed; use pause_campaign / resume_campaign for the pause switch.';
	END IF;

	PERFORM loyalty._campaign_gate(update_campaign.campaign_id);
	SELECT * INTO c FROM loyalty.campaign t
	WHERE t.campaign_id = update_campaign.campaign_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', update_campaign.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	n := jsonb_populate_record(c, changes);
	PERFORM loyalty._campaign_check(n);
	IF n.total_cap IS NOT NULL AND c.total_cap IS NULL THEN
		n.uses := loyalty._campaign_active_uses(c.campaign_id);
	END IF;
	IF n.total_cap IS NOT NULL AND n.uses > n.total_cap THEN
		RAISE EXCEPTION 'invalid campaign: total_cap % is below the % active redemptions',
			n.total_cap, n.uses
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	UPDATE loyalty.campaign t
	SET name = n.name, percent_off = n.percent_off, max_discount = n.max_discount,
		amount_off = n.amount_off, buy_quantity = n.buy_quantity,
		get_quantity = n.get_quantity, free_sku = n.free_sku,
		free_quantity = n.free_quantity, starts_at = n.starts_at,
		ends_at = n.ends_at, total_cap = n.total_cap,
		per_customer_cap = n.per_customer_cap,
		min_order_amount = n.min_order_amount, include_skus = n.include_skus,
		exclude_skus = n.exclude_skus, include_categories = n.include_categories,
		exclude_categories = n.exclude_categories, exclusive = n.exclusive,
		max_coupons_per_order = n.max_coupons_per_order, uses = n.uses,
		updated_at = now()
	WHERE t.campaign_id = c.campaign_id;
END;
$$;

COMMENT ON FUNCTION loyalty.update_campaign(bigint, jsonb) IS
	'Change campaign fields given as a JSON object (null clears); effective for every redemption that starts after the commit';

SELECT loyalty._register_function('admin', 'loyalty.update_campaign(bigint, jsonb)');

/*
 * The kill switch.  The exclusive gate makes the pause wait for the
 * redemptions in flight (they commit before it) and makes every redemption
 * that starts later wait for the pause and then fail with "paused".  Resume
 * goes through the same gate.  Returns false when the campaign already was in
 * the requested state.
 */
CREATE FUNCTION loyalty._set_campaign_paused(campaign_id bigint, paused boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF campaign_id IS NULL THEN
		RAISE EXCEPTION 'campaign_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._campaign_gate(_set_campaign_paused.campaign_id);
	UPDATE loyalty.campaign t
	SET paused = _set_campaign_paused.paused,
		paused_at = CASE WHEN _set_campaign_paused.paused THEN now() END,
		updated_at = now()
	WHERE t.campaign_id = _set_campaign_paused.campaign_id
	  AND t.paused <> _set_campaign_paused.paused;
	IF FOUND THEN
		RETURN true;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.campaign_id = _set_campaign_paused.campaign_id) THEN
		RAISE EXCEPTION 'campaign % does not exist', _set_campaign_paused.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN false;
END;
$$;

COMMENT ON FUNCTION loyalty._set_campaign_paused(bigint, boolean) IS
	'Internal: pause or resume a campaign behind its gate (pause_campaign, resume_campaign)';

CREATE FUNCTION loyalty.pause_campaign(campaign_id bigint)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT loyalty._set_campaign_paused($1, true) $$;

COMMENT ON FUNCTION loyalty.pause_campaign(bigint) IS
	'Pause a campaign at once (kill switch); false if it was already paused';

SELECT loyalty._register_function('admin', 'loyalty.pause_campaign(bigint)');

CREATE FUNCTION loyalty.resume_campaign(campaign_id bigint)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT loyalty._set_campaign_paused($1, false) $$;

COMMENT ON FUNCTION loyalty.resume_campaign(bigint) IS
	'Resume a paused campaign at once; false if it was not paused';

SELECT loyalty._register_function('admin', 'loyalty.resume_campaign(bigint)');

/*
 * Add an eligibility rule.  Built-in kinds have their parameters checked
 * here; a registered kind's parameters are its check function's business.
 */
CREATE FUNCTION loyalty.add_campaign_rule(campaign_id bigint, kind text, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id bigint;
BEGIN
	IF campaign_id IS NULL OR kind IS NULL OR params IS NULL THEN
		RAISE EXCEPTION 'campaign_id, kind and params must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.eligibility_kind k WHERE k.kind = add_campaign_rule.kind) THEN
		RAISE EXCEPTION 'unknown eligibility rule kind: "%"', kind
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kinds are listed in loyalty.eligibility_kind.';
	END IF;
	IF jsonb_typeof(params) <> 'object' THEN
		RAISE EXCEPTION 'rule params must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'segment' AND NOT (
		jsonb_typeof(params -> 'segments') = 'array'
		AND jsonb_array_length(params -> 'segments') > 0
		AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(params -> 'segments') e
						WHERE jsonb_typeof(e) <> 'string')) THEN
		RAISE EXCEPTION 'a segment rule needs {"segments": [names]}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'new_customer' AND (
		EXISTS (SELECT 1 FROM jsonb_object_keys(params) k WHERE k <> 'new')
		OR coalesce(jsonb_typeof(params -> 'new'), 'boolean') <> 'boolean') THEN
		RAISE EXCEPTION 'a new_customer rule takes {"new": true} or {"new": false}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	PERFORM loyalty._campaign_gate(add_campaign_rule.campaign_id);
	IF NOT EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.campaign_id = add_campaign_rule.campaign_id) THEN
		RAISE EXCEPTION 'campaign % does not exist', add_campaign_rule.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO loyalty.campaign_rule AS r (campaign_id, kind, params)
	VALUES (add_campaign_rule.campaign_id, add_campaign_rule.kind, add_campaign_rule.params)
	RETURNING r.rule_id INTO id;
	UPDATE loyalty.campaign t SET updated_at = now()
	WHERE t.campaign_id = add_campaign_rule.campaign_id;
	RETURN id;
END;
$$;

COMMENT ON FUNCTION loyalty.add_campaign_rule(bigint, text, jsonb) IS
	'Add an eligibility rule (kind from loyalty.eligibility_kind) to a campaign; returns the rule id';

SELECT loyalty._register_function('admin', 'loyalty.add_campaign_rule(bigint, text, jsonb)');

CREATE FUNCTION loyalty.drop_campaign_rule(rule_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cid bigint;
BEGIN
	IF rule_id IS NULL THEN
		RAISE EXCEPTION 'rule_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT r.campaign_id INTO cid FROM loyalty.campaign_rule r
	WHERE r.rule_id = drop_campaign_rule.rule_id;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM loyalty._campaign_gate(cid);
	DELETE FROM loyalty.campaign_rule r WHERE r.rule_id = drop_campaign_rule.rule_id;
	UPDATE loyalty.campaign t SET updated_at = now() WHERE t.campaign_id = cid;
	RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION loyalty.drop_campaign_rule(bigint) IS
	'Remove an eligibility rule; false if there was none with this id';

SELECT loyalty._register_function('admin', 'loyalty.drop_campaign_rule(bigint)');

/* functions: codes (admin) */

CREATE FUNCTION loyalty.generate_codes(campaign_id bigint, count integer, pattern text,
									   customer_ids text[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_generate_codes'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.generate_codes(bigint, integer, text, text[]) IS
	'Create count single-use random codes from a pattern (''SMR-####-####''), never equal to a stored code; with customer_ids, one code bound to each';

SELECT loyalty._register_function('admin', 'loyalty.generate_codes(bigint, integer, text, text[])');

CREATE FUNCTION loyalty.add_public_code(campaign_id bigint, code text,
										max_uses bigint DEFAULT NULL,
										customer_id text DEFAULT NULL)
RETURNS loyalty.coupon_code
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.coupon_code;
BEGIN
	IF campaign_id IS NULL OR code IS NULL THEN
		RAISE EXCEPTION 'campaign_id and code must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	c := loyalty.vanity_code(code);
	IF max_uses IS NOT NULL AND max_uses < 1 THEN
		RAISE EXCEPTION 'max_uses must be at least 1 (null: no limit of its own)'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF customer_id = '' OR length(customer_id) > 256 THEN
		RAISE EXCEPTION 'invalid customer_id'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A customer_id must have 1 to 256 bytes.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.campaign_id = add_public_code.campaign_id) THEN
		RAISE EXCEPTION 'campaign % does not exist', add_public_code.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO loyalty.coupon AS k (code, campaign_id, customer_id, max_uses)
	VALUES (c, add_public_code.campaign_id, add_public_code.customer_id, add_public_code.max_uses)
	ON CONFLICT ON CONSTRAINT coupon_code_key DO NOTHING;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'coupon code % already exists', c
			USING ERRCODE = 'unique_violation';
	END IF;
	RETURN c;
END;
$$;

COMMENT ON FUNCTION loyalty.add_public_code(bigint, text, bigint, text) IS
	'Add a public (vanity) code such as SUMMER25 to a campaign; max_uses null = limited only by the campaign''s caps';

SELECT loyalty._register_function('admin', 'loyalty.add_public_code(bigint, text, bigint, text)');

/* functions: lifecycle (app) */

CREATE FUNCTION loyalty.validate_coupon(code text, customer_id text, order_context jsonb,
										order_ref text DEFAULT NULL,
										OUT valid boolean, OUT reason text,
										OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_validate'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.validate_coupon(text, text, jsonb, text) IS
	'Read-only check of a code for a customer and an order: (valid, reason, discount); reason is a stable token';

SELECT loyalty._register_function('app', 'loyalty.validate_coupon(text, text, jsonb, text)');

CREATE FUNCTION loyalty.validate_coupon(code text, customer_id text, amount numeric,
										order_ref text DEFAULT NULL,
										OUT valid boolean, OUT reason text,
										OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_validate_amount'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.validate_coupon(text, text, numeric, text) IS
	'Read-only check of a code for an order given by its amount only';

SELECT loyalty._register_function('app', 'loyalty.validate_coupon(text, text, numeric, text)');

CREATE FUNCTION loyalty.reserve_coupon(code text, customer_id text, order_ref text,
									   order_context jsonb,
									   ttl interval DEFAULT '15 minutes',
									   OUT discount numeric, OUT expires_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_reserve'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, jsonb, interval) IS
	'Hold one unit of every cap of a code for a checkout until expires_at; redeem_coupon of the same order consumes it';

SELECT loyalty._register_function('app', 'loyalty.reserve_coupon(text, text, text, jsonb, interval)');

CREATE FUNCTION loyalty.reserve_coupon(code text, customer_id text, order_ref text,
									   amount numeric,
									   ttl interval DEFAULT '15 minutes',
									   OUT discount numeric, OUT expires_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_reserve_amount'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, numeric, interval) IS
	'Reserve a code for an order given by its amount only';

SELECT loyalty._register_function('app', 'loyalty.reserve_coupon(text, text, text, numeric, interval)');

CREATE FUNCTION loyalty.redeem_coupon(code text, customer_id text, order_ref text,
									  order_context jsonb)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_redeem'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, jsonb) IS
	'Redeem a code for an order, atomically; returns the discount; a repeat for the same order and code returns the first discount; failures raise LY0nn';

SELECT loyalty._register_function('app', 'loyalty.redeem_coupon(text, text, text, jsonb)');

CREATE FUNCTION loyalty.redeem_coupon(code text, customer_id text, order_ref text,
									  amount numeric)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_redeem_amount'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, numeric) IS
	'Redeem a code for an order given by its amount only';

SELECT loyalty._register_function('app', 'loyalty.redeem_coupon(text, text, text, numeric)');

CREATE FUNCTION loyalty.rollback_redemption(order_ref text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_rollback'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.rollback_redemption(text) IS
	'Cancel / refund: reverse an order''s redemptions (uses given back, history kept), release its reservations, close the order; false if nothing to give back';

SELECT loyalty._register_function('app', 'loyalty.rollback_redemption(text)');

/* views */

CREATE VIEW loyalty.campaign_stats AS
SELECT c.campaign_id,
	   c.name,
	   c.kind,
	   c.currency,
	   CASE WHEN c.paused THEN 'paused'
			WHEN c.ends_at IS NOT NULL AND c.ends_at <= pg_catalog.now() THEN 'ended'
			WHEN c.starts_at IS NOT NULL AND c.starts_at > pg_catalog.now() THEN 'scheduled'
			ELSE 'active' END AS status,
	   coalesce(k.codes, 0) AS codes,
	   coalesce(r.redemptions, 0) AS redemptions,
	   coalesce(r.rollbacks, 0) AS rollbacks,
	   coalesce(r.redemptions, 0) - coalesce(r.rollbacks, 0) AS active_redemptions,
	   coalesce(r.customers, 0) AS customers,
	   coalesce(r.discount_total, 0) AS discount_total,
	   coalesce(h.active_reservations, 0) AS active_reservations,
	   c.total_cap,
	   CASE WHEN c.total_cap IS NOT NULL THEN
			greatest(c.total_cap - (coalesce(r.redemptions, 0) - coalesce(r.rollbacks, 0))
					 - coalesce(h.active_reservations, 0), 0)
	   END AS remaining_cap
FROM loyalty.campaign c
LEFT JOIN (SELECT campaign_id, count(*) AS codes
		   FROM loyalty.coupon GROUP BY campaign_id) k
	   ON k.campaign_id = c.campaign_id
LEFT JOIN (SELECT campaign_id,
				  count(*) FILTER (WHERE kind = 'redeem') AS redemptions,
				  count(*) FILTER (WHERE kind = 'reversal') AS rollbacks,
				  count(DISTINCT customer_id) FILTER (WHERE kind = 'redeem') AS customers,
				  sum(discount) AS discount_total
		   FROM loyalty.redemption GROUP BY campaign_id) r
	   ON r.campaign_id = c.campaign_id
LEFT JOIN (SELECT campaign_id, count(*) AS active_reservations
		   FROM loyalty.reservation
		   WHERE state = 'held' AND expires_at > pg_catalog.now()
		   GROUP BY campaign_id) h
	   ON h.campaign_id = c.campaign_id;

COMMENT ON VIEW loyalty.campaign_stats IS
	'Per campaign: codes, redemptions, rollbacks, active redemptions, customers, net discount total, active reservations, remaining cap';

SELECT loyalty._register_relation('analyst', 'loyalty.campaign_stats');

/* ---------------------------------------------------------------------------
 * points.sql: points ledger, lots, accounts, earning rules and tiers
 *
 * Model (points.h has the invariants the C code keeps):
 *	points_ledger	append-only; every entry's points is its signed effect on
 *					available + pending - debt; no role can update or delete it
 *	points_lot		what was credited, with availability and expiry times;
 *					spending consumes lots first in, first out
 *	points_account	one row per customer, locked by every mutating call; the
 *					settled balance, debt, lifetime and qualifying totals, tier
 *	points_qualifying  qualifying points and spend per customer and month (in
 *					the program's time zone), for rolling tier windows
 *	earning_rule	how orders and actions earn points
 *	tier			the tier ladder; tier_history every change of tier
 *	points_program	settings (one optional row): time zone, tier basis and
 *					window, grace period, default expiry
 * Only the SECURITY DEFINER functions write these tables; the app role can
 * call them but write nothing directly.
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.points_receipt AS (
	entry_id	bigint,
	customer_id	text,
	points		bigint,
	available	bigint,
	pending		bigint,
	debt		bigint
);

COMMENT ON TYPE loyalty.points_receipt IS
	'Result of a points call: the ledger entry, its signed points, and the account''s available, pending and debt right after it (a repeated call returns the first result)';

/* tables */

CREATE TABLE loyalty.points_program (
	singleton			boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	timezone			text NOT NULL DEFAULT 'UTC',
	tier_basis			text NOT NULL DEFAULT 'points'
		CHECK (tier_basis IN ('points', 'spend')),
	tier_window_months	integer CHECK (tier_window_months BETWEEN 1 AND 120),
	tier_grace_days		integer NOT NULL DEFAULT 30
		CHECK (tier_grace_days BETWEEN 0 AND 3660),
	expiry_months		integer CHECK (expiry_months BETWEEN 1 AND 1200),
	expiry_rounding		text NOT NULL DEFAULT 'none'
		CHECK (expiry_rounding IN ('none', 'month', 'year')),
	-- an unknown zone raises here
	CONSTRAINT points_program_timezone_check
		CHECK (pg_catalog.timezone(timezone, '2000-01-01 00:00:00+00'::timestamptz) IS NOT NULL)
);

COMMENT ON TABLE loyalty.points_program IS
	'Points settings, at most one row (no row: the defaults). Change them with INSERT ... ON CONFLICT (singleton) DO UPDATE';
COMMENT ON COLUMN loyalty.points_program.timezone IS
	'Time zone in which expiry dates, pending days, tier-window months, cap periods and weekdays are computed (default UTC)';
COMMENT ON COLUMN loyalty.points_program.tier_basis IS
	'points: tiers on qualifying points earned; spend: tiers on qualifying order amounts';
COMMENT ON COLUMN loyalty.points_program.tier_window_months IS
	'Rolling tier window: the current calendar month and the N-1 before it; NULL = since the first earning';
COMMENT ON COLUMN loyalty.points_program.tier_grace_days IS
	'Days a customer keeps a tier after evaluate_tiers first finds them below its threshold';
COMMENT ON COLUMN loyalty.points_program.expiry_months IS
	'Default expiry of earned points, in months after earning (NULL: never); earn_points(expires_at) and earning rules may override';
COMMENT ON COLUMN loyalty.points_program.expiry_rounding IS
	'none: exactly expiry_months later; month / year: at the end of that month / year';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_program', '');
SELECT loyalty._register_relation('admin', 'loyalty.points_program', 'SELECT, INSERT, UPDATE, DELETE');

CREATE TABLE loyalty.tier (
	name		text PRIMARY KEY CHECK (name = pg_catalog.btrim(name) AND name <> ''),
	rank		integer NOT NULL UNIQUE CHECK (rank >= 0),
	threshold	numeric NOT NULL CHECK (threshold >= 0 AND threshold < 1e15),
	multiplier	numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0 AND multiplier <= 100),
	discount	numeric NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount <= 100),
	perks		jsonb NOT NULL DEFAULT '{}'
		CHECK (pg_catalog.jsonb_typeof(perks) = 'object'),
	description	text
);

COMMENT ON TABLE loyalty.tier IS
	'Tier ladder: a higher rank needs a higher threshold (qualifying points or spend, per points_program.tier_basis)';
COMMENT ON COLUMN loyalty.tier.rank IS 'Position on the ladder, 0 = lowest';
COMMENT ON COLUMN loyalty.tier.threshold IS
	'Qualifying points (or spend) in the tier window needed to reach the tier; a tier with threshold 0 is given to every new account';
COMMENT ON COLUMN loyalty.tier.multiplier IS
	'Factor applied to points earned by rules with apply_tier_multiplier';
COMMENT ON COLUMN loyalty.tier.discount IS 'Discount percentage the tier grants (for the shop and coupon rules)';
COMMENT ON COLUMN loyalty.tier.perks IS 'Other benefits, free-form';

SELECT pg_catalog.pg_extension_config_dump('loyalty.tier', '');
SELECT loyalty._register_relation('admin', 'loyalty.tier', 'SELECT, INSERT, UPDATE, DELETE');

CREATE TABLE loyalty.points_account (
	customer_id		text PRIMARY KEY,
	available		bigint NOT NULL DEFAULT 0,
	pending			bigint NOT NULL DEFAULT 0,
	debt			bigint NOT NULL DEFAULT 0,
	lifetime_earned	bigint NOT NULL DEFAULT 0,
	qualifying		bigint NOT NULL DEFAULT 0,
	qualifying_spend numeric NOT NULL DEFAULT 0,
	tier			text REFERENCES loyalty.tier (name) ON UPDATE CASCADE,
	tier_since		timestamptz,
	below_since		timestamptz,
	next_event_at	timestamptz,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	-- Only the promise itself is a constraint (PostgreSQL compiles every
	-- CHECK of a table for each statement that writes it, a large share of
	-- a call's time): never negative, and debt only when nothing is open.
	-- The other invariants are kept by the C code and verified by
	-- loyalty.check_integrity().
	CONSTRAINT points_account_check CHECK (
		available >= 0 AND pending >= 0 AND debt >= 0 AND (debt = 0 OR available + pending = 0))
) WITH (fillfactor = 80);

CREATE INDEX points_account_next_event_idx ON loyalty.points_account (next_event_at)
	WHERE next_event_at IS NOT NULL;
CREATE INDEX points_account_tier_idx ON loyalty.points_account (tier);

COMMENT ON TABLE loyalty.points_account IS
	'Points account of each customer (created by the first credit): settled balance, debt, lifetime and qualifying totals, tier';
COMMENT ON COLUMN loyalty.points_account.available IS
	'Spendable points as last settled; points_balance() also counts lots that became available or expired since';
COMMENT ON COLUMN loyalty.points_account.pending IS 'Points earned but not yet available (return window), as last settled';
COMMENT ON COLUMN loyalty.points_account.debt IS
	'Points taken back by reversals after they were spent; repaid first from the next credits (never with open lots)';
COMMENT ON COLUMN loyalty.points_account.lifetime_earned IS 'Points ever earned, net of reversals';
COMMENT ON COLUMN loyalty.points_account.qualifying IS 'Qualifying points ever earned, net of reversals';
COMMENT ON COLUMN loyalty.points_account.qualifying_spend IS 'Order amounts ever earned on, net of reversals';
COMMENT ON COLUMN loyalty.points_account.below_since IS
	'When evaluate_tiers first found the customer below the threshold of their tier (grace period start)';
COMMENT ON COLUMN loyalty.points_account.next_event_at IS
	'No later than the first time a lot of the account becomes available or expires; settling is due from then';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_account', '');
SELECT loyalty._register_relation('admin', 'loyalty.points_account');

CREATE TABLE loyalty.points_lot (
	lot_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id	text NOT NULL,
	state		text NOT NULL,
	points		bigint NOT NULL,
	remaining	bigint NOT NULL,
	expired		bigint NOT NULL DEFAULT 0,
	earned_at	timestamptz NOT NULL,
	available_at timestamptz,
	expires_at	timestamptz,
	-- (see points_account_check; check_integrity() verifies the rest)
	CONSTRAINT points_lot_check CHECK (remaining >= 0 AND remaining <= points)
) WITH (fillfactor = 90);

CREATE INDEX points_lot_open_idx ON loyalty.points_lot (customer_id) WHERE state <> 'closed';

COMMENT ON TABLE loyalty.points_lot IS
	'Credited points: one lot per earning (or returned spend), consumed first in, first out: soonest expiry first (never-expiring last), then earliest earned, then lot_id';
COMMENT ON COLUMN loyalty.points_lot.state IS
	'pending (not yet available), available, closed (consumed, expired or taken back); as last settled';
COMMENT ON COLUMN loyalty.points_lot.points IS 'Points credited to the lot';
COMMENT ON COLUMN loyalty.points_lot.remaining IS 'Points of the lot not yet spent, expired or taken back';
COMMENT ON COLUMN loyalty.points_lot.expired IS 'Points of the lot that expired';
COMMENT ON COLUMN loyalty.points_lot.available_at IS 'When pending points become available (NULL: at once)';
COMMENT ON COLUMN loyalty.points_lot.expires_at IS 'When the remaining points expire (NULL: never)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_lot', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.points_lot', 'lot_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.points_lot');

CREATE TABLE loyalty.points_ledger (
	entry_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id		text NOT NULL,
	kind			text NOT NULL,
	points			bigint NOT NULL,
	reference		text,
	reason			text,
	qualifying		bigint NOT NULL DEFAULT 0,
	amount			numeric,
	debt_change		bigint NOT NULL DEFAULT 0,
	lot_ids			bigint[],
	lot_points		bigint[],
	reverses		bigint[],
	detail			jsonb,
	request_hash	bigint,
	available_after	bigint NOT NULL,
	pending_after	bigint NOT NULL,
	debt_after		bigint NOT NULL,
	effective_at	timestamptz NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
	-- no CHECK: only the C functions write it, and check_integrity()
	-- verifies every entry (see points_account_check)
);

CREATE UNIQUE INDEX points_ledger_reference_key ON loyalty.points_ledger (reference, kind);
CREATE INDEX points_ledger_customer_idx ON loyalty.points_ledger (customer_id, entry_id);

COMMENT ON TABLE loyalty.points_ledger IS
	'Append-only points ledger (no role may update, delete or truncate it): sum(points) per customer = available + pending - debt';
COMMENT ON COLUMN loyalty.points_ledger.points IS
	'Signed effect on available + pending - debt: earn +, spend -, expire -, reverse and adjust either';
COMMENT ON COLUMN loyalty.points_ledger.reference IS
	'Caller reference (order id or idempotency key), unique per kind; NULL only for expiries';
COMMENT ON COLUMN loyalty.points_ledger.qualifying IS 'Change of qualifying points (earn +, reverse -)';
COMMENT ON COLUMN loyalty.points_ledger.amount IS 'Change of qualifying spend (earn_for_order +, reverse -)';
COMMENT ON COLUMN loyalty.points_ledger.debt_change IS 'Change of the debt (reverse +, repayment by a credit -)';
COMMENT ON COLUMN loyalty.points_ledger.lot_ids IS 'Lots whose remaining points the entry changed';
COMMENT ON COLUMN loyalty.points_ledger.lot_points IS
	'Signed change of each lot in lot_ids; points = sum(lot_points) - debt_change';
COMMENT ON COLUMN loyalty.points_ledger.reverses IS 'Entries a reverse entry reverses';
COMMENT ON COLUMN loyalty.points_ledger.detail IS 'Earning rules applied, with their points and cap periods';
COMMENT ON COLUMN loyalty.points_ledger.request_hash IS
	'Fingerprint of the request (customer, kind, arguments); a repeat must match it';
COMMENT ON COLUMN loyalty.points_ledger.effective_at IS 'Business time of the entry (the call''s at / as_of)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_ledger', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.points_ledger', 'entry_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.points_ledger');

CREATE TABLE loyalty.points_qualifying (
	customer_id	text NOT NULL,
	month		date NOT NULL,
	points		bigint NOT NULL DEFAULT 0,
	spend		numeric NOT NULL DEFAULT 0,
	PRIMARY KEY (customer_id, month)
);

COMMENT ON TABLE loyalty.points_qualifying IS
	'Qualifying points and spend per customer and calendar month (program time zone) of earning, net of reversals';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_qualifying', '');
SELECT loyalty._register_relation('admin', 'loyalty.points_qualifying');

CREATE TABLE loyalty.earning_rule (
	rule_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL UNIQUE CHECK (name <> ''),
	event			text NOT NULL CHECK (event ~ '^[a-z][a-z0-9_]*$'),
	points_per_unit	numeric NOT NULL DEFAULT 0 CHECK (points_per_unit >= 0),
	fixed_points	bigint NOT NULL DEFAULT 0 CHECK (fixed_points >= 0),
	multiplier		numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0 AND multiplier <= 100),
	apply_tier_multiplier boolean NOT NULL DEFAULT true,
	currency		text,
	min_amount		numeric CHECK (min_amount >= 0),
	cap_points		bigint CHECK (cap_points > 0),
	cap_period		text CHECK (cap_period IN ('day', 'week', 'month', 'year', 'lifetime')),
	valid_from		timestamptz,
	valid_until		timestamptz,
	weekdays		smallint[]
		CHECK (weekdays <@ '{1,2,3,4,5,6,7}'::smallint[] AND pg_catalog.cardinality(weekdays) > 0),
	pending_days	integer NOT NULL DEFAULT 0 CHECK (pending_days BETWEEN 0 AND 3660),
	expiry_months	integer CHECK (expiry_months BETWEEN 0 AND 1200),
	expiry_rounding	text NOT NULL DEFAULT 'none'
		CHECK (expiry_rounding IN ('none', 'month', 'year')),
	qualifying		boolean NOT NULL DEFAULT true,
	active			boolean NOT NULL DEFAULT true,
	description		text,
	CONSTRAINT earning_rule_cap_check CHECK ((cap_points IS NULL) = (cap_period IS NULL)),
	CONSTRAINT earning_rule_window_check CHECK (valid_until > valid_from),
	CONSTRAINT earning_rule_amount_only_for_purchase
		CHECK (event = 'purchase' OR (points_per_unit = 0 AND min_amount IS NULL AND currency IS NULL)),
	CONSTRAINT earning_rule_gives_points CHECK (points_per_unit > 0 OR fixed_points > 0)
);

CREATE INDEX earning_rule_event_idx ON loyalty.earning_rule (event) WHERE active;

COMMENT ON TABLE loyalty.earning_rule IS
	'How orders (event purchase) and actions (review, referral, signup, birthday, ...) earn points; every active rule of the event that matches adds its points';
COMMENT ON COLUMN loyalty.earning_rule.event IS
	'purchase (earn_for_order) or an action name (earn_for_action)';
COMMENT ON COLUMN loyalty.earning_rule.points_per_unit IS 'Points per currency unit of the order amount (purchase only)';
COMMENT ON COLUMN loyalty.earning_rule.fixed_points IS 'Points per order or action';
COMMENT ON COLUMN loyalty.earning_rule.multiplier IS
	'Promotion factor, e.g. 2 for double points; the rule earns floor((amount * points_per_unit + fixed_points) * multiplier * tier multiplier)';
COMMENT ON COLUMN loyalty.earning_rule.apply_tier_multiplier IS 'Multiply by the customer''s tier multiplier';
COMMENT ON COLUMN loyalty.earning_rule.currency IS 'Only orders in this currency (NULL: any)';
COMMENT ON COLUMN loyalty.earning_rule.min_amount IS 'Only orders of at least this amount';
COMMENT ON COLUMN loyalty.earning_rule.cap_points IS 'Most points the rule gives one customer per cap_period';
COMMENT ON COLUMN loyalty.earning_rule.cap_period IS
	'day, week (ISO, from Monday), month, year (calendar, program time zone) or lifetime';
COMMENT ON COLUMN loyalty.earning_rule.valid_from IS 'Active from (inclusive; NULL: always)';
COMMENT ON COLUMN loyalty.earning_rule.valid_until IS 'Active until (exclusive; NULL: always)';
COMMENT ON COLUMN loyalty.earning_rule.weekdays IS 'Only on these ISO weekdays (1 = Monday, 7 = Sunday) in the program time zone';
COMMENT ON COLUMN loyalty.earning_rule.pending_days IS 'Points stay pending this many days (e.g. the return window)';
COMMENT ON COLUMN loyalty.earning_rule.expiry_months IS 'Expiry in months after earning; 0 = never; NULL = the program default';
COMMENT ON COLUMN loyalty.earning_rule.expiry_rounding IS 'none, or the end of the month / year the expiry falls in';
COMMENT ON COLUMN loyalty.earning_rule.qualifying IS 'Points count towards tiers';

SELECT pg_catalog.pg_extension_config_dump('loyalty.earning_rule', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.earning_rule', 'rule_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.earning_rule', 'SELECT, INSERT, UPDATE, DELETE');

CREATE TABLE loyalty.points_rule_usage (
	customer_id	text NOT NULL,
	rule_id		bigint NOT NULL,
	period_start date NOT NULL,
	points		bigint NOT NULL CHECK (points >= 0),
	PRIMARY KEY (customer_id, rule_id, period_start)
);

COMMENT ON TABLE loyalty.points_rule_usage IS
	'Points each capped earning rule gave each customer per cap period (period_start -infinity for lifetime caps), net of reversals';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_rule_usage', '');
SELECT loyalty._register_relation('admin', 'loyalty.points_rule_usage');

CREATE TABLE loyalty.tier_history (
	history_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id	text NOT NULL,
	changed_at	timestamptz NOT NULL,
	from_tier	text,
	to_tier		text,
	change		text NOT NULL CHECK (change IN ('initial', 'upgrade', 'downgrade')),
	qualifying	numeric,
	recorded_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX tier_history_customer_idx ON loyalty.tier_history (customer_id, history_id);

COMMENT ON TABLE loyalty.tier_history IS
	'Every change of a customer''s tier: initial (first account), upgrade (at once when earning, or at evaluation), downgrade (at evaluation)';
COMMENT ON COLUMN loyalty.tier_history.qualifying IS 'Qualifying value (points or spend in the window) that decided the change';

SELECT pg_catalog.pg_extension_config_dump('loyalty.tier_history', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.tier_history', 'history_id'), '');
SELECT loyalty._register_relation('admin', 'loyalty.tier_history');

/* settings and ladder are cached per session (points_config.c) */

CREATE FUNCTION loyalty._points_config_invalidate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'points_config_invalidate'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._points_config_invalidate() IS
	'Internal: drop the cached points settings and tier ladder in every session when they change';

CREATE TRIGGER tier_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.tier
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_config_invalidate();
CREATE TRIGGER points_program_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.points_program
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_config_invalidate();

COMMENT ON TRIGGER tier_config_changed ON loyalty.tier IS
	'Drop the cached tier ladder in every session when it changes';
COMMENT ON TRIGGER points_program_changed ON loyalty.points_program IS
	'Drop the cached points settings in every session when they change';

/* the ledger is append-only, for every role including the owner */

CREATE FUNCTION loyalty._points_ledger_immutable()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'loyalty.points_ledger is append-only: % is not allowed', TG_OP
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = 'Ledger entries are never changed or removed.',
			  HINT = 'Correct a balance with loyalty.adjust_points() or loyalty.reverse_points(), which add entries.';
END;
$$;

COMMENT ON FUNCTION loyalty._points_ledger_immutable() IS
	'Internal: refuse UPDATE, DELETE and TRUNCATE of the points ledger';

CREATE TRIGGER points_ledger_no_update
	BEFORE UPDATE OR DELETE ON loyalty.points_ledger
	FOR EACH ROW EXECUTE FUNCTION loyalty._points_ledger_immutable();
CREATE TRIGGER points_ledger_no_truncate
	BEFORE TRUNCATE ON loyalty.points_ledger
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_ledger_immutable();
COMMENT ON TRIGGER points_ledger_no_update ON loyalty.points_ledger IS
	'The ledger is append-only: no UPDATE or DELETE, for any role';
COMMENT ON TRIGGER points_ledger_no_truncate ON loyalty.points_ledger IS
	'The ledger is append-only: no TRUNCATE, for any role';
-- also with session_replication_role = replica
ALTER TABLE loyalty.points_ledger ENABLE ALWAYS TRIGGER points_ledger_no_update;
ALTER TABLE loyalty.points_ledger ENABLE ALWAYS TRIGGER points_ledger_no_truncate;
-- and no privilege to try, not even for the owner
REVOKE UPDATE, DELETE, TRUNCATE ON loyalty.points_ledger FROM CURRENT_USER;

/* the tier ladder must rise: a higher rank needs a higher threshold */

CREATE FUNCTION loyalty._tier_ladder_check()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lo record;
BEGIN
	SELECT a.name AS low, b.name AS high, a.threshold AS low_threshold, b.threshold AS high_threshold
	INTO lo
	FROM loyalty.tier a JOIN loyalty.tier b ON b.rank > a.rank AND b.threshold <= a.threshold
	LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'tier "%" ranks above "%" but does not need more (% <= %)',
			lo.high, lo.low, lo.high_threshold, lo.low_threshold
			USING ERRCODE = 'check_violation',
				  HINT = 'Thresholds must rise strictly with rank.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._tier_ladder_check() IS
	'Internal: thresholds of the tier ladder rise strictly with rank';

CREATE CONSTRAINT TRIGGER tier_ladder_check
	AFTER INSERT OR UPDATE ON loyalty.tier
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION loyalty._tier_ladder_check();

COMMENT ON TRIGGER tier_ladder_check ON loyalty.tier IS
	'At commit: thresholds rise strictly with rank';

/* functions: the API, in C (points.c, points_rules.c, points_reverse.c, points_expire.c) */

CREATE FUNCTION loyalty.earn_points(customer_id text, points bigint, reference text,
									reason text DEFAULT NULL,
									pending_until timestamptz DEFAULT NULL,
									expires_at timestamptz DEFAULT NULL,
									qualifying boolean DEFAULT true,
									at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_earn'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz) IS
	'Credit points to a customer (account created on first credit), pending until pending_until, expiring at expires_at (NULL: program default; infinity: never); idempotent on reference';
SELECT loyalty._register_function('app', 'loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz)');

CREATE FUNCTION loyalty.spend_points(customer_id text, points bigint, reference text,
									 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_spend'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.spend_points(text, bigint, text, timestamptz) IS
	'Spend available points first in, first out; SQLSTATE LP001 when the balance is short; idempotent on reference';
SELECT loyalty._register_function('app', 'loyalty.spend_points(text, bigint, text, timestamptz)');

CREATE FUNCTION loyalty.earn_for_order(customer_id text, reference text, amount numeric,
									   currency text DEFAULT NULL,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_earn_for_order'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.earn_for_order(text, text, numeric, text, timestamptz) IS
	'Earn the points of an order by the active purchase rules (tier multiplier, minimum amount, caps, windows); the amount counts as qualifying spend; idempotent on reference';
SELECT loyalty._register_function('app', 'loyalty.earn_for_order(text, text, numeric, text, timestamptz)');

CREATE FUNCTION loyalty.earn_for_action(customer_id text, action text, reference text,
										at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_earn_for_action'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.earn_for_action(text, text, text, timestamptz) IS
	'Earn the points of an action (review, referral, signup, birthday, ...) by its active rules; SQLSTATE LP004 when no rule names the action; idempotent on reference';
SELECT loyalty._register_function('app', 'loyalty.earn_for_action(text, text, text, timestamptz)');

CREATE FUNCTION loyalty.reverse_points(reference text, customer_id text DEFAULT NULL,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_reverse'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.reverse_points(text, text, timestamptz) IS
	'Refund: take back the points earned under a reference (clawing back or recording debt when already spent) and return the points spent under it; idempotent';
SELECT loyalty._register_function('app', 'loyalty.reverse_points(text, text, timestamptz)');

CREATE FUNCTION loyalty.adjust_points(customer_id text, points bigint, reference text, reason text,
									  expires_at timestamptz DEFAULT NULL,
									  at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_adjust'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz) IS
	'Manual correction: credit (points > 0, non-qualifying) or take back (points < 0: available, then pending, then debt); reason required; idempotent on reference';
SELECT loyalty._register_function('admin', 'loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz)');

CREATE FUNCTION loyalty.points_balance(customer_id text, at timestamptz DEFAULT pg_catalog.now(),
									   OUT available bigint, OUT pending bigint, OUT debt bigint,
									   OUT next_expiry_date date, OUT next_expiry_points bigint,
									   OUT tier text)
RETURNS record
AS 'MODULE_PATHNAME', 'points_balance'
LANGUAGE C STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp;

/*
 * PARALLEL RESTRICTED: it may load the per-session settings cache, which
 * takes a new snapshot (not allowed in a parallel worker).
 */
COMMENT ON FUNCTION loyalty.points_balance(text, timestamptz) IS
	'Balance at a time, exact without any batch job: available and pending points, debt, the next expiry date (program time zone) and the points expiring that day, tier';
SELECT loyalty._register_function('app', 'loyalty.points_balance(text, timestamptz)');

CREATE FUNCTION loyalty.expire_points(as_of timestamptz DEFAULT pg_catalog.now(),
									  max_accounts integer DEFAULT NULL,
									  OUT accounts bigint, OUT expired_lots bigint,
									  OUT expired_points bigint, OUT activated_points bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'points_expire'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.expire_points(timestamptz, integer) IS
	'Settle accounts with lots due by as_of (expiry ledger entries, pending lots made available), at most max_accounts (NULL: all); accounts locked by others are skipped';
SELECT loyalty._register_function('admin', 'loyalty.expire_points(timestamptz, integer)');

/*
 * Not SECURITY DEFINER and without SET clauses: either would forbid the
 * COMMIT between batches.  Every name is qualified.
 */
CREATE PROCEDURE loyalty.run_points_maintenance(batch_size integer DEFAULT 10000,
												as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	t timestamptz := COALESCE(as_of, pg_catalog.now());
	r record;
BEGIN
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be a positive integer'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	LOOP
		SELECT * INTO r FROM loyalty.expire_points(t, batch_size);
		COMMIT;
		EXIT WHEN r.accounts < batch_size;
	END LOOP;
END;
$$;

COMMENT ON PROCEDURE loyalty.run_points_maintenance(integer, timestamptz) IS
	'For cron / pg_cron: settle every due account (expiries, pending lots) in transactions of at most batch_size accounts';
REVOKE EXECUTE ON PROCEDURE loyalty.run_points_maintenance(integer, timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin', 'loyalty.run_points_maintenance(integer, timestamptz)');

/* ---------------------------------------------------------------------------
 * points_tier.sql: tier progress and evaluation, the integrity check, views
 *
 * Upgrades happen at once inside the earning transaction (points.c).
 * Downgrades happen only in loyalty.evaluate_tiers(): the first evaluation
 * that finds a customer below the threshold of their tier starts the grace
 * period (below_since); an evaluation at least tier_grace_days later that
 * still finds them below moves them down one step, and if they are below the
 * new tier too, a new grace period starts there.  Evaluation also upgrades
 * (by any number of steps), e.g. after thresholds were lowered.
 * ------------------------------------------------------------------------ */

/* functions */

/*
 * The qualifying value a tier is judged on: points or spend (tier_basis),
 * since the first earning or in the rolling window of tier_window_months
 * calendar months (program time zone) ending with the month of as_of.
 */
CREATE FUNCTION loyalty._points_tier_value(customer_id text, as_of timestamptz)
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN p.tier_window_months IS NULL THEN
			CASE WHEN p.tier_basis = 'spend' THEN a.qualifying_spend ELSE a.qualifying END
		ELSE
			(SELECT coalesce(sum(CASE WHEN p.tier_basis = 'spend' THEN q.spend ELSE q.points END), 0)
			 FROM loyalty.points_qualifying q
			 WHERE q.customer_id = a.customer_id
			   AND q.month BETWEEN (date_trunc('month', $2 AT TIME ZONE p.timezone)
									- make_interval(months => p.tier_window_months - 1))::date
							   AND date_trunc('month', $2 AT TIME ZONE p.timezone)::date)
		END
	FROM loyalty.points_account a
	LEFT JOIN (SELECT coalesce(pp.timezone, 'UTC') AS timezone,
					  coalesce(pp.tier_basis, 'points') AS tier_basis,
					  pp.tier_window_months
			   FROM (SELECT 1) one LEFT JOIN loyalty.points_program pp ON true) p ON true
	WHERE a.customer_id = $1
$$;

COMMENT ON FUNCTION loyalty._points_tier_value(text, timestamptz) IS
	'Internal: qualifying points or spend of a customer in the tier window ending at as_of';

CREATE FUNCTION loyalty.tier_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now(),
									  OUT tier text, OUT qualifying numeric, OUT basis text,
									  OUT next_tier text, OUT missing numeric,
									  OUT keeps_tier boolean, OUT message text)
RETURNS record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
	nxt record;
BEGIN
	IF tier_progress.customer_id IS NULL OR tier_progress.at IS NULL THEN
		RAISE EXCEPTION 'customer_id and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT coalesce(p.tier_basis, 'points') INTO basis
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT a.tier, t.rank, t.threshold INTO cur
	FROM loyalty.points_account a LEFT JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = tier_progress.customer_id;
	tier := cur.tier;
	qualifying := trim_scale(coalesce(loyalty._points_tier_value(tier_progress.customer_id, tier_progress.at), 0));
	keeps_tier := cur.threshold IS NULL OR qualifying >= cur.threshold;

	SELECT n.name, n.threshold INTO nxt
	FROM loyalty.tier n
	WHERE (cur.rank IS NULL AND n.threshold > 0) OR n.rank > cur.rank
	ORDER BY n.rank LIMIT 1;
	IF FOUND THEN
		next_tier := nxt.name;
		missing := trim_scale(greatest(nxt.threshold - qualifying, 0));
	END IF;
	IF NOT keeps_tier THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to keep %s' ELSE '%s more spend to keep %s' END,
						  trim_scale(cur.threshold - qualifying), tier);
	ELSIF next_tier IS NOT NULL THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to %s' ELSE '%s more spend to %s' END,
						  missing, next_tier);
	ELSIF tier IS NOT NULL THEN
		message := format('top tier %s reached', tier);
	ELSE
		message := 'no tiers configured';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty.tier_progress(text, timestamptz) IS
	'Tier of a customer, qualifying points (or spend) in the window, the next tier and what is missing ("120 points to Gold"), whether the current tier''s threshold is still met (else the message says what keeps it)';
SELECT loyalty._register_function('app', 'loyalty.tier_progress(text, timestamptz)');

/*
 * One batch of tier evaluation: the next batch_size accounts after
 * after_customer (in customer_id order) are locked first, then judged in a
 * second statement whose snapshot sees every change committed before the
 * locks were granted.
 */
CREATE FUNCTION loyalty.evaluate_tiers_batch(as_of timestamptz, after_customer text, batch_size integer,
											 OUT last_customer text, OUT accounts integer,
											 OUT upgrades integer, OUT downgrades integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids text[];
	grace interval;
BEGIN
	IF as_of IS NULL OR batch_size IS NULL THEN
		RAISE EXCEPTION 'as_of and batch_size must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be positive, not %', batch_size
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT make_interval(days => coalesce(p.tier_grace_days, 30)) INTO grace
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT array_agg(s.customer_id ORDER BY s.customer_id) INTO ids
	FROM (SELECT a.customer_id FROM loyalty.points_account a
		  WHERE after_customer IS NULL OR a.customer_id > after_customer
		  ORDER BY a.customer_id LIMIT batch_size
		  FOR NO KEY UPDATE) s;
	accounts := coalesce(cardinality(ids), 0);
	last_customer := ids[accounts];
	upgrades := 0;
	downgrades := 0;
	IF accounts = 0 THEN
		RETURN;
	END IF;

	WITH judged AS (
		SELECT a.customer_id, a.tier, a.below_since, cur.rank, cur.threshold,
			   v.value, target.name AS target, target.rank AS target_rank,
			   down.name AS down, down.threshold AS down_threshold
		FROM loyalty.points_account a
		LEFT JOIN loyalty.tier cur ON cur.name = a.tier
		CROSS JOIN LATERAL (SELECT coalesce(loyalty._points_tier_value(a.customer_id, as_of), 0) AS value) v
		LEFT JOIN LATERAL (SELECT t.name, t.rank FROM loyalty.tier t WHERE t.threshold <= v.value
						   ORDER BY t.rank DESC LIMIT 1) target ON true
		LEFT JOIN LATERAL (SELECT t.name, t.threshold FROM loyalty.tier t WHERE t.rank < cur.rank
						   ORDER BY t.rank DESC LIMIT 1) down ON true
		WHERE a.customer_id = ANY (ids)
	), decided AS (
		SELECT j.*,
			   CASE
				   WHEN j.target IS NOT NULL AND (j.rank IS NULL OR j.target_rank > j.rank) THEN 'upgrade'
				   WHEN j.rank IS NOT NULL AND (j.target IS NULL OR j.target_rank < j.rank)
						AND coalesce(j.below_since, as_of) <= as_of - grace THEN 'downgrade'
			   END AS change
		FROM judged j
	), outcome AS (
		SELECT d.customer_id, d.tier AS from_tier, d.value, d.change,
			   CASE d.change WHEN 'upgrade' THEN d.target WHEN 'downgrade' THEN d.down ELSE d.tier END AS new_tier,
			   CASE
				   WHEN d.change = 'upgrade' THEN NULL
				   WHEN d.change = 'downgrade' THEN
					   CASE WHEN d.down IS NOT NULL AND d.value < d.down_threshold THEN as_of END
				   WHEN d.rank IS NOT NULL AND (d.target IS NULL OR d.target_rank < d.rank)
					   THEN coalesce(d.below_since, as_of)
			   END AS new_below_since
		FROM decided d
	), updated AS (
		UPDATE loyalty.points_account a
		SET tier = o.new_tier,
			tier_since = CASE WHEN o.change IS NOT NULL THEN as_of ELSE a.tier_since END,
			below_since = o.new_below_since,
			updated_at = now()
		FROM outcome o
		WHERE a.customer_id = o.customer_id
		  AND (a.tier IS DISTINCT FROM o.new_tier OR a.below_since IS DISTINCT FROM o.new_below_since)
	), history AS (
		INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)
		SELECT o.customer_id, as_of, o.from_tier, o.new_tier, o.change, o.value
		FROM outcome o WHERE o.change IS NOT NULL
	)
	SELECT count(*) FILTER (WHERE o.change = 'upgrade'), count(*) FILTER (WHERE o.change = 'downgrade')
	INTO upgrades, downgrades
	FROM outcome o;
END;
$$;

COMMENT ON FUNCTION loyalty.evaluate_tiers_batch(timestamptz, text, integer) IS
	'One batch of evaluate_tiers: judge the next batch_size accounts after after_customer; returns the last one and the counts';
SELECT loyalty._register_function('admin', 'loyalty.evaluate_tiers_batch(timestamptz, text, integer)');

/* no SECURITY DEFINER and no SET clause: both would forbid COMMIT */
CREATE PROCEDURE loyalty.evaluate_tiers(as_of timestamptz DEFAULT NULL, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
	t timestamptz := COALESCE(as_of, pg_catalog.now());
	last text;
	r record;
	up bigint := 0;
	down bigint := 0;
BEGIN
	LOOP
		SELECT * INTO r FROM loyalty.evaluate_tiers_batch(t, last, batch_size);
		COMMIT;
		up := up + r.upgrades;
		down := down + r.downgrades;
		EXIT WHEN r.accounts < batch_size;
		last := r.last_customer;
	END LOOP;
	RAISE NOTICE 'tier evaluation as of %: % upgrades, % downgrades', t, up, down;
END;
$$;

COMMENT ON PROCEDURE loyalty.evaluate_tiers(timestamptz, integer) IS
	'For cron / pg_cron: upgrade customers who qualify for a higher tier, and move customers below their tier''s threshold for longer than the grace period down one step; commits every batch_size accounts';
REVOKE EXECUTE ON PROCEDURE loyalty.evaluate_tiers(timestamptz, integer) FROM PUBLIC;
SELECT loyalty._register_function('admin', 'loyalty.evaluate_tiers(timestamptz, integer)');

/*
 * Every violation of the ledger's invariants; empty on a healthy database.
 * Reads everything (one scan of each table): run it off-peak on big data.
 */
CREATE FUNCTION loyalty.check_integrity()
RETURNS TABLE (problem text, customer_id text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH lot_sums AS (
		SELECT l.customer_id,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'available'), 0) AS available,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'pending'), 0) AS pending,
			   min(LEAST(CASE WHEN l.state = 'pending' THEN l.available_at END, l.expires_at))
				   FILTER (WHERE l.state <> 'closed') AS next_event
		FROM loyalty.points_lot l GROUP BY l.customer_id
	), ledger_sums AS (
		SELECT e.customer_id, sum(e.points) AS points, sum(e.debt_change) AS debt,
			   sum(e.qualifying) AS qualifying, coalesce(sum(e.amount), 0) AS spend,
			   coalesce(sum(e.points) FILTER (WHERE e.kind = 'earn'), 0) AS earned
		FROM loyalty.points_ledger e GROUP BY e.customer_id
	), reversed_earnings AS (
		SELECT e.customer_id, sum(e.points) AS points
		FROM loyalty.points_ledger e
		WHERE e.kind = 'earn'
		  AND e.entry_id IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')
		GROUP BY e.customer_id
	), moves AS (
		SELECT m.lot_id, sum(m.delta) AS delta,
			   sum(-m.delta) FILTER (WHERE m.kind = 'expire') AS expired
		FROM (SELECT e.kind, u.lot_id, u.delta
			  FROM loyalty.points_ledger e, unnest(e.lot_ids, e.lot_points) AS u(lot_id, delta)) m
		GROUP BY m.lot_id
	), buckets AS (
		SELECT q.customer_id, sum(q.points) AS points, sum(q.spend) AS spend
		FROM loyalty.points_qualifying q GROUP BY q.customer_id
	), last_tier AS (
		SELECT DISTINCT ON (h.customer_id) h.customer_id, h.to_tier
		FROM loyalty.tier_history h ORDER BY h.customer_id, h.history_id DESC
	)
	SELECT 'negative balance', a.customer_id,
		   format('available %s, pending %s, debt %s', a.available, a.pending, a.debt)
	FROM loyalty.points_account a
	WHERE a.available < 0 OR a.pending < 0 OR a.debt < 0
	UNION ALL
	SELECT 'balance differs from open lots', a.customer_id,
		   format('account available %s / pending %s, lots %s / %s',
				  a.available, a.pending, coalesce(s.available, 0), coalesce(s.pending, 0))
	FROM loyalty.points_account a LEFT JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE a.available <> coalesce(s.available, 0) OR a.pending <> coalesce(s.pending, 0)
	UNION ALL
	SELECT 'balance differs from ledger', a.customer_id,
		   format('available + pending - debt = %s, ledger sum %s',
				  a.available + a.pending - a.debt, coalesce(g.points, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.available + a.pending - a.debt <> coalesce(g.points, 0)
	UNION ALL
	SELECT 'debt differs from ledger', a.customer_id,
		   format('debt %s, ledger debt changes %s', a.debt, coalesce(g.debt, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.debt <> coalesce(g.debt, 0)
	UNION ALL
	SELECT 'debt with open lots', a.customer_id,
		   format('debt %s while %s points are open', a.debt, a.available + a.pending)
	FROM loyalty.points_account a
	WHERE a.debt > 0 AND (a.available > 0 OR a.pending > 0
						  OR EXISTS (SELECT 1 FROM loyalty.points_lot l
									 WHERE l.customer_id = a.customer_id AND l.state <> 'closed'))
	UNION ALL
	SELECT 'totals differ from ledger', a.customer_id,
		   format('lifetime %s / qualifying %s / spend %s, ledger %s / %s / %s',
				  a.lifetime_earned, a.qualifying, a.qualifying_spend,
				  coalesce(g.earned, 0) - coalesce(r.points, 0), coalesce(g.qualifying, 0), coalesce(g.spend, 0))
	FROM loyalty.points_account a
	LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	LEFT JOIN reversed_earnings r ON r.customer_id = a.customer_id
	WHERE a.lifetime_earned <> coalesce(g.earned, 0) - coalesce(r.points, 0)
	   OR a.qualifying <> coalesce(g.qualifying, 0)
	   OR a.qualifying_spend <> coalesce(g.spend, 0)
	UNION ALL
	SELECT 'qualifying buckets differ from account', a.customer_id,
		   format('account %s / %s, monthly buckets %s / %s',
				  a.qualifying, a.qualifying_spend, coalesce(b.points, 0), coalesce(b.spend, 0))
	FROM loyalty.points_account a LEFT JOIN buckets b ON b.customer_id = a.customer_id
	WHERE a.qualifying <> coalesce(b.points, 0) OR a.qualifying_spend <> coalesce(b.spend, 0)
	UNION ALL
	SELECT 'settling hint too late', a.customer_id,
		   format('next_event_at %s, first lot event %s', a.next_event_at, s.next_event)
	FROM loyalty.points_account a JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE s.next_event IS NOT NULL AND (a.next_event_at IS NULL OR a.next_event_at > s.next_event)
	UNION ALL
	SELECT 'lot differs from ledger', l.customer_id,
		   format('lot %s: remaining %s, expired %s; ledger changes %s, expiries %s',
				  l.lot_id, l.remaining, l.expired, coalesce(m.delta, 0), coalesce(m.expired, 0))
	FROM loyalty.points_lot l LEFT JOIN moves m ON m.lot_id = l.lot_id
	WHERE l.remaining <> coalesce(m.delta, 0) OR l.expired <> coalesce(m.expired, 0)
	   OR l.remaining + l.expired > l.points
	UNION ALL
	SELECT 'malformed lot', l.customer_id, format('lot %s (%s, %s of %s points)', l.lot_id, l.state, l.remaining, l.points)
	FROM loyalty.points_lot l
	WHERE l.state NOT IN ('pending', 'available', 'closed') OR l.points <= 0 OR l.expired < 0
	   OR (l.state = 'closed') <> (l.remaining = 0)
	   OR (l.state = 'pending' AND l.available_at IS NULL)
	   OR l.available_at >= l.expires_at
	UNION ALL
	SELECT 'malformed ledger entry', e.customer_id, format('entry %s (%s)', e.entry_id, e.kind)
	FROM loyalty.points_ledger e
	WHERE e.kind NOT IN ('earn', 'spend', 'expire', 'reverse', 'adjust')
	   OR (e.reference IS NULL) <> (e.kind = 'expire')
	   OR coalesce(cardinality(e.lot_ids) <> cardinality(e.lot_points),
				   (e.lot_ids IS NULL) <> (e.lot_points IS NULL))
	UNION ALL
	SELECT 'ledger entry inconsistent', e.customer_id,
		   format('entry %s: points %s, lot changes %s, debt change %s',
				  e.entry_id, e.points, coalesce(x.total, 0), e.debt_change)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL (SELECT sum(u) AS total FROM unnest(e.lot_points) u) x
	WHERE e.points <> coalesce(x.total, 0) - e.debt_change
	UNION ALL
	SELECT 'lot or entry without account', o.customer_id, o.what
	FROM (SELECT l.customer_id, format('lot %s', l.lot_id) AS what FROM loyalty.points_lot l
		  UNION ALL
		  SELECT e.customer_id, format('entry %s', e.entry_id) FROM loyalty.points_ledger e) o
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.points_account a WHERE a.customer_id = o.customer_id)
	UNION ALL
	SELECT 'lot of another customer', e.customer_id,
		   format('entry %s changes lot %s of customer %s', e.entry_id, l.lot_id, l.customer_id)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL unnest(e.lot_ids) AS u(lot_id)
	JOIN loyalty.points_lot l ON l.lot_id = u.lot_id
	WHERE l.customer_id <> e.customer_id
	UNION ALL
	SELECT 'duplicate reference', min(e.customer_id),
		   format('reference %s: %s entries of kind %s', e.reference, count(*), e.kind)
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL
	GROUP BY e.reference, e.kind HAVING count(*) > 1
	UNION ALL
	SELECT 'reference of several customers', min(e.customer_id),
		   format('reference %s used by %s customers', e.reference, count(DISTINCT e.customer_id))
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL AND e.kind <> 'adjust'
	GROUP BY e.reference HAVING count(DISTINCT e.customer_id) > 1
	UNION ALL
	SELECT 'tier differs from history', a.customer_id,
		   format('tier %s, last change to %s', a.tier, h.to_tier)
	FROM loyalty.points_account a JOIN last_tier h ON h.customer_id = a.customer_id
	WHERE a.tier IS DISTINCT FROM h.to_tier
	ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.check_integrity() IS
	'Every violation of the points invariants (balance = open lots = ledger sum, no negative balance, debt, well-formed lots and entries, references, totals, tiers); empty when healthy';
SELECT loyalty._register_function('admin', 'loyalty.check_integrity()');

/* views */

CREATE VIEW loyalty.tier_distribution AS
SELECT t.rank, t.name AS tier, count(a.customer_id) AS customers,
	   round(100.0 * count(a.customer_id) / nullif(sum(count(a.customer_id)) OVER (), 0), 1) AS share_pct
FROM loyalty.tier t
LEFT JOIN loyalty.points_account a ON a.tier = t.name
GROUP BY t.rank, t.name
UNION ALL
SELECT NULL, NULL, count(*), NULL
FROM loyalty.points_account a WHERE a.tier IS NULL
HAVING count(*) > 0;

COMMENT ON VIEW loyalty.tier_distribution IS
	'Customers per tier (share of customers with a tier), and those without a tier (tier NULL)';
SELECT loyalty._register_relation('analyst', 'loyalty.tier_distribution');

CREATE VIEW loyalty.points_liability AS
SELECT date_trunc('month', (l.expires_at - interval '1 microsecond') AT TIME ZONE p.timezone)::date AS expiry_month,
	   count(DISTINCT l.customer_id) AS customers,
	   sum(l.remaining) FILTER (WHERE l.state = 'available') AS available,
	   sum(l.remaining) FILTER (WHERE l.state = 'pending') AS pending
FROM loyalty.points_lot l
CROSS JOIN (SELECT coalesce(pp.timezone, 'UTC') AS timezone
			FROM (SELECT 1) one LEFT JOIN loyalty.points_program pp ON true) p
WHERE l.state <> 'closed'
GROUP BY 1;

COMMENT ON VIEW loyalty.points_liability IS
	'Outstanding points by the month of their last usable day (program time zone; NULL: never expire), as last settled: what the program owes and when it lapses';
SELECT loyalty._register_relation('analyst', 'loyalty.points_liability');

/* ---------------------------------------------------------------------------
 * points_coupon.sql: points and coupons together
 *
 *	- exchange: loyalty.points_reward offers a campaign's coupon for a number
 *	  of points; loyalty.exchange_points() spends them and issues a
 *	  single-use code bound to the customer, in the caller's transaction;
 *	- bonus: loyalty.coupon_bonus gives points for using a campaign's coupon;
 *	  loyalty.earn_coupon_bonus() credits them for an order's active
 *	  redemptions, in the same transaction as redeem_coupon();
 *	- tier eligibility: the coupon module's eligibility rule kind "tier",
 *	  answered from the customer's points tier.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.points_reward (
	campaign_id		bigint PRIMARY KEY,
	points			bigint NOT NULL CHECK (points > 0),
	code_pattern	text NOT NULL DEFAULT 'RWD-####-####',
	active			boolean NOT NULL DEFAULT true,
	description		text
);

COMMENT ON TABLE loyalty.points_reward IS
	'Reward catalogue: a coupon of the campaign costs this many points (exchange_points); codes are generated from code_pattern and bound to the customer';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_reward', '');
SELECT loyalty._register_relation('admin', 'loyalty.points_reward', 'SELECT, INSERT, UPDATE, DELETE');

CREATE TABLE loyalty.points_exchange (
	reference		text PRIMARY KEY,
	customer_id		text NOT NULL,
	campaign_id		bigint NOT NULL,
	points			bigint NOT NULL,
	coupon_id		bigint NOT NULL,
	code			text NOT NULL,
	entry_id		bigint NOT NULL,
	available_after	bigint NOT NULL,
	effective_at	timestamptz NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX points_exchange_customer_idx ON loyalty.points_exchange (customer_id);

COMMENT ON TABLE loyalty.points_exchange IS
	'Every exchange of points for a coupon: the spend entry (reference exchange:<reference>) and the code issued';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_exchange', '');
SELECT loyalty._register_relation('admin', 'loyalty.points_exchange');

CREATE TABLE loyalty.coupon_bonus (
	campaign_id		bigint PRIMARY KEY,
	points			bigint NOT NULL CHECK (points > 0),
	description		text
);

COMMENT ON TABLE loyalty.coupon_bonus IS
	'Bonus points for using a coupon of the campaign (earn_coupon_bonus); non-qualifying';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_bonus', '');
SELECT loyalty._register_relation('admin', 'loyalty.coupon_bonus', 'SELECT, INSERT, UPDATE, DELETE');

/* functions */

/*
 * Exchange points for a coupon.  The points are spent under reference
 * 'exchange:' || reference (locking the account, idempotent); the code is
 * generated only after the spend, so a repeat that waited for a concurrent
 * first call finds that call's exchange and returns it.  A spend under the
 * derived reference made by another call (not an exchange) is a conflict.
 */
CREATE FUNCTION loyalty.exchange_points(customer_id text, campaign_id bigint, reference text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT code text, OUT points bigint, OUT available bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	p_customer text := customer_id;
	p_campaign bigint := campaign_id;
	p_reference text := reference;
	reward record;
	camp record;
	ex record;
	spent record;
	issued record;
BEGIN
	IF p_customer IS NULL OR p_campaign IS NULL OR p_reference IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, campaign_id, reference and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF length(p_reference) NOT BETWEEN 1 AND 191 THEN
		RAISE EXCEPTION 'reference must have 1 to 191 characters'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	-- a repeat returns the first exchange
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;

	SELECT * INTO reward FROM loyalty.points_reward r WHERE r.campaign_id = p_campaign AND r.active;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % is not offered for points', p_campaign
			USING ERRCODE = 'LP007',
				  HINT = 'Offer it with a row in loyalty.points_reward.';
	END IF;
	SELECT c.paused, c.starts_at, c.ends_at INTO camp FROM loyalty.campaign c WHERE c.campaign_id = p_campaign;
	IF NOT FOUND OR camp.paused OR camp.ends_at <= at THEN
		RAISE EXCEPTION 'campaign % cannot be exchanged for points now', p_campaign
			USING ERRCODE = 'LP008',
				  DETAIL = CASE WHEN NOT FOUND THEN 'The campaign does not exist.'
								WHEN camp.paused THEN 'The campaign is paused.'
								ELSE 'The campaign has ended.' END;
	END IF;

	SELECT s.* INTO spent FROM loyalty.spend_points(p_customer, reward.points, 'exchange:' || p_reference, at) s;
	-- a concurrent first call with this reference committed while the spend waited
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;
	IF (SELECT e.created_at FROM loyalty.points_ledger e WHERE e.entry_id = spent.entry_id) <> now() THEN
		RAISE EXCEPTION 'reference "exchange:%" was already used by a spend that is not an exchange', p_reference
			USING ERRCODE = 'LP002';
	END IF;

	PERFORM loyalty.generate_codes(p_campaign, 1, reward.code_pattern, ARRAY[p_customer]);
	SELECT c.coupon_id, c.code::text AS code INTO issued
	FROM loyalty.coupon c
	WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer
	ORDER BY c.coupon_id DESC LIMIT 1;

	INSERT INTO loyalty.points_exchange (reference, customer_id, campaign_id, points, coupon_id, code,
										 entry_id, available_after, effective_at)
	VALUES (p_reference, p_customer, p_campaign, reward.points, issued.coupon_id, issued.code,
			spent.entry_id, spent.available, at);
	code := issued.code; points := reward.points; available := spent.available;
END;
$$;

COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended';
SELECT loyalty._register_function('app', 'loyalty.exchange_points(text, bigint, text, timestamptz)');

/*
 * Bonus points for the coupons an order used: the order's redemptions that
 * are not rolled back, by this customer, of campaigns with a bonus.  Credited
 * under reference order_ref || ':coupon-bonus', so a repeat returns the first
 * result and reverse_points(order_ref || ':coupon-bonus') takes the bonus
 * back on a refund.  NULL when no coupon of the order earns a bonus.
 */
CREATE FUNCTION loyalty.earn_coupon_bonus(customer_id text, order_ref text,
										  at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	total bigint;
	codes text;
	receipt loyalty.points_receipt;
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT sum(b.points), string_agg(c.code::text, ', ' ORDER BY c.code::text)
	INTO total, codes
	FROM loyalty.redemption r
	JOIN loyalty.coupon_bonus b ON b.campaign_id = r.campaign_id
	JOIN loyalty.coupon c ON c.coupon_id = r.coupon_id
	WHERE r.order_ref = earn_coupon_bonus.order_ref AND r.kind = 'redeem'
	  AND r.customer_id = earn_coupon_bonus.customer_id
	  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x WHERE x.reverses = r.redemption_id);
	IF total IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT * INTO receipt
	FROM loyalty.earn_points(earn_coupon_bonus.customer_id, total, earn_coupon_bonus.order_ref || ':coupon-bonus',
							 reason => 'coupon bonus: ' || codes, qualifying => false, at => at);
	RETURN receipt;
END;
$$;

COMMENT ON FUNCTION loyalty.earn_coupon_bonus(text, text, timestamptz) IS
	'Credit the bonus points (loyalty.coupon_bonus) of the coupons an order redeemed, under reference <order_ref>:coupon-bonus; NULL when none earns a bonus';
SELECT loyalty._register_function('app', 'loyalty.earn_coupon_bonus(text, text, timestamptz)');

/*
 * The coupon module's eligibility rule kind "tier": {"tiers": [...]} admits
 * the listed tiers, {"min_tier": "Gold"} that tier and every higher one.  A
 * customer without a points account has the tier a new account would get.
 */
CREATE FUNCTION loyalty._tier_eligible(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur_name text;
	cur_rank integer;
	min_rank integer;
	unknown text;
BEGIN
	SELECT a.tier, t.rank INTO cur_name, cur_rank
	FROM loyalty.points_account a LEFT JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = _tier_eligible.customer_id;
	IF NOT FOUND THEN
		SELECT t.name, t.rank INTO cur_name, cur_rank
		FROM loyalty.tier t WHERE t.threshold <= 0 ORDER BY t.rank DESC LIMIT 1;
	END IF;

	IF params ? 'min_tier' THEN
		SELECT t.rank INTO min_rank FROM loyalty.tier t WHERE t.name = params ->> 'min_tier';
		IF min_rank IS NULL THEN
			RAISE EXCEPTION 'tier rule names unknown tier "%"', params ->> 'min_tier'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Correct the campaign rule (tiers are in loyalty.tier).';
		END IF;
		RETURN coalesce(cur_rank >= min_rank, false);
	END IF;
	SELECT e INTO unknown FROM jsonb_array_elements_text(params -> 'tiers') e
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = e) LIMIT 1;
	IF unknown IS NOT NULL THEN
		RAISE EXCEPTION 'tier rule names unknown tier "%"', unknown
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Correct the campaign rule (tiers are in loyalty.tier).';
	END IF;
	RETURN coalesce(params -> 'tiers' ? cur_name, false);
END;
$$;

COMMENT ON FUNCTION loyalty._tier_eligible(text, jsonb, jsonb) IS
	'Internal: coupon eligibility rule kind "tier" ({"tiers": [...]} or {"min_tier": "..."}) from the points tier';

INSERT INTO loyalty.eligibility_kind (kind, check_function, builtin, description) VALUES
	('tier', 'loyalty._tier_eligible(text, jsonb, jsonb)', true,
	 'The customer''s points tier is one of params.tiers, or ranks at least params.min_tier (no points account: the tier a new account gets)');

/*
 * A tier rule's parameters are checked when the rule is added or changed:
 * their shape always, the tier names once a tier ladder exists (a restore
 * may load campaign rules before tiers; a name unknown at redemption time
 * is an error there).
 */
CREATE FUNCTION loyalty._tier_rule_check()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p jsonb := NEW.params;
	unknown text;
BEGIN
	IF NOT ((p ? 'tiers') <> (p ? 'min_tier'))
	   OR (p ? 'min_tier' AND jsonb_typeof(p -> 'min_tier') <> 'string')
	   OR (p ? 'tiers' AND (jsonb_typeof(p -> 'tiers') <> 'array' OR jsonb_array_length(p -> 'tiers') = 0
							OR EXISTS (SELECT 1 FROM jsonb_array_elements(p -> 'tiers') e
									   WHERE jsonb_typeof(e) <> 'string'))) THEN
		RAISE EXCEPTION 'tier rule params must be {"tiers": ["name", ...]} or {"min_tier": "name"}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- names are checked against the ladder once there is one: pg_restore
	-- may load the campaign rules before the tiers
	SELECT e INTO unknown
	FROM (SELECT p ->> 'min_tier' AS e UNION ALL SELECT jsonb_array_elements_text(p -> 'tiers')) s
	WHERE e IS NOT NULL AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = e)
	  AND EXISTS (SELECT 1 FROM loyalty.tier) LIMIT 1;
	IF unknown IS NOT NULL THEN
		RAISE EXCEPTION 'unknown tier "%" in tier rule', unknown
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Tiers are listed in loyalty.tier.';
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._tier_rule_check() IS
	'Internal: check the parameters of a coupon campaign''s tier rule when it is added or changed';

CREATE TRIGGER campaign_rule_tier_check
	BEFORE INSERT OR UPDATE ON loyalty.campaign_rule
	FOR EACH ROW WHEN (NEW.kind = 'tier')
	EXECUTE FUNCTION loyalty._tier_rule_check();

COMMENT ON TRIGGER campaign_rule_tier_check ON loyalty.campaign_rule IS
	'Check the parameters of a tier eligibility rule when it is added or changed';

/* ---------------------------------------------------------------------------
 * grants.sql: nothing for PUBLIC (last part of the install script)
 *
 * CREATE FUNCTION grants EXECUTE to PUBLIC by default; loyalty hands rights
 * out only through loyalty.grant_access().
 * ------------------------------------------------------------------------ */

REVOKE ALL ON SCHEMA loyalty FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA loyalty FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA loyalty FROM PUBLIC;

SELECT loyalty.reapply_grants();
