# test/lib.sh: shared set-up for the quick-start scripts (demo, tests, bench).
#
# Sourced, not run.  Provides:
#   loyalty_packages      install the Debian packages loyalty needs (if missing)
#   loyalty_build         make && make install (as root, or through sudo)
#   loyalty_cluster       start a throwaway cluster in a temporary directory on
#                         a free port, removed on exit even on failure; or use
#                         the server named by PGHOST/PGPORT when set
#   loyalty_psql          psql with ON_ERROR_STOP and no psqlrc
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the
# "postgres" system user (created by the Debian packages) and the scripts
# connect to it as that superuser.

set -euo pipefail

LOYALTY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=${PG_MAJOR:-15}
# PG_CONFIG may name another (e.g. private, relocated) installation; the
# server binaries are taken from beside it.
if [ -n "${PG_CONFIG:-}" ]; then
	PGBIN=$(dirname "$PG_CONFIG")
else
	PGBIN=/usr/lib/postgresql/$PG_MAJOR/bin
	export PG_CONFIG=$PGBIN/pg_config
fi

loyalty_log() { printf '==> %s\n' "$*" >&2; }

# Run a command as root: directly when we are root, else through sudo.
loyalty_as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

loyalty_packages() {
	local pkgs=(make gcc "postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
		"postgresql-$PG_MAJOR-pgtap" libtap-parser-sourcehandler-pgtap-perl
		"postgresql-contrib" "postgresql-client-$PG_MAJOR")
	local missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' \
			|| missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		loyalty_log "installing Debian packages: ${missing[*]}"
		loyalty_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		loyalty_as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	export PATH="$PGBIN:$PATH"
}

# The test suite (and so CI) builds with warnings as errors (WERROR=1, set by
# test/run.sh); the demo and a user's `make` do not need it.
loyalty_build() {
	loyalty_log "building and installing loyalty"
	make -C "$LOYALTY_ROOT" -s PG_CONFIG="$PG_CONFIG" WERROR="${WERROR-}" >/dev/null
	loyalty_as_root make -C "$LOYALTY_ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# A TCP port nobody listens on (the cluster also listens on a private socket).
loyalty_free_port() {
	local p
	for p in $(seq 55432 55631); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	echo "no free TCP port in 55432-55631" >&2
	return 1
}

LOYALTY_TMP=
loyalty_cleanup() {
	local rc=$?
	if [ -n "$LOYALTY_TMP" ] && [ -d "$LOYALTY_TMP" ]; then
		if [ -f "$LOYALTY_TMP/data/postmaster.pid" ]; then
			loyalty_as_pg "$PGBIN/pg_ctl" -D "$LOYALTY_TMP/data" -m immediate stop >/dev/null 2>&1 || true
		fi
		rm -rf "$LOYALTY_TMP"
	fi
	return $rc
}

# Run a command as the cluster owner.
loyalty_as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Start a throwaway cluster, or use $PGHOST/$PGPORT when the caller set them.
# Extra postgresql.conf lines may be passed as arguments.
loyalty_cluster() {
	if [ -n "${PGHOST:-}" ] || [ -n "${PGPORT:-}" ]; then
		loyalty_log "using the server at ${PGHOST:-local socket}:${PGPORT:-5432}"
		export PGDATABASE=${PGDATABASE:-postgres}
		return 0
	fi
	LOYALTY_TMP=$(mktemp -d /tmp/loyalty.XXXXXX)
	trap loyalty_cleanup EXIT
	trap 'exit 130' INT TERM
	local port owner
	port=$(loyalty_free_port)
	owner=$(id -un)
	if [ "$(id -u)" -eq 0 ]; then
		owner=postgres
		chown postgres: "$LOYALTY_TMP"
	fi
	chmod 755 "$LOYALTY_TMP"
	loyalty_log "starting a throwaway cluster in $LOYALTY_TMP on port $port"
	loyalty_as_pg "$PGBIN/initdb" -D "$LOYALTY_TMP/data" -U "$owner" -A trust \
		-E UTF8 --locale=C.UTF-8 >"$LOYALTY_TMP/initdb.log" 2>&1 \
		|| { cat "$LOYALTY_TMP/initdb.log" >&2; return 1; }
	{
		echo "port = $port"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$LOYALTY_TMP'"
		echo "max_connections = 150"
		echo "shared_buffers = 256MB"
		echo "max_prepared_transactions = 10"
		echo "fsync = off"
		echo "synchronous_commit = off"
		echo "full_page_writes = off"
		echo "max_wal_size = 4GB"
		echo "timezone = 'UTC'"
		echo "log_min_messages = warning"
		# the RFM fixtures refresh segments as of fixed dates up to 2027;
		# refresh_segments refuses an as_of ahead of the clock (5 minutes by
		# default), sql/rfm_snapshots.sql tests that with the default
		echo "loyalty.refresh_future_skew = '400d'"
		local line
		for line in "$@"; do echo "$line"; done
	} >>"$LOYALTY_TMP/data/postgresql.conf"
	loyalty_as_pg "$PGBIN/pg_ctl" -D "$LOYALTY_TMP/data" -l "$LOYALTY_TMP/server.log" \
		-w -t 60 start >/dev/null \
		|| { cat "$LOYALTY_TMP/server.log" >&2; return 1; }
	export PGHOST=$LOYALTY_TMP PGPORT=$port PGUSER=$owner PGDATABASE=postgres
}

loyalty_psql() {
	psql -X -q -v ON_ERROR_STOP=1 "$@"
}
