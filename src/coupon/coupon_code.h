/*
 * coupon_code.h
 *		The loyalty.coupon_code type and the pure-C code machinery: parsing,
 *		normalisation, the check characters, patterns and generation.
 *
 * Two kinds of codes share the type:
 *
 *	- generated codes, made from a pattern: every character is a symbol of
 *	  the Crockford base32 alphabet (0-9, A-Z without I, L, O, U), and the
 *	  last COUPON_CODE_CHECK_CHARS characters are check characters over the
 *	  whole code (prefix included).  The check is a shortened Reed-Solomon
 *	  code over GF(32) with minimum distance 4: any one, two or three wrong
 *	  characters are detected, hence any single substitution and any
 *	  transposition (adjacent or not);
 *	- vanity codes ("SUMMER25"): any letters and digits, no check character.
 *
 * Input normalisation (both kinds): ASCII letters are upper-cased; runs of
 * separators ('-', '_', '.', and white space) are dropped for identity and
 * kept only as one '-' in the display text.  Identity (equality, ordering,
 * hashing) is decided on the *key*: the characters without separators and
 * with O read as 0 and I, L read as 1.
 *
 * Which kind a text is: its key is a generated code when it has 4..31
 * characters, all in the alphabet, and the check holds.  If it is one typo
 * away from a generated code -- one wrong character, two adjacent characters
 * swapped, one character missing or one too many -- it is rejected
 * (COUPON_CODE_ERR_CHECK): that is a mistyped generated code, never a vanity
 * code.  Everything else made of letters and digits (up to
 * COUPON_CODE_MAX_CHARS) is a vanity code.  Wrong and swapped characters are
 * always caught (distance 4); a missing or extra character always in the
 * first two and last two positions, elsewhere unless the result happens to
 * be another valid code (probability 1 in 32768).
 * With a single check character every string of a generated length would
 * be a code or a typo of one, so vanity codes could not coexist with
 * generated codes; with three, about (64n + 32) / 32768 of all n-letter
 * words are a code or one typo from one (2% at 10 letters, at most 4%), and
 * only those are refused as vanity codes.

 * SQL: the operators live in schema loyalty; code with search_path =
 * pg_catalog, pg_temp writes "c.code OPERATOR(loyalty.=) $1" (the default
 * btree opclass then serves a unique index on the column).
 *
 * The pure part (everything not under "PostgreSQL side" below) uses no
 * palloc and no ereport, and compiles without PostgreSQL when
 * COUPON_CODE_STANDALONE is defined (the fuzz driver in test/fuzz/ does so).
 */
#ifndef LOYALTY_COUPON_CODE_H
#define LOYALTY_COUPON_CODE_H

#ifdef COUPON_CODE_STANDALONE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
typedef uint8_t uint8;
typedef uint32_t uint32;
typedef int64_t int64;
typedef uint64_t uint64;
#else
#include "postgres.h"
#endif

/* The code alphabet, symbol value = index (Crockford base32). */
#define COUPON_CODE_ALPHABET	"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#define COUPON_CODE_RADIX		32

/* Check characters appended to every generated code. */
#define COUPON_CODE_CHECK_CHARS 3
/* Generated codes: at least one character before the check characters, and
 * at most 31 characters in all (the length of a Reed-Solomon code over
 * GF(32)). */
#define COUPON_CODE_MIN_GENERATED (1 + COUPON_CODE_CHECK_CHARS)
#define COUPON_CODE_MAX_GENERATED 31
/* Longest code of either kind, in characters without separators. */
#define COUPON_CODE_MAX_CHARS	32
/* Longest display text: characters with one '-' between any two. */
#define COUPON_CODE_MAX_DISPLAY (2 * COUPON_CODE_MAX_CHARS - 1)

/*
 * Codes one call of generate_codes or random_codes makes at most (README,
 * "Limits"): a bigger count is 54000 with a hint to call in batches, so that
 * no single call runs for hours or holds millions of rows in one statement.
 */
#define COUPON_MAX_CODES_PER_CALL 10000000

typedef enum CouponCodeKind
{
	COUPON_CODE_GENERATED = 1,
	COUPON_CODE_VANITY = 2
} CouponCodeKind;

/*
 * A parsed code: its kind and its display text (upper case, one '-' where
 * the input had separators; generated codes are shown in the alphabet, i.e.
 * with O, I, L already read as 0, 1, 1).  NUL-terminated.
 */
typedef struct CouponCodeValue
{
	CouponCodeKind kind;
	int			nchars;			/* characters without separators */
	int			display_len;
	char		display[COUPON_CODE_MAX_DISPLAY + 1];
} CouponCodeValue;

/*
 * Outcome of parsing a code or a pattern.  The reason tokens returned by
 * CouponCodeReason() are stable (documented, used by
 * loyalty.coupon_code_check and by the coupon API).
 */
typedef enum CouponCodeStatus
{
	COUPON_CODE_OK = 0,
	/* codes */
	COUPON_CODE_ERR_EMPTY,		/* "empty": nothing but separators */
	COUPON_CODE_ERR_BAD_CHAR,	/* "invalid_character": not A-Z, 0-9 or a
								 * separator */
	COUPON_CODE_ERR_TOO_LONG,	/* "too_long": more than
								 * COUPON_CODE_MAX_CHARS */
	COUPON_CODE_ERR_CHECK,		/* "check_mismatch": a generated code with a
								 * wrong, swapped, missing or extra
								 * character (see typo) */
	/* patterns */
	COUPON_PATTERN_ERR_EMPTY,	/* "pattern_empty" */
	COUPON_PATTERN_ERR_BAD_CHAR,	/* "pattern_invalid_character" */
	COUPON_PATTERN_ERR_SEPARATOR,	/* "pattern_separator": leading,
									 * trailing or doubled */
	COUPON_PATTERN_ERR_NO_RANDOM,	/* "pattern_no_random" */
	COUPON_PATTERN_ERR_TOO_LONG,	/* "pattern_too_long" */
	COUPON_PATTERN_ERR_COUNT	/* "pattern_too_small": too few random
								 * positions for the count */
} CouponCodeStatus;

/* The typo found behind a COUPON_CODE_ERR_CHECK. */
typedef enum CouponCodeTypo
{
	COUPON_TYPO_NONE = 0,
	COUPON_TYPO_WRONG,			/* character position is wrong */
	COUPON_TYPO_SWAPPED,		/* characters position, position2 swapped */
	COUPON_TYPO_MISSING,		/* a character is missing before character
								 * position (position = length + 1: at the
								 * end) */
	COUPON_TYPO_EXTRA			/* character position is one too many */
} CouponCodeTypo;

/* Details of a failure, for messages. */
typedef struct CouponCodeError
{
	CouponCodeStatus status;
	CouponCodeTypo typo;		/* for COUPON_CODE_ERR_CHECK */
	int			position;		/* 1-based: input byte (bad character) or
								 * code character (check), 0 if unknown;
								 * random positions of the pattern for
								 * COUPON_PATTERN_ERR_COUNT */
	int			position2;		/* second character of a swapped pair, or 0 */
	unsigned char ch;			/* offending byte (bad character) */
	int64		value;			/* what was found (length, count) */
	int64		limit;			/* the limit it broke */
} CouponCodeError;

/* A pattern slot holding a random symbol instead of a literal one. */
#define COUPON_PATTERN_RANDOM	0xFF

/*
 * A parsed pattern, e.g. 'SMR-####-####': literal symbols, random positions
 * ('#'), and separators between groups.  The check characters are appended
 * as a group of their own when the pattern has separators, else directly.
 */
typedef struct CouponPattern
{
	int			nchars;			/* code length, check characters included */
	int			nrandom;		/* random positions */
	uint8		symbol[COUPON_CODE_MAX_GENERATED];	/* literal value or
													 * COUPON_PATTERN_RANDOM;
													 * check slots unused */
	uint32		sep_after;		/* bit i: '-' after character i */
} CouponPattern;

/* ---- pure functions (coupon_code_core.c) ---- */

/*
 * Parse a code typed by a person or stored as text.  len is the byte length
 * of str (no NUL needed).  On success fills *out and returns true; else
 * fills *err and returns false.
 */
extern bool CouponCodeParse(const char *str, size_t len,
							CouponCodeValue *out, CouponCodeError *err);

/*
 * The identity key of a display text (or any input of letters, digits and
 * separators): separators dropped, upper case, O as 0, I and L as 1.
 * key must hold COUPON_CODE_MAX_CHARS bytes; returns the key length, or -1
 * if the text has more characters.  No NUL is written.
 */
extern int	CouponCodeKey(const char *display, int display_len, char *key);

/* Order of two display texts by key: -1, 0, 1 (equal keys = same code). */
extern int	CouponCodeCompare(const char *a, int alen, const char *b, int blen);

/*
 * Kind of a text known to be valid (e.g. the display text stored in a
 * value): COUPON_CODE_GENERATED, COUPON_CODE_VANITY, or 0 if invalid.
 */
extern int	CouponCodeKindOf(const char *display, int display_len);

/* The stable reason token of a status ("check_mismatch", ...), "ok" for OK. */
extern const char *CouponCodeReason(CouponCodeStatus status);

/* Symbol value of an upper-case character of the alphabet, or -1. */
extern int	CouponCodeSymbol(unsigned char c);

/*
 * The check symbols of ndata data symbols (values 0..31): writes
 * COUPON_CODE_CHECK_CHARS symbols to check.  1 <= ndata <=
 * COUPON_CODE_MAX_GENERATED - COUPON_CODE_CHECK_CHARS.
 */
extern void CouponCodeCheckSymbols(const uint8 *data, int ndata, uint8 *check);

/* Whether n symbols (check symbols included) form a valid generated code. */
extern bool CouponCodeSymbolsValid(const uint8 *sym, int n);

/*
 * Parse a pattern: '#' = random symbol, letters/digits of the alphabet =
 * literals (lower case accepted), '-' = group separator.
 */
extern bool CouponPatternParse(const char *str, size_t len,
							   CouponPattern *p, CouponCodeError *err);

/*
 * Whether count codes may be drawn from the pattern: refuses count >
 * 32^nrandom / 10 (COUPON_PATTERN_ERR_COUNT).  Negative counts are the
 * caller's to reject.
 */
extern bool CouponPatternAllowsCount(const CouponPattern *p, int64 count,
									 CouponCodeError *err);

/*
 * Make the code of a pattern from p->nrandom random bytes (one byte per
 * random position; its low 5 bits pick the symbol, which is uniform when the
 * bytes are).  The result is a generated code with the pattern's layout.
 */
extern void CouponCodeFromRandom(const CouponPattern *p, const uint8 *random,
								 CouponCodeValue *out);

#ifndef COUPON_CODE_STANDALONE
/* ---- PostgreSQL side (coupon_code.c) ---- */

#include "fmgr.h"
#include "nodes/nodes.h"

/*
 * On-disk / in-memory form: a varlena holding one kind byte followed by the
 * display text (no NUL).  Typically 1 + 1 + 13..20 bytes on disk.  Read it
 * through the macros: values may carry a short (1-byte) varlena header.
 */
typedef struct varlena CouponCode;

#define DatumGetCouponCodeP(d)	((CouponCode *) PG_DETOAST_DATUM_PACKED(d))
#define PG_GETARG_COUPON_CODE_P(n)	DatumGetCouponCodeP(PG_GETARG_DATUM(n))
#define PG_RETURN_COUPON_CODE_P(x)	PG_RETURN_POINTER(x)

#define CouponCodeGetKind(c)	((CouponCodeKind) ((const uint8 *) VARDATA_ANY(c))[0])
#define CouponCodeDisplay(c)	((const char *) VARDATA_ANY(c) + 1)
#define CouponCodeDisplayLen(c) ((int) VARSIZE_ANY_EXHDR(c) - 1)

/* Build a value (palloc'd in the current memory context). */
extern CouponCode *CouponCodeFromValue(const CouponCodeValue *v);

/*
 * Raise the error of a failed CouponCodeParse of input (22P02, with a detail
 * naming the problem), or save it in escontext (PG16+ soft errors) and
 * return.
 */
extern void CouponCodeReportError(const char *input, const CouponCodeError *err,
								  Node *escontext);

/* The typo of a check_mismatch as a phrase, for messages. */
extern void CouponCodeTypoText(const CouponCodeError *err, char *typo,
							   size_t len);

/* Raise the error of a failed CouponPatternParse / AllowsCount (22023). */
extern void CouponPatternReportError(const char *pattern,
									 const CouponCodeError *err);

/* Fill buf with cryptographically strong random bytes, or raise an error. */
extern void CouponRandomBytes(uint8 *buf, size_t len);

#endif							/* !COUPON_CODE_STANDALONE */

#endif							/* LOYALTY_COUPON_CODE_H */
