/*
 * coupon_discount.c
 *		Which items of an order a campaign applies to, the discount of each
 *		campaign kind, and how coupons stack on one order.
 *
 * Exact numeric arithmetic throughout.  Rules (documented for users):
 *	- eligible items: with include lists (skus and/or categories) an item
 *	  must be in one of them; an item in an exclude list never is (exclusion
 *	  wins).  A campaign with any list, and every buy-X-get-Y or free-item
 *	  campaign, needs "items" in the context (plain amounts cannot show which
 *	  products were bought: no_eligible_items).
 *	- percent: eligible amount * percent / 100; fixed: the amount off;
 *	  free shipping: the shipping cost; buy X get Y: in every X + Y eligible
 *	  units the Y cheapest are free (floor(units / (X + Y)) * Y units, the
 *	  cheapest of the order); free item: up to free_quantity units of
 *	  free_sku, the cheapest first.
 *	- max_discount caps the result of any kind.
 *	- rounding: a computed discount (percent, cheapest units) rounds half
 *	  up (away from zero) to the currency's decimals; then it is never more
 *	  than a configured limit (amount_off, max_discount) nor the eligible
 *	  amount (the shipping cost for free shipping), each truncated to those
 *	  decimals.  Campaigns refuse limits with more decimals than their
 *	  currency (coupon.sql), so the truncation of a limit only matters for
 *	  campaigns stored before that check.
 *	- a discount of zero is not a discount: the caller reports no_discount.
 *	- stacking: each coupon is computed on the undiscounted order (coupons do
 *	  not compound); the coupons of one order together never take more than
 *	  the merchandise amount (the shipping cost for free shipping): the
 *	  coupon redeemed later gets what is left.
 *	- per line (CouponLineDiscounts): a coupon's discount shared among its
 *	  eligible lines by price * quantity, truncated shares, the minor units
 *	  left to the largest remainders: the lines sum exactly to the discount.
 */
#include "coupon.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"

/* ---- numeric helpers ---- */

/* The smaller of two numerics. */
static Numeric
NumericMin(Numeric a, Numeric b)
{
	return LoyaltyNumericCmp(a, b) <= 0 ? a : b;
}

/* ---- name lists ---- */

static int
NameCmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Sort a list once so that membership is a binary search. */
void
CouponSortNames(CouponNameList *list)
{
	if (list->n > 1)
		qsort(list->names, list->n, sizeof(char *), NameCmp);
}

static bool
InList(const CouponNameList *list, const char *name)
{
	if (name == NULL || list->n == 0)
		return false;
	return bsearch(&name, list->names, list->n, sizeof(char *), NameCmp) != NULL;
}

/* Whether the campaign's include / exclude lists admit an item. */
static bool
ItemEligible(const Campaign *cm, const CouponItem *it)
{
	if (cm->include_skus.n > 0 || cm->include_categories.n > 0)
	{
		if (!InList(&cm->include_skus, it->sku) &&
			!InList(&cm->include_categories, it->category))
			return false;
	}
	if (InList(&cm->exclude_skus, it->sku) ||
		InList(&cm->exclude_categories, it->category))
		return false;
	return true;
}

/* Items ordered by unit price, cheapest first (ties by position). */
typedef struct PricedLine
{
	Numeric		price;
	int64		quantity;
	int			pos;
} PricedLine;

static int
PricedLineCmp(const void *a, const void *b)
{
	const PricedLine *x = a;
	const PricedLine *y = b;
	int			c = LoyaltyNumericCmp(x->price, y->price);

	return c != 0 ? c : (x->pos > y->pos) - (x->pos < y->pos);
}

/* Sum of the prices of the n cheapest units among lines. */
static Numeric
CheapestUnits(PricedLine *lines, int nlines, int64 n)
{
	Numeric		sum = LoyaltyNumericZero();
	int			i;

	qsort(lines, nlines, sizeof(PricedLine), PricedLineCmp);
	for (i = 0; i < nlines && n > 0; i++)
	{
		int64		take = Min(n, lines[i].quantity);

		sum = LoyaltyNumericAdd(sum, LoyaltyNumericMul(lines[i].price,
													 LoyaltyNumericFromInt64(take)));
		n -= take;
	}
	return sum;
}

/*
 * The discount one campaign gives one order, before stacking.  Returns
 * COUPON_OK with *discount set (>= 0, rounded to the currency, never above
 * a configured limit) and
 * *on_shipping telling which part of the order it reduces, or
 * COUPON_NO_ELIGIBLE_ITEMS.
 */
CouponReason
CouponComputeDiscount(const Campaign *cm, const OrderContext *ctx,
					  Numeric *discount, bool *on_shipping)
{
	int			decimals = CouponCurrencyDecimals(cm->currency);
	bool		has_lists = cm->include_skus.n > 0 || cm->exclude_skus.n > 0 ||
		cm->include_categories.n > 0 || cm->exclude_categories.n > 0;
	Numeric		eligible;
	Numeric		d;
	Numeric		base;
	PricedLine *lines = NULL;
	int			nlines = 0;
	int64		units = 0;
	int			i;

	*on_shipping = false;
	if ((has_lists || cm->kind == CAMPAIGN_BUY_X_GET_Y ||
		 cm->kind == CAMPAIGN_FREE_ITEM) && !ctx->has_items)
		return COUPON_NO_ELIGIBLE_ITEMS;

	if (ctx->has_items)
	{
		eligible = LoyaltyNumericZero();
		lines = palloc(sizeof(PricedLine) * Max(ctx->nitems, 1));
		for (i = 0; i < ctx->nitems; i++)
		{
			const CouponItem *it = &ctx->items[i];
			bool		take;

			if (cm->kind == CAMPAIGN_FREE_ITEM)
				take = strcmp(it->sku, cm->free_sku) == 0;
			else
				take = ItemEligible(cm, it);
			if (!take)
				continue;
			eligible = LoyaltyNumericAdd(eligible, it->line_total);
			units += it->quantity;
			lines[nlines].price = it->price;
			lines[nlines].quantity = it->quantity;
			lines[nlines].pos = i;
			nlines++;
		}
		if (nlines == 0)
			return COUPON_NO_ELIGIBLE_ITEMS;
	}
	else
		eligible = ctx->amount;

	base = eligible;
	switch (cm->kind)
	{
		case CAMPAIGN_PERCENT:
			{
				Numeric		hundredth = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																			CStringGetDatum("0.01"),
																			ObjectIdGetDatum(InvalidOid),
																			Int32GetDatum(-1)));

				d = LoyaltyNumericMul(eligible,
									 LoyaltyNumericMul(cm->percent_off, hundredth));
			}
			break;
		case CAMPAIGN_FIXED:
			/* a limit: never rounded up */
			d = LoyaltyNumericTrunc(cm->amount_off, decimals);
			break;
		case CAMPAIGN_FREE_SHIPPING:
			d = ctx->shipping;
			base = ctx->shipping;
			*on_shipping = true;
			break;
		case CAMPAIGN_BUY_X_GET_Y:
			{
				int64		group = (int64) cm->buy_quantity + cm->get_quantity;
				int64		free_units = (units / group) * cm->get_quantity;

				if (free_units == 0)
					return COUPON_NO_ELIGIBLE_ITEMS;
				d = CheapestUnits(lines, nlines, free_units);
			}
			break;
		case CAMPAIGN_FREE_ITEM:
			d = CheapestUnits(lines, nlines, Min(units, (int64) cm->free_quantity));
			break;
		default:
			elog(ERROR, "unknown campaign kind %d", (int) cm->kind);
	}

	d = LoyaltyNumericRound(d, decimals);
	if (cm->max_discount != NULL)
		d = NumericMin(d, LoyaltyNumericTrunc(cm->max_discount, decimals));
	d = NumericMin(d, LoyaltyNumericTrunc(base, decimals));
	*discount = d;
	return COUPON_OK;
}

/*
 * Stacking: may this campaign's coupon join the coupons already on the
 * order (redeemed, or held by an unexpired reservation), and what is left of
 * the order for it?  Rules: one coupon per campaign per order; an exclusive
 * coupon stands alone (either way round); the order never carries more
 * coupons than the smallest max_coupons_per_order among them; all coupons of
 * an order are in one currency.  *discount is lowered to what the other
 * coupons leave of the merchandise amount (or of the shipping cost).
 */
CouponReason
CouponApplyStacking(const Campaign *cm, const OrderContext *ctx,
					const CouponOrder *order, int64 own_coupon_id,
					Numeric *discount, bool on_shipping)
{
	int			decimals = CouponCurrencyDecimals(cm->currency);
	int			ncoupons = 1;
	int32		limit = cm->max_coupons_per_order;
	Numeric		used = LoyaltyNumericZero();
	Numeric		left;
	int			i;

	for (i = 0; i < order->nattached; i++)
	{
		const CouponAttached *a = &order->attached[i];

		if (a->coupon_id == own_coupon_id)
			continue;
		if (a->campaign_id == cm->id || a->exclusive || cm->exclusive)
			return COUPON_NOT_STACKABLE;
		if (strcmp(a->currency, cm->currency) != 0)
			return COUPON_CURRENCY_MISMATCH;
		ncoupons++;
		if (a->max_coupons_per_order > 0 &&
			(limit == 0 || a->max_coupons_per_order < limit))
			limit = a->max_coupons_per_order;
		if (a->on_shipping == on_shipping)
			used = LoyaltyNumericAdd(used, a->discount);
	}
	if (limit > 0 && ncoupons > limit)
		return COUPON_NOT_STACKABLE;

	left = LoyaltyNumericSub(on_shipping ? ctx->shipping : ctx->amount, used);
	if (LoyaltyNumericCmp(left, LoyaltyNumericZero()) < 0)
		left = LoyaltyNumericZero();
	*discount = NumericMin(*discount, LoyaltyNumericTrunc(left, decimals));
	return COUPON_OK;
}

/* 10^n as a numeric (n = 0..4: the currencies' decimals). */
static Numeric
TenPower(int n)
{
	char		buf[8] = "1";

	for (int i = 1; i <= n && i < 7; i++)
		buf[i] = '0';
	buf[Min(n, 6) + 1] = '\0';
	return DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
}

/*
 * The discount of one coupon per line of the order context (the items in
 * their order): numeric[] with one element per item, or NULL (Datum 0,
 * *isnull set) when the context has no items or the coupon reduces the
 * shipping cost.  The discount is shared among the campaign's eligible
 * lines (for a free item: the lines of its sku) in proportion to price *
 * quantity, each share truncated to the currency's minor units; the minor
 * units left over go one each to the lines with the largest remainders
 * (ties: the earlier line), so the lines sum exactly to the discount.
 * Ineligible lines get 0.  Exact numeric: integer division on minor units.
 */
Datum
CouponLineDiscounts(const Campaign *cm, const OrderContext *ctx,
					Numeric discount, bool on_shipping, bool *isnull)
{
	int			decimals = CouponCurrencyDecimals(cm->currency);
	Numeric		scale = TenPower(decimals);
	Numeric		unit;
	Numeric		units;
	Numeric		weight = LoyaltyNumericZero();
	Numeric    *quot;
	Numeric    *rem;
	bool	   *take;
	bool	   *bonus;
	Datum	   *elems;
	Numeric		left;
	int			n = ctx->nitems;
	int			i;

	*isnull = true;
	if (!ctx->has_items || on_shipping || n == 0)
		return (Datum) 0;
	unit = LoyaltyNumericDiv(LoyaltyNumericFromInt64(1), scale);
	unit = LoyaltyNumericRound(unit, decimals);
	units = LoyaltyNumericTrunc(LoyaltyNumericMul(discount, scale), 0);
	take = palloc0(sizeof(bool) * n);
	bonus = palloc0(sizeof(bool) * n);
	quot = palloc0(sizeof(Numeric) * n);
	rem = palloc0(sizeof(Numeric) * n);
	elems = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
	{
		const CouponItem *it = &ctx->items[i];

		take[i] = cm->kind == CAMPAIGN_FREE_ITEM ?
			strcmp(it->sku, cm->free_sku) == 0 : ItemEligible(cm, it);
		if (take[i])
			weight = LoyaltyNumericAdd(weight, it->line_total);
	}
	left = units;
	for (i = 0; i < n; i++)
	{
		Numeric		prod;

		quot[i] = LoyaltyNumericZero();
		rem[i] = LoyaltyNumericZero();
		if (!take[i] || LoyaltyNumericIsZero(weight))
			continue;
		prod = LoyaltyNumericMul(units, ctx->items[i].line_total);
		quot[i] = DatumGetNumeric(DirectFunctionCall2(numeric_div_trunc,
													  NumericGetDatum(prod),
													  NumericGetDatum(weight)));
		rem[i] = LoyaltyNumericSub(prod, LoyaltyNumericMul(quot[i], weight));
		left = LoyaltyNumericSub(left, quot[i]);
	}
	/* left < number of eligible lines: one minor unit each, largest first */
	while (LoyaltyNumericCmp(left, LoyaltyNumericZero()) > 0)
	{
		int			best = -1;

		for (i = 0; i < n; i++)
			if (take[i] && !bonus[i] &&
				(best < 0 || LoyaltyNumericCmp(rem[i], rem[best]) > 0))
				best = i;
		if (best < 0)
			elog(ERROR, "discount allocation left minor units over");
		bonus[best] = true;
		quot[best] = LoyaltyNumericAdd(quot[best], LoyaltyNumericFromInt64(1));
		left = LoyaltyNumericSub(left, LoyaltyNumericFromInt64(1));
	}
	for (i = 0; i < n; i++)
		elems[i] = NumericGetDatum(LoyaltyNumericMul(quot[i], unit));
	*isnull = false;
	return PointerGetDatum(construct_array(elems, n, NUMERICOID, -1, false,
										   TYPALIGN_INT));
}
