#!/usr/bin/env bash
# The project's one test command (README.md, .ci/run): every crate's tests
# against real redis-server, node and proxy processes.
set -euo pipefail
cd "$(dirname "$0")/.."

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
