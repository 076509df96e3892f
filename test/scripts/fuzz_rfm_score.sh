#!/usr/bin/env bash
# Scripted check: fuzz the rfm_score text parser standalone.
#
# Builds test/fuzz/rfm_score_fuzz.c with src/rfm/rfm_score_parse.c (pure C, no
# PostgreSQL) under AddressSanitizer and UndefinedBehaviorSanitizer when the
# compiler supports them, and checks a few hundred thousand exhaustive,
# random and mutated inputs against a reference implementation: the parser
# never crashes or over-reads, accepts exactly the 729 scores (with optional
# surrounding whitespace) and round-trips in -> out -> in.
#
#   bash test/scripts/fuzz_rfm_score.sh [iterations [seed]]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cc=${CC:-gcc}
out=$(mktemp -d /tmp/loyalty-fuzz.XXXXXX)
trap 'rm -rf "$out"' EXIT

flags=(-std=c99 -O1 -g -Wall -Wextra -Werror -I"$root/src/rfm")
san=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
if echo 'int main(void){return 0;}' | "$cc" "${san[@]}" -x c - -o "$out/probe" 2>/dev/null \
	&& "$out/probe"; then
	flags+=("${san[@]}")
else
	echo "note: sanitizers unavailable, fuzzing without them" >&2
fi

"$cc" "${flags[@]}" -o "$out/rfm_score_fuzz" \
	"$root/test/fuzz/rfm_score_fuzz.c" "$root/src/rfm/rfm_score_parse.c"
"$out/rfm_score_fuzz" "${1:-300000}" "${2:-$(date +%s)}"
