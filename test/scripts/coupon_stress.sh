#!/usr/bin/env bash
# Scripted check: coupon caps and order idempotency under 50 concurrent
# sessions.
#
# Each scenario starts 50 psql sessions that all block on one advisory lock
# held by a controller session, then releases them at once so that they race
# inside loyalty.redeem_coupon:
#   1. 50 customers, 50 orders, one single-use code: exactly one succeeds,
#      the 49 others fail with LY012 (exhausted);
#   2. 50 sessions redeem the same order with the same code: all return the
#      same discount and exactly one redemption exists;
#   3. one customer, 50 orders, per-customer cap 1 (a public code): exactly
#      one succeeds, the others fail with LY014 (customer_limit);
#   4. 50 customers against a campaign capped at 10 with 50 distinct codes:
#      exactly 10 succeed.
# No session may fail any other way (no deadlock, no serialization error).
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=loyalty_coupon_stress
N=50
LOCK=4242
work=$(mktemp -d /tmp/loyalty-stress.XXXXXX)
cleanup() {
	if [ -n "${CTL_PID:-}" ]; then kill "$CTL_PID" 2>/dev/null || true; fi
	rm -rf "$work"
	dropdb --if-exists "$db" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -c "CREATE EXTENSION loyalty"
psql -o /dev/null -d "$db" <<'SQL'
SELECT loyalty.create_campaign('stress single use', 'fixed', amount_off => 5) AS c \gset
SELECT loyalty.add_public_code(:c, 'STRESSONE', max_uses => 1);
SELECT loyalty.create_campaign('stress same order', 'percent', percent_off => 10) AS c \gset
SELECT loyalty.add_public_code(:c, 'STRESSSAME');
SELECT loyalty.create_campaign('stress per customer', 'fixed', amount_off => 3, per_customer_cap => 1) AS c \gset
SELECT loyalty.add_public_code(:c, 'STRESSCUST');
SELECT loyalty.create_campaign('stress total cap', 'fixed', amount_off => 2, total_cap => 10) AS c \gset
SELECT loyalty.generate_codes(:c, 50, 'ST-#####');
SQL

# Run $N sessions of the SQL produced by "$1 <i>" behind the lock; leave
# each session's exit code, output and errors in $work/<scenario>.<i>.*
race() {
	local name=$1 make_sql=$2 i waiting
	# the controller takes the lock and keeps it until told to release it
	coproc CTL { command psql -X -q -d "$db"; }
	CTL_PID=$!
	echo "SELECT pg_advisory_lock($LOCK);" >&"${CTL[1]}"
	until [ "$(psql -At -d "$db" -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $LOCK AND granted")" = 1 ]; do
		sleep 0.1
	done
	for i in $(seq 1 $N); do
		(
			rc=0
			psql -At -d "$db" -c "BEGIN" -c "SELECT pg_advisory_xact_lock_shared($LOCK)" \
				-c "$($make_sql "$i")" -c "COMMIT" \
				>"$work/$name.$i.out" 2>"$work/$name.$i.err" || rc=$?
			echo "$rc" >"$work/$name.$i.rc"
		) &
	done
	# all sessions queued behind the lock, then go
	until [ "$(psql -At -d "$db" -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $LOCK AND NOT granted")" = "$N" ]; do
		sleep 0.1
	done
	echo "SELECT pg_advisory_unlock($LOCK);" >&"${CTL[1]}"
	echo '\q' >&"${CTL[1]}"
	wait
	CTL_PID=
}

fail() { echo "FAIL: $*" >&2; exit 1; }
count_rc() { cat "$work/$1".*.rc | grep -cx "$2" || true; }
count_err() { cat "$work/$1".*.err | grep -c "$2" || true; }
query() { psql -At -d "$db" -c "$1"; }

sql_single() { echo "SELECT loyalty.redeem_coupon('STRESSONE', 'cust-$1', 'single-$1', 20.00)"; }
sql_same() { echo "SELECT loyalty.redeem_coupon('STRESSSAME', 'cust-same', 'same-order', 50.00)"; }
sql_cust() { echo "SELECT loyalty.redeem_coupon('STRESSCUST', 'cust-one', 'cust-order-$1', 30.00)"; }
sql_cap() {
	echo "SELECT loyalty.redeem_coupon(code::text, 'cust-$1', 'cap-$1', 10.00)
	      FROM (SELECT code, row_number() OVER (ORDER BY coupon_id) AS n
	            FROM loyalty.coupon k JOIN loyalty.campaign c USING (campaign_id)
	            WHERE c.name = 'stress total cap') s WHERE n = $1"
}

# 1. single-use code
race single sql_single
ok=$(count_rc single 0)
[ "$ok" = 1 ] || fail "single-use code: $ok sessions succeeded, expected 1"
ex=$(count_err single 'cannot be redeemed: exhausted')
[ "$ex" = $((N - 1)) ] || fail "single-use code: $ex exhausted errors, expected $((N - 1))"
rows=$(query "SELECT count(*) FROM loyalty.redemption r JOIN loyalty.coupon k USING (coupon_id) WHERE k.code::text = 'STRESSONE'")
[ "$rows" = 1 ] || fail "single-use code: $rows redemptions recorded"
uses=$(query "SELECT uses FROM loyalty.coupon WHERE code::text = 'STRESSONE'")
[ "$uses" = 1 ] || fail "single-use code: uses counter is $uses"
echo "single-use code: 1 of $N succeeded, $ex exhausted"

# 2. one order from 50 sessions
race same sql_same
ok=$(count_rc same 0)
[ "$ok" = "$N" ] || { cat "$work"/same.*.err >&2; fail "same order: $ok of $N sessions succeeded"; }
distinct=$(cat "$work"/same.*.out | grep -v "^$" | sort -u)
[ "$distinct" = "5.00" ] || fail "same order: sessions returned different discounts: $distinct"
rows=$(query "SELECT count(*) FROM loyalty.redemption WHERE order_ref = 'same-order'")
[ "$rows" = 1 ] || fail "same order: $rows redemptions recorded"
echo "same order: $N sessions, all returned 5.00, 1 redemption"

# 3. one customer, 50 orders, once per customer
race cust sql_cust
ok=$(count_rc cust 0)
[ "$ok" = 1 ] || fail "per-customer cap: $ok sessions succeeded, expected 1"
lim=$(count_err cust 'cannot be redeemed: customer_limit')
[ "$lim" = $((N - 1)) ] || fail "per-customer cap: $lim customer_limit errors, expected $((N - 1))"
echo "per-customer cap: 1 of $N succeeded, $lim customer_limit"

# 4. total cap 10, 50 distinct codes
race cap sql_cap
ok=$(count_rc cap 0)
[ "$ok" = 10 ] || fail "total cap: $ok sessions succeeded, expected 10"
ex=$(count_err cap 'cannot be redeemed: exhausted')
[ "$ex" = $((N - 10)) ] || fail "total cap: $ex exhausted errors, expected $((N - 10))"
counter=$(query "SELECT uses FROM loyalty.campaign WHERE name = 'stress total cap'")
[ "$counter" = 10 ] || fail "total cap: counter is $counter"
echo "total cap: 10 of $N succeeded, $ex exhausted"

# nothing failed for another reason
others=$(cat "$work"/*.err | grep '^ERROR' | grep -vc 'cannot be redeemed: \(exhausted\|customer_limit\)' || true)
[ "$others" = 0 ] || { grep -h '^ERROR' "$work"/*.err | sort | uniq -c >&2; fail "$others unexpected errors"; }
echo "coupon stress: all scenarios passed"
