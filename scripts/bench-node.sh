#!/usr/bin/env bash
# Benchmark of one node (issue 2): one redis-server, one release-built
# cluster-app, wrk with 16 connections against
#   GET /healthz               no session (the baseline)
#   GET /whoami + cookie       session read: one Redis GETEX (read + renew the idle timeout)
#   POST /counter/incr + cookie session write: Redis GETEX + SET (+ the pool's PINGs)
#   GET /whoami on a second node started with --persistent-cookie, which renews
#                              the cookie's Max-Age, so every read re-sends an encrypted cookie
# then the same healthz/whoami pair against examples/stock_node.rs, the stock
# actix-session RedisSessionStore with the same cookie settings (GET + EXPIRE
# per read), on the same Redis. Prints rps, p50, p99, Redis commands and the
# CPU time (user + system) of node + redis-server per request, and the
# session-read / no-session ratio of both.
#
# Every cell is measured ROUNDS times (default 3; rounds interleave the cells, so
# background noise hits them alike) and the median of each figure is shown.
# Bounded: each run lasts DURATION (default 10s). Run it alone on the machine
# (other benchmarks take the same lock):  flock /tmp/bench.lock scripts/bench-node.sh
# Everything it starts is stopped on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
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

cargo build --release -q -p cluster-app --bin cluster-app --example stock_node
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
app="$target_dir/release/cluster-app"
stock_app="$target_dir/release/examples/stock_node"

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

redis_pid=${pids[-1]}
session_key=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')

# Starts a cluster-app node on a free port and waits until it is ready;
# sets started_pid and started_base (no subshell: pids must keep the pid).
start_node() { # node id, extra flags...
  local id=$1 port
  shift
  port=$(free_port)
  SESSION_KEY=$session_key RUST_LOG=warn \
    "$app" --node-id "$id" --listen-addr "127.0.0.1:$port" \
    --redis-url "redis://127.0.0.1:$redis_port" --cookie-secure false --workers "$WORKERS" \
    "$@" >"$work/$id.log" 2>&1 &
  pids+=($!)
  started_pid=$!
  started_base="http://127.0.0.1:$port"
  wait_until 10 curl -sf "$started_base/readyz"
}
start_node bench
node_pid=$started_pid base=$started_base
start_node bench-persistent --persistent-cookie true
persistent_pid=$started_pid persistent_base=$started_base

stock_port=$(free_port)
stock_base="http://127.0.0.1:$stock_port"
"$stock_app" "127.0.0.1:$stock_port" "redis://127.0.0.1:$redis_port" "$session_key" "$WORKERS" \
  >"$work/stock.log" 2>&1 &
pids+=($!)
stock_pid=$!
wait_until 10 curl -sf "$stock_base/healthz"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# Logs in once; every wrk request then carries this cookie.
login() { # base url
  local cookie
  cookie=$(curl -s -D - -o /dev/null -X POST -H 'content-type: application/json' \
    -d '{"user":"bench"}' "$1/login" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
  [[ -n "$cookie" ]] || { echo "login at $1 gave no cookie" >&2; exit 1; }
  echo "$cookie"
}
cookie=$(login "$base")
stock_cookie=$(login "$stock_base")

# CPU time (user + system, clock ticks) used so far by the given processes.
cpu_ticks_of() { # pids...
  local pid files=()
  for pid in "$@"; do files+=("/proc/$pid/stat"); done
  awk '{ n += $14 + $15 } END { print n + 0 }' "${files[@]}"
}
clk_tck=$(getconf CLK_TCK)

# Redis commands served so far (all kinds), from INFO commandstats.
redis_calls() {
  redis-cli -p "$redis_port" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{ n += $1 } END { print n + 0 }'
}

# wrk, then "rps p50_ms p99_ms redis_commands_per_request"; fails on any
# non-2xx answer or socket error.
measure() { # name, node pid, url, extra wrk args...
  local name=$1 pid=$2 url=$3; shift 3
  local calls_before ticks_before
  calls_before=$(redis_calls)
  ticks_before=$(cpu_ticks_of "$pid" "$redis_pid")
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$work/$name.txt"
  local ticks=$(( $(cpu_ticks_of "$pid" "$redis_pid") - ticks_before ))
  if grep -qE 'Non-2xx|Socket errors' "$work/$name.txt"; then
    cat "$work/$name.txt" >&2; echo "$name: errors during the run" >&2; exit 1
  fi
  awk -v calls="$(( $(redis_calls) - calls_before - 1 ))" -v ticks="$ticks" -v hz="$clk_tck" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    / requests in / { requests = $1 }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%.0f %.2f %.2f %.2f %.1f\n", rps, p50, p99, calls / requests, ticks / hz * 1e6 / requests }' "$work/$name.txt"
}

cells=(
  "healthz|$node_pid|$base/healthz"
  "whoami|$node_pid|$base/whoami|-H|Cookie: $cookie"
  "incr|$node_pid|$base/counter/incr|-H|Cookie: $cookie|-s|scripts/bench-node-post.lua"
  "whoami-persistent|$persistent_pid|$persistent_base/whoami|-H|Cookie: $cookie"
  "stock-healthz|$stock_pid|$stock_base/healthz"
  "stock-whoami|$stock_pid|$stock_base/whoami|-H|Cookie: $stock_cookie"
)
for round in $(seq 1 "$ROUNDS"); do
  for cell in "${cells[@]}"; do
    IFS='|' read -r -a args <<<"$cell"
    result=$(measure "${args[@]}")
    echo "$result" >>"$work/runs-${args[0]}"
    echo "round $round ${args[0]}: $result" >&2
  done
done
# Median of each column over the rounds: "rps p50 p99 cmds cpu".
medians() { # cell name
  local column out=()
  for column in 1 2 3 4 5; do
    out+=("$(awk -v c="$column" '{ print $c }' "$work/runs-$1" | sort -g |
      awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')")
  done
  echo "${out[*]}"
}
read -r h_rps h_p50 h_p99 h_cmds h_cpu < <(medians healthz)
read -r w_rps w_p50 w_p99 w_cmds w_cpu < <(medians whoami)
read -r i_rps i_p50 i_p99 i_cmds i_cpu < <(medians incr)
read -r p_rps p_p50 p_p99 p_cmds p_cpu < <(medians whoami-persistent)
read -r sh_rps sh_p50 sh_p99 sh_cmds sh_cpu < <(medians stock-healthz)
read -r sw_rps sw_p50 sw_p99 sw_cmds sw_cpu < <(medians stock-whoami)

# The session runs really went through the session: same user.
for check in "$base $cookie" "$persistent_base $cookie" "$stock_base $stock_cookie"; do
  read -r url c <<<"$check"
  whoami=$(curl -s -H "Cookie: $c" "$url/whoami")
  [[ "$whoami" == *'"user":"bench"'* ]] || { echo "session lost during the run at $url: $whoami" >&2; exit 1; }
done

echo "1 node ($WORKERS workers), 1 redis-server, wrk -t$THREADS -c$CONNECTIONS -d$DURATION, median of $ROUNDS," \
  "$(nproc) cores, load average before: $load_before, $(date -u '+%Y-%m-%d %H:%M UTC')"
row() { printf '%-44s %9s %8s %8s %14s %18s\n' "$@"; }
row request rps p50_ms p99_ms redis_cmds/req node+redis_cpu_us
row 'cluster-app GET /healthz (no session)' "$h_rps" "$h_p50" "$h_p99" "$h_cmds" "$h_cpu"
row 'cluster-app GET /whoami (session read)' "$w_rps" "$w_p50" "$w_p99" "$w_cmds" "$w_cpu"
row 'cluster-app POST /counter/incr (write)' "$i_rps" "$i_p50" "$i_p99" "$i_cmds" "$i_cpu"
row 'cluster-app GET /whoami, persistent cookie' "$p_rps" "$p_p50" "$p_p99" "$p_cmds" "$p_cpu"
row 'stock GET /healthz (no session)' "$sh_rps" "$sh_p50" "$sh_p99" "$sh_cmds" "$sh_cpu"
row 'stock GET /whoami (session read)' "$sw_rps" "$sw_p50" "$sw_p99" "$sw_cmds" "$sw_cpu"
awk -v r="$sw_rps" -v h="$sh_rps" 'BEGIN {
  printf "stock actix-session session-read / no-session ratio: %.2f\n", r / h
}'
awk -v r="$w_rps" -v h="$h_rps" -v t="$TARGET_RATIO" 'BEGIN {
  ratio = r / h
  verdict = (ratio >= t) ? "met" : "NOT met"
  printf "cluster-app session-read / no-session ratio: %.2f (target >= %.1f: %s)\n", ratio, t, verdict
}'
