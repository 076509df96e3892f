#!/usr/bin/env bash
# Scripted check: CREATE EXTENSION loyalty (run by a superuser) and ALTER
# EXTENSION loyalty UPDATE never run an object another role planted in the
# schema loyalty (the CVE-2022-2625 class).
#
# Install, as the superuser, into a database owned by an ordinary role
# "attacker" that may create schemas:
#   1. schema loyalty created by the attacker, holding a trap
#      loyalty._register_function(text, text) that makes the caller's session
#      grant SUPERUSER to the attacker: refused (42501), attacker unchanged;
#   2. schema loyalty created by the attacker, empty: refused (owner);
#   3. schema loyalty owned by the superuser, empty, CREATE granted to the
#      attacker: refused (grant);
#   4. schema loyalty owned by the superuser holding a table: refused (not
#      empty);
#   5. no schema loyalty: installs;
#   6. schema loyalty pre-created empty by the superuser itself: installs;
#   7. schema loyalty pre-created empty, owned by another superuser (as
#      pg_restore leaves it): installs.
# Update: 0.2.0 installed, the attacker given CREATE on the schema plants a
# trap; ALTER EXTENSION UPDATE is refused, and still while the attacker may
# create objects there; without both (and with an index an admin added to
# an extension table) it goes through.
# And the built install and upgrade scripts call _register_function /
# _register_relation with typed arguments only.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
su=$(command psql -X -At -c "SELECT current_user")
db=loyalty_trap_db
attacker=loyalty_trap_attacker
extdir=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
copied=
cleanup() {
	dropdb --if-exists "$db" >/dev/null 2>&1 || true
	command psql -X -q -c "DROP ROLE IF EXISTS $attacker" -c "DROP ROLE IF EXISTS ${attacker}_su" >/dev/null 2>&1 || true
	[ -z "$copied" ] || as_root rm -f "$copied"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cleanup
psql -c "CREATE ROLE $attacker LOGIN NOSUPERUSER"

is_super() {
	psql -At -c "SELECT rolsuper FROM pg_roles WHERE rolname = '$attacker'"
}

fresh_db() {
	dropdb --if-exists "$db"
	createdb -O "$attacker" "$db"
}

# the trap: run by whoever calls it, grants the attacker superuser
plant_trap_sql="
CREATE FUNCTION loyalty._register_function(level text, fn text)
RETURNS void LANGUAGE plpgsql AS \$t\$
BEGIN
	EXECUTE 'ALTER ROLE $attacker SUPERUSER';
END
\$t\$;"

# expect_refused <case> <errmsg fragment>: CREATE EXTENSION fails with
# SQLSTATE 42501 and the message, and the attacker is still no superuser
expect_refused() {
	local out rc=0
	out=$(command psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$db" \
		-c "CREATE EXTENSION loyalty" 2>&1) || rc=$?
	[ "$(is_super)" = f ] || fail "$1: the attacker became superuser"
	[ "$rc" -ne 0 ] || fail "$1: CREATE EXTENSION succeeded"
	grep -q "ERROR:  42501: $2" <<<"$out" || fail "$1: unexpected error: $out"
	grep -q "DETAIL:  " <<<"$out" || fail "$1: no detail: $out"
	grep -q "HINT:  " <<<"$out" || fail "$1: no hint: $out"
	[ "$(psql -At -d "$db" -c "SELECT count(*) FROM pg_extension WHERE extname = 'loyalty'")" = 0 ] \
		|| fail "$1: extension installed"
	echo "ok - $1"
}

expect_installed() {
	psql -d "$db" -c "CREATE EXTENSION loyalty"
	[ "$(psql -At -d "$db" -c "SELECT loyalty.version()")" != "" ] || fail "$1: not installed"
	[ "$(is_super)" = f ] || fail "$1: the attacker became superuser"
	echo "ok - $1"
}

# 1. the attacker's schema with a trap
fresh_db
psql -U "$attacker" -d "$db" -c "CREATE SCHEMA loyalty" -c "$plant_trap_sql"
expect_refused "trap in the attacker's schema" 'schema "loyalty" is owned by role "'"$attacker"'", which is neither the installing role'

# 2. the attacker's empty schema
fresh_db
psql -U "$attacker" -d "$db" -c "CREATE SCHEMA loyalty"
expect_refused "empty schema owned by another role" 'schema "loyalty" is owned by role'

# 3. the superuser's empty schema with CREATE granted to the attacker
fresh_db
psql -d "$db" -c "CREATE SCHEMA loyalty" -c "GRANT CREATE ON SCHEMA loyalty TO $attacker"
expect_refused "schema granting CREATE to another role" 'schema "loyalty" grants CREATE to role "'"$attacker"'"'
psql -d "$db" -c "REVOKE CREATE ON SCHEMA loyalty FROM $attacker" -c "GRANT CREATE ON SCHEMA loyalty TO PUBLIC"
expect_refused "schema granting CREATE to PUBLIC" 'schema "loyalty" grants CREATE to role "PUBLIC"'

# 4. the superuser's schema holding the trap (planted while the attacker had
#    CREATE there) and, separately, a table
fresh_db
psql -d "$db" -c "CREATE SCHEMA loyalty" -c "GRANT CREATE, USAGE ON SCHEMA loyalty TO $attacker"
psql -U "$attacker" -d "$db" -c "$plant_trap_sql"
psql -d "$db" -c "REVOKE CREATE ON SCHEMA loyalty FROM $attacker"
expect_refused "trap in the superuser's schema" 'schema "loyalty" is not empty'
fresh_db
psql -d "$db" -c "CREATE SCHEMA loyalty" -c "CREATE TABLE loyalty.t (a int)"
expect_refused "table in the superuser's schema" 'schema "loyalty" is not empty'

# 5. no schema: CREATE EXTENSION creates it
fresh_db
expect_installed "no schema loyalty"

# 6. an empty schema the superuser created
fresh_db
psql -d "$db" -c "CREATE SCHEMA loyalty"
expect_installed "empty schema owned by the installing role"

# 7. an empty schema another superuser owns (as pg_restore leaves it when a
#    superuser other than the original owner restores)
fresh_db
psql -c "CREATE ROLE ${attacker}_su SUPERUSER"
psql -d "$db" -c "CREATE SCHEMA loyalty AUTHORIZATION ${attacker}_su"
expect_installed "empty schema owned by another superuser"
psql -d "$db" -c "DROP EXTENSION loyalty" -c "DROP SCHEMA loyalty"
psql -c "DROP ROLE ${attacker}_su"

# Update from 0.2.0 with a trap planted by a role given CREATE on the schema.
cur=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$root/loyalty.control")
as_root cp "$here/upgrade/loyalty--0.2.0.sql" "$extdir/"
copied="$extdir/loyalty--0.2.0.sql"
fresh_db
psql -d "$db" -c "CREATE EXTENSION loyalty VERSION '0.2.0'" \
	-c "GRANT CREATE, USAGE ON SCHEMA loyalty TO $attacker"
psql -U "$attacker" -d "$db" -c "$plant_trap_sql" \
	-c "CREATE FUNCTION loyalty._register_relation(level text, rel text) RETURNS void LANGUAGE sql AS 'SELECT NULL'"
rc=0
out=$(command psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$db" \
	-c "ALTER EXTENSION loyalty UPDATE" 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fail "update with a trap succeeded"
grep -q 'ERROR:  42501: schema "loyalty" holds function _register_\(function\|relation\) that is not part of extension loyalty' <<<"$out" \
	|| fail "update: unexpected error: $out"
[ "$(is_super)" = f ] || fail "update: the attacker became superuser"
[ "$(psql -At -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'")" = 0.2.0 ] \
	|| fail "update: went through"
echo "ok - update refused with a trap in the schema"
psql -d "$db" -c "DROP FUNCTION loyalty._register_function(text, text)" \
	-c "DROP FUNCTION loyalty._register_relation(text, text)"
rc=0
out=$(command psql -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$db" \
	-c "ALTER EXTENSION loyalty UPDATE" 2>&1) || rc=$?
[ "$rc" -ne 0 ] || fail "update with CREATE granted to another role succeeded"
grep -q 'ERROR:  42501: schema "loyalty" grants CREATE to role "'"$attacker"'"' <<<"$out" \
	|| fail "update: unexpected error: $out"
echo "ok - update refused while another role may create objects in the schema"
# an index someone added to an extension table is no reason to refuse
psql -d "$db" -c "REVOKE CREATE ON SCHEMA loyalty FROM $attacker" \
	-c "CREATE INDEX ON loyalty.customer_stats (segment)" \
	-c "ALTER EXTENSION loyalty UPDATE"
[ "$(psql -At -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'")" = "$cur" ] \
	|| fail "update without a trap did not go through"
echo "ok - update without a trap"

# Typed calls only: an untyped literal argument would let an overload with
# (text, text) win the resolution.
make -s -C "$root" PG_CONFIG="${PG_CONFIG:-pg_config}" >/dev/null
for f in "$root/loyalty--$cur.sql" "$root"/loyalty--*--"$cur".sql; do
	if grep -nE "_register_(function|relation)\('[^']*'[,)]" "$f"; then
		fail "$(basename "$f"): untyped _register_* call"
	fi
done
echo "ok - install and upgrade scripts call the registration functions with typed arguments"
