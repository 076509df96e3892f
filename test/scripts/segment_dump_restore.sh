#!/usr/bin/env bash
# Scripted check: the segment map survives pg_dump / restore exactly, in the
# cases where the default rows recreated by CREATE EXTENSION could be lost or
# duplicated:
#   1. the untouched default map (nothing dumped, builtin rows recreated);
#   2. a map whose every segment was renamed (translated) and reordered, so
#      that no restored name collides with a default one;
# each restored with pg_restore (one transaction per table), with
# --single-transaction, as a plain script through psql, and as a plain
# --inserts script through psql --single-transaction (one INSERT per row, each
# committed on its own, could never pass the check at commit), and with
# pg_restore -j 4 from a directory and from a custom format dump, several
# times: parallel restore loads loyalty.segment and loyalty.segment_rule in
# either order, each in its own transaction (no foreign key links them, and
# the first restored row of either table drops the default map).
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
src=loyalty_segdump_src dst=loyalty_segdump_dst
work=$(mktemp -d /tmp/loyalty-segdump.XXXXXX)
trap 'rm -rf "$work"; dropdb --if-exists "$src"; dropdb --if-exists "$dst"' EXIT

map_of() {
	psql -At -d "$1" -c "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM loyalty.segment x" \
		-c "SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM loyalty.segment_rule x" \
		-c "SELECT string_agg(coalesce(loyalty.segment_of(rfm_score), '?'), ',' ORDER BY rfm_score) FROM loyalty.segment_map"
}

# restore $1 (custom dump) or $2 (plain script) into $dst with method $3,
# then compare with $src
check_restore() {
	local method=$1
	dropdb --if-exists "$dst"
	createdb "$dst"
	case $method in
		custom) pg_restore -d "$dst" --exit-on-error "$work/dump.custom" ;;
		single) pg_restore -d "$dst" --exit-on-error --single-transaction "$work/dump.custom" ;;
		parallel) pg_restore -d "$dst" --exit-on-error -j 4 "$work/dump.dir" ;;
		parallel-custom) pg_restore -d "$dst" --exit-on-error -j 4 "$work/dump.custom" ;;
		plain) psql -d "$dst" -f "$work/dump.sql" >/dev/null ;;
		inserts) psql -d "$dst" --single-transaction -f "$work/dump-inserts.sql" >/dev/null ;;
	esac
	if [ "$(map_of "$src")" != "$(map_of "$dst")" ]; then
		echo "segment map differs after restore ($scenario, $method)" >&2
		diff <(map_of "$src") <(map_of "$dst") >&2 || true
		exit 1
	fi
	# the restored map passes the coverage check (run, then rolled back)
	psql -d "$dst" -c "BEGIN" -c "UPDATE loyalty.segment_rule SET m_min = m_min" \
		-c "SET CONSTRAINTS ALL IMMEDIATE" -c "ROLLBACK"
	echo "ok: $scenario, $method"
}

run_scenario() {
	pg_dump -Fc -d "$src" -f "$work/dump.custom"
	rm -rf "$work/dump.dir"
	pg_dump -Fd -d "$src" -f "$work/dump.dir"
	pg_dump -Fp -d "$src" -f "$work/dump.sql"
	pg_dump -Fp --inserts -d "$src" -f "$work/dump-inserts.sql"
	for method in "$@"; do
		check_restore "$method"
	done
}

dropdb --if-exists "$src"
createdb "$src"
psql -d "$src" -c "CREATE EXTENSION loyalty"

scenario="default map"
run_scenario custom single parallel parallel-custom plain inserts
n=$(psql -At -d "$dst" -c "SELECT count(*) FROM loyalty.segment_rule WHERE builtin")
[ "$n" = 13 ] || { echo "restored default map is not builtin ($n rows)" >&2; exit 1; }

scenario="every segment renamed"
psql -d "$src" <<'SQL'
BEGIN;
UPDATE loyalty.segment SET display_order = display_order + 100;
UPDATE loyalty.segment SET name = CASE name
	WHEN 'Champions' THEN 'Champions (DE)' WHEN 'Loyal' THEN 'Treue Kunden'
	WHEN 'Potential Loyalist' THEN 'Potenziell treu' WHEN 'New' THEN 'Neukunden'
	WHEN 'Promising' THEN 'Vielversprechend' WHEN 'Need Attention' THEN 'Aufmerksamkeit'
	WHEN 'About to Sleep' THEN 'Schlummernd' WHEN 'At Risk' THEN 'Gefährdet'
	WHEN 'Cannot Lose Them' THEN 'Nicht verlieren' WHEN 'Hibernating' THEN 'Winterschlaf'
	WHEN 'Lost' THEN 'Verloren' END,
	display_order = 112 - display_order;
COMMIT;
SQL
run_scenario custom single plain inserts parallel parallel-custom parallel parallel-custom parallel parallel-custom
n=$(psql -At -d "$dst" -c "SELECT count(*) FROM loyalty.segment WHERE name IN ('Champions', 'Lost') OR builtin")
[ "$n" = 0 ] || { echo "default segments came back after restore" >&2; exit 1; }

# the default map edited: default names kept (the restore must replace
# those rows, not collide with them), a new segment that rules name (the
# rules may be loaded before it), a segment deleted, a rule changed
scenario="edited default map"
psql -d "$src" -c "SELECT loyalty.reset_segment_map()" >/dev/null
psql -d "$src" -f "$(dirname "$0")/dump_restore.d/20_segment.sql" >/dev/null
run_scenario custom parallel parallel-custom parallel parallel-custom parallel parallel-custom
n=$(psql -At -d "$dst" -c "SELECT count(*) FROM loyalty.check_integrity()")
[ "$n" = 0 ] || { echo "dangling segment rules after restore" >&2; exit 1; }
echo "segment map dump/restore: all scenarios identical"
