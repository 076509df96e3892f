/*
 * coupon_code_core.c
 *		Pure-C coupon code machinery: parsing and normalisation, the check
 *		characters (a Reed-Solomon code over GF(32)), patterns and generation.
 *
 * No palloc, no ereport, no global state: the fuzz driver
 * (test/fuzz/coupon_code_fuzz.c) compiles this file without PostgreSQL.
 *
 * The check.  Symbols are elements of GF(32) = GF(2)[x] / (x^5 + x^2 + 1),
 * alpha = x is primitive (order 31).  A code of n symbols s_0 .. s_{n-1}
 * (n <= 31) is framed by a virtual 1 on each side and read as the
 * polynomial W(X) = X^(n+1) + sum s_j X^(n-j) + 1; it is valid iff
 * W(alpha^k) = 0 for k = 1, 2, 3, i.e. iff W(X) is a multiple of
 * g(X) = (X + alpha)(X + alpha^2)(X + alpha^3): a Reed-Solomon code.
 *
 * Wrong and swapped characters: two strings of the same length differ by
 * E(X) = sum e_j X^(n-j), and both are valid only if E(alpha^k) = 0.  The
 * parity-check matrix has columns alpha^p * (1, alpha^p, alpha^2p), p = n-j
 * in 1..31, all alpha^p distinct; any three columns form a Vandermonde
 * matrix, so are independent, and the minimum distance is 4.  Every change
 * of one, two or three characters is detected; a transposition changes two.
 *
 * Missing and extra characters: without the frame, X c(X) would be a code
 * whenever c(X) is (Reed-Solomon codes are cyclic), so zeros could be added
 * at the start or the end, or dropped at the end, unnoticed.  With it, a
 * missing or extra character in the first two or last two positions turns
 * the validity condition into "a fixed nonzero polynomial of degree <= 2 in
 * alpha^k vanishes for k = 1, 2, 3", which cannot hold (e.g. a symbol v
 * inserted before the last symbol s needs (s + v) y^2 + (s + 1) y + 1 = 0
 * at three points y), so it is always caught; elsewhere the result is another valid
 * code only by chance, 1 in 32768 (the fuzz test measures both).
 */
#ifdef COUPON_CODE_STANDALONE
#include <string.h>
#else
#include "postgres.h"
#endif

#include "coupon_code.h"

/* alpha^i for i in 0..61 (two periods, so that exp[log a + log b] needs no
 * reduction). */
static const uint8 gf_exp[62] = {
	1, 2, 4, 8, 16, 5, 10, 20, 13, 26, 17, 7, 14, 28, 29, 31, 27, 19, 3, 6,
	12, 24, 21, 15, 30, 25, 23, 11, 22, 9, 18,
	1, 2, 4, 8, 16, 5, 10, 20, 13, 26, 17, 7, 14, 28, 29, 31, 27, 19, 3, 6,
	12, 24, 21, 15, 30, 25, 23, 11, 22, 9, 18
};

/* log_alpha(a) for a in 1..31 (gf_log[0] unused). */
static const uint8 gf_log[32] = {
	0, 0, 1, 18, 2, 5, 19, 11, 3, 29, 6, 27, 20, 8, 12, 23,
	4, 10, 30, 17, 7, 22, 28, 26, 21, 25, 9, 16, 13, 14, 24, 15
};

/* g(X) = X^3 + 14 X^2 + 29 X + 10, the coefficients below X^3. */
static const uint8 gen_poly[COUPON_CODE_CHECK_CHARS] = {14, 29, 10};

/* Symbol value for 'U', which letters may be but the alphabet excludes. */
#define SYMBOL_U		32
/* Classes of input bytes besides symbol values 0..32. */
#define CLASS_SEPARATOR (-2)
#define CLASS_INVALID	(-1)

/*
 * Multiply in GF(32).  Addition is XOR.
 */
static inline uint8
GfMul(uint8 a, uint8 b)
{
	if (a == 0 || b == 0)
		return 0;
	return gf_exp[gf_log[a] + gf_log[b]];
}

/*
 * alpha^e for any e >= 0.
 */
static inline uint8
GfPow(int e)
{
	return gf_exp[e % 31];
}

/*
 * a / b in GF(32), b != 0.
 */
static inline uint8
GfDiv(uint8 a, uint8 b)
{
	if (a == 0)
		return 0;
	return gf_exp[gf_log[a] + 31 - gf_log[b]];
}

/*
 * Classify one input byte of a code: its folded symbol value (O as 0, I and
 * L as 1, U as SYMBOL_U, lower case as upper), CLASS_SEPARATOR or
 * CLASS_INVALID.  Written as a switch on ranges rather than with ctype so
 * that the result never depends on the locale.
 */
static int
ClassifyByte(unsigned char c)
{
	if (c >= 'a' && c <= 'z')
		c = (unsigned char) (c - 'a' + 'A');
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'Z')
	{
		switch (c)
		{
			case 'O':
				return 0;
			case 'I':
			case 'L':
				return 1;
			case 'U':
				return SYMBOL_U;
			default:
				return CouponCodeSymbol(c);
		}
	}
	switch (c)
	{
		case '-':
		case '_':
		case '.':
		case ' ':
		case '\t':
		case '\n':
		case '\r':
		case '\v':
		case '\f':
			return CLASS_SEPARATOR;
		default:
			return CLASS_INVALID;
	}
}

/*
 * Symbol value of an upper-case alphabet character, -1 for anything else
 * (including I, L, O, U and lower case: callers fold first when they mean
 * to).
 */
int
CouponCodeSymbol(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c < 'A' || c > 'Z')
		return -1;
	switch (c)
	{
		case 'I':
		case 'L':
		case 'O':
		case 'U':
			return -1;
		default:
			break;
	}
	/* letters before the character, minus the excluded ones before it */
	return 10 + (c - 'A')
		- (c > 'I') - (c > 'L') - (c > 'O') - (c > 'U');
}

/*
 * The three syndromes S_k = W(alpha^k), k = 1..3, by Horner's rule from the
 * leading virtual 1 to the trailing one.  Zero for a valid code; for a
 * string with error E(X) against a valid code, S_k = E(alpha^k).
 */
static void
Syndromes(const uint8 *sym, int n, uint8 *s)
{
	int			k;

	for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
	{
		uint8		ak = gf_exp[k + 1];
		uint8		acc = 1;
		int			j;

		for (j = 0; j < n; j++)
			acc = GfMul(acc, ak) ^ sym[j];
		s[k] = GfMul(acc, ak) ^ 1;
	}
}

/*
 * One step of the shift register dividing by g(X).
 */
static inline void
LfsrStep(uint8 *reg, uint8 in)
{
	uint8		fb = in ^ reg[0];

	reg[0] = reg[1] ^ GfMul(fb, gen_poly[0]);
	reg[1] = reg[2] ^ GfMul(fb, gen_poly[1]);
	reg[2] = GfMul(fb, gen_poly[2]);
}

/*
 * Check symbols R(X) (written highest coefficient first) with
 * W(X) = X^(n+1) + D(X) X^4 + R(X) X + 1 = 0 mod g(X):
 * R = (X^n + D(X) X^3) mod g + X^-1 mod g.  The shift register fed with the
 * leading 1 and the data gives the first term; X^-1 = (X^2 + g2 X + g1) / g0
 * because X (X^2 + g2 X + g1) = g(X) + g0.
 */
void
CouponCodeCheckSymbols(const uint8 *data, int ndata, uint8 *check)
{
	uint8		reg[COUPON_CODE_CHECK_CHARS] = {0, 0, 0};
	int			j;

	LfsrStep(reg, 1);
	for (j = 0; j < ndata; j++)
		LfsrStep(reg, data[j]);
	check[0] = reg[0] ^ GfDiv(1, gen_poly[2]);
	check[1] = reg[1] ^ GfDiv(gen_poly[0], gen_poly[2]);
	check[2] = reg[2] ^ GfDiv(gen_poly[1], gen_poly[2]);
}

/*
 * Whether n symbols form a valid generated code: right length and all three
 * syndromes zero.
 */
bool
CouponCodeSymbolsValid(const uint8 *sym, int n)
{
	uint8		s[COUPON_CODE_CHECK_CHARS];

	if (n < COUPON_CODE_MIN_GENERATED || n > COUPON_CODE_MAX_GENERATED)
		return false;
	Syndromes(sym, n, s);
	return (s[0] | s[1] | s[2]) == 0;
}

/* Record a typo in err; returns 0 (the "no kind" result of ClassifyKey). */
static int
Typo(CouponCodeError *err, CouponCodeTypo typo, int position, int position2)
{
	err->status = COUPON_CODE_ERR_CHECK;
	err->typo = typo;
	err->position = position;
	err->position2 = position2;
	return 0;
}

/*
 * Same length: one wrong symbol, or two adjacent symbols swapped, given the
 * syndromes s of the n symbols.  Returns 0 with err filled if one is
 * found, -1 if not.
 */
static int
SameLengthTypo(const uint8 *sym, int n, const uint8 *s, CouponCodeError *err)
{
	int			j;
	int			k;

	/* one wrong symbol e at degree p = n - j: S_k = e alpha^(kp) */
	if (s[0] != 0 && s[1] != 0)
	{
		uint8		a = GfDiv(s[1], s[0]);	/* alpha^p */

		if (s[2] == GfMul(s[1], a))
		{
			int			p = (gf_log[a] == 0) ? 31 : gf_log[a];

			if (p <= n)
				return Typo(err, COUPON_TYPO_WRONG, n - p + 1, 0);
		}
	}

	/*
	 * Characters j, j+1 swapped: the error is e = s_j ^ s_{j+1} at the
	 * degrees p+1 and p (p = n-1-j), so S_k = e alpha^(kp) (1 + alpha^k).
	 */
	for (j = 0; j + 1 < n; j++)
	{
		uint8		e = sym[j] ^ sym[j + 1];
		int			p = n - 1 - j;

		if (e == 0)
			continue;
		for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
		{
			uint8		w = GfMul(GfPow((k + 1) * p), 1 ^ GfPow(k + 1));

			if (s[k] != GfMul(e, w))
				break;
		}
		if (k == COUPON_CODE_CHECK_CHARS)
			return Typo(err, COUPON_TYPO_SWAPPED, j + 1, j + 2);
	}
	return -1;
}

/*
 * One symbol missing: is there a j (0..m) and a symbol v such that
 * inserting v before sym[j] gives a code of m+1 symbols?  With H_j(X) =
 * X^(m+1) + sum_{i<j} s_i X^(m-i) (the part before the gap, leading 1
 * included) and W(X) the string's own polynomial, that code is
 * (X + 1) H_j(X) + W(X) + v X^(m+1-j), which must vanish at alpha^k:
 * v follows from k = 1, and k = 2, 3 must agree.  O(m).
 */
static int
MissingTypo(const uint8 *sym, int m, const uint8 *s, CouponCodeError *err)
{
	uint8		h[COUPON_CODE_CHECK_CHARS];
	int			j;
	int			k;

	for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
		h[k] = GfPow((k + 1) * (m + 1));	/* the leading 1 */

	for (j = 0; j <= m; j++)
	{
		uint8		v = GfDiv(GfMul(1 ^ GfPow(1), h[0]) ^ s[0], GfPow(m + 1 - j));

		for (k = 1; k < COUPON_CODE_CHECK_CHARS; k++)
		{
			uint8		ak = GfPow(k + 1);

			if ((GfMul(ak ^ 1, h[k]) ^ s[k] ^ GfMul(v, GfPow((k + 1) * (m + 1 - j)))) != 0)
				break;
		}
		if (k == COUPON_CODE_CHECK_CHARS)
			return Typo(err, COUPON_TYPO_MISSING, j + 1, 0);
		if (j < m)
			for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
				h[k] ^= GfMul(sym[j], GfPow((k + 1) * (m - j)));
	}
	return -1;
}

/*
 * One symbol too many: is there a j such that removing sym[j] leaves a code
 * of m-1 symbols?  Removing it divides the part before it by X:
 * X^-1 H_j(X) + W(X) + H_j(X) + s_j X^(m-j) must vanish at alpha^k.
 * only_j >= 0 restricts the search to that position (where a U is).
 */
static int
ExtraTypo(const uint8 *sym, int m, const uint8 *s, int only_j,
		  CouponCodeError *err)
{
	uint8		h[COUPON_CODE_CHECK_CHARS];
	int			j;
	int			k;

	for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
		h[k] = GfPow((k + 1) * (m + 1));	/* the leading 1 */

	for (j = 0; j < m; j++)
	{
		if (only_j < 0 || j == only_j)
		{
			for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
			{
				uint8		ak = GfPow(k + 1);
				uint8		t = GfDiv(h[k], ak) ^ s[k] ^ h[k] ^
					GfMul(sym[j], GfPow((k + 1) * (m - j)));

				if (t != 0)
					break;
			}
			if (k == COUPON_CODE_CHECK_CHARS)
				return Typo(err, COUPON_TYPO_EXTRA, j + 1, 0);
		}
		for (k = 0; k < COUPON_CODE_CHECK_CHARS; k++)
			h[k] ^= GfMul(sym[j], GfPow((k + 1) * (m - j)));
	}
	return -1;
}

/*
 * Decide the kind of a key of n folded symbols (SYMBOL_U for U).  Returns
 * COUPON_CODE_GENERATED for a valid generated code, COUPON_CODE_VANITY for
 * anything that is neither a generated code nor one typo away from one, and
 * 0 (with err filled) for a mistyped generated code.  Typos looked for, in
 * this order: one wrong character (a U where an alphabet symbol belongs
 * included), two adjacent characters swapped, one character missing, one
 * character too many.  The distance-4 code makes the first two exclusive:
 * a string one substitution from code c and one transposition from code c'
 * would put c and c' at most 3 apart.
 */
static int
ClassifyKey(const uint8 *key, int n, CouponCodeError *err)
{
	uint8		sym[COUPON_CODE_MAX_CHARS];
	uint8		s[COUPON_CODE_CHECK_CHARS];
	int			nu = 0;
	int			upos = -1;
	int			j;
	int			k;
	bool		same_length = (n >= COUPON_CODE_MIN_GENERATED &&
							   n <= COUPON_CODE_MAX_GENERATED);

	if (n < COUPON_CODE_MIN_GENERATED - 1 || n > COUPON_CODE_MAX_GENERATED + 1)
		return COUPON_CODE_VANITY;

	for (j = 0; j < n; j++)
	{
		if (key[j] == SYMBOL_U)
		{
			nu++;
			upos = j;
			sym[j] = 0;
		}
		else
			sym[j] = key[j];
	}
	if (nu > 1)
		return COUPON_CODE_VANITY;	/* two edits from any code */

	Syndromes(sym, n, s);

	if (nu == 1)
	{
		/*
		 * The U stands for an unknown symbol v at degree p: the string
		 * is one substitution from a code iff some v makes every syndrome
		 * vanish, i.e. S_k = v alpha^(kp) for k = 1..3.  Or the U is one
		 * character too many.
		 */
		if (same_length)
		{
			int			p = n - upos;
			uint8		v = GfDiv(s[0], GfPow(p));

			for (k = 1; k < COUPON_CODE_CHECK_CHARS; k++)
				if (s[k] != GfMul(v, GfPow((k + 1) * p)))
					break;
			if (k == COUPON_CODE_CHECK_CHARS)
				return Typo(err, COUPON_TYPO_WRONG, upos + 1, 0);
		}
		if (n - 1 >= COUPON_CODE_MIN_GENERATED &&
			ExtraTypo(sym, n, s, upos, err) == 0)
			return 0;
		return COUPON_CODE_VANITY;
	}

	if (same_length)
	{
		if ((s[0] | s[1] | s[2]) == 0)
			return COUPON_CODE_GENERATED;
		if (SameLengthTypo(sym, n, s, err) == 0)
			return 0;
	}
	if (n + 1 <= COUPON_CODE_MAX_GENERATED && MissingTypo(sym, n, s, err) == 0)
		return 0;
	if (n - 1 >= COUPON_CODE_MIN_GENERATED && ExtraTypo(sym, n, s, -1, err) == 0)
		return 0;
	return COUPON_CODE_VANITY;
}

/*
 * Parse a code.  One pass collects the display text (upper case, one '-'
 * per run of separators between characters) and the folded key; the key
 * then decides the kind.  Errors, in order of precedence: the first invalid
 * byte, empty, too long, check mismatch.
 */
bool
CouponCodeParse(const char *str, size_t len, CouponCodeValue *out,
				CouponCodeError *err)
{
	uint8		key[COUPON_CODE_MAX_CHARS];
	int			nchars = 0;
	int			dlen = 0;
	bool		pending_sep = false;
	size_t		i;
	int			kind;

	memset(err, 0, sizeof(*err));
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) str[i];
		int			cls = ClassifyByte(c);

		if (cls == CLASS_INVALID)
		{
			err->status = COUPON_CODE_ERR_BAD_CHAR;
			err->position = (int) (i < (size_t) 0x7fffffff ? i + 1 : 0x7fffffff);
			err->ch = c;
			return false;
		}
		if (cls == CLASS_SEPARATOR)
		{
			pending_sep = (nchars > 0);
			continue;
		}
		if (nchars < COUPON_CODE_MAX_CHARS)
		{
			if (pending_sep)
				out->display[dlen++] = '-';
			out->display[dlen++] = (char) ((c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c);
			key[nchars] = (uint8) cls;
		}
		pending_sep = false;
		if (nchars < 0x7fffffff)
			nchars++;
	}

	if (nchars == 0)
	{
		err->status = COUPON_CODE_ERR_EMPTY;
		return false;
	}
	if (nchars > COUPON_CODE_MAX_CHARS)
	{
		err->status = COUPON_CODE_ERR_TOO_LONG;
		err->value = nchars;
		err->limit = COUPON_CODE_MAX_CHARS;
		return false;
	}

	kind = ClassifyKey(key, nchars, err);
	if (kind == 0)
		return false;

	/* generated codes are shown in the alphabet: O as 0, I and L as 1 */
	if (kind == COUPON_CODE_GENERATED)
	{
		int			j;

		for (j = 0; j < dlen; j++)
		{
			if (out->display[j] == 'O')
				out->display[j] = '0';
			else if (out->display[j] == 'I' || out->display[j] == 'L')
				out->display[j] = '1';
		}
	}
	out->kind = (CouponCodeKind) kind;
	out->nchars = nchars;
	out->display_len = dlen;
	out->display[dlen] = '\0';
	return true;
}

/*
 * Byte -> key character: upper case, O as '0', I and L as '1'; KEY_SKIP for
 * separators, KEY_BAD for anything else.  A table, because comparisons (and
 * so every btree step over a coupon_code index) go through it.
 */
#define KEY_SKIP		0
#define KEY_BAD			1
static const unsigned char key_char[256] = {
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_SKIP, KEY_SKIP, KEY_SKIP, KEY_SKIP, KEY_SKIP, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_SKIP, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_SKIP, KEY_SKIP, KEY_BAD,
	'0', '1', '2', '3', '4', '5', '6', '7',
	'8', '9', KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, 'A', 'B', 'C', 'D', 'E', 'F', 'G',
	'H', '1', 'J', 'K', '1', 'M', 'N', '0',
	'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W',
	'X', 'Y', 'Z', KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_SKIP,
	KEY_BAD, 'A', 'B', 'C', 'D', 'E', 'F', 'G',
	'H', '1', 'J', 'K', '1', 'M', 'N', '0',
	'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W',
	'X', 'Y', 'Z', KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
	KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD, KEY_BAD,
};

/*
 * The identity key: folded characters without separators.
 */
int
CouponCodeKey(const char *display, int display_len, char *key)
{
	int			n = 0;
	int			i;

	for (i = 0; i < display_len; i++)
	{
		unsigned char k = key_char[(unsigned char) display[i]];

		if (k == KEY_SKIP)
			continue;
		if (k == KEY_BAD || n >= COUPON_CODE_MAX_CHARS)
			return -1;
		key[n++] = (char) k;
	}
	return n;
}

/*
 * Order two display texts by their keys: byte order of the folded
 * characters (digits before letters), a prefix before its extensions.
 * Streams over both texts and stops at the first difference, without
 * building the keys.  (Bytes that cannot occur in a valid value order
 * before every character, so the order stays total on any input.)
 */
int
CouponCodeCompare(const char *a, int alen, const char *b, int blen)
{
	int			i = 0;
	int			j = 0;

	for (;;)
	{
		unsigned char ka = KEY_SKIP;
		unsigned char kb = KEY_SKIP;

		while (i < alen && (ka = key_char[(unsigned char) a[i]]) == KEY_SKIP)
			i++;
		while (j < blen && (kb = key_char[(unsigned char) b[j]]) == KEY_SKIP)
			j++;
		if (i >= alen || j >= blen)
			return (j < blen) ? -1 : (i < alen) ? 1 : 0;
		if (ka != kb)
			return (ka < kb) ? -1 : 1;
		i++;
		j++;
	}
}

/*
 * Kind of a text by parsing it; 0 if it is not a valid code.
 */
int
CouponCodeKindOf(const char *display, int display_len)
{
	CouponCodeValue v;
	CouponCodeError err;

	if (display_len < 0)
		return 0;
	if (!CouponCodeParse(display, (size_t) display_len, &v, &err))
		return 0;
	return v.kind;
}

/*
 * Stable reason tokens (documented; the coupon API reports them).
 */
const char *
CouponCodeReason(CouponCodeStatus status)
{
	switch (status)
	{
		case COUPON_CODE_OK:
			return "ok";
		case COUPON_CODE_ERR_EMPTY:
			return "empty";
		case COUPON_CODE_ERR_BAD_CHAR:
			return "invalid_character";
		case COUPON_CODE_ERR_TOO_LONG:
			return "too_long";
		case COUPON_CODE_ERR_CHECK:
			return "check_mismatch";
		case COUPON_PATTERN_ERR_EMPTY:
			return "pattern_empty";
		case COUPON_PATTERN_ERR_BAD_CHAR:
			return "pattern_invalid_character";
		case COUPON_PATTERN_ERR_SEPARATOR:
			return "pattern_separator";
		case COUPON_PATTERN_ERR_NO_RANDOM:
			return "pattern_no_random";
		case COUPON_PATTERN_ERR_TOO_LONG:
			return "pattern_too_long";
		case COUPON_PATTERN_ERR_COUNT:
			return "pattern_too_small";
	}
	return "unknown";
}

/*
 * Parse a pattern.  Literals must be alphabet symbols as written (I, L, O
 * and U are refused rather than folded: a prefix "PROMO" would otherwise
 * print back as "PR0M0").  Separators are '-' only, between groups.
 */
bool
CouponPatternParse(const char *str, size_t len, CouponPattern *p,
				   CouponCodeError *err)
{
	int			n = 0;			/* pattern characters (no separators) */
	bool		pending_sep = false;
	size_t		i;

	memset(err, 0, sizeof(*err));
	memset(p, 0, sizeof(*p));

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) str[i];
		int			pos = (int) (i < (size_t) 0x7fffffff ? i + 1 : 0x7fffffff);

		if (c == '-')
		{
			if (n == 0 || pending_sep)
			{
				err->status = COUPON_PATTERN_ERR_SEPARATOR;
				err->position = pos;
				return false;
			}
			pending_sep = true;
			continue;
		}
		if (c == '#' || CouponCodeSymbol((c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c) >= 0)
		{
			if (n < COUPON_CODE_MAX_GENERATED)
			{
				if (pending_sep)
					p->sep_after |= (uint32) 1 << (n - 1);
				if (c == '#')
				{
					p->symbol[n] = COUPON_PATTERN_RANDOM;
					p->nrandom++;
				}
				else
					p->symbol[n] = (uint8) CouponCodeSymbol((c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c);
			}
			else if (c == '#')
				p->nrandom++;
			pending_sep = false;
			if (n < 0x7fffffff)
				n++;
			continue;
		}
		err->status = COUPON_PATTERN_ERR_BAD_CHAR;
		err->position = pos;
		err->ch = c;
		return false;
	}

	if (n == 0)
	{
		err->status = COUPON_PATTERN_ERR_EMPTY;
		return false;
	}
	if (pending_sep)
	{
		err->status = COUPON_PATTERN_ERR_SEPARATOR;
		err->position = (int) (len < (size_t) 0x7fffffff ? len : 0x7fffffff);
		return false;
	}
	if (p->nrandom == 0)
	{
		err->status = COUPON_PATTERN_ERR_NO_RANDOM;
		return false;
	}
	if ((int64) n + COUPON_CODE_CHECK_CHARS > COUPON_CODE_MAX_GENERATED)
	{
		err->status = COUPON_PATTERN_ERR_TOO_LONG;
		err->value = (int64) n + COUPON_CODE_CHECK_CHARS;
		err->limit = COUPON_CODE_MAX_GENERATED;
		return false;
	}

	/* the check characters: a group of their own when there are groups */
	if (p->sep_after != 0)
		p->sep_after |= (uint32) 1 << (n - 1);
	p->nchars = n + COUPON_CODE_CHECK_CHARS;
	return true;
}

/*
 * Refuse count > 32^nrandom / 10.  Drawing a tenth of the space already
 * means one guess in ten hits a code and a tenth of fresh draws collide;
 * beyond that, finding unused codes gets slow and codes easy to guess.
 */
bool
CouponPatternAllowsCount(const CouponPattern *p, int64 count,
						 CouponCodeError *err)
{
	uint64		space;

	memset(err, 0, sizeof(*err));
	if (p->nrandom * 5 >= 63)
		return true;			/* 32^n / 10 exceeds any int64 */
	space = (uint64) 1 << (5 * p->nrandom);
	if (count > 0 && (uint64) count > space / 10)
	{
		err->status = COUPON_PATTERN_ERR_COUNT;
		err->position = p->nrandom;
		err->value = count;
		err->limit = (int64) (space / 10);
		return false;
	}
	return true;
}

/*
 * Fill the pattern with random symbols, append the check symbols, and lay
 * the code out with the pattern's separators.
 */
void
CouponCodeFromRandom(const CouponPattern *p, const uint8 *random,
					 CouponCodeValue *out)
{
	uint8		sym[COUPON_CODE_MAX_GENERATED];
	int			ndata = p->nchars - COUPON_CODE_CHECK_CHARS;
	int			r = 0;
	int			j;
	int			dlen = 0;

	for (j = 0; j < ndata; j++)
		sym[j] = (p->symbol[j] == COUPON_PATTERN_RANDOM)
			? (uint8) (random[r++] & (COUPON_CODE_RADIX - 1))
			: p->symbol[j];
	CouponCodeCheckSymbols(sym, ndata, sym + ndata);

	for (j = 0; j < p->nchars; j++)
	{
		out->display[dlen++] = COUPON_CODE_ALPHABET[sym[j]];
		if (j + 1 < p->nchars && (p->sep_after & ((uint32) 1 << j)))
			out->display[dlen++] = '-';
	}
	out->display[dlen] = '\0';
	out->display_len = dlen;
	out->nchars = p->nchars;
	out->kind = COUPON_CODE_GENERATED;
}
