--
-- campaign_publish_direct: the one-pass writer of a bound-code campaign
-- (loyalty._publish_codes_direct, campaign_publish.c) writes what the
-- statements write; a table it cannot write directly (here: a trigger on
-- loyalty.coupon) sends the run through the statements, with the same
-- rows; already offered and no-consent customers are counted and logged
-- alike; publishing again offers nothing twice.
--
-- (in a database of its own: the ids the other tests print must not shift)
\set regress_db :DBNAME
CREATE DATABASE campaign_direct_db;
\c campaign_direct_db
CREATE EXTENSION loyalty;
SET timezone = 'UTC';
\set SHOW_CONTEXT never
-- which path ran: calls of the writer and of the statements' code step,
-- counted within one transaction (pending function statistics are flushed
-- only between transactions, so the difference is this run's)
SET track_functions = 'all';
CREATE FUNCTION pg_temp.calls() RETURNS TABLE (direct bigint, statements bigint)
LANGUAGE sql AS $$
SELECT coalesce(pg_stat_get_xact_function_calls('loyalty._publish_codes_direct(bigint, bigint, text, text, timestamptz, text[], text[])'::regprocedure), 0),
	   coalesce(pg_stat_get_xact_function_calls('loyalty._publish_codes(loyalty.marketing_campaign, bigint, text, bigint, timestamptz, boolean)'::regprocedure), 0)
$$;

SELECT loyalty.create_campaign('direct coupons', 'fixed', amount_off => 5) AS cc \gset
-- p1..p4 opt in by email, p5 opts out, p6 never answered, p7 only by sms
SELECT loyalty.set_consent('p' || i, 'email', true, 'signup form', '2026-01-01') FROM generate_series(1, 5) i;
SELECT loyalty.set_consent('p5', 'email', false, 'unsubscribe link', '2026-02-01');
SELECT loyalty.set_consent('p7', 'sms', true, 'shop', '2026-01-01');

-- two identical campaigns over an explicit audience (a repeated key, the
-- order unsorted): the first published directly, the second through the
-- statements
SELECT loyalty.create_marketing_campaign('direct', 'customers',
	'{"customers": ["p3", "p1", "p6", "p2", "p5", "p7", "p4", "p1"]}',
	'code', coupon_campaign_id => :cc, code_pattern => 'DR-####-####') AS mc_direct \gset
SELECT loyalty.create_marketing_campaign('statements', 'customers',
	'{"customers": ["p3", "p1", "p6", "p2", "p5", "p7", "p4", "p1"]}',
	'code', coupon_campaign_id => :cc, code_pattern => 'DR-####-####') AS mc_stmt \gset

BEGIN;
SELECT direct AS d0, statements AS s0 FROM pg_temp.calls() \gset
SELECT * FROM loyalty.publish_marketing_campaign(:mc_direct, '2026-11-02');
SELECT c.direct - :d0 AS direct_calls, c.statements - :s0 AS statement_calls FROM pg_temp.calls() c;
COMMIT;

-- a trigger on the coupon table: the writer declines, the statements run
CREATE TABLE coupon_trigger_log (code text);
CREATE FUNCTION log_coupon() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.coupon_trigger_log VALUES (NEW.code::text);
	RETURN NEW;
END;
$$;
CREATE TRIGGER log_coupon AFTER INSERT ON loyalty.coupon FOR EACH ROW EXECUTE FUNCTION log_coupon();
BEGIN;
SELECT direct AS d0, statements AS s0 FROM pg_temp.calls() \gset
SELECT * FROM loyalty.publish_marketing_campaign(:mc_stmt, '2026-11-02');
SELECT c.direct - :d0 AS direct_calls, c.statements - :s0 AS statement_calls FROM pg_temp.calls() c;
COMMIT;
DROP TRIGGER log_coupon ON loyalty.coupon;
-- the trigger saw the statements' codes
SELECT count(*) AS logged_codes FROM coupon_trigger_log;

-- the same rows either way (but for the campaign and the random codes)
SELECT p.marketing_campaign_id = :mc_direct AS direct, p.customer_id, p.occurrence, p.variant, p.channel,
	   p.published_at, p.offer_kind, p.coupon_campaign_id = :cc AS of_coupon_campaign,
	   p.bonus_points, p.points_reference,
	   p.code::text ~ '^DR-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{3}$' AS code_of_pattern,
	   loyalty.coupon_code_kind(p.code) AS code_kind
FROM loyalty.campaign_publication p ORDER BY 2, 1;
SELECT k.customer_id, p.marketing_campaign_id = :mc_direct AS direct, k.campaign_id = :cc AS of_coupon_campaign,
	   k.max_uses, k.uses, k.reservations, k.created_at, k.voided_at, k.holds_cap_unit
FROM loyalty.coupon k JOIN loyalty.campaign_publication p ON p.code OPERATOR(loyalty.=) k.code
ORDER BY 1, 2;
SELECT count(*) AS codes, count(DISTINCT code) AS distinct_codes FROM loyalty.coupon;
SELECT o.customer_id, o.kind, o.event_key = p.marketing_campaign_id || ':' AS event_key_ok, o.channel,
	   o.payload - 'code' - 'marketing_campaign_id' AS payload,
	   (o.payload->>'marketing_campaign_id')::bigint = p.marketing_campaign_id AS payload_campaign,
	   o.payload->>'code' = p.code::text AS payload_code, o.created_at, o.acked_at
FROM loyalty.outbox o
JOIN loyalty.campaign_publication p
  ON p.customer_id = o.customer_id AND o.payload->>'code' = p.code::text
ORDER BY 1, p.marketing_campaign_id;
SELECT (SELECT count(*) FROM loyalty.outbox) AS outbox_rows;
SELECT customer_id, marketing_campaign_id = :mc_direct AS direct, occurrence, reason, variant, filtered_at
FROM loyalty.campaign_filtered ORDER BY 1, 2;

-- publishing again: everyone offered is already offered, nothing new;
-- p5 opts in meanwhile and is offered now, directly
SELECT loyalty.set_consent('p5', 'email', true, 'preference center', '2026-11-03');
BEGIN;
SELECT direct AS d0, statements AS s0 FROM pg_temp.calls() \gset
SELECT * FROM loyalty.publish_marketing_campaign(:mc_direct, '2026-11-04');
SELECT c.direct - :d0 AS direct_calls, c.statements - :s0 AS statement_calls FROM pg_temp.calls() c;
COMMIT;
SELECT * FROM loyalty.publish_marketing_campaign(:mc_direct, '2026-11-05');
SELECT customer_id, count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc_direct
GROUP BY 1 ORDER BY 1;
-- the funnel keeps p5's filtering; p6's time is its first filtering
SELECT customer_id, reason, filtered_at FROM loyalty.campaign_filtered
WHERE marketing_campaign_id = :mc_direct ORDER BY 1;

-- a query audience, all at once in a transaction the caller rolls back:
-- nothing stays
BEGIN;
SELECT direct AS d0, statements AS s0 FROM pg_temp.calls() \gset
SELECT loyalty.create_marketing_campaign('direct query', 'query',
	'{"query": "SELECT ''p'' || i FROM generate_series(1, 4) i UNION ALL SELECT NULL"}',
	'code', coupon_campaign_id => :cc, code_pattern => 'DQ-######') AS mc_query \gset
SELECT * FROM loyalty.publish_marketing_campaign(:mc_query, '2026-11-06');
SELECT c.direct - :d0 AS direct_calls, c.statements - :s0 AS statement_calls FROM pg_temp.calls() c;
SELECT count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc_query;
ROLLBACK;
SELECT count(*) AS codes FROM loyalty.coupon;

\c :regress_db
DROP DATABASE campaign_direct_db;
