# coupons: the coupon lifecycle under load.
#
# 1. generate_codes of N codes (N = 1,000,000, or 10 x --scale when smaller)
#    into loyalty.coupon, against INSERT ... SELECT md5(random()::text) of N
#    rows into a table with a unique index.  Bar: <= 1.5.
# 2. Redeeming distinct single-use codes, $BENCH_CLIENTS clients, one
#    SELECT loyalty.redeem_coupon(...) per transaction (the code is picked by
#    a sequence in the same statement), against pgbench's built-in
#    simple-update on a scale-10 pgbench schema in the same database.
#    Bar: >= 1.0.
# 3. One public code capped at 500, hammered by 32 clients (32 x 32
#    attempts): exactly 500 redemptions; TPS reported.
# 4. validate_coupon TPS, $BENCH_CLIENTS clients, against pgbench's built-in
#    select-only.  Reported.
n=$(( BENCH_SCALE * 10 < 1000000 ? BENCH_SCALE * 10 : 1000000 ))
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

loyalty_log "coupons: pgbench -i -s 10"
pgbench -i -q -s 10 >/dev/null 2>&1
q -o /dev/null <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.md5_codes, bench.redeem_codes;
DROP SEQUENCE IF EXISTS bench.redeem_seq;
DROP FUNCTION IF EXISTS bench.try_redeem(text, text, text, numeric);
SELECT loyalty.create_campaign('bench generate', 'fixed', amount_off => 5);
SQL

# 1. generation, into an empty coupon table each time (as the baseline's)
gen=$(q -At -c "SELECT campaign_id FROM loyalty.campaign WHERE name = 'bench generate'")
mine=$(bench_time_sql "TRUNCATE loyalty.coupon; SELECT loyalty.generate_codes($gen, $n, 'GEN-####-####-####')")
base=$(bench_time_sql "SET client_min_messages = warning; DROP TABLE IF EXISTS bench.md5_codes; CREATE TABLE bench.md5_codes (code text UNIQUE); INSERT INTO bench.md5_codes SELECT md5(random()::text) FROM generate_series(1, $n)")
bench_report "generate_codes $n vs md5 insert into a unique index" "$mine" "$base" ms "<= 1.5"
q -c "TRUNCATE loyalty.coupon" -c "DROP TABLE bench.md5_codes"

q -o /dev/null <<'SQL'
SELECT loyalty.create_campaign('bench distinct', 'percent', percent_off => 10, max_discount => 20);
SELECT loyalty.create_campaign('bench capped', 'fixed', amount_off => 3, total_cap => 500);
SELECT loyalty.add_public_code(campaign_id, 'FIVEHUNDRED') FROM loyalty.campaign WHERE name = 'bench capped';
SELECT loyalty.create_campaign('bench validate', 'percent', percent_off => 15);
SELECT loyalty.add_public_code(campaign_id, 'CHECKME') FROM loyalty.campaign WHERE name = 'bench validate';
-- the capped run counts refusals instead of stopping the client
CREATE FUNCTION bench.try_redeem(code text, customer text, order_ref text, amount numeric)
RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
	RETURN loyalty.redeem_coupon(code, customer, order_ref, amount);
EXCEPTION WHEN SQLSTATE 'LY012' THEN
	RETURN NULL;
END $$;
SQL

# 2. distinct codes: enough for the run at any plausible rate
ncodes=$(( BENCH_SECONDS * 20000 ))
dist=$(q -At -c "SELECT campaign_id FROM loyalty.campaign WHERE name = 'bench distinct'")
q -o /dev/null <<SQL
SELECT loyalty.generate_codes($dist, $ncodes, 'BN-####-####-####');
CREATE TABLE bench.redeem_codes AS
SELECT row_number() OVER (ORDER BY coupon_id) AS n, code::text AS code
FROM loyalty.coupon WHERE campaign_id = $dist;
ALTER TABLE bench.redeem_codes ADD PRIMARY KEY (n);
CREATE SEQUENCE bench.redeem_seq;
VACUUM ANALYZE;
CHECKPOINT;
SQL
f1=$(mktemp); f2=$(mktemp); f3=$(mktemp)
cat >"$f1" <<'SQL'
SELECT loyalty.redeem_coupon(c.code, 'cust-' || c.n, 'order-' || c.n, 84.00) FROM bench.redeem_codes c WHERE c.n = (SELECT nextval('bench.redeem_seq'));
SQL
mine=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f1")
base=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -b simple-update)
bench_report "redeem distinct codes TPS vs pgbench simple-update" "$mine" "$base" tps ">= 1.0"
used=$(q -At -c "SELECT count(*) FROM loyalty.redemption WHERE campaign_id = $dist")
issued=$(q -At -c "SELECT last_value FROM bench.redeem_seq")
echo "  redemptions recorded: $used of $issued attempts"

# 3. one public code capped at 500, 32 clients
cat >"$f2" <<'SQL'
\set r random(1, 1000000000)
SELECT bench.try_redeem('FIVEHUNDRED', 'cust-' || :client_id, 'capped-' || :client_id || '-' || :r, 30.00);
SQL
t0=$(date +%s%N)
tps=$(pgbench -n -c 32 -j 32 -t 32 -f "$f2" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
t1=$(date +%s%N)
capped=$(q -At -c "SELECT count(*) FROM loyalty.redemption r JOIN loyalty.campaign c USING (campaign_id) WHERE c.name = 'bench capped'")
counter=$(q -At -c "SELECT uses FROM loyalty.campaign WHERE name = 'bench capped'")
printf '%-58s redemptions %d (counter %d, expected 500)  %s tps over %d attempts in %d ms\n' \
	"public code capped at 500, 32 clients" "$capped" "$counter" "$tps" 1024 $(( (t1 - t0) / 1000000 ))
[ "$capped" = 500 ] || echo "  FAILED: $capped redemptions instead of 500"

# 4. validation
cat >"$f3" <<'SQL'
\set c random(1, 1000000)
SELECT valid, discount FROM loyalty.validate_coupon('CHECKME', 'cust-' || :c, 84.00);
SQL
mine=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -f "$f3")
base=$(bench_tps "$BENCH_CLIENTS" "$BENCH_SECONDS" -b select-only)
bench_report "validate_coupon TPS vs pgbench select-only" "$mine" "$base" tps
rm -f "$f1" "$f2" "$f3"
