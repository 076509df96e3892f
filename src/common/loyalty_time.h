/*
 * loyalty_time.h
 *		Local-time arithmetic shared by the families that compute calendars
 *		in the program time zone (RFM days, the points calendar).
 */
#ifndef LOYALTY_TIME_H
#define LOYALTY_TIME_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "pgtime.h"

extern TimestampTz LoyaltyTimeFromTm(struct pg_tm *tm, fsec_t fsec, pg_tz *tz);

#endif							/* LOYALTY_TIME_H */
