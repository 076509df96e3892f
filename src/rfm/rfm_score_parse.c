/*
 * rfm_score_parse.c
 *		Parsing and formatting the text form of loyalty.rfm_score.
 *
 * The text form is exactly three digits 1..9: recency, frequency, monetary
 * ('543').  Leading and trailing whitespace (space, tab, newline, vertical
 * tab, form feed, carriage return: the C-locale isspace() set, as for the
 * built-in integer types) is ignored; nothing else is accepted.
 *
 * This file deliberately includes no PostgreSQL header: it is compiled into
 * the extension and, unchanged, into the standalone fuzzer.
 */
#include "rfm_score_parse.h"

/*
 * Whitespace allowed around a score.  Spelled out rather than isspace() so
 * that the accepted set does not depend on the server's locale.
 */
static bool
RfmIsSpace(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' ||
		c == '\f' || c == '\r';
}

/* A score digit: '1'..'9' (0 is not a score). */
static bool
RfmIsScoreDigit(char c)
{
	return c >= '1' && c <= '9';
}

/*
 * Parse str into *out.  On failure return false and point *errdetail at a
 * static sentence saying what is wrong, for the caller's errdetail(); *out
 * is then left untouched.  Never reads past the terminating NUL.
 */
bool
RfmScoreParse(const char *str, int16_t *out, const char **errdetail)
{
	const char *p = str;
	int			digits[3];
	int			n = 0;

	while (RfmIsSpace(*p))
		p++;
	if (*p == '\0')
	{
		*errdetail = (p == str)
			? "The value is empty; an rfm_score is three digits 1 to 9, such as \"543\"."
			: "The value is blank; an rfm_score is three digits 1 to 9, such as \"543\".";
		return false;
	}

	while (n < 3)
	{
		char		c = p[n];

		if (RfmIsScoreDigit(c))
		{
			digits[n] = c - '0';
			n++;
			continue;
		}
		if (c == '0')
			*errdetail = "Each of the three scores must be 1 to 9; 0 is not a score.";
		else if (c == '\0')
			*errdetail = "Fewer than three digits; an rfm_score has exactly three (recency, frequency, monetary).";
		else if (RfmIsSpace(c))
		{
			const char *q = p + n;

			while (RfmIsSpace(*q))
				q++;
			*errdetail = (*q == '\0')
				? "Fewer than three digits; an rfm_score has exactly three (recency, frequency, monetary)."
				: "Whitespace is allowed only before and after the three digits, not between them.";
		}
		else if (n == 0 && (c == '+' || c == '-'))
			*errdetail = "Signs are not allowed; an rfm_score is three digits 1 to 9.";
		else
			*errdetail = "Only the digits 1 to 9 are allowed, with optional whitespace around them.";
		return false;
	}

	p += 3;
	if (*p >= '0' && *p <= '9')
	{
		*errdetail = "More than three digits; an rfm_score has exactly three (recency, frequency, monetary).";
		return false;
	}
	while (RfmIsSpace(*p))
		p++;
	if (*p != '\0')
	{
		*errdetail = "Unexpected characters after the three digits.";
		return false;
	}

	*out = (int16_t) (digits[0] * 100 + digits[1] * 10 + digits[2]);
	return true;
}

/*
 * Whether an int16 value is the representation of a score: three decimal
 * digits, none of them 0.  The binary receive function and the constructor
 * check with this, so every path into the type is as strict as the parser.
 */
bool
RfmScoreIsValid(int value)
{
	return value >= 111 && value <= 999 &&
		(value / 10) % 10 != 0 && value % 10 != 0;
}

/*
 * Write the text form of a valid score into buf (RFM_SCORE_TEXT_SIZE
 * bytes).  The result parses back to the same score.
 */
void
RfmScoreFormat(int16_t score, char *buf)
{
	buf[0] = (char) ('0' + score / 100);
	buf[1] = (char) ('0' + (score / 10) % 10);
	buf[2] = (char) ('0' + score % 10);
	buf[3] = '\0';
}
