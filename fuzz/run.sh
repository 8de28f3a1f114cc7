#!/usr/bin/env bash
# Runs ragjet's cargo-fuzz targets, each for SECONDS (default 600), one
# after the other, and prints libFuzzer's execution count per target.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (targets: all by default)
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). Builds all
# targets once (RAGJET_FUZZ_NO_BUILD=1 reuses the last build), then runs the
# binaries. The working corpus grows in fuzz/corpus/<target> (ignored by
# git) from the committed seeds in fuzz/corpus-seed/<target>; crashes land
# in fuzz/artifacts/<target>/. `cache_value` also fuzzes the Redis tier when
# RAGJET_FUZZ_REDIS_URL names a server. Built without a sanitizer (`-s
# none`: the code under test is safe Rust, so a panic, a hang past 20 s or
# more than 2 GB RSS is the crash to find) and with debug assertions
# (integer overflow is a crash too).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(filters config jsonl embed store cache_value)
fi
if [ "${RAGJET_FUZZ_NO_BUILD:-}" != 1 ]; then
    cargo +nightly fuzz build -s none -O -a
fi
bin=target/x86_64-unknown-linux-gnu/release
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="/tmp/ragjet-fuzz-$t.log"
    start=$(date +%s)
    "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -timeout=20 \
        -rss_limit_mb=2048 -print_final_stats=1 "corpus/$t" "corpus-seed/$t" >"$log" 2>&1 \
        || { echo "$t: FAILED (see $log and fuzz/artifacts/$t)"; continue; }
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "$t: $runs executions in $(( $(date +%s) - start )) s, $cov, corpus $(ls "corpus/$t" | wc -l) files"
done
