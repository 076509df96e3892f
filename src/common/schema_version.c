/*
 * schema_version.c
 *		Refuse to run against the SQL objects of another release.
 *
 * The shared library serves the objects of its own release only: a 0.3.0
 * library reads columns a 0.2.0 schema does not have.  Between `make
 * install` of a new release and `ALTER EXTENSION loyalty UPDATE` a database
 * still holds the old objects, and the calls that read the extension's
 * tables would fail with whatever error the first missing column raises
 * (42703 "column ... does not exist", no hint of the cause).  Entry points
 * that read or write the extension's tables call
 * LoyaltyRequireSchemaVersion() first (the SPI plan catalogue does it when a
 * backend prepares its first plan), which names the cause and the fix.
 *
 * Live RFM tracking is the exception, on purpose: its trigger keeps serving
 * the previous release's schema, so an application's writes to a tracked
 * table never fail during an upgrade (test/scripts/rfm_upgrade_tracking.sh).
 *
 * ALTER EXTENSION UPDATE records the new version in pg_extension before it
 * runs each step's script, so the script itself passes the check.
 */
#include "loyalty.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

/* Has this backend seen its own version installed? (It cannot go back.) */
static bool schema_version_ok = false;

/*
 * The version of extension "loyalty" recorded in this database, palloc'd,
 * or NULL when the extension is not installed here.
 */
static char *
LoyaltyInstalledVersion(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("loyalty"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = text_to_cstring(DatumGetTextPP(d));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Raise 55000 when this database's loyalty objects belong to another
 * release than this library.  Checked once per backend while it matches:
 * versions only move forward, and only by ALTER EXTENSION UPDATE.
 */
void
LoyaltyRequireSchemaVersion(void)
{
	char	   *installed;

	if (likely(schema_version_ok))
		return;
	installed = LoyaltyInstalledVersion();
	if (installed != NULL && strcmp(installed, LOYALTY_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the loyalty library is version %s but this database has loyalty %s",
						LOYALTY_VERSION, installed),
				 errdetail("The library serves the SQL objects of its own release only."),
				 errhint("Run ALTER EXTENSION loyalty UPDATE in this database.")));
	schema_version_ok = true;
}
