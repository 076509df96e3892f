
/* ---------------------------------------------------------------------------
 * campaign.sql: the campaign layer (marketing campaigns) -- tables
 *
 * loyalty.campaign is the COUPON campaign (discount rules, caps, codes).  A
 * marketing campaign (loyalty.marketing_campaign) is what a campaign job
 * runs: an audience (who), an offer (what: a code bound to the customer
 * from a coupon campaign, a public code of a coupon campaign, bonus points,
 * or nothing), a channel, consent and pressure rules, and optionally an
 * experiment (variants with weights and an untreated hold-out).
 *
 * Every audience member a run considers ends in exactly one of two logs,
 * keyed (customer_id, marketing_campaign_id, occurrence):
 *   campaign_publication  the customer was offered something (one row per
 *                         occurrence: publication is idempotent on it);
 *   campaign_filtered     the customer was not, and why (no_consent,
 *                         frequency_cap, quiet_period, holdout, ...).
 * The occurrence is '' for a one-shot audience, the year for birthdays and
 * signup anniversaries, the cart reference for abandoned carts, the last
 * order day for a dormancy episode, the snapshot id for a segment
 * transition: a recurring campaign offers once per occurrence.
 *
 * Citus: configuration tables (marketing_campaign, experiment,
 * experiment_variant, frequency_cap) are plain tables without triggers, so
 * they can become reference tables; every per-customer table has
 * customer_id text COLLATE "C" first in its primary key and in every unique
 * constraint, and no foreign key.  Frequency caps are counted per customer
 * from that customer's own publication rows (colocated on the customer's
 * shard); no global counter exists (doc/campaigns.md, "Caps on Citus").
 * ------------------------------------------------------------------------ */

/* tables: configuration */

CREATE TABLE loyalty.experiment (
	experiment_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	salt			text NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT experiment_name_key UNIQUE (name)
);

COMMENT ON TABLE loyalty.experiment IS
	'Experiments: a customer''s variant is a stable hash of (salt, customer_id) mapped onto the variants'' weights (loyalty.experiment_variant)';
COMMENT ON COLUMN loyalty.experiment.salt IS
	'Hashed with the customer key; distinct per experiment, so that assignments of two experiments are independent';

SELECT pg_catalog.pg_extension_config_dump('loyalty.experiment', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.experiment', 'experiment_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.experiment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.experiment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.experiment_variant (
	experiment_id	bigint NOT NULL,
	variant			text NOT NULL,
	weight			integer NOT NULL,
	holdout			boolean NOT NULL DEFAULT false,
	offer_kind		text,
	coupon_campaign_id bigint,
	code_pattern	text,
	public_code		text,
	bonus_points	bigint,
	position		integer NOT NULL,
	PRIMARY KEY (experiment_id, variant),
	CONSTRAINT experiment_variant_weight_check CHECK (weight >= 1 AND weight <= 10000),
	CONSTRAINT experiment_variant_offer_check
		CHECK (offer_kind IS NULL OR offer_kind IN ('code', 'public_code', 'points', 'none')),
	CONSTRAINT experiment_variant_holdout_check CHECK (NOT holdout OR offer_kind IS NULL)
);

COMMENT ON TABLE loyalty.experiment_variant IS
	'Variants of an experiment with their weights; a hold-out variant receives nothing; a variant''s offer columns, when offer_kind is set, replace the campaign''s offer';
COMMENT ON COLUMN loyalty.experiment_variant.holdout IS
	'True: the untreated control group; its members are logged in campaign_filtered with reason holdout and receive nothing';
COMMENT ON COLUMN loyalty.experiment_variant.offer_kind IS
	'NULL: the campaign''s own offer; else code, public_code, points or none with the columns below';
COMMENT ON COLUMN loyalty.experiment_variant.position IS
	'Order of the variant on the hash scale (the order the variants were given in)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.experiment_variant', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.experiment_variant'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.experiment_variant'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.marketing_campaign (
	marketing_campaign_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name			text NOT NULL,
	audience_kind	text NOT NULL,
	audience		jsonb NOT NULL DEFAULT '{}',
	offer_kind		text NOT NULL,
	coupon_campaign_id bigint,
	code_pattern	text,
	public_code		text,
	bonus_points	bigint,
	channel			text NOT NULL DEFAULT 'email',
	quiet_period	interval,
	experiment_id	bigint,
	schedule		text NOT NULL DEFAULT 'manual',
	starts_at		timestamptz,
	ends_at			timestamptz,
	paused			boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT marketing_campaign_name_key UNIQUE (name),
	CONSTRAINT marketing_campaign_audience_check
		CHECK (audience_kind IN ('segments', 'segment_entered', 'tier', 'dormant', 'query',
								 'customers', 'welcome', 'birthday', 'anniversary',
								 'abandoned_cart')
			   AND pg_catalog.jsonb_typeof(audience) = 'object'),
	CONSTRAINT marketing_campaign_offer_check
		CHECK (offer_kind IN ('code', 'public_code', 'points', 'none')),
	CONSTRAINT marketing_campaign_schedule_check CHECK (schedule IN ('manual', 'scheduled'))
);

COMMENT ON TABLE loyalty.marketing_campaign IS
	'Marketing campaigns (the campaign layer): audience, offer (pointing to a coupon campaign, loyalty.campaign, for codes), channel, quiet period, experiment, schedule; write through create_marketing_campaign / update_marketing_campaign';
COMMENT ON COLUMN loyalty.marketing_campaign.audience_kind IS
	'segments, segment_entered, tier, dormant, query, customers, welcome, birthday, anniversary or abandoned_cart; parameters in audience (doc/campaigns.md)';
COMMENT ON COLUMN loyalty.marketing_campaign.audience IS
	'Parameters of the audience, e.g. {"segments": ["At Risk"]}, {"days": 90}, {"query": "SELECT ..."}';
COMMENT ON COLUMN loyalty.marketing_campaign.offer_kind IS
	'code (a generated code of coupon_campaign_id bound to the customer), public_code (public_code of coupon_campaign_id), points (bonus_points on the ledger) or none (a message only)';
COMMENT ON COLUMN loyalty.marketing_campaign.coupon_campaign_id IS
	'The coupon campaign (loyalty.campaign.campaign_id) whose codes are offered';
COMMENT ON COLUMN loyalty.marketing_campaign.channel IS
	'Channel the offer is sent through (email, sms, push, ...): consent and per-channel frequency caps are checked for it';
COMMENT ON COLUMN loyalty.marketing_campaign.quiet_period IS
	'A customer offered this campaign is not offered it again (next occurrence) before this much time has passed';
COMMENT ON COLUMN loyalty.marketing_campaign.schedule IS
	'manual: published by publish_marketing_campaign only; scheduled: also by run_campaigns and the triggered-job procedures';

SELECT pg_catalog.pg_extension_config_dump('loyalty.marketing_campaign', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.marketing_campaign', 'marketing_campaign_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.marketing_campaign'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.marketing_campaign'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.frequency_cap (
	cap_id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	channel			text,
	max_offers		integer NOT NULL,
	period			interval NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT frequency_cap_check CHECK (max_offers >= 1 AND period > '0'::interval)
);

COMMENT ON TABLE loyalty.frequency_cap IS
	'Pressure limits across campaigns: at most max_offers publications per customer within any period ending at the publication, on one channel or (channel NULL) overall';

SELECT pg_catalog.pg_extension_config_dump('loyalty.frequency_cap', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.frequency_cap', 'cap_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.frequency_cap'::pg_catalog.regclass, 'SELECT, INSERT, UPDATE, DELETE'::pg_catalog.text);

/* tables: per customer */

CREATE TABLE loyalty.campaign_publication (
	customer_id		text COLLATE "C" NOT NULL,
	marketing_campaign_id bigint NOT NULL,
	occurrence		text NOT NULL DEFAULT '',
	variant			text,
	channel			text NOT NULL,
	published_at	timestamptz NOT NULL,
	offer_kind		text NOT NULL,
	coupon_campaign_id bigint,
	code			loyalty.coupon_code,
	bonus_points	bigint,
	points_reference text,
	PRIMARY KEY (customer_id, marketing_campaign_id, occurrence)
);

COMMENT ON TABLE loyalty.campaign_publication IS
	'Publication log: one row per customer offered a marketing campaign (per occurrence): variant, channel, time and what was given';
COMMENT ON COLUMN loyalty.campaign_publication.occurrence IS
	''''' for a one-shot audience; the year (birthday, anniversary), cart_ref (abandoned cart), last order day (dormant), snapshot id (segment_entered) for recurring ones';
COMMENT ON COLUMN loyalty.campaign_publication.variant IS 'Experiment variant the customer was assigned (NULL: no experiment)';
COMMENT ON COLUMN loyalty.campaign_publication.code IS 'The code given (offer code: bound to the customer; public_code: the public code)';
COMMENT ON COLUMN loyalty.campaign_publication.points_reference IS
	'Ledger reference of the bonus points (''mc:<campaign>:<occurrence>'' of the customer, idempotent)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_publication', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_publication'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_publication'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.campaign_filtered (
	customer_id		text COLLATE "C" NOT NULL,
	marketing_campaign_id bigint NOT NULL,
	occurrence		text NOT NULL DEFAULT '',
	reason			text NOT NULL,
	variant			text,
	filtered_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, marketing_campaign_id, occurrence),
	CONSTRAINT campaign_filtered_reason_check
		CHECK (reason IN ('no_consent', 'frequency_cap', 'quiet_period', 'holdout',
						  'already_offered', 'offer_unavailable'))
);

COMMENT ON TABLE loyalty.campaign_filtered IS
	'Filtered-out log: audience members a run did not offer the campaign, with the reason (the latest reason per occurrence, since filtered_at); a customer offered later keeps the row (the funnel) and gets a publication';
COMMENT ON COLUMN loyalty.campaign_filtered.reason IS
	'no_consent, frequency_cap, quiet_period, holdout (control group, final), already_offered, offer_unavailable';
COMMENT ON COLUMN loyalty.campaign_filtered.filtered_at IS 'When the run first filtered the customer for this reason';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_filtered', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_filtered'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_filtered'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.experiment_assignment (
	customer_id		text COLLATE "C" NOT NULL,
	experiment_id	bigint NOT NULL,
	variant			text NOT NULL,
	holdout			boolean NOT NULL,
	assigned_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, experiment_id)
);

COMMENT ON TABLE loyalty.experiment_assignment IS
	'The variant each customer drew in an experiment, recorded when a run first met the customer (the draw itself is a stable hash: recording never changes it)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.experiment_assignment', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.experiment_assignment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.experiment_assignment'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.consent (
	customer_id		text COLLATE "C" NOT NULL,
	channel			text NOT NULL,
	granted			boolean NOT NULL,
	source			text NOT NULL,
	changed_at		timestamptz NOT NULL,
	PRIMARY KEY (customer_id, channel)
);

COMMENT ON TABLE loyalty.consent IS
	'Current marketing consent per customer and channel (the latest change by changed_at); no row or granted false: no offer on that channel';

SELECT pg_catalog.pg_extension_config_dump('loyalty.consent', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.consent'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.consent_history (
	customer_id		text COLLATE "C" NOT NULL,
	history_id		bigint GENERATED ALWAYS AS IDENTITY,
	channel			text NOT NULL,
	granted			boolean NOT NULL,
	source			text NOT NULL,
	changed_at		timestamptz NOT NULL,
	recorded_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (customer_id, history_id)
);

COMMENT ON TABLE loyalty.consent_history IS
	'Every opt-in and opt-out recorded by set_consent (append-only): channel, granted, source, business time and recording time';

SELECT pg_catalog.pg_extension_config_dump('loyalty.consent_history', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.consent_history', 'history_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.consent_history'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.customer_dates (
	customer_id		text COLLATE "C" NOT NULL PRIMARY KEY,
	birth_date		date,
	signup_date		date,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE loyalty.customer_dates IS
	'Customer dates the app supplies (set_customer_dates): birthday and signup day, in the program time zone';

SELECT pg_catalog.pg_extension_config_dump('loyalty.customer_dates', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.customer_dates'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.cart (
	customer_id		text COLLATE "C" NOT NULL,
	cart_ref		text NOT NULL,
	amount			numeric NOT NULL,
	items			jsonb,
	updated_at		timestamptz NOT NULL,
	closed_at		timestamptz,
	PRIMARY KEY (customer_id, cart_ref)
);

CREATE INDEX cart_open_idx ON loyalty.cart (updated_at) WHERE closed_at IS NULL;

COMMENT ON TABLE loyalty.cart IS
	'Carts the app records (record_cart; close_cart when ordered or emptied): an open cart untouched for the campaign''s delay is abandoned';

SELECT pg_catalog.pg_extension_config_dump('loyalty.cart', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.cart'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.outbox (
	customer_id		text COLLATE "C" NOT NULL,
	outbox_id		bigint GENERATED ALWAYS AS IDENTITY (CACHE 100),
	kind			text NOT NULL,
	event_key		text NOT NULL,
	channel			text,
	payload			jsonb NOT NULL,
	created_at		timestamptz NOT NULL,
	acked_at		timestamptz,
	PRIMARY KEY (customer_id, outbox_id),
	CONSTRAINT outbox_kind_check CHECK (kind IN ('offer', 'tier_change', 'points_expiry'))
);

-- offers are unique through their publication (one outbox row per new one)
CREATE UNIQUE INDEX outbox_event_key ON loyalty.outbox (customer_id, kind, event_key)
	WHERE kind <> 'offer';
CREATE INDEX outbox_pending_idx ON loyalty.outbox (outbox_id) WHERE acked_at IS NULL;

COMMENT ON TABLE loyalty.outbox IS
	'Events for the shop''s mailer: offers to send, tier changes, points-expiry warnings; claimed with outbox_claim (FOR UPDATE SKIP LOCKED), acknowledged by id with outbox_ack; a NOTIFY loyalty_outbox on commit';
COMMENT ON COLUMN loyalty.outbox.event_key IS
	'What the event is about, unique per customer and kind: ''<marketing_campaign_id>:<occurrence>'' (offer), tier_history id (tier_change), ''<lot_id>:<expiry day>'' (points_expiry)';

SELECT pg_catalog.pg_extension_config_dump('loyalty.outbox', '');
SELECT pg_catalog.pg_extension_config_dump(
	pg_catalog.pg_get_serial_sequence('loyalty.outbox', 'outbox_id'), '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.outbox'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
