/*
 * loyalty_spi.c
 *		Kept plans, plan catalogues and result column readers (see
 *		loyalty_spi.h).
 */
#include "loyalty_spi.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "loyalty.h"
#include "loyalty_cache.h"

/*
 * Prepare a statement once per backend and keep it in *slot: the hot paths
 * then pay neither parsing nor planning.  cursor_options are those of
 * SPI_prepare_cursor (CURSOR_OPT_GENERIC_PLAN for statements that are index
 * lookups whatever the values: the plan cache would otherwise re-plan a
 * large statement whenever a custom plan looks cheaper).
 */
SPIPlanPtr
LoyaltyKeepPlan(SPIPlanPtr *slot, const char *sql, int nargs,
				const Oid *argtypes, int cursor_options)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, (Oid *) argtypes,
											  cursor_options);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		*slot = plan;
	}
	return *slot;
}

/*
 * Statement id of a catalogue, prepared and kept on first use.  Before a
 * backend prepares a statement on the extension's tables it makes sure they
 * are the objects of this library's release (schema_version.c): a statement
 * that reads a column the database's older objects lack would otherwise
 * fail with an error that does not name the cause.
 */
SPIPlanPtr
LoyaltyPlanGet(LoyaltyPlanCatalog *cat, int id)
{
	if (cat->plans[id] == NULL)
	{
		const LoyaltyPlanDef *def = &cat->defs[id];
		Oid			types[LOYALTY_PLAN_MAX_ARGS];

		Assert(id >= 0 && id < cat->nplans);
		LoyaltyRequireSchemaVersion();
		for (int i = 0; i < def->nargs; i++)
			types[i] = cat->map_type ? cat->map_type(def->argtypes[i]) : def->argtypes[i];
		LoyaltyKeepPlan(&cat->plans[id], def->sql, def->nargs, types,
						cat->cursor_options);
	}
	return cat->plans[id];
}

/*
 * Whether the extension's catalog entries may have changed since this
 * catalogue last asked (a namespace or type invalidation arrived): the
 * caller then looks the OIDs map_type returns up again and, if they
 * changed, calls LoyaltyPlanReset.  Cheap when nothing happened.
 */
bool
LoyaltyPlanCatalogMoved(LoyaltyPlanCatalog *cat)
{
	uint64		gen = LoyaltyCacheCatalogGeneration();

	if (cat->generation == gen)
		return false;
	cat->generation = gen;
	return true;
}

/* Forget every plan of a catalogue (prepared again on next use). */
void
LoyaltyPlanReset(LoyaltyPlanCatalog *cat)
{
	for (int i = 0; i < cat->nplans; i++)
	{
		if (cat->plans[i] != NULL)
			SPI_freeplan(cat->plans[i]);
		cat->plans[i] = NULL;
	}
}

/*
 * Run statement id of a catalogue; returns SPI's result code.  latest: read
 * with the newest snapshot (rows committed by competitors after the
 * caller's snapshot included), for reads done under locks that decide.
 */
int
LoyaltyPlanExec(LoyaltyPlanCatalog *cat, int id, Datum *values,
				const char *nulls, bool read_only, bool latest)
{
	SPIPlanPtr	plan = LoyaltyPlanGet(cat, id);
	int			rc;

	if (latest)
		rc = SPI_execute_snapshot(plan, values, nulls, GetLatestSnapshot(),
								  InvalidSnapshot, read_only, true, 0);
	else
		rc = SPI_execute_plan(plan, values, nulls, read_only, 0);
	if (rc < 0)
		elog(ERROR, "%s statement %d failed: %s", cat->name, id,
			 SPI_result_code_string(rc));
	return rc;
}

/* Execute a kept plan and check that SPI returned the expected code. */
void
LoyaltyExec(SPIPlanPtr plan, Datum *values, const char *nulls, bool read_only,
			int expected)
{
	int			rc = SPI_execute_plan(plan, values, nulls, read_only, 0);

	if (rc != expected)
		elog(ERROR, "loyalty statement failed: %s", SPI_result_code_string(rc));
}

/* ---- result columns ---- */

/* Column col (1-based) of a row as a Datum. */
Datum
LoyaltyColDatum(LoyaltyRow r, int col, bool *isnull)
{
	return heap_getattr(r.tuple, col, r.desc, isnull);
}

/* A bigint column; 0 when null (*isnull, if given, says which). */
int64
LoyaltyColInt64(LoyaltyRow r, int col, bool *isnull)
{
	bool		n;
	Datum		d = LoyaltyColDatum(r, col, &n);

	if (isnull)
		*isnull = n;
	return n ? 0 : DatumGetInt64(d);
}

/* An integer column; 0 when null (*isnull, if given, says which). */
int32
LoyaltyColInt32(LoyaltyRow r, int col, bool *isnull)
{
	bool		n;
	Datum		d = LoyaltyColDatum(r, col, &n);

	if (isnull)
		*isnull = n;
	return n ? 0 : DatumGetInt32(d);
}

/* A boolean column; false when null. */
bool
LoyaltyColBool(LoyaltyRow r, int col)
{
	bool		n;
	Datum		d = LoyaltyColDatum(r, col, &n);

	return !n && DatumGetBool(d);
}

/* A numeric column; NULL when null. */
Numeric
LoyaltyColNumeric(LoyaltyRow r, int col)
{
	bool		n;
	Datum		d = LoyaltyColDatum(r, col, &n);

	return n ? NULL : DatumGetNumeric(d);
}

/* A text column as a palloc'd C string; NULL when null. */
char *
LoyaltyColText(LoyaltyRow r, int col)
{
	bool		n;
	Datum		d = LoyaltyColDatum(r, col, &n);

	return n ? NULL : TextDatumGetCString(d);
}

/* A timestamptz column; 0 when null (*isnull, if given, says which). */
TimestampTz
LoyaltyColTimestamp(LoyaltyRow r, int col, bool *isnull)
{
	bool		n;
	Datum		d = LoyaltyColDatum(r, col, &n);

	if (isnull)
		*isnull = n;
	return n ? 0 : DatumGetTimestampTz(d);
}

/* ---- $n parameters ---- */

/* A bigint[] parameter of n elements (possibly none). */
Datum
LoyaltyInt8ArrayDatum(const int64 *values, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(values[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}
