#!/usr/bin/env bash
# test/citus_cluster.sh: a throwaway local Citus cluster (a coordinator and
# two workers on loopback ports) with loyalty installed and distributed.
#
#   bash test/citus_cluster.sh COMMAND [ARG...]
#       build Citus once (test/citus_build.sh), start the cluster, install
#       loyalty into the Citus installation, CREATE EXTENSION citus and
#       loyalty on the coordinator, add the workers, run
#       loyalty.citus_setup(); then run COMMAND with PGHOST/PGPORT/PGUSER/
#       PGDATABASE naming the coordinator (CITUS_WORKER_PORTS names the
#       workers), and remove the cluster on exit, even on failure.
#   source test/citus_cluster.sh   (from another script) gives the
#       functions citus_cluster (start + install, as above) and
#       citus_psql_worker N.
#
# Environment: CITUS_PORT (first of three consecutive TCP ports, default the
# first free triple from 56140), CITUS_SETUP=0 to skip citus_setup(),
# CITUS_SHARDS (citus.shard_count, default 8: small shards keep DDL fast).
# Like test/lib.sh's clusters, as root the servers run as "postgres".
set -euo pipefail

CITUS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CITUS_TMP=

citus_log() { printf '==> %s\n' "$*" >&2; }
citus_as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
citus_as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

citus_cleanup() {
	local rc=$? d
	if [ -n "$CITUS_TMP" ] && [ -d "$CITUS_TMP" ]; then
		for d in "$CITUS_TMP"/n*; do
			[ -f "$d/postmaster.pid" ] &&
				citus_as_pg "$CITUS_PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1
		done
		rm -rf "$CITUS_TMP"
	fi
	return $rc
}

# Three consecutive free TCP ports, from CITUS_PORT or 56140 on.
citus_ports() {
	local p q ok
	for p in $(seq "${CITUS_PORT:-56140}" 3 "$(( ${CITUS_PORT:-56140} + 300 ))"); do
		ok=1
		for q in $p $((p + 1)) $((p + 2)); do
			if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then ok=0; fi
		done
		if [ $ok = 1 ]; then echo "$p"; return 0; fi
		[ -n "${CITUS_PORT:-}" ] && break
	done
	echo "no three free TCP ports from ${CITUS_PORT:-56140}" >&2
	return 1
}

# psql on worker N (1 or 2) of the cluster.
citus_psql_worker() {
	local n=$1; shift
	psql -X -q -v ON_ERROR_STOP=1 -h "$CITUS_TMP" -p "$((CITUS_BASE + n))" "$@"
}

citus_cluster() {
	local pg_config owner port i
	pg_config=$(bash "$CITUS_ROOT/test/citus_build.sh")
	CITUS_PGBIN=$(dirname "$pg_config")
	export PATH="$CITUS_PGBIN:$PATH"
	citus_log "installing loyalty into the Citus installation of $pg_config"
	make -C "$CITUS_ROOT" -s PG_CONFIG="$pg_config" WERROR="${WERROR-}" >/dev/null
	citus_as_root make -C "$CITUS_ROOT" -s PG_CONFIG="$pg_config" install >/dev/null
	CITUS_TMP=$(mktemp -d /tmp/loyalty-citus.XXXXXX)
	trap citus_cleanup EXIT
	trap 'exit 130' INT TERM
	owner=$(id -un)
	if [ "$(id -u)" -eq 0 ]; then owner=postgres; chown postgres: "$CITUS_TMP"; fi
	chmod 755 "$CITUS_TMP"
	CITUS_BASE=$(citus_ports)
	citus_log "starting a Citus coordinator on port $CITUS_BASE, workers on $((CITUS_BASE + 1)) and $((CITUS_BASE + 2)), in $CITUS_TMP"
	for i in 0 1 2; do
		port=$((CITUS_BASE + i))
		citus_as_pg "$CITUS_PGBIN/initdb" -D "$CITUS_TMP/n$i" -U "$owner" -A trust \
			-E UTF8 --locale=C.UTF-8 >"$CITUS_TMP/initdb$i.log" 2>&1 ||
			{ cat "$CITUS_TMP/initdb$i.log" >&2; return 1; }
		cat >>"$CITUS_TMP/n$i/postgresql.conf" <<-EOF
			port = $port
			listen_addresses = '127.0.0.1'
			unix_socket_directories = '$CITUS_TMP'
			shared_preload_libraries = 'citus'
			max_connections = 200
			max_prepared_transactions = 200
			shared_buffers = 128MB
			fsync = off
			synchronous_commit = off
			full_page_writes = off
			timezone = 'UTC'
			log_min_messages = warning
			citus.shard_count = ${CITUS_SHARDS:-8}
			loyalty.refresh_future_skew = '400d'
		EOF
		citus_as_pg "$CITUS_PGBIN/pg_ctl" -D "$CITUS_TMP/n$i" -l "$CITUS_TMP/n$i.log" \
			-w -t 60 start >/dev/null || { cat "$CITUS_TMP/n$i.log" >&2; return 1; }
	done
	export PGHOST=$CITUS_TMP PGPORT=$CITUS_BASE PGUSER=$owner PGDATABASE=postgres
	export CITUS_WORKER_PORTS="$((CITUS_BASE + 1)) $((CITUS_BASE + 2))"
	for i in 1 2; do
		citus_psql_worker "$i" -c 'CREATE EXTENSION citus'
	done
	psql -X -q -v ON_ERROR_STOP=1 <<-EOF
		CREATE EXTENSION citus;
		SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_BASE);
		SELECT citus_add_node('127.0.0.1', $((CITUS_BASE + 1)));
		SELECT citus_add_node('127.0.0.1', $((CITUS_BASE + 2)));
		CREATE EXTENSION loyalty;
	EOF
	if [ "${CITUS_SETUP:-1}" != 0 ]; then
		psql -X -q -v ON_ERROR_STOP=1 -c 'SELECT loyalty.citus_setup()' >/dev/null
	fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	[ $# -gt 0 ] || { echo "usage: test/citus_cluster.sh COMMAND [ARG...]" >&2; exit 2; }
	citus_cluster
	"$@"
fi
