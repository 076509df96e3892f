-- Demo part 30: coupon codes that catch typos before any lookup.
\pset footer off
\echo
\echo '=== coupon codes ==='
\echo
\echo '--- generated codes from the pattern SMR-####-#### (# = a random character of'
\echo '--- 0-9 A-Z without I L O U, from a cryptographically strong source; the last'
\echo '--- group holds three check characters; random, so different on every run) ---'
SELECT code, loyalty.coupon_code_kind(code) AS kind
FROM loyalty.random_codes('SMR-####-####', 5) AS code;

\echo
\echo '--- what a customer may type for the code AS1V-N5C0-VB8 ---'
SELECT typed, what,
	   coalesce(loyalty.coupon_code_check(typed), 'ok') AS check_result,
	   CASE WHEN loyalty.coupon_code_check(typed) IS NULL
			THEN typed::loyalty.coupon_code::text END AS reads_as
FROM (VALUES ('AS1V-N5C0-VB8', 'as printed'),
			 ('as1v n5co vb8', 'lower case, spaces, letter O for zero'),
			 ('ASIVN5C0VB8', 'letter I for one, no dashes'),
			 ('AS1V-N5C0-V88', 'one wrong character'),
			 ('AS1V-5NC0-VB8', 'two characters swapped'),
			 ('AS1V-N5C-VB8', 'a character missing'),
			 ('AS1V-N5C00-VB8', 'a character too many'),
			 ('AS1V-N5C0-VB8!', 'stray punctuation')) AS t(typed, what);

\echo
\echo '--- the error an application receives for a typo (SQLSTATE 22P02, no lookup made) ---'
DO $$
DECLARE
	msg text;
	detail text;
	state text;
BEGIN
	PERFORM 'AS1V-5NC0-VB8'::loyalty.coupon_code;
EXCEPTION WHEN invalid_text_representation THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
							state = RETURNED_SQLSTATE;
	RAISE NOTICE '% %: %', state, msg, detail;
END;
$$;

\echo '--- public vanity codes: any letters and digits, no check character ---'
SELECT typed, typed::loyalty.coupon_code AS code,
	   loyalty.coupon_code_kind(typed::loyalty.coupon_code) AS kind,
	   typed::loyalty.coupon_code OPERATOR(loyalty.=) loyalty.vanity_code('SUMMER25') AS is_summer25
FROM (VALUES ('SUMMER25'), ('summer-25'), ('Summer 25'), ('SUMMER2S'), ('WELCOME10')) AS t(typed);

\echo
\echo '--- a word that is one typo away from a generated code cannot be a vanity code ---'
DO $$
DECLARE
	msg text;
	detail text;
BEGIN
	PERFORM loyalty.vanity_code('WINTER22');
EXCEPTION WHEN invalid_parameter_value THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RAISE NOTICE '%: %', msg, detail;
END;
$$;

\echo
\echo '--- how large a pattern must be: one million codes ---'
SELECT pattern, random_positions,
	   to_char((32::numeric ^ random_positions)::float8, '9.99EEEE') AS combinations,
	   round(1e6 * 1e6 / (2 * 32::numeric ^ random_positions), 4) AS expected_duplicate_draws,
	   to_char((1e6 / 32::numeric ^ random_positions)::float8, '9.99EEEE') AS chance_a_guess_hits
FROM (VALUES ('SMR-######', 6), ('SMR-####-####', 8), ('####-####-####', 12)) AS p(pattern, random_positions);

\echo
\echo '--- one million codes into a table with a unique index; a typed code is found through it ---'
CREATE TEMP TABLE demo_codes (code loyalty.coupon_code PRIMARY KEY);
INSERT INTO demo_codes SELECT c FROM loyalty.random_codes('SMR-####-####-####', 1000000) AS c;
INSERT INTO demo_codes VALUES ('AS1V-N5C0-VB8');
SELECT count(*) AS codes FROM demo_codes;
SELECT code AS found FROM demo_codes WHERE code OPERATOR(loyalty.=) 'as1v n5co vb8';
EXPLAIN (COSTS OFF) SELECT code FROM demo_codes WHERE code OPERATOR(loyalty.=) 'as1v n5co vb8';
DROP TABLE demo_codes;
