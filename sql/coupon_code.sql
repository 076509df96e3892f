--
-- loyalty.coupon_code: normalisation, check characters, vanity codes,
-- I/O, ordering, indexes, random_codes()
--
-- Fixed generated codes used below (made with loyalty.random_codes):
--   AS1V-N5C0-VB8        pattern ####-####, check characters VB8
--   SMR-MRCV-NQBY-K1Y    pattern SMR-####-####
--   MN6F3JMJHCTSM        pattern ##########
SET search_path = loyalty, public;

-- generated codes: canonical text, kind
SELECT 'AS1V-N5C0-VB8'::coupon_code AS code,
	   coupon_code_kind('AS1V-N5C0-VB8') AS kind,
	   coupon_code_kind('SMR-MRCV-NQBY-K1Y') AS with_prefix,
	   coupon_code_kind('MN6F3JMJHCTSM') AS no_groups;

-- normalisation: case, separators ('-', '_', '.', spaces, tabs), O as 0,
-- I and L as 1; the groups typed are kept for display, never for identity
SELECT v::coupon_code AS display,
	   v::coupon_code = 'AS1V-N5C0-VB8'::coupon_code AS same_code,
	   coupon_code_kind(v::coupon_code) AS kind
FROM (VALUES ('as1v-n5c0-vb8'), ('AS1VN5C0VB8'), ('  AS1V N5C0 VB8  '),
			 ('as1v_n5co.vb8'), ('ASIV--N5CO--VB8'), (E'ASLV\tN5C0\nVB8'),
			 ('A-S-1-V-N-5-C-0-V-B-8')) t(v);

-- every malformed literal is rejected, with the reason a form can show
SELECT coalesce(quote_literal(v), 'NULL') AS input, coupon_code_check(v) AS reason
FROM (VALUES (NULL), (''), ('   '), ('---'), ('- _ .'),
			 ('AS1V-N5C0-VB8#'),		-- trailing junk
			 ('#AS1V-N5C0-VB8'),		-- leading junk
			 ('AS1V/N5C0/VB8'),		-- wrong separator
			 ('AS1V-N5C0-VB8;DROP'),	-- junk after the code
			 ('AS1V-N5C0-VBØ'),		-- non-ASCII letter
			 ('AS1V-N5C0-VB9'),		-- bad check character
			 ('AS1V-N6C0-VB8'),		-- wrong character
			 ('AS1V-N5CU-VB8'),		-- U (outside the alphabet) for 0
			 ('SA1V-N5C0-VB8'),		-- first two swapped
			 ('AS1V-N5C0-V8B'),		-- last two swapped
			 ('AS1V-N5C-VB8'),		-- a character missing
			 ('AS1V-N5C00-VB8'),		-- a character too many
			 ('AS1VN-5C0-VB8'),		-- other grouping: same code, valid
			 (repeat('A', 32)),		-- longest vanity code
			 (repeat('A', 33)),		-- too long
			 (repeat('-', 10) || 'SALE' || repeat(' ', 10))) t(v);

-- the errors, as the type input reports them (22P02, detail names the problem)
SELECT ''::coupon_code;
SELECT ' - '::coupon_code;
SELECT 'AS1V-N5C0-VB8#'::coupon_code;
SELECT 'AS1V-N5C0-VBØ'::coupon_code;
SELECT repeat('7', 40)::coupon_code;
SELECT 'AS1V-N5C0-VB9'::coupon_code;
SELECT 'AS1V-N5CU-VB8'::coupon_code;
SELECT 'SA1V-N5C0-VB8'::coupon_code;
SELECT 'SMR-MRCV-QNBY-K1Y'::coupon_code;
SELECT 'AS1V-N5C-VB8'::coupon_code;
SELECT 'S1V-N5C0-VB8'::coupon_code;
SELECT 'AS1V-N5C0-VB8X'::coupon_code;

-- the check characters catch every single wrong character and every
-- adjacent transposition of a code (the fuzz check proves it for thousands
-- of codes; here for the three fixed ones, exhaustively), and a missing or
-- extra character unless the result is another valid code (1 in 32768)
WITH codes(code) AS (VALUES ('AS1VN5C0VB8'), ('SMRMRCVNQBYK1Y'), ('MN6F3JMJHCTSM')),
alnum(ch) AS (SELECT chr(c) FROM generate_series(48, 57) c
			  UNION ALL SELECT chr(c) FROM generate_series(65, 90) c),
subst AS (
	SELECT code, overlay(code PLACING ch FROM i FOR 1) AS typo
	FROM codes, generate_series(1, length(code)) i, alnum
	WHERE translate(ch, 'OIL', '011') <> substr(code, i, 1)),
swaps AS (
	SELECT code, overlay(code PLACING substr(code, i + 1, 1) || substr(code, i, 1) FROM i FOR 2) AS typo
	FROM codes, generate_series(1, length(code) - 1) i
	WHERE substr(code, i, 1) <> substr(code, i + 1, 1)),
dels AS (
	SELECT code, overlay(code PLACING '' FROM i FOR 1) AS typo
	FROM codes, generate_series(1, length(code)) i),
ins AS (
	SELECT code, overlay(code PLACING ch FROM i FOR 0) AS typo
	FROM codes, generate_series(1, length(code) + 1) i, alnum)
SELECT 'substitutions' AS typos, count(*) AS tried,
	   count(*) FILTER (WHERE coupon_code_check(typo) = 'check_mismatch') AS rejected
FROM subst
UNION ALL
SELECT 'adjacent transpositions', count(*),
	   count(*) FILTER (WHERE coupon_code_check(typo) = 'check_mismatch')
FROM swaps
UNION ALL
SELECT 'missing characters', count(*),
	   count(*) FILTER (WHERE coupon_code_check(typo) = 'check_mismatch')
FROM dels
UNION ALL
SELECT 'extra characters', count(*),
	   count(*) FILTER (WHERE coupon_code_check(typo) = 'check_mismatch')
FROM ins;

-- vanity codes: any letters and digits; case and separators ignored; O/0
-- and I/L/1 compare equal, but the display keeps the letters
SELECT v::coupon_code AS display, coupon_code_kind(v::coupon_code) AS kind,
	   v::coupon_code = 'SUMMER25'::coupon_code AS is_summer25
FROM (VALUES ('SUMMER25'), ('summer-25'), ('Summer 25'), ('SUMMER2S'),
			 ('BLACKFRIDAY'), ('black.friday'), ('WELCOME10'), ('A')) t(v);
SELECT 'SUMMER2O'::coupon_code = 'SUMMER20'::coupon_code AS o_is_zero,
	   'WELCOMEIO'::coupon_code = 'WELCOME10'::coupon_code AS i_and_o_fold,
	   'COOL'::coupon_code AS display_keeps_letters;

-- loyalty.vanity_code() sets up a public code; it refuses words that read
-- as a generated code or as a typo of one (customers could not type them)
SELECT vanity_code('SUMMER25') AS vanity, vanity_code('black friday') AS spaced;
SELECT vanity_code('WINTER22');		-- one typo from a generated code
SELECT vanity_code('AS1V-N5C0-VB8');	-- a generated code
SELECT vanity_code('ASIV-N5CO-VB8');	-- reads as AS1V-N5C0-VB8
SELECT vanity_code('SALE%');
SELECT vanity_code('');

-- text casts: explicit and on assignment; to text on assignment
CREATE TEMP TABLE cc_cast (c coupon_code);
INSERT INTO cc_cast VALUES ('as1v n5co vb8'::text);
INSERT INTO cc_cast SELECT 'SMR-MRCV-NQBY-K1Y'::text;
SELECT c, c::text AS as_text, pg_typeof(c::text) FROM cc_cast ORDER BY c;
INSERT INTO cc_cast VALUES ('AS1V-N5C0-VB9'::text);
DROP TABLE cc_cast;

-- binary send/recv: send carries a version byte, the kind and the text;
-- recv validates like the text input
SELECT coupon_code_send('AS1V-N5C0-VB8') AS generated_send,
	   coupon_code_send('summer 25') AS vanity_send;
\set SHOW_CONTEXT never
CREATE TEMP TABLE cc_bin (c coupon_code);
INSERT INTO cc_bin VALUES ('AS1V-N5C0-VB8'), ('smr mrcv nqby k1y'), ('SUMMER2O'), ('BLACK-FRIDAY');
CREATE TEMP TABLE cc_bin2 (c coupon_code);
CREATE FUNCTION pg_temp.copy_roundtrip(bad bytea DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	f text := '/tmp/loyalty_coupon_code_' || pg_backend_pid() || '.bin';
	lo oid;
BEGIN
	IF bad IS NULL THEN
		EXECUTE format('COPY cc_bin TO %L (FORMAT binary)', f);
	ELSE
		-- a binary COPY file with one row holding the given field bytes
		lo := lo_from_bytea(0, '\x5047434f50590aff0d0a00'::bytea
			|| '\x0000000000000000'::bytea || '\x0001'::bytea
			|| int4send(length(bad)) || bad || '\xffff'::bytea);
		PERFORM lo_export(lo, f);
		PERFORM lo_unlink(lo);
	END IF;
	EXECUTE format('COPY cc_bin2 FROM PROGRAM %L (FORMAT binary)',
				   format('cat %s && rm -f %s', f, f));
END;
$$;
SELECT pg_temp.copy_roundtrip();
SELECT a.c AS sent, b.c AS received, a.c::text = b.c::text AS same_text
FROM cc_bin a JOIN cc_bin2 b ON a.c = b.c ORDER BY a.c;
-- hand-made binary values: valid, bad check, wrong kind, unknown version
SELECT pg_temp.copy_roundtrip('\x0101'::bytea || convert_to('MN6F3JMJHCTSM', 'UTF8'));
SELECT pg_temp.copy_roundtrip('\x0101'::bytea || convert_to('MN6F3JMJHCTSN', 'UTF8'));
SELECT pg_temp.copy_roundtrip('\x0102'::bytea || convert_to('MN6F3JMJHCTSM', 'UTF8'));
SELECT pg_temp.copy_roundtrip('\x0201'::bytea || convert_to('MN6F3JMJHCTSM', 'UTF8'));
SELECT c FROM cc_bin2 WHERE c = 'MN6F3JMJHCTSM';
DROP TABLE cc_bin, cc_bin2;
\set SHOW_CONTEXT errors

-- ordering: byte order of the normalised characters (digits before
-- letters), separators and O/I/L spelling ignored; a prefix sorts first
SELECT c FROM (VALUES ('SMR-MRCV-NQBY-K1Y'::coupon_code), ('AS1V-N5C0-VB8'),
					  ('MN6F3JMJHCTSM'), ('SUMMER25'), ('SUMMER'), ('SALE'),
					  ('A'), ('0'), ('Z9')) t(c)
ORDER BY c;
SELECT 'A'::coupon_code < 'B'::coupon_code AS lt,
	   'SUMMER'::coupon_code < 'SUMMER25'::coupon_code AS prefix_first,
	   'ZOO'::coupon_code <= 'Z00'::coupon_code AS le_folded,
	   'B'::coupon_code > 'A'::coupon_code AS gt,
	   'AS1V-N5C0-VB8'::coupon_code >= 'as1vn5c0vb8'::coupon_code AS ge,
	   'AS1V-N5C0-VB8'::coupon_code <> 'as1vn5c0vb8'::coupon_code AS ne,
	   coupon_code_cmp('SALE', 'SUMMER') AS cmp;

-- a unique btree index serves "code = $1" whatever the customer typed, and
-- refuses the same code spelled differently
CREATE TABLE cc_coupon (code coupon_code PRIMARY KEY, n int);
INSERT INTO cc_coupon SELECT c, row_number() OVER () FROM random_codes('####-####-##', 2000) c;
INSERT INTO cc_coupon VALUES ('AS1V-N5C0-VB8', -1), ('SUMMER25', -2);
ANALYZE cc_coupon;
EXPLAIN (COSTS OFF) SELECT n FROM cc_coupon WHERE code = 'as1v n5co vb8';
SELECT n FROM cc_coupon WHERE code = 'as1v n5co vb8';
SELECT n FROM cc_coupon WHERE code = 'summer-25';
PREPARE cc_lookup(text) AS SELECT n FROM cc_coupon WHERE code = $1::coupon_code;
EXPLAIN (COSTS OFF) EXECUTE cc_lookup('SUMMER25');
EXECUTE cc_lookup('Summer 25');
DEALLOCATE cc_lookup;
INSERT INTO cc_coupon VALUES ('as1vn5c0vb8', 0);
INSERT INTO cc_coupon VALUES ('SUMMER 25', 0);
-- index order equals the sort order, and every stored code reads back
SET enable_seqscan = off;
SELECT count(*) AS in_index_order FROM (
	SELECT code, lag(code) OVER (ORDER BY code) AS prev FROM cc_coupon) s
WHERE prev IS NULL OR prev < code;
RESET enable_seqscan;
SELECT count(*) AS read_back FROM cc_coupon WHERE code::text::coupon_code = code;
-- hash opclass: hash index, hash join and hash aggregation
CREATE INDEX cc_coupon_hash ON cc_coupon USING hash (code);
SET enable_indexscan = off;
SET enable_bitmapscan = on;
EXPLAIN (COSTS OFF) SELECT n FROM cc_coupon WHERE code = 'SUMMER25';
SELECT n FROM cc_coupon WHERE code = 'summer25';
RESET enable_indexscan;
RESET enable_bitmapscan;
SET enable_mergejoin = off;
SET enable_sort = off;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM cc_coupon a JOIN cc_coupon b ON a.code = b.code::text::coupon_code;
SELECT count(*) AS joined FROM cc_coupon a JOIN cc_coupon b ON a.code = b.code::text::coupon_code;
EXPLAIN (COSTS OFF)
SELECT count(*) FROM (SELECT code FROM cc_coupon UNION SELECT code FROM cc_coupon) u;
SELECT count(*) AS groups FROM (SELECT code FROM cc_coupon UNION SELECT code FROM cc_coupon) u;
RESET enable_mergejoin;
RESET enable_sort;
-- equal codes hash alike whatever their spelling
SELECT coupon_code_hash('AS1V-N5C0-VB8') = coupon_code_hash('aslvn5covb8') AS hash_equal,
	   coupon_code_hash_extended('SUMMER20', 7) = coupon_code_hash_extended('summer-2o', 7) AS hash_ext_equal,
	   coupon_code_hash_extended('SUMMER20', 7) <> coupon_code_hash_extended('SUMMER20', 8) AS seed_matters;
DROP TABLE cc_coupon;

-- random_codes: pattern errors (22023) name the problem
SELECT random_codes('', 1);
SELECT random_codes('SUMMER-####', 1);		-- U is not in the alphabet
SELECT random_codes('PR0MO-####', 1);		-- O neither
SELECT random_codes('SMR-####*', 1);
SELECT random_codes('SMR--####', 1);
SELECT random_codes('SMR-####-', 1);
SELECT random_codes('SMR', 1);
SELECT random_codes('SMR-' || repeat('#', 26), 1);	-- 32 characters with the checks
SELECT random_codes('####', 104858);		-- more than 32^4 / 10
SELECT random_codes('####', -1);
SELECT count(*) AS most_allowed FROM random_codes('####', 104857);
SELECT count(*) AS none FROM random_codes('####', 0);

-- codes follow the pattern: literals, groups, check characters as a group
-- of their own; lower-case literals are accepted
SELECT count(*) AS codes,
	   bool_and(c::text ~ '^SMR-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{3}$') AS follow_pattern,
	   bool_and(coupon_code_kind(c) = 'generated') AS all_generated,
	   bool_and(coupon_code_check(c::text) IS NULL) AS all_valid
FROM random_codes('smr-####-####', 1000) c;
SELECT c::text ~ '^[0-9A-HJKMNP-TV-Z]{9}$' AS no_groups_no_dash FROM random_codes('######', 1) c;

-- distribution: 100,000 codes of 12 random characters have no duplicate,
-- and every random position uses all 32 symbols about equally often
-- (expected 3,125 each, standard deviation about 55)
CREATE TEMP TABLE cc_draw AS
SELECT c::text AS t FROM random_codes('X-####-####-####', 100000) c;
SELECT count(*) AS codes, count(DISTINCT t::coupon_code) AS distinct_codes FROM cc_draw;
SELECT count(DISTINCT pos) AS positions,
	   min(symbols) AS min_symbols_per_position,
	   bool_and(min_n BETWEEN 2700 AND 3550 AND max_n BETWEEN 2700 AND 3550) AS frequencies_uniform
FROM (SELECT pos, count(*) AS symbols, min(n) AS min_n, max(n) AS max_n
	  FROM (SELECT pos, substr(t, pos, 1) AS ch, count(*) AS n
			FROM cc_draw, unnest(ARRAY[3,4,5,6, 8,9,10,11, 13,14,15,16]) pos
			GROUP BY 1, 2) s
	  GROUP BY pos) p;
DROP TABLE cc_draw;

-- labels: the type's functions are immutable, strict and parallel safe;
-- random_codes is volatile
SELECT p.proname, p.provolatile, p.proisstrict, p.proparallel
FROM pg_proc p
WHERE p.pronamespace = 'loyalty'::regnamespace
  AND (p.proname LIKE 'coupon\_code\_%' OR p.proname IN ('vanity_code', 'random_codes'))
ORDER BY 1;

-- access levels: type support and utilities for every level, generation
-- for admin
SELECT level, object_name FROM access_rule
WHERE object_name ~ 'coupon_code|vanity_code|random_codes'
ORDER BY 1, 2;

RESET search_path;
