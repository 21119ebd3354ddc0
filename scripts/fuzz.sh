#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (libFuzzer, coverage-instrumented by scripts/fuzz-rustc.sh on
# stable Rust; no cargo-fuzz needed) and runs each for SECONDS_PER_TARGET seconds (default 20),
# starting from its committed seeds (fuzz/corpus/<target>/). Fails when any target finds an
# input that crashes it, and prints the path of that input; reproduce with
# `target/debug/<target> <path>`. New inputs the fuzzer finds go to target/fuzz/corpus/, so a
# later local run goes on from them; the committed seeds are only read.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-20}"
TARGETS=(frame rest_json media token)

export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== fuzz: building ${TARGETS[*]}"
RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/fuzz-rustc.sh" cargo build --locked -p chatnode-fuzz --bins

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
failed=()
for target in "${TARGETS[@]}"; do
  work="$TARGET_DIR/fuzz/corpus/$target"
  artifacts="$TARGET_DIR/fuzz/artifacts/$target"
  log="$TARGET_DIR/fuzz/$target.log"
  mkdir -p "$work" "$artifacts"
  # -timeout: an input that takes a second is a hang; -rss_limit_mb: a parser's memory must stay
  # bounded; -max_len: room for a media head of SNIFF_BYTES (8 KiB) after its header lines.
  status=0
  "$TARGET_DIR/debug/$target" "$work" "fuzz/corpus/$target" \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=1 -rss_limit_mb=1024 -max_len=9000 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  stats="$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added):' "$log" |
    sed 's/^stat:://' | tr '\n' ' ')"
  echo "== fuzz: $target: ${stats:-no stats}"
  if [ "$status" -ne 0 ]; then
    crash="$(grep -oE '(Test unit written to|written to) [^ ]+' "$log" | tail -1 | awk '{print $NF}')"
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" | head -5 >&2 || true
    echo "== fuzz: $target FAILED (exit $status); crashing input: ${crash:-see $log}" >&2
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "== fuzz: crashes in ${failed[*]} (logs in $TARGET_DIR/fuzz/)" >&2
  exit 1
fi
echo "== fuzz: no crash in ${TARGETS[*]} (${SECONDS_PER_TARGET}s each)"
