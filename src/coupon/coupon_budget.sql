
/* ---------------------------------------------------------------------------
 * coupon_budget.sql: discount budgets and per-period redemption caps of
 * coupon campaigns (issue 15, item 6; doc/budgets.md)
 *
 * A campaign may have, besides its total and per-customer caps, a total
 * discount budget (money: the sum of the discounts of its active
 * redemptions, net of partial returns, plus those its live reservations
 * hold, never exceeds it) and a redemption cap per calendar period (day,
 * ISO week from Monday, or month, in the program time zone).  Both are kept
 * exact under concurrency like the total cap: counters in
 * loyalty.campaign_budget and loyalty.campaign_period_use, written only
 * under the lock of the campaign's budget row (lock order step 4b, after
 * the capped campaign row, before the customer lock; coupon_store.c).
 * redeem adds, rollback_redemption and coupon_return_lines give back.
 * ------------------------------------------------------------------------ */

/* tables */

CREATE TABLE loyalty.campaign_budget (
	campaign_id		bigint PRIMARY KEY,
	discount_budget	numeric,
	period			text,
	period_cap		bigint,
	discount_used	numeric NOT NULL DEFAULT 0,
	updated_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT campaign_budget_period_check
		CHECK ((period IS NULL) = (period_cap IS NULL)
			   AND (period IS NULL OR period IN ('day', 'week', 'month'))
			   AND (period_cap IS NULL OR period_cap >= 0)),
	CONSTRAINT campaign_budget_used_within
		CHECK (discount_used >= 0
			   AND (discount_budget IS NULL OR discount_used <= discount_budget))
);

COMMENT ON TABLE loyalty.campaign_budget IS
	'Discount budget and per-period redemption cap of a coupon campaign (write through loyalty.set_campaign_budget); a campaign without a row has neither';
COMMENT ON COLUMN loyalty.campaign_budget.discount_budget IS
	'Total discount the campaign may grant, in its currency (null: no money budget)';
COMMENT ON COLUMN loyalty.campaign_budget.period IS
	'day, week (ISO, from Monday) or month, in the program time zone; null: no period cap';
COMMENT ON COLUMN loyalty.campaign_budget.period_cap IS
	'Redemptions allowed per period (null: none)';
COMMENT ON COLUMN loyalty.campaign_budget.discount_used IS
	'Discount of the campaign''s active redemptions net of partial returns: maintained by redeem, rollback and returns under this row''s lock, recounted when the budget is set';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_budget', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_budget'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE TABLE loyalty.campaign_period_use (
	campaign_id		bigint NOT NULL,
	period_start	date NOT NULL,
	uses			bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (campaign_id, period_start)
);

COMMENT ON TABLE loyalty.campaign_period_use IS
	'Active redemptions of a campaign with a period cap, per period (first day of the day, ISO week or month in the program time zone); written under the lock of the campaign''s budget row';

SELECT pg_catalog.pg_extension_config_dump('loyalty.campaign_period_use', '');
SELECT loyalty._register_relation('admin'::pg_catalog.text, 'loyalty.campaign_period_use'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

/* functions */

/*
 * The first day of the period containing "at" in the program time zone
 * (loyalty.settings, no row: UTC): the day itself, the Monday of its ISO
 * week, or the first of its month.  Read at every call, so a change of the
 * zone applies at once (redemptions already counted stay in the period
 * they were counted in).
 */
CREATE FUNCTION loyalty._campaign_period_start(period text, at timestamptz)
RETURNS date
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.date_trunc($1,
		pg_catalog.timezone(coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text), $2))::pg_catalog.date
$$;

COMMENT ON FUNCTION loyalty._campaign_period_start(text, timestamptz) IS
	'Internal: first day of the day / ISO week / month containing at, in the program time zone';

CREATE FUNCTION loyalty._campaign_budget_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'coupon_campaign_changed'
LANGUAGE C;

COMMENT ON FUNCTION loyalty._campaign_budget_changed() IS
	'Internal trigger: a campaign budget changed; invalidate the campaign caches of all backends';

-- every column but the counter discount_used, which redemptions update
CREATE TRIGGER campaign_budget_changed
	AFTER INSERT OR DELETE OR TRUNCATE ON loyalty.campaign_budget
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_budget_changed();
CREATE TRIGGER campaign_budget_config_changed
	AFTER UPDATE OF campaign_id, discount_budget, period, period_cap ON loyalty.campaign_budget
	FOR EACH STATEMENT EXECUTE FUNCTION loyalty._campaign_budget_changed();

/*
 * Set (or, with every argument null, remove) a campaign's discount budget
 * and period cap.  Behind the exclusive campaign gate, like update_campaign:
 * redemptions in flight finish first, later ones see the new limits.  The
 * counters are recounted from the ledger: discount_used from the active
 * redemptions net of returns, the current period's uses from the
 * redemptions made in it.  A budget below what is already granted is
 * refused.
 */
CREATE FUNCTION loyalty.set_campaign_budget(campaign_id bigint,
											discount_budget numeric DEFAULT NULL,
											period text DEFAULT NULL,
											period_cap bigint DEFAULT NULL)
RETURNS loyalty.campaign_budget
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cur text;
	decimals integer;
	used numeric;
	this_period date;
	res loyalty.campaign_budget;
BEGIN
	IF campaign_id IS NULL THEN
		RAISE EXCEPTION 'campaign_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF (period IS NULL) <> (period_cap IS NULL)
	   OR period NOT IN ('day', 'week', 'month') OR period_cap < 0 THEN
		RAISE EXCEPTION 'invalid campaign budget: a period cap needs period day, week or month and a period_cap of at least 0'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF discount_budget < 0 OR discount_budget >= 1e15 THEN
		RAISE EXCEPTION 'invalid campaign budget: discount_budget must lie in [0, 10^15)'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM loyalty._campaign_gate(set_campaign_budget.campaign_id);
	SELECT c.currency INTO cur FROM loyalty.campaign c
	WHERE c.campaign_id = set_campaign_budget.campaign_id FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'campaign % does not exist', set_campaign_budget.campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	decimals := loyalty.currency_decimals(cur);
	IF discount_budget OPERATOR(pg_catalog.<>) pg_catalog.trunc(discount_budget, decimals) THEN
		RAISE EXCEPTION 'invalid campaign budget: discount_budget % has more decimals than % allows',
			discount_budget, cur
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF discount_budget IS NULL AND period IS NULL THEN
		DELETE FROM loyalty.campaign_budget b WHERE b.campaign_id = set_campaign_budget.campaign_id;
		DELETE FROM loyalty.campaign_period_use p WHERE p.campaign_id = set_campaign_budget.campaign_id;
		RETURN NULL;
	END IF;

	SELECT coalesce(sum(r.discount), 0) INTO used FROM loyalty.redemption r
	WHERE r.campaign_id = set_campaign_budget.campaign_id;
	IF used > discount_budget THEN
		RAISE EXCEPTION 'invalid campaign budget: discount_budget % is below the % already granted',
			discount_budget, used
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	DELETE FROM loyalty.campaign_period_use p WHERE p.campaign_id = set_campaign_budget.campaign_id;
	IF period IS NOT NULL THEN
		this_period := loyalty._campaign_period_start(period, now());
		INSERT INTO loyalty.campaign_period_use (campaign_id, period_start, uses)
		SELECT set_campaign_budget.campaign_id, this_period, coalesce(sum(r.uses), 0)
		FROM loyalty.redemption r
		WHERE r.campaign_id = set_campaign_budget.campaign_id
		  AND (r.kind = 'redeem' AND loyalty._campaign_period_start(period, r.created_at) = this_period
			   OR r.kind = 'reversal' AND loyalty._campaign_period_start(period,
					(SELECT o.created_at FROM loyalty.redemption o WHERE o.redemption_id = r.reverses)) = this_period);
	END IF;
	INSERT INTO loyalty.campaign_budget AS b (campaign_id, discount_budget, period, period_cap, discount_used, updated_at)
	VALUES (set_campaign_budget.campaign_id, set_campaign_budget.discount_budget,
			set_campaign_budget.period, set_campaign_budget.period_cap, used, now())
	ON CONFLICT ON CONSTRAINT campaign_budget_pkey DO UPDATE
	SET discount_budget = excluded.discount_budget, period = excluded.period,
		period_cap = excluded.period_cap, discount_used = excluded.discount_used,
		updated_at = excluded.updated_at
	RETURNING * INTO res;
	RETURN res;
END;
$$;

COMMENT ON FUNCTION loyalty.set_campaign_budget(bigint, numeric, text, bigint) IS
	'Set a campaign''s discount budget and redemption cap per day / week / month (arguments by name; omitted = none; all omitted removes both); effective for every redemption that starts after the commit';

SELECT loyalty._register_function('admin'::pg_catalog.text, 'loyalty.set_campaign_budget(bigint, numeric, text, bigint)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.campaign_budget_status AS
SELECT b.campaign_id,
	   c.name,
	   c.currency,
	   b.discount_budget,
	   b.discount_used,
	   b.discount_budget - b.discount_used AS discount_left,
	   b.period,
	   b.period_cap,
	   p.period_start,
	   coalesce(u.uses, 0)::bigint AS period_uses,
	   CASE WHEN b.period_cap IS NOT NULL THEN pg_catalog.int8larger(b.period_cap - coalesce(u.uses, 0), 0) END AS period_left
FROM loyalty.campaign_budget b
JOIN loyalty.campaign c ON c.campaign_id = b.campaign_id
LEFT JOIN LATERAL (SELECT loyalty._campaign_period_start(b.period, pg_catalog.now()) AS period_start) p ON true
LEFT JOIN loyalty.campaign_period_use u
	   ON u.campaign_id = b.campaign_id AND u.period_start = p.period_start;

COMMENT ON VIEW loyalty.campaign_budget_status IS
	'Campaign budgets now: money granted and left, redemptions in the current period and left (live reservations not included)';
COMMENT ON COLUMN loyalty.campaign_budget_status.campaign_id IS 'The coupon campaign (loyalty.campaign)';
COMMENT ON COLUMN loyalty.campaign_budget_status.name IS 'Campaign name';
COMMENT ON COLUMN loyalty.campaign_budget_status.currency IS 'Currency of the budget (the campaign''s)';
COMMENT ON COLUMN loyalty.campaign_budget_status.discount_budget IS 'Total discount the campaign may grant (null: no money budget)';
COMMENT ON COLUMN loyalty.campaign_budget_status.discount_used IS 'Discount of active redemptions, net of partial returns';
COMMENT ON COLUMN loyalty.campaign_budget_status.discount_left IS 'discount_budget - discount_used (live reservations may hold part of it)';
COMMENT ON COLUMN loyalty.campaign_budget_status.period IS 'day, week or month (program time zone); null: no period cap';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_cap IS 'Redemptions allowed per period';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_start IS 'First day of the current period';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_uses IS 'Active redemptions made in the current period';
COMMENT ON COLUMN loyalty.campaign_budget_status.period_left IS 'Redemptions left in the current period (live reservations may hold some)';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_budget_status'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
