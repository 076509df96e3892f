#!/usr/bin/env bash
# Scripted check: loyalty's data survives pg_dump / pg_restore.
#
# Creates a database with the extension and recorded access grants, dumps it
# in custom format, restores it into a new database with one job, and three
# times with pg_restore -j 4 (parallel restore loads the extension's tables
# in an order that varies from run to run: no foreign key or check at commit
# between them may depend on it), and compares each.
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
src=loyalty_dump_src dst=loyalty_dump_dst
dump=$(mktemp /tmp/loyalty-dump.XXXXXX)
trap 'rm -f "$dump"; dropdb --if-exists "$src"; dropdb --if-exists "$dst"; psql -d postgres -c "DROP ROLE IF EXISTS dump_app"' EXIT

psql -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" \
	-c "DROP ROLE IF EXISTS dump_app" -c "CREATE ROLE dump_app" -c "CREATE DATABASE $src"
psql -d "$src" -c "CREATE EXTENSION loyalty" -c "SELECT loyalty.grant_access('dump_app', 'app')"
# each feature's state is added by the check below
for f in "$(dirname "$0")"/dump_restore.d/*.sql; do
	[ -e "$f" ] && psql -d "$src" -f "$f"
done

pg_dump -Fc -d "$src" -f "$dump"

# the tables to compare
tables=$(psql -At -d "$src" -c "SELECT format('%I.%I', n.nspname, c.relname)
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'loyalty' AND c.relkind IN ('r', 'p') ORDER BY 1")

# restore with $1 jobs into a fresh $dst and compare it with $src
check_restore() {
	local jobs=$1
	dropdb --if-exists "$dst"
	createdb "$dst"
	if ! pg_restore -d "$dst" --exit-on-error -j "$jobs" "$dump"; then
		echo "pg_restore -j $jobs failed" >&2
		exit 1
	fi

	# every table of the extension's schema holds the same rows after restore
	for t in $tables; do
		a=$(psql -At -d "$src" -c "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x")
		b=$(psql -At -d "$dst" -c "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x")
		if [ "$a" != "$b" ]; then
			echo "table $t differs after restore (-j $jobs)" >&2
			exit 1
		fi
	done
	n=$(psql -At -d "$dst" -c "SELECT count(*) FROM loyalty.access_grant WHERE role_name = 'dump_app'")
	[ "$n" = 1 ] || { echo "access grant lost in restore" >&2; exit 1; }
	v=$(psql -At -d "$dst" -c "SELECT loyalty.version() = extversion FROM pg_extension WHERE extname = 'loyalty'")
	[ "$v" = t ] || { echo "restored extension does not work" >&2; exit 1; }
	# the restored grants still give their rights
	ok=$(psql -At -d "$dst" -c "SELECT has_function_privilege('dump_app', 'loyalty.version()', 'EXECUTE')")
	[ "$ok" = t ] || { echo "restored role lost its rights" >&2; exit 1; }
	# nothing dangles between the restored configuration tables
	n=$(psql -At -d "$dst" -c "SELECT count(*) FROM loyalty.check_integrity()")
	[ "$n" = 0 ] || { psql -d "$dst" -c "SELECT * FROM loyalty.check_integrity() LIMIT 20" >&2; exit 1; }
	echo "ok: pg_restore -j $jobs"
}

check_restore 1
for run in 1 2 3; do
	check_restore 4
done
echo "dump/restore (1 job, 3 x -j 4): $(echo "$tables" | wc -w) tables identical"
