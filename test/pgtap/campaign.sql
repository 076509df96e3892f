-- pgTAP: the campaign layer as a job and an app see it: who runs what with
-- whose rights, one signature per name, the transaction semantics of a
-- publication (everything or nothing), and the outbox contract.
BEGIN;
SELECT plan(20);

-- rights: the admin's query runs as the caller, the writers as the owner
SELECT isnt_definer('loyalty', '_audience_query', ARRAY['text']);
SELECT isnt_definer('loyalty', 'publish_marketing_campaign', ARRAY['bigint', 'timestamp with time zone']);
SELECT isnt_definer('loyalty', 'preview_audience', ARRAY['bigint', 'timestamp with time zone']);
SELECT is_definer('loyalty', '_publish', ARRAY['bigint', 'timestamp with time zone', 'text[]', 'boolean']);
SELECT is_definer('loyalty', 'set_consent', ARRAY['text', 'text', 'boolean', 'text', 'timestamp with time zone']);
SELECT is_definer('loyalty', 'outbox_claim', ARRAY['integer']);
SELECT volatility_is('loyalty', 'experiment_bucket', ARRAY['text', 'text'], 'immutable');
SELECT is((SELECT count(*)::int FROM pg_proc p
		   WHERE p.pronamespace = 'loyalty'::regnamespace
			 AND p.proname IN ('create_marketing_campaign', 'publish_marketing_campaign', 'preview_audience',
							   'set_consent', 'set_customer_dates', 'record_cart', 'close_cart',
							   'outbox_claim', 'outbox_ack', 'create_experiment', 'run_campaigns')),
		  11, 'one signature per campaign function name');
SELECT is((SELECT count(*)::int FROM loyalty.access_rule
		   WHERE level = 'app' AND object_name IN ('loyalty.set_consent(text,text,boolean,text,timestamp with time zone)',
												   'loyalty.outbox_claim(integer)')),
		  2, 'the app may record consent and consume the outbox');
SELECT is((SELECT count(*)::int FROM loyalty.access_rule
		   WHERE level = 'app' AND object_name LIKE 'loyalty.publish_marketing_campaign%'),
		  0, 'the app may not publish campaigns');

-- fixtures
SELECT loyalty.create_campaign('tap mc coupons', 'fixed', amount_off => 5) AS cc \gset
SELECT loyalty.set_consent(c, 'email', true, 'tap') FROM unnest(ARRAY['tap-1', 'tap-2']) c;
SELECT loyalty.create_marketing_campaign('tap mc', 'customers', '{"customers": ["tap-1", "tap-2"]}',
	'code', coupon_campaign_id => :cc, code_pattern => 'TP-####-####') AS mc \gset

-- a publication rolled back with its transaction leaves nothing behind
SAVEPOINT before_publish;
SELECT results_eq(format($$SELECT outcome, customers FROM loyalty.publish_marketing_campaign(%s, '2026-11-01')$$, :mc),
				  $$VALUES ('published'::text, 2::bigint)$$, 'both customers published');
SELECT is((SELECT count(*)::int FROM loyalty.coupon WHERE campaign_id = :cc), 2, 'two codes bound');
ROLLBACK TO SAVEPOINT before_publish;
SELECT is((SELECT count(*)::int FROM loyalty.coupon WHERE campaign_id = :cc), 0, 'rolled back: no code');
SELECT is((SELECT count(*)::int FROM loyalty.campaign_publication WHERE marketing_campaign_id = :mc), 0,
		  'rolled back: no publication');
SELECT is((SELECT count(*)::int FROM loyalty.outbox WHERE customer_id LIKE 'tap-%'), 0, 'rolled back: no outbox row');

-- published again: exactly once, with one outbox row each
SELECT results_eq(format($$SELECT outcome, customers FROM loyalty.publish_marketing_campaign(%s, '2026-11-01')$$, :mc),
				  $$VALUES ('published'::text, 2::bigint)$$, 'published after the rollback');
SELECT results_eq(format($$SELECT outcome, customers FROM loyalty.publish_marketing_campaign(%s, '2026-11-02')$$, :mc),
				  $$VALUES ('already_offered'::text, 2::bigint)$$, 'a repeat offers nothing');
SELECT is((SELECT count(*)::int FROM loyalty.outbox WHERE customer_id LIKE 'tap-%' AND kind = 'offer'), 2,
		  'one outbox row per publication');

-- errors are documented SQLSTATEs
SELECT throws_ok($$SELECT loyalty.outbox_claim(0)$$, '22023', NULL, 'batch_size < 1');
SELECT throws_ok($$SELECT loyalty.create_marketing_campaign('tap bad', 'nonsense', '{}', 'none')$$, '22023',
				 NULL, 'unknown audience kind');

SELECT * FROM finish();
ROLLBACK;
