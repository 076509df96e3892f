/*
 * coupon.c
 *		The coupon lifecycle as SQL functions: validate (read-only), reserve
 *		(hold one unit of every cap for a checkout), redeem (atomic,
 *		idempotent on the order), roll back (cancel / refund), and
 *		coupon_update_order (an open checkout's cart changed); the other
 *		checkout functions (coupon_release, coupon_order_lines,
 *		coupon_return_lines) are SQL in coupon.sql.
 *
 * An order_ref identifies one order of the app.  Each (order_ref, code) is
 * at most one redemption; redeeming the same pair again returns the first
 * discount.  Several codes on one order_ref stack, under the campaigns'
 * stacking rules.  Every call for one order_ref must carry the same customer
 * and the same order context (compared by fingerprint), else order_conflict.
 * Rolling an order back reverses all its redemptions, releases its
 * reservations and closes the order_ref for good.
 *
 * The functions run SECURITY DEFINER (the app role cannot write the tables)
 * and inside the caller's transaction: if the caller rolls back, nothing
 * happened.  Failures raise SQLSTATE LY0nn with the reason token in the
 * message, a JSON object in DETAIL and a sentence in HINT (RaiseReason,
 * doc/errors.md); validate reports the same reasons as data.
 */
#include "coupon.h"

#include "access/htup_details.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "loyalty_args.h"

/* Stable reason tokens, their SQLSTATEs and the detail shown with them. */
static const struct
{
	const char *token;
	const char *sqlstate;
	const char *detail;
}			CouponReasons[COUPON_NREASONS] =
{
	[COUPON_OK] = {"ok", "00000", ""},
	[COUPON_INVALID_CODE] = {"invalid_code", "LY001",
	"The text is not a valid coupon code; a mistyped generated code fails its check characters."},
	[COUPON_NOT_FOUND] = {"not_found", "LY002", "No coupon has this code."},
	[COUPON_WRONG_CUSTOMER] = {"wrong_customer", "LY003",
	"The code is bound to another customer."},
	[COUPON_CURRENCY_MISMATCH] = {"currency_mismatch", "LY004",
	"The order's currency differs from the campaign's or from another coupon's on this order."},
	[COUPON_EXPIRED] = {"expired", "LY005", "The campaign has ended."},
	[COUPON_NOT_STARTED] = {"not_started", "LY006",
	"The campaign has not started yet."},
	[COUPON_PAUSED] = {"paused", "LY007", "The campaign is paused."},
	[COUPON_CONFIG_ERROR] = {"config_error", "LY016",
	"An eligibility rule of the campaign names configuration that does not exist (an unknown tier or segment); an admin must correct the campaign."},
	[COUPON_NOT_ELIGIBLE] = {"not_eligible", "LY008",
	"The customer or the order does not meet the campaign's eligibility rules."},
	[COUPON_MIN_AMOUNT] = {"min_amount", "LY009",
	"The order amount is below the campaign's minimum."},
	[COUPON_NO_ELIGIBLE_ITEMS] = {"no_eligible_items", "LY010",
	"No item of the order qualifies for the campaign."},
	[COUPON_NOT_STACKABLE] = {"not_stackable", "LY011",
	"The coupon cannot be combined with the coupons already on this order."},
	[COUPON_NO_DISCOUNT] = {"no_discount", "LY015",
	"The coupon would take nothing off this order (free shipping without a shipping cost, an order already fully discounted, or a discount that rounds to zero)."},
	[COUPON_EXHAUSTED] = {"exhausted", "LY012",
	"The code or its campaign has no uses left."},
	[COUPON_RESERVED] = {"reserved", "LY013",
	"The remaining uses are held by reservations of other checkouts."},
	[COUPON_BUDGET_EXHAUSTED] = {"budget_exhausted", "LY017",
	"The campaign's discount budget has less left than this discount."},
	[COUPON_PERIOD_LIMIT] = {"period_limit", "LY018",
	"The campaign has no redemptions left in the current day, week or month."},
	[COUPON_CUSTOMER_LIMIT] = {"customer_limit", "LY014",
	"The customer has used this campaign as often as allowed."},
	[COUPON_ORDER_CONFLICT] = {"order_conflict", "LY020",
	"This order reference was used with another customer or another order context."},
	[COUPON_ORDER_ROLLED_BACK] = {"order_rolled_back", "LY021",
	"This order was rolled back; its reference takes no coupons any more."},
	[COUPON_ALREADY_REDEEMED] = {"already_redeemed", "LY022",
	"The coupon is already redeemed for this order."},
	[COUPON_ORDER_REDEEMED] = {"order_redeemed", "LY023",
	"A coupon of this order is redeemed, so its order context no longer changes; take discounts back with coupon_return_lines or rollback_redemption."},
};

/* The stable token of a reason ("exhausted", ...). */
const char *
CouponReasonToken(CouponReason r)
{
	return CouponReasons[r].token;
}

/* The SQLSTATE a failed redeem / reserve raises for a reason. */
int
CouponReasonSqlstate(CouponReason r)
{
	const char *s = CouponReasons[r].sqlstate;

	return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

/* The sentence shown as errdetail for a reason. */
const char *
CouponReasonDetail(CouponReason r)
{
	return CouponReasons[r].detail;
}

/* Everything one call works with. */
typedef struct CallState
{
	const char *verb;			/* "redeemed", "reserved" (messages) */
	char	   *customer_id;
	char	   *order_ref;		/* NULL: validate without an order */
	OrderContext ctx;
	TimestampTz now;
	Datum		code;
	char	   *code_input;		/* the code argument as given */
	CouponCodeError code_error; /* why it is not a code (invalid_code) */
	char	   *code_display;	/* as printed: the stored code once found */
	Coupon		cp;
	Campaign	cm;
	CouponOrder order;
	Numeric		discount;
	bool		on_shipping;
	Datum		lines;			/* numeric[] per order line, or 0 */
	CouponUsage usage;			/* as counted under the locks */
} CallState;

/*
 * The machine-readable DETAIL of a failure: one JSON object, keys in a fixed
 * order (doc/errors.md): reason, code (as printed, null when the text is not
 * a code), order_ref; for invalid_code also code_error (the
 * coupon_code_check token) and, where the parser located the problem, typo
 * and position (position2 for a swap), counted as the type's own 22P02
 * counts them.
 */
static char *
ReasonDetail(const CallState *st, CouponReason r)
{
	StringInfoData d;

	initStringInfo(&d);
	appendStringInfoString(&d, "{\"reason\": ");
	escape_json(&d, CouponReasonToken(r));
	appendStringInfoString(&d, ", \"code\": ");
	if (r == COUPON_INVALID_CODE || st->code_display == NULL)
		appendStringInfoString(&d, "null");
	else
		escape_json(&d, st->code_display);
	appendStringInfoString(&d, ", \"order_ref\": ");
	if (st->order_ref == NULL)
		appendStringInfoString(&d, "null");
	else
		escape_json(&d, st->order_ref);
	if (r == COUPON_INVALID_CODE && st->code_input != NULL)
	{
		const CouponCodeError *e = &st->code_error;

		appendStringInfoString(&d, ", \"code_error\": ");
		escape_json(&d, CouponCodeReason(e->status));
		if (e->status == COUPON_CODE_ERR_CHECK)
		{
			static const char *const typos[] = {
				[COUPON_TYPO_NONE] = "wrong",
				[COUPON_TYPO_WRONG] = "wrong",
				[COUPON_TYPO_SWAPPED] = "swapped",
				[COUPON_TYPO_MISSING] = "missing",
				[COUPON_TYPO_EXTRA] = "extra",
			};

			appendStringInfo(&d, ", \"typo\": \"%s\", \"position\": %d",
							 typos[e->typo], e->position);
			if (e->typo == COUPON_TYPO_SWAPPED)
				appendStringInfo(&d, ", \"position2\": %d", e->position2);
		}
		else if (e->status == COUPON_CODE_ERR_BAD_CHAR)
			appendStringInfo(&d, ", \"position\": %d", e->position);
	}
	appendStringInfoChar(&d, '}');
	return d.data;
}

/*
 * The sentence of a failure (HINT): the reason's, or for a mistyped code
 * the typo as the coupon_code type's own 22P02 states it.
 */
static char *
ReasonSentence(const CallState *st, CouponReason r)
{
	if (r == COUPON_INVALID_CODE && st->code_input != NULL &&
		st->code_error.status == COUPON_CODE_ERR_CHECK)
	{
		char		typo[128];

		CouponCodeTypoText(&st->code_error, typo, sizeof(typo));
		return psprintf("The check characters do not match: %s (positions count letters and digits only). The code was mistyped; it was not looked up.",
						typo);
	}
	if (r == COUPON_INVALID_CODE && st->code_input != NULL &&
		st->code_error.status == COUPON_CODE_ERR_BAD_CHAR)
		return psprintf("Character %d is not a letter, a digit or a separator.",
						st->code_error.position);
	return pstrdup(CouponReasonDetail(r));
}

/*
 * Raise the documented error of a reason: SQLSTATE LY0nn, the token in the
 * message with the code as printed (the coupon_code output of the stored
 * code once it is found), the JSON object of ReasonDetail as DETAIL, the
 * sentence as HINT.
 */
pg_noreturn static void
RaiseReason(const CallState *st, CouponReason r)
{
	if (st->code_display != NULL && r != COUPON_INVALID_CODE)
		ereport(ERROR,
				(errcode(CouponReasonSqlstate(r)),
				 errmsg("coupon %s cannot be %s: %s", st->code_display,
						st->verb, CouponReasonToken(r)),
				 errdetail("%s", ReasonDetail(st, r)),
				 errhint("%s", ReasonSentence(st, r))));
	ereport(ERROR,
			(errcode(CouponReasonSqlstate(r)),
			 errmsg("coupon cannot be %s: %s", st->verb, CouponReasonToken(r)),
			 errdetail("%s", ReasonDetail(st, r)),
			 errhint("%s", ReasonSentence(st, r))));
}

/*
 * Parse the code argument with the coupon_code rules (normalisation, check
 * characters).  A bad code is a reason (invalid_code), not an input error:
 * the argument is text, typed by a customer.
 */
static bool
ParseCode(text *t, CallState *st)
{
	CouponCodeValue v;

	st->code_input = text_to_cstring(t);
	if (!CouponCodeParse(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &v,
						 &st->code_error))
		return false;
	st->code = PointerGetDatum(CouponCodeFromValue(&v));
	st->code_display = pstrdup(v.display);
	return true;
}

/*
 * The checks that need no lock, in the documented order: bound customer,
 * currency, dates, pause, eligibility rules, minimum amount, eligible items
 * and the discount, stacking with the order's other coupons, and a discount
 * above zero (a coupon that takes nothing off is not used, so it never
 * takes a unit of a cap).
 */
static CouponReason
CheckCoupon(CallState *st)
{
	const Campaign *cm = &st->cm;
	CouponReason r;

	if (st->cp.customer_id != NULL &&
		strcmp(st->cp.customer_id, st->customer_id) != 0)
		return COUPON_WRONG_CUSTOMER;
	if (st->ctx.has_currency && strcmp(st->ctx.currency, cm->currency) != 0)
		return COUPON_CURRENCY_MISMATCH;
	if (cm->has_ends_on)
	{
		if (st->now >= CouponDayEnd(cm->ends_on))
			return COUPON_EXPIRED;
	}
	else if (cm->has_ends_at && st->now >= cm->ends_at)
		return COUPON_EXPIRED;
	if (cm->has_starts_at && st->now < cm->starts_at)
		return COUPON_NOT_STARTED;
	if (cm->paused)
		return COUPON_PAUSED;
	if (cm->nrules > 0 &&
		(r = CouponRulesAllow(cm, st->customer_id, &st->ctx)) != COUPON_OK)
		return r;
	if (cm->min_order_amount != NULL &&
		LoyaltyNumericCmp(st->ctx.amount, cm->min_order_amount) < 0)
		return COUPON_MIN_AMOUNT;
	r = CouponComputeDiscount(cm, &st->ctx, &st->discount, &st->on_shipping);
	if (r != COUPON_OK)
		return r;
	r = CouponApplyStacking(cm, &st->ctx, &st->order, st->cp.id,
							&st->discount, st->on_shipping);
	if (r != COUPON_OK)
		return r;
	if (LoyaltyNumericCmp(st->discount, LoyaltyNumericZero()) <= 0)
		return COUPON_NO_DISCOUNT;
	return COUPON_OK;
}

/*
 * The budget of a budgeted campaign (doc/budgets.md), given the usage of
 * other orders: the money budget (budget_exhausted when active redemptions
 * leave less than this discount, reserved when live reservations of other
 * checkouts hold what is missing), then the period cap (period_limit, or
 * reserved likewise).
 */
static CouponReason
CheckBudget(const CallState *st, const CouponUsage *u)
{
	const Campaign *cm = &st->cm;

	if (cm->discount_budget != NULL)
	{
		Numeric		after = LoyaltyNumericAdd(u->budget_used, st->discount);

		if (LoyaltyNumericCmp(after, cm->discount_budget) > 0)
			return COUPON_BUDGET_EXHAUSTED;
		if (LoyaltyNumericCmp(LoyaltyNumericAdd(after, u->budget_held),
							  cm->discount_budget) > 0)
			return COUPON_RESERVED;
	}
	if (cm->period != NULL)
	{
		if (u->period_uses >= cm->period_cap)
			return COUPON_PERIOD_LIMIT;
		if (u->period_uses + u->period_holds >= cm->period_cap)
			return COUPON_RESERVED;
	}
	return COUPON_OK;
}

/*
 * The caps, given the usage of other orders: the code's own cap, the
 * campaign's total cap, the per-customer cap.  "exhausted" when redemptions
 * and unused codes sold for points (each holds the unit it was sold for)
 * use the cap up, "reserved" when unexpired reservations of other
 * checkouts hold the rest.
 */
static CouponReason
CheckCaps(const CallState *st, int64 campaign_uses, const CouponUsage *u)
{
	const Coupon *cp = &st->cp;
	const Campaign *cm = &st->cm;

	if (cp->has_max_uses)
	{
		if (cp->uses >= cp->max_uses)
			return COUPON_EXHAUSTED;
		if (cp->uses + u->coupon_holds >= cp->max_uses)
			return COUPON_RESERVED;
	}
	if (cm->has_total_cap)
	{
		if (campaign_uses + u->campaign_sold >= cm->total_cap)
			return COUPON_EXHAUSTED;
		if (campaign_uses + u->campaign_sold + u->campaign_holds >= cm->total_cap)
			return COUPON_RESERVED;
	}
	if (cm->has_budget)
	{
		CouponReason r = CheckBudget(st, u);

		if (r != COUPON_OK)
			return r;
	}
	if (cm->per_customer_cap > 0 &&
		u->customer_uses + u->customer_sold + u->customer_holds >= cm->per_customer_cap)
		return COUPON_CUSTOMER_LIMIT;
	return COUPON_OK;
}

/* Whether a stored order matches this call's customer and context. */
static bool
OrderMatches(const CallState *st)
{
	return strcmp(st->order.customer_id, st->customer_id) == 0 &&
		st->order.context_hash == st->ctx.hash;
}

/* The order's coupon with this code, if it is already redeemed. */
static const CouponAttached *
OwnRedemption(const CallState *st)
{
	int			i;

	for (i = 0; i < st->order.nattached; i++)
		if (st->order.attached[i].coupon_id == st->cp.id &&
			st->order.attached[i].redeemed)
			return &st->order.attached[i];
	return NULL;
}

/* Copy a numeric out of the SPI memory before SPI_finish. */
static Numeric
CopyNumeric(Numeric n, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Numeric		res = DatumGetNumeric(datumCopy(NumericGetDatum(n), false, -1));

	MemoryContextSwitchTo(old);
	return res;
}

/* The discount per order line of the coupon just checked (st->lines). */
static void
SetLines(CallState *st)
{
	bool		isnull;

	st->lines = CouponLineDiscounts(&st->cm, &st->ctx, st->discount,
									st->on_shipping, &isnull);
	if (isnull)
		st->lines = (Datum) 0;
}

/* The budget part of a usage count (CouponCountBudget) into another. */
static void
CopyBudgetUsage(CouponUsage *to, const CouponUsage *from)
{
	to->budget_used = from->budget_used;
	to->budget_held = from->budget_held;
	to->period_start = from->period_start;
	to->period_uses = from->period_uses;
	to->period_holds = from->period_holds;
}

/*
 * Take the locks of steps 3-5 (gate, capped campaign row, budget row,
 * customer), read
 * the campaign as it is now, run every check and count usage under the
 * locks.  Raises the reason on failure.
 */
static void
CheckUnderLocks(CallState *st)
{
	CouponReason r;
	CouponUsage usage;
	CouponUsage budget;
	int64		campaign_uses = 0;

	CouponGateShared(st->cp.campaign_id);
	CouponReadCampaign(st->cp.campaign_id, &st->cm);
	r = CheckCoupon(st);
	if (r != COUPON_OK)
		RaiseReason(st, r);
	if (st->cm.has_total_cap)
		campaign_uses = CouponLockCampaignRow(st->cm.id);
	if (st->cm.has_budget)
		CouponCountBudget(&st->cm, st->order_ref, st->now, true, &budget);
	if (st->cm.per_customer_cap > 0)
		CouponLockCustomer(st->cm.id, st->customer_id);
	CouponCountUsage(&st->cp, &st->cm, st->customer_id, st->order_ref,
					 st->now, true, &usage);
	if (st->cm.has_budget)
		CopyBudgetUsage(&usage, &budget);
	r = CheckCaps(st, campaign_uses, &usage);
	if (r != COUPON_OK)
		RaiseReason(st, r);
	SetLines(st);
	st->usage = usage;
}

/*
 * Common start of reserve and redeem: arguments, context, code, then lock
 * order steps 1 (order) and 2 (coupon).  st->now is set by the caller.
 * Returns with SPI connected.
 */
static void
BeginWrite(FunctionCallInfo fcinfo, CallState *st, bool amount_context)
{
	text	   *code;

	LoyaltyArgNotNull(fcinfo, 0, "code");
	LoyaltyArgNotNull(fcinfo, 1, "customer_id");
	LoyaltyArgNotNull(fcinfo, 2, "order_ref");
	LoyaltyArgNotNull(fcinfo, 3, amount_context ? "amount" : "order_context");
	st->customer_id = CouponIdentifier("customer_id", PG_GETARG_TEXT_PP(1),
										COUPON_MAX_ID_LEN);
	st->order_ref = CouponIdentifier("order_ref", PG_GETARG_TEXT_PP(2),
									 LOYALTY_MAX_KEY_BYTES);
	if (amount_context)
		CouponContextFromAmount(PG_GETARG_NUMERIC(3), &st->ctx);
	else
		CouponContextFromJsonb(PG_GETARG_JSONB_P(3), &st->ctx);

	code = PG_GETARG_TEXT_PP(0);
	if (!ParseCode(code, st))
		RaiseReason(st, COUPON_INVALID_CODE);

	SPI_connect();
	CouponStoreBegin(false);
	CouponLockOrder(st->order_ref, st->customer_id, &st->ctx, st->now,
					&st->order);
	if (st->order.rolled_back)
		RaiseReason(st, COUPON_ORDER_ROLLED_BACK);
	if (st->order.exists && !OrderMatches(st))
		RaiseReason(st, COUPON_ORDER_CONFLICT);
	if (!CouponLookup(st->code, true, &st->cp))
		RaiseReason(st, COUPON_NOT_FOUND);
	st->code_display = st->cp.display;
	if (st->order.exists)
		CouponReadAttached(st->order_ref, st->now, true, &st->order);
}

/*
 * redeem_coupon(code, customer_id, order_ref, order_context | amount):
 * the discount granted.  A repeat for the same order and code returns the
 * first discount without checking anything again.
 */
static Datum
CouponRedeem(FunctionCallInfo fcinfo, bool amount_context)
{
	MemoryContext caller = CurrentMemoryContext;
	CallState	st;
	const CouponAttached *own;
	Numeric		result;

	memset(&st, 0, sizeof(st));
	st.verb = "redeemed";
	st.now = GetCurrentTimestamp();
	BeginWrite(fcinfo, &st, amount_context);

	own = OwnRedemption(&st);
	if (own != NULL)
		result = CopyNumeric(own->discount, caller);
	else
	{
		CheckUnderLocks(&st);
		CouponInsertRedemption(&st.cp, &st.cm, st.customer_id, st.order_ref,
							   st.discount, st.on_shipping, st.lines,
							   st.order.exists,
							   st.order.exists, st.now);
		if (st.cm.has_budget)
			CouponBudgetRedeemed(&st.cm, &st.usage, st.discount);
		result = CopyNumeric(st.discount, caller);
	}
	SPI_finish();
	PG_RETURN_NUMERIC(result);
}

PG_FUNCTION_INFO_V1(coupon_redeem);

/*
 * loyalty.redeem_coupon(code text, customer_id text, order_ref text,
 * order_context jsonb) RETURNS numeric
 */
Datum
coupon_redeem(PG_FUNCTION_ARGS)
{
	return CouponRedeem(fcinfo, false);
}

PG_FUNCTION_INFO_V1(coupon_redeem_amount);

/*
 * loyalty.redeem_coupon(code text, customer_id text, order_ref text,
 * amount numeric) RETURNS numeric: for shops without item data.
 */
Datum
coupon_redeem_amount(PG_FUNCTION_ARGS)
{
	return CouponRedeem(fcinfo, true);
}

/*
 * reserve_coupon(code, customer_id, order_ref, order_context | amount, ttl):
 * (discount, expires_at).  A repeat while the hold is alive returns it
 * unchanged; once it has expired, a repeat makes a new hold if the caps
 * still allow.  Reserving a code already redeemed for the order is
 * already_redeemed.
 */
static Datum
CouponReserve(FunctionCallInfo fcinfo, bool amount_context)
{
	MemoryContext caller = CurrentMemoryContext;
	CallState	st;
	Interval   *ttl;
	TimestampTz expires_at;
	TimestampTz max_expiry;
	Numeric		result;
	Numeric		held_discount;
	TimestampTz held_until;
	bool		expired = false;
	bool		held = false;
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	memset(&st, 0, sizeof(st));
	st.verb = "reserved";
	LoyaltyArgNotNull(fcinfo, 0, "code");
	LoyaltyArgNotNull(fcinfo, 1, "customer_id");
	LoyaltyArgNotNull(fcinfo, 2, "order_ref");
	LoyaltyArgNotNull(fcinfo, 3, amount_context ? "amount" : "order_context");
	LoyaltyArgNotNull(fcinfo, 4, "ttl");
	ttl = PG_GETARG_INTERVAL_P(4);
	st.now = GetCurrentTimestamp();

	/*
	 * Each field is bounded before the sum is taken, so that a huge ttl is
	 * the documented 22023 and not an overflow of the addition (22008).
	 * Within these bounds now() + ttl cannot overflow; the total is then
	 * judged exactly.  Infinite intervals (PG 17+) fail the bounds.
	 */
	if (ttl->month > COUPON_TTL_FIELD_MAX_MONTHS ||
		ttl->month < -COUPON_TTL_FIELD_MAX_MONTHS ||
		ttl->day > COUPON_TTL_FIELD_MAX_DAYS ||
		ttl->day < -COUPON_TTL_FIELD_MAX_DAYS ||
		ttl->time > (int64) COUPON_TTL_FIELD_MAX_DAYS * USECS_PER_DAY ||
		ttl->time < -(int64) COUPON_TTL_FIELD_MAX_DAYS * USECS_PER_DAY)
		expires_at = DT_NOBEGIN;
	else
		expires_at = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
															 TimestampTzGetDatum(st.now),
															 IntervalPGetDatum(ttl)));
	max_expiry = st.now + (int64) COUPON_MAX_TTL_DAYS * USECS_PER_DAY;
	if (expires_at <= st.now || expires_at > max_expiry)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid reservation ttl"),
				 errdetail("The time-to-live must be positive and at most %d days.",
						   COUPON_MAX_TTL_DAYS)));

	BeginWrite(fcinfo, &st, amount_context);
	if (OwnRedemption(&st) != NULL)
		RaiseReason(&st, COUPON_ALREADY_REDEEMED);
	if (st.order.exists)
		held = CouponFindHold(st.customer_id, st.order_ref, st.cp.id, st.now, &held_discount,
							  &held_until, &expired);
	if (held && !expired)
	{
		result = CopyNumeric(held_discount, caller);
		expires_at = held_until;
	}
	else
	{
		CheckUnderLocks(&st);
		expires_at = CouponInsertHold(&st.cp, &st.cm, st.customer_id,
									  st.order_ref, st.discount,
									  st.on_shipping, st.lines, held && expired,
									  st.order.exists, st.now, expires_at);
		result = CopyNumeric(st.discount, caller);
	}
	SPI_finish();

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "reserve_coupon must return a composite type");
	values[0] = NumericGetDatum(result);
	values[1] = TimestampTzGetDatum(expires_at);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

PG_FUNCTION_INFO_V1(coupon_reserve);

/*
 * loyalty.reserve_coupon(code text, customer_id text, order_ref text,
 * order_context jsonb, ttl interval, OUT discount numeric, OUT expires_at
 * timestamptz)
 */
Datum
coupon_reserve(PG_FUNCTION_ARGS)
{
	return CouponReserve(fcinfo, false);
}

PG_FUNCTION_INFO_V1(coupon_reserve_amount);

/* loyalty.reserve_coupon(code, customer_id, order_ref, amount numeric, ttl) */
Datum
coupon_reserve_amount(PG_FUNCTION_ARGS)
{
	return CouponReserve(fcinfo, true);
}

/*
 * Validation of a loaded coupon (st->cp) without locks: the campaign as it
 * is now, the checks of CheckCoupon, then the caps and the budget counted
 * on the caller's snapshot.  st->discount holds the discount when the
 * answer is COUPON_OK.  Shared by validate_coupon and
 * _validate_campaign (qualify's points rewards).
 */
static CouponReason
ValidateLoaded(CallState *st)
{
	CouponReason r;
	CouponUsage usage;

	AcceptInvalidationMessages();
	CouponReadCampaign(st->cp.campaign_id, &st->cm);
	r = CheckCoupon(st);
	if (r != COUPON_OK)
		return r;
	CouponCountUsage(&st->cp, &st->cm, st->customer_id, st->order_ref,
					 st->now, false, &usage);
	if (st->cm.has_budget)
		CouponCountBudget(&st->cm, st->order_ref, st->now, false, &usage);
	return CheckCaps(st, st->cm.has_total_cap ?
					 CouponCampaignUses(st->cm.id) : 0, &usage);
}

/*
 * The order named by st->order_ref for a read-only check: rolled back or
 * of another customer or context is a reason; else its coupons count for
 * stacking.  COUPON_OK also when there is no order_ref or no such order.
 */
static CouponReason
ReadOrderReadOnly(CallState *st)
{
	if (st->order_ref == NULL)
		return COUPON_OK;
	CouponReadOrder(st->order_ref, &st->order);
	if (!st->order.exists)
		return COUPON_OK;
	if (st->order.rolled_back)
		return COUPON_ORDER_ROLLED_BACK;
	if (!OrderMatches(st))
		return COUPON_ORDER_CONFLICT;
	CouponReadAttached(st->order_ref, st->now, false, &st->order);
	return COUPON_OK;
}

/* The (valid, reason, discount) row of validate_coupon and _validate_campaign. */
static Datum
ValidateResult(FunctionCallInfo fcinfo, CouponReason r, Numeric discount)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "validate_coupon must return a composite type");
	values[0] = BoolGetDatum(r == COUPON_OK || r == COUPON_ALREADY_REDEEMED);
	if (r == COUPON_OK)
		nulls[1] = true;
	else
		values[1] = CStringGetTextDatum(CouponReasonToken(r));
	if (discount == NULL)
		nulls[2] = true;
	else
		values[2] = NumericGetDatum(discount);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}

/*
 * validate_coupon(code, customer_id, order_context | amount, order_ref):
 * (valid, reason, discount), read-only and without locks: the answer for
 * this instant, which a later redeem confirms or refutes under its locks.
 * With order_ref, the order's other coupons count for stacking and a code
 * already redeemed for it is valid with reason already_redeemed.
 */
static Datum
CouponValidate(FunctionCallInfo fcinfo, bool amount_context)
{
	MemoryContext caller = CurrentMemoryContext;
	CallState	st;
	CouponReason r = COUPON_OK;
	Numeric		discount = NULL;

	memset(&st, 0, sizeof(st));
	st.verb = "validated";
	LoyaltyArgNotNull(fcinfo, 0, "code");
	LoyaltyArgNotNull(fcinfo, 1, "customer_id");
	LoyaltyArgNotNull(fcinfo, 2, amount_context ? "amount" : "order_context");
	st.customer_id = CouponIdentifier("customer_id", PG_GETARG_TEXT_PP(1),
										COUPON_MAX_ID_LEN);
	if (!PG_ARGISNULL(3))
		st.order_ref = CouponIdentifier("order_ref", PG_GETARG_TEXT_PP(3),
										 LOYALTY_MAX_KEY_BYTES);
	if (amount_context)
		CouponContextFromAmount(PG_GETARG_NUMERIC(2), &st.ctx);
	else
		CouponContextFromJsonb(PG_GETARG_JSONB_P(2), &st.ctx);
	st.now = GetCurrentTimestamp();

	SPI_connect();
	CouponStoreBegin(true);
	if (!ParseCode(PG_GETARG_TEXT_PP(0), &st))
		r = COUPON_INVALID_CODE;
	else if (!CouponLookup(st.code, false, &st.cp))
		r = COUPON_NOT_FOUND;
	else if ((r = ReadOrderReadOnly(&st)) != COUPON_OK)
		 /* reported below */ ;
	else if (OwnRedemption(&st) != NULL)
	{
		r = COUPON_ALREADY_REDEEMED;
		discount = CopyNumeric(OwnRedemption(&st)->discount, caller);
	}
	else if ((r = ValidateLoaded(&st)) == COUPON_OK)
		discount = CopyNumeric(st.discount, caller);
	SPI_finish();
	return ValidateResult(fcinfo, r, discount);
}

PG_FUNCTION_INFO_V1(coupon_validate_campaign);

/*
 * loyalty._validate_campaign(campaign_id bigint, customer_id text,
 * order_context jsonb, order_ref text, OUT valid, OUT reason, OUT discount):
 * what a new code of the campaign bound to the customer would give for
 * this order, checked exactly as validate_coupon checks a code (dates,
 * pause, rules, minimum, items, stacking, caps, budget; a code sold for
 * points holds a cap unit, so the caps must have one left).  For qualify's
 * points rewards, whose code does not exist before the exchange.
 */
Datum
coupon_validate_campaign(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	CallState	st;
	CouponReason r;
	Numeric		discount = NULL;

	memset(&st, 0, sizeof(st));
	st.verb = "validated";
	LoyaltyArgNotNull(fcinfo, 0, "campaign_id");
	LoyaltyArgNotNull(fcinfo, 1, "customer_id");
	LoyaltyArgNotNull(fcinfo, 2, "order_context");
	st.customer_id = CouponIdentifier("customer_id", PG_GETARG_TEXT_PP(1),
										COUPON_MAX_ID_LEN);
	if (!PG_ARGISNULL(3))
		st.order_ref = CouponIdentifier("order_ref", PG_GETARG_TEXT_PP(3),
										 LOYALTY_MAX_KEY_BYTES);
	CouponContextFromJsonb(PG_GETARG_JSONB_P(2), &st.ctx);
	st.now = GetCurrentTimestamp();
	st.cp.campaign_id = PG_GETARG_INT64(0);
	st.cp.customer_id = st.customer_id;
	st.cp.has_max_uses = true;
	st.cp.max_uses = 1;
	st.code_display = "(new code)";

	SPI_connect();
	CouponStoreBegin(true);
	if ((r = ReadOrderReadOnly(&st)) == COUPON_OK &&
		(r = ValidateLoaded(&st)) == COUPON_OK)
		discount = CopyNumeric(st.discount, caller);
	SPI_finish();
	return ValidateResult(fcinfo, r, discount);
}

PG_FUNCTION_INFO_V1(coupon_validate);

/*
 * loyalty.validate_coupon(code text, customer_id text, order_context jsonb,
 * order_ref text DEFAULT NULL, OUT valid boolean, OUT reason text,
 * OUT discount numeric)
 */
Datum
coupon_validate(PG_FUNCTION_ARGS)
{
	return CouponValidate(fcinfo, false);
}

PG_FUNCTION_INFO_V1(coupon_validate_amount);

/* loyalty.validate_coupon(code, customer_id, amount numeric, order_ref) */
Datum
coupon_validate_amount(PG_FUNCTION_ARGS)
{
	return CouponValidate(fcinfo, true);
}

PG_FUNCTION_INFO_V1(coupon_rollback);

/*
 * loyalty.rollback_redemption(order_ref text) RETURNS boolean: reverse the
 * order's redemptions (uses given back, history kept as reversal rows),
 * release its reservations, close the order.  true if anything was given
 * back; false for an unknown order or a repeat.
 */
Datum
coupon_rollback(PG_FUNCTION_ARGS)
{
	char	   *order_ref;
	bool		done;

	LoyaltyArgNotNull(fcinfo, 0, "order_ref");
	order_ref = CouponIdentifier("order_ref", PG_GETARG_TEXT_PP(0),
								 LOYALTY_MAX_KEY_BYTES);
	SPI_connect();
	CouponStoreBegin(false);
	done = CouponRollbackOrder(order_ref, GetCurrentTimestamp());
	SPI_finish();
	PG_RETURN_BOOL(done);
}

/* qsort comparator of attached coupons by coupon_id */
static int
AttachedCmp(const void *a, const void *b)
{
	int64		x = ((const CouponAttached *) a)->coupon_id;
	int64		y = ((const CouponAttached *) b)->coupon_id;

	return (x > y) - (x < y);
}

/* qsort comparator for int64 */
static int
Int64Cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Recompute every live reservation of an order (st->order.attached, sorted
 * by coupon_id) for the new context st->ctx: each is checked as a reserve
 * would check it (dates, pause, rules, minimum, items, stacking with the
 * ones recomputed before it, a discount above zero) and gets its new
 * discount and lines.  The caps are not counted again: a hold keeps the
 * unit it holds.  The first failure raises its reason; nothing is written
 * then.  Returns the order's new total.
 */
static Numeric
RecomputeHolds(CallState *st)
{
	CouponAttached *holds = st->order.attached;
	int			n = st->order.nattached;
	int64	   *ids = palloc(sizeof(int64) * Max(n, 1));
	int64	   *camps = palloc(sizeof(int64) * Max(n, 1));
	Numeric	   *discounts = palloc(sizeof(Numeric) * Max(n, 1));
	bool	   *shipping = palloc(sizeof(bool) * Max(n, 1));
	Datum	   *lines = palloc(sizeof(Datum) * Max(n, 1));
	Numeric		total = LoyaltyNumericZero();
	int			i;

	qsort(holds, n, sizeof(CouponAttached), AttachedCmp);
	for (i = 0; i < n; i++)
	{
		ids[i] = holds[i].coupon_id;
		camps[i] = holds[i].campaign_id;
	}
	CouponLockCoupons(ids, n);
	qsort(camps, n, sizeof(int64), Int64Cmp);
	for (i = 0; i < n; i++)
		if (i == 0 || camps[i] != camps[i - 1])
			CouponGateShared(camps[i]);

	for (i = 0; i < n; i++)
	{
		CouponReason r;

		CouponById(holds[i].coupon_id, &st->cp);
		st->code_display = st->cp.display;
		CouponReadCampaign(holds[i].campaign_id, &st->cm);
		st->order.nattached = i;	/* the holds recomputed so far */
		r = CheckCoupon(st);
		if (r != COUPON_OK)
			RaiseReason(st, r);
		SetLines(st);
		discounts[i] = st->discount;
		shipping[i] = st->on_shipping;
		lines[i] = st->lines;
		holds[i].discount = st->discount;
		holds[i].on_shipping = st->on_shipping;
		total = LoyaltyNumericAdd(total, st->discount);
	}
	for (i = 0; i < n; i++)
		CouponUpdateHold(st->customer_id, st->order_ref, ids[i], discounts[i], shipping[i],
						 lines[i]);
	return total;
}

PG_FUNCTION_INFO_V1(coupon_update_context);

/*
 * loyalty.coupon_update_order(customer_id text, order_ref text,
 * order_context jsonb) RETURNS numeric: an open checkout's cart changed.
 * The order takes the new context (later calls for it must repeat the new
 * one), and its live reservations are checked again and get the discounts
 * of the new cart; returns their total.  Refused while a coupon of the
 * order is redeemed (order_redeemed), for a rolled-back order and for
 * another customer.  Locks: order row, coupon rows, campaign gates.  NULL
 * for an order that holds no coupon yet (nothing to update; the next
 * reserve or redeem records its context).
 */
Datum
coupon_update_context(PG_FUNCTION_ARGS)
{
	MemoryContext caller = CurrentMemoryContext;
	CallState	st;
	Numeric		total = NULL;
	int			i;

	memset(&st, 0, sizeof(st));
	st.verb = "kept for the new order context";
	LoyaltyArgNotNull(fcinfo, 0, "customer_id");
	LoyaltyArgNotNull(fcinfo, 1, "order_ref");
	LoyaltyArgNotNull(fcinfo, 2, "order_context");
	st.customer_id = CouponIdentifier("customer_id", PG_GETARG_TEXT_PP(0),
									   COUPON_MAX_ID_LEN);
	st.order_ref = CouponIdentifier("order_ref", PG_GETARG_TEXT_PP(1),
									LOYALTY_MAX_KEY_BYTES);
	CouponContextFromJsonb(PG_GETARG_JSONB_P(2), &st.ctx);
	st.now = GetCurrentTimestamp();

	SPI_connect();
	CouponStoreBegin(false);
	if (CouponLockExistingOrder(st.order_ref, &st.order))
	{
		if (st.order.rolled_back)
			RaiseReason(&st, COUPON_ORDER_ROLLED_BACK);
		if (strcmp(st.order.customer_id, st.customer_id) != 0)
			RaiseReason(&st, COUPON_ORDER_CONFLICT);
		CouponReadAttached(st.order_ref, st.now, true, &st.order);
		for (i = 0; i < st.order.nattached; i++)
			if (st.order.attached[i].redeemed)
				RaiseReason(&st, COUPON_ORDER_REDEEMED);
		total = CopyNumeric(RecomputeHolds(&st), caller);
		CouponUpdateOrderContext(st.customer_id, st.order_ref, &st.ctx, st.now);
	}
	SPI_finish();
	if (total == NULL)
		PG_RETURN_NULL();
	PG_RETURN_NUMERIC(total);
}
