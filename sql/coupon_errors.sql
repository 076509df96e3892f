--
-- coupon_errors: the failure contract of reserve_coupon / redeem_coupon
-- (issue 13 item 8): one SQLSTATE per reason, a DETAIL that is one JSON
-- object with fixed keys, codes shown as the coupon_code type prints them,
-- and the typo position of a mistyped generated code.
--
-- err() returns the error fields a client reads (psycopg2: e.pgcode,
-- e.diag.message_primary, e.diag.message_detail, e.diag.message_hint).
CREATE FUNCTION pg_temp.err(q text, OUT state text, OUT message text,
							OUT detail jsonb, OUT hint text)
LANGUAGE plpgsql AS $$
DECLARE
	d text;
BEGIN
	EXECUTE q;
	state := '00000';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT,
		d = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	detail := CASE WHEN left(d, 1) = '{' THEN d::jsonb END;
END $$;

SELECT loyalty.create_campaign('err single', 'fixed', amount_off => 5) AS c_single \gset
SELECT loyalty.generate_codes(:c_single, 1, 'SPR-####-####') AS n;
SELECT code::text AS code FROM loyalty.coupon WHERE campaign_id = :c_single \gset
-- the code as a customer types it: lower case, no dashes
SELECT lower(replace(:'code', '-', '')) AS typed \gset
SELECT loyalty.redeem_coupon(:'typed', 'ann', 'err-1', 10.00) > 0 AS redeemed;

-- exhausted: the message shows the code as printed, never the typed form
SELECT e.state,
	   e.message = format('coupon %s cannot be redeemed: exhausted', :'code') AS printed_form,
	   e.detail ->> 'reason' AS reason,
	   e.detail ->> 'code' = :'code' AS detail_code,
	   e.detail ->> 'order_ref' AS order_ref,
	   e.hint
FROM pg_temp.err(format($$SELECT loyalty.redeem_coupon(%L, 'bob', 'err-2', 10.00)$$, :'typed')) e;

-- a mistyped generated code: LY001 with the typo and its position, as the
-- type's own 22P02 gives them
-- (the first two adjacent characters that differ, swapped)
SELECT replace(:'code', '-', '') AS k \gset
SELECT min(i) AS i FROM generate_series(1, length(:'k') - 1) i
WHERE substr(:'k', i, 1) <> substr(:'k', i + 1, 1) \gset
SELECT overlay(:'k' placing substr(:'k', :i + 1, 1) || substr(:'k', :i, 1) from :i for 2) AS swapped \gset
SELECT state, message FROM pg_temp.err(format($$SELECT %L::loyalty.coupon_code$$, :'swapped'))
\gset type_
SELECT :'type_state' AS type_state, replace(:'type_message', :'swapped', '<swapped>') AS type_message;
SELECT e.state, e.message, e.detail - 'position' - 'position2' AS detail,
	   (e.detail ->> 'position')::int = :i AND (e.detail ->> 'position2')::int = :i + 1 AS positions,
	   e.hint = format('The check characters do not match: characters %s and %s appear to be swapped (positions count letters and digits only). The code was mistyped; it was not looked up.', :i, :i + 1) AS hint
FROM pg_temp.err(format($$SELECT loyalty.redeem_coupon(%L, 'bob', 'err-3', 10.00)$$, :'swapped')) e;
SELECT e.state, e.detail ->> 'typo' AS typo, (e.detail ->> 'position')::int = :i AS position
FROM pg_temp.err(format($$SELECT loyalty.reserve_coupon(%L, 'bob', 'err-3', 10.00)$$, :'swapped')) e;
SELECT e.state, e.detail FROM pg_temp.err($$SELECT loyalty.redeem_coupon('AB#CD', 'bob', 'err-3', 10.00)$$) e;
SELECT e.state, e.detail FROM pg_temp.err($$SELECT loyalty.redeem_coupon('', 'bob', 'err-3', 10.00)$$) e;

-- every reason its own SQLSTATE, and the DETAIL's reason is the token
-- validate_coupon returns
SELECT loyalty.create_campaign('err public', 'fixed', amount_off => 5, min_order_amount => 20,
							   total_cap => 1) AS c_pub \gset
SELECT loyalty.add_public_code(:c_pub, 'ERRPUB');
SELECT (v).reason AS validate_reason, e.state, e.detail ->> 'reason' AS detail_reason, e.hint
FROM (SELECT loyalty.validate_coupon('errpub', 'bob', 10.00) AS v) x,
	 pg_temp.err($$SELECT loyalty.redeem_coupon('errpub', 'bob', 'err-4', 10.00)$$) e;
SELECT loyalty.redeem_coupon('ERRPUB', 'bob', 'err-5', 30.00);
SELECT e.state, e.message, e.detail
FROM pg_temp.err($$SELECT loyalty.reserve_coupon('err-pub', 'cy', 'err-6', 30.00)$$) e;
SELECT e.state, e.message, e.detail
FROM pg_temp.err($$SELECT loyalty.redeem_coupon('ERRPUB', 'cy', 'err-5', 30.00)$$) e;
SELECT e.state, e.detail
FROM pg_temp.err($$SELECT loyalty.redeem_coupon('NOPE', 'cy', 'err-7', 30.00)$$) e;
