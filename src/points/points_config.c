/*
 * points_config.c
 *		A per-backend cache of the points program settings and the tier
 *		ladder, read by every points call.
 *
 * The program time zone comes from loyalty.settings (common to every
 * family), the rest from loyalty.points_program and loyalty.tier.  The
 * tables are small and change rarely; reading them with the account
 * lock on every call cost subqueries in the hottest statement.  A statement
 * trigger on loyalty.tier, loyalty.points_program and loyalty.settings
 * announces every change
 * with a relcache invalidation of loyalty.tier, which PostgreSQL delivers to
 * this backend at its next command and to the others when the change
 * commits (and again locally on rollback); the callback then drops the
 * cache.  The cache is loaded with the latest snapshot after locking
 * loyalty.tier (which processes pending invalidations), so it is never older
 * than the last committed change: a change applies to every call that starts
 * after it committed, in every session, whatever the isolation level.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "loyalty_cache.h"
#include "points.h"

PG_FUNCTION_INFO_V1(points_config_invalidate);

static MemoryContext PointsConfigContext = NULL;
static PointsConfig config;
static bool config_valid = false;
static Oid	tier_relid = InvalidOid;
typedef enum ConfigPlanId
{
	P_CONFIG,
	NCONFIGPLANS
} ConfigPlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog config_plans;

/*
 * One query: the program row (or the defaults) and the ladder in rank order.
 * The first row carries the program; tier columns are NULL when there is no
 * tier.
 */
static const char config_sql[] =
"SELECT coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'), coalesce(p.tier_basis, 'points'),"
"       p.tier_window_months, p.expiry_months, coalesce(p.expiry_rounding, 'none'),"
"       t.name, t.rank, t.threshold, t.multiplier, coalesce(p.currency, 'EUR'),"
"       coalesce(p.tier_downgrade, 'none')"
"  FROM (SELECT 1) one"
"  LEFT JOIN loyalty.points_program p ON true"
"  LEFT JOIN loyalty.tier t ON true"
" ORDER BY t.rank";

/* Relcache callback: a change of the ladder or the program, or a full reset, drops the cache. */
static void
PointsConfigCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || (OidIsValid(tier_relid) && relid == tier_relid))
		config_valid = false;
}

/*
 * Called from _PG_init: hand the cache's invalidation function to the
 * extension's one relcache callback (loyalty_cache.h).
 */
void
PointsInit(void)
{
	LoyaltyCacheOnRelation(PointsConfigCallback, (Datum) 0);
}

/*
 * Read the settings and the ladder into the cache's memory with the given
 * snapshot.  Runs inside the caller's SPI connection.
 */
static void
PointsConfigRead(Snapshot snapshot)
{
	int			ret;
	MemoryContext old;
	uint64		n;

	ret = SPI_execute_snapshot(LoyaltyPlanGet(&config_plans, P_CONFIG), NULL, NULL, snapshot, InvalidSnapshot, true, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed == 0)
		elog(ERROR, "reading the points settings failed: %s", SPI_result_code_string(ret));

	MemoryContextReset(PointsConfigContext);
	old = MemoryContextSwitchTo(PointsConfigContext);
	memset(&config, 0, sizeof(config));
	n = SPI_processed;
	config.tiers = palloc0(sizeof(PointsTierInfo) * n);
	for (uint64 i = 0; i < n; i++)
	{
		LoyaltyRow	r = LoyaltySpiRow(i);
		PointsTierInfo *tier = &config.tiers[config.ntiers];
		bool		isnull;

		if (i == 0)
		{
			config.timezone = LoyaltyColText(r, 1);
			config.program.spend_basis = strcmp(LoyaltyColText(r, 2), "spend") == 0;
			config.program.window_months = LoyaltyColInt32(r, 3, NULL);
			config.program.expiry_months = LoyaltyColInt32(r, 4, NULL);
			config.program.expiry_rounding = PointsParseRounding(LoyaltyColText(r, 5));
			strlcpy(config.program.currency, LoyaltyColText(r, 10), sizeof(config.program.currency));
			config.program.downgrade_on_refund = strcmp(LoyaltyColText(r, 11), "on_refund") == 0;
		}
		tier->name = LoyaltyColText(r, 6);
		if (tier->name == NULL)
			continue;			/* no tier */
		tier->rank = LoyaltyColInt32(r, 7, NULL);
		tier->threshold = datumCopy(LoyaltyColDatum(r, 8, &isnull), false, -1);
		tier->multiplier = datumCopy(LoyaltyColDatum(r, 9, &isnull), false, -1);
		config.ntiers++;
	}
	MemoryContextSwitchTo(old);
	/* the zone is looked up outside the cache context: pg_tzset has its own */
	config.program.tz = PointsZone(config.timezone);
}

/*
 * The settings and the ladder (must be called inside SPI).  The result
 * stays valid until the next SQL statement runs (an invalidation may then
 * drop it): callers copy what they keep.
 */
const PointsConfig *
PointsConfigGet(void)
{
	if (PointsConfigContext == NULL)
	{
		if (CacheMemoryContext == NULL)
			CreateCacheMemoryContext();
		PointsConfigContext = AllocSetContextCreate(CacheMemoryContext,
													"loyalty points settings",
													ALLOCSET_SMALL_SIZES);
	}
	if (!OidIsValid(tier_relid) || !config_valid)
	{
		Oid			nsp = get_namespace_oid("loyalty", false);

		tier_relid = get_relname_relid("tier", nsp);
		if (!OidIsValid(tier_relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"loyalty.tier\" does not exist"),
					 errhint("Install the loyalty extension in this database.")));
	}
	if (config_valid)
		return &config;

	/* locking processes the invalidations that arrived so far */
	LockRelationOid(tier_relid, AccessShareLock);
	do
	{
		Snapshot	snapshot;

		config_valid = true;
		snapshot = RegisterSnapshot(GetLatestSnapshot());
		PG_TRY();
		{
			PointsConfigRead(snapshot);
		}
		PG_CATCH();
		{
			config_valid = false;
			PG_RE_THROW();
		}
		PG_END_TRY();
		UnregisterSnapshot(snapshot);
	} while (!config_valid);
	return &config;
}

/*
 * PointsConfigGet for a caller not connected to SPI: connects only when the
 * settings must be read, so that a call finding them cached (nearly every
 * points_balance) pays no SPI connection.
 */
const PointsConfig *
PointsConfigGetUnconnected(void)
{
	const PointsConfig *cfg;

	if (config_valid && OidIsValid(tier_relid))
		return &config;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	cfg = PointsConfigGet();
	SPI_finish();
	return cfg;
}

/*
 * Statement trigger on loyalty.tier, loyalty.points_program and
 * loyalty.settings: announce the
 * change so that every backend drops its cache (this one at the next
 * command, the others at commit; this one again on rollback).
 */
Datum
points_config_invalidate(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("points_config_invalidate must be called as a trigger")));
	/* looked up each time: the extension may have been created again */
	CacheInvalidateRelcacheByRelid(get_relname_relid("tier", get_namespace_oid("loyalty", false)));
	return PointerGetDatum(NULL);
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef ConfigPlanDefs[NCONFIGPLANS] = {
	[P_CONFIG] = {config_sql, 0, {0}},
};

static SPIPlanPtr config_plan_slots[NCONFIGPLANS];

static LoyaltyPlanCatalog config_plans = {
	"points settings", ConfigPlanDefs, NCONFIGPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, config_plan_slots, 0
};
