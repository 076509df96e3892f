--
-- coupon: campaigns, codes, order context, discounts, reasons, lifecycle
--
-- Errors are shown through try(), which runs a statement in a
-- subtransaction and returns "ok: <result>" or
-- "<SQLSTATE>: <message> | <detail>".
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

-- the usage a test has left behind: rows in every lifecycle table
CREATE FUNCTION pg_temp.footprint() RETURNS text LANGUAGE sql AS $$
	SELECT format('orders=%s redemptions=%s reservations=%s code_uses=%s capped_uses=%s',
				  (SELECT count(*) FROM loyalty.coupon_order),
				  (SELECT count(*) FROM loyalty.redemption),
				  (SELECT count(*) FROM loyalty.reservation),
				  (SELECT coalesce(sum(uses), 0) FROM loyalty.coupon),
				  (SELECT coalesce(sum(uses), 0) FROM loyalty.campaign))
$$;

--
-- campaigns
--
SELECT loyalty.create_campaign('t percent', 'percent', percent_off => 20, max_discount => 15) AS c_pct \gset
SELECT loyalty.create_campaign('t fixed', 'fixed', amount_off => 10) AS c_fix \gset
SELECT loyalty.create_campaign('t shipping', 'free_shipping', max_discount => 5) AS c_ship \gset
SELECT loyalty.create_campaign('t bxgy', 'buy_x_get_y', buy_quantity => 2, get_quantity => 1) AS c_bxgy \gset
SELECT loyalty.create_campaign('t free item', 'free_item', free_sku => 'SOCKS') AS c_free \gset
SELECT name, kind, currency, percent_off, max_discount, amount_off, buy_quantity,
	   get_quantity, free_sku, free_quantity, paused, total_cap, uses
FROM loyalty.campaign WHERE name LIKE 't %' ORDER BY campaign_id;

-- every field is checked with a message naming it
SELECT pg_temp.try($$SELECT loyalty.create_campaign('', 'percent', percent_off => 5)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'bogus')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'percent')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'percent', percent_off => 120)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'percent', percent_off => 0)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'percent', percent_off => 5, amount_off => 3)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => -1)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, max_discount => 3)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'buy_x_get_y', buy_quantity => 2)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'free_item')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, free_sku => 'A')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, currency => 'eur')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, starts_at => '2026-02-01', ends_at => '2026-01-01')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, total_cap => -1)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, per_customer_cap => 0)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, max_coupons_per_order => 0)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, min_order_amount => -5)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, include_skus => ARRAY['A', NULL])$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('x', 'fixed', amount_off => 5, exclude_categories => '{}')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('t fixed', 'fixed', amount_off => 5)$$);
SELECT count(*) AS campaigns_after_errors FROM loyalty.campaign WHERE name LIKE 't %' OR name IN ('', 'x');

-- update: changed fields only, null clears; kind and currency are fixed
SELECT loyalty.update_campaign(:c_pct, '{"max_discount": 12, "min_order_amount": 20}');
SELECT max_discount, min_order_amount FROM loyalty.campaign WHERE campaign_id = :c_pct;
SELECT loyalty.update_campaign(:c_pct, '{"min_order_amount": null}');
SELECT min_order_amount FROM loyalty.campaign WHERE campaign_id = :c_pct;
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"kind": "fixed"}')$$, :c_pct));
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"paused": true, "uses": 3}')$$, :c_pct));
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"percent_off": 150}')$$, :c_pct));
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"percent_off": "lots"}')$$, :c_pct));
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '[1]')$$, :c_pct));
SELECT pg_temp.try($$SELECT loyalty.update_campaign(999999, '{"name": "y"}')$$);
SELECT pg_temp.try($$SELECT loyalty.update_campaign(NULL, '{}')$$);

-- pause and resume report whether they changed anything
SELECT loyalty.pause_campaign(:c_fix) AS paused, loyalty.pause_campaign(:c_fix) AS again;
SELECT paused, paused_at IS NOT NULL AS has_paused_at FROM loyalty.campaign WHERE campaign_id = :c_fix;
SELECT loyalty.resume_campaign(:c_fix) AS resumed, loyalty.resume_campaign(:c_fix) AS again;
SELECT pg_temp.try($$SELECT loyalty.pause_campaign(999999)$$);
SELECT pg_temp.try($$SELECT loyalty.resume_campaign(NULL)$$);

--
-- codes
--
-- public (vanity) codes are normalised; a word that reads as a mistyped
-- generated code is refused
SELECT loyalty.add_public_code(:c_pct, 'summer 25') AS code;
SELECT loyalty.add_public_code(:c_fix, 'Welcome-10', max_uses => 100) AS code;
SELECT loyalty.add_public_code(:c_ship, 'shipfree') AS code;
SELECT loyalty.add_public_code(:c_bxgy, 'threefortwo') AS code;
SELECT loyalty.add_public_code(:c_free, 'freesocks') AS code;
SELECT pg_temp.try(format($$SELECT loyalty.add_public_code(%s, 'SUMMER-25')$$, :c_fix));
SELECT pg_temp.try(format($$SELECT loyalty.add_public_code(%s, 'SALE21')$$, :c_fix));
SELECT pg_temp.try(format($$SELECT loyalty.add_public_code(%s, 'bad code!')$$, :c_fix));
SELECT pg_temp.try(format($$SELECT loyalty.add_public_code(%s, 'NEWCODE', max_uses => 0)$$, :c_fix));
SELECT pg_temp.try(format($$SELECT loyalty.add_public_code(%s, 'NEWCODE', customer_id => '')$$, :c_fix));
SELECT pg_temp.try($$SELECT loyalty.add_public_code(999999, 'NEWCODE')$$);
SELECT pg_temp.try($$SELECT loyalty.add_public_code(NULL, 'NEWCODE')$$);
SELECT code, loyalty.coupon_code_kind(code) AS kind, max_uses, customer_id
FROM loyalty.coupon ORDER BY coupon_id;

-- generated codes: single-use, random, from the pattern, never equal to a
-- stored code.  A pattern with 32^2 = 1024 codes makes collisions common:
-- three batches of 100 still give 300 distinct codes.
SELECT loyalty.create_campaign('t generated', 'fixed', amount_off => 1) AS c_gen \gset
SELECT loyalty.generate_codes(:c_gen, 100, 'T-##') AS made;
SELECT loyalty.generate_codes(:c_gen, 100, 'T-##') AS made;
SELECT loyalty.generate_codes(:c_gen, 100, 't##') AS made;
SELECT count(*) AS codes, count(DISTINCT code) AS distinct_codes,
	   bool_and(code::text ~ '^T-[0-9A-Z]{2}-[0-9A-Z]{3}$' OR code::text ~ '^T[0-9A-Z]{5}$') AS match_pattern,
	   bool_and(loyalty.coupon_code_kind(code) = 'generated') AS all_generated,
	   bool_and(max_uses = 1 AND uses = 0 AND customer_id IS NULL) AS single_use_unbound
FROM loyalty.coupon WHERE campaign_id = :c_gen;
-- bound codes: one per listed customer (a customer listed twice gets two)
SELECT loyalty.generate_codes(:c_gen, 4, 'B-####-####', ARRAY['ann', 'bob', 'cid', 'ann']) AS made;
SELECT customer_id, count(*) AS codes FROM loyalty.coupon
WHERE campaign_id = :c_gen AND customer_id IS NOT NULL GROUP BY 1 ORDER BY 1;
-- big batches are inserted plainly when a collision is improbable, and
-- again with ON CONFLICT DO NOTHING when one happens anyway.  Here most of
-- a small pattern's codes are stored in this transaction (the table's size
-- estimate does not know them), so single codes drawn one by one often
-- collide: each is drawn again until it is new.
SELECT loyalty.create_campaign('t collisions', 'fixed', amount_off => 1) AS c_coll \gset
BEGIN;
SELECT loyalty.generate_codes(:c_coll, 3000, 'Q###') AS made;
SELECT sum(loyalty.generate_codes(:c_coll, 1, 'Q###')) AS made_one_by_one FROM generate_series(1, 200);
COMMIT;
SELECT count(*) AS codes, count(DISTINCT code) AS distinct_codes FROM loyalty.coupon WHERE campaign_id = :c_coll;
SELECT loyalty.generate_codes(:c_gen, 0, 'Z-####') AS made_none;
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 3, 'B-####', ARRAY['a', 'b'])$$, :c_gen));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 2, 'B-####', ARRAY['a', NULL])$$, :c_gen));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 2, 'B-####', ARRAY['a', ''])$$, :c_gen));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, -1, 'B-####')$$, :c_gen));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 10, 'B-!!')$$, :c_gen));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 1000, 'B-##')$$, :c_gen));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 10, NULL)$$, :c_gen));
SELECT pg_temp.try($$SELECT loyalty.generate_codes(999999, 10, 'B-####')$$);
SELECT count(*) AS codes_after_errors FROM loyalty.coupon WHERE campaign_id = :c_gen;

--
-- order context: every malformed context is a clear error, 22023 unless a
-- number is too large (22003) or there are too many items (54000)
--
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '[1, 2]'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '"x"'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": "12"}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": -1}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": 1e15}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": 10, "shipping": -2}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": 10, "currency": "eur"}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": 10, "currency": 978}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": 10, "new_customer": "yes"}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": {"sku": "A"}}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [7]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"price": 1, "quantity": 1}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "", "price": 1, "quantity": 1}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": 5, "price": 1, "quantity": 1}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "quantity": 1}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": -3, "quantity": 1}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": 3}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": 3, "quantity": 0}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": 3, "quantity": 1.5}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": 3, "quantity": 2000000}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": 3, "quantity": 1, "category": 9}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"amount": 10, "items": [{"sku": "A", "price": 3, "quantity": 2}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', '{"items": [{"sku": "A", "price": 999999999999999, "quantity": 2}]}'::jsonb)$$);
SELECT pg_temp.try(format($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', %L::jsonb)$$,
	jsonb_build_object('items', (SELECT jsonb_agg(jsonb_build_object('sku', 'A' || i, 'price', 1, 'quantity', 1))
								 FROM generate_series(1, 1001) i))));
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', -1.00)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', 'NaN'::numeric)$$);
-- 1,000 items is the limit, and fine; unknown keys are ignored
SELECT valid, discount FROM loyalty.validate_coupon('SUMMER25', 'c',
	jsonb_build_object('cart_id', 'x', 'items', (SELECT jsonb_agg(jsonb_build_object('sku', 'A' || i, 'price', 0.01, 'quantity', 1, 'color', 'red'))
								 FROM generate_series(1, 1000) i)));

--
-- discounts
--
-- percent: 20% capped at 12 (after the update above); half-up rounding
SELECT discount FROM loyalty.validate_coupon('SUMMER25', 'c', 40.00);
SELECT discount FROM loyalty.validate_coupon('SUMMER25', 'c', 100.00);
SELECT discount FROM loyalty.validate_coupon('SUMMER25', 'c', 0.03);
SELECT discount FROM loyalty.validate_coupon('SUMMER25', 'c', 0.02);
SELECT loyalty.create_campaign('t third', 'percent', percent_off => 33.333) AS c_third \gset
SELECT loyalty.add_public_code(:c_third, 'THIRDOFF') AS code;
SELECT a AS amount, (SELECT discount FROM loyalty.validate_coupon('THIRDOFF', 'c', a)) AS discount
FROM unnest(ARRAY[10.00, 10.01, 0.015, 1.50, 99.99]) a;
-- currencies round to their own decimals (JPY 0, KWD 3)
SELECT loyalty.create_campaign('t yen', 'percent', percent_off => 15, currency => 'JPY') AS c_yen \gset
SELECT loyalty.add_public_code(:c_yen, 'YENOFF') AS code;
SELECT discount FROM loyalty.validate_coupon('YENOFF', 'c', 1234);
SELECT loyalty.create_campaign('t dinar', 'percent', percent_off => 15, currency => 'KWD') AS c_kwd \gset
SELECT loyalty.add_public_code(:c_kwd, 'DINAROFF') AS code;
SELECT discount FROM loyalty.validate_coupon('DINAROFF', 'c', 12.345);
-- the context's currency must be the campaign's
SELECT valid, reason FROM loyalty.validate_coupon('YENOFF', 'c', '{"amount": 1000, "currency": "EUR"}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('YENOFF', 'c', '{"amount": 1000, "currency": "JPY"}'::jsonb);
-- fixed: never more than the order
SELECT discount FROM loyalty.validate_coupon('WELCOME10', 'c', 25.00);
SELECT discount FROM loyalty.validate_coupon('WELCOME10', 'c', 7.50);
-- free shipping: the shipping cost, capped at 5
SELECT discount FROM loyalty.validate_coupon('SHIPFREE', 'c', '{"amount": 30, "shipping": 3.90}'::jsonb);
SELECT discount FROM loyalty.validate_coupon('SHIPFREE', 'c', '{"amount": 30, "shipping": 7.50}'::jsonb);
SELECT discount FROM loyalty.validate_coupon('SHIPFREE', 'c', '{"amount": 30}'::jsonb);
-- buy 2 get 1: in every 3 units the cheapest is free (units 60, 20, 20, 10, 10, 5, 5: 2 free)
SELECT valid, reason, discount FROM loyalty.validate_coupon('THREEFORTWO', 'c', '{"items": [
	{"sku": "A", "price": 60, "quantity": 1}, {"sku": "B", "price": 20, "quantity": 2},
	{"sku": "C", "price": 10, "quantity": 2}, {"sku": "D", "price": 5, "quantity": 2}]}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('THREEFORTWO', 'c', '{"items": [
	{"sku": "A", "price": 60, "quantity": 2}]}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('THREEFORTWO', 'c', 100.00);
-- free item: one unit of SOCKS, the cheapest if several prices
SELECT valid, reason, discount FROM loyalty.validate_coupon('FREESOCKS', 'c', '{"items": [
	{"sku": "SHOE", "price": 80, "quantity": 1}, {"sku": "SOCKS", "price": 6, "quantity": 2},
	{"sku": "SOCKS", "price": 4.5, "quantity": 1}]}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('FREESOCKS', 'c', '{"items": [
	{"sku": "SHOE", "price": 80, "quantity": 1}]}'::jsonb);
-- include / exclude lists: only eligible items count; exclusion wins
SELECT loyalty.create_campaign('t shoes', 'percent', percent_off => 10,
	include_categories => ARRAY['shoes'], include_skus => ARRAY['HAT-1'],
	exclude_skus => ARRAY['SHOE-LUX']) AS c_shoes \gset
SELECT loyalty.add_public_code(:c_shoes, 'SHOESALE') AS code;
SELECT valid, reason, discount FROM loyalty.validate_coupon('SHOESALE', 'c', '{"items": [
	{"sku": "SHOE-1", "category": "shoes", "price": 50, "quantity": 2},
	{"sku": "SHOE-LUX", "category": "shoes", "price": 300, "quantity": 1},
	{"sku": "HAT-1", "category": "hats", "price": 20, "quantity": 1},
	{"sku": "BAG-1", "category": "bags", "price": 40, "quantity": 1}]}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('SHOESALE', 'c', '{"items": [
	{"sku": "BAG-1", "category": "bags", "price": 40, "quantity": 1}]}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('SHOESALE', 'c', 100.00);
-- minimum order amount (merchandise, shipping excluded)
SELECT loyalty.update_campaign(:c_fix, '{"min_order_amount": 50}');
SELECT valid, reason FROM loyalty.validate_coupon('WELCOME10', 'c', '{"amount": 45, "shipping": 10}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('WELCOME10', 'c', 50.00);
SELECT loyalty.update_campaign(:c_fix, '{"min_order_amount": null}');

--
-- reasons
--
SELECT code::text AS gen_code FROM loyalty.coupon WHERE campaign_id = :c_gen AND customer_id IS NULL
ORDER BY coupon_id LIMIT 1 \gset
SELECT code::text AS ann_code FROM loyalty.coupon WHERE campaign_id = :c_gen AND customer_id = 'ann'
ORDER BY coupon_id LIMIT 1 \gset
-- one character changed: the check characters catch it before any lookup
SELECT valid, reason, discount FROM loyalty.validate_coupon(
	overlay(:'gen_code' placing CASE WHEN right(:'gen_code', 1) = '7' THEN '8' ELSE '7' END from length(:'gen_code')),
	'c', 10.00);
SELECT valid, reason FROM loyalty.validate_coupon('', 'c', 10.00);
SELECT valid, reason FROM loyalty.validate_coupon(repeat('A', 100000), 'c', 10.00);
SELECT valid, reason FROM loyalty.validate_coupon('NO-SUCH-CODE', 'c', 10.00);
SELECT valid, reason, discount FROM loyalty.validate_coupon(lower(:'gen_code'), 'c', 10.00);
SELECT valid, reason FROM loyalty.validate_coupon(:'ann_code', 'bob', 10.00);
SELECT valid, reason FROM loyalty.validate_coupon(:'ann_code', 'ann', 10.00);
SELECT loyalty.create_campaign('t later', 'fixed', amount_off => 1, starts_at => now() + interval '1 day') AS c_later \gset
SELECT loyalty.add_public_code(:c_later, 'NOTYET') AS code;
SELECT valid, reason FROM loyalty.validate_coupon('NOTYET', 'c', 10.00);
SELECT loyalty.create_campaign('t over', 'fixed', amount_off => 1, ends_at => now() - interval '1 day') AS c_over \gset
SELECT loyalty.add_public_code(:c_over, 'TOOLATE') AS code;
SELECT valid, reason FROM loyalty.validate_coupon('TOOLATE', 'c', 10.00);
SELECT loyalty.pause_campaign(:c_over);
SELECT valid, reason FROM loyalty.validate_coupon('TOOLATE', 'c', 10.00);
SELECT loyalty.pause_campaign(:c_later);
SELECT valid, reason FROM loyalty.validate_coupon('NOTYET', 'c', 10.00);
SELECT loyalty.update_campaign(:c_later, '{"starts_at": null}');
SELECT valid, reason FROM loyalty.validate_coupon('NOTYET', 'c', 10.00);

--
-- redeem: the discount, or the reason as a documented SQLSTATE
--
SELECT pg_temp.footprint();
SELECT loyalty.redeem_coupon('summer-25', 'dora', 'ord-1', 40.00) AS discount;
-- a repeat returns the first result, with nothing new written
SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-1', 40.00) AS discount;
SELECT loyalty.update_campaign(:c_pct, '{"percent_off": 50}');
SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-1', 40.00) AS discount_of_first_redeem;
SELECT * FROM loyalty.validate_coupon('SUMMER25', 'dora', 40.00, 'ord-1');
SELECT discount AS new_order_discount FROM loyalty.validate_coupon('SUMMER25', 'dora', 40.00);
SELECT pg_temp.footprint();
-- same order_ref, other content: order_conflict
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-1', 41.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'eve', 'ord-1', 40.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-1', '{"amount": 40, "shipping": 1}'::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-1', '{"amount": 40, "currency": "EUR"}'::jsonb)$$);
SELECT * FROM loyalty.validate_coupon('SUMMER25', 'eve', 40.00, 'ord-1');
-- equal contexts in another spelling are the same order
SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-2', '{"items": [{"sku": "A", "price": 20, "quantity": 2}]}'::jsonb) AS discount;
SELECT loyalty.redeem_coupon('SUMMER25', 'dora', 'ord-2', '{"amount": 40.000, "items": [{"sku": "A", "price": 20.0, "quantity": 2, "note": "x"}]}'::jsonb) AS discount;
-- every reason raises its own SQLSTATE
SELECT pg_temp.try(format($$SELECT loyalty.redeem_coupon(%L, 'c', 'ord-x', 10.00)$$,
	overlay(:'gen_code' placing CASE WHEN right(:'gen_code', 1) = '7' THEN '8' ELSE '7' END from length(:'gen_code'))));
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NO-SUCH-CODE', 'c', 'ord-x', 10.00)$$);
SELECT replace(pg_temp.try(format($$SELECT loyalty.redeem_coupon(%L, 'bob', 'ord-x', 10.00)$$, :'ann_code')),
			   :'ann_code', '<ann''s code>');
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('YENOFF', 'c', 'ord-x', '{"amount": 1000, "currency": "EUR"}'::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('TOOLATE', 'c', 'ord-x', 10.00)$$);
SELECT loyalty.update_campaign(:c_later, format('{"starts_at": "%s"}', now() + interval '1 day')::jsonb);
SELECT loyalty.resume_campaign(:c_later);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NOTYET', 'c', 'ord-x', 10.00)$$);
SELECT loyalty.pause_campaign(:c_fix);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('WELCOME10', 'c', 'ord-x', 10.00)$$);
SELECT loyalty.resume_campaign(:c_fix);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SHOESALE', 'c', 'ord-x', 10.00)$$);
SELECT loyalty.update_campaign(:c_fix, '{"min_order_amount": 50}');
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('WELCOME10', 'c', 'ord-x', 10.00)$$);
SELECT loyalty.update_campaign(:c_fix, '{"min_order_amount": null}');
SELECT pg_temp.footprint();

--
-- caps: per code, per campaign, per customer; reservations count
--
SELECT loyalty.create_campaign('t capped', 'fixed', amount_off => 2, total_cap => 3, per_customer_cap => 2) AS c_cap \gset
SELECT loyalty.add_public_code(:c_cap, 'CAPPED-A', max_uses => 2) AS code;
SELECT loyalty.add_public_code(:c_cap, 'CAPPED-B') AS code;
SELECT loyalty.redeem_coupon('CAPPED-A', 'fay', 'cap-1', 10.00);
SELECT loyalty.redeem_coupon('CAPPED-A', 'gus', 'cap-2', 10.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-A', 'hal', 'cap-3', 10.00)$$);
SELECT loyalty.redeem_coupon('CAPPED-B', 'fay', 'cap-4', 10.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-B', 'hal', 'cap-5', 10.00)$$);
SELECT uses, total_cap FROM loyalty.campaign WHERE campaign_id = :c_cap;
-- roll one back: the unit returns to code and campaign, once
SELECT loyalty.rollback_redemption('cap-2') AS rolled_back, loyalty.rollback_redemption('cap-2') AS again;
SELECT loyalty.rollback_redemption('no-such-order') AS unknown_order;
SELECT uses FROM loyalty.campaign WHERE campaign_id = :c_cap;
SELECT code, uses FROM loyalty.coupon WHERE campaign_id = :c_cap ORDER BY code::text;
-- the rolled-back order is closed for good
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-A', 'gus', 'cap-2', 10.00)$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CAPPED-A', 'gus', 'cap-2', 10.00)$$);
SELECT * FROM loyalty.validate_coupon('CAPPED-A', 'gus', 10.00, 'cap-2');
-- per customer: fay has used the campaign twice
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-B', 'fay', 'cap-6', 10.00)$$);
-- a reservation holds the last unit of the campaign for its checkout
SELECT discount, expires_at > now() AS live, expires_at <= clock_timestamp() + interval '10 minutes' AS within_ttl
FROM loyalty.reserve_coupon('CAPPED-B', 'ivy', 'cap-7', 10.00, '10 minutes');
SELECT discount, expires_at > now() + interval '10 minutes' AS extended
FROM loyalty.reserve_coupon('CAPPED-B', 'ivy', 'cap-7', 10.00, '1 hour');
SELECT valid, reason FROM loyalty.validate_coupon('CAPPED-B', 'jon', 10.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-B', 'jon', 'cap-8', 10.00)$$);
SELECT valid, reason, discount FROM loyalty.validate_coupon('CAPPED-B', 'ivy', 10.00, 'cap-7');
SELECT remaining_cap, active_reservations FROM loyalty.campaign_stats WHERE campaign_id = :c_cap;
SELECT loyalty.redeem_coupon('CAPPED-B', 'ivy', 'cap-7', 10.00) AS consumes_the_hold;
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CAPPED-B', 'ivy', 'cap-7', 10.00)$$);
SELECT state FROM loyalty.reservation WHERE order_ref = 'cap-7';
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-B', 'jon', 'cap-8', 10.00)$$);
-- rolling back an order with only a reservation releases it
SELECT loyalty.update_campaign(:c_cap, '{"total_cap": 10}');
SELECT discount FROM loyalty.reserve_coupon('CAPPED-B', 'kai', 'cap-9', 10.00);
SELECT loyalty.rollback_redemption('cap-9') AS released;
SELECT state, ended_at IS NOT NULL AS ended FROM loyalty.reservation WHERE order_ref = 'cap-9';
-- bad ttls
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CAPPED-B', 'kai', 'cap-10', 10.00, '0 seconds')$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CAPPED-B', 'kai', 'cap-10', 10.00, '-5 minutes')$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CAPPED-B', 'kai', 'cap-10', 10.00, '31 days')$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CAPPED-B', 'kai', 'cap-10', 10.00, NULL)$$);
-- a total cap set on a running campaign starts from its active redemptions;
-- it cannot go below them
SELECT loyalty.update_campaign(:c_cap, '{"total_cap": null}');
SELECT loyalty.redeem_coupon('CAPPED-B', 'lea', 'cap-11', 10.00);
SELECT loyalty.update_campaign(:c_cap, '{"total_cap": 100}');
SELECT uses AS recounted FROM loyalty.campaign WHERE campaign_id = :c_cap;
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"total_cap": 2}')$$, :c_cap));
SELECT campaign_id = :c_cap AS capped_campaign, redemptions, rollbacks, active_redemptions, customers,
	   discount_total, active_reservations, total_cap, remaining_cap
FROM loyalty.campaign_stats WHERE campaign_id = :c_cap;
-- the history is kept: one reversal row per rolled-back redemption
SELECT order_ref, kind, uses, discount, reverses IS NOT NULL AS points_back
FROM loyalty.redemption WHERE campaign_id = :c_cap ORDER BY redemption_id;

--
-- stacking
--
SELECT loyalty.create_campaign('t stack pct', 'percent', percent_off => 30) AS c_s1 \gset
SELECT loyalty.create_campaign('t stack fix', 'fixed', amount_off => 30) AS c_s2 \gset
SELECT loyalty.create_campaign('t stack solo', 'fixed', amount_off => 1, exclusive => true) AS c_s3 \gset
SELECT loyalty.create_campaign('t stack two', 'fixed', amount_off => 1, max_coupons_per_order => 2) AS c_s4 \gset
SELECT loyalty.create_campaign('t stack usd', 'fixed', amount_off => 1, currency => 'USD') AS c_s5 \gset
SELECT loyalty.add_public_code(:c_s1, 'STACKPCT'), loyalty.add_public_code(:c_s2, 'STACKFIX'),
	   loyalty.add_public_code(:c_s2, 'STACKFIX-TOO'), loyalty.add_public_code(:c_s3, 'STACKSOLO'),
	   loyalty.add_public_code(:c_s4, 'STACKTWO'), loyalty.add_public_code(:c_s5, 'STACKUSD');
-- coupons do not compound; together they never take more than the order
SELECT loyalty.redeem_coupon('STACKPCT', 'max', 'stk-1', 40.00) AS percent_part;
SELECT * FROM loyalty.validate_coupon('STACKFIX', 'max', 40.00, 'stk-1');
SELECT loyalty.redeem_coupon('STACKFIX', 'max', 'stk-1', 40.00) AS fixed_part_truncated;
SELECT sum(discount) AS order_total_discount FROM loyalty.redemption WHERE order_ref = 'stk-1';
SELECT valid, reason FROM loyalty.validate_coupon('STACKFIX-TOO', 'max', 40.00, 'stk-1');
SELECT valid, reason FROM loyalty.validate_coupon('STACKSOLO', 'max', 40.00, 'stk-1');
SELECT valid, reason FROM loyalty.validate_coupon('STACKUSD', 'max', 40.00, 'stk-1');
SELECT valid, reason, discount FROM loyalty.validate_coupon('STACKTWO', 'max', 40.00, 'stk-1');
SELECT loyalty.redeem_coupon('STACKSOLO', 'max', 'stk-2', 40.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('STACKPCT', 'max', 'stk-2', 40.00)$$);
SELECT loyalty.redeem_coupon('STACKTWO', 'max', 'stk-3', 40.00);
SELECT loyalty.redeem_coupon('STACKPCT', 'max', 'stk-3', 40.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('STACKFIX', 'max', 'stk-3', 40.00)$$);
-- without an order_ref, validate judges the code alone
SELECT valid, discount FROM loyalty.validate_coupon('STACKFIX', 'max', 40.00);
-- rolling the order back reverses all of its coupons
SELECT loyalty.rollback_redemption('stk-3');
SELECT k.code::text, r.kind, r.discount FROM loyalty.redemption r JOIN loyalty.coupon k USING (coupon_id)
WHERE r.order_ref = 'stk-3' ORDER BY r.redemption_id;

--
-- eligibility rules
--
SELECT loyalty.create_campaign('t welcome', 'fixed', amount_off => 5, new_customers_only => true) AS c_new \gset
SELECT loyalty.add_public_code(:c_new, 'HELLO-NEW') AS code;
SELECT kind, params FROM loyalty.campaign_rule WHERE campaign_id = :c_new;
SELECT valid, reason FROM loyalty.validate_coupon('HELLO-NEW', 'c', '{"amount": 20, "new_customer": true}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('HELLO-NEW', 'c', '{"amount": 20, "new_customer": false}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('HELLO-NEW', 'c', '{"amount": 20}'::jsonb);
SELECT valid, reason FROM loyalty.validate_coupon('HELLO-NEW', 'c', 20.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('HELLO-NEW', 'c', 'new-1', '{"amount": 20, "new_customer": false}'::jsonb)$$);
-- rule kinds: the built-in ones are checked, unknown kinds refused
SELECT kind, builtin, check_function FROM loyalty.eligibility_kind ORDER BY kind;
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'tier', '{"tiers": ["Gold"]}')$$, :c_new));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'segment', '{"segments": []}')$$, :c_new));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'segment', '{"segments": [1]}')$$, :c_new));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'new_customer', '{"new": "yes"}')$$, :c_new));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'new_customer', '{"old": true}')$$, :c_new));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'new_customer', '[]')$$, :c_new));
SELECT pg_temp.try($$SELECT loyalty.add_campaign_rule(999999, 'new_customer')$$);
SELECT pg_temp.try($$SELECT loyalty.add_campaign_rule(NULL, 'new_customer')$$);
-- the extension point: a kind registered with a check function (this is
-- how the tier module adds 'tier'); the rule applies at once
CREATE TABLE pg_temp.vip (customer_id text PRIMARY KEY, since date);
INSERT INTO pg_temp.vip VALUES ('vera', '2026-01-01');
CREATE FUNCTION public.coupon_test_vip(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean LANGUAGE sql STABLE AS $$
	SELECT EXISTS (SELECT 1 FROM vip WHERE vip.customer_id = $1)
		   AND ($3 ->> 'amount')::numeric >= coalesce(($2 ->> 'min_amount')::numeric, 0)
$$;
INSERT INTO loyalty.eligibility_kind (kind, check_function, description)
VALUES ('vip', 'public.coupon_test_vip(text, jsonb, jsonb)', 'test: listed VIP customers');
SELECT loyalty.create_campaign('t vip', 'percent', percent_off => 10) AS c_vip \gset
SELECT loyalty.add_public_code(:c_vip, 'VIPONLY') AS code;
SELECT valid FROM loyalty.validate_coupon('VIPONLY', 'walt', 30.00);
SELECT loyalty.add_campaign_rule(:c_vip, 'vip', '{"min_amount": 25}') AS vip_rule \gset
SELECT valid, reason FROM loyalty.validate_coupon('VIPONLY', 'walt', 30.00);
SELECT valid, reason, discount FROM loyalty.validate_coupon('VIPONLY', 'vera', 30.00);
SELECT valid, reason FROM loyalty.validate_coupon('VIPONLY', 'vera', '{"amount": 20}'::jsonb);
SELECT loyalty.redeem_coupon('VIPONLY', 'vera', 'vip-1', 30.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('VIPONLY', 'walt', 'vip-2', 30.00)$$);
SELECT loyalty.drop_campaign_rule(:vip_rule) AS dropped, loyalty.drop_campaign_rule(:vip_rule) AS again;
SELECT valid FROM loyalty.validate_coupon('VIPONLY', 'walt', 30.00);
SELECT pg_temp.try($$INSERT INTO loyalty.eligibility_kind (kind, description) VALUES ('nofunc', 'x')$$);
SELECT pg_temp.try($$INSERT INTO loyalty.eligibility_kind (kind, check_function, description) VALUES ('Bad Name', 'public.coupon_test_vip(text, jsonb, jsonb)', 'x')$$);

--
-- null and malformed arguments: errors, and nothing written
--
SELECT pg_temp.footprint() AS before_bad_calls \gset
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon(NULL, 'c', 'bad-1', 10.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', NULL, 'bad-1', 10.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', NULL, 10.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', 'bad-1', NULL::numeric)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', 'bad-1', NULL::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', '', 'bad-1', 10.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', '', 10.00)$$);
SELECT pg_temp.try(format($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', %L, 10.00)$$, repeat('x', 257)));
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', 'bad-1', '{"amount": -5}'::jsonb)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('SUMMER25', 'c', 'bad-1', '{"items": [{"sku": "A", "price": "free", "quantity": 1}]}'::jsonb)$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon(NULL, 'c', 'bad-1', 10.00)$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('SUMMER25', 'c', 'bad-1', '{"amount": []}'::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon(NULL, 'c', 10.00)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', NULL, 10.00)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', NULL::jsonb)$$);
SELECT pg_temp.try($$SELECT valid FROM loyalty.validate_coupon('SUMMER25', 'c', 10.00, '')$$);
SELECT pg_temp.try($$SELECT loyalty.rollback_redemption(NULL)$$);
SELECT pg_temp.try($$SELECT loyalty.rollback_redemption('')$$);
-- failures late in a redemption (after the order row was written) leave nothing either
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('NO-SUCH-CODE', 'c', 'bad-2', 10.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CAPPED-B', 'fay', 'bad-3', 10.00)$$);
SELECT pg_temp.footprint() = :'before_bad_calls' AS nothing_written;
SELECT count(*) AS bad_orders FROM loyalty.coupon_order WHERE order_ref LIKE 'bad-%';

--
-- campaign figures
--
SELECT name, kind, status, codes, redemptions, rollbacks, active_redemptions, customers,
	   discount_total, active_reservations, total_cap, remaining_cap
FROM loyalty.campaign_stats WHERE name LIKE 't %' ORDER BY campaign_id;

--
-- access levels: the app calls the lifecycle, writes no table, cannot
-- configure; the analyst reads the figures
--
CREATE ROLE coupon_t_app;
CREATE ROLE coupon_t_analyst;
SELECT loyalty.grant_access('coupon_t_app', 'app');
SELECT loyalty.grant_access('coupon_t_analyst', 'analyst');
SET ROLE coupon_t_app;
SELECT loyalty.redeem_coupon('WELCOME10', 'nia', 'app-1', 30.00) AS app_redeems;
SELECT valid FROM loyalty.validate_coupon('WELCOME10', 'nia', 30.00);
SELECT loyalty.rollback_redemption('app-1') AS app_rolls_back;
SELECT pg_temp.try($$SELECT count(*) FROM loyalty.redemption$$);
SELECT pg_temp.try($$INSERT INTO loyalty.coupon_order VALUES ('x', 'y', 0, 1, NULL, 'open', now(), now())$$);
SELECT pg_temp.try($$SELECT loyalty.pause_campaign(1)$$);
SELECT pg_temp.try($$SELECT loyalty.generate_codes(1, 1, 'X-####')$$);
SELECT pg_temp.try($$SELECT count(*) FROM loyalty.campaign_stats$$);
RESET ROLE;
SET ROLE coupon_t_analyst;
SELECT count(*) > 0 AS analyst_reads_stats FROM loyalty.campaign_stats;
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('WELCOME10', 'nia', 'app-2', 30.00)$$);
RESET ROLE;
SELECT loyalty.revoke_access('coupon_t_app', 'app');
SELECT loyalty.revoke_access('coupon_t_analyst', 'analyst');
DROP ROLE coupon_t_app;
DROP ROLE coupon_t_analyst;

--
-- clean up
--
CREATE TEMP TABLE t_campaigns AS SELECT campaign_id FROM loyalty.campaign WHERE name LIKE 't %';
DELETE FROM loyalty.coupon_order o WHERE EXISTS (
	SELECT 1 FROM loyalty.redemption r JOIN t_campaigns USING (campaign_id) WHERE r.order_ref = o.order_ref
	UNION ALL
	SELECT 1 FROM loyalty.reservation h JOIN t_campaigns USING (campaign_id) WHERE h.order_ref = o.order_ref);
DELETE FROM loyalty.coupon_order_owner w
WHERE NOT EXISTS (SELECT 1 FROM loyalty.coupon_order o WHERE o.order_ref = w.order_ref);
DELETE FROM loyalty.redemption WHERE campaign_id IN (SELECT campaign_id FROM t_campaigns);
DELETE FROM loyalty.reservation WHERE campaign_id IN (SELECT campaign_id FROM t_campaigns);
DELETE FROM loyalty.coupon WHERE campaign_id IN (SELECT campaign_id FROM t_campaigns);
DELETE FROM loyalty.campaign_rule WHERE campaign_id IN (SELECT campaign_id FROM t_campaigns);
DELETE FROM loyalty.campaign WHERE campaign_id IN (SELECT campaign_id FROM t_campaigns);
SELECT pg_temp.footprint() AS after_cleanup;
DELETE FROM loyalty.eligibility_kind WHERE NOT builtin;
DROP FUNCTION public.coupon_test_vip(text, jsonb, jsonb);
