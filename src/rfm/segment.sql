
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
 *
 * Parallel restore (pg_restore -j): the two tables may be loaded in either
 * order, each in its own transaction, so there is no foreign key between
 * them and the first restored row of either table drops the whole default
 * map (both tables): whichever table comes second finds no default row
 * left.  A rule's segment is checked when the rule is written (a rule
 * naming no segment is refused while loyalty.segment has rows; it is empty
 * only between the two loads of a restore), a segment rename is carried to
 * its rules, deleting a segment that rules use is refused (23503), and
 * loyalty.check_integrity() reports a rule of an unknown segment.  Each
 * load leaves a complete map or none: the coverage check at commit passes
 * in both orders.
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
	segment		text NOT NULL,
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
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.segment_of(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.segment_of(score loyalty.rfm_score, bins integer)
RETURNS text
AS 'MODULE_PATHNAME', 'segment_of_bins'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.segment_of(loyalty.rfm_score, integer) IS
	'Segment of a score of 1..bins (bins 2..9): each part is rescaled to 1..5 as round(1 + (s - 1) * 4 / (bins - 1)), halves up';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.segment_of(loyalty.rfm_score, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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
 * which replaces the default map: the default rows of both tables go, so
 * the tables may be loaded in either order.  A rule must name an existing
 * segment (23503), unless loyalty.segment is empty (a restore that loads
 * the rules before the segments).
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
	-- builtin = false given explicitly: a saved map is being loaded
	ELSIF EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.builtin)
	   OR EXISTS (SELECT 1 FROM loyalty.segment_rule r WHERE r.builtin) THEN
		-- drop the default map, rules first; the rules go without a
		-- coverage check when the segments are loaded first (the rules
		-- that follow are checked at their commit)
		IF TG_TABLE_NAME = 'segment' THEN
			TRUNCATE loyalty.segment_rule;
		ELSE
			DELETE FROM loyalty.segment_rule r WHERE r.builtin;
		END IF;
		DELETE FROM loyalty.segment s WHERE s.builtin;
	END IF;
	IF TG_TABLE_NAME = 'segment_rule' THEN
		IF NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) NEW.segment)
		   AND EXISTS (SELECT 1 FROM loyalty.segment) THEN
			RAISE EXCEPTION 'segment rule names unknown segment "%"', NEW.segment
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = format('No segment is named %L; segments are listed in loyalty.segment.', NEW.segment),
					  HINT = 'Insert the segment into loyalty.segment first.';
		END IF;
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_row() IS
	'Internal: keep the builtin flag of the segment map right, let a restored map replace the default one (tables loaded in either order), and refuse a rule naming an unknown segment';

/*
 * Row trigger (AFTER UPDATE OF name, DELETE) on loyalty.segment, in place
 * of a foreign key from the rules (see the top of this file): a rename is
 * carried to the rules naming the segment, deleting a segment that rules
 * use is refused (23503).  Deletes made by the restore of a saved map
 * (trigger depth > 1) drop the default rules themselves and are not
 * checked.  Fires neither on INSERT nor on COPY.
 */
CREATE FUNCTION loyalty._segment_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE loyalty.segment_rule r SET segment = NEW.name
		WHERE r.segment OPERATOR(pg_catalog.=) OLD.name;
		RETURN NULL;
	END IF;
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	SELECT count(*) INTO n FROM loyalty.segment_rule r WHERE r.segment OPERATOR(pg_catalog.=) OLD.name;
	IF n > 0 THEN
		RAISE EXCEPTION 'cannot delete segment "%": % segment rule(s) map scores to it', OLD.name, n
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('loyalty.segment_rule has %s rule(s) for segment %L.', n, OLD.name),
				  HINT = 'Delete or change its rules first, in the same transaction.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_in_use() IS
	'Internal: carry a segment rename to its rules; refuse deleting a segment that rules use (23503)';

/*
 * Row trigger (AFTER INSERT, UPDATE or DELETE) on both map tables: once the
 * user has changed a row of the map, no row of either table is builtin, so
 * pg_dump saves the whole map.  Row-level because statement triggers also
 * fire for statements that change nothing, such as the empty COPY a restore
 * of an untouched map runs.  Not when our own trigger (depth > 1) has just
 * deleted the last default row of this table: that is a restored map
 * dropping the default one, whose other table's default rows are deleted
 * next, not taken over.
 */
CREATE FUNCTION loyalty._segment_map_take_over()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.builtin AND pg_catalog.pg_trigger_depth() > 1
	   AND NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.builtin AND TG_TABLE_NAME = 'segment')
	   AND NOT EXISTS (SELECT 1 FROM loyalty.segment_rule r WHERE r.builtin AND TG_TABLE_NAME = 'segment_rule') THEN
		RETURN NULL;
	END IF;
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
CREATE TRIGGER segment_in_use
	AFTER UPDATE OF name OR DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_in_use();

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

COMMENT ON TRIGGER segment_in_use ON loyalty.segment IS
	'A renamed segment is renamed in its rules; deleting a segment that rules use is refused (23503)';
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
 * builtin rows (the invalidation triggers fire ALWAYS, and so does the
 * coupon family's check that no campaign rule names a deleted segment).
 * Segments named like a default one are kept and updated, not deleted and
 * inserted again, so campaign rules naming a default segment stay valid;
 * any other segment is deleted, which is refused (23503, the DETAIL naming
 * the campaign rule) while a campaign rule names it.
 */
CREATE FUNCTION loyalty.reset_segment_map()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica
AS $$
DECLARE
	-- the default segments, in display order
	names text[] := ARRAY['Champions', 'Loyal', 'Potential Loyalist', 'New', 'Promising',
						  'Need Attention', 'About to Sleep', 'At Risk', 'Cannot Lose Them',
						  'Hibernating', 'Lost'];
	descs text[] := ARRAY[
		'Bought recently and buy often: reward them, they become advocates and early adopters',
		'Buy often and fairly recently: upsell, ask for reviews, offer the loyalty programme',
		'Recent customers with a few orders: offer membership and recommendations',
		'First orders very recently: onboard them and build the relationship early',
		'Recent buyers with a single order or few: build awareness, offer a second purchase',
		'Middling recency and frequency: limited-time offers based on past purchases',
		'Fading recency and few orders: reactivate with popular products and discounts',
		'Used to buy fairly often but not for a long time: personalised win-back offers',
		'Were the most frequent buyers but have not returned for long: win them back now',
		'Long since the last order and few orders: low-cost generic offers',
		'Longest since the last order and fewest orders: last revival campaign or let go'];
BEGIN
	LOCK TABLE loyalty.segment_rule IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM loyalty.segment_rule;
	DELETE FROM loyalty.segment s WHERE NOT (s.name OPERATOR(pg_catalog.=) ANY (names));
	-- the kept segments take their default place, one at a time (display
	-- orders are unique): whoever holds the place moves past the end first
	FOR i IN 1 .. pg_catalog.array_length(names, 1) LOOP
		IF EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) names[i]) THEN
			UPDATE loyalty.segment s
			SET display_order = (SELECT max(t.display_order) OPERATOR(pg_catalog.+) 1 FROM loyalty.segment t)
			WHERE s.display_order OPERATOR(pg_catalog.=) i
			  AND s.name OPERATOR(pg_catalog.<>) names[i];
			UPDATE loyalty.segment s
			SET display_order = i, description = descs[i], builtin = true
			WHERE s.name OPERATOR(pg_catalog.=) names[i];
		END IF;
	END LOOP;
	INSERT INTO loyalty.segment (name, display_order, description, builtin)
	SELECT names[i], i, descs[i], true
	FROM pg_catalog.generate_series(1, pg_catalog.array_length(names, 1)) AS i
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) names[i]);

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
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.reset_segment_map()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

ALTER TABLE loyalty.segment ENABLE ALWAYS TRIGGER segment_invalidate;
ALTER TABLE loyalty.segment_rule ENABLE ALWAYS TRIGGER segment_rule_invalidate;

SELECT loyalty.reset_segment_map();

/* views */

/*
 * BI views use only types of pg_catalog in the columns analysts join and
 * filter on: score is text ('543') and r, f, m integers, so that
 * "JOIN ... USING (score)", "WHERE score = '555'" and "IN (...)" resolve
 * pg_catalog's operators under any search_path (the operators of
 * loyalty.rfm_score live in schema loyalty).  The typed score stays
 * available as rfm_score.
 */
CREATE VIEW loyalty.segment_map AS
SELECT (r.r * 100 + f.f * 10 + m.m)::text AS score,
	   r.r AS recency, f.f AS frequency, m.m AS monetary,
	   sr.segment, s.display_order,
	   r.r, f.f, m.m,
	   loyalty.rfm_score(r.r, f.f, m.m) AS rfm_score
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
COMMENT ON COLUMN loyalty.segment_map.score IS
	'The score as text, three digits (''543''): join and filter on it with any search_path';
COMMENT ON COLUMN loyalty.segment_map.recency IS
	'Recency score 1..5 (same as r; the 0.2.0 name)';
COMMENT ON COLUMN loyalty.segment_map.frequency IS
	'Frequency score 1..5 (same as f; the 0.2.0 name)';
COMMENT ON COLUMN loyalty.segment_map.monetary IS
	'Monetary score 1..5 (same as m; the 0.2.0 name)';
COMMENT ON COLUMN loyalty.segment_map.segment IS
	'Segment of the score in the current map (NULL only while the map is being edited)';
COMMENT ON COLUMN loyalty.segment_map.display_order IS
	'Display order of the segment in reports (1 first)';
COMMENT ON COLUMN loyalty.segment_map.r IS 'Recency score 1..5 (5 = most recent)';
COMMENT ON COLUMN loyalty.segment_map.f IS 'Frequency score 1..5 (5 = most orders)';
COMMENT ON COLUMN loyalty.segment_map.m IS 'Monetary score 1..5 (5 = highest spend)';
COMMENT ON COLUMN loyalty.segment_map.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';

/* registrations */

SELECT loyalty._register_relation('all'::pg_catalog.text, 'loyalty.segment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.segment'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('all'::pg_catalog.text, 'loyalty.segment_rule'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.segment_rule'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.segment_map'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
