/*
 * loyalty_time.h
 *		Local-time arithmetic shared by the families that compute calendars
 *		in the program time zone (RFM days, the points calendar), and the
 *		text of an interval for a message.
 */
#ifndef LOYALTY_TIME_H
#define LOYALTY_TIME_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "pgtime.h"

extern TimestampTz LoyaltyTimeFromTm(struct pg_tm *tm, fsec_t fsec, pg_tz *tz);
extern char *LoyaltyIntervalText(const Interval *iv);

#endif							/* LOYALTY_TIME_H */
