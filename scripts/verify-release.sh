#!/usr/bin/env bash
# The full verification on release builds: `clusterctl verify --nodes 3` without `--quick`,
# every scenario at its full request counts. The test command runs the quick form on debug
# builds; this one shows the same claims hold at the size the README quotes. `.ci/run` calls
# it after the Docker test, which has already built cluster-app and cluster-lb in release.
#
# It needs redis-server on PATH. clusterctl stops every process it started on every exit
# path; the JSON report and the SIGKILL timeline go to a temporary folder, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v redis-server >/dev/null || {
  echo "redis-server not found: apt-get install redis-server" >&2
  exit 2
}

cargo build --release -q -p cluster-app -p cluster-lb -p clusterctl
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
target/release/clusterctl verify --nodes 3 --report "$out/report.json"
