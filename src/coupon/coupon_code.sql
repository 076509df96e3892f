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

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_in(cstring)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_recv(internal)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_out(loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_send(loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_eq(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_ne(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_ne'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_ne(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of <> for coupon_code';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_ne(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_lt(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_lt'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_lt(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of < for coupon_code';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_lt(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_le(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_le'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_le(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of <= for coupon_code';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_le(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_gt(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_gt'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_gt(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of > for coupon_code';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_gt(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_ge(loyalty.coupon_code, loyalty.coupon_code)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_code_ge'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_ge(loyalty.coupon_code, loyalty.coupon_code) IS
	'Implementation of >= for coupon_code';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_ge(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_code_cmp'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;

COMMENT ON FUNCTION loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code) IS
	'Three-way comparison of coupon codes (btree support)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_cmp(loyalty.coupon_code, loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_hash(loyalty.coupon_code)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_code_hash'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_hash(loyalty.coupon_code) IS
	'Hash of a coupon code (hash support)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_hash(loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_code_hash_extended'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint) IS
	'Seeded 64-bit hash of a coupon code (hash support)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_hash_extended(loyalty.coupon_code, bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_kind(loyalty.coupon_code)
RETURNS text
AS 'MODULE_PATHNAME', 'coupon_code_kind'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_kind(loyalty.coupon_code) IS
	'Kind of a coupon code: generated or vanity';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_kind(loyalty.coupon_code)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_code_check(code text)
RETURNS text
AS 'MODULE_PATHNAME', 'coupon_code_check'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.coupon_code_check(text) IS
	'NULL if the text is a valid coupon code, else why not: empty, invalid_character, too_long or check_mismatch';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.coupon_code_check(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.vanity_code(code text)
RETURNS loyalty.coupon_code
AS 'MODULE_PATHNAME', 'coupon_code_vanity'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.vanity_code(text) IS
	'A public vanity code (e.g. SUMMER25); refuses words that read as a generated code or a typo of one';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.vanity_code(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.random_codes(pattern text, count integer)
RETURNS SETOF loyalty.coupon_code
AS 'MODULE_PATHNAME', 'coupon_code_random'
LANGUAGE C VOLATILE STRICT PARALLEL SAFE
ROWS 1000;

COMMENT ON FUNCTION loyalty.random_codes(text, integer) IS
	'count cryptographically random codes of a pattern such as SMR-####-#### (# = random character, check characters appended); independent draws, uniqueness is the caller''s';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.random_codes(text, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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

