/*
 * rfm_columns.c
 *		The tracked columns of an orders table and how to read them, shared
 *		by the tracking trigger, the back-fill, the fold, the administration
 *		functions and customer_rfm: resolving and type-checking the columns,
 *		the status filter, the order time of a row, reading first and last
 *		order times again from the tracked tables, and small helpers on
 *		customer keys.
 *
 * This file is below rfm_track.c, rfm_track_admin.c and rfm_refresh.c and
 * calls none of them (file order in rfm_live: rfm_days, rfm_columns,
 * stats_store, rfm_track, then rfm_track_admin and rfm_refresh).
 */
#include "loyalty.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "rfm_live.h"

/* Find a column by name, raising 42703 naming the table when it is absent. */
static AttrNumber
RfmFindColumn(TupleDesc desc, const char *relname, const char *role, const char *colname)
{
	int			i;

	if (colname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s column must not be null", role)));
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
		cols.tz = RfmZoneLookup(RfmTrackedSetting(relid, "timezone"));
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
 * A text column of the loyalty.tracked_table row of a table (timezone,
 * frequency_unit), NULL when the table is not tracked or the column does
 * not exist (the 0.2.0 schema before ALTER EXTENSION UPDATE: UTC, rows).
 * Read with a plain scan, not SQL: the tracking trigger calls it (on a
 * cache miss) with the rights of whoever wrote the orders.
 */
char *
RfmTrackedSetting(Oid relid, const char *column)
{
	Oid			nsp = get_namespace_oid("loyalty", false);
	Oid			trelid = get_relname_relid("tracked_table", nsp);
	char	   *result = NULL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	Snapshot	snap;
	TupleDesc	desc;
	int			att = 0;
	int			oatt = 0;
	int			i;

	if (!OidIsValid(trelid))
		return NULL;
	rel = table_open(trelid, AccessShareLock);
	desc = RelationGetDescr(rel);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped)
			continue;
		if (strcmp(NameStr(a->attname), column) == 0)
			att = i + 1;
		if (strcmp(NameStr(a->attname), "orders") == 0)
			oatt = i + 1;
	}
	if (att == 0 || oatt == 0)
	{
		table_close(rel, AccessShareLock);
		return NULL;
	}
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		o = heap_getattr(tup, oatt, desc, &isnull);
		Datum		d;

		if (isnull || DatumGetObjectId(o) != relid)
			continue;
		d = heap_getattr(tup, att, desc, &isnull);
		if (!isnull)
			result = TextDatumGetCString(d);
		break;
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return result;
}

/*
 * Order time of a row, false when the row has no usable time (null or
 * infinite: such rows are ignored).  A date is the order time at 00:00 of
 * that day and a timestamp without time zone is local time, both in the
 * tracking zone: the statistics must not depend on the TimeZone of the
 * session that wrote the order, and batch rfm_segmentation reads them the
 * same way (RfmDecodeTime, in the program zone).
 */
bool
RfmRowTime(RfmTrackCols *cols, Datum value, TimestampTz *t)
{
	if (!RfmDecodeTime(cols->time_kind, value, cols->tz, t))
		return false;
	return true;
}

/* Hash of a customer key (the key field is a pointer to a C string). */
uint32
RfmKeyHash(const void *key, Size keysize)
{
	const char *s = *(char *const *) key;

	return string_hash(s, strlen(s) + 1);
}

/* Equality of two customer keys, dynahash style (0 = equal). */
int
RfmKeyMatch(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(char *const *) key1, *(char *const *) key2);
}

/* Build a one-dimensional array from datums (NULLs allowed). */
ArrayType *
RfmMakeArray(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return construct_md_array(values, nulls, 1, dims, lbs, elemtype, typlen, typbyval, typalign);
}
