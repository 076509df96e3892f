
/* ---------------------------------------------------------------------------
 * coupon_api.sql: the coupon lifecycle under the consistent API names
 *
 * Since 0.3.0 every API call takes customer_id first, then the caller's
 * reference (order_ref), then what is acted on (code), then the order
 * context; options follow with defaults, to be passed by name (doc/api.md).
 * One signature per name: the order context is jsonb only
 * ('{"amount": 120.00}' for a shop without item data), so untyped
 * parameters (node-postgres, JDBC) always resolve.  The functions reach the
 * implementations of the old names with the arguments rearranged
 * (coupon_api.c); the old names stay, deprecated, until 0.4.0.
 * ------------------------------------------------------------------------ */

/* functions */

CREATE FUNCTION loyalty.coupon_validate(customer_id text, code text, order_context jsonb,
										order_ref text DEFAULT NULL,
										OUT valid boolean, OUT reason text,
										OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_api_validate'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_validate(text, text, jsonb, text) IS
	'Read-only check of a code for a customer and an order (order_context: {"amount": ...} or items): (valid, reason, discount); reason is a stable token; with order_ref => the order''s other coupons count';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_validate(text, text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_reserve(customer_id text, order_ref text, code text,
									   order_context jsonb,
									   ttl interval DEFAULT '15 minutes',
									   OUT discount numeric, OUT expires_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_api_reserve'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_reserve(text, text, text, jsonb, interval) IS
	'Hold one unit of every cap of a code for a checkout until expires_at (ttl => ...); coupon_redeem of the same order consumes it; failures raise LY0nn';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_reserve(text, text, text, jsonb, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_redeem(customer_id text, order_ref text, code text,
									  order_context jsonb)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_api_redeem'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_redeem(text, text, text, jsonb) IS
	'Redeem a code for an order, atomically; returns the discount; a repeat for the same order and code returns the first discount; failures raise LY0nn';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_redeem(text, text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_rollback(customer_id text, order_ref text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_api_rollback'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_rollback(text, text) IS
	'Cancel / refund an order of the customer: reverse its redemptions (uses given back, history kept), release its reservations, close the order; false if nothing to give back; LY020 if the order is another customer''s';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_rollback(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* the old names: deprecated, same behaviour (doc/api.md has the mapping) */

COMMENT ON FUNCTION loyalty.validate_coupon(text, text, jsonb, text) IS
	'Deprecated since 0.3.0, use loyalty.coupon_validate(customer_id, code, order_context, order_ref => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.validate_coupon(text, text, numeric, text) IS
	'Deprecated since 0.3.0, use loyalty.coupon_validate(customer_id, code, pg_catalog.jsonb_build_object(''amount'', amount), order_ref => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, jsonb, interval) IS
	'Deprecated since 0.3.0, use loyalty.coupon_reserve(customer_id, order_ref, code, order_context, ttl => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, numeric, interval) IS
	'Deprecated since 0.3.0, use loyalty.coupon_reserve(customer_id, order_ref, code, pg_catalog.jsonb_build_object(''amount'', amount), ttl => ...); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, jsonb) IS
	'Deprecated since 0.3.0, use loyalty.coupon_redeem(customer_id, order_ref, code, order_context); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, numeric) IS
	'Deprecated since 0.3.0, use loyalty.coupon_redeem(customer_id, order_ref, code, pg_catalog.jsonb_build_object(''amount'', amount)); removed in 0.4.0';
COMMENT ON FUNCTION loyalty.rollback_redemption(text) IS
	'Deprecated since 0.3.0, use loyalty.coupon_rollback(customer_id, order_ref); removed in 0.4.0';
