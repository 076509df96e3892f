#!/usr/bin/env bash
# Scripted check: the rights of a role given an access level survive
# ALTER EXTENSION UPDATE followed by pg_dump and a restore (plain and
# pg_restore -j).  The update re-applies the recorded levels inside the
# extension script, where PostgreSQL records every GRANT as the extension's
# initial privileges; pg_dump leaves those out, so before 0.3.0 a restored
# database had the access_grant rows but none of the rights.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
extdir=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
role=gr_app_$$
dump=$(mktemp -d /tmp/loyalty-grants.XXXXXX)
chmod 777 "$dump"
cleanup() {
	as_root rm -f "$extdir/loyalty--0.2.0.sql"
	for d in loyalty_gr_old loyalty_gr_plain loyalty_gr_jobs; do dropdb --if-exists "$d"; done
	command psql -X -q -c "DROP ROLE IF EXISTS $role" >/dev/null 2>&1 || true
	rm -rf "$dump"
}
trap cleanup EXIT

# how many app-level routines the role cannot execute (0 when it holds the level)
lacking() {
	psql -At -d "$1" -c "SELECT count(*) FROM loyalty.access_rule r
		WHERE r.level IN ('app', 'all')
		  AND CASE WHEN r.object_type = 'function'
				   THEN NOT has_function_privilege('$role', r.object_name, 'EXECUTE')
				   ELSE false END"
}

as_root cp "$here/upgrade/loyalty--0.2.0.sql" "$extdir/"
for d in loyalty_gr_old loyalty_gr_plain loyalty_gr_jobs; do dropdb --if-exists "$d"; done
psql -c "DROP ROLE IF EXISTS $role" -c "CREATE ROLE $role"
createdb loyalty_gr_old
psql -d loyalty_gr_old -c "CREATE EXTENSION loyalty VERSION '0.2.0'" \
	-c "SELECT loyalty.grant_access('$role', 'app')"
psql -d loyalty_gr_old -c "ALTER EXTENSION loyalty UPDATE"
n=$(lacking loyalty_gr_old)
[ "$n" = 0 ] || { echo "after the update the role lacks $n app routines" >&2; exit 1; }

# plain dump restored with psql
pg_dump -d loyalty_gr_old -f "$dump/plain.sql"
createdb loyalty_gr_plain
psql -d loyalty_gr_plain -f "$dump/plain.sql" >/dev/null
n=$(lacking loyalty_gr_plain)
[ "$n" = 0 ] || { echo "after a plain restore the role lacks $n app routines" >&2; exit 1; }
echo "ok - plain restore keeps the role's rights"

# custom-format dump restored in parallel
pg_dump -Fd -d loyalty_gr_old -f "$dump/dir"
createdb loyalty_gr_jobs
pg_restore -j 2 -d loyalty_gr_jobs "$dump/dir"
n=$(lacking loyalty_gr_jobs)
[ "$n" = 0 ] || { echo "after pg_restore -j 2 the role lacks $n app routines" >&2; exit 1; }
echo "ok - pg_restore -j 2 keeps the role's rights"

# PostgreSQL 17 and later tie a role to the initial privileges it appears
# in: DROP OWNED BY (the documented step before DROP ROLE) clears them
for d in loyalty_gr_old loyalty_gr_plain loyalty_gr_jobs; do
	psql -d "$d" -c "SELECT loyalty.revoke_access('$role', 'app')" -c "DROP OWNED BY $role"
done
psql -c "DROP ROLE $role"
echo "grants_restore: rights kept through update, dump and restore"
