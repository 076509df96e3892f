/*
 * loyalty_args.h
 *		The one way loyalty functions refuse a missing argument.
 *
 * Every SQL-callable function of every family that needs an argument says
 * so with SQLSTATE 22004 (null_value_not_allowed) and the documented
 * message "<what> must not be null"; arrays that may not hold nulls with
 * "<what> must not contain nulls".  <what> is the argument's name as the
 * SQL signature spells it, or the phrase the reference documents (e.g.
 * "campaign_id and at", "orders table").
 */
#ifndef LOYALTY_ARGS_H
#define LOYALTY_ARGS_H

#include "postgres.h"

#include "fmgr.h"

extern void LoyaltyCheckNotNull(bool isnull, const char *what);
extern void LoyaltyCheckNoNulls(bool hasnull, const char *what);

/* Argument argno of the current call must not be NULL. */
#define LoyaltyArgNotNull(fcinfo, argno, name) \
	LoyaltyCheckNotNull(PG_ARGISNULL(argno), (name))

#endif							/* LOYALTY_ARGS_H */
