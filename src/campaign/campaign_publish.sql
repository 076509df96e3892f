
/* ---------------------------------------------------------------------------
 * campaign_publish.sql: audiences, classification and publication
 *
 * loyalty._publish does one run of one marketing campaign in set-based
 * statements over a temporary stage table (one row per audience member and
 * occurrence): the audience and its classification in one statement, the
 * frequency caps in a second, then per offer (the campaign's, or each
 * variant's) the codes, publications and outbox rows in one statement.
 * Nothing of the stage outlives the transaction (ON COMMIT DROP).
 * ------------------------------------------------------------------------ */

/* functions: audiences */

/*
 * An admin's audience query, run with the rights of the calling role: this
 * function is SECURITY INVOKER and executes the text exactly as given (one
 * column of text keys), never inside another statement.
 */
CREATE FUNCTION loyalty._audience_query(query text)
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE STRICT SECURITY INVOKER
AS $$
BEGIN
	RETURN QUERY EXECUTE query;
END;
$$;

COMMENT ON FUNCTION loyalty._audience_query(text) IS
	'Internal: run an admin''s audience query (one text column of customer keys) with the rights of the calling role (SECURITY INVOKER, never spliced into another statement)';

/*
 * The SELECT giving (customer_id, occurrence) of an audience kind, over the
 * parameters $1 audience jsonb, $2 as_of, $3 keys text[], $4 the program's
 * local date of as_of.  Fixed texts: no value is ever spliced into them.
 */
CREATE FUNCTION loyalty._audience_sql(audience_kind text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
SELECT CASE $1
	WHEN 'segments' THEN
		'SELECT s.customer_id, ''''::text AS occurrence FROM loyalty.customer_stats s
		 WHERE s.score IS NOT NULL AND s.segment IN (SELECT pg_catalog.jsonb_array_elements_text($1->''segments''))'
	WHEN 'segment_entered' THEN
		'SELECT DISTINCT ON (sc.customer_id) sc.customer_id, sc.snapshot_id::text AS occurrence
		 FROM loyalty.segment_change sc
		 JOIN loyalty.segment_snapshot ss ON ss.snapshot_id = sc.snapshot_id
		 JOIN loyalty.customer_stats cs ON cs.customer_id = sc.customer_id AND cs.segment = sc.segment
		 WHERE sc.segment = $1->>''segment''
		   AND ss.as_of >= coalesce(($1->>''since'')::timestamptz, $2 - ''30 days''::interval)
		   AND ss.as_of <= $2
		 ORDER BY sc.customer_id, sc.snapshot_id DESC'
	WHEN 'tier' THEN
		'SELECT a.customer_id COLLATE "C", ''''::text FROM loyalty.points_account a
		 WHERE a.tier IN (SELECT pg_catalog.jsonb_array_elements_text($1->''tiers''))'
	WHEN 'dormant' THEN
		'SELECT s.customer_id, pg_catalog.to_char(loyalty._campaign_local_date(s.last_order), ''YYYY-MM-DD'') FROM loyalty.customer_stats s
		 WHERE s.row_count > 0 AND s.last_order <= $2 - pg_catalog.make_interval(days => ($1->>''days'')::int)
		   AND NOT EXISTS (SELECT 1 FROM loyalty.customer_stats_delta d WHERE d.customer_id = s.customer_id)'
	WHEN 'query' THEN
		'SELECT k COLLATE "C", ''''::text FROM pg_catalog.unnest($3) k'
	WHEN 'customers' THEN
		'SELECT DISTINCT k COLLATE "C", ''''::text FROM pg_catalog.jsonb_array_elements_text($1->''customers'') k'
	WHEN 'welcome' THEN
		'SELECT d.customer_id, ''''::text FROM loyalty.customer_dates d
		 WHERE d.signup_date <= $4 AND d.signup_date >= $4 - coalesce(($1->>''within_days'')::int, 7)'
	WHEN 'birthday' THEN
		'SELECT d.customer_id, y::text FROM loyalty.customer_dates d,
			pg_catalog.generate_series(pg_catalog.date_part(''year'', $4)::int - 1, pg_catalog.date_part(''year'', $4)::int + 1) y
		 WHERE d.birth_date IS NOT NULL
		   AND loyalty._yearly_date(d.birth_date, y) BETWEEN $4 - coalesce(($1->>''catch_up_days'')::int, 7)
													   AND $4 + coalesce(($1->>''days_before'')::int, 0)'
	WHEN 'anniversary' THEN
		'SELECT d.customer_id, y::text FROM loyalty.customer_dates d,
			pg_catalog.generate_series(pg_catalog.date_part(''year'', $4)::int - 1, pg_catalog.date_part(''year'', $4)::int + 1) y
		 WHERE d.signup_date IS NOT NULL AND y > pg_catalog.date_part(''year'', d.signup_date)
		   AND loyalty._yearly_date(d.signup_date, y) BETWEEN $4 - coalesce(($1->>''catch_up_days'')::int, 7)
														AND $4 + coalesce(($1->>''days_before'')::int, 0)'
	WHEN 'abandoned_cart' THEN
		'SELECT c.customer_id, c.cart_ref FROM loyalty.cart c
		 WHERE c.closed_at IS NULL
		   AND c.updated_at <= $2 - coalesce(($1->>''after'')::interval, ''1 hour''::interval)
		   AND c.updated_at >= $2 - coalesce(($1->>''max_age'')::interval, ''7 days''::interval)'
	END
$$;

COMMENT ON FUNCTION loyalty._audience_sql(text) IS
	'Internal: the fixed SELECT of (customer_id, occurrence) of an audience kind (parameters $1 audience, $2 as_of, $3 keys, $4 local day)';

/* functions: publication */

/*
 * The one-pass writer of a bound-code campaign without experiment, caps or
 * quiet period (campaign_publish.c): classifies (already offered, no
 * consent) and writes codes, publications, outbox rows below the executor;
 * NULL when the tables are not as it needs them (the statements then run).
 */
CREATE FUNCTION loyalty._publish_codes_direct(marketing_campaign_id bigint, coupon_campaign_id bigint,
											  code_pattern text, channel text, as_of timestamptz,
											  customers text[], occurrences text[])
RETURNS bigint[]
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'campaign_publish_codes_direct';

COMMENT ON FUNCTION loyalty._publish_codes_direct(bigint, bigint, text, text, timestamptz, text[], text[]) IS
	'Internal: publish bound codes to an audience in one pass (occurrences NULL: all empty); returns {published, already_offered, no_consent}, NULL when the direct write does not apply; the caller holds the publication lock';

CREATE FUNCTION loyalty._publish(marketing_campaign_id bigint, as_of timestamptz, keys text[], dry_run boolean)
RETURNS TABLE (outcome text, customers bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.marketing_campaign;
	salt text;
	g record;
	n bigint;
	rounds integer;
	today date;
	occurrences text[];
	counts bigint[];
BEGIN
	IF marketing_campaign_id IS NULL OR as_of IS NULL OR dry_run IS NULL THEN
		RAISE EXCEPTION 'marketing_campaign_id and as_of must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT dry_run THEN
		PERFORM loyalty._publish_lock();
	END IF;
	SELECT * INTO m FROM loyalty.marketing_campaign c WHERE c.marketing_campaign_id = _publish.marketing_campaign_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', marketing_campaign_id USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT dry_run AND (m.paused OR m.starts_at > as_of OR m.ends_at <= as_of) THEN
		RAISE EXCEPTION 'marketing campaign % is not active', marketing_campaign_id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = pg_catalog.json_build_object('reason',
							   CASE WHEN m.paused THEN 'paused' WHEN m.starts_at > as_of THEN 'not_started' ELSE 'ended' END,
							   'marketing_campaign_id', marketing_campaign_id, 'as_of', as_of)::pg_catalog.text;
	END IF;
	IF m.experiment_id IS NOT NULL THEN
		SELECT e.salt INTO salt FROM loyalty.experiment e WHERE e.experiment_id = m.experiment_id;
	END IF;
	today := loyalty._campaign_local_date(as_of);

	-- a code campaign with nothing to decide but consent: one pass in C
	-- (which sorts the audience and drops NULL and repeated keys itself),
	-- unless the tables are not as it needs them (NULL) or a generated
	-- code was taken (the statements below then regenerate in rounds)
	IF NOT dry_run AND m.offer_kind = 'code' AND m.experiment_id IS NULL AND m.quiet_period IS NULL
	   AND NOT EXISTS (SELECT 1 FROM loyalty.frequency_cap f WHERE f.channel IS NULL OR f.channel = m.channel)
	   AND EXISTS (SELECT 1 FROM loyalty.campaign k WHERE k.campaign_id = m.coupon_campaign_id
				   AND NOT k.paused AND (k.ends_at IS NULL OR k.ends_at > as_of)) THEN
		IF m.audience_kind <> 'query' THEN
			EXECUTE 'SELECT pg_catalog.array_agg(a.customer_id), pg_catalog.array_agg(a.occurrence) FROM ('
					|| loyalty._audience_sql(m.audience_kind) || ') AS a (customer_id, occurrence)'
			INTO keys, occurrences
			USING m.audience, as_of, NULL::text[], today;
		END IF;
		BEGIN
			counts := loyalty._publish_codes_direct(m.marketing_campaign_id, m.coupon_campaign_id,
													m.code_pattern, m.channel, as_of,
													coalesce(keys, '{}'::text[]), occurrences);
		EXCEPTION WHEN unique_violation THEN
			counts := NULL;
		END;
		IF counts IS NOT NULL THEN
			RETURN QUERY
				SELECT v.outcome, v.customers
				FROM (VALUES ('already_offered'::text, counts[2]), ('no_consent', counts[3]),
							 ('published', counts[1])) v (outcome, customers)
				WHERE v.customers > 0 ORDER BY 1;
			RETURN;
		END IF;
	END IF;

	IF m.audience_kind = 'query' THEN
		-- distinct and not null here, so that the audience's unnest is
		-- planned with its true size (a DISTINCT over it would be guessed)
		keys := ARRAY(SELECT DISTINCT k COLLATE "C" FROM pg_catalog.unnest(keys) k WHERE k IS NOT NULL);
	END IF;

	IF pg_catalog.to_regclass('pg_temp._loyalty_stage') IS NULL THEN
		CREATE TEMPORARY TABLE _loyalty_stage (
			customer_id text COLLATE "C" NOT NULL,
			occurrence text NOT NULL,
			variant text,
			holdout boolean NOT NULL,
			reason text,
			offer_kind text,
			coupon_campaign_id bigint,
			code_pattern text,
			public_code text,
			bonus_points bigint
		) ON COMMIT DROP;
	ELSE
		TRUNCATE pg_temp._loyalty_stage;
	END IF;

	-- the audience, classified: already offered, consent, quiet period, then
	-- the hold-out, so that the hold-out is drawn from the customers who
	-- would have been offered (the control group of the treated ones)
	EXECUTE
		'WITH vb AS (
			SELECT v.variant, v.holdout, v.offer_kind, v.coupon_campaign_id, v.code_pattern, v.public_code,
				   v.bonus_points,
				   (sum(v.weight) OVER w - v.weight)::float8 / sum(v.weight) OVER () AS lo,
				   (sum(v.weight) OVER w)::float8 / sum(v.weight) OVER () AS hi
			FROM loyalty.experiment_variant v WHERE v.experiment_id = $5
			WINDOW w AS (ORDER BY v.position))
		 INSERT INTO pg_temp._loyalty_stage
		 SELECT a.customer_id, a.occurrence, v.variant, coalesce(v.holdout, false),
				CASE WHEN p.customer_id IS NOT NULL THEN ''already_offered''
					 WHEN c.granted IS NOT TRUE THEN ''no_consent''
					 WHEN $7 IS NOT NULL AND EXISTS (
						SELECT 1 FROM loyalty.campaign_publication q
						WHERE q.customer_id = a.customer_id AND q.marketing_campaign_id = $8
						  AND q.published_at > $2 - $7) THEN ''quiet_period''
					 WHEN v.holdout THEN ''holdout''
				END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.offer_kind ELSE $9 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.coupon_campaign_id ELSE $10 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.code_pattern ELSE $11 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.public_code ELSE $12 END,
				CASE WHEN v.offer_kind IS NOT NULL THEN v.bonus_points ELSE $13 END
		 FROM (' || loyalty._audience_sql(m.audience_kind) || ') AS a (customer_id, occurrence)
		 LEFT JOIN loyalty.campaign_publication p
			ON p.customer_id = a.customer_id AND p.marketing_campaign_id = $8 AND p.occurrence = a.occurrence
		 LEFT JOIN loyalty.consent c ON c.customer_id = a.customer_id AND c.channel = $6
		 LEFT JOIN loyalty.experiment_assignment ea
			ON $5 IS NOT NULL AND ea.customer_id = a.customer_id AND ea.experiment_id = $5
		 LEFT JOIN LATERAL (
			SELECT vb.* FROM vb
			WHERE CASE WHEN ea.variant IS NOT NULL THEN vb.variant = ea.variant
					   ELSE loyalty.experiment_bucket($14, a.customer_id) >= vb.lo
							AND loyalty.experiment_bucket($14, a.customer_id) < vb.hi END
			LIMIT 1) v ON $5 IS NOT NULL'
	USING m.audience, as_of, CASE WHEN m.audience_kind = 'query' THEN keys END, today,
		  m.experiment_id, m.channel, m.quiet_period, m.marketing_campaign_id,
		  m.offer_kind, m.coupon_campaign_id, m.code_pattern, m.public_code, m.bonus_points, salt;

	-- a temporary table has no statistics until analysed (autovacuum never
	-- sees it): without them every statement below plans the stage as a
	-- handful of rows and joins it by nested loops, minutes at 100,000s
	ANALYZE pg_temp._loyalty_stage;

	-- frequency caps: prior publications in the window plus this run's, per customer
	IF EXISTS (SELECT 1 FROM loyalty.frequency_cap f WHERE f.channel IS NULL OR f.channel = m.channel) THEN
		WITH r AS (
			SELECT s.ctid AS row_id, s.customer_id,
				   pg_catalog.row_number() OVER (PARTITION BY s.customer_id ORDER BY s.occurrence) AS rn
			FROM pg_temp._loyalty_stage s WHERE s.reason IS NULL OR s.reason = 'holdout'
		), capped AS (
			SELECT DISTINCT r.row_id FROM r
			JOIN loyalty.frequency_cap f ON f.channel IS NULL OR f.channel = m.channel
			WHERE r.rn + (SELECT count(*) FROM loyalty.campaign_publication q
						  WHERE q.customer_id = r.customer_id
							AND q.published_at > as_of - f.period AND q.published_at <= as_of
							AND (f.channel IS NULL OR q.channel = f.channel)) > f.max_offers
		)
		UPDATE pg_temp._loyalty_stage s SET reason = 'frequency_cap'
		FROM capped WHERE s.ctid = capped.row_id;
	END IF;

	-- an offer whose coupon campaign is paused or over cannot be given
	UPDATE pg_temp._loyalty_stage s SET reason = 'offer_unavailable'
	FROM loyalty.campaign k
	WHERE s.reason IS NULL AND s.offer_kind IN ('code', 'public_code') AND k.campaign_id = s.coupon_campaign_id
	  AND (k.paused OR k.ends_at <= as_of);

	IF dry_run THEN
		RETURN QUERY
			SELECT coalesce(s.reason, 'published'), count(*) FROM pg_temp._loyalty_stage s GROUP BY 1 ORDER BY 1;
		RETURN;
	END IF;

	IF m.experiment_id IS NOT NULL THEN
		INSERT INTO loyalty.experiment_assignment (customer_id, experiment_id, variant, holdout, assigned_at)
		SELECT DISTINCT ON (s.customer_id) s.customer_id, m.experiment_id, s.variant, s.holdout, as_of
		FROM pg_temp._loyalty_stage s WHERE s.variant IS NOT NULL
		ON CONFLICT ON CONSTRAINT experiment_assignment_pkey DO NOTHING;
	END IF;

	INSERT INTO loyalty.campaign_filtered AS f (customer_id, marketing_campaign_id, occurrence, reason, variant, filtered_at)
	SELECT s.customer_id, m.marketing_campaign_id, s.occurrence, s.reason, s.variant, as_of
	FROM pg_temp._loyalty_stage s WHERE s.reason IS NOT NULL AND s.reason <> 'already_offered'
	ON CONFLICT ON CONSTRAINT campaign_filtered_pkey DO UPDATE
		SET reason = excluded.reason, variant = excluded.variant, filtered_at = excluded.filtered_at
		WHERE f.reason <> excluded.reason;

	FOR g IN
		SELECT DISTINCT s.offer_kind, s.coupon_campaign_id, s.code_pattern, s.public_code, s.bonus_points
		FROM pg_temp._loyalty_stage s WHERE s.reason IS NULL
	LOOP
		IF g.offer_kind = 'code' THEN
			rounds := 0;
			LOOP
				rounds := rounds + 1;
				IF rounds = 1 THEN
					SELECT count(*) INTO n FROM pg_temp._loyalty_stage s
					WHERE s.reason IS NULL AND s.offer_kind = 'code' AND s.coupon_campaign_id = g.coupon_campaign_id
					  AND s.code_pattern = g.code_pattern;
				ELSE
					SELECT count(*) INTO n FROM pg_temp._loyalty_stage s
					WHERE s.reason IS NULL AND s.offer_kind = 'code' AND s.coupon_campaign_id = g.coupon_campaign_id
					  AND s.code_pattern = g.code_pattern
					  AND NOT EXISTS (SELECT 1 FROM loyalty.campaign_publication q
									  WHERE q.customer_id = s.customer_id
										AND q.marketing_campaign_id = m.marketing_campaign_id
										AND q.occurrence = s.occurrence);
				END IF;
				EXIT WHEN n = 0;
				IF rounds > 20 THEN
					RAISE EXCEPTION 'could not generate enough distinct codes of pattern %', g.code_pattern
						USING ERRCODE = 'program_limit_exceeded',
							  DETAIL = 'The pattern''s codes are nearly all taken.',
							  HINT = 'Use a pattern with more random characters (#).';
				END IF;
				-- the first, plain round publishes all or nothing
				EXIT WHEN loyalty._publish_codes(m, g.coupon_campaign_id, g.code_pattern, n, as_of, rounds > 1)
						  AND rounds = 1;
			END LOOP;
		ELSE
			PERFORM loyalty._publish_other(m, g.offer_kind, g.coupon_campaign_id, g.public_code, g.bonus_points, as_of);
		END IF;
	END LOOP;

	RETURN QUERY
		SELECT coalesce(s.reason, 'published'), count(*) FROM pg_temp._loyalty_stage s GROUP BY 1 ORDER BY 1;
END;
$$;

COMMENT ON FUNCTION loyalty._publish(bigint, timestamptz, text[], boolean) IS
	'Internal: one run of a marketing campaign as of a time: audience (keys: the result of a query audience), classification, logs and publication; dry_run only counts';

/*
 * Bound codes for n staged customers of one (coupon campaign, pattern):
 * codes, publications and outbox rows in one statement.  The first round
 * inserts the codes plainly (a code equal to a stored one fails the whole
 * statement, which the subtransaction undoes, and the caller tries again);
 * later rounds skip such codes, publishing only the customers whose code
 * was stored, and the caller loops over the rest.
 */
CREATE FUNCTION loyalty._publish_codes(m loyalty.marketing_campaign, coupon_campaign_id bigint,
									   code_pattern text, n bigint, as_of timestamptz, skip_taken boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF NOT skip_taken THEN
		BEGIN
			WITH src AS MATERIALIZED (
				SELECT s.customer_id, s.occurrence, s.variant, r.code
				FROM (SELECT s.*, pg_catalog.row_number() OVER () AS i
					  FROM pg_temp._loyalty_stage s
					  WHERE s.reason IS NULL AND s.offer_kind = 'code'
						AND s.coupon_campaign_id = _publish_codes.coupon_campaign_id
						AND s.code_pattern = _publish_codes.code_pattern) s
				JOIN loyalty.random_codes(code_pattern, n::integer) WITH ORDINALITY AS r (code, i) ON r.i = s.i
			), k AS (
				INSERT INTO loyalty.coupon (code, campaign_id, customer_id, max_uses, created_at)
				SELECT src.code, coupon_campaign_id, src.customer_id, 1, as_of FROM src
			), p AS (
				INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, occurrence, variant,
					channel, published_at, offer_kind, coupon_campaign_id, code)
				SELECT src.customer_id, m.marketing_campaign_id, src.occurrence, src.variant, m.channel, as_of,
					   'code', coupon_campaign_id, src.code
				FROM src
				RETURNING customer_id, occurrence, variant, code
			)
			INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
			SELECT p.customer_id, 'offer', m.marketing_campaign_id::text || ':' || p.occurrence, m.channel,
				   pg_catalog.jsonb_build_object('marketing_campaign_id', m.marketing_campaign_id,
					   'occurrence', p.occurrence, 'variant', p.variant, 'offer_kind', 'code',
					   'code', p.code::text),
				   as_of
			FROM p;
		EXCEPTION WHEN unique_violation THEN
			RETURN false;	-- a code was taken: the caller's next round skips taken codes
		END;
		RETURN true;
	END IF;

	WITH src AS MATERIALIZED (
		SELECT DISTINCT ON (r.code) s.customer_id, s.occurrence, s.variant, r.code
		FROM (SELECT s.*, pg_catalog.row_number() OVER () AS i
			  FROM pg_temp._loyalty_stage s
			  WHERE s.reason IS NULL AND s.offer_kind = 'code'
				AND s.coupon_campaign_id = _publish_codes.coupon_campaign_id
				AND s.code_pattern = _publish_codes.code_pattern
				AND NOT EXISTS (SELECT 1 FROM loyalty.campaign_publication q
								WHERE q.customer_id = s.customer_id
								  AND q.marketing_campaign_id = m.marketing_campaign_id
								  AND q.occurrence = s.occurrence)) s
		JOIN loyalty.random_codes(code_pattern, n::integer) WITH ORDINALITY AS r (code, i) ON r.i = s.i
		ORDER BY r.code
	), k AS (
		INSERT INTO loyalty.coupon (code, campaign_id, customer_id, max_uses, created_at)
		SELECT src.code, coupon_campaign_id, src.customer_id, 1, as_of FROM src
		ON CONFLICT ON CONSTRAINT coupon_code_key DO NOTHING
		RETURNING code, customer_id
	), p AS (
		INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, occurrence, variant,
			channel, published_at, offer_kind, coupon_campaign_id, code)
		SELECT src.customer_id, m.marketing_campaign_id, src.occurrence, src.variant, m.channel, as_of,
			   'code', coupon_campaign_id, src.code
		FROM src JOIN k ON k.code OPERATOR(loyalty.=) src.code AND k.customer_id = src.customer_id
		RETURNING customer_id, occurrence, variant, code
	)
	INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
	SELECT p.customer_id, 'offer', m.marketing_campaign_id::text || ':' || p.occurrence, m.channel,
		   pg_catalog.jsonb_build_object('marketing_campaign_id', m.marketing_campaign_id,
			   'occurrence', p.occurrence, 'variant', p.variant, 'offer_kind', 'code', 'code', p.code::text),
		   as_of
	FROM p;
	RETURN false;
END;
$$;

COMMENT ON FUNCTION loyalty._publish_codes(loyalty.marketing_campaign, bigint, text, bigint, timestamptz, boolean) IS
	'Internal: publish bound codes of one coupon campaign and pattern to the staged customers (codes, publications, outbox in one statement); true when a plain round published them all';

/* Public codes, bonus points or a message only, to the staged customers of one offer. */
CREATE FUNCTION loyalty._publish_other(m loyalty.marketing_campaign, offer_kind text, coupon_campaign_id bigint,
									   public_code text, bonus_points bigint, as_of timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	code loyalty.coupon_code := CASE WHEN offer_kind = 'public_code' THEN loyalty.vanity_code(public_code) END;
BEGIN
	WITH src AS MATERIALIZED (
		SELECT s.customer_id, s.occurrence, s.variant,
			   CASE WHEN offer_kind = 'points'
					THEN 'mc:' || m.marketing_campaign_id::text || ':' || s.customer_id || ':' || s.occurrence END AS ref
		FROM pg_temp._loyalty_stage s
		WHERE s.reason IS NULL AND s.offer_kind = _publish_other.offer_kind
		  AND s.coupon_campaign_id IS NOT DISTINCT FROM _publish_other.coupon_campaign_id
		  AND s.public_code IS NOT DISTINCT FROM _publish_other.public_code
		  AND s.bonus_points IS NOT DISTINCT FROM _publish_other.bonus_points
	), e AS MATERIALIZED (
		SELECT src.*, CASE WHEN src.ref IS NOT NULL THEN
				(loyalty.points_earn(src.customer_id, src.ref, bonus_points,
									 reason => 'marketing campaign ' || m.name, qualifying => false)).entry_id
			   END AS entry_id
		FROM src
	), p AS (
		INSERT INTO loyalty.campaign_publication (customer_id, marketing_campaign_id, occurrence, variant,
			channel, published_at, offer_kind, coupon_campaign_id, code, bonus_points, points_reference)
		SELECT e.customer_id, m.marketing_campaign_id, e.occurrence, e.variant, m.channel, as_of,
			   offer_kind, coupon_campaign_id, code,
			   CASE WHEN offer_kind = 'points' THEN bonus_points END, e.ref
		FROM e
		RETURNING customer_id, occurrence, variant
	)
	INSERT INTO loyalty.outbox (customer_id, kind, event_key, channel, payload, created_at)
	SELECT p.customer_id, 'offer', m.marketing_campaign_id::text || ':' || p.occurrence, m.channel,
		   pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('marketing_campaign_id', m.marketing_campaign_id,
			   'occurrence', p.occurrence, 'variant', p.variant, 'offer_kind', offer_kind,
			   'code', code::text, 'bonus_points', CASE WHEN offer_kind = 'points' THEN bonus_points END)),
		   as_of
	FROM p;
END;
$$;

COMMENT ON FUNCTION loyalty._publish_other(loyalty.marketing_campaign, text, bigint, text, bigint, timestamptz) IS
	'Internal: publish a public code, bonus points (ledger reference mc:<campaign>:<customer>:<occurrence>, idempotent) or a message to the staged customers of one offer';

CREATE FUNCTION loyalty.publish_marketing_campaign(marketing_campaign_id bigint,
												   as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (outcome text, customers bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_variable
DECLARE
	kind text;
	q text;
	keys text[];
BEGIN
	SELECT c.audience_kind, c.audience->>'query' INTO kind, q
	FROM loyalty.marketing_campaign c WHERE c.marketing_campaign_id = publish_marketing_campaign.marketing_campaign_id;
	IF kind = 'query' THEN
		keys := ARRAY(SELECT loyalty._audience_query(q));
	END IF;
	RETURN QUERY SELECT * FROM loyalty._publish(marketing_campaign_id, as_of, keys, false);
END;
$$;

COMMENT ON FUNCTION loyalty.publish_marketing_campaign(bigint, timestamptz) IS
	'Publish a marketing campaign as of a time: offer its audience what it offers (idempotent per customer and occurrence), log publications and filtered-out customers; returns the count per outcome (published or the filter reason); a query audience runs with the caller''s rights';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.publish_marketing_campaign(bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._publish(bigint, timestamptz, text[], boolean)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._audience_query(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.preview_audience(marketing_campaign_id bigint,
										 as_of timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (outcome text, customers bigint)
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_variable
DECLARE
	kind text;
	q text;
	keys text[];
BEGIN
	SELECT c.audience_kind, c.audience->>'query' INTO kind, q
	FROM loyalty.marketing_campaign c WHERE c.marketing_campaign_id = preview_audience.marketing_campaign_id;
	IF kind = 'query' THEN
		keys := ARRAY(SELECT loyalty._audience_query(q));
	END IF;
	RETURN QUERY SELECT * FROM loyalty._publish(marketing_campaign_id, as_of, keys, true);
END;
$$;

COMMENT ON FUNCTION loyalty.preview_audience(bigint, timestamptz) IS
	'The audience funnel of a marketing campaign as of a time, without publishing anything: customers per outcome (published = would be offered)';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.preview_audience(bigint, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* procedures: jobs (safe from pg_cron at any frequency) */

/*
 * Publish every active scheduled campaign of the given audience kinds (all
 * when NULL) as of a time; returns the customers published.  Idempotent:
 * what a run published, the next run finds already offered.
 */
CREATE FUNCTION loyalty._run_scheduled(as_of timestamptz, kinds text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
#variable_conflict use_variable
DECLARE
	c record;
	total bigint := 0;
	n bigint;
BEGIN
	as_of := coalesce(as_of, pg_catalog.now());
	FOR c IN
		SELECT m.marketing_campaign_id FROM loyalty.marketing_campaign m
		WHERE m.schedule = 'scheduled' AND NOT m.paused
		  AND (m.starts_at IS NULL OR m.starts_at <= as_of) AND (m.ends_at IS NULL OR m.ends_at > as_of)
		  AND (kinds IS NULL OR m.audience_kind = ANY (kinds))
		ORDER BY m.marketing_campaign_id
	LOOP
		SELECT coalesce(sum(r.customers), 0) INTO n
		FROM loyalty.publish_marketing_campaign(c.marketing_campaign_id, as_of) r WHERE r.outcome = 'published';
		total := total + n;
	END LOOP;
	RETURN total;
END;
$$;

COMMENT ON FUNCTION loyalty._run_scheduled(timestamptz, text[]) IS
	'Internal: publish the active scheduled marketing campaigns of some audience kinds (all: NULL) as of a time';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty._run_scheduled(timestamptz, text[])'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, NULL);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_campaigns(timestamptz) IS
	'Publish every active scheduled marketing campaign as of as_of (default now); safe to run from pg_cron at any frequency (idempotent, catches up)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_welcome_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['welcome']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_welcome_campaigns(timestamptz) IS
	'Publish the scheduled welcome campaigns (customers whose signup day is within the audience''s within_days, default 7)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_welcome_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_welcome_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_birthday_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['birthday']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_birthday_campaigns(timestamptz) IS
	'Publish the scheduled birthday campaigns: once a year per customer, on the birthday in the program time zone (February 29: February 28 in non-leap years), catching up catch_up_days (default 7)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_birthday_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_birthday_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_anniversary_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['anniversary']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_anniversary_campaigns(timestamptz) IS
	'Publish the scheduled signup-anniversary campaigns: once a year per customer from the first anniversary on';

REVOKE EXECUTE ON PROCEDURE loyalty.run_anniversary_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_anniversary_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_reactivation_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['dormant', 'segment_entered']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_reactivation_campaigns(timestamptz) IS
	'Publish the scheduled reactivation campaigns (dormant N days: once per dormancy episode; segment_entered: once per transition)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_reactivation_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_reactivation_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE PROCEDURE loyalty.run_abandoned_cart_campaigns(as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql SECURITY INVOKER
AS $$
BEGIN
	PERFORM loyalty._run_scheduled(as_of, ARRAY['abandoned_cart']);
END;
$$;

COMMENT ON PROCEDURE loyalty.run_abandoned_cart_campaigns(timestamptz) IS
	'Publish the scheduled abandoned-cart campaigns: once per open cart untouched for the audience''s after (default 1 hour) and younger than max_age (default 7 days)';

REVOKE EXECUTE ON PROCEDURE loyalty.run_abandoned_cart_campaigns(timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_abandoned_cart_campaigns(timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
