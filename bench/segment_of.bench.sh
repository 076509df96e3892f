# segment_of: naming the segments of 10 x BENCH_SCALE scores (as many as
# there are orders).  loyalty.segment_of() (per-session cached map, no query
# per call) against the best plain-SQL lookup of the same configurable map:
# a hash join with the 125-row loyalty.segment_map view.  Both count the
# named rows.  Then the cost of rescaling (bins = 9) against three trivial C
# accessor calls on the same rows.
psql -X -q -v ON_ERROR_STOP=1 \
	-c "CREATE TABLE bench.segment_scores AS
		SELECT loyalty.rfm_score(1 + (i * 7) % 5, 1 + (i * 13) % 5, 1 + (i * 17) % 5) AS score
		FROM generate_series(1, $BENCH_SCALE * 10) i" \
	-c "ANALYZE bench.segment_scores"
mine=$(bench_time_sql "SELECT count(loyalty.segment_of(score)) FROM bench.segment_scores")
base=$(bench_time_sql "SELECT count(m.segment) FROM bench.segment_scores s
	JOIN loyalty.segment_map m ON m.rfm_score OPERATOR(loyalty.=) s.score")
bench_report "segment_of() vs hash join with segment_map" "$mine" "$base" ms
mine=$(bench_time_sql "SELECT count(loyalty.segment_of(score, 9)) FROM bench.segment_scores")
base=$(bench_time_sql "SELECT count(loyalty.recency(score) + loyalty.frequency(score) + loyalty.monetary(score)) FROM bench.segment_scores")
bench_report "segment_of(score, 9) vs three accessor calls" "$mine" "$base" ms
psql -X -q -c "DROP TABLE bench.segment_scores"
