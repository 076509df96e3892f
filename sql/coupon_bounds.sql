--
-- coupon_bounds: documented errors for out-of-range arguments of the coupon
-- functions (issue 11, item 13): a huge reservation ttl is 22023 (not an
-- overflow, 22008); one call makes at most 10,000,000 codes (54000, with a
-- hint to call in batches) instead of running for hours; sku and category
-- lists are bounded; order_ref has at most 256 bytes.
--
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
	detail text;
	hint text;
BEGIN
	EXECUTE q INTO r;
	RETURN 'ok: ' || coalesce(r, 'null');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' | ' || nullif(detail, ''), '')
		   || coalesce(' | ' || nullif(hint, ''), '');
END $$;

SELECT loyalty.create_campaign('bd ttl', 'fixed', amount_off => 5) AS c_ttl \gset
SELECT loyalty.add_public_code(:c_ttl, 'BDTTL') AS code;

-- ttl: every field huge, positive or negative, and the documented edges
SELECT t AS ttl, pg_temp.try(format($$SELECT discount FROM loyalty.reserve_coupon('BDTTL', 'c', %L, 20.00, %L::interval)$$,
									'bd-' || n, t)) AS result
FROM unnest(ARRAY['178000000 years', '-178000000 years', '100000000 days',
				  '-100000000 days', '2000000000 hours', '-2000000000 hours',
				  '12001 months', '1000 years -365000 days', '31 days',
				  '30 days 1 second', '0', '-1 second']) WITH ORDINALITY AS u(t, n);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('BDTTL', 'c', 'bd-ok1', 20.00, '30 days')$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('BDTTL', 'c', 'bd-ok2', '{"amount": 20}'::jsonb, '1 second')$$);
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('BDTTL', 'c', 'bd-ok3', 20.00, '2 months -40 days')$$);

-- code counts: bounded per call, refused at once
SELECT loyalty.create_campaign('bd codes', 'fixed', amount_off => 5) AS c_codes \gset
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 2147483647, '####-####-####')$$, :c_codes));
SELECT pg_temp.try(format($$SELECT loyalty.generate_codes(%s, 10000001, '####-####-####')$$, :c_codes));
SELECT pg_temp.try($$SELECT count(*) FROM loyalty.random_codes('####-####-####', 2147483647)$$);
SELECT pg_temp.try($$SELECT count(*) FROM loyalty.random_codes('####-####-####', 10000001)$$);
SELECT count(*) FROM loyalty.coupon WHERE campaign_id = :c_codes;
-- within the bound
SELECT loyalty.generate_codes(:c_codes, 3, '####-####-####');
SELECT count(*) FROM loyalty.random_codes('####-####-####', 3);

-- sku and category lists: at most 10000 entries of at most 256 bytes
SELECT pg_temp.try($$SELECT loyalty.create_campaign('bd list', 'percent', percent_off => 5,
	include_skus => (SELECT array_agg('sku-' || i) FROM generate_series(1, 10001) i))$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('bd long', 'percent', percent_off => 5,
	exclude_categories => ARRAY[repeat('x', 257)])$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('bd list ok', 'percent', percent_off => 5,
	include_skus => (SELECT array_agg('sku-' || i) FROM generate_series(1, 10000) i),
	exclude_categories => ARRAY[repeat('x', 256)]) > 0$$);

-- order_ref: 1 to 256 bytes, the same limit for every coupon function
SELECT pg_temp.try(format($$SELECT loyalty.redeem_coupon('BDTTL', 'c', %L, 20.00)$$, repeat('r', 256)));
SELECT pg_temp.try(format($$SELECT loyalty.redeem_coupon('BDTTL', 'c', %L, 20.00)$$, repeat('r', 257)));
SELECT pg_temp.try(format($$SELECT valid FROM loyalty.validate_coupon('BDTTL', 'c', 20.00, %L)$$, repeat('r', 257)));
SELECT pg_temp.try(format($$SELECT loyalty.rollback_redemption(%L)$$, repeat('r', 257)));
SELECT pg_temp.try(format($$SELECT loyalty.rollback_redemption(%L)$$, repeat('r', 256)));
