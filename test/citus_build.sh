#!/usr/bin/env bash
# test/citus_build.sh: build Citus from the source tarball beside the checkout
# (../shared/vendor/citus-*.tar.gz) against Debian's PostgreSQL 15, into a
# cache outside the checkout, and print that installation's pg_config.
#
#   PG_CONFIG=$(bash test/citus_build.sh) bash test/citus_cluster.sh ...
#
# Citus installs into the server it is built for, and the system server is
# shared: the cache is a copy of the system PostgreSQL 15 installation
# (/usr/lib/postgresql/15, /usr/share/postgresql/15, /usr/include/postgresql)
# laid out as Debian lays it out, under $LOYALTY_PG_CACHE/15-citus-VERSION
# (default /var/cache/loyalty/pg); PostgreSQL finds its share and lib
# directories relative to its binaries, so the copy is a complete server.
# A finished build is reused (marked complete only after `make install`).
#
# Citus 13.2.2 needs one change to build against Debian's 15.20: its
# src/include/pg_version_compat.h defines a static inline
# have_createdb_privilege(), which 15.20's commands/dbcommands.h now declares
# extern.  The change is made on the extracted copy, never on the tarball.
# The Debian build dependencies are installed with apt-get when missing.
# About 4 minutes on 2 cores, once per machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
vendor=${LOYALTY_VENDOR:-$root/../shared/vendor}
tarball=$(ls "$vendor"/citus-*.tar.gz 2>/dev/null | sort -V | tail -1)
[ -n "$tarball" ] || { echo "no Citus tarball in $vendor" >&2; exit 1; }
version=$(basename "$tarball" .tar.gz); version=${version#citus-}
major=15
cache=${LOYALTY_PG_CACHE:-/var/cache/loyalty/pg}
prefix=$cache/$major-citus-$version
pg_config=$prefix/lib/postgresql/$major/bin/pg_config
if [ -e "$prefix/.complete" ]; then
	echo "$pg_config"
	exit 0
fi
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
pkgs=(gcc make autoconf "postgresql-$major" "postgresql-server-dev-$major" libpq-dev
	liblz4-dev libzstd-dev libcurl4-openssl-dev libkrb5-dev libssl-dev
	libselinux1-dev libxslt1-dev libpam0g-dev libreadline-dev libicu-dev)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing Debian packages: ${missing[*]}" >&2
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
	as_root env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
as_root mkdir -p "$cache"
as_root chown "$(id -u)" "$cache"
build=$(mktemp -d /tmp/loyalty-citusbuild.XXXXXX)
trap 'rm -rf "$build"' EXIT
echo "building Citus $version for PostgreSQL $major into $prefix (once per machine)" >&2
rm -rf "$prefix"
mkdir -p "$prefix/lib/postgresql" "$prefix/share/postgresql" "$prefix/include"
cp -a "/usr/lib/postgresql/$major" "$prefix/lib/postgresql/"
cp -a "/usr/share/postgresql/$major" "$prefix/share/postgresql/"
cp -a /usr/include/postgresql "$prefix/include/"
# pgTAP (SQL only) comes with the Debian package test/lib.sh installs
[ -d "$prefix/share/postgresql/$major/extension" ]
tar -xzf "$tarball" -C "$build"
src=$(ls -d "$build"/citus-* 2>/dev/null | head -1)
[ -n "$src" ] || src=$build
cd "$src"
[ -e configure ] || { echo "no configure in the Citus tarball" >&2; exit 1; }
# drop Citus's own static inline have_createdb_privilege (PostgreSQL 15.20
# declares it extern in commands/dbcommands.h)
perl -0pi -e 's/static inline bool\s*\nhave_createdb_privilege\(void\)\s*\{.*?\n\}\n//s' \
	src/include/pg_version_compat.h
if grep -q '^have_createdb_privilege(void)' src/include/pg_version_compat.h &&
	grep -q 'extern bool have_createdb_privilege' \
		"$prefix/include/postgresql/$major/server/commands/dbcommands.h"; then
	echo "could not remove have_createdb_privilege from pg_version_compat.h" >&2
	exit 1
fi
PG_CONFIG=$pg_config ./configure --without-libcurl >"$build/configure.log" 2>&1 ||
	{ tail -30 "$build/configure.log" >&2; exit 1; }
make -s -j"$(nproc)" >"$build/make.log" 2>&1 || { tail -30 "$build/make.log" >&2; exit 1; }
make -s install >"$build/install.log" 2>&1 || { tail -30 "$build/install.log" >&2; exit 1; }
touch "$prefix/.complete"
echo "$pg_config"
