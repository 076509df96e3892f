
/* ---------------------------------------------------------------------------
 * points_tier.sql: tier progress and evaluation, the integrity check, views
 *
 * Upgrades happen at once inside the earning transaction (points.c).
 * Downgrades happen only in loyalty.evaluate_tiers(): the first evaluation
 * that finds a customer below the threshold of their tier starts the grace
 * period (below_since); an evaluation at least tier_grace_days later that
 * still finds them below moves them down one step, and if they are below the
 * new tier too, a new grace period starts there.  Evaluation also upgrades
 * (by any number of steps), e.g. after thresholds were lowered.
 * ------------------------------------------------------------------------ */

/* functions */

/*
 * The qualifying value a tier is judged on: points or spend (tier_basis),
 * since the first earning or in the rolling window of tier_window_months
 * calendar months (program time zone) ending with the month of as_of.
 */
CREATE FUNCTION loyalty._points_tier_value(customer_id text, as_of timestamptz)
RETURNS numeric
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN p.tier_window_months IS NULL THEN
			CASE WHEN p.tier_basis = 'spend' THEN a.qualifying_spend ELSE a.qualifying END
		ELSE
			(SELECT coalesce(sum(CASE WHEN p.tier_basis = 'spend' THEN q.spend ELSE q.points END), 0)
			 FROM loyalty.points_qualifying q
			 WHERE q.customer_id = a.customer_id
			   AND q.month BETWEEN (date_trunc('month', $2 AT TIME ZONE p.timezone)
									- make_interval(months => p.tier_window_months - 1))::date
							   AND date_trunc('month', $2 AT TIME ZONE p.timezone)::date)
		END
	FROM loyalty.points_account a
	LEFT JOIN (SELECT coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC') AS timezone,
					  coalesce(pp.tier_basis, 'points') AS tier_basis,
					  pp.tier_window_months
			   FROM (SELECT 1) one LEFT JOIN loyalty.points_program pp ON true) p ON true
	WHERE a.customer_id = $1
$$;

COMMENT ON FUNCTION loyalty._points_tier_value(text, timestamptz) IS
	'Internal: qualifying points or spend of a customer in the tier window ending at as_of';

CREATE FUNCTION loyalty.tier_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now(),
									  OUT tier text, OUT qualifying numeric, OUT basis text,
									  OUT next_tier text, OUT missing numeric,
									  OUT keeps_tier boolean, OUT message text)
RETURNS record
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur record;
	nxt record;
	reached record;
	cur_rank integer;
BEGIN
	IF tier_progress.customer_id IS NULL OR tier_progress.at IS NULL THEN
		RAISE EXCEPTION 'customer_id and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, tier_progress.customer_id);
	SELECT coalesce(p.tier_basis, 'points') INTO basis
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT a.tier, t.rank, t.threshold INTO cur
	FROM loyalty.points_account a LEFT JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = tier_progress.customer_id;
	tier := cur.tier;
	cur_rank := cur.rank;
	qualifying := trim_scale(coalesce(loyalty._points_tier_value(tier_progress.customer_id, tier_progress.at), 0));
	keeps_tier := cur.threshold IS NULL OR qualifying >= cur.threshold;
	-- Judged by the current thresholds, not by the last evaluation: a tier
	-- above the held one that the value reaches is the customer's (upgrades
	-- happen at once: the next earning or evaluate_tiers records it).
	IF FOUND THEN
		SELECT r.name, r.rank INTO reached
		FROM loyalty.tier r WHERE r.threshold <= qualifying
		ORDER BY r.rank DESC LIMIT 1;
		IF FOUND AND (cur_rank IS NULL OR reached.rank > cur_rank) THEN
			tier := reached.name;
			cur_rank := reached.rank;
			keeps_tier := true;
		END IF;
	END IF;

	SELECT n.name, n.threshold INTO nxt
	FROM loyalty.tier n
	WHERE (cur_rank IS NULL AND n.threshold > 0) OR n.rank > cur_rank
	ORDER BY n.rank LIMIT 1;
	IF FOUND THEN
		next_tier := nxt.name;
		missing := trim_scale(greatest(nxt.threshold - qualifying, 0));
	END IF;
	IF NOT keeps_tier THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to keep %s' ELSE '%s more spend to keep %s' END,
						  trim_scale(cur.threshold - qualifying), tier);
	ELSIF next_tier IS NOT NULL THEN
		message := format(CASE basis WHEN 'points' THEN '%s points to %s' ELSE '%s more spend to %s' END,
						  missing, next_tier);
	ELSIF tier IS NOT NULL THEN
		message := format('top tier %s reached', tier);
	ELSE
		message := 'no tiers configured';
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty.tier_progress(text, timestamptz) IS
	'Tier of a customer judged by the current thresholds (a higher tier the value reaches counts at once), qualifying points (or spend) in the window, the next tier and what is missing ("120 points to Gold"), whether the current tier''s threshold is still met (else the message says what keeps it)';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.tier_progress(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * points_program.tier_downgrade = 'on_refund': called by reverse_points and
 * points_return_for_order (C, account locked, refund written) with the business
 * time of the refunded earning.  If that earning upgraded the customer
 * (its tier_history row has the earning's time) and the qualifying value
 * left no longer reaches the tier now held, the customer moves down at once
 * to the highest tier the value reaches, never below the tier held before
 * the earning; recorded as change 'refund'.  Not SECURITY DEFINER: it runs
 * inside the owner's C functions.
 */
CREATE FUNCTION loyalty._points_refund_downgrade(customer text, earned_at timestamptz, refund_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	up record;
	cur record;
	target record;
	floor_tier record;
	v numeric;
BEGIN
	SELECT h.from_tier, h.to_tier INTO up
	FROM loyalty.tier_history h
	WHERE h.customer_id = customer AND h.change = 'upgrade' AND h.changed_at = earned_at
	ORDER BY h.history_id DESC LIMIT 1;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT a.tier, t.rank, t.threshold INTO cur
	FROM loyalty.points_account a JOIN loyalty.tier t ON t.name = a.tier
	WHERE a.customer_id = customer;
	IF NOT FOUND THEN
		RETURN;
	END IF;
	SELECT t.name, t.rank, t.threshold INTO floor_tier FROM loyalty.tier t WHERE t.name = up.from_tier;
	IF floor_tier.rank IS NOT NULL AND cur.rank <= floor_tier.rank THEN
		RETURN;
	END IF;
	v := coalesce(loyalty._points_tier_value(customer, refund_at), 0);
	IF v >= cur.threshold THEN
		RETURN;
	END IF;
	SELECT t.name, t.rank, t.threshold INTO target
	FROM loyalty.tier t WHERE t.threshold <= v AND t.rank < cur.rank
	ORDER BY t.rank DESC LIMIT 1;
	IF floor_tier.rank IS NOT NULL AND (target.rank IS NULL OR target.rank < floor_tier.rank) THEN
		target := floor_tier;
	END IF;
	UPDATE loyalty.points_account a
	SET tier = target.name, tier_since = refund_at,
		below_since = CASE WHEN v < target.threshold THEN refund_at END,
		updated_at = now()
	WHERE a.customer_id = customer;
	INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)
	VALUES (customer, refund_at, cur.tier, target.name, 'refund', v);
END;
$$;

COMMENT ON FUNCTION loyalty._points_refund_downgrade(text, timestamptz, timestamptz) IS
	'Internal: with tier_downgrade = on_refund, undo the upgrade a refunded earning caused when the qualifying value left no longer reaches the tier';

/*
 * One batch of tier evaluation: the next batch_size accounts after
 * after_customer (in customer_id order) are locked first, then judged in a
 * second statement whose snapshot sees every change committed before the
 * locks were granted.
 */
CREATE FUNCTION loyalty.evaluate_tiers_batch(as_of timestamptz, after_customer text, batch_size integer,
											 OUT last_customer text, OUT accounts integer,
											 OUT upgrades integer, OUT downgrades integer)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	ids text[];
	grace interval;
BEGIN
	IF as_of IS NULL OR batch_size IS NULL THEN
		RAISE EXCEPTION 'as_of and batch_size must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be positive, not %', batch_size
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- as every points call: no business time beyond 5 minutes ahead
	IF as_of > clock_timestamp() + interval '300 seconds' THEN
		RAISE EXCEPTION 'as_of must not lie in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('as_of is %s; points calls accept business times up to 300 seconds ahead of the server clock.', as_of);
	END IF;
	SELECT make_interval(days => coalesce(p.tier_grace_days, 30)) INTO grace
	FROM (SELECT 1) one LEFT JOIN loyalty.points_program p ON true;

	SELECT array_agg(s.customer_id ORDER BY s.customer_id) INTO ids
	FROM (SELECT a.customer_id FROM loyalty.points_account a
		  WHERE after_customer IS NULL OR a.customer_id > after_customer
		  ORDER BY a.customer_id LIMIT batch_size
		  FOR NO KEY UPDATE) s;
	accounts := coalesce(cardinality(ids), 0);
	last_customer := ids[accounts];
	upgrades := 0;
	downgrades := 0;
	IF accounts = 0 THEN
		RETURN;
	END IF;

	WITH judged AS (
		SELECT a.customer_id, a.tier, a.below_since, cur.rank, cur.threshold,
			   v.value, target.name AS target, target.rank AS target_rank,
			   down.name AS down, down.threshold AS down_threshold
		FROM loyalty.points_account a
		LEFT JOIN loyalty.tier cur ON cur.name = a.tier
		CROSS JOIN LATERAL (SELECT coalesce(loyalty._points_tier_value(a.customer_id, as_of), 0) AS value) v
		LEFT JOIN LATERAL (SELECT t.name, t.rank FROM loyalty.tier t WHERE t.threshold <= v.value
						   ORDER BY t.rank DESC LIMIT 1) target ON true
		LEFT JOIN LATERAL (SELECT t.name, t.threshold FROM loyalty.tier t WHERE t.rank < cur.rank
						   ORDER BY t.rank DESC LIMIT 1) down ON true
		WHERE a.customer_id = ANY (ids)
	), decided AS (
		SELECT j.*,
			   CASE
				   WHEN j.target IS NOT NULL AND (j.rank IS NULL OR j.target_rank > j.rank) THEN 'upgrade'
				   WHEN j.rank IS NOT NULL AND (j.target IS NULL OR j.target_rank < j.rank)
						AND coalesce(j.below_since, as_of) <= as_of - grace THEN 'downgrade'
			   END AS change
		FROM judged j
	), outcome AS (
		SELECT d.customer_id, d.tier AS from_tier, d.value, d.change,
			   CASE d.change WHEN 'upgrade' THEN d.target WHEN 'downgrade' THEN d.down ELSE d.tier END AS new_tier,
			   CASE
				   WHEN d.change = 'upgrade' THEN NULL
				   WHEN d.change = 'downgrade' THEN
					   CASE WHEN d.down IS NOT NULL AND d.value < d.down_threshold THEN as_of END
				   WHEN d.rank IS NOT NULL AND (d.target IS NULL OR d.target_rank < d.rank)
					   THEN coalesce(d.below_since, as_of)
			   END AS new_below_since
		FROM decided d
	), updated AS (
		UPDATE loyalty.points_account a
		SET tier = o.new_tier,
			tier_since = CASE WHEN o.change IS NOT NULL THEN as_of ELSE a.tier_since END,
			below_since = o.new_below_since,
			updated_at = now()
		FROM outcome o
		WHERE a.customer_id = o.customer_id
		  AND (a.tier IS DISTINCT FROM o.new_tier OR a.below_since IS DISTINCT FROM o.new_below_since)
	), history AS (
		INSERT INTO loyalty.tier_history (customer_id, changed_at, from_tier, to_tier, change, qualifying)
		SELECT o.customer_id, as_of, o.from_tier, o.new_tier, o.change, o.value
		FROM outcome o WHERE o.change IS NOT NULL
	)
	SELECT count(*) FILTER (WHERE o.change = 'upgrade'), count(*) FILTER (WHERE o.change = 'downgrade')
	INTO upgrades, downgrades
	FROM outcome o;
END;
$$;

COMMENT ON FUNCTION loyalty.evaluate_tiers_batch(timestamptz, text, integer) IS
	'One batch of evaluate_tiers: judge the next batch_size accounts after after_customer; returns the last one and the counts';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.evaluate_tiers_batch(timestamptz, text, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* no SECURITY DEFINER and no SET clause: both would forbid COMMIT */
CREATE PROCEDURE loyalty.evaluate_tiers(as_of timestamptz DEFAULT NULL, batch_size integer DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
	t timestamptz := COALESCE(as_of, pg_catalog.now());
	last text;
	r record;
	up bigint := 0;
	down bigint := 0;
BEGIN
	LOOP
		SELECT * INTO r FROM loyalty.evaluate_tiers_batch(t, last, batch_size);
		COMMIT;
		up := up + r.upgrades;
		down := down + r.downgrades;
		EXIT WHEN r.accounts < batch_size;
		last := r.last_customer;
	END LOOP;
	RAISE NOTICE 'tier evaluation as of %: % upgrades, % downgrades', t, up, down;
END;
$$;

COMMENT ON PROCEDURE loyalty.evaluate_tiers(timestamptz, integer) IS
	'For cron / pg_cron: upgrade customers who qualify for a higher tier, and move customers below their tier''s threshold for longer than the grace period down one step; commits every batch_size accounts';
REVOKE EXECUTE ON PROCEDURE loyalty.evaluate_tiers(timestamptz, integer) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.evaluate_tiers(timestamptz, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Every violation of the ledger's invariants; empty on a healthy database.
 * Reads everything (one scan of each table): run it off-peak on big data.
 */
CREATE FUNCTION loyalty.check_integrity()
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
		-- a reversed earning counts as taken back whole; partial returns
		-- (kind return) of one not reversed count what they took
		SELECT x.customer_id, sum(x.points) AS points
		FROM (SELECT e.customer_id, e.points
			  FROM loyalty.points_ledger e
			  WHERE e.kind = 'earn'
				AND e.entry_id IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')
			  UNION ALL
			  SELECT t.customer_id, (t.detail ->> 'taken')::bigint
			  FROM loyalty.points_ledger t
			  WHERE t.kind = 'return'
				AND NOT t.reverses[1] IN (SELECT unnest(r.reverses) FROM loyalty.points_ledger r WHERE r.kind = 'reverse')) x
		GROUP BY x.customer_id
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
	WHERE e.kind NOT IN ('earn', 'spend', 'expire', 'reverse', 'adjust', 'return')
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
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.check_integrity()'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.tier_distribution AS
SELECT t.rank, t.name AS tier, count(a.customer_id) AS customers,
	   round(100.0 * count(a.customer_id) / nullif(sum(count(a.customer_id)) OVER (), 0), 1) AS share_pct
FROM loyalty.tier t
LEFT JOIN loyalty.points_account a ON a.tier = t.name
GROUP BY t.rank, t.name
UNION ALL
SELECT NULL, NULL, count(*), NULL
FROM loyalty.points_account a WHERE a.tier IS NULL
HAVING count(*) > 0;

COMMENT ON VIEW loyalty.tier_distribution IS
	'Customers per tier (share of customers with a tier), and those without a tier (tier NULL)';
COMMENT ON COLUMN loyalty.tier_distribution.rank IS 'Rank of the tier, 0 = lowest (NULL: the row of customers without a tier)';
COMMENT ON COLUMN loyalty.tier_distribution.tier IS 'Tier name (NULL: customers without a tier)';
COMMENT ON COLUMN loyalty.tier_distribution.customers IS 'Points accounts in the tier (0 included)';
COMMENT ON COLUMN loyalty.tier_distribution.share_pct IS 'Share of the accounts with a tier, in percent, 1 decimal (NULL on the row without a tier)';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.tier_distribution'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.points_liability AS
SELECT date_trunc('month', (l.expires_at - interval '1 microsecond') AT TIME ZONE p.timezone)::date AS expiry_month,
	   count(DISTINCT l.customer_id) AS customers,
	   sum(l.remaining) FILTER (WHERE l.state = 'available') AS available,
	   sum(l.remaining) FILTER (WHERE l.state = 'pending') AS pending
FROM loyalty.points_lot l
CROSS JOIN (SELECT coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC') AS timezone) p
WHERE l.state <> 'closed'
GROUP BY 1;

COMMENT ON VIEW loyalty.points_liability IS
	'Outstanding points by the month of their last usable day (program time zone; NULL: never expire), as last settled: what the program owes and when it lapses';
COMMENT ON COLUMN loyalty.points_liability.expiry_month IS 'First day of the month of the points'' last usable day, program time zone (NULL: never expire)';
COMMENT ON COLUMN loyalty.points_liability.customers IS 'Customers holding such points';
COMMENT ON COLUMN loyalty.points_liability.available IS 'Spendable points, as last settled';
COMMENT ON COLUMN loyalty.points_liability.pending IS 'Points not yet available (return window), as last settled';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.points_liability'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* campaign rules naming tiers follow renames; deletes are refused (coupon.sql) */

CREATE TRIGGER tier_campaign_rule_rename
	AFTER UPDATE OF name ON loyalty.tier
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION loyalty._campaign_rule_names_follow();
CREATE TRIGGER tier_campaign_rule_delete
	AFTER DELETE ON loyalty.tier
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_names_follow();

COMMENT ON TRIGGER tier_campaign_rule_rename ON loyalty.tier IS
	'A renamed tier is renamed in the campaign rules that name it';
COMMENT ON TRIGGER tier_campaign_rule_delete ON loyalty.tier IS
	'Refuse deleting a tier a campaign rule names (23503)';
