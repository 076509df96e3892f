#!/usr/bin/env bash
# Scripted check (issue 11, the bar): a points storm with references shared
# across customers and a kill -9 of the server mid-storm ends with an empty
# check_integrity(), no negative balance and no acknowledged call lost.
#
# Runs on a throwaway cluster of its own (never the suite's server, which it
# kills), with synchronous_commit = on: a commit is acknowledged only once
# its WAL is flushed, which is what "acknowledged" promises.  Several psql
# clients call earn_points, spend_points, reverse_points and exchange_points
# in autocommit with customers and references drawn from small pools, so
# that many calls of different customers collide on one reference (LP002
# for all but the owner).  Each client prints one ACK line per call the
# server answered with success.  Mid-storm the postmaster and every backend
# get SIGKILL; the cluster restarts (crash recovery) and every ACK must be
# found: the ledger entry with the returned id, customer, kind and
# reference, and for an exchange the recorded code.
set -euo pipefail
unset PGHOST PGPORT PGUSER PGDATABASE
. "$(dirname "$0")/../lib.sh"
loyalty_cluster "synchronous_commit = on"
psql() { command psql -X -q "$@"; }
clients=${POINTS_CRASH_CLIENTS:-6}
calls=${POINTS_CRASH_CALLS:-50000}
customers=${POINTS_CRASH_CUSTOMERS:-20}
refs=${POINTS_CRASH_REFERENCES:-600}
work=$(mktemp -d /tmp/loyalty-crash.XXXXXX)
trap 'loyalty_cleanup; rm -rf "$work"' EXIT
db=loyalty_points_crash

psql -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db"
psql -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
CREATE EXTENSION loyalty;
INSERT INTO loyalty.tier (name, rank, threshold, multiplier) VALUES
	('Bronze', 0, 0, 1), ('Silver', 1, 2000, 1.25);
INSERT INTO loyalty.points_reward (campaign_id, points)
VALUES (loyalty.create_campaign('Crash voucher', 'fixed', amount_off => 5), 40);
SQL
campaign=$(psql -At -d "$db" -c "SELECT campaign_id FROM loyalty.points_reward")

# one script per client: calls with customers and references from small
# pools (the same reference for several customers and kinds)
for c in $(seq 1 "$clients"); do
	awk -v seed="$c" -v n="$calls" -v nc="$customers" -v nr="$refs" -v camp="$campaign" 'BEGIN {
		srand(seed * 7919);
		for (i = 0; i < n; i++) {
			cust = "c" int(rand() * nc + 1);
			ref = "r" int(rand() * nr + 1);
			k = rand();
			if (k < 0.40)
				printf "SELECT %s || (loyalty.earn_points(%s, %d, %s)).entry_id;\n",
					"'\''ACK|earn|" cust "|" ref "|'\''", "'\''" cust "'\''", int(rand() * 90 + 10), "'\''" ref "'\''";
			else if (k < 0.70)
				printf "SELECT %s || (loyalty.spend_points(%s, %d, %s)).entry_id;\n",
					"'\''ACK|spend|" cust "|" ref "|'\''", "'\''" cust "'\''", int(rand() * 60 + 1), "'\''s" ref "'\''";
			else if (k < 0.88)
				printf "SELECT %s || (loyalty.reverse_points(%s)).entry_id;\n",
					"'\''ACK|reverse|" cust "|" ref "|'\''", "'\''" ref "'\''";
			else
				printf "SELECT %s || code FROM loyalty.exchange_points(%s, %d, %s);\n",
					"'\''ACK|exchange|" cust "|x" ref "|'\''", "'\''" cust "'\''", camp, "'\''x" ref "'\''";
		}
	}' >"$work/client-$c.sql"
done

pids=()
for c in $(seq 1 "$clients"); do
	psql -At -d "$db" -f "$work/client-$c.sql" >"$work/ack-$c.out" 2>"$work/err-$c.out" &
	pids+=($!)
done
# let the storm build up, then kill the whole server at once
sleep "${POINTS_CRASH_AFTER:-3}"
pm=$(head -1 "$LOYALTY_TMP/data/postmaster.pid")
running=0
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && running=$((running + 1)); done
[ "$running" -gt 0 ] || { echo "the storm ended before the crash: raise POINTS_CRASH_CALLS" >&2; exit 1; }
# stop the postmaster first so that it forks nothing between the listing of
# its children and the kill; then SIGKILL all of them at once
kill -STOP "$pm"
children=$(pgrep -P "$pm" | tr '\n' ' ' || true)
kill -9 "$pm" $children
for p in "${pids[@]}"; do wait "$p" || true; done
# (a zombie nobody reaps yet counts as gone: its shared memory is detached)
for p in $children; do
	for _ in $(seq 1 100); do
		kill -0 "$p" 2>/dev/null || break
		grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && break
		sleep 0.1
	done
done
started=no
for _ in 1 2 3 4 5; do
	if loyalty_as_pg "$PGBIN/pg_ctl" -D "$LOYALTY_TMP/data" -l "$LOYALTY_TMP/server.log" -w -t 120 start >/dev/null 2>&1; then
		started=yes
		break
	fi
	sleep 2
done
[ "$started" = yes ] || { tail -20 "$LOYALTY_TMP/server.log" >&2; echo "the server did not restart" >&2; exit 1; }
grep -q "database system was interrupted\|not properly shut down" "$LOYALTY_TMP/server.log" \
	|| { echo "the server did not go through crash recovery" >&2; exit 1; }

cat "$work"/ack-*.out | grep '^ACK|' | cut -d'|' -f2- >"$work/acks.txt" || true
acks=$(wc -l <"$work/acks.txt")
conflicts=$(cat "$work"/err-*.out | grep -c 'belongs to another customer' || true)
echo "points crash: $clients clients, $acks acknowledged calls before the kill" \
	"($(cut -d'|' -f1 "$work/acks.txt" | sort | uniq -c | awk '{printf "%s %s ", $1, $2}')), $conflicts reference conflicts refused"
[ "$acks" -gt 100 ] || { echo "too few acknowledged calls: the storm exercised too little" >&2; exit 1; }
[ "$conflicts" -gt 0 ] || { echo "no reference was contended across customers" >&2; exit 1; }
grep -q '^exchange|' "$work/acks.txt" || { echo "no exchange was acknowledged" >&2; exit 1; }
# every error the clients saw is a documented refusal or the crash itself
unexpected=$(cat "$work"/err-*.out | grep 'ERROR' \
	| grep -v -e 'LP00[1-9]' -e 'LP010' -e 'insufficient points' -e 'belongs to another customer' \
		-e 'no points were earned or spent' -e 'was reversed' -e 'cannot be reversed' \
		-e 'already used' -e 'terminat' -e 'connection' || true)
if [ -n "$unexpected" ]; then
	echo "unexpected errors:" >&2; echo "$unexpected" | sort | uniq -c | head >&2; exit 1
fi

psql -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE TABLE public.ack (kind text, customer_id text, reference text, result text);
\copy public.ack FROM '$work/acks.txt' WITH (FORMAT text, DELIMITER '|')
SQL
lost=$(psql -At -d "$db" -c "
	SELECT count(*) FROM public.ack k
	WHERE CASE k.kind
		WHEN 'exchange' THEN NOT EXISTS (SELECT 1 FROM loyalty.points_exchange e
										 WHERE e.reference = k.reference AND e.customer_id = k.customer_id
										   AND e.code = k.result)
		WHEN 'earn' THEN NOT EXISTS (SELECT 1 FROM loyalty.points_ledger e
									 WHERE e.entry_id = k.result::bigint AND e.customer_id = k.customer_id
									   AND e.reference = k.reference AND e.kind = 'earn')
		WHEN 'spend' THEN NOT EXISTS (SELECT 1 FROM loyalty.points_ledger e
									  WHERE e.entry_id = k.result::bigint AND e.customer_id = k.customer_id
										AND e.reference = 's' || k.reference AND e.kind = 'spend')
		ELSE NOT EXISTS (SELECT 1 FROM loyalty.points_ledger e
						 WHERE e.entry_id = k.result::bigint AND e.reference = k.reference
						   AND e.kind = 'reverse')
	END")
[ "$lost" = 0 ] || { echo "$lost acknowledged calls are missing after the crash" >&2; exit 1; }
problems=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.check_integrity()")
if [ "$problems" != 0 ]; then
	psql -d "$db" -c "SELECT * FROM loyalty.check_integrity() LIMIT 20"
	echo "check_integrity() found $problems problems after the crash" >&2
	exit 1
fi
negative=$(psql -At -d "$db" -c "SELECT count(*) FROM loyalty.points_account WHERE available < 0 OR pending < 0 OR debt < 0")
[ "$negative" = 0 ] || { echo "$negative negative balances after the crash" >&2; exit 1; }
shared=$(psql -At -d "$db" -c "SELECT count(*) FROM (SELECT reference FROM loyalty.points_ledger
	WHERE reference IS NOT NULL GROUP BY reference HAVING count(DISTINCT customer_id) > 1) s")
[ "$shared" = 0 ] || { echo "$shared references hold entries of several customers" >&2; exit 1; }
# every exchange paid for a code of its own (the coupon it recorded)
twice=$(psql -At -d "$db" -c "SELECT count(*) - count(DISTINCT e.code)
	+ count(*) FILTER (WHERE c.code::text IS DISTINCT FROM e.code OR c.customer_id IS DISTINCT FROM e.customer_id)
	FROM loyalty.points_exchange e LEFT JOIN loyalty.coupon c ON c.coupon_id = e.coupon_id")
[ "$twice" = 0 ] || { echo "$twice exchanges returned a code that is not their own" >&2; exit 1; }
echo "points crash: every acknowledged call survived, check_integrity() empty, no negative balance"
