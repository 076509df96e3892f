/*
 * rfm_track_admin.c
 *		Starting, stopping and repairing the live tracking of an orders
 *		table: loyalty.track_orders, untrack_orders, rebuild_tracking, the
 *		check behind the ALTER TABLE guard, and the validation of the
 *		tracked columns that the trigger repeats at every statement, and the
 *		re-reading of first and last order times from the tracked tables.
 *
 * The trigger and the delta engine it shares with back-fills and rebuilds
 * are in rfm_track.c.
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

#include "rfm_live.h"

PG_FUNCTION_INFO_V1(rfm_track_orders);
PG_FUNCTION_INFO_V1(rfm_untrack_orders);
PG_FUNCTION_INFO_V1(rfm_rebuild_tracking);
PG_FUNCTION_INFO_V1(rfm_check_tracked);
PG_FUNCTION_INFO_V1(rfm_fold_tracking);

/* Names of the triggers track_orders installs on a tracked table. */
#define RFM_TRIGGER_PREFIX "loyalty_rfm_track_"

/* Prepared statement of RfmFixOrderTimes, kept for the life of the backend. */
static SPIPlanPtr fix_times_plan = NULL;

/* ---------------------------------------------------------------------
 * Columns
 * ---------------------------------------------------------------------
 */

/* Find a column by name, raising 42703 naming the table when it is absent. */
static AttrNumber
RfmFindColumn(TupleDesc desc, const char *relname, const char *role, const char *colname)
{
	int			i;

	if (colname == NULL)
		LoyaltyCheckNotNull(true, psprintf("%s column", role));
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), colname) == 0)
			return att->attnum;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" does not exist in \"%s\"", colname, relname),
			 errdetail("It was given as the %s column.", role)));
	return InvalidAttrNumber;	/* keep compiler quiet */
}

/*
 * Whether a customer column of this (base) type can be tracked.  Only
 * built-in types qualify: the trigger and the re-read of order times run as
 * loyalty's owner and use the type's output function, equality and hashing,
 * which for these are pg_catalog's own (an enum, a composite or a range
 * could bring casts or functions another role defined).
 */
static bool
RfmCustomerTypeOk(Oid typ)
{
	switch (typ)
	{
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case UUIDOID:
			return true;
		default:
			return false;
	}
}

/*
 * Whether a status column of this (base) type can be tracked: built-in
 * scalar types and enums, whose output function is pg_catalog's enum_out
 * (labels are compared as text in C, never through a cast).
 */
static bool
RfmStatusTypeOk(Oid typ)
{
	switch (typ)
	{
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:
		case CHAROID:
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case BOOLOID:
			return true;
		default:
			return type_is_enum(typ);
	}
}

/*
 * Resolve and type-check the columns of a tracked table from its tuple
 * descriptor.  Raises 42703 for a missing column and 42804 for a column
 * whose type cannot serve (naming the column, its type and what is
 * accepted).  statuses may be NULL when status_col is NULL.
 */
void
RfmResolveColumns(TupleDesc desc, const char *relname,
				  const char *cust_col, const char *time_col,
				  const char *amount_col, const char *status_col,
				  int nstatuses, char **statuses, RfmTrackCols *cols)
{
	Oid			typ;
	Oid			outfn;
	bool		isvarlena;

	memset(cols, 0, sizeof(RfmTrackCols));
	cols->cust = RfmFindColumn(desc, relname, "customer", cust_col);
	cols->time = RfmFindColumn(desc, relname, "ordered_at", time_col);
	cols->amount = RfmFindColumn(desc, relname, "amount", amount_col);

	cols->cust_type = TupleDescAttr(desc, cols->cust - 1)->atttypid;
	if (!RfmCustomerTypeOk(getBaseType(cols->cust_type)))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("customer column \"%s\" of \"%s\" has type %s",
						cust_col, relname, format_type_be(cols->cust_type)),
				 errdetail("The customer column must be of type text, character varying, character, smallint, integer, bigint or uuid, or a domain over one of them."),
				 errhint("Tracking compares customers as loyalty's owner and runs no operator, cast or function that another role can define.")));
	getTypeOutputInfo(cols->cust_type, &outfn, &isvarlena);
	fmgr_info(outfn, &cols->cust_out);

	typ = getBaseType(TupleDescAttr(desc, cols->time - 1)->atttypid);
	if (typ == TIMESTAMPTZOID)
		cols->time_kind = LOYALTY_TIME_TIMESTAMPTZ;
	else if (typ == TIMESTAMPOID)
		cols->time_kind = LOYALTY_TIME_TIMESTAMP;
	else if (typ == DATEOID)
		cols->time_kind = LOYALTY_TIME_DATE;
	else
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("ordered_at column \"%s\" of \"%s\" has type %s",
						time_col, relname, format_type_be(TupleDescAttr(desc, cols->time - 1)->atttypid)),
				 errdetail("The order time must be of type timestamp with time zone, timestamp or date.")));

	typ = getBaseType(TupleDescAttr(desc, cols->amount - 1)->atttypid);
	switch (typ)
	{
		case NUMERICOID:
			cols->amount_kind = LOYALTY_AMOUNT_NUMERIC;
			break;
		case INT2OID:
			cols->amount_kind = LOYALTY_AMOUNT_INT2;
			break;
		case INT4OID:
			cols->amount_kind = LOYALTY_AMOUNT_INT4;
			break;
		case INT8OID:
			cols->amount_kind = LOYALTY_AMOUNT_INT8;
			break;
		case FLOAT4OID:
			cols->amount_kind = LOYALTY_AMOUNT_FLOAT4;
			break;
		case FLOAT8OID:
			cols->amount_kind = LOYALTY_AMOUNT_FLOAT8;
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("amount column \"%s\" of \"%s\" has type %s",
							amount_col, relname, format_type_be(TupleDescAttr(desc, cols->amount - 1)->atttypid)),
					 errdetail("The amount must be of type numeric, bigint, integer, smallint, real or double precision.")));
	}

	cols->status = InvalidAttrNumber;
	if (status_col != NULL)
	{
		cols->status = RfmFindColumn(desc, relname, "status", status_col);
		typ = TupleDescAttr(desc, cols->status - 1)->atttypid;
		if (!RfmStatusTypeOk(getBaseType(typ)))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("status column \"%s\" of \"%s\" has type %s",
							status_col, relname, format_type_be(typ)),
					 errdetail("The status column must be of type text, character varying, character, \"char\", smallint, integer, bigint, boolean or an enum type, or a domain over one of them."),
					 errhint("Tracking reads statuses as loyalty's owner and runs no function that another role can define.")));
		getTypeOutputInfo(typ, &outfn, &isvarlena);
		fmgr_info(outfn, &cols->status_out);
		cols->status_bpchar = (getBaseType(typ) == BPCHAROID);
		cols->nstatuses = nstatuses;
		cols->statuses = statuses;
	}
}

/*
 * Text of a status value as compared with counted_statuses: the type's
 * output, with the trailing blanks of character(n) removed as the cast to
 * text does.
 */
bool
RfmStatusCounts(RfmTrackCols *cols, Datum value, bool isnull)
{
	char	   *s;
	int			len;
	int			i;

	if (isnull)
		return false;
	s = OutputFunctionCall(&cols->status_out, value);
	len = strlen(s);
	if (cols->status_bpchar)
		while (len > 0 && s[len - 1] == ' ')
			len--;
	for (i = 0; i < cols->nstatuses; i++)
		if ((int) strlen(cols->statuses[i]) == len && memcmp(cols->statuses[i], s, len) == 0)
			return true;
	return false;
}

/*
 * The first and last order times of some customers, read again from every
 * tracked table (after removals that may have taken one of them away):
 * first[i] / last[i] for keys[i], null when the customer has no order.
 * read_only: the caller's snapshot (a reader adding pending deltas, which
 * must see the tables as of the same snapshot as the deltas); otherwise a
 * fresh one (a fold: at least as new as the deltas it folded).
 */
void
RfmReadOrderTimes(char **keys, int n, Datum *first, bool *first_null,
				  Datum *last, bool *last_null, bool read_only)
{
	HTAB	   *pos;
	HASHCTL		ctl;
	int			i;
	uint64		t;
	SPITupleTable *tracked;
	uint64		ntracked;
	Datum		args[3];
	Oid			argtypes[3];

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(char *);
	ctl.entrysize = sizeof(char *) + sizeof(int);
	ctl.hash = RfmKeyHash;
	ctl.match = RfmKeyMatch;
	ctl.hcxt = CurrentMemoryContext;
	pos = hash_create("loyalty rfm fix times", n, &ctl,
					  HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	for (i = 0; i < n; i++)
	{
		bool		found;
		char	  **ent = hash_search(pos, &keys[i], HASH_ENTER, &found);

		*(int *) (ent + 1) = i;
		first_null[i] = last_null[i] = true;
	}

	if (SPI_execute("SELECT orders::pg_catalog.oid, customer_column, ordered_at_column,"
					" amount_column, status_column, counted_statuses"
					" FROM loyalty.tracked_table ORDER BY orders::pg_catalog.oid",
					read_only, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read loyalty.tracked_table");
	tracked = SPI_tuptable;
	ntracked = SPI_processed;
	for (t = 0; t < ntracked; t++)
	{
		HeapTuple	tup = tracked->vals[t];
		TupleDesc	tdesc = tracked->tupdesc;
		bool		isnull;
		Oid			relid = DatumGetObjectId(SPI_getbinval(tup, tdesc, 1, &isnull));
		char	   *cust_col = SPI_getvalue(tup, tdesc, 2);
		char	   *time_col = SPI_getvalue(tup, tdesc, 3);
		char	   *amount_col = SPI_getvalue(tup, tdesc, 4);
		char	   *status_col = SPI_getvalue(tup, tdesc, 5);
		Datum		statuses = SPI_getbinval(tup, tdesc, 6, &isnull);
		Relation	rel = table_open(relid, AccessShareLock);
		RfmTrackCols cols;
		char	  **sts = NULL;
		int			nsts = 0;
		StringInfoData sql;
		uint64		r;
		SPITupleTable *res;
		Oid			custbase;

		if (!isnull)
		{
			Datum	   *elems;
			bool	   *enulls;
			int			k;

			deconstruct_array(DatumGetArrayTypeP(statuses), TEXTOID, -1, false, TYPALIGN_INT,
							  &elems, &enulls, &nsts);
			sts = palloc(sizeof(char *) * Max(nsts, 1));
			for (k = 0; k < nsts; k++)
				sts[k] = TextDatumGetCString(elems[k]);
		}
		RfmResolveColumns(RelationGetDescr(rel), RelationGetRelationName(rel),
						  cust_col, time_col, amount_col, status_col, nsts, sts, &cols);
		custbase = getBaseType(cols.cust_type);

		/*
		 * Order times per customer, status and sign of the amount; the
		 * status filter and the refund test are applied below in C with the
		 * same rules as the trigger.  This runs as loyalty's owner: the
		 * customers are passed as an array of the column's own (built-in,
		 * see RfmCustomerTypeOk) type, converted in C by that type's input
		 * function, so the query holds no cast, and every operator and
		 * aggregate is pg_catalog's.
		 */
		{
			Oid			typinput,
						typioparam;
			Datum	   *custd = palloc(sizeof(Datum) * n);
			int			k;

			getTypeInputInfo(custbase, &typinput, &typioparam);
			for (k = 0; k < n; k++)
				custd[k] = OidInputFunctionCall(typinput, keys[k], typioparam, -1);
			argtypes[0] = get_array_type(custbase);
			args[0] = PointerGetDatum(RfmMakeArray(custd, NULL, n, custbase));
		}
		initStringInfo(&sql);
		appendStringInfo(&sql, "SELECT %s, %s, pg_catalog.min(%s), pg_catalog.max(%s) FROM %s"
						 " WHERE %s OPERATOR(pg_catalog.=) ANY ($1)"
						 " AND %s IS NOT NULL"
						 " AND (%s IS NULL OR NOT %s OPERATOR(pg_catalog.<) 0)"
						 " GROUP BY 1, 2",
						 quote_identifier(cust_col),
						 status_col ? quote_identifier(status_col) : "NULL::pg_catalog.text",
						 quote_identifier(time_col), quote_identifier(time_col),
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
													RelationGetRelationName(rel)),
						 quote_identifier(cust_col),
						 quote_identifier(time_col),
						 quote_identifier(amount_col), quote_identifier(amount_col));
		if (SPI_execute_with_args(sql.data, 1, argtypes, args, NULL, read_only, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read order times of \"%s\"", RelationGetRelationName(rel));
		res = SPI_tuptable;
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	rt = res->vals[r];
			bool		cnull,
						snull,
						mnull,
						xnull;
			Datum		cust = SPI_getbinval(rt, res->tupdesc, 1, &cnull);
			Datum		st = SPI_getbinval(rt, res->tupdesc, 2, &snull);
			Datum		mn = SPI_getbinval(rt, res->tupdesc, 3, &mnull);
			Datum		mx = SPI_getbinval(rt, res->tupdesc, 4, &xnull);
			char	   *key;
			char	  **ent;
			TimestampTz tmin,
						tmax;
			bool		okmin,
						okmax;

			if (cnull || mnull || xnull)
				continue;
			if (cols.status && !RfmStatusCounts(&cols, st, snull))
				continue;
			key = OutputFunctionCall(&cols.cust_out, cust);
			ent = hash_search(pos, &key, HASH_FIND, NULL);
			if (ent == NULL)
				continue;
			i = *(int *) (ent + 1);
			okmin = RfmRowTime(&cols, mn, &tmin);
			okmax = RfmRowTime(&cols, mx, &tmax);

			/*
			 * min/max are finite unless infinite times exist; those rows are
			 * ignored by tracking, so look for finite ones only then.
			 */
			if (!okmin || !okmax)
			{
				if (!okmin && !okmax)
					continue;
				if (!okmin)
					tmin = tmax;
				else
					tmax = tmin;
			}
			if (first_null[i] || tmin < DatumGetTimestampTz(first[i]))
				first[i] = TimestampTzGetDatum(tmin);
			if (last_null[i] || tmax > DatumGetTimestampTz(last[i]))
				last[i] = TimestampTzGetDatum(tmax);
			first_null[i] = last_null[i] = false;
		}
		table_close(rel, AccessShareLock);
	}
}

/*
 * Read the first and last order times of some customers again from the
 * tracked tables and store them in customer_stats (a fold found that a
 * removed order may have been one of them).
 */
void
RfmFixOrderTimes(char **keys, int n)
{
	Datum	   *first = palloc(sizeof(Datum) * n);
	Datum	   *last = palloc(sizeof(Datum) * n);
	bool	   *first_null = palloc(sizeof(bool) * n);
	bool	   *last_null = palloc(sizeof(bool) * n);
	Datum	   *keyd = palloc(sizeof(Datum) * n);
	Datum		args[3];
	Oid			argtypes[3];
	int			i;

	RfmReadOrderTimes(keys, n, first, first_null, last, last_null, false);
	for (i = 0; i < n; i++)
		keyd[i] = CStringGetTextDatum(keys[i]);
	if (fix_times_plan == NULL)
	{
		SPIPlanPtr	plan;

		argtypes[0] = TEXTARRAYOID;
		argtypes[1] = TIMESTAMPTZARRAYOID;
		argtypes[2] = TIMESTAMPTZARRAYOID;
		plan = SPI_prepare("UPDATE loyalty.customer_stats AS s"
						   " SET first_order = u.f, last_order = u.l"
						   " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
						   " pg_catalog.unnest($3)) AS u(c, f, l)"
						   " WHERE s.customer_id OPERATOR(pg_catalog.=) u.c",
						   3, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		fix_times_plan = plan;
	}
	args[0] = PointerGetDatum(RfmMakeArray(keyd, NULL, n, TEXTOID));
	args[1] = PointerGetDatum(RfmMakeArray(first, first_null, n, TIMESTAMPTZOID));
	args[2] = PointerGetDatum(RfmMakeArray(last, last_null, n, TIMESTAMPTZOID));
	if (SPI_execute_plan(fix_times_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update order times in loyalty.customer_stats");
}

/* counted_statuses array of a config row as C strings. */
char **
RfmStatusList(Datum arr, bool isnull, int *n)
{
	Datum	   *elems;
	bool	   *enulls;
	char	  **out;
	int			k;

	*n = 0;
	if (isnull)
		return NULL;
	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &enulls, n);
	out = palloc(sizeof(char *) * Max(*n, 1));
	for (k = 0; k < *n; k++)
		out[k] = TextDatumGetCString(elems[k]);
	return out;
}

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
	Oid			argtypes[6];
	Datum		args[6];
	char		argnulls[6];

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

	argtypes[0] = OIDOID;
	argtypes[1] = NAMEOID;
	argtypes[2] = NAMEOID;
	argtypes[3] = NAMEOID;
	argtypes[4] = NAMEOID;
	argtypes[5] = TEXTARRAYOID;
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

	rows = RfmBackfill(relid, cust_col, time_col, amount_col, status_col, nst, sts);
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
