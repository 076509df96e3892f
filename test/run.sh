#!/usr/bin/env bash
# test/run.sh: run every loyalty test suite on throwaway clusters, on every
# PostgreSQL version loyalty is tested on.
#
#   bash test/run.sh                            # PostgreSQL 13, 15 (system) and 18
#   LOYALTY_TEST_VERSIONS=15 bash test/run.sh   # only the named versions
#   PG_CONFIG=/path/to/pg_config bash test/run.sh   # only that installation
#
# For each version: installs missing Debian packages (the system server is
# 15; 13 and 18 are built once from ../shared/vendor by test/pg_build.sh,
# with assertions, into a cache outside the checkout),
# builds and installs the extension, starts a throwaway cluster (or uses
# PGHOST/PGPORT), then runs
#   1. pg_regress     sql/*.sql against expected/*.out
#   2. isolation      test/isolation/specs/*.spec
#   3. pgTAP          test/pgtap/*.sql through pg_prove
#   4. scripted tests test/scripts/*.sh (dump/restore, upgrade, stress)
# Prints regression.diffs on failure, exits non-zero if anything failed, and
# ends with one line "N passed, N failed" summing all suites of all
# versions: one per pg_regress test file, isolation spec and scripted check,
# one per pgTAP assertion.

if [ -z "${PG_CONFIG:-}" ] && [ -z "${LOYALTY_RUN_ONE:-}" ]; then
	set -uo pipefail
	root=$(cd "$(dirname "$0")/.." && pwd)
	total_passed=0
	total_failed=0
	for v in ${LOYALTY_TEST_VERSIONS:-13 15 18}; do
		echo "==> PostgreSQL $v" >&2
		cfg=
		if [ "$v" != 15 ]; then
			if ! cfg=$(bash "$root/test/pg_build.sh" "$v"); then
				echo "could not build PostgreSQL $v" >&2
				total_failed=$((total_failed + 1))
				continue
			fi
		fi
		# objects of another version must not be reused
		make -C "$root" -s clean >/dev/null
		out=$(mktemp /tmp/loyalty-run.XXXXXX)
		LOYALTY_RUN_ONE=1 PG_CONFIG=$cfg bash "$root/test/run.sh" 2>&1 | tee "$out"
		last=$(tail -1 "$out")
		rm -f "$out"
		if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
			total_passed=$((total_passed + BASH_REMATCH[1]))
			total_failed=$((total_failed + BASH_REMATCH[2]))
			echo "==> PostgreSQL $v: $last" >&2
		else
			echo "==> PostgreSQL $v: the run did not finish" >&2
			total_failed=$((total_failed + 1))
		fi
	done
	# leave no objects of another version behind for the next build
	make -C "$root" -s clean >/dev/null
	echo "$total_passed passed, $total_failed failed"
	[ "$total_failed" -eq 0 ]
	exit
fi

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
