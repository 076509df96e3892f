#!/usr/bin/env bash
# Scripted check: the shape of the C tree (README "Layout", issue 12).
#
#   a. includes: every #include "x.h" between our files names a header of the
#      file's own family, of common/ or of a family below it, in the order
#      common < rfm < rfm_live < coupon < points (src/loyalty.c, the module
#      above every family, may include all); and the include graph between
#      files has no cycle;
#   b. calls: the file-level call graph read from the objects (nm: the global
#      symbols each object defines and the ones it leaves undefined) has no
#      cycle between two .c files, and no file calls into a family above
#      its own;
#   c. length: no C function is longer than LOYALTY_MAX_FUNCTION_LINES (200)
#      lines, counted between its opening "{" and closing "}" at column 0.
#
# Prints every offender and, per family, the longest function.  Plain bash,
# awk and nm (binutils, installed with gcc).
#
#   bash test/scripts/tree_shape.sh             check, exit 1 on any offence
#   bash test/scripts/tree_shape.sh --list      (or TREE_SHAPE_LIST=1) only
#                                               report, always exit 0
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

list_only=${TREE_SHAPE_LIST:-0}
[ "${1:-}" = "--list" ] && list_only=1
max_lines=${LOYALTY_MAX_FUNCTION_LINES:-200}
families="common rfm rfm_live coupon points"
tmp=$(mktemp -d /tmp/loyalty-shape.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
offences=0

# rank of a file: its family's position; src/loyalty.c is above them all
rank_table() {
	local i=0 f
	for f in $families; do
		echo "src/$f $i"
		i=$((i + 1))
	done
	echo "src/loyalty.c 99"
}
rank_table >"$tmp/ranks"

sources=$(ls src/loyalty.c $(for f in $families; do echo "src/$f/"*.c "src/$f/"*.h; done) 2>/dev/null | sort)

# Report the cycles of the graph in $1 (lines "from to"): the strongly
# connected components of more than one node, by transitive closure.
cycles() {
	awk '
	{ n[$1] = 1; n[$2] = 1; if ($1 != $2) e[$1, $2] = 1 }
	END {
		for (k in n) for (i in n) if (e[i, k]) for (j in n) if (e[k, j]) e[i, j] = 1
		for (i in n) {
			if (done[i]) continue
			comp = i; cnt = 1
			for (j in n) if (j != i && e[i, j] && e[j, i]) { comp = comp " " j; cnt++; done[j] = 1 }
			if (cnt > 1) print "cycle: " comp
		}
	}' "$1"
}

# ---- a. includes -----------------------------------------------------------
: >"$tmp/include_edges"
# header name -> file (header names are unique across the tree; the
# others, PostgreSQL's, are not ours and not checked)
for f in $sources; do echo "$(basename "$f") $f"; done >"$tmp/headers"
for f in $sources; do
	{ grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]+"[^"]+"' "$f" || true; } \
		| sed -E 's/.*"([^"]+)".*/\1/' | awk -v f="$f" '{ print f, $1 }'
done | awk -v headers="$tmp/headers" -v edges="$tmp/include_edges" '
	BEGIN { while ((getline l < headers) > 0) { split(l, p, " "); h[p[1]] = p[2] } }
	($2 in h) { print $1, h[$2] > edges; next }
' >/dev/null
awk -v ranks="$tmp/ranks" '
	BEGIN { while ((getline l < ranks) > 0) { split(l, p, " "); r[p[1]] = p[2] } }
	function rank(f,   d) { if (f in r) return r[f]; d = f; sub(/\/[^\/]*$/, "", d); return r[d] }
	rank($2) > rank($1) { print "include upwards: " $1 " includes " $2 }
' "$tmp/include_edges" >"$tmp/include_up"
cycles "$tmp/include_edges" | sed 's/^/include /' >>"$tmp/include_up"
if [ -s "$tmp/include_up" ]; then
	cat "$tmp/include_up"
	offences=$((offences + $(wc -l <"$tmp/include_up")))
fi
echo "includes: $(wc -l <"$tmp/include_edges") edges between $(echo "$sources" | wc -w) files checked"

# ---- b. calls (nm over the objects) ----------------------------------------
# The objects the build made, if they are newer than every source; else the
# sources are compiled afresh (-O0, into the temporary directory).
cfiles=$(echo "$sources" | tr ' ' '\n' | grep '\.c$')
objdir=
newest_src=$(ls -t $sources | head -1)
fresh=1
for c in $cfiles; do
	o=${c%.c}.o
	if [ ! -f "$o" ] || [ "$newest_src" -nt "$o" ]; then
		fresh=0
		break
	fi
done
if [ "$fresh" -eq 0 ]; then
	pgc=${PG_CONFIG:-pg_config}
	inc=$("$pgc" --includedir-server)
	version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" loyalty.control)
	objdir=$tmp/obj
	for c in $cfiles; do
		mkdir -p "$objdir/$(dirname "$c")"
		${CC:-gcc} -O0 -c -w -I"$inc" $(for d in $families; do echo "-Isrc/$d"; done) \
			-DLOYALTY_VERSION="\"$version\"" -o "$objdir/${c%.c}.o" "$c"
	done
fi
: >"$tmp/defs"
: >"$tmp/uses"
for c in $cfiles; do
	o=${objdir:+$objdir/}${c%.c}.o
	nm "$o" | awk -v f="$c" '$1 != "U" && $2 ~ /^[TDBRVW]$/ { print $3, f }' >>"$tmp/defs"
	nm -u "$o" | awk -v f="$c" '{ print f, $NF }' >>"$tmp/uses"
done
awk 'NR == FNR { def[$1] = $2; next } ($2 in def) && def[$2] != $1 { print $1, def[$2] }' \
	"$tmp/defs" "$tmp/uses" | sort -u >"$tmp/call_edges"
awk -v ranks="$tmp/ranks" '
	BEGIN { while ((getline l < ranks) > 0) { split(l, p, " "); r[p[1]] = p[2] } }
	function rank(f,   d) { if (f in r) return r[f]; d = f; sub(/\/[^\/]*$/, "", d); return r[d] }
	rank($2) > rank($1) { print "call upwards: " $1 " calls into " $2 }
' "$tmp/call_edges" >"$tmp/call_bad"
cycles "$tmp/call_edges" | sed 's/^/call /' >>"$tmp/call_bad"
if [ -s "$tmp/call_bad" ]; then
	cat "$tmp/call_bad"
	offences=$((offences + $(wc -l <"$tmp/call_bad")))
fi
echo "calls: $(wc -l <"$tmp/call_edges") file-level edges between $(echo "$cfiles" | wc -w) objects checked"

# ---- c. function length ----------------------------------------------------
# A body runs from a "{" at column 0 to the next "}" at column 0; it is a
# function when that closing line is a lone "}" (a struct or an initialiser
# ends in "} name;" or "};").  The name is the last identifier followed by
# "(" in the lines just before the "{".
for c in $cfiles; do
	awk -v file="$c" '
		/^\{/ { start = FNR; name = lastname; next }
		/^\}/ {
			if (start && $0 ~ /^\}[[:space:]]*$/) print FNR - start - 1, file, start, name
			start = 0; next
		}
		!start && match($0, /[A-Za-z_][A-Za-z_0-9]*\(/) { lastname = substr($0, RSTART, RLENGTH - 1) }
	' "$c"
done | sort -k1,1nr >"$tmp/lengths"
awk -v max="$max_lines" '$1 > max { print "function too long: " $2 ":" $3 " " $4 "() has " $1 " lines (at most " max ")" }' \
	"$tmp/lengths" >"$tmp/long"
if [ -s "$tmp/long" ]; then
	cat "$tmp/long"
	offences=$((offences + $(wc -l <"$tmp/long")))
fi
for f in loyalty.c $families; do
	awk -v fam="src/$f" 'index($2, fam "/") == 1 || $2 == fam { print "longest function in " fam ": " $4 "() " $1 " lines (" $2 ":" $3 ")"; exit }' "$tmp/lengths"
done

echo "$offences offence(s)"
if [ "$offences" -gt 0 ] && [ "$list_only" != 1 ]; then
	exit 1
fi
exit 0
