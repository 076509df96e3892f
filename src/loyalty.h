/*
 * loyalty.h
 *		Declarations shared by the loyalty C modules.
 */
#ifndef LOYALTY_H
#define LOYALTY_H

#include "compat.h"

/*
 * Version of this shared library; loyalty.version() reports it.  The Makefile
 * passes it from default_version in loyalty.control.
 */
#ifndef LOYALTY_VERSION
#error "LOYALTY_VERSION must be defined by the build (see Makefile)"
#endif

/* Reserved prefix of every loyalty configuration parameter. */
#define LOYALTY_GUC_PREFIX "loyalty"

/*
 * Longest caller reference in bytes (a coupon order_ref; the points
 * references accept what coupons accept): one documented limit for
 * references everywhere (README, "Limits").
 */
#define LOYALTY_MAX_REFERENCE_LEN 256

extern void _PG_init(void);

#endif							/* LOYALTY_H */
