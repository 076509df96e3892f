#!/usr/bin/env bash
# Scripted check: points stay exact under concurrency.
#
# pgbench with many clients hammers a few hundred accounts with random
# earnings (some pending, some expiring within seconds, some by rule),
# spends, refunds (reverse_points) and partial returns (points_return_for_order,
# with tier_downgrade = 'on_refund'), repeated and conflicting references,
# negative adjustments (debt), the expiry job and tier evaluation, all at
# once, for POINTS_STRESS_SECONDS (default 20).  The business errors a shop
# expects (short balance, reused or unknown reference, reversed reference)
# are caught per call; any other error aborts the run.  Afterwards
# loyalty.check_integrity() must be empty, no balance negative, and every
# account's read-time balance equal to its settled balance once the expiry
# job has run.
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=loyalty_points_stress
seconds=${POINTS_STRESS_SECONDS:-20}
clients=${POINTS_STRESS_CLIENTS:-16}
accounts=${POINTS_STRESS_ACCOUNTS:-300}
work=$(mktemp -d /tmp/loyalty-stress.XXXXXX)
trap 'rm -rf "$work"; dropdb --if-exists "$db" >/dev/null 2>&1 || true' EXIT

psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" <<'SQL'
CREATE EXTENSION loyalty;
INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES
	('Bronze', 0, 0, 1), ('Silver', 1, 2000, 1.25), ('Gold', 2, 5000, 1.5);
INSERT INTO loyalty.points_program (tier_downgrade) VALUES ('on_refund');
INSERT INTO loyalty.earning_rule (name, event, points_per_unit) VALUES ('base', 'purchase', 1);
INSERT INTO loyalty.earning_rule (name, event, fixed_points, cap_points, cap_period)
VALUES ('review', 'review', 10, 30, 'day');
CREATE SCHEMA stress;
CREATE FUNCTION stress.try(q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
EXCEPTION WHEN SQLSTATE 'LP001' OR SQLSTATE 'LP002' OR SQLSTATE 'LP003' OR SQLSTATE 'LP005'
		OR SQLSTATE 'LP012' THEN
	NULL;	-- refused as documented; the state is unchanged
END $$;
SQL

cat >"$work/earn.sql" <<PGBENCH
\set c random(1, $accounts)
\set k random(1, 40)
\set p random(1, 200)
\set soon random(1, 15)
\set kind random(1, 4)
SELECT stress.try(format(CASE :kind
	WHEN 1 THEN 'SELECT loyalty.earn_points(%L, %s, %L)'
	WHEN 2 THEN 'SELECT loyalty.earn_points(%L, %s, %L, pending_until => now() + interval ''%s seconds'')'
	WHEN 3 THEN 'SELECT loyalty.earn_points(%L, %s, %L, expires_at => now() + interval ''%s seconds'')'
	ELSE 'SELECT loyalty.earn_for_order(%1\$L, %3\$L, %2\$s.99)' END,
	'c' || :c, :p, 'o-' || :c || '-' || :k, :soon));
PGBENCH
cat >"$work/spend.sql" <<PGBENCH
\set c random(1, $accounts)
\set k random(1, 40)
\set p random(1, 300)
SELECT stress.try(format('SELECT loyalty.spend_points(%L, %s, %L)', 'c' || :c, :p, 'o-' || :c || '-' || :k));
PGBENCH
cat >"$work/reverse.sql" <<PGBENCH
\set c random(1, $accounts)
\set k random(1, 40)
\set r random(1, 4)
\set a random(1, 80)
SELECT stress.try(CASE WHEN :r = 1
	THEN format('SELECT loyalty.reverse_points(%L)', 'o-' || :c || '-' || :k)
	ELSE format('SELECT loyalty.points_return_for_order(%L, %L, %L, %s.5)', 'c' || :c, 'o-' || :c || '-' || :k,
				'rt-' || :c || '-' || :k || '-' || :r, :a) END);
PGBENCH
cat >"$work/other.sql" <<PGBENCH
\set c random(1, $accounts)
\set k random(1, 1000000000)
\set what random(1, 4)
SELECT stress.try(CASE :what
	WHEN 1 THEN 'SELECT loyalty.expire_points()'
	WHEN 2 THEN format('SELECT loyalty.adjust_points(%L, -50, %L, %L)', 'c' || :c, 'adj-' || :k, 'stress debit')
	WHEN 3 THEN format('SELECT loyalty.earn_for_action(%L, %L, %L)', 'c' || :c, 'review', 'rv-' || :k)
	ELSE 'SELECT loyalty.evaluate_tiers_batch(now(), NULL, 100)' END);
PGBENCH

echo "points stress: $clients clients, $accounts accounts, $seconds s"
pgbench -n -c "$clients" -j 4 -T "$seconds" \
	-f "$work/earn.sql@45" -f "$work/spend.sql@30" -f "$work/reverse.sql@15" -f "$work/other.sql@10" \
	"$db" >"$work/pgbench.log" 2>&1 || { cat "$work/pgbench.log"; exit 1; }
grep -E '^(number of transactions actually processed|number of failed|tps)' "$work/pgbench.log"
if grep -q 'aborted' "$work/pgbench.log"; then
	cat "$work/pgbench.log"
	echo "pgbench clients aborted" >&2
	exit 1
fi

# settle everything, then check
psql -d "$db" -c "SELECT loyalty.expire_points()" >/dev/null
psql -At -d "$db" -c "
	SELECT format('%s accounts, %s entries (%s earn, %s spend, %s reverse, %s return, %s expire, %s adjust), %s accounts in debt',
		(SELECT count(*) FROM loyalty.points_account),
		count(*), count(*) FILTER (WHERE kind = 'earn'), count(*) FILTER (WHERE kind = 'spend'),
		count(*) FILTER (WHERE kind = 'reverse'), count(*) FILTER (WHERE kind = 'return'),
		count(*) FILTER (WHERE kind = 'expire'),
		count(*) FILTER (WHERE kind = 'adjust'),
		(SELECT count(*) FROM loyalty.points_account WHERE debt > 0))
	FROM loyalty.points_ledger"
problems=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.check_integrity()")
if [ "$problems" != 0 ]; then
	psql -d "$db" -c "SELECT * FROM loyalty.check_integrity() LIMIT 20"
	echo "check_integrity() found $problems problems" >&2
	exit 1
fi
negative=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.points_account WHERE available < 0 OR pending < 0 OR debt < 0")
[ "$negative" = 0 ] || { echo "$negative negative balances" >&2; exit 1; }
# at one instant, after the job, the read-time balance is the settled one
# (the job takes no time in the future: business times are bounded; wait
# until every lot of the storm, pending or expiring within 15 seconds, is due)
sleep 16
t=$(psql -At -d "$db" -c "SELECT clock_timestamp()")
differ=$(psql -At -d "$db" -c "SELECT loyalty.expire_points('$t') IS NULL" \
	-c "SELECT count(*) FROM loyalty.points_account a, loyalty.points_balance(a.customer_id, '$t') b
		WHERE (b.available, b.pending, b.debt) <> (a.available, a.pending, a.debt)" | tail -1)
[ "$differ" = 0 ] || { echo "$differ accounts: read-time balance differs from the settled one" >&2; exit 1; }
[ "$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.check_integrity()")" = 0 ] \
	|| { echo "check_integrity() not empty after settling everything" >&2; exit 1; }
# the run exercised every kind of entry
for kind in earn spend reverse return expire adjust; do
	n=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.points_ledger WHERE kind = '$kind'")
	[ "$n" -gt 0 ] || { echo "no $kind entries: the run exercised too little" >&2; exit 1; }
done
echo "points stress: check_integrity() empty, no negative balance"
