/*
 * points_expire.c
 *		Settling in bulk: loyalty.expire_points(), which the procedure
 *		loyalty.run_points_maintenance() calls in committed batches.
 *
 * Balances are exact at read time without it (points_balance counts lots by
 * their times) and every mutating call settles its own account first; this
 * job writes the expiry ledger entries and makes pending lots available for
 * the accounts nobody touched, so that the ledger and the settled columns
 * follow the calendar.  It picks accounts whose next_event_at is due, locks
 * them with SKIP LOCKED (an account busy in an app transaction is settled by
 * that transaction or the next run, and the job never waits for the app) and
 * settles each batch with the same statement the inline path uses.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "points.h"

PG_FUNCTION_INFO_V1(points_expire);

/* Accounts settled per statement. */
#define POINTS_EXPIRE_BATCH 10000

typedef enum ExpirePlanId
{
	P_PICK,
	NEXPIREPLANS
} ExpirePlanId;

/* The statements of this file (defined at its end), prepared on first use. */
static LoyaltyPlanCatalog expire_plans;

static const char pick_sql[] =
"SELECT array_agg(s.customer_id) FROM ("
"  SELECT a.customer_id FROM loyalty.points_account a"
"   WHERE a.next_event_at <= $1"
"   ORDER BY a.next_event_at"
"   LIMIT $2"
"     FOR NO KEY UPDATE SKIP LOCKED) s";

/*
 * loyalty.expire_points(as_of, max_accounts): settle due accounts as of a
 * time, at most max_accounts of them (NULL: all that are not locked by
 * another transaction), in statements of up to 10,000 accounts.  Returns
 * how many accounts were settled, how many lots and points expired and how
 * many pending points became available.
 */
Datum
points_expire(PG_FUNCTION_ARGS)
{
	TimestampTz as_of = PointsArgWriteTime(fcinfo, 0, "as_of");
	int64		limit = -1;
	int64		accounts = 0,
				lots = 0,
				expired = 0,
				activated = 0;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (!PG_ARGISNULL(1))
	{
		limit = PG_GETARG_INT32(1);
		if (limit < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_accounts must be positive or NULL, not " INT64_FORMAT, limit)));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (;;)
	{
		int			batch = POINTS_EXPIRE_BATCH;
		Datum		v[2];
		bool		isnull;
		Datum		picked;
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (limit >= 0)
			batch = (int) Min(batch, limit - accounts);
		if (batch <= 0)
			break;
		v[0] = TimestampTzGetDatum(as_of);
		v[1] = Int32GetDatum(batch);
		LoyaltyExec(LoyaltyPlanGet(&expire_plans, P_PICK), v, NULL, false, SPI_OK_SELECT);
		picked = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			break;
		n = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(picked)), ARR_DIMS(DatumGetArrayTypeP(picked)));

		PointsSettle(picked, as_of);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	t = SPI_tuptable->vals[i];
			TupleDesc	d = SPI_tuptable->tupdesc;

			lots += DatumGetInt64(SPI_getbinval(t, d, 5, &isnull));
			expired += DatumGetInt64(SPI_getbinval(t, d, 6, &isnull));
			activated += DatumGetInt64(SPI_getbinval(t, d, 7, &isnull));
		}
		accounts += n;
		SPI_freetuptable(SPI_tuptable);
		if (n < batch)
			break;
	}
	SPI_finish();

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);
	values[0] = Int64GetDatum(accounts);
	values[1] = Int64GetDatum(lots);
	values[2] = Int64GetDatum(expired);
	values[3] = Int64GetDatum(activated);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* ------------------------------------------------------------------------
 * The statements above, as a plan catalogue (loyalty_spi.h): prepared on
 * first use in a backend with a generic plan, and kept.
 * ------------------------------------------------------------------------ */

static const LoyaltyPlanDef ExpirePlanDefs[NEXPIREPLANS] = {
	[P_PICK] = {pick_sql, 2, {TIMESTAMPTZOID, INT4OID}},
};

static SPIPlanPtr expire_plan_slots[NEXPIREPLANS];

static LoyaltyPlanCatalog expire_plans = {
	"points expiry", ExpirePlanDefs, NEXPIREPLANS,
	CURSOR_OPT_GENERIC_PLAN, NULL, expire_plan_slots, 0
};
