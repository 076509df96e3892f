--
-- Named segments: the default map, segment_of(), editing the map
--
SET search_path = loyalty, public;

-- the default map: 11 segments, every one of the 125 scores in exactly one
SELECT name, display_order, builtin,
	   (SELECT count(*) FROM segment_rule r WHERE r.segment = s.name) AS rules,
	   (SELECT count(*) FROM segment_map m WHERE m.segment = s.name) AS scores
FROM segment s ORDER BY display_order;
SELECT count(*) AS cells, count(DISTINCT score) AS distinct_scores,
	   count(*) FILTER (WHERE segment IS NULL) AS without_segment,
	   min(score), max(score)
FROM segment_map;
SELECT count(*) AS rules, bool_and(builtin) AS all_builtin FROM segment_rule;

-- the R x F grid (monetary does not matter in the default map)
SELECT r AS recency,
	   max(segment_of(rfm_score(r, f, 3))) FILTER (WHERE f = 1) AS f1,
	   max(segment_of(rfm_score(r, f, 3))) FILTER (WHERE f = 2) AS f2,
	   max(segment_of(rfm_score(r, f, 3))) FILTER (WHERE f = 3) AS f3,
	   max(segment_of(rfm_score(r, f, 3))) FILTER (WHERE f = 4) AS f4,
	   max(segment_of(rfm_score(r, f, 3))) FILTER (WHERE f = 5) AS f5
FROM generate_series(1, 5) r, generate_series(1, 5) f
GROUP BY r ORDER BY r DESC;
SELECT count(*) AS monetary_independent
FROM segment_map a JOIN segment_map b
  ON a.recency = b.recency AND a.frequency = b.frequency AND a.segment = b.segment;

-- segment_of agrees with the view for all 125 scores
SELECT count(*) AS disagreements FROM segment_map WHERE segment_of(rfm_score) IS DISTINCT FROM segment;

-- known cells
SELECT s AS score, segment_of(s::rfm_score)
FROM unnest('{555,545,455,454,355,344,542,411,511,333,321,112,234,254,155,221,111,122}'::text[]) s;

-- rescaling for other bin counts: s5 = round(1 + (s - 1) * 4 / (bins - 1)), halves up
SELECT b AS bins, s, 1 + floor((s - 1) * 4.0 / (b - 1) + 0.5)::int AS on_1_to_5
FROM (VALUES (2), (3), (9)) v(b), generate_series(1, 9) s
WHERE s <= b ORDER BY b, s;
SELECT segment_of('212', 2) AS "212/2", segment_of('121', 2) AS "121/2",
	   segment_of('231', 3) AS "231/3", segment_of('311', 3) AS "311/3",
	   segment_of('999', 9) AS "999/9", segment_of('911', 9) AS "911/9",
	   segment_of('511', 9) AS "511/9", segment_of('431', 9) AS "431/9",
	   segment_of('543', 5) AS "543/5";
SELECT b AS bins, count(*) AS scores,
	   count(*) FILTER (WHERE segment_of(rfm_score(r, f, m), b) IS DISTINCT FROM
			segment_of(rfm_score(1 + floor((r - 1) * 4.0 / (b - 1) + 0.5)::int,
								 1 + floor((f - 1) * 4.0 / (b - 1) + 0.5)::int,
								 1 + floor((m - 1) * 4.0 / (b - 1) + 0.5)::int))) AS disagreements
FROM generate_series(2, 9) b, generate_series(1, 9) r, generate_series(1, 9) f, generate_series(1, 9) m
WHERE r <= b AND f <= b AND m <= b
GROUP BY b ORDER BY b;

-- bad arguments
SELECT segment_of('611');
SELECT segment_of('353', 4);
SELECT segment_of('111', 1);
SELECT segment_of('111', 10);
SELECT segment_of(NULL::rfm_score) IS NULL AS null_score, segment_of('111', NULL) IS NULL AS null_bins;

-- an edit that leaves a gap fails at COMMIT, naming a score without segment
BEGIN;
DELETE FROM segment_rule WHERE segment = 'New';
SELECT segment_of('511') IS NULL AS gap_visible_before_commit;
COMMIT;
SELECT segment_of('511') AS after_failed_commit, bool_and(builtin) AS still_builtin FROM segment_rule;

-- an edit that overlaps fails at COMMIT, naming a score with two segments
BEGIN;
INSERT INTO segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max)
VALUES ('Lost', 1, 2, 1, 1, 1, 5);
COMMIT;
BEGIN;
UPDATE segment_rule SET r_max = 2 WHERE segment = 'Lost';
SELECT segment_of('211');	-- inconsistent while editing: an error, not a guess
COMMIT;
-- SET CONSTRAINTS ... IMMEDIATE checks before commit
BEGIN;
UPDATE segment_rule SET f_max = 3 WHERE segment = 'Lost';
SET CONSTRAINTS segment_rule_coverage IMMEDIATE;
ROLLBACK;
SELECT segment_of('211') AS hibernating, segment_of('131') AS at_risk;

-- rollback of an edit leaves the old map (the cache is dropped again)
SELECT segment_of('511') AS cached;
BEGIN;
UPDATE segment_rule SET segment = 'Promising' WHERE segment = 'New';
SELECT segment_of('511') AS inside_transaction;
ROLLBACK;
SELECT segment_of('511') AS after_rollback;
BEGIN;
SAVEPOINT s;
UPDATE segment_rule SET segment = 'Promising' WHERE segment = 'New';
SELECT segment_of('511') AS inside_savepoint;
ROLLBACK TO SAVEPOINT s;
SELECT segment_of('511') AS after_rollback_to_savepoint;
COMMIT;

-- TRUNCATE would skip the check, builtin is not for users
TRUNCATE segment_rule;
INSERT INTO segment (name, display_order, builtin) VALUES ('Fake default', 99, true);
SELECT bool_and(builtin) AS still_builtin FROM segment;

-- a valid re-partition in several statements succeeds at commit; the
-- cached map of this session follows
SELECT segment_of('555') AS before_edit, segment_of('413') AS before_edit_413;
BEGIN;
INSERT INTO segment (name, display_order, description) VALUES ('VIP', 0, 'Champions who spend the most');
UPDATE segment SET name = 'Rising Stars' WHERE name = 'Promising';
UPDATE segment_rule SET m_max = 4 WHERE segment = 'Champions';
INSERT INTO segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max) VALUES
	('VIP', 4, 5, 5, 5, 5, 5),
	('VIP', 5, 5, 4, 4, 5, 5);
-- Potential Loyalist R4-5 F2-3 split by monetary: big spenders are Loyal
UPDATE segment_rule SET m_max = 3 WHERE segment = 'Potential Loyalist';
INSERT INTO segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max)
VALUES ('Loyal', 4, 5, 2, 3, 4, 5);
SELECT segment_of('555') AS inside_transaction;
COMMIT;
SELECT segment_of('555') AS "555", segment_of('554') AS "554", segment_of('411') AS "411",
	   segment_of('433') AS "433", segment_of('434') AS "434", segment_of('999', 9) AS "999/9";
SELECT count(*) FILTER (WHERE builtin) AS builtin_rows, count(*) AS rows FROM segment_rule;
SELECT count(*) FILTER (WHERE builtin) AS builtin_segments, count(*) AS segments FROM segment;
SELECT segment, count(*) FROM segment_map GROUP BY segment ORDER BY min(display_order);
UPDATE segment SET builtin = true WHERE name = 'Lost';
-- rescaling also applies to monetary
SELECT segment_of('999', 9) AS m9, segment_of('998', 9) AS m8, segment_of('997', 9) AS m7,
	   segment_of('996', 9) AS m6;
SELECT b AS bins,
	   count(*) FILTER (WHERE segment_of(rfm_score(r, f, m), b) IS DISTINCT FROM
			segment_of(rfm_score(1 + floor((r - 1) * 4.0 / (b - 1) + 0.5)::int,
								 1 + floor((f - 1) * 4.0 / (b - 1) + 0.5)::int,
								 1 + floor((m - 1) * 4.0 / (b - 1) + 0.5)::int))) AS disagreements
FROM generate_series(2, 9) b, generate_series(1, 9) r, generate_series(1, 9) f, generate_series(1, 9) m
WHERE r <= b AND f <= b AND m <= b
GROUP BY b ORDER BY b;

-- a segment still used by rules cannot be deleted
DELETE FROM segment WHERE name = 'VIP';
DELETE FROM segment WHERE name = 'Need Attention';
SELECT segment_of('333');

-- forced parallel plans give the same segments as serial ones
CREATE TABLE seg_scores AS
SELECT i AS id, rfm_score(1 + i % 5, 1 + (i / 5) % 5, 1 + (i / 25) % 5) AS score
FROM generate_series(1, 20000) i;
ANALYZE seg_scores;
CREATE TEMP TABLE seg_serial AS
SELECT segment_of(score) AS segment, count(*) FROM seg_scores GROUP BY 1;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT segment_of(score), count(*) FROM seg_scores GROUP BY 1;
SELECT count(*) AS differences FROM (
	(SELECT segment_of(score) AS segment, count(*) FROM seg_scores GROUP BY 1
	 EXCEPT SELECT * FROM seg_serial)
	UNION ALL
	(SELECT * FROM seg_serial
	 EXCEPT SELECT segment_of(score), count(*) FROM seg_scores GROUP BY 1)) d;
-- the leader too, when it takes part
SET parallel_leader_participation = on;
SELECT count(*) AS differences FROM (
	(SELECT segment_of(score) AS segment, count(*) FROM seg_scores GROUP BY 1
	 EXCEPT SELECT * FROM seg_serial)
	UNION ALL
	(SELECT * FROM seg_serial
	 EXCEPT SELECT segment_of(score), count(*) FROM seg_scores GROUP BY 1)) d;
SET parallel_leader_participation = off;
-- workers see this transaction's own uncommitted edit of the map
BEGIN;
UPDATE segment_rule SET segment = 'Lost' WHERE segment = 'Hibernating';
EXPLAIN (COSTS OFF)
SELECT count(*) FILTER (WHERE segment_of(score) = 'Hibernating') AS hibernating,
	   count(*) FILTER (WHERE segment_of(score) = 'Lost') AS lost
FROM seg_scores;
SELECT count(*) FILTER (WHERE segment_of(score) = 'Hibernating') AS hibernating,
	   count(*) FILTER (WHERE segment_of(score) = 'Lost') AS lost
FROM seg_scores;
ROLLBACK;
SELECT count(*) FILTER (WHERE segment_of(score) = 'Hibernating') AS hibernating,
	   count(*) FILTER (WHERE segment_of(score) = 'Lost') AS lost
FROM seg_scores;
RESET parallel_setup_cost;
RESET parallel_tuple_cost;
RESET min_parallel_table_scan_size;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;
DROP TABLE seg_scores;

-- access levels: admin edits the map, everyone reads it, analysts read the view
CREATE ROLE seg_admin;
CREATE ROLE seg_app;
CREATE ROLE seg_analyst;
SELECT grant_access('seg_admin', 'admin'), grant_access('seg_app', 'app'),
	   grant_access('seg_analyst', 'analyst');
SET ROLE seg_app;
SELECT segment_of('555') AS app_calls_segment_of, count(*) AS app_reads_rules FROM segment_rule;
UPDATE segment SET description = 'x' WHERE name = 'Lost';
SELECT count(*) FROM segment_map;
SET ROLE seg_analyst;
SELECT count(*) AS analyst_reads_map FROM segment_map;
SET ROLE seg_admin;
UPDATE segment SET description = 'Gone for good' WHERE name = 'Lost';
SELECT reset_segment_map();
RESET ROLE;
SELECT description FROM segment WHERE name = 'Lost';
SELECT revoke_access('seg_admin', 'admin'), revoke_access('seg_app', 'app'),
	   revoke_access('seg_analyst', 'analyst');
DROP ROLE seg_admin;
DROP ROLE seg_app;
DROP ROLE seg_analyst;

-- reset_segment_map() brings the default map back, builtin again
SELECT count(*) FILTER (WHERE builtin) AS builtin_rows, count(*) AS rows FROM segment_rule;
SELECT count(*) FILTER (WHERE builtin) AS builtin_segments, count(*) AS segments FROM segment;
SELECT segment_of('555') AS "555", segment_of('411') AS "411", segment_of('333') AS "333";
SELECT count(*) AS disagreements FROM segment_map WHERE segment_of(rfm_score) IS DISTINCT FROM segment;
