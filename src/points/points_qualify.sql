
/* ---------------------------------------------------------------------------
 * points_qualify.sql: loyalty.qualify (issue 15, item 7)
 *
 * Every offer a customer could use on a cart: the codes bound to the
 * customer (published by campaigns, "sorry" coupons, codes bought with
 * points), the public codes, and the points rewards (a coupon for points),
 * each with the discount it would give and, when it does not apply, the
 * reason.  Read-only.  Each code is checked by validate_coupon itself and
 * each reward by the same checks for a code not issued yet
 * (_validate_campaign), so qualify answers exactly what a redeem would
 * answer now.  Lives in the points family because it reads the rewards
 * and the balance.
 * ------------------------------------------------------------------------ */

/* functions */

CREATE FUNCTION loyalty.qualify(customer_id text, order_context jsonb, order_ref text DEFAULT NULL)
RETURNS TABLE (offer text, code text, campaign_id bigint, campaign text, applies boolean,
			   reason text, discount numeric, points bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH live AS (
		SELECT c.campaign_id, c.name FROM loyalty.campaign c
		WHERE c.ends_at IS NULL OR c.ends_at OPERATOR(pg_catalog.>) pg_catalog.now()
	), cand AS (
		SELECT 'bound_code'::pg_catalog.text AS offer, k.code::pg_catalog.text AS code,
			   k.campaign_id, NULL::pg_catalog.int8 AS points
		FROM loyalty.coupon k
		WHERE k.customer_id OPERATOR(pg_catalog.=) $1 AND k.voided_at IS NULL
		  AND (k.max_uses IS NULL OR k.uses OPERATOR(pg_catalog.<) k.max_uses)
		UNION ALL
		SELECT 'public_code', k.code::pg_catalog.text, k.campaign_id, NULL
		FROM loyalty.coupon k
		WHERE k.customer_id IS NULL
		  AND loyalty.coupon_code_kind(k.code) OPERATOR(pg_catalog.=) 'vanity'
		  AND k.voided_at IS NULL
		  AND (k.max_uses IS NULL OR k.uses OPERATOR(pg_catalog.<) k.max_uses)
		UNION ALL
		SELECT 'points_reward', NULL, r.campaign_id, r.points
		FROM loyalty.points_reward r WHERE r.active
	), balance AS (
		SELECT b.available FROM loyalty.points_balance($1) b
	)
	SELECT cand.offer, cand.code, cand.campaign_id, live.name,
		   v.valid AND (cand.points IS NULL OR balance.available OPERATOR(pg_catalog.>=) cand.points),
		   CASE WHEN NOT v.valid OR v.reason IS NOT NULL THEN v.reason
				WHEN cand.points IS NOT NULL AND balance.available OPERATOR(pg_catalog.<) cand.points
				THEN 'insufficient_points' END,
		   v.discount, cand.points
	FROM cand
	JOIN live ON live.campaign_id OPERATOR(pg_catalog.=) cand.campaign_id
	CROSS JOIN balance
	CROSS JOIN LATERAL (
		SELECT x.valid, x.reason, x.discount
		FROM loyalty.validate_coupon(cand.code, $1, $2, $3) x WHERE cand.code IS NOT NULL
		UNION ALL
		SELECT x.valid, x.reason, x.discount
		FROM loyalty._validate_campaign(cand.campaign_id, $1, $2, $3) x WHERE cand.code IS NULL
	) v
	ORDER BY 5 DESC, 7 DESC NULLS LAST, 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.qualify(text, jsonb, text) IS
	'Every offer the customer could use on this cart (bound codes, public codes, points rewards) with the discount it would give, or why not; read-only; order_ref (by name) makes the order''s coupons count for stacking';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.qualify(text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
