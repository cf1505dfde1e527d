#!/usr/bin/env bash
# The project's one test command (README.md, .ci/run): every crate's tests against real
# redis-server, node and proxy processes, `clusterctl verify --nodes 3 --quick` among them.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || {
  echo "redis-server not found: apt-get install redis-server (the tests start their own)" >&2
  exit 2
}

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
