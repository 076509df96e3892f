/*
 * coupon_store.c
 *		Every statement the coupon lifecycle runs (kept SPI plans with $n
 *		parameters) and the locks that make it safe under concurrency.
 *
 * Lock order, the same in every call (so that no single call can deadlock
 * with another):
 *	1. the order row (loyalty.coupon_order), inserted or locked FOR NO KEY
 *	   UPDATE: serialises everything done to one order_ref (idempotency,
 *	   stacking, rollback); a new order first claims its order_ref in
 *	   loyalty.coupon_order_owner (unique: one customer per order), which is
 *	   then read to find the order row, keyed by (customer_id, order_ref);
 *	2. the coupon row(s), FOR NO KEY UPDATE: per-code cap, in coupon_id
 *	   order when there are several;
 *	3. the campaign gate(s): a heavyweight lock on the campaign as an object
 *	   (class loyalty.campaign, object id = campaign_id), shared by redeem,
 *	   reserve and rollback, exclusive for pause / resume / update: a pause
 *	   waits for redemptions in flight and every redemption that starts after
 *	   it reads the paused flag;
 *	4. the campaign row(s), FOR NO KEY UPDATE, only for campaigns with a
 *	   total cap: the cap counter;
 *	4b. the budget row(s) (loyalty.campaign_budget), FOR NO KEY UPDATE,
 *	   only for campaigns with a discount budget or a period cap: the
 *	   budget's counters (doc/budgets.md);
 *	5. the customer lock: a heavyweight lock on (class loyalty.redemption,
 *	   object id = hash of campaign and customer), only for campaigns with a
 *	   per-customer cap;
 *	6. (points family) points accounts: exchange_points takes 4 and 5
 *	   before spending, and reverse_points of an exchange locks the sold
 *	   coupon (2) before the account, so a transaction that redeems and
 *	   then earns points cannot deadlock with them.
 * After the locks, usage is counted with the newest snapshot (so that a
 * REPEATABLE READ caller cannot miss a competitor that committed after its
 * snapshot), and written in one statement.  Rows whose change must be seen
 * by a REPEATABLE READ competitor are updated, not just locked, so that the
 * competitor gets a serialization failure (40001) instead of a stale view.
 *
 * Every statement on a per-customer table (coupon_order, redemption,
 * reservation) names the customer: they are keyed by (customer_id, ...), so
 * that on Citus each statement is routed to the customer's shard.
 */
#include "coupon.h"

#include "access/heaptoast.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "loyalty_cache.h"
#include "loyalty_spi.h"

/*
 * A code sold for points (holds_cap_unit, set by exchange_points) of
 * campaign CAMP holds one unit of the campaign's total and per-customer
 * caps while it is neither used nor voided; while a live reservation of
 * another order than ORDER holds it, that reservation is the unit instead
 * (counted with the reservations).  Served by coupon_cap_unit_idx.  The
 * reservations are an uncorrelated subquery (a code's reservations carry
 * its campaign): on Citus, coupon is a reference table and reservation is
 * distributed, and Citus plans an uncorrelated subquery on its own, not a
 * correlated one.
 */
#define SOLD_UNIT_HELD(camp, at, order) \
	"s.campaign_id = " camp " AND s.holds_cap_unit AND s.uses = 0" \
	" AND s.voided_at IS NULL" \
	" AND s.coupon_id NOT IN (SELECT h.coupon_id FROM loyalty.reservation h" \
	"   WHERE h.campaign_id = " camp " AND h.state = 'held'" \
	"     AND h.expires_at > " at " AND h.order_ref IS DISTINCT FROM " order ")"

/* Stands for the loyalty.coupon_code type in the argument lists below. */
#define CODE_TYPE	((Oid) 1)

typedef enum PlanId
{
	P_LOOKUP,
	P_LOOKUP_LOCK,
	P_CAMPAIGN,
	P_ORDER_CLAIM,
	P_ORDER_OWNER,
	P_ORDER_INSERT,
	P_ORDER_LOCK,
	P_ORDER_READ,
	P_ATTACHED,
	P_CAMPAIGN_LOCK,
	P_CAMPAIGN_USES,
	P_COUNTS,
	P_FIND_HOLD,
	P_EXPIRE_HOLD,
	P_INSERT_HOLD,
	P_RB_LOCK_ORDER,
	P_RB_REDEMPTIONS,
	P_RB_LOCK_COUPONS,
	P_RB_LOCK_CAMPAIGNS,
	P_RB_WRITE,
	P_RB_CODES,
	P_RB_CAMPAIGNS,
	P_SEGMENT,
	P_ACTIVE_USES,
	P_CAP_UNITS,
	P_DAY_END,
	P_COUPON_BY_ID,
	P_UPDATE_HOLD,
	P_ORDER_UPDATE,
	P_BUDGET_LOCK,
	P_BUDGET_READ,
	P_BUDGET_REDEEM,
	P_RB_LOCK_BUDGETS,
	P_RB_BUDGETS,
	NPLANS
} PlanId;

#define COUPON_COLS "coupon_id, campaign_id, customer_id, max_uses, uses, reservations, code"

static const LoyaltyPlanDef PlanDefs[NPLANS] = {
	[P_LOOKUP] = {
		"SELECT " COUPON_COLS " FROM loyalty.coupon"
		" WHERE code OPERATOR(loyalty.=) $1 AND voided_at IS NULL",
		1, {CODE_TYPE}
	},
	[P_LOOKUP_LOCK] = {
		"SELECT " COUPON_COLS " FROM loyalty.coupon"
		" WHERE code OPERATOR(loyalty.=) $1 AND voided_at IS NULL FOR NO KEY UPDATE",
		1, {CODE_TYPE}
	},
	[P_CAMPAIGN] = {
		"SELECT c.kind, c.currency, c.percent_off, c.max_discount, c.amount_off,"
		" c.buy_quantity, c.get_quantity, c.free_sku, c.free_quantity,"
		" c.starts_at, c.ends_at, c.paused, c.total_cap, c.per_customer_cap,"
		" c.min_order_amount, c.include_skus, c.exclude_skus,"
		" c.include_categories, c.exclude_categories, c.exclusive,"
		" c.max_coupons_per_order, r.kinds, r.params, r.funcs, c.ends_on,"
		" b.campaign_id IS NOT NULL, b.discount_budget, b.period, b.period_cap"
		" FROM loyalty.campaign c"
		" LEFT JOIN loyalty.campaign_budget b ON b.campaign_id = c.campaign_id"
		" LEFT JOIN LATERAL ("
		"  SELECT array_agg(cr.kind ORDER BY cr.rule_id) AS kinds,"
		"         array_agg(cr.params ORDER BY cr.rule_id) AS params,"
		"         array_agg(coalesce(k.check_function::pg_catalog.oid, 0::pg_catalog.oid)"
		"                   ORDER BY cr.rule_id) AS funcs"
		"  FROM loyalty.campaign_rule cr"
		"  LEFT JOIN loyalty.eligibility_kind k ON k.kind = cr.kind"
		"  WHERE cr.campaign_id = c.campaign_id) r ON true"
		" WHERE c.campaign_id = $1",
		1, {INT8OID}
	},
	[P_ORDER_CLAIM] = {
		"INSERT INTO loyalty.coupon_order_owner (order_ref, customer_id, created_at)"
		" VALUES ($1, $2, $3) ON CONFLICT (order_ref) DO NOTHING RETURNING 1",
		3, {TEXTOID, TEXTOID, TIMESTAMPTZOID}
	},
	[P_ORDER_OWNER] = {
		"SELECT customer_id FROM loyalty.coupon_order_owner WHERE order_ref = $1",
		1, {TEXTOID}
	},
	[P_ORDER_INSERT] = {
		"INSERT INTO loyalty.coupon_order"
		" (order_ref, customer_id, context_hash, amount, currency, created_at, updated_at,"
		"  context)"
		" VALUES ($1, $2, $3, $4, $5, $6, $6, $7)"
		" ON CONFLICT (customer_id, order_ref) DO NOTHING RETURNING 1",
		7, {TEXTOID, TEXTOID, INT8OID, NUMERICOID, TEXTOID, TIMESTAMPTZOID, JSONBOID}
	},
	[P_ORDER_LOCK] = {
		"SELECT customer_id, context_hash, state FROM loyalty.coupon_order"
		" WHERE customer_id = $2 AND order_ref = $1 FOR NO KEY UPDATE",
		2, {TEXTOID, TEXTOID}
	},
	[P_ORDER_READ] = {
		"SELECT customer_id, context_hash, state FROM loyalty.coupon_order"
		" WHERE customer_id = $2 AND order_ref = $1",
		2, {TEXTOID, TEXTOID}
	},
	[P_ATTACHED] = {
		"SELECT r.coupon_id, r.campaign_id, true, r.discount, r.on_shipping,"
		"       c.exclusive, c.max_coupons_per_order, c.currency"
		" FROM loyalty.redemption r"
		" JOIN loyalty.campaign c ON c.campaign_id = r.campaign_id"
		" WHERE r.customer_id = $3 AND r.order_ref = $1 AND r.kind = 'redeem'"
		"   AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x"
		"                   WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)"
		" UNION ALL "
		"SELECT h.coupon_id, h.campaign_id, false, h.discount, h.on_shipping,"
		"       c.exclusive, c.max_coupons_per_order, c.currency"
		" FROM loyalty.reservation h"
		" JOIN loyalty.campaign c ON c.campaign_id = h.campaign_id"
		" WHERE h.customer_id = $3 AND h.order_ref = $1 AND h.state = 'held'"
		"   AND h.expires_at > $2",
		3, {TEXTOID, TIMESTAMPTZOID, TEXTOID}
	},
	[P_CAMPAIGN_LOCK] = {
		"SELECT uses FROM loyalty.campaign WHERE campaign_id = $1"
		" FOR NO KEY UPDATE",
		1, {INT8OID}
	},
	[P_CAMPAIGN_USES] = {
		"SELECT uses FROM loyalty.campaign WHERE campaign_id = $1",
		1, {INT8OID}
	},
	[P_COUNTS] = {
		"SELECT"
		" CASE WHEN $6 THEN (SELECT count(*) FROM loyalty.reservation"
		"   WHERE coupon_id = $1 AND state = 'held' AND expires_at > $4"
		"     AND order_ref IS DISTINCT FROM $5) ELSE 0 END,"
		" CASE WHEN $7 THEN (SELECT count(*) FROM loyalty.reservation"
		"   WHERE campaign_id = $2 AND state = 'held' AND expires_at > $4"
		"     AND order_ref IS DISTINCT FROM $5) ELSE 0 END,"
		" CASE WHEN $8 THEN (SELECT coalesce(sum(uses), 0) FROM loyalty.redemption"
		"   WHERE campaign_id = $2 AND customer_id = $3) ELSE 0 END,"
		" CASE WHEN $8 THEN (SELECT count(*) FROM loyalty.reservation"
		"   WHERE campaign_id = $2 AND customer_id = $3 AND state = 'held'"
		"     AND expires_at > $4 AND order_ref IS DISTINCT FROM $5) ELSE 0 END,"
		" CASE WHEN $7 OR $8 THEN (SELECT count(*) FROM loyalty.coupon s"
		"   WHERE " SOLD_UNIT_HELD("$2", "$4", "$5") " AND s.coupon_id <> $1) ELSE 0 END,"
		" CASE WHEN $8 THEN (SELECT count(*) FROM loyalty.coupon s"
		"   WHERE " SOLD_UNIT_HELD("$2", "$4", "$5") " AND s.coupon_id <> $1"
		"     AND s.customer_id = $3) ELSE 0 END",
		8, {INT8OID, INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, BOOLOID, BOOLOID, BOOLOID}
	},
	[P_FIND_HOLD] = {
		"SELECT discount, expires_at FROM loyalty.reservation"
		" WHERE customer_id = $3 AND order_ref = $1 AND coupon_id = $2"
		"   AND state = 'held'",
		3, {TEXTOID, INT8OID, TEXTOID}
	},
	[P_EXPIRE_HOLD] = {
		"UPDATE loyalty.reservation SET state = 'expired', ended_at = $3"
		" WHERE customer_id = $4 AND order_ref = $1 AND coupon_id = $2"
		"   AND state = 'held' AND expires_at <= $3",
		4, {TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID}
	},
	[P_INSERT_HOLD] = {
		"WITH ins AS ("
		"  INSERT INTO loyalty.reservation (coupon_id, campaign_id, customer_id,"
		"    order_ref, discount, on_shipping, created_at, expires_at, line_discounts)"
		"  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10) RETURNING expires_at),"
		" cu AS (UPDATE loyalty.coupon SET reservations = reservations + 1"
		"        WHERE coupon_id = $1),"
		" od AS (UPDATE loyalty.coupon_order SET updated_at = $7"
		"        WHERE customer_id = $3 AND order_ref = $4 AND $9)"
		" SELECT expires_at FROM ins",
		10, {INT8OID, INT8OID, TEXTOID, TEXTOID, NUMERICOID, BOOLOID,
		TIMESTAMPTZOID, TIMESTAMPTZOID, BOOLOID, NUMERICARRAYOID}
	},
	[P_RB_LOCK_ORDER] = {
		"SELECT state FROM loyalty.coupon_order WHERE customer_id = $2"
		" AND order_ref = $1 FOR NO KEY UPDATE",
		2, {TEXTOID, TEXTOID}
	},
	[P_RB_REDEMPTIONS] = {
		"SELECT r.redemption_id, r.coupon_id, r.campaign_id"
		" FROM loyalty.redemption r"
		" WHERE r.customer_id = $2 AND r.order_ref = $1 AND r.kind = 'redeem'"
		"   AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x"
		"                   WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)"
		" ORDER BY r.coupon_id",
		2, {TEXTOID, TEXTOID}
	},
	[P_RB_LOCK_COUPONS] = {
		"SELECT coupon_id FROM loyalty.coupon WHERE coupon_id = ANY ($1)"
		" ORDER BY coupon_id FOR NO KEY UPDATE",
		1, {INT8ARRAYOID}
	},
	[P_RB_LOCK_CAMPAIGNS] = {
		"SELECT campaign_id FROM loyalty.campaign"
		" WHERE campaign_id = ANY ($1) AND total_cap IS NOT NULL"
		" ORDER BY campaign_id FOR NO KEY UPDATE",
		1, {INT8ARRAYOID}
	},
	[P_RB_WRITE] = {
		"WITH rv AS ("
		"  INSERT INTO loyalty.redemption (kind, reverses, coupon_id, campaign_id,"
		"    customer_id, order_ref, uses, discount, on_shipping, currency, created_at)"
		"  SELECT 'reversal', r.redemption_id, r.coupon_id, r.campaign_id,"
		"         r.customer_id, r.order_ref, -1,"
		"         -r.discount - coalesce((SELECT sum(x.discount) FROM loyalty.redemption x"
		"           WHERE x.customer_id = r.customer_id AND x.order_ref = r.order_ref"
		"             AND x.coupon_id = r.coupon_id AND x.kind = 'return'), 0),"
		"         r.on_shipping, r.currency, $4"
		"  FROM loyalty.redemption r"
		"  WHERE r.customer_id = $5 AND r.redemption_id = ANY ($2)),"
		" ho AS (UPDATE loyalty.reservation SET state = 'released', ended_at = $4"
		"        WHERE customer_id = $5 AND order_ref = $1 AND state = 'held'"
		"        RETURNING 1),"
		" od AS (UPDATE loyalty.coupon_order"
		"        SET state = 'rolled_back', updated_at = $4, closed_at = $4"
		"        WHERE customer_id = $5 AND order_ref = $1)"
		" SELECT count(*) FROM ho",
		5, {TEXTOID, INT8ARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID}
	},
	[P_RB_CODES] = {
		"UPDATE loyalty.coupon c SET uses = c.uses - n.n"
		" FROM (SELECT u.id, count(*) AS n FROM pg_catalog.unnest($1) AS u(id)"
		"       GROUP BY u.id) n"
		" WHERE c.coupon_id = n.id",
		1, {INT8ARRAYOID}
	},
	[P_RB_CAMPAIGNS] = {
		"UPDATE loyalty.campaign c SET uses = c.uses - n.n"
		" FROM (SELECT u.id, count(*) AS n FROM pg_catalog.unnest($1) AS u(id)"
		"       GROUP BY u.id) n"
		" WHERE c.campaign_id = n.id AND c.campaign_id = ANY ($2)",
		2, {INT8ARRAYOID, INT8ARRAYOID}
	},
	[P_SEGMENT] = {
		"SELECT segment FROM loyalty.customer_segment WHERE customer_id = $1",
		1, {TEXTOID}
	},
	[P_ACTIVE_USES] = {
		"SELECT coalesce(sum(uses), 0)::pg_catalog.int8 FROM loyalty.redemption"
		" WHERE campaign_id = $1",
		1, {INT8OID}
	},
	[P_CAP_UNITS] = {
		"SELECT (SELECT coalesce(sum(uses), 0) FROM loyalty.redemption"
		"        WHERE campaign_id = $1 AND ($2 IS NULL OR customer_id = $2))::pg_catalog.int8"
		"     + (SELECT count(*) FROM loyalty.reservation"
		"        WHERE campaign_id = $1 AND ($2 IS NULL OR customer_id = $2)"
		"          AND state = 'held' AND expires_at > $3)"
		"     + (SELECT count(*) FROM loyalty.coupon s"
		"        WHERE " SOLD_UNIT_HELD("$1", "$3", "NULL") " AND ($2 IS NULL OR s.customer_id = $2))",
		3, {INT8OID, TEXTOID, TIMESTAMPTZOID}
	},
	[P_DAY_END] = {
		"SELECT loyalty._campaign_day_end($1)",
		1, {DATEOID}
	},
	[P_COUPON_BY_ID] = {
		"SELECT " COUPON_COLS " FROM loyalty.coupon WHERE coupon_id = $1",
		1, {INT8OID}
	},
	[P_UPDATE_HOLD] = {
		"UPDATE loyalty.reservation SET discount = $3, on_shipping = $4,"
		" line_discounts = $5"
		" WHERE customer_id = $6 AND order_ref = $1 AND coupon_id = $2"
		"   AND state = 'held'",
		6, {TEXTOID, INT8OID, NUMERICOID, BOOLOID, NUMERICARRAYOID, TEXTOID}
	},
	[P_ORDER_UPDATE] = {
		"UPDATE loyalty.coupon_order SET context_hash = $2, amount = $3,"
		" currency = $4, context = $5, updated_at = $6"
		" WHERE customer_id = $7 AND order_ref = $1",
		7, {TEXTOID, INT8OID, NUMERICOID, TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID}
	},
	[P_BUDGET_LOCK] = {
		"SELECT 1 FROM loyalty.campaign_budget WHERE campaign_id = $1"
		" FOR NO KEY UPDATE",
		1, {INT8OID}
	},
	[P_BUDGET_READ] = {
		"SELECT b.discount_used,"
		" (SELECT coalesce(sum(h.discount), 0) FROM loyalty.reservation h"
		"   WHERE h.campaign_id = $1 AND h.state = 'held' AND h.expires_at > $2"
		"     AND h.order_ref IS DISTINCT FROM $3),"
		" (SELECT count(*) FROM loyalty.reservation h"
		"   WHERE h.campaign_id = $1 AND h.state = 'held' AND h.expires_at > $2"
		"     AND h.order_ref IS DISTINCT FROM $3),"
		" ps.d,"
		" coalesce((SELECT u.uses FROM loyalty.campaign_period_use u"
		"   WHERE u.campaign_id = $1 AND u.period_start = ps.d), 0)"
		" FROM loyalty.campaign_budget b,"
		"  LATERAL (SELECT loyalty._campaign_period_start(b.period, $2) AS d) ps"
		" WHERE b.campaign_id = $1",
		3, {INT8OID, TIMESTAMPTZOID, TEXTOID}
	},
	[P_BUDGET_REDEEM] = {
		"WITH b AS (UPDATE loyalty.campaign_budget"
		"           SET discount_used = discount_used + $2 WHERE campaign_id = $1)"
		" INSERT INTO loyalty.campaign_period_use AS u (campaign_id, period_start, uses)"
		" SELECT $1, $3, 1 WHERE $3 IS NOT NULL"
		" ON CONFLICT (campaign_id, period_start) DO UPDATE SET uses = u.uses + 1",
		3, {INT8OID, NUMERICOID, DATEOID}
	},
	[P_RB_LOCK_BUDGETS] = {
		"SELECT campaign_id FROM loyalty.campaign_budget"
		" WHERE campaign_id = ANY ($1) ORDER BY campaign_id FOR NO KEY UPDATE",
		1, {INT8ARRAYOID}
	},
	[P_RB_BUDGETS] = {
		"WITH n AS ("
		"  SELECT r.campaign_id,"
		"         r.discount + coalesce((SELECT sum(x.discount) FROM loyalty.redemption x"
		"           WHERE x.order_ref = r.order_ref AND x.coupon_id = r.coupon_id"
		"             AND x.kind = 'return'), 0) AS net,"
		"         loyalty._campaign_period_start(b.period, r.created_at) AS ps"
		"  FROM loyalty.redemption r"
		"  JOIN loyalty.campaign_budget b ON b.campaign_id = r.campaign_id"
		"  WHERE r.redemption_id = ANY ($1)),"
		" bu AS (UPDATE loyalty.campaign_budget b SET discount_used = b.discount_used - s.net"
		"        FROM (SELECT campaign_id, sum(net) AS net FROM n GROUP BY campaign_id) s"
		"        WHERE b.campaign_id = s.campaign_id)"
		" UPDATE loyalty.campaign_period_use p SET uses = greatest(p.uses - s.k, 0)"
		" FROM (SELECT campaign_id, ps, count(*) AS k FROM n WHERE ps IS NOT NULL"
		"       GROUP BY campaign_id, ps) s"
		" WHERE p.campaign_id = s.campaign_id AND p.period_start = s.ps",
		1, {INT8ARRAYOID}
	},
};

/*
 * Kept plans and catalog OIDs, valid for one incarnation of the extension:
 * if the extension is dropped and created again in this backend, the schema
 * may survive (DROP EXTENSION keeps a schema it did not create) but the
 * coupon_code type gets a new OID, so both are checked and everything is
 * prepared afresh when either changed.
 */
static Oid	cached_nsp = InvalidOid;
static Oid	cached_code_type = InvalidOid;
static Oid	cached_campaign_rel = InvalidOid;
static Oid	cached_redemption_rel = InvalidOid;
static SPIPlanPtr plans[NPLANS];
static SPIPlanPtr redeem_plans[8];
static bool store_read_only = false;
static bool campaign_cache_stale = false;

static Oid	CouponMapType(Oid argtype);

/* The statements above, prepared on first use (loyalty_spi.h). */
static LoyaltyPlanCatalog coupon_plans = {
	"coupon", PlanDefs, NPLANS, 0, CouponMapType, plans, 0
};

/*
 * Start a call: check that the cached plans belong to the installed
 * extension, and remember whether this call may write (validate may not;
 * its statements then run read-only on the caller's snapshot).  Must be
 * called after SPI_connect.
 */
void
CouponStoreBegin(bool read_only)
{
	Oid			nsp;

	store_read_only = read_only;
	/* nothing to re-check unless a schema or a type changed meanwhile */
	if (!LoyaltyPlanCatalogMoved(&coupon_plans) && OidIsValid(cached_nsp))
		return;
	nsp = get_namespace_oid("loyalty", false);
	if (nsp == cached_nsp &&
		SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(cached_code_type)))
		return;
	LoyaltyPlanReset(&coupon_plans);
	for (int i = 0; i < (int) lengthof(redeem_plans); i++)
	{
		if (redeem_plans[i] != NULL)
			SPI_freeplan(redeem_plans[i]);
		redeem_plans[i] = NULL;
	}
	campaign_cache_stale = true;
	cached_nsp = InvalidOid;
	cached_code_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									   CStringGetDatum("coupon_code"),
									   ObjectIdGetDatum(nsp));
	cached_campaign_rel = get_relname_relid("campaign", nsp);
	cached_redemption_rel = get_relname_relid("redemption", nsp);
	if (!OidIsValid(cached_code_type) || !OidIsValid(cached_campaign_rel) ||
		!OidIsValid(cached_redemption_rel))
		elog(ERROR, "loyalty coupon objects are missing");
	cached_nsp = nsp;
}

/* The OID of loyalty.coupon_code (valid after CouponStoreBegin). */
Oid
CouponCodeTypeOid(void)
{
	return cached_code_type;
}

/* CODE_TYPE stands for loyalty.coupon_code in PlanDefs. */
static Oid
CouponMapType(Oid argtype)
{
	return argtype == CODE_TYPE ? cached_code_type : argtype;
}

/*
 * Run a statement.  latest: read with the newest snapshot (rows committed
 * by competitors after the caller's snapshot included); used for reads done
 * under the locks that decide caps, and for the campaign cache (which must
 * never hold a state older than the invalidations already processed).
 */
static int
Exec(PlanId id, Datum *values, const char *nulls, bool latest)
{
	return LoyaltyPlanExec(&coupon_plans, id, values, nulls, store_read_only,
						   latest);
}

/* ---- reading result columns ---- */

/* A currency column into a char[4] ("" when null). */
static void
ColCurrency(LoyaltyRow r, int col, char *out)
{
	char	   *s = LoyaltyColText(r, col);

	strlcpy(out, s ? s : "", 4);
}

/* A text[] column as a sorted name list. */
static void
ColNameList(LoyaltyRow r, int col, CouponNameList *list)
{
	bool		isnull;
	Datum		d = LoyaltyColDatum(r, col, &isnull);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			k = 0;

	list->n = 0;
	list->names = NULL;
	if (isnull)
		return;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	list->names = palloc(sizeof(char *) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			list->names[k++] = TextDatumGetCString(elems[i]);
	list->n = k;
	CouponSortNames(list);
}

/* ---- datum helpers ---- */

static Datum
TextArg(const char *s)
{
	return CStringGetTextDatum(s);
}

/* ---- coupons and campaigns ---- */

static bool ReadCoupon(Coupon *cp);

/*
 * A coupon_code column as the type prints it (its output function: the
 * stored display text), for messages.
 */
static char *
CodeDisplay(LoyaltyRow r, int col)
{
	bool		isnull;
	Datum		d = LoyaltyColDatum(r, col, &isnull);
	CouponCode *c;

	if (isnull)
		return NULL;
	c = DatumGetCouponCodeP(d);
	return pnstrdup(CouponCodeDisplay(c), CouponCodeDisplayLen(c));
}

/*
 * Find a coupon by code; lock: FOR NO KEY UPDATE (lock order step 2).
 * Returns false if there is no such code.
 */
bool
CouponLookup(Datum code, bool lock, Coupon *cp)
{
	Datum		values[1] = {code};

	Exec(lock ? P_LOOKUP_LOCK : P_LOOKUP, values, NULL, false);
	return ReadCoupon(cp);
}

/*
 * A coupon by id (the caller has locked its row), voided or not: the
 * coupons an order already holds.
 */
void
CouponById(int64 coupon_id, Coupon *cp)
{
	Datum		values[1] = {Int64GetDatum(coupon_id)};

	Exec(P_COUPON_BY_ID, values, NULL, false);
	if (!ReadCoupon(cp))
		elog(ERROR, "coupon " INT64_FORMAT " does not exist", coupon_id);
}

/* The coupon row of the last statement (COUPON_COLS), if there is one. */
static bool
ReadCoupon(Coupon *cp)
{
	if (SPI_processed == 0)
		return false;
	cp->id = LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
	cp->campaign_id = LoyaltyColInt64(LoyaltySpiRow(0), 2, NULL);
	cp->customer_id = LoyaltyColText(LoyaltySpiRow(0), 3);
	cp->max_uses = LoyaltyColInt64(LoyaltySpiRow(0), 4, &cp->has_max_uses);
	cp->has_max_uses = !cp->has_max_uses;
	cp->uses = LoyaltyColInt64(LoyaltySpiRow(0), 5, NULL);
	cp->reservations = LoyaltyColInt64(LoyaltySpiRow(0), 6, NULL);
	cp->display = CodeDisplay(LoyaltySpiRow(0), 7);
	return true;
}

static CampaignKind
KindFromText(const char *s)
{
	if (strcmp(s, "percent") == 0)
		return CAMPAIGN_PERCENT;
	if (strcmp(s, "fixed") == 0)
		return CAMPAIGN_FIXED;
	if (strcmp(s, "free_shipping") == 0)
		return CAMPAIGN_FREE_SHIPPING;
	if (strcmp(s, "buy_x_get_y") == 0)
		return CAMPAIGN_BUY_X_GET_Y;
	if (strcmp(s, "free_item") == 0)
		return CAMPAIGN_FREE_ITEM;
	elog(ERROR, "unknown campaign kind \"%s\"", s);
	return CAMPAIGN_PERCENT;	/* keep compiler quiet */
}

/* Parse a campaign row (P_CAMPAIGN's columns) into *cm. */
static void
ParseCampaign(LoyaltyRow row, int64 campaign_id, Campaign *cm)
{
	bool		isnull;
	Datum		d;

	memset(cm, 0, sizeof(*cm));
	cm->id = campaign_id;
	cm->kind = KindFromText(LoyaltyColText(row, 1));
	ColCurrency(row, 2, cm->currency);
	cm->percent_off = LoyaltyColNumeric(row, 3);
	cm->max_discount = LoyaltyColNumeric(row, 4);
	cm->amount_off = LoyaltyColNumeric(row, 5);
	cm->buy_quantity = LoyaltyColInt32(row, 6, NULL);
	cm->get_quantity = LoyaltyColInt32(row, 7, NULL);
	cm->free_sku = LoyaltyColText(row, 8);
	cm->free_quantity = LoyaltyColInt32(row, 9, NULL);
	cm->starts_at = LoyaltyColTimestamp(row, 10, &isnull);
	cm->has_starts_at = !isnull;
	cm->ends_at = LoyaltyColTimestamp(row, 11, &isnull);
	cm->has_ends_at = !isnull;
	cm->paused = LoyaltyColBool(row, 12);
	cm->total_cap = LoyaltyColInt64(row, 13, &isnull);
	cm->has_total_cap = !isnull;
	cm->per_customer_cap = LoyaltyColInt32(row, 14, NULL);
	cm->min_order_amount = LoyaltyColNumeric(row, 15);
	ColNameList(row, 16, &cm->include_skus);
	ColNameList(row, 17, &cm->exclude_skus);
	ColNameList(row, 18, &cm->include_categories);
	ColNameList(row, 19, &cm->exclude_categories);
	cm->exclusive = LoyaltyColBool(row, 20);
	cm->max_coupons_per_order = LoyaltyColInt32(row, 21, NULL);
	cm->has_budget = LoyaltyColBool(row, 26);
	if (cm->has_budget)
	{
		cm->discount_budget = LoyaltyColNumeric(row, 27);
		cm->period = LoyaltyColText(row, 28);
		cm->period_cap = LoyaltyColInt64(row, 29, NULL);
	}
	d = LoyaltyColDatum(row, 25, &isnull);
	cm->has_ends_on = !isnull;
	if (!isnull)
		cm->ends_on = DatumGetDateADT(d);

	d = LoyaltyColDatum(row, 22, &isnull);
	if (!isnull)
	{
		Datum	   *kinds;
		Datum	   *params;
		Datum	   *funcs;
		int			n;
		int			n2;
		int			n3;
		int			i;

		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false,
						  TYPALIGN_INT, &kinds, NULL, &n);
		deconstruct_array(DatumGetArrayTypeP(LoyaltyColDatum(row, 23, &isnull)), JSONBOID,
						  -1, false, TYPALIGN_INT, &params, NULL, &n2);
		deconstruct_array(DatumGetArrayTypeP(LoyaltyColDatum(row, 24, &isnull)), OIDOID,
						  sizeof(Oid), true, TYPALIGN_INT, &funcs, NULL, &n3);
		if (n != n2 || n != n3)
			elog(ERROR, "inconsistent rules of campaign " INT64_FORMAT, campaign_id);
		cm->nrules = n;
		cm->rules = palloc(sizeof(CouponRule) * n);
		for (i = 0; i < n; i++)
		{
			cm->rules[i].kind = TextDatumGetCString(kinds[i]);
			cm->rules[i].params = DatumGetJsonbP(params[i]);
			cm->rules[i].check_function = DatumGetObjectId(funcs[i]);
		}
	}
}

/*
 * The campaign cache: campaign rows (with their rules), as last read with
 * the newest snapshot, kept per backend so that a redemption does not read
 * its campaign again.  Every change to loyalty.campaign (except the cap
 * counter), loyalty.campaign_rule or loyalty.eligibility_kind fires a
 * trigger (coupon_campaign_changed) that sends a relcache invalidation of
 * loyalty.campaign; each backend receives it when it next acquires a lock,
 * which a redemption always does on the campaign gate before it reads the
 * campaign, and flushes the cache.  A change therefore reaches every
 * redemption that takes the gate after the change committed - the same
 * guarantee as reading the row.  On abort, PostgreSQL replays the aborted
 * transaction's invalidations locally, so uncommitted data never stays.
 */
typedef struct CampaignCacheEntry
{
	int64		campaign_id;	/* hash key */
	HeapTuple	tuple;
} CampaignCacheEntry;

static HTAB *campaign_cache = NULL;
static MemoryContext campaign_cache_cxt = NULL;
static TupleDesc campaign_cache_desc = NULL;

/* Relcache invalidation callback: loyalty.campaign changed (or all did). */
static void
CampaignCacheInvalidate(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == cached_campaign_rel)
		campaign_cache_stale = true;
}

/*
 * Called from _PG_init: hand the campaign cache's invalidation function to
 * the extension's one relcache callback (loyalty_cache.h).
 */
void
CouponInit(void)
{
	LoyaltyCacheOnRelation(CampaignCacheInvalidate, (Datum) 0);
}

/* Drop every cached campaign (outside of any use of their tuples). */
static void
CampaignCacheReset(void)
{
	HASHCTL		ctl;

	if (campaign_cache_cxt == NULL)
		campaign_cache_cxt = AllocSetContextCreate(TopMemoryContext,
												   "loyalty campaign cache",
												   ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(campaign_cache_cxt);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(CampaignCacheEntry);
	ctl.hcxt = campaign_cache_cxt;
	campaign_cache = hash_create("loyalty campaign cache", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	campaign_cache_desc = NULL;
	campaign_cache_stale = false;
}

/*
 * Read a campaign and its eligibility rules, from the cache or with the
 * newest snapshot.  The lifecycle calls read it after taking the campaign
 * gate (whose acquisition processes pending invalidations); validate calls
 * AcceptInvalidationMessages first.  The tuple is copied into the caller's
 * memory before it is parsed, so a flush during the call cannot pull it
 * away.
 */
void
CouponReadCampaign(int64 campaign_id, Campaign *cm)
{
	CampaignCacheEntry *entry;
	bool		found;
	LoyaltyRow			row;

	if (campaign_cache == NULL || campaign_cache_stale)
		CampaignCacheReset();
	entry = hash_search(campaign_cache, &campaign_id, HASH_FIND, NULL);
	if (entry == NULL)
	{
		Datum		values[1] = {Int64GetDatum(campaign_id)};
		MemoryContext old;
		HeapTuple	copy;

		Exec(P_CAMPAIGN, values, NULL, true);
		if (SPI_processed != 1)
			elog(ERROR, "campaign " INT64_FORMAT " of a coupon does not exist",
				 campaign_id);

		/*
		 * An invalidation processed while the statement opened its tables
		 * may concern a change newer than the snapshot it read with: use the
		 * row for this call only, and cache nothing.
		 */
		if (campaign_cache_stale)
		{
			CampaignCacheReset();
			ParseCampaign(LoyaltySpiRow(0), campaign_id, cm);
			return;
		}
		old = MemoryContextSwitchTo(campaign_cache_cxt);
		if (campaign_cache_desc == NULL)
			campaign_cache_desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		/* flat: no pointer into TOAST, which a later update could vacuum */
		copy = toast_flatten_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
		MemoryContextSwitchTo(old);
		entry = hash_search(campaign_cache, &campaign_id, HASH_ENTER, &found);
		entry->tuple = copy;
	}
	row.tuple = heap_copytuple(entry->tuple);
	row.desc = campaign_cache_desc;
	ParseCampaign(row, campaign_id, cm);
}

/*
 * When a campaign with a date-only end (ends_on) ends: the next midnight in
 * the program time zone as it is now (loyalty._campaign_day_end), read at
 * every call rather than cached with the campaign, so that a change of the
 * zone applies at once.
 */
TimestampTz
CouponDayEnd(DateADT day)
{
	Datum		values[1] = {DateADTGetDatum(day)};

	Exec(P_DAY_END, values, NULL, true);
	return LoyaltyColTimestamp(LoyaltySpiRow(0), 1, NULL);
}

/* ---- orders ---- */

static void
ReadOrderRow(CouponOrder *order)
{
	char	   *state;

	order->customer_id = LoyaltyColText(LoyaltySpiRow(0), 1);
	order->context_hash = LoyaltyColInt64(LoyaltySpiRow(0), 2, NULL);
	state = LoyaltyColText(LoyaltySpiRow(0), 3);
	order->rolled_back = strcmp(state, "rolled_back") == 0;
}

/*
 * The customer owning an order_ref (loyalty.coupon_order_owner), or NULL
 * for an order never seen.
 */
static char *
OrderOwner(const char *order_ref)
{
	Datum		key[1] = {TextArg(order_ref)};

	Exec(P_ORDER_OWNER, key, NULL, false);
	if (SPI_processed == 0)
		return NULL;
	return LoyaltyColText(LoyaltySpiRow(0), 1);
}

/*
 * Read (lock: FOR NO KEY UPDATE) the order row of order_ref under its
 * owner: false when the order is unknown.  The row belongs to the owner,
 * who may be another customer than the caller (the callers compare).
 */
static bool
ReadOwnedOrder(const char *order_ref, bool lock, CouponOrder *order)
{
	char	   *owner = OrderOwner(order_ref);
	Datum		key[2];

	memset(order, 0, sizeof(*order));
	if (owner == NULL)
		return false;
	key[0] = TextArg(order_ref);
	key[1] = TextArg(owner);
	Exec(lock ? P_ORDER_LOCK : P_ORDER_READ, key, NULL, false);
	if (SPI_processed != 1)
		elog(ERROR, "coupon order \"%s\" has an owner but no order row", order_ref);
	order->exists = true;
	ReadOrderRow(order);
	return true;
}

/*
 * Lock order step 1: claim the order_ref and insert the order row, or lock
 * the existing row (its owner's, who may be another customer).  A claim
 * that meets a concurrent uncommitted claim of the same order_ref waits for
 * it; owners and order rows are never deleted.
 */
void
CouponLockOrder(const char *order_ref, const char *customer_id,
				const OrderContext *ctx, TimestampTz now, CouponOrder *order)
{
	Datum		values[7];
	char		nulls[7] = "       ";

	values[0] = TextArg(order_ref);
	values[1] = TextArg(customer_id);
	values[2] = TimestampTzGetDatum(now);
	Exec(P_ORDER_CLAIM, values, NULL, false);
	if (SPI_processed == 0)
	{
		ReadOwnedOrder(order_ref, true, order);
		return;
	}
	memset(order, 0, sizeof(*order));
	values[0] = TextArg(order_ref);
	values[1] = TextArg(customer_id);
	values[2] = Int64GetDatum(ctx->hash);
	values[3] = NumericGetDatum(ctx->amount);
	if (ctx->has_currency)
		values[4] = TextArg(ctx->currency);
	else
	{
		values[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	values[5] = TimestampTzGetDatum(now);
	if (ctx->json != NULL)
		values[6] = JsonbPGetDatum(ctx->json);
	else
	{
		values[6] = (Datum) 0;
		nulls[6] = 'n';
	}
	Exec(P_ORDER_INSERT, values, nulls, false);
	if (SPI_processed != 1)
		elog(ERROR, "coupon order \"%s\" was claimed but has an order row", order_ref);
	order->exists = false;
	order->customer_id = pstrdup(customer_id);
	order->context_hash = ctx->hash;
}

/* Read an order without locking (validate). */
void
CouponReadOrder(const char *order_ref, CouponOrder *order)
{
	ReadOwnedOrder(order_ref, false, order);
}

/*
 * The coupons already on an order (read by CouponLockOrder or
 * CouponReadOrder: order->customer_id is its owner): its active
 * redemptions and unexpired reservations, with what stacking needs of
 * their campaigns.
 */
void
CouponReadAttached(const char *order_ref, TimestampTz now, bool latest,
				   CouponOrder *order)
{
	Datum		values[3] = {TextArg(order_ref), TimestampTzGetDatum(now),
	TextArg(order->customer_id)};
	uint64		i;

	Exec(P_ATTACHED, values, NULL, latest);
	order->nattached = (int) SPI_processed;
	order->attached = palloc0(sizeof(CouponAttached) * Max(order->nattached, 1));
	for (i = 0; i < SPI_processed; i++)
	{
		CouponAttached *a = &order->attached[i];

		a->coupon_id = LoyaltyColInt64(LoyaltySpiRow(i), 1, NULL);
		a->campaign_id = LoyaltyColInt64(LoyaltySpiRow(i), 2, NULL);
		a->redeemed = LoyaltyColBool(LoyaltySpiRow(i), 3);
		a->discount = LoyaltyColNumeric(LoyaltySpiRow(i), 4);
		a->on_shipping = LoyaltyColBool(LoyaltySpiRow(i), 5);
		a->exclusive = LoyaltyColBool(LoyaltySpiRow(i), 6);
		a->max_coupons_per_order = LoyaltyColInt32(LoyaltySpiRow(i), 7, NULL);
		ColCurrency(LoyaltySpiRow(i), 8, a->currency);
	}
}

/* ---- locks ---- */

/*
 * Lock order step 3: the campaign gate, shared.  campaign_id is folded into
 * an object id; two campaigns whose ids are equal modulo 2^32 would share a
 * gate, which costs waiting, never correctness.
 */
void
CouponGateShared(int64 campaign_id)
{
	LockDatabaseObject(cached_campaign_rel, (Oid) campaign_id, 0,
					   AccessShareLock);
}

/* The campaign gate, exclusive: pause, resume and every campaign change. */
void
CouponGateExclusive(int64 campaign_id)
{
	LockDatabaseObject(cached_campaign_rel, (Oid) campaign_id, 0,
					   AccessExclusiveLock);
}

/*
 * Lock order step 4: the campaign row of a capped campaign.  Returns its
 * active-redemption counter.
 */
int64
CouponLockCampaignRow(int64 campaign_id)
{
	Datum		values[1] = {Int64GetDatum(campaign_id)};

	Exec(P_CAMPAIGN_LOCK, values, NULL, false);
	if (SPI_processed != 1)
		elog(ERROR, "campaign " INT64_FORMAT " does not exist", campaign_id);
	return LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
}

/*
 * A capped campaign's active-redemption counter, without a lock (validate:
 * the counter is not part of the cached campaign, it changes with every
 * redemption).
 */
int64
CouponCampaignUses(int64 campaign_id)
{
	Datum		values[1] = {Int64GetDatum(campaign_id)};

	Exec(P_CAMPAIGN_USES, values, NULL, false);
	if (SPI_processed != 1)
		elog(ERROR, "campaign " INT64_FORMAT " does not exist", campaign_id);
	return LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
}

/*
 * Lock order step 5: one customer in one campaign, for the per-customer cap
 * (two orders of one customer serialise here).  Hash collisions only make
 * two customers wait for each other.
 */
void
CouponLockCustomer(int64 campaign_id, const char *customer_id)
{
	uint32		h = hash_bytes((const unsigned char *) customer_id,
							   strlen(customer_id));

	h = hash_combine(h, hash_bytes_uint32((uint32) campaign_id));
	h = hash_combine(h, hash_bytes_uint32((uint32) (campaign_id >> 32)));
	LockDatabaseObject(cached_redemption_rel, (Oid) h, 0, ExclusiveLock);
}

/*
 * Count what the caps need, for other orders than order_ref: reservations
 * of the code (only if the code was ever reserved), of the campaign (only
 * with a total cap), and the customer's redemptions and reservations in the
 * campaign (only with a per-customer cap).
 */
void
CouponCountUsage(const Coupon *cp, const Campaign *cm, const char *customer_id,
				 const char *order_ref, TimestampTz now, bool latest,
				 CouponUsage *usage)
{
	Datum		values[8];
	char		nulls[8] = "        ";
	bool		coupon_holds = cp->has_max_uses && cp->reservations > 0;
	bool		campaign_holds = cm->has_total_cap;
	bool		customer = cm->per_customer_cap > 0;

	memset(usage, 0, sizeof(*usage));
	if (!coupon_holds && !campaign_holds && !customer)
		return;
	values[0] = Int64GetDatum(cp->id);
	values[1] = Int64GetDatum(cm->id);
	values[2] = TextArg(customer_id);
	values[3] = TimestampTzGetDatum(now);
	if (order_ref != NULL)
		values[4] = TextArg(order_ref);
	else
	{
		values[4] = (Datum) 0;
		nulls[4] = 'n';
	}
	values[5] = BoolGetDatum(coupon_holds);
	values[6] = BoolGetDatum(campaign_holds);
	values[7] = BoolGetDatum(customer);
	Exec(P_COUNTS, values, nulls, latest);
	usage->coupon_holds = LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
	usage->campaign_holds = LoyaltyColInt64(LoyaltySpiRow(0), 2, NULL);
	usage->customer_uses = LoyaltyColInt64(LoyaltySpiRow(0), 3, NULL);
	usage->customer_holds = LoyaltyColInt64(LoyaltySpiRow(0), 4, NULL);
	usage->campaign_sold = LoyaltyColInt64(LoyaltySpiRow(0), 5, NULL);
	usage->customer_sold = LoyaltyColInt64(LoyaltySpiRow(0), 6, NULL);
}

/*
 * The usage a budgeted campaign's budget checks need, for other orders
 * than order_ref: the discount of its active redemptions (net of partial
 * returns), the discount and number of its live reservations, the current
 * period and the redemptions counted in it.  lock: take the budget row
 * first (lock order step 4b: after the capped campaign row, before the
 * customer lock) and count with the newest snapshot; the counters are only
 * written, and reservations of the campaign only made, under that lock.
 * Without lock (validate): the caller's snapshot, no lock.
 */
void
CouponCountBudget(const Campaign *cm, const char *order_ref, TimestampTz now,
				  bool lock, CouponUsage *usage)
{
	Datum		values[3];
	char		nulls[3] = "   ";
	LoyaltyRow	row;
	bool		isnull;
	Datum		d;

	values[0] = Int64GetDatum(cm->id);
	values[1] = TimestampTzGetDatum(now);
	if (order_ref != NULL)
		values[2] = TextArg(order_ref);
	else
	{
		values[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	if (lock)
		Exec(P_BUDGET_LOCK, values, NULL, false);
	Exec(P_BUDGET_READ, values, nulls, lock);
	usage->budget_used = LoyaltyNumericZero();
	usage->budget_held = LoyaltyNumericZero();
	usage->period_start = 0;
	usage->period_uses = 0;
	usage->period_holds = 0;
	if (SPI_processed != 1)
		return;					/* the budget was removed meanwhile */
	row = LoyaltySpiRow(0);
	usage->budget_used = LoyaltyColNumeric(row, 1);
	usage->budget_held = LoyaltyColNumeric(row, 2);
	usage->period_holds = LoyaltyColInt64(row, 3, NULL);
	d = LoyaltyColDatum(row, 4, &isnull);
	if (!isnull)
		usage->period_start = DatumGetDateADT(d);
	else
		usage->period_holds = 0;
	usage->period_uses = LoyaltyColInt64(row, 5, NULL);
}

/*
 * A redemption of a budgeted campaign was recorded: add its discount to
 * the budget's counter and count it in the current period (the caller
 * holds the budget row since CouponCountBudget).
 */
void
CouponBudgetRedeemed(const Campaign *cm, const CouponUsage *usage,
					 Numeric discount)
{
	Datum		values[3];
	char		nulls[3] = "   ";

	values[0] = Int64GetDatum(cm->id);
	values[1] = NumericGetDatum(discount);
	values[2] = DateADTGetDatum(usage->period_start);
	if (cm->period == NULL)
		nulls[2] = 'n';
	Exec(P_BUDGET_REDEEM, values, nulls, false);
}

/*
 * Units of a campaign's total cap (customer_id NULL) or of one customer's
 * per-customer cap in use at "now": active redemptions, live reservations
 * and unused codes sold for points, counted with the newest snapshot.
 * With a customer, the customer lock (step 5) is taken first, so the count
 * holds until the end of the transaction against every coupon call of
 * that customer; for the total cap the caller holds the campaign row
 * (step 4).  For exchange_points, before it sells a code.
 */
int64
CouponCapUnits(int64 campaign_id, const char *customer_id, TimestampTz now)
{
	Datum		values[3];
	char		nulls[3] = "   ";

	values[0] = Int64GetDatum(campaign_id);
	if (customer_id != NULL)
	{
		CouponLockCustomer(campaign_id, customer_id);
		values[1] = TextArg(customer_id);
	}
	else
	{
		values[1] = (Datum) 0;
		nulls[1] = 'n';
	}
	values[2] = TimestampTzGetDatum(now);
	Exec(P_CAP_UNITS, values, nulls, true);
	return LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
}

/* ---- writes ---- */

/*
 * The statement that records a redemption, in the variant this call needs:
 * the ledger row and the code's counter always; the campaign's counter for
 * capped campaigns; the caller's reservation consumed when the order may
 * have one; the order row touched when it existed before (so that a
 * REPEATABLE READ rollback of the same order gets a serialization failure
 * rather than missing this redemption).  Parts a call does not need are
 * left out rather than filtered at run time: every table a statement
 * writes costs opening it and its indexes.
 */
static SPIPlanPtr
RedeemPlan(bool capped, bool consume_hold, bool order_existed)
{
	int			v = (capped ? 1 : 0) | (consume_hold ? 2 : 0) | (order_existed ? 4 : 0);

	if (redeem_plans[v] == NULL)
	{
		StringInfoData sql;
		Oid			types[9] = {INT8OID, INT8OID, TEXTOID, TEXTOID, NUMERICOID,
		BOOLOID, TEXTOID, TIMESTAMPTZOID, NUMERICARRAYOID};

		initStringInfo(&sql);
		appendStringInfoString(&sql,
							   "WITH ins AS ("
							   "  INSERT INTO loyalty.redemption (kind, coupon_id, campaign_id,"
							   "    customer_id, order_ref, uses, discount, on_shipping, currency,"
							   "    created_at, line_discounts)"
							   "  VALUES ('redeem', $1, $2, $3, $4, 1, $5, $6, $7, $8, $9)"
							   "  RETURNING redemption_id),"
							   " cu AS (UPDATE loyalty.coupon SET uses = uses + 1"
							   "        WHERE coupon_id = $1)");
		if (capped)
			appendStringInfoString(&sql,
								   ", ca AS (UPDATE loyalty.campaign SET uses = uses + 1"
								   "         WHERE campaign_id = $2)");
		if (consume_hold)
			appendStringInfoString(&sql,
								   ", ho AS (UPDATE loyalty.reservation"
								   "         SET state = 'consumed', ended_at = $8"
								   "         WHERE customer_id = $3 AND order_ref = $4"
								   "           AND coupon_id = $1 AND state = 'held')");
		if (order_existed)
			appendStringInfoString(&sql,
								   ", od AS (UPDATE loyalty.coupon_order SET updated_at = $8"
								   "         WHERE customer_id = $3 AND order_ref = $4)");
		appendStringInfoString(&sql, " SELECT redemption_id FROM ins");
		LoyaltyKeepPlan(&redeem_plans[v], sql.data, 9, types, 0);
	}
	return redeem_plans[v];
}

/* Record a redemption (see RedeemPlan for what is written). */
void
CouponInsertRedemption(const Coupon *cp, const Campaign *cm,
					   const char *customer_id, const char *order_ref,
					   Numeric discount, bool on_shipping, Datum lines,
					   bool consume_hold, bool order_existed, TimestampTz now)
{
	Datum		values[9];
	char		nulls[9] = "         ";
	int			rc;

	values[0] = Int64GetDatum(cp->id);
	values[1] = Int64GetDatum(cm->id);
	values[2] = TextArg(customer_id);
	values[3] = TextArg(order_ref);
	values[4] = NumericGetDatum(discount);
	values[5] = BoolGetDatum(on_shipping);
	values[6] = TextArg(cm->currency);
	values[7] = TimestampTzGetDatum(now);
	values[8] = lines;
	if (lines == (Datum) 0)
		nulls[8] = 'n';
	rc = SPI_execute_plan(RedeemPlan(cm->has_total_cap, consume_hold,
									 order_existed),
						  values, nulls, false, 0);
	if (rc < 0 || SPI_processed != 1)
		elog(ERROR, "redemption was not recorded: %s", SPI_result_code_string(rc));
}

/*
 * The order's reservation of this code, if one is recorded as held (it may
 * have expired: *expired says so).
 */
bool
CouponFindHold(const char *customer_id, const char *order_ref,
			   int64 coupon_id, TimestampTz now, Numeric *discount,
			   TimestampTz *expires_at, bool *expired)
{
	Datum		values[3] = {TextArg(order_ref), Int64GetDatum(coupon_id),
	TextArg(customer_id)};

	Exec(P_FIND_HOLD, values, NULL, false);
	if (SPI_processed == 0)
		return false;
	*discount = LoyaltyColNumeric(LoyaltySpiRow(0), 1);
	*expires_at = LoyaltyColTimestamp(LoyaltySpiRow(0), 2, NULL);
	*expired = *expires_at <= now;
	return true;
}

/*
 * Record a reservation (after marking the order's expired hold of the same
 * code as expired, when there is one), count it on the code, touch the
 * order row.  Returns the expiry time.
 */
TimestampTz
CouponInsertHold(const Coupon *cp, const Campaign *cm, const char *customer_id,
				 const char *order_ref, Numeric discount, bool on_shipping,
				 Datum lines, bool expire_old, bool order_existed,
				 TimestampTz now, TimestampTz expires_at)
{
	Datum		values[10];
	char		nulls[10] = "          ";

	if (expire_old)
	{
		Datum		ev[4] = {TextArg(order_ref), Int64GetDatum(cp->id),
		TimestampTzGetDatum(now), TextArg(customer_id)};

		Exec(P_EXPIRE_HOLD, ev, NULL, false);
	}
	values[0] = Int64GetDatum(cp->id);
	values[1] = Int64GetDatum(cm->id);
	values[2] = TextArg(customer_id);
	values[3] = TextArg(order_ref);
	values[4] = NumericGetDatum(discount);
	values[5] = BoolGetDatum(on_shipping);
	values[6] = TimestampTzGetDatum(now);
	values[7] = TimestampTzGetDatum(expires_at);
	values[8] = BoolGetDatum(order_existed);
	values[9] = lines;
	if (lines == (Datum) 0)
		nulls[9] = 'n';
	Exec(P_INSERT_HOLD, values, nulls, false);
	if (SPI_processed != 1)
		elog(ERROR, "reservation was not recorded");
	return LoyaltyColTimestamp(LoyaltySpiRow(0), 1, NULL);
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
 * Roll an order back: reverse every active redemption (a reversal row
 * each, history kept), give the uses back to codes and capped campaigns,
 * release the order's reservations and close the order.  Locks in the
 * global order.  Returns false when there was nothing to give back (an
 * unknown order, or one already rolled back).
 */
bool
CouponRollbackOrder(const char *order_ref, TimestampTz now)
{
	char	   *owner = OrderOwner(order_ref);
	Datum		key[2];
	int			n;
	int64	   *redemptions;
	int64	   *coupons;
	int64	   *campaigns;
	int64	   *by_redemption;
	int64	   *capped;
	int			ncapped;
	int			ncampaigns = 0;
	int			i;
	Datum		values[5];
	int64		released;

	if (owner == NULL)
		return false;
	key[0] = TextArg(order_ref);
	key[1] = TextArg(owner);
	Exec(P_RB_LOCK_ORDER, key, NULL, false);
	if (SPI_processed == 0)
		return false;
	if (strcmp(LoyaltyColText(LoyaltySpiRow(0), 1), "rolled_back") == 0)
		return false;

	Exec(P_RB_REDEMPTIONS, key, NULL, false);
	n = (int) SPI_processed;
	redemptions = palloc(sizeof(int64) * Max(n, 1));
	coupons = palloc(sizeof(int64) * Max(n, 1));
	campaigns = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		redemptions[i] = LoyaltyColInt64(LoyaltySpiRow(i), 1, NULL);
		coupons[i] = LoyaltyColInt64(LoyaltySpiRow(i), 2, NULL);
		campaigns[i] = LoyaltyColInt64(LoyaltySpiRow(i), 3, NULL);
	}
	by_redemption = palloc(sizeof(int64) * Max(n, 1));
	memcpy(by_redemption, campaigns, sizeof(int64) * n);

	/* step 2: the coupon rows, in coupon_id order (the query sorts) */
	if (n > 0)
	{
		values[0] = LoyaltyInt8ArrayDatum(coupons, n);
		Exec(P_RB_LOCK_COUPONS, values, NULL, false);
	}

	/* step 3: the gates, in campaign_id order, each once */
	qsort(campaigns, n, sizeof(int64), Int64Cmp);
	for (i = 0; i < n; i++)
		if (i == 0 || campaigns[i] != campaigns[i - 1])
			campaigns[ncampaigns++] = campaigns[i];
	for (i = 0; i < ncampaigns; i++)
		CouponGateShared(campaigns[i]);

	/* step 4: the rows of the capped campaigns, in campaign_id order */
	ncapped = 0;
	capped = palloc(sizeof(int64) * Max(ncampaigns, 1));
	if (ncampaigns > 0)
	{
		values[0] = LoyaltyInt8ArrayDatum(campaigns, ncampaigns);
		Exec(P_RB_LOCK_CAMPAIGNS, values, NULL, false);
		for (i = 0; i < (int) SPI_processed; i++)
			capped[ncapped++] = LoyaltyColInt64(LoyaltySpiRow(i), 1, NULL);
	}

	/* step 4b: the budget rows, in campaign_id order; their counters */
	if (ncampaigns > 0)
	{
		values[0] = LoyaltyInt8ArrayDatum(campaigns, ncampaigns);
		Exec(P_RB_LOCK_BUDGETS, values, NULL, false);
		if (SPI_processed > 0)
		{
			values[0] = LoyaltyInt8ArrayDatum(redemptions, n);
			Exec(P_RB_BUDGETS, values, NULL, false);
		}
	}

	values[0] = TextArg(order_ref);
	values[1] = LoyaltyInt8ArrayDatum(redemptions, n);
	values[2] = LoyaltyInt8ArrayDatum(capped, ncapped);
	values[3] = TimestampTzGetDatum(now);
	values[4] = TextArg(owner);
	Exec(P_RB_WRITE, values, NULL, false);
	released = LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
	/* the uses given back: one statement per table (reference tables on Citus) */
	if (n > 0)
	{
		values[0] = LoyaltyInt8ArrayDatum(coupons, n);
		Exec(P_RB_CODES, values, NULL, false);
	}
	if (ncapped > 0)
	{
		values[0] = LoyaltyInt8ArrayDatum(by_redemption, n);
		values[1] = LoyaltyInt8ArrayDatum(capped, ncapped);
		Exec(P_RB_CAMPAIGNS, values, NULL, false);
	}
	return n > 0 || released > 0;
}

/*
 * Active redemptions of a campaign, counted with the newest snapshot: the
 * campaign's counter when a total cap is set on a running campaign (the
 * caller holds the exclusive gate, so nothing changes meanwhile).
 */
int64
CouponCampaignActiveUses(int64 campaign_id)
{
	Datum		values[1] = {Int64GetDatum(campaign_id)};

	Exec(P_ACTIVE_USES, values, NULL, true);
	return LoyaltyColInt64(LoyaltySpiRow(0), 1, NULL);
}

/*
 * The customer's current segment from loyalty.customer_segment (RFM), or
 * NULL when the customer has no row there.
 */
char *
CouponCustomerSegment(const char *customer_id)
{
	Datum		values[1] = {TextArg(customer_id)};

	if (!OidIsValid(get_relname_relid("customer_segment", cached_nsp)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("segment eligibility rules need loyalty.customer_segment")));
	Exec(P_SEGMENT, values, NULL, false);
	if (SPI_processed == 0)
		return NULL;
	return LoyaltyColText(LoyaltySpiRow(0), 1);
}

/*
 * Lock an order that exists (lock order step 1), for coupon_update_order:
 * false when there is no such order.
 */
bool
CouponLockExistingOrder(const char *order_ref, CouponOrder *order)
{
	return ReadOwnedOrder(order_ref, true, order);
}

/* Lock coupon rows in coupon_id order (lock order step 2). */
void
CouponLockCoupons(int64 *ids, int n)
{
	Datum		values[1];

	if (n == 0)
		return;
	values[0] = LoyaltyInt8ArrayDatum(ids, n);
	Exec(P_RB_LOCK_COUPONS, values, NULL, false);
}

/* A held reservation's discount recomputed for a new order context. */
void
CouponUpdateHold(const char *customer_id, const char *order_ref,
				 int64 coupon_id, Numeric discount, bool on_shipping,
				 Datum lines)
{
	Datum		values[6];
	char		nulls[6] = "      ";

	values[0] = TextArg(order_ref);
	values[1] = Int64GetDatum(coupon_id);
	values[2] = NumericGetDatum(discount);
	values[3] = BoolGetDatum(on_shipping);
	values[4] = lines;
	if (lines == (Datum) 0)
		nulls[4] = 'n';
	values[5] = TextArg(customer_id);
	Exec(P_UPDATE_HOLD, values, nulls, false);
}

/* The order row takes a new context: fingerprint, amount, currency, json. */
void
CouponUpdateOrderContext(const char *customer_id, const char *order_ref,
						 const OrderContext *ctx, TimestampTz now)
{
	Datum		values[7];
	char		nulls[7] = "       ";

	values[0] = TextArg(order_ref);
	values[1] = Int64GetDatum(ctx->hash);
	values[2] = NumericGetDatum(ctx->amount);
	if (ctx->has_currency)
		values[3] = TextArg(ctx->currency);
	else
	{
		values[3] = (Datum) 0;
		nulls[3] = 'n';
	}
	values[4] = JsonbPGetDatum(ctx->json);
	values[5] = TimestampTzGetDatum(now);
	values[6] = TextArg(customer_id);
	Exec(P_ORDER_UPDATE, values, nulls, false);
}
