/*
 * rfm_score.c
 *		The loyalty.rfm_score type: text and binary I/O, accessors and the
 *		constructor.
 *
 * The representation (rfm_score.h) is an int16 r * 100 + f * 10 + m, so the
 * comparison, btree, sort support and hash functions are PostgreSQL's own
 * int2 ones, bound in rfm_score.sql (as contrib/isn does for ean13 over int8).
 * Parsing lives in rfm_score_parse.c, free of PostgreSQL, to be fuzzed alone.
 */
#include "postgres.h"

#include "fmgr.h"
#include "libpq/pqformat.h"

#include "compat.h"
#include "rfm_score.h"
#include "rfm_score_parse.h"

StaticAssertDecl(sizeof(RfmScore) == sizeof(int16_t),
				 "rfm_score_parse.c and rfm_score.h must agree on the representation");

PG_FUNCTION_INFO_V1(rfm_score_in);
PG_FUNCTION_INFO_V1(rfm_score_out);
PG_FUNCTION_INFO_V1(rfm_score_recv);
PG_FUNCTION_INFO_V1(rfm_score_send);
PG_FUNCTION_INFO_V1(rfm_score_recency);
PG_FUNCTION_INFO_V1(rfm_score_frequency);
PG_FUNCTION_INFO_V1(rfm_score_monetary);
PG_FUNCTION_INFO_V1(rfm_score_make);

/*
 * Text input: a thin wrapper around RfmScoreParse that turns its verdict
 * into 22P02 with the parser's detail sentence.  Reports softly (PG16+
 * escontext) so that pg_input_is_valid() and COPY ... ON_ERROR work.
 */
Datum
rfm_score_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	int16_t		score;
	const char *detail = NULL;

	if (!RfmScoreParse(str, &score, &detail))
		ereturn(LOYALTY_ESCONTEXT(fcinfo), (Datum) 0,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid input syntax for type rfm_score: \"%s\"", str),
				 errdetail("%s", detail)));

	PG_RETURN_RFM_SCORE((RfmScore) score);
}

/* Text output: the three digits, which rfm_score_in reads back exactly. */
Datum
rfm_score_out(PG_FUNCTION_ARGS)
{
	RfmScore	score = PG_GETARG_RFM_SCORE(0);
	char	   *buf = palloc(RFM_SCORE_TEXT_SIZE);

	RfmScoreFormat(score, buf);
	PG_RETURN_CSTRING(buf);
}

/*
 * Binary input: an int2 in network order, checked as strictly as text input
 * so that COPY BINARY or a driver cannot store a value the text form could
 * not express (e.g. 0, 105 or 1000).
 */
Datum
rfm_score_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int16		value = (int16) pq_getmsgint(buf, sizeof(int16));

	if (!RfmScoreIsValid(value))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary value for type rfm_score: %d", (int) value),
				 errdetail("The binary form is an int2 r * 100 + f * 10 + m with each digit 1 to 9.")));

	PG_RETURN_RFM_SCORE((RfmScore) value);
}

/* Binary output: the representation as an int2 in network order. */
Datum
rfm_score_send(PG_FUNCTION_ARGS)
{
	RfmScore	score = PG_GETARG_RFM_SCORE(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendint16(&buf, (uint16) score);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* loyalty.recency(rfm_score): the recency part, 1..9. */
Datum
rfm_score_recency(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RfmScoreRecency(PG_GETARG_RFM_SCORE(0)));
}

/* loyalty.frequency(rfm_score): the frequency part, 1..9. */
Datum
rfm_score_frequency(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RfmScoreFrequency(PG_GETARG_RFM_SCORE(0)));
}

/* loyalty.monetary(rfm_score): the monetary part, 1..9. */
Datum
rfm_score_monetary(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(RfmScoreMonetary(PG_GETARG_RFM_SCORE(0)));
}

/*
 * Raise 22003 naming the part of the constructor that is out of range; the
 * caller passes the SQL argument name so the message matches the signature.
 */
static void
RfmCheckPart(const char *name, int32 value)
{
	if (value < RFM_SCORE_MIN_PART || value > RFM_SCORE_MAX_PART)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("rfm_score %s %d is out of range", name, value),
				 errdetail("Each part of an rfm_score must be between %d and %d.",
						   RFM_SCORE_MIN_PART, RFM_SCORE_MAX_PART)));
}

/*
 * loyalty.rfm_score(recency, frequency, monetary): build a score from its
 * parts, the way SQL code and the scoring functions assemble one.
 */
Datum
rfm_score_make(PG_FUNCTION_ARGS)
{
	int32		r = PG_GETARG_INT32(0);
	int32		f = PG_GETARG_INT32(1);
	int32		m = PG_GETARG_INT32(2);

	RfmCheckPart("recency", r);
	RfmCheckPart("frequency", f);
	RfmCheckPart("monetary", m);
	PG_RETURN_RFM_SCORE(RfmScoreMake(r, f, m));
}
