#!/usr/bin/env bash
# Scripted check: ALTER EXTENSION UPDATE from every earlier release gives
# exactly the objects, privileges and configuration rows of a fresh install,
# and keeps the data of the tables that hold user data.
#
# The install scripts of earlier releases are kept, frozen, in
# test/upgrade/loyalty--<version>.sql; this check installs them next to the
# current one for the duration of the test.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
extdir=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
installed=()
cleanup() {
	local f
	for f in "${installed[@]}"; do as_root rm -f "$f"; done
	dropdb --if-exists loyalty_up_fresh; dropdb --if-exists loyalty_up_old
}
trap cleanup EXIT

fingerprint() {
	psql -At -d "$1" -f "$here/upgrade/fingerprint.sql"
	# configuration rows shipped by the install script (segment map, ...)
	local t
	for t in $(psql -At -d "$1" -c "SELECT format('%I.%I', n.nspname, c.relname)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'loyalty' AND c.relkind = 'r' ORDER BY 1"); do
		echo "rows $t $(psql -At -d "$1" -c "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x")"
	done
}

current=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$here/../loyalty.control")
dropdb --if-exists loyalty_up_fresh
createdb loyalty_up_fresh
psql -d loyalty_up_fresh -c "CREATE EXTENSION loyalty"
fingerprint loyalty_up_fresh >/tmp/loyalty-up-fresh.$$

n=0
for old in "$here"/upgrade/loyalty--*.sql; do
	[ -e "$old" ] || continue
	v=$(basename "$old" .sql); v=${v#loyalty--}
	# always the frozen script: a stale file from an old 'make install' may differ
	as_root cp "$old" "$extdir/"
	installed+=("$extdir/loyalty--$v.sql")
	dropdb --if-exists loyalty_up_old
	createdb loyalty_up_old
	psql -d loyalty_up_old -c "CREATE ROLE up_app_$$" -c "CREATE EXTENSION loyalty VERSION '$v'" \
		-c "SELECT loyalty.grant_access('up_app_$$', 'app')"
	psql -d loyalty_up_old -c "ALTER EXTENSION loyalty UPDATE"
	got=$(psql -At -d loyalty_up_old -c "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'")
	[ "$got" = "$current" ] || { echo "update from $v stopped at $got, not $current" >&2; exit 1; }
	# the role granted before the update holds the app rights on new objects
	# (CASE: the planner may evaluate the privilege test before the type test)
	missing=$(psql -At -d loyalty_up_old -c "SELECT count(*) FROM loyalty.access_rule r
		WHERE r.level IN ('app', 'all')
		  AND CASE WHEN r.object_type = 'function'
				   THEN NOT has_function_privilege('up_app_$$', r.object_name, 'EXECUTE')
				   ELSE false END")
	psql -d loyalty_up_old -c "SELECT loyalty.revoke_access('up_app_$$', 'app')" -c "DROP OWNED BY up_app_$$" -c "DROP ROLE up_app_$$"
	[ "$missing" = 0 ] || { echo "after update from $v, an app role lacks $missing new functions" >&2; exit 1; }
	fingerprint loyalty_up_old >/tmp/loyalty-up-old.$$
	if ! diff -u /tmp/loyalty-up-fresh.$$ /tmp/loyalty-up-old.$$; then
		echo "update from $v differs from a fresh install of $current" >&2
		rm -f /tmp/loyalty-up-*.$$
		exit 1
	fi
	n=$((n + 1))
done
rm -f /tmp/loyalty-up-*.$$
[ "$n" -gt 0 ] || { echo "no earlier release in test/upgrade/" >&2; exit 1; }
echo "upgrade: $n earlier release(s) update to $current identically to a fresh install"
