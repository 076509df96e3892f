
/* ---------------------------------------------------------------------------
 * mission.sql: missions (doc/missions.md)
 *
 * A mission is a target over a period: N orders (of a category) in D days,
 * a spend in a calendar month, an order in M months in a row (a streak), or
 * N events the app reports (reviews, shares, signups).  Recurrence: once,
 * again after each completion, or once per period.  Activation: automatic
 * or opt-in.  The reward is points through the ledger, pending until the
 * return window of the completing order closes; a refund rolls progress
 * back, and a completed attempt whose progress falls below the target
 * before its reward settles is undone (reward taken back).
 *
 * Progress comes from the orders of tracked tables (loyalty.track_orders:
 * the tracking statement trigger appends them to mission_order_delta while
 * an active mission counts orders, mission_feed.c; they are folded when
 * progress is read, when the app reports an order or a refund of the
 * customer, or by mission_fold), from the orders the app reports
 * (mission_order) and from mission_event; each contribution is kept per
 * (customer, mission, source reference), which makes every call idempotent
 * and every refund exact.
 *
 * Citus: every per-customer table is keyed by (customer_id COLLATE "C",
 * mission_id, ...) but mission_order_delta (customer_id, no key, as
 * customer_stats_delta); the mission catalogue and mission_order_source are
 * configuration tables whose only trigger announces a change to the
 * sessions' caches (it refuses nothing).  Locks: the customer's mission
 * row, the attempt rows of a mission, in mission_id order, then the
 * points account; the tracking trigger takes none of them.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.mission (
	mission_id		text COLLATE "C" PRIMARY KEY
		CONSTRAINT mission_id_check CHECK (pg_catalog.octet_length(mission_id) BETWEEN 1 AND 64),
	description		text,
	kind			text NOT NULL
		CONSTRAINT mission_kind_check CHECK (kind IN ('orders', 'spend', 'streak', 'event')),
	target			numeric NOT NULL CHECK (target > 0),
	category		text,
	event			text,
	min_amount		numeric NOT NULL DEFAULT 0 CHECK (min_amount >= 0),
	period			text NOT NULL DEFAULT 'days'
		CONSTRAINT mission_period_check CHECK (period IN ('days', 'month')),
	period_days		integer CHECK (period_days BETWEEN 1 AND 3660),
	recurrence		text NOT NULL DEFAULT 'once'
		CONSTRAINT mission_recurrence_check CHECK (recurrence IN ('once', 'repeat', 'each_period')),
	activation		text NOT NULL DEFAULT 'automatic'
		CONSTRAINT mission_activation_check CHECK (activation IN ('automatic', 'opt_in')),
	reward_points	bigint NOT NULL DEFAULT 0 CHECK (reward_points >= 0),
	pending_days	integer NOT NULL DEFAULT 0 CHECK (pending_days BETWEEN 0 AND 3660),
	starts_at		timestamptz,
	ends_at			timestamptz,
	active			boolean NOT NULL DEFAULT true,
	CONSTRAINT mission_shape_check CHECK (
		(kind = 'event') = (event IS NOT NULL)
		AND (kind = 'streak' OR period = 'month' OR period_days IS NOT NULL))
);

COMMENT ON TABLE loyalty.mission IS
	'Missions (configuration): a target over a period, its recurrence, activation and reward; no trigger, can be a Citus reference table';
COMMENT ON COLUMN loyalty.mission.mission_id IS 'Mission name (1 to 64 bytes)';
COMMENT ON COLUMN loyalty.mission.description IS 'Text for the customer (e.g. 3 orders of the new collection in 30 days)';
COMMENT ON COLUMN loyalty.mission.kind IS 'orders (count orders), spend (sum amounts), streak (months in a row with an order), event (count app events)';
COMMENT ON COLUMN loyalty.mission.target IS 'Orders, money, months or events to reach';
COMMENT ON COLUMN loyalty.mission.category IS 'orders / spend: only orders whose categories (mission_order) include it (NULL: every order)';
COMMENT ON COLUMN loyalty.mission.event IS 'event: the event name counted (review, share, signup, ...)';
COMMENT ON COLUMN loyalty.mission.min_amount IS 'Orders below this amount do not count';
COMMENT ON COLUMN loyalty.mission.period IS 'days: an attempt lasts period_days from its first progress (or opt-in); month: until the end of the calendar month (program time zone). Streaks have no period';
COMMENT ON COLUMN loyalty.mission.period_days IS 'Length of an attempt for period = days';
COMMENT ON COLUMN loyalty.mission.recurrence IS 'once (one completion ever), repeat (a new attempt after each completion), each_period (at most one completion per period)';
COMMENT ON COLUMN loyalty.mission.activation IS 'automatic (every customer) or opt_in (mission_join first)';
COMMENT ON COLUMN loyalty.mission.reward_points IS 'Points credited on completion (reference mission:<mission_id>:<customer_id>:<attempt>:<undone>)';
COMMENT ON COLUMN loyalty.mission.pending_days IS 'The reward stays pending this many days (the return window); a refund before then undoes the completion';
COMMENT ON COLUMN loyalty.mission.starts_at IS 'Progress counts from then (NULL: always)';
COMMENT ON COLUMN loyalty.mission.ends_at IS 'End date: no progress from then (NULL: open)';
COMMENT ON COLUMN loyalty.mission.active IS 'False: the mission is paused (no progress)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.mission'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_optin (
	customer_id		text COLLATE "C" NOT NULL,
	mission_id		text COLLATE "C" NOT NULL,
	opted_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, mission_id)
);

COMMENT ON TABLE loyalty.mission_optin IS 'Customers who opted in to an opt_in mission';
COMMENT ON COLUMN loyalty.mission_optin.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_optin.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_optin.opted_at IS 'Business time of the opt-in';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_optin'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_optin'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_customer (
	customer_id		text COLLATE "C" NOT NULL PRIMARY KEY,
	last_at			timestamptz NOT NULL
);

COMMENT ON TABLE loyalty.mission_customer IS
	'One row per customer with mission progress: its lock serialises the customer''s mission calls (two orders of one customer at once count one after the other)';
COMMENT ON COLUMN loyalty.mission_customer.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_customer.last_at IS 'Business time of the last order or event counted';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_customer'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_customer'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_attempt (
	customer_id		text COLLATE "C" NOT NULL,
	mission_id		text COLLATE "C" NOT NULL,
	attempt			integer NOT NULL,
	started_at		timestamptz NOT NULL,
	ends_at			timestamptz,
	progress		numeric NOT NULL DEFAULT 0,
	last_month		date,
	status			text NOT NULL DEFAULT 'active'
		CONSTRAINT mission_attempt_status_check CHECK (status IN ('active', 'completed', 'expired')),
	completed_at	timestamptz,
	completed_by	text,
	reward_points	bigint,
	pending_until	timestamptz,
	undone			integer NOT NULL DEFAULT 0,
	PRIMARY KEY (customer_id, mission_id, attempt)
);

COMMENT ON TABLE loyalty.mission_attempt IS
	'Attempts of each customer at each mission: progress, period, completion and reward';
COMMENT ON COLUMN loyalty.mission_attempt.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_attempt.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_attempt.attempt IS '1, 2, ... (recurrence)';
COMMENT ON COLUMN loyalty.mission_attempt.started_at IS 'First progress or opt-in';
COMMENT ON COLUMN loyalty.mission_attempt.ends_at IS 'End of the attempt''s period (NULL: streaks, open)';
COMMENT ON COLUMN loyalty.mission_attempt.progress IS 'Orders, money, months in a row or events so far';
COMMENT ON COLUMN loyalty.mission_attempt.last_month IS 'Streaks: the last month counted (program time zone)';
COMMENT ON COLUMN loyalty.mission_attempt.status IS 'active, completed or expired (period over, or streak broken)';
COMMENT ON COLUMN loyalty.mission_attempt.completed_at IS 'Business time of completion';
COMMENT ON COLUMN loyalty.mission_attempt.completed_by IS 'Reference of the order or event that completed it';
COMMENT ON COLUMN loyalty.mission_attempt.reward_points IS 'Points credited';
COMMENT ON COLUMN loyalty.mission_attempt.pending_until IS 'The reward is pending until then; a refund before undoes the completion';
COMMENT ON COLUMN loyalty.mission_attempt.undone IS 'Completions undone by refunds (each took its reward back)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_attempt'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_attempt'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.mission_attempt'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_contribution (
	customer_id		text COLLATE "C" NOT NULL,
	mission_id		text COLLATE "C" NOT NULL,
	source_ref		text NOT NULL,
	attempt			integer NOT NULL,
	delta			numeric NOT NULL,
	at				timestamptz NOT NULL,
	rolled_back_at	timestamptz,
	PRIMARY KEY (customer_id, mission_id, source_ref)
);

COMMENT ON TABLE loyalty.mission_contribution IS
	'What each order or event added to an attempt (one row per customer, mission and source reference: idempotence and exact refunds)';
COMMENT ON COLUMN loyalty.mission_contribution.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_contribution.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_contribution.source_ref IS 'order_ref (mission_order) or reference (mission_event)';
COMMENT ON COLUMN loyalty.mission_contribution.attempt IS 'The attempt it counted for';
COMMENT ON COLUMN loyalty.mission_contribution.delta IS 'What it added to the progress (0: counted nothing, e.g. a second order in a streak month)';
COMMENT ON COLUMN loyalty.mission_contribution.at IS 'Business time';
COMMENT ON COLUMN loyalty.mission_contribution.rolled_back_at IS 'When a refund took it back';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_contribution'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_contribution'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.mission_order_source (
	orders			regclass PRIMARY KEY,
	category_column	name NOT NULL
);

COMMENT ON TABLE loyalty.mission_order_source IS
	'Tracked orders tables whose orders carry categories for missions (configuration): the column holding an order''s category (a scalar) or categories (an array); can be a Citus reference table';
COMMENT ON COLUMN loyalty.mission_order_source.orders IS 'A tracked orders table (loyalty.track_orders)';
COMMENT ON COLUMN loyalty.mission_order_source.category_column IS 'Its column read as the order''s categories (missing: the order has none)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_order_source'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_order_source'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

/*
 * The orders of tracked statements, appended by the tracking trigger
 * while an active mission counts orders (mission_feed.c) and folded into
 * the attempts by _mission_fold.  No key and no index, as
 * loyalty.customer_stats_delta: the checkout path only appends; a fold
 * deletes the rows its snapshot sees.
 */
CREATE TABLE loyalty.mission_order_delta (
	customer_id		text COLLATE "C" NOT NULL,
	ordered_at		timestamptz NOT NULL,
	amount			numeric NOT NULL,
	categories		text[],
	sign			smallint NOT NULL,
	logged_at		timestamptz NOT NULL
);

COMMENT ON TABLE loyalty.mission_order_delta IS
	'Orders of tracked statements not yet counted for missions (appended by the tracking trigger, folded by mission_progress, mission_order, mission_refund and mission_fold)';
COMMENT ON COLUMN loyalty.mission_order_delta.customer_id IS 'The customer';
COMMENT ON COLUMN loyalty.mission_order_delta.ordered_at IS 'The order''s time (its tracked time column)';
COMMENT ON COLUMN loyalty.mission_order_delta.amount IS 'The order''s amount (0 when null)';
COMMENT ON COLUMN loyalty.mission_order_delta.categories IS 'The order''s categories (loyalty.mission_order_source), NULL when no active mission filters on one';
COMMENT ON COLUMN loyalty.mission_order_delta.sign IS '1: an order; -1: an order removed (deleted, or its counted status, customer, time, amount or categories changed): a refund';
COMMENT ON COLUMN loyalty.mission_order_delta.logged_at IS 'Start of the statement that wrote it: the fold''s order, and the time of a refund';

SELECT pg_catalog.pg_extension_config_dump('loyalty.mission_order_delta'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_order_delta'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Every change of the configuration tables read by the order feed
 * (missions, their category columns, referral programs) reaches every
 * session's cache.
 */
CREATE FUNCTION loyalty._mission_config_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'mission_config_changed'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._mission_config_changed() IS
	'Internal: drop the order feed''s cached mission configuration in every session when it changes';

CREATE TRIGGER mission_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.mission
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._mission_config_changed();
CREATE TRIGGER mission_order_source_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.mission_order_source
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._mission_config_changed();
CREATE TRIGGER referral_program_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.referral_program
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._mission_config_changed();
ALTER TABLE loyalty.mission ENABLE ALWAYS TRIGGER mission_config_changed;
ALTER TABLE loyalty.mission_order_source ENABLE ALWAYS TRIGGER mission_order_source_changed;
ALTER TABLE loyalty.referral_program ENABLE ALWAYS TRIGGER referral_program_changed;

/* functions */

/*
 * The end of an attempt of a mission started at start: period_days later,
 * or the end of the calendar month (program time zone); NULL for streaks.
 */
CREATE FUNCTION loyalty._mission_period_end(m loyalty.mission, start timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE
		WHEN $1.kind OPERATOR(pg_catalog.=) 'streak' THEN NULL
		WHEN $1.period OPERATOR(pg_catalog.=) 'days'
			THEN $2 OPERATOR(pg_catalog.+) pg_catalog.make_interval(days => $1.period_days)
		ELSE pg_catalog.timezone(loyalty._referral_zone(),
				 pg_catalog.date_trunc('month', pg_catalog.timezone(loyalty._referral_zone(), $2))
				 OPERATOR(pg_catalog.+) '1 month'::interval)
	END
$$;

COMMENT ON FUNCTION loyalty._mission_period_end(loyalty.mission, timestamptz) IS
	'Internal: end of an attempt started at a time (NULL for streaks)';

/*
 * The points reference of a completion's reward:
 * mission:<mission_id>:<customer_id>:<attempt>:<undone> (references are
 * global, one owner each), the customer's id as SHA-256 hex when that
 * would pass the 256-byte limit.
 */
CREATE FUNCTION loyalty._mission_reference(customer_id text, mission_id text, attempt integer, undone integer)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.concat_ws(':', 'mission', $2,
			   CASE WHEN pg_catalog.octet_length($1) OPERATOR(pg_catalog.<=) 160 THEN $1
					ELSE pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')), 'hex') END,
			   $3, $4)
$$;

COMMENT ON FUNCTION loyalty._mission_reference(text, text, integer, integer) IS
	'Internal: points reference of a mission reward (mission:<mission_id>:<customer_id>:<attempt>:<undone>)';

/*
 * Lock the customer's mission row (created on first use): the customer's
 * mission calls run one after the other, so two orders at once cannot both
 * start an attempt or both complete one.
 */
CREATE FUNCTION loyalty._mission_lock(customer_id text, at timestamptz)
RETURNS void
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
	INSERT INTO loyalty.mission_customer AS c (customer_id, last_at) VALUES ($1, $2)
	ON CONFLICT ON CONSTRAINT mission_customer_pkey
	DO UPDATE SET last_at = GREATEST(c.last_at, EXCLUDED.last_at)
$$;

COMMENT ON FUNCTION loyalty._mission_lock(text, timestamptz) IS
	'Internal: lock (create) the customer''s mission row';

/*
 * Count one order or event (source_ref) for one mission of a customer: the
 * attempt it falls in (a new one when the last is over and the recurrence
 * allows), the progress, and on reaching the target the completion and
 * its reward.  Idempotent on (customer, mission, source_ref).  Returns the
 * attempt, or NULL when nothing counted.
 */
CREATE FUNCTION loyalty._mission_count(customer_id text, m loyalty.mission, source_ref text,
									   amount numeric, at timestamptz)
RETURNS loyalty.mission_attempt
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	a loyalty.mission_attempt;
	month date;
	delta numeric;
	fresh boolean := false;
BEGIN
	IF m.activation = 'opt_in' AND NOT EXISTS (
		SELECT 1 FROM loyalty.mission_optin o
		WHERE o.customer_id = customer_id AND o.mission_id = m.mission_id AND o.opted_at <= at) THEN
		RETURN NULL;
	END IF;
	SELECT x.* INTO a FROM loyalty.mission_attempt x
	WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id
	ORDER BY x.attempt DESC LIMIT 1 FOR UPDATE;
	IF EXISTS (SELECT 1 FROM loyalty.mission_contribution c
			   WHERE c.customer_id = customer_id AND c.mission_id = m.mission_id AND c.source_ref = source_ref) THEN
		RETURN a;
	END IF;
	month := pg_catalog.date_trunc('month', pg_catalog.timezone(loyalty._referral_zone(), at))::date;

	IF a.attempt IS NOT NULL AND a.status = 'active' AND (
		   (a.ends_at IS NOT NULL AND at >= a.ends_at)
		OR (m.kind = 'streak' AND a.last_month IS NOT NULL AND month > (a.last_month + '1 month'::interval)::date)) THEN
		UPDATE loyalty.mission_attempt x SET status = 'expired'
		WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id AND x.attempt = a.attempt;
		a.status := 'expired';
	END IF;
	IF a.attempt IS NULL OR a.status = 'expired'
	   OR (a.status = 'completed' AND (m.recurrence = 'repeat'
									   OR (m.recurrence = 'each_period' AND a.ends_at IS NOT NULL AND at >= a.ends_at))) THEN
		IF a.attempt IS NOT NULL AND a.status = 'completed' AND m.recurrence = 'once' THEN
			RETURN a;
		END IF;
		a.attempt := COALESCE(a.attempt, 0) + 1;
		a.started_at := at;
		a.ends_at := loyalty._mission_period_end(m, at);
		a.progress := 0;
		a.last_month := NULL;
		a.status := 'active';
		fresh := true;
	ELSIF a.status = 'completed' THEN
		RETURN a;
	END IF;

	delta := CASE m.kind
		WHEN 'spend' THEN amount
		WHEN 'streak' THEN CASE WHEN a.last_month IS NOT NULL AND month <= a.last_month THEN 0 ELSE 1 END
		ELSE 1 END;
	a.progress := a.progress + delta;
	IF m.kind = 'streak' AND delta > 0 THEN
		a.last_month := month;
	END IF;
	IF fresh THEN
		INSERT INTO loyalty.mission_attempt (customer_id, mission_id, attempt, started_at, ends_at, progress, last_month)
		VALUES (customer_id, m.mission_id, a.attempt, a.started_at, a.ends_at, a.progress, a.last_month);
	ELSE
		UPDATE loyalty.mission_attempt x SET progress = a.progress, last_month = a.last_month
		WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id AND x.attempt = a.attempt;
	END IF;
	INSERT INTO loyalty.mission_contribution (customer_id, mission_id, source_ref, attempt, delta, at)
	VALUES (customer_id, m.mission_id, source_ref, a.attempt, delta, at);

	IF a.progress >= m.target THEN
		a.status := 'completed';
		a.completed_at := at;
		a.completed_by := source_ref;
		a.reward_points := m.reward_points;
		a.pending_until := at + pg_catalog.make_interval(days => m.pending_days);
		UPDATE loyalty.mission_attempt x
		SET status = 'completed', completed_at = a.completed_at, completed_by = a.completed_by,
			reward_points = a.reward_points, pending_until = a.pending_until
		WHERE x.customer_id = customer_id AND x.mission_id = m.mission_id AND x.attempt = a.attempt;
		IF m.reward_points > 0 THEN
			PERFORM loyalty.points_earn(customer_id,
										loyalty._mission_reference(customer_id, m.mission_id, a.attempt, a.undone),
										m.reward_points, at => at,
										reason => 'mission ' || m.mission_id || ' completed',
										pending_until => CASE WHEN m.pending_days > 0 THEN a.pending_until END,
										qualifying => false);
		END IF;
	END IF;
	RETURN a;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_count(text, loyalty.mission, text, numeric, timestamptz) IS
	'Internal: count an order or event for one mission of a customer (attempt, progress, completion, reward); idempotent on the source reference';

/*
 * An opt-in: the customer takes part in an opt_in mission (an automatic
 * one needs none); the first attempt's period starts at the first progress.
 * Idempotent.  LM001 when the mission is missing, paused or over.
 */
CREATE FUNCTION loyalty.mission_join(customer_id text, mission_id text,
									 at timestamptz DEFAULT pg_catalog.now())
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	opted timestamptz;
BEGIN
	IF customer_id IS NULL OR mission_id IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, mission_id and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	SELECT x.* INTO m FROM loyalty.mission x WHERE x.mission_id = mission_id;
	IF NOT FOUND OR NOT m.active OR m.ends_at <= at THEN
		RAISE EXCEPTION 'mission "%" is not open', mission_id
			USING ERRCODE = 'LM001',
				  DETAIL = pg_catalog.json_build_object('reason', 'mission_not_open', 'mission_id', mission_id,
								  'state', CASE WHEN m.mission_id IS NULL THEN 'missing' WHEN NOT m.active THEN 'paused'
												ELSE 'ended' END)::text;
	END IF;
	INSERT INTO loyalty.mission_optin AS o (customer_id, mission_id, opted_at)
	VALUES (customer_id, mission_id, at)
	ON CONFLICT ON CONSTRAINT mission_optin_pkey DO UPDATE SET opted_at = o.opted_at
	RETURNING o.opted_at INTO opted;
	RETURN opted;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_join(text, text, timestamptz) IS
	'Opt in to a mission (idempotent; returns the first opt-in time); LM001 mission missing, paused or ended';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_join(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * An order of the customer counts for every open mission of kind orders,
 * spend or streak it qualifies for (category among the order's categories,
 * amount >= min_amount), in mission_id order: the attempts it counted for.
 * Idempotent on order_ref.  Shared by mission_order and the fold of
 * tracked orders.
 */
CREATE FUNCTION loyalty._mission_order_apply(customer_id text, order_ref text, amount numeric,
											 at timestamptz, categories text[])
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	a loyalty.mission_attempt;
	locked boolean := false;
BEGIN
	FOR m IN SELECT x.* FROM loyalty.mission x
			 WHERE x.active AND x.kind IN ('orders', 'spend', 'streak')
			   AND (x.starts_at IS NULL OR x.starts_at <= at) AND (x.ends_at IS NULL OR at < x.ends_at)
			   AND amount >= x.min_amount
			   AND (x.category IS NULL OR x.category = ANY (categories))
			 ORDER BY x.mission_id
	LOOP
		IF NOT locked THEN
			PERFORM loyalty._mission_lock(customer_id, at);
			locked := true;
		END IF;
		a := loyalty._mission_count(customer_id, m, order_ref, amount, at);
		IF a.attempt IS NOT NULL THEN
			mission_id := m.mission_id; attempt := a.attempt; progress := a.progress;
			target := m.target; status := a.status;
			RETURN NEXT;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_order_apply(text, text, numeric, timestamptz, text[]) IS
	'Internal: count an order for the customer''s open order, spend and streak missions (mission_order and the fold of tracked orders)';

/*
 * An order the app reports: the customer's tracked orders not yet counted
 * are folded first (they came before it), then the order counts
 * (_mission_order_apply).  Idempotent on order_ref.
 */
CREATE FUNCTION loyalty.mission_order(customer_id text, order_ref text, amount numeric,
									  at timestamptz DEFAULT pg_catalog.now(),
									  categories text[] DEFAULT NULL)
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);
	PERFORM loyalty._mission_fold(customer_id);
	RETURN QUERY SELECT * FROM loyalty._mission_order_apply(customer_id, order_ref, amount, at, categories);
END;
$$;

COMMENT ON FUNCTION loyalty.mission_order(text, text, numeric, timestamptz, text[]) IS
	'Count an order for the customer''s open order, spend and streak missions (categories => the order''s categories); completion credits the reward; idempotent on order_ref';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_order(text, text, numeric, timestamptz, text[])'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* An app event (review, share, signup, ...) counts for the open event missions naming it; idempotent on reference. */
CREATE FUNCTION loyalty.mission_event(customer_id text, reference text, event text,
									  at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	m loyalty.mission;
	a loyalty.mission_attempt;
	locked boolean := false;
BEGIN
	IF customer_id IS NULL OR reference IS NULL OR event IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, reference, event and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._points_check_key('reference'::text, reference);
	FOR m IN SELECT x.* FROM loyalty.mission x
			 WHERE x.active AND x.kind = 'event' AND x.event = event
			   AND (x.starts_at IS NULL OR x.starts_at <= at) AND (x.ends_at IS NULL OR at < x.ends_at)
			 ORDER BY x.mission_id
	LOOP
		IF NOT locked THEN
			PERFORM loyalty._mission_lock(customer_id, at);
			locked := true;
		END IF;
		a := loyalty._mission_count(customer_id, m, reference, 1, at);
		IF a.attempt IS NOT NULL THEN
			mission_id := m.mission_id; attempt := a.attempt; progress := a.progress;
			target := m.target; status := a.status;
			RETURN NEXT;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_event(text, text, text, timestamptz) IS
	'Count an app event (review, share, signup, ...) for the customer''s open event missions naming it; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_event(text, text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A refund (or a withdrawn event): every contribution of the reference is
 * taken back from its attempt.  A completed attempt that falls below its
 * target before its reward settles (at < pending_until) is undone: the
 * reward is reversed and the attempt is active again (its period is kept).
 * After the reward settled the completion stands.  Idempotent.  Shared by
 * mission_refund and the fold of tracked orders.
 */
CREATE FUNCTION loyalty._mission_refund_apply(customer_id text, order_ref text, at timestamptz)
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	c record;
	a loyalty.mission_attempt;
BEGIN
	IF EXISTS (SELECT 1 FROM loyalty.mission_contribution k
			   WHERE k.customer_id = customer_id AND k.source_ref = order_ref AND k.rolled_back_at IS NULL) THEN
		PERFORM loyalty._mission_lock(customer_id, at);
	END IF;
	FOR c IN SELECT k.mission_id, k.attempt, k.delta, m.target AS m_target
			 FROM loyalty.mission_contribution k JOIN loyalty.mission m ON m.mission_id = k.mission_id
			 WHERE k.customer_id = customer_id AND k.source_ref = order_ref AND k.rolled_back_at IS NULL
			 ORDER BY k.mission_id
	LOOP
		SELECT x.* INTO a FROM loyalty.mission_attempt x
		WHERE x.customer_id = customer_id AND x.mission_id = c.mission_id AND x.attempt = c.attempt FOR UPDATE;
		UPDATE loyalty.mission_contribution k SET rolled_back_at = at
		WHERE k.customer_id = customer_id AND k.mission_id = c.mission_id AND k.source_ref = order_ref;
		a.progress := a.progress - c.delta;
		IF a.status = 'completed' AND a.progress < c.m_target AND at < a.pending_until THEN
			IF a.reward_points > 0 THEN
				PERFORM loyalty.points_reverse(customer_id,
											   loyalty._mission_reference(customer_id, c.mission_id, a.attempt, a.undone), at => at);
			END IF;
			a.status := 'active';
			a.undone := a.undone + 1;
			a.completed_at := NULL; a.completed_by := NULL; a.reward_points := NULL; a.pending_until := NULL;
		END IF;
		UPDATE loyalty.mission_attempt x
		SET progress = a.progress, status = a.status, undone = a.undone, completed_at = a.completed_at,
			completed_by = a.completed_by, reward_points = a.reward_points, pending_until = a.pending_until
		WHERE x.customer_id = customer_id AND x.mission_id = c.mission_id AND x.attempt = c.attempt;
		mission_id := c.mission_id; attempt := a.attempt; progress := a.progress;
		target := c.m_target; status := a.status;
		RETURN NEXT;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_refund_apply(text, text, timestamptz) IS
	'Internal: take back what an order or event reference added to missions, undoing a completion whose reward is still pending (mission_refund and the fold of tracked orders)';

/*
 * A refund the app reports: the customer's tracked orders not yet counted
 * are folded first, then the reference is taken back
 * (_mission_refund_apply).  Idempotent.
 */
CREATE FUNCTION loyalty.mission_refund(customer_id text, order_ref text,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, attempt integer, progress numeric, target numeric, status text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, customer_id);
	PERFORM loyalty._mission_fold(customer_id);
	RETURN QUERY SELECT * FROM loyalty._mission_refund_apply(customer_id, order_ref, at);
END;
$$;

COMMENT ON FUNCTION loyalty.mission_refund(text, text, timestamptz) IS
	'Take back what an order (or event reference) added to missions; a completion whose reward is still pending is undone (reward reversed); idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_refund(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The reference a tracked order counts under: tracked:<order time, UTC,
 * to the microsecond>:<amount>#<n>, n telling apart equal orders of the
 * customer (a tracked table names no order id).
 */
CREATE FUNCTION loyalty._mission_tracked_ref(at timestamptz, amount numeric)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.concat('tracked:', pg_catalog.to_char(pg_catalog.timezone('UTC', $1), 'YYYYMMDDHH24MISSUS'),
							 ':', $2::text)
$$;

COMMENT ON FUNCTION loyalty._mission_tracked_ref(timestamptz, numeric) IS
	'Internal: the reference prefix of a tracked order in mission contributions (tracked:<UTC time>:<amount>, then #n)';

/*
 * Fold the customer's tracked orders not yet counted (the rows of
 * loyalty.mission_order_delta this snapshot sees, deleted as they are
 * read) into the missions and the customer's referral, in the order they
 * were written: an order counts as mission_order would count it (at its
 * order time, reference tracked:<time>:<amount>#n, a new n per equal
 * order) and, for a referee not converted yet, as referral_order; a
 * removed order (-1) takes back the latest counted equal order as
 * mission_refund would, and the referral's qualifying order as
 * referral_refund, at the time of the statement that removed it.  Rows of transactions in
 * flight wait for the next fold.  Under the customer's mission lock.
 * Returns the rows folded.
 */
CREATE FUNCTION loyalty._mission_fold(customer_id text)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	d record;
	last_at timestamptz;
	base text;
	k integer;
	oref text;
	n integer := 0;
BEGIN
	SELECT pg_catalog.max(x.ordered_at) INTO last_at
	FROM loyalty.mission_order_delta x WHERE x.customer_id = customer_id;
	IF last_at IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM loyalty._mission_lock(customer_id, last_at);
	FOR d IN WITH taken AS (DELETE FROM loyalty.mission_order_delta x WHERE x.customer_id = customer_id
							RETURNING x.ordered_at, x.amount, x.categories, x.sign, x.logged_at)
			 SELECT t.* FROM taken t ORDER BY t.logged_at, t.sign, t.ordered_at, t.amount
	LOOP
		n := n + 1;
		base := loyalty._mission_tracked_ref(d.ordered_at, d.amount) || '#';
		IF d.sign > 0 THEN
			SELECT COALESCE(pg_catalog.max(pg_catalog.substr(c.source_ref, pg_catalog.length(base) + 1)::integer), 0) + 1
			INTO k FROM loyalty.mission_contribution c
			WHERE c.customer_id = customer_id AND pg_catalog.starts_with(c.source_ref, base);
			-- a referee's first qualifying purchase (referral family; first:
			-- the referral row is locked before the points accounts)
			IF EXISTS (SELECT 1 FROM loyalty.referral r WHERE r.customer_id = customer_id AND r.status = 'joined') THEN
				PERFORM loyalty.referral_order(customer_id, base || k, d.amount, at => d.ordered_at);
			END IF;
			PERFORM loyalty._mission_order_apply(customer_id, base || k, d.amount, d.ordered_at, d.categories);
		ELSE
			SELECT pg_catalog.max(pg_catalog.substr(c.source_ref, pg_catalog.length(base) + 1)::integer)
			INTO k FROM loyalty.mission_contribution c
			WHERE c.customer_id = customer_id AND pg_catalog.starts_with(c.source_ref, base)
			  AND c.rolled_back_at IS NULL;
			SELECT r.order_ref INTO oref FROM loyalty.referral r
			WHERE r.customer_id = customer_id AND r.status = 'converted' AND pg_catalog.starts_with(r.order_ref, base);
			IF FOUND THEN
				PERFORM loyalty.referral_refund(customer_id, oref, at => d.logged_at);
			END IF;
			IF k IS NOT NULL THEN
				PERFORM loyalty._mission_refund_apply(customer_id, base || k, d.logged_at);
			END IF;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty._mission_fold(text) IS
	'Internal: count the customer''s tracked orders not yet counted for missions (and take back the removed ones), in the order they were written';

/*
 * Fold the tracked orders not yet counted for missions: of one customer,
 * or (customer_id => NULL, the default) of every customer, one after the
 * other in customer order.  What a periodic job runs so that completions
 * and their pending rewards follow the orders without waiting for a
 * reader; mission_progress, mission_order and mission_refund fold their
 * customer themselves.  Returns the tracked rows folded.
 */
CREATE FUNCTION loyalty.mission_fold(customer_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	c text;
	n bigint := 0;
BEGIN
	IF customer_id IS NOT NULL THEN
		RETURN loyalty._mission_fold(customer_id);
	END IF;
	FOR c IN SELECT DISTINCT x.customer_id FROM loyalty.mission_order_delta x ORDER BY 1 LOOP
		n := n + loyalty._mission_fold(c);
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_fold(text) IS
	'Count the tracked orders not yet counted for missions (completions, rewards, refunds), of one customer or of all (customer_id => NULL); returns the tracked rows folded';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_fold(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.mission_fold(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Progress of a customer on every open mission ("2 of 3 orders, 12 days
 * left"): the current attempt, or 0 of the target when none started.
 * The customer's tracked orders not yet counted are folded first (not in a
 * read-only transaction: there the progress is that of the last fold).
 */
CREATE FUNCTION loyalty.mission_progress(customer_id text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (mission_id text, description text, attempt integer, progress numeric, target numeric,
			   status text, ends_at timestamptz, days_left integer, message text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	-- the customer's pending tracked orders folded first (not possible in
	-- a read-only transaction: then the progress as last folded)
	IF NOT pg_catalog.current_setting('transaction_read_only')::boolean THEN
		PERFORM loyalty._mission_fold($1);
	END IF;
	-- PL/pgSQL, not SQL: Citus plans a query with parameters of an SQL
	-- function on distributed tables only in PL/pgSQL
	RETURN QUERY
	SELECT m.mission_id, m.description, a.attempt,
		   COALESCE(p.progress, 0), m.target, COALESCE(p.status, 'not_started'),
		   p.ends_at,
		   CASE WHEN p.ends_at IS NOT NULL
				THEN GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer) END,
		   pg_catalog.format('%s of %s %s%s',
				  COALESCE(p.progress, 0)::text, m.target::text,
				  CASE m.kind WHEN 'orders' THEN 'orders' WHEN 'spend' THEN 'spent'
							  WHEN 'streak' THEN 'months in a row' ELSE m.event || 's' END,
				  CASE WHEN p.status = 'completed' THEN ', completed'
					   WHEN p.ends_at IS NOT NULL
					   THEN pg_catalog.format(', %s days left',
							   GREATEST(0, pg_catalog.ceil(pg_catalog.date_part('epoch', p.ends_at - $2) / 86400)::integer))
					   ELSE '' END)
	FROM loyalty.mission m
	LEFT JOIN LATERAL (SELECT x.* FROM loyalty.mission_attempt x
					   WHERE x.customer_id = $1 AND x.mission_id = m.mission_id
					   ORDER BY x.attempt DESC LIMIT 1) a ON true
	LEFT JOIN LATERAL (SELECT a.progress, a.ends_at,
							  CASE WHEN a.status = 'active' AND a.ends_at <= $2 THEN 'expired' ELSE a.status END AS status) p
		   ON a.attempt IS NOT NULL
	WHERE m.active AND (m.ends_at IS NULL OR $2 < m.ends_at)
	  AND (m.activation = 'automatic'
		   OR EXISTS (SELECT 1 FROM loyalty.mission_optin o WHERE o.customer_id = $1 AND o.mission_id = m.mission_id))
	ORDER BY m.mission_id;
END;
$$;

COMMENT ON FUNCTION loyalty.mission_progress(text, timestamptz) IS
	'Progress of a customer on every open mission (automatic, or opted in): attempt, progress of target, status, days left, and a message such as "2 of 3 orders, 12 days left"';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.mission_progress(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.mission_stats AS
SELECT m.mission_id, m.kind, m.target,
	   pg_catalog.count(DISTINCT a.customer_id) AS customers,
	   pg_catalog.count(a.attempt) AS started,
	   pg_catalog.count(a.attempt) FILTER (WHERE a.status = 'completed') AS completed,
	   CASE WHEN pg_catalog.count(a.attempt) > 0
			THEN pg_catalog.round(pg_catalog.count(a.attempt) FILTER (WHERE a.status = 'completed')::numeric
								  / pg_catalog.count(a.attempt), 4) END AS completion_rate,
	   COALESCE(pg_catalog.sum(a.undone), 0)::bigint AS undone,
	   COALESCE(pg_catalog.sum(a.reward_points) FILTER (WHERE a.status = 'completed'), 0)::bigint AS points_cost
FROM loyalty.mission m
LEFT JOIN loyalty.mission_attempt a ON a.mission_id = m.mission_id
GROUP BY m.mission_id, m.kind, m.target;

COMMENT ON VIEW loyalty.mission_stats IS
	'Per mission: customers, attempts started and completed, completion rate, completions undone by refunds, points cost';
COMMENT ON COLUMN loyalty.mission_stats.mission_id IS 'The mission';
COMMENT ON COLUMN loyalty.mission_stats.kind IS 'orders, spend, streak or event';
COMMENT ON COLUMN loyalty.mission_stats.target IS 'The target';
COMMENT ON COLUMN loyalty.mission_stats.customers IS 'Customers with an attempt';
COMMENT ON COLUMN loyalty.mission_stats.started IS 'Attempts started';
COMMENT ON COLUMN loyalty.mission_stats.completed IS 'Attempts completed (not undone)';
COMMENT ON COLUMN loyalty.mission_stats.completion_rate IS 'completed / started';
COMMENT ON COLUMN loyalty.mission_stats.undone IS 'Completions undone by refunds';
COMMENT ON COLUMN loyalty.mission_stats.points_cost IS 'Reward points of the completed attempts';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.mission_stats'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.mission_stats'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
