#!/usr/bin/env bash
# test/run.sh: run every loyalty test suite on a throwaway cluster.
#
#   bash test/run.sh
#
# Installs missing Debian packages, builds and installs the extension, starts
# a throwaway cluster (or uses PGHOST/PGPORT), then runs
#   1. pg_regress     sql/*.sql against expected/*.out
#   2. isolation      test/isolation/specs/*.spec
#   3. pgTAP          test/pgtap/*.sql through pg_prove
#   4. scripted tests test/scripts/*.sh (dump/restore, upgrade, stress)
# Prints regression.diffs on failure, exits non-zero if anything failed, and
# ends with one line "N passed, N failed" summing all suites: one per
# pg_regress test file, isolation spec and scripted check, one per pgTAP
# assertion.

. "$(dirname "$0")/lib.sh"

loyalty_packages
export WERROR=1
loyalty_build
loyalty_cluster
cd "$LOYALTY_ROOT"

passed=0
failed=0
logdir=$(mktemp -d /tmp/loyalty-test-log.XXXXXX)
trap 'loyalty_cleanup; rm -rf "$logdir"' EXIT

# Count "ok" / "FAILED" lines of pg_regress and pg_isolation_regress output
# (PostgreSQL <= 15 prints "test x ... ok", 16+ prints TAP "ok 1 - x").
count_regress() {
	local log=$1
	suite_ok=$(grep -cE '(\.\.\. ok|^ok [0-9]+ )' "$log" || true)
	suite_bad=$(grep -cE '(\.\.\. FAILED|^not ok [0-9]+ )' "$log" || true)
	passed=$((passed + suite_ok))
	failed=$((failed + suite_bad))
}

# Run one pg_regress-style suite through make; $1 names it, the rest are
# make arguments.
run_regress_suite() {
	local name=$1 diffs=$2 log="$logdir/$1.log" rc=0
	shift 2
	loyalty_log "running $name"
	make -s PG_CONFIG="$PG_CONFIG" "$@" installcheck >"$log" 2>&1 || rc=$?
	cat "$log"
	count_regress "$log"
	if [ "$rc" -ne 0 ]; then
		# a crash or a set-up error that printed no per-test verdict
		[ "$suite_bad" -eq 0 ] && failed=$((failed + 1))
		if [ -f "$diffs" ]; then
			echo "---- $diffs ----"
			cat "$diffs"
		fi
	fi
}

run_regress_suite "pg_regress" regression.diffs ISOLATION=
run_regress_suite "isolation" output_iso/regression.diffs REGRESS=

# pgTAP: count each assertion.
loyalty_log "running pgTAP suites"
rc=0
make -s PG_CONFIG="$PG_CONFIG" prove >"$logdir/pgtap.log" 2>&1 || rc=$?
cat "$logdir/pgtap.log"
ok=$(grep -cE '^ok [0-9]+' "$logdir/pgtap.log" || true)
bad=$(grep -cE '^not ok [0-9]+' "$logdir/pgtap.log" || true)
passed=$((passed + ok))
failed=$((failed + bad))
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
	failed=$((failed + 1))	# bad plan, died, or could not run
fi

# Scripted checks: each script is one check, run with the cluster's env.
for script in test/scripts/*.sh; do
	[ -e "$script" ] || continue
	name=$(basename "$script" .sh)
	loyalty_log "running $name"
	if bash "$script" >"$logdir/$name.log" 2>&1; then
		passed=$((passed + 1))
		echo "ok - $name"
	else
		failed=$((failed + 1))
		echo "not ok - $name"
		cat "$logdir/$name.log"
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
