/*
 * loyalty.c
 *		The module: library initialisation and version reporting.  The one
 *		file above every family (src/common, src/rfm, src/rfm_live,
 *		src/coupon, src/points): _PG_init calls each family's initialiser.
 */
#include "loyalty.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/guc.h"

#include "coupon.h"
#include "loyalty_cache.h"
#include "mission.h"
#include "points.h"
#include "rfm_live.h"
#include "segment.h"

PG_MODULE_MAGIC;

/*
 * Module load: register the extension's one set of cache callbacks, let
 * each family hand its invalidation handlers to it (in family order), then
 * reserve the loyalty.* configuration namespace so that a misspelt setting
 * is reported instead of silently creating a placeholder.  Feature modules
 * register their own parameters before the reservation.
 */
void
_PG_init(void)
{
	LoyaltyCacheInit();
	SegmentInit();
	RfmLiveInit();
	CouponInit();
	PointsInit();
	MissionInit();
	MarkGUCPrefixReserved(LOYALTY_GUC_PREFIX);
}

PG_FUNCTION_INFO_V1(loyalty_version);

/*
 * loyalty.version(): the version of the loaded shared library.  Tests compare
 * it with pg_extension.extversion to catch a library that does not match the
 * installed SQL objects (a forgotten ALTER EXTENSION UPDATE or make install).
 */
Datum
loyalty_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(LOYALTY_VERSION));
}
