--
-- the DETAIL of every points error (LP SQLSTATEs) is machine-readable
-- (issue 13 item 8), in the coupon family's shape (doc/errors.md): one JSON
-- object, "reason" first (the SQLSTATE's reason token, doc/points.md
-- "Errors"), then the keys fixed per SQLSTATE; texts are JSON strings,
-- numbers plain, unknown values null.  LP001's DETAIL has one shape, with or
-- without an account.
--
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';

-- SQLSTATE, DETAIL, and the keys of the DETAIL's JSON object in order (NULL
-- when the DETAIL is not a JSON object whose first key is a string "reason")
CREATE FUNCTION pg_temp.keys(d text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	j json;
	k text;
BEGIN
	BEGIN
		j := d::json;
	EXCEPTION WHEN invalid_text_representation THEN
		RETURN NULL;
	END;
	IF json_typeof(j) <> 'object' OR json_typeof(j -> 'reason') IS DISTINCT FROM 'string' THEN
		RETURN NULL;
	END IF;
	SELECT string_agg(x.key, ',' ORDER BY x.n) INTO k FROM json_object_keys(j) WITH ORDINALITY AS x(key, n);
	RETURN CASE WHEN k LIKE 'reason,%' OR k = 'reason' THEN k END;
END $$;
CREATE FUNCTION pg_temp.detail(q text, OUT state text, OUT keys text, OUT detail text)
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	state := 'ok';
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
	keys := coalesce(pg_temp.keys(detail), '<not in the documented shape>');
END $$;
-- a value of a DETAIL, decoded (JSON strings unquoted)
CREATE FUNCTION pg_temp.value(d text, k text) RETURNS text LANGUAGE sql AS $$
	SELECT d::json ->> k
$$;

INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('base', 'purchase', 1);
SELECT points FROM loyalty.earn_points('ann', 100, 'A-1', at => '2026-01-01');

-- LP001, with and without an account: the same keys
SELECT * FROM pg_temp.detail($$SELECT loyalty.spend_points('ann', 500, 'A-2', at => '2026-01-02')$$);
SELECT * FROM pg_temp.detail($$SELECT loyalty.spend_points('nobody', 500, 'N-1', at => '2026-01-02')$$);
-- LP002: another customer's reference, a different request under one's own
SELECT * FROM pg_temp.detail($$SELECT loyalty.earn_points('bob', 5, 'A-1', at => '2026-01-02')$$);
SELECT * FROM pg_temp.detail($$SELECT loyalty.earn_points('ann', 5, 'A-1', at => '2026-01-02')$$);
-- LP003: nothing under the reference, with or without a customer; a return of no order
SELECT * FROM pg_temp.detail($$SELECT loyalty.reverse_points('X-1', at => '2026-01-02')$$);
SELECT * FROM pg_temp.detail($$SELECT loyalty.reverse_points('X-1', 'ann', at => '2026-01-02')$$);
SELECT * FROM pg_temp.detail($$SELECT loyalty.points_return_for_order('ann', 'X-1', 'X-1-r', 1, at => '2026-01-02')$$);
-- LP004: an action no rule names
SELECT * FROM pg_temp.detail($$SELECT loyalty.earn_for_action('ann', 'dance', 'A-3', at => '2026-01-02')$$);
-- LP005: after a reversal
SELECT points FROM loyalty.reverse_points('A-1', at => '2026-01-02');
SELECT * FROM pg_temp.detail($$SELECT loyalty.spend_points('ann', 1, 'A-1', at => '2026-01-03')$$);
SELECT * FROM pg_temp.detail($$SELECT loyalty.earn_points('ann', 100, 'A-1', at => '2026-01-01')$$);
-- LP011: another currency
SELECT * FROM pg_temp.detail($$SELECT loyalty.earn_for_order('ann', 'A-4', 10, 'USD', at => '2026-01-03')$$);
-- LP012: a return beyond the order
SELECT points FROM loyalty.earn_for_order('ann', 'A-5', 20, at => '2026-01-03');
SELECT * FROM pg_temp.detail($$SELECT loyalty.points_return_for_order('ann', 'A-5', 'A-5-r', 20.5, at => '2026-01-04')$$);

-- points and coupons: LP007, LP008, LP009, LP002 and LP010 of exchange_points / reverse_points
SELECT loyalty.create_campaign('Voucher', 'fixed', amount_off => 10, total_cap => 1) AS voucher \gset
SELECT loyalty.create_campaign('Not offered', 'fixed', amount_off => 5) AS other \gset
INSERT INTO loyalty.points_reward (campaign_id, points) VALUES (:voucher, 10);
SELECT points FROM loyalty.earn_points('cat', 100, 'C-1', at => '2026-01-01');
SELECT * FROM pg_temp.detail(format($$SELECT loyalty.exchange_points('cat', %s, 'C-2')$$, :other));
SELECT loyalty.pause_campaign(:voucher);
SELECT * FROM pg_temp.detail(format($$SELECT loyalty.exchange_points('cat', %s, 'C-2')$$, :voucher));
SELECT loyalty.resume_campaign(:voucher);
SELECT points FROM loyalty.exchange_points('cat', :voucher, 'C-2');
SELECT * FROM pg_temp.detail(format($$SELECT loyalty.exchange_points('cat', %s, 'C-3')$$, :voucher));
SELECT * FROM pg_temp.detail(format($$SELECT loyalty.exchange_points('dan', %s, 'C-2')$$, :voucher));
SELECT code AS cat_code FROM loyalty.points_exchange WHERE reference = 'C-2' \gset
SELECT loyalty.redeem_coupon(:'cat_code', 'cat', 'order-c', '{"amount": 50}'::jsonb) > 0 AS redeemed;
SELECT * FROM pg_temp.detail($$SELECT loyalty.reverse_points('exchange:C-2')$$);

-- LP005: a repeated exchange after its reversal
SELECT loyalty.create_campaign('Voucher 2', 'fixed', amount_off => 5) AS voucher2 \gset
INSERT INTO loyalty.points_reward (campaign_id, points) VALUES (:voucher2, 10);
SELECT points FROM loyalty.exchange_points('cat', :voucher2, 'C-5');
SELECT points FROM loyalty.reverse_points('exchange:C-5');
SELECT * FROM pg_temp.detail(format($$SELECT loyalty.exchange_points('cat', %s, 'C-5')$$, :voucher2));

-- a client reads the values back
SELECT pg_temp.value(d.detail, 'reference') AS reference, pg_temp.value(d.detail, 'customer_id') AS customer_id
FROM pg_temp.detail($$SELECT loyalty.reverse_points('odd "ref"; x', 'cust;"1"', at => '2026-01-02')$$) d;

-- clean up: the ledger cannot be emptied, so start the extension afresh
DROP EXTENSION loyalty;
CREATE EXTENSION loyalty;
