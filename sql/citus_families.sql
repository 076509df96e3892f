--
-- The campaign, referral, mission and CLV tables can be distributed as
-- loyalty.citus_setup() distributes them (the Citus cluster itself:
-- test/scripts/citus.sh)
--
\set VERBOSITY terse
-- per-customer tables: every unique index includes customer_id, and
-- customer_id is text COLLATE "C" (NULL: distributable and colocatable)
SELECT t, loyalty._citus_not_distributable(('loyalty.' || t)::regclass) AS not_distributable
FROM unnest(ARRAY['campaign_publication', 'campaign_filtered', 'experiment_assignment', 'consent',
				  'consent_history', 'customer_dates', 'cart', 'outbox', 'referral_code', 'referral',
				  'referral_period', 'mission_optin', 'mission_customer', 'mission_attempt',
				  'mission_contribution', 'mission_order_delta', 'referral_coupon']) AS t;
-- the global keys: every unique index includes the distribution column
SELECT loyalty._citus_keyed_by('loyalty.referral_code_key'::regclass, 'code') AS code_key_by_code,
	   loyalty._citus_keyed_by('loyalty.referral_claim'::regclass, 'digest') AS claim_by_digest;
-- the code is distributable: it has a hash operator class
SELECT count(*) AS hash_opclasses FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
WHERE c.opcintype = 'loyalty.coupon_code'::regtype AND a.amname = 'hash' AND c.opcdefault;
-- configuration tables become reference tables: no trigger of loyalty's on
-- them, but for the statement triggers that only invalidate the order
-- feed's cache (they refuse nothing and read no table: harmless on a
-- placement)
SELECT t, (SELECT count(*) FROM pg_trigger g
		   WHERE g.tgrelid = ('loyalty.' || t)::regclass AND NOT g.tgisinternal
			 AND g.tgfoid <> 'loyalty._mission_config_changed()'::regprocedure) AS triggers,
		  (SELECT count(*) FROM pg_trigger g
		   WHERE g.tgrelid = ('loyalty.' || t)::regclass AND NOT g.tgisinternal
			 AND NOT (g.tgtype::integer & 1 = 0 AND g.tgtype::integer & 2 = 0)) AS row_or_before_triggers
FROM unnest(ARRAY['experiment', 'experiment_variant', 'marketing_campaign', 'frequency_cap',
				  'referral_program', 'referral_reward_tier', 'mission', 'mission_order_source',
				  'clv_model']) AS t;
-- no foreign key from these tables (a distributed table may reference only
-- a reference table or a colocated one)
SELECT count(*) AS foreign_keys FROM pg_constraint
WHERE contype = 'f' AND connamespace = 'loyalty'::regnamespace;
-- citus_setup lists every table of these families (it skips a table it
-- does not list: it would stay on the coordinator)
SELECT c.relname AS not_listed
FROM pg_class c
WHERE c.relnamespace = 'loyalty'::regnamespace AND c.relkind = 'r'
  AND (c.relname ~ '^(campaign_publication|campaign_filtered|experiment|consent|customer_dates|cart|outbox|referral|mission|marketing_campaign|frequency_cap|clv)')
  AND pg_get_functiondef('loyalty.citus_setup(boolean)'::regprocedure) !~ ('''' || c.relname || '[:'']')
ORDER BY 1;
