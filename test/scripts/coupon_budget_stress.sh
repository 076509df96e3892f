#!/usr/bin/env bash
# Scripted check: campaign budgets (issue 15, item 6) under 50 concurrent
# sessions, released at once from one advisory lock as in coupon_stress.sh:
#   1. money budget: a fixed 10.00 campaign with a budget of 95.00 and 20
#      used by two redemptions before the race (75.00 left): 50 customers
#      race for it, exactly 7 succeed, 43 fail with LY017
#      (budget_exhausted); the counter equals the ledger; then a rollback
#      gives 10.00 back;
#   2. the last unit of a budget: 50 customers race for a budget with
#      exactly one 10.00 discount left: exactly one succeeds;
#   3. period cap: 50 customers against a cap of 5 per day: exactly 5
#      succeed, 45 fail with LY018 (period_limit).
# No session may fail any other way (no deadlock, no serialization error).
set -euo pipefail
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
db=loyalty_budget_stress
N=50
LOCK=4242
work=$(mktemp -d /tmp/loyalty-budget-stress.XXXXXX)
cleanup() {
	if [ -n "${CTL_PID:-}" ]; then kill "$CTL_PID" 2>/dev/null || true; fi
	rm -rf "$work"
	dropdb --if-exists "$db" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -d "$db" -c "CREATE EXTENSION loyalty"
psql -o /dev/null -d "$db" <<'SQL'
SELECT loyalty.create_campaign('stress budget', 'fixed', amount_off => 10) AS c \gset
SELECT loyalty.add_public_code(:c, 'STRESSBUDGET');
SELECT loyalty.redeem_coupon('STRESSBUDGET', 'pre-1', 'pre-1', 50.00);
SELECT loyalty.redeem_coupon('STRESSBUDGET', 'pre-2', 'pre-2', 50.00);
SELECT loyalty.set_campaign_budget(:c, discount_budget => 95);
SELECT loyalty.create_campaign('stress last', 'fixed', amount_off => 10) AS c \gset
SELECT loyalty.add_public_code(:c, 'STRESSLAST');
SELECT loyalty.set_campaign_budget(:c, discount_budget => 19.99);
SELECT loyalty.redeem_coupon('STRESSLAST', 'pre-1', 'last-pre', 50.00);
SELECT loyalty.set_campaign_budget(:c, discount_budget => 20);
SELECT loyalty.create_campaign('stress daily', 'fixed', amount_off => 1) AS c \gset
SELECT loyalty.add_public_code(:c, 'STRESSDAILY');
SELECT loyalty.set_campaign_budget(:c, period => 'day', period_cap => 5);
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

sql_budget() { echo "SELECT loyalty.redeem_coupon('STRESSBUDGET', 'cust-$1', 'budget-$1', 50.00)"; }
sql_last() { echo "SELECT loyalty.redeem_coupon('STRESSLAST', 'cust-$1', 'last-$1', 50.00)"; }
sql_daily() { echo "SELECT loyalty.redeem_coupon('STRESSDAILY', 'cust-$1', 'daily-$1', 50.00)"; }
ledger() {
	query "SELECT b.discount_used = (SELECT sum(r.discount) FROM loyalty.redemption r WHERE r.campaign_id = b.campaign_id)
	       FROM loyalty.campaign_budget b JOIN loyalty.campaign c USING (campaign_id) WHERE c.name = '$1'"
}

# 1. money budget, 75.00 left for 10.00 discounts
race budget sql_budget
ok=$(count_rc budget 0)
[ "$ok" = 7 ] || fail "budget: $ok sessions succeeded, expected 7"
ex=$(count_err budget 'cannot be redeemed: budget_exhausted')
[ "$ex" = $((N - 7)) ] || fail "budget: $ex budget_exhausted errors, expected $((N - 7))"
used=$(query "SELECT discount_used FROM loyalty.campaign_budget_status WHERE name = 'stress budget'")
[ "$used" = 90.00 ] || fail "budget: discount_used is $used, expected 90.00"
[ "$(ledger 'stress budget')" = t ] || fail "budget: counter differs from the ledger"
query "SELECT loyalty.rollback_redemption('pre-1')" >/dev/null
used=$(query "SELECT discount_used FROM loyalty.campaign_budget_status WHERE name = 'stress budget'")
[ "$used" = 80.00 ] || fail "budget: after a rollback discount_used is $used, expected 80.00"
echo "budget: 7 of $N succeeded, $ex budget_exhausted, a rollback gave 10.00 back"

# 2. the last unit of a budget
race last sql_last
ok=$(count_rc last 0)
[ "$ok" = 1 ] || fail "last budget unit: $ok sessions succeeded, expected 1"
ex=$(count_err last 'cannot be redeemed: budget_exhausted')
[ "$ex" = $((N - 1)) ] || fail "last budget unit: $ex budget_exhausted errors, expected $((N - 1))"
[ "$(ledger 'stress last')" = t ] || fail "last budget unit: counter differs from the ledger"
echo "last budget unit: 1 of $N succeeded, $ex budget_exhausted"

# 3. period cap of 5 per day
race daily sql_daily
ok=$(count_rc daily 0)
[ "$ok" = 5 ] || fail "period cap: $ok sessions succeeded, expected 5"
lim=$(count_err daily 'cannot be redeemed: period_limit')
[ "$lim" = $((N - 5)) ] || fail "period cap: $lim period_limit errors, expected $((N - 5))"
uses=$(query "SELECT period_uses FROM loyalty.campaign_budget_status WHERE name = 'stress daily'")
[ "$uses" = 5 ] || fail "period cap: period_uses is $uses"
echo "period cap: 5 of $N succeeded, $lim period_limit"

# nothing failed for another reason
others=$(cat "$work"/*.err | grep '^ERROR' | grep -vc 'cannot be redeemed: \(budget_exhausted\|period_limit\)' || true)
[ "$others" = 0 ] || { grep -h '^ERROR' "$work"/*.err | sort | uniq -c >&2; fail "$others unexpected errors"; }
echo "budget stress: all scenarios passed"
