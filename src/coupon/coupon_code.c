/*
 * coupon_code.c
 *		The loyalty.coupon_code type (I/O, comparison, hashing), the code
 *		utilities callable from SQL, and loyalty.random_codes().
 *
 * Parsing, the check and generation are pure C in coupon_code_core.c; this
 * file only wraps them: memory, errors, fmgr.
 */
#include "loyalty.h"

#include "coupon_code.h"

#include "common/hashfn.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"

/* Version byte leading the binary form (send/recv). */
#define COUPON_CODE_BINARY_VERSION 1

/* Random codes made per pg_strong_random() call in random_codes(). */
#define COUPON_RANDOM_BATCH 4096

/*
 * Build a value from a parsed code: one kind byte and the display text.
 */
CouponCode *
CouponCodeFromValue(const CouponCodeValue *v)
{
	Size		size = VARHDRSZ + 1 + v->display_len;
	CouponCode *result = (CouponCode *) palloc(size);

	SET_VARSIZE(result, size);
	((uint8 *) VARDATA(result))[0] = (uint8) v->kind;
	memcpy(VARDATA(result) + 1, v->display, v->display_len);
	return result;
}

/*
 * The typo behind a check_mismatch as a phrase ("characters 8 and 9 appear
 * to be swapped"): the 22P02 of the type and the LY001 of the coupon API
 * say it alike.
 */
void
CouponCodeTypoText(const CouponCodeError *err, char *typo, size_t len)
{
	switch (err->typo)
	{
		case COUPON_TYPO_SWAPPED:
			snprintf(typo, len, "characters %d and %d appear to be swapped",
					 err->position, err->position2);
			break;
		case COUPON_TYPO_MISSING:
			if (err->position == 1)
				snprintf(typo, len, "a character appears to be missing at the start");
			else
				snprintf(typo, len, "a character appears to be missing after character %d",
						 err->position - 1);
			break;
		case COUPON_TYPO_EXTRA:
			snprintf(typo, len, "character %d appears to be one too many",
					 err->position);
			break;
		default:
			snprintf(typo, len, "character %d appears to be wrong",
					 err->position);
			break;
	}
}

/*
 * Report a failed parse of a code as 22P02 with a detail that names the
 * problem precisely enough for a person to fix the code.
 */
void
CouponCodeReportError(const char *input, const CouponCodeError *err,
					  Node *escontext)
{
	switch (err->status)
	{
		case COUPON_CODE_ERR_BAD_CHAR:
			if (err->ch >= 0x20 && err->ch < 0x7f)
				ereturn(escontext,,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("invalid input syntax for type coupon_code: \"%s\"", input),
						 errdetail("Character \"%c\" at position %d is not a letter, a digit or a separator.",
								   err->ch, err->position),
						 errhint("Codes are made of letters A-Z and digits 0-9; \"-\", \"_\", \".\" and spaces may separate groups.")));
			else
				ereturn(escontext,,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("invalid input syntax for type coupon_code: \"%s\"", input),
						 errdetail("The byte 0x%02x at position %d is not a letter, a digit or a separator.",
								   err->ch, err->position),
						 errhint("Codes are made of letters A-Z and digits 0-9; \"-\", \"_\", \".\" and spaces may separate groups.")));
			break;
		case COUPON_CODE_ERR_EMPTY:
			ereturn(escontext,,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid input syntax for type coupon_code: \"%s\"", input),
					 errdetail("The code has no letters or digits.")));
			break;
		case COUPON_CODE_ERR_TOO_LONG:
			ereturn(escontext,,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid input syntax for type coupon_code: \"%s\"", input),
					 errdetail("The code has " INT64_FORMAT " letters and digits; the maximum is " INT64_FORMAT ".",
							   err->value, err->limit)));
			break;
		case COUPON_CODE_ERR_CHECK:
			{
				char		typo[128];

				CouponCodeTypoText(err, typo, sizeof(typo));
				ereturn(escontext,,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("invalid input syntax for type coupon_code: \"%s\"", input),
						 errdetail("The check characters do not match: %s.", typo),
						 errhint("Positions count letters and digits only. The code was mistyped; it was not looked up.")));
			}
			break;
		default:
			elog(ERROR, "unexpected coupon code parse status %d", (int) err->status);
	}
}

/*
 * Report a bad pattern or count as 22023, naming the problem.
 */
void
CouponPatternReportError(const char *pattern, const CouponCodeError *err)
{
	switch (err->status)
	{
		case COUPON_PATTERN_ERR_EMPTY:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid coupon code pattern: \"%s\"", pattern),
					 errdetail("The pattern is empty."),
					 errhint("Write \"#\" for each random character, e.g. \"SMR-####-####\".")));
			break;
		case COUPON_PATTERN_ERR_BAD_CHAR:
			{
				unsigned char c = err->ch;
				unsigned char u = (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;

				if (u == 'I' || u == 'L' || u == 'O' || u == 'U')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid coupon code pattern: \"%s\"", pattern),
							 errdetail("Letter \"%c\" at position %d is not in the code alphabet (0-9 and A-Z without I, L, O, U).",
									   c, err->position),
							 errhint("The alphabet leaves out I, L, O and U (input reads O as 0 and I, L as 1; U is close to V), so codes with them could not be typed back as printed. Choose a prefix without them (e.g. \"SMR\" for SUMMER), or use a vanity code.")));
				else if (c >= 0x20 && c < 0x7f)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid coupon code pattern: \"%s\"", pattern),
							 errdetail("Character \"%c\" at position %d is not allowed in a pattern.",
									   c, err->position),
							 errhint("A pattern holds \"#\" for a random character, letters and digits of the code alphabet as literals, and \"-\" between groups.")));
				else
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid coupon code pattern: \"%s\"", pattern),
							 errdetail("The byte 0x%02x at position %d is not allowed in a pattern.",
									   c, err->position),
							 errhint("A pattern holds \"#\" for a random character, letters and digits of the code alphabet as literals, and \"-\" between groups.")));
			}
			break;
		case COUPON_PATTERN_ERR_SEPARATOR:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid coupon code pattern: \"%s\"", pattern),
					 errdetail("The separator at position %d does not stand between two groups.",
							   err->position),
					 errhint("Write one \"-\" between groups, none at the start or the end.")));
			break;
		case COUPON_PATTERN_ERR_NO_RANDOM:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid coupon code pattern: \"%s\"", pattern),
					 errdetail("The pattern has no random positions, so every code would be the same."),
					 errhint("Write \"#\" for each random character, e.g. \"SMR-####-####\".")));
			break;
		case COUPON_PATTERN_ERR_TOO_LONG:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid coupon code pattern: \"%s\"", pattern),
					 errdetail("Its codes would have " INT64_FORMAT " characters with the %d check characters; the maximum is " INT64_FORMAT ".",
							   err->value, COUPON_CODE_CHECK_CHARS, err->limit)));
			break;
		case COUPON_PATTERN_ERR_COUNT:
			{
				int			need = 1;
				double		space = 32.0;

				while (space / 10.0 < (double) err->value)
				{
					space *= 32.0;
					need++;
				}
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("coupon code pattern \"%s\" is too small for " INT64_FORMAT " codes", pattern,
								err->value),
						 errdetail("With %d random positions it has room for at most " INT64_FORMAT " codes, a tenth of its combinations; beyond that codes are easy to guess and fresh codes keep colliding with used ones.",
								   err->position, err->limit),
						 errhint("Use at least %d random positions (\"#\").", need)));
			}
			break;
		default:
			elog(ERROR, "unexpected coupon pattern parse status %d", (int) err->status);
	}
}

/*
 * Cryptographically strong random bytes (OpenSSL or the kernel, whichever
 * PostgreSQL was built with).
 */
void
CouponRandomBytes(uint8 *buf, size_t len)
{
	if (!pg_strong_random(buf, len))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random coupon codes"),
				 errdetail("The strong random number source failed.")));
}

/* ------------------------------------------------------------------------
 * I/O
 * ------------------------------------------------------------------------ */

PG_FUNCTION_INFO_V1(coupon_code_in);

/*
 * Text input: normalise, decide the kind, reject a mistyped generated code
 * (check mismatch) before anything can look it up.  PG16+ soft errors are
 * honoured.
 */
Datum
coupon_code_in(PG_FUNCTION_ARGS)
{
	char	   *str = PG_GETARG_CSTRING(0);
	CouponCodeValue v;
	CouponCodeError err;

	if (!CouponCodeParse(str, strlen(str), &v, &err))
	{
		CouponCodeReportError(str, &err, LOYALTY_ESCONTEXT(fcinfo));
		PG_RETURN_NULL();
	}
	PG_RETURN_COUPON_CODE_P(CouponCodeFromValue(&v));
}

PG_FUNCTION_INFO_V1(coupon_code_out);

/*
 * Text output: the display text (canonical upper case, the groups as
 * generated or typed).  Reading it back gives the same value.
 */
Datum
coupon_code_out(PG_FUNCTION_ARGS)
{
	CouponCode *code = PG_GETARG_COUPON_CODE_P(0);

	PG_RETURN_CSTRING(pnstrdup(CouponCodeDisplay(code), CouponCodeDisplayLen(code)));
}

PG_FUNCTION_INFO_V1(coupon_code_recv);

/*
 * Binary input: version byte, kind byte, text.  The text is parsed exactly
 * as by coupon_code_in, and the kind must be the one the text reads as.
 */
Datum
coupon_code_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			version = pq_getmsgbyte(buf);
	int			kind;
	char	   *str;
	int			nbytes;
	CouponCodeValue v;
	CouponCodeError err;

	if (version != COUPON_CODE_BINARY_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary coupon_code: unsupported format version %d", version)));
	kind = pq_getmsgbyte(buf);
	str = pq_getmsgtext(buf, buf->len - buf->cursor, &nbytes);
	if (!CouponCodeParse(str, (size_t) nbytes, &v, &err))
		CouponCodeReportError(str, &err, NULL);
	if ((int) v.kind != kind)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid binary coupon_code: \"%s\" is not of kind %d", str, kind)));
	PG_RETURN_COUPON_CODE_P(CouponCodeFromValue(&v));
}

PG_FUNCTION_INFO_V1(coupon_code_send);

/*
 * Binary output: version byte, kind byte, display text.
 */
Datum
coupon_code_send(PG_FUNCTION_ARGS)
{
	CouponCode *code = PG_GETARG_COUPON_CODE_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, COUPON_CODE_BINARY_VERSION);
	pq_sendbyte(&buf, (uint8) CouponCodeGetKind(code));
	pq_sendtext(&buf, CouponCodeDisplay(code), CouponCodeDisplayLen(code));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* ------------------------------------------------------------------------
 * Comparison and hashing: on the key (no separators, O/I/L folded), so that
 * 'AS1V-N5C0-VB8' = 'as1v n5co vb8'
 * ------------------------------------------------------------------------ */

/*
 * Compare two argument values; frees detoasted copies.
 */
static int
CouponCodeCmpArgs(FunctionCallInfo fcinfo)
{
	CouponCode *a = PG_GETARG_COUPON_CODE_P(0);
	CouponCode *b = PG_GETARG_COUPON_CODE_P(1);
	int			r = CouponCodeCompare(CouponCodeDisplay(a), CouponCodeDisplayLen(a),
									  CouponCodeDisplay(b), CouponCodeDisplayLen(b));

	PG_FREE_IF_COPY(a, 0);
	PG_FREE_IF_COPY(b, 1);
	return r;
}

PG_FUNCTION_INFO_V1(coupon_code_cmp);

/*
 * btree support 1: three-way comparison.
 */
Datum
coupon_code_cmp(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(CouponCodeCmpArgs(fcinfo));
}

PG_FUNCTION_INFO_V1(coupon_code_eq);

/* Operator =: same key. */
Datum
coupon_code_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CouponCodeCmpArgs(fcinfo) == 0);
}

PG_FUNCTION_INFO_V1(coupon_code_ne);

/* Operator <>. */
Datum
coupon_code_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CouponCodeCmpArgs(fcinfo) != 0);
}

PG_FUNCTION_INFO_V1(coupon_code_lt);

/* Operator <: key order. */
Datum
coupon_code_lt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CouponCodeCmpArgs(fcinfo) < 0);
}

PG_FUNCTION_INFO_V1(coupon_code_le);

/* Operator <=. */
Datum
coupon_code_le(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CouponCodeCmpArgs(fcinfo) <= 0);
}

PG_FUNCTION_INFO_V1(coupon_code_gt);

/* Operator >. */
Datum
coupon_code_gt(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CouponCodeCmpArgs(fcinfo) > 0);
}

PG_FUNCTION_INFO_V1(coupon_code_ge);

/* Operator >=. */
Datum
coupon_code_ge(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(CouponCodeCmpArgs(fcinfo) >= 0);
}

/*
 * The key of a value, for hashing.
 */
static int
CouponCodeValueKey(CouponCode *code, char *key)
{
	int			n = CouponCodeKey(CouponCodeDisplay(code), CouponCodeDisplayLen(code), key);

	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("corrupt coupon_code value")));
	return n;
}

PG_FUNCTION_INFO_V1(coupon_code_hash);

/*
 * hash support 1: hash of the key, so equal codes hash alike whatever their
 * separators and O/0, I/1 spelling.
 */
Datum
coupon_code_hash(PG_FUNCTION_ARGS)
{
	CouponCode *code = PG_GETARG_COUPON_CODE_P(0);
	char		key[COUPON_CODE_MAX_CHARS];
	int			n = CouponCodeValueKey(code, key);
	Datum		h = hash_any((unsigned char *) key, n);

	PG_FREE_IF_COPY(code, 0);
	return h;
}

PG_FUNCTION_INFO_V1(coupon_code_hash_extended);

/*
 * hash support 2: seeded 64-bit hash of the key.
 */
Datum
coupon_code_hash_extended(PG_FUNCTION_ARGS)
{
	CouponCode *code = PG_GETARG_COUPON_CODE_P(0);
	uint64		seed = PG_GETARG_INT64(1);
	char		key[COUPON_CODE_MAX_CHARS];
	int			n = CouponCodeValueKey(code, key);
	Datum		h = hash_any_extended((unsigned char *) key, n, seed);

	PG_FREE_IF_COPY(code, 0);
	return h;
}

/* ------------------------------------------------------------------------
 * Utilities
 * ------------------------------------------------------------------------ */

PG_FUNCTION_INFO_V1(coupon_code_kind);

/*
 * loyalty.coupon_code_kind(code): 'generated' or 'vanity'.
 */
Datum
coupon_code_kind(PG_FUNCTION_ARGS)
{
	CouponCode *code = PG_GETARG_COUPON_CODE_P(0);

	PG_RETURN_TEXT_P(cstring_to_text(CouponCodeGetKind(code) == COUPON_CODE_GENERATED
									 ? "generated" : "vanity"));
}

PG_FUNCTION_INFO_V1(coupon_code_check);

/*
 * loyalty.coupon_code_check(text): NULL when the text is a valid code, else
 * the stable reason token (empty, invalid_character, too_long,
 * check_mismatch).  For forms that want to say "typo" before submitting.
 */
Datum
coupon_code_check(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	CouponCodeValue v;
	CouponCodeError err;

	if (CouponCodeParse(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &v, &err))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(CouponCodeReason(err.status)));
}

PG_FUNCTION_INFO_V1(coupon_code_vanity);

/*
 * loyalty.vanity_code(text): the text as a vanity code, for setting up a
 * public code.  Refuses words that read as a generated code or as a typo of
 * one: customers typing them would be told they mistyped a code.
 */
Datum
coupon_code_vanity(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	char	   *str = text_to_cstring(t);
	CouponCodeValue v;
	CouponCodeError err;

	if (!CouponCodeParse(str, strlen(str), &v, &err))
	{
		if (err.status == COUPON_CODE_ERR_CHECK)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"%s\" cannot be a vanity code", str),
					 errdetail("It is one typo (a wrong, swapped, missing or extra character) away from a generated code, so typing it would be rejected as a mistyped code."),
					 errhint("Change, add or remove a character.")));
		CouponCodeReportError(str, &err, NULL);
	}
	if (v.kind != COUPON_CODE_VANITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" cannot be a vanity code", str),
				 errdetail("It is a valid generated code: its last %d characters are its check characters.",
						   COUPON_CODE_CHECK_CHARS),
				 errhint("Change, add or remove a character.")));
	PG_RETURN_COUPON_CODE_P(CouponCodeFromValue(&v));
}

/* ------------------------------------------------------------------------
 * Generation
 * ------------------------------------------------------------------------ */

typedef struct RandomCodesState
{
	CouponPattern pattern;
	int64		remaining;		/* codes still to return */
	uint8	   *random;			/* COUPON_RANDOM_BATCH codes' random bytes */
	int			nready;			/* codes' worth of bytes left in random */
	int			next;			/* index of the next code's bytes */
} RandomCodesState;

PG_FUNCTION_INFO_V1(coupon_code_random);

/*
 * loyalty.random_codes(pattern, count): count random codes of the pattern,
 * drawn from pg_strong_random() in batches of COUPON_RANDOM_BATCH codes.
 * Codes are independent draws: duplicates are possible (probability about
 * count^2 / 2 / 32^n for n random positions); whoever stores them enforces
 * uniqueness.
 */
Datum
coupon_code_random(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	RandomCodesState *st;
	CouponCodeValue v;

	if (SRF_IS_FIRSTCALL())
	{
		char	   *pattern = text_to_cstring(PG_GETARG_TEXT_PP(0));
		int32		count = PG_GETARG_INT32(1);
		MemoryContext oldcontext;
		CouponCodeError err;

		funcctx = SRF_FIRSTCALL_INIT();
		oldcontext = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		st = (RandomCodesState *) palloc0(sizeof(RandomCodesState));
		if (!CouponPatternParse(pattern, strlen(pattern), &st->pattern, &err))
			CouponPatternReportError(pattern, &err);
		if (count < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("count must not be negative: %d", count)));
		if (count > COUPON_MAX_CODES_PER_CALL)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("count %d is above the limit of %d codes per call",
							count, COUPON_MAX_CODES_PER_CALL),
					 errdetail("One call of random_codes makes at most %d codes.",
							   COUPON_MAX_CODES_PER_CALL),
					 errhint("Call it several times with a smaller count.")));
		if (!CouponPatternAllowsCount(&st->pattern, count, &err))
			CouponPatternReportError(pattern, &err);
		st->remaining = count;
		st->random = (uint8 *) palloc((Size) COUPON_RANDOM_BATCH * st->pattern.nrandom);
		funcctx->user_fctx = st;
		MemoryContextSwitchTo(oldcontext);
	}

	funcctx = SRF_PERCALL_SETUP();
	st = (RandomCodesState *) funcctx->user_fctx;
	if (st->remaining == 0)
		SRF_RETURN_DONE(funcctx);

	if (st->nready == 0)
	{
		int			batch = st->remaining < COUPON_RANDOM_BATCH
			? (int) st->remaining : COUPON_RANDOM_BATCH;

		CouponRandomBytes(st->random, (size_t) batch * st->pattern.nrandom);
		st->nready = batch;
		st->next = 0;
	}
	CouponCodeFromRandom(&st->pattern,
						 st->random + (Size) st->next * st->pattern.nrandom, &v);
	st->next++;
	st->nready--;
	st->remaining--;
	SRF_RETURN_NEXT(funcctx, PointerGetDatum(CouponCodeFromValue(&v)));
}
