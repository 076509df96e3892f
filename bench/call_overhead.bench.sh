# call_overhead: the cost of entering the loyalty library from SQL.
# loyalty.version() (a C function in the extension's schema, privileges
# checked) against PostgreSQL's own version(), pgbench, one call per
# transaction.  Guards the per-call fixed cost every API function pays.
#
# Then the consistent API names of 0.3.0 (doc/api.md) against the old names
# they call with rearranged arguments (src/common/loyalty_call.c): a
# read-only call (validate of an unknown code: parse, one index probe) and a
# write (an earn under a random reference; repeats return the first
# receipt).  A ratio near 1 means the rearranging costs nothing measurable.
f1=$(mktemp); f2=$(mktemp)
echo "SELECT loyalty.version();" >"$f1"
echo "SELECT pg_catalog.version();" >"$f2"
mine=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f1")
base=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f2")
bench_report "loyalty.version() TPS vs version() TPS" "$mine" "$base" tps

echo "SELECT * FROM loyalty.coupon_validate('c-1', 'NO-SUCH-CODE', '{\"amount\": 10}');" >"$f1"
echo "SELECT * FROM loyalty.validate_coupon('NO-SUCH-CODE', 'c-1', '{\"amount\": 10}'::jsonb);" >"$f2"
mine=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f1")
base=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f2")
bench_report "coupon_validate() TPS vs validate_coupon() TPS" "$mine" "$base" tps

cat >"$f1" <<'SQL'
\set c random(1, 1000)
\set r random(1, 1000000000)
SELECT * FROM loyalty.points_earn('ovh-' || :c, 'new-' || :c || '-' || :r, 1);
SQL
cat >"$f2" <<'SQL'
\set c random(1, 1000)
\set r random(1, 1000000000)
SELECT * FROM loyalty.earn_points('ovh-' || :c, 1, 'old-' || :c || '-' || :r);
SQL
# the old name first: the ledger it grows slows the second run, not the first
base=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f2")
mine=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f1")
bench_report "points_earn() TPS vs earn_points() TPS" "$mine" "$base" tps
rm -f "$f1" "$f2"
