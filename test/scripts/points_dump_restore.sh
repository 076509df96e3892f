#!/usr/bin/env bash
# Scripted check: a points ledger survives pg_dump / pg_restore in working
# order, not only row for row (dump_restore.sh compares the rows): the
# restored database passes check_integrity(), its sequences continue after
# the restored ids, the ledger is still append-only, and the accounts carry
# on (balance, spend, refund) exactly as in the source.
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
src=loyalty_ptsdump_src dst=loyalty_ptsdump_dst
dump=$(mktemp /tmp/loyalty-ptsdump.XXXXXX)
trap 'rm -f "$dump"; dropdb --if-exists "$src"; dropdb --if-exists "$dst"' EXIT

psql -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $src"
psql -d "$src" -c "CREATE EXTENSION loyalty"
psql -d "$src" -f "$(dirname "$0")/dump_restore.d/50_points.sql"
pg_dump -Fc -d "$src" -f "$dump"
createdb "$dst"
pg_restore -d "$dst" --exit-on-error "$dump"

problems=$(psql -At -d "$dst" -c "SELECT count(*) FROM loyalty.check_integrity()")
[ "$problems" = 0 ] || { psql -d "$dst" -c "SELECT * FROM loyalty.check_integrity()"; exit 1; }

# the same calls give the same results in both databases
after() {
	psql -At -d "$1" \
		-c "SELECT format('%s/%s/%s', available, pending, debt) FROM loyalty.points_balance('d1', '2026-03-01')" \
		-c "SELECT format('%s %s', entry_id, available) FROM loyalty.earn_points('d1', 7, 'after-1', at => '2026-03-02')" \
		-c "SELECT format('%s %s', entry_id, available) FROM loyalty.spend_points('d1', 20, 'after-2', at => '2026-03-03')" \
		-c "SELECT format('%s %s %s', entry_id, available, debt) FROM loyalty.reverse_points('d1-order', at => '2026-03-04')" \
		-c "SELECT format('%s %s', entry_id, available) FROM loyalty.earn_points('d1', 7, 'after-1', at => '2026-03-05')" \
		-c "SELECT max(lot_id) FROM loyalty.points_lot" \
		-c "SELECT count(*) FROM loyalty.check_integrity()"
}
a=$(after "$src")
b=$(after "$dst")
if [ "$a" != "$b" ]; then
	echo "source and restored database diverge:" >&2
	diff <(echo "$a") <(echo "$b") >&2
	exit 1
fi
if psql -d "$dst" -c "DELETE FROM loyalty.points_ledger" 2>/dev/null; then
	echo "restored ledger is not append-only" >&2
	exit 1
fi
echo "points dump/restore: integrity clean, sequences and behaviour identical"
echo "$b" | tr '\n' ';'; echo
