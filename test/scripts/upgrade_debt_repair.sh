#!/usr/bin/env bash
# Scripted check: the 0.2.0 -> current update repairs the lifetime total of
# accounts hit by the 0.2.0 reversal defect (issue 11 class).  0.2.0 wrote a
# reversal with no lot to take back, no qualifying points and no amount (a
# non-qualifying earning spent entirely, then reversed into debt) with its
# plain-spend statement, which left lifetime_earned unchanged.  The rows
# below are what 0.2.0 wrote for that (the current library cannot serve a
# 0.2.0 schema, so they are written directly, as test/upgrade/fill-0.2.0.sql
# does): r1 is the damaged account, r2 a healthy one the update must not
# touch.  After the update check_integrity() is empty, r1's lifetime total
# is 0 and r2's row is unchanged.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
extdir=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
db=loyalty_up_debt
installed=()
cleanup() {
	local f
	for f in "${installed[@]}"; do as_root rm -f "$f"; done
	dropdb --if-exists "$db"
}
trap cleanup EXIT
as_root cp "$here/upgrade/loyalty--0.2.0.sql" "$extdir/"
installed+=("$extdir/loyalty--0.2.0.sql")

dropdb --if-exists "$db"
createdb "$db"
psql -d "$db" -c "CREATE EXTENSION loyalty VERSION '0.2.0'"
psql -d "$db" <<'SQL'
-- r1: earn 100 (qualifying => false), spend 100, reverse the earning: debt
-- 100, and (the defect) lifetime_earned still 100; r2: earn 50, healthy
INSERT INTO loyalty.points_account (customer_id, available, debt, lifetime_earned, qualifying)
VALUES ('r1', 0, 100, 100, 0), ('r2', 50, 0, 50, 50);
INSERT INTO loyalty.points_lot (lot_id, customer_id, state, points, remaining, earned_at)
OVERRIDING SYSTEM VALUE
VALUES (1, 'r1', 'closed', 100, 0, '2026-06-01'), (2, 'r2', 'available', 50, 50, '2026-06-01');
INSERT INTO loyalty.points_ledger (entry_id, customer_id, kind, points, reference, qualifying, debt_change,
								   lot_ids, lot_points, reverses, available_after, pending_after, debt_after, effective_at)
OVERRIDING SYSTEM VALUE
VALUES (1, 'r1', 'earn', 100, 'r1-reward', 0, 0, '{1}', '{100}', NULL, 100, 0, 0, '2026-06-01'),
	   (2, 'r1', 'spend', -100, 'r1-spend', 0, 0, '{1}', '{-100}', NULL, 0, 0, 0, '2026-06-02'),
	   (3, 'r1', 'reverse', -100, 'r1-reward', 0, 100, NULL, NULL, '{1}', 0, 0, 100, '2026-06-03'),
	   (4, 'r2', 'earn', 50, 'r2-order', 50, 0, '{2}', '{50}', NULL, 50, 0, 0, '2026-06-01');
INSERT INTO loyalty.points_qualifying (customer_id, month, points) VALUES ('r2', '2026-06-01', 50);
SQL
r2_before=$(psql -At -d "$db" -c "SELECT (a.available, a.pending, a.debt, a.lifetime_earned, a.qualifying, a.updated_at)::text FROM loyalty.points_account a WHERE customer_id = 'r2'")

psql -d "$db" -c "ALTER EXTENSION loyalty UPDATE"

problems=$(psql -At -d "$db" -c "SELECT string_agg(concat_ws(' ', problem, customer_id, detail), '; ') FROM loyalty.check_integrity()")
[ -z "$problems" ] || { echo "check_integrity() after the update: $problems" >&2; exit 1; }
r1=$(psql -At -d "$db" -c "SELECT format('%s/%s/%s', lifetime_earned, debt, available) FROM loyalty.points_account WHERE customer_id = 'r1'")
[ "$r1" = "0/100/0" ] || { echo "r1 lifetime/debt/available after the update: $r1 (want 0/100/0)" >&2; exit 1; }
r2_after=$(psql -At -d "$db" -c "SELECT (a.available, a.pending, a.debt, a.lifetime_earned, a.qualifying, a.updated_at)::text FROM loyalty.points_account a WHERE customer_id = 'r2'")
[ "$r2_before" = "$r2_after" ] || { echo "r2 changed by the update: $r2_before -> $r2_after" >&2; exit 1; }
echo "upgrade_debt_repair: r1's lifetime total repaired (100 -> 0), r2 untouched"
