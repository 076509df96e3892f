
/* ---------------------------------------------------------------------------
 * coupon.sql: campaigns, coupons, reservations, redemptions
 *
 * Admin level: campaigns (create / update / pause / resume, eligibility
 * rules), codes (generate_codes, add_public_code).  App level: the
 * lifecycle, each a C function running SECURITY DEFINER inside the caller's
 * transaction: validate_coupon (read-only), reserve_coupon, redeem_coupon,
 * rollback_redemption.  Analyst level: loyalty.campaign_stats.
 *
 * Concurrency (see coupon_store.c): locks are taken in one global order,
 * order row -> coupon rows -> campaign gates -> capped campaign rows ->
 * customer locks (-> points accounts, in the points family); caps count
 * active redemptions, unexpired reservations and unused codes sold for
 * points under those locks.  The tables back that up: a code's uses can never
 * exceed its max_uses (CHECK), a campaign's counter never its total_cap
 * (CHECK), and an (order_ref, code) pair is redeemed at most once (an
 * order_ref has one owner, loyalty.coupon_order_owner, and the redemption
 * ledger is unique on (customer_id, order_ref, code)).
 *
 * Citus (doc/citus.md): the per-customer tables (coupon_order, redemption,
 * reservation, coupon_return, coupon_return_line) are keyed by
 * (customer_id, ...) with customer_id text COLLATE "C", so that they can be
 * distributed and colocated by customer; campaign, campaign_rule,
 * eligibility_kind and coupon (the code catalogue, looked up by code, public
 * codes having no customer) are configuration: reference tables.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.campaign (
	campaign_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	kind			text NOT NULL,
	currency		text NOT NULL DEFAULT 'EUR',
	percent_off		numeric,
	max_discount	numeric,
	amount_off		numeric,
	buy_quantity	integer,
	get_quantity	integer,
	free_sku		text,
	free_quantity	integer,
	starts_at		timestamptz,
	ends_at			timestamptz,
	paused			boolean NOT NULL DEFAULT false,
	paused_at		timestamptz,
	total_cap		bigint,
	per_customer_cap integer,
	min_order_amount numeric,
	include_skus	text[],
	exclude_skus	text[],
	include_categories text[],
	exclude_categories text[],
	exclusive		boolean NOT NULL DEFAULT false,
	max_coupons_per_order integer,
	uses			bigint NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	ends_on			date,
	CONSTRAINT campaign_name_key UNIQUE (name),
	CONSTRAINT campaign_uses_within_cap
		CHECK (uses >= 0 AND (total_cap IS NULL OR uses <= total_cap))
);

COMMENT ON TABLE loyalty.campaign IS
	'Coupon campaigns: discount kind, dates, pause switch, caps, eligibility, product lists, stacking (write through the admin functions)';
COMMENT ON COLUMN loyalty.campaign.paused_at IS 'When the campaign was paused; null while it runs';
COMMENT ON COLUMN loyalty.campaign.ends_on IS
	'Date-only end: the campaign runs through this day in the program time zone (loyalty.settings); ends_at then holds that day''s end as of the zone when it was set';
COMMENT ON COLUMN loyalty.campaign.uses IS
	'Active redemptions counted against total_cap; maintained while total_cap is set, recounted when a cap is set';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.campaign', 'campaign_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.eligibility_kind (
	kind			text PRIMARY KEY,
	check_function	regprocedure,
	builtin			boolean NOT NULL DEFAULT false,
	description		text NOT NULL,
	CONSTRAINT eligibility_kind_name_check CHECK (kind ~ '^[a-z][a-z0-9_]*$'),
	CONSTRAINT eligibility_kind_function_check
		CHECK (builtin OR check_function IS NOT NULL)
);

COMMENT ON TABLE loyalty.eligibility_kind IS
	'Kinds of campaign eligibility rules; a non-built-in kind names a check function (customer_id text, params jsonb, order_context jsonb) RETURNS boolean, registered by the extension owner (e.g. ''tier'' by the tier module)';

INSERT INTO loyalty.eligibility_kind (kind, check_function, builtin, description) VALUES
	('segment', NULL, true,
	 'The customer''s current segment in loyalty.customer_segment is one of params.segments'),
	('new_customer', NULL, true,
	 'The order context''s "new_customer" flag equals params.new (default true)');

SELECT pg_catalog.pg_extension_config_dump('loyalty.eligibility_kind', 'WHERE NOT builtin');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.eligibility_kind'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * No foreign keys: pg_restore --jobs loads campaign, eligibility_kind and
 * campaign_rule in parallel, in any order, each in its own transaction.
 * add_campaign_rule checks that the campaign and the kind exist and locks
 * both rows as a foreign key would (FOR KEY SHARE); deleting a campaign or
 * a kind that rules use, or renaming such a kind, is refused by a trigger
 * on the parent (_campaign_rule_parent_in_use, UPDATE and DELETE only);
 * a rule whose kind is missing validates as config_error, and
 * loyalty.check_integrity() reports such rules.
 */
CREATE TABLE loyalty.campaign_rule (
	rule_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	campaign_id		bigint NOT NULL,
	kind			text NOT NULL,
	params			jsonb NOT NULL DEFAULT '{}',
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT campaign_rule_params_check CHECK (pg_catalog.jsonb_typeof(params) = 'object')
);

CREATE INDEX campaign_rule_campaign_idx ON loyalty.campaign_rule (campaign_id);

COMMENT ON TABLE loyalty.campaign_rule IS
	'Eligibility rules of campaigns; all rules of a campaign must hold';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_rule', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.campaign_rule', 'rule_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_rule'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Codes.  No foreign key to campaign: generate_codes checks the campaign
 * once per call instead of once per row (millions of rows), and campaigns
 * are never deleted by the API.  The one CHECK is the last line of defence
 * of the per-code cap; the other rules on codes are enforced by the
 * functions that write them (PostgreSQL re-reads every CHECK expression of
 * a table on each statement that writes it, so hot tables keep few).
 */
CREATE TABLE loyalty.coupon (
	coupon_id		bigint GENERATED ALWAYS AS IDENTITY (CACHE 100) PRIMARY KEY,
	code			loyalty.coupon_code NOT NULL,
	campaign_id		bigint NOT NULL,
	customer_id		text COLLATE "C",
	max_uses		bigint,
	uses			bigint NOT NULL DEFAULT 0,
	reservations	bigint NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	voided_at		timestamptz,
	holds_cap_unit	boolean NOT NULL DEFAULT false,
	CONSTRAINT coupon_code_key UNIQUE (code),
	CONSTRAINT coupon_uses_within_cap
		CHECK (uses >= 0 AND (max_uses IS NULL OR (max_uses >= 1 AND uses <= max_uses)))
);

CREATE INDEX coupon_customer_idx ON loyalty.coupon (customer_id)
	WHERE customer_id IS NOT NULL;

-- the cap checks count a campaign's codes sold for points (few) through it
CREATE INDEX coupon_cap_unit_idx ON loyalty.coupon (campaign_id, customer_id)
	WHERE holds_cap_unit;

COMMENT ON INDEX loyalty.coupon_cap_unit_idx IS
	'Codes sold for points, by campaign and customer: counted by every cap check of a capped campaign';

COMMENT ON TABLE loyalty.coupon IS
	'Coupon codes: generated (single-use, random, check characters) or public vanity codes; optionally bound to one customer';
COMMENT ON COLUMN loyalty.coupon.uses IS 'Active redemptions of this code';
COMMENT ON COLUMN loyalty.coupon.reservations IS 'Reservations ever made on this code';
COMMENT ON COLUMN loyalty.coupon.voided_at IS
	'When the code was voided (its points exchange was reversed); a voided code is unknown to validate, reserve and redeem';
COMMENT ON COLUMN loyalty.coupon.holds_cap_unit IS
	'The code was sold for points (exchange_points): while neither used nor voided it holds one unit of its campaign''s total and per-customer caps, which no other code can take';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.coupon', 'coupon_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * The one owner of each coupon order_ref: "an order belongs to exactly one
 * customer" is its primary key.  The first reserve / redeem of an order
 * claims it (INSERT ... ON CONFLICT DO NOTHING, then the owner is read), so
 * two customers racing for one order_ref serialise on the unique index and
 * the second gets order_mismatch.  Every other coupon table is keyed by
 * (customer_id, ...); with the owner unique, (customer_id, order_ref, code)
 * unique in the ledger is "one redemption per order and code" globally.
 * Citus: the documented exception to "per-customer tables are keyed by
 * customer": an order_ref is global by definition, so this table is
 * distributed by order_ref in its own colocation group (a claim is one
 * single-shard insert inside the call's distributed transaction), as
 * loyalty.points_reference is for points references.
 */
CREATE TABLE loyalty.coupon_order_owner (
	order_ref		text COLLATE "C" PRIMARY KEY,
	customer_id		text COLLATE "C" NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.coupon_order_owner IS
	'Owner of every coupon order_ref: one customer per order, by primary key (claimed by the first reserve or redeem of the order)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_order_owner', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_order_owner'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.coupon_order (
	order_ref		text COLLATE "C" NOT NULL,
	customer_id		text COLLATE "C" NOT NULL,
	context_hash	bigint NOT NULL,
	amount			numeric NOT NULL,
	currency		text,
	state			text NOT NULL DEFAULT 'open',
	created_at		timestamptz NOT NULL,
	updated_at		timestamptz NOT NULL,
	closed_at		timestamptz,
	context			jsonb,
	PRIMARY KEY (customer_id, order_ref)
);

COMMENT ON TABLE loyalty.coupon_order IS
	'Orders that reserved or redeemed coupons: customer and order-context fingerprint every call must repeat; state open or rolled_back (closes the order_ref, closed_at set)';

COMMENT ON COLUMN loyalty.coupon_order.context IS
	'The order context as last given (reserve / redeem / coupon_update_order); its items are the lines of coupon_order_lines and coupon_return_lines; null for a plain amount and for orders recorded by 0.2.0';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_order', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_order'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * The redemption ledger, append-only: kind 'redeem' rows (uses 1, discount
 * >= 0) and, per rolled-back redemption, one kind 'reversal' row (uses -1,
 * the discount negated, reverses = the redemption_id it reverses).  Only the
 * lifecycle functions write it (no role gets INSERT, UPDATE or DELETE on
 * it); the unique indexes below make a second redemption of one
 * (order_ref, code) and a second reversal of one redemption impossible.
 * No CHECK or foreign key: this is the hottest table, and PostgreSQL
 * re-reads CHECK expressions and runs a trigger per row for a foreign key.
 */
CREATE TABLE loyalty.redemption (
	redemption_id	bigint GENERATED ALWAYS AS IDENTITY,
	kind			text NOT NULL,
	reverses		bigint,
	coupon_id		bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	customer_id		text COLLATE "C" NOT NULL,
	order_ref		text COLLATE "C" NOT NULL,
	uses			integer NOT NULL,
	discount		numeric NOT NULL,
	on_shipping		boolean NOT NULL,
	currency		text NOT NULL,
	created_at		timestamptz NOT NULL,
	line_discounts	numeric[],
	PRIMARY KEY (customer_id, redemption_id)
);

CREATE UNIQUE INDEX redemption_order_coupon_key ON loyalty.redemption (customer_id, order_ref, coupon_id)
	WHERE kind = 'redeem';
CREATE UNIQUE INDEX redemption_reverses_key ON loyalty.redemption (customer_id, reverses)
	WHERE reverses IS NOT NULL;
CREATE INDEX redemption_campaign_customer_idx ON loyalty.redemption (campaign_id, customer_id);

COMMENT ON TABLE loyalty.redemption IS
	'Redemption ledger (append-only): one redeem row per (order_ref, code), one reversal row per rolled-back redemption, one return row (uses 0, discount taken back, negative) per partial return and code';
COMMENT ON COLUMN loyalty.redemption.line_discounts IS
	'redeem rows: the discount per line of the order context (items in their order, summing exactly to discount); null for a plain amount or a free-shipping discount';

SELECT pg_catalog.pg_extension_config_dump('loyalty.redemption', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.redemption', 'redemption_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.redemption'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/*
 * Reservations: state 'held' until consumed by the redeem of the same
 * order, released by its rollback, or marked expired when a new hold of the
 * same order and code replaces it.  A held row counts against the caps only
 * while expires_at is in the future, so an expired hold frees itself.
 */
CREATE TABLE loyalty.reservation (
	reservation_id	bigint GENERATED ALWAYS AS IDENTITY,
	coupon_id		bigint NOT NULL,
	campaign_id		bigint NOT NULL,
	customer_id		text COLLATE "C" NOT NULL,
	order_ref		text COLLATE "C" NOT NULL,
	discount		numeric NOT NULL,
	on_shipping		boolean NOT NULL,
	created_at		timestamptz NOT NULL,
	expires_at		timestamptz NOT NULL,
	state			text NOT NULL DEFAULT 'held',
	ended_at		timestamptz,
	line_discounts	numeric[],
	CONSTRAINT reservation_state_check
		CHECK (state IN ('held', 'consumed', 'released', 'expired')
			   AND (state = 'held') = (ended_at IS NULL)
			   AND expires_at > created_at AND discount >= 0),
	PRIMARY KEY (customer_id, reservation_id)
);

CREATE UNIQUE INDEX reservation_order_coupon_key ON loyalty.reservation (customer_id, order_ref, coupon_id)
	WHERE state = 'held';
CREATE INDEX reservation_coupon_idx ON loyalty.reservation (coupon_id, expires_at)
	WHERE state = 'held';
CREATE INDEX reservation_campaign_idx ON loyalty.reservation (campaign_id, expires_at)
	WHERE state = 'held';
CREATE INDEX reservation_customer_idx ON loyalty.reservation (campaign_id, customer_id)
	WHERE state = 'held';

COMMENT ON TABLE loyalty.reservation IS
	'Coupon reservations of checkouts; a held row counts against the caps until expires_at';
COMMENT ON COLUMN loyalty.reservation.line_discounts IS
	'The discount per line of the order context, as for redemption.line_discounts';

/*
 * Partial returns (coupon_return_lines): one row per (order_ref,
 * return_ref) with the returned quantities per line and the coupon discount
 * taken back, and one row per code and line taken back.  The ledger gets a
 * 'return' row per code (loyalty.redemption).  Only coupon_return_lines
 * writes them.  Keyed by customer first, as every per-customer table.
 */
CREATE TABLE loyalty.coupon_return (
	customer_id		text COLLATE "C" NOT NULL,
	order_ref		text COLLATE "C" NOT NULL,
	return_ref		text COLLATE "C" NOT NULL,
	quantities		jsonb NOT NULL,
	amount			numeric NOT NULL,
	created_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, order_ref, return_ref)
);

COMMENT ON TABLE loyalty.coupon_return IS
	'Partial returns of orders with coupons: returned quantities per order line ({"line": quantity}) and the coupon discount taken back (amount); a repeat of return_ref returns it';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_return', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_return'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.coupon_return_line (
	customer_id		text COLLATE "C" NOT NULL,
	order_ref		text COLLATE "C" NOT NULL,
	return_ref		text COLLATE "C" NOT NULL,
	coupon_id		bigint NOT NULL,
	line			integer NOT NULL,
	quantity		bigint NOT NULL,
	discount		numeric NOT NULL,
	PRIMARY KEY (customer_id, order_ref, return_ref, coupon_id, line)
);

COMMENT ON TABLE loyalty.coupon_return_line IS
	'Coupon discount taken back per return, code and order line (discount > 0: the amount taken back)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.coupon_return_line', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.coupon_return_line'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

SELECT pg_catalog.pg_extension_config_dump('loyalty.reservation', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.reservation', 'reservation_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.reservation'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions: internal helpers (C) */

CREATE FUNCTION loyalty._campaign_gate(campaign_id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'coupon_campaign_gate'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._campaign_gate(bigint) IS
	'Internal: lock a campaign''s gate exclusively until the end of the transaction (waits for redemptions in flight)';

CREATE FUNCTION loyalty._campaign_active_uses(campaign_id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_campaign_active_uses'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._campaign_active_uses(bigint) IS
	'Internal: active redemptions of a campaign, counted with the newest snapshot';

CREATE FUNCTION loyalty._coupon_cap_units(campaign_id bigint, customer_id text, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_cap_units'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION loyalty._coupon_cap_units(bigint, text, timestamptz) IS
	'Internal: units of a campaign''s total cap (customer NULL) or of a customer''s per-customer cap in use (redemptions, live reservations, unused codes sold for points), newest snapshot, under the customer lock when a customer is given';

/* triggers: every configuration change flushes the backends' campaign caches */

CREATE FUNCTION loyalty._campaign_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'coupon_campaign_changed'
LANGUAGE C;

COMMENT ON FUNCTION loyalty._campaign_changed() IS
	'Internal trigger: a campaign, rule or rule kind changed; invalidate the campaign caches of all backends';

CREATE TRIGGER campaign_changed
	AFTER INSERT OR DELETE OR TRUNCATE ON loyalty.campaign
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

-- every column but the cap counter "uses", which redemptions update
CREATE TRIGGER campaign_config_changed
	AFTER UPDATE OF campaign_id, name, kind, currency, percent_off, max_discount,
		amount_off, buy_quantity, get_quantity, free_sku, free_quantity,
		starts_at, ends_at, paused, paused_at, total_cap, per_customer_cap,
		min_order_amount, include_skus, exclude_skus, include_categories,
		exclude_categories, exclusive, max_coupons_per_order, created_at,
		updated_at, ends_on
	ON loyalty.campaign
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

CREATE TRIGGER campaign_rule_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.campaign_rule
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

CREATE TRIGGER eligibility_kind_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON loyalty.eligibility_kind
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_changed();

/*
 * In place of foreign keys from loyalty.campaign_rule (see there): a
 * campaign, or an eligibility rule kind, that rules use cannot be deleted,
 * and such a kind cannot be renamed (23503), as the foreign keys refused
 * it.  Row triggers on UPDATE and DELETE only: COPY (pg_restore, Citus
 * copying a reference table) fires neither.  Runs as the owner: the rules
 * are read whoever deletes.
 */
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

/* functions: campaign administration (admin) */

CREATE FUNCTION loyalty.currency_decimals(currency text)
RETURNS integer
AS 'MODULE_PATHNAME', 'coupon_currency_decimals'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.currency_decimals(text) IS
	'Minor units (decimals) of an ISO 4217 currency as coupon discounts use them: 2 unless listed otherwise (JPY 0, KWD 3, CLF 4, ...)';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.currency_decimals(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The end of a date-only campaign end (ends_on): the start of the next day
 * in the program time zone (loyalty.settings, no row: UTC), so the campaign
 * runs through that whole day there.  The lifecycle computes it again at
 * every call (a change of the zone applies at once); create_campaign and
 * update_campaign store it in ends_at for readers of the table.
 */
CREATE FUNCTION loyalty._campaign_day_end(day date)
RETURNS timestamptz
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text),
							   $1::pg_catalog.timestamp OPERATOR(pg_catalog.+) '1 day'::pg_catalog.interval)
$$;

COMMENT ON FUNCTION loyalty._campaign_day_end(date) IS
	'Internal: when a campaign ending on this day (ends_on) ends: the next midnight in the program time zone';

/*
 * Check a campaign row before it is written, with messages that say which
 * field is wrong (the table's CHECK constraints back this up).
 */
CREATE FUNCTION loyalty._campaign_check(c loyalty.campaign)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	problem text;
	decimals integer;
	too_precise record;
BEGIN
	problem := CASE
		WHEN c.name IS NULL OR c.name = '' THEN
			'name must be a non-empty text'
		WHEN c.kind IS NULL OR c.kind NOT IN ('percent', 'fixed', 'free_shipping', 'buy_x_get_y', 'free_item') THEN
			format('kind must be percent, fixed, free_shipping, buy_x_get_y or free_item, not %L', c.kind)
		WHEN c.currency IS NULL OR c.currency !~ '^[A-Z]{3}$' THEN
			'currency must be three upper-case letters (ISO 4217)'
		WHEN c.kind = 'percent' AND (c.percent_off IS NULL OR c.percent_off <= 0 OR c.percent_off > 100) THEN
			'a percent campaign needs percent_off in (0, 100]'
		WHEN c.kind <> 'percent' AND c.percent_off IS NOT NULL THEN
			'percent_off applies to percent campaigns only'
		WHEN c.kind = 'fixed' AND (c.amount_off IS NULL OR c.amount_off <= 0) THEN
			'a fixed campaign needs a positive amount_off'
		WHEN c.kind <> 'fixed' AND c.amount_off IS NOT NULL THEN
			'amount_off applies to fixed campaigns only'
		WHEN c.kind = 'fixed' AND c.max_discount IS NOT NULL THEN
			'max_discount does not apply to fixed campaigns'
		WHEN c.max_discount IS NOT NULL AND c.max_discount <= 0 THEN
			'max_discount must be positive'
		WHEN c.amount_off >= 1e15 OR c.max_discount >= 1e15 OR c.min_order_amount >= 1e15 THEN
			'amount_off, max_discount and min_order_amount must be finite numbers below 10^15'
		WHEN c.kind = 'buy_x_get_y' AND (c.buy_quantity IS NULL OR c.buy_quantity < 1
										OR c.get_quantity IS NULL OR c.get_quantity < 1) THEN
			'a buy_x_get_y campaign needs buy_quantity >= 1 and get_quantity >= 1'
		WHEN c.kind <> 'buy_x_get_y' AND (c.buy_quantity IS NOT NULL OR c.get_quantity IS NOT NULL) THEN
			'buy_quantity and get_quantity apply to buy_x_get_y campaigns only'
		WHEN c.kind = 'free_item' AND (c.free_sku IS NULL OR c.free_sku = '') THEN
			'a free_item campaign needs free_sku'
		WHEN c.kind = 'free_item' AND (c.free_quantity IS NULL OR c.free_quantity < 1) THEN
			'free_quantity must be at least 1'
		WHEN c.kind <> 'free_item' AND (c.free_sku IS NOT NULL OR c.free_quantity IS NOT NULL) THEN
			'free_sku and free_quantity apply to free_item campaigns only'
		WHEN c.starts_at IS NOT NULL AND c.ends_at IS NOT NULL AND c.ends_at <= c.starts_at THEN
			'ends_at must be after starts_at'
		WHEN c.total_cap IS NOT NULL AND c.total_cap < 0 THEN
			'total_cap must not be negative'
		WHEN c.per_customer_cap IS NOT NULL AND c.per_customer_cap < 1 THEN
			'per_customer_cap must be at least 1'
		WHEN c.max_coupons_per_order IS NOT NULL AND c.max_coupons_per_order < 1 THEN
			'max_coupons_per_order must be at least 1'
		WHEN c.min_order_amount IS NOT NULL AND c.min_order_amount < 0 THEN
			'min_order_amount must not be negative'
		WHEN c.exclusive IS NULL THEN
			'exclusive must be true or false'
		WHEN array_position(c.include_skus, NULL) IS NOT NULL
		  OR array_position(c.exclude_skus, NULL) IS NOT NULL
		  OR array_position(c.include_categories, NULL) IS NOT NULL
		  OR array_position(c.exclude_categories, NULL) IS NOT NULL
		  OR '' = ANY (c.include_skus) OR '' = ANY (c.exclude_skus)
		  OR '' = ANY (c.include_categories) OR '' = ANY (c.exclude_categories) THEN
			'sku and category lists must not contain nulls or empty texts'
		WHEN cardinality(c.include_skus) = 0 OR cardinality(c.exclude_skus) = 0
		  OR cardinality(c.include_categories) = 0 OR cardinality(c.exclude_categories) = 0 THEN
			'an empty sku or category list must be null'
		WHEN cardinality(c.include_skus) > 10000 OR cardinality(c.exclude_skus) > 10000
		  OR cardinality(c.include_categories) > 10000 OR cardinality(c.exclude_categories) > 10000 THEN
			'a sku or category list has at most 10000 entries'
		WHEN EXISTS (SELECT 1 FROM unnest(c.include_skus || c.exclude_skus || c.include_categories
										  || c.exclude_categories) AS e(name)
					 WHERE octet_length(e.name) > 256) THEN
			'a sku or category name has at most 256 bytes'
	END;
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: %', problem
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	-- a discount never exceeds its limit, so a limit must be payable exactly
	decimals := loyalty.currency_decimals(c.currency);
	SELECT l.field, l.value INTO too_precise
	FROM (VALUES (1, 'amount_off', c.amount_off), (2, 'max_discount', c.max_discount)) AS l(pos, field, value)
	WHERE l.value IS NOT NULL
	  AND l.value OPERATOR(pg_catalog.<>) pg_catalog.trunc(l.value, decimals)
	ORDER BY l.pos LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid campaign: % % has more decimals than % allows', too_precise.field,
			too_precise.value, c.currency
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('%s has %s decimal%s (ISO 4217 minor units); a discount is never more than its limit, so %s must be a whole number of minor units.',
								  c.currency, decimals, CASE WHEN decimals = 1 THEN '' ELSE 's' END,
								  too_precise.field),
				  HINT = format('Give %s with at most %s decimal%s.', too_precise.field, decimals,
								CASE WHEN decimals = 1 THEN '' ELSE 's' END);
	END IF;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_check(loyalty.campaign) IS
	'Internal: raise 22023 naming the first invalid field of a campaign row (limits with more decimals than the currency: the DETAIL names its decimals)';

CREATE FUNCTION loyalty.create_campaign(
	name text,
	kind text,
	percent_off numeric DEFAULT NULL,
	max_discount numeric DEFAULT NULL,
	amount_off numeric DEFAULT NULL,
	buy_quantity integer DEFAULT NULL,
	get_quantity integer DEFAULT NULL,
	free_sku text DEFAULT NULL,
	free_quantity integer DEFAULT NULL,
	currency text DEFAULT 'EUR',
	starts_at timestamptz DEFAULT NULL,
	ends_at timestamptz DEFAULT NULL,
	total_cap bigint DEFAULT NULL,
	per_customer_cap integer DEFAULT NULL,
	min_order_amount numeric DEFAULT NULL,
	include_skus text[] DEFAULT NULL,
	exclude_skus text[] DEFAULT NULL,
	include_categories text[] DEFAULT NULL,
	exclude_categories text[] DEFAULT NULL,
	exclusive boolean DEFAULT false,
	max_coupons_per_order integer DEFAULT NULL,
	segments text[] DEFAULT NULL,
	new_customers_only boolean DEFAULT false,
	paused boolean DEFAULT false,
	ends_on date DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.campaign;
	id bigint;
BEGIN
	c.name := create_campaign.name;
	c.kind := create_campaign.kind;
	c.currency := create_campaign.currency;
	c.percent_off := create_campaign.percent_off;
	c.max_discount := create_campaign.max_discount;
	c.amount_off := create_campaign.amount_off;
	c.buy_quantity := create_campaign.buy_quantity;
	c.get_quantity := create_campaign.get_quantity;
	c.free_sku := create_campaign.free_sku;
	c.free_quantity := CASE WHEN create_campaign.kind = 'free_item'
							THEN coalesce(create_campaign.free_quantity, 1)
							ELSE create_campaign.free_quantity END;
	c.starts_at := create_campaign.starts_at;
	IF create_campaign.ends_at IS NOT NULL AND create_campaign.ends_on IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: give ends_at (an instant) or ends_on (a date, inclusive), not both'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	c.ends_on := create_campaign.ends_on;
	c.ends_at := coalesce(create_campaign.ends_at, loyalty._campaign_day_end(create_campaign.ends_on));
	c.total_cap := create_campaign.total_cap;
	c.per_customer_cap := create_campaign.per_customer_cap;
	c.min_order_amount := create_campaign.min_order_amount;
	c.include_skus := create_campaign.include_skus;
	c.exclude_skus := create_campaign.exclude_skus;
	c.include_categories := create_campaign.include_categories;
	c.exclude_categories := create_campaign.exclude_categories;
	c.exclusive := create_campaign.exclusive;
	c.max_coupons_per_order := create_campaign.max_coupons_per_order;
	PERFORM loyalty._campaign_check(c);
	IF EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.name = c.name) THEN
		RAISE EXCEPTION 'campaign "%" already exists', c.name
			USING ERRCODE = 'unique_violation';
	END IF;
	IF create_campaign.paused IS NULL OR new_customers_only IS NULL THEN
		RAISE EXCEPTION 'invalid campaign: paused and new_customers_only must be true or false'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	INSERT INTO loyalty.campaign AS t
		(name, kind, currency, percent_off, max_discount, amount_off,
		 buy_quantity, get_quantity, free_sku, free_quantity, starts_at, ends_at,
		 paused, paused_at, total_cap, per_customer_cap, min_order_amount,
		 include_skus, exclude_skus, include_categories, exclude_categories,
		 exclusive, max_coupons_per_order, ends_on)
	VALUES (c.name, c.kind, c.currency, c.percent_off, c.max_discount, c.amount_off,
			c.buy_quantity, c.get_quantity, c.free_sku, c.free_quantity,
			c.starts_at, c.ends_at, create_campaign.paused,
			CASE WHEN create_campaign.paused THEN now() END,
			c.total_cap, c.per_customer_cap, c.min_order_amount,
			c.include_skus, c.exclude_skus, c.include_categories,
			c.exclude_categories, c.exclusive, c.max_coupons_per_order, c.ends_on)
	RETURNING t.campaign_id INTO id;

	IF segments IS NOT NULL THEN
		PERFORM loyalty.add_campaign_rule(id, 'segment',
										  jsonb_build_object('segments', to_jsonb(segments)));
	END IF;
	IF new_customers_only THEN
		PERFORM loyalty.add_campaign_rule(id, 'new_customer', '{"new": true}');
	END IF;
	RETURN id;
END;
$$;

COMMENT ON FUNCTION loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean, date) IS
	'Create a coupon campaign (use named arguments); returns its id. ends_at is an instant (exclusive); ends_on a date, the campaign running through that day in the program time zone';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.create_campaign(text, text, numeric, numeric, numeric, integer, integer, text, integer, text, timestamptz, timestamptz, bigint, integer, numeric, text[], text[], text[], text[], boolean, integer, text[], boolean, boolean, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Change a running campaign: keys of changes are column names, values the
 * new values (null clears).  kind and currency never change (redemptions
 * are recorded in them); pause with pause_campaign.  Takes the campaign's
 * gate exclusively, so the change applies to every redemption that starts
 * after it commits.
 */
CREATE FUNCTION loyalty.update_campaign(campaign_id bigint, changes jsonb)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.campaign;
	n loyalty.campaign;
	bad text;
BEGIN
	IF campaign_id IS NULL OR changes IS NULL THEN
		RAISE EXCEPTION 'campaign_id and changes must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF jsonb_typeof(changes) <> 'object' THEN
		RAISE EXCEPTION 'changes must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT string_agg(k, ', ' ORDER BY k) INTO bad
	FROM jsonb_object_keys(changes) AS k
	WHERE k NOT IN ('name', 'percent_off', 'max_discount', 'amount_off',
					'buy_quantity', 'get_quantity', 'free_sku', 'free_quantity',
					'starts_at', 'ends_at', 'ends_on', 'total_cap', 'per_customer_cap',
					'min_order_amount', 'include_skus', 'exclude_skus',
					'include_categories', 'exclude_categories', 'exclusive',
					'max_coupons_per_order');
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'cannot change campaign field(s): %', bad
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'kind and currency are fixed; use pause_campaign / resume_campaign for the pause switch.';
	END IF;

	PERFORM loyalty._campaign_gate(update_campaign.campaign_id);
	SELECT * INTO c FROM loyalty.campaign t
	WHERE t.campaign_id = update_campaign.campaign_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', update_campaign.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	n := jsonb_populate_record(c, changes);
	-- ends_at (an instant) and ends_on (a date) replace each other
	IF changes ? 'ends_on' AND changes ? 'ends_at'
	   AND n.ends_on IS NOT NULL AND n.ends_at IS NOT NULL THEN
		RAISE EXCEPTION 'invalid campaign: give ends_at (an instant) or ends_on (a date, inclusive), not both'
			USING ERRCODE = 'invalid_parameter_value';
	ELSIF changes ? 'ends_on' AND n.ends_on IS NOT NULL THEN
		n.ends_at := loyalty._campaign_day_end(n.ends_on);
	ELSIF changes ? 'ends_on' AND NOT changes ? 'ends_at' THEN
		n.ends_at := NULL;
	ELSIF changes ? 'ends_at' THEN
		n.ends_on := NULL;
	END IF;
	PERFORM loyalty._campaign_check(n);
	IF n.total_cap IS NOT NULL AND c.total_cap IS NULL THEN
		n.uses := loyalty._campaign_active_uses(c.campaign_id);
	END IF;
	IF n.total_cap IS NOT NULL AND n.uses > n.total_cap THEN
		RAISE EXCEPTION 'invalid campaign: total_cap % is below the % active redemptions',
			n.total_cap, n.uses
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	UPDATE loyalty.campaign t
	SET name = n.name, percent_off = n.percent_off, max_discount = n.max_discount,
		amount_off = n.amount_off, buy_quantity = n.buy_quantity,
		get_quantity = n.get_quantity, free_sku = n.free_sku,
		free_quantity = n.free_quantity, starts_at = n.starts_at,
		ends_at = n.ends_at, total_cap = n.total_cap,
		per_customer_cap = n.per_customer_cap,
		min_order_amount = n.min_order_amount, include_skus = n.include_skus,
		exclude_skus = n.exclude_skus, include_categories = n.include_categories,
		exclude_categories = n.exclude_categories, exclusive = n.exclusive,
		max_coupons_per_order = n.max_coupons_per_order, uses = n.uses,
		ends_on = n.ends_on, updated_at = now()
	WHERE t.campaign_id = c.campaign_id;
END;
$$;

COMMENT ON FUNCTION loyalty.update_campaign(bigint, jsonb) IS
	'Change campaign fields given as a JSON object (null clears); effective for every redemption that starts after the commit';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.update_campaign(bigint, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The kill switch.  The exclusive gate makes the pause wait for the
 * redemptions in flight (they commit before it) and makes every redemption
 * that starts later wait for the pause and then fail with "paused".  Resume
 * goes through the same gate.  Returns false when the campaign already was in
 * the requested state.
 */
CREATE FUNCTION loyalty._set_campaign_paused(campaign_id bigint, paused boolean)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF campaign_id IS NULL THEN
		RAISE EXCEPTION 'campaign_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	PERFORM loyalty._campaign_gate(_set_campaign_paused.campaign_id);
	UPDATE loyalty.campaign t
	SET paused = _set_campaign_paused.paused,
		paused_at = CASE WHEN _set_campaign_paused.paused THEN now() END,
		updated_at = now()
	WHERE t.campaign_id = _set_campaign_paused.campaign_id
	  AND t.paused <> _set_campaign_paused.paused;
	IF FOUND THEN
		RETURN true;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.campaign_id = _set_campaign_paused.campaign_id) THEN
		RAISE EXCEPTION 'campaign % does not exist', _set_campaign_paused.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN false;
END;
$$;

COMMENT ON FUNCTION loyalty._set_campaign_paused(bigint, boolean) IS
	'Internal: pause or resume a campaign behind its gate (pause_campaign, resume_campaign)';

CREATE FUNCTION loyalty.pause_campaign(campaign_id bigint)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT loyalty._set_campaign_paused($1, true) $$;

COMMENT ON FUNCTION loyalty.pause_campaign(bigint) IS
	'Pause a campaign at once (kill switch); false if it was already paused';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.pause_campaign(bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.resume_campaign(campaign_id bigint)
RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT loyalty._set_campaign_paused($1, false) $$;

COMMENT ON FUNCTION loyalty.resume_campaign(bigint) IS
	'Resume a paused campaign at once; false if it was not paused';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.resume_campaign(bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Add an eligibility rule.  Built-in kinds have their parameters checked
 * here; a registered kind's parameters are its check function's business.
 * The names a segment or tier rule gives must exist (22023 otherwise); the
 * triggers below keep them existing (renames carry over, deletes of a named
 * segment or tier are refused).
 */
CREATE FUNCTION loyalty.add_campaign_rule(campaign_id bigint, kind text, params jsonb DEFAULT '{}')
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

COMMENT ON FUNCTION loyalty.add_campaign_rule(bigint, text, jsonb) IS
	'Add an eligibility rule (kind from loyalty.eligibility_kind) to a campaign; returns the rule id';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.add_campaign_rule(bigint, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.drop_campaign_rule(rule_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cid bigint;
BEGIN
	IF rule_id IS NULL THEN
		RAISE EXCEPTION 'rule_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT r.campaign_id INTO cid FROM loyalty.campaign_rule r
	WHERE r.rule_id = drop_campaign_rule.rule_id;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	PERFORM loyalty._campaign_gate(cid);
	DELETE FROM loyalty.campaign_rule r WHERE r.rule_id = drop_campaign_rule.rule_id;
	UPDATE loyalty.campaign t SET updated_at = now() WHERE t.campaign_id = cid;
	RETURN FOUND;
END;
$$;

COMMENT ON FUNCTION loyalty.drop_campaign_rule(bigint) IS
	'Remove an eligibility rule; false if there was none with this id';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.drop_campaign_rule(bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Campaign rules name segments (loyalty.segment) and tiers (loyalty.tier),
 * tables admins write directly (no loyalty function writes them), so only a
 * trigger on them can keep the names that rules give valid:
 *	- a rename carries over to every rule naming the old name (as it does to
 *	  loyalty.segment_rule and loyalty.points_account, ON UPDATE CASCADE);
 *	- deleting a segment or tier a rule names is refused (23503), the DETAIL
 *	  naming the campaign and the rule: drop the rule first.
 * Citus: the triggers fire only on UPDATE OF name and DELETE, never on
 * INSERT or COPY, so copying the tables to the workers as reference tables
 * (and pg_restore) is never refused.  A delete made by the segment map's own
 * restore trigger (trigger depth > 1: a saved map replacing the default one,
 * while campaign rules may already be loaded) is not checked.  Runs as the
 * owner: the admin has no UPDATE on loyalty.campaign_rule.
 */
CREATE FUNCTION loyalty._campaign_rule_names_follow()
RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	rule_kind text := CASE TG_TABLE_NAME WHEN 'segment' THEN 'segment' ELSE 'tier' END;
	used record;
BEGIN
	IF TG_OP = 'UPDATE' THEN
		UPDATE loyalty.campaign_rule r
		SET params = CASE
				WHEN rule_kind = 'segment' THEN
					jsonb_set(r.params, '{segments}',
							  (SELECT jsonb_agg(CASE WHEN e.v OPERATOR(pg_catalog.=) to_jsonb(OLD.name)
													 THEN to_jsonb(NEW.name) ELSE e.v END ORDER BY e.n)
							   FROM jsonb_array_elements(r.params -> 'segments') WITH ORDINALITY AS e(v, n)))
				WHEN r.params ? 'min_tier' THEN
					CASE WHEN r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name
						 THEN jsonb_set(r.params, '{min_tier}', to_jsonb(NEW.name)) ELSE r.params END
				ELSE
					jsonb_set(r.params, '{tiers}',
							  (SELECT jsonb_agg(CASE WHEN e.v OPERATOR(pg_catalog.=) to_jsonb(OLD.name)
													 THEN to_jsonb(NEW.name) ELSE e.v END ORDER BY e.n)
							   FROM jsonb_array_elements(r.params -> 'tiers') WITH ORDINALITY AS e(v, n)))
			END
		WHERE r.kind OPERATOR(pg_catalog.=) rule_kind
		  AND (r.params -> CASE rule_kind WHEN 'segment' THEN 'segments' ELSE 'tiers' END ? OLD.name
			   OR (rule_kind = 'tier' AND r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name));
		RETURN NULL;
	END IF;

	IF pg_catalog.pg_trigger_depth() > 1 THEN
		RETURN NULL;
	END IF;
	SELECT r.rule_id, c.campaign_id, c.name INTO used
	FROM loyalty.campaign_rule r JOIN loyalty.campaign c ON c.campaign_id OPERATOR(pg_catalog.=) r.campaign_id
	WHERE r.kind OPERATOR(pg_catalog.=) rule_kind
	  AND (r.params -> CASE rule_kind WHEN 'segment' THEN 'segments' ELSE 'tiers' END ? OLD.name
		   OR (rule_kind = 'tier' AND r.params ->> 'min_tier' OPERATOR(pg_catalog.=) OLD.name))
	ORDER BY r.rule_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'cannot delete % "%": a campaign rule names it', rule_kind, OLD.name
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('Rule %s of campaign %L (id %s) names %s %L.',
								  used.rule_id, used.name, used.campaign_id, rule_kind, OLD.name),
				  HINT = 'Drop the rule with loyalty.drop_campaign_rule() first; a rename carries over to campaign rules.';
	END IF;
	RETURN NULL;
END;
$$;

COMMENT ON FUNCTION loyalty._campaign_rule_names_follow() IS
	'Internal trigger on loyalty.segment and loyalty.tier: a rename carries over to the campaign rules naming it; deleting one a campaign rule names is refused (23503)';

CREATE TRIGGER segment_campaign_rule_rename
	AFTER UPDATE OF name ON loyalty.segment
	FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name)
	EXECUTE FUNCTION loyalty._campaign_rule_names_follow();
CREATE TRIGGER segment_campaign_rule_delete
	AFTER DELETE ON loyalty.segment
	FOR EACH ROW EXECUTE FUNCTION loyalty._campaign_rule_names_follow();

COMMENT ON TRIGGER segment_campaign_rule_rename ON loyalty.segment IS
	'A renamed segment is renamed in the campaign rules that name it';
COMMENT ON TRIGGER segment_campaign_rule_delete ON loyalty.segment IS
	'Refuse deleting a segment a campaign rule names (23503)';

-- also while loyalty.reset_segment_map() runs (session_replication_role =
-- replica): resetting the map must not drop a segment a rule names
ALTER TABLE loyalty.segment ENABLE ALWAYS TRIGGER segment_campaign_rule_delete;

/* functions: codes (admin) */

CREATE FUNCTION loyalty.generate_codes(campaign_id bigint, count integer, pattern text,
									   customer_ids text[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'coupon_generate_codes'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.generate_codes(bigint, integer, text, text[]) IS
	'Create count single-use random codes from a pattern (''SMR-####-####''), never equal to a stored code; with customer_ids, one code bound to each';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.generate_codes(bigint, integer, text, text[])'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.add_public_code(campaign_id bigint, code text,
										max_uses bigint DEFAULT NULL,
										customer_id text DEFAULT NULL)
RETURNS loyalty.coupon_code
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c loyalty.coupon_code;
BEGIN
	IF campaign_id IS NULL OR code IS NULL THEN
		RAISE EXCEPTION 'campaign_id and code must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	c := loyalty.vanity_code(code);
	IF max_uses IS NOT NULL AND max_uses < 1 THEN
		RAISE EXCEPTION 'max_uses must be at least 1 (null: no limit of its own)'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF customer_id = '' OR length(customer_id) > 256 THEN
		RAISE EXCEPTION 'invalid customer_id'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A customer_id must have 1 to 256 bytes.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.campaign t WHERE t.campaign_id = add_public_code.campaign_id) THEN
		RAISE EXCEPTION 'campaign % does not exist', add_public_code.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO loyalty.coupon AS k (code, campaign_id, customer_id, max_uses)
	VALUES (c, add_public_code.campaign_id, add_public_code.customer_id, add_public_code.max_uses)
	ON CONFLICT ON CONSTRAINT coupon_code_key DO NOTHING;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'coupon code % already exists', c
			USING ERRCODE = 'unique_violation';
	END IF;
	RETURN c;
END;
$$;

COMMENT ON FUNCTION loyalty.add_public_code(bigint, text, bigint, text) IS
	'Add a public (vanity) code such as SUMMER25 to a campaign; max_uses null = limited only by the campaign''s caps';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.add_public_code(bigint, text, bigint, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* functions: lifecycle (app) */

CREATE FUNCTION loyalty.validate_coupon(code text, customer_id text, order_context jsonb,
										order_ref text DEFAULT NULL,
										OUT valid boolean, OUT reason text,
										OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_validate'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.validate_coupon(text, text, jsonb, text) IS
	'Read-only check of a code for a customer and an order: (valid, reason, discount); reason is a stable token';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.validate_coupon(text, text, jsonb, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.validate_coupon(code text, customer_id text, amount numeric,
										order_ref text DEFAULT NULL,
										OUT valid boolean, OUT reason text,
										OUT discount numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_validate_amount'
LANGUAGE C STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.validate_coupon(text, text, numeric, text) IS
	'Read-only check of a code for an order given by its amount only';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.validate_coupon(text, text, numeric, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.reserve_coupon(code text, customer_id text, order_ref text,
									   order_context jsonb,
									   ttl interval DEFAULT '15 minutes',
									   OUT discount numeric, OUT expires_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_reserve'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, jsonb, interval) IS
	'Hold one unit of every cap of a code for a checkout until expires_at; redeem_coupon of the same order consumes it';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.reserve_coupon(text, text, text, jsonb, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.reserve_coupon(code text, customer_id text, order_ref text,
									   amount numeric,
									   ttl interval DEFAULT '15 minutes',
									   OUT discount numeric, OUT expires_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'coupon_reserve_amount'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.reserve_coupon(text, text, text, numeric, interval) IS
	'Reserve a code for an order given by its amount only';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.reserve_coupon(text, text, text, numeric, interval)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.redeem_coupon(code text, customer_id text, order_ref text,
									  order_context jsonb)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_redeem'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, jsonb) IS
	'Redeem a code for an order, atomically; returns the discount; a repeat for the same order and code returns the first discount; failures raise LY0nn';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.redeem_coupon(text, text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.redeem_coupon(code text, customer_id text, order_ref text,
									  amount numeric)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_redeem_amount'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.redeem_coupon(text, text, text, numeric) IS
	'Redeem a code for an order given by its amount only';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.redeem_coupon(text, text, text, numeric)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.rollback_redemption(order_ref text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'coupon_rollback'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.rollback_redemption(text) IS
	'Cancel / refund: reverse an order''s redemptions (uses given back, history kept), release its reservations, close the order; false if nothing to give back';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.rollback_redemption(text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty.coupon_update_order(customer_id text, order_ref text,
											 order_context jsonb)
RETURNS numeric
AS 'MODULE_PATHNAME', 'coupon_update_context'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION loyalty.coupon_update_order(text, text, jsonb) IS
	'An open checkout''s cart changed: the order takes the new context and its live reservations are checked again and re-priced (caps unchanged); returns their total discount; LY023 once a coupon of the order is redeemed';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_update_order(text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * Release one reservation of an order, leaving its other coupons alone.
 * Lock order as every lifecycle call: order row, then the coupon row.  A
 * released hold stops counting against the caps at the commit.  A coupon
 * already redeemed for the order is not released (LY022): take its
 * discount back with coupon_return_lines or rollback_redemption.
 */
CREATE FUNCTION loyalty.coupon_release(customer_id text, order_ref text, code text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	owner text;
	o record;
	k record;
	-- a variable, not clock_timestamp() in the UPDATEs: Citus refuses a
	-- volatile function in an UPDATE of a distributed table
	now_ts timestamptz := clock_timestamp();
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR code IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref and code must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- the order row under its owner (one statement per table: routed on Citus)
	SELECT w.customer_id INTO owner FROM loyalty.coupon_order_owner w
	WHERE w.order_ref = coupon_release.order_ref;
	SELECT t.customer_id, t.state INTO o FROM loyalty.coupon_order t
	WHERE t.customer_id = owner AND t.order_ref = coupon_release.order_ref FOR NO KEY UPDATE;
	IF NOT FOUND OR o.state = 'rolled_back' THEN
		RETURN false;
	END IF;
	IF o.customer_id <> coupon_release.customer_id THEN
		RAISE EXCEPTION 'coupon cannot be released: order_conflict'
			USING ERRCODE = 'LY020',
				  DETAIL = jsonb_build_object('reason', 'order_conflict', 'code', NULL,
											 'order_ref', coupon_release.order_ref)::text,
				  HINT = 'This order reference was used with another customer.';
	END IF;
	SELECT c.coupon_id, c.code::text AS printed INTO k FROM loyalty.coupon c
	WHERE c.code OPERATOR(loyalty.=) CAST(coupon_release.code AS loyalty.coupon_code)
	FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	IF EXISTS (SELECT 1 FROM loyalty.redemption r
			   WHERE r.customer_id = o.customer_id AND r.order_ref = coupon_release.order_ref
				 AND r.coupon_id = k.coupon_id AND r.kind = 'redeem'
				 AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
								 WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)) THEN
		RAISE EXCEPTION 'coupon % cannot be released: already_redeemed', k.printed
			USING ERRCODE = 'LY022',
				  DETAIL = jsonb_build_object('reason', 'already_redeemed', 'code', k.printed,
											 'order_ref', coupon_release.order_ref)::text,
				  HINT = 'The coupon is redeemed for this order; take its discount back with coupon_return_lines or rollback_redemption.';
	END IF;
	UPDATE loyalty.reservation h SET state = 'released', ended_at = now_ts
	WHERE h.customer_id = o.customer_id AND h.order_ref = coupon_release.order_ref
	  AND h.coupon_id = k.coupon_id AND h.state = 'held';
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	UPDATE loyalty.coupon_order t SET updated_at = now_ts
	WHERE t.customer_id = o.customer_id AND t.order_ref = coupon_release.order_ref;
	RETURN true;
END;
$$;

COMMENT ON FUNCTION loyalty.coupon_release(text, text, text) IS
	'Release the reservation of one code of an open order (its other coupons stay); false if the order holds none; LY022 if the code is redeemed for it';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_release(text, text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The coupon discount of an order per line of its context: one row per
 * active redemption or live reservation and line (items in their order,
 * line 1 first), with what partial returns took back.  A coupon without
 * lines (plain amount, free shipping) has one row with line null.
 */
CREATE FUNCTION loyalty.coupon_order_lines(customer_id text, order_ref text)
RETURNS TABLE (code loyalty.coupon_code, state text, line integer, sku text,
			   quantity bigint, discount numeric, returned numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL THEN
		RAISE EXCEPTION 'customer_id and order_ref must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY
	WITH o AS (
		SELECT t.context FROM loyalty.coupon_order t
		WHERE t.order_ref = coupon_order_lines.order_ref
		  AND t.customer_id = coupon_order_lines.customer_id AND t.state = 'open'),
	a AS (
		SELECT r.coupon_id, 'redeemed'::text AS state, r.discount, r.line_discounts
		FROM loyalty.redemption r
		WHERE r.customer_id = coupon_order_lines.customer_id
		  AND r.order_ref = coupon_order_lines.order_ref AND r.kind = 'redeem'
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
						  WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)
		UNION ALL
		SELECT h.coupon_id, 'reserved', h.discount, h.line_discounts
		FROM loyalty.reservation h
		WHERE h.customer_id = coupon_order_lines.customer_id
		  AND h.order_ref = coupon_order_lines.order_ref AND h.state = 'held'
		  AND h.expires_at > clock_timestamp())
	SELECT c.code, a.state, l.n::integer,
		   (o.context -> 'items' -> (l.n::integer - 1)) ->> 'sku',
		   ((o.context -> 'items' -> (l.n::integer - 1)) ->> 'quantity')::bigint,
		   coalesce(l.d, a.discount),
		   coalesce((SELECT sum(rl.discount) FROM loyalty.coupon_return_line rl
					 WHERE rl.customer_id = coupon_order_lines.customer_id
					   AND rl.order_ref = coupon_order_lines.order_ref
					   AND rl.coupon_id = a.coupon_id
					   AND rl.line IS NOT DISTINCT FROM l.n::integer), 0)
	FROM o CROSS JOIN a
	JOIN loyalty.coupon c ON c.coupon_id = a.coupon_id
	CROSS JOIN LATERAL (SELECT u.d, u.n FROM unnest(a.line_discounts) WITH ORDINALITY AS u(d, n)
						UNION ALL
						SELECT NULL::numeric, NULL::bigint WHERE a.line_discounts IS NULL) l
	ORDER BY a.coupon_id, l.n;
END;
$$;

COMMENT ON FUNCTION loyalty.coupon_order_lines(text, text) IS
	'The coupon discount of an open order per code and line of its order context (lines of one code sum exactly to its discount), with what partial returns took back';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_order_lines(text, text)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * A partial return: the returned quantities of lines of the order (lines
 * as its context lists them: [{"line": 2, "quantity": 1}], or "sku" when
 * exactly one line has it) take back the matching part of each redeemed
 * coupon's discount on those lines, proportionally:
 *	taken back so far on a line = round(line discount * units returned so
 *	far / units of the line), half up to the currency's minor units,
 * so that returning every unit, in any number of returns, takes back
 * exactly the line's discount.  Recorded in coupon_return,
 * coupon_return_line and as one 'return' row per code in the redemption
 * ledger (uses 0: a partial return gives no use back; rollback_redemption
 * does).  Idempotent on (order_ref, return_ref): a repeat with the same
 * lines returns the first amount, other lines raise LY024.  A
 * free-shipping or plain-amount discount has no lines and is not touched.
 */
CREATE FUNCTION loyalty.coupon_return_lines(customer_id text, order_ref text,
											return_ref text, lines jsonb)
RETURNS numeric
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	o record;
	req jsonb;
	prev record;
	items jsonb;
	nitems integer;
	total numeric := 0;
	red record;
	taken numeric;
	now_ts timestamptz := clock_timestamp();
BEGIN
	IF customer_id IS NULL OR order_ref IS NULL OR return_ref IS NULL OR lines IS NULL THEN
		RAISE EXCEPTION 'customer_id, order_ref, return_ref and lines must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(return_ref) NOT BETWEEN 1 AND 256 OR octet_length(order_ref) NOT BETWEEN 1 AND 256
	   OR octet_length(customer_id) NOT BETWEEN 1 AND 256 THEN
		RAISE EXCEPTION 'invalid customer_id, order_ref or return_ref'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Each must have 1 to 256 bytes.';
	END IF;
	SELECT t.customer_id, t.state, t.context INTO o FROM loyalty.coupon_order t
	WHERE t.customer_id = coupon_return_lines.customer_id
	  AND t.order_ref = coupon_return_lines.order_ref FOR NO KEY UPDATE;
	IF NOT FOUND OR o.customer_id <> coupon_return_lines.customer_id THEN
		RAISE EXCEPTION 'order % of customer % has no coupons', order_ref, customer_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	items := o.context -> 'items';
	IF jsonb_typeof(items) IS DISTINCT FROM 'array' THEN
		RAISE EXCEPTION 'order % has no lines', order_ref
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Its order context has no "items" (a plain amount, or an order recorded by 0.2.0).';
	END IF;
	nitems := jsonb_array_length(items);
	IF jsonb_typeof(lines) <> 'array' OR jsonb_array_length(lines) = 0 THEN
		RAISE EXCEPTION 'invalid return lines'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'lines must be a non-empty JSON array of {"line": n, "quantity": q} (or "sku" instead of "line").';
	END IF;

	-- the request as {"line": quantity}, checked
	IF EXISTS (SELECT 1 FROM jsonb_array_elements(lines) e
			   WHERE jsonb_typeof(e) <> 'object'
				  OR NOT CASE
						 WHEN e ? 'line' THEN
							 jsonb_typeof(e -> 'line') = 'number'
							 AND (e ->> 'line')::numeric BETWEEN 1 AND nitems
							 AND (e ->> 'line')::numeric = trunc((e ->> 'line')::numeric)
						 ELSE
							 jsonb_typeof(e -> 'sku') = 'string'
							 AND (SELECT count(*) FROM jsonb_array_elements(items) i
								  WHERE i ->> 'sku' = e ->> 'sku') = 1
						 END
				  OR NOT coalesce(jsonb_typeof(e -> 'quantity') = 'number'
								  AND (e ->> 'quantity')::numeric BETWEEN 1 AND 1000000
								  AND (e ->> 'quantity')::numeric = trunc((e ->> 'quantity')::numeric), false)) THEN
		RAISE EXCEPTION 'invalid return lines'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Each element needs "line" (1 to %s) or a "sku" that exactly one line has, and a whole "quantity" of at least 1.', nitems);
	END IF;
	SELECT jsonb_object_agg(q.line, q.quantity ORDER BY q.line) INTO req
	FROM (SELECT r.line, sum(r.quantity) AS quantity
		  FROM (SELECT CASE WHEN e ? 'line' THEN (e ->> 'line')::integer
							ELSE (SELECT i.n::integer FROM jsonb_array_elements(items) WITH ORDINALITY i(v, n)
								  WHERE i.v ->> 'sku' = e ->> 'sku')
					   END AS line,
					   (e ->> 'quantity')::bigint AS quantity
				FROM jsonb_array_elements(lines) e) r
		  GROUP BY r.line) q;

	-- a repeat of the return
	SELECT r.quantities, r.amount INTO prev FROM loyalty.coupon_return r
	WHERE r.customer_id = coupon_return_lines.customer_id
	  AND r.order_ref = coupon_return_lines.order_ref AND r.return_ref = coupon_return_lines.return_ref;
	IF FOUND THEN
		IF prev.quantities = req THEN
			RETURN prev.amount;
		END IF;
		RAISE EXCEPTION 'return % of order % cannot be recorded: return_conflict', return_ref, order_ref
			USING ERRCODE = 'LY024',
				  DETAIL = jsonb_build_object('reason', 'return_conflict', 'order_ref', order_ref,
											 'return_ref', return_ref)::text,
				  HINT = 'This return reference was used for other lines of the order.';
	END IF;
	IF o.state = 'rolled_back' THEN
		RAISE EXCEPTION 'order % cannot take a return: order_rolled_back', order_ref
			USING ERRCODE = 'LY021',
				  DETAIL = jsonb_build_object('reason', 'order_rolled_back', 'code', NULL,
											 'order_ref', order_ref)::text,
				  HINT = 'This order was rolled back; its whole discount was given back.';
	END IF;

	-- never more units back than the line has
	PERFORM 1 FROM jsonb_each_text(req) j
	WHERE j.value::bigint + coalesce((SELECT sum((r.quantities ->> j.key)::bigint) FROM loyalty.coupon_return r
									  WHERE r.customer_id = coupon_return_lines.customer_id
										AND r.order_ref = coupon_return_lines.order_ref), 0)
		  > ((items -> (j.key::integer - 1)) ->> 'quantity')::bigint;
	IF FOUND THEN
		RAISE EXCEPTION 'invalid return lines'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'More units would be returned than a line of the order has.';
	END IF;

	INSERT INTO loyalty.coupon_return (customer_id, order_ref, return_ref, quantities, amount, created_at)
	VALUES (customer_id, order_ref, return_ref, req, 0, now_ts);

	FOR red IN
		SELECT r.coupon_id, r.campaign_id, r.currency, r.line_discounts
		FROM loyalty.redemption r
		WHERE r.customer_id = coupon_return_lines.customer_id
		  AND r.order_ref = coupon_return_lines.order_ref AND r.kind = 'redeem'
		  AND r.line_discounts IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM loyalty.redemption x
						  WHERE x.customer_id = r.customer_id AND x.reverses = r.redemption_id)
		ORDER BY r.coupon_id
	LOOP
		INSERT INTO loyalty.coupon_return_line (customer_id, order_ref, return_ref, coupon_id, line, quantity, discount)
		SELECT customer_id, order_ref, return_ref, red.coupon_id, x.line, x.quantity, x.taken
		FROM (SELECT j.key::integer AS line, j.value::bigint AS quantity,
					 round(red.line_discounts[j.key::integer] * (p.before + j.value::bigint)
						   / ((items -> (j.key::integer - 1)) ->> 'quantity')::bigint,
						   loyalty.currency_decimals(red.currency))
					 - round(red.line_discounts[j.key::integer] * p.before
							 / ((items -> (j.key::integer - 1)) ->> 'quantity')::bigint,
							 loyalty.currency_decimals(red.currency)) AS taken
			  FROM jsonb_each_text(req) j
			  CROSS JOIN LATERAL (SELECT coalesce(sum((r.quantities ->> j.key)::bigint), 0) AS before
								  FROM loyalty.coupon_return r
								  WHERE r.customer_id = coupon_return_lines.customer_id
									AND r.order_ref = coupon_return_lines.order_ref
									AND r.return_ref <> coupon_return_lines.return_ref) p) x
		WHERE x.taken > 0;
		SELECT coalesce(sum(rl.discount), 0) INTO taken FROM loyalty.coupon_return_line rl
		WHERE rl.customer_id = coupon_return_lines.customer_id
		  AND rl.order_ref = coupon_return_lines.order_ref AND rl.return_ref = coupon_return_lines.return_ref
		  AND rl.coupon_id = red.coupon_id;
		IF taken > 0 THEN
			INSERT INTO loyalty.redemption (kind, coupon_id, campaign_id, customer_id, order_ref,
											uses, discount, on_shipping, currency, created_at)
			VALUES ('return', red.coupon_id, red.campaign_id, customer_id, order_ref,
					0, -taken, false, red.currency, now_ts);
			total := total + taken;
		END IF;
	END LOOP;
	-- the discount budgets of the campaigns get back what was taken back
	-- (lock order step 4b, coupon_store.c; doc/budgets.md)
	IF total > 0 THEN
		PERFORM 1 FROM loyalty.campaign_budget b
		WHERE b.campaign_id IN (SELECT r.campaign_id FROM loyalty.redemption r
								WHERE r.order_ref = coupon_return_lines.order_ref AND r.kind = 'redeem')
		ORDER BY b.campaign_id FOR NO KEY UPDATE;
		IF FOUND THEN
			UPDATE loyalty.campaign_budget b SET discount_used = b.discount_used - t.taken
			FROM (SELECT r.campaign_id, sum(rl.discount) AS taken
				  FROM loyalty.coupon_return_line rl
				  JOIN loyalty.redemption r
					ON r.order_ref = rl.order_ref AND r.coupon_id = rl.coupon_id AND r.kind = 'redeem'
				  WHERE rl.customer_id = coupon_return_lines.customer_id
					AND rl.order_ref = coupon_return_lines.order_ref
					AND rl.return_ref = coupon_return_lines.return_ref
				  GROUP BY r.campaign_id) t
			WHERE b.campaign_id = t.campaign_id;
		END IF;
	END IF;
	UPDATE loyalty.coupon_return r SET amount = total
	WHERE r.customer_id = coupon_return_lines.customer_id
	  AND r.order_ref = coupon_return_lines.order_ref AND r.return_ref = coupon_return_lines.return_ref;
	UPDATE loyalty.coupon_order t SET updated_at = now_ts
	WHERE t.customer_id = coupon_return_lines.customer_id AND t.order_ref = coupon_return_lines.order_ref;
	RETURN total;
END;
$$;

COMMENT ON FUNCTION loyalty.coupon_return_lines(text, text, text, jsonb) IS
	'Partial return: take back the coupon discount of the returned units of order lines, proportionally (exact, half up per line on the cumulative units); idempotent on (order_ref, return_ref); returns the amount taken back';

SELECT loyalty._register_function('app'::pg_catalog.text, 'loyalty.coupon_return_lines(text, text, text, jsonb)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.campaign_stats AS
SELECT c.campaign_id,
	   c.name,
	   c.kind,
	   c.currency,
	   CASE WHEN c.paused THEN 'paused'
			WHEN coalesce(pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'),
											  c.ends_on::pg_catalog.timestamp OPERATOR(pg_catalog.+) '1 day'::pg_catalog.interval),
						  c.ends_at) <= pg_catalog.now() THEN 'ended'
			WHEN c.starts_at IS NOT NULL AND c.starts_at > pg_catalog.now() THEN 'scheduled'
			ELSE 'active' END AS status,
	   coalesce(k.codes, 0) AS codes,
	   coalesce(r.redemptions, 0) AS redemptions,
	   coalesce(r.rollbacks, 0) AS rollbacks,
	   coalesce(r.redemptions, 0) - coalesce(r.rollbacks, 0) AS active_redemptions,
	   coalesce(r.customers, 0) AS customers,
	   coalesce(r.discount_total, 0) AS discount_total,
	   coalesce(h.active_reservations, 0) AS active_reservations,
	   c.total_cap,
	   CASE WHEN c.total_cap IS NOT NULL THEN
			greatest(c.total_cap - (coalesce(r.redemptions, 0) - coalesce(r.rollbacks, 0))
					 - coalesce(h.active_reservations, 0), 0)
	   END AS remaining_cap
FROM loyalty.campaign c
LEFT JOIN (SELECT campaign_id, count(*) AS codes
		   FROM loyalty.coupon GROUP BY campaign_id) k
	   ON k.campaign_id = c.campaign_id
LEFT JOIN (SELECT campaign_id,
				  count(*) FILTER (WHERE kind = 'redeem') AS redemptions,
				  count(*) FILTER (WHERE kind = 'reversal') AS rollbacks,
				  count(DISTINCT customer_id) FILTER (WHERE kind = 'redeem') AS customers,
				  sum(discount) AS discount_total
		   FROM loyalty.redemption GROUP BY campaign_id) r
	   ON r.campaign_id = c.campaign_id
LEFT JOIN (SELECT campaign_id, count(*) AS active_reservations
		   FROM loyalty.reservation
		   WHERE state = 'held' AND expires_at > pg_catalog.now()
		   GROUP BY campaign_id) h
	   ON h.campaign_id = c.campaign_id;

COMMENT ON VIEW loyalty.campaign_stats IS
	'Per campaign: codes, redemptions, rollbacks, active redemptions, customers, net discount total, active reservations, remaining cap';

COMMENT ON COLUMN loyalty.campaign_stats.campaign_id IS 'Campaign';
COMMENT ON COLUMN loyalty.campaign_stats.name IS 'Campaign name';
COMMENT ON COLUMN loyalty.campaign_stats.kind IS 'percent, fixed, free_shipping, buy_x_get_y or free_item';
COMMENT ON COLUMN loyalty.campaign_stats.currency IS 'Currency of the campaign''s amounts (ISO 4217)';
COMMENT ON COLUMN loyalty.campaign_stats.status IS 'paused, ended, scheduled or active, now';
COMMENT ON COLUMN loyalty.campaign_stats.codes IS 'Codes of the campaign (generated, public and bound)';
COMMENT ON COLUMN loyalty.campaign_stats.redemptions IS 'Redemptions, rolled back ones included';
COMMENT ON COLUMN loyalty.campaign_stats.rollbacks IS 'Redemptions rolled back (cancel, refund)';
COMMENT ON COLUMN loyalty.campaign_stats.active_redemptions IS 'redemptions - rollbacks';
COMMENT ON COLUMN loyalty.campaign_stats.customers IS 'Distinct customers who redeemed';
COMMENT ON COLUMN loyalty.campaign_stats.discount_total IS 'Discount granted, net of rollbacks, in the campaign currency';
COMMENT ON COLUMN loyalty.campaign_stats.active_reservations IS 'Reservations held and not expired, now';
COMMENT ON COLUMN loyalty.campaign_stats.total_cap IS 'Total redemption cap (NULL: none)';
COMMENT ON COLUMN loyalty.campaign_stats.remaining_cap IS 'Units of the cap still free: total_cap - active redemptions - active reservations (NULL: no cap)';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_stats'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
