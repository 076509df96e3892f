/*
 * rfm_score_fuzz.c
 *		Standalone fuzz check of the rfm_score text parser
 *		(src/rfm/rfm_score_parse.c), built without PostgreSQL by
 *		test/scripts/fuzz_rfm_score.sh, normally under ASan and UBSan.
 *
 * Every input is compared with an independent reference (strip C-locale
 * whitespace at both ends, then exactly three characters '1'..'9'); the
 * parser must agree on acceptance and value, give a detail sentence on
 * rejection, never write *out on rejection, and round-trip through
 * RfmScoreFormat.  Inputs live in exactly sized heap buffers so that any
 * read past the terminating NUL is caught by AddressSanitizer.
 *
 *	usage: rfm_score_fuzz [iterations [seed]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rfm_score_parse.h"

static unsigned long long rng_state;
static long checked;
static long accepted;
static int	failures;

/* xorshift64*: small, fast, reproducible from the printed seed. */
static unsigned int
Rand(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (unsigned int) ((rng_state * 2685821657736338717ULL) >> 32);
}

/* The whitespace the parser allows around a score. */
static int
RefIsSpace(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Reference acceptance: returns the score or -1. */
static int
Reference(const char *s, size_t len)
{
	size_t		b = 0,
				e = len;

	while (b < e && RefIsSpace((unsigned char) s[b]))
		b++;
	while (e > b && RefIsSpace((unsigned char) s[e - 1]))
		e--;
	if (e - b != 3)
		return -1;
	for (size_t i = b; i < e; i++)
		if (s[i] < '1' || s[i] > '9')
			return -1;
	return (s[b] - '0') * 100 + (s[b + 1] - '0') * 10 + (s[b + 2] - '0');
}

/* Report one disagreement (only the first few, to keep the log short). */
static void
Fail(const char *what, const char *s, size_t len)
{
	if (++failures <= 10)
	{
		fprintf(stderr, "FAIL (%s) on input of %zu bytes:", what, len);
		for (size_t i = 0; i < len; i++)
			fprintf(stderr, " %02x", (unsigned char) s[i]);
		fprintf(stderr, "\n");
	}
}

/*
 * Check one input of len bytes (no NUL inside: C strings end at the first
 * NUL, as PostgreSQL's cstring input does).
 */
static void
Check(const char *input, size_t len)
{
	char	   *s = malloc(len + 1);
	int16_t		out = 12345;
	const char *detail = NULL;
	bool		ok;
	int			ref;

	memcpy(s, input, len);
	s[len] = '\0';
	len = strlen(s);
	ref = Reference(s, len);
	ok = RfmScoreParse(s, &out, &detail);
	checked++;

	if (ok != (ref >= 0))
		Fail(ok ? "accepted, reference rejects" : "rejected, reference accepts", s, len);
	else if (ok)
	{
		char		buf[RFM_SCORE_TEXT_SIZE];
		int16_t		again = 0;
		const char *d2 = NULL;

		accepted++;
		if (out != ref)
			Fail("wrong value", s, len);
		if (!RfmScoreIsValid(out))
			Fail("accepted value not valid", s, len);
		RfmScoreFormat(out, buf);
		if (strlen(buf) != 3 || !RfmScoreParse(buf, &again, &d2) || again != out)
			Fail("in -> out -> in round trip", s, len);
	}
	else
	{
		if (detail == NULL || detail[0] == '\0')
			Fail("rejected without detail", s, len);
		if (out != 12345)
			Fail("wrote *out on rejection", s, len);
	}
	free(s);
}

/* Characters that matter to the parser, plus anything at all. */
static char
RandomChar(void)
{
	static const char interesting[] = "1234567890 \t\n\v\f\r+-.,eExX'\"a";
	unsigned int k = Rand() % 8;

	if (k < 5)
		return interesting[Rand() % (sizeof(interesting) - 1)];
	if (k < 6)
		return (char) ('1' + Rand() % 9);
	return (char) (1 + Rand() % 255);	/* any byte but NUL */
}

/* A valid score wrapped in random allowed whitespace. */
static size_t
PaddedValid(char *buf)
{
	static const char ws[] = " \t\n\v\f\r";
	size_t		n = 0;
	unsigned int pre = Rand() % 4,
				post = Rand() % 4;

	while (pre--)
		buf[n++] = ws[Rand() % 6];
	for (int i = 0; i < 3; i++)
		buf[n++] = (char) ('1' + Rand() % 9);
	while (post--)
		buf[n++] = ws[Rand() % 6];
	return n;
}

int
main(int argc, char **argv)
{
	long		iterations = argc > 1 ? atol(argv[1]) : 300000;
	unsigned long long seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 20261101ULL;
	char		buf[64];
	int			seen[1000] = {0};
	int			distinct = 0;
	static const char alphabet[] = "0123456789 \t+-x";

	rng_state = seed ? seed : 1;

	/* 1. Every valid score, bare: exactly the 729 values, each once. */
	for (int v = 0; v < 1000; v++)
	{
		int16_t		out;
		const char *detail;

		snprintf(buf, sizeof(buf), "%03d", v);
		if (RfmScoreParse(buf, &out, &detail))
		{
			if (out != v)
				Fail("bare value", buf, 3);
			if (!seen[out]++)
				distinct++;
		}
		if ((Reference(buf, 3) >= 0) != RfmScoreIsValid(v))
			Fail("RfmScoreIsValid disagrees", buf, 3);
		Check(buf, 3);
	}
	if (distinct != 729)
	{
		fprintf(stderr, "FAIL: %d distinct bare scores accepted, expected 729\n", distinct);
		failures++;
	}

	/* 2. Exhaustive over a small alphabet, lengths 0..5. */
	for (int len = 0; len <= 5; len++)
	{
		long		total = 1;
		int			k = (int) sizeof(alphabet) - 1;

		for (int i = 0; i < len; i++)
			total *= k;
		for (long x = 0; x < total; x++)
		{
			long		y = x;

			for (int i = 0; i < len; i++)
			{
				buf[i] = alphabet[y % k];
				y /= k;
			}
			Check(buf, (size_t) len);
		}
	}

	/* 3. Random strings, padded valid scores and their mutations. */
	for (long it = 0; it < iterations; it++)
	{
		size_t		len;

		switch (Rand() % 3)
		{
			case 0:
				len = Rand() % 12;
				for (size_t i = 0; i < len; i++)
					buf[i] = RandomChar();
				break;
			case 1:
				len = PaddedValid(buf);
				break;
			default:
				{
					int			edits = 1 + Rand() % 3;

					len = PaddedValid(buf);
					while (edits--)
					{
						size_t		pos = Rand() % (len + 1);

						switch (Rand() % 3)
						{
							case 0:		/* replace */
								if (pos < len)
									buf[pos] = RandomChar();
								break;
							case 1:		/* insert */
								if (len < sizeof(buf) - 1)
								{
									memmove(buf + pos + 1, buf + pos, len - pos);
									buf[pos] = RandomChar();
									len++;
								}
								break;
							default:	/* delete */
								if (pos < len)
								{
									memmove(buf + pos, buf + pos + 1, len - pos - 1);
									len--;
								}
								break;
						}
					}
				}
				break;
		}
		Check(buf, len);
	}

	printf("rfm_score fuzz: seed %llu, %ld inputs checked, %ld accepted, %d failures\n",
		   seed, checked, accepted, failures);
	return failures ? 1 : 0;
}
