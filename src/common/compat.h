/*
 * compat.h
 *		Differences between the PostgreSQL versions loyalty supports (13-18).
 *
 * Every #if on PG_VERSION_NUM lives here, so the rest of the code is written
 * against one API.  Each #if tests the release that changed the API: the
 * branch at or above it is the API as PostgreSQL 18 has it, the branch below
 * it the API of 15 or 13; the test suites compile (-Werror) and run on 13,
 * 15 and 18, so both sides of every test are compiled.  14, 16 and 17 are
 * not compiled: their path is right when each test names the right release
 * (each was checked against that release's change, noted with it).
 */
#ifndef LOYALTY_COMPAT_H
#define LOYALTY_COMPAT_H

#include "postgres.h"

#include "nodes/nodes.h"

#if PG_VERSION_NUM < 130000
#error "loyalty requires PostgreSQL 13 or later"
#endif

/*
 * MarkGUCPrefixReserved() appeared in PostgreSQL 15: from then on a
 * misspelt loyalty.* setting is an error.  Before, a prefix cannot be
 * reserved: EmitWarningsOnPlaceholders() warns at load about loyalty.*
 * placeholders already set, and later ones are accepted silently
 * (sql/guc_prefix.sql, expected/guc_prefix_1.out).
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

/*
 * A function that never returns is marked before its declaration with
 * pg_noreturn from PostgreSQL 18 on (C11 _Noreturn); earlier versions only
 * have pg_attribute_noreturn(), a GCC attribute, which may stand there too.
 */
#ifndef pg_noreturn
#define pg_noreturn pg_attribute_noreturn()
#endif

/*
 * RelationGetPrimaryKeyIndex() takes deferrable_ok from PostgreSQL 18 on;
 * the extension's primary keys are never deferrable.
 */
#if PG_VERSION_NUM >= 180000
#define RelationGetPrimaryKeyIndex_compat(rel) RelationGetPrimaryKeyIndex(rel, false)
#else
#define RelationGetPrimaryKeyIndex_compat(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/*
 * interval_out() of PostgreSQL 13 and 14 splits an interval into a struct
 * pg_tm, whose int tm_hour cannot hold a time field of 2^31 hours or more:
 * it raises 22008 "interval out of range" for a value it accepted as
 * input.  From 15 on the hours are an int64 (struct pg_itm).
 */
#if PG_VERSION_NUM >= 150000
#define LoyaltyIntervalOutFits(iv) ((void) (iv), true)
#else
#define LoyaltyIntervalOutFits(iv) \
	((iv)->time / USECS_PER_HOUR <= PG_INT32_MAX && \
	 (iv)->time / USECS_PER_HOUR >= PG_INT32_MIN)
#endif

/* Numeric infinities exist from PostgreSQL 14: before, no numeric is one. */
#if PG_VERSION_NUM < 140000
#define numeric_is_inf(num) ((void) (num), false)
#endif

/* varatt.h was split out of postgres.h in PostgreSQL 16. */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * initReadOnlyStringInfo() appeared in PostgreSQL 17: a StringInfo reading
 * an existing buffer without copying it.
 */
#if PG_VERSION_NUM >= 170000
#define initReadOnlyStringInfo_compat(str, d, l) initReadOnlyStringInfo(str, d, l)
#else
#define initReadOnlyStringInfo_compat(str, d, l) \
	do { \
		(str)->data = (d); \
		(str)->len = (l); \
		(str)->maxlen = (l); \
		(str)->cursor = 0; \
	} while (0)
#endif

/*
 * InitMaterializedSRF() (set up a materialize-mode set-returning function's
 * tuplestore) appeared in PostgreSQL 15; before that every function wrote
 * the same few lines, which this replicates.  Flags are not supported there.
 */
#if PG_VERSION_NUM < 150000
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/tuplestore.h"

static inline void
InitMaterializedSRF(FunctionCallInfo fcinfo, bits32 flags)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	TupleDesc	tupdesc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = tuplestore_begin_heap(rsinfo->allowedModes & SFRM_Materialize_Random,
											  false, work_mem);
	rsinfo->setDesc = CreateTupleDescCopy(tupdesc);
	MemoryContextSwitchTo(old);
}
#endif

/*
 * Run a prepared SPI query (parameter values in params, or NULL) and hand
 * every result row to a DestReceiver without copying it.  PostgreSQL 14
 * added the dest option of SPI_execute_plan_extended (the query may then
 * run in parallel); before that the rows are fetched through a cursor in
 * batches and stored into a slot one by one.
 */
#include "executor/spi.h"
#include "executor/tuptable.h"

static inline void
LoyaltySPIExecuteToDestParams(SPIPlanPtr plan, ParamListInfo params, bool read_only,
							  DestReceiver *dest)
{
#if PG_VERSION_NUM >= 140000
	SPIExecuteOptions options;
	int			rc;

	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = read_only;
	options.dest = dest;
	rc = SPI_execute_plan_extended(plan, &options);
	if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute_plan_extended failed: %s", SPI_result_code_string(rc));
#else
	Portal		portal = SPI_cursor_open_with_paramlist(NULL, plan, params, read_only);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(portal->tupDesc, &TTSOpsHeapTuple);

	dest->rStartup(dest, CMD_SELECT, portal->tupDesc);
	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			ExecStoreHeapTuple(SPI_tuptable->vals[i], slot, false);
			dest->receiveSlot(slot, dest);
		}
		ExecClearTuple(slot);
		SPI_freetuptable(SPI_tuptable);
	}
	dest->rShutdown(dest);
	ExecDropSingleTupleTableSlot(slot);
	SPI_cursor_close(portal);
#endif
}

/* The same for a parameterless query. */
static inline void
LoyaltySPIExecuteToDest(SPIPlanPtr plan, bool read_only, DestReceiver *dest)
{
	LoyaltySPIExecuteToDestParams(plan, NULL, read_only, dest);
}

/*
 * table_tuple_update() reports which indexes need new entries as a bool
 * before PostgreSQL 16 and as TU_UpdateIndexes from 16 on (TU_Summarizing:
 * only summarizing indexes such as BRIN).
 */
#if PG_VERSION_NUM >= 160000
#include "access/tableam.h"
typedef TU_UpdateIndexes LoyaltyUpdateIndexes;
#define LoyaltyUpdateNeedsIndexInserts(u) ((u) == TU_All)
#else
typedef bool LoyaltyUpdateIndexes;
#define LoyaltyUpdateNeedsIndexInserts(u) (u)
#endif

/*
 * Index entries of a row version written by table_tuple_update(), for every
 * index of the table, through the executor's code (expressions, predicates,
 * unique checks).  No "unchanged" hint: it would need a range table.
 */
#if PG_VERSION_NUM >= 160000
#define LoyaltyUpdateNeedsAnyIndexInserts(u) ((u) != TU_None)
#define LoyaltyExecInsertIndexTuples(rri, slot, estate, u) \
	ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL, (u) == TU_Summarizing)
#elif PG_VERSION_NUM >= 140000
#define LoyaltyUpdateNeedsAnyIndexInserts(u) (u)
#define LoyaltyExecInsertIndexTuples(rri, slot, estate, u) \
	ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL)
#else
#define LoyaltyUpdateNeedsAnyIndexInserts(u) (u)
#define LoyaltyExecInsertIndexTuples(rri, slot, estate, u) \
	((estate)->es_result_relation_info = (rri), \
	 ExecInsertIndexTuples(slot, estate, false, NULL, NIL))
#endif

/* make_new_heap() gained the new table's access method in PostgreSQL 15. */
#if PG_VERSION_NUM >= 150000
#define make_new_heap_compat(heap, tblspc, am, persistence, lockmode) \
	make_new_heap(heap, tblspc, am, persistence, lockmode)
#else
#define make_new_heap_compat(heap, tblspc, am, persistence, lockmode) \
	make_new_heap(heap, tblspc, persistence, lockmode)
#endif

/* index_insert() gained the indexUnchanged hint in PostgreSQL 14. */
#if PG_VERSION_NUM >= 140000
#define index_insert_unchanged_compat(rel, v, n, tid, heap, chk, info) \
	index_insert(rel, v, n, tid, heap, chk, true, info)
#define index_insert_new_compat(rel, v, n, tid, heap, chk, info) \
	index_insert(rel, v, n, tid, heap, chk, false, info)
#else
#define index_insert_unchanged_compat(rel, v, n, tid, heap, chk, info) \
	index_insert(rel, v, n, tid, heap, chk, info)
#define index_insert_new_compat(rel, v, n, tid, heap, chk, info) \
	index_insert(rel, v, n, tid, heap, chk, info)
#endif

/* getIdentitySequence() takes the relation instead of its OID from PostgreSQL 17 on. */
#if PG_VERSION_NUM >= 170000
#define getIdentitySequence_compat(rel, attnum, missing_ok) \
	getIdentitySequence(rel, attnum, missing_ok)
#else
#define getIdentitySequence_compat(rel, attnum, missing_ok) \
	getIdentitySequence(RelationGetRelid(rel), attnum, missing_ok)
#endif

/* index_beginscan() gained an instrumentation argument in PostgreSQL 18. */
#if PG_VERSION_NUM >= 180000
#define index_beginscan_compat(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan(heap, index, snapshot, NULL, nkeys, norderbys)
#else
#define index_beginscan_compat(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan(heap, index, snapshot, nkeys, norderbys)
#endif

#endif							/* LOYALTY_COMPAT_H */
