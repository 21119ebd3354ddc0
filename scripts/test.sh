#!/usr/bin/env bash
# Runs every test of the workspace: installs what the tests need, starts the services they use
# on 127.0.0.1, runs the suite, and stops what it started. This is the README's test command and
# what CI runs after its format and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The integration tests start the real binary; build it first so no test times out on a build.
cargo build --locked --bins

if command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --locked --workspace --doc
else
  cargo test --locked --workspace --no-fail-fast "$@"
fi
