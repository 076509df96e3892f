--
-- coupon_checkout: a checkout whose cart changes (issue 13 item 10):
-- coupon_update_order, coupon_release, the discount per order line and
-- partial returns.
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

SELECT loyalty.create_campaign('co ten', 'percent', percent_off => 10, min_order_amount => 20,
							   total_cap => 1) AS c_ten \gset
SELECT loyalty.add_public_code(:c_ten, 'COTEN');

-- the issue: reserve for a cart of 50.00, the cart becomes 55.00
SELECT discount FROM loyalty.reserve_coupon('COTEN', 'ann', 'cart-9', 50.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('COTEN', 'ann', 'cart-9', 55.00)$$);
SELECT loyalty.coupon_update_order('ann', 'cart-9', '{"amount": 55.00}');
SELECT discount FROM loyalty.validate_coupon('COTEN', 'ann', 55.00, 'cart-9');
SELECT loyalty.redeem_coupon('COTEN', 'ann', 'cart-9', 55.00);
SELECT uses, total_cap FROM loyalty.campaign WHERE campaign_id = :c_ten;
-- once redeemed the context is fixed; the old context is a conflict
SELECT pg_temp.try($$SELECT loyalty.coupon_update_order('ann', 'cart-9', '{"amount": 60.00}')$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('COTEN', 'ann', 'cart-9', 50.00)$$);
-- another customer, an unknown order
SELECT pg_temp.try($$SELECT loyalty.coupon_update_order('bob', 'cart-9', '{"amount": 60.00}')$$);
SELECT loyalty.coupon_update_order('ann', 'cart-none', '{"amount": 60.00}') IS NULL AS nothing_held;

-- re-checked on update: a cart below the minimum is refused, nothing changes
SELECT loyalty.create_campaign('co five', 'fixed', amount_off => 5, min_order_amount => 20) AS c_five \gset
SELECT loyalty.add_public_code(:c_five, 'COFIVE');
SELECT discount FROM loyalty.reserve_coupon('COFIVE', 'ann', 'cart-10', '{"amount": 30}'::jsonb);
SELECT pg_temp.try($$SELECT loyalty.coupon_update_order('ann', 'cart-10', '{"amount": 10}')$$);
SELECT discount FROM loyalty.reserve_coupon('COFIVE', 'ann', 'cart-10', '{"amount": 30}'::jsonb);

-- stacking is recomputed in coupon order: the later coupon gets what is left
SELECT loyalty.create_campaign('co big', 'fixed', amount_off => 25) AS c_big \gset
SELECT loyalty.add_public_code(:c_big, 'COBIG');
SELECT discount FROM loyalty.reserve_coupon('COBIG', 'ann', 'cart-10', '{"amount": 30}'::jsonb);
SELECT loyalty.coupon_update_order('ann', 'cart-10', '{"amount": 28}');
SELECT c.code, h.discount FROM loyalty.reservation h JOIN loyalty.coupon c USING (coupon_id)
WHERE h.order_ref = 'cart-10' AND h.state = 'held' ORDER BY c.coupon_id;

-- release one coupon of the order; the other stays
SELECT loyalty.coupon_release('ann', 'cart-10', 'cobig');
SELECT loyalty.coupon_release('ann', 'cart-10', 'cobig') AS again;
SELECT code, state, discount FROM loyalty.coupon_order_lines('ann', 'cart-10');
SELECT pg_temp.try($$SELECT loyalty.coupon_release('ann', 'cart-9', 'COTEN')$$);
-- a released hold frees its unit of a cap at once
SELECT loyalty.create_campaign('co one', 'fixed', amount_off => 2, total_cap => 1) AS c_one \gset
SELECT loyalty.add_public_code(:c_one, 'COONE');
SELECT discount FROM loyalty.reserve_coupon('COONE', 'ann', 'cart-11', 10.00);
SELECT pg_temp.try($$SELECT loyalty.reserve_coupon('COONE', 'bob', 'cart-12', 10.00)$$);
SELECT loyalty.coupon_release('ann', 'cart-11', 'COONE');
SELECT discount FROM loyalty.reserve_coupon('COONE', 'bob', 'cart-12', 10.00);

-- the discount per line: shares of the eligible lines (price * quantity),
-- truncated to cents, the cents left to the largest remainders (ties: the
-- earlier line); the lines sum exactly to the discount
SELECT loyalty.create_campaign('co lines', 'fixed', amount_off => 5,
							   exclude_categories => ARRAY['gift']) AS c_lines \gset
SELECT loyalty.add_public_code(:c_lines, 'COLINES');
SELECT loyalty.redeem_coupon('COLINES', 'cy', 'order-20',
	'{"items": [{"sku": "A", "price": 1.00, "quantity": 3},
				{"sku": "G", "category": "gift", "price": 9.00, "quantity": 1},
				{"sku": "B", "price": 1.00, "quantity": 3},
				{"sku": "C", "price": 1.00, "quantity": 3}]}'::jsonb);
SELECT * FROM loyalty.coupon_order_lines('cy', 'order-20');
SELECT sum(discount) FROM loyalty.coupon_order_lines('cy', 'order-20');
SELECT loyalty.create_campaign('co pct', 'percent', percent_off => 15, currency => 'JPY') AS c_pct \gset
SELECT loyalty.add_public_code(:c_pct, 'COPCT');
SELECT loyalty.redeem_coupon('COPCT', 'dan', 'order-21',
	'{"currency": "JPY", "items": [{"sku": "A", "price": 333, "quantity": 1},
				{"sku": "B", "price": 333, "quantity": 1}, {"sku": "C", "price": 334, "quantity": 1}]}'::jsonb) AS yen;
SELECT line, discount FROM loyalty.coupon_order_lines('dan', 'order-21');

-- partial returns: half up per line on the units returned so far, so that
-- returning every unit takes back the line's discount exactly
SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-1', '[{"line": 1, "quantity": 1}]');
SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-1', '[{"line": 1, "quantity": 1}]') AS repeat;
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-1', '[{"line": 1, "quantity": 2}]')$$);
SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-2', '[{"line": 1, "quantity": 1}, {"sku": "B", "quantity": 3}]');
SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-3', '[{"sku": "A", "quantity": 1}, {"line": 2, "quantity": 1}]');
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-4', '[{"line": 1, "quantity": 1}]')$$);
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-4', '[{"line": 9, "quantity": 1}]')$$);
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-4', '[{"line": 1, "quantity": 0}]')$$);
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-4', '[{"sku": "Z", "quantity": 1}]')$$);
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('bob', 'order-20', 'ret-4', '[{"line": 1, "quantity": 1}]')$$);
SELECT line, sku, quantity, discount, returned FROM loyalty.coupon_order_lines('cy', 'order-20');
SELECT return_ref, quantities, amount FROM loyalty.coupon_return WHERE order_ref = 'order-20' ORDER BY return_ref;
SELECT kind, uses, discount FROM loyalty.redemption WHERE order_ref = 'order-20' ORDER BY redemption_id;
SELECT discount_total, active_redemptions FROM loyalty.campaign_stats WHERE campaign_id = :c_lines;
-- a rollback after partial returns gives back the rest: net discount 0
SELECT loyalty.rollback_redemption('order-20');
SELECT kind, uses, discount FROM loyalty.redemption WHERE order_ref = 'order-20' ORDER BY redemption_id;
SELECT discount_total, active_redemptions FROM loyalty.campaign_stats WHERE campaign_id = :c_lines;
SELECT pg_temp.try($$SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-9', '[{"line": 4, "quantity": 1}]')$$);
SELECT loyalty.coupon_return_lines('cy', 'order-20', 'ret-3', '[{"sku": "A", "quantity": 1}, {"line": 2, "quantity": 1}]') AS replay_after_rollback;
