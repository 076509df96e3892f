
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
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_in(cstring)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_out(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_recv(internal)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_send(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions */

CREATE FUNCTION loyalty.recency(loyalty.rfm_score)
RETURNS integer
AS 'MODULE_PATHNAME', 'rfm_score_recency'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.recency(loyalty.rfm_score) IS
	'Recency part of an rfm_score (first digit, 1 to 9)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.recency(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.frequency(loyalty.rfm_score)
RETURNS integer
AS 'MODULE_PATHNAME', 'rfm_score_frequency'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.frequency(loyalty.rfm_score) IS
	'Frequency part of an rfm_score (second digit, 1 to 9)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.frequency(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.monetary(loyalty.rfm_score)
RETURNS integer
AS 'MODULE_PATHNAME', 'rfm_score_monetary'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.monetary(loyalty.rfm_score) IS
	'Monetary part of an rfm_score (third digit, 1 to 9)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.monetary(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score(recency integer, frequency integer, monetary integer)
RETURNS loyalty.rfm_score
AS 'MODULE_PATHNAME', 'rfm_score_make'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.rfm_score(integer, integer, integer) IS
	'Build an rfm_score from its three parts, each 1 to 9 (22003 otherwise)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score(integer, integer, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Comparison, sort support and hashing: int2's own functions, valid because
 * rfm_score is binary-identical to int2 and ordered the same way.
 */
CREATE FUNCTION loyalty.rfm_score_eq(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2eq' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_eq(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score = operator';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_eq(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_ne(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2ne' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_ne(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score <> operator';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_ne(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_lt(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2lt' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_lt(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score < operator (order of recency, then frequency, then monetary)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_lt(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_le(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2le' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_le(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score <= operator';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_le(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_gt(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2gt' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_gt(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score > operator';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_gt(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_ge(loyalty.rfm_score, loyalty.rfm_score)
RETURNS boolean AS 'int2ge' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_ge(loyalty.rfm_score, loyalty.rfm_score) IS
	'Implementation of the rfm_score >= operator';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_ge(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score)
RETURNS integer AS 'btint2cmp' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score) IS
	'Three-way comparison of rfm_scores (btree support function)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_cmp(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_sortsupport(internal)
RETURNS void AS 'btint2sortsupport' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.rfm_score_sortsupport(internal) IS
	'Sort support for rfm_score (btree support function 2)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_sortsupport(internal)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_hash(loyalty.rfm_score)
RETURNS integer AS 'hashint2' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_hash(loyalty.rfm_score) IS
	'Hash of an rfm_score (hash support function 1)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_hash(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint)
RETURNS bigint AS 'hashint2extended' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint) IS
	'Seeded 64-bit hash of an rfm_score (hash support function 2, used by hash partitioning)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_hash_extended(loyalty.rfm_score, bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_smaller(loyalty.rfm_score, loyalty.rfm_score)
RETURNS loyalty.rfm_score AS 'int2smaller' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.rfm_score_smaller(loyalty.rfm_score, loyalty.rfm_score) IS
	'The smaller of two rfm_scores (state function of min)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_smaller(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rfm_score_larger(loyalty.rfm_score, loyalty.rfm_score)
RETURNS loyalty.rfm_score AS 'int2larger' LANGUAGE internal IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION loyalty.rfm_score_larger(loyalty.rfm_score, loyalty.rfm_score) IS
	'The larger of two rfm_scores (state function of max)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.rfm_score_larger(loyalty.rfm_score, loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.min(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE AGGREGATE loyalty.max(loyalty.rfm_score) (
	SFUNC = loyalty.rfm_score_larger,
	STYPE = loyalty.rfm_score,
	COMBINEFUNC = loyalty.rfm_score_larger,
	SORTOP = OPERATOR(loyalty.>),
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE loyalty.max(loyalty.rfm_score) IS
	'Highest rfm_score (by recency, then frequency, then monetary)';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.max(loyalty.rfm_score)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

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
