#!/usr/bin/env bash
# Scripted check: live RFM statistics kept by 0.2.0 survive ALTER EXTENSION
# UPDATE to the current version (0.3.0 appends tracked changes to
# loyalty.customer_stats_delta and folds them), and tracking keeps working
# across it:
#   - with the new library installed but the schema still 0.2.0, tracked
#     writes succeed and are counted (the 0.2.0 way);
#   - the update keeps every customer_stats row as it was;
#   - after it, tracked writes append deltas, customer_rfm shows them at
#     once, a fold and a refresh agree with the orders and with
#     rfm_segmentation.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
extdir=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
db=loyalty_rfm_upgrade
cleanup() {
	as_root rm -f "$extdir/loyalty--0.2.0.sql"
	dropdb --if-exists "$db"
}
trap cleanup EXIT
as_root cp "$here/upgrade/loyalty--0.2.0.sql" "$extdir/"

dropdb --if-exists "$db"
createdb "$db"
psql -d "$db" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION loyalty VERSION '0.2.0';
CREATE SCHEMA up;
CREATE TABLE up.orders (id serial PRIMARY KEY, customer bigint, ordered_at timestamptz, amount numeric(10,2));
CREATE INDEX ON up.orders (customer);
INSERT INTO up.orders (customer, ordered_at, amount)
SELECT 1 + g % 40, timestamptz '2025-06-01 00:00+00' + g * interval '17 hours', 5 + g % 70
FROM generate_series(1, 600) g;
SELECT loyalty.track_orders('up.orders', 'customer', 'ordered_at', 'amount');
SELECT loyalty.refresh_segments('2026-11-01');
-- new library, old schema: tracked writes still work and count
INSERT INTO up.orders (customer, ordered_at, amount) VALUES (7, '2026-10-20 10:00+00', 99), (77, '2026-10-21 10:00+00', 1);
DELETE FROM up.orders WHERE customer = 8 AND ordered_at = (SELECT max(ordered_at) FROM up.orders WHERE customer = 8);
SQL

# the statistics must equal the orders (n: rows, spend, first, last)
check() {
	local what=$1 src=$2 bad
	bad=$(psql -At -d "$db" -c "
		WITH e AS (SELECT customer::text AS customer_id, count(*) AS n, sum(amount) AS spend,
						  min(ordered_at) AS first, max(ordered_at) AS last
				   FROM up.orders GROUP BY 1)
		SELECT count(*) FROM e FULL JOIN ($src) s USING (customer_id)
		WHERE (e.n, e.spend, e.first, e.last) IS DISTINCT FROM (s.n, s.spend, s.first, s.last)")
	[ "$bad" = 0 ] || { echo "$what: $bad customers' statistics differ from the orders" >&2; exit 1; }
}
folded="SELECT customer_id, row_count AS n, spend_total AS spend, first_order AS first, last_order AS last
		FROM loyalty.customer_stats WHERE row_count > 0"
live="SELECT r.customer_id, r.orders_total AS n, r.spend_total AS spend, r.first_order AS first, r.last_order AS last
	  FROM (SELECT DISTINCT customer::text AS c FROM up.orders UNION SELECT customer_id FROM loyalty.customer_stats) c
	  CROSS JOIN LATERAL loyalty.customer_rfm(c.c) r"
check "0.2.0 schema, new library" "$folded"
# the 0.2.0 columns of every row (0.3.0 adds order_days, first_day and
# first_day_spend, filled from the day buckets: checked below)
stats_md5="SELECT md5(string_agg((s.customer_id, s.row_count, s.order_count, s.spend_total, s.first_order,
		s.last_order, s.days, s.score, s.segment, s.since)::text, '|' ORDER BY customer_id))
	FROM loyalty.customer_stats s"
before=$(psql -At -d "$db" -c "$stats_md5")

psql -d "$db" -c "ALTER EXTENSION loyalty UPDATE"
after=$(psql -At -d "$db" -c "$stats_md5")
[ "$before" = "$after" ] || { echo "customer_stats changed by the update" >&2; exit 1; }
# the new all-time columns are filled from the day buckets (exact for
# history within bucket_retention; rebuild_tracking below makes all exact)
bad=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.customer_stats
	WHERE days IS NOT NULL AND (order_days = 0 OR first_day IS NULL OR first_day_spend IS NULL)")
[ "$bad" = 0 ] || { echo "$bad customers without all-time columns after the update" >&2; exit 1; }
check "after the update" "$live"

psql -d "$db" <<'SQL'
INSERT INTO up.orders (customer, ordered_at, amount) VALUES (7, '2026-10-25 10:00+00', 3), (78, '2026-10-26 10:00+00', 4);
UPDATE up.orders SET amount = amount + 1 WHERE customer = 9;
DELETE FROM up.orders WHERE customer = 10 AND ordered_at = (SELECT max(ordered_at) FROM up.orders WHERE customer = 10);
SQL
pending=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.customer_stats_delta")
[ "$pending" -gt 0 ] || { echo "tracked writes after the update appended no delta" >&2; exit 1; }
check "pending deltas, read live" "$live"
psql -d "$db" -c "SELECT loyalty.fold_tracking()" >/dev/null
check "after a fold" "$folded"
diff=$(psql -At -d "$db" -c "SET TimeZone = 'UTC'" -c "SELECT loyalty.refresh_segments('2026-11-02')" -c "
	SELECT count(*) FROM loyalty.rfm_segmentation('up.orders', 'customer', 'ordered_at', 'amount', '2026-11-02') b
	FULL JOIN loyalty.customer_segment l USING (customer_id)
	WHERE b.score::text IS DISTINCT FROM l.score::text OR b.segment IS DISTINCT FROM l.segment" | tail -1)
[ "$diff" = 0 ] || { echo "$diff customers differ from rfm_segmentation after the update" >&2; exit 1; }
# after rebuild_tracking the CLV summaries of the live statistics equal
# those of the orders (first orders older than bucket_retention included)
psql -d "$db" -c "SELECT loyalty.rebuild_tracking()" >/dev/null
bad=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.clv_summary_live('2026-11-02') l
	FULL JOIN loyalty.clv_summary('up.orders', 'customer', 'ordered_at', 'amount', '2026-11-02') b USING (customer_id)
	WHERE (l.frequency, l.recency, l.age, l.monetary_value) IS DISTINCT FROM (b.frequency, b.recency, b.age, b.monetary_value)")
[ "$bad" = 0 ] || { echo "$bad customers' CLV summaries differ from the orders after rebuild_tracking" >&2; exit 1; }
# a table tracked by 0.2.0 with a customer column of a type 0.3.0 refuses
# (an enum: its owner's casts must never run as loyalty's owner) stops the
# update with 42804 instead of failing every later write to that table
dropdb "$db"
createdb "$db"
psql -d "$db" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION loyalty VERSION '0.2.0';
CREATE TYPE public.cust AS ENUM ('a', 'b');
CREATE TABLE public.enum_orders (customer public.cust, ordered_at timestamptz, amount numeric);
-- what 0.2.0's track_orders left (this library refuses to track it)
INSERT INTO loyalty.tracked_table (orders, customer_column, ordered_at_column, amount_column)
VALUES ('public.enum_orders', 'customer', 'ordered_at', 'amount');
CREATE TRIGGER loyalty_rfm_track_insert AFTER INSERT ON public.enum_orders
	REFERENCING NEW TABLE AS loyalty_new FOR EACH STATEMENT
	EXECUTE FUNCTION loyalty._rfm_track_trigger('customer', 'ordered_at', 'amount');
SQL
if out=$(psql -d "$db" -v VERBOSITY=verbose -c "ALTER EXTENSION loyalty UPDATE" 2>&1); then
	echo "the update went through with a table tracked by an enum customer column" >&2; exit 1
fi
echo "$out" | grep -q "42804" || { echo "unexpected error from the refused update: $out" >&2; exit 1; }
got=$(psql -At -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'")
[ "$got" = 0.2.0 ] || { echo "refused update left version $got" >&2; exit 1; }
echo "rfm_upgrade_tracking: 0.2.0 statistics survive the update and tracking continues"
