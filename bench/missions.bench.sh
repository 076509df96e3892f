# missions: order INSERT transactions into a tracked orders table with 10
# active missions vs the same inserts with tracking and no missions
# (sourced by bench/run.sh).
#
# Missions progress from the tracked orders: the tracking statement trigger
# appends each order (customer, time, amount, category: 2 missions filter
# on it, loyalty.mission_order_source names the column) to
# loyalty.mission_order_delta, folded later by readers (not timed here).
# The mission side pays tracking plus that append.  10 missions are
# active: 4 order counts (2 of a category the orders carry), 3 spends, 2
# streaks, 1 event mission (not touched by orders).  Single-order transactions from BENCH_CLIENTS clients (8), over
# the bench customers; three alternating rounds, mean TPS; bar >= 0.75
# (issue 17).

mis_psql() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
mis_psql <<'SQL'
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.mission_orders, bench.mission_base_orders;
CREATE TABLE bench.mission_orders (
	order_id	bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	customer_id	bigint NOT NULL,
	ordered_at	timestamptz NOT NULL,
	amount		numeric(12,2) NOT NULL,
	category	text NOT NULL
);
CREATE INDEX ON bench.mission_orders (customer_id);
CREATE TABLE bench.mission_base_orders (LIKE bench.mission_orders INCLUDING ALL);
SELECT loyalty.track_orders('bench.mission_orders', 'customer_id', 'ordered_at', 'amount');
SELECT loyalty.track_orders('bench.mission_base_orders', 'customer_id', 'ordered_at', 'amount');
DELETE FROM loyalty.mission;
INSERT INTO loyalty.mission_order_source VALUES ('bench.mission_orders', 'category');
INSERT INTO loyalty.mission (mission_id, kind, target, category, period, period_days, recurrence, reward_points, event)
SELECT 'bench-' || i,
	   CASE WHEN i <= 4 THEN 'orders' WHEN i <= 7 THEN 'spend' WHEN i <= 9 THEN 'streak' ELSE 'event' END,
	   CASE WHEN i <= 4 THEN 5 WHEN i <= 7 THEN 500 WHEN i <= 9 THEN 6 ELSE 3 END,
	   CASE WHEN i IN (3, 4) THEN 'shoes' END,
	   CASE WHEN i IN (5, 6, 7) THEN 'month' ELSE 'days' END,
	   CASE WHEN i IN (5, 6, 7) THEN NULL ELSE 30 END,
	   'repeat', 50, CASE WHEN i = 10 THEN 'review' END
FROM generate_series(1, 10) i;
SQL

ncust=${BENCH_SCALE:-100000}
mis_tmp=$(mktemp -d /tmp/loyalty-missions.XXXXXX)
for t in mission_orders mission_base_orders; do
	cat >"$mis_tmp/$t.sql" <<PGBENCH
\set c random(1, $ncust)
\set a random(5, 200)
INSERT INTO bench.$t (customer_id, ordered_at, amount, category)
VALUES (:c, now(), :a, CASE WHEN :a % 3 = 0 THEN 'shoes' ELSE 'books' END);
PGBENCH
done

# Missions are global: while one is active every tracked table feeds them,
# so the baseline rounds run with the 10 missions paused (tracking, no
# missions) and the mission rounds with them active.
mis_on() { mis_psql -c "UPDATE loyalty.mission SET active = true WHERE mission_id LIKE 'bench-%'" >/dev/null; }
mis_off() { mis_psql -c "UPDATE loyalty.mission SET active = false WHERE mission_id LIKE 'bench-%'" >/dev/null; }
w_tps() { mis_on; bench_tps "$clients" "$1" -f "$mis_tmp/mission_orders.sql"; }
b_tps() { mis_off; bench_tps "$clients" "$1" -f "$mis_tmp/mission_base_orders.sql"; }

clients=${BENCH_CLIENTS:-8}
seconds=${BENCH_SECONDS:-15}
w_tps 3 >/dev/null
b_tps 3 >/dev/null
with=0; without=0
for round in 1 2 3; do
	if [ $((round % 2)) = 1 ]; then
		w=$(w_tps "$seconds")
		b=$(b_tps "$seconds")
	else
		b=$(b_tps "$seconds")
		w=$(w_tps "$seconds")
	fi
	with=$(awk -v x="$with" -v y="$w" 'BEGIN { print x + y / 3 }')
	without=$(awk -v x="$without" -v y="$b" 'BEGIN { print x + y / 3 }')
done
bench_report "tracked inserts, 10 missions vs no missions ($clients clients)" "$with" "$without" "tps" ">= 0.75"
mis_psql -c "DELETE FROM loyalty.mission WHERE mission_id LIKE 'bench-%'" \
	-c "DELETE FROM loyalty.mission_order_source WHERE orders = 'bench.mission_orders'::regclass" \
	-c "TRUNCATE loyalty.mission_order_delta"
rm -rf "$mis_tmp"
