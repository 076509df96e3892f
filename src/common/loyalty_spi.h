/*
 * loyalty_spi.h
 *		The one SPI layer of the extension: kept plans, a catalogue of
 *		prepared statements, and readers of result columns.
 *
 * Plans: every statement a family runs is written once with $n parameters
 * (never a value spliced into the text), prepared on first use in a backend
 * and kept (SPI_keepplan).  A family lists its statements in a static table
 * of LoyaltyPlanDef (SQL text and argument types) indexed by an enum, and
 * wraps it in a LoyaltyPlanCatalog; LoyaltyPlanGet prepares an entry on
 * first use.  The plan cache re-plans kept statements after DDL on the
 * tables they read; what it cannot follow is an argument type OID that
 * changed because the extension was dropped and created again, so the
 * owner of a catalogue whose argument types are the extension's own
 * (map_type) asks LoyaltyPlanCatalogMoved at the start of each call whether
 * a namespace or type invalidation arrived (the catalog generation of
 * loyalty_cache.h moved), looks its OIDs up again only then, and calls
 * LoyaltyPlanReset if they changed.  Statements built at run time, or used
 * by one function only, use LoyaltyKeepPlan with a static slot.
 *
 * Columns: a result row (or a cached tuple) is a LoyaltyRow; the readers
 * take it and a 1-based column number and return a C value, with NULL
 * mapped as each one says.
 */
#ifndef LOYALTY_SPI_H
#define LOYALTY_SPI_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "utils/numeric.h"

/* Most arguments a catalogued statement takes (points' write statement: 34). */
#define LOYALTY_PLAN_MAX_ARGS	40

/* One statement of a catalogue. */
typedef struct LoyaltyPlanDef
{
	const char *sql;
	int			nargs;
	Oid			argtypes[LOYALTY_PLAN_MAX_ARGS];
} LoyaltyPlanDef;

/*
 * A family's statements.  map_type, if set, turns a placeholder argument
 * type (a small constant standing for one of the extension's own types)
 * into the type's current OID; it is called at preparation time.
 */
typedef struct LoyaltyPlanCatalog
{
	const char *name;			/* names the statements in errors */
	const LoyaltyPlanDef *defs;
	int			nplans;
	int			cursor_options; /* SPI_prepare_cursor options */
	Oid			(*map_type) (Oid argtype);
	SPIPlanPtr *plans;			/* nplans slots, NULL until prepared */
	uint64		generation;		/* catalog generation last checked */
} LoyaltyPlanCatalog;

extern SPIPlanPtr LoyaltyKeepPlan(SPIPlanPtr *slot, const char *sql, int nargs,
								  const Oid *argtypes, int cursor_options);
extern SPIPlanPtr LoyaltyPlanGet(LoyaltyPlanCatalog *cat, int id);
extern bool LoyaltyPlanCatalogMoved(LoyaltyPlanCatalog *cat);
extern void LoyaltyPlanReset(LoyaltyPlanCatalog *cat);
extern int	LoyaltyPlanExec(LoyaltyPlanCatalog *cat, int id, Datum *values,
							const char *nulls, bool read_only, bool latest);
extern void LoyaltyExec(SPIPlanPtr plan, Datum *values, const char *nulls,
						bool read_only, int expected);

/* A row of an SPI result, or a cached tuple, with its descriptor. */
typedef struct LoyaltyRow
{
	HeapTuple	tuple;
	TupleDesc	desc;
} LoyaltyRow;

/* Row i of the last SPI result. */
static inline LoyaltyRow
LoyaltySpiRow(uint64 i)
{
	LoyaltyRow	r = {SPI_tuptable->vals[i], SPI_tuptable->tupdesc};

	return r;
}

/* Row i of a kept SPI tuple table. */
static inline LoyaltyRow
LoyaltySpiRowOf(SPITupleTable *table, uint64 i)
{
	LoyaltyRow	r = {table->vals[i], table->tupdesc};

	return r;
}

extern Datum LoyaltyColDatum(LoyaltyRow r, int col, bool *isnull);
extern int64 LoyaltyColInt64(LoyaltyRow r, int col, bool *isnull);
extern int32 LoyaltyColInt32(LoyaltyRow r, int col, bool *isnull);
extern bool LoyaltyColBool(LoyaltyRow r, int col);
extern Numeric LoyaltyColNumeric(LoyaltyRow r, int col);
extern char *LoyaltyColText(LoyaltyRow r, int col);
extern TimestampTz LoyaltyColTimestamp(LoyaltyRow r, int col, bool *isnull);

/* $n parameters */
extern Datum LoyaltyInt8ArrayDatum(const int64 *values, int n);

#endif							/* LOYALTY_SPI_H */
