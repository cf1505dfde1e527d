#!/usr/bin/env bash
# Load balancer benchmark: cluster-lb next to nginx and HAProxy in front of the same two tiny
# nginx backends, all on 127.0.0.1, with crates/cluster-lb/examples/plain_hyper_proxy.rs
# ("plain-hyper": hyper-util's pooled client, round-robin, nothing else) as the floor that
# shows what hyper itself costs.
#
#  1. Throughput/latency: wrk keep-alive at c=8 and c=50, median of RUNS runs per cell; rps,
#     p50, p99, the proxy's CPU time (user + system) per request, peak RSS of the proxy's
#     processes (workers summed), and the ratio to nginx. On 2 cores shared with wrk and the
#     backends, CPU per request is what decides rps; it is also the steadier of the two figures.
#  2. Failover: wrk at c=50 while one backend is SIGKILLed; failed requests per proxy
#     (non-2xx responses + socket errors, as wrk reports them).
#
# Run it alone on the machine: flock /tmp/bench.lock scripts/bench-lb.sh
# Knobs: DURATION (s per run, default 6), RUNS (default 3), FAILOVER_DURATION (default 8, the
#        kill comes after 3 s), BASE_PORT (default 19100),
#        WRK_THREADS (default 1), LB_WORKERS (cluster-lb runtime threads, default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6}
FAILOVER_DURATION=${FAILOVER_DURATION:-8}
RUNS=${RUNS:-3}
BASE_PORT=${BASE_PORT:-19100}
WRK_THREADS=${WRK_THREADS:-1}
LB_WORKERS=${LB_WORKERS:-2}
CONNECTIONS=(8 50)

apt_updated=no
need() { # need <command> <debian package>
  command -v "$1" >/dev/null 2>&1 && return
  if [ "$apt_updated" = no ]; then apt-get update -qq; apt_updated=yes; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
need wrk wrk
need nginx nginx
need haproxy haproxy
# Debian's packages put the daemons in /usr/sbin, which is not always on a plain user's PATH.
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

echo "building cluster-lb and plain_hyper_proxy (release)..." >&2
cargo build --release -q -p cluster-lb --bin cluster-lb --example plain_hyper_proxy
LB_BIN="${CARGO_TARGET_DIR:-target}/release/cluster-lb"
PLAIN_BIN="${CARGO_TARGET_DIR:-target}/release/examples/plain_hyper_proxy"

WORK_NAME=bench-lb
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"

render() { # render <template> <output> KEY=VALUE...
  local template=$1 output=$2; shift 2
  local expr=(-e "s|@DIR@|$WORK|g")
  for pair in "$@"; do expr+=(-e "s|@${pair%%=*}@|${pair#*=}|g"); done
  sed "${expr[@]}" "$template" > "$output"
}

start_backend() { # start_backend <name> <port>
  render deploy/bench/backend-nginx.conf "$WORK/$1.conf" "PORT=$2" "NAME=$1"
  mkdir -p "$WORK/tmp-$1"
  "$NGINX" -p "$WORK" -e "$WORK/$1.startup.log" -c "$WORK/$1.conf" &
  PIDS[$1]=$!
  wait_port "$2"
}

stop() { # stop <name>: SIGTERM, then SIGKILL after 3 s
  local pid=${PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]"
}

start_proxy() { # start_proxy <nginx|haproxy|cluster-lb|plain-hyper>
  local backends="127.0.0.1:$B1_PORT 127.0.0.1:$B2_PORT"
  case $1 in
    nginx)
      render deploy/bench/nginx-lb.conf "$WORK/nginx-lb.conf" "PORT=$PROXY_PORT" \
        "BACKEND1=127.0.0.1:$B1_PORT" "BACKEND2=127.0.0.1:$B2_PORT"
      mkdir -p "$WORK/tmp-nginx-lb" "$WORK/tmp-nginx-lb-proxy"
      "$NGINX" -p "$WORK" -e "$WORK/nginx-lb.startup.log" -c "$WORK/nginx-lb.conf" & ;;
    haproxy)
      render deploy/bench/haproxy.cfg "$WORK/haproxy.cfg" "PORT=$PROXY_PORT" \
        "BACKEND1=127.0.0.1:$B1_PORT" "BACKEND2=127.0.0.1:$B2_PORT"
      "$HAPROXY" -db -q -f "$WORK/haproxy.cfg" & ;;
    cluster-lb)
      RUST_LOG=warn "$LB_BIN" --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
        --workers "$LB_WORKERS" --backend "127.0.0.1:$B1_PORT" --backend "127.0.0.1:$B2_PORT" \
        2>"$WORK/cluster-lb.log" & ;;
    plain-hyper)
      "$PLAIN_BIN" "127.0.0.1:$PROXY_PORT" "127.0.0.1:$B1_PORT" "127.0.0.1:$B2_PORT" \
        2>"$WORK/plain-hyper.log" & ;;
  esac
  PIDS[proxy]=$!
  wait_port "$PROXY_PORT"
  sleep 1 # let health checks settle
}

# The proxy's process and its children (nginx's workers).
proxy_pids() { echo "${PIDS[proxy]}" $(pgrep -P "${PIDS[proxy]}" || true); }

# Sum over the proxy's processes of one number read from /proc/<pid>/<file> by an awk program.
proxy_sum() { # proxy_sum <file> <awk program>
  local total=0 value pid
  for pid in $(proxy_pids); do
    value=$(awk "$2" "/proc/$pid/$1" 2>/dev/null || echo 0)
    total=$((total + ${value:-0}))
  done
  echo "$total"
}

# Peak RSS (VmHWM) of the proxy's processes, summed, in MB.
proxy_rss_mb() {
  awk -v kb="$(proxy_sum status '/^VmHWM:/ {print $2}')" 'BEGIN { printf "%.1f", kb / 1024 }'
}

# wrk latency figures like "1.23ms" / "850.00us" / "1.01s" -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'
}

# CPU time (user + system, in clock ticks) used so far by the proxy's processes.
CLK_TCK=$(getconf CLK_TCK)
proxy_cpu_ticks() { proxy_sum stat '{print $14 + $15}'; }

run_wrk() { # run_wrk <connections> -> "rps p50_ms p99_ms proxy_cpu_us_per_request"
  local out before after
  before=$(proxy_cpu_ticks)
  out=$(wrk -t"$WRK_THREADS" -c"$1" -d"${DURATION}s" --timeout 5s --latency "http://127.0.0.1:$PROXY_PORT/")
  after=$(proxy_cpu_ticks)
  local rps p50 p99 requests cpu
  rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  requests=$(awk '/ requests in / {print $1}' <<<"$out")
  cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="${requests:-0}" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
  echo "$rps $p50 $p99 $cpu"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

PROXIES=(nginx haproxy cluster-lb plain-hyper)
declare -A RPS P50 P99 RSS CPU
start_backend b1 "$B1_PORT"
start_backend b2 "$B2_PORT"
# Rounds interleave the proxies, so background noise on a shared machine hits them alike.
for round in $(seq 1 "$RUNS"); do
  for proxy in "${PROXIES[@]}"; do
    start_proxy "$proxy"
    wrk -t1 -c8 -d1s "http://127.0.0.1:$PROXY_PORT/" >/dev/null # warm-up
    for c in "${CONNECTIONS[@]}"; do
      result=$(run_wrk "$c")
      echo "$result" >> "$WORK/runs-$proxy-$c"
      echo "round $round $proxy c=$c: $result" >&2
    done
    rss=$(proxy_rss_mb)
    if awk -v a="$rss" -v b="${RSS[$proxy]:-0}" 'BEGIN { exit !(a > b) }'; then RSS[$proxy]=$rss; fi
    stop proxy
  done
done
for proxy in "${PROXIES[@]}"; do
  for c in "${CONNECTIONS[@]}"; do
    RPS[$proxy,$c]=$(awk '{print $1}' "$WORK/runs-$proxy-$c" | median)
    P50[$proxy,$c]=$(awk '{print $2}' "$WORK/runs-$proxy-$c" | median)
    P99[$proxy,$c]=$(awk '{print $3}' "$WORK/runs-$proxy-$c" | median)
    CPU[$proxy,$c]=$(awk '{print $4}' "$WORK/runs-$proxy-$c" | median)
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "## Throughput and latency (wrk -t$WRK_THREADS, keep-alive, ${DURATION}s, median of $RUNS)"
echo
echo "| proxy | c | rps | p50 ms | p99 ms | proxy CPU us/request | peak RSS MB (max over rounds) | rps / nginx | p99 / nginx |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in "${CONNECTIONS[@]}"; do
  for proxy in "${PROXIES[@]}"; do
    echo "| $proxy | $c | ${RPS[$proxy,$c]} | ${P50[$proxy,$c]} | ${P99[$proxy,$c]} | ${CPU[$proxy,$c]} | ${RSS[$proxy]} |" \
      "$(ratio "${RPS[$proxy,$c]}" "${RPS[nginx,$c]}") | $(ratio "${P99[$proxy,$c]}" "${P99[nginx,$c]}") |"
  done
done

stop b1; stop b2

echo
echo "## Failover: SIGKILL one of two backends under load (wrk -c50, GET, ${FAILOVER_DURATION}s, kill at 3 s)"
echo
echo "| proxy | requests | failed (non-2xx + socket errors) |"
echo "|---|---|---|"
for proxy in "${PROXIES[@]}"; do
  start_backend b1 "$B1_PORT"
  start_backend b2 "$B2_PORT"
  start_proxy "$proxy"
  wrk -t"$WRK_THREADS" -c50 -d"${FAILOVER_DURATION}s" --timeout 5s "http://127.0.0.1:$PROXY_PORT/" > "$WORK/failover.out" &
  wrk_pid=$!
  sleep 3
  kill -9 "${PIDS[b2]}"; wait "${PIDS[b2]}" 2>/dev/null || true; unset "PIDS[b2]"
  wait "$wrk_pid"
  total=$(awk '/requests in/ {print $1}' "$WORK/failover.out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$WORK/failover.out")
  socket=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$WORK/failover.out")
  echo "| $proxy | $total | $(( ${non2xx:-0} + ${socket:-0} )) |"
  stop proxy; stop b1
done
echo
echo "Machine: $(nproc) cores, $(uname -sr); $(date -u '+%Y-%m-%d %H:%M UTC')"
