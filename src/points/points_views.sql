
/* ---------------------------------------------------------------------------
 * points_views.sql: BI views that join the RFM and the points families
 *
 * After the points parts, since they read both families' tables.  Like
 * every BI view (rfm_track.sql), only pg_catalog types in the columns
 * analysts join and filter on, and a comment on every column.
 * ------------------------------------------------------------------------ */

/* views */

/*
 * One row per customer: every tracked customer (loyalty.customer_stats)
 * and every points account without tracked orders.
 *
 * RFM: the score of the last refresh_segments and the values it was
 * computed from, as of that refresh's as_of, read from the folded
 * statistics (pending tracked changes are folded by the next refresh or
 * fold_tracking): recency from the last order up to as_of, frequency and
 * monetary from the day buckets of the scoring window (its first day:
 * as_of's local time in the program's zone minus scoring_window), as
 * customer_rfm(customer_id, as_of) computes them (the regression test
 * bi_views compares the two for every customer).
 *
 * Points: without running points code.  points_account.available and
 * pending are as last settled (expire_points); the balance now is the sum
 * of the account's open lots, a lot past its available_at counting as
 * available and one past its expires_at for nothing, as points_balance()
 * adds them (points_balance.c, PointsBalanceAddLot).  That is one index
 * probe of the open lots per customer (points_lot_open_idx), the cost of
 * a join; the tier is the account's column.
 *
 * Collations: customer_stats keys are text COLLATE "C", points keys the
 * database default.  The view's customer_id is "C"; the points tables are
 * joined with an explicit COLLATE "default" so that their primary keys
 * serve the join (equality is the same under both: both are
 * deterministic).
 */
CREATE VIEW loyalty.customer_profile AS
WITH last AS (
	SELECT p.as_of, p.scoring_window, p.monetary
	FROM loyalty.segment_snapshot p
	ORDER BY p.snapshot_id DESC LIMIT 1
), cfg AS MATERIALIZED (
	SELECT l.as_of, l.monetary, z.tz,
		   ((l.as_of AT TIME ZONE z.tz) - l.scoring_window)::date AS start_day,
		   (l.as_of AT TIME ZONE z.tz)::date AS end_day,
		   (SELECT max(p.retained_from) FROM loyalty.segment_snapshot p) AS floor_day,
		   /* frequency as the tracking counts it: rows, or days with an order */
		   EXISTS (SELECT 1 FROM loyalty.tracked_table t WHERE t.frequency_unit = 'days') AS by_days
	FROM last l
	CROSS JOIN (SELECT coalesce((SELECT st.timezone FROM loyalty.settings st), 'UTC') AS tz) z
), rfm AS (
	SELECT s.customer_id, s.first_order, s.last_order, s.order_count, s.spend_total,
		   s.score, s.segment, s.since, c.as_of AS scored_as_of,
		   /* the last order up to as_of, as refresh_segments takes it */
		   CASE WHEN s.score IS NULL OR s.last_order IS NULL THEN NULL
				WHEN s.last_order <= c.as_of THEN s.last_order
				WHEN b.last_day IS NOT NULL AND (c.floor_day IS NULL OR b.last_day >= c.floor_day)
					THEN least(b.last_day::timestamp AT TIME ZONE c.tz, c.as_of)
				WHEN s.first_order <= c.as_of
					THEN greatest(s.first_order, (c.floor_day - 1)::timestamp AT TIME ZONE c.tz)
		   END AS last_up_to,
		   CASE WHEN s.score IS NOT NULL
				THEN CASE WHEN c.by_days THEN coalesce(b.days, 0) ELSE coalesce(b.orders, 0) END
		   END AS frequency,
		   CASE WHEN s.score IS NULL THEN NULL
				WHEN c.monetary = 'average'
					THEN CASE WHEN c.by_days THEN CASE WHEN coalesce(b.days, 0) = 0 THEN 0
													   ELSE b.spend / b.days END
							  WHEN coalesce(b.orders, 0) = 0 THEN 0
							  ELSE b.spend / b.orders END
				ELSE coalesce(b.spend, 0) END AS monetary
	FROM loyalty.customer_stats s
	LEFT JOIN cfg c ON true
	LEFT JOIN LATERAL (
		SELECT sum(e.orders) FILTER (WHERE e.day >= c.start_day) AS orders,
			   count(*) FILTER (WHERE e.day >= c.start_day AND e.orders > 0) AS days,
			   sum(e.spend) FILTER (WHERE e.day >= c.start_day) AS spend,
			   max(e.day) FILTER (WHERE e.orders > 0) AS last_day
		FROM loyalty.day_buckets_entries(s.days) e
		WHERE s.score IS NOT NULL AND e.day <= c.end_day
	) b ON true
), keys AS (
	SELECT r.customer_id, r.first_order, r.last_order, r.order_count, r.spend_total,
		   /* whole days: the day field of the (hour-justified) difference */
		   extract(day FROM r.scored_as_of - r.last_up_to)::integer AS recency_days,
		   r.frequency, r.monetary, r.score, r.segment, r.since,
		   CASE WHEN r.score IS NOT NULL THEN r.scored_as_of END AS scored_as_of
	FROM rfm r
	UNION ALL
	SELECT a.customer_id COLLATE "C", NULL, NULL, NULL, NULL, NULL, NULL, NULL,
		   NULL, NULL, NULL, NULL
	FROM loyalty.points_account a
	WHERE NOT EXISTS (SELECT 1 FROM loyalty.customer_stats s
					  WHERE s.customer_id = a.customer_id COLLATE "C")
)
SELECT k.customer_id,
	   k.last_order,
	   k.recency_days,
	   k.frequency,
	   k.monetary,
	   loyalty.recency(k.score) AS r,
	   loyalty.frequency(k.score) AS f,
	   loyalty.monetary(k.score) AS m,
	   k.score::text AS score,
	   k.segment,
	   k.since AS segment_since,
	   a.tier,
	   coalesce(pts.available, 0)::bigint AS points_available,
	   coalesce(pts.pending, 0)::bigint AS points_pending,
	   a.tier_since,
	   k.first_order,
	   k.order_count AS orders_total,
	   k.spend_total,
	   k.scored_as_of,
	   k.score AS rfm_score
FROM keys k
LEFT JOIN loyalty.points_account a ON a.customer_id = k.customer_id COLLATE "default"
LEFT JOIN LATERAL (
	SELECT sum(l.remaining) FILTER (WHERE l.state = 'available' OR l.available_at <= pg_catalog.now()) AS available,
		   sum(l.remaining) FILTER (WHERE l.state <> 'available'
									AND (l.available_at IS NULL OR l.available_at > pg_catalog.now())) AS pending
	FROM loyalty.points_lot l
	WHERE l.customer_id = a.customer_id
	  AND l.state <> 'closed'
	  AND (l.expires_at IS NULL OR l.expires_at > pg_catalog.now())
) pts ON true;

COMMENT ON VIEW loyalty.customer_profile IS
	'One row per customer: last order, the RFM values, scores and segment of the last refresh, tier and points balance now';
COMMENT ON COLUMN loyalty.customer_profile.customer_id IS
	'Customer key (text, collation "C"); a bigint shop key joins as o.customer_id::text = customer_id (doc/bi.md)';
COMMENT ON COLUMN loyalty.customer_profile.last_order IS
	'Time of the latest tracked order, as last folded (NULL: none, or points only)';
COMMENT ON COLUMN loyalty.customer_profile.recency_days IS
	'Whole days from the last order made by scored_as_of to scored_as_of (NULL: no order by then, or not scored)';
COMMENT ON COLUMN loyalty.customer_profile.frequency IS
	'Orders in the scoring window ending at scored_as_of, or days with an order when the tracking counts days (tracked_table.frequency_unit; NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.monetary IS
	'Spend in that window, or the average basket (rfm_config.monetary at the refresh; NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.r IS 'Recency score of the last refresh';
COMMENT ON COLUMN loyalty.customer_profile.f IS 'Frequency score of the last refresh';
COMMENT ON COLUMN loyalty.customer_profile.m IS 'Monetary score of the last refresh';
COMMENT ON COLUMN loyalty.customer_profile.score IS
	'RFM score of the last refresh as text, three digits (''543''; NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.segment IS 'Segment of the last refresh (NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.segment_since IS
	'as_of of the refresh that put the customer into this segment';
COMMENT ON COLUMN loyalty.customer_profile.tier IS 'Current tier (NULL: no points account or no tier)';
COMMENT ON COLUMN loyalty.customer_profile.points_available IS
	'Spendable points now, as points_balance() counts them (0: no account)';
COMMENT ON COLUMN loyalty.customer_profile.points_pending IS
	'Points earned but not yet available now (0: no account)';
COMMENT ON COLUMN loyalty.customer_profile.tier_since IS 'Since when the customer holds the tier';
COMMENT ON COLUMN loyalty.customer_profile.first_order IS 'Time of the earliest tracked order, as last folded';
COMMENT ON COLUMN loyalty.customer_profile.orders_total IS 'Tracked orders, all time, as last folded';
COMMENT ON COLUMN loyalty.customer_profile.spend_total IS 'Tracked amounts (orders and refunds), all time, as last folded';
COMMENT ON COLUMN loyalty.customer_profile.scored_as_of IS
	'as_of of the last refresh_segments, the time recency_days, frequency and monetary are computed as of (NULL: not scored)';
COMMENT ON COLUMN loyalty.customer_profile.rfm_score IS
	'The score as loyalty.rfm_score (its operators need schema loyalty on the search_path, or OPERATOR(loyalty.=))';
SELECT loyalty._register_relation('analyst'::pg_catalog.text, 'loyalty.customer_profile'::pg_catalog.regclass, 'SELECT'::pg_catalog.text);
