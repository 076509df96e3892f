/*
 * loyalty_cache.c
 *		The one relcache callback and the syscache callbacks of the whole
 *		extension, dispatching to the families' invalidation functions (see
 *		loyalty_cache.h).
 */
#include "loyalty_cache.h"

#include "utils/syscache.h"

typedef struct RelHandler
{
	RelcacheCallbackFunction fn;
	Datum		arg;
} RelHandler;

typedef struct SysHandler
{
	int			cacheid;
	SyscacheCallbackFunction fn;
	Datum		arg;
} SysHandler;

static RelHandler rel_handlers[LOYALTY_CACHE_MAX_HANDLERS];
static int	nrel_handlers = 0;
static SysHandler sys_handlers[LOYALTY_CACHE_MAX_HANDLERS];
static int	nsys_handlers = 0;
static bool cache_initialised = false;

/*
 * Bumped by every invalidation of a namespace or a type (or a full reset):
 * the extension may have been dropped and created again, so OIDs cached
 * from its catalog entries (schema, types) must be looked up again.  Kept
 * plan catalogues compare it (loyalty_spi.c).
 */
static uint64 catalog_generation = 1;

/* The relcache callback: every family's handler, in registration order. */
static void
LoyaltyRelcacheCallback(Datum arg, Oid relid)
{
	for (int i = 0; i < nrel_handlers; i++)
		rel_handlers[i].fn(rel_handlers[i].arg, relid);
}

/* A syscache callback: the handlers registered for that cache. */
static void
LoyaltySyscacheCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (cacheid == NAMESPACEOID || cacheid == TYPEOID)
		catalog_generation++;
	for (int i = 0; i < nsys_handlers; i++)
		if (sys_handlers[i].cacheid == cacheid)
			sys_handlers[i].fn(sys_handlers[i].arg, cacheid, hashvalue);
}

/*
 * Called first from _PG_init: register the one relcache callback and the
 * syscache callbacks of the catalogs every loyalty cache depends on (the
 * loyalty schema and its types).  Registration is per backend and cannot be
 * undone, hence only at load.
 */
void
LoyaltyCacheInit(void)
{
	if (cache_initialised)
		return;
	CacheRegisterRelcacheCallback(LoyaltyRelcacheCallback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, LoyaltySyscacheCallback, (Datum) 0);
	CacheRegisterSyscacheCallback(TYPEOID, LoyaltySyscacheCallback, (Datum) 0);
	cache_initialised = true;
}

/*
 * A family's relcache handler: called with the OID of every relation whose
 * relcache entry is invalidated (InvalidOid: all of them).  Only from a
 * family initialiser, at load.
 */
void
LoyaltyCacheOnRelation(RelcacheCallbackFunction fn, Datum arg)
{
	if (nrel_handlers >= LOYALTY_CACHE_MAX_HANDLERS)
		elog(ERROR, "too many loyalty relcache handlers");
	rel_handlers[nrel_handlers].fn = fn;
	rel_handlers[nrel_handlers].arg = arg;
	nrel_handlers++;
}

/*
 * A family's syscache handler for one catalog cache (NAMESPACEOID or
 * TYPEOID: the hub listens to those; another cache is registered with
 * PostgreSQL the first time a family asks for it).  Only from a family
 * initialiser, at load.
 */
void
LoyaltyCacheOnSyscache(int cacheid, SyscacheCallbackFunction fn, Datum arg)
{
	bool		known = cacheid == NAMESPACEOID || cacheid == TYPEOID;

	if (nsys_handlers >= LOYALTY_CACHE_MAX_HANDLERS)
		elog(ERROR, "too many loyalty syscache handlers");
	for (int i = 0; i < nsys_handlers && !known; i++)
		known = sys_handlers[i].cacheid == cacheid;
	if (!known)
		CacheRegisterSyscacheCallback(cacheid, LoyaltySyscacheCallback, (Datum) 0);
	sys_handlers[nsys_handlers].cacheid = cacheid;
	sys_handlers[nsys_handlers].fn = fn;
	sys_handlers[nsys_handlers].arg = arg;
	nsys_handlers++;
}

/*
 * The current catalog generation: changes whenever a namespace or a type
 * may have changed (the loyalty schema or one of its types dropped and
 * created again).  Callers that cache such OIDs re-check them when it moved.
 */
uint64
LoyaltyCacheCatalogGeneration(void)
{
	return catalog_generation;
}
