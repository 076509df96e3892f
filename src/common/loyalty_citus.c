/*
 * loyalty_citus.c
 *		Detect a table Citus distributes (or replicates as a reference
 *		table) by a catalog lookup, without linking to Citus and without
 *		needing it installed: pg_catalog.pg_dist_partition, when it exists,
 *		has one row per Citus table keyed by logicalrelid.  pg_catalog is
 *		writable by superusers only, so the lookup cannot be redirected.
 */
#include "loyalty_citus.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/table.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

/*
 * Whether Citus manages relid (distributed or reference table).  False when
 * Citus is not installed in this database.  The catalog is scanned without
 * an index: it has one row per Citus table, and the callers are admin
 * functions, not per-row paths.
 */
bool
LoyaltyIsCitusTable(Oid relid)
{
	Oid			catalog = get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE);
	Relation	rel;
	AttrNumber	attnum;
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	if (!OidIsValid(catalog))
		return false;
	attnum = get_attnum(catalog, "logicalrelid");
	if (attnum == InvalidAttrNumber ||
		(get_atttype(catalog, attnum) != REGCLASSOID &&
		 get_atttype(catalog, attnum) != OIDOID))
		return false;
	rel = table_open(catalog, AccessShareLock);
	ScanKeyInit(&key, attnum, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Refuse a Citus table in a path that reads or writes its heap directly
 * (on the coordinator that heap is an empty shell: the result would be
 * silently wrong).
 */
void
LoyaltyRefuseCitusTable(Oid relid, const char *what)
{
	if (LoyaltyIsCitusTable(relid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s does not support Citus table \"%s\" yet", what,
						get_rel_name(relid)),
				 errdetail("It reads or writes the table's heap directly, and on a Citus coordinator that heap is an empty shell; the rows are in the shards."),
				 errhint("See doc/citus.md for what works on Citus.")));
}
