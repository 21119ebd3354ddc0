#!/usr/bin/env bash
# Media upload benchmark (docs/benchmarks.md, "Media uploads"): uploads one file of SIZE_MIB
# (default 100) to a fresh node on the local backend and on S3 (moto, started here unless
# CHATNODE_TEST_S3 names one), and reports the upload throughput and the node's memory: its
# resident size sampled every 20 ms while uploading, and its peak (VmHWM) afterwards.
#
#   scripts/bench-media.sh [path/to/chatnode]      (default: target/release/chatnode)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${CARGO_TARGET_DIR:-target}/release/chatnode}"
SIZE_MIB="${SIZE_MIB:-100}"
SECRET="bench-secret-0123456789abcdef-0123456789"
WORK="$(mktemp -d -t chatnode-bench-media.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BIN" ] || { echo "no chatnode binary at $BIN (cargo build --release --bin chatnode)" >&2; exit 1; }

if [ -z "${CHATNODE_TEST_S3:-}" ]; then
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  python3 scripts/s3_test_server.py -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1 &
  PIDS+=($!)
  CHATNODE_TEST_S3="http://127.0.0.1:$PORT"
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$CHATNODE_TEST_S3/moto-api/" && break; sleep 0.1; done
fi

# The file: an MP4 header (so the type check passes as video/mp4), then random bytes.
FILE="$WORK/upload.mp4"
printf '\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2' >"$FILE"
head -c "$((SIZE_MIB * 1024 * 1024 - 24))" /dev/urandom >>"$FILE"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

run() {
  local backend="$1"; shift
  local dir="$WORK/$backend"
  mkdir -p "$dir"
  env -i PATH="$PATH" CHATNODE_LISTEN=127.0.0.1:0 CHATNODE_DATA_DIR="$dir" \
    CHATNODE_AUTH_SECRET="$SECRET" CHATNODE_WORKERS=2 RUST_LOG=warn "$@" \
    "$BIN" serve >"$dir/out.log" 2>"$dir/err.log" &
  local node=$!
  PIDS+=("$node")
  local addr=""
  for _ in $(seq 1 100); do
    addr="$(sed -n 's#^chatnode listening on http://##p' "$dir/out.log" | head -n1)"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "the node did not start:" >&2; cat "$dir/err.log" >&2; exit 1; }
  local token
  token="$(CHATNODE_AUTH_SECRET="$SECRET" CHATNODE_DATA_DIR="$dir" "$BIN" token --user alice)"
  curl -sf -o /dev/null -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"room":"bench","title":"bench","kind":"group","members":[]}' \
    "http://$addr/v1/groups/bench/rooms"
  local before; before="$(rss_kib "$node")"
  local max="$before"
  ( while kill -0 "$node" 2>/dev/null; do rss_kib "$node"; sleep 0.02; done ) >"$dir/rss.log" &
  local sampler=$!
  local result
  result="$(curl -sS -o "$dir/resp.json" -w '%{http_code} %{time_total} %{speed_upload}' \
    -H "Authorization: Bearer $token" -H 'Content-Type: video/mp4' \
    -T "$FILE" -X POST "http://$addr/v1/groups/bench/rooms/bench/media?name=bench.mp4")"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  max="$(sort -n "$dir/rss.log" | tail -n1)"
  local hwm; hwm="$(hwm_kib "$node")"
  kill "$node"
  wait "$node" 2>/dev/null || true
  read -r code secs speed <<<"$result"
  [ "$code" = 201 ] || { echo "$backend: upload answered $code: $(cat "$dir/resp.json")" >&2; exit 1; }
  awk -v b="$backend" -v s="$SIZE_MIB" -v t="$secs" -v sp="$speed" -v r0="$before" -v r1="$max" -v h="$hwm" 'BEGIN {
    printf "%-6s %d MiB in %.2f s = %.1f MiB/s; node RSS %.1f MiB before, at most %.1f MiB while uploading (VmHWM %.1f MiB)\n",
      b, s, t, sp / 1048576, r0 / 1024, r1 / 1024, h / 1024 }'
}

run local
curl -sf -o /dev/null -X PUT "$CHATNODE_TEST_S3/chatnode-bench-media"
run s3 CHATNODE_MEDIA_BACKEND=s3 CHATNODE_MEDIA_S3_BUCKET=chatnode-bench-media \
  CHATNODE_MEDIA_S3_ENDPOINT="$CHATNODE_TEST_S3" CHATNODE_MEDIA_S3_PATH_STYLE=true \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
