#!/usr/bin/env bash
# Mutation testing of the modules where a silent bug would hurt most: cargo-mutants changes
# one thing in the code (a return value, a comparison, a match arm), runs the package's
# tests, and reports each change no test noticed ("missed"). TESTING.md says when to run it
# and keeps the record of each run.
#
# Not part of CI: every mutant is a build and a test run, tens of minutes per package on
# 2 cores. Run it when one of the modules below changes, for that module's package.
#
# Usage: scripts/mutants.sh [PACKAGE...]     (default: every package below)
#   e.g. nice -n 19 scripts/mutants.sh versioned-session-store
# Outcome: target/mutants/<package>/mutants.out/ (caught.txt, missed.txt, timeout.txt,
#          unviable.txt, outcomes.json, a log per mutant), and a summary line per package.
# Knobs: JOBS (parallel builds, default 1: two would share 2 cores with the tests' own
#        processes), TIMEOUT_MULTIPLIER (a mutant's test run may take this many times the
#        clean run before it counts as a timeout, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-1}
TIMEOUT_MULTIPLIER=${TIMEOUT_MULTIPLIER:-3}

command -v redis-server >/dev/null || {
  echo "redis-server not found: apt-get install redis-server (the tests start their own)" >&2
  exit 2
}
cargo nextest --version >/dev/null 2>&1 || {
  echo "cargo-nextest not found: cargo install cargo-nextest --locked" >&2
  exit 2
}
cargo mutants --version >/dev/null 2>&1 || cargo install cargo-mutants --locked

# The modules to mutate, by package.
files_of() {
  case "$1" in
    cluster-lb)
      echo crates/cluster-lb/src/{retry,health,backend,backend_set,proxy,upstream}.rs ;;
    cluster-app)
      echo crates/cluster-app/src/{bounded_store,getex_store}.rs ;;
    versioned-session-store)
      echo crates/versioned-session-store/src/{store,scripts,counter}.rs ;;
    clusterctl)
      echo crates/clusterctl/src/load/ledger.rs ;;
    *)
      echo "unknown package $1 (cluster-lb, cluster-app, versioned-session-store, clusterctl)" >&2
      return 1 ;;
  esac
}

# Extra test selection per package. clusterctl's tests start the cluster-app and cluster-lb
# binaries from the same target directory: build those packages too, run only clusterctl's
# tests.
test_args_of() {
  case "$1" in
    clusterctl)
      echo --test-package clusterctl --test-package cluster-app --test-package cluster-lb \
        --cargo-test-arg=-E --cargo-test-arg='package(clusterctl)' ;;
  esac
}

count() { # count <file>: lines in a mutants.out list, 0 when absent
  if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi
}

packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(versioned-session-store cluster-app cluster-lb clusterctl)

status=0
for package in "${packages[@]}"; do
  files=$(files_of "$package")
  mkdir -p "target/mutants/$package"
  file_args=()
  for file in $files; do file_args+=(--file "$file"); done
  # shellcheck disable=SC2046 # test_args_of prints separate arguments on purpose
  cargo mutants \
    --package "$package" "${file_args[@]}" $(test_args_of "$package") \
    --test-tool nextest \
    --jobs "$JOBS" \
    --timeout-multiplier "$TIMEOUT_MULTIPLIER" \
    --minimum-test-timeout 60 \
    --output "target/mutants/$package" ||
    status=$? # cargo-mutants exits non-zero when a mutant was missed; go on with the rest
  out="target/mutants/$package/mutants.out"
  caught=$(count "$out/caught.txt")
  missed=$(count "$out/missed.txt")
  timeouts=$(count "$out/timeout.txt")
  unviable=$(count "$out/unviable.txt")
  echo "$package: caught $caught, missed $missed, timeout $timeouts, unviable $unviable ($out)"
done
exit "$status"
