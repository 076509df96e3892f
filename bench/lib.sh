# bench/lib.sh: timing helpers for bench/*.bench.sh (sourced by bench/run.sh).

# Wall-clock milliseconds of one SQL script (psql -f -), run twice; the
# faster run counts so that a cold cache does not decide the ratio.
bench_time_sql() {
	local sql=$1 best= t0 t1 ms i
	for i in 1 2; do
		t0=$(date +%s%N)
		psql -X -q -v ON_ERROR_STOP=1 -c "$sql" >/dev/null
		t1=$(date +%s%N)
		ms=$(( (t1 - t0) / 1000000 ))
		if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
	done
	echo "$best"
}

# TPS of a pgbench run: bench_tps <clients> <seconds> <pgbench args...>
bench_tps() {
	local clients=$1 seconds=$2
	shift 2
	pgbench -n -c "$clients" -j "$clients" -T "$seconds" "$@" 2>&1 \
		| sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}

# Print one result line: bench_report <label> <loyalty> <baseline> <unit> [bar]
# The ratio is loyalty / baseline; for times lower is better, for TPS higher.
bench_report() {
	local label=$1 mine=$2 base=$3 unit=$4 bar=${5:-}
	awk -v l="$label" -v a="$mine" -v b="$base" -v u="$unit" -v bar="$bar" 'BEGIN {
		r = (b > 0) ? a / b : 0;
		printf "%-58s loyalty %10.1f %s  baseline %10.1f %s  ratio %6.3f%s\n",
			l, a, u, b, u, r, (bar != "" ? "  (bar " bar ")" : "")
	}'
}
