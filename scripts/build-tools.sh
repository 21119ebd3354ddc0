#!/usr/bin/env bash
# Installs the C build tools when missing: the C parts of the build (jemalloc, the node's
# allocator, and aws-lc, the JWT crypto backend) need a C compiler, and jemalloc's needs make.
# Called by scripts/test.sh and .ci/run before they compile anything.
set -euo pipefail
if ! command -v make >/dev/null || ! command -v cc >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq make gcc libc6-dev >/dev/null
fi
