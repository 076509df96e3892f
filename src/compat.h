/*
 * compat.h
 *		Differences between the PostgreSQL versions loyalty supports (13-17).
 *
 * Every #if on PG_VERSION_NUM lives here, so the rest of the code is written
 * against one API.
 */
#ifndef LOYALTY_COMPAT_H
#define LOYALTY_COMPAT_H

#include "postgres.h"

#include "nodes/nodes.h"

#if PG_VERSION_NUM < 130000
#error "loyalty requires PostgreSQL 13 or later"
#endif

/*
 * MarkGUCPrefixReserved() appeared in PostgreSQL 15; before that the same
 * effect (complain about unknown loyalty.* settings) came from
 * EmitWarningsOnPlaceholders().
 */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * Soft input errors (escontext) exist from PostgreSQL 16.  Before that an
 * input function can only throw; ereturn() degrades to ereport(ERROR).
 */
#if PG_VERSION_NUM >= 160000
#include "nodes/miscnodes.h"
#define LOYALTY_ESCONTEXT(fcinfo) ((fcinfo)->context)
#else
#define LOYALTY_ESCONTEXT(fcinfo) ((Node *) NULL)
#define ereturn(context, dummy_value, ...) \
	do { \
		(void) (context); \
		ereport(ERROR, __VA_ARGS__); \
		return dummy_value; \
	} while (0)
#endif

/* Numeric infinities exist from PostgreSQL 14. */
#if PG_VERSION_NUM < 140000
#define numeric_is_inf(num) ((void) (num), false)
#endif

/* varatt.h was split out of postgres.h in PostgreSQL 16. */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

#endif							/* LOYALTY_COMPAT_H */
