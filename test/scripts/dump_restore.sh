#!/usr/bin/env bash
# Scripted check: loyalty's data survives pg_dump / pg_restore.
#
# Creates a database with the extension and recorded access grants, dumps it
# in custom format, restores it into a new database and compares.
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
createdb "$dst"
pg_restore -d "$dst" --exit-on-error "$dump"

# every table of the extension's schema holds the same rows after restore
tables=$(psql -At -d "$src" -c "SELECT format('%I.%I', n.nspname, c.relname)
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'loyalty' AND c.relkind IN ('r', 'p') ORDER BY 1")
for t in $tables; do
	a=$(psql -At -d "$src" -c "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x")
	b=$(psql -At -d "$dst" -c "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x")
	if [ "$a" != "$b" ]; then
		echo "table $t differs after restore" >&2
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
echo "dump/restore: $(echo "$tables" | wc -w) tables identical"
