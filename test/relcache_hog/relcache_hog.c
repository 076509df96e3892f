/*
 * relcache_hog.c
 *		Test-only module (never installed): takes relcache callback slots the
 *		way other extensions do, so that test/scripts/cache_callbacks.sh can
 *		run every loyalty module in a session with one slot left.
 *
 * PostgreSQL keeps at most 10 relcache callbacks per backend
 * (MAX_RELCACHE_CALLBACKS in utils/cache/inval.c, 13 to 18) and takes 2 of
 * them itself in every session (the plan cache at start, the type cache at
 * its first lookup).  Loading this module takes HOG_CALLBACKS more (Citus
 * alone takes 5); one more than the remaining slots ends the session with
 * FATAL "out of relcache_callback_list slots".
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/inval.h"

PG_MODULE_MAGIC;

#ifndef HOG_CALLBACKS
#define HOG_CALLBACKS 7
#endif

void		_PG_init(void);

/* Invalidations seen by this module's callbacks (only for the test). */
static int64 hog_invalidations = 0;

/* A relcache callback that only counts what it is given. */
static void
hog_relcache_callback(Datum arg, Oid relid)
{
	hog_invalidations++;
}

/* Module load: take HOG_CALLBACKS relcache callback slots. */
void
_PG_init(void)
{
	for (int i = 0; i < HOG_CALLBACKS; i++)
		CacheRegisterRelcacheCallback(hog_relcache_callback, Int32GetDatum(i));
}

PG_FUNCTION_INFO_V1(relcache_hog_take_one_more);

/*
 * Take one more slot: the control of the test, which shows that the
 * session it runs in has no slot left (it must end with FATAL).
 */
Datum
relcache_hog_take_one_more(PG_FUNCTION_ARGS)
{
	CacheRegisterRelcacheCallback(hog_relcache_callback, Int32GetDatum(-1));
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(relcache_hog_invalidations);

/* How many relcache invalidations the module's callbacks received. */
Datum
relcache_hog_invalidations(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(hog_invalidations);
}
