
/* ---------------------------------------------------------------------------
 * citus.sql: loyalty.citus_setup(), run once by an admin on a Citus
 * coordinator after CREATE EXTENSION loyalty (doc/citus.md).
 *
 * loyalty does not depend on Citus: nothing here is resolved until the
 * function runs, which checks that the citus extension is installed and
 * calls Citus's functions (in pg_catalog, where no other role can create
 * one) by their qualified names through EXECUTE.
 *
 * What it does, each step skipped when already done (it can run again):
 *	- configuration tables become reference tables (a copy on every node),
 *	  except segment and segment_rule, not yet (reported);
 *	  Citus refuses a table with triggers unless citus.enable_unsafe_triggers
 *	  is on, which it sets for the transaction: the triggers then run on
 *	  every placement;
 *	- per-customer tables are distributed by customer_id, colocated with
 *	  loyalty.customer_stats (the shop's orders table, distributed by a text
 *	  COLLATE "C" customer key, can be colocated with them too); a table
 *	  whose primary key or a unique index does not include customer_id, or
 *	  whose customer_id is not text COLLATE "C", cannot be distributed and
 *	  colocated: it is reported, not changed;
 *	- the owner tables of global keys (coupon_order_owner and
 *	  points_reference by the caller's reference, referral_code_key by the
 *	  code, referral_claim by the identifier's digest) are distributed by
 *	  that key, each in its own colocation group: such a key is global, not
 *	  per customer;
 *	- with distribute_functions => true, the per-customer API functions are
 *	  distributed by their customer_id argument, colocated with
 *	  customer_stats (no force_delegation: a call inside a transaction
 *	  block stays on the coordinator).
 * One row per object: what was done, or why not.
 * ------------------------------------------------------------------------ */

CREATE FUNCTION loyalty.citus_setup(distribute_functions boolean DEFAULT false)
RETURNS TABLE (object text, action text, result text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ref_tables text[] := ARRAY['settings', 'tracked_table', 'rfm_config', 'segment_snapshot',
		'segment_summary', 'campaign', 'campaign_rule',
		'eligibility_kind', 'coupon', 'points_program', 'tier', 'earning_rule',
		'points_reward', 'clv_model', 'experiment', 'experiment_variant',
		'marketing_campaign', 'frequency_cap', 'referral_program', 'referral_reward_tier',
		'mission', 'mission_order_source'];
	customer_tables text[] := ARRAY['customer_stats', 'customer_stats_delta',
		'segment_change', 'coupon_order', 'redemption', 'reservation', 'coupon_return',
		'coupon_return_line', 'points_account', 'points_lot', 'points_ledger',
		'points_qualifying', 'points_rule_usage', 'tier_history', 'points_exchange',
		'coupon_bonus', 'campaign_publication', 'campaign_filtered',
		'experiment_assignment', 'consent', 'consent_history', 'customer_dates', 'cart',
		'outbox', 'referral_code', 'referral', 'referral_period', 'mission_optin',
		'mission_customer', 'mission_attempt', 'mission_contribution', 'mission_order_delta',
		'referral_coupon'];
	points_config text[] := ARRAY['points_program', 'tier', 'earning_rule', 'points_reward'];
	-- their triggers read and write the whole segment map by the tables'
	-- names: on a placement that is a distributed query inside Citus's copy
	-- (it deadlocks); not reference tables yet
	local_tables text[] := ARRAY['segment', 'segment_rule'];
	-- global keys: a reference, a referral code, an identifier's digest
	owner_tables text[] := ARRAY['coupon_order_owner:order_ref', 'points_reference:reference',
		'referral_code_key:code', 'referral_claim:digest'];
	functions text[] := ARRAY['coupon_validate', 'coupon_reserve', 'coupon_redeem',
		'coupon_rollback', 'coupon_release', 'coupon_order_lines', 'coupon_return_lines',
		'coupon_update_order', 'customer_rfm'];
	t text;
	rel regclass;
	col text;
	fn regprocedure;
	points_ok boolean := true;	-- every points table can be distributed
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'citus_setup needs the citus extension'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'CREATE EXTENSION citus on the coordinator (shared_preload_libraries = ''citus''), add the workers, then run loyalty.citus_setup().';
	END IF;
	PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
	-- the points family moves as a whole: one statement of a points call
	-- may not mix tables on the coordinator with distributed or reference ones
	points_ok := NOT EXISTS (
		SELECT 1 FROM unnest(customer_tables) AS x(t)
		WHERE (x.t LIKE 'points%' OR x.t IN ('tier_history', 'coupon_bonus'))
		  AND pg_catalog.to_regclass('loyalty.' || x.t) IS NOT NULL
		  AND NOT loyalty._citus_is_distributed(pg_catalog.to_regclass('loyalty.' || x.t))
		  AND loyalty._citus_not_distributable(pg_catalog.to_regclass('loyalty.' || x.t)) IS NOT NULL);

	FOREACH t IN ARRAY ref_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL;
		object := rel::text;
		action := 'reference table';
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF t = ANY (points_config) AND NOT points_ok THEN
			result := 'not done: a points table cannot be distributed; the points tables stay on the coordinator together';
		ELSE
			-- the coordinator's own rows of a configuration table (a few)
			-- stay on disk, invisible: rfm_config refuses TRUNCATE
			EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY local_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL OR loyalty._citus_is_distributed(rel);
		object := rel::text;
		action := 'reference table';
		result := 'not done: its triggers read the table by name, which deadlocks in Citus''s copy; it stays on the coordinator';
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY customer_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || t);
		CONTINUE WHEN rel IS NULL;
		object := rel::text;
		action := 'distributed by customer_id, colocated with loyalty.customer_stats';
		result := NULL;
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF loyalty._citus_not_distributable(rel) IS NOT NULL THEN
			result := 'not done: ' || loyalty._citus_not_distributable(rel);
		ELSIF (t LIKE 'points%' OR t IN ('tier_history', 'coupon_bonus')) AND NOT points_ok THEN
			result := 'not done: another points table cannot be distributed; the points tables stay on the coordinator together';
		END IF;
		IF result IS NULL THEN
			EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => $3)'
				USING rel, 'customer_id'::text,
					  CASE WHEN t = 'customer_stats' THEN 'default' ELSE 'loyalty.customer_stats' END;
			EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	FOREACH t IN ARRAY owner_tables LOOP
		rel := pg_catalog.to_regclass('loyalty.' || split_part(t, ':', 1));
		CONTINUE WHEN rel IS NULL;
		col := split_part(t, ':', 2);
		object := rel::text;
		action := format('distributed by %s in its own colocation group', col);
		IF loyalty._citus_is_distributed(rel) THEN
			result := 'already';
		ELSIF rel = 'loyalty.points_reference'::regclass AND NOT points_ok THEN
			-- one statement of a points call may not mix it with local tables
			result := 'not done: a points table cannot be distributed; the points tables stay on the coordinator together';
		ELSE
			EXECUTE 'SELECT pg_catalog.create_distributed_table($1, $2, colocate_with => ''none'')'
				USING rel, col;
			EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING rel;
			result := 'done';
		END IF;
		RETURN NEXT;
	END LOOP;

	IF distribute_functions THEN
		FOR fn IN
			SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
			WHERE p.pronamespace = 'loyalty'::regnamespace AND p.proname = ANY (functions)
			  AND p.proargnames[1] = 'customer_id'
			ORDER BY 1
		LOOP
			object := fn::text;
			action := 'function distributed by customer_id';
			EXECUTE 'SELECT pg_catalog.create_distributed_function($1, ''customer_id'', colocate_with => ''loyalty.customer_stats'')'
				USING fn;
			result := 'done';
			RETURN NEXT;
		END LOOP;
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty.citus_setup(boolean) IS
	'Citus coordinator, after CREATE EXTENSION loyalty: configuration tables become reference tables, per-customer tables are distributed by customer_id (colocated), owner tables of references by the reference; with distribute_functions, the per-customer API functions are distributed by customer_id (doc/citus.md)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.citus_setup(boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._citus_not_distributable(rel regclass)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN NOT loyalty._citus_keyed_by(rel, 'customer_id') THEN
			'a primary key or unique index does not include customer_id'
		WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
						 WHERE a.attrelid = rel AND a.attname = 'customer_id'
						   AND a.atttypid = 'pg_catalog.text'::pg_catalog.regtype
						   AND a.attcollation = (SELECT c.oid FROM pg_catalog.pg_collation c
												 WHERE c.collname = 'C'
												   AND c.collnamespace = 'pg_catalog'::pg_catalog.regnamespace)) THEN
			'customer_id is not text COLLATE "C" (it could not be colocated)'
	END
$$;

COMMENT ON FUNCTION loyalty._citus_not_distributable(regclass) IS
	'Internal: why a per-customer table cannot be distributed by customer_id and colocated (NULL: it can)';

CREATE FUNCTION loyalty._citus_is_distributed(rel regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	found boolean := false;
BEGIN
	IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
		INTO found USING rel;
	RETURN found;
END;
$$;

COMMENT ON FUNCTION loyalty._citus_is_distributed(regclass) IS
	'Internal: whether Citus distributes this table (false without Citus)';

CREATE FUNCTION loyalty._citus_keyed_by(rel regclass, col name)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT NOT EXISTS (
		SELECT 1 FROM pg_catalog.pg_index i
		WHERE i.indrelid = rel AND i.indisunique
		  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
						  WHERE a.attrelid = rel AND a.attname = col
							AND a.attnum = ANY (i.indkey::smallint[])))
$$;

COMMENT ON FUNCTION loyalty._citus_keyed_by(regclass, name) IS
	'Internal: whether every unique index of the table includes the column (Citus can distribute it by that column)';
