/*
 * rfm_args.h
 *		Argument checks shared by the SQL entry points of the RFM family
 *		(rfm_stats, rfm_segmentation, refresh_segments, customer_rfm and the
 *		RFM configuration): a documented 22023 / 22004 instead of a datetime
 *		overflow (22008) or a silent empty result deep inside.
 */
#ifndef RFM_ARGS_H
#define RFM_ARGS_H

#include "loyalty.h"
#include "loyalty_args.h"

#include "datatype/timestamp.h"
#include "fmgr.h"

/* as_of must lie in [0001-01-01 00:00 UTC, 10000-01-01 00:00 UTC). */
#define RFM_AS_OF_MIN_YEAR	1
#define RFM_AS_OF_MAX_YEAR	9999

/* A window or retention: each interval field and the whole <= 1000 years. */
#define RFM_MAX_INTERVAL_YEARS	1000

extern void RfmCheckAsOf(TimestampTz as_of);
extern void RfmCheckInterval(const Interval *iv, const char *name);
extern text *RfmArgCustomer(FunctionCallInfo fcinfo, int argno, const char *name);

#endif							/* RFM_ARGS_H */
