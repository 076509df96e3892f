
/* ---------------------------------------------------------------------------
 * points.sql: points ledger, lots, accounts, earning rules and tiers
 *
 * Model (points.h has the invariants the C code keeps):
 *	points_ledger	append-only; every entry's points is its signed effect on
 *					available + pending - debt; no role can update or delete it
 *	points_lot		what was credited, with availability and expiry times;
 *					spending consumes lots first in, first out
 *	points_account	one row per customer, locked by every mutating call; the
 *					settled balance, debt, lifetime and qualifying totals, tier
 *	points_qualifying  qualifying points and spend per customer and month (in
 *					the program's time zone, loyalty.settings), for rolling tier windows
 *	earning_rule	how orders and actions earn points
 *	tier			the tier ladder; tier_history every change of tier
 *	points_program	settings (one optional row): tier basis and window, grace
 *					period, downgrade on refund, default expiry, currency (the
 *					time zone is the program's, loyalty.settings)
 * Only the SECURITY DEFINER functions write these tables; the app role can
 * call them but write nothing directly.
 * ------------------------------------------------------------------------ */

/* types */

CREATE TYPE loyalty.points_receipt AS (
	entry_id	bigint,
	customer_id	text,
	points		bigint,
	available	bigint,
	pending		bigint,
	debt		bigint
);

COMMENT ON TYPE loyalty.points_receipt IS
	'Result of a points call: the ledger entry, its signed points, and the account''s available, pending and debt right after it (a repeated call returns the first result)';

/* tables */

CREATE TABLE loyalty.points_program (
	singleton			boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	tier_basis			text NOT NULL DEFAULT 'points'
		CHECK (tier_basis IN ('points', 'spend')),
	tier_window_months	integer CHECK (tier_window_months BETWEEN 1 AND 120),
	tier_grace_days		integer NOT NULL DEFAULT 30
		CHECK (tier_grace_days BETWEEN 0 AND 3660),
	expiry_months		integer CHECK (expiry_months BETWEEN 1 AND 1200),
	expiry_rounding		text NOT NULL DEFAULT 'none'
		CHECK (expiry_rounding IN ('none', 'month', 'year')),
	-- the form ISO 4217 gives currency codes, as campaigns check it
	currency			text NOT NULL DEFAULT 'EUR'
		CONSTRAINT points_program_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
	tier_downgrade		text NOT NULL DEFAULT 'none'
		CONSTRAINT points_program_tier_downgrade_check CHECK (tier_downgrade IN ('none', 'on_refund'))
);

COMMENT ON TABLE loyalty.points_program IS
	'Points settings, at most one row (no row: the defaults). Change them with INSERT ... ON CONFLICT (singleton) DO UPDATE';
COMMENT ON COLUMN loyalty.points_program.tier_basis IS
	'points: tiers on qualifying points earned; spend: tiers on qualifying order amounts';
COMMENT ON COLUMN loyalty.points_program.tier_window_months IS
	'Rolling tier window: the current calendar month and the N-1 before it; NULL = since the first earning';
COMMENT ON COLUMN loyalty.points_program.tier_grace_days IS
	'Days a customer keeps a tier after evaluate_tiers first finds them below its threshold';
COMMENT ON COLUMN loyalty.points_program.expiry_months IS
	'Default expiry of earned points, in months after earning (NULL: never); earn_points(expires_at) and earning rules may override';
COMMENT ON COLUMN loyalty.points_program.expiry_rounding IS
	'none: exactly expiry_months later; month / year: at the end of that month / year';
COMMENT ON COLUMN loyalty.points_program.tier_downgrade IS
	'none: only evaluate_tiers lowers a tier (after the grace period); on_refund: a refund (reverse_points, points_return_for_order) of an order whose earning upgraded the customer undoes that upgrade at once when the remaining qualifying value no longer reaches the tier (recorded in tier_history as change refund)';
COMMENT ON COLUMN loyalty.points_program.currency IS
	'The program currency (ISO 4217): earn_for_order takes amounts in it only (LP011 for another), so qualifying spend never adds up currencies';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_program', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_program'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

CREATE TABLE loyalty.tier (
	name		text PRIMARY KEY CHECK (name = pg_catalog.btrim(name) AND name <> ''),
	rank		integer NOT NULL UNIQUE CHECK (rank >= 0),
	threshold	numeric NOT NULL CHECK (threshold >= 0 AND threshold < 1e15),
	multiplier	numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0 AND multiplier <= 100),
	discount	numeric NOT NULL DEFAULT 0 CHECK (discount >= 0 AND discount <= 100),
	perks		jsonb NOT NULL DEFAULT '{}'
		CHECK (pg_catalog.jsonb_typeof(perks) = 'object'),
	description	text
);

COMMENT ON TABLE loyalty.tier IS
	'Tier ladder: a higher rank needs a higher threshold (qualifying points or spend, per points_program.tier_basis)';
COMMENT ON COLUMN loyalty.tier.rank IS 'Position on the ladder, 0 = lowest';
COMMENT ON COLUMN loyalty.tier.threshold IS
	'Qualifying points (or spend) in the tier window needed to reach the tier; a tier with threshold 0 is given to every new account';
COMMENT ON COLUMN loyalty.tier.multiplier IS
	'Factor applied to points earned by rules with apply_tier_multiplier';
COMMENT ON COLUMN loyalty.tier.discount IS 'Discount percentage the tier grants (for the shop and coupon rules)';
COMMENT ON COLUMN loyalty.tier.perks IS 'Other benefits, free-form';

SELECT pg_catalog.pg_extension_config_dump('loyalty.tier', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.tier'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

CREATE TABLE loyalty.points_account (
	customer_id		text PRIMARY KEY,
	available		bigint NOT NULL DEFAULT 0,
	pending			bigint NOT NULL DEFAULT 0,
	debt			bigint NOT NULL DEFAULT 0,
	lifetime_earned	bigint NOT NULL DEFAULT 0,
	qualifying		bigint NOT NULL DEFAULT 0,
	qualifying_spend numeric NOT NULL DEFAULT 0,
	-- No foreign key to loyalty.tier: pg_restore --jobs loads the two
	-- tables' data in parallel, and the constraint exists before the data
	-- (extension tables are created by CREATE EXTENSION), so every account
	-- row could be refused.  A rename cascades by trigger, a tier in use
	-- cannot be deleted (trigger), and check_integrity() reports an unknown
	-- tier.
	tier			text,
	tier_since		timestamptz,
	below_since		timestamptz,
	next_event_at	timestamptz,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	settled_at		timestamptz,
	-- Only the promise itself is a constraint (PostgreSQL compiles every
	-- CHECK of a table for each statement that writes it, a large share of
	-- a call's time): never negative, and debt only when nothing is open.
	-- The other invariants are kept by the C code and verified by
	-- loyalty.check_integrity().
	CONSTRAINT points_account_check CHECK (
		available >= 0 AND pending >= 0 AND debt >= 0 AND (debt = 0 OR available + pending = 0))
) WITH (fillfactor = 80);

CREATE INDEX points_account_next_event_idx ON loyalty.points_account (next_event_at)
	WHERE next_event_at IS NOT NULL;
CREATE INDEX points_account_tier_idx ON loyalty.points_account (tier);

COMMENT ON TABLE loyalty.points_account IS
	'Points account of each customer (created by the first credit): settled balance, debt, lifetime and qualifying totals, tier';
COMMENT ON COLUMN loyalty.points_account.available IS
	'Spendable points as last settled; points_balance() also counts lots that became available or expired since';
COMMENT ON COLUMN loyalty.points_account.pending IS 'Points earned but not yet available (return window), as last settled';
COMMENT ON COLUMN loyalty.points_account.debt IS
	'Points taken back by reversals after they were spent; repaid first from the next credits (never with open lots)';
COMMENT ON COLUMN loyalty.points_account.lifetime_earned IS 'Points ever earned, net of reversals';
COMMENT ON COLUMN loyalty.points_account.qualifying IS 'Qualifying points ever earned, net of reversals';
COMMENT ON COLUMN loyalty.points_account.qualifying_spend IS 'Order amounts ever earned on, net of reversals';
COMMENT ON COLUMN loyalty.points_account.below_since IS
	'When evaluate_tiers first found the customer below the threshold of their tier (grace period start)';
COMMENT ON COLUMN loyalty.points_account.settled_at IS
	'Latest business time the account was settled as of (lots expired or made available); calls may not be dated more than 5 minutes before it';
COMMENT ON COLUMN loyalty.points_account.next_event_at IS
	'No later than the first time a lot of the account becomes available or expires; settling is due from then';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_account', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_account'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.points_lot (
	lot_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id	text NOT NULL,
	state		text NOT NULL,
	points		bigint NOT NULL,
	remaining	bigint NOT NULL,
	expired		bigint NOT NULL DEFAULT 0,
	earned_at	timestamptz NOT NULL,
	available_at timestamptz,
	expires_at	timestamptz,
	-- (see points_account_check; check_integrity() verifies the rest)
	CONSTRAINT points_lot_check CHECK (remaining >= 0 AND remaining <= points)
) WITH (fillfactor = 90);

CREATE INDEX points_lot_open_idx ON loyalty.points_lot (customer_id) WHERE state <> 'closed';

COMMENT ON TABLE loyalty.points_lot IS
	'Credited points: one lot per earning (or returned spend), consumed first in, first out: soonest expiry first (never-expiring last), then earliest earned, then lot_id';
COMMENT ON COLUMN loyalty.points_lot.state IS
	'pending (not yet available), available, closed (consumed, expired or taken back); as last settled';
COMMENT ON COLUMN loyalty.points_lot.points IS 'Points credited to the lot';
COMMENT ON COLUMN loyalty.points_lot.remaining IS 'Points of the lot not yet spent, expired or taken back';
COMMENT ON COLUMN loyalty.points_lot.expired IS 'Points of the lot that expired';
COMMENT ON COLUMN loyalty.points_lot.available_at IS 'When pending points become available (NULL: at once)';
COMMENT ON COLUMN loyalty.points_lot.expires_at IS 'When the remaining points expire (NULL: never)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_lot', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.points_lot', 'lot_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_lot'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.points_ledger (
	entry_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id		text NOT NULL,
	kind			text NOT NULL,
	points			bigint NOT NULL,
	reference		text,
	reason			text,
	qualifying		bigint NOT NULL DEFAULT 0,
	amount			numeric,
	debt_change		bigint NOT NULL DEFAULT 0,
	lot_ids			bigint[],
	lot_points		bigint[],
	reverses		bigint[],
	detail			jsonb,
	request_hash	bigint,
	available_after	bigint NOT NULL,
	pending_after	bigint NOT NULL,
	debt_after		bigint NOT NULL,
	effective_at	timestamptz NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
	-- no CHECK: only the C functions write it, and check_integrity()
	-- verifies every entry (see points_account_check)
);

CREATE UNIQUE INDEX points_ledger_reference_key ON loyalty.points_ledger (reference, kind);
CREATE INDEX points_ledger_customer_idx ON loyalty.points_ledger (customer_id, entry_id);

COMMENT ON TABLE loyalty.points_ledger IS
	'Append-only points ledger (no role may update, delete or truncate it): sum(points) per customer = available + pending - debt';
COMMENT ON COLUMN loyalty.points_ledger.points IS
	'Signed effect on available + pending - debt: earn +, spend -, expire -, reverse and adjust either';
COMMENT ON COLUMN loyalty.points_ledger.reference IS
	'Caller reference (order id or idempotency key), unique per kind; NULL only for expiries';
COMMENT ON COLUMN loyalty.points_ledger.qualifying IS 'Change of qualifying points (earn +, reverse -)';
COMMENT ON COLUMN loyalty.points_ledger.amount IS 'Change of qualifying spend (earn_for_order +, reverse -)';
COMMENT ON COLUMN loyalty.points_ledger.debt_change IS 'Change of the debt (reverse +, repayment by a credit -)';
COMMENT ON COLUMN loyalty.points_ledger.lot_ids IS 'Lots whose remaining points the entry changed';
COMMENT ON COLUMN loyalty.points_ledger.lot_points IS
	'Signed change of each lot in lot_ids; points = sum(lot_points) - debt_change';
COMMENT ON COLUMN loyalty.points_ledger.reverses IS 'Entries a reverse entry reverses';
COMMENT ON COLUMN loyalty.points_ledger.detail IS 'Earning rules applied, with their points and cap periods';
COMMENT ON COLUMN loyalty.points_ledger.request_hash IS
	'Fingerprint of the request (customer, kind, arguments); a repeat must match it';
COMMENT ON COLUMN loyalty.points_ledger.effective_at IS 'Business time of the entry (the call''s at / as_of)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_ledger', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.points_ledger', 'entry_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_ledger'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * The one owner of each caller reference.  Its primary key makes "a
 * reference belongs to exactly one customer" a constraint: every mutating
 * call claims its reference here (INSERT ... ON CONFLICT DO NOTHING, then
 * the owner is read) after locking the account, so two customers' calls
 * racing for one reference serialise on the unique index and the second
 * gets LP002.  Citus: this is the documented exception to "per-customer
 * tables are keyed by (customer_id, ...)": a reference is global by
 * definition (an order id is unique in the shop, not per customer), so the
 * table is distributed by reference in its own colocation group; a claim is
 * one single-shard insert routed by the reference, inside the call's
 * distributed transaction.  Keying it by (customer_id, reference) would let
 * every customer hold the same reference again, which is the defect.
 */
CREATE TABLE loyalty.points_reference (
	reference	text PRIMARY KEY,
	customer_id	text NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.points_reference IS
	'Owner of every points reference (order id, idempotency key): one customer per reference, by primary key';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_reference', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_reference'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.points_qualifying (
	customer_id	text NOT NULL,
	month		date NOT NULL,
	points		bigint NOT NULL DEFAULT 0,
	spend		numeric NOT NULL DEFAULT 0,
	PRIMARY KEY (customer_id, month)
);

COMMENT ON TABLE loyalty.points_qualifying IS
	'Qualifying points and spend per customer and calendar month (program time zone) of earning, net of reversals';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_qualifying', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_qualifying'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.earning_rule (
	rule_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL UNIQUE CHECK (name <> ''),
	event			text NOT NULL CHECK (event ~ '^[a-z][a-z0-9_]*$'),
	points_per_unit	numeric NOT NULL DEFAULT 0 CHECK (points_per_unit >= 0),
	fixed_points	bigint NOT NULL DEFAULT 0 CHECK (fixed_points >= 0),
	multiplier		numeric NOT NULL DEFAULT 1 CHECK (multiplier > 0 AND multiplier <= 100),
	apply_tier_multiplier boolean NOT NULL DEFAULT true,
	currency		text,
	min_amount		numeric CHECK (min_amount >= 0),
	cap_points		bigint CHECK (cap_points > 0),
	cap_period		text CHECK (cap_period IN ('day', 'week', 'month', 'year', 'lifetime')),
	valid_from		timestamptz,
	valid_until		timestamptz,
	weekdays		smallint[]
		CHECK (weekdays <@ '{1,2,3,4,5,6,7}'::smallint[] AND pg_catalog.cardinality(weekdays) > 0),
	pending_days	integer NOT NULL DEFAULT 0 CHECK (pending_days BETWEEN 0 AND 3660),
	expiry_months	integer CHECK (expiry_months BETWEEN 0 AND 1200),
	expiry_rounding	text NOT NULL DEFAULT 'none'
		CHECK (expiry_rounding IN ('none', 'month', 'year')),
	qualifying		boolean NOT NULL DEFAULT true,
	active			boolean NOT NULL DEFAULT true,
	description		text,
	CONSTRAINT earning_rule_cap_check CHECK ((cap_points IS NULL) = (cap_period IS NULL)),
	CONSTRAINT earning_rule_window_check CHECK (valid_until > valid_from),
	CONSTRAINT earning_rule_amount_only_for_purchase
		CHECK (event = 'purchase' OR (points_per_unit = 0 AND min_amount IS NULL AND currency IS NULL)),
	CONSTRAINT earning_rule_gives_points CHECK (points_per_unit > 0 OR fixed_points > 0)
);

CREATE INDEX earning_rule_event_idx ON loyalty.earning_rule (event) WHERE active;

COMMENT ON TABLE loyalty.earning_rule IS
	'How orders (event purchase) and actions (review, referral, signup, birthday, ...) earn points; every active rule of the event that matches adds its points';
COMMENT ON COLUMN loyalty.earning_rule.event IS
	'purchase (earn_for_order) or an action name (earn_for_action)';
COMMENT ON COLUMN loyalty.earning_rule.points_per_unit IS 'Points per currency unit of the order amount (purchase only)';
COMMENT ON COLUMN loyalty.earning_rule.fixed_points IS 'Points per order or action';
COMMENT ON COLUMN loyalty.earning_rule.multiplier IS
	'Promotion factor, e.g. 2 for double points; the rule earns floor((amount * points_per_unit + fixed_points) * multiplier * tier multiplier)';
COMMENT ON COLUMN loyalty.earning_rule.apply_tier_multiplier IS 'Multiply by the customer''s tier multiplier';
COMMENT ON COLUMN loyalty.earning_rule.currency IS 'Only orders in this currency (NULL: any)';
COMMENT ON COLUMN loyalty.earning_rule.min_amount IS 'Only orders of at least this amount';
COMMENT ON COLUMN loyalty.earning_rule.cap_points IS 'Most points the rule gives one customer per cap_period';
COMMENT ON COLUMN loyalty.earning_rule.cap_period IS
	'day, week (ISO, from Monday), month, year (calendar, program time zone) or lifetime';
COMMENT ON COLUMN loyalty.earning_rule.valid_from IS 'Active from (inclusive; NULL: always)';
COMMENT ON COLUMN loyalty.earning_rule.valid_until IS 'Active until (exclusive; NULL: always)';
COMMENT ON COLUMN loyalty.earning_rule.weekdays IS 'Only on these ISO weekdays (1 = Monday, 7 = Sunday) in the program time zone';
COMMENT ON COLUMN loyalty.earning_rule.pending_days IS 'Points stay pending this many days (e.g. the return window)';
COMMENT ON COLUMN loyalty.earning_rule.expiry_months IS 'Expiry in months after earning; 0 = never; NULL = the program default';
COMMENT ON COLUMN loyalty.earning_rule.expiry_rounding IS 'none, or the end of the month / year the expiry falls in';
COMMENT ON COLUMN loyalty.earning_rule.qualifying IS 'Points count towards tiers';

SELECT pg_catalog.pg_extension_config_dump('loyalty.earning_rule', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.earning_rule', 'rule_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.earning_rule'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

CREATE TABLE loyalty.points_rule_usage (
	customer_id	text NOT NULL,
	rule_id		bigint NOT NULL,
	period_start date NOT NULL,
	points		bigint NOT NULL CHECK (points >= 0),
	PRIMARY KEY (customer_id, rule_id, period_start)
);

COMMENT ON TABLE loyalty.points_rule_usage IS
	'Points each capped earning rule gave each customer per cap period (period_start -infinity for lifetime caps), net of reversals';

SELECT pg_catalog.pg_extension_config_dump('loyalty.points_rule_usage', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.points_rule_usage'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.tier_history (
	history_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id	text NOT NULL,
	changed_at	timestamptz NOT NULL,
	from_tier	text,
	to_tier		text,
	change		text NOT NULL CHECK (change IN ('initial', 'upgrade', 'downgrade', 'refund')),
	qualifying	numeric,
	recorded_at	timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE INDEX tier_history_customer_idx ON loyalty.tier_history (customer_id, history_id);

COMMENT ON TABLE loyalty.tier_history IS
	'Every change of a customer''s tier: initial (first account), upgrade (at once when earning, or at evaluation), downgrade (at evaluation), refund (a refund undid the upgrade its order caused, points_program.tier_downgrade = on_refund)';
COMMENT ON COLUMN loyalty.tier_history.qualifying IS 'Qualifying value (points or spend in the window) that decided the change';

SELECT pg_catalog.pg_extension_config_dump('loyalty.tier_history', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.tier_history', 'history_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.tier_history'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* settings and ladder are cached per session (points_config.c) */

CREATE FUNCTION loyalty._points_config_invalidate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'points_config_invalidate'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION loyalty._points_config_invalidate() IS
	'Internal: drop the cached points settings and tier ladder in every session when they change';

CREATE TRIGGER tier_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.tier
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_config_invalidate();
CREATE TRIGGER points_program_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.points_program
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_config_invalidate();

COMMENT ON TRIGGER tier_config_changed ON loyalty.tier IS
	'Drop the cached tier ladder in every session when it changes';
COMMENT ON TRIGGER points_program_changed ON loyalty.points_program IS
	'Drop the cached points settings in every session when they change';
CREATE TRIGGER settings_points_config_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.settings
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_config_invalidate();
COMMENT ON TRIGGER settings_points_config_changed ON loyalty.settings IS
	'Drop the cached points settings (the program time zone) in every session when they change';

/* the ledger is append-only, for every role including the owner */

CREATE FUNCTION loyalty._points_ledger_immutable()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'loyalty.points_ledger is append-only: % is not allowed', TG_OP
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = 'Ledger entries are never changed or removed.',
			  HINT = 'Correct a balance with loyalty.adjust_points() or loyalty.reverse_points(), which add entries.';
END;
$$;

COMMENT ON FUNCTION loyalty._points_ledger_immutable() IS
	'Internal: refuse UPDATE, DELETE and TRUNCATE of the points ledger';

CREATE TRIGGER points_ledger_no_update
	BEFORE UPDATE OR DELETE ON loyalty.points_ledger
	FOR EACH ROW EXECUTE FUNCTION loyalty._points_ledger_immutable();
CREATE TRIGGER points_ledger_no_truncate
	BEFORE TRUNCATE ON loyalty.points_ledger
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._points_ledger_immutable();
COMMENT ON TRIGGER points_ledger_no_update ON loyalty.points_ledger IS
	'The ledger is append-only: no UPDATE or DELETE, for any role';
COMMENT ON TRIGGER points_ledger_no_truncate ON loyalty.points_ledger IS
	'The ledger is append-only: no TRUNCATE, for any role';
-- also with session_replication_role = replica
ALTER TABLE loyalty.points_ledger ENABLE ALWAYS TRIGGER points_ledger_no_update;
ALTER TABLE loyalty.points_ledger ENABLE ALWAYS TRIGGER points_ledger_no_truncate;
-- and no privilege to try, not even for the owner
REVOKE UPDATE, DELETE, TRUNCATE ON loyalty.points_ledger FROM CURRENT_USER;

/* the tier ladder must rise: a higher rank needs a higher threshold */

CREATE FUNCTION loyalty._tier_ladder_check()
RETURNS trigger
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lo record;
BEGIN
	SELECT a.name AS low, b.name AS high, a.threshold AS low_threshold, b.threshold AS high_threshold
	INTO lo
	FROM loyalty.tier a JOIN loyalty.tier b ON b.rank > a.rank AND b.threshold <= a.threshold
	LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'tier "%" ranks above "%" but does not need more (% <= %)',
			lo.high, lo.low, lo.high_threshold, lo.low_threshold
			USING ERRCODE = 'check_violation',
				  HINT = 'Thresholds must rise strictly with rank.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._tier_ladder_check() IS
	'Internal: thresholds of the tier ladder rise strictly with rank';

CREATE CONSTRAINT TRIGGER tier_ladder_check
	AFTER INSERT OR UPDATE ON loyalty.tier
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW EXECUTE FUNCTION loyalty._tier_ladder_check();

COMMENT ON TRIGGER tier_ladder_check ON loyalty.tier IS
	'At commit: thresholds rise strictly with rank';

/*
 * Accounts name their tier without a foreign key (see points_account): a
 * rename is carried to the accounts (as ON UPDATE CASCADE did) and to
 * their tier history, as the owner (admins cannot write either), and a
 * tier that accounts hold
 * cannot be deleted.  Row triggers on UPDATE and DELETE only: pg_restore's
 * COPY of the ladder fires neither.
 */
CREATE FUNCTION loyalty._tier_in_use()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		IF NEW.name OPERATOR(pg_catalog.<>) OLD.name THEN
			UPDATE loyalty.points_account a SET tier = NEW.name
			WHERE a.tier OPERATOR(pg_catalog.=) OLD.name;
			-- the same tier under a new name: its history follows
			UPDATE loyalty.tier_history h SET to_tier = NEW.name
			WHERE h.to_tier OPERATOR(pg_catalog.=) OLD.name;
			UPDATE loyalty.tier_history h SET from_tier = NEW.name
			WHERE h.from_tier OPERATOR(pg_catalog.=) OLD.name;
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.points_account a WHERE a.tier OPERATOR(pg_catalog.=) OLD.name) THEN
		RAISE EXCEPTION 'tier "%" is held by points accounts', OLD.name
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = 'A tier can be deleted once no account holds it.',
				  HINT = 'Move the accounts to another tier first, or rename the tier.';
	END IF;
	RETURN OLD;
END;
$$;

COMMENT ON FUNCTION loyalty._tier_in_use() IS
	'Internal: carry a tier rename to the accounts and their tier history; refuse deleting a tier accounts hold';

CREATE TRIGGER tier_in_use
	AFTER UPDATE OF name OR DELETE ON loyalty.tier
	FOR EACH ROW EXECUTE FUNCTION loyalty._tier_in_use();

COMMENT ON TRIGGER tier_in_use ON loyalty.tier IS
	'Carry a tier rename to the accounts; refuse deleting a tier accounts hold (instead of a foreign key, see points_account)';

/* functions: the API, in C (points.c, points_rules.c, points_reverse.c, points_expire.c) */

CREATE FUNCTION loyalty._points_check_key(name text, value text)
RETURNS void
AS 'MODULE_PATHNAME', 'points_check_key'
LANGUAGE C STABLE;

COMMENT ON FUNCTION loyalty._points_check_key(text, text) IS
	'Internal: raise 22023 unless value is a customer id or reference of 1 to 256 bytes (the one limit of every loyalty function), 23502 if null';

CREATE FUNCTION loyalty._points_inserted_here(row_xmin xid)
RETURNS boolean
AS 'MODULE_PATHNAME', 'points_inserted_here'
LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION loyalty._points_inserted_here(xid) IS
	'Internal: whether a row with this xmin was inserted by the current transaction (or one of its subtransactions)';

CREATE FUNCTION loyalty.earn_points(customer_id text, points bigint, reference text,
									reason text DEFAULT NULL,
									pending_until timestamptz DEFAULT NULL,
									expires_at timestamptz DEFAULT NULL,
									qualifying boolean DEFAULT true,
									at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_earn'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz) IS
	'Credit points to a customer (account created on first credit), pending until pending_until, expiring at expires_at (NULL: program default; infinity: never); idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.earn_points(text, bigint, text, text, timestamptz, timestamptz, boolean, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.spend_points(customer_id text, points bigint, reference text,
									 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_spend'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.spend_points(text, bigint, text, timestamptz) IS
	'Spend available points first in, first out; SQLSTATE LP001 when the balance is short; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.spend_points(text, bigint, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.earn_for_order(customer_id text, reference text, amount numeric,
									   currency text DEFAULT NULL,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_earn_for_order'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.earn_for_order(text, text, numeric, text, timestamptz) IS
	'Earn the points of an order by the active purchase rules (tier multiplier, minimum amount, caps, windows); the amount counts as qualifying spend; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.earn_for_order(text, text, numeric, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.earn_for_action(customer_id text, action text, reference text,
										at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_earn_for_action'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.earn_for_action(text, text, text, timestamptz) IS
	'Earn the points of an action (review, referral, signup, birthday, ...) by its active rules; SQLSTATE LP004 when no rule names the action; idempotent on reference';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.earn_for_action(text, text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.reverse_points(reference text, customer_id text DEFAULT NULL,
									   at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_reverse'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.reverse_points(text, text, timestamptz) IS
	'Refund: take back the points earned under a reference (clawing back or recording debt when already spent) and return the points spent under it; idempotent';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.reverse_points(text, text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_return_for_order(customer_id text, order_ref text, return_ref text, amount numeric,
										 at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_return_for_order'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.points_return_for_order(text, text, text, numeric, timestamptz) IS
	'Partial return of an order earned with earn_for_order: take back the points matching the returned amount (cumulative share rounded down; all returns of the whole amount take exactly what a full reversal takes) and its qualifying points and spend; idempotent on return_ref; LP012 beyond what is left of the order';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_return_for_order(text, text, text, numeric, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.adjust_points(customer_id text, points bigint, reference text, reason text,
									  expires_at timestamptz DEFAULT NULL,
									  at timestamptz DEFAULT pg_catalog.now())
RETURNS loyalty.points_receipt
AS 'MODULE_PATHNAME', 'points_adjust'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz) IS
	'Manual correction: credit (points > 0, non-qualifying) or take back (points < 0: available, then pending, then debt); reason required; idempotent on reference';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.adjust_points(text, bigint, text, text, timestamptz, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.points_balance(customer_id text, at timestamptz DEFAULT pg_catalog.now(),
									   OUT available bigint, OUT pending bigint, OUT debt bigint,
									   OUT next_expiry_date date, OUT next_expiry_points bigint,
									   OUT tier text)
RETURNS record
AS 'MODULE_PATHNAME', 'points_balance'
LANGUAGE C STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp;

/*
 * PARALLEL RESTRICTED: it may load the per-session settings cache, which
 * takes a new snapshot (not allowed in a parallel worker).
 */
COMMENT ON FUNCTION loyalty.points_balance(text, timestamptz) IS
	'Balance at a time, exact without any batch job: available and pending points, debt, the next expiry date (program time zone) and the points expiring that day, tier';
SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.points_balance(text, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.expire_points(as_of timestamptz DEFAULT pg_catalog.now(),
									  max_accounts integer DEFAULT NULL,
									  OUT accounts bigint, OUT expired_lots bigint,
									  OUT expired_points bigint, OUT activated_points bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'points_expire'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.expire_points(timestamptz, integer) IS
	'Settle accounts with lots due by as_of (expiry ledger entries, pending lots made available), at most max_accounts (NULL: all); accounts locked by others are skipped';
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.expire_points(timestamptz, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Not SECURITY DEFINER and without SET clauses: either would forbid the
 * COMMIT between batches.  Every name is qualified.
 */
CREATE PROCEDURE loyalty.run_points_maintenance(batch_size integer DEFAULT 10000,
												as_of timestamptz DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	t timestamptz := COALESCE(as_of, pg_catalog.now());
	r record;
BEGIN
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size must be a positive integer'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	LOOP
		SELECT * INTO r FROM loyalty.expire_points(t, batch_size);
		COMMIT;
		EXIT WHEN r.accounts < batch_size;
	END LOOP;
END;
$$;

COMMENT ON PROCEDURE loyalty.run_points_maintenance(integer, timestamptz) IS
	'For cron / pg_cron: settle every due account (expiries, pending lots) in transactions of at most batch_size accounts';
REVOKE EXECUTE ON PROCEDURE loyalty.run_points_maintenance(integer, timestamptz) FROM PUBLIC;
SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.run_points_maintenance(integer, timestamptz)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);
