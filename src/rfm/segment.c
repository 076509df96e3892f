/*
 * segment.c
 *		Named RFM segments: the per-backend cache of the segment map, the
 *		segment_of() functions, and the triggers that keep the map valid
 *		(every score of the 1..5 scale in exactly one segment) and the caches
 *		of all backends current.
 *
 * The map lives in loyalty.segment_rule as boxes on the 1..5 scale.  Each
 * backend caches it as 125 segment names (one per score 111..555), read with
 * one SPI query on first use.  A statement trigger on the map tables calls
 * CacheInvalidateRelcacheByRelid(), which PostgreSQL delivers to this backend
 * at the next command and to every other backend when the transaction
 * commits; our relcache callback then drops the cache.  A rollback re-sends
 * the invalidation locally, so the cache never keeps an aborted edit.
 *
 * Snapshot used for loading: the latest one, taken after locking the table
 * (which processes pending invalidations), so a commit is either visible to
 * the load or its invalidation is still to come; the cache can therefore
 * never keep a map older than the last commit.  Like a catalog lookup, the
 * cache is not tied to a transaction snapshot: a REPEATABLE READ transaction
 * that (re)loads the map sees edits committed after it started.
 * In parallel mode no new snapshot may be taken: workers and the leader then
 * load with the query's snapshot and keep the result for that transaction
 * only.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "loyalty_cache.h"
#include "loyalty_spi.h"
#include "rfm.h"
#include "rfm_score.h"
#include "segment.h"

/* The map is written on this scale; scores of other bin counts are rescaled. */
#define SEGMENT_SCALE	5
#define SEGMENT_CELLS	(SEGMENT_SCALE * SEGMENT_SCALE * SEGMENT_SCALE)

#define SEGMENT_SCHEMA		"loyalty"
#define SEGMENT_RULE_TABLE	"segment_rule"
#define SEGMENT_TABLE		"segment"

/* What the rules say about one score of the 1..5 scale. */
typedef struct SegmentCell
{
	int			count;			/* number of rules covering it */
	const char *first;			/* segment of the first such rule */
	const char *second;			/* segment of the second, if any */
} SegmentCell;

/* The backend's cache. */
static MemoryContext SegmentCacheContext = NULL;
static SegmentCell segment_cache[SEGMENT_CELLS];
static bool segment_cache_valid = false;
static bool segment_cache_xact_only = false;
static Oid	segment_rule_relid = InvalidOid;
static Oid	segment_relid = InvalidOid;

/* The saved SPI plan reading the rules. */
static SPIPlanPtr segment_load_plan = NULL;

/* Last successful coverage check, so a deferred check runs once per state. */
static TransactionId segment_checked_xid = InvalidTransactionId;
static CommandId segment_checked_cid = InvalidCommandId;

PG_FUNCTION_INFO_V1(segment_of);
PG_FUNCTION_INFO_V1(segment_of_bins);
PG_FUNCTION_INFO_V1(segment_rule_check);
PG_FUNCTION_INFO_V1(segment_map_invalidate);

/* Index of a 1..5-scale score in the 125-cell arrays. */
static inline int
SegmentCellIndex(int r, int f, int m)
{
	return ((r - 1) * SEGMENT_SCALE + (f - 1)) * SEGMENT_SCALE + (m - 1);
}

/*
 * Relcache callback: a change of either map table (announced by
 * segment_map_invalidate) or a full reset drops the cache.  Runs inside
 * invalidation processing, so it only flips a flag.
 */
static void
SegmentRelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid ||
		(OidIsValid(segment_rule_relid) && relid == segment_rule_relid) ||
		(OidIsValid(segment_relid) && relid == segment_relid))
		segment_cache_valid = false;
}

/*
 * End of transaction: a cache loaded in parallel mode (with the query's
 * snapshot, which may be older than the last invalidation) is not kept.
 */
static void
SegmentXactCallback(XactEvent event, void *arg)
{
	if (segment_cache_xact_only)
	{
		segment_cache_valid = false;
		segment_cache_xact_only = false;
	}
}

/*
 * Called from _PG_init: hand the relcache handler to the extension's one
 * relcache callback (loyalty_cache.h) and register the transaction
 * callback.  Registration is per backend and cannot be undone, hence only
 * at load.
 */
void
SegmentInit(void)
{
	LoyaltyCacheOnRelation(SegmentRelcacheCallback, (Datum) 0);
	RegisterXactCallback(SegmentXactCallback, NULL);
}

/*
 * OID of loyalty.segment_rule (and remember loyalty.segment's), raising a
 * clear error when the extension's tables are missing, e.g. when the library
 * is loaded in a database without the extension.
 */
static Oid
SegmentRuleRelid(void)
{
	Oid			nsp = get_namespace_oid(SEGMENT_SCHEMA, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(SEGMENT_RULE_TABLE, nsp) : InvalidOid;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" does not exist", SEGMENT_SCHEMA, SEGMENT_RULE_TABLE),
				 errhint("Install the loyalty extension in this database.")));
	segment_rule_relid = relid;
	segment_relid = get_relname_relid(SEGMENT_TABLE, nsp);
	return relid;
}

/*
 * Read every rule with the given snapshot and record, per 1..5-scale score,
 * how many rules cover it and the segments of the first two.  Segment names
 * are copied into strctx.  One query, read-only (no command counter
 * increment, so it is allowed in parallel mode and at commit).
 */
static void
SegmentMapRead(SegmentCell *cells, MemoryContext strctx, Snapshot snapshot)
{
	int			ret;

	memset(cells, 0, sizeof(SegmentCell) * SEGMENT_CELLS);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	LoyaltyKeepPlan(&segment_load_plan,
					"SELECT segment, r_min, r_max, f_min, f_max, m_min, m_max"
					" FROM " SEGMENT_SCHEMA "." SEGMENT_RULE_TABLE, 0, NULL, 0);
	ret = SPI_execute_snapshot(segment_load_plan, NULL, NULL, snapshot,
							   InvalidSnapshot, true, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading %s.%s failed: %s", SEGMENT_SCHEMA, SEGMENT_RULE_TABLE,
			 SPI_result_code_string(ret));

	for (uint64 row = 0; row < SPI_processed; row++)
	{
		LoyaltyRow	r = LoyaltySpiRow(row);
		char	   *raw = LoyaltyColText(r, 1);
		const char *name;
		int			bound[6];

		for (int i = 0; i < 6; i++)
		{
			bool		isnull;
			Datum		d = LoyaltyColDatum(r, i + 2, &isnull);

			/* NOT NULL and CHECK (1..5, min <= max) make this impossible */
			if (isnull || DatumGetInt16(d) < 1 || DatumGetInt16(d) > SEGMENT_SCALE)
				elog(ERROR, "invalid bound in %s.%s", SEGMENT_SCHEMA, SEGMENT_RULE_TABLE);
			bound[i] = DatumGetInt16(d);
		}
		if (raw == NULL)
			elog(ERROR, "null segment in %s.%s", SEGMENT_SCHEMA, SEGMENT_RULE_TABLE);
		name = MemoryContextStrdup(strctx, raw);

		for (int r = bound[0]; r <= bound[1]; r++)
			for (int f = bound[2]; f <= bound[3]; f++)
				for (int m = bound[4]; m <= bound[5]; m++)
				{
					SegmentCell *cell = &cells[SegmentCellIndex(r, f, m)];

					if (cell->count == 0)
						cell->first = name;
					else if (cell->count == 1)
						cell->second = name;
					cell->count++;
				}
	}

	SPI_finish();
}

/*
 * Make the cache valid, reading the map if needed.  Retries when an
 * invalidation arrives while reading, so the result is never older than the
 * last processed invalidation.
 */
static void
SegmentCacheLoad(void)
{
	bool		parallel;

	if (segment_cache_valid)
		return;

	if (SegmentCacheContext == NULL)
	{
		if (CacheMemoryContext == NULL)
			CreateCacheMemoryContext();
		SegmentCacheContext = AllocSetContextCreate(CacheMemoryContext,
													"loyalty segment map",
													ALLOCSET_SMALL_SIZES);
	}

	/* locking processes invalidations that arrived so far */
	LockRelationOid(SegmentRuleRelid(), AccessShareLock);

	parallel = IsInParallelMode();
	do
	{
		Snapshot	snapshot;

		segment_cache_valid = true;
		MemoryContextReset(SegmentCacheContext);
		snapshot = RegisterSnapshot(parallel ? GetActiveSnapshot() : GetLatestSnapshot());
		PG_TRY();
		{
			SegmentMapRead(segment_cache, SegmentCacheContext, snapshot);
		}
		PG_CATCH();
		{
			segment_cache_valid = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
		UnregisterSnapshot(snapshot);
	} while (!segment_cache_valid);

	segment_cache_xact_only = parallel;
}

/*
 * Map a score of 1..bins onto the 1..5 scale of the map:
 * round(1 + (s - 1) * 4 / (bins - 1)), halves rounded up, in integers.
 */
static int
SegmentRescale(int s, int bins)
{
	return 1 + ((s - 1) * (SEGMENT_SCALE - 1) * 2 + (bins - 1)) / (2 * (bins - 1));
}

/*
 * The segment of a score computed with the given number of bins (see
 * segment.h).  Checks that bins is 2..9 and that no part exceeds it.
 */
const char *
RfmSegmentOf(RfmScore score, int bins)
{
	int			part[3];
	const SegmentCell *cell;

	if (bins < RFM_MIN_BINS || bins > RFM_MAX_BINS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bins must be between %d and %d, not %d",
						RFM_MIN_BINS, RFM_MAX_BINS, bins)));

	part[0] = RfmScoreRecency(score);
	part[1] = RfmScoreFrequency(score);
	part[2] = RfmScoreMonetary(score);
	for (int i = 0; i < 3; i++)
	{
		if (part[i] > bins)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("rfm_score %d has a part above %d bins", (int) score, bins),
					 errdetail("With %d bins every part of the score is 1 to %d.", bins, bins)));
		if (bins != SEGMENT_SCALE)
			part[i] = SegmentRescale(part[i], bins);
	}

	SegmentCacheLoad();
	cell = &segment_cache[SegmentCellIndex(part[0], part[1], part[2])];
	if (cell->count > 1)
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("segment map has more than one rule for score %d%d%d: segments \"%s\" and \"%s\"",
						part[0], part[1], part[2], cell->first, cell->second),
				 errdetail("The map is being edited in this transaction; it is checked at commit.")));
	return cell->count == 1 ? cell->first : NULL;
}

/*
 * Shared body of the two SQL entry points: the segment name as text, or
 * NULL when the map has none for the score (only while a map is loaded).
 */
static Datum
SegmentOfDatum(RfmScore score, int bins, FunctionCallInfo fcinfo)
{
	const char *name = RfmSegmentOf(score, bins);

	if (name == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(name));
}

/* loyalty.segment_of(rfm_score): segment of a score on the 1..5 scale. */
Datum
segment_of(PG_FUNCTION_ARGS)
{
	return SegmentOfDatum(PG_GETARG_RFM_SCORE(0), RFM_DEFAULT_BINS, fcinfo);
}

/* loyalty.segment_of(rfm_score, bins): segment of a score of 1..bins. */
Datum
segment_of_bins(PG_FUNCTION_ARGS)
{
	return SegmentOfDatum(PG_GETARG_RFM_SCORE(0), PG_GETARG_INT32(1), fcinfo);
}

/*
 * Deferred constraint trigger on loyalty.segment_rule: at commit (or SET
 * CONSTRAINTS ... IMMEDIATE), every score 111..555 must be covered by
 * exactly one rule.  Row-level (PostgreSQL has no statement-level constraint
 * triggers), so it remembers the transaction and command it last verified
 * and checks each state of the map once.  Reads with the latest snapshot so
 * that, with the lock the edit took, it judges the map that will be
 * committed.
 */
Datum
segment_rule_check(PG_FUNCTION_ARGS)
{
	TransactionId xid = GetTopTransactionIdIfAny();
	CommandId	cid = GetCurrentCommandId(false);
	SegmentCell cells[SEGMENT_CELLS];
	Snapshot	snapshot;
	int			none = 0,
				many = 0,
				bad = -1;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("segment_rule_check must be called as a trigger")));

	if (TransactionIdIsValid(xid) && xid == segment_checked_xid &&
		cid == segment_checked_cid)
		return PointerGetDatum(NULL);

	snapshot = RegisterSnapshot(GetLatestSnapshot());
	SegmentMapRead(cells, CurrentMemoryContext, snapshot);
	UnregisterSnapshot(snapshot);

	for (int i = 0; i < SEGMENT_CELLS; i++)
	{
		if (cells[i].count == 1)
			continue;
		if (cells[i].count == 0)
			none++;
		else
			many++;
		if (bad < 0)
			bad = i;
	}

	if (bad >= 0)
	{
		int			r = bad / 25 + 1,
					f = (bad / 5) % 5 + 1,
					m = bad % 5 + 1;
		const char *detail = "Every score from 111 to 555 must match exactly one rule of loyalty.segment_rule; %d scores match none and %d match more than one.";
		const char *hint = "Edit the map inside one transaction: the check runs at commit, so rules may overlap or leave gaps until then.";

		if (cells[bad].count == 0)
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("segment map leaves score %d%d%d without a segment", r, f, m),
					 errdetail(detail, none, many),
					 errhint("%s", hint)));
		else
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg("segment map has more than one rule for score %d%d%d: segments \"%s\" and \"%s\"",
							r, f, m, cells[bad].first, cells[bad].second),
					 errdetail(detail, none, many),
					 errhint("%s", hint)));
	}

	segment_checked_xid = xid;
	segment_checked_cid = cid;
	return PointerGetDatum(NULL);
}

/*
 * Statement trigger on both map tables: announce the change so that every
 * backend's cache is dropped (this one at the next command, the others at
 * commit; on rollback this one again).
 */
Datum
segment_map_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("segment_map_invalidate must be called as a trigger")));

	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}
