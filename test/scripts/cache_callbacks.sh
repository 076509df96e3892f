#!/usr/bin/env bash
# Scripted check (issue 14): loyalty registers ONE relcache callback for all
# its modules, so a session can use every module (RFM segments, live
# tracking, coupons, points) beside other extensions' callbacks.
#
# PostgreSQL keeps at most 10 relcache callbacks per backend and takes 2
# itself (plan cache, type cache); test/relcache_hog/ is a test-only module,
# built here into a temporary directory and loaded by its path, that takes
# 7 more in its _PG_init, as other extensions do (Citus takes 5).  In that
# session:
#   1. the README checkout (tracked order INSERT, coupon_redeem,
#      points_earn, COMMIT), then segment_of, customer_rfm and
#      points_balance: every module's cache is used;
#   2. changes made by another session (campaign paused, segment renamed,
#      tier ladder changed) are seen: the one callback still dispatches to
#      every module's cache;
#   3. control: taking one more slot ends the session with FATAL "out of
#      relcache_callback_list slots", so the session ran with every slot
#      taken and loyalty had exactly one.
# A build registering one callback per module dies in step 1 with that
# FATAL.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
db=loyalty_cache_cb
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
tmp=$(mktemp -d /tmp/loyalty-cb.XXXXXX)
chmod 755 "$tmp"
cleanup() {
	dropdb --if-exists "$db" || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# the module, built against the server under test, readable by its owner
cp "$here/relcache_hog/relcache_hog.c" "$here/relcache_hog/Makefile" "$tmp/"
make -s -C "$tmp" PG_CONFIG="${PG_CONFIG:-pg_config}" >"$tmp/build.log" 2>&1 ||
	{ cat "$tmp/build.log" >&2; exit 1; }
chmod 755 "$tmp"/*.so
hog=$tmp/relcache_hog

dropdb --if-exists "$db" 2>/dev/null
createdb "$db"
psql -d "$db" >/dev/null <<'SQL'
CREATE EXTENSION loyalty;
SET client_min_messages = warning;
CREATE SCHEMA shop;
CREATE TABLE shop.orders (
	order_ref	text PRIMARY KEY,
	customer_id	text NOT NULL,
	ordered_at	timestamptz NOT NULL DEFAULT now(),
	amount		numeric(12,2) NOT NULL
);
SELECT count(*) FROM loyalty.track_orders('shop.orders', 'customer_id', 'ordered_at', 'amount');
SELECT loyalty.create_campaign('Spring 20', 'percent', percent_off => 20,
							   max_discount => 30, total_cap => 5000) AS c \gset
SELECT loyalty.add_public_code(:c, 'SPRING20');
INSERT INTO loyalty.tier (name, rank, threshold, multiplier, discount) VALUES
	('Bronze', 0, 0, 1, 0), ('Silver', 1, 500, 1.25, 5), ('Gold', 2, 1500, 1.5, 10);
SQL

psql -d "$db" -c "CREATE FUNCTION loyalty_cb_take_one_more() RETURNS void
		AS '$hog', 'relcache_hog_take_one_more' LANGUAGE C" \
	-c "CREATE FUNCTION loyalty_cb_invalidations() RETURNS bigint
		AS '$hog', 'relcache_hog_invalidations' LANGUAGE C"

# another session's change, made while the hog session runs (psql's \!)
other="psql -d $db -At"

# 1-2: every module with 7 foreign callbacks registered; 3: the control,
# last in the same session
out=$(psql -d "$db" -At 2>&1 <<SQL
SET client_min_messages = warning;
-- PostgreSQL's own two: the plan cache's (at start) and the type cache's
-- (array_eq's element type lookup)
SELECT ARRAY[1] = ARRAY[1] AS typcache \gset
LOAD '$hog';
BEGIN;
INSERT INTO shop.orders (order_ref, customer_id, amount) VALUES ('o-1001', 'c-42', 120.00);
SELECT 'redeem ' || loyalty.coupon_redeem('c-42', 'o-1001', 'SPRING20', '{"amount": 120.00}');
SELECT 'earn ' || (loyalty.points_earn('c-42', 'o-1001', 96)).points;
COMMIT;
SELECT 'segment ' || loyalty.segment_of('555');
SELECT 'rfm ' || orders_total || ' ' || spend_total FROM loyalty.customer_rfm('c-42');
SELECT 'balance ' || available || ' ' || tier FROM loyalty.points_balance('c-42');
\! $other -c "SELECT loyalty.pause_campaign(campaign_id) FROM loyalty.campaign" >/dev/null
\! $other -c "UPDATE loyalty.segment SET name = 'Champs' WHERE name = 'Champions'" >/dev/null
\! $other -c "UPDATE loyalty.tier SET threshold = 100 WHERE name = 'Silver'" >/dev/null
SELECT 'validate ' || valid || ' ' || reason FROM loyalty.coupon_validate('c-7', 'SPRING20', '{"amount": 50}');
SELECT 'segment ' || loyalty.segment_of('555');
SELECT 'earn ' || (loyalty.points_earn('c-42', 'o-1002', 10)).points;
SELECT 'balance ' || available || ' ' || tier FROM loyalty.points_balance('c-42');
SELECT 'hog saw invalidations ' || (loyalty_cb_invalidations() > 0);
SELECT loyalty_cb_take_one_more();
SELECT 'still alive';
SQL
) && { echo "$out" >&2; echo "an 11th relcache callback was accepted" >&2; exit 1; }
expected="redeem 24.00
earn 96
segment Champions
rfm 1 120.00
balance 96 Bronze
validate false paused
segment Champs
earn 10
balance 106 Silver
hog saw invalidations true"
n=$(wc -l <<<"$expected")
if [ "$(head -n "$n" <<<"$out")" != "$expected" ]; then
	echo "$out" >&2
	diff <(echo "$expected") <(head -n "$n" <<<"$out") >&2 || true
	echo "the session using every module failed" >&2
	exit 1
fi
echo "ok - every module used, and invalidated, with 7 other relcache callbacks registered"
if ! tail -n +"$((n + 1))" <<<"$out" | grep -q 'FATAL:  out of relcache_callback_list slots' ||
	grep -q 'still alive' <<<"$out"; then
	echo "$out" >&2
	echo "control: the session had a relcache callback slot left" >&2
	exit 1
fi
echo "ok - control: one more relcache callback in that session is refused (FATAL)"
