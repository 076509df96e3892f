--
-- coupon_config: campaign rules and the configuration they name (issue 11,
-- item 14).  A rule naming an unknown tier or segment is refused when it is
-- written (22023); renaming a tier or segment carries over to the rules
-- naming it; deleting one a rule names is refused (23503, the DETAIL naming
-- the campaign).  A configuration problem that still reaches validation
-- (stored before, or written around the admin functions) is the reason
-- config_error (LY016), never an error of the app's call.
--
-- Everything runs in one transaction that is rolled back: the tier ladder
-- and the segment map stay as the other tests expect them.
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

-- the same, with rule and campaign ids masked (they depend on earlier tests)
CREATE FUNCTION pg_temp.try_masked(q text) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(pg_temp.try(q), '(Rule|id) [0-9]+', '\1 N', 'g')
$$;

BEGIN;
INSERT INTO loyalty.tier (name, rank, threshold) VALUES
	('Bronze', 0, 0), ('Silver', 1, 500), ('Gold', 2, 1000);

--
-- written: unknown names are refused
--
SELECT loyalty.create_campaign('cfg gold', 'percent', percent_off => 10) AS c_gold \gset
SELECT loyalty.add_public_code(:c_gold, 'CFGGOLD') AS code;
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'tier', '{"min_tier": "Diamond"}')$$, :c_gold));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'tier', '{"tiers": ["Silver", "Platinum"]}')$$, :c_gold));
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'segment', '{"segments": ["Champions", "VIPs"]}')$$, :c_gold));
SELECT pg_temp.try($$SELECT loyalty.create_campaign('cfg seg bad', 'percent', percent_off => 10, segments => ARRAY['Nope'])$$);
SELECT count(*) AS campaigns_named_cfg_seg_bad FROM loyalty.campaign WHERE name = 'cfg seg bad';
SELECT loyalty.add_campaign_rule(:c_gold, 'tier', '{"min_tier": "Gold"}') > 0 AS gold_rule;
SELECT loyalty.create_campaign('cfg silver', 'fixed', amount_off => 5) AS c_silver \gset
SELECT loyalty.add_public_code(:c_silver, 'CFGSILVER') AS code;
SELECT loyalty.add_campaign_rule(:c_silver, 'tier', '{"tiers": ["Silver", "Gold"]}') > 0 AS list_rule;
SELECT loyalty.create_campaign('cfg risk', 'fixed', amount_off => 5, segments => ARRAY['At Risk', 'Lost']) AS c_risk \gset

--
-- renames carry over; validation keeps answering
--
SELECT valid, reason FROM loyalty.validate_coupon('CFGGOLD', 'nobody', 50.00);
UPDATE loyalty.tier SET name = 'Gold Plus' WHERE name = 'Gold';
SELECT c.name, r.kind, r.params FROM loyalty.campaign_rule r JOIN loyalty.campaign c USING (campaign_id)
WHERE c.name LIKE 'cfg %' ORDER BY r.rule_id;
SELECT valid, reason FROM loyalty.validate_coupon('CFGGOLD', 'nobody', 50.00);
SELECT valid, reason FROM loyalty.validate_coupon('CFGSILVER', 'nobody', 50.00);
UPDATE loyalty.segment SET name = 'At risk (win back)' WHERE name = 'At Risk';
SELECT r.params FROM loyalty.campaign_rule r WHERE r.campaign_id = :c_risk;
-- a rename to the same name, or of another column, changes no rule
UPDATE loyalty.tier SET threshold = 1200 WHERE name = 'Gold Plus';
UPDATE loyalty.segment SET description = 'renamed' WHERE name = 'At risk (win back)';
SELECT r.params FROM loyalty.campaign_rule r WHERE r.campaign_id IN (:c_gold, :c_risk) ORDER BY r.rule_id;

--
-- deletes of named configuration are refused
--
SAVEPOINT s;
SELECT pg_temp.try_masked($$DELETE FROM loyalty.tier WHERE name = 'Gold Plus' RETURNING name$$);
SELECT pg_temp.try_masked($$DELETE FROM loyalty.tier WHERE name = 'Silver' RETURNING name$$);
DELETE FROM loyalty.segment_rule WHERE segment = 'At risk (win back)';
SELECT pg_temp.try_masked($$DELETE FROM loyalty.segment WHERE name = 'At risk (win back)' RETURNING name$$);
ROLLBACK TO SAVEPOINT s;
-- once the rule is dropped, the tier may go
SELECT loyalty.drop_campaign_rule(r.rule_id) FROM loyalty.campaign_rule r WHERE r.campaign_id = :c_gold;
SELECT pg_temp.try_masked($$DELETE FROM loyalty.tier WHERE name = 'Gold Plus' RETURNING name$$);

--
-- configuration broken around the admin functions: a reason, not an error
--
SET LOCAL session_replication_role = replica;
DELETE FROM loyalty.tier WHERE name = 'Silver';
SET LOCAL session_replication_role = origin;
UPDATE loyalty.campaign SET updated_at = now() WHERE campaign_id = :c_silver;
SELECT valid, reason, discount FROM loyalty.validate_coupon('CFGSILVER', 'nobody', 50.00);
SELECT valid, reason, discount FROM loyalty.validate_coupon('CFGSILVER', 'nobody', '{"amount": 50}'::jsonb, 'cfg-1');
SELECT pg_temp.try($$SELECT discount FROM loyalty.reserve_coupon('CFGSILVER', 'nobody', 'cfg-1', 50.00)$$);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CFGSILVER', 'nobody', 'cfg-1', 50.00)$$);
SELECT count(*) AS rows_written FROM loyalty.coupon_order WHERE order_ref = 'cfg-1';
-- a rule kind without a check function
INSERT INTO loyalty.eligibility_kind (kind, builtin, description) VALUES ('cfg_ghost', true, 'test: no check function');
SELECT loyalty.create_campaign('cfg ghost', 'fixed', amount_off => 5) AS c_ghost \gset
SELECT loyalty.add_public_code(:c_ghost, 'CFGGHOST') AS code;
SELECT loyalty.add_campaign_rule(:c_ghost, 'cfg_ghost') > 0 AS ghost_rule;
SELECT valid, reason FROM loyalty.validate_coupon('CFGGHOST', 'nobody', 50.00);
SELECT pg_temp.try($$SELECT loyalty.redeem_coupon('CFGGHOST', 'nobody', 'cfg-2', 50.00)$$);
-- a check function that fails for another reason than its configuration
-- still fails the call (only data exceptions, class 22, are config_error)
CREATE FUNCTION pg_temp.cfg_boom(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = 'P0001'; END $$;
INSERT INTO loyalty.eligibility_kind (kind, check_function, description)
VALUES ('cfg_boom', 'pg_temp.cfg_boom(text, jsonb, jsonb)'::regprocedure, 'test: fails');
SELECT loyalty.create_campaign('cfg boom', 'fixed', amount_off => 5) AS c_boom \gset
SELECT loyalty.add_public_code(:c_boom, 'CFGBOOM') AS code;
SELECT loyalty.add_campaign_rule(:c_boom, 'cfg_boom') > 0 AS boom_rule;
SELECT pg_temp.try($$SELECT reason FROM loyalty.validate_coupon('CFGBOOM', 'nobody', 50.00)$$);
ROLLBACK;
