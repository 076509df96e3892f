-- Demo part 70: marketing campaigns.  The shop's consent flags and dates
-- are handed to loyalty, a win-back experiment with a hold-out is
-- published to the "At Risk" segment, a birthday job runs for a week, and
-- the mailer drains the outbox.  (Part 80 measures the outcome.)
\pset footer off
SET TimeZone = 'UTC';

\echo
\echo '=== marketing campaigns: audience, offer, consent, experiment with a hold-out ==='
\echo '--- the app hands over consent (email) and dates: set_consent, set_customer_dates ---'
SELECT count(*) FILTER (WHERE loyalty.set_consent(c.customer_id::text, 'email', c.marketing_consent,
												  'shop signup', c.signup_at)) AS consenting,
	   count(*) AS customers
FROM shop.customers c;
SELECT count(loyalty.set_customer_dates(c.customer_id::text, birth_date => c.birth_date,
										signup_date => (c.signup_at AT TIME ZONE 'UTC')::date)) AS dated
FROM shop.customers c;

\echo
\echo '--- a coupon campaign to offer, and an experiment: 15% code vs 500 points vs an untreated hold-out ---'
SELECT loyalty.create_campaign('Win-back 15%', 'percent', percent_off => 15, max_discount => 40,
							   ends_at => '2026-12-31') AS winback_coupons \gset
SELECT loyalty.create_experiment('Win-back test', '[
	{"variant": "code15", "weight": 45},
	{"variant": "points500", "weight": 45, "offer_kind": "points", "bonus_points": 500},
	{"variant": "holdout", "weight": 10, "holdout": true}]', salt => 'demo win-back') AS winback_test \gset
\echo '--- the audience: "At Risk" as part 40 finds it (batch RFM, recency on business thresholds),'
\echo '    given as an admin''s query: it runs with the rights of the role calling the job ---'
SELECT loyalty.create_marketing_campaign('Win-back At Risk', 'query',
	jsonb_build_object('query', $q$SELECT customer_id::text
		FROM loyalty.rfm_segmentation('shop.completed_orders', 'customer_id', 'ordered_at', 'amount',
									  as_of => '2026-11-01', recency_thresholds => ARRAY[30, 90, 180, 365])
		WHERE segment = 'At Risk'$q$),
	'code', coupon_campaign_id => :winback_coupons, code_pattern => 'WB-####-####',
	experiment_id => :winback_test) AS winback \gset

\echo
\echo '--- preview_audience: the funnel, nothing written yet ---'
SELECT * FROM loyalty.preview_audience(:winback, '2026-11-02 08:00+00');

\echo
\echo '--- publish: codes bound to customers, points credited, hold-out logged, all in one call ---'
SELECT * FROM loyalty.publish_marketing_campaign(:winback, '2026-11-02 08:00+00');
SELECT coalesce(p.variant, f.variant) AS variant,
	   count(p.customer_id) AS offered,
	   count(f.customer_id) FILTER (WHERE f.reason = 'holdout') AS held_out,
	   count(p.code) AS codes_bound, max(p.bonus_points) AS points_each
FROM loyalty.experiment_assignment a
LEFT JOIN loyalty.campaign_publication p
	ON p.customer_id = a.customer_id AND p.marketing_campaign_id = :winback
LEFT JOIN loyalty.campaign_filtered f
	ON f.customer_id = a.customer_id AND f.marketing_campaign_id = :winback
WHERE a.experiment_id = :winback_test
GROUP BY 1 ORDER BY 1;
\echo '--- filtered out, with the reason (the funnel stays explainable) ---'
SELECT reason, count(*) AS customers FROM loyalty.campaign_filtered
WHERE marketing_campaign_id = :winback GROUP BY 1 ORDER BY 1;

\echo
\echo '--- the job runs again (pg_cron, any frequency): nothing is offered twice ---'
SELECT * FROM loyalty.publish_marketing_campaign(:winback, '2026-11-02 09:00+00');

\echo
\echo '--- a birthday job: 200 points on the birthday (program time zone), run daily for a week ---'
SELECT loyalty.create_marketing_campaign('Birthday points', 'birthday', '{"catch_up_days": 2}', 'points',
	bonus_points => 200, schedule => 'scheduled') AS birthday \gset
DO $$
DECLARE
	d timestamptz;
BEGIN
	FOR d IN SELECT generate_series(timestamptz '2026-11-02 06:00+00', '2026-11-08 06:00+00', '1 day') LOOP
		CALL loyalty.run_birthday_campaigns(d);
	END LOOP;
	-- a second run the same morning finds everything already offered
	CALL loyalty.run_birthday_campaigns('2026-11-08 07:00+00');
END $$;
SELECT (published_at AT TIME ZONE 'UTC')::date AS run_day, count(*) AS birthdays_offered
FROM loyalty.campaign_publication WHERE marketing_campaign_id = :birthday GROUP BY 1 ORDER BY 1;
SELECT p.customer_id, d.birth_date, p.occurrence, p.bonus_points, p.points_reference
FROM loyalty.campaign_publication p JOIN loyalty.customer_dates d USING (customer_id)
WHERE p.marketing_campaign_id = :birthday ORDER BY p.published_at, p.customer_id LIMIT 5;

\echo
\echo '--- the mailer: claim a batch (FOR UPDATE SKIP LOCKED), send, acknowledge by id ---'
BEGIN;
SELECT outbox_id, customer_id, kind, channel, payload
FROM loyalty.outbox_claim(3) ORDER BY outbox_id;
SELECT loyalty.outbox_ack(ARRAY(SELECT outbox_id FROM loyalty.outbox WHERE acked_at IS NULL
								ORDER BY outbox_id LIMIT 3)) AS acknowledged;
COMMIT;
SELECT kind, count(*) FILTER (WHERE acked_at IS NULL) AS pending, count(*) AS total
FROM loyalty.outbox GROUP BY 1 ORDER BY 1;
