/*
 * rfm_track_admin.c
 *		Starting, stopping and repairing the live tracking of an orders
 *		table: loyalty.track_orders, untrack_orders, rebuild_tracking,
 *		fold_tracking and the check behind the ALTER TABLE guard.
 *
 * The trigger and the delta engine it shares with back-fills and rebuilds
 * are in rfm_track.c, the resolution of the tracked columns in
 * rfm_columns.c: this file calls them, neither calls back.
 */
#include "loyalty.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "common/hashfn.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "loyalty_citus.h"
#include "rfm_live.h"

PG_FUNCTION_INFO_V1(rfm_track_orders);
PG_FUNCTION_INFO_V1(rfm_untrack_orders);
PG_FUNCTION_INFO_V1(rfm_rebuild_tracking);
PG_FUNCTION_INFO_V1(rfm_check_tracked);
PG_FUNCTION_INFO_V1(rfm_fold_tracking);

/* Names of the triggers track_orders installs on a tracked table. */
#define RFM_TRIGGER_PREFIX "loyalty_rfm_track_"

/* Number of customers with tracked rows. */
static int64
RfmCountCustomers(void)
{
	bool		isnull;

	if (SPI_execute("SELECT pg_catalog.count(*) FROM loyalty.customer_stats"
					" WHERE row_count OPERATOR(pg_catalog.>) 0", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not count customers");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* ---------------------------------------------------------------------
 * track_orders / untrack_orders / rebuild_tracking
 * ---------------------------------------------------------------------
 */

/*
 * Check that the calling role (the one outside this SECURITY DEFINER
 * function) may put triggers on the table and read it: tracking must not
 * let an admin-level role read or instrument tables it has no right to.
 */
static void
RfmCheckTablePrivileges(Oid relid)
{
	Oid			caller = GetOuterUserId();
	AclResult	acl = pg_class_aclcheck(relid, caller, ACL_TRIGGER | ACL_SELECT);

	if (acl != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to track table \"%s\"", get_rel_name(relid)),
				 errdetail("Tracking needs the TRIGGER and SELECT privileges on the table.")));
}

/*
 * Open a table to be tracked or untracked, with the lock CREATE TRIGGER
 * takes (it also waits for writers in flight and keeps new ones out until
 * commit, so a back-fill sees every committed row and no trigger-less row
 * sneaks in), and check it is a plain or partitioned table that can carry
 * our triggers.
 */
static Relation
RfmOpenTrackable(Oid relid, LOCKMODE lockmode)
{
	Relation	rel;
	char		kind;

	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	rel = table_open(relid, lockmode);
	kind = rel->rd_rel->relkind;
	if (kind != RELKIND_RELATION && kind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", RelationGetRelationName(rel)),
				 errdetail("Only plain and partitioned tables can be tracked: a view or other relation cannot carry the triggers that keep statistics current."),
				 errhint("Use loyalty.rfm_segmentation() for views, or track the table under the view (see the status filter of loyalty.track_orders).")));
	if (rel->rd_rel->relispartition)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is a partition", RelationGetRelationName(rel)),
				 errhint("Track the partitioned table it belongs to.")));
	if (kind == RELKIND_RELATION && has_subclass(relid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" has inheritance children", RelationGetRelationName(rel)),
				 errdetail("Statement triggers on an inheritance parent do not see writes to its children.")));
	if (rel->rd_rel->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot track temporary table \"%s\"", RelationGetRelationName(rel))));
	if (IsCatalogRelation(rel) || RelationGetNamespace(rel) == get_namespace_oid("loyalty", false))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot track \"%s\"", RelationGetRelationName(rel)),
				 errdetail("System catalogs and loyalty's own tables cannot be tracked.")));
	LoyaltyRefuseCitusTable(relid, "live tracking");
	return rel;
}

/* Whether the table has a row in loyalty.tracked_table. */
static bool
RfmIsTracked(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1] = {ObjectIdGetDatum(relid)};

	if (SPI_execute_with_args("SELECT 1 FROM loyalty.tracked_table"
							  " WHERE orders OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	return SPI_processed > 0;
}

/*
 * A new tracked table must share the day buckets of those already tracked:
 * their zone must be the program zone of now (else rebuild_tracking first)
 * and their frequency unit the one asked for.  In SPI.
 */
static void
RfmCheckTrackingAgrees(const char *zone, const char *unit)
{
	uint64		k;

	if (SPI_execute("SELECT DISTINCT timezone, frequency_unit FROM loyalty.tracked_table",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	for (k = 0; k < SPI_processed; k++)
	{
		char	   *tz = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1);
		char	   *u = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 2);

		if (strcmp(tz, zone) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the program time zone changed since tracking started"),
					 errdetail("Tracked orders are counted in days of time zone \"%s\"; loyalty.settings.timezone is \"%s\".", tz, zone),
					 errhint("Call loyalty.rebuild_tracking() to count them again in the new zone.")));
		if (strcmp(u, unit) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("every tracked table must use the same frequency unit"),
					 errdetail("Tables already tracked count frequency in \"%s\", not \"%s\".", u, unit)));
	}
}

/*
 * Record a tracked table in loyalty.tracked_table with the zone of its day
 * buckets and its frequency unit (the arguments of track_orders).  In SPI.
 */
static void
RfmRecordTracked(FunctionCallInfo fcinfo, const char *zone)
{
	Oid			argtypes[8] = {OIDOID, NAMEOID, NAMEOID, NAMEOID, NAMEOID, TEXTARRAYOID,
	TEXTOID, TEXTOID};
	Datum		args[8];
	char		argnulls[8];
	int			i;

	for (i = 0; i < 7; i++)
	{
		args[i] = PG_GETARG_DATUM(i);
		argnulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	args[7] = CStringGetTextDatum(zone);
	argnulls[7] = ' ';
	if (SPI_execute_with_args("INSERT INTO loyalty.tracked_table (orders, customer_column,"
							  " ordered_at_column, amount_column, status_column, counted_statuses,"
							  " frequency_unit, timezone)"
							  " VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5, $6, $7, $8)",
							  8, argtypes, args, argnulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the tracked table");
}

/*
 * The same in the 0.2.0 schema (the new library before ALTER EXTENSION
 * UPDATE), whose tracked_table has neither column.  In SPI.
 */
static void
RfmRecordTracked0200(FunctionCallInfo fcinfo)
{
	Oid			argtypes[6] = {OIDOID, NAMEOID, NAMEOID, NAMEOID, NAMEOID, TEXTARRAYOID};
	Datum		args[6];
	char		argnulls[6];
	int			i;

	for (i = 0; i < 6; i++)
	{
		args[i] = PG_GETARG_DATUM(i);
		argnulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	if (SPI_execute_with_args("INSERT INTO loyalty.tracked_table (orders, customer_column,"
							  " ordered_at_column, amount_column, status_column, counted_statuses)"
							  " VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5, $6)",
							  6, argtypes, args, argnulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the tracked table");
}

/*
 * loyalty.track_orders(orders, customer_column, ordered_at_column,
 * amount_column, status_column DEFAULT NULL, counted_statuses DEFAULT NULL):
 * validate, record the configuration, install the four statement triggers
 * and back-fill the statistics from the rows already there.  Returns the
 * rows counted and the customers now tracked (over all tracked tables).
 */
Datum
rfm_track_orders(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *cust_col,
			   *time_col,
			   *amount_col,
			   *status_col = NULL;
	int			nst = 0;
	char	  **sts = NULL;
	Relation	rel;
	RfmTrackCols cols;
	char	   *qualname;
	StringInfoData targs;
	static const char *const events[4] = {"insert", "update", "delete", "truncate"};
	int			i;
	int64		rows;
	TupleDesc	rdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	char	   *unit;
	char	   *zone;

	LoyaltyArgNotNull(fcinfo, 0, "orders table");
	relid = PG_GETARG_OID(0);
	cust_col = PG_ARGISNULL(1) ? NULL : NameStr(*PG_GETARG_NAME(1));
	time_col = PG_ARGISNULL(2) ? NULL : NameStr(*PG_GETARG_NAME(2));
	amount_col = PG_ARGISNULL(3) ? NULL : NameStr(*PG_GETARG_NAME(3));
	if (!PG_ARGISNULL(4))
		status_col = NameStr(*PG_GETARG_NAME(4));
	if (PG_ARGISNULL(4) != PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("status_column and counted_statuses go together"),
				 errhint("Give both to count only rows with some statuses, or neither to count every row.")));
	if (!PG_ARGISNULL(5))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(5);
		Datum	   *elems;
		bool	   *enulls;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("counted_statuses must be a one-dimensional array")));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nst);
		if (nst == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("counted_statuses must not be empty")));
		sts = palloc(sizeof(char *) * nst);
		for (i = 0; i < nst; i++)
		{
			LoyaltyCheckNoNulls(enulls[i], "counted_statuses");
			sts[i] = TextDatumGetCString(elems[i]);
		}
	}
	/* the 0.2.0 declaration (before ALTER EXTENSION UPDATE) counts rows */
	if (PG_NARGS() > 6)
	{
		LoyaltyArgNotNull(fcinfo, 6, "frequency_unit");
		unit = text_to_cstring(PG_GETARG_TEXT_PP(6));
	}
	else
		unit = "rows";
	if (strcmp(unit, "orders") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("live tracking cannot count distinct orders"),
				 errdetail("Live statistics count order rows ('rows') or days with an order ('days')."),
				 errhint("Track a line-level table with frequency_unit => 'days', or use loyalty.rfm_segmentation(..., frequency_unit => 'orders', order_column => ...).")));
	if (strcmp(unit, "rows") != 0 && strcmp(unit, "days") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid frequency unit: \"%s\"", unit),
				 errhint("Use 'rows' (every order row) or 'days' (distinct days with an order).")));
	RfmLiveRequireReadCommitted("loyalty.track_orders()");

	rel = RfmOpenTrackable(relid, ShareRowExclusiveLock);
	RfmCheckTablePrivileges(relid);
	RfmResolveColumns(RelationGetDescr(rel), RelationGetRelationName(rel),
					  cust_col, time_col, amount_col, status_col, nst, sts, &cols);
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel));

	SPI_connect();
	if (RfmIsTracked(relid))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("table \"%s\" is already tracked", RelationGetRelationName(rel)),
				 errhint("Call loyalty.untrack_orders() first to track it with other columns.")));

	zone = RfmProgramZoneName();
	if (!RfmTrackingHasZone())
	{
		/* the 0.2.0 schema: UTC day buckets, every row an order */
		zone = "UTC";
		RfmRecordTracked0200(fcinfo);
	}
	else
	{
		RfmCheckTrackingAgrees(zone, unit);
		RfmRecordTracked(fcinfo, zone);
	}


	initStringInfo(&targs);
	appendStringInfo(&targs, "%s, %s, %s", quote_literal_cstr(cust_col),
					 quote_literal_cstr(time_col), quote_literal_cstr(amount_col));
	if (status_col)
	{
		appendStringInfo(&targs, ", %s", quote_literal_cstr(status_col));
		for (i = 0; i < nst; i++)
			appendStringInfo(&targs, ", %s", quote_literal_cstr(sts[i]));
	}
	for (i = 0; i < 4; i++)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfo(&sql, "CREATE TRIGGER %s AFTER %s ON %s",
						 quote_identifier(psprintf(RFM_TRIGGER_PREFIX "%s", events[i])),
						 events[i], qualname);
		if (i == 0)
			appendStringInfoString(&sql, " REFERENCING NEW TABLE AS loyalty_new");
		else if (i == 1)
			appendStringInfoString(&sql, " REFERENCING OLD TABLE AS loyalty_old NEW TABLE AS loyalty_new");
		else if (i == 2)
			appendStringInfoString(&sql, " REFERENCING OLD TABLE AS loyalty_old");
		appendStringInfo(&sql, " FOR EACH STATEMENT EXECUTE FUNCTION loyalty._rfm_track_trigger(%s)",
						 targs.data);
		if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not create trigger on \"%s\"", RelationGetRelationName(rel));
	}

	rows = RfmBackfill(relid, cust_col, time_col, amount_col, status_col, nst, sts,
					   RfmZoneLookup(zone));
	/* customers counted below include those with pending changes only */
	(void) RfmFoldDeltas(NULL);
	values[0] = Int64GetDatum(rows);
	values[1] = Int64GetDatum(RfmCountCustomers());
	SPI_finish();
	table_close(rel, NoLock);

	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, nulls)));
}

/*
 * loyalty.untrack_orders(orders): drop the triggers, forget the table and
 * take its rows out of the statistics (by rebuilding them from the tables
 * still tracked).  Customers left without rows keep their last segment
 * until the next refresh_segments, which records that they left it.
 */
Datum
rfm_untrack_orders(PG_FUNCTION_ARGS)
{
	Oid			relid;
	Relation	rel;
	char	   *qualname;
	static const char *const events[4] = {"insert", "update", "delete", "truncate"};
	int			i;
	Oid			argtypes[1] = {OIDOID};
	Datum		args[1];

	LoyaltyArgNotNull(fcinfo, 0, "orders table");
	relid = PG_GETARG_OID(0);
	RfmLiveRequireReadCommitted("loyalty.untrack_orders()");
	rel = RfmOpenTrackable(relid, AccessExclusiveLock);
	RfmCheckTablePrivileges(relid);
	qualname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										  RelationGetRelationName(rel));
	SPI_connect();
	if (!RfmIsTracked(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table \"%s\" is not tracked", RelationGetRelationName(rel))));
	args[0] = ObjectIdGetDatum(relid);
	if (SPI_execute_with_args("DELETE FROM loyalty.tracked_table"
							  " WHERE orders OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
							  1, argtypes, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not forget the tracked table");
	for (i = 0; i < 4; i++)
	{
		char	   *sql = psprintf("DROP TRIGGER IF EXISTS %s ON %s",
								   quote_identifier(psprintf(RFM_TRIGGER_PREFIX "%s", events[i])),
								   qualname);

		if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not drop trigger on \"%s\"", RelationGetRelationName(rel));
	}
	RfmRebuild();
	SPI_finish();
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/*
 * loyalty.rebuild_tracking(): recompute all statistics from the tracked
 * tables.  For repairs after changes that bypassed the triggers (rows
 * written with session_replication_role = replica or with the triggers
 * disabled, partitions attached or detached).  Returns rows counted and
 * customers tracked.
 */
Datum
rfm_rebuild_tracking(PG_FUNCTION_ARGS)
{
	TupleDesc	rdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	SPITupleTable *tt;
	uint64		k;

	RfmLiveRequireReadCommitted("loyalty.rebuild_tracking()");
	SPI_connect();

	/* the tracked tables' lock first, as track_orders and TRUNCATE take it */
	if (SPI_execute("SELECT orders::pg_catalog.oid FROM loyalty.tracked_table"
					" ORDER BY orders::pg_catalog.oid", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	tt = SPI_tuptable;
	for (k = 0; k < SPI_processed; k++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(tt->vals[k], tt->tupdesc, 1, &isnull));

		RfmCheckTablePrivileges(relid);
		LockRelationOid(relid, ShareRowExclusiveLock);
	}
	values[0] = Int64GetDatum(RfmRebuild());
	values[1] = Int64GetDatum(RfmCountCustomers());
	SPI_finish();
	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, nulls)));
}

/*
 * loyalty.fold_tracking(): fold the pending tracked changes into
 * customer_stats now (refresh_segments does it first thing; this is for an
 * administrator who reads customer_stats directly, or wants the delta
 * table small between refreshes).  Returns the delta rows folded and the
 * customers they touched.  READ COMMITTED only, like the refresh: it
 * deletes the deltas its statement sees and reads order times afresh.
 */
Datum
rfm_fold_tracking(PG_FUNCTION_ARGS)
{
	TupleDesc	rdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	int64		customers = 0;

	RfmLiveRequireReadCommitted("loyalty.fold_tracking()");
	SPI_connect();
	values[0] = Int64GetDatum(RfmFoldDeltas(&customers));
	values[1] = Int64GetDatum(customers);
	SPI_finish();
	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, nulls)));
}

/* Error context of an ALTER TABLE that breaks a tracked table's columns. */
static void
RfmAlterErrorContext(void *arg)
{
	errcontext("table \"%s\" is tracked by loyalty; call loyalty.untrack_orders() before changing its tracked columns",
			   (const char *) arg);
}

/*
 * loyalty._rfm_check_tracked(): resolve the columns of every tracked table
 * again, raising the usual column errors if one was renamed, dropped or
 * retyped.  Called by the ddl_command_end event trigger after ALTER TABLE,
 * so that such a change fails instead of breaking every later write to the
 * table.
 */
Datum
rfm_check_tracked(PG_FUNCTION_ARGS)
{
	SPITupleTable *tt;
	uint64		k;

	SPI_connect();
	if (SPI_execute("SELECT orders::pg_catalog.oid, customer_column, ordered_at_column,"
					" amount_column, status_column, counted_statuses"
					" FROM loyalty.tracked_table", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	tt = SPI_tuptable;
	for (k = 0; k < SPI_processed; k++)
	{
		HeapTuple	tup = tt->vals[k];
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
		Datum		st = SPI_getbinval(tup, tt->tupdesc, 6, &isnull);
		int			nst;
		char	  **sts = RfmStatusList(st, isnull, &nst);
		Relation	rel = try_relation_open(relid, AccessShareLock);
		RfmTrackCols cols;
		ErrorContextCallback errcb;

		if (rel == NULL)
			continue;
		errcb.callback = RfmAlterErrorContext;
		errcb.arg = (void *) RelationGetRelationName(rel);
		errcb.previous = error_context_stack;
		error_context_stack = &errcb;
		RfmResolveColumns(RelationGetDescr(rel), RelationGetRelationName(rel),
						  SPI_getvalue(tup, tt->tupdesc, 2),
						  SPI_getvalue(tup, tt->tupdesc, 3),
						  SPI_getvalue(tup, tt->tupdesc, 4),
						  SPI_getvalue(tup, tt->tupdesc, 5), nst, sts, &cols);
		error_context_stack = errcb.previous;
		relation_close(rel, AccessShareLock);
	}
	SPI_finish();
	PG_RETURN_VOID();
}
