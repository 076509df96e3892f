#!/usr/bin/env bash
# Scripted check: loyalty on a real local Citus cluster (a coordinator and two
# workers on loopback, Citus 13.2.2 on PostgreSQL 15 built from
# ../shared/vendor by test/citus_build.sh), after loyalty.citus_setup():
#   1. citus_setup distributed and colocated the coupon and RFM per-customer
#      tables, made the configuration tables reference tables (rfm_config's
#      checks run on every placement);
#   2. the README checkout (coupon_redeem and points_earn in one transaction,
#      on an orders table distributed by customer and colocated), its
#      rollback, idempotent repeat, and one customer per order_ref across
#      shards (LY020);
#   3. a 50-way race for the last unit of a campaign's total cap: exactly one
#      redemption, counters exact;
#   4. a points storm (8 clients earning and spending for 5 customers)
#      ending with an empty loyalty.check_integrity();
#   5. batch RFM over the distributed orders table equals batch RFM over a
#      local copy of the same rows, with the per-customer aggregation pushed
#      down to the workers (edge cases: refunds, unpriced and undated rows,
#      infinite times, rows after as_of, NaN refused), and row by row for a
#      table distributed by another column; live tracking of a distributed
#      table is refused (0A000), never silently wrong;
#   6-8. (after 1b: citus_setup distributed the campaign, referral and
#      mission tables) a marketing campaign published (consent, bound codes,
#      offer events, claimed and acknowledged; the campaign KPIs refused
#      with 0A000), a referral (code, join, self-referral refused, rewards,
#      refund), a mission (completion, reward once), check_integrity() empty.
# The cluster is its own (test/citus_cluster.sh), removed on exit.  Runs when
# the Citus build is cached (bash test/citus_build.sh, about 4 minutes, once
# per machine), or builds it when LOYALTY_CITUS_BUILD=1; otherwise it says
# it was skipped.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${LOYALTY_PG_CACHE:-/var/cache/loyalty/pg}
if ! ls "$cache"/15-citus-*/.complete >/dev/null 2>&1 && [ "${LOYALTY_CITUS_BUILD:-0}" != 1 ]; then
	echo "citus: skipped: no Citus build cached in $cache (run bash test/citus_build.sh, or set LOYALTY_CITUS_BUILD=1)"
	exit 0
fi
# the cluster is PostgreSQL 15: test/run.sh runs it with its 15 suite only
suite_major=$("${PG_CONFIG:-pg_config}" --version 2>/dev/null | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
if [ -n "$suite_major" ] && [ "$suite_major" != 15 ]; then
	echo "citus: skipped with the PostgreSQL $suite_major suite (the Citus cluster is PostgreSQL 15; it runs with the 15 suite)"
	exit 0
fi
# the suite's single-node server is not the cluster
unset PGHOST PGPORT PGUSER PGDATABASE PG_CONFIG
# shellcheck source=../citus_cluster.sh
source "$root/test/citus_cluster.sh"
citus_cluster
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
fail() { echo "citus: FAIL: $*" >&2; exit 1; }
expect() {	# expect WHAT GOT WANT
	[ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
	echo "ok: $1"
}

# 1. the distribution citus_setup made
got=$(q -c "SELECT string_agg(c::text, ',' ORDER BY c::text) FROM unnest(ARRAY[
		'loyalty.customer_stats', 'loyalty.customer_stats_delta', 'loyalty.segment_change',
		'loyalty.coupon_order', 'loyalty.redemption', 'loyalty.reservation',
		'loyalty.coupon_return', 'loyalty.coupon_return_line']::regclass[]) c
	JOIN pg_dist_partition p ON p.logicalrelid = c
	WHERE p.partmethod = 'h' AND p.colocationid = (SELECT colocationid FROM pg_dist_partition
		WHERE logicalrelid = 'loyalty.customer_stats'::regclass)")
expect "per-customer coupon and RFM tables distributed, colocated" "$(echo "$got" | tr ',' '\n' | wc -l)" 8
expect "configuration tables are reference tables" \
	"$(q -c "SELECT count(*) FROM pg_dist_partition WHERE partmethod = 'n' AND logicalrelid IN
		('loyalty.campaign'::regclass, 'loyalty.campaign_rule'::regclass,
		 'loyalty.eligibility_kind'::regclass, 'loyalty.coupon'::regclass, 'loyalty.settings'::regclass,
		 'loyalty.rfm_config'::regclass)")" 6
# the RFM configuration's trigger runs on every placement: checks and singleton
q -c "UPDATE loyalty.rfm_config SET bins = 4" >/dev/null
got=$(q -c "UPDATE loyalty.rfm_config SET bins = 12" 2>&1 || true)
case "$got" in *"bins must be between"*) echo "ok: rfm_config checked on the reference table" ;;
	*) fail "rfm_config bins = 12: $got" ;; esac
expect "rfm_config: every placement has the one row" \
	"$(q -c "SELECT string_agg(result, ',') FROM run_command_on_placements('loyalty.rfm_config',
		'SELECT count(*) || '':'' || min(bins) FROM %s')")" "1:4,1:4,1:4"
expect "order owners distributed by order_ref" \
	"$(q -c "SELECT column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition
		WHERE logicalrelid = 'loyalty.coupon_order_owner'::regclass")" order_ref

# 1b. the newer families: campaign, referral and mission per-customer tables
# distributed and colocated, their configuration tables reference tables,
# the global keys of referrals distributed by the key
expect "campaign, referral and mission per-customer tables distributed, colocated" \
	"$(q -c "SELECT count(*) FROM unnest(ARRAY[
		'loyalty.campaign_publication', 'loyalty.campaign_filtered', 'loyalty.experiment_assignment',
		'loyalty.consent', 'loyalty.consent_history', 'loyalty.customer_dates', 'loyalty.cart',
		'loyalty.outbox', 'loyalty.referral_code', 'loyalty.referral', 'loyalty.referral_period',
		'loyalty.mission_optin', 'loyalty.mission_customer', 'loyalty.mission_attempt',
		'loyalty.mission_contribution', 'loyalty.mission_order_delta',
		'loyalty.referral_coupon']::regclass[]) c
	JOIN pg_dist_partition p ON p.logicalrelid = c
	WHERE p.partmethod = 'h' AND column_to_column_name(c, p.partkey) = 'customer_id'
	  AND p.colocationid = (SELECT colocationid FROM pg_dist_partition
		WHERE logicalrelid = 'loyalty.customer_stats'::regclass)")" 17
expect "campaign, referral, mission and CLV configuration tables are reference tables" \
	"$(q -c "SELECT count(*) FROM pg_dist_partition WHERE partmethod = 'n' AND logicalrelid IN
		('loyalty.experiment'::regclass, 'loyalty.experiment_variant'::regclass,
		 'loyalty.marketing_campaign'::regclass, 'loyalty.frequency_cap'::regclass,
		 'loyalty.referral_program'::regclass, 'loyalty.referral_reward_tier'::regclass,
		 'loyalty.mission'::regclass, 'loyalty.mission_order_source'::regclass,
		 'loyalty.clv_model'::regclass)")" 9
expect "referral codes distributed by code, identifier claims by digest" \
	"$(q -c "SELECT string_agg(column_to_column_name(logicalrelid, partkey), ',' ORDER BY logicalrelid::text)
		FROM pg_dist_partition WHERE logicalrelid IN ('loyalty.referral_code_key'::regclass,
		'loyalty.referral_claim'::regclass)")" "digest,code"
expect "citus_setup again: the newer families' tables are all done already" \
	"$(q -c "SELECT count(*) FILTER (WHERE result <> 'already') || '/' || count(*)
		FROM loyalty.citus_setup()
		WHERE object ~ '^loyalty\.(campaign_publication|campaign_filtered|experiment.*|consent.*|customer_dates|cart|outbox|referral.*|mission.*|marketing_campaign|frequency_cap|clv_model)$'" 2>/dev/null)" "0/28"

# 2. the README checkout
q >/dev/null <<-'EOF'
	CREATE TABLE orders (order_ref text NOT NULL, customer_id text COLLATE "C" NOT NULL,
		amount numeric NOT NULL, ordered_at timestamptz NOT NULL DEFAULT now());
	SELECT create_distributed_table('orders', 'customer_id', colocate_with => 'loyalty.customer_stats');
	SELECT loyalty.create_campaign('Spring 20', 'percent', percent_off => 20, max_discount => 30,
		total_cap => 5000, per_customer_cap => 1) AS c \gset
	SELECT loyalty.add_public_code(:c, 'SPRING20');
EOF
got=$(q <<-'EOF'
	BEGIN;
	INSERT INTO orders (order_ref, customer_id, amount) VALUES ('o-1001', 'c-42', 120.00);
	SELECT loyalty.coupon_redeem('c-42', 'o-1001', 'SPRING20', '{"amount": 120.00}');
	SELECT available FROM loyalty.points_earn('c-42', 'o-1001', 96);
	COMMIT;
EOF
)
expect "checkout: discount and points" "$(echo $got)" "24.00 96"
expect "checkout: repeat returns the first discount" \
	"$(q -c "SELECT loyalty.coupon_redeem('c-42', 'o-1001', 'SPRING20', '{\"amount\": 120.00}')")" 24.00
got=$(q <<-'EOF'
	BEGIN;
	INSERT INTO orders (order_ref, customer_id, amount) VALUES ('o-1002', 'c-77', 50.00);
	SELECT loyalty.coupon_redeem('c-77', 'o-1002', 'SPRING20', '{"amount": 50.00}');
	ROLLBACK;
	SELECT count(*) FROM orders WHERE order_ref = 'o-1002';
	SELECT count(*) FROM loyalty.redemption WHERE order_ref = 'o-1002';
EOF
)
expect "checkout rolled back: no order, no redemption" "$(echo $got)" "10.00 0 0"
got=$(q -c "SELECT loyalty.coupon_redeem('c-43', 'o-1001', 'SPRING20', '{\"amount\": 120.00}')" 2>&1 || true)
case "$got" in *order_conflict*) echo "ok: an order_ref belongs to one customer across shards" ;;
	*) fail "another customer's redeem of o-1001: $got" ;; esac
expect "coupon_rollback gives the use back" \
	"$(q -c "SELECT loyalty.coupon_rollback('c-42', 'o-1001')"; q -c "SELECT uses FROM loyalty.campaign WHERE name = 'Spring 20'")" "$(printf 't\n0')"

# 3. 50 customers race for the last unit of a total cap
q >/dev/null <<-'EOF'
	SELECT loyalty.create_campaign('Last unit', 'fixed', amount_off => 5, total_cap => 1) AS c \gset
	SELECT loyalty.add_public_code(:c, 'LASTUNIT');
EOF
pids=()
for i in $(seq 1 50); do
	q -c "SELECT loyalty.coupon_redeem('race-$i', 'race-o-$i', 'LASTUNIT', '{\"amount\": 50}')" \
		>"$CITUS_TMP/race-$i.out" 2>&1 &
	pids+=($!)
done
won=0
for i in $(seq 1 50); do
	if wait "${pids[$((i - 1))]}"; then won=$((won + 1)); fi
done
expect "last unit: one of 50 redeems wins" "$won" 1
lost=$(grep -l 'exhausted' "$CITUS_TMP"/race-*.out | wc -l)
expect "last unit: the 49 others fail on the cap" "$lost" 49
expect "last unit: campaign counter and ledger" \
	"$(q -c "SELECT uses FROM loyalty.campaign WHERE name = 'Last unit'")/$(q -c "SELECT sum(uses)
		FROM loyalty.redemption WHERE campaign_id = (SELECT campaign_id FROM loyalty.campaign
		WHERE name = 'Last unit')")" 1/1

# 4. points storm
pids=()
for w in $(seq 1 8); do
	(
		for j in $(seq 1 25); do
			c="storm-$(( (w + j) % 5 ))"
			q -c "SELECT loyalty.points_earn('$c', 'e-$w-$j', $((j * 3)))" >/dev/null
			q -c "SELECT loyalty.points_spend('$c', 's-$w-$j', 2)" >/dev/null 2>&1 || true
		done
	) &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a points storm client failed"; done
expect "points storm: check_integrity() is empty" "$(q -c "SELECT count(*) FROM loyalty.check_integrity()")" 0
expect "points storm: every earn recorded" \
	"$(q -c "SELECT count(*) FROM loyalty.points_ledger WHERE reference LIKE 'e-%'")" 200

# 5. batch RFM on the distributed table equals batch RFM on a local copy
q <<-'EOF'
	INSERT INTO orders (order_ref, customer_id, amount, ordered_at)
	SELECT 'b-' || g, 'cust-' || (g % 300), (g % 97) + 1,
		   '2026-01-01'::timestamptz + (g % 330) * interval '1 day'
	FROM generate_series(1, 5000) g;
	CREATE TABLE orders_local AS SELECT * FROM orders;
EOF
batch() {
	q -c "SELECT count(*) || ' ' || md5(string_agg(x::text, '|' ORDER BY x::text)) FROM loyalty.rfm_segmentation(
		'$1'::regclass, 'customer_id', 'ordered_at', 'amount', as_of => '2026-12-01') x"
}
local_rfm=$(batch orders_local)
expect "batch RFM: 300 customers scored" "${local_rfm%% *}" 300
expect "batch RFM: distributed equals local" "$(batch orders)" "$local_rfm"
# the per-customer aggregation runs on the workers (a table distributed by
# the customer column): the same results as the row-by-row scan of a local
# copy, with refunds, unpriced rows, rows without or with infinite times,
# rows after as_of, a refund-only customer, for two as_of and both monetary
# modes; and a table distributed by another column is read row by row
q <<-'EOF'
	CREATE TABLE rfm_edge (order_ref text NOT NULL, customer_id text COLLATE "C" NOT NULL,
						   ordered_at timestamptz, amount numeric(12,2));
	SELECT create_distributed_table('rfm_edge', 'customer_id', colocate_with => 'orders');
	INSERT INTO rfm_edge
	SELECT 'e-' || g, 'c' || (g % 300),
		   '2026-01-01'::timestamptz + (g % 330) * interval '1 day' + (g % 7) * interval '1 hour',
		   CASE WHEN g % 17 = 0 THEN -(g % 50) WHEN g % 23 = 0 THEN NULL ELSE (g % 97) + 0.5 END
	FROM generate_series(1, 5000) g;
	INSERT INTO rfm_edge VALUES ('x1', 'c1', NULL, 3), ('x2', 'c2', 'infinity', 4), ('x3', 'c3', '-infinity', 4),
		('x4', 'late', '2027-01-01', 10), ('x5', 'refund-only', '2026-11-01', -5),
		('x6', 'c4', '2026-12-01 00:00+00', 7);
	CREATE TABLE rfm_edge_local AS SELECT * FROM rfm_edge;
	CREATE TABLE rfm_edge_by_ref AS SELECT * FROM rfm_edge;
	SELECT create_distributed_table('rfm_edge_by_ref', 'order_ref', colocate_with => 'none');
EOF
rfm_of() {	# rfm_of TABLE AS_OF MODE: count and digest of rfm_segmentation's rows
	q -c "SET client_min_messages = warning" -c "SELECT count(*) || ' ' || md5(string_agg(x::text, '|' ORDER BY x::text))
		FROM loyalty.rfm_segmentation('$1'::regclass, 'customer_id', 'ordered_at', 'amount',
									  as_of => '$2', monetary_mode => '$3') x"
}
for as_of in '2026-12-01' '2026-06-15 12:00+02'; do
	for mode in total average; do
		want=$(rfm_of rfm_edge_local "$as_of" $mode)
		expect "batch RFM pushed down, as_of $as_of, $mode: equals the local scan" \
			"$(rfm_of rfm_edge "$as_of" $mode)" "$want"
		expect "batch RFM over a table distributed by another column, as_of $as_of, $mode" \
			"$(rfm_of rfm_edge_by_ref "$as_of" $mode)" "$want"
	done
done
expect "batch RFM: the refund-only customer is scored, the late one not" \
	"$(rfm_of rfm_edge_local 2026-12-01 total | cut -d' ' -f1)" 301
pushed() {
	q -c "SET client_min_messages = debug1" -c "SELECT count(*) FROM loyalty.rfm_segmentation('$1'::regclass,
		'customer_id', 'ordered_at', 'amount', as_of => '2026-12-01')" 2>&1 | grep -c "pushed down to the Citus workers" || true
}
expect "batch RFM: aggregation pushed down for a table distributed by customer" "$(pushed rfm_edge)" 1
expect "batch RFM: row by row for a table distributed by another column" "$(pushed rfm_edge_by_ref)" 0
q -c "INSERT INTO rfm_edge VALUES ('x7', 'nan', '2026-03-01', 'NaN')" >/dev/null
got=$(q -c "SELECT count(*) FROM loyalty.rfm_segmentation('rfm_edge'::regclass, 'customer_id', 'ordered_at',
	'amount', as_of => '2026-12-01')" 2>&1 || true)
case "$got" in *"order amount must be a finite number"*) echo "ok: batch RFM pushed down refuses a NaN amount" ;;
	*) fail "pushed-down NaN amount: $got" ;; esac
got=$(q -c "SELECT loyalty.track_orders('orders', 'customer_id', 'ordered_at', 'amount')" 2>&1 || true)
case "$got" in *"does not support Citus table"*) echo "ok: tracking a distributed table is refused" ;;
	*) fail "track_orders on a distributed table: $got" ;; esac
# 6. a marketing campaign published on the cluster: consent filters, one
# bound code per customer, one offer event each, nothing twice
q >/dev/null <<-'EOF'
	SELECT loyalty.create_campaign('mc coupons', 'percent', percent_off => 10, max_discount => 20) AS cc \gset
	SELECT loyalty.set_consent('mc-a', 'email', true, 'signup form', '2026-01-01');
	SELECT loyalty.set_consent('mc-b', 'email', true, 'signup form', '2026-01-01');
	SELECT loyalty.set_consent('mc-c', 'email', false, 'unsubscribe link', '2026-01-01');
	SELECT loyalty.create_marketing_campaign('mc list', 'customers', '{"customers": ["mc-a", "mc-b", "mc-c"]}',
		'code', coupon_campaign_id => :cc, code_pattern => 'MC-####-####');
EOF
mc=$(q -c "SELECT marketing_campaign_id FROM loyalty.marketing_campaign WHERE name = 'mc list'")
expect "campaign: published to the consenting customers" \
	"$(q -c "SELECT string_agg(outcome || ':' || customers, ',' ORDER BY outcome)
		FROM loyalty.publish_marketing_campaign($mc, '2026-11-02')")" "no_consent:1,published:2"
expect "campaign: publishing again offers nothing twice" \
	"$(q -c "SELECT string_agg(outcome || ':' || customers, ',' ORDER BY outcome)
		FROM loyalty.publish_marketing_campaign($mc, '2026-11-03')")" "already_offered:2,no_consent:1"
expect "campaign: publications, filtered, offer events" \
	"$(q -c "SELECT (SELECT string_agg(customer_id, ',' ORDER BY customer_id) FROM loyalty.campaign_publication
			WHERE code IS NOT NULL) || '/' ||
		(SELECT string_agg(customer_id || ':' || reason, ',') FROM loyalty.campaign_filtered) || '/' ||
		(SELECT count(*) FROM loyalty.outbox WHERE kind = 'offer')")" "mc-a,mc-b/mc-c:no_consent/2"
code=$(q -c "SELECT code FROM loyalty.campaign_publication WHERE customer_id = 'mc-a'")
expect "campaign: the bound code works for its customer only" \
	"$(q -c "SELECT (loyalty.coupon_validate('mc-a', '$code', '{\"amount\": 100}')).reason IS NULL")/$(q -c "SELECT
		(loyalty.coupon_validate('mc-b', '$code', '{\"amount\": 100}')).reason")" "t/wrong_customer"
# the outbox consumer: claims the events oldest first (locked one by one on
# the shards), a second consumer skips them while the first holds them,
# acknowledged events are never claimed again
got=$(q <<-'EOF'
	BEGIN;
	SELECT string_agg(customer_id || ':' || kind, ',' ORDER BY outbox_id) FROM loyalty.outbox_claim(1);
	\set other `psql -X -q -At -c 'SELECT count(*) FROM loyalty.outbox_claim(100)'`
	SELECT :'other';
	SELECT loyalty.outbox_ack(array_agg(outbox_id)) FROM loyalty.outbox_claim(100);
	COMMIT;
	SELECT count(*) FROM loyalty.outbox_claim(100);
	SELECT count(*) FROM loyalty.outbox WHERE acked_at IS NOT NULL;
EOF
)
first=$(q -c "SELECT customer_id || ':offer' FROM loyalty.outbox ORDER BY outbox_id LIMIT 1")
expect "outbox: claim, a concurrent consumer, ack, nothing claimed again" "$(echo $got)" "$first 1 2 0 2"
# the KPI queries are not written for Citus yet: refused (0A000), never an
# empty report read from the coordinator's shells
for kq in "loyalty.campaign_members($mc)" "loyalty.campaign_kpi($mc)" loyalty.campaign_kpis \
	loyalty.campaign_funnel; do
	got=$(q -v VERBOSITY=verbose -c "SELECT count(*) FROM $kq" 2>&1 || true)
	case "$got" in *0A000*) echo "ok: $kq on Citus is refused (0A000)" ;;
		*) fail "$kq on Citus: $got" ;; esac
done

# 7. a referral on the cluster: code, join, first purchase rewards both sides
# through the points ledger, self-referral refused, refund takes both back
q >/dev/null <<-'EOF'
	INSERT INTO loyalty.referral_program (program, referrer_points, referee_points, return_window_days,
		min_order_amount, cap_per_period, cap_lifetime, point_value)
	VALUES ('friends', 100, 50, 0, 20, 3, 4, 0.01);
EOF
rcode=$(q -c "SELECT loyalty.referral_code('ref-ann', 'friends', email => 'ann@example.com')")
expect "referral: the code is the referrer's, idempotently" \
	"$(q -c "SELECT loyalty.referral_code('ref-ann', 'friends')")" "$rcode"
expect "referral: a friend joins" \
	"$(q -c "SELECT status || ':' || referrer_id FROM loyalty.referral_join('ref-fred', 'j-1', '$rcode',
		email => 'fred@example.com')")" "joined:ref-ann"
got=$(q -c "SELECT * FROM loyalty.referral_join('ref-ann2', 'j-2', '$rcode', email => 'Ann@Example.com')" 2>&1 || true)
case "$got" in *self_referral*) echo "ok: referral: self-referral by identifier refused across shards" ;;
	*) fail "referral self-referral: $got" ;; esac
expect "referral: the first purchase rewards both sides" \
	"$(q -c "SELECT status || ':' || referrer_points || ':' || referee_points
		FROM loyalty.referral_order('ref-fred', 'fo-1', 50)")" "converted:100:50"
expect "referral: points of both sides" \
	"$(q -c "SELECT string_agg(customer_id || ':' || available, ',' ORDER BY customer_id)
		FROM loyalty.points_account WHERE customer_id IN ('ref-ann', 'ref-fred')")" "ref-ann:100,ref-fred:50"
expect "referral: a refund takes both rewards back" \
	"$(q -c "SELECT status FROM loyalty.referral_refund('ref-fred', 'fo-1')")/$(q -c "SELECT
		string_agg(customer_id || ':' || available, ',' ORDER BY customer_id)
		FROM loyalty.points_account WHERE customer_id IN ('ref-ann', 'ref-fred')")" "revoked/ref-ann:0,ref-fred:0"

# 8. a mission on the cluster: two orders complete it and reward points once
q >/dev/null <<-'EOF'
	INSERT INTO loyalty.mission (mission_id, description, kind, target, period, period_days,
		recurrence, activation, reward_points, pending_days)
	VALUES ('two-orders', '2 orders in 30 days', 'orders', 2, 'days', 30, 'once', 'automatic', 300, 0);
	SELECT * FROM loyalty.mission_order('mi-1', 'mo-1', 80, at => '2026-01-05');
	SELECT * FROM loyalty.mission_order('mi-1', 'mo-2', 70, at => '2026-01-10');
	SELECT * FROM loyalty.mission_order('mi-1', 'mo-2', 70, at => '2026-01-10');
EOF
expect "mission: completed, progress shown" \
	"$(q -c "SELECT message FROM loyalty.mission_progress('mi-1', at => '2026-01-11')
		WHERE mission_id = 'two-orders'")" "2 of 2 orders, completed"
expect "mission: rewarded once" \
	"$(q -c "SELECT available FROM loyalty.points_account WHERE customer_id = 'mi-1'")" 300
expect "campaigns, referrals, missions: check_integrity() is empty" \
	"$(q -c "SELECT count(*) FROM loyalty.check_integrity()")" 0
echo "citus: all checks passed"
