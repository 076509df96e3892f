--
-- config_references: references between configuration tables without
-- foreign keys (issue 11, item 11: pg_restore -j loads them in any order).
-- The invariants the foreign keys kept still hold where rows are written:
--   - a segment rule names an existing segment (23503), a segment rename
--     carries to its rules, a segment with rules cannot be deleted (23503);
--   - a campaign rule's campaign and kind exist (add_campaign_rule), a kind
--     or campaign that rules use cannot be deleted (23503), nor such a kind
--     renamed; a rule whose kind is missing validates as config_error;
--   - check_integrity() reports what was written around them.
-- reset_segment_map() (item 14) keeps default-named segments and refuses
-- (23503, the DETAIL naming the campaign rule) to drop a segment a campaign
-- rule names.
--
-- Everything runs in one transaction that is rolled back.
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
	RETURN regexp_replace(SQLSTATE || ': ' || SQLERRM || coalesce(' | ' || nullif(detail, ''), ''),
						  '(Rule|rule|id|campaign) [0-9]+', '\1 N', 'g');
END $$;

BEGIN;
-- no foreign key is left between the extension's tables
SELECT conrelid::regclass, conname FROM pg_constraint
WHERE connamespace = 'loyalty'::regnamespace AND contype = 'f';

--
-- segment map
--
INSERT INTO loyalty.segment (name, display_order) VALUES ('VIP', 0);
SELECT pg_temp.try($$INSERT INTO loyalty.segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max)
	VALUES ('Nobody', 5, 5, 5, 5, 5, 5) RETURNING segment$$);
SAVEPOINT s;
UPDATE loyalty.segment_rule SET m_max = 4 WHERE segment = 'Champions' AND r_min = 5 AND f_min = 4;
INSERT INTO loyalty.segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max)
	VALUES ('VIP', 5, 5, 4, 4, 5, 5);
SELECT pg_temp.try($$UPDATE loyalty.segment_rule SET segment = 'Nobody' WHERE segment = 'VIP' RETURNING segment$$);
-- a segment with rules cannot go; a rename carries over to its rules
SELECT pg_temp.try($$DELETE FROM loyalty.segment WHERE name = 'VIP' RETURNING name$$);
UPDATE loyalty.segment SET name = 'Very Important' WHERE name = 'VIP';
SELECT segment, r_min, f_min, m_min FROM loyalty.segment_rule WHERE segment IN ('VIP', 'Very Important');
SELECT loyalty.segment_of('545');
SET CONSTRAINTS ALL IMMEDIATE;
-- written around the triggers: reported
SET LOCAL session_replication_role = replica;
UPDATE loyalty.segment_rule SET segment = 'Ghost' WHERE segment = 'Very Important';
SET LOCAL session_replication_role = origin;
SELECT problem, customer_id, detail FROM loyalty.check_integrity();
ROLLBACK TO SAVEPOINT s;

--
-- campaign rules
--
CREATE FUNCTION public.cfg_ref_vip(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT $1 LIKE 'vip%' $$;
INSERT INTO loyalty.eligibility_kind (kind, check_function, description)
VALUES ('cfg_ref_vip', 'public.cfg_ref_vip(text, jsonb, jsonb)', 'test kind');
SELECT loyalty.create_campaign('cfg ref', 'fixed', amount_off => 5) AS c \gset
SELECT loyalty.add_public_code(:c, 'CFGREF') AS code;
SELECT pg_temp.try($$SELECT loyalty.add_campaign_rule(-1, 'cfg_ref_vip')$$);
SELECT pg_temp.try(format($$SELECT loyalty.add_campaign_rule(%s, 'no_such_kind')$$, :c));
SELECT loyalty.add_campaign_rule(:c, 'cfg_ref_vip') > 0 AS added;
SELECT valid, reason FROM loyalty.validate_coupon('CFGREF', 'someone', 20.00);
SELECT valid, reason FROM loyalty.validate_coupon('CFGREF', 'vip-1', 20.00);
-- the kind and the campaign cannot go while rules use them
SELECT pg_temp.try($$DELETE FROM loyalty.eligibility_kind WHERE kind = 'cfg_ref_vip' RETURNING kind$$);
SELECT pg_temp.try($$UPDATE loyalty.eligibility_kind SET kind = 'cfg_ref_other' WHERE kind = 'cfg_ref_vip' RETURNING kind$$);
SELECT pg_temp.try(format($$DELETE FROM loyalty.campaign WHERE campaign_id = %s RETURNING name$$, :c));
UPDATE loyalty.eligibility_kind SET description = 'still a test kind' WHERE kind = 'cfg_ref_vip';
-- written around the triggers: the rule refuses everyone (config_error),
-- it is not skipped, and check_integrity() reports it
SAVEPOINT s;
SET LOCAL session_replication_role = replica;
DELETE FROM loyalty.eligibility_kind WHERE kind = 'cfg_ref_vip';
SET LOCAL session_replication_role = origin;
UPDATE loyalty.campaign SET updated_at = now() WHERE campaign_id = :c;
SELECT valid, reason FROM loyalty.validate_coupon('CFGREF', 'vip-1', 20.00);
SELECT problem, customer_id, regexp_replace(detail, '[0-9]+', 'N', 'g') AS detail FROM loyalty.check_integrity();
ROLLBACK TO SAVEPOINT s;
SAVEPOINT s;
SET LOCAL session_replication_role = replica;
DELETE FROM loyalty.campaign WHERE campaign_id = :c;
SET LOCAL session_replication_role = origin;
SELECT problem, customer_id, regexp_replace(detail, '[0-9]+', 'N', 'g') AS detail FROM loyalty.check_integrity();
ROLLBACK TO SAVEPOINT s;
-- once its rules are dropped, the kind may go
SELECT loyalty.drop_campaign_rule(r.rule_id) FROM loyalty.campaign_rule r WHERE r.campaign_id = :c;
DELETE FROM loyalty.eligibility_kind WHERE kind = 'cfg_ref_vip' RETURNING kind;

--
-- reset_segment_map() and the campaign rules naming segments
--
-- (segment VIP, without rules, is left from above)
UPDATE loyalty.segment SET name = 'Rising Stars', display_order = 50 WHERE name = 'Promising';
-- Lost takes Champions' place: the reset must move it aside
UPDATE loyalty.segment SET display_order = 100 WHERE name = 'Champions';
UPDATE loyalty.segment SET display_order = 1 WHERE name = 'Lost';
SELECT loyalty.add_campaign_rule(:c, 'segment', '{"segments": ["Champions", "VIP"]}') > 0 AS added;
SELECT pg_temp.try($$SELECT loyalty.reset_segment_map()$$);
SELECT loyalty.drop_campaign_rule(r.rule_id) FROM loyalty.campaign_rule r WHERE r.campaign_id = :c;
SELECT loyalty.add_campaign_rule(:c, 'segment', '{"segments": ["Rising Stars"]}') > 0 AS added;
SELECT pg_temp.try($$SELECT loyalty.reset_segment_map()$$);
SELECT loyalty.drop_campaign_rule(r.rule_id) FROM loyalty.campaign_rule r WHERE r.campaign_id = :c;
-- a rule naming a default segment keeps it: the segment stays, builtin again
SELECT loyalty.add_campaign_rule(:c, 'segment', '{"segments": ["Champions", "Lost"]}') > 0 AS added;
SELECT pg_temp.try($$SELECT loyalty.reset_segment_map()$$);
SELECT name, display_order, builtin FROM loyalty.segment ORDER BY display_order;
SELECT count(*) AS rules, bool_and(builtin) AS builtin FROM loyalty.segment_rule;
SELECT r.params FROM loyalty.campaign_rule r WHERE r.campaign_id = :c;
SELECT count(*) AS problems FROM loyalty.check_integrity();
SET CONSTRAINTS ALL IMMEDIATE;
ROLLBACK;
