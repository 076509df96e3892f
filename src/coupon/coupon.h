/*
 * coupon.h
 *		Campaigns, coupons and their lifecycle (validate, reserve, redeem,
 *		roll back): the structures and the API shared by the coupon modules.
 *
 *	coupon_context.c	the order context (jsonb or a plain amount), parsed
 *						and checked once per call
 *	coupon_discount.c	eligible items and the discount of each campaign kind
 *	coupon_rules.c		eligibility rules (segment, new customer, registered
 *						kinds such as tiers)
 *	coupon_store.c		every SQL statement (kept SPI plans) and the locks
 *	coupon.c			the SQL-callable lifecycle functions
 *	coupon_generate.c	bulk code generation and the campaign admin helpers
 *
 * Concurrency protocol (see coupon_store.c): every call takes its locks in
 * one global order, order row -> coupon rows -> campaign gates -> campaign
 * rows -> customer locks, so a single call never deadlocks with another.
 * Caps count active redemptions plus unexpired reservations, read under
 * those locks with the newest snapshot.
 */
#ifndef LOYALTY_COUPON_H
#define LOYALTY_COUPON_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "coupon_code.h"
#include "loyalty.h"
#include "loyalty_numeric.h"

/*
 * Limits of the order context and of the identifiers the API accepts; all
 * documented.  Exceeding COUPON_MAX_ITEMS is 54000 (program_limit_exceeded),
 * the others 22023 / 22003.
 */
#define COUPON_MAX_ITEMS		1000
#define COUPON_MAX_ID_LEN		LOYALTY_MAX_KEY_BYTES	/* customer_id (order_ref: LOYALTY_MAX_KEY_BYTES) */
#define COUPON_MAX_SKU_LEN		256 /* sku, category */
#define COUPON_MAX_QUANTITY		1000000
/* amounts and prices must be below 10^COUPON_MAX_AMOUNT_DIGITS */
#define COUPON_MAX_AMOUNT_DIGITS 15

/* Reservation time-to-live bounds. */
#define COUPON_MAX_TTL_DAYS		30
/* bounds of each field of a ttl interval before it is added to now() */
#define COUPON_TTL_FIELD_MAX_MONTHS 12000
#define COUPON_TTL_FIELD_MAX_DAYS	366000

/*
 * Reasons a coupon cannot be used.  The tokens (CouponReasonToken) and the
 * SQLSTATEs (CouponReasonSqlstate) are stable and documented; the order of
 * the enum is the order in which the checks run, so the first failing check
 * is the one reported.
 */
typedef enum CouponReason
{
	COUPON_OK = 0,
	COUPON_INVALID_CODE,		/* LY001 */
	COUPON_NOT_FOUND,			/* LY002 */
	COUPON_WRONG_CUSTOMER,		/* LY003 */
	COUPON_CURRENCY_MISMATCH,	/* LY004 */
	COUPON_EXPIRED,				/* LY005 */
	COUPON_NOT_STARTED,			/* LY006 */
	COUPON_PAUSED,				/* LY007 */
	COUPON_CONFIG_ERROR,		/* LY016: a rule names configuration that
								 * does not exist (checked with the rules) */
	COUPON_NOT_ELIGIBLE,		/* LY008 */
	COUPON_MIN_AMOUNT,			/* LY009 */
	COUPON_NO_ELIGIBLE_ITEMS,	/* LY010 */
	COUPON_NOT_STACKABLE,		/* LY011 */
	COUPON_NO_DISCOUNT,			/* LY015: the discount would be zero */
	COUPON_EXHAUSTED,			/* LY012 */
	COUPON_RESERVED,			/* LY013 */
	COUPON_BUDGET_EXHAUSTED,	/* LY017: the discount budget is used up */
	COUPON_PERIOD_LIMIT,		/* LY018: the period cap is reached */
	COUPON_CUSTOMER_LIMIT,		/* LY014 */
	/* states of the order, not of the coupon */
	COUPON_ORDER_CONFLICT,		/* LY020 */
	COUPON_ORDER_ROLLED_BACK,	/* LY021 */
	COUPON_ALREADY_REDEEMED,	/* LY022 (reserve after redeem); validate
								 * reports it as valid */
	COUPON_ORDER_REDEEMED,		/* LY023: coupon_update_order of an order
								 * with a redeemed coupon */
	COUPON_NREASONS
} CouponReason;

extern const char *CouponReasonToken(CouponReason r);
extern int	CouponReasonSqlstate(CouponReason r);
extern const char *CouponReasonDetail(CouponReason r);

/* ---- order context (coupon_context.c) ---- */

typedef struct CouponItem
{
	char	   *sku;			/* NUL-terminated copies */
	char	   *category;		/* NULL when the item has none */
	Numeric		price;			/* unit price, >= 0 */
	int64		quantity;		/* 1..COUPON_MAX_QUANTITY */
	Numeric		line_total;		/* price * quantity */
} CouponItem;

typedef struct OrderContext
{
	Numeric		amount;			/* merchandise subtotal, shipping excluded */
	Numeric		shipping;		/* 0 when absent */
	bool		has_currency;
	char		currency[4];	/* ISO 4217 letters when has_currency */
	bool		has_items;
	int			nitems;
	CouponItem *items;
	int			new_customer;	/* 1, 0, or -1 when the context does not say */
	int64		hash;			/* fingerprint of all of the above */
	Jsonb	   *json;			/* the caller's jsonb, or one built from the
								 * plain amount (for registered rule kinds) */
} OrderContext;

extern void CouponContextFromJsonb(Jsonb *jb, OrderContext *ctx);
extern void CouponContextFromAmount(Numeric amount, OrderContext *ctx);
extern int	CouponCurrencyDecimals(const char *currency);
extern char *CouponIdentifier(const char *what, text *value, int maxlen);

/* ---- campaigns and coupons as read from the tables ---- */

typedef enum CampaignKind
{
	CAMPAIGN_PERCENT = 1,
	CAMPAIGN_FIXED,
	CAMPAIGN_FREE_SHIPPING,
	CAMPAIGN_BUY_X_GET_Y,
	CAMPAIGN_FREE_ITEM
} CampaignKind;

/* A sorted list of strings (sku or category include/exclude lists). */
typedef struct CouponNameList
{
	int			n;				/* 0 = no list */
	char	  **names;
} CouponNameList;

/* One eligibility rule of a campaign. */
typedef struct CouponRule
{
	char	   *kind;
	Jsonb	   *params;
	Oid			check_function; /* InvalidOid for the built-in kinds */
} CouponRule;

typedef struct Campaign
{
	int64		id;
	CampaignKind kind;
	char		currency[4];
	Numeric		percent_off;	/* NULL when not set */
	Numeric		max_discount;
	Numeric		amount_off;
	int32		buy_quantity;	/* 0 when not set */
	int32		get_quantity;
	char	   *free_sku;
	int32		free_quantity;
	bool		has_starts_at;
	TimestampTz starts_at;
	bool		has_ends_at;
	TimestampTz ends_at;
	bool		has_ends_on;	/* date-only end: through that day in the
								 * program zone (CouponDayEnd) */
	DateADT		ends_on;
	bool		paused;
	bool		has_total_cap;
	int64		total_cap;
	int32		per_customer_cap;	/* 0 = none */
	Numeric		min_order_amount;
	CouponNameList include_skus;
	CouponNameList exclude_skus;
	CouponNameList include_categories;
	CouponNameList exclude_categories;
	bool		exclusive;
	int32		max_coupons_per_order;	/* 0 = no limit */
	bool		has_budget;		/* a loyalty.campaign_budget row */
	Numeric		discount_budget;	/* NULL: no money budget */
	char	   *period;			/* "day", "week", "month"; NULL: no cap */
	int64		period_cap;
	int			nrules;
	CouponRule *rules;
} Campaign;

typedef struct Coupon
{
	int64		id;
	int64		campaign_id;
	char	   *customer_id;	/* bound customer, or NULL */
	bool		has_max_uses;
	int64		max_uses;
	int64		uses;			/* active redemptions */
	int64		reservations;	/* reservations ever made (0: skip counting) */
	char	   *display;		/* the stored code as printed */
} Coupon;

/* A coupon already attached to an order: redeemed, or held unexpired. */
typedef struct CouponAttached
{
	int64		coupon_id;
	int64		campaign_id;
	bool		redeemed;		/* false: an unexpired reservation */
	Numeric		discount;
	bool		on_shipping;
	bool		exclusive;
	int32		max_coupons_per_order;
	char		currency[4];
} CouponAttached;

/* The order a call works on, as stored in loyalty.coupon_order. */
typedef struct CouponOrder
{
	bool		exists;			/* a row existed before this call */
	bool		rolled_back;
	char	   *customer_id;
	int64		context_hash;
	int			nattached;
	CouponAttached *attached;
} CouponOrder;

/* Usage counted for the cap checks (other orders only). */
typedef struct CouponUsage
{
	int64		coupon_holds;	/* unexpired reservations of the code */
	int64		campaign_uses;	/* active redemptions in the campaign */
	int64		campaign_holds;
	int64		customer_uses;	/* the customer's active redemptions */
	int64		customer_holds;
	int64		campaign_sold;	/* unused codes sold for points (other codes) */
	int64		customer_sold;	/* the same, bound to the customer */
	/* budgeted campaigns only (CouponCountBudget) */
	Numeric		budget_used;	/* discount of active redemptions */
	Numeric		budget_held;	/* discount of live reservations */
	DateADT		period_start;	/* the current period (period cap) */
	int64		period_uses;	/* active redemptions in it */
	int64		period_holds;	/* live reservations */
} CouponUsage;

/* ---- discounts (coupon_discount.c) ---- */

extern void CouponSortNames(CouponNameList *list);
extern CouponReason CouponComputeDiscount(const Campaign *cm,
										  const OrderContext *ctx,
										  Numeric *discount,
										  bool *on_shipping);
extern CouponReason CouponApplyStacking(const Campaign *cm,
										const OrderContext *ctx,
										const CouponOrder *order,
										int64 own_coupon_id,
										Numeric *discount, bool on_shipping);

extern Datum CouponLineDiscounts(const Campaign *cm, const OrderContext *ctx,
								 Numeric discount, bool on_shipping,
								 bool *isnull);

/* ---- eligibility rules (coupon_rules.c) ---- */

extern CouponReason CouponRulesAllow(const Campaign *cm,
									 const char *customer_id,
									 const OrderContext *ctx);

/* ---- storage and locks (coupon_store.c) ---- */

extern void CouponInit(void);
extern void CouponStoreBegin(bool read_only);
extern bool CouponLookup(Datum code, bool lock, Coupon *cp);
extern void CouponReadCampaign(int64 campaign_id, Campaign *cm);
extern TimestampTz CouponDayEnd(DateADT day);
extern void CouponLockOrder(const char *order_ref, const char *customer_id,
							const OrderContext *ctx, TimestampTz now,
							CouponOrder *order);
extern void CouponReadOrder(const char *order_ref, CouponOrder *order);
extern void CouponReadAttached(const char *order_ref, TimestampTz now,
							   bool latest, CouponOrder *order);
extern void CouponGateShared(int64 campaign_id);
extern void CouponGateExclusive(int64 campaign_id);
extern int64 CouponLockCampaignRow(int64 campaign_id);
extern int64 CouponCampaignUses(int64 campaign_id);
extern void CouponCountBudget(const Campaign *cm, const char *order_ref,
							  TimestampTz now, bool lock, CouponUsage *usage);
extern void CouponBudgetRedeemed(const Campaign *cm, const CouponUsage *usage,
								 Numeric discount);
extern void CouponLockCustomer(int64 campaign_id, const char *customer_id);
extern int64 CouponCapUnits(int64 campaign_id, const char *customer_id,
							TimestampTz now);
extern void CouponCountUsage(const Coupon *cp, const Campaign *cm,
							 const char *customer_id, const char *order_ref,
							 TimestampTz now, bool latest, CouponUsage *usage);
extern void CouponInsertRedemption(const Coupon *cp, const Campaign *cm,
								   const char *customer_id,
								   const char *order_ref, Numeric discount,
								   bool on_shipping, Datum lines,
								   bool consume_hold,
								   bool order_existed, TimestampTz now);
extern bool CouponFindHold(const char *customer_id, const char *order_ref,
						   int64 coupon_id, TimestampTz now, Numeric *discount,
						   TimestampTz *expires_at, bool *expired);
extern TimestampTz CouponInsertHold(const Coupon *cp, const Campaign *cm,
									const char *customer_id,
									const char *order_ref, Numeric discount,
									bool on_shipping, Datum lines,
									bool expire_old,
									bool order_existed, TimestampTz now,
									TimestampTz expires_at);
extern void CouponById(int64 coupon_id, Coupon *cp);
extern bool CouponLockExistingOrder(const char *order_ref, CouponOrder *order);
extern void CouponLockCoupons(int64 *ids, int n);
extern void CouponUpdateHold(const char *customer_id, const char *order_ref,
							 int64 coupon_id, Numeric discount,
							 bool on_shipping, Datum lines);
extern void CouponUpdateOrderContext(const char *customer_id,
									 const char *order_ref,
									 const OrderContext *ctx, TimestampTz now);
extern bool CouponRollbackOrder(const char *order_ref, TimestampTz now);
extern int64 CouponCampaignActiveUses(int64 campaign_id);
extern Oid	CouponCodeTypeOid(void);
extern char *CouponCustomerSegment(const char *customer_id);

#endif							/* LOYALTY_COUPON_H */
