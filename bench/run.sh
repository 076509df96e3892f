#!/usr/bin/env bash
# bench/run.sh: loyalty benchmarks on a throwaway cluster.
#
#   bash bench/run.sh [--scale CUSTOMERS] [--clients N] [--seconds S]
#                     [--huge-pages] [NAME ...]
#
# Installs missing packages, builds and installs the extension, starts a
# throwaway cluster (or uses PGHOST/PGPORT), generates the benchmark data
# (bench/data.sql: CUSTOMERS customers, about ten orders each, heavy-tailed,
# over three years) and runs the named benchmarks (default: all of
# bench/*.bench.sh).  Each benchmark times loyalty against a baseline in the
# same run and prints the ratio: absolute times are not comparable between
# runs on a noisy machine, ratios are.
#
# The default scale (100000 customers, ~1M orders) runs in a few minutes on
# two cores; the issues' bars are stated for --scale 1000000.
#
# --huge-pages (root only) reserves huge pages for the cluster's shared
# memory for the run (vm.nr_hugepages, restored at exit) and starts it with
# huge_pages = on, as PostgreSQL's documentation recommends for a server
# with gigabytes of shared_buffers.  On this machine's VM the first touch
# of each 4 kB page of shared memory by a new backend is expensive (see
# bench/README.md, rfm_live); huge pages take that away for both sides.

. "$(dirname "$0")/../test/lib.sh"

BENCH_SCALE=100000
BENCH_CLIENTS=8
BENCH_SECONDS=15
names=()
while [ $# -gt 0 ]; do
	case $1 in
		--scale) BENCH_SCALE=$2; shift 2 ;;
		--clients) BENCH_CLIENTS=$2; shift 2 ;;
		--seconds) BENCH_SECONDS=$2; shift 2 ;;
		--huge-pages) BENCH_HUGE=1; shift ;;
		-h|--help) sed -n '2,23p' "$0"; exit 0 ;;
		*) names+=("$1"); shift ;;
	esac
done
export BENCH_SCALE BENCH_CLIENTS BENCH_SECONDS

loyalty_packages
loyalty_build
# benchmark settings: a realistic server, not the test suite's
bench_conf=("shared_buffers = 2GB" "work_mem = 256MB" "maintenance_work_mem = 1GB"
	"max_parallel_workers_per_gather = 2" "checkpoint_timeout = 30min")
bench_huge_restore=
if [ -n "${BENCH_HUGE:-}" ]; then
	[ "$(id -u)" -eq 0 ] || { echo "--huge-pages needs root (vm.nr_hugepages)" >&2; exit 2; }
	bench_huge_restore=$(cat /proc/sys/vm/nr_hugepages)
	# 2 GB of buffers plus PostgreSQL's other shared memory, in 2 MB pages
	echo $((bench_huge_restore + 1200)) >/proc/sys/vm/nr_hugepages
	bench_conf+=("huge_pages = on")
fi
bench_exit() {
	local rc=$?
	loyalty_cleanup
	if [ -n "$bench_huge_restore" ]; then echo "$bench_huge_restore" >/proc/sys/vm/nr_hugepages; fi
	return $rc
}
loyalty_cluster "${bench_conf[@]}" || { bench_exit; exit 1; }
trap bench_exit EXIT
loyalty_log "huge pages: $(psql -XAt -d postgres -c 'SHOW huge_pages')"
cd "$LOYALTY_ROOT"

export PGDATABASE=loyalty_bench
loyalty_psql -d postgres -c "DROP DATABASE IF EXISTS $PGDATABASE" -c "CREATE DATABASE $PGDATABASE"
loyalty_psql -c "CREATE EXTENSION loyalty"
loyalty_log "generating bench data: $BENCH_SCALE customers"
t0=$(date +%s)
loyalty_psql -v customers="$BENCH_SCALE" -f bench/data.sql
loyalty_log "data ready in $(( $(date +%s) - t0 )) s: $(psql -XAt -c 'SELECT count(*) FROM bench.orders') orders"

if [ ${#names[@]} -eq 0 ]; then
	for f in bench/*.bench.sh; do names+=("$(basename "$f" .bench.sh)"); done
fi

. bench/lib.sh
for name in "${names[@]}"; do
	f=bench/$name.bench.sh
	[ -f "$f" ] || { echo "unknown benchmark: $name (see bench/*.bench.sh)" >&2; exit 2; }
	echo
	echo "### $name"
	. "$f"
done
