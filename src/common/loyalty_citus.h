/*
 * loyalty_citus.h
 *		Whether Citus manages a table, found without linking to Citus: the
 *		C paths that read or write heaps directly refuse (or avoid) a Citus
 *		table, whose coordinator heap is an empty shell.
 */
#ifndef LOYALTY_CITUS_H
#define LOYALTY_CITUS_H

#include "postgres.h"

extern bool LoyaltyIsCitusTable(Oid relid);
extern void LoyaltyRefuseCitusTable(Oid relid, const char *what);

#endif							/* LOYALTY_CITUS_H */
