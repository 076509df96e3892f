--
-- campaign_jobs: triggered jobs (welcome, birthday, signup anniversary,
-- abandoned cart, run_campaigns), safe at any frequency: idempotent and
-- catching up after missed runs; dates in the program time zone; February
-- 29 birthdays in non-leap years.  Then the outbox: offers, tier changes,
-- points-expiry warnings, claimed with SKIP LOCKED and acknowledged by id.
--
-- (in a database of its own: the points ledger and the segment snapshots it
-- writes must not shift the ids the other tests print)
\set regress_db :DBNAME
CREATE DATABASE campaign_jobs_db;
\c campaign_jobs_db
CREATE EXTENSION loyalty;
SET timezone = 'UTC';
\set SHOW_CONTEXT never
INSERT INTO loyalty.settings (timezone) VALUES ('Europe/Paris');

SELECT loyalty.set_customer_dates('leap', birth_date => '2000-02-29', signup_date => '2024-03-10');
SELECT loyalty.set_customer_dates('march', birth_date => '1990-03-01', signup_date => '2025-03-01');
SELECT loyalty.set_customer_dates('newbie', signup_date => '2027-02-25');
SELECT loyalty.set_customer_dates('nodates');
-- a NULL keeps what is stored
SELECT loyalty.set_customer_dates('leap');
SELECT customer_id, birth_date, signup_date FROM loyalty.customer_dates ORDER BY 1;
SELECT count(loyalty.set_consent(c, 'email', true, 'signup'))
FROM unnest(ARRAY['leap', 'march', 'newbie', 'nodates']) c;

SELECT loyalty.create_marketing_campaign('job birthday', 'birthday', '{"catch_up_days": 3}', 'points',
	bonus_points => 50, schedule => 'scheduled') AS bday \gset
SELECT loyalty.create_marketing_campaign('job anniversary', 'anniversary', '{}', 'none',
	schedule => 'scheduled') AS anniv \gset
SELECT loyalty.create_marketing_campaign('job welcome', 'welcome', '{"within_days": 7}', 'none',
	schedule => 'scheduled', channel => 'email') AS welcome \gset
SELECT loyalty.create_marketing_campaign('job cart', 'abandoned_cart', '{"after": "1 hour"}', 'none',
	schedule => 'scheduled') AS cart \gset
-- a manual campaign is not run by the jobs
SELECT loyalty.create_marketing_campaign('job manual', 'customers', '{"customers": ["leap"]}', 'none') AS manual \gset

CREATE VIEW job_log AS
SELECT m.name, p.customer_id, p.occurrence, p.published_at
FROM loyalty.campaign_publication p JOIN loyalty.marketing_campaign m USING (marketing_campaign_id)
ORDER BY p.published_at, m.name, p.customer_id;

-- 2027-02-27 23:30 UTC is February 28 in Paris: a non-leap year, so the
-- February 29 birthday is today
CALL loyalty.run_birthday_campaigns('2027-02-27 23:30+00');
SELECT * FROM job_log;
-- again, and again later the same day: nothing new
CALL loyalty.run_birthday_campaigns('2027-02-28 10:00+00');
CALL loyalty.run_birthday_campaigns('2027-02-28 20:00+00');
SELECT count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = :bday;
-- the jobs miss March 1 and 2; the run of March 3 catches up (catch_up_days 3)
CALL loyalty.run_campaigns('2027-03-03 08:00+00');
SELECT * FROM job_log;
-- the bonus points of the birthday, once per customer and year
SELECT customer_id, points, reference FROM loyalty.points_ledger ORDER BY entry_id;

-- 2028 is a leap year: February 28 is not the birthday, February 29 is
CALL loyalty.run_birthday_campaigns('2028-02-28 12:00+00');
SELECT count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = :bday AND occurrence = '2028';
CALL loyalty.run_birthday_campaigns('2028-02-29 12:00+00');
SELECT customer_id, occurrence FROM loyalty.campaign_publication
WHERE marketing_campaign_id = :bday ORDER BY occurrence, customer_id;

-- abandoned carts: recorded by the app, offered once each after an hour untouched
SELECT loyalty.record_cart('march', 'cart-1', 80.00, '[{"sku": "A", "quantity": 1}]', '2027-03-05 08:00+00');
SELECT loyalty.record_cart('march', 'cart-1', 95.00, at => '2027-03-05 08:30+00');
SELECT loyalty.record_cart('leap', 'cart-2', 20.00, at => '2027-03-05 08:40+00');
SELECT loyalty.close_cart('leap', 'cart-2', '2027-03-05 09:00+00');
SELECT loyalty.close_cart('leap', 'cart-2', '2027-03-05 09:01+00');
-- an update of a closed cart is ignored
SELECT loyalty.record_cart('leap', 'cart-2', 30.00, at => '2027-03-05 09:10+00');
CALL loyalty.run_abandoned_cart_campaigns('2027-03-05 09:15+00');
SELECT count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = :cart;
CALL loyalty.run_abandoned_cart_campaigns('2027-03-05 09:45+00');
CALL loyalty.run_abandoned_cart_campaigns('2027-03-05 12:00+00');
SELECT customer_id, occurrence FROM loyalty.campaign_publication WHERE marketing_campaign_id = :cart;
SELECT customer_id, cart_ref, amount, closed_at IS NOT NULL AS closed FROM loyalty.cart ORDER BY 1, 2;

-- a paused campaign is skipped by the jobs
SELECT loyalty.set_marketing_campaign_paused(:bday, true);
CALL loyalty.run_campaigns('2028-03-01 08:00+00');
SELECT count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = :bday;
SELECT count(*) AS manual_published FROM loyalty.campaign_publication WHERE marketing_campaign_id = :manual;

-- the outbox: one row per published offer, then tier changes and expiry warnings
SELECT kind, count(*) FROM loyalty.outbox GROUP BY 1 ORDER BY 1;
INSERT INTO loyalty.tier (name, rank, threshold) VALUES ('Base', 0, 0), ('Gold', 1, 100);
SELECT (loyalty.points_earn('gold-1', 'order-1', 150, expires_at => now() + interval '10 days')).points;
SELECT customer_id, kind, event_key ~ '^[0-9]+$' AS history_key, payload->>'to_tier' AS to_tier
FROM loyalty.outbox WHERE kind = 'tier_change';
-- one warning per customer and expiry day, however often the job runs
SELECT loyalty.queue_expiry_warnings(now(), '14 days');
SELECT loyalty.queue_expiry_warnings(now() + interval '1 hour', '14 days');
SELECT loyalty.queue_expiry_warnings(now(), '5 days');
SELECT customer_id, event_key ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' AS day_key, payload->>'points' AS points
FROM loyalty.outbox WHERE kind = 'points_expiry';

-- claim a batch (oldest first) and acknowledge it by id
BEGIN;
SELECT array_agg(outbox_id ORDER BY outbox_id) AS batch FROM loyalty.outbox_claim(3) \gset
SELECT loyalty.outbox_ack(:'batch');
-- acknowledged twice: nothing more
SELECT loyalty.outbox_ack(:'batch');
COMMIT;
SELECT count(*) AS acked FROM loyalty.outbox WHERE acked_at IS NOT NULL;
SELECT count(*) AS pending, (SELECT count(*) FROM loyalty.outbox_claim(1000)) AS claimable
FROM loyalty.outbox WHERE acked_at IS NULL;
SELECT NOT (:'batch'::bigint[] && ARRAY(SELECT outbox_id FROM loyalty.outbox_claim(1000))) AS acked_not_claimed_again;
SELECT loyalty.outbox_claim(0);

DELETE FROM loyalty.settings;

\c :regress_db
DROP DATABASE campaign_jobs_db;
