/* ---------------------------------------------------------------------------
 * 50-followup.sql: issue 11 follow-ups (items 11, 4, 14 remainders)
 *   * no foreign key between extension tables, so that pg_restore --jobs
 *     loads them in any order: segment_rule -> segment (rename carried and
 *     delete refused by the segment_in_use trigger, a rule's segment checked
 *     by _segment_map_row), campaign_rule -> campaign and -> eligibility_kind
 *     (checked and locked by add_campaign_rule, deletes refused by the
 *     parent-side triggers campaign_rule_parent and eligibility_kind_in_use);
 *     check_integrity() reports dangling references; a restored segment map
 *     replaces the default one whichever table is loaded first
 *   * reset_segment_map() keeps default-named segments and refuses (23503)
 *     to drop a segment a campaign rule names
 *   * coupon.holds_cap_unit: a code sold for points holds its cap unit
 *     until used or voided, counted by the coupon cap checks;
 *     _coupon_cap_units replaces _points_cap_in_use in exchange_points
 * Existing data: codes already sold by exchanges are marked as holding
 * their unit.
 * ------------------------------------------------------------------------ */

-- segment map
ALTER TABLE loyalty.segment_rule DROP CONSTRAINT segment_rule_segment_fkey;
CREATE OR REPLACE FUNCTION loyalty._segment_map_row()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.builtin THEN
		IF TG_OP = 'UPDATE' AND OLD.builtin THEN
			NEW.builtin := false;	-- editing a default row makes the map the user's
			RETURN NEW;
		END IF;
		RAISE EXCEPTION 'builtin rows of %.% are created only by the loyalty extension', TG_TABLE_SCHEMA, TG_TABLE_NAME
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave the builtin column out of INSERT and UPDATE.';
	END IF;
	IF TG_OP = 'UPDATE' OR NEW.builtin IS NULL THEN
		NEW.builtin := false;
	-- builtin = false given explicitly: a saved map is being loaded
	ELSIF EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.builtin)
	   OR EXISTS (SELECT 1 FROM loyalty.segment_rule r WHERE r.builtin) THEN
		-- drop the default map, rules first; the rules go without a
		-- coverage check when the segments are loaded first (the rules
		-- that follow are checked at their commit)
		IF TG_TABLE_NAME = 'segment' THEN
			TRUNCATE loyalty.segment_rule;
		ELSE
			DELETE FROM loyalty.segment_rule r WHERE r.builtin;
		END IF;
		DELETE FROM loyalty.segment s WHERE s.builtin;
	END IF;
	IF TG_TABLE_NAME = 'segment_rule' THEN
		IF NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) NEW.segment)
		   AND EXISTS (SELECT 1 FROM loyalty.segment) THEN
			RAISE EXCEPTION 'segment rule names unknown segment "%"', NEW.segment
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = format('No segment is named %L; segments are listed in loyalty.segment.', NEW.segment),
					  HINT = 'Insert the segment into loyalty.segment first.';
		END IF;
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_map_row() IS
	'Internal: keep the builtin flag of the segment map right, let a restored map replace the default one (tables loaded in either order), and refuse a rule naming an unknown segment';

CREATE OR REPLACE FUNCTION loyalty._segment_map_take_over()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'DELETE' AND OLD.builtin AND pg_catalog.pg_trigger_depth() > 1
	   AND NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.builtin AND TG_TABLE_NAME = 'segment')
	   AND NOT EXISTS (SELECT 1 FROM loyalty.segment_rule r WHERE r.builtin AND TG_TABLE_NAME = 'segment_rule') THEN
		RETURN NULL;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.segment_rule WHERE builtin) THEN
		UPDATE loyalty.segment_rule SET builtin = false WHERE builtin;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.segment WHERE builtin) THEN
		UPDATE loyalty.segment SET builtin = false WHERE builtin;
	END IF;
	RETURN NULL;
END;
$$;

CREATE FUNCTION loyalty._segment_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n bigint;
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE loyalty.segment_rule r SET segment = NEW.name
		WHERE r.segment OPERATOR(pg_catalog.=) OLD.name;
		RETURN NULL;
	END IF;
	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	SELECT count(*) INTO n FROM loyalty.segment_rule r WHERE r.segment OPERATOR(pg_catalog.=) OLD.name;
	IF n > 0 THEN
		RAISE EXCEPTION 'cannot delete segment "%": % segment rule(s) map scores to it', OLD.name, n
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('loyalty.segment_rule has %s rule(s) for segment %L.', n, OLD.name),
				  HINT = 'Delete or change its rules first, in the same transaction.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._segment_in_use() IS
	'Internal: carry a segment rename to its rules; refuse deleting a segment that rules use (23503)';

CREATE TRIGGER segment_in_use
	AFTER UPDATE OF name OR DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._segment_in_use();
COMMENT ON TRIGGER segment_in_use ON loyalty.segment IS
	'A renamed segment is renamed in its rules; deleting a segment that rules use is refused (23503)';

CREATE OR REPLACE FUNCTION loyalty.reset_segment_map()
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET session_replication_role = replica
AS $$
DECLARE
	-- the default segments, in display order
	names text[] := ARRAY['Champions', 'Loyal', 'Potential Loyalist', 'New', 'Promising',
						  'Need Attention', 'About to Sleep', 'At Risk', 'Cannot Lose Them',
						  'Hibernating', 'Lost'];
	descs text[] := ARRAY[
		'Bought recently and buy often: reward them, they become advocates and early adopters',
		'Buy often and fairly recently: upsell, ask for reviews, offer the loyalty programme',
		'Recent customers with a few orders: offer membership and recommendations',
		'First orders very recently: onboard them and build the relationship early',
		'Recent buyers with a single order or few: build awareness, offer a second purchase',
		'Middling recency and frequency: limited-time offers based on past purchases',
		'Fading recency and few orders: reactivate with popular products and discounts',
		'Used to buy fairly often but not for a long time: personalised win-back offers',
		'Were the most frequent buyers but have not returned for long: win them back now',
		'Long since the last order and few orders: low-cost generic offers',
		'Longest since the last order and fewest orders: last revival campaign or let go'];
BEGIN
	LOCK TABLE loyalty.segment_rule IN SHARE ROW EXCLUSIVE MODE;
	DELETE FROM loyalty.segment_rule;
	DELETE FROM loyalty.segment s WHERE NOT (s.name OPERATOR(pg_catalog.=) ANY (names));
	-- the kept segments take their default place, one at a time (display
	-- orders are unique): whoever holds the place moves past the end first
	FOR i IN 1 .. pg_catalog.array_length(names, 1) LOOP
		IF EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) names[i]) THEN
			UPDATE loyalty.segment s
			SET display_order = (SELECT max(t.display_order) OPERATOR(pg_catalog.+) 1 FROM loyalty.segment t)
			WHERE s.display_order OPERATOR(pg_catalog.=) i
			  AND s.name OPERATOR(pg_catalog.<>) names[i];
			UPDATE loyalty.segment s
			SET display_order = i, description = descs[i], builtin = true
			WHERE s.name OPERATOR(pg_catalog.=) names[i];
		END IF;
	END LOOP;
	INSERT INTO loyalty.segment (name, display_order, description, builtin)
	SELECT names[i], i, descs[i], true
	FROM pg_catalog.generate_series(1, pg_catalog.array_length(names, 1)) AS i
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) names[i]);

	INSERT INTO loyalty.segment_rule (segment, r_min, r_max, f_min, f_max, m_min, m_max, builtin) VALUES
		('Champions',          4, 5, 5, 5, 1, 5, true),
		('Champions',          5, 5, 4, 4, 1, 5, true),
		('Loyal',              3, 3, 4, 5, 1, 5, true),
		('Loyal',              4, 4, 4, 4, 1, 5, true),
		('Potential Loyalist', 4, 5, 2, 3, 1, 5, true),
		('New',                5, 5, 1, 1, 1, 5, true),
		('Promising',          4, 4, 1, 1, 1, 5, true),
		('Need Attention',     3, 3, 3, 3, 1, 5, true),
		('About to Sleep',     3, 3, 1, 2, 1, 5, true),
		('At Risk',            1, 2, 3, 4, 1, 5, true),
		('Cannot Lose Them',   1, 2, 5, 5, 1, 5, true),
		('Hibernating',        2, 2, 1, 2, 1, 5, true),
		('Lost',               1, 1, 1, 2, 1, 5, true);
END;
$$;

ALTER TABLE loyalty.segment ENABLE ALWAYS TRIGGER segment_campaign_rule_delete;

-- campaign rules
ALTER TABLE loyalty.campaign_rule DROP CONSTRAINT campaign_rule_campaign_id_fkey;
ALTER TABLE loyalty.campaign_rule DROP CONSTRAINT campaign_rule_kind_fkey;

CREATE FUNCTION loyalty._campaign_rule_parent_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	used record;
BEGIN
	IF TG_TABLE_NAME = 'campaign' THEN
		IF TG_OP = 'UPDATE' AND NEW.campaign_id OPERATOR(pg_catalog.=) OLD.campaign_id THEN
			RETURN NULL;
		END IF;
		SELECT r.rule_id, r.kind INTO used FROM loyalty.campaign_rule r
		WHERE r.campaign_id OPERATOR(pg_catalog.=) OLD.campaign_id ORDER BY r.rule_id LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'campaign % has eligibility rules', OLD.campaign_id
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = format('Rule %s (kind %L) belongs to campaign %L (id %s).',
									  used.rule_id, used.kind, OLD.name, OLD.campaign_id),
					  HINT = 'Drop its rules with loyalty.drop_campaign_rule() first.';
		END IF;
		RETURN NULL;
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.kind OPERATOR(pg_catalog.=) OLD.kind THEN
		RETURN NULL;
	END IF;
	SELECT r.rule_id, r.campaign_id INTO used FROM loyalty.campaign_rule r
	WHERE r.kind OPERATOR(pg_catalog.=) OLD.kind ORDER BY r.rule_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'eligibility rule kind "%" is used by campaign rules', OLD.kind
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('Rule %s of campaign %s is of kind %L.', used.rule_id, used.campaign_id, OLD.kind),
				  HINT = 'Drop the rules of this kind with loyalty.drop_campaign_rule() first.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_rule_parent_in_use() IS
	'Internal trigger on loyalty.campaign and loyalty.eligibility_kind: refuse deleting a campaign or kind that campaign rules use, or renaming such a kind (23503)';

CREATE TRIGGER campaign_rule_parent
	AFTER UPDATE OF campaign_id OR DELETE ON loyalty.campaign
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_parent_in_use();
CREATE TRIGGER eligibility_kind_in_use
	AFTER UPDATE OF kind OR DELETE ON loyalty.eligibility_kind
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_parent_in_use();

COMMENT ON TRIGGER campaign_rule_parent ON loyalty.campaign IS
	'Refuse deleting a campaign that has eligibility rules (23503)';
COMMENT ON TRIGGER eligibility_kind_in_use ON loyalty.eligibility_kind IS
	'Refuse deleting or renaming an eligibility rule kind that campaign rules use (23503)';

CREATE OR REPLACE FUNCTION loyalty.add_campaign_rule(campaign_id bigint, kind text, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id bigint;
	unknown text;
BEGIN
	IF campaign_id IS NULL OR kind IS NULL OR params IS NULL THEN
		RAISE EXCEPTION 'campaign_id, kind and params must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- locked as a foreign key would: the kind cannot go while the rule is added
	PERFORM 1 FROM loyalty.eligibility_kind k WHERE k.kind = add_campaign_rule.kind FOR KEY SHARE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown eligibility rule kind: "%"', kind
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kinds are listed in loyalty.eligibility_kind.';
	END IF;
	IF jsonb_typeof(params) <> 'object' THEN
		RAISE EXCEPTION 'rule params must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'segment' AND NOT (
		jsonb_typeof(params -> 'segments') = 'array'
		AND jsonb_array_length(params -> 'segments') > 0
		AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(params -> 'segments') e
						WHERE jsonb_typeof(e) <> 'string')) THEN
		RAISE EXCEPTION 'a segment rule needs {"segments": [names]}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF kind = 'new_customer' AND (
		EXISTS (SELECT 1 FROM jsonb_object_keys(params) k WHERE k <> 'new')
		OR coalesce(jsonb_typeof(params -> 'new'), 'boolean') <> 'boolean') THEN
		RAISE EXCEPTION 'a new_customer rule takes {"new": true} or {"new": false}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- names must exist now: a rule naming nothing would refuse every customer
	IF kind = 'segment' THEN
		SELECT e INTO unknown FROM jsonb_array_elements_text(params -> 'segments') AS e
		WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name OPERATOR(pg_catalog.=) e)
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'unknown segment "%" in segment rule', unknown
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('No segment is named %L; segments are listed in loyalty.segment.', unknown);
		END IF;
	ELSIF kind = 'tier' THEN
		SELECT e INTO unknown
		FROM (SELECT params ->> 'min_tier' AS e
			  UNION ALL
			  SELECT jsonb_array_elements_text(params -> 'tiers')
			  WHERE jsonb_typeof(params -> 'tiers') = 'array') AS n
		WHERE n.e IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name OPERATOR(pg_catalog.=) n.e)
		LIMIT 1;
		IF FOUND THEN
			RAISE EXCEPTION 'unknown tier "%" in tier rule', unknown
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('No tier is named %L; tiers are listed in loyalty.tier.', unknown);
		END IF;
	END IF;

	PERFORM loyalty._campaign_gate(add_campaign_rule.campaign_id);
	PERFORM 1 FROM loyalty.campaign t WHERE t.campaign_id = add_campaign_rule.campaign_id FOR KEY SHARE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', add_campaign_rule.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO loyalty.campaign_rule AS r (campaign_id, kind, params)
	VALUES (add_campaign_rule.campaign_id, add_campaign_rule.kind, add_campaign_rule.params)
	RETURNING r.rule_id INTO id;
	UPDATE loyalty.campaign t SET updated_at = now()
	WHERE t.campaign_id = add_campaign_rule.campaign_id;
	RETURN id;
END;
$$;

-- codes sold for points hold their cap unit
ALTER TABLE loyalty.coupon ADD COLUMN holds_cap_unit boolean NOT NULL DEFAULT false;
UPDATE loyalty.coupon c SET holds_cap_unit = true
WHERE EXISTS (SELECT 1 FROM loyalty.points_exchange e WHERE e.coupon_id = c.coupon_id);
COMMENT ON COLUMN loyalty.coupon.holds_cap_unit IS
	'The code was sold for points (exchange_points): while neither used nor voided it holds one unit of its campaign''s total and per-customer caps, which no other code can take';

CREATE INDEX coupon_cap_unit_idx ON loyalty.coupon (campaign_id, customer_id)
	WHERE holds_cap_unit;

COMMENT ON INDEX loyalty.coupon_cap_unit_idx IS
	'Codes sold for points, by campaign and customer: counted by every cap check of a capped campaign';

CREATE FUNCTION loyalty._coupon_cap_units(campaign_id bigint, customer_id text, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_cap_units'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._coupon_cap_units(bigint, text, timestamptz) IS
	'Internal: units of a campaign''s total cap (customer NULL) or of a customer''s per-customer cap in use (redemptions, live reservations, unused codes sold for points), newest snapshot, under the customer lock when a customer is given';

CREATE OR REPLACE FUNCTION loyalty.exchange_points(customer_id text, campaign_id bigint, reference text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT code text, OUT points bigint, OUT available bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	p_customer text := customer_id;
	p_campaign bigint := campaign_id;
	p_reference text := reference;
	reward record;
	camp record;
	ex record;
	spent record;
	issued record;
	before bigint[];
	in_use bigint;
BEGIN
	IF p_customer IS NULL OR p_campaign IS NULL OR p_reference IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, campaign_id, reference and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);

	-- a repeat returns the first exchange
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;

	SELECT * INTO reward FROM loyalty.points_reward r WHERE r.campaign_id = p_campaign AND r.active;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % is not offered for points', p_campaign
			USING ERRCODE = 'LP007',
				  HINT = 'Offer it with a row in loyalty.points_reward.';
	END IF;
	SELECT c.paused, c.starts_at, c.ends_at, c.total_cap, c.per_customer_cap INTO camp
	FROM loyalty.campaign c WHERE c.campaign_id = p_campaign;
	IF NOT FOUND OR camp.paused OR camp.ends_at <= at THEN
		RAISE EXCEPTION 'campaign % cannot be exchanged for points now', p_campaign
			USING ERRCODE = 'LP008',
				  DETAIL = CASE WHEN NOT FOUND THEN 'The campaign does not exist.'
								WHEN camp.paused THEN 'The campaign is paused.'
								ELSE 'The campaign has ended.' END;
	END IF;

	IF camp.total_cap IS NOT NULL OR camp.per_customer_cap IS NOT NULL THEN
		UPDATE loyalty.points_reward r SET points = r.points WHERE r.campaign_id = p_campaign;
		IF camp.total_cap IS NOT NULL THEN
			SELECT c.total_cap INTO camp.total_cap
			FROM loyalty.campaign c WHERE c.campaign_id = p_campaign FOR NO KEY UPDATE;
			in_use := loyalty._coupon_cap_units(p_campaign, NULL, at);
			IF in_use >= camp.total_cap THEN
				RAISE EXCEPTION 'campaign % has no coupon left to exchange', p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = format('Its total cap of %s is reached (%s in use, reserved or sold for points).',
										  camp.total_cap, in_use),
						  HINT = 'No points were spent.';
			END IF;
		END IF;
		IF camp.per_customer_cap IS NOT NULL THEN
			in_use := loyalty._coupon_cap_units(p_campaign, p_customer, at);
			IF in_use >= camp.per_customer_cap THEN
				RAISE EXCEPTION 'customer "%" cannot get another coupon of campaign %', p_customer, p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = format('The per-customer cap of %s is reached (%s in use, reserved or sold for points).',
										  camp.per_customer_cap, in_use),
						  HINT = 'No points were spent.';
			END IF;
		END IF;
	END IF;

	SELECT s.* INTO spent FROM loyalty.spend_points(p_customer, reward.points, 'exchange:' || p_reference, at) s;
	-- a concurrent first call with this reference committed while the spend waited
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;
	IF (SELECT e.created_at FROM loyalty.points_ledger e WHERE e.entry_id = spent.entry_id) <> now() THEN
		RAISE EXCEPTION 'reference "exchange:%" was already used by a spend that is not an exchange', p_reference
			USING ERRCODE = 'LP002';
	END IF;

	before := ARRAY(SELECT c.coupon_id FROM loyalty.coupon c
					WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer);
	PERFORM loyalty.generate_codes(p_campaign, 1, reward.code_pattern, ARRAY[p_customer]);
	SELECT c.coupon_id, c.code::text AS code INTO STRICT issued
	FROM loyalty.coupon c
	WHERE c.campaign_id = p_campaign AND c.customer_id = p_customer
	  AND c.coupon_id <> ALL (before) AND loyalty._points_inserted_here(c.xmin);
	-- the code holds the cap unit it was sold for until used or voided
	UPDATE loyalty.coupon c SET holds_cap_unit = true WHERE c.coupon_id = issued.coupon_id;

	INSERT INTO loyalty.points_exchange (reference, customer_id, campaign_id, points, coupon_id, code,
										 entry_id, available_after, effective_at)
	VALUES (p_reference, p_customer, p_campaign, reward.points, issued.coupon_id, issued.code,
			spent.entry_id, spent.available, at);
	code := issued.code; points := reward.points; available := spent.available;
END;
$$;

COMMENT ON FUNCTION loyalty.exchange_points(text, bigint, text, timestamptz) IS
	'Spend the points a campaign''s coupon costs (loyalty.points_reward) and issue a single-use code bound to the customer; idempotent on reference; LP001 short, LP007 not offered, LP008 campaign paused or ended, LP009 cap reached (nothing spent)';

-- configuration references in the integrity check
CREATE OR REPLACE FUNCTION loyalty.check_integrity()
RETURNS TABLE (problem text, customer_id text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	WITH lot_sums AS (
		SELECT l.customer_id,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'available'), 0) AS available,
			   coalesce(sum(l.remaining) FILTER (WHERE l.state = 'pending'), 0) AS pending,
			   min(LEAST(CASE WHEN l.state = 'pending' THEN l.available_at END, l.expires_at))
				   FILTER (WHERE l.state <> 'closed') AS next_event
		FROM loyalty.points_lot l GROUP BY l.customer_id
	), ledger_sums AS (
		SELECT e.customer_id, sum(e.points) AS points, sum(e.debt_change) AS debt,
			   sum(e.qualifying) AS qualifying, coalesce(sum(e.amount), 0) AS spend,
			   coalesce(sum(e.points) FILTER (WHERE e.kind = 'earn'), 0) AS earned
		FROM loyalty.points_ledger e GROUP BY e.customer_id
	), reversed_earnings AS (
		SELECT e.customer_id, sum(e.points) AS points
		FROM loyalty.points_ledger e
		WHERE e.kind = 'earn'
		  AND e.entry_id IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')
		GROUP BY e.customer_id
	), moves AS (
		SELECT m.lot_id, sum(m.delta) AS delta,
			   sum(-m.delta) FILTER (WHERE m.kind = 'expire') AS expired
		FROM (SELECT e.kind, u.lot_id, u.delta
			  FROM loyalty.points_ledger e, unnest(e.lot_ids, e.lot_points) AS u(lot_id, delta)) m
		GROUP BY m.lot_id
	), buckets AS (
		SELECT q.customer_id, sum(q.points) AS points, sum(q.spend) AS spend
		FROM loyalty.points_qualifying q GROUP BY q.customer_id
	), last_tier AS (
		SELECT DISTINCT ON (h.customer_id) h.customer_id, h.to_tier
		FROM loyalty.tier_history h ORDER BY h.customer_id, h.history_id DESC
	)
	SELECT 'negative balance', a.customer_id,
		   format('available %s, pending %s, debt %s', a.available, a.pending, a.debt)
	FROM loyalty.points_account a
	WHERE a.available < 0 OR a.pending < 0 OR a.debt < 0
	UNION ALL
	SELECT 'balance differs from open lots', a.customer_id,
		   format('account available %s / pending %s, lots %s / %s',
				  a.available, a.pending, coalesce(s.available, 0), coalesce(s.pending, 0))
	FROM loyalty.points_account a LEFT JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE a.available <> coalesce(s.available, 0) OR a.pending <> coalesce(s.pending, 0)
	UNION ALL
	SELECT 'balance differs from ledger', a.customer_id,
		   format('available + pending - debt = %s, ledger sum %s',
				  a.available + a.pending - a.debt, coalesce(g.points, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.available + a.pending - a.debt <> coalesce(g.points, 0)
	UNION ALL
	SELECT 'debt differs from ledger', a.customer_id,
		   format('debt %s, ledger debt changes %s', a.debt, coalesce(g.debt, 0))
	FROM loyalty.points_account a LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	WHERE a.debt <> coalesce(g.debt, 0)
	UNION ALL
	SELECT 'debt with open lots', a.customer_id,
		   format('debt %s while %s points are open', a.debt, a.available + a.pending)
	FROM loyalty.points_account a
	WHERE a.debt > 0 AND (a.available > 0 OR a.pending > 0
						  OR EXISTS (SELECT 1 FROM loyalty.points_lot l
									 WHERE l.customer_id = a.customer_id AND l.state <> 'closed'))
	UNION ALL
	SELECT 'totals differ from ledger', a.customer_id,
		   format('lifetime %s / qualifying %s / spend %s, ledger %s / %s / %s',
				  a.lifetime_earned, a.qualifying, a.qualifying_spend,
				  coalesce(g.earned, 0) - coalesce(r.points, 0), coalesce(g.qualifying, 0), coalesce(g.spend, 0))
	FROM loyalty.points_account a
	LEFT JOIN ledger_sums g ON g.customer_id = a.customer_id
	LEFT JOIN reversed_earnings r ON r.customer_id = a.customer_id
	WHERE a.lifetime_earned <> coalesce(g.earned, 0) - coalesce(r.points, 0)
	   OR a.qualifying <> coalesce(g.qualifying, 0)
	   OR a.qualifying_spend <> coalesce(g.spend, 0)
	UNION ALL
	SELECT 'qualifying buckets differ from account', a.customer_id,
		   format('account %s / %s, monthly buckets %s / %s',
				  a.qualifying, a.qualifying_spend, coalesce(b.points, 0), coalesce(b.spend, 0))
	FROM loyalty.points_account a LEFT JOIN buckets b ON b.customer_id = a.customer_id
	WHERE a.qualifying <> coalesce(b.points, 0) OR a.qualifying_spend <> coalesce(b.spend, 0)
	UNION ALL
	SELECT 'settling hint too late', a.customer_id,
		   format('next_event_at %s, first lot event %s', a.next_event_at, s.next_event)
	FROM loyalty.points_account a JOIN lot_sums s ON s.customer_id = a.customer_id
	WHERE s.next_event IS NOT NULL AND (a.next_event_at IS NULL OR a.next_event_at > s.next_event)
	UNION ALL
	SELECT 'lot differs from ledger', l.customer_id,
		   format('lot %s: remaining %s, expired %s; ledger changes %s, expiries %s',
				  l.lot_id, l.remaining, l.expired, coalesce(m.delta, 0), coalesce(m.expired, 0))
	FROM loyalty.points_lot l LEFT JOIN moves m ON m.lot_id = l.lot_id
	WHERE l.remaining <> coalesce(m.delta, 0) OR l.expired <> coalesce(m.expired, 0)
	   OR l.remaining + l.expired > l.points
	UNION ALL
	SELECT 'malformed lot', l.customer_id, format('lot %s (%s, %s of %s points)', l.lot_id, l.state, l.remaining, l.points)
	FROM loyalty.points_lot l
	WHERE l.state NOT IN ('pending', 'available', 'closed') OR l.points <= 0 OR l.expired < 0
	   OR (l.state = 'closed') <> (l.remaining = 0)
	   OR (l.state = 'pending' AND l.available_at IS NULL)
	   OR l.available_at >= l.expires_at
	UNION ALL
	SELECT 'malformed ledger entry', e.customer_id, format('entry %s (%s)', e.entry_id, e.kind)
	FROM loyalty.points_ledger e
	WHERE e.kind NOT IN ('earn', 'spend', 'expire', 'reverse', 'adjust')
	   OR (e.reference IS NULL) <> (e.kind = 'expire')
	   OR coalesce(cardinality(e.lot_ids) <> cardinality(e.lot_points),
				   (e.lot_ids IS NULL) <> (e.lot_points IS NULL))
	UNION ALL
	SELECT 'ledger entry inconsistent', e.customer_id,
		   format('entry %s: points %s, lot changes %s, debt change %s',
				  e.entry_id, e.points, coalesce(x.total, 0), e.debt_change)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL (SELECT sum(u) AS total FROM unnest(e.lot_points) u) x
	WHERE e.points <> coalesce(x.total, 0) - e.debt_change
	UNION ALL
	SELECT 'lot or entry without account', o.customer_id, o.what
	FROM (SELECT l.customer_id, format('lot %s', l.lot_id) AS what FROM loyalty.points_lot l
		  UNION ALL
		  SELECT e.customer_id, format('entry %s', e.entry_id) FROM loyalty.points_ledger e) o
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.points_account a WHERE a.customer_id = o.customer_id)
	UNION ALL
	SELECT 'lot of another customer', e.customer_id,
		   format('entry %s changes lot %s of customer %s', e.entry_id, l.lot_id, l.customer_id)
	FROM loyalty.points_ledger e
	CROSS JOIN LATERAL unnest(e.lot_ids) AS u(lot_id)
	JOIN loyalty.points_lot l ON l.lot_id = u.lot_id
	WHERE l.customer_id <> e.customer_id
	UNION ALL
	SELECT 'duplicate reference', min(e.customer_id),
		   format('reference %s: %s entries of kind %s', e.reference, count(*), e.kind)
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL
	GROUP BY e.reference, e.kind HAVING count(*) > 1
	UNION ALL
	SELECT 'reference of several customers', min(e.customer_id),
		   format('reference %s used by %s customers', e.reference, count(DISTINCT e.customer_id))
	FROM loyalty.points_ledger e WHERE e.reference IS NOT NULL AND e.kind <> 'adjust'
	GROUP BY e.reference HAVING count(DISTINCT e.customer_id) > 1
	UNION ALL
	SELECT 'reference not owned by the customer', e.customer_id,
		   format('entry %s: reference %s, owner %s', e.entry_id, e.reference, coalesce(o.customer_id, 'none'))
	FROM loyalty.points_ledger e
	LEFT JOIN loyalty.points_reference o ON o.reference = e.reference
	WHERE e.reference IS NOT NULL AND o.customer_id IS DISTINCT FROM e.customer_id
	UNION ALL
	SELECT 'unknown tier', a.customer_id, format('tier %s is not in loyalty.tier', a.tier)
	FROM loyalty.points_account a
	WHERE a.tier IS NOT NULL AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = a.tier)
	UNION ALL
	SELECT 'tier differs from history', a.customer_id,
		   format('tier %s, last change to %s', a.tier, h.to_tier)
	FROM loyalty.points_account a JOIN last_tier h ON h.customer_id = a.customer_id
	WHERE a.tier IS DISTINCT FROM h.to_tier
	-- references between configuration tables kept without foreign keys
	-- (so that pg_restore --jobs can load them in any order)
	UNION ALL
	SELECT 'segment rule of unknown segment', NULL::text,
		   format('rule R%s-%s F%s-%s M%s-%s names segment %s', r.r_min, r.r_max, r.f_min, r.f_max,
				  r.m_min, r.m_max, r.segment)
	FROM loyalty.segment_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.segment s WHERE s.name = r.segment)
	UNION ALL
	SELECT 'campaign rule of unknown campaign', NULL::text,
		   format('rule %s names campaign %s', r.rule_id, r.campaign_id)
	FROM loyalty.campaign_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.campaign c WHERE c.campaign_id = r.campaign_id)
	UNION ALL
	SELECT 'campaign rule of unknown kind', NULL::text,
		   format('rule %s of campaign %s is of kind %s', r.rule_id, r.campaign_id, r.kind)
	FROM loyalty.campaign_rule r
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.eligibility_kind k WHERE k.kind = r.kind)
	ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION loyalty.check_integrity() IS
	'Every violation of the points invariants (balance = open lots = ledger sum, no negative balance, debt, well-formed lots and entries, references and their one owner, totals, tiers and that they exist) and every dangling reference between configuration tables (segment rules, campaign rules); empty when healthy';
