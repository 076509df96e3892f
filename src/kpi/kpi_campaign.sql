
/* ---------------------------------------------------------------------------
 * kpi_campaign.sql: campaign KPIs per marketing campaign and variant
 * (issue 15, item 8; doc/campaign_kpi.md)
 *
 * The audience of a campaign is its experiment's assigned customers
 * (treated variants and hold-out alike), or without an experiment every
 * customer offered or filtered out.  Offers and filter reasons come from
 * the publication logs, redemptions and discount cost from the coupon
 * ledger, the revenue of redeemed orders from the coupon orders, and the
 * outcomes (orders and spend in the N days before and after each member's
 * offer) from the live RFM day buckets (loyalty.customer_stats.days): the
 * orders table is never scanned.  (jit and merge joins off: the planner's
 * row estimates of these joins of aggregated logs are far too high, so it
 * would compile the query (seconds) and sort every side for merge joins,
 * where hash joins take a third of the time; bench/campaign_kpi.bench.sh.)
 * Lift: incremental spend per member of
 * each treated variant against the hold-out, with a 95% Welch interval,
 * CUPED-adjusted by the pre-period spend (loyalty.lift_interval's
 * statistics, collected per variant in the one pass of the other totals:
 * loyalty._lift_moments and _lift_estimate).
 * ------------------------------------------------------------------------ */

/* indexes: the KPIs read one campaign's rows of the campaign logs */

CREATE INDEX campaign_publication_campaign_idx ON loyalty.campaign_publication (marketing_campaign_id);
COMMENT ON INDEX loyalty.campaign_publication_campaign_idx IS
	'Publications of one marketing campaign (campaign KPIs)';
CREATE INDEX campaign_filtered_campaign_idx ON loyalty.campaign_filtered (marketing_campaign_id);
COMMENT ON INDEX loyalty.campaign_filtered_campaign_idx IS
	'Filtered-out customers of one marketing campaign (campaign KPIs, funnel)';
CREATE INDEX experiment_assignment_experiment_idx ON loyalty.experiment_assignment (experiment_id);
COMMENT ON INDEX loyalty.experiment_assignment_experiment_idx IS
	'Assignments of one experiment (campaign KPIs: audience per variant)';

/* functions */

CREATE FUNCTION loyalty.day_buckets_window(days loyalty.day_buckets, from_day date, to_day date,
										   OUT orders bigint, OUT spend numeric)
RETURNS record
AS 'MODULE_PATHNAME', 'kpi_day_buckets_window'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION loyalty.day_buckets_window(loyalty.day_buckets, date, date) IS
	'Orders and exact spend of the days from_day..to_day (inclusive) of one customer''s live day buckets';

SELECT loyalty._register_function('all'::pg_catalog.text, 'loyalty.day_buckets_window(loyalty.day_buckets, date, date)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

CREATE FUNCTION loyalty._kpi_windows(days loyalty.day_buckets, ref_day date, window_days integer)
RETURNS numeric[]
AS 'MODULE_PATHNAME', 'kpi_member_windows'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION loyalty._kpi_windows(loyalty.day_buckets, date, integer) IS
	'Internal: {orders, spend} of the window_days days before ref_day and of the window_days days from it, from one customer''s day buckets (null buckets: zeros)';

/*
 * One row per member of a marketing campaign's audience with what the KPIs
 * aggregate.  ref_day: the day of the member's offer (assignment,
 * publication or filtering) in the program time zone; the outcome window
 * is ref_day .. ref_day + window_days - 1, the pre-period the window_days
 * days before.
 */
CREATE FUNCTION loyalty._campaign_members(marketing_campaign_id bigint, window_days integer)
RETURNS TABLE (customer_id text, variant text, holdout boolean, ref_day date, offered boolean,
			   filtered_reason text, redeemed boolean, redemptions bigint, discount numeric,
			   redeemed_revenue numeric, redeemed_margin numeric, windows numeric[])
LANGUAGE sql STABLE
AS $$
	WITH mc AS (
		SELECT m.marketing_campaign_id, m.experiment_id, m.coupon_campaign_id,
			   coalesce((SELECT s.timezone FROM loyalty.settings s), 'UTC'::pg_catalog.text) AS tz
		FROM loyalty.marketing_campaign m WHERE m.marketing_campaign_id OPERATOR(pg_catalog.=) $1
	), pub AS (
		SELECT p.customer_id, min(p.published_at) AS published_at
		FROM loyalty.campaign_publication p
		WHERE p.marketing_campaign_id OPERATOR(pg_catalog.=) $1
		GROUP BY p.customer_id
	), filt AS (
		SELECT DISTINCT ON (f.customer_id) f.customer_id, f.reason, f.variant, f.filtered_at
		FROM loyalty.campaign_filtered f
		WHERE f.marketing_campaign_id OPERATOR(pg_catalog.=) $1
		ORDER BY f.customer_id, f.filtered_at DESC
	), members AS (
		SELECT a.customer_id, a.variant, a.holdout, a.assigned_at AS ref_at
		FROM mc JOIN loyalty.experiment_assignment a ON a.experiment_id OPERATOR(pg_catalog.=) mc.experiment_id
		UNION ALL
		SELECT coalesce(pub.customer_id, filt.customer_id), NULL, false,
			   coalesce(pub.published_at, filt.filtered_at)
		FROM mc, pub FULL JOIN filt ON filt.customer_id OPERATOR(pg_catalog.=) pub.customer_id
		WHERE mc.experiment_id IS NULL
	), coupons AS (
		-- the coupon campaigns the campaign and its variants offer
		SELECT mc.coupon_campaign_id AS campaign_id FROM mc WHERE mc.coupon_campaign_id IS NOT NULL
		UNION
		SELECT v.coupon_campaign_id FROM mc JOIN loyalty.experiment_variant v
			ON v.experiment_id OPERATOR(pg_catalog.=) mc.experiment_id
		WHERE v.coupon_campaign_id IS NOT NULL
	), red AS (
		-- active redemptions of those campaigns by the audience, net of
		-- rollbacks and partial returns, with their orders
		SELECT r.customer_id, r.created_at, r.uses, r.discount, r.kind, o.amount,
			   coalesce((o.context OPERATOR(pg_catalog.->>) 'margin')::pg_catalog.numeric,
						o.amount OPERATOR(pg_catalog.-) (o.context OPERATOR(pg_catalog.->>) 'cost')::pg_catalog.numeric) AS margin
		FROM loyalty.redemption r
		JOIN loyalty.coupon_order o ON o.order_ref OPERATOR(pg_catalog.=) r.order_ref
		WHERE r.campaign_id IN (SELECT c.campaign_id FROM coupons c)
		  AND o.state OPERATOR(pg_catalog.<>) 'rolled_back'
	), red_by AS (
		SELECT red.customer_id, min(red.created_at) FILTER (WHERE red.kind OPERATOR(pg_catalog.=) 'redeem') AS first_at,
			   sum(red.uses) AS redemptions, sum(red.discount) AS discount,
			   sum(red.amount) FILTER (WHERE red.kind OPERATOR(pg_catalog.=) 'redeem') AS revenue,
			   sum(red.margin OPERATOR(pg_catalog.-) red.discount) FILTER (WHERE red.kind OPERATOR(pg_catalog.=) 'redeem') AS margin
		FROM red GROUP BY red.customer_id
	)
	SELECT m.customer_id::pg_catalog.text, m.variant, m.holdout, d.ref_day,
		   pub.customer_id IS NOT NULL,
		   CASE WHEN pub.customer_id IS NULL THEN filt.reason END,
		   coalesce(rb.redemptions OPERATOR(pg_catalog.>) 0 AND rb.first_at OPERATOR(pg_catalog.>=) pub.published_at, false),
		   coalesce(rb.redemptions, 0)::pg_catalog.int8, coalesce(rb.discount, 0),
		   coalesce(rb.revenue, 0), rb.margin,
		   loyalty._kpi_windows(s.days, d.ref_day, $2)
	FROM mc
	CROSS JOIN members m
	CROSS JOIN LATERAL (SELECT pg_catalog.timezone(mc.tz, m.ref_at)::pg_catalog.date AS ref_day) d
	LEFT JOIN pub ON pub.customer_id OPERATOR(pg_catalog.=) m.customer_id
	LEFT JOIN filt ON filt.customer_id OPERATOR(pg_catalog.=) m.customer_id
	LEFT JOIN red_by rb ON rb.customer_id OPERATOR(pg_catalog.=) m.customer_id AND pub.customer_id IS NOT NULL
	LEFT JOIN loyalty.customer_stats s ON s.customer_id OPERATOR(pg_catalog.=) m.customer_id
$$;

COMMENT ON FUNCTION loyalty._campaign_members(bigint, integer) IS
	'Internal (inlined into the KPI queries, so not SECURITY DEFINER): the audience of a marketing campaign, one row per member: variant, hold-out, offered or filtered (reason), redemptions, discount, revenue and margin of redeemed orders, {orders, spend} before and from the offer (live day buckets)';


CREATE FUNCTION loyalty.campaign_members(marketing_campaign_id bigint, window_days integer DEFAULT 30)
RETURNS TABLE (customer_id text, variant text, holdout boolean, ref_day date, offered boolean,
			   filtered_reason text, redeemed boolean, redemptions bigint, discount numeric,
			   redeemed_revenue numeric, redeemed_margin numeric,
			   orders_before bigint, spend_before numeric, orders_after bigint, spend_after numeric)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_mergejoin = off
AS $$
	SELECT m.customer_id, m.variant, m.holdout, m.ref_day, m.offered, m.filtered_reason, m.redeemed,
		   m.redemptions, m.discount, m.redeemed_revenue, m.redeemed_margin,
		   m.windows[1]::pg_catalog.int8, m.windows[2], m.windows[3]::pg_catalog.int8, m.windows[4]
	FROM loyalty._campaign_members($1, $2) m
$$;

COMMENT ON FUNCTION loyalty.campaign_members(bigint, integer) IS
	'The audience of a marketing campaign, one row per member: variant, hold-out, offered or filtered (reason), redemptions, discount, revenue and margin of redeemed orders, orders and spend in the window_days before and from the offer (live day buckets)';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.campaign_members(bigint, integer)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/*
 * The KPI report of one marketing campaign: one row per variant (one row
 * with variant NULL without an experiment).  Lift of a treated variant:
 * mean spend in the window per member minus the hold-out's, 95% Welch
 * interval, CUPED-adjusted by the pre-period spend when cuped.  ROI =
 * (incremental margin - discount cost) / discount cost, the incremental
 * margin being the incremental revenue times margin_rate (by name; default:
 * the margin share of the redeemed orders when they carry a cost or margin,
 * else none).
 */
CREATE FUNCTION loyalty.campaign_kpi(marketing_campaign_id bigint, window_days integer DEFAULT 30,
									 cuped boolean DEFAULT true, margin_rate numeric DEFAULT NULL)
RETURNS TABLE (variant text, holdout boolean, audience bigint, offered bigint, filtered bigint,
			   redeemed bigint, redemption_rate double precision, discount_cost numeric,
			   redeemed_revenue numeric, redeemed_margin numeric, repurchase_rate double precision,
			   avg_basket_before numeric, avg_basket_after numeric,
			   revenue_per_member double precision, incremental_revenue_per_member double precision,
			   lift_lower double precision, lift_upper double precision, lift_df double precision,
			   incremental_revenue double precision, roi double precision)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
SET enable_mergejoin = off
AS $$
BEGIN
	IF marketing_campaign_id IS NULL OR window_days IS NULL OR cuped IS NULL THEN
		RAISE EXCEPTION 'marketing_campaign_id, window_days and cuped must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF window_days NOT BETWEEN 1 AND 3660 THEN
		RAISE EXCEPTION 'window_days must lie between 1 and 3660'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF margin_rate < 0 OR margin_rate > 1 THEN
		RAISE EXCEPTION 'margin_rate must lie between 0 and 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM loyalty.marketing_campaign m
				   WHERE m.marketing_campaign_id = campaign_kpi.marketing_campaign_id) THEN
		RAISE EXCEPTION 'marketing campaign % does not exist', campaign_kpi.marketing_campaign_id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	/*
	 * On Citus the members query (an SQL function called from here) runs
	 * on the coordinator's empty shells of the distributed tables and
	 * would report no audience: refused until it is written for Citus.
	 */
	IF loyalty._citus_is_distributed('loyalty.campaign_publication'::pg_catalog.regclass) THEN
		RAISE EXCEPTION 'campaign_kpi does not support Citus tables yet'
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'The campaign tables are distributed; the KPI query would read the coordinator''s empty shells of them.',
				  HINT = 'See doc/citus.md for what works on Citus.';
	END IF;
	RETURN QUERY
	-- one pass over the members: the per-variant totals and the moments of
	-- the lift (treated rows and hold-out rows apart), paired afterwards
	WITH v AS (
		SELECT m.variant, bool_or(m.holdout) AS holdout, count(*) AS audience,
			   count(*) FILTER (WHERE m.offered) AS offered,
			   count(*) FILTER (WHERE m.filtered_reason IS NOT NULL) AS filtered,
			   count(*) FILTER (WHERE m.redeemed) AS redeemed,
			   sum(m.discount) AS discount_cost, sum(m.redeemed_revenue) AS revenue,
			   sum(m.redeemed_margin) AS margin,
			   count(*) FILTER (WHERE m.redeemed AND m.redeemed_margin IS NOT NULL) AS with_margin,
			   count(*) FILTER (WHERE m.orders_after > 0) AS repurchasers,
			   sum(m.spend_before) AS spend_before, sum(m.orders_before) AS orders_before,
			   sum(m.spend_after) AS spend_after, sum(m.orders_after) AS orders_after,
			   loyalty._lift_moments(m.spend_after::double precision,
									 CASE WHEN campaign_kpi.cuped THEN m.spend_before::double precision END)
				   FILTER (WHERE NOT m.holdout) AS treated_moments,
			   loyalty._lift_moments(m.spend_after::double precision,
									 CASE WHEN campaign_kpi.cuped THEN m.spend_before::double precision END)
				   FILTER (WHERE m.holdout) AS control_moments
		FROM (SELECT x.variant, x.holdout, x.offered, x.filtered_reason, x.redeemed, x.discount,
					 x.redeemed_revenue, x.redeemed_margin, x.windows[1] AS orders_before,
					 x.windows[2] AS spend_before, x.windows[3] AS orders_after, x.windows[4] AS spend_after
			  FROM loyalty._campaign_members(campaign_kpi.marketing_campaign_id, campaign_kpi.window_days) x) m
		GROUP BY m.variant
	), lift AS (
		-- each treated variant against the hold-out, from the moments above
		SELECT v.variant, loyalty._lift_estimate(v.treated_moments, c.controls) AS e
		FROM v CROSS JOIN (SELECT array_agg(h.control_moments) AS controls FROM v h) c
		WHERE NOT v.holdout
	)
	SELECT v.variant, v.holdout, v.audience, v.offered, v.filtered, v.redeemed,
		   CASE WHEN v.offered > 0 THEN v.redeemed::double precision / v.offered END,
		   v.discount_cost, v.revenue,
		   CASE WHEN v.with_margin = v.redeemed AND v.redeemed > 0 THEN v.margin END,
		   v.repurchasers::double precision / v.audience,
		   CASE WHEN v.orders_before > 0 THEN round(v.spend_before / v.orders_before, 2) END,
		   CASE WHEN v.orders_after > 0 THEN round(v.spend_after / v.orders_after, 2) END,
		   (v.spend_after / v.audience)::double precision,
		   (l.e).difference, (l.e).lower, (l.e).upper, (l.e).df,
		   (l.e).difference * (l.e).n_treated,
		   CASE WHEN v.discount_cost > 0 AND (l.e).difference IS NOT NULL THEN
				((l.e).difference * (l.e).n_treated
				 * coalesce(campaign_kpi.margin_rate,
							CASE WHEN v.with_margin = v.redeemed AND v.revenue > 0
								 THEN (v.margin + v.discount_cost) / v.revenue END)::double precision
				 - v.discount_cost::double precision) / v.discount_cost::double precision END
	FROM v LEFT JOIN lift l ON l.variant IS NOT DISTINCT FROM v.variant
	ORDER BY v.holdout DESC, v.variant;
END;
$$;

COMMENT ON FUNCTION loyalty.campaign_kpi(bigint, integer, boolean, numeric) IS
	'KPI report of a marketing campaign per variant: audience, offered, filtered, redeemed, redemption rate, discount cost, revenue and margin of redeemed orders, repurchase rate and average basket before / after within window_days, incremental revenue per member vs the hold-out with a 95% Welch interval (CUPED on pre-period spend), ROI; optional arguments by name';

SELECT loyalty._register_function('analyst'::pg_catalog.text, 'loyalty.campaign_kpi(bigint, integer, boolean, numeric)'::pg_catalog.regprocedure, 'EXECUTE'::pg_catalog.text);

/* views */

CREATE VIEW loyalty.campaign_funnel AS
SELECT m.marketing_campaign_id, m.name, s.variant, s.step, s.reason, s.customers
FROM loyalty.marketing_campaign m
CROSS JOIN LATERAL (
	SELECT p.variant, 'offered'::text AS step, NULL::text AS reason, count(*) AS customers
	FROM loyalty.campaign_publication p
	WHERE p.marketing_campaign_id = m.marketing_campaign_id
	GROUP BY p.variant
	UNION ALL
	SELECT f.variant, 'filtered', f.reason, count(*)
	FROM loyalty.campaign_filtered f
	WHERE f.marketing_campaign_id = m.marketing_campaign_id
	  AND NOT EXISTS (SELECT 1 FROM loyalty.campaign_publication p
					  WHERE p.customer_id = f.customer_id
						AND p.marketing_campaign_id = f.marketing_campaign_id
						AND p.occurrence = f.occurrence)
	GROUP BY f.variant, f.reason
) s;

COMMENT ON VIEW loyalty.campaign_funnel IS
	'The audience funnel of every marketing campaign: customers offered, and filtered out by reason (no_consent, frequency_cap, holdout, ...), per variant';
COMMENT ON COLUMN loyalty.campaign_funnel.marketing_campaign_id IS 'The marketing campaign';
COMMENT ON COLUMN loyalty.campaign_funnel.name IS 'Its name';
COMMENT ON COLUMN loyalty.campaign_funnel.variant IS 'Experiment variant (null: no experiment)';
COMMENT ON COLUMN loyalty.campaign_funnel.step IS 'offered, or filtered (never offered for that occurrence)';
COMMENT ON COLUMN loyalty.campaign_funnel.reason IS 'Why filtered out (null for offered)';
COMMENT ON COLUMN loyalty.campaign_funnel.customers IS 'Customers (per occurrence) at this step';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_funnel'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);

CREATE VIEW loyalty.campaign_kpis AS
SELECT m.marketing_campaign_id, m.name, k.*
FROM loyalty.marketing_campaign m
CROSS JOIN LATERAL loyalty.campaign_kpi(m.marketing_campaign_id) k;

COMMENT ON VIEW loyalty.campaign_kpis IS
	'KPI report of every marketing campaign per variant with the defaults of loyalty.campaign_kpi (30-day window, CUPED, margin share of redeemed orders); filter on marketing_campaign_id';
COMMENT ON COLUMN loyalty.campaign_kpis.marketing_campaign_id IS 'The marketing campaign';
COMMENT ON COLUMN loyalty.campaign_kpis.name IS 'Its name';
COMMENT ON COLUMN loyalty.campaign_kpis.variant IS 'Experiment variant (null: no experiment)';
COMMENT ON COLUMN loyalty.campaign_kpis.holdout IS 'The hold-out (control) group: offered nothing';
COMMENT ON COLUMN loyalty.campaign_kpis.audience IS 'Members: assigned to the variant, or offered or filtered without an experiment';
COMMENT ON COLUMN loyalty.campaign_kpis.offered IS 'Members offered something';
COMMENT ON COLUMN loyalty.campaign_kpis.filtered IS 'Members filtered out and never offered (reasons: loyalty.campaign_funnel)';
COMMENT ON COLUMN loyalty.campaign_kpis.redeemed IS 'Offered members with an active redemption of the offered coupon campaign since the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.redemption_rate IS 'redeemed / offered';
COMMENT ON COLUMN loyalty.campaign_kpis.discount_cost IS 'Discount granted to the members by the offered coupon campaigns, net of rollbacks and returns';
COMMENT ON COLUMN loyalty.campaign_kpis.redeemed_revenue IS 'Order amount of the redeemed orders';
COMMENT ON COLUMN loyalty.campaign_kpis.redeemed_margin IS 'Margin of the redeemed orders after discount (order context "margin", or amount - "cost"); null unless every redeemed order carries one';
COMMENT ON COLUMN loyalty.campaign_kpis.repurchase_rate IS 'Share of members with an order in the window from the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.avg_basket_before IS 'Spend per order in the window before the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.avg_basket_after IS 'Spend per order in the window from the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.revenue_per_member IS 'Spend per member in the window from the offer';
COMMENT ON COLUMN loyalty.campaign_kpis.incremental_revenue_per_member IS 'Spend per member minus the hold-out''s (CUPED-adjusted); null for the hold-out and without one';
COMMENT ON COLUMN loyalty.campaign_kpis.lift_lower IS 'Lower end of the 95% Welch interval of incremental_revenue_per_member';
COMMENT ON COLUMN loyalty.campaign_kpis.lift_upper IS 'Upper end of the 95% Welch interval of incremental_revenue_per_member';
COMMENT ON COLUMN loyalty.campaign_kpis.lift_df IS 'Welch-Satterthwaite degrees of freedom of the interval';
COMMENT ON COLUMN loyalty.campaign_kpis.incremental_revenue IS 'incremental_revenue_per_member times the members of the variant';
COMMENT ON COLUMN loyalty.campaign_kpis.roi IS '(incremental margin - discount cost) / discount cost; null without a margin share';

SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.campaign_kpis'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
