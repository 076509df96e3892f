
/* ---------------------------------------------------------------------------
 * points_api.sql: the points calls under the consistent API names
 *
 * Since 0.3.0 every API call takes customer_id first, then the caller's
 * reference, then what is acted on (points, amount, action, campaign_id);
 * options follow with defaults, to be passed by name, and the first option
 * of every call that writes is at (a stray positional time lands there,
 * where a future time is refused, never in a reason).  One signature per
 * name (doc/api.md).  The C ones reach the implementations of the old names
 * with the arguments rearranged (points_api.c); points_exchange and
 * points_earn_coupon_bonus call the PL/pgSQL functions of the old names.
 * The old names stay, deprecated, until 0.4.0.
 * ------------------------------------------------------------------------ */

/* functions */

CREATE FUNCTION loyalty.points_earn(customer_id text, reference text, points bigint,
									at timestamptz DEFAULT pg_catalog.now(),
									reason text DEFAULT NULL,
									pending_until timestamptz DEFAULT NULL,
									expires_at timestamptz DEFAULT NULL,
									qualifying boolean DEFAULT true)
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_earn'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_earn(text, text, bigint, timestamptz, text, timestamptz, timestamptz, boolean) IS
	'Credit points to a customer (account created on first credit), pending until pending_until, expiring at expires_at (NULL: program default; infinity: never); idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn(text, text, bigint, timestamptz, text, timestamptz, timestamptz, boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_spend(customer_id text, reference text, points bigint,
									 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_spend'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_spend(text, text, bigint, timestamptz) IS
	'Spend available points first in, first out; SQLSTATE LP001 when the balance is short; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_spend(text, text, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_earn_for_order(customer_id text, reference text, amount numeric,
											  at timestamptz DEFAULT pg_catalog.now(),
											  currency text DEFAULT NULL)
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_earn_for_order'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_earn_for_order(text, text, numeric, timestamptz, text) IS
	'Earn the points of an order by the active purchase rules (tier multiplier, minimum amount, caps, windows); the amount counts as qualifying spend; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn_for_order(text, text, numeric, timestamptz, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_earn_for_action(customer_id text, reference text, action text,
											   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_earn_for_action'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_earn_for_action(text, text, text, timestamptz) IS
	'Earn the points of an action (review, referral, signup, birthday, ...) by its active rules; SQLSTATE LP004 when no rule names the action; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn_for_action(text, text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_reverse(customer_id text, reference text,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_reverse'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_reverse(text, text, timestamptz) IS
	'Refund: take back the points the customer earned under a reference (clawing back or recording debt when already spent) and return the points spent under it; LP003 if nothing of this customer is under it; idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_reverse(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_adjust(customer_id text, reference text, points bigint, reason text,
									  at timestamptz DEFAULT pg_catalog.now(),
									  expires_at timestamptz DEFAULT NULL)
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_api_adjust'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_adjust(text, text, bigint, text, timestamptz, timestamptz) IS
	'Manual correction: credit (points > 0, non-qualifying) or take back (points < 0: available, then pending, then debt); reason required; idempotent on reference';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.points_adjust(text, text, bigint, text, timestamptz, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The PL/pgSQL calls of points_coupon.sql under their new names: a call of
 * the old function with the arguments in its order, nothing else (errors
 * are the old function's, whose messages name the arguments as these do).
 */
CREATE FUNCTION loyalty.points_exchange(customer_id text, reference text, campaign_id bigint,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT code text, OUT points bigint, OUT available bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	SELECT e.code, e.points, e.available INTO code, points, available
	FROM loyalty.exchange_points(points_exchange.customer_id, points_exchange.campaign_id,
								 points_exchange.reference, points_exchange.at) e;
END;
$$;

COMMENT ON FUNCTION loyalty.points_exchange(text, text, bigint, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended, LP009 cap reached (nothing spent)';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_exchange(text, text, bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_earn_coupon_bonus(customer_id text, order_ref text,
												 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RETURN loyalty.earn_coupon_bonus(points_earn_coupon_bonus.customer_id,
									 points_earn_coupon_bonus.order_ref,
									 points_earn_coupon_bonus.at);
END;
$$;

COMMENT ON FUNCTION loyalty.points_earn_coupon_bonus(text, text, timestamptz) IS
	'Credit the bonus points (loyalty.coupon_bonus) of the coupons an order redeemed, under reference <order_ref>:coupon-bonus; NULL when none earns a bonus';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_earn_coupon_bonus(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* the old names: deprecated, same behaviour (doc/api.md has the mapping) */

COMMENT ON FUNCTION loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn(customer_id, reference, points, at => ..., reason => ..., pending_until => ..., expires_at => ..., qualifying => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.spend_points(text, bigint, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_spend(customer_id, reference, points, at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.earn_for_order(text, text, numeric, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn_for_order(customer_id, reference, amount, at => ..., currency => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.earn_for_action(text, text, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn_for_action(customer_id, reference, action, at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.reverse_points(text, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_reverse(customer_id, reference, at => ...) (customer_id required); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_adjust(customer_id, reference, points, reason, at => ..., expires_at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_exchange(customer_id, reference, campaign_id, at => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.earn_coupon_bonus(text, text, timestamptz) IS
	'Deprecated since 0.3.0, use loyalty.points_earn_coupon_bonus(customer_id, order_ref, at => ...); removed in 0.4.0';
