-- Demo part 5: the rfm_score type and the segment map.
\pset footer off
SET search_path = loyalty, public;

\echo
\echo '=== RFM scores and segments ==='
\echo
\echo '--- rfm_score: three scores 1..9 (recency, frequency, monetary), 5 = best ---'
SELECT s AS score, recency(s), frequency(s), monetary(s), segment_of(s) AS segment
FROM (VALUES ('555'::rfm_score), (rfm_score(5, 1, 2)), (' 321 '), ('151')) v(s)
ORDER BY s DESC;

\echo
\echo '--- the default segment map (rows: recency 5..1, columns: frequency 1..5; any monetary) ---'
SELECT 'R' || r AS "R \ F",
	   max(segment_of(rfm_score(r, f, 1))) FILTER (WHERE f = 1) AS "F1",
	   max(segment_of(rfm_score(r, f, 1))) FILTER (WHERE f = 2) AS "F2",
	   max(segment_of(rfm_score(r, f, 1))) FILTER (WHERE f = 3) AS "F3",
	   max(segment_of(rfm_score(r, f, 1))) FILTER (WHERE f = 4) AS "F4",
	   max(segment_of(rfm_score(r, f, 1))) FILTER (WHERE f = 5) AS "F5"
FROM generate_series(1, 5) r, generate_series(1, 5) f
GROUP BY r ORDER BY r DESC;

\echo
\echo '--- the segments, in display order, with their share of the 125 scores ---'
SELECT s.display_order AS "#", s.name AS segment, count(m.score) AS scores, s.description
FROM segment s LEFT JOIN segment_map m ON m.segment = s.name
GROUP BY s.name, s.display_order, s.description
ORDER BY s.display_order;

\echo
\echo '--- scores on other scales are rescaled to 1..5 (here 9 bins: 9 -> 5, 5 -> 3, 1 -> 1) ---'
SELECT s AS score_of_9_bins, segment_of(s, 9) AS segment
FROM (VALUES ('999'::rfm_score), ('951'), ('555'), ('191'), ('111')) v(s);

\echo
\echo '--- editing the map: every score must keep exactly one segment, checked at commit ---'
BEGIN;
INSERT INTO segment (name, display_order, description)
VALUES ('VIP', 0, 'Champions who also spend the most');
UPDATE segment_rule SET m_max = 4 WHERE segment = 'Champions';
INSERT INTO segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max)
VALUES ('VIP', 4, 5, 5, 5, 5, 5), ('VIP', 5, 5, 4, 4, 5, 5);
COMMIT;
SELECT segment_of('555') AS "555", segment_of('554') AS "554", segment_of('545') AS "545";
\echo 'a gap is refused at commit:'
\set ON_ERROR_STOP off
BEGIN;
DELETE FROM segment_rule WHERE segment = 'New';
COMMIT;
\set ON_ERROR_STOP on
SELECT segment_of('511') AS "511 (unchanged)";
SELECT segment_of('555') AS "555 after reset_segment_map()"
FROM (SELECT reset_segment_map()) reset;
