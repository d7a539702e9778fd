#!/usr/bin/env bash
# run-fuzzer.sh BINARY CORPUS [SECONDS]: a bounded libFuzzer run that starts
# from the committed seed corpus (copied, so new inputs stay out of git).
set -euo pipefail
bin=$1 corpus=$2 secs=${3:-${SKIFF_FUZZ_SECONDS:-30}}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$corpus"/. "$work"/
exec "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$work"
