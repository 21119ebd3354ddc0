#!/usr/bin/env bash
# Runs every test of the workspace: installs what the tests need, starts the services they use
# on 127.0.0.1, runs the suite, and stops what it started. This is the README's test command and
# what CI runs after its format and lint checks.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Build every test binary (and, for the integration tests, the node binary) first, so no test
# times out on a build. This is the same build nextest asks for below, so nothing is compiled
# twice: a separate `cargo build` would resolve features without the dev-dependencies and build
# a second copy of half the dependency tree.
bash scripts/build-tools.sh
cargo test --locked --workspace --no-run

# S3 for the media tests: moto's S3 server on a free loopback port (scripts/s3_test_server.py adds
# the expiry of presigned URLs, which moto does not check), named in CHATNODE_TEST_S3; each test
# creates its own bucket. moto comes from PyPI when missing; the server stops with this script.
if ! python3 -c 'import moto.server, flask, werkzeug' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "moto[server]"
fi
MOTO_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
MOTO_LOG="$(mktemp -t chatnode-moto.XXXXXX.log)"
python3 scripts/s3_test_server.py -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true' EXIT
export CHATNODE_TEST_S3="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 150); do
  if curl -sf -o /dev/null "$CHATNODE_TEST_S3/moto-api/"; then
    break
  fi
  if ! kill -0 "$MOTO_PID" 2>/dev/null; then
    echo "moto server did not start:" >&2
    cat "$MOTO_LOG" >&2
    exit 1
  fi
  sleep 0.2
done
curl -sf -o /dev/null "$CHATNODE_TEST_S3/moto-api/" || { echo "moto server not ready" >&2; cat "$MOTO_LOG" >&2; exit 1; }
echo "moto (S3) for the media tests at $CHATNODE_TEST_S3"

# Cassandra for the ScyllaDB store (scripts/cassandra.sh: Apache Cassandra 5.0 from Maven Central,
# cached in ~/.cache/chatnode/cassandra, on Java 17): tests/store_scylla.rs runs the shared store
# suite on it. A node that cannot start fails the run with its log's last lines. It stops with
# this script. Its folder is not exported: the node refuses unknown CHATNODE_ variables, and
# the config tests read this process's environment.
CASSANDRA_DIR="$(mktemp -d -t chatnode-cassandra.XXXXXX)"
trap 'CHATNODE_CASSANDRA_DIR="$CASSANDRA_DIR" bash scripts/cassandra.sh stop || true; kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true' EXIT
CASSANDRA_LINE="$(CHATNODE_CASSANDRA_DIR="$CASSANDRA_DIR" bash scripts/cassandra.sh start)" || { echo "Cassandra did not start" >&2; exit 1; }
export CHATNODE_TEST_SCYLLA="${CASSANDRA_LINE#CHATNODE_SCYLLA_NODES=}"
echo "Cassandra for the scylla store tests at $CHATNODE_TEST_SCYLLA"

if command -v cargo-nextest >/dev/null 2>&1 || cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --workspace --no-fail-fast "$@"
  # nextest does not run doctests.
  cargo test --locked --workspace --doc
else
  cargo test --locked --workspace --no-fail-fast "$@"
fi

# The node tests a second time with the node on Cassandra (each TestNode migrates a keyspace of
# its own), then the fault tests (tests/node/faults.rs) on a Cassandra of their own, which they
# stop and pause. A test ignored on Cassandra fails the run. The variables are set only for
# these commands, never exported to the run above.
STEP_START=$SECONDS
NODE_LOG="$(mktemp -t chatnode-node-scylla.XXXXXX.log)"
CHATNODE_TEST_NODE_STORE=scylla cargo test --locked --test node -- --skip faults::cassandra_ 2>&1 | tee "$NODE_LOG"
NODE_RESULT="$(grep -E '^test result: ok\.' "$NODE_LOG" | tail -n 1)"
NODE_PASSED="$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$NODE_RESULT")"
NODE_IGNORED="$(sed -E 's/.* ([0-9]+) ignored.*/\1/' <<<"$NODE_RESULT")"
if [ -z "$NODE_RESULT" ] || [ "$NODE_IGNORED" != 0 ]; then
  echo "node tests on Cassandra: not all ran ($NODE_RESULT)" >&2
  exit 1
fi
echo "node tests on Cassandra took $((SECONDS - STEP_START)) s"
STEP_START=$SECONDS
FAULT_DIR="$(mktemp -d -t chatnode-cassandra-faults.XXXXXX)"
trap 'CHATNODE_CASSANDRA_DIR="$FAULT_DIR" bash scripts/cassandra.sh stop || true; CHATNODE_CASSANDRA_DIR="$CASSANDRA_DIR" bash scripts/cassandra.sh stop || true; kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true' EXIT
FAULT_LINE="$(CHATNODE_CASSANDRA_DIR="$FAULT_DIR" bash scripts/cassandra.sh start)" || { echo "Cassandra for the fault tests did not start" >&2; exit 1; }
FAULT_LOG="$(mktemp -t chatnode-faults.XXXXXX.log)"
CHATNODE_TEST_NODE_STORE=scylla CHATNODE_TEST_SCYLLA="${FAULT_LINE#CHATNODE_SCYLLA_NODES=}" \
  CHATNODE_TEST_CASSANDRA_DIR="$FAULT_DIR" timeout 600 cargo test --locked --test node -- --exact \
  faults::cassandra_stopped_under_load faults::cassandra_paused_under_load 2>&1 | tee "$FAULT_LOG"
grep -qE '^test result: ok\. 2 passed; 0 failed; 0 ignored' "$FAULT_LOG" || { echo "fault tests on Cassandra failed" >&2; exit 1; }
CHATNODE_CASSANDRA_DIR="$FAULT_DIR" bash scripts/cassandra.sh stop
echo "fault tests on Cassandra took $((SECONDS - STEP_START)) s"
echo "on Cassandra: the store suite (tests/store_scylla.rs), $NODE_PASSED node tests and 2 fault tests ran, none skipped"

# The chat page in a real browser (web/e2e/): Debian's Chromium driven by playwright-core from
# npm, against the binary built above. Screenshots and logs go to target/e2e-artifacts/.
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
(
  cd web
  npm ci --no-audit --no-fund --loglevel=error
  node scripts/vendor.mjs --check
  CHATNODE_BIN="$TARGET_DIR/debug/chatnode" CHATNODE_E2E_ARTIFACTS="$TARGET_DIR/e2e-artifacts" \
    npm run --silent test:e2e
)
