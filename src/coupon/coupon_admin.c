/*
 * coupon_admin.c
 *		Admin-level C functions: bulk code generation, the two helpers the
 *		campaign admin functions (coupon.sql) need from C (the exclusive
 *		campaign gate and a fresh count of a campaign's redemptions), and the
 *		trigger that keeps the backends' campaign caches current.
 *
 * generate_codes makes codes in batches: cryptographically random symbols
 * (coupon_code.h's generator), inserted with ON CONFLICT (code) DO NOTHING
 * so that a code equal to a stored one (or to another of the same batch) is
 * simply not inserted; the shortfall is generated again, for the same
 * customers when codes are bound.  The unique index on loyalty.coupon.code
 * is what guarantees that no two coupons share a code, whatever runs
 * concurrently.
 */
#include "coupon.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "loyalty_args.h"
#include "loyalty_spi.h"

#include <math.h>

/* Codes generated and inserted per statement. */
#define GENERATE_BATCH	100000
/* Rounds of regeneration before giving up on a crowded pattern. */
#define GENERATE_ROUNDS 20

/* One code to be stored: its value and, for bound codes, its customer. */
typedef struct PendingCode
{
	int			customer;		/* index into the customer list, or -1 */
	CouponCode *code;
	bool		done;
} PendingCode;

/* Order of (code key, customer) for matching RETURNING rows to a batch. */
typedef struct Returned
{
	CouponCode *code;
	const char *customer;
	bool		used;
} Returned;

static int
ReturnedCmp(const void *a, const void *b)
{
	const Returned *x = a;
	const Returned *y = b;
	int			c = CouponCodeCompare(CouponCodeDisplay(x->code),
									  CouponCodeDisplayLen(x->code),
									  CouponCodeDisplay(y->code),
									  CouponCodeDisplayLen(y->code));

	return c != 0 ? c : strcmp(x->customer, y->customer);
}

/* Stands for loyalty.coupon_code[] in the argument lists below. */
#define CODE_ARRAY_TYPE	((Oid) 1)

/*
 * The insert statements.  The "plain" ones fail on a duplicate code; the
 * others skip it (ON CONFLICT DO NOTHING), at the price of probing the
 * unique index once more per row.
 */
typedef enum InsertPlanId
{
	P_INSERT_UNBOUND,
	P_PLAIN_UNBOUND,
	P_INSERT_BOUND,
	P_PLAIN_BOUND,
	NINSERTPLANS
} InsertPlanId;

static const LoyaltyPlanDef InsertPlanDefs[NINSERTPLANS] = {
	[P_INSERT_UNBOUND] = {
		"INSERT INTO loyalty.coupon (code, campaign_id, max_uses, created_at)"
		" SELECT u.c, $2, 1, $3 FROM pg_catalog.unnest($1) AS u(c)"
		" ON CONFLICT (code) DO NOTHING",
		3, {CODE_ARRAY_TYPE, INT8OID, TIMESTAMPTZOID}
	},
	[P_PLAIN_UNBOUND] = {
		"INSERT INTO loyalty.coupon (code, campaign_id, max_uses, created_at)"
		" SELECT u.c, $2, 1, $3 FROM pg_catalog.unnest($1) AS u(c)",
		3, {CODE_ARRAY_TYPE, INT8OID, TIMESTAMPTZOID}
	},
	[P_INSERT_BOUND] = {
		"INSERT INTO loyalty.coupon (code, campaign_id, customer_id, max_uses, created_at)"
		" SELECT u.c, $2, u.customer, 1, $3"
		" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4)) AS u(c, customer)"
		" ON CONFLICT (code) DO NOTHING RETURNING code, customer_id",
		4, {CODE_ARRAY_TYPE, INT8OID, TIMESTAMPTZOID, TEXTARRAYOID}
	},
	[P_PLAIN_BOUND] = {
		"INSERT INTO loyalty.coupon (code, campaign_id, customer_id, max_uses, created_at)"
		" SELECT u.c, $2, u.customer, 1, $3"
		" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4)) AS u(c, customer)",
		4, {CODE_ARRAY_TYPE, INT8OID, TIMESTAMPTZOID, TEXTARRAYOID}
	},
};

static SPIPlanPtr insert_plans[NINSERTPLANS];
static Oid	plans_code_type = InvalidOid;

/* CODE_ARRAY_TYPE is the array type of the current loyalty.coupon_code. */
static Oid
InsertMapType(Oid argtype)
{
	return argtype == CODE_ARRAY_TYPE ? get_array_type(plans_code_type) : argtype;
}

static LoyaltyPlanCatalog insert_catalog = {
	"generate_codes", InsertPlanDefs, NINSERTPLANS, 0, InsertMapType,
	insert_plans, 0
};

/*
 * The kept insert statements are for one coupon_code type: prepared again
 * if the type changed (the extension was created again).
 */
static void
PrepareInserts(Oid code_type)
{
	if (plans_code_type == code_type)
		return;
	LoyaltyPlanReset(&insert_catalog);
	plans_code_type = code_type;
}

/*
 * Insert a batch with a plain INSERT in a subtransaction.  Returns false,
 * having rolled the subtransaction back, if a code was already stored (or
 * twice in the batch); any other error is raised.  When collisions are
 * improbable this saves the second index probe per row that ON CONFLICT
 * costs; when one happens, the caller inserts the batch again with ON
 * CONFLICT DO NOTHING.
 */
static bool
TryPlainInsert(SPIPlanPtr plan, Datum *values)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "generate_codes insert failed");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode != ERRCODE_UNIQUE_VIOLATION)
			ReThrowError(edata);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Check that a campaign exists (22023 otherwise). */
static void
RequireCampaign(int64 campaign_id)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(campaign_id)};

	if (SPI_execute_with_args("SELECT 1 FROM loyalty.campaign WHERE campaign_id = $1",
							  1, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "campaign lookup failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("campaign " INT64_FORMAT " does not exist", campaign_id)));
}

/*
 * About how many codes are stored (the planner's estimate), to judge the
 * odds that a new random code collides with one of them.
 */
static double
StoredCodesEstimate(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT greatest(c.reltuples, 0)::pg_catalog.float8"
					" FROM pg_catalog.pg_class c"
					" WHERE c.oid = 'loyalty.coupon'::pg_catalog.regclass",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the size of loyalty.coupon");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetFloat8(d);
}

/*
 * Insert one batch of pending codes: plainly when optimistic (see
 * TryPlainInsert), else, or when that meets a duplicate, skipping the codes
 * that are already stored.  Marks the stored ones done and returns
 * how many were stored.
 */
static int64
InsertBatch(PendingCode *batch, int n, char **customers, int64 campaign_id,
			TimestampTz now, Oid code_type, int16 typlen, bool typbyval,
			char typalign, bool optimistic)
{
	Datum	   *codes = palloc(sizeof(Datum) * n);
	Datum		values[4];
	int			i;
	int64		stored;

	for (i = 0; i < n; i++)
		codes[i] = PointerGetDatum(batch[i].code);
	values[0] = PointerGetDatum(construct_array(codes, n, code_type, typlen,
												typbyval, typalign));
	values[1] = Int64GetDatum(campaign_id);
	values[2] = TimestampTzGetDatum(now);
	if (customers != NULL)
	{
		Datum	   *cust = palloc(sizeof(Datum) * n);

		for (i = 0; i < n; i++)
			cust[i] = CStringGetTextDatum(customers[batch[i].customer]);
		values[3] = PointerGetDatum(construct_array(cust, n, TEXTOID, -1,
													false, TYPALIGN_INT));
	}

	if (optimistic &&
		TryPlainInsert(LoyaltyPlanGet(&insert_catalog, customers == NULL ? P_PLAIN_UNBOUND : P_PLAIN_BOUND),
					   values))
	{
		for (i = 0; i < n; i++)
			batch[i].done = true;
		return n;
	}

	if (customers == NULL)
	{
		if (SPI_execute_plan(LoyaltyPlanGet(&insert_catalog, P_INSERT_UNBOUND), values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "generate_codes insert failed");
		stored = (int64) SPI_processed;
		/* which ones failed does not matter: regenerate that many */
		for (i = 0; i < n; i++)
			batch[i].done = i < stored;
	}
	else
	{
		Returned   *ret;
		uint64		k;

		if (SPI_execute_plan(LoyaltyPlanGet(&insert_catalog, P_INSERT_BOUND), values, NULL, false, 0) != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "generate_codes insert failed");
		stored = (int64) SPI_processed;
		ret = palloc(sizeof(Returned) * Max(stored, 1));
		for (k = 0; k < SPI_processed; k++)
		{
			bool		isnull;

			ret[k].code = DatumGetCouponCodeP(LoyaltyColDatum(LoyaltySpiRow(k), 1, &isnull));
			ret[k].customer = LoyaltyColText(LoyaltySpiRow(k), 2);
			ret[k].used = false;
		}
		qsort(ret, stored, sizeof(Returned), ReturnedCmp);
		/* a batch entry is stored iff a returned row has its code+customer */
		for (i = 0; i < n; i++)
		{
			Returned	key;
			Returned   *hit;

			key.code = batch[i].code;
			key.customer = customers[batch[i].customer];
			hit = bsearch(&key, ret, stored, sizeof(Returned), ReturnedCmp);
			batch[i].done = hit != NULL && !hit->used;
			if (hit != NULL)
				hit->used = true;
		}
		SPI_freetuptable(SPI_tuptable);
	}
	return stored;
}

PG_FUNCTION_INFO_V1(coupon_generate_codes);

/*
 * loyalty.generate_codes(campaign_id bigint, count integer, pattern text,
 * customer_ids text[] DEFAULT NULL) RETURNS bigint: create count
 * single-use codes from the pattern for the campaign, each bound to the
 * customer at the same position of customer_ids when given (then count
 * must equal its length).  Returns the number created, always count.
 * count is at most COUPON_MAX_CODES_PER_CALL.
 */
Datum
coupon_generate_codes(PG_FUNCTION_ARGS)
{
	int64		campaign_id;
	int32		count;
	text	   *pattern_text;
	char	   *pattern_str;
	CouponPattern pattern;
	CouponCodeError err;
	char	  **customers = NULL;
	PendingCode *pending;
	int		   *queue = NULL;
	int		   *next_queue = NULL;
	int			nqueue;
	int			round;
	int64		created = 0;
	TimestampTz now = GetCurrentTimestamp();
	Oid			code_type;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	uint8	   *random;
	double		stored_before;
	double		space;
	int			i;

	LoyaltyCheckNotNull(PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2),
						"campaign_id, count and pattern");
	campaign_id = PG_GETARG_INT64(0);
	count = PG_GETARG_INT32(1);
	pattern_text = PG_GETARG_TEXT_PP(2);
	pattern_str = text_to_cstring(pattern_text);
	if (count < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("count must not be negative")));
	if (count > COUPON_MAX_CODES_PER_CALL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("count %d is above the limit of %d codes per call",
						count, COUPON_MAX_CODES_PER_CALL),
				 errdetail("One call of generate_codes makes at most %d codes, in one transaction.",
						   COUPON_MAX_CODES_PER_CALL),
				 errhint("Call generate_codes in batches of at most %d codes, e.g. one transaction per batch.",
						 COUPON_MAX_CODES_PER_CALL)));
	if (!CouponPatternParse(VARDATA_ANY(pattern_text),
							VARSIZE_ANY_EXHDR(pattern_text), &pattern, &err) ||
		!CouponPatternAllowsCount(&pattern, count, &err))
		CouponPatternReportError(pattern_str, &err);

	if (!PG_ARGISNULL(3))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(3);
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("customer_ids must be a one-dimensional array")));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &nulls, &n);
		if (n != count)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("count (%d) differs from the number of customer_ids (%d)",
							count, n),
					 errdetail("With customer_ids, one code is made for each customer.")));
		customers = palloc(sizeof(char *) * Max(n, 1));
		for (i = 0; i < n; i++)
		{
			LoyaltyCheckNoNulls(nulls[i], "customer_ids");
			customers[i] = CouponIdentifier("customer_id",
											DatumGetTextPP(elems[i]),
											COUPON_MAX_ID_LEN);
		}
	}
	if (count == 0)
		PG_RETURN_INT64(0);

	SPI_connect();
	CouponStoreBegin(false);
	RequireCampaign(campaign_id);
	code_type = CouponCodeTypeOid();
	get_typlenbyvalalign(code_type, &typlen, &typbyval, &typalign);
	PrepareInserts(code_type);
	stored_before = StoredCodesEstimate();
	space = pow((double) COUPON_CODE_RADIX, pattern.nrandom);

	/*
	 * queue: the customers (indices) still waiting for a code; unbound codes
	 * only need a number.  Codes that collided go to the next round.
	 */
	nqueue = count;
	if (customers != NULL)
	{
		queue = palloc(sizeof(int) * count);
		next_queue = palloc(sizeof(int) * count);
		for (i = 0; i < count; i++)
			queue[i] = i;
	}
	pending = palloc(sizeof(PendingCode) * Min(count, GENERATE_BATCH));
	random = palloc(Max(pattern.nrandom, 1) * (Size) Min(count, GENERATE_BATCH));
	for (round = 0; nqueue > 0; round++)
	{
		int			nnext = 0;
		int			pos = 0;

		if (round >= GENERATE_ROUNDS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("could not generate %d unique codes from pattern \"%s\"",
							count, pattern_str),
					 errdetail("%d codes still collided with stored codes after %d rounds.",
							   nqueue, GENERATE_ROUNDS),
					 errhint("Use a pattern with more random positions.")));
		while (pos < nqueue)
		{
			int			n = Min(nqueue - pos, GENERATE_BATCH);
			MemoryContext batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
															"generate_codes batch",
															ALLOCSET_DEFAULT_SIZES);
			MemoryContext old = MemoryContextSwitchTo(batch_cxt);
			int64		stored;
			bool		optimistic;

			CouponRandomBytes(random, (size_t) n * pattern.nrandom);
			for (i = 0; i < n; i++)
			{
				CouponCodeValue v;

				CouponCodeFromRandom(&pattern, random + (size_t) i * pattern.nrandom, &v);
				pending[i].code = CouponCodeFromValue(&v);
				pending[i].customer = queue != NULL ? queue[pos + i] : -1;
				pending[i].done = false;
			}
			/* a plain insert when a collision is improbable (< 1%) */
			optimistic = round == 0 &&
				(double) n * (stored_before + (double) created + n) / space < 0.01;
			stored = InsertBatch(pending, n, customers, campaign_id, now,
								 code_type, typlen, typbyval, typalign,
								 optimistic);
			created += stored;
			if (queue != NULL)
			{
				for (i = 0; i < n; i++)
					if (!pending[i].done)
						next_queue[nnext++] = pending[i].customer;
			}
			else
				nnext += n - (int) stored;
			MemoryContextSwitchTo(old);
			MemoryContextDelete(batch_cxt);
			pos += n;
		}
		if (queue != NULL)
		{
			int		   *t = queue;

			queue = next_queue;
			next_queue = t;
		}
		nqueue = nnext;
	}
	SPI_finish();
	PG_RETURN_INT64(created);
}

PG_FUNCTION_INFO_V1(coupon_campaign_gate);

/*
 * loyalty._campaign_gate(campaign_id bigint): take the campaign's gate
 * exclusively until the end of the transaction.  The admin functions call
 * it before changing a campaign, so a change waits for the redemptions in
 * flight and every later redemption sees it (pause is effective at once).
 */
Datum
coupon_campaign_gate(PG_FUNCTION_ARGS)
{
	SPI_connect();
	CouponStoreBegin(false);
	CouponGateExclusive(PG_GETARG_INT64(0));
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(coupon_campaign_active_uses);

/*
 * loyalty._campaign_active_uses(campaign_id bigint) RETURNS bigint: the
 * campaign's active redemptions counted with the newest snapshot, to seed
 * the cap counter when a total cap is set (under the exclusive gate).
 */
Datum
coupon_campaign_active_uses(PG_FUNCTION_ARGS)
{
	int64		uses;

	SPI_connect();
	CouponStoreBegin(false);
	uses = CouponCampaignActiveUses(PG_GETARG_INT64(0));
	SPI_finish();
	PG_RETURN_INT64(uses);
}

PG_FUNCTION_INFO_V1(coupon_cap_units);

/*
 * loyalty._coupon_cap_units(campaign_id bigint, customer_id text,
 * at timestamptz) RETURNS bigint: the units of the campaign's total cap
 * (customer_id NULL) or of the customer's per-customer cap in use, under
 * the customer lock when a customer is given (see CouponCapUnits).  Lets
 * exchange_points sell a code only for a free unit without reading the
 * coupon tables' rules itself.
 */
Datum
coupon_cap_units(PG_FUNCTION_ARGS)
{
	int64		units;
	char	   *customer_id = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));

	LoyaltyCheckNotNull(PG_ARGISNULL(0) || PG_ARGISNULL(2), "campaign_id and at");
	SPI_connect();
	CouponStoreBegin(false);
	units = CouponCapUnits(PG_GETARG_INT64(0), customer_id, PG_GETARG_TIMESTAMPTZ(2));
	SPI_finish();
	PG_RETURN_INT64(units);
}

PG_FUNCTION_INFO_V1(coupon_campaign_changed);

/*
 * Trigger loyalty._campaign_changed(): a campaign, a rule or a rule kind
 * changed, so every backend's campaign cache must be flushed.  Sends a
 * relcache invalidation of loyalty.campaign at commit (see the campaign
 * cache in coupon_store.c); statement level, so a bulk change costs one.
 */
Datum
coupon_campaign_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Oid			campaign;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "loyalty._campaign_changed() must be called as a trigger");
	campaign = get_relname_relid("campaign",
								 RelationGetNamespace(trigdata->tg_relation));
	if (OidIsValid(campaign))
		CacheInvalidateRelcacheByRelid(campaign);
	return PointerGetDatum(NULL);
}
