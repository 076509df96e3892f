
/* ---------------------------------------------------------------------------
 * campaign_api.sql: the campaign layer -- functions and procedures
 *
 * Admin: create_experiment, create_marketing_campaign,
 * set_marketing_campaign_paused, preview_audience,
 * publish_marketing_campaign, CALL run_campaigns(as_of) and the triggered
 * jobs (run_welcome_campaigns, run_birthday_campaigns,
 * run_anniversary_campaigns, run_reactivation_campaigns,
 * run_abandoned_cart_campaigns), queue_expiry_warnings.  App: set_consent,
 * set_customer_dates, record_cart, close_cart, outbox_claim, outbox_ack.
 *
 * Publication runs in two layers.  publish_marketing_campaign runs with
 * the caller's rights: an audience given as an admin's SQL query is
 * executed there, as written (never spliced into another statement), so it
 * can read only what the calling role may read.  The keys it returns go to
 * loyalty._publish (SECURITY DEFINER), which computes every other audience,
 * classifies each member (already offered, hold-out, consent, quiet
 * period, frequency caps), logs the filtered ones, and publishes the rest
 * set-based: codes, publications and outbox rows each in one statement.
 *
 * Concurrency: a publication takes one transaction-level advisory lock
 * (loyalty._publish_lock) before it reads what was published, and runs in
 * READ COMMITTED, so each of its statements sees every publication
 * committed before it: two jobs publishing the same campaign, or two
 * campaigns under one frequency cap, never offer twice nor exceed a cap.
 * ------------------------------------------------------------------------ */

/* functions: helpers */

CREATE FUNCTION loyalty.experiment_bucket(salt text, customer_id text)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT (('x'::pg_catalog.text OPERATOR(pg_catalog.||) pg_catalog.substr(pg_catalog.md5(
			$1 OPERATOR(pg_catalog.||) ':'::pg_catalog.text OPERATOR(pg_catalog.||) $2), 1, 13))::pg_catalog.bit(52)::pg_catalog.int8
		)::pg_catalog.float8 OPERATOR(pg_catalog./) 4503599627370496::pg_catalog.float8
$$;

COMMENT ON FUNCTION loyalty.experiment_bucket(text, text) IS
	'Stable position in [0, 1) of a customer in an experiment: the first 52 bits of md5(salt || '':'' || customer_id); the same in every PostgreSQL version';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.experiment_bucket(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* The program's local date of a time (loyalty.settings.timezone). */
CREATE FUNCTION loyalty._campaign_local_date(at timestamptz)
RETURNS date
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text), at)::pg_catalog.date
$$;

COMMENT ON FUNCTION loyalty._campaign_local_date(timestamptz) IS
	'Internal: the day of a time in the program time zone';

/*
 * The yearly date of a month/day in a year: February 29 falls on February
 * 28 in non-leap years.
 */
CREATE FUNCTION loyalty._yearly_date(day date, year integer)
RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT CASE WHEN pg_catalog.date_part('month'::pg_catalog.text, $1) OPERATOR(pg_catalog.=) 2::pg_catalog.float8
				 AND pg_catalog.date_part('day'::pg_catalog.text, $1) OPERATOR(pg_catalog.=) 29::pg_catalog.float8
				 AND NOT pg_catalog.date_part('day'::pg_catalog.text,
						pg_catalog.make_date($2, 3, 1) OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.=) 29::pg_catalog.float8
			THEN pg_catalog.make_date($2, 2, 28)
			ELSE pg_catalog.make_date($2, pg_catalog.date_part('month'::pg_catalog.text, $1)::pg_catalog.int4,
									  pg_catalog.date_part('day'::pg_catalog.text, $1)::pg_catalog.int4) END
$$;

COMMENT ON FUNCTION loyalty._yearly_date(date, integer) IS
	'Internal: the date of a birthday or anniversary in a year (February 29 on February 28 in non-leap years)';

/* One advisory lock serializes publications (see the header). */
CREATE FUNCTION loyalty._publish_lock()
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF pg_catalog.current_setting('transaction_isolation'::pg_catalog.text) <> 'read committed' THEN
		RAISE EXCEPTION 'campaign publication needs isolation level read committed'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = pg_catalog.json_build_object('reason', 'isolation_level',
							   'isolation', pg_catalog.current_setting('transaction_isolation'::pg_catalog.text))::pg_catalog.text,
				  HINT = 'Run the job in a READ COMMITTED transaction (the default): it must see the publications of jobs that ran before it.';
	END IF;
	-- 'loya', 'camp'
	PERFORM pg_catalog.pg_advisory_xact_lock(1819243873, 1667329392);
END;
$$;

COMMENT ON FUNCTION loyalty._publish_lock() IS
	'Internal: the transaction-level lock every publication takes before it reads the publication log (caps and idempotence stay exact)';

/* functions: configuration (admin) */

CREATE FUNCTION loyalty.create_experiment(name text, variants jsonb, salt text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_name text := name;
	id bigint;
	v jsonb;
	pos integer := 0;
	holdouts integer := 0;
BEGIN
	IF p_name IS NULL OR variants IS NULL THEN
		RAISE EXCEPTION 'name and variants must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF pg_catalog.jsonb_typeof(variants) <> 'array' OR pg_catalog.jsonb_array_length(variants) < 1 THEN
		RAISE EXCEPTION 'variants must be a non-empty JSON array'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Example: [{"variant": "A", "weight": 45}, {"variant": "control", "weight": 10, "holdout": true}].';
	END IF;
	INSERT INTO loyalty.experiment AS e (name, salt)
	VALUES (p_name, coalesce(create_experiment.salt, p_name || ':' || pg_catalog.gen_random_uuid()::pg_catalog.text))
	RETURNING e.experiment_id INTO id;
	FOR v IN SELECT x.value FROM pg_catalog.jsonb_array_elements(variants) x LOOP
		pos := pos + 1;
		IF pg_catalog.jsonb_typeof(v) <> 'object' OR v->>'variant' IS NULL OR v->>'weight' IS NULL THEN
			RAISE EXCEPTION 'variant % needs "variant" and "weight"', pos USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF coalesce((v->>'holdout')::boolean, false) THEN
			holdouts := holdouts + 1;
			IF v ? 'offer_kind' THEN
				RAISE EXCEPTION 'hold-out variant "%" cannot have an offer', v->>'variant'
					USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A hold-out receives nothing.';
			END IF;
		END IF;
		INSERT INTO loyalty.experiment_variant (experiment_id, variant, weight, holdout, offer_kind,
												coupon_campaign_id, code_pattern, public_code, bonus_points, position)
		VALUES (id, v->>'variant', (v->>'weight')::integer, coalesce((v->>'holdout')::boolean, false),
				v->>'offer_kind', (v->>'coupon_campaign_id')::bigint, v->>'code_pattern',
				v->>'public_code', (v->>'bonus_points')::bigint, pos);
		IF v->>'offer_kind' IS NOT NULL THEN
			PERFORM loyalty._check_offer(v->>'offer_kind', (v->>'coupon_campaign_id')::bigint, v->>'code_pattern',
										 v->>'public_code', (v->>'bonus_points')::bigint);
		END IF;
	END LOOP;
	IF holdouts > 1 THEN
		RAISE EXCEPTION 'an experiment has at most one hold-out variant' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN id;
END;
$$;

/* Check an offer's parameters (22023 on a bad one). */
CREATE FUNCTION loyalty._check_offer(offer_kind text, coupon_campaign_id bigint, code_pattern text,
									 public_code text, bonus_points bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF offer_kind IN ('code', 'public_code') THEN
		IF coupon_campaign_id IS NULL OR NOT EXISTS (
				SELECT 1 FROM loyalty.campaign c WHERE c.campaign_id = _check_offer.coupon_campaign_id) THEN
			RAISE EXCEPTION 'offer % needs an existing coupon campaign', offer_kind
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.json_build_object('reason', 'unknown_coupon_campaign',
								   'coupon_campaign_id', coupon_campaign_id)::pg_catalog.text;
		END IF;
	END IF;
	IF offer_kind = 'code' THEN
		IF code_pattern IS NULL THEN
			RAISE EXCEPTION 'offer code needs a code_pattern' USING ERRCODE = 'invalid_parameter_value';
		END IF;
		PERFORM loyalty.random_codes(code_pattern, 1);	-- raises on a bad pattern
	ELSIF offer_kind = 'public_code' THEN
		IF public_code IS NULL OR NOT EXISTS (
				SELECT 1 FROM loyalty.coupon k
				WHERE k.code OPERATOR(loyalty.=) loyalty.vanity_code(public_code)
				  AND k.campaign_id = _check_offer.coupon_campaign_id AND k.customer_id IS NULL) THEN
			RAISE EXCEPTION 'public code % is not a code of coupon campaign %', public_code, coupon_campaign_id
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.json_build_object('reason', 'unknown_public_code',
								   'public_code', public_code)::pg_catalog.text,
					  HINT = 'Add it first with loyalty.add_public_code.';
		END IF;
	ELSIF offer_kind = 'points' THEN
		IF bonus_points IS NULL OR bonus_points < 1 THEN
			RAISE EXCEPTION 'offer points needs bonus_points >= 1' USING ERRCODE = 'invalid_parameter_value';
		END IF;
	ELSIF offer_kind IS DISTINCT FROM 'none' THEN
		RAISE EXCEPTION 'unknown offer kind "%"', offer_kind
			USING ERRCODE = 'invalid_parameter_value', DETAIL = 'Offer kinds: code, public_code, points, none.';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._check_offer(text, bigint, text, text, bigint) IS
	'Internal: check the parameters of an offer (campaign or variant)';

COMMENT ON FUNCTION loyalty.create_experiment(text, jsonb, text) IS
	'Create an experiment from a JSON array of variants {"variant", "weight", "holdout", "offer_kind", "coupon_campaign_id", "code_pattern", "public_code", "bonus_points"}; salt (default: random) seeds the assignment hash';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.create_experiment(text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.create_marketing_campaign(
	name text, audience_kind text, audience jsonb, offer_kind text,
	coupon_campaign_id bigint DEFAULT NULL, code_pattern text DEFAULT NULL,
	public_code text DEFAULT NULL, bonus_points bigint DEFAULT NULL,
	channel text DEFAULT 'email', quiet_period interval DEFAULT NULL,
	experiment_id bigint DEFAULT NULL, schedule text DEFAULT 'manual',
	starts_at timestamptz DEFAULT NULL, ends_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	id bigint;
	k text := audience_kind;
	a jsonb := coalesce(audience, '{}'::jsonb);
BEGIN
	IF name IS NULL OR k IS NULL OR offer_kind IS NULL OR channel IS NULL THEN
		RAISE EXCEPTION 'name, audience_kind, offer_kind and channel must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF k NOT IN ('segments', 'segment_entered', 'tier', 'dormant', 'query', 'customers', 'welcome',
				 'birthday', 'anniversary', 'abandoned_cart') THEN
		RAISE EXCEPTION 'unknown audience kind "%"', k
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Audience kinds: segments, segment_entered, tier, dormant, query, customers, welcome, birthday, anniversary, abandoned_cart.';
	END IF;
	IF schedule IS NULL OR schedule NOT IN ('manual', 'scheduled') THEN
		RAISE EXCEPTION 'schedule must be manual or scheduled' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM loyalty._check_offer(offer_kind, coupon_campaign_id, code_pattern, public_code, bonus_points);
	IF experiment_id IS NOT NULL AND NOT EXISTS (
			SELECT 1 FROM loyalty.experiment e WHERE e.experiment_id = create_marketing_campaign.experiment_id) THEN
		RAISE EXCEPTION 'experiment % does not exist', experiment_id USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF (k = 'segments' AND pg_catalog.jsonb_typeof(a->'segments') IS DISTINCT FROM 'array')
	   OR (k = 'segment_entered' AND a->>'segment' IS NULL)
	   OR (k = 'tier' AND pg_catalog.jsonb_typeof(a->'tiers') IS DISTINCT FROM 'array')
	   OR (k = 'dormant' AND (a->>'days')::integer IS NULL)
	   OR (k = 'query' AND pg_catalog.jsonb_typeof(a->'query') IS DISTINCT FROM 'string')
	   OR (k = 'customers' AND pg_catalog.jsonb_typeof(a->'customers') IS DISTINCT FROM 'array') THEN
		RAISE EXCEPTION 'audience % lacks its parameters', k
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.json_build_object('reason', 'audience_parameters', 'audience_kind', k)::pg_catalog.text,
				  HINT = 'segments: {"segments": [...]}; segment_entered: {"segment": "At Risk", "since": "2026-01-01"}; tier: {"tiers": [...]}; dormant: {"days": 90}; query: {"query": "SELECT ..."}; customers: {"customers": [...]}.';
	END IF;
	-- intervals of the triggered audiences must parse now, not at the job
	PERFORM (a->>'within')::interval, (a->>'after')::interval, (a->>'max_age')::interval,
			(a->>'catch_up_days')::integer, (a->>'since')::timestamptz;
	INSERT INTO loyalty.marketing_campaign AS m (name, audience_kind, audience, offer_kind, coupon_campaign_id,
			code_pattern, public_code, bonus_points, channel, quiet_period, experiment_id, schedule, starts_at, ends_at)
	VALUES (name, k, a, offer_kind, coupon_campaign_id, code_pattern, public_code, bonus_points, channel,
			quiet_period, experiment_id, schedule, starts_at, ends_at)
	RETURNING m.marketing_campaign_id INTO id;
	RETURN id;
END;
$$;

COMMENT ON FUNCTION loyalty.create_marketing_campaign(text, text, jsonb, text, bigint, text, text, bigint, text, interval, bigint, text, timestamptz, timestamptz) IS
	'Create a marketing campaign: audience (kind and parameters), offer (code / public_code of a coupon campaign, points, none), channel, quiet period, experiment, schedule (manual or scheduled), dates; options by name';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.create_marketing_campaign(text, text, jsonb, text, bigint, text, text, bigint, text, interval, bigint, text, timestamptz, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.set_marketing_campaign_paused(marketing_campaign_id bigint, paused boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE loyalty.marketing_campaign m
	SET paused = set_marketing_campaign_paused.paused, updated_at = pg_catalog.now()
	WHERE m.marketing_campaign_id = set_marketing_campaign_paused.marketing_campaign_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', set_marketing_campaign_paused.marketing_campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN set_marketing_campaign_paused.paused;
END;
$$;

COMMENT ON FUNCTION loyalty.set_marketing_campaign_paused(bigint, boolean) IS
	'Pause (true) or resume (false) a marketing campaign: a paused campaign publishes nothing';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.set_marketing_campaign_paused(bigint, boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: customer data the app supplies (app) */

CREATE FUNCTION loyalty.set_consent(customer_id text, channel text, granted boolean, source text,
									at timestamptz DEFAULT pg_catalog.now())
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	cur boolean;
BEGIN
	IF customer_id IS NULL OR channel IS NULL OR granted IS NULL OR source IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, channel, granted, source and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::pg_catalog.text, customer_id);
	INSERT INTO loyalty.consent_history (customer_id, channel, granted, source, changed_at)
	VALUES (customer_id, channel, granted, source, at);
	-- the latest business time wins: a late-arriving older change is history only
	INSERT INTO loyalty.consent AS c (customer_id, channel, granted, source, changed_at)
	VALUES (customer_id, channel, granted, source, at)
	ON CONFLICT ON CONSTRAINT consent_pkey DO UPDATE
		SET granted = excluded.granted, source = excluded.source, changed_at = excluded.changed_at
		WHERE c.changed_at <= excluded.changed_at;
	SELECT c.granted INTO cur FROM loyalty.consent c
	WHERE c.customer_id = set_consent.customer_id AND c.channel = set_consent.channel;
	RETURN cur;
END;
$$;

COMMENT ON FUNCTION loyalty.set_consent(text, text, boolean, text, timestamptz) IS
	'Record an opt-in (granted true) or opt-out of a customer for a channel, with its source and time; history kept in consent_history; returns the current consent';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.set_consent(text, text, boolean, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.set_customer_dates(customer_id text, birth_date date DEFAULT NULL,
										   signup_date date DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL THEN
		RAISE EXCEPTION 'customer_id must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::pg_catalog.text, customer_id);
	INSERT INTO loyalty.customer_dates AS d (customer_id, birth_date, signup_date)
	VALUES (customer_id, birth_date, signup_date)
	ON CONFLICT ON CONSTRAINT customer_dates_pkey DO UPDATE
		SET birth_date = coalesce(excluded.birth_date, d.birth_date),
			signup_date = coalesce(excluded.signup_date, d.signup_date),
			updated_at = pg_catalog.now();
END;
$$;

COMMENT ON FUNCTION loyalty.set_customer_dates(text, date, date) IS
	'Record a customer''s birthday and signup day (program time zone) for the birthday, anniversary and welcome jobs; a NULL keeps the stored value';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.set_customer_dates(text, date, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.record_cart(customer_id text, cart_ref text, amount numeric,
									items jsonb DEFAULT NULL, at timestamptz DEFAULT pg_catalog.now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL OR cart_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, cart_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::pg_catalog.text, customer_id);
	INSERT INTO loyalty.cart AS c (customer_id, cart_ref, amount, items, updated_at)
	VALUES (customer_id, cart_ref, amount, items, at)
	ON CONFLICT ON CONSTRAINT cart_pkey DO UPDATE
		SET amount = excluded.amount, items = excluded.items, updated_at = excluded.updated_at
		WHERE c.closed_at IS NULL AND c.updated_at <= excluded.updated_at;
END;
$$;

COMMENT ON FUNCTION loyalty.record_cart(text, text, numeric, jsonb, timestamptz) IS
	'Record (or update) an open cart of a customer; an open cart untouched for a campaign''s delay is abandoned (run_abandoned_cart_campaigns)';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.record_cart(text, text, numeric, jsonb, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.close_cart(customer_id text, cart_ref text, at timestamptz DEFAULT pg_catalog.now())
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	UPDATE loyalty.cart c SET closed_at = at
	WHERE c.customer_id = close_cart.customer_id AND c.cart_ref = close_cart.cart_ref AND c.closed_at IS NULL;
	RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION loyalty.close_cart(text, text, timestamptz) IS
	'Close a cart (ordered or emptied): it is no longer abandoned; true if it was open';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.close_cart(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
