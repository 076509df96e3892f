/*
 * coupon_code_fuzz.c
 *		Standalone fuzz and proof driver for the pure coupon code machinery
 *		(src/coupon/coupon_code_core.c), built without PostgreSQL:
 *
 *	gcc -DCOUPON_CODE_STANDALONE -Isrc/coupon -fsanitize=address,undefined \
 *		src/coupon/coupon_code_core.c test/fuzz/coupon_code_fuzz.c -o fuzz
 *	./fuzz [iterations] [seed]
 *
 * Checks, aborting with a message on the first failure:
 *	1. every code generated from random patterns validates, reads back as a
 *	   generated code with the same text, and matches its pattern;
 *	2. exhaustively, for many generated codes: every single substitution by
 *	   any letter or digit and every adjacent transposition is rejected as a
 *	   check mismatch that names the right position(s) (100% detection); no
 *	   transposition at any distance reads as a generated code; a missing or
 *	   extra character never reads as a vanity code, is always rejected in
 *	   the first two and last two positions, and elsewhere is missed at about
 *	   the expected rate of 1 in 32768;
 *	3. random and mutated inputs never crash, and whatever parses
 *	   round-trips (in -> display -> in gives the same display, kind and
 *	   key); vanity results are at least two edits from every generated code
 *	   (brute force); rejected inputs are rejected for a true reason;
 *	4. comparison is a consistent total order on keys;
 *	5. random patterns parse or fail cleanly, and their codes obey them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coupon_code.h"

static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
static const char *alphabet = COUPON_CODE_ALPHABET;

static uint64_t rng_state;

/* xorshift64*: fast, deterministic for a given seed */
static uint64_t
Rand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 2685821657736338717ULL;
}

static int
RandInt(int n)
{
	return (int) (Rand() % (uint64_t) n);
}

#define FAIL(...) \
	do { \
		fprintf(stderr, "FAIL: " __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

/* The folded symbol of an alphanumeric character, 32 for U. */
static int
Fold(char c)
{
	if (c >= 'a' && c <= 'z')
		c = (char) (c - 'a' + 'A');
	if (c == 'O')
		return 0;
	if (c == 'I' || c == 'L')
		return 1;
	if (c == 'U')
		return 32;
	return CouponCodeSymbol((unsigned char) c);
}

/* Characters of a display text without separators. */
static int
Strip(const char *s, int len, char *out)
{
	int			n = 0;
	int			i;

	for (i = 0; i < len; i++)
		if (s[i] != '-')
			out[n++] = s[i];
	out[n] = '\0';
	return n;
}

/*
 * Reference check, independent of the implementation's tables: GF(32)
 * multiplication by shift-and-add modulo x^5 + x^2 + 1, and W(alpha^k) = 0
 * for k = 1..3 with W(X) = X^(n+1) + sum s_j X^(n-j) + 1.
 */
static int
RefMul(int a, int b)
{
	int			r = 0;

	while (b)
	{
		if (b & 1)
			r ^= a;
		b >>= 1;
		a <<= 1;
		if (a & 32)
			a ^= 0x25;
	}
	return r;
}

/* Whether n folded symbols (32 = U) form a generated code. */
static bool
IsCode(const int *sym, int n)
{
	int			k,
				i,
				ak = 1;

	if (n < COUPON_CODE_MIN_GENERATED || n > COUPON_CODE_MAX_GENERATED)
		return false;
	for (i = 0; i < n; i++)
		if (sym[i] < 0 || sym[i] > 31)
			return false;
	for (k = 1; k <= COUPON_CODE_CHECK_CHARS; k++)
	{
		int			v = 1;

		ak = RefMul(ak, 2);		/* alpha^k */
		for (i = 0; i < n; i++)
			v = RefMul(v, ak) ^ sym[i];
		if ((RefMul(v, ak) ^ 1) != 0)
			return false;
	}
	return true;
}

/*
 * Brute force: is the folded string one typo from a generated code?  Tries,
 * in the implementation's order of precedence, every substitution, adjacent
 * transposition, insertion and deletion; reports the first found.
 */
static bool
NearCode(const char *chars, int n, int *typo, int *pos, int *pos2)
{
	int			sym[COUPON_CODE_MAX_CHARS + 1] = {0};
	int			t[COUPON_CODE_MAX_CHARS + 1];
	int			i,
				j,
				v;

	if (n > COUPON_CODE_MAX_CHARS)
		return false;
	for (i = 0; i < n; i++)
		sym[i] = Fold(chars[i]);
	if (IsCode(sym, n))
		return false;			/* a code, not near one */
	*pos2 = 0;
	for (i = 0; i < n; i++)
		for (v = 0; v < 32; v++)
		{
			memcpy(t, sym, sizeof(int) * n);
			t[i] = v;
			if (v != sym[i] && IsCode(t, n))
			{
				*typo = COUPON_TYPO_WRONG;
				*pos = i + 1;
				return true;
			}
		}
	for (i = 0; i + 1 < n; i++)
	{
		if (sym[i] == sym[i + 1])
			continue;
		memcpy(t, sym, sizeof(int) * n);
		t[i] = sym[i + 1];
		t[i + 1] = sym[i];
		if (IsCode(t, n))
		{
			*typo = COUPON_TYPO_SWAPPED;
			*pos = i + 1;
			*pos2 = i + 2;
			return true;
		}
	}
	for (j = 0; j <= n && n + 1 <= COUPON_CODE_MAX_GENERATED; j++)
		for (v = 0; v < 32; v++)
		{
			memcpy(t, sym, sizeof(int) * j);
			t[j] = v;
			memcpy(t + j + 1, sym + j, sizeof(int) * (n - j));
			if (IsCode(t, n + 1))
			{
				*typo = COUPON_TYPO_MISSING;
				*pos = j + 1;
				return true;
			}
		}
	for (j = 0; j < n; j++)
	{
		memcpy(t, sym, sizeof(int) * j);
		memcpy(t + j, sym + j + 1, sizeof(int) * (n - j - 1));
		if (IsCode(t, n - 1))
		{
			*typo = COUPON_TYPO_EXTRA;
			*pos = j + 1;
			return true;
		}
	}
	return false;
}

/* A random valid pattern text. */
static int
RandomPattern(char *buf)
{
	int			nprefix = RandInt(6);
	int			nrandom = 1 + RandInt(COUPON_CODE_MAX_GENERATED - COUPON_CODE_CHECK_CHARS - nprefix);
	int			len = 0;
	int			i;
	int			since_sep = 0;

	for (i = 0; i < nprefix + nrandom; i++)
	{
		if (since_sep > 0 && RandInt(4) == 0)
		{
			buf[len++] = '-';
			since_sep = 0;
		}
		buf[len++] = (i < nprefix) ? alphabet[RandInt(32)] : '#';
		since_sep++;
	}
	buf[len] = '\0';
	return len;
}

/* A generated code from a random pattern. */
static void
RandomCode(CouponCodeValue *v, CouponPattern *p)
{
	char		pat[80];
	int			plen = RandomPattern(pat);
	CouponCodeError err;
	uint8		random[COUPON_CODE_MAX_GENERATED];
	int			i;

	if (!CouponPatternParse(pat, (size_t) plen, p, &err))
		FAIL("valid pattern \"%s\" refused: %s", pat, CouponCodeReason(err.status));
	for (i = 0; i < p->nrandom; i++)
		random[i] = (uint8) Rand();
	CouponCodeFromRandom(p, random, v);
}

/* 1. generated codes validate and obey their pattern */
static void
CheckGenerated(int iterations)
{
	int			it;

	for (it = 0; it < iterations; it++)
	{
		CouponPattern p;
		CouponCodeValue v,
					w;
		CouponCodeError err;
		char		chars[COUPON_CODE_MAX_DISPLAY + 1];
		uint8		sym[COUPON_CODE_MAX_GENERATED];
		int			n,
					i;

		RandomCode(&v, &p);
		if (v.kind != COUPON_CODE_GENERATED || (int) strlen(v.display) != v.display_len)
			FAIL("bad generated value \"%s\"", v.display);
		n = Strip(v.display, v.display_len, chars);
		if (n != p.nchars || n != v.nchars)
			FAIL("\"%s\" has %d characters, pattern %d", v.display, n, p.nchars);
		for (i = 0; i < n; i++)
		{
			int			s = CouponCodeSymbol((unsigned char) chars[i]);

			if (s < 0)
				FAIL("\"%s\": character outside the alphabet", v.display);
			if (i < n - COUPON_CODE_CHECK_CHARS && p.symbol[i] != COUPON_PATTERN_RANDOM && p.symbol[i] != s)
				FAIL("\"%s\": literal %d does not match the pattern", v.display, i);
			sym[i] = (uint8) s;
		}
		if (!CouponCodeSymbolsValid(sym, n))
			FAIL("\"%s\" does not validate", v.display);
		{
			int			isym[COUPON_CODE_MAX_GENERATED];

			for (i = 0; i < n; i++)
				isym[i] = sym[i];
			if (!IsCode(isym, n))
				FAIL("\"%s\" fails the reference check", v.display);
		}
		if (!CouponCodeParse(v.display, (size_t) v.display_len, &w, &err))
			FAIL("generated \"%s\" rejected: %s", v.display, CouponCodeReason(err.status));
		if (w.kind != COUPON_CODE_GENERATED || strcmp(w.display, v.display) != 0)
			FAIL("generated \"%s\" read back as \"%s\" kind %d", v.display, w.display, w.kind);
	}
}

/*
 * 2. exhaustive detection: all single substitutions and adjacent
 * transpositions of each code are check mismatches at the right place.
 */
static void
CheckDetection(int ncodes, long *nsubst, long *nswap, long *nfar,
			   long *nlen, long *nlen_missed)
{
	int			c;

	for (c = 0; c < ncodes; c++)
	{
		CouponPattern p;
		CouponCodeValue v,
					w;
		CouponCodeError err;
		char		code[COUPON_CODE_MAX_CHARS + 1];
		char		m[COUPON_CODE_MAX_CHARS + 2];
		int			n,
					i,
					j,
					k;

		RandomCode(&v, &p);
		n = Strip(v.display, v.display_len, code);

		for (i = 0; i < n; i++)
			for (k = 0; k < 36; k++)
			{
				char		rc = alnum[k];

				if (Fold(rc) == Fold(code[i]))
					continue;	/* same symbol: not an error */
				memcpy(m, code, (size_t) n + 1);
				m[i] = (k & 1) ? rc : (char) (rc >= 'A' ? rc - 'A' + 'a' : rc);
				if (CouponCodeParse(m, (size_t) n, &w, &err))
					FAIL("substitution \"%s\" of \"%s\" accepted as %s", m, code,
						 w.kind == COUPON_CODE_GENERATED ? "generated" : "vanity");
				if (err.status != COUPON_CODE_ERR_CHECK || err.position != i + 1 || err.position2 != 0)
					FAIL("substitution \"%s\" of \"%s\": %s at %d/%d, expected check_mismatch at %d",
						 m, code, CouponCodeReason(err.status), err.position, err.position2, i + 1);
				(*nsubst)++;
			}

		for (i = 0; i + 1 < n; i++)
		{
			if (code[i] == code[i + 1])
				continue;		/* swapping equal characters changes nothing */
			memcpy(m, code, (size_t) n + 1);
			m[i] = code[i + 1];
			m[i + 1] = code[i];
			if (CouponCodeParse(m, (size_t) n, &w, &err))
				FAIL("transposition \"%s\" of \"%s\" accepted", m, code);
			if (err.status != COUPON_CODE_ERR_CHECK || err.position != i + 1 || err.position2 != i + 2)
				FAIL("transposition \"%s\" of \"%s\": %s at %d/%d, expected %d/%d",
					 m, code, CouponCodeReason(err.status), err.position, err.position2, i + 1, i + 2);
			(*nswap)++;
		}

		/*
		 * a missing or an extra character: never a vanity code; rejected
		 * unless the result is another valid code (1 in 32768)
		 */
		for (i = 0; i < n; i++)
		{
			memcpy(m, code, (size_t) i);
			memcpy(m + i, code + i + 1, (size_t) (n - i));
			if (CouponCodeParse(m, (size_t) n - 1, &w, &err))
			{
				if (w.kind != COUPON_CODE_GENERATED)
					FAIL("deletion \"%s\" of \"%s\" read as a vanity code", m, code);
				if (i <= 1 || i >= n - 2)
					FAIL("deletion \"%s\" of \"%s\" next to an end went undetected", m, code);
				(*nlen_missed)++;
			}
			else if (err.status != COUPON_CODE_ERR_CHECK)
				FAIL("deletion \"%s\" of \"%s\": %s", m, code, CouponCodeReason(err.status));
			(*nlen)++;
		}
		for (i = 0; i <= n; i++)
			for (k = 0; k < 36; k += 1 + (i & 1))
			{
				memcpy(m, code, (size_t) i);
				m[i] = alnum[k];
				memcpy(m + i + 1, code + i, (size_t) (n - i) + 1);
				if (CouponCodeParse(m, (size_t) n + 1, &w, &err))
				{
					if (w.kind != COUPON_CODE_GENERATED)
						FAIL("insertion \"%s\" of \"%s\" read as a vanity code", m, code);
					if (i <= 1 || i >= n - 1)
						FAIL("insertion \"%s\" of \"%s\" next to an end went undetected", m, code);
					(*nlen_missed)++;
				}
				else if (err.status != COUPON_CODE_ERR_CHECK)
					FAIL("insertion \"%s\" of \"%s\": %s", m, code, CouponCodeReason(err.status));
				(*nlen)++;
			}

		/* transpositions at any distance never read as a generated code */
		for (i = 0; i < n; i++)
			for (j = i + 2; j < n; j++)
			{
				if (code[i] == code[j])
					continue;
				memcpy(m, code, (size_t) n + 1);
				m[i] = code[j];
				m[j] = code[i];
				if (CouponCodeParse(m, (size_t) n, &w, &err) && w.kind == COUPON_CODE_GENERATED)
					FAIL("transposition %d,%d \"%s\" of \"%s\" reads as a generated code", i, j, m, code);
				(*nfar)++;
			}
	}
}

/* Random bytes, biased towards code-like text. */
static int
RandomInput(char *buf, int maxlen)
{
	int			len = RandInt(maxlen);
	int			mode = RandInt(4);
	int			i;
	static const char seps[] = "-_. \t\n";

	for (i = 0; i < len; i++)
	{
		int			r = RandInt(100);

		if (mode == 0)
			buf[i] = (char) Rand();		/* any byte, NUL included */
		else if (r < 80)
			buf[i] = (mode == 1) ? alphabet[RandInt(32)] : alnum[RandInt(36)];
		else if (r < 90)
			buf[i] = (char) (alnum[RandInt(36)] | ((mode == 3) ? 0x20 : 0));	/* lower */
		else if (r < 98)
			buf[i] = seps[RandInt(6)];
		else
			buf[i] = (char) Rand();
	}
	return len;
}

/* Mutate a valid generated display text: replace, insert, delete bytes. */
static int
MutateCode(char *buf)
{
	CouponPattern p;
	CouponCodeValue v;
	int			len;
	int			edits = 1 + RandInt(3);

	RandomCode(&v, &p);
	memcpy(buf, v.display, (size_t) v.display_len);
	len = v.display_len;
	while (edits-- > 0)
	{
		int			pos = RandInt(len + 1);
		int			op = RandInt(3);
		char		c = (RandInt(4) == 0) ? (char) Rand() : alnum[RandInt(36)];

		if (op == 0 && pos < len)
			buf[pos] = c;
		else if (op == 1 && len < 200)
		{
			memmove(buf + pos + 1, buf + pos, (size_t) (len - pos));
			buf[pos] = c;
			len++;
		}
		else if (op == 2 && pos < len)
		{
			memmove(buf + pos, buf + pos + 1, (size_t) (len - pos - 1));
			len--;
		}
	}
	return len;
}

/* 3. random and mutated inputs */
static void
CheckInputs(int iterations, long *nok, long *nvanity, long *nrejected)
{
	int			it;

	for (it = 0; it < iterations; it++)
	{
		char	   *buf = malloc(256);	/* exact-size copy below, for ASan */
		char	   *in;
		int			len = (it & 1) ? RandomInput(buf, 48) : MutateCode(buf);
		CouponCodeValue v,
					w;
		CouponCodeError err;
		char		key1[COUPON_CODE_MAX_CHARS],
					key2[COUPON_CODE_MAX_CHARS];

		in = malloc((size_t) len + 1);
		memcpy(in, buf, (size_t) len);
		free(buf);

		if (CouponCodeParse(in, (size_t) len, &v, &err))
		{
			char		chars[COUPON_CODE_MAX_DISPLAY + 1];
			int			n,
						k1,
						k2,
						typo,
						pos,
						pos2;

			(*nok)++;
			if (v.display_len < 1 || v.display_len > COUPON_CODE_MAX_DISPLAY ||
				(int) strlen(v.display) != v.display_len ||
				v.display[0] == '-' || v.display[v.display_len - 1] == '-' ||
				strstr(v.display, "--") != NULL)
				FAIL("malformed display \"%s\"", v.display);
			if (!CouponCodeParse(v.display, (size_t) v.display_len, &w, &err))
				FAIL("display \"%s\" does not read back: %s", v.display, CouponCodeReason(err.status));
			if (w.kind != v.kind || strcmp(w.display, v.display) != 0 || w.nchars != v.nchars)
				FAIL("round trip \"%s\" -> \"%s\"", v.display, w.display);
			k1 = CouponCodeKey(in, len, key1);
			k2 = CouponCodeKey(v.display, v.display_len, key2);
			if (k1 != k2 || k1 != v.nchars || memcmp(key1, key2, (size_t) k1) != 0)
				FAIL("key of input differs from key of display \"%s\"", v.display);
			if (CouponCodeCompare(in, len, v.display, v.display_len) != 0)
				FAIL("input and display of \"%s\" compare unequal", v.display);
			if (CouponCodeKindOf(v.display, v.display_len) != (int) v.kind)
				FAIL("KindOf(\"%s\") disagrees", v.display);
			n = Strip(v.display, v.display_len, chars);
			if (v.kind == COUPON_CODE_GENERATED)
			{
				int			sym[COUPON_CODE_MAX_CHARS];
				int			i;

				for (i = 0; i < n; i++)
					sym[i] = Fold(chars[i]);
				if (!IsCode(sym, n))
					FAIL("generated \"%s\" does not validate", v.display);
			}
			else
			{
				(*nvanity)++;
				if ((it & 31) == 0 && NearCode(chars, n, &typo, &pos, &pos2))
					FAIL("vanity \"%s\" is one typo (%d at %d/%d) from a generated code", v.display, typo, pos, pos2);
			}
		}
		else
		{
			int			i,
						nalnum = 0;
			bool		bad = false;

			(*nrejected)++;
			for (i = 0; i < len; i++)
			{
				unsigned char c = (unsigned char) in[i];

				if ((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'))
					nalnum++;
				else if (!strchr("-_. \t\n\r\v\f", c) || c == '\0')
				{
					if (err.status == COUPON_CODE_ERR_BAD_CHAR && err.position != i + 1)
						FAIL("bad character reported at %d, first is at %d", err.position, i + 1);
					bad = true;
					break;
				}
			}
			switch (err.status)
			{
				case COUPON_CODE_ERR_BAD_CHAR:
					if (!bad)
						FAIL("bad character reported in a clean input");
					break;
				case COUPON_CODE_ERR_EMPTY:
					if (bad || nalnum != 0)
						FAIL("empty reported for a non-empty input");
					break;
				case COUPON_CODE_ERR_TOO_LONG:
					if (bad || nalnum <= COUPON_CODE_MAX_CHARS || err.value != nalnum)
						FAIL("too long reported for %d characters", nalnum);
					break;
				case COUPON_CODE_ERR_CHECK:
					{
						char		chars[COUPON_CODE_MAX_CHARS + 1];
						int			n = 0,
									typo,
									pos,
									pos2;

						if (bad)
							FAIL("check reported for an input with a bad character");
						if ((it & 3) != 0)
							break;	/* brute force on a quarter: it is slow */
						for (i = 0; i < len && n <= COUPON_CODE_MAX_CHARS; i++)
							if (Fold(in[i]) >= 0)
								chars[n++] = in[i];
						if (!NearCode(chars, n, &typo, &pos, &pos2))
							FAIL("check mismatch reported for a string far from any code");
						if (typo != (int) err.typo || pos != err.position || pos2 != err.position2)
							FAIL("check mismatch %d at %d/%d, brute force says %d at %d/%d",
								 (int) err.typo, err.position, err.position2, typo, pos, pos2);
					}
					break;
				default:
					FAIL("unexpected status %d", (int) err.status);
			}
		}
		free(in);
	}
}

/* 4. comparison: antisymmetric, equal iff same key, transitive on triples */
static void
CheckOrder(int iterations)
{
	int			it;

	for (it = 0; it < iterations; it++)
	{
		char		s[3][64];
		CouponCodeValue v[3];
		CouponCodeError err;
		int			ok = 0;

		while (ok < 3)
		{
			char		buf[64];
			int			len;

			if (RandInt(2))
			{
				CouponPattern p;

				RandomCode(&v[ok], &p);
			}
			else
			{
				len = RandomInput(buf, 12);
				if (!CouponCodeParse(buf, (size_t) len, &v[ok], &err))
					continue;
			}
			strcpy(s[ok], v[ok].display);
			ok++;
		}
		{
			int			ab = CouponCodeCompare(s[0], (int) strlen(s[0]), s[1], (int) strlen(s[1]));
			int			ba = CouponCodeCompare(s[1], (int) strlen(s[1]), s[0], (int) strlen(s[0]));
			int			bc = CouponCodeCompare(s[1], (int) strlen(s[1]), s[2], (int) strlen(s[2]));
			int			ac = CouponCodeCompare(s[0], (int) strlen(s[0]), s[2], (int) strlen(s[2]));
			char		ka[COUPON_CODE_MAX_CHARS],
						kb[COUPON_CODE_MAX_CHARS];
			int			na = CouponCodeKey(s[0], (int) strlen(s[0]), ka);
			int			nb = CouponCodeKey(s[1], (int) strlen(s[1]), kb);

			if ((ab > 0) != (ba < 0) || (ab == 0) != (ba == 0))
				FAIL("compare not antisymmetric: %s %s", s[0], s[1]);
			int			kc = memcmp(ka, kb, (size_t) (na < nb ? na : nb));

			if (kc == 0)
				kc = (na > nb) - (na < nb);
			if ((ab > 0) != (kc > 0) || (ab < 0) != (kc < 0) || ab < -1 || ab > 1)
				FAIL("compare differs from the byte order of the keys: %s %s", s[0], s[1]);
			if (ab <= 0 && bc <= 0 && ac > 0)
				FAIL("compare not transitive: %s %s %s", s[0], s[1], s[2]);
		}
	}
}

/* 5. random pattern texts */
static void
CheckPatterns(int iterations)
{
	static const char pchars[] = "##########ABCDEFGHJKMNPQRSTVWXYZ0123456789ab-- IOLU*";
	int			it;

	for (it = 0; it < iterations; it++)
	{
		char		pat[48];
		int			len = RandInt(40);
		int			i;
		CouponPattern p;
		CouponCodeError err;

		for (i = 0; i < len; i++)
			pat[i] = (RandInt(50) == 0) ? (char) Rand() : pchars[RandInt((int) sizeof(pchars) - 1)];
		if (CouponPatternParse(pat, (size_t) len, &p, &err))
		{
			uint8		random[COUPON_CODE_MAX_GENERATED];
			CouponCodeValue v,
						w;
			int			groups = 1,
						cgroups = 1;

			if (p.nrandom < 1 || p.nchars > COUPON_CODE_MAX_GENERATED ||
				p.nchars < COUPON_CODE_MIN_GENERATED)
				FAIL("accepted pattern out of limits");
			for (i = 0; i < p.nrandom; i++)
				random[i] = (uint8) Rand();
			CouponCodeFromRandom(&p, random, &v);
			if (!CouponCodeParse(v.display, (size_t) v.display_len, &w, &err) ||
				w.kind != COUPON_CODE_GENERATED || strcmp(v.display, w.display) != 0)
				FAIL("code \"%s\" of a pattern does not read back", v.display);
			for (i = 0; i < len; i++)
				groups += (pat[i] == '-');
			for (i = 0; i < v.display_len; i++)
				cgroups += (v.display[i] == '-');
			if (cgroups != (groups > 1 ? groups + 1 : 1))
				FAIL("pattern \"%.*s\" with %d groups made \"%s\"", len, pat, groups, v.display);
			if (!CouponPatternAllowsCount(&p, 1, &err) && p.nrandom >= 1)
				FAIL("one code refused");
		}
		else if (err.status < COUPON_PATTERN_ERR_EMPTY)
			FAIL("pattern error with a code status");
	}
}

/* Exact limits of the count rule. */
static void
CheckCountRule(void)
{
	CouponPattern p;
	CouponCodeError err;

	if (!CouponPatternParse("##", 2, &p, &err))
		FAIL("pattern ## refused");
	if (!CouponPatternAllowsCount(&p, 102, &err) || CouponPatternAllowsCount(&p, 103, &err))
		FAIL("count rule for 2 random positions is not 1024 / 10");
	if (!CouponPatternParse("#############", 13, &p, &err) ||
		!CouponPatternAllowsCount(&p, INT64_MAX, &err))
		FAIL("13 random positions must allow any count");
}

int
main(int argc, char **argv)
{
	int			iterations = (argc > 1) ? atoi(argv[1]) : 300000;
	uint64_t	seed = (argc > 2) ? strtoull(argv[2], NULL, 10) : 20261101;
	long		nsubst = 0,
				nswap = 0,
				nfar = 0,
				nlen = 0,
				nlen_missed = 0,
				nok = 0,
				nvanity = 0,
				nrejected = 0;
	int			ndetect = iterations / 120;
	clock_t		t0 = clock();

	rng_state = seed ? seed : 1;
	printf("coupon_code fuzz: %d iterations, seed %llu\n", iterations,
		   (unsigned long long) seed);

	CheckCountRule();
	CheckGenerated(iterations / 3);
	printf("[%.1f s] ", (double) (clock() - t0) / CLOCKS_PER_SEC);
	printf("generated codes: %d valid and read back\n", iterations / 3);

	CheckDetection(ndetect, &nsubst, &nswap, &nfar, &nlen, &nlen_missed);
	printf("[%.1f s] ", (double) (clock() - t0) / CLOCKS_PER_SEC);
	printf("detection over %d codes: %ld/%ld single substitutions and %ld/%ld adjacent transpositions rejected (100%%); "
		   "%ld other transpositions never read as generated codes; "
		   "%ld/%ld missing or extra characters rejected, none read as a vanity code\n",
		   ndetect, nsubst, nsubst, nswap, nswap, nfar, nlen - nlen_missed, nlen);
	/* expected misses: nlen / 32768; fail far above that */
	if (nlen_missed > 10 + nlen / 3000)
		FAIL("%ld of %ld missing/extra characters went undetected", nlen_missed, nlen);

	CheckInputs(iterations, &nok, &nvanity, &nrejected);
	printf("[%.1f s] ", (double) (clock() - t0) / CLOCKS_PER_SEC);
	printf("random/mutated inputs: %d (%ld parsed, %ld of them vanity; %ld rejected), round trips exact\n",
		   iterations, nok, nvanity, nrejected);

	CheckOrder(iterations / 10);
	CheckPatterns(iterations / 3);
	printf("[%.1f s] ", (double) (clock() - t0) / CLOCKS_PER_SEC);
	printf("order and patterns: ok\n");
	printf("PASS\n");
	return 0;
}
