#!/usr/bin/env bash
# Benchmark of one node (issue 2): one redis-server, one release-built
# cluster-app, wrk with 16 connections against
#   GET /healthz               no session (the baseline)
#   GET /whoami + cookie       session read: Redis GET (+ EXPIRE, see the node's TTL policy)
#   POST /counter/incr + cookie session write: Redis GET + SET
# and prints rps, p50, p99 and the session-read / no-session ratio.
#
# Bounded: each run lasts DURATION (default 10s). Run it alone on the machine
# (other benchmarks take the same lock):  flock /tmp/bench.lock scripts/bench-node.sh
# Everything it starts is stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}
TARGET_RATIO=0.5

need() { command -v "$1" >/dev/null 2>&1; }
install_missing() {
  local missing=()
  need wrk || missing+=(wrk)
  need curl || missing+=(curl)
  need redis-server || missing+=(redis-server)
  if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}
install_missing

cargo build --release -q -p cluster-app
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
app="$target_dir/release/cluster-app"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (bash's /dev/tcp connect fails).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
}
wait_until() { # seconds, command...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "timed out waiting for: $*" >&2; return 1; }
    sleep 0.05
  done
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_until 10 redis-cli -p "$redis_port" ping

node_port=$(free_port)
base="http://127.0.0.1:$node_port"
SESSION_KEY=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n') RUST_LOG=warn \
  "$app" --node-id bench --listen-addr "127.0.0.1:$node_port" \
  --redis-url "redis://127.0.0.1:$redis_port" --cookie-secure false --workers "$WORKERS" \
  >"$work/node.log" 2>&1 &
pids+=($!)
wait_until 10 curl -sf "$base/readyz"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Log in once; every wrk request then carries this cookie.
cookie=$(curl -s -D - -o /dev/null -X POST -H 'content-type: application/json' \
  -d '{"user":"bench"}' "$base/login" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
[[ -n "$cookie" ]] || { echo "login gave no cookie" >&2; exit 1; }

# Redis commands served so far (all kinds), from INFO commandstats.
redis_calls() {
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{ n += $1 } END { print n + 0 }'
}

# wrk, then "rps p50_ms p99_ms redis_commands_per_request"; fails on any
# non-2xx answer or socket error.
measure() { # name, path, extra wrk args...
  local name=$1 path=$2; shift 2
  local calls_before
  calls_before=$(redis_calls)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$base$path" >"$work/$name.txt"
  if grep -qE 'Non-2xx|Socket errors' "$work/$name.txt"; then
    cat "$work/$name.txt" >&2; echo "$name: errors during the run" >&2; exit 1
  fi
  awk -v calls="$(( $(redis_calls) - calls_before - 1 ))" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    / requests in / { requests = $1 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%.0f %.2f %.2f %.2f\n", rps, p50, p99, calls / requests }' "$work/$name.txt"
}

read -r h_rps h_p50 h_p99 h_cmds < <(measure healthz /healthz)
read -r w_rps w_p50 w_p99 w_cmds < <(measure whoami /whoami -H "Cookie: $cookie")
read -r i_rps i_p50 i_p99 i_cmds < <(measure incr /counter/incr -H "Cookie: $cookie" -s scripts/bench-node-post.lua)

# The session runs really went through the session: same user, counter moved.
whoami=$(curl -s -H "Cookie: $cookie" "$base/whoami")
[[ "$whoami" == *'"user":"bench"'* ]] || { echo "session lost during the run: $whoami" >&2; exit 1; }

echo "cluster-app, 1 node ($WORKERS workers), 1 redis-server, wrk -t$THREADS -c$CONNECTIONS -d$DURATION," \
  "$(nproc) cores, load average before: $load_before, $(date -u '+%Y-%m-%d %H:%M UTC')"
row() { printf '%-28s %9s %8s %8s %14s\n' "$@"; }
row request rps p50_ms p99_ms redis_cmds/req
row 'GET /healthz (no session)' "$h_rps" "$h_p50" "$h_p99" "$h_cmds"
row 'GET /whoami (session read)' "$w_rps" "$w_p50" "$w_p99" "$w_cmds"
row 'POST /counter/incr (write)' "$i_rps" "$i_p50" "$i_p99" "$i_cmds"
awk -v r="$w_rps" -v h="$h_rps" -v t="$TARGET_RATIO" 'BEGIN {
  ratio = r / h
  verdict = (ratio >= t) ? "met" : "NOT met"
  printf "session-read / no-session ratio: %.2f (target >= %.1f: %s)\n", ratio, t, verdict
}'
