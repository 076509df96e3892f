/*
 * points_api.c
 *		The points calls under the consistent API names of 0.3.0
 *		(doc/api.md): points_earn, points_spend, points_earn_for_order,
 *		points_earn_for_action, points_reverse, points_adjust.
 *
 * Each takes customer_id first, then the caller's reference, then what is
 * acted on (points, amount, action), then the optional arguments with
 * defaults, to be passed by name; the first of those is always at, so a
 * stray positional time lands where a future time is refused (22023 "at
 * must not lie in the future") instead of in a reason.  One signature per
 * name.
 *
 * No second implementation: each entry refuses a NULL among its required
 * arguments in its own order (so a call missing several names the first one
 * of the new signature) and calls the implementation of the old name
 * (points.c, points_rules.c, points_reverse.c) with the arguments
 * rearranged (loyalty_call.h).  The implementations name arguments in
 * errors by name (customer_id, reference, points, amount, action, reason,
 * at, ...), which the new signatures keep, never by position; their request
 * fingerprints do not depend on the order either, so a call under the old
 * name and a repeat under the new one are the same request.
 *
 * points_exchange and points_earn_coupon_bonus wrap PL/pgSQL functions and
 * are PL/pgSQL themselves (points_api.sql).
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "loyalty_call.h"
#include "points.h"

/* the implementations of the old names */
extern PGDLLEXPORT Datum points_earn(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum points_spend(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum points_earn_for_order(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum points_earn_for_action(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum points_reverse(PG_FUNCTION_ARGS);
extern PGDLLEXPORT Datum points_adjust(PG_FUNCTION_ARGS);

/*
 * earn_points(customer_id, points, reference, reason, pending_until,
 * expires_at, qualifying, at)
 */
static const LoyaltyCallMap earn_map = {points_earn, 8, {0, 2, 1, 4, 5, 6, 7, 3}};

/* spend_points(customer_id, points, reference, at) */
static const LoyaltyCallMap spend_map = {points_spend, 4, {0, 2, 1, 3}};

/* earn_for_order(customer_id, reference, amount, currency, at) */
static const LoyaltyCallMap order_map = {points_earn_for_order, 5, {0, 1, 2, 4, 3}};

/* earn_for_action(customer_id, action, reference, at) */
static const LoyaltyCallMap action_map = {points_earn_for_action, 4, {0, 2, 1, 3}};

/* reverse_points(reference, customer_id, at) */
static const LoyaltyCallMap reverse_map = {points_reverse, 3, {1, 0, 2}};

/* adjust_points(customer_id, points, reference, reason, expires_at, at) */
static const LoyaltyCallMap adjust_map = {points_adjust, 6, {0, 2, 1, 3, 5, 4}};

PG_FUNCTION_INFO_V1(points_api_earn);

/*
 * loyalty.points_earn(customer_id, reference, points, at, reason,
 * pending_until, expires_at, qualifying): earn_points.
 */
Datum
points_api_earn(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "reference", "points"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &earn_map);
}

PG_FUNCTION_INFO_V1(points_api_spend);

/* loyalty.points_spend(customer_id, reference, points, at): spend_points. */
Datum
points_api_spend(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "reference", "points"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &spend_map);
}

PG_FUNCTION_INFO_V1(points_api_earn_for_order);

/*
 * loyalty.points_earn_for_order(customer_id, reference, amount, at,
 * currency): earn_for_order.
 */
Datum
points_api_earn_for_order(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "reference", "amount"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &order_map);
}

PG_FUNCTION_INFO_V1(points_api_earn_for_action);

/*
 * loyalty.points_earn_for_action(customer_id, reference, action, at):
 * earn_for_action.  The refusal of action 'purchase' is made here, so that
 * it names the functions of the new API.
 */
Datum
points_api_earn_for_action(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "reference", "action"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	if (strcmp(text_to_cstring(PG_GETARG_TEXT_PP(2)), "purchase") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("purchases earn through loyalty.points_earn_for_order()"),
				 errdetail("points_earn_for_action() takes other actions: review, referral, signup, birthday, ...")));
	return LoyaltyCallPermuted(fcinfo, &action_map);
}

PG_FUNCTION_INFO_V1(points_api_reverse);

/*
 * loyalty.points_reverse(customer_id, reference, at): reverse_points, with
 * the customer required (reverse_points may look the owner of the reference
 * up; here a reference of another customer is LP003, as reverse_points says
 * when given a customer).
 */
Datum
points_api_reverse(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "reference"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &reverse_map);
}

PG_FUNCTION_INFO_V1(points_api_adjust);

/*
 * loyalty.points_adjust(customer_id, reference, points, reason, at,
 * expires_at): adjust_points.
 */
Datum
points_api_adjust(PG_FUNCTION_ARGS)
{
	static const char *const names[] = {"customer_id", "reference", "points", "reason"};

	LoyaltyRequireArgs(fcinfo, lengthof(names), names);
	return LoyaltyCallPermuted(fcinfo, &adjust_map);
}
