# rfm_batch: loyalty.rfm_segmentation() end to end, materialised into a
# table, against what a marketing team writes in SQL (issue 3):
#   1. the typical query: GROUP BY customer (last order, orders and spend in
#      the 12-month window), then three ntile(5) windows;      bar <= 0.5
#   2. the bare GROUP BY customer: max(time), count(*), sum(amount);
#                                                                bar <= 1.0
# then both again on a copy of bench.orders in time order (customers
# interleaved, as in a shop's own table); and the working memory of the
# batch path (rfm_segmentation's DEBUG1 report of its memory context), on
# bench.orders and on views that repeat every order 2 and 4 times: same
# customers, 2x and 4x the orders each.  The memory must not grow with
# orders per customer.

as_of="timestamptz '2026-11-01 00:00+00'"

mine_sql="SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.rfm_mine;
CREATE TABLE bench.rfm_mine AS
SELECT * FROM loyalty.rfm_segmentation('bench.orders', 'customer_id', 'ordered_at', 'amount', $as_of);"

typical_sql="SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.rfm_typical;
CREATE TABLE bench.rfm_typical AS
SELECT customer_id, last_order, frequency, monetary,
	   ntile(5) OVER (ORDER BY last_order) AS r,
	   ntile(5) OVER (ORDER BY frequency) AS f,
	   ntile(5) OVER (ORDER BY monetary) AS m
FROM (SELECT customer_id,
			 max(ordered_at) AS last_order,
			 count(*) FILTER (WHERE ordered_at >= $as_of - interval '12 months') AS frequency,
			 coalesce(sum(amount) FILTER (WHERE ordered_at >= $as_of - interval '12 months'), 0) AS monetary
	  FROM bench.orders
	  WHERE ordered_at <= $as_of
	  GROUP BY customer_id) s;"

bare_sql="SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.rfm_bare;
CREATE TABLE bench.rfm_bare AS
SELECT customer_id, max(ordered_at) AS last_order, count(*) AS orders, sum(amount) AS spend
FROM bench.orders
GROUP BY customer_id;"

# Best of RFM_BENCH_ROUNDS runs of each SQL, the runs of loyalty and of the
# baselines interleaved so that all of them meet the same background load
# (the machine may be shared).  Sets rfm_best[i] for the i-th argument.
rfm_best_of() {
	local round i t0 t1 ms
	rfm_best=()
	for round in $(seq "${RFM_BENCH_ROUNDS:-3}"); do
		i=0
		for sql in "$@"; do
			t0=$(date +%s%N)
			psql -X -q -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
			t1=$(date +%s%N)
			ms=$(( (t1 - t0) / 1000000 ))
			if [ -z "${rfm_best[$i]:-}" ] || [ "$ms" -lt "${rfm_best[$i]}" ]; then
				rfm_best[$i]=$ms
			fi
			i=$((i + 1))
		done
	done
}

rfm_best_of "$mine_sql" "$typical_sql" "$bare_sql"
mine=${rfm_best[0]} typical=${rfm_best[1]} bare=${rfm_best[2]}
bench_report "rfm_segmentation vs GROUP BY + 3 ntile(5), materialised" "$mine" "$typical" ms "0.5"
bench_report "rfm_segmentation vs bare GROUP BY max/count/sum, materialised" "$mine" "$bare" ms "1.0"

# bench.orders is stored customer by customer; real shops append orders in
# time order, customers interleaved.  The same two timings on such a copy.
psql -X -q -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
	-c "DROP TABLE IF EXISTS bench.orders_by_time" \
	-c "CREATE TABLE bench.orders_by_time AS SELECT * FROM bench.orders ORDER BY ordered_at" \
	-c "VACUUM ANALYZE bench.orders_by_time"
rfm_best_of "${mine_sql//bench.orders/bench.orders_by_time}" "${bare_sql//bench.orders/bench.orders_by_time}"
mine_t=${rfm_best[0]} bare_t=${rfm_best[1]}
bench_report "same, orders in time order: vs bare GROUP BY" "$mine_t" "$bare_t" ms "1.0"

# the same customers with every order repeated k times
psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE VIEW bench.orders_x2 AS
SELECT customer_id, ordered_at, amount FROM bench.orders
UNION ALL SELECT customer_id, ordered_at, amount FROM bench.orders;
CREATE VIEW bench.orders_x4 AS
SELECT * FROM bench.orders_x2 UNION ALL SELECT * FROM bench.orders_x2;
SQL
for rel in bench.orders bench.orders_x2 bench.orders_x4; do
	psql -X -q -v ON_ERROR_STOP=1 2>&1 >/dev/null <<SQL | sed -n 's/^DEBUG: *rfm_segmentation: /  /p' | sed "s/^/$rel:/"
SET client_min_messages = debug1;
SELECT count(*) FROM loyalty.rfm_segmentation('$rel', 'customer_id', 'ordered_at', 'amount', $as_of);
SQL
done
psql -X -q -c "DROP VIEW bench.orders_x4, bench.orders_x2; DROP TABLE bench.rfm_mine, bench.rfm_typical, bench.rfm_bare, bench.orders_by_time"
