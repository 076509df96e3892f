#!/usr/bin/env bash
# Scripted check: the release chain 0.1.0 -> 0.2.0 -> current keeps every row
# of every table.
#
# Installs the frozen 0.1.0 script and records an access grant (the only data
# 0.1.0 had), updates to 0.2.0 and fills every feature's tables through the
# 0.2.0 API where the current library can serve it (segments, tracked orders:
# the dump/restore check's fills) and directly for coupons and points
# (test/upgrade/fill-0.2.0.sql says why), then records
# each table's rows, updates to the current version and checks that each
# table still has exactly those rows: the same values in every column the
# table had before (columns added by the update may hold anything).  The
# catalog side of the same chain is test/scripts/upgrade.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
extdir=$("${PG_CONFIG:-pg_config}" --sharedir)/extension
db=loyalty_up_data
tmp=$(mktemp -d /tmp/loyalty-up-data.XXXXXX)
installed=()
cleanup() {
	local f
	for f in "${installed[@]}"; do as_root rm -f "$f"; done
	dropdb --if-exists "$db"
	psql -d postgres -c "DROP ROLE IF EXISTS up_data_app" >/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
for v in 0.1.0 0.2.0; do
	as_root cp "$here/upgrade/loyalty--$v.sql" "$extdir/"
	installed+=("$extdir/loyalty--$v.sql")
done

dropdb --if-exists "$db"
psql -d postgres -c "DROP ROLE IF EXISTS up_data_app" -c "CREATE ROLE up_data_app"
createdb "$db"
psql -d "$db" -c "CREATE EXTENSION loyalty VERSION '0.1.0'" \
	-c "SELECT loyalty.grant_access('up_data_app', 'app')"
gcols=$(psql -At -d "$db" -c "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
	FROM pg_attribute WHERE attrelid = 'loyalty.access_grant'::regclass AND attnum > 0 AND NOT attisdropped")
grants() { psql -At -d "$db" -c "SELECT string_agg(x::text, '|' ORDER BY x::text) FROM (SELECT $gcols FROM loyalty.access_grant) x"; }
g01=$(grants)
psql -d "$db" -c "ALTER EXTENSION loyalty UPDATE TO '0.2.0'"
g02=$(grants)
[ -n "$g01" ] && [ "$g01" = "$g02" ] || { echo "0.1.0 -> 0.2.0 changed loyalty.access_grant: '$g01' -> '$g02'" >&2; exit 1; }
# segments and tracking through their 0.2.0 API, coupons and points directly
psql -d "$db" -f "$here/scripts/dump_restore.d/20_segment.sql" >/dev/null
psql -d "$db" -f "$here/scripts/dump_restore.d/30_rfm_track.sql" >/dev/null
psql -d "$db" -f "$here/upgrade/fill-0.2.0.sql" >/dev/null

# every table of the schema, with the columns it has now, and its rows
tables=$(psql -At -d "$db" -c "SELECT format('%I.%I', n.nspname, c.relname)
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'loyalty' AND c.relkind IN ('r', 'p') ORDER BY 1")
declare -A cols
for t in $tables; do
	cols[$t]=$(psql -At -d "$db" -c "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum)
		FROM pg_attribute WHERE attrelid = '$t'::regclass AND attnum > 0 AND NOT attisdropped")
	psql -At -d "$db" -c "SELECT x::text FROM (SELECT ${cols[$t]} FROM $t) x ORDER BY 1" >"$tmp/$t.before"
done
rows=$(cat "$tmp"/*.before | wc -l)

# Before the update this library refuses the 0.2.0 objects with a named
# cause (55000), for coupon and points calls alike, and writes nothing.
for call in "SELECT loyalty.earn_points('u9', 10, 'u9-early')" \
	"SELECT * FROM loyalty.validate_coupon('UPGRADECODE', 'u9', 20.00, 'u9-o')" \
	"SELECT * FROM loyalty.points_balance('u1')"; do
	out=$(psql -d "$db" -v VERBOSITY=verbose -c "$call" 2>&1 || true)
	case $out in
		*"55000"*"the loyalty library is version"*"but this database has loyalty 0.2.0"*) ;;
		*) echo "before the update, '$call' gave: $out" >&2; exit 1 ;;
	esac
done
[ "$rows" -gt 100 ] || { echo "the 0.2.0 fill wrote only $rows rows" >&2; exit 1; }

psql -d "$db" -c "ALTER EXTENSION loyalty UPDATE"
current=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$here/../loyalty.control")
got=$(psql -At -d "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'loyalty'")
[ "$got" = "$current" ] || { echo "update stopped at $got, not $current" >&2; exit 1; }

bad=0
for t in $tables; do
	if ! psql -At -d "$db" -c "SELECT x::text FROM (SELECT ${cols[$t]} FROM $t) x ORDER BY 1" >"$tmp/$t.after" 2>"$tmp/err"; then
		echo "$t: its 0.2.0 columns cannot be read after the update: $(cat "$tmp/err")" >&2
		bad=1
		continue
	fi
	# sort(1)'s order for comm, whatever the server's collation
	LC_ALL=C sort "$tmp/$t.before" >"$tmp/b"; LC_ALL=C sort "$tmp/$t.after" >"$tmp/a"
	missing=$(LC_ALL=C comm -23 "$tmp/b" "$tmp/a")
	added=$(LC_ALL=C comm -13 "$tmp/b" "$tmp/a")
	# a function whose signature the update replaced (one signature per
	# name: rfm_segmentation and track_orders gained arguments, issue 13)
	# keeps its access: the same level and privileges on the new signature
	if [ "$t" = loyalty.access_rule ] && [ -n "$missing" ]; then
		missing=$(echo "$missing" | while IFS= read -r row; do
			name=$(echo "$row" | sed -n 's/^(\([a-z]*\),function,"\(loyalty\.[a-z_0-9]*\)(.*)",\(.*\))$/\1,function,"\2(|\3)/p')
			if [ -n "$name" ] &&
				grep -F "(${name%%|*}" "$tmp/a" | grep -cF "\",${name#*|}" >/dev/null; then
				continue
			fi
			echo "$row"
		done)
	fi
	if [ -n "$missing" ]; then
		echo "$t: rows lost or changed by the update:" >&2
		echo "$missing" | head -20 >&2
		bad=1
	fi
	# only the access rules shipped with the extension grow (its new functions)
	if [ -n "$added" ] && [ "$t" != loyalty.access_rule ]; then
		echo "$t: rows added by the update:" >&2
		echo "$added" | head -20 >&2
		bad=1
	fi
done
[ "$bad" = 0 ] || exit 1
# the data is also consistent under the new version's own checks
problems=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.check_integrity()")
[ "$problems" = 0 ] || { echo "check_integrity() reports $problems problems after the update" >&2; exit 1; }
echo "upgrade_data: 0.1.0 -> 0.2.0 -> $current kept all $rows rows of $(echo $tables | wc -w) tables"
