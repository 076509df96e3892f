/*
 * coupon_api.c
 *		The coupon lifecycle under the consistent API names of 0.3.0
 *		(doc/api.md): coupon_validate, coupon_reserve, coupon_redeem,
 *		coupon_rollback.
 *
 * Each takes customer_id first, then the caller's order_ref (where the call
 * needs one), then the code, then the order context; options follow with
 * defaults, to be passed by name.  One signature per name: the order context
 * is jsonb only ({"amount": 120.00} for a shop without item data, which
 * coupon_context.c reads exactly as the numeric overloads of the old names
 * read their amount: same order fingerprint, same discount).
 *
 * No second implementation: each entry checks its required arguments in its
 * own order (so a call missing several names the first one of the new
 * signature) and calls the implementation of the old name (coupon.c) with
 * the arguments rearranged (loyalty_call.h).  The implementations name
 * arguments in errors by name (customer_id, order_ref, code, order_context,
 * ttl), which the new signatures keep, never by position.
 *
 * coupon_rollback takes the customer too, unlike rollback_redemption: the
 * order row it locks first anyway carries the customer, so checking that
 * the order is the customer's costs one primary-key read under that same
 * lock (taken here, before the implementation takes it again).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"

#include "coupon.h"
#include "loyalty_call.h"
#include "loyalty_spi.h"

/* the implementations of the old names (coupon.c) */
extern PGDLLEXPORT Datum coupon_validate(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum coupon_reserve(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum coupon_redeem(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum coupon_rollback(PG_FUNCTION_ARGS);

/* validate_coupon(code, customer_id, order_context, order_ref) */
static const LoyaltyCallMap validate_map = {coupon_validate, 4, {1, 0, 2, 3}};

/* reserve_coupon(code, customer_id, order_ref, order_context, ttl) */
static const LoyaltyCallMap reserve_map = {coupon_reserve, 5, {2, 0, 1, 3, 4}};

/* redeem_coupon(code, customer_id, order_ref, order_context) */
static const LoyaltyCallMap redeem_map = {coupon_redeem, 4, {2, 0, 1, 3}};

/* rollback_redemption(order_ref) */
static const LoyaltyCallMap rollback_map = {coupon_rollback, 1, {1}};

/* The order's owner (owners are never updated or deleted). */
static const LoyaltyPlanDef ApiPlanDefs[1] = {
	{"SELECT customer_id FROM loyalty.coupon_order_owner WHERE order_ref = $1",
	1, {TEXTOID}},
};

static SPIPlanPtr api_plan_slots[1];

static LoyaltyPlanCatalog api_plans = {
	"coupon api", ApiPlanDefs, 1, CURSOR_OPT_GENERIC_PLAN, NULL, api_plan_slots, 0
};

PG_FUNCTION_INFO_V1(coupon_api_validate);

/*
 * loyalty.coupon_validate(customer_id text, code text, order_context jsonb,
 * order_ref text DEFAULT NULL, OUT valid boolean, OUT reason text,
 * OUT discount numeric): validate_coupon.
 */
Datum
coupon_api_validate(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "code", "order_context"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &validate_map);
}

PG_FUNCTION_INFO_V1(coupon_api_reserve);

/*
 * loyalty.coupon_reserve(customer_id text, order_ref text, code text,
 * order_context jsonb, ttl interval DEFAULT '15 minutes', OUT discount
 * numeric, OUT expires_at timestamptz): reserve_coupon.
 */
Datum
coupon_api_reserve(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "order_ref", "code",
	"order_context", "ttl"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &reserve_map);
}

PG_FUNCTION_INFO_V1(coupon_api_redeem);

/*
 * loyalty.coupon_redeem(customer_id text, order_ref text, code text,
 * order_context jsonb) RETURNS numeric: redeem_coupon.
 */
Datum
coupon_api_redeem(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "order_ref", "code",
	"order_context"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &redeem_map);
}

PG_FUNCTION_INFO_V1(coupon_api_rollback);

/*
 * loyalty.coupon_rollback(customer_id text, order_ref text) RETURNS boolean:
 * rollback_redemption of an order of this customer.  An order of another
 * customer is order_conflict (LY020), as a reserve or redeem naming it with
 * another customer is; an unknown order is false, as for
 * rollback_redemption.  The owner is read from loyalty.coupon_order_owner,
 * whose rows never change, so the read stays true until the transaction
 * ends; rollback_redemption then takes its locks in the usual order.
 */
Datum
coupon_api_rollback(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "order_ref"};
	char	   *customer_id;
	char	   *order_ref;
	char	   *owner = NULL;
	Datum		key[1];
	bool		found;

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	customer_id = CouponIdentifier("customer_id", PG_GETARG_TEXT_PP(0),
								   COUPON_MAX_ID_LEN);
	order_ref = CouponIdentifier("order_ref", PG_GETARG_TEXT_PP(1),
								 LOYALTY_MAX_KEY_BYTES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	key[0] = CStringGetTextDatum(order_ref);
	LoyaltyExec(LoyaltyPlanGet(&api_plans, 0), key, NULL, false, SPI_OK_SELECT);
	found = SPI_processed > 0;
	if (found)
		owner = LoyaltyColText(LoyaltySpiRow(0), 1);
	if (found && strcmp(owner, customer_id) != 0)
		ereport(ERROR,
				(errcode(CouponReasonSqlstate(COUPON_ORDER_CONFLICT)),
				 errmsg("order \"%s\" cannot be rolled back: %s", order_ref,
						CouponReasonToken(COUPON_ORDER_CONFLICT)),
				 errdetail("The order reference belongs to another customer.")));
	SPI_finish();

	if (!found)
		PG_RETURN_BOOL(false);
	return LoyaltyCallPermuted(fcinfo, &rollback_map);
}
