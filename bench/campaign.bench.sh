# campaign: publishing a marketing campaign with bound generated codes.
#
# publish_marketing_campaign of a campaign whose audience is an admin's
# query of N customer keys (N = 1,000,000, or 10 x --scale when smaller),
# every one consenting, no experiment, no cap: N codes bound to their
# customers in loyalty.coupon, N publication rows, N outbox rows, all in
# the one call, against INSERT ... SELECT md5(random()::text) of N rows
# into a table with a unique index.  Bar: <= 1.5.  Each side starts from
# empty tables (TRUNCATE inside the timed statement, as the baseline's
# CREATE TABLE), best of two.
n=$(( BENCH_SCALE * 10 < 1000000 ? BENCH_SCALE * 10 : 1000000 ))
q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

loyalty_log "campaign: $n consenting customers"
q -o /dev/null <<SQL
SET client_min_messages = warning;
TRUNCATE loyalty.consent, loyalty.consent_history;
INSERT INTO loyalty.consent (customer_id, channel, granted, source, changed_at)
SELECT 'bench-' || i, 'email', true, 'bench', now() FROM generate_series(1, $n) i;
SELECT loyalty.create_campaign('bench publish', 'fixed', amount_off => 5);
SELECT loyalty.create_marketing_campaign('bench publish', 'query',
	jsonb_build_object('query', 'SELECT ''bench-'' || i FROM generate_series(1, $n) i'),
	'code', coupon_campaign_id => (SELECT campaign_id FROM loyalty.campaign WHERE name = 'bench publish'),
	code_pattern => 'BP-####-####-####');
VACUUM ANALYZE loyalty.consent;
SQL
mc=$(q -At -c "SELECT marketing_campaign_id FROM loyalty.marketing_campaign WHERE name = 'bench publish'")
mine=$(bench_time_sql "TRUNCATE loyalty.coupon, loyalty.campaign_publication, loyalty.campaign_filtered, loyalty.outbox; SELECT * FROM loyalty.publish_marketing_campaign($mc)")
check=$(q -At -c "SELECT count(*) FROM loyalty.campaign_publication WHERE marketing_campaign_id = $mc")
[ "$check" = "$n" ] || echo "campaign: expected $n publications, found $check" >&2
base=$(bench_time_sql "SET client_min_messages = warning; DROP TABLE IF EXISTS bench.md5_codes; CREATE TABLE bench.md5_codes (code text UNIQUE); INSERT INTO bench.md5_codes SELECT md5(random()::text) FROM generate_series(1, $n)")
bench_report "publish $n bound codes vs md5 insert into a unique index" "$mine" "$base" ms "<= 1.5"
q -c "TRUNCATE loyalty.coupon, loyalty.campaign_publication, loyalty.campaign_filtered, loyalty.outbox, loyalty.consent" -c "DROP TABLE bench.md5_codes"
