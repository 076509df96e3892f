#!/usr/bin/env bash
# test/pg_build.sh MAJOR: build PostgreSQL MAJOR (13 or 18) from the release
# tarball beside the checkout (../shared/vendor/postgresql-MAJOR.*.tar.bz2)
# into a cache outside the checkout, and print its pg_config.  The server is
# built with assertions (--enable-cassert): a test server, where a misused
# memory context or a broken invariant traps at once instead of corrupting
# memory silently.
#
#   PG_CONFIG=$(bash test/pg_build.sh 18) bash test/run.sh
#
# The cache is $LOYALTY_PG_CACHE (default /var/cache/loyalty/pg), one
# directory per version; a finished build is reused (it is marked complete
# only after `make install` of the server, contrib and the isolation tester
# succeeded).  A cached build that lacks a program the suites run (a cache
# made by an earlier version of this script: PostgreSQL 13's `make install`
# does not install pg_isolation_regress, 14+ does) is rebuilt.  Builds
# without readline, zlib, ICU and docs; PostgreSQL 18's tarball needs bison
# and flex (installed from Debian's archive when missing).  About 5 minutes
# on 2 cores, once per machine.
set -euo pipefail
major=${1:?usage: test/pg_build.sh MAJOR}
root=$(cd "$(dirname "$0")/.." && pwd)
vendor=${LOYALTY_VENDOR:-$root/../shared/vendor}
tarball=$(ls "$vendor"/postgresql-"$major".*.tar.bz2 2>/dev/null | sort -V | tail -1)
[ -n "$tarball" ] || { echo "no PostgreSQL $major tarball in $vendor" >&2; exit 1; }
version=$(basename "$tarball" .tar.bz2); version=${version#postgresql-}
cache=${LOYALTY_PG_CACHE:-/var/cache/loyalty/pg}
prefix=$cache/$version-assert
# pgTAP is SQL only: the Debian package's files (installed by test/lib.sh
# for the system server) serve every version.
add_pgtap() {
	local ext
	ext=$("$prefix/bin/pg_config" --sharedir)/extension
	for f in /usr/share/postgresql/*/extension/pgtap*; do
		[ -e "$f" ] && [ ! -e "$ext/$(basename "$f")" ] && cp "$f" "$ext/"
	done
	return 0
}
# What test/run.sh needs from the installation besides the server: the
# client programs and PGXS's two test drivers.
complete() {
	local pgxs f
	[ -e "$prefix/.complete" ] && [ -x "$prefix/bin/pg_config" ] || return 1
	pgxs=$(dirname "$(dirname "$("$prefix/bin/pg_config" --pgxs)")")
	for f in "$prefix/bin/psql" "$prefix/bin/pgbench" "$prefix/bin/pg_dump" \
		"$pgxs/test/regress/pg_regress" "$pgxs/test/isolation/pg_isolation_regress" \
		"$pgxs/test/isolation/isolationtester"; do
		[ -x "$f" ] || { echo "$f is missing" >&2; return 1; }
	done
}
if complete; then
	add_pgtap
	echo "$prefix/bin/pg_config"
	exit 0
fi
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for p in bison flex gcc make bzip2 perl; do command -v "$p" >/dev/null || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
as_root mkdir -p "$cache"
as_root chown "$(id -u)" "$cache"
build=$(mktemp -d /tmp/loyalty-pgbuild.XXXXXX)
trap 'rm -rf "$build"' EXIT
echo "building PostgreSQL $version into $prefix (once per machine)" >&2
tar -xjf "$tarball" -C "$build"
cd "$build/postgresql-$version"
rm -rf "$prefix"
./configure --prefix="$prefix" --without-readline --without-zlib --without-icu \
	--enable-debug --enable-cassert >"$build/configure.log" 2>&1 ||
	{ tail -30 "$build/configure.log" >&2; exit 1; }
make -s -j"$(nproc)" >"$build/make.log" 2>&1 || { tail -30 "$build/make.log" >&2; exit 1; }
make -s install >"$build/install.log" 2>&1 || { tail -30 "$build/install.log" >&2; exit 1; }
make -s -C contrib -j"$(nproc)" install >"$build/contrib.log" 2>&1 || { tail -30 "$build/contrib.log" >&2; exit 1; }
# PGXS's installcheck runs pg_isolation_regress (which runs isolationtester
# from its own directory) from the installation's pgxs/src/test/isolation;
# 14+ installs both with the server, 13 builds them but installs nothing
make -s -C src/test/isolation all >"$build/isolation.log" 2>&1 || { tail -30 "$build/isolation.log" >&2; exit 1; }
isodir=$(dirname "$(dirname "$("$prefix/bin/pg_config" --pgxs)")")/test/isolation
mkdir -p "$isodir"
for f in pg_isolation_regress isolationtester; do
	[ -x "$isodir/$f" ] || install -m 755 "src/test/isolation/$f" "$isodir/$f"
done
touch "$prefix/.complete"
complete || { echo "the PostgreSQL $version build in $prefix is incomplete" >&2; exit 1; }
add_pgtap
echo "$prefix/bin/pg_config"
