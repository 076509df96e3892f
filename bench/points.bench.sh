# points: the ledger's hot paths against PostgreSQL's own baselines.
#
# 1. earn 70% / spend 30% (earn_points / spend_points, one call per
#    transaction, new reference each) over BENCH_SCALE accounts from
#    BENCH_CLIENTS clients, against pgbench's built-in simple-update (the
#    tpcb-like UPDATE + SELECT + INSERT without branch/teller updates) on
#    pgbench tables of scale 10.  Bar: ratio >= 1.0.  Each side runs three
#    times, interleaved, and its best run counts (the machine is shared).
# 2. expire_points over 10 x BENCH_SCALE due lots (10 per account, all
#    expired) against a plain UPDATE closing the same lots; each in a
#    transaction that is rolled back, after a VACUUM.  expire_points also
#    writes one ledger entry per account and settles the accounts.
# 3. points_balance from BENCH_CLIENTS clients against pgbench's built-in
#    select-only on the same server (best of three each, interleaved).
accounts=$BENCH_SCALE
psql -X -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"
pgbench -i -q -s 10 >/dev/null 2>&1

# accounts with 1,000,000 points each (one lot, never expiring), written in
# bulk consistently with the ledger (check_integrity stays empty)
psql -X -q -v ON_ERROR_STOP=1 -v accounts="$accounts" <<'SQL'
BEGIN;
INSERT INTO loyalty.points_account (customer_id, available, lifetime_earned, qualifying)
SELECT 'c' || i, 1000000, 1000000, 1000000 FROM generate_series(1, :accounts) i;
INSERT INTO loyalty.points_lot (customer_id, state, points, remaining, earned_at)
SELECT 'c' || i, 'available', 1000000, 1000000, '2026-01-01' FROM generate_series(1, :accounts) i;
INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, qualifying, lot_ids, lot_points,
								   available_after, pending_after, debt_after, effective_at)
SELECT l.customer_id, 'earn', 1000000, 'seed-' || l.customer_id, 1000000, ARRAY[l.lot_id],
	   ARRAY[1000000::bigint], 1000000, 0, 0, '2026-01-01'
FROM loyalty.points_lot l;
INSERT INTO loyalty.points_qualifying (customer_id, month, points)
SELECT 'c' || i, '2026-01-01', 1000000 FROM generate_series(1, :accounts) i;
-- each seed reference belongs to its customer (check_integrity stays empty)
INSERT INTO loyalty.points_reference (reference, customer_id)
SELECT 'seed-c' || i, 'c' || i FROM generate_series(1, :accounts) i;
COMMIT;
VACUUM ANALYZE loyalty.points_account, loyalty.points_lot, loyalty.points_ledger, loyalty.points_qualifying,
	loyalty.points_reference;
SQL

earn=$(mktemp); spend=$(mktemp); balance=$(mktemp)
cat >"$earn" <<EOF
\set c random(1, $accounts)
\set p random(1, 100)
\set r random(1, 1000000000000)
SELECT loyalty.earn_points('c' || :c, :p, 'e' || :client_id || '-' || :r);
EOF
cat >"$spend" <<EOF
\set c random(1, $accounts)
\set p random(1, 50)
\set r random(1, 1000000000000)
SELECT loyalty.spend_points('c' || :c, :p, 's' || :client_id || '-' || :r);
EOF
cat >"$balance" <<EOF
\set c random(1, $accounts)
SELECT * FROM loyalty.points_balance('c' || :c);
EOF

# settle the freshly loaded tables (bench data, pgbench tables, accounts),
# so that autovacuum does not pick a side
psql -X -q -c "VACUUM ANALYZE" -c "CHECKPOINT"

# each side three times, interleaved; the best run of each counts
best() { printf '%s\n' "$@" | sort -g | tail -1; }
b=(); m=()
for round in 1 2 3; do
	b+=("$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -b simple-update)")
	m+=("$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$earn@7" -f "$spend@3")")
done
bench_report "earn 70% / spend 30% TPS vs pgbench simple-update" "$(best "${m[@]}")" "$(best "${b[@]}")" tps ">= 1.0"

# the write rounds above left dead rows on both sides (pgbench_accounts,
# points_account, points_lot): settle them, so that autovacuum does not
# run during one side's reads and not the other's
psql -X -q -c "VACUUM ANALYZE" -c "CHECKPOINT"
b=(); m=()
for round in 1 2 3; do
	b+=("$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -b select-only)")
	m+=("$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$balance")")
done
bench_report "points_balance TPS vs pgbench select-only" "$(best "${m[@]}")" "$(best "${b[@]}")" tps

problems=$(psql -X -At -c "SELECT count(*) FROM loyalty.check_integrity()")
echo "check_integrity() after the runs: $problems problems"
rm -f "$earn" "$spend" "$balance"

# expiry: 10 lots per account, all expired by as_of
psql -X -q -v ON_ERROR_STOP=1 -v accounts="$accounts" <<'SQL'
BEGIN;
WITH lots AS (
	INSERT INTO loyalty.points_lot (customer_id, state, points, remaining, earned_at, expires_at)
	SELECT 'x' || i, 'available', 10, 10, '2025-01-01', '2026-01-01'::timestamptz + (i % 28) * interval '1 day'
	FROM generate_series(1, :accounts) i, generate_series(1, 10) k
	RETURNING lot_id, customer_id)
INSERT INTO loyalty.points_ledger (customer_id, kind, points, reference, lot_ids, lot_points,
								   available_after, pending_after, debt_after, effective_at)
SELECT customer_id, 'earn', 10, 'xseed-' || lot_id, ARRAY[lot_id], ARRAY[10::bigint], 0, 0, 0, '2025-01-01'
FROM lots;
INSERT INTO loyalty.points_account (customer_id, available, lifetime_earned, next_event_at)
SELECT 'x' || i, 100, 100, '2026-01-01'::timestamptz + (i % 28) * interval '1 day'
FROM generate_series(1, :accounts) i;
COMMIT;
VACUUM ANALYZE loyalty.points_account, loyalty.points_lot, loyalty.points_ledger;
SQL
time_once() {
	local t0 t1
	psql -X -q -c "VACUUM loyalty.points_account, loyalty.points_lot, loyalty.points_ledger" >/dev/null
	t0=$(date +%s%N)
	psql -X -q -v ON_ERROR_STOP=1 -c "BEGIN" -c "$1" -c "ROLLBACK" >/dev/null
	t1=$(date +%s%N)
	echo $(( (t1 - t0) / 1000000 ))
}
update_sql="UPDATE loyalty.points_lot SET expired = remaining, remaining = 0, state = 'closed'
	WHERE state <> 'closed' AND expires_at <= '2026-02-01'"
expire_sql="SELECT loyalty.expire_points('2026-02-01')"
b1=$(time_once "$update_sql"); m1=$(time_once "$expire_sql")
b2=$(time_once "$update_sql"); m2=$(time_once "$expire_sql")
bench_report "expire_points($(( accounts * 10 )) lots) vs plain UPDATE of them" \
	"$(( m1 < m2 ? m1 : m2 ))" "$(( b1 < b2 ? b1 : b2 ))" ms
