--
-- coupon_no_discount: a coupon that would take nothing off an order is not
-- valid (reason no_discount, LY015 for reserve / redeem) and uses up no
-- unit of any cap (issue 11, item 10).
--
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
	detail text;
BEGIN
	EXECUTE q INTO r;
	RETURN 'ok: ' || coalesce(r, 'null');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' | ' || nullif(detail, ''), '');
END $$;

-- what the caps have counted for a campaign: active redemptions, held
-- reservations, the campaign counter and the code counter
CREATE FUNCTION pg_temp.usage(c bigint) RETURNS text LANGUAGE sql AS $$
	SELECT format('redemptions=%s holds=%s campaign_uses=%s code_uses=%s orders=%s',
				  (SELECT count(*) FROM loyalty.redemption r WHERE r.campaign_id = c),
				  (SELECT count(*) FROM loyalty.reservation h WHERE h.campaign_id = c AND h.state = 'held'),
				  (SELECT uses FROM loyalty.campaign m WHERE m.campaign_id = c),
				  (SELECT coalesce(sum(uses), 0) FROM loyalty.coupon k WHERE k.campaign_id = c),
				  (SELECT count(*) FROM loyalty.coupon_order o
				   WHERE o.order_ref IN (SELECT r.order_ref FROM loyalty.redemption r WHERE r.campaign_id = c
										 UNION SELECT h.order_ref FROM loyalty.reservation h WHERE h.campaign_id = c)))
$$;

--
-- free shipping on an order without shipping
--
SELECT loyalty.create_campaign('nd ship', 'free_shipping', total_cap => 1, per_customer_cap => 1) AS c_ship \gset
SELECT loyalty.add_public_code(:c_ship, 'NDSHIP', max_uses => 1) AS code;
SELECT valid, reason, discount FROM loyalty.validate_coupon('NDSHIP', 'c', '{"amount": 30}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('NDSHIP', 'c', '{"amount": 30, "shipping": 0}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('NDSHIP', 'c', 30.00);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('NDSHIP', 'c', 'nd-1', '{"amount": 30}'::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NDSHIP', 'c', 'nd-1', '{"amount": 30}'::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NDSHIP', 'c', 'nd-2', 30.00)$$);
SELECT pg_temp.usage(:c_ship);
-- the single unit of every cap is still there for an order with shipping
SELECT valid, reason, discount FROM loyalty.validate_coupon('NDSHIP', 'c', '{"amount": 30, "shipping": 4.90}'::jsonb);
SELECT loyalty.redeem_coupon('NDSHIP', 'c', 'nd-3', '{"amount": 30, "shipping": 4.90}'::jsonb);
SELECT pg_temp.usage(:c_ship);

--
-- a coupon stacked on an order that is already fully discounted
--
SELECT loyalty.create_campaign('nd full', 'fixed', amount_off => 50) AS c_full \gset
SELECT loyalty.create_campaign('nd extra', 'percent', percent_off => 10, total_cap => 1, per_customer_cap => 1) AS c_extra \gset
SELECT loyalty.add_public_code(:c_full, 'NDFULL') AS code;
SELECT loyalty.add_public_code(:c_extra, 'NDEXTRA') AS code;
SELECT loyalty.redeem_coupon('NDFULL', 'd', 'nd-10', '{"amount": 40}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('NDEXTRA', 'd', '{"amount": 40}'::jsonb, 'nd-10');
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('NDEXTRA', 'd', 'nd-10', '{"amount": 40}'::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NDEXTRA', 'd', 'nd-10', '{"amount": 40}'::jsonb)$$);
SELECT pg_temp.usage(:c_extra);
-- a reservation that holds the whole amount leaves nothing either
SELECT discount FROM loyalty.reserve_coupon('NDFULL', 'd', 'nd-11', '{"amount": 40}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('NDEXTRA', 'd', '{"amount": 40}'::jsonb, 'nd-11');
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NDEXTRA', 'd', 'nd-11', '{"amount": 40}'::jsonb)$$);
SELECT pg_temp.usage(:c_extra);
-- the cap unit is still free for an order with something left to discount
SELECT loyalty.redeem_coupon('NDEXTRA', 'd', 'nd-12', '{"amount": 40}'::jsonb);
SELECT pg_temp.usage(:c_extra);

--
-- a discount that rounds to zero, and an order of amount zero
--
SELECT loyalty.create_campaign('nd tiny', 'percent', percent_off => 1) AS c_tiny \gset
SELECT loyalty.add_public_code(:c_tiny, 'NDTINY') AS code;
SELECT a AS amount, v.valid, v.reason, v.discount
FROM unnest(ARRAY[0, 0.40, 0.49, 0.50, 1.00]::numeric[]) AS a,
	 LATERAL loyalty.validate_coupon('NDTINY', 'e', a) v;
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NDTINY', 'e', 'nd-20', 0.40)$$);
SELECT pg_temp.usage(:c_tiny);
