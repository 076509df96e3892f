
/* ---------------------------------------------------------------------------
 * referral.sql: referral programs (doc/referrals.md)
 *
 * A referrer gets a personal code of a program (loyalty.coupon_code, random
 * with check characters, or a vanity word), created on demand and
 * idempotently.  A friend (the referee) joins with a code: one referrer per
 * referee, ever.  The referee's first qualifying purchase, reported by
 * referral_order (from the app's checkout or from a trigger of its own on
 * the orders table) or seen by the order tracking, rewards both sides with
 * points through the points ledger and coupons, pending until the return
 * window closes; referral_refund takes the rewards back when that order is
 * refunded.
 *
 * Abuse rules, each refused with a reason (SQLSTATE LR0nn, DETAIL a JSON
 * object with "reason" first): self-referral by customer key and by the
 * normalised identifiers the app passes, an identifier already used by
 * another customer, caps per referrer (per period and lifetime), a minimum
 * order amount, new customers only, a referrer in good standing.
 *
 * Citus (doc/referrals.md#citus): every per-customer table is keyed by
 * (customer_id COLLATE "C", ...): referral_code by the referrer,
 * referral by the referee (so "one referrer per referee" is the primary
 * key of a single-shard row), referral_period by the referrer.  The two
 * global uniqueness facts cannot be keyed by a customer: a code belongs to
 * one referrer (referral_code_key, keyed and distributed by the code) and
 * an identifier to one customer (referral_claim, keyed and distributed by
 * (kind, digest)); each is a one-row, single-shard insert routed by its key
 * inside the call's distributed transaction, exactly as points_reference.
 * Caps are counters on the referrer's own rows (referral_code.converted,
 * referral_period), never a count across shards.  The configuration tables
 * can be reference tables (referral_program's only trigger, added by
 * mission.sql, announces a change to the order feed's cache and refuses
 * nothing).
 *
 * Rewards: points (pending until the return window closes), and coupons
 * of the coupon family bound to the referrer or the referee
 * (referral_coupon: pending until the window closes, issued by
 * referral_settle) and the referee's first-order discount (a code bound
 * to the referee, issued at the join); a refund cancels the pending ones
 * and voids the codes.  The first qualifying purchase is reported by
 * referral_order, or seen by the order tracking (the tracking trigger's
 * order feed, folded by mission.sql's _mission_fold).
 *
 * Locks, always in this order: the referee's referral row, then the
 * referrer's referral_code row, then identifier claims sorted by (kind,
 * digest), then the points accounts (points_earn / points_reverse).
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.referral_program (
	program				text COLLATE "C" PRIMARY KEY
		CONSTRAINT referral_program_program_check CHECK (pg_catalog.octet_length(program) BETWEEN 1 AND 64),
	active				boolean NOT NULL DEFAULT true,
	code_pattern		text NOT NULL DEFAULT 'REF-####-####',
	referrer_points		bigint NOT NULL DEFAULT 0 CHECK (referrer_points >= 0),
	referee_points		bigint NOT NULL DEFAULT 0 CHECK (referee_points >= 0),
	return_window_days	integer NOT NULL DEFAULT 30 CHECK (return_window_days BETWEEN 0 AND 3660),
	min_order_amount	numeric NOT NULL DEFAULT 0 CHECK (min_order_amount >= 0),
	new_customers_only	boolean NOT NULL DEFAULT true,
	referrer_min_orders	integer NOT NULL DEFAULT 0 CHECK (referrer_min_orders >= 0),
	referrer_no_debt	boolean NOT NULL DEFAULT true,
	cap_lifetime		integer CHECK (cap_lifetime > 0),
	cap_per_period		integer CHECK (cap_per_period > 0),
	cap_period			text NOT NULL DEFAULT 'month'
		CONSTRAINT referral_program_cap_period_check CHECK (cap_period IN ('day', 'week', 'month', 'quarter', 'year')),
	point_value			numeric CHECK (point_value >= 0),
	created_at			timestamptz NOT NULL DEFAULT pg_catalog.now(),
	referrer_campaign_id	bigint,
	referee_campaign_id		bigint,
	first_order_campaign_id	bigint,
	coupon_pattern		text NOT NULL DEFAULT 'RWD-####-####'
);

COMMENT ON TABLE loyalty.referral_program IS
	'Referral programs (configuration): code pattern, rewards, return window, abuse rules; no trigger, can be a Citus reference table';
COMMENT ON COLUMN loyalty.referral_program.program IS 'Program name (1 to 64 bytes), passed to referral_code';
COMMENT ON COLUMN loyalty.referral_program.active IS 'False: no new code, join or conversion (existing rewards stay)';
COMMENT ON COLUMN loyalty.referral_program.code_pattern IS 'Pattern of generated codes (loyalty.random_codes: # = random character, check characters appended)';
COMMENT ON COLUMN loyalty.referral_program.referrer_points IS 'Points for the referrer per successful referral, unless a row of loyalty.referral_reward_tier gives more for its rank';
COMMENT ON COLUMN loyalty.referral_program.referee_points IS 'Points for the referee on the first qualifying purchase';
COMMENT ON COLUMN loyalty.referral_program.return_window_days IS 'Rewards stay pending this many days after the qualifying order (the return window)';
COMMENT ON COLUMN loyalty.referral_program.min_order_amount IS 'A purchase below this amount does not qualify (a later one may)';
COMMENT ON COLUMN loyalty.referral_program.new_customers_only IS 'Refuse a referee who already has orders (tracked statistics or purchase earnings)';
COMMENT ON COLUMN loyalty.referral_program.referrer_min_orders IS 'Good standing: the referrer has at least this many orders (0: no condition)';
COMMENT ON COLUMN loyalty.referral_program.referrer_no_debt IS 'Good standing: the referrer owes no points (points_account.debt = 0)';
COMMENT ON COLUMN loyalty.referral_program.cap_lifetime IS 'At most this many rewarded referrals per referrer, ever (NULL: no cap; revoked ones do not count)';
COMMENT ON COLUMN loyalty.referral_program.cap_per_period IS 'At most this many rewarded referrals per referrer per cap_period (NULL: no cap)';
COMMENT ON COLUMN loyalty.referral_program.cap_period IS 'Calendar period of cap_per_period in the program time zone: day, week, month, quarter or year';
COMMENT ON COLUMN loyalty.referral_program.point_value IS 'Money value of one point, for the cost and ROI of loyalty.referral_kpi (NULL: unknown)';
COMMENT ON COLUMN loyalty.referral_program.created_at IS 'When the program was created';
COMMENT ON COLUMN loyalty.referral_program.referrer_campaign_id IS 'Coupon campaign of a code bound to the referrer per successful referral, issued when the return window closes (NULL: none)';
COMMENT ON COLUMN loyalty.referral_program.referee_campaign_id IS 'Coupon campaign of a code bound to the referee on the first qualifying purchase, issued when the return window closes (NULL: none)';
COMMENT ON COLUMN loyalty.referral_program.first_order_campaign_id IS 'Coupon campaign of the referee''s first-order discount: a single-use code bound to the referee, issued at the join (NULL: none; give the campaign new_customers_only)';
COMMENT ON COLUMN loyalty.referral_program.coupon_pattern IS 'Pattern of the coupon reward codes (loyalty.random_codes)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_program'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_program'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_program'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral_reward_tier (
	program			text COLLATE "C" NOT NULL,
	from_count		integer NOT NULL CHECK (from_count >= 1),
	referrer_points	bigint NOT NULL CHECK (referrer_points >= 0),
	PRIMARY KEY (program, from_count)
);

COMMENT ON TABLE loyalty.referral_reward_tier IS
	'Rising referrer rewards: the n-th successful referral of a referrer earns the points of the tier with the greatest from_count <= n (configuration)';
COMMENT ON COLUMN loyalty.referral_reward_tier.program IS 'The program (loyalty.referral_program.program)';
COMMENT ON COLUMN loyalty.referral_reward_tier.from_count IS 'From the n-th successful referral on (1 = the first friend)';
COMMENT ON COLUMN loyalty.referral_reward_tier.referrer_points IS 'Points for the referrer for each referral from that rank on';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_reward_tier'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_reward_tier'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_reward_tier'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral_code (
	customer_id		text COLLATE "C" NOT NULL,
	program			text COLLATE "C" NOT NULL,
	code			loyalty.coupon_code NOT NULL,
	kind			text NOT NULL,
	converted		integer NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (customer_id, program)
);

COMMENT ON TABLE loyalty.referral_code IS
	'Personal referral code of each referrer and program, with the referrer''s count of rewarded referrals (the lifetime cap and the reward rank)';
COMMENT ON COLUMN loyalty.referral_code.customer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_code.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_code.code IS 'The code (unique across programs: loyalty.referral_code_key)';
COMMENT ON COLUMN loyalty.referral_code.kind IS 'generated (random, check characters) or vanity';
COMMENT ON COLUMN loyalty.referral_code.converted IS 'Rewarded referrals not revoked';
COMMENT ON COLUMN loyalty.referral_code.created_at IS 'When the code was created';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_code'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_code'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_code'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * A code belongs to one referrer: keyed (and on Citus distributed) by the
 * code, the documented exception to per-customer keys, as points_reference.
 */
CREATE TABLE loyalty.referral_code_key (
	code			loyalty.coupon_code PRIMARY KEY,
	customer_id		text COLLATE "C" NOT NULL,
	program			text COLLATE "C" NOT NULL
);

COMMENT ON TABLE loyalty.referral_code_key IS
	'Owner of every referral code (one referrer per code, by primary key; Citus: distributed by code)';
COMMENT ON COLUMN loyalty.referral_code_key.code IS 'The code (compared normalised: case, separators, O/0, I/L/1)';
COMMENT ON COLUMN loyalty.referral_code_key.customer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_code_key.program IS 'The program of the code';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_code_key'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_code_key'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral (
	customer_id		text COLLATE "C" NOT NULL PRIMARY KEY,
	reference		text NOT NULL,
	program			text COLLATE "C" NOT NULL,
	referrer_id		text COLLATE "C" NOT NULL,
	code			loyalty.coupon_code NOT NULL,
	joined_at		timestamptz NOT NULL,
	status			text NOT NULL DEFAULT 'joined'
		CONSTRAINT referral_status_check CHECK (status IN ('joined', 'converted', 'refused', 'revoked')),
	reason			text,
	order_ref		text,
	order_amount	numeric,
	converted_at	timestamptz,
	pending_until	timestamptz,
	rank			integer,
	referrer_points	bigint,
	referee_points	bigint,
	revoked_at		timestamptz
);

COMMENT ON TABLE loyalty.referral IS
	'One row per referee, ever (primary key): who referred them, and the fate of their first qualifying purchase';
COMMENT ON COLUMN loyalty.referral.customer_id IS 'The referee (the friend who joined)';
COMMENT ON COLUMN loyalty.referral.reference IS 'The caller reference of the join (a repeat returns the join)';
COMMENT ON COLUMN loyalty.referral.program IS 'The program of the code';
COMMENT ON COLUMN loyalty.referral.referrer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral.code IS 'The code the referee joined with';
COMMENT ON COLUMN loyalty.referral.joined_at IS 'Business time of the join';
COMMENT ON COLUMN loyalty.referral.status IS 'joined (no qualifying purchase yet), converted (rewarded; pending until pending_until), refused (the purchase was refused, see reason), revoked (the qualifying order was refunded)';
COMMENT ON COLUMN loyalty.referral.reason IS 'Why the conversion was refused (referrer_cap_lifetime, referrer_cap_period, referrer_not_in_good_standing)';
COMMENT ON COLUMN loyalty.referral.order_ref IS 'The qualifying (or refused) order';
COMMENT ON COLUMN loyalty.referral.order_amount IS 'Its amount';
COMMENT ON COLUMN loyalty.referral.converted_at IS 'Business time of that order';
COMMENT ON COLUMN loyalty.referral.pending_until IS 'End of the return window: the rewards are pending until then';
COMMENT ON COLUMN loyalty.referral.rank IS 'This referral is the rank-th rewarded one of the referrer (reward tier)';
COMMENT ON COLUMN loyalty.referral.referrer_points IS 'Points credited to the referrer (reference referral:<referee>:referrer)';
COMMENT ON COLUMN loyalty.referral.referee_points IS 'Points credited to the referee (reference referral:<referee>:referee)';
COMMENT ON COLUMN loyalty.referral.revoked_at IS 'Business time of the refund that revoked the rewards';

CREATE INDEX referral_referrer_idx ON loyalty.referral (referrer_id, program);

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.referral_period (
	customer_id		text COLLATE "C" NOT NULL,
	program			text COLLATE "C" NOT NULL,
	period_start	date NOT NULL,
	converted		integer NOT NULL DEFAULT 0,
	PRIMARY KEY (customer_id, program, period_start)
);

COMMENT ON TABLE loyalty.referral_period IS
	'Rewarded referrals (not revoked) per referrer, program and cap period: the per-period cap';
COMMENT ON COLUMN loyalty.referral_period.customer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_period.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_period.period_start IS 'First day of the cap period (program time zone)';
COMMENT ON COLUMN loyalty.referral_period.converted IS 'Rewarded referrals of the period not revoked';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_period'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_period'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * An identifier (normalised email, phone digits, device or payment
 * fingerprint) belongs to the first customer who gave it to a referral
 * call: keyed (and on Citus distributed) by (kind, digest).  Only digests
 * are kept (SHA-256 of the normalised value), never the value.
 */
CREATE TABLE loyalty.referral_claim (
	kind			text NOT NULL
		CONSTRAINT referral_claim_kind_check CHECK (kind IN ('email', 'phone', 'device', 'payment')),
	digest			bytea NOT NULL,
	customer_id		text COLLATE "C" NOT NULL,
	claimed_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (kind, digest)
);

COMMENT ON TABLE loyalty.referral_claim IS
	'Owner of every identifier given to a referral call (one customer per identifier, by primary key; Citus: distributed by digest); SHA-256 digests only';
COMMENT ON COLUMN loyalty.referral_claim.kind IS 'email, phone, device or payment';
COMMENT ON COLUMN loyalty.referral_claim.digest IS 'SHA-256 of the normalised identifier (loyalty.referral_normalize)';
COMMENT ON COLUMN loyalty.referral_claim.customer_id IS 'The customer who gave it first';
COMMENT ON COLUMN loyalty.referral_claim.claimed_at IS 'When';

CREATE INDEX referral_claim_customer_idx ON loyalty.referral_claim (customer_id);

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_claim'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_claim'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Coupon rewards of referrals (doc/referrals.md#coupon-rewards): a code
 * bound to the referrer or the referee per conversion, pending until the
 * return window closes (issued then by referral_settle), and the
 * first-order discount issued to the referee at the join.  Keyed by the
 * holder (customer_id).
 */
CREATE TABLE loyalty.referral_coupon (
	customer_id		text COLLATE "C" NOT NULL,
	referee_id		text COLLATE "C" NOT NULL,
	role			text NOT NULL
		CONSTRAINT referral_coupon_role_check CHECK (role IN ('referrer', 'referee', 'first_order')),
	program			text COLLATE "C" NOT NULL,
	campaign_id		bigint NOT NULL,
	status			text NOT NULL DEFAULT 'pending'
		CONSTRAINT referral_coupon_status_check CHECK (status IN ('pending', 'issued', 'cancelled', 'voided')),
	available_at	timestamptz,
	coupon_id		bigint,
	code			text,
	created_at		timestamptz NOT NULL,
	issued_at		timestamptz,
	cancelled_at	timestamptz,
	PRIMARY KEY (customer_id, referee_id, role)
);

CREATE INDEX referral_coupon_pending_idx ON loyalty.referral_coupon (available_at) WHERE status = 'pending';

COMMENT ON TABLE loyalty.referral_coupon IS
	'Coupon rewards of referrals: a code bound to the referrer or the referee, pending until the return window closes, and the referee''s first-order discount';
COMMENT ON COLUMN loyalty.referral_coupon.customer_id IS 'The holder of the code (the referrer or the referee)';
COMMENT ON COLUMN loyalty.referral_coupon.referee_id IS 'The referral (its referee)';
COMMENT ON COLUMN loyalty.referral_coupon.role IS 'referrer or referee (a reward of the conversion), first_order (the referee''s discount on the first order, issued at the join)';
COMMENT ON COLUMN loyalty.referral_coupon.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_coupon.campaign_id IS 'The coupon campaign of the code';
COMMENT ON COLUMN loyalty.referral_coupon.status IS 'pending (the return window is open: no code yet), issued (code bound to the holder), cancelled (the qualifying order was refunded while pending), voided (the code was voided by a refund)';
COMMENT ON COLUMN loyalty.referral_coupon.available_at IS 'End of the return window: referral_settle issues the code from then (NULL: at once)';
COMMENT ON COLUMN loyalty.referral_coupon.coupon_id IS 'The code issued (loyalty.coupon)';
COMMENT ON COLUMN loyalty.referral_coupon.code IS 'Its text';
COMMENT ON COLUMN loyalty.referral_coupon.created_at IS 'Business time of the join or conversion';
COMMENT ON COLUMN loyalty.referral_coupon.issued_at IS 'Business time the code was issued';
COMMENT ON COLUMN loyalty.referral_coupon.cancelled_at IS 'Business time of the refund that cancelled or voided it';

SELECT pg_catalog.pg_extension_config_dump('loyalty.referral_coupon'::pg_catalog.regclass, ''::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_coupon'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_coupon'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions */

/*
 * The normal form of an identifier, the one place its rules are written
 * (doc/referrals.md#identifiers).  email: trimmed, lower case, split at the
 * last @; the local part loses everything from the first + (plus tags);
 * for gmail.com and googlemail.com the dots of the local part are dropped
 * and googlemail.com becomes gmail.com.  phone: the digits only, a leading
 * 00 dropped (international prefix).  device, payment: trimmed, lower case
 * (the app passes a fingerprint hash).  NULL when nothing usable is left.
 */
CREATE FUNCTION loyalty.referral_normalize(kind text, value text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	v text := pg_catalog.lower(pg_catalog.btrim(value));
	at_pos integer;
	local text;
	domain text;
BEGIN
	IF kind = 'email' THEN
		at_pos := pg_catalog.length(v) - pg_catalog.strpos(pg_catalog.reverse(v), '@') + 1;
		IF pg_catalog.strpos(v, '@') = 0 THEN
			RETURN NULL;
		END IF;
		local := pg_catalog.substr(v, 1, at_pos - 1);
		domain := pg_catalog.substr(v, at_pos + 1);
		IF pg_catalog.strpos(local, '+') > 0 THEN
			local := pg_catalog.substr(local, 1, pg_catalog.strpos(local, '+') - 1);
		END IF;
		IF domain = 'googlemail.com' THEN
			domain := 'gmail.com';
		END IF;
		IF domain = 'gmail.com' THEN
			local := pg_catalog.replace(local, '.', '');
		END IF;
		IF local = '' OR domain = '' THEN
			RETURN NULL;
		END IF;
		RETURN local || '@' || domain;
	ELSIF kind = 'phone' THEN
		v := pg_catalog.regexp_replace(v, '[^0-9]', '', 'g');
		IF pg_catalog.left(v, 2) = '00' THEN
			v := pg_catalog.substr(v, 3);
		END IF;
		RETURN NULLIF(v, '');
	ELSIF kind IN ('device', 'payment') THEN
		RETURN NULLIF(v, '');
	END IF;
	RAISE EXCEPTION 'unknown identifier kind "%"', kind
		USING ERRCODE = 'invalid_parameter_value',
			  DETAIL = 'The kinds are email, phone, device and payment.';
END;
$$;

COMMENT ON FUNCTION loyalty.referral_normalize(text, text) IS
	'Normal form of a referral identifier: email (lower case, plus tags dropped, gmail dots dropped), phone (digits, leading 00 dropped), device / payment (trimmed, lower case); NULL when nothing is left';
SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.referral_normalize(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The identifiers of a call as (kind, digest) pairs, sorted (the lock
 * order of claims); refuses a given identifier that normalises to nothing.
 */
CREATE FUNCTION loyalty._referral_identifiers(email text, phone text, device_hash text, payment_hash text)
RETURNS TABLE (kind text, digest bytea)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	k text;
	raw text;
	norm text;
BEGIN
	FOR k, raw IN SELECT * FROM (VALUES ('device'::text, device_hash), ('email'::text, email),
									   ('payment'::text, payment_hash), ('phone'::text, phone)) AS v(k, raw)
	LOOP
		CONTINUE WHEN raw IS NULL;
		norm := loyalty.referral_normalize(k, raw);
		IF norm IS NULL THEN
			RAISE EXCEPTION 'invalid % identifier', k
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = pg_catalog.format('The %s given normalises to nothing (doc/referrals.md, identifiers).', k);
		END IF;
		kind := k;
		digest := pg_catalog.sha256(pg_catalog.convert_to(norm, 'UTF8'));
		RETURN NEXT;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_identifiers(text, text, text, text) IS
	'Internal: the (kind, SHA-256 digest) pairs of the identifiers given, sorted by kind';

/*
 * Claim identifiers for a customer, in (kind, digest) order; returns the
 * first one already owned by another customer (NULL kind when none).  A
 * concurrent claim of the same identifier waits on the primary key and
 * then reads the owner (ON CONFLICT DO UPDATE returns the row it locked).
 */
CREATE FUNCTION loyalty._referral_claim(customer_id text, email text, phone text, device_hash text,
										payment_hash text, OUT kind text, OUT owner text)
RETURNS record
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	id record;
	who text;
BEGIN
	FOR id IN SELECT * FROM loyalty._referral_identifiers(email, phone, device_hash, payment_hash) i
			  ORDER BY i.kind, i.digest
	LOOP
		INSERT INTO loyalty.referral_claim AS c (kind, digest, customer_id)
		VALUES (id.kind, id.digest, _referral_claim.customer_id)
		ON CONFLICT ON CONSTRAINT referral_claim_pkey DO UPDATE SET customer_id = c.customer_id
		RETURNING c.customer_id INTO who;
		IF who OPERATOR(pg_catalog.<>) _referral_claim.customer_id AND owner IS NULL THEN
			kind := id.kind;
			owner := who;
		END IF;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_claim(text, text, text, text, text) IS
	'Internal: claim identifiers for a customer; the first kind owned by another customer, and that owner';

/* The program time zone (no settings row: UTC). */
CREATE FUNCTION loyalty._referral_zone()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT COALESCE((SELECT s.timezone FROM loyalty.settings s), 'UTC'::text)
$$;

COMMENT ON FUNCTION loyalty._referral_zone() IS 'Internal: the program time zone';

/*
 * Orders a customer has made: the tracked statistics (folded and pending)
 * or the purchase earnings of the ledger, whichever counts more.
 */
CREATE FUNCTION loyalty._referral_orders(customer_id text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tracked bigint;
	pending bigint;
	earned bigint;
BEGIN
	-- one table per statement: on Citus the statistics are distributed and
	-- a statement may not mix them with tables kept on the coordinator
	SELECT s.order_count INTO tracked FROM loyalty.customer_stats s
	WHERE s.customer_id OPERATOR(pg_catalog.=) _referral_orders.customer_id;
	SELECT pg_catalog.sum(d.order_count)::bigint INTO pending FROM loyalty.customer_stats_delta d
	WHERE d.customer_id OPERATOR(pg_catalog.=) _referral_orders.customer_id;
	SELECT pg_catalog.count(*) INTO earned FROM loyalty.points_ledger e
	WHERE e.customer_id OPERATOR(pg_catalog.=) _referral_orders.customer_id
	  AND e.kind OPERATOR(pg_catalog.=) 'earn' AND e.amount IS NOT NULL;
	RETURN GREATEST(COALESCE(tracked, 0::bigint) OPERATOR(pg_catalog.+) COALESCE(pending, 0::bigint),
					earned);
END;
$$;

COMMENT ON FUNCTION loyalty._referral_orders(text) IS
	'Internal: orders of a customer (tracked statistics with pending changes, or purchase earnings of the ledger, whichever is greater)';

/*
 * Good standing of a referrer by the program's rules: NULL when in good
 * standing, else the rule failed (min_orders, debt).
 */
CREATE FUNCTION loyalty._referral_standing(referrer text, prog loyalty.referral_program)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF prog.referrer_no_debt AND EXISTS (SELECT 1 FROM loyalty.points_account a
										 WHERE a.customer_id OPERATOR(pg_catalog.=) referrer
										   AND a.debt OPERATOR(pg_catalog.>) 0) THEN
		RETURN 'debt';
	END IF;
	IF prog.referrer_min_orders OPERATOR(pg_catalog.>) 0
	   AND loyalty._referral_orders(referrer) OPERATOR(pg_catalog.<) prog.referrer_min_orders THEN
		RETURN 'min_orders';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_standing(text, loyalty.referral_program) IS
	'Internal: NULL when the referrer is in good standing by the program''s rules, else the rule failed (debt, min_orders)';

/*
 * The points references of a referral's two rewards:
 * referral:<referee>:referee and referral:<referee>:referrer, or with the
 * referee's id as SHA-256 hex when that would pass the 256-byte limit.
 */
CREATE FUNCTION loyalty._referral_reference(referee text, side text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT 'referral:' OPERATOR(pg_catalog.||)
		   CASE WHEN pg_catalog.octet_length($1) OPERATOR(pg_catalog.<=) 230 THEN $1
				ELSE pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to($1, 'UTF8')), 'hex') END
		   OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) $2
$$;

COMMENT ON FUNCTION loyalty._referral_reference(text, text) IS
	'Internal: points reference of a referral reward (referral:<referee>:referee or :referrer)';

/* The program row, or LR002 program_inactive (state missing / inactive). */
CREATE FUNCTION loyalty._referral_program(program text)
RETURNS loyalty.referral_program
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	prog loyalty.referral_program;
BEGIN
	SELECT p.* INTO prog FROM loyalty.referral_program p WHERE p.program = _referral_program.program;
	IF NOT FOUND OR NOT prog.active THEN
		RAISE EXCEPTION 'referral program "%" is not active', program
			USING ERRCODE = 'LR002',
				  DETAIL = pg_catalog.json_build_object('reason', 'program_inactive', 'program', program,
								  'state', CASE WHEN prog.program IS NULL THEN 'missing' ELSE 'inactive' END)::text;
	END IF;
	RETURN prog;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_program(text) IS
	'Internal: the active program of that name, or LR002 program_inactive';

/*
 * The referrer's personal code of a program, created on the first call
 * (random from the program's code_pattern, or the vanity word given) and
 * returned by every later one.  The identifiers given are claimed for the
 * referrer (so a referee giving one of them is a self-referral); one owned
 * by another customer is left to its owner.
 */
CREATE FUNCTION loyalty.referral_code(customer_id text, program text,
									  vanity text DEFAULT NULL,
									  email text DEFAULT NULL, phone text DEFAULT NULL,
									  device_hash text DEFAULT NULL, payment_hash text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	p_customer text := customer_id;
	prog loyalty.referral_program;
	existing loyalty.referral_code;
	wanted loyalty.coupon_code;
	candidate loyalty.coupon_code;
	tries integer := 0;
	done boolean := false;
BEGIN
	IF p_customer IS NULL OR program IS NULL THEN
		RAISE EXCEPTION 'customer_id and program must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	prog := loyalty._referral_program(program);
	IF vanity IS NOT NULL THEN
		wanted := loyalty.vanity_code(vanity);
	END IF;
	PERFORM loyalty._referral_claim(p_customer, email, phone, device_hash, payment_hash);

	SELECT c.* INTO existing FROM loyalty.referral_code c
	WHERE c.customer_id = p_customer AND c.program = prog.program;
	IF FOUND THEN
		IF wanted IS NOT NULL AND NOT existing.code OPERATOR(loyalty.=) wanted THEN
			RAISE EXCEPTION 'customer "%" already has referral code % in program "%"', p_customer, existing.code::text, prog.program
				USING ERRCODE = 'LR009',
					  DETAIL = pg_catalog.json_build_object('reason', 'code_exists', 'program', prog.program,
									  'code', existing.code::text)::text;
		END IF;
		RETURN existing.code::text;
	END IF;

	WHILE NOT done LOOP
		tries := tries + 1;
		IF wanted IS NOT NULL THEN
			candidate := wanted;
		ELSE
			SELECT r INTO candidate FROM loyalty.random_codes(prog.code_pattern, 1) r;
		END IF;
		INSERT INTO loyalty.referral_code_key AS k (code, customer_id, program)
		VALUES (candidate, p_customer, prog.program)
		ON CONFLICT ON CONSTRAINT referral_code_key_pkey DO NOTHING;
		done := FOUND;
		IF NOT done AND (wanted IS NOT NULL OR tries >= 10) THEN
			RAISE EXCEPTION 'referral code % is taken', candidate::text
				USING ERRCODE = 'LR009',
					  DETAIL = pg_catalog.json_build_object('reason', 'code_taken', 'program', prog.program,
									  'code', candidate::text)::text,
					  HINT = 'Choose another vanity word, or a pattern with more random characters.';
		END IF;
	END LOOP;

	-- a concurrent first call of this referrer may have won: keep its code
	INSERT INTO loyalty.referral_code AS c (customer_id, program, code, kind)
	VALUES (p_customer, prog.program, candidate, CASE WHEN wanted IS NULL THEN 'generated' ELSE 'vanity' END)
	ON CONFLICT ON CONSTRAINT referral_code_pkey DO NOTHING;
	IF NOT FOUND THEN
		DELETE FROM loyalty.referral_code_key k WHERE k.code OPERATOR(loyalty.=) candidate;
		SELECT c.* INTO STRICT existing FROM loyalty.referral_code c
		WHERE c.customer_id = p_customer AND c.program = prog.program;
		RETURN existing.code::text;
	END IF;
	RETURN candidate::text;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_code(text, text, text, text, text, text, text) IS
	'The referrer''s personal code of a program, created on the first call (random with check characters, or vanity => word) and returned by every later one; identifiers given are claimed for the referrer; LR002 program inactive, LR009 code taken or another code exists';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_code(text, text, text, text, text, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A friend joins with a code.  One referrer per referee, ever: the
 * referral row's primary key is the referee, so of two joins racing for one
 * referee the second waits and then repeats the first (same reference and
 * code) or is refused (LR004 already_referred).  The checks, in this order:
 * the code (LR001), the program (LR002), self-referral by customer key
 * (LR003), already referred (LR004, before every other check so that a
 * repeat returns the join even when the rules changed since), new customers
 * only (LR005), the referrer's good standing (LR006), the referrer's caps
 * (LR007), then the identifiers: one claimed by the referrer is a
 * self-referral (LR003), one claimed by any other customer is reused (LR008).
 * A refusal leaves nothing behind (no claim, no row).
 */
CREATE FUNCTION loyalty.referral_join(customer_id text, reference text, code text,
									  at timestamptz DEFAULT pg_catalog.now(),
									  email text DEFAULT NULL, phone text DEFAULT NULL,
									  device_hash text DEFAULT NULL, payment_hash text DEFAULT NULL,
									  OUT program text, OUT referrer_id text, OUT status text, OUT joined_at timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	p_reference text := reference;
	p_code loyalty.coupon_code;
	bad text;
	owner loyalty.referral_code_key;
	prog loyalty.referral_program;
	ref loyalty.referral;
	rc loyalty.referral_code;
	standing text;
	in_period integer;
	claim record;
	zone text;
BEGIN
	IF p_customer IS NULL OR p_reference IS NULL OR code IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, reference, code and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('reference'::text, p_reference);
	IF at > pg_catalog.now() + '5 minutes'::interval THEN
		RAISE EXCEPTION 'at must not lie in the future'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A business time may be at most 5 minutes ahead of the server clock.';
	END IF;

	bad := loyalty.coupon_code_check(code);
	IF bad IS NULL THEN
		p_code := code::loyalty.coupon_code;
		SELECT k.* INTO owner FROM loyalty.referral_code_key k WHERE k.code OPERATOR(loyalty.=) p_code;
	END IF;
	IF bad IS NOT NULL OR owner.code IS NULL THEN
		RAISE EXCEPTION 'unknown referral code "%"', code
			USING ERRCODE = 'LR001',
				  DETAIL = pg_catalog.json_build_object('reason', 'unknown_code', 'code', code,
								  'check', COALESCE(bad, 'not_found'))::text,
				  HINT = 'Check the code for typos.';
	END IF;

	-- a repeat returns the first join, whatever changed since
	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
	IF FOUND THEN
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	prog := loyalty._referral_program(owner.program);
	IF owner.customer_id = p_customer THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', 'customer_id')::text;
	END IF;
	IF prog.new_customers_only AND loyalty._referral_orders(p_customer) > 0 THEN
		RAISE EXCEPTION 'customer "%" is not a new customer', p_customer
			USING ERRCODE = 'LR005',
				  DETAIL = pg_catalog.json_build_object('reason', 'not_new_customer', 'program', prog.program)::text,
				  HINT = 'Only customers without orders can join with a referral code.';
	END IF;
	standing := loyalty._referral_standing(owner.customer_id, prog);
	IF standing IS NOT NULL THEN
		RAISE EXCEPTION 'the referrer of code "%" is not in good standing', code
			USING ERRCODE = 'LR006',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_not_in_good_standing', 'program', prog.program,
								  'rule', standing)::text;
	END IF;
	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = owner.customer_id AND c.program = prog.program;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
			USING ERRCODE = 'LR007',
				  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
								  'cap', 'lifetime', 'limit', prog.cap_lifetime, 'converted', rc.converted)::text;
	END IF;
	IF prog.cap_per_period IS NOT NULL THEN
		-- the zone first: on Citus a function reading a table may not run
		-- inside a statement on a distributed table
		zone := loyalty._referral_zone();
		SELECT p.converted INTO in_period FROM loyalty.referral_period p
		WHERE p.customer_id = owner.customer_id AND p.program = prog.program
		  AND p.period_start = pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(zone, at))::date;
		IF COALESCE(in_period, 0) >= prog.cap_per_period THEN
			RAISE EXCEPTION 'the referrer of code "%" reached the referral cap', code
				USING ERRCODE = 'LR007',
					  DETAIL = pg_catalog.json_build_object('reason', 'referrer_cap_reached', 'program', prog.program,
									  'cap', 'period', 'limit', prog.cap_per_period, 'converted', in_period)::text;
		END IF;
	END IF;

	INSERT INTO loyalty.referral AS r (customer_id, reference, program, referrer_id, code, joined_at)
	VALUES (p_customer, p_reference, prog.program, owner.customer_id, owner.code, at)
	ON CONFLICT ON CONSTRAINT referral_pkey DO NOTHING;
	IF NOT FOUND THEN
		-- a concurrent join of this referee committed first
		SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'could not serialize access due to a concurrent join'
				USING ERRCODE = 'serialization_failure',
					  DETAIL = 'Another transaction joined this customer after this transaction''s snapshot.';
		END IF;
		IF ref.reference = p_reference AND ref.code OPERATOR(loyalty.=) p_code THEN
			program := ref.program; referrer_id := ref.referrer_id; status := ref.status; joined_at := ref.joined_at;
			RETURN;
		END IF;
		RAISE EXCEPTION 'customer "%" was already referred', p_customer
			USING ERRCODE = 'LR004',
				  DETAIL = pg_catalog.json_build_object('reason', 'already_referred', 'program', ref.program,
								  'same_referrer', ref.referrer_id = owner.customer_id)::text,
				  HINT = 'A customer can join a referral program once.';
	END IF;

	claim := loyalty._referral_claim(p_customer, email, phone, device_hash, payment_hash);
	IF claim.owner = owner.customer_id THEN
		RAISE EXCEPTION 'customer "%" cannot use their own referral code', p_customer
			USING ERRCODE = 'LR003',
				  DETAIL = pg_catalog.json_build_object('reason', 'self_referral', 'by', claim.kind)::text;
	ELSIF claim.owner IS NOT NULL THEN
		RAISE EXCEPTION 'the % given is already used by another customer', claim.kind
			USING ERRCODE = 'LR008',
				  DETAIL = pg_catalog.json_build_object('reason', 'identifier_reused', 'kind', claim.kind)::text;
	END IF;

	-- the first-order discount: a code bound to the referee, at once
	IF prog.first_order_campaign_id IS NOT NULL THEN
		PERFORM loyalty._referral_coupon_add(p_customer, p_customer, 'first_order', prog, at, NULL);
	END IF;
	program := prog.program; referrer_id := owner.customer_id; status := 'joined'; joined_at := at;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_join(text, text, text, timestamptz, text, text, text, text) IS
	'A friend joins with a referral code (one referrer per referee, ever; a repeat with the same reference and code returns the join); LR001 unknown code, LR002 program inactive, LR003 self-referral, LR004 already referred, LR005 not a new customer, LR006 referrer not in good standing, LR007 referrer cap reached, LR008 identifier reused';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_join(text, text, text, timestamptz, text, text, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The referee's purchase: the first one of at least min_order_amount
 * converts the referral and rewards both sides, pending until the return
 * window closes (at + return_window_days).  Never raises for a purchase
 * that does not qualify (it is called from checkouts and order triggers):
 * the status says what happened.  not_referred: the customer joined no
 * program; below_minimum: the amount is too small (a later order may
 * qualify); program_inactive: no conversion while the program is off;
 * converted: rewarded (this order; a repeat returns the first result);
 * refused: the referrer's cap or standing refused the rewards (reason), for
 * good; revoked: the qualifying order was refunded; already_converted:
 * another order converted the referral.
 * The referrer's code row is locked (FOR UPDATE) while the cap is checked
 * and counted, so two conversions of one referrer serialise and a cap is
 * never exceeded; points are credited in customer_id order (no deadlock
 * between mutual referrals).
 */
CREATE FUNCTION loyalty.referral_order(customer_id text, order_ref text, amount numeric,
									   at timestamptz DEFAULT pg_catalog.now(),
									   OUT status text, OUT reason text, OUT referrer_id text,
									   OUT referrer_points bigint, OUT referee_points bigint,
									   OUT pending_until timestamptz)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	prog loyalty.referral_program;
	rc loyalty.referral_code;
	period date;
	in_period integer;
	refusal text;
	n_rank integer;
	side record;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR amount IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, amount and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	IF ref.status <> 'joined' THEN
		status := CASE WHEN ref.order_ref = order_ref OR ref.status <> 'converted' THEN ref.status
					   ELSE 'already_converted' END;
		reason := ref.reason;
		referrer_points := ref.referrer_points; referee_points := ref.referee_points;
		pending_until := ref.pending_until;
		RETURN;
	END IF;
	SELECT p.* INTO prog FROM loyalty.referral_program p WHERE p.program = ref.program;
	IF NOT FOUND OR NOT prog.active THEN
		status := 'program_inactive';
		RETURN;
	END IF;
	IF amount < prog.min_order_amount THEN
		status := 'below_minimum';
		reason := 'min_order_amount';
		RETURN;
	END IF;

	SELECT c.* INTO STRICT rc FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	period := pg_catalog.date_trunc(prog.cap_period, pg_catalog.timezone(loyalty._referral_zone(), at))::date;
	SELECT p.converted INTO in_period FROM loyalty.referral_period p
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	IF prog.cap_lifetime IS NOT NULL AND rc.converted >= prog.cap_lifetime THEN
		refusal := 'referrer_cap_lifetime';
	ELSIF prog.cap_per_period IS NOT NULL AND COALESCE(in_period, 0) >= prog.cap_per_period THEN
		refusal := 'referrer_cap_period';
	ELSIF loyalty._referral_standing(ref.referrer_id, prog) IS NOT NULL THEN
		refusal := 'referrer_not_in_good_standing';
	END IF;
	IF refusal IS NOT NULL THEN
		UPDATE loyalty.referral r
		SET status = 'refused', reason = refusal, order_ref = referral_order.order_ref,
			order_amount = amount, converted_at = at
		WHERE r.customer_id = p_customer;
		status := 'refused'; reason := refusal;
		RETURN;
	END IF;

	n_rank := rc.converted + 1;
	referrer_points := COALESCE((SELECT t.referrer_points FROM loyalty.referral_reward_tier t
								 WHERE t.program = prog.program AND t.from_count <= n_rank
								 ORDER BY t.from_count DESC LIMIT 1), prog.referrer_points);
	referee_points := prog.referee_points;
	pending_until := at + pg_catalog.make_interval(days => prog.return_window_days);

	UPDATE loyalty.referral_code c SET converted = c.converted + 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	INSERT INTO loyalty.referral_period AS p (customer_id, program, period_start, converted)
	VALUES (ref.referrer_id, ref.program, period, 1)
	ON CONFLICT ON CONSTRAINT referral_period_pkey DO UPDATE SET converted = p.converted + 1;
	UPDATE loyalty.referral r
	SET status = 'converted', order_ref = referral_order.order_ref, order_amount = amount,
		converted_at = at, pending_until = referral_order.pending_until, rank = n_rank,
		referrer_points = referral_order.referrer_points, referee_points = referral_order.referee_points
	WHERE r.customer_id = p_customer;

	-- both rewards, pending until the return window closes, in customer_id order
	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, referee_points),
									  (ref.referrer_id, 'referrer'::text, referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_earn(side.who, loyalty._referral_reference(p_customer, side.role), side.pts,
									at => at, reason => 'referral ' || side.role || ' reward (' || prog.program || ')',
									pending_until => pending_until, qualifying => false);
	END LOOP;
	-- coupon rewards: pending until the return window closes (referral_settle)
	IF prog.referee_campaign_id IS NOT NULL THEN
		PERFORM loyalty._referral_coupon_add(p_customer, p_customer, 'referee', prog, at, pending_until);
	END IF;
	IF prog.referrer_campaign_id IS NOT NULL THEN
		PERFORM loyalty._referral_coupon_add(ref.referrer_id, p_customer, 'referrer', prog, at, pending_until);
	END IF;
	status := 'converted';
END;
$$;

COMMENT ON FUNCTION loyalty.referral_order(text, text, numeric, timestamptz) IS
	'Report a referee''s purchase: the first of at least min_order_amount rewards both sides (points pending until the return window closes); status not_referred, below_minimum, program_inactive, converted, refused (reason), already_converted or revoked; idempotent on order_ref';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_order(text, text, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The referee's qualifying order was refunded: both rewards are taken back
 * (points_reverse: pending points cancelled, spent ones recorded as debt)
 * and the referral no longer counts for the referrer's caps and rank.
 * status: revoked (this call or a repeat), not_qualifying_order (another
 * order, or no conversion yet), not_referred.
 */
CREATE FUNCTION loyalty.referral_refund(customer_id text, order_ref text,
										at timestamptz DEFAULT pg_catalog.now(),
										OUT status text, OUT referrer_id text,
										OUT referrer_points bigint, OUT referee_points bigint)
RETURNS record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	p_customer text := customer_id;
	ref loyalty.referral;
	period date;
	side record;
	zone text;
BEGIN
	IF p_customer IS NULL OR order_ref IS NULL OR at IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and at must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, p_customer);
	PERFORM loyalty._points_check_key('order_ref'::text, order_ref);

	SELECT r.* INTO ref FROM loyalty.referral r WHERE r.customer_id = p_customer FOR UPDATE;
	IF NOT FOUND THEN
		status := 'not_referred';
		RETURN;
	END IF;
	referrer_id := ref.referrer_id;
	referrer_points := ref.referrer_points; referee_points := ref.referee_points;
	IF ref.order_ref IS DISTINCT FROM order_ref OR ref.status NOT IN ('converted', 'revoked') THEN
		status := 'not_qualifying_order';
		referrer_points := NULL; referee_points := NULL;
		RETURN;
	END IF;
	status := 'revoked';
	IF ref.status = 'revoked' THEN
		RETURN;
	END IF;

	PERFORM 1 FROM loyalty.referral_code c
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program FOR UPDATE;
	UPDATE loyalty.referral_code c SET converted = c.converted - 1
	WHERE c.customer_id = ref.referrer_id AND c.program = ref.program;
	zone := loyalty._referral_zone();
	SELECT pg_catalog.date_trunc(p.cap_period, pg_catalog.timezone(zone, ref.converted_at))::date
	INTO period FROM loyalty.referral_program p WHERE p.program = ref.program;
	UPDATE loyalty.referral_period p SET converted = p.converted - 1
	WHERE p.customer_id = ref.referrer_id AND p.program = ref.program AND p.period_start = period;
	UPDATE loyalty.referral r SET status = 'revoked', revoked_at = at WHERE r.customer_id = p_customer;

	FOR side IN SELECT * FROM (VALUES (p_customer, 'referee'::text, ref.referee_points),
									  (ref.referrer_id, 'referrer'::text, ref.referrer_points)) AS s(who, role, pts)
				WHERE s.pts > 0 ORDER BY s.who COLLATE "C"
	LOOP
		PERFORM loyalty.points_reverse(side.who, loyalty._referral_reference(p_customer, side.role), at => at);
	END LOOP;
	PERFORM loyalty._referral_coupon_revoke(p_customer, ref.referrer_id, at);
END;
$$;

COMMENT ON FUNCTION loyalty.referral_refund(text, text, timestamptz) IS
	'The referee''s qualifying order was refunded: take both rewards back and uncount the referral from the referrer''s caps; status revoked, not_qualifying_order or not_referred; idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_refund(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Issue the code of a pending coupon reward (locked here): one
 * single-use code of the campaign bound to the holder (generate_codes, as
 * exchange_points).  Nothing when it is no longer pending.
 */
CREATE FUNCTION loyalty._referral_coupon_issue(holder text, referee text, reward_role text, at timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rcp loyalty.referral_coupon;
	pattern text;
	before bigint[];
	issued record;
BEGIN
	SELECT c.* INTO rcp FROM loyalty.referral_coupon c
	WHERE c.customer_id = holder AND c.referee_id = referee AND c.role = reward_role FOR UPDATE;
	IF NOT FOUND OR rcp.status <> 'pending' THEN
		RETURN false;
	END IF;
	SELECT p.coupon_pattern INTO pattern FROM loyalty.referral_program p WHERE p.program = rcp.program;
	before := ARRAY(SELECT c.coupon_id FROM loyalty.coupon c
					WHERE c.campaign_id = rcp.campaign_id AND c.customer_id = holder);
	PERFORM loyalty.generate_codes(rcp.campaign_id, 1, COALESCE(pattern, 'RWD-####-####'), ARRAY[holder]);
	SELECT c.coupon_id, c.code::text AS code INTO STRICT issued
	FROM loyalty.coupon c
	WHERE c.campaign_id = rcp.campaign_id AND c.customer_id = holder
	  AND c.coupon_id <> ALL (before) AND loyalty._points_inserted_here(c.xmin);
	UPDATE loyalty.referral_coupon c
	SET status = 'issued', coupon_id = issued.coupon_id, code = issued.code, issued_at = at
	WHERE c.customer_id = holder AND c.referee_id = referee AND c.role = reward_role;
	RETURN true;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_coupon_issue(text, text, text, timestamptz) IS
	'Internal: issue the code of a pending referral coupon reward (bound to its holder)';

/*
 * Record a coupon reward of the program for a holder (idempotent), issued
 * at once when available_at is NULL or passed, else pending until then.
 */
CREATE FUNCTION loyalty._referral_coupon_add(holder text, referee text, reward_role text,
											 prog loyalty.referral_program, at timestamptz, available_at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	INSERT INTO loyalty.referral_coupon (customer_id, referee_id, role, program, campaign_id, available_at, created_at)
	VALUES (holder, referee, reward_role, prog.program,
			CASE reward_role WHEN 'referrer' THEN prog.referrer_campaign_id
							 WHEN 'referee' THEN prog.referee_campaign_id
							 ELSE prog.first_order_campaign_id END,
			available_at, at)
	ON CONFLICT ON CONSTRAINT referral_coupon_pkey DO NOTHING;
	IF available_at IS NULL OR available_at <= at THEN
		PERFORM loyalty._referral_coupon_issue(holder, referee, reward_role, at);
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_coupon_add(text, text, text, loyalty.referral_program, timestamptz, timestamptz) IS
	'Internal: record a referral coupon reward (pending until available_at, or issued at once)';

/*
 * A referral revoked by a refund: its pending coupon rewards are
 * cancelled (no code is ever issued), issued reward codes not used yet are
 * voided, and the referee's first-order discount code is voided (used or
 * not: a redemption rolled back must not free it for another order).
 */
CREATE FUNCTION loyalty._referral_coupon_revoke(referee text, referrer text, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rcp record;
	who text;
BEGIN
	-- one customer at a time, in key order: a locking read of one
	-- customer's rows is what Citus can run on a distributed table
	FOR who IN SELECT DISTINCT x.k COLLATE "C" FROM unnest(ARRAY[referee, referrer]) AS x(k)
			   WHERE x.k IS NOT NULL ORDER BY 1
	LOOP
	FOR rcp IN SELECT c.customer_id, c.role, c.status, c.coupon_id
			   FROM loyalty.referral_coupon c
			   WHERE c.customer_id = who AND c.referee_id = referee
				 AND c.status IN ('pending', 'issued')
			   ORDER BY c.role FOR UPDATE
	LOOP
		IF rcp.status = 'pending' THEN
			UPDATE loyalty.referral_coupon c SET status = 'cancelled', cancelled_at = at
			WHERE c.customer_id = rcp.customer_id AND c.referee_id = referee AND c.role = rcp.role;
		ELSE
			UPDATE loyalty.coupon k SET voided_at = at
			WHERE k.coupon_id = rcp.coupon_id AND k.voided_at IS NULL
			  AND (rcp.role = 'first_order' OR k.uses = 0);
			IF FOUND THEN
				UPDATE loyalty.referral_coupon c SET status = 'voided', cancelled_at = at
				WHERE c.customer_id = rcp.customer_id AND c.referee_id = referee AND c.role = rcp.role;
			END IF;
		END IF;
	END LOOP;
	END LOOP;
END;
$$;

COMMENT ON FUNCTION loyalty._referral_coupon_revoke(text, text, timestamptz) IS
	'Internal: a refunded referral cancels its pending coupon rewards and voids its unused reward codes and the first-order discount code';

/*
 * Issue the coupon rewards whose return window closed by at: of one
 * holder, or (customer_id => NULL, the default) of everyone.  What a
 * periodic job runs; referral_coupons settles its customer itself.
 * Returns the codes issued.
 */
CREATE FUNCTION loyalty.referral_settle(customer_id text DEFAULT NULL, at timestamptz DEFAULT pg_catalog.now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
	rcp record;
	n bigint := 0;
BEGIN
	IF at IS NULL THEN
		RAISE EXCEPTION 'at must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	FOR rcp IN SELECT c.customer_id, c.referee_id, c.role FROM loyalty.referral_coupon c
			   WHERE c.status = 'pending' AND c.available_at <= at
				 AND (customer_id IS NULL OR c.customer_id = customer_id)
			   ORDER BY c.customer_id, c.referee_id, c.role
	LOOP
		IF loyalty._referral_coupon_issue(rcp.customer_id, rcp.referee_id, rcp.role, at) THEN
			n := n + 1;
		END IF;
	END LOOP;
	RETURN n;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_settle(text, timestamptz) IS
	'Issue the referral coupon rewards whose return window closed by at, of one customer or of all (customer_id => NULL); returns the codes issued';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_settle(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.referral_settle(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The customer's referral coupons (as referrer or referee), after issuing
 * those whose return window closed by at: pending ones (no code yet, and
 * when it comes), issued codes, cancelled and voided ones.
 */
CREATE FUNCTION loyalty.referral_coupons(customer_id text, at timestamptz DEFAULT pg_catalog.now())
RETURNS TABLE (referee_id text, role text, program text, status text, available_at timestamptz, code text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	IF $1 IS NULL OR $2 IS NULL THEN
		RAISE EXCEPTION 'customer_id and at must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._points_check_key('customer_id'::text, $1);
	PERFORM loyalty.referral_settle($1, $2);
	RETURN QUERY SELECT c.referee_id::text, c.role, c.program::text, c.status, c.available_at, c.code
				 FROM loyalty.referral_coupon c WHERE c.customer_id = $1
				 ORDER BY c.created_at, c.referee_id, c.role;
END;
$$;

COMMENT ON FUNCTION loyalty.referral_coupons(text, timestamptz) IS
	'The customer''s referral coupons (as referrer or referee) after issuing those whose return window closed: role, status (pending, issued, cancelled, voided), available_at and code';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.referral_coupons(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.referral_leaderboard AS
SELECT c.program, c.customer_id AS referrer_id, c.code::text AS code,
	   pg_catalog.count(r.customer_id) AS joined,
	   c.converted AS successful,
	   pg_catalog.count(r.customer_id) FILTER (WHERE r.status = 'converted' AND r.pending_until > pg_catalog.now()) AS pending,
	   COALESCE(pg_catalog.sum(r.referrer_points) FILTER (WHERE r.status = 'converted'), 0)::bigint AS points_earned,
	   pg_catalog.rank() OVER (PARTITION BY c.program ORDER BY c.converted DESC) AS rank
FROM loyalty.referral_code c
LEFT JOIN loyalty.referral r ON r.referrer_id = c.customer_id AND r.program = c.program
GROUP BY c.program, c.customer_id, c.code, c.converted;

COMMENT ON VIEW loyalty.referral_leaderboard IS
	'Referrers ranked per program by successful referrals (converted, not revoked); joined friends, rewards still pending, points earned';
COMMENT ON COLUMN loyalty.referral_leaderboard.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_leaderboard.referrer_id IS 'The referrer';
COMMENT ON COLUMN loyalty.referral_leaderboard.code IS 'The referrer''s code';
COMMENT ON COLUMN loyalty.referral_leaderboard.joined IS 'Friends who joined with the code';
COMMENT ON COLUMN loyalty.referral_leaderboard.successful IS 'Referrals rewarded and not revoked';
COMMENT ON COLUMN loyalty.referral_leaderboard.pending IS 'Of those, rewards still inside the return window';
COMMENT ON COLUMN loyalty.referral_leaderboard.points_earned IS 'Points credited to the referrer for them';
COMMENT ON COLUMN loyalty.referral_leaderboard.rank IS 'Rank in the program (ties share a rank)';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_leaderboard'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_leaderboard'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Referral KPIs per program, for the campaign KPI views to union.  Revenue
 * of referred customers comes from the tracked statistics (as of the last
 * fold; NULL when no orders table is tracked), the qualifying revenue from
 * the qualifying orders; cost is the points of rewards not revoked times
 * point_value; ROI = (revenue - cost) / cost.
 */
CREATE VIEW loyalty.referral_kpi AS
WITH codes AS (
	SELECT c.program, pg_catalog.count(*) AS codes FROM loyalty.referral_code c GROUP BY c.program
), refs AS (
	SELECT r.program,
		   pg_catalog.count(*) AS joined,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'converted') AS converted,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'converted' AND r.pending_until > pg_catalog.now()) AS pending,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'refused') AS refused,
		   pg_catalog.count(*) FILTER (WHERE r.status = 'revoked') AS revoked,
		   COALESCE(pg_catalog.sum(r.referrer_points + r.referee_points) FILTER (WHERE r.status = 'converted'), 0)::bigint AS points_cost,
		   COALESCE(pg_catalog.sum(r.order_amount) FILTER (WHERE r.status = 'converted'), 0) AS qualifying_revenue,
		   pg_catalog.sum(s.spend_total) AS referred_revenue
	FROM loyalty.referral r
	LEFT JOIN loyalty.customer_stats s ON s.customer_id = r.customer_id
	GROUP BY r.program
), coupons AS (
	-- the discounts given by the reward and first-order codes, net of
	-- reversals and returns (the redemption ledger's signed rows)
	SELECT rc.program, pg_catalog.sum(d.discount) AS coupon_cost
	FROM loyalty.referral_coupon rc
	JOIN loyalty.redemption d ON d.customer_id = rc.customer_id AND d.coupon_id = rc.coupon_id
	GROUP BY rc.program
)
SELECT p.program,
	   COALESCE(c.codes, 0) AS codes,
	   COALESCE(r.joined, 0) AS invites_used,
	   COALESCE(r.converted, 0) AS conversions,
	   CASE WHEN r.joined > 0 THEN pg_catalog.round(r.converted::numeric / r.joined, 4) END AS conversion_rate,
	   COALESCE(r.pending, 0) AS pending,
	   COALESCE(r.refused, 0) AS refused,
	   COALESCE(r.revoked, 0) AS revoked,
	   COALESCE(r.points_cost, 0) AS points_cost,
	   x.cost,
	   COALESCE(r.qualifying_revenue, 0) AS qualifying_revenue,
	   r.referred_revenue,
	   CASE WHEN x.cost > 0
			THEN pg_catalog.round((COALESCE(r.referred_revenue, r.qualifying_revenue) - x.cost) / x.cost, 4) END AS roi,
	   COALESCE(k.coupon_cost, 0) AS coupon_cost
FROM loyalty.referral_program p
LEFT JOIN codes c ON c.program = p.program
LEFT JOIN refs r ON r.program = p.program
LEFT JOIN coupons k ON k.program = p.program
CROSS JOIN LATERAL (SELECT CASE WHEN COALESCE(r.points_cost, 0) = 0 THEN COALESCE(k.coupon_cost, 0)
								ELSE r.points_cost * p.point_value + COALESCE(k.coupon_cost, 0) END AS cost) x;

COMMENT ON VIEW loyalty.referral_kpi IS
	'Referral KPIs per program: codes, invites used (joins), conversions, conversion rate, pending, refused, revoked, points cost and money cost (points and reward codes), qualifying revenue, revenue of referred customers, ROI';
COMMENT ON COLUMN loyalty.referral_kpi.program IS 'The program';
COMMENT ON COLUMN loyalty.referral_kpi.codes IS 'Referral codes created';
COMMENT ON COLUMN loyalty.referral_kpi.invites_used IS 'Friends who joined with a code';
COMMENT ON COLUMN loyalty.referral_kpi.conversions IS 'Referrals rewarded and not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.conversion_rate IS 'conversions / invites_used';
COMMENT ON COLUMN loyalty.referral_kpi.pending IS 'Conversions whose rewards are still pending (return window open)';
COMMENT ON COLUMN loyalty.referral_kpi.refused IS 'Purchases refused by a cap or the referrer''s standing';
COMMENT ON COLUMN loyalty.referral_kpi.revoked IS 'Conversions whose qualifying order was refunded';
COMMENT ON COLUMN loyalty.referral_kpi.points_cost IS 'Points of both sides'' rewards not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.cost IS 'points_cost * point_value plus coupon_cost (NULL when points were given and point_value is unknown)';
COMMENT ON COLUMN loyalty.referral_kpi.coupon_cost IS 'Discounts given by the program''s reward and first-order codes, net of reversals and returns';
COMMENT ON COLUMN loyalty.referral_kpi.qualifying_revenue IS 'Amount of the qualifying orders not revoked';
COMMENT ON COLUMN loyalty.referral_kpi.referred_revenue IS 'Tracked spend of all referees (loyalty.customer_stats as of the last fold; NULL when none is tracked)';
COMMENT ON COLUMN loyalty.referral_kpi.roi IS '(referred_revenue, else qualifying_revenue, - cost) / cost';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.referral_kpi'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.referral_kpi'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
