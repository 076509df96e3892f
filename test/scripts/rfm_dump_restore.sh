#!/usr/bin/env bash
# Scripted check: live RFM tracking survives pg_dump / pg_restore and keeps
# working.  After a restore (custom format with one job and, three times,
# with pg_restore -j 4, and plain SQL through psql):
#   - loyalty.tracked_table, customer_stats (with its day buckets), the
#     pending tracked changes (customer_stats_delta), rfm_config
#     (edited), snapshots, change log and summary hold the same rows;
#   - the tracking triggers were restored on the application's table, call
#     loyalty's trigger function, and keep the statistics exact: orders
#     inserted, updated and deleted after the restore are counted;
#   - the next refresh continues the snapshot sequence and agrees with
#     rfm_segmentation.
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
src=loyalty_rfmdump_src dst=loyalty_rfmdump_dst
work=$(mktemp -d /tmp/loyalty-rfmdump.XXXXXX)
trap 'rm -rf "$work"; dropdb --if-exists "$src"; dropdb --if-exists "$dst"' EXIT
here=$(dirname "$0")

psql -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $src"
psql -d "$src" -c "CREATE EXTENSION loyalty"
psql -d "$src" -f "$here/dump_restore.d/30_rfm_track.sql" >/dev/null

tables="loyalty.tracked_table loyalty.customer_stats loyalty.customer_stats_delta loyalty.rfm_config loyalty.segment_snapshot
	loyalty.segment_change loyalty.segment_summary"
digest() {
	local t
	for t in $tables; do
		psql -At -d "$1" -c "SELECT '$t ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x"
	done
}
digest "$src" >"$work/src.txt"

# after the restore: same rows, working triggers, next refresh consistent
check_dst() {
	local how=$1
	digest "$dst" >"$work/dst.txt"
	if ! diff "$work/src.txt" "$work/dst.txt" >&2; then
		echo "$how: loyalty tables differ after restore" >&2
		exit 1
	fi
	n=$(psql -At -d "$dst" -c "SELECT count(*) FROM pg_trigger
		WHERE tgrelid = 'dump_shop.orders'::regclass AND tgfoid = 'loyalty._rfm_track_trigger'::regproc")
	[ "$n" = 4 ] || { echo "$how: $n tracking triggers restored, expected 4" >&2; exit 1; }
	psql -d "$dst" -c "SET TimeZone = 'UTC'" \
		-c "INSERT INTO dump_shop.orders (customer, ordered_at, amount, status)
			VALUES (5, '2026-10-23 10:00+00', 77, 'completed'), (123, '2026-10-23 11:00+00', 3, 'completed')" \
		-c "UPDATE dump_shop.orders SET status = 'cancelled' WHERE customer = 7" \
		-c "DELETE FROM dump_shop.orders WHERE customer = 8 AND amount > 40" \
		-c "SELECT loyalty.fold_tracking()" >/dev/null
	bad=$(psql -At -d "$dst" -c "
		WITH e AS (
			SELECT c, count(*) AS n, coalesce(sum(a), 0) AS spend, max(t) FILTER (WHERE a IS NULL OR a >= 0) AS last
			FROM (SELECT customer::text AS c, ordered_at AS t, amount AS a FROM dump_shop.orders WHERE status = 'completed'
				  UNION ALL
				  SELECT client, (sold_on::text || ' 00:00+00')::timestamptz, total FROM dump_shop.store_sales) o
			GROUP BY c)
		SELECT count(*) FROM e FULL JOIN (SELECT * FROM loyalty.customer_stats WHERE row_count > 0) s
			ON s.customer_id = e.c
		WHERE (e.n, e.spend, e.last) IS DISTINCT FROM (s.row_count, s.spend_total, s.last_order)")
	[ "$bad" = 0 ] || { echo "$how: $bad customers' statistics wrong after writes on the restored table" >&2; exit 1; }
	ok=$(psql -At -d "$dst" -c "SET TimeZone = 'UTC'" -c "
		WITH r AS (SELECT * FROM loyalty.refresh_segments('2026-10-24'))
		SELECT r.snapshot_id > (SELECT max(snapshot_id) FROM loyalty.segment_snapshot WHERE snapshot_id < r.snapshot_id)
		FROM r")
	[ "$ok" = t ] || { echo "$how: the snapshot sequence did not continue" >&2; exit 1; }
	diff=$(psql -At -d "$dst" -c "SET TimeZone = 'UTC'" -c "
		CREATE TEMP VIEW all_orders AS
			SELECT customer::text AS c, ordered_at AS t, amount AS a FROM dump_shop.orders WHERE status = 'completed'
			UNION ALL SELECT client, (sold_on::text || ' 00:00+00')::timestamptz, total FROM dump_shop.store_sales;
		SELECT count(*) FROM loyalty.rfm_segmentation('all_orders', 'c', 't', 'a', '2026-10-24', 4) b
		FULL JOIN loyalty.customer_segment l USING (customer_id)
		WHERE b.score::text IS DISTINCT FROM l.score::text OR b.segment IS DISTINCT FROM l.segment")
	[ "$diff" = 0 ] || { echo "$how: $diff customers differ from rfm_segmentation after restore" >&2; exit 1; }
	echo "$how: ok"
}

pg_dump -Fc -d "$src" -f "$work/dump.custom"
createdb "$dst"
pg_restore -d "$dst" --exit-on-error "$work/dump.custom"
check_dst "pg_restore"

# parallel restore loads the extension's tables in a varying order
for run in 1 2 3; do
	dropdb "$dst"
	createdb "$dst"
	pg_restore -d "$dst" --exit-on-error -j 4 "$work/dump.custom"
	check_dst "pg_restore -j 4 (run $run)"
done

dropdb "$dst"
pg_dump -d "$src" -f "$work/dump.sql"
createdb "$dst"
psql -d "$dst" -f "$work/dump.sql" >/dev/null
check_dst "plain script"
