--
-- coupon_limits: a discount never exceeds its configured limit (issue 11,
-- item 8).  Limits with more decimals than the campaign's currency are
-- refused when the campaign is defined (22023, DETAIL naming the currency's
-- decimals); a limit stored before that check is honoured truncated, never
-- rounded up.  Percent discounts still round half up, below the limits.
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

-- the minor units the code knows: 0, 2 (default), 3 and 4 decimals
SELECT c, loyalty.currency_decimals(c) AS decimals
FROM unnest(ARRAY['EUR', 'USD', 'JPY', 'KRW', 'ISK', 'CLP', 'VND', 'XOF',
				  'KWD', 'BHD', 'JOD', 'OMR', 'TND', 'IQD', 'LYD', 'CLF', 'UYW']) AS c;
SELECT pg_temp.try($$SELECT loyalty.currency_decimals('eur')$$);
SELECT pg_temp.try($$SELECT loyalty.currency_decimals('EURO')$$);

-- the three examples of the issue: refused at definition
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim fixed 1.005', 'fixed', amount_off => 1.005)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim pct 2.995', 'percent', percent_off => 50, max_discount => 2.995)$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim jpy 100.5', 'fixed', amount_off => 100.5, currency => 'JPY')$$);
-- other currencies: KRW 0, KWD 3, CLF 4 decimals
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim krw', 'percent', percent_off => 10, max_discount => 999.9, currency => 'KRW')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim kwd', 'fixed', amount_off => 1.2345, currency => 'KWD')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim clf', 'fixed', amount_off => 0.12345, currency => 'CLF')$$);
-- what the currency allows is accepted (trailing zeros do not count)
SELECT loyalty.create_campaign('lim fixed 1.00', 'fixed', amount_off => 1.000) > 0 AS ok_eur;
SELECT loyalty.create_campaign('lim jpy 100', 'fixed', amount_off => 100.0, currency => 'JPY') AS c_jpy \gset
SELECT loyalty.create_campaign('lim kwd 1.234', 'fixed', amount_off => 1.234, currency => 'KWD') AS c_kwd \gset
SELECT loyalty.create_campaign('lim clf 0.1234', 'fixed', amount_off => 0.1234, currency => 'CLF') AS c_clf \gset
SELECT loyalty.create_campaign('lim pct 2.99', 'percent', percent_off => 50, max_discount => 2.99) AS c_pct \gset
-- update_campaign runs the same check
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"max_discount": 2.995}')$$, :c_pct));
SELECT pg_temp.try(format($$SELECT loyalty.update_campaign(%s, '{"amount_off": 100.5}')$$, :c_jpy));
-- limits must be finite and below 10^15
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim nan', 'fixed', amount_off => 'NaN')$$);
SELECT pg_temp.try($$SELECT loyalty.create_campaign('lim huge', 'percent', percent_off => 5, max_discount => 1e15)$$);

SELECT loyalty.add_public_code(:c_jpy, 'LIMJPY') AS code;
SELECT loyalty.add_public_code(:c_kwd, 'LIMKWD') AS code;
SELECT loyalty.add_public_code(:c_clf, 'LIMCLF') AS code;
SELECT loyalty.add_public_code(:c_pct, 'LIMPCT') AS code;
SELECT valid, reason, discount FROM loyalty.validate_coupon('LIMJPY', 'c', '{"amount": 5000, "currency": "JPY"}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('LIMKWD', 'c', '{"amount": 50, "currency": "KWD"}'::jsonb);
SELECT valid, reason, discount FROM loyalty.validate_coupon('LIMCLF', 'c', '{"amount": 50, "currency": "CLF"}'::jsonb);
-- percent: half up to the currency, never above max_discount
SELECT a AS amount, (loyalty.validate_coupon('LIMPCT', 'c', a)).discount
FROM unnest(ARRAY[5.00, 5.97, 5.99, 100]::numeric[]) AS a;

-- campaigns stored before the check (0.2.0, or written around the admin
-- functions) keep their limits, which count truncated: never more
UPDATE loyalty.campaign SET amount_off = 1.005 WHERE name = 'lim fixed 1.00';
UPDATE loyalty.campaign SET max_discount = 2.995 WHERE campaign_id = :c_pct;
UPDATE loyalty.campaign SET amount_off = 100.5 WHERE campaign_id = :c_jpy;
UPDATE loyalty.campaign SET amount_off = 1.2345 WHERE campaign_id = :c_kwd;
SELECT loyalty.add_public_code(campaign_id, 'LIMEUR') AS code FROM loyalty.campaign WHERE name = 'lim fixed 1.00';
SELECT valid, reason, discount FROM loyalty.validate_coupon('LIMEUR', 'c', 10.00);
SELECT loyalty.redeem_coupon('LIMEUR', 'c', 'lim-1', 10.00);
SELECT a AS amount, (loyalty.validate_coupon('LIMPCT', 'c', a)).discount
FROM unnest(ARRAY[5.99, 5.999, 100]::numeric[]) AS a;
SELECT loyalty.redeem_coupon('LIMPCT', 'c', 'lim-2', 100.00);
SELECT discount FROM loyalty.reserve_coupon('LIMJPY', 'c', 'lim-3', '{"amount": 5000, "currency": "JPY"}'::jsonb);
SELECT loyalty.redeem_coupon('LIMJPY', 'c', 'lim-3', '{"amount": 5000, "currency": "JPY"}'::jsonb);
SELECT loyalty.redeem_coupon('LIMKWD', 'c', 'lim-4', '{"amount": 50, "currency": "KWD"}'::jsonb);
SELECT order_ref, discount FROM loyalty.redemption WHERE order_ref LIKE 'lim-%' ORDER BY order_ref;
