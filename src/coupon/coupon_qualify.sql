
/* ---------------------------------------------------------------------------
 * coupon_qualify.sql: what the coupon module gives loyalty.qualify (issue
 * 15, item 7; the function itself is in src/points/points_qualify.sql, as
 * it also lists points rewards)
 * ------------------------------------------------------------------------ */

/* indexes */

-- qualify lists a campaign's public (vanity) codes without reading the
-- millions of generated codes
CREATE INDEX coupon_public_idx ON loyalty.coupon (campaign_id)
	WHERE customer_id IS NULL AND loyalty.coupon_code_kind(code) = 'vanity';

COMMENT ON INDEX loyalty.coupon_public_idx IS
	'Public (vanity, unbound) codes by campaign: the public offers loyalty.qualify lists';

/* functions */

CREATE FUNCTION loyalty._validate_campaign(campaign_id bigint, customer_id text,
										   order_context jsonb, order_ref text,
										   OUT valid boolean, OUT reason text,
										   OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_validate_campaign'
LANGUAGE C STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty._validate_campaign(bigint, text, jsonb, text) IS
	'Internal: validate_coupon for a code of the campaign not issued yet (bound to the customer, single use): qualify''s points rewards';
