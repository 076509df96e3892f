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
 * Longest customer id and caller reference (order id, idempotency key) any
 * loyalty function accepts, in bytes: one limit for coupons and points
 * (documented in README, "Limits").  References the extension derives from
 * a caller's ("exchange:<ref>", "<order_ref>:coupon-bonus") are checked on
 * the caller's part, so every reference a coupon call accepts can also be
 * used by the points calls.
 */
#define LOYALTY_MAX_KEY_BYTES	256

extern void _PG_init(void);
extern bool LoyaltyIsCurrencyCode(const char *s, int len);
extern void LoyaltyRequireSchemaVersion(void);

#endif							/* LOYALTY_H */
