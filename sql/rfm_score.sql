--
-- loyalty.rfm_score: the compact RFM score type
--

-- operators live in schema loyalty: qualify them, or put loyalty on the path
SELECT '543'::loyalty.rfm_score OPERATOR(loyalty.=) '543'::loyalty.rfm_score AS qualified_eq;
SET search_path = loyalty, public;

-- text form: three digits 1..9, surrounding whitespace ignored
SELECT '543'::rfm_score AS plain, ' 543 '::rfm_score AS padded,
	   E'\t\n543\r\n'::rfm_score AS tabs_newlines, E'\f\x0b111'::rfm_score AS ff_vt,
	   '111'::rfm_score AS lowest, '999'::rfm_score AS highest;

-- one error shown in full
SELECT '5a3'::rfm_score;
SELECT ''::rfm_score;

-- every malformed literal: 22P02 with a detail saying what is wrong
CREATE FUNCTION pg_temp.try_rfm(s text, OUT result text, OUT code text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
	result := s::loyalty.rfm_score::text;
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
END $$;

SELECT to_json(s)::text AS input, r.*
FROM unnest(ARRAY[
	'', ' ', E'\t\n ',                          -- empty, blanks only
	'0', '000', '100', '540', '054', '909',     -- 0 is not a score
	'5', '54', '54 ', ' 54',                    -- too short
	'5431', '1111', '543 1', '99999999999',     -- too long
	'+543', '-543', '+54', '-1',                -- signs
	'abc', 'a43', '5a3', '54a', 'x543',         -- letters
	'543x', '543 x', '543.', '543.0', '543;', '543''', '543-', -- trailing junk
	'5 43', '54 3', ' 5 4 3 ', E'5\t43',        -- embedded whitespace
	E'543\u0001', E'\u0001543', E'5\u00014 3', E'\u007f543', -- control characters
	'５４３', '٥٤٣', '5४3', 'é43',              -- non-ASCII digits and letters
	'0x21f', '1e2', '5,4,3', '5-4-3', '{543}', '(5,4,3)', 'null', 'NaN'
]) AS s, pg_temp.try_rfm(s) AS r;

-- NULL stays NULL
SELECT NULL::rfm_score IS NULL AS null_in;

-- in -> out -> in round-trips for all 729 scores
CREATE TEMP TABLE all_scores AS
SELECT r, f, m, rfm_score(r, f, m) AS s
FROM generate_series(1, 9) r, generate_series(1, 9) f, generate_series(1, 9) m;
SELECT count(*) AS scores,
	   count(*) FILTER (WHERE s::text = format('%s%s%s', r, f, m)) AS text_matches,
	   count(*) FILTER (WHERE s::text::rfm_score = s) AS round_trips,
	   count(*) FILTER (WHERE recency(s) = r AND frequency(s) = f AND monetary(s) = m) AS accessors_match,
	   count(DISTINCT s) AS distinct_scores
FROM all_scores;

-- the order is recency, then frequency, then monetary
SELECT count(*) AS order_violations
FROM all_scores a, all_scores b
WHERE (a.s < b.s) <> ((a.r, a.f, a.m) < (b.r, b.f, b.m))
   OR (a.s <= b.s) <> ((a.r, a.f, a.m) <= (b.r, b.f, b.m))
   OR (a.s = b.s) <> ((a.r, a.f, a.m) = (b.r, b.f, b.m))
   OR (a.s <> b.s) <> ((a.r, a.f, a.m) <> (b.r, b.f, b.m))
   OR (a.s >= b.s) <> ((a.r, a.f, a.m) >= (b.r, b.f, b.m))
   OR (a.s > b.s) <> ((a.r, a.f, a.m) > (b.r, b.f, b.m))
   OR sign(rfm_score_cmp(a.s, b.s)) <> CASE WHEN a.s < b.s THEN -1 WHEN a.s > b.s THEN 1 ELSE 0 END;
SELECT '543'::rfm_score < '544' AS lt, '543'::rfm_score < '611' AS lt_recency_first,
	   '543'::rfm_score <= '543' AS le, '543'::rfm_score > '539' AS gt_no_0,
	   '999'::rfm_score >= '111' AS ge, '543'::rfm_score <> '534' AS ne,
	   ' 543'::rfm_score = '543 ' AS eq_padded;

-- constructor: each part 1..9, else 22003 naming the part
SELECT rfm_score(5, 4, 3), rfm_score(1, 1, 1), rfm_score(9, 9, 9);
SELECT rfm_score(0, 1, 1);
SELECT rfm_score(1, 10, 1);
SELECT rfm_score(1, 1, -3);
SELECT rfm_score(NULL, 1, 1) IS NULL AS strict_null;

-- binary form: an int2 r*100+f*10+m
SELECT rfm_score_send('543') AS send_543, int2send(543::int2) AS int2send_543;

-- binary round trip of every score through COPY BINARY, and recv is as
-- strict as text input: 2-byte values that are not scores are rejected
CREATE TEMP TABLE bin_in (s rfm_score);
SELECT '/tmp/loyalty_rfm_score_' || pg_backend_pid() || '.bin' AS binfile \gset
COPY (SELECT s FROM all_scores) TO :'binfile' (FORMAT binary);
COPY bin_in FROM :'binfile' (FORMAT binary);
SELECT count(*) AS received,
	   count(*) FILTER (WHERE s IN (SELECT s FROM all_scores)) AS known
FROM bin_in;
SELECT (SELECT array_agg(s ORDER BY s) FROM bin_in) = (SELECT array_agg(s ORDER BY s) FROM all_scores) AS binary_round_trip;

CREATE FUNCTION pg_temp.try_recv(v int2, f text, OUT result text, OUT code text, OUT message text)
LANGUAGE plpgsql AS $$
BEGIN
	TRUNCATE bin_in;
	EXECUTE format('COPY (SELECT %L::int2) TO %L (FORMAT binary)', v, f);
	EXECUTE format('COPY bin_in FROM %L (FORMAT binary)', f);
	SELECT s::text INTO result FROM bin_in;
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
END $$;
SELECT v, r.*
FROM unnest('{543, 111, 999, 0, -1, -543, 1, 11, 100, 110, 101, 540, 504, 1000, 1111, 32767, -32768}'::int2[]) v,
	 pg_temp.try_recv(v, :'binfile') r;
DO $$
BEGIN
	EXECUTE format('COPY bin_in FROM PROGRAM %L',
				   'rm -f /tmp/loyalty_rfm_score_' || pg_backend_pid() || '.bin');
END $$;
DROP TABLE bin_in;

-- a table of scores: grouping, DISTINCT, ordering
CREATE TABLE rfm_t (id int PRIMARY KEY, s rfm_score NOT NULL);
INSERT INTO rfm_t
SELECT i, rfm_score(1 + (i * 7) % 5, 1 + (i * 3) % 4, 1 + i % 3)
FROM generate_series(1, 3000) i;
ANALYZE rfm_t;

SELECT s, count(*) FROM rfm_t GROUP BY s ORDER BY s LIMIT 5;
SELECT count(DISTINCT s) AS distinct_scores, min(s), max(s) FROM rfm_t;
SELECT min(s), max(s) FROM all_scores;
SELECT min(s) IS NULL AND max(s) IS NULL AS empty_is_null FROM all_scores WHERE false;
SELECT DISTINCT s FROM rfm_t WHERE s >= '521' ORDER BY s DESC;
SET enable_hashagg = off;
SELECT count(*) AS sorted_groups FROM (SELECT s FROM rfm_t GROUP BY s) g;
RESET enable_hashagg;
SET enable_sort = off;
SELECT count(*) AS hashed_groups FROM (SELECT s FROM rfm_t GROUP BY s) g;
RESET enable_sort;

-- ANALYZE builds ordinary statistics (histogram via the btree order)
SELECT n_distinct, most_common_vals IS NOT NULL AS has_mcv
FROM pg_stats WHERE tablename = 'rfm_t' AND attname = 's';

-- btree index: used for equality, ranges and ORDER BY
CREATE INDEX rfm_t_s ON rfm_t (s);
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM rfm_t WHERE s = '543';
SELECT count(*) FROM rfm_t WHERE s = '543';
SELECT count(*) = (SELECT count(*) FROM rfm_t WHERE s::text = '543') AS index_eq_agrees FROM rfm_t WHERE s = '543';
EXPLAIN (COSTS OFF) SELECT s FROM rfm_t WHERE s BETWEEN '311' AND '399' ORDER BY s;
SELECT count(*) = (SELECT count(*) FROM rfm_t WHERE s::text LIKE '3%') AS index_range_agrees
FROM rfm_t WHERE s BETWEEN '311' AND '399';
EXPLAIN (COSTS OFF) SELECT s FROM rfm_t ORDER BY s DESC LIMIT 3;
SELECT s FROM rfm_t ORDER BY s DESC LIMIT 3;
-- min/max through the index (only the scan lines: the lines around them
-- differ between PostgreSQL versions)
CREATE FUNCTION pg_temp.plan_scans(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
	line text;
BEGIN
	FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
		IF line ~ 'Scan' THEN
			RETURN NEXT btrim(line);
		END IF;
	END LOOP;
END;
$$;
SELECT * FROM pg_temp.plan_scans('SELECT min(s), max(s) FROM rfm_t');
SELECT min(s), max(s) FROM rfm_t;
RESET enable_seqscan;
RESET enable_bitmapscan;

-- hash index
CREATE INDEX rfm_t_s_hash ON rfm_t USING hash (s);
DROP INDEX rfm_t_s;
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM rfm_t WHERE s = '432';
SELECT count(*) = (SELECT count(*) FROM rfm_t WHERE s::text = '432') AS hash_index_agrees
FROM rfm_t WHERE s = '432';
RESET enable_seqscan;
RESET enable_bitmapscan;

-- joins on rfm_score: hash join and merge join give the same answer
CREATE TABLE rfm_label (s rfm_score PRIMARY KEY, label text);
INSERT INTO rfm_label SELECT s, 'r' || r || 'f' || f FROM all_scores WHERE m = 2;
ANALYZE rfm_label;
SET enable_nestloop = off;
SET enable_mergejoin = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM rfm_t t JOIN rfm_label l ON t.s = l.s;
SELECT count(*), md5(string_agg(t.id || l.label, ',' ORDER BY t.id)) AS hash_join
FROM rfm_t t JOIN rfm_label l ON t.s = l.s;
SET enable_hashjoin = off;
SET enable_mergejoin = on;
EXPLAIN (COSTS OFF) SELECT count(*) FROM rfm_t t JOIN rfm_label l ON t.s = l.s;
SELECT count(*), md5(string_agg(t.id || l.label, ',' ORDER BY t.id)) AS merge_join
FROM rfm_t t JOIN rfm_label l ON t.s = l.s;
RESET enable_nestloop;
RESET enable_mergejoin;
RESET enable_hashjoin;
SELECT count(*) AS expected_matches FROM rfm_t WHERE monetary(s) = 2;

-- hash partitioning uses the extended hash function
CREATE TABLE rfm_part (s rfm_score) PARTITION BY HASH (s);
CREATE TABLE rfm_part_0 PARTITION OF rfm_part FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE rfm_part_1 PARTITION OF rfm_part FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO rfm_part SELECT s FROM all_scores;
-- the split is pinned: a changed hash function would strand existing rows
SELECT tableoid::regclass AS partition, count(*), min(s), max(s)
FROM rfm_part GROUP BY 1 ORDER BY 1;
EXPLAIN (COSTS OFF) SELECT * FROM rfm_part WHERE s = '543';
SELECT * FROM rfm_part WHERE s = '543';

-- the type is pass-by-value, 2 bytes, like int2
SELECT typlen, typbyval, typalign, typstorage
FROM pg_type WHERE oid = 'loyalty.rfm_score'::regtype;

DROP TABLE rfm_part, rfm_label, rfm_t;
