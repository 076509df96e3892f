--
-- campaign: marketing campaigns -- audiences, offers, idempotent
-- publication, the publication and filtered-out logs, consent, frequency
-- caps, quiet period, preview.
--
-- (in a database of its own: the points ledger and the segment snapshots it
-- writes must not shift the ids the other tests print)
\set regress_db :DBNAME
CREATE DATABASE campaign_db;
\c campaign_db
CREATE EXTENSION loyalty;
SET timezone = 'UTC';
\set SHOW_CONTEXT never
CREATE TABLE mc_orders (
	order_id	serial PRIMARY KEY,
	customer	text NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(10,2) NOT NULL
);
-- a: frequent and recent; b: frequent long ago; c: one recent order;
-- d: one order long ago
INSERT INTO mc_orders (customer, ordered_at, amount)
SELECT 'a', timestamptz '2026-10-01' + k * interval '2 days', 50 FROM generate_series(1, 10) k
UNION ALL
SELECT 'b', timestamptz '2025-12-01' + k * interval '2 days', 50 FROM generate_series(1, 10) k
UNION ALL
SELECT 'c', timestamptz '2026-10-25', 20
UNION ALL
SELECT 'd', timestamptz '2025-11-20', 20;
SELECT customers FROM loyalty.track_orders('mc_orders', 'customer', 'ordered_at', 'amount');
SELECT customers FROM loyalty.refresh_segments('2026-11-01');
SELECT customer_id, segment FROM loyalty.customer_segment ORDER BY customer_id;

SELECT loyalty.create_campaign('mc coupons', 'percent', percent_off => 10, max_discount => 20) AS cc \gset
SELECT loyalty.add_public_code(:cc, 'WELCOME10');

-- consent: a, b, c opt in by email; c opts out later; d never
SELECT loyalty.set_consent('a', 'email', true, 'signup form', '2026-01-01');
SELECT loyalty.set_consent('b', 'email', true, 'signup form', '2026-01-01');
SELECT loyalty.set_consent('c', 'email', true, 'signup form', '2026-01-01');
SELECT loyalty.set_consent('c', 'email', false, 'unsubscribe link', '2026-06-01');
-- a late-arriving older change is history only
SELECT loyalty.set_consent('c', 'email', true, 'import', '2026-03-01');
SELECT customer_id, channel, granted, source, changed_at FROM loyalty.consent ORDER BY 1, 2;
SELECT customer_id, channel, granted, source, changed_at FROM loyalty.consent_history ORDER BY 1, history_id;

-- every customer with a score, offered a bound code
SELECT loyalty.create_marketing_campaign('mc all', 'segments',
	'{"segments": ["Champions", "Loyal", "At Risk", "Hibernating", "Lost", "New", "Promising", "Need Attention", "About to Sleep", "Cannot Lose Them", "Potential Loyalist"]}',
	'code', coupon_campaign_id => :cc, code_pattern => 'MC-####-####') AS mc_all \gset
SELECT * FROM loyalty.preview_audience(:mc_all, '2026-11-02');
-- preview wrote nothing
SELECT count(*) FROM loyalty.campaign_publication;
SELECT * FROM loyalty.publish_marketing_campaign(:mc_all, '2026-11-02');
SELECT p.customer_id, p.occurrence, p.variant, p.channel, p.published_at, p.offer_kind,
	   k.customer_id = p.customer_id AS code_bound, k.campaign_id = :cc AS code_of_campaign
FROM loyalty.campaign_publication p JOIN loyalty.coupon k ON k.code OPERATOR(loyalty.=) p.code
ORDER BY 1;
SELECT customer_id, occurrence, reason, variant FROM loyalty.campaign_filtered ORDER BY 1;
-- the code works for its customer only
SELECT (loyalty.coupon_validate('a', p.code::text, '{"amount": 100}')).reason IS NULL AS valid_for_a,
	   (loyalty.coupon_validate('b', p.code::text, '{"amount": 100}')).reason AS for_b
FROM loyalty.campaign_publication p WHERE p.customer_id = 'a';
-- publishing again offers nothing twice
SELECT * FROM loyalty.publish_marketing_campaign(:mc_all, '2026-11-03');
SELECT count(*) AS publications, count(DISTINCT code) AS codes FROM loyalty.campaign_publication;
SELECT count(*) AS bound_codes FROM loyalty.coupon WHERE campaign_id = :cc AND customer_id IS NOT NULL;
-- c opts in again: the next run offers c, and only c
SELECT loyalty.set_consent('c', 'email', true, 'preference center', '2026-11-04');
SELECT * FROM loyalty.publish_marketing_campaign(:mc_all, '2026-11-05');
SELECT customer_id FROM loyalty.campaign_publication ORDER BY 1;
-- the funnel keeps c's earlier filtering
SELECT customer_id, reason FROM loyalty.campaign_filtered ORDER BY 1;

-- outbox: one offer event per publication
SELECT customer_id, kind, event_key, channel, payload ? 'code' AS has_code
FROM loyalty.outbox ORDER BY customer_id, outbox_id;

-- public code and points offers; explicit array audience
SELECT loyalty.create_marketing_campaign('mc public', 'customers', '{"customers": ["a", "b", "zz"]}',
	'public_code', coupon_campaign_id => :cc, public_code => 'welcome10') AS mc_pub \gset
SELECT loyalty.set_consent('zz', 'email', true, 'shop');
SELECT * FROM loyalty.publish_marketing_campaign(:mc_pub, '2026-11-06');
SELECT customer_id, offer_kind, code FROM loyalty.campaign_publication
WHERE marketing_campaign_id = :mc_pub ORDER BY 1;
SELECT loyalty.create_marketing_campaign('mc points', 'customers', '{"customers": ["a", "b"]}',
	'points', bonus_points => 250, channel => 'sms') AS mc_pts \gset
SELECT loyalty.set_consent('a', 'sms', true, 'shop');
SELECT * FROM loyalty.publish_marketing_campaign(:mc_pts, '2026-11-06');
SELECT * FROM loyalty.publish_marketing_campaign(:mc_pts, '2026-11-07');
SELECT customer_id, bonus_points, points_reference FROM loyalty.campaign_publication
WHERE marketing_campaign_id = :mc_pts;
SELECT customer_id, points, reference FROM loyalty.points_ledger ORDER BY entry_id;
SELECT available FROM loyalty.points_balance('a');

-- frequency cap: at most 3 offers per customer per 30 days on any channel
INSERT INTO loyalty.frequency_cap (channel, max_offers, period) VALUES (NULL, 3, '30 days');
SELECT loyalty.create_marketing_campaign('mc capped', 'customers', '{"customers": ["a", "b", "zz"]}',
	'none') AS mc_cap \gset
-- a has 3 offers (all, public, points), b and zz fewer
SELECT customer_id, count(*) FROM loyalty.campaign_publication GROUP BY 1 ORDER BY 1;
SELECT * FROM loyalty.publish_marketing_campaign(:mc_cap, '2026-11-08');
SELECT customer_id, reason FROM loyalty.campaign_filtered WHERE marketing_campaign_id = :mc_cap;
-- 30 days later a's window is clear
SELECT * FROM loyalty.publish_marketing_campaign(:mc_cap, '2026-12-10');
SELECT customer_id FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc_cap ORDER BY 1;
DELETE FROM loyalty.frequency_cap;

-- query audience: run with the caller's rights, one text column
SELECT loyalty.create_marketing_campaign('mc query', 'query',
	'{"query": "SELECT DISTINCT customer FROM mc_orders WHERE amount > 30"}', 'none') AS mc_q \gset
SELECT * FROM loyalty.preview_audience(:mc_q, '2026-11-08');
-- a bad query fails as the caller's query
SELECT loyalty.create_marketing_campaign('mc query bad', 'query',
	'{"query": "SELECT order_id FROM mc_orders"}', 'none') AS mc_qb \gset
-- (terse: the DETAIL's wording is PostgreSQL's and differs between versions)
\set VERBOSITY terse
SELECT * FROM loyalty.preview_audience(:mc_qb, '2026-11-08');
\set VERBOSITY default

-- tier and dormant audiences
SELECT loyalty.create_marketing_campaign('mc dormant', 'dormant', '{"days": 180}', 'none') AS mc_d \gset
SELECT * FROM loyalty.preview_audience(:mc_d, '2026-11-08');
SELECT loyalty.set_consent('d', 'email', true, 'shop');
SELECT * FROM loyalty.publish_marketing_campaign(:mc_d, '2026-11-08');
SELECT customer_id, occurrence FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc_d ORDER BY 1;

-- segment transition: entered "At Risk" since October (b, at the first refresh)
SELECT loyalty.create_marketing_campaign('mc entered', 'segment_entered',
	'{"segment": "At Risk", "since": "2026-10-01"}', 'none') AS mc_e \gset
SELECT * FROM loyalty.preview_audience(:mc_e, '2026-11-08');
SELECT * FROM loyalty.publish_marketing_campaign(:mc_e, '2026-11-08');
SELECT customer_id, occurrence ~ '^[0-9]+$' AS snapshot_occurrence FROM loyalty.campaign_publication
WHERE marketing_campaign_id = :mc_e;

-- the admin's query runs with the rights of the calling role, not the owner's
CREATE ROLE mc_t_admin;
SELECT loyalty.grant_access('mc_t_admin', 'admin');
SET ROLE mc_t_admin;
SELECT * FROM loyalty.preview_audience(:mc_q, '2026-11-08');
RESET ROLE;
GRANT SELECT ON mc_orders TO mc_t_admin;
SET ROLE mc_t_admin;
SELECT * FROM loyalty.preview_audience(:mc_q, '2026-11-08');
-- admin rights do not include writing the logs directly
INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, channel, published_at, offer_kind)
VALUES ('x', :mc_q, 'email', now(), 'none');
RESET ROLE;
REVOKE SELECT ON mc_orders FROM mc_t_admin;
SELECT loyalty.revoke_access('mc_t_admin', 'admin');
DROP ROLE mc_t_admin;

-- errors
SELECT loyalty.create_marketing_campaign('mc bad', 'segments', '{}', 'none');
SELECT loyalty.create_marketing_campaign('mc bad', 'segments', '{"segments": []}', 'code', coupon_campaign_id => :cc);
SELECT loyalty.create_marketing_campaign('mc bad', 'segments', '{"segments": []}', 'public_code',
	coupon_campaign_id => :cc, public_code => 'NOSUCHCODE');
SELECT loyalty.create_marketing_campaign('mc bad', 'segments', '{"segments": []}', 'points', bonus_points => 0);
SELECT loyalty.create_marketing_campaign('mc bad', 'unknown', '{}', 'none');
SELECT loyalty.set_marketing_campaign_paused(:mc_cap, true);
SELECT * FROM loyalty.publish_marketing_campaign(:mc_cap, '2026-12-11');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM loyalty.publish_marketing_campaign(:mc_all, '2026-12-11');
ROLLBACK;

\c :regress_db
DROP DATABASE campaign_db;
