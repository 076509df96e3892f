
/* ---------------------------------------------------------------------------
 * points_coupon.sql: points and coupons together
 *
 *	- exchange: loyalty.points_reward offers a campaign's coupon for a number
 *	  of points; loyalty.exchange_points() spends them and issues a
 *	  single-use code bound to the customer, in the caller's transaction;
 *	- bonus: loyalty.coupon_bonus gives points for using a campaign's coupon;
 *	  loyalty.earn_coupon_bonus() credits them for an order's active
 *	  redemptions, in the same transaction as redeem_coupon();
 *	- tier eligibility: the coupon module's eligibility rule kind "tier",
 *	  answered from the customer's points tier.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.points_reward (
	campaign_id		bigint PRIMARY KEY,
	points			bigint NOT NULL CHECK (points > 0),
	code_pattern	text NOT NULL DEFAULT 'RWD-####-####',
	active			boolean NOT NULL DEFAULT true,
	description		text
);

COMMENT ON TABLE loyalty.points_reward IS
	'Reward catalogue: a coupon of the campaign costs this many points (exchange_points); codes are generated from code_pattern and bound to the customer';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_reward', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_reward'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

CREATE TABLE loyalty.points_exchange (
	reference		text PRIMARY KEY,
	customer_id		text NOT NULL,
	campaign_id		bigint NOT NULL,
	points			bigint NOT NULL,
	coupon_id		bigint NOT NULL,
	code			text NOT NULL,
	entry_id		bigint NOT NULL,
	available_after	bigint NOT NULL,
	effective_at	timestamptz NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX points_exchange_customer_idx ON loyalty.points_exchange (customer_id);

COMMENT ON TABLE loyalty.points_exchange IS
	'Every exchange of points for a coupon: the spend entry (reference exchange:<reference>) and the code issued';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_exchange', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_exchange'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.coupon_bonus (
	campaign_id		bigint PRIMARY KEY,
	points			bigint NOT NULL CHECK (points > 0),
	description		text
);

COMMENT ON TABLE loyalty.coupon_bonus IS
	'Bonus points for using a coupon of the campaign (earn_coupon_bonus); non-qualifying';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_bonus', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_bonus'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

/* functions */

/*
 * Called by reverse_points for the spend entry it reverses: if that spend
 * bought a coupon (exchange_points), the coupon is voided -- or, once it was
 * redeemed or is reserved, the reversal is refused (LP010): points back and
 * a usable code would pay the coupon twice.  The coupon row is locked as
 * redeem_coupon and reserve_coupon lock it, so a concurrent redemption
 * either commits first (and is seen here) or finds the code voided.
 */
CREATE FUNCTION loyalty._points_exchange_void(spend_entry bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ex record;
	cp record;
BEGIN
	SELECT e.reference, e.coupon_id, e.code INTO ex
	FROM loyalty.points_exchange e WHERE e.entry_id = spend_entry;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT c.uses, c.voided_at INTO cp
	FROM loyalty.coupon c WHERE c.coupon_id = ex.coupon_id FOR NO KEY UPDATE;
	IF NOT FOUND OR cp.voided_at IS NOT NULL THEN
		RETURN;
	END IF;
	IF cp.uses > 0 OR EXISTS (SELECT 1 FROM loyalty.reservation h
							  WHERE h.coupon_id = ex.coupon_id AND h.state = 'held' AND h.expires_at > at) THEN
		RAISE EXCEPTION 'exchange "%" cannot be reversed: its coupon is %', ex.reference,
			CASE WHEN cp.uses > 0 THEN 'redeemed' ELSE 'reserved' END
			USING ERRCODE = 'LP010',
				  DETAIL = pg_catalog.json_build_object('reason', 'coupon_in_use', 'reference', ex.reference,
								  'coupon_id', ex.coupon_id,
								  'state', CASE WHEN cp.uses > 0 THEN 'redeemed' ELSE 'reserved' END)::text,
				  HINT = format('Coupon %s is in use; reversing the exchange would return the points while the coupon stays used. Roll the redemption back first (rollback_redemption), or let the reservation expire.', ex.code);
	END IF;
	UPDATE loyalty.coupon c SET voided_at = at WHERE c.coupon_id = ex.coupon_id;
END;
$$;

COMMENT ON FUNCTION loyalty._points_exchange_void(bigint, timestamptz) IS
	'Internal: when reverse_points reverses an exchange''s spend, void its coupon, or refuse (LP010) once it is redeemed or reserved';

/*
 * Exchange points for a coupon.  The points are spent under reference
 * 'exchange:' || reference (locking the account, idempotent); the code is
 * generated only after the spend, so a repeat that waited for a concurrent
 * first call finds that call's exchange and returns it.  A spend under the
 * derived reference made by another call (not an exchange) is a conflict.
 *
 * Caps: a coupon that could not be used is never sold.  Before any point is
 * spent, a campaign with a total_cap or per_customer_cap counts its units
 * in use the coupon family's way (loyalty._coupon_cap_units: active
 * redemptions, live reservations, and codes sold by earlier exchanges that
 * are neither used nor voided) and refuses with LP009 when the cap is
 * reached.  Exchanges of a capped campaign serialise on its points_reward
 * row, which each one updates (a REPEATABLE READ competitor then fails
 * with 40001 instead of counting from a stale snapshot); with a total cap
 * the campaign row is locked too, and with a per-customer cap the
 * customer lock, as redeem_coupon takes them (in the coupon lock order,
 * before the points account), so a concurrent coupon call is counted.  The
 * code sold is marked holds_cap_unit: the coupon family counts it as a
 * unit in use until it is used or voided, so no other code (a public one
 * included) can take the unit it was sold for.
 *
 * A repeat of an exchange that was reversed is LP005 (as a repeated spend).
 *
 * The code returned is the one this call issued: the coupon bound to the
 * customer that this transaction inserted and that was not there before
 * (never "the newest code", which ids from cached sequences or an admin's
 * bound code would make another one).
 */
CREATE FUNCTION loyalty.exchange_points(customer_id text, campaign_id bigint, reference text,
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
	reversal bigint;
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
				USING ERRCODE = 'LP002',
					  DETAIL = pg_catalog.json_build_object('reason', 'reference_conflict', 'reference', p_reference,
									  'conflict', CASE WHEN ex.customer_id <> p_customer THEN 'other_customer' ELSE 'different_request' END,
									  'entry_id', ex.entry_id)::text;
		END IF;
		-- a reversed exchange is not replayed: its code is void and its
		-- receipt's balance stale (LP005, as spend_points)
		SELECT v.entry_id INTO reversal FROM loyalty.points_ledger v
		WHERE v.reference = 'exchange:' || p_reference AND v.kind = 'reverse';
		IF FOUND THEN
			RAISE EXCEPTION 'reference "exchange:%" was reversed', p_reference
				USING ERRCODE = 'LP005',
					  DETAIL = pg_catalog.json_build_object('reason', 'reference_reversed',
									  'reference', 'exchange:' || p_reference,
									  'reversal_entry_id', reversal)::text,
					  HINT = 'The exchange was reversed and its coupon voided; use a new reference.';
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;

	SELECT * INTO reward FROM loyalty.points_reward r WHERE r.campaign_id = p_campaign AND r.active;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % is not offered for points', p_campaign
			USING ERRCODE = 'LP007',
				  DETAIL = pg_catalog.json_build_object('reason', 'reward_not_offered', 'campaign_id', p_campaign)::text,
				  HINT = 'Offer it with a row in loyalty.points_reward.';
	END IF;
	SELECT c.paused, c.starts_at, c.ends_at, c.total_cap, c.per_customer_cap INTO camp
	FROM loyalty.campaign c WHERE c.campaign_id = p_campaign;
	IF NOT FOUND OR camp.paused OR camp.ends_at <= at THEN
		RAISE EXCEPTION 'campaign % cannot be exchanged for points now', p_campaign
			USING ERRCODE = 'LP008',
				  DETAIL = pg_catalog.json_build_object('reason', 'campaign_not_exchangeable', 'campaign_id', p_campaign,
								  'state', CASE WHEN NOT FOUND THEN 'missing' WHEN camp.paused THEN 'paused' ELSE 'ended' END)::text;
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
						  DETAIL = pg_catalog.json_build_object('reason', 'cap_reached', 'campaign_id', p_campaign,
										  'cap', 'total', 'limit', camp.total_cap, 'in_use', in_use)::text,
						  HINT = 'Units in use are redeemed, reserved or sold for points. No points were spent.';
			END IF;
		END IF;
		IF camp.per_customer_cap IS NOT NULL THEN
			in_use := loyalty._coupon_cap_units(p_campaign, p_customer, at);
			IF in_use >= camp.per_customer_cap THEN
				RAISE EXCEPTION 'customer "%" cannot get another coupon of campaign %', p_customer, p_campaign
					USING ERRCODE = 'LP009',
						  DETAIL = pg_catalog.json_build_object('reason', 'cap_reached', 'campaign_id', p_campaign,
										  'cap', 'per_customer', 'limit', camp.per_customer_cap, 'in_use', in_use)::text,
						  HINT = 'Units in use are redeemed, reserved or sold for points. No points were spent.';
			END IF;
		END IF;
	END IF;

	SELECT s.* INTO spent FROM loyalty.spend_points(p_customer, reward.points, 'exchange:' || p_reference, at) s;
	-- a concurrent first call with this reference committed while the spend waited
	SELECT * INTO ex FROM loyalty.points_exchange e WHERE e.reference = p_reference;
	IF FOUND THEN
		IF ex.customer_id <> p_customer OR ex.campaign_id <> p_campaign THEN
			RAISE EXCEPTION 'reference "%" was already used for a different exchange', p_reference
				USING ERRCODE = 'LP002',
					  DETAIL = pg_catalog.json_build_object('reason', 'reference_conflict', 'reference', p_reference,
									  'conflict', CASE WHEN ex.customer_id <> p_customer THEN 'other_customer' ELSE 'different_request' END,
									  'entry_id', ex.entry_id)::text;
		END IF;
		code := ex.code; points := ex.points; available := ex.available_after;
		RETURN;
	END IF;
	IF (SELECT e.created_at FROM loyalty.points_ledger e WHERE e.entry_id = spent.entry_id) <> now() THEN
		RAISE EXCEPTION 'reference "exchange:%" was already used by a spend that is not an exchange', p_reference
			USING ERRCODE = 'LP002',
				  DETAIL = pg_catalog.json_build_object('reason', 'reference_conflict',
								  'reference', 'exchange:' || p_reference,
								  'conflict', 'different_request', 'entry_id', spent.entry_id)::text;
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
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.exchange_points(text, bigint, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Bonus points for the coupons an order used: the order's redemptions that
 * are not rolled back, by this customer, of campaigns with a bonus.  Credited
 * under reference order_ref || ':coupon-bonus', so a repeat returns the first
 * result and reverse_points(order_ref || ':coupon-bonus') takes the bonus
 * back on a refund.  NULL when no coupon of the order earns a bonus.
 */
CREATE FUNCTION loyalty.earn_coupon_bonus(customer_id text, order_ref text,
										  at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	total bigint;
	codes text;
	receipt loyalty.points_receipt;
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);
	SELECT sum(b.points), string_agg(c.code::text, ', ' ORDER BY c.code::text)
	INTO total, codes
	FROM loyalty.redemption r
	JOIN loyalty.coupon_bonus b ON b.campaign_id = r.campaign_id
	JOIN loyalty.coupon c ON c.coupon_id = r.coupon_id
	WHERE r.order_ref = earn_coupon_bonus.order_ref AND r.kind = 'redeem'
	  AND r.customer_id = earn_coupon_bonus.customer_id
	  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x WHERE x.reverses = r.redemption_id);
	IF total IS NULL THEN
		RETURN NULL;
	END IF;
	SELECT * INTO receipt
	FROM loyalty.earn_points(earn_coupon_bonus.customer_id, total, earn_coupon_bonus.order_ref || ':coupon-bonus',
							 reason => 'coupon bonus: ' || codes, qualifying => false, at => at);
	RETURN receipt;
END;
$$;

COMMENT ON FUNCTION loyalty.earn_coupon_bonus(text, text, timestamptz) IS
	'Credit the bonus points (loyalty.coupon_bonus) of the coupons an order redeemed, under reference <order_ref>:coupon-bonus; NULL when none earns a bonus';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.earn_coupon_bonus(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The coupon module's eligibility rule kind "tier": {"tiers": [...]} admits
 * the listed tiers, {"min_tier": "Gold"} that tier and every higher one.  A
 * customer without a points account has the tier a new account would get.
 */
CREATE FUNCTION loyalty._tier_eligible(customer_id text, params jsonb, order_context jsonb)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur_name text;
	cur_rank integer;
	min_rank integer;
	unknown text;
BEGIN
	SELECT a.tier, t.rank INTO cur_name, cur_rank
	FROM loyalty.points_account a LEFT JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = _tier_eligible.customer_id;
	IF NOT FOUND THEN
		SELECT t.name, t.rank INTO cur_name, cur_rank
		FROM loyalty.tier t WHERE t.threshold <= 0 ORDER BY t.rank DESC LIMIT 1;
	END IF;

	IF params ? 'min_tier' THEN
		SELECT t.rank INTO min_rank FROM loyalty.tier t WHERE t.name = params ->> 'min_tier';
		IF min_rank IS NULL THEN
			RAISE EXCEPTION 'tier rule names unknown tier "%"', params ->> 'min_tier'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Correct the campaign rule (tiers are in loyalty.tier).';
		END IF;
		RETURN coalesce(cur_rank >= min_rank, false);
	END IF;
	SELECT e INTO unknown FROM jsonb_array_elements_text(params -> 'tiers') e
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = e) LIMIT 1;
	IF unknown IS NOT NULL THEN
		RAISE EXCEPTION 'tier rule names unknown tier "%"', unknown
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Correct the campaign rule (tiers are in loyalty.tier).';
	END IF;
	RETURN coalesce(params -> 'tiers' ? cur_name, false);
END;
$$;

COMMENT ON FUNCTION loyalty._tier_eligible(text, jsonb, jsonb) IS
	'Internal: coupon eligibility rule kind "tier" ({"tiers": [...]} or {"min_tier": "..."}) from the points tier';

INSERT INTO loyalty.eligibility_kind (kind, check_function, builtin, description) VALUES
	('tier', 'loyalty._tier_eligible(text, jsonb, jsonb)', true,
	 'The customer''s points tier is one of params.tiers, or ranks at least params.min_tier (no points account: the tier a new account gets)');

/*
 * A tier rule's parameters are checked when the rule is added or changed:
 * their shape always, the tier names once a tier ladder exists (a restore
 * may load campaign rules before tiers; a name unknown at redemption time
 * is an error there).
 */
CREATE FUNCTION loyalty._tier_rule_check()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p jsonb := NEW.params;
	unknown text;
BEGIN
	IF NOT ((p ? 'tiers') <> (p ? 'min_tier'))
	   OR (p ? 'min_tier' AND jsonb_typeof(p -> 'min_tier') <> 'string')
	   OR (p ? 'tiers' AND (jsonb_typeof(p -> 'tiers') <> 'array' OR jsonb_array_length(p -> 'tiers') = 0
							OR EXISTS (SELECT 1 FROM jsonb_array_elements(p -> 'tiers') e
									   WHERE jsonb_typeof(e) <> 'string'))) THEN
		RAISE EXCEPTION 'tier rule params must be {"tiers": ["name", ...]} or {"min_tier": "name"}'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- names are checked against the ladder once there is one: pg_restore
	-- may load the campaign rules before the tiers
	SELECT e INTO unknown
	FROM (SELECT p ->> 'min_tier' AS e UNION ALL SELECT jsonb_array_elements_text(p -> 'tiers')) s
	WHERE e IS NOT NULL AND NOT EXISTS (SELECT 1 FROM loyalty.tier t WHERE t.name = e)
	  AND EXISTS (SELECT 1 FROM loyalty.tier) LIMIT 1;
	IF unknown IS NOT NULL THEN
		RAISE EXCEPTION 'unknown tier "%" in tier rule', unknown
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Tiers are listed in loyalty.tier.';
	END IF;
	RETURN NEW;
END;
$$;

COMMENT ON FUNCTION loyalty._tier_rule_check() IS
	'Internal: check the parameters of a coupon campaign''s tier rule when it is added or changed';

CREATE TRIGGER campaign_rule_tier_check
	BEFORE INSERT OR UPDATE ON loyalty.campaign_rule
	FOR EACH ROW WHEN (NEW.kind = 'tier')
	EXECUTE FUNCTION loyalty._tier_rule_check();

COMMENT ON TRIGGER campaign_rule_tier_check ON loyalty.campaign_rule IS
	'Check the parameters of a tier eligibility rule when it is added or changed';
