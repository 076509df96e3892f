/*
 * loyalty_cache.h
 *		The one cache-invalidation hub of the extension.
 *
 * PostgreSQL keeps at most 10 relcache callbacks per backend (and other
 * extensions, Citus among them, take several), so loyalty registers exactly
 * one, plus one syscache callback per catalog cache it watches, once, from
 * _PG_init (LoyaltyCacheInit).  Each family's cache hands its invalidation
 * function to this module from the family's initialiser (also called from
 * _PG_init, after LoyaltyCacheInit); the hub calls every handler, in the
 * order registered, for every invalidation it receives.
 *
 * Handlers run inside invalidation processing: they may only flip flags or
 * forget cached state, never run SQL, allocate in the caller's context or
 * raise errors.
 *
 * common/ knows no family: the dispatch table is filled at load time by the
 * families (which depend on common/, never the reverse).
 */
#ifndef LOYALTY_CACHE_H
#define LOYALTY_CACHE_H

#include "postgres.h"

#include "utils/inval.h"

/* Most handlers one backend may register (relcache and syscache each). */
#define LOYALTY_CACHE_MAX_HANDLERS	16

extern void LoyaltyCacheInit(void);
extern void LoyaltyCacheOnRelation(RelcacheCallbackFunction fn, Datum arg);
extern void LoyaltyCacheOnSyscache(int cacheid, SyscacheCallbackFunction fn,
								   Datum arg);
extern uint64 LoyaltyCacheCatalogGeneration(void);

#endif							/* LOYALTY_CACHE_H */
