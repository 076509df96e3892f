#!/usr/bin/env bash
# bench/citus.sh: loyalty on a local Citus cluster against the same calls on
# a single node of the same machine.
#
#   bash bench/citus.sh [--scale CUSTOMERS] [--clients N] [--seconds S]
#
# Starts a throwaway Citus cluster (test/citus_cluster.sh: a coordinator and
# two workers on loopback, Citus 13.2.2 on PostgreSQL 15, built once from
# ../shared/vendor by test/citus_build.sh), with loyalty.citus_setup() done.
# The single node is a second database of the coordinator's server without
# the citus extension: same binaries, same settings, same machine.
#
# 1. rfm_segmentation over bench.orders (bench/data.sql: CUSTOMERS
#    customers, about ten orders each) distributed by customer on the two
#    workers (the per-customer aggregation pushed down to the shards)
#    against the same call over the same rows in a plain table of the
#    single node; best of two each; bar <= 1.0 (issue 14).
# 2. redeem_coupon (a public code, a new customer and order each time) and
#    earn_points (a new reference each time) from N clients, TPS on the
#    cluster and on the single node, reported side by side.
#
# Default scale 1,000,000 customers (about 10M orders, issue 14's bar); the
# data is generated once on the single node and copied into the cluster.

. "$(dirname "$0")/../test/lib.sh"
. "$(dirname "$0")/lib.sh"

BENCH_SCALE=1000000
BENCH_CLIENTS=8
BENCH_SECONDS=15
while [ $# -gt 0 ]; do
	case $1 in
		--scale) BENCH_SCALE=$2; shift 2 ;;
		--clients) BENCH_CLIENTS=$2; shift 2 ;;
		--seconds) BENCH_SECONDS=$2; shift 2 ;;
		-h|--help) sed -n '2,24p' "$0"; exit 0 ;;
		*) echo "unknown argument: $1" >&2; exit 2 ;;
	esac
done

loyalty_packages
# shellcheck source=../test/citus_cluster.sh
source "$(dirname "$0")/../test/citus_cluster.sh"
citus_cluster
cluster_db=$PGDATABASE
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

q -d "$cluster_db" -c "CREATE DATABASE single"
q -d single -c "CREATE EXTENSION loyalty"
echo "==> generating bench data on the single node: $BENCH_SCALE customers"
t0=$(date +%s)
q -d single -v customers="$BENCH_SCALE" -f "$(dirname "$0")/data.sql" >/dev/null
norders=$(q -d single -At -c "SELECT count(*) FROM bench.orders")
echo "==> $norders orders in $(( $(date +%s) - t0 )) s; copying them into the cluster"
q -d "$cluster_db" <<-'SQL' >/dev/null
	SET client_min_messages = warning;
	CREATE SCHEMA bench;
	CREATE TABLE bench.orders (order_id bigint NOT NULL, customer_id bigint NOT NULL,
							   ordered_at timestamptz NOT NULL, amount numeric(12,2) NOT NULL);
	SELECT create_distributed_table('bench.orders', 'customer_id', colocate_with => 'none');
SQL
q -d single -c "COPY bench.orders (order_id, customer_id, ordered_at, amount) TO STDOUT" |
	q -d "$cluster_db" -c "COPY bench.orders FROM STDIN"
q -d single -c "VACUUM ANALYZE bench.orders" -c "CHECKPOINT"
q -d "$cluster_db" -c "VACUUM ANALYZE bench.orders" -c "CHECKPOINT"
echo "==> cluster: $(q -d "$cluster_db" -At -c "SELECT count(*) FROM bench.orders") orders on $(q -d "$cluster_db" -At -c "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'bench.orders'::regclass") shards"

echo
echo "### citus (scale $BENCH_SCALE customers, $norders orders, $BENCH_CLIENTS clients)"
call="SELECT count(*) FROM loyalty.rfm_segmentation('bench.orders', 'customer_id', 'ordered_at', 'amount', as_of => '2026-11-01')"
pushed=$(q -d "$cluster_db" -c "SET client_min_messages = debug1" -c "$call" 2>&1 | grep -c "pushed down" || true)
[ "$pushed" = 1 ] || { echo "rfm_segmentation was not pushed down on the cluster" >&2; exit 1; }
single=$(PGDATABASE=single bench_time_sql "$call")
dist=$(PGDATABASE=$cluster_db bench_time_sql "$call")
bench_report "rfm_segmentation distributed (2 workers) vs single node" "$dist" "$single" ms "<= 1.0"

# 2. checkout calls, both sides
for db in "$cluster_db" single; do
	q -d "$db" <<-'SQL' >/dev/null
		SELECT loyalty.create_campaign('bench public', 'percent', percent_off => 10, max_discount => 20);
		SELECT loyalty.add_public_code(campaign_id, 'BENCHTEN') FROM loyalty.campaign WHERE name = 'bench public';
	SQL
done
redeem=$(mktemp); earn=$(mktemp)
cat >"$redeem" <<'SQL'
\set r random(1, 1000000000000)
SELECT loyalty.redeem_coupon('BENCHTEN', 'cust-' || :client_id || '-' || :r, 'order-' || :client_id || '-' || :r, 84.00);
SQL
cat >"$earn" <<'SQL'
\set c random(1, 100000)
\set r random(1, 1000000000000)
SELECT loyalty.earn_points('c' || :c, 10, 'e-' || :client_id || '-' || :r);
SQL
for f in "$redeem" "$earn"; do
	[ "$f" = "$redeem" ] && what="redeem_coupon" || what="earn_points"
	a=$(PGDATABASE=single bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f")
	b=$(PGDATABASE=$cluster_db bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f")
	bench_report "$what TPS on the cluster vs the single node" "$b" "$a" tps
done
rm -f "$redeem" "$earn"
for db in "$cluster_db" single; do
	n=$(q -d "$db" -At -c "SELECT count(*) FROM loyalty.check_integrity()")
	echo "check_integrity() on $db after the runs: $n problems"
done
