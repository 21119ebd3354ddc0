#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER of scripts/fuzz.sh: compiles chatnode and the fuzz targets with the
# coverage instrumentation `cargo fuzz build --sanitizer none` gives (the flags of cargo-fuzz
# 0.13.2, src/project.rs, on Linux) and every other crate as a plain `cargo build` does.
#
# Why a wrapper and not RUSTFLAGS: RUSTFLAGS apply to every crate, so the whole dependency tree
# would be compiled a second time. Cargo runs this wrapper for workspace members only and folds
# it into their artifacts' hashes, so the instrumented chatnode sits beside the normal one and
# the dependencies the tests built are reused. Cargo does not see these flags, so after editing
# them remove the old artifacts (`rm -rf target/debug/.fingerprint/chatnode-*`) to rebuild.
set -euo pipefail
rustc="$1"
shift
crate=""
prev=""
for arg in "$@"; do
  if [ "$prev" = "--crate-name" ]; then crate="$arg"; fi
  prev="$arg"
done
case "$crate" in
  chatnode | chatnode_fuzz | frame | rest_json | media | token)
    exec "$rustc" "$@" \
      -Cpasses=sancov-module \
      -Cllvm-args=-sanitizer-coverage-level=4 \
      -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
      -Cllvm-args=-sanitizer-coverage-pc-table \
      -Cllvm-args=-sanitizer-coverage-trace-compares \
      --cfg fuzzing \
      -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
      -Cllvm-args=-sanitizer-coverage-stack-depth \
      -Cdebug-assertions
    ;;
  *) exec "$rustc" "$@" ;;
esac
