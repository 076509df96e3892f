/*
 * points_balance.c
 *		The read of loyalty.points_balance() without the executor: the
 *		account row and the account's open lots fetched through their
 *		indexes, as PostgreSQL's own catalog lookups do.  The same lookup
 *		by customer (PointsKeyIndex*) reads the open lots of the accounts
 *		expire_points settles.
 *
 * points_balance is the most frequent call of a shop (every page that shows
 * a balance) and reads two index entries and a few heap rows; through SPI
 * it paid plan revalidation, executor start-up and shut-down, a nested
 * loop, projection and the tuple store for each call, about a third of its
 * time.  PointsBalanceDirect() reads the same rows with the same snapshot
 * (the caller's active snapshot, which SPI uses for a read-only statement)
 * and keeps every check the statement had:
 *	- the calling role (the extension owner, inside SECURITY DEFINER) must
 *	  have SELECT on both tables, and row security must not apply to them;
 *	- the tables and indexes are the extension's own, found in its schema by
 *	  name and checked for shape (a btree on customer_id with the column's
 *	  collation; the lot index partial on open lots).
 * When any of this does not hold (a revoked privilege, a policy, a
 * replaced index, a security module's permission hook), it returns false
 * and the caller runs the SQL statement, which behaves (and fails) exactly
 * as before.  Locks: AccessShareLock on each table and index, kept to the
 * end of the transaction, as the executor takes them.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

/*
 * Add one open lot to a balance being computed at "at": a pending lot whose
 * available_at has passed counts as available, a lot whose expires_at has
 * passed counts for nothing, and the soonest local expiry day (program time
 * zone) collects the points expiring on it.  Shared by the direct read and
 * the SQL statement's loop, so both apply one rule.
 */
void
PointsBalanceAddLot(PointsBalance *b, bool is_available, int64 remaining,
					bool has_available_at, TimestampTz available_at,
					bool has_expires_at, TimestampTz expires_at,
					TimestampTz at, pg_tz *tz)
{
	if (has_expires_at)
	{
		DateADT		day;

		if (expires_at <= at)
			return;				/* expired */
		day = PointsLastDayBefore(expires_at, tz);
		if (!b->has_expiry || day < b->expiry_date)
		{
			b->has_expiry = true;
			b->expiry_date = day;
			b->expiring = 0;
		}
		if (day == b->expiry_date)
			b->expiring += remaining;
	}
	if (!is_available)
		is_available = has_available_at && available_at <= at;
	if (is_available)
		b->available += remaining;
	else
		b->pending += remaining;
}

/*
 * Whether the direct read may stand in for the statement on this (opened)
 * table: the current role (the function's owner) has SELECT on it and no
 * row security applies (check_enable_rls answers RLS_NONE at once for a
 * table without it).  Otherwise the statement runs and reports the missing
 * privilege or applies the policies.
 */
static bool
KeyIndexReadable(Relation rel)
{
	return pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_SELECT) == ACLCHECK_OK &&
		(!rel->rd_rel->relrowsecurity ||
		 check_enable_rls(RelationGetRelid(rel), InvalidOid, true) == RLS_NONE);
}

/*
 * The number of a column of the expected type, or InvalidAttrNumber; the
 * number found last time (hint) is checked first.
 */
static AttrNumber
KeyIndexColumn(Relation rel, const char *name, Oid type, AttrNumber hint)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (hint > 0 && hint <= desc->natts)
	{
		Form_pg_attribute att = TupleDescAttr(desc, hint - 1);

		if (!att->attisdropped && att->atttypid == type && strcmp(NameStr(att->attname), name) == 0)
			return hint;
	}
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->atttypid == type ? att->attnum : InvalidAttrNumber;
	}
	return InvalidAttrNumber;
}

/*
 * Open a table of the extension's schema and one of its indexes by name
 * (AccessShareLock each, kept to the end of the transaction) and check the
 * index: a valid btree over customer_id alone, with the column's collation,
 * usable by every snapshot, partial or not as the caller expects.  The
 * columns named in cols (types in types) must exist.  False (and nothing
 * left open) when anything differs.  hint (the caller's, static) keeps the
 * relations and column numbers found last time; they are checked against
 * the locked relations at every call, and forgotten when they no longer
 * match (that call then returns false and the caller runs its statement).
 */
bool
PointsKeyIndexOpen(PointsKeyIndex *src, PointsKeyIndexHint *hint, const char *table, const char *index,
				   bool partial, int ncols, const char *const *cols, const Oid *types)
{
	Oid			nsp = get_namespace_oid("loyalty", true);
	Oid			relid;
	Oid			indexid;
	Form_pg_index ind;
	bool		ok;

	Assert(ncols <= (int) lengthof(src->cols));
	src->heap = src->index = NULL;
	if (ExecutorCheckPerms_hook != NULL || !OidIsValid(nsp))
		return false;
	if (!OidIsValid(hint->relid) || !OidIsValid(hint->indexid))
	{
		memset(hint, 0, sizeof(*hint));
		hint->relid = get_relname_relid(table, nsp);
		hint->indexid = get_relname_relid(index, nsp);
	}
	relid = hint->relid;
	indexid = hint->indexid;
	if (!OidIsValid(relid) || !OidIsValid(indexid))
	{
		hint->relid = InvalidOid;
		return false;
	}
	src->heap = try_relation_open(relid, AccessShareLock);
	if (src->heap == NULL)
	{
		hint->relid = InvalidOid;
		return false;
	}
	/* the lock processed pending invalidations: is it still that table? */
	ok = src->heap->rd_rel->relkind == RELKIND_RELATION &&
		RelationGetNamespace(src->heap) == nsp &&
		strcmp(RelationGetRelationName(src->heap), table) == 0;
	if (!ok)
		hint->relid = InvalidOid;
	ok = ok && KeyIndexReadable(src->heap);
	if (ok)
	{
		src->index = try_relation_open(indexid, AccessShareLock);
		ok = src->index != NULL;
		if (!ok)
			hint->relid = InvalidOid;
	}
	if (ok)
	{
		src->key = hint->key = KeyIndexColumn(src->heap, "customer_id", TEXTOID, hint->key);
		ind = src->index->rd_index;
		ok = src->index->rd_rel->relkind == RELKIND_INDEX &&
			strcmp(RelationGetRelationName(src->index), index) == 0 &&
			src->index->rd_rel->relam == BTREE_AM_OID &&
			ind->indrelid == relid && ind->indisvalid && !ind->indcheckxmin &&
			ind->indnkeyatts == 1 && src->key != InvalidAttrNumber &&
			ind->indkey.values[0] == src->key &&
			src->index->rd_opcintype[0] == TEXTOID &&
			src->index->rd_indcollation[0] == TupleDescAttr(RelationGetDescr(src->heap), src->key - 1)->attcollation &&
			heap_attisnull(src->index->rd_indextuple, Anum_pg_index_indpred, NULL) != partial;
		if (!ok)
			hint->relid = InvalidOid;
	}
	for (int i = 0; ok && i < ncols; i++)
	{
		src->cols[i] = hint->cols[i] = KeyIndexColumn(src->heap, cols[i], types[i], hint->cols[i]);
		ok = src->cols[i] != InvalidAttrNumber;
		if (!ok)
			hint->relid = InvalidOid;
	}
	if (!ok)
	{
		if (src->index != NULL)
			relation_close(src->index, NoLock);
		relation_close(src->heap, NoLock);
		src->heap = src->index = NULL;
	}
	return ok;
}

/* Close what PointsKeyIndexOpen opened (the locks stay until the end of the transaction). */
void
PointsKeyIndexClose(PointsKeyIndex *src)
{
	if (src->index != NULL)
		relation_close(src->index, NoLock);
	if (src->heap != NULL)
		relation_close(src->heap, NoLock);
}

/*
 * Start (scan NULL) or restart an index scan for customer_id = key, with
 * the index's collation.
 */
IndexScanDesc
PointsKeyIndexScan(PointsKeyIndex *src, IndexScanDesc scan, Snapshot snapshot, text *key)
{
	ScanKeyData skey;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   src->index->rd_indcollation[0], F_TEXTEQ, PointerGetDatum(key));
	if (scan == NULL)
		scan = index_beginscan_compat(src->heap, src->index, snapshot, 1, 0);
	index_rescan(scan, &skey, 1, NULL, 0);
	return scan;
}

/* A bigint column of a slot's row (0 when null, as the statements' readers do). */
int64
PointsSlotInt64(TupleTableSlot *slot, AttrNumber att)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, att, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * Read the balance of customer_id at "at" into b (zeroed by the caller):
 * the debt and tier of the account and its open lots, as the balance
 * statement reads them, with the caller's snapshot.  Returns false when the
 * direct read cannot stand in for the statement (see the file header);
 * then b is untouched.  The tier is allocated in the current memory
 * context.
 */
bool
PointsBalanceDirect(text *customer_id, TimestampTz at, pg_tz *tz, PointsBalance *b)
{
	static PointsKeyIndexHint account_hint;
	static PointsKeyIndexHint lot_hint;
	static const char *const account_cols[2] = {"debt", "tier"};
	static const Oid account_types[2] = {INT8OID, TEXTOID};
	static const char *const lot_cols[4] = {"state", "remaining", "available_at", "expires_at"};
	static const Oid lot_types[4] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	PointsKeyIndex account,
				lot;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	bool		isnull;
	Datum		d;

	if (!ActiveSnapshotSet())
		return false;
	if (!PointsKeyIndexOpen(&account, &account_hint, "points_account", "points_account_pkey", false,
							2, account_cols, account_types))
		return false;
	if (!PointsKeyIndexOpen(&lot, &lot_hint, "points_lot", "points_lot_open_idx", true,
							4, lot_cols, lot_types))
	{
		PointsKeyIndexClose(&account);
		return false;
	}
	snapshot = GetActiveSnapshot();

	/* the account: its debt and tier (no account: zero balance, no tier) */
	slot = table_slot_create(account.heap, NULL);
	scan = PointsKeyIndexScan(&account, NULL, snapshot, customer_id);
	b->found = index_getnext_slot(scan, ForwardScanDirection, slot);
	if (b->found)
	{
		b->debt = PointsSlotInt64(slot, account.cols[0]);
		d = slot_getattr(slot, account.cols[1], &isnull);
		b->tier = isnull ? NULL : TextDatumGetCString(d);
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);

	/* its open lots */
	if (b->found)
	{
		slot = table_slot_create(lot.heap, NULL);
		scan = PointsKeyIndexScan(&lot, NULL, snapshot, customer_id);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			text	   *state;
			bool		has_available_at,
						has_expires_at;
			TimestampTz available_at,
						expires_at;

			d = slot_getattr(slot, lot.cols[0], &isnull);
			if (isnull)
				continue;
			state = DatumGetTextPP(d);
			/* (the index holds open lots only; checked all the same) */
			if (VARSIZE_ANY_EXHDR(state) == 6 && memcmp(VARDATA_ANY(state), "closed", 6) == 0)
				continue;
			d = slot_getattr(slot, lot.cols[2], &isnull);
			has_available_at = !isnull;
			available_at = isnull ? 0 : DatumGetTimestampTz(d);
			d = slot_getattr(slot, lot.cols[3], &isnull);
			has_expires_at = !isnull;
			expires_at = isnull ? 0 : DatumGetTimestampTz(d);
			PointsBalanceAddLot(b,
								VARSIZE_ANY_EXHDR(state) == 9 &&
								memcmp(VARDATA_ANY(state), "available", 9) == 0,
								PointsSlotInt64(slot, lot.cols[1]),
								has_available_at, available_at,
								has_expires_at, expires_at, at, tz);
		}
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
	}
	PointsKeyIndexClose(&lot);
	PointsKeyIndexClose(&account);
	return true;
}
