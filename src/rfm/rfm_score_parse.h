/*
 * rfm_score_parse.h
 *		Text form of loyalty.rfm_score: parsing and formatting in pure C.
 *
 * Free of postgres.h (no palloc, no ereport) so that the parser can be built
 * and fuzzed on its own (test/fuzz/rfm_score_fuzz.c).  The int16_t values are
 * the RfmScore representation of rfm_score.h (r * 100 + f * 10 + m).
 */
#ifndef LOYALTY_RFM_SCORE_PARSE_H
#define LOYALTY_RFM_SCORE_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/* Buffer size for RfmScoreFormat: three digits and a NUL. */
#define RFM_SCORE_TEXT_SIZE 4

extern bool RfmScoreParse(const char *str, int16_t *out, const char **errdetail);
extern bool RfmScoreIsValid(int value);
extern void RfmScoreFormat(int16_t score, char *buf);

#endif							/* LOYALTY_RFM_SCORE_PARSE_H */
