/*
 * rfm_score.h
 *		The loyalty.rfm_score type: three scores 1..9 (recency, frequency,
 *		monetary), pass-by-value.
 *
 * Stored as an int16 holding r * 100 + f * 10 + m, so that the integer order
 * is the lexicographic order of (r, f, m) and the text form is the decimal
 * form ('543').
 */
#ifndef LOYALTY_RFM_SCORE_H
#define LOYALTY_RFM_SCORE_H

#include "postgres.h"

typedef int16 RfmScore;

#define RFM_SCORE_MIN_PART	1
#define RFM_SCORE_MAX_PART	9

#define RfmScoreMake(r, f, m)	((RfmScore) ((r) * 100 + (f) * 10 + (m)))
#define RfmScoreRecency(s)		((int) ((s) / 100))
#define RfmScoreFrequency(s)	((int) (((s) / 10) % 10))
#define RfmScoreMonetary(s)		((int) ((s) % 10))

#define DatumGetRfmScore(d)		((RfmScore) DatumGetInt16(d))
#define RfmScoreGetDatum(s)		Int16GetDatum(s)
#define PG_GETARG_RFM_SCORE(n)	DatumGetRfmScore(PG_GETARG_DATUM(n))
#define PG_RETURN_RFM_SCORE(s)	return RfmScoreGetDatum(s)

#endif							/* LOYALTY_RFM_SCORE_H */
