# call_overhead: the cost of entering the loyalty library from SQL.
# loyalty.version() (a C function in the extension's schema, privileges
# checked) against PostgreSQL's own version(), pgbench, one call per
# transaction.  Guards the per-call fixed cost every API function pays.
f1=$(mktemp); f2=$(mktemp)
echo "SELECT loyalty.version();" >"$f1"
echo "SELECT pg_catalog.version();" >"$f2"
mine=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f1")
base=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f2")
rm -f "$f1" "$f2"
bench_report "loyalty.version() TPS vs version() TPS" "$mine" "$base" tps
