#!/usr/bin/env bash
# The project's one test command (README.md, .ci/run): every crate's tests against real
# redis-server, node and proxy processes, `clusterctl verify --nodes 3 --quick` among them.
#
# It needs cargo-nextest: its per-test kill timeouts (.config/nextest.toml) turn a hung test into
# a failure, and every test runs in its own process, so a test that leaks a child is seen.
# `cargo test` has neither, so there is no fallback to it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || {
  echo "redis-server not found: apt-get install redis-server (the tests start their own)" >&2
  exit 2
}
command -v redis-sentinel >/dev/null || {
  echo "redis-sentinel not found: apt-get install redis-sentinel (the Sentinel tests start their own)" >&2
  exit 2
}
cargo nextest --version >/dev/null 2>&1 || {
  echo "cargo-nextest not found: cargo install cargo-nextest --locked" >&2
  exit 2
}

cargo nextest run --workspace --no-fail-fast
