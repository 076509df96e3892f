#!/usr/bin/env bash
# Scripted check: fuzz and prove the pure coupon code machinery.
#
# Builds test/fuzz/coupon_code_fuzz.c with src/coupon/coupon_code_core.c, without
# PostgreSQL, under AddressSanitizer and UndefinedBehaviorSanitizer, and runs
# it: 300,000 random and mutated inputs (no crash, exact round trips),
# generated codes from random patterns (all validate), and the exhaustive
# proof that every single substitution and adjacent transposition of 3,000
# generated codes is rejected.  Takes a few seconds.
#
#   bash test/scripts/fuzz_coupon_code.sh [iterations] [seed]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$(mktemp /tmp/coupon_code_fuzz.XXXXXX)
trap 'rm -f "$bin"' EXIT

gcc -std=c99 -O2 -g -Wall -Wextra -Werror \
	-fsanitize=address,undefined -fno-sanitize-recover=all \
	-DCOUPON_CODE_STANDALONE -I"$root/src/coupon" \
	"$root/src/coupon/coupon_code_core.c" "$root/test/fuzz/coupon_code_fuzz.c" -o "$bin"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	"$bin" "${1:-300000}" "${2:-20261101}"
