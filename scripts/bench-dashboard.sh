#!/usr/bin/env bash
# What an open dashboard costs the load balancer: cluster-lb (release) in front of two tiny nginx
# backends, wrk at c=50, in rounds of a "closed" run (no dashboard) and an "open" one (STREAMS
# clients reading /dashboard/events, as that many open dashboards do; a real page also sends
# its "my session" calls, 4 requests a second, which are not part of this figure). Prints the
# median rps and the balancer's CPU time per request of each, and the difference. First, with
# no load at all, the balancer's CPU time over IDLE_SECONDS with 20 streams open and without:
# the cost of one snapshot, free of the noise a busy machine adds to the rps figures.
#
# Run it alone on the machine: flock /tmp/bench.lock scripts/bench-dashboard.sh
# Knobs: DURATION (s per run, default 6), RUNS (rounds, default 5), STREAMS (default 1),
#        IDLE_SECONDS (default 10), BASE_PORT (default 19200), LB_WORKERS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-6}
RUNS=${RUNS:-5}
STREAMS=${STREAMS:-1}
IDLE_SECONDS=${IDLE_SECONDS:-10}
BASE_PORT=${BASE_PORT:-19200}
LB_WORKERS=${LB_WORKERS:-2}
TOKEN=bench-dashboard

for tool in wrk:wrk nginx:nginx curl:curl; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1 && ! [ -x "/usr/sbin/${tool%%:*}" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool#*:}" >/dev/null
  fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

echo "building cluster-lb (release)..." >&2
cargo build --release -q -p cluster-lb --bin cluster-lb
LB_BIN="${CARGO_TARGET_DIR:-target}/release/cluster-lb"

WORK_NAME=bench-dashboard
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"

start_backend() { # start_backend <name> <port>
  sed -e "s|@DIR@|$WORK|g" -e "s|@PORT@|$2|g" -e "s|@NAME@|$1|g" \
    deploy/bench/backend-nginx.conf > "$WORK/$1.conf"
  mkdir -p "$WORK/tmp-$1"
  "$NGINX" -p "$WORK" -e "$WORK/$1.startup.log" -c "$WORK/$1.conf" &
  PIDS[$1]=$!
  wait_port "$2"
}

CLK_TCK=$(getconf CLK_TCK)
lb_cpu_ticks() { awk '{print $14 + $15}' "/proc/${PIDS[lb]}/stat"; }

run_wrk() { # -> "rps cpu_us_per_request"
  local before after out rps requests
  before=$(lb_cpu_ticks)
  out=$(wrk -t1 -c50 -d"${DURATION}s" --timeout 5s "http://127.0.0.1:$PROXY_PORT/")
  after=$(lb_cpu_ticks)
  rps=$(awk '/^Requests\/sec:/ {printf "%d", $2}' <<<"$out")
  requests=$(awk '/ requests in / {print $1}' <<<"$out")
  awk -v r="$rps" -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$requests" \
    'BEGIN { printf "%s %.2f\n", r, t / hz * 1e6 / n }'
}

open_dashboards() { # open_dashboards <streams> <seconds at most>
  for i in $(seq 1 "$1"); do
    curl -sN --max-time "$2" \
      "http://127.0.0.1:$ADMIN_PORT/dashboard/events?token=$TOKEN" > "$WORK/events-$i" &
    PIDS[stream$i]=$!
  done
  sleep 0.5
}

close_dashboards() { # close_dashboards <streams>
  for i in $(seq 1 "$1"); do
    kill "${PIDS[stream$i]}" 2>/dev/null || true
    wait "${PIDS[stream$i]}" 2>/dev/null || true
    unset "PIDS[stream$i]"
  done
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

start_backend b1 "$B1_PORT"
start_backend b2 "$B2_PORT"
RUST_LOG=warn LB_ADMIN_TOKEN=$TOKEN "$LB_BIN" --listen "127.0.0.1:$PROXY_PORT" \
  --admin-listen "127.0.0.1:$ADMIN_PORT" --workers "$LB_WORKERS" \
  --backend "127.0.0.1:$B1_PORT" --backend "127.0.0.1:$B2_PORT" 2>"$WORK/cluster-lb.log" &
PIDS[lb]=$!
wait_port "$PROXY_PORT"
sleep 1 # health checks settle

idle_ticks() { # idle_ticks <streams>: the balancer's CPU ticks over IDLE_SECONDS, no load
  local before after
  [ "$1" -gt 0 ] && open_dashboards "$1" $((IDLE_SECONDS + 5))
  before=$(lb_cpu_ticks); sleep "$IDLE_SECONDS"; after=$(lb_cpu_ticks)
  [ "$1" -gt 0 ] && close_dashboards "$1"
  echo $((after - before))
}
idle_without=$(idle_ticks 0)
idle_with=$(idle_ticks 20)
snapshots=$(cat "$WORK"/events-* | grep -c '^data: ')
per_snapshot=$(awk -v w="$idle_with" -v wo="$idle_without" -v hz="$CLK_TCK" -v n="$snapshots" \
  'BEGIN { printf "%.1f", (w - wo) / hz * 1e6 / n }')
echo "idle, ${IDLE_SECONDS}s: $idle_without ticks without streams, $idle_with with 20 ($snapshots snapshots sent): $per_snapshot us per snapshot" >&2

wrk -t1 -c8 -d1s "http://127.0.0.1:$PROXY_PORT/" >/dev/null # warm-up

run_closed() {
  local result
  result=$(run_wrk); echo "$result" >> "$WORK/closed"
  echo "round $round closed: $result" >&2
}
run_open() {
  local result events
  open_dashboards "$STREAMS" $((DURATION + 5))
  result=$(run_wrk); echo "$result" >> "$WORK/open"
  close_dashboards "$STREAMS"
  events=$(grep -c '^data: ' "$WORK/events-1" || true)
  echo "round $round open ($STREAMS stream(s), $events snapshots on the first): $result" >&2
  [ "$events" -gt 0 ] || { echo "the dashboard stream sent nothing" >&2; exit 1; }
}

# Odd rounds closed first, even rounds open first: whatever drifts during a round (the page
# cache, the CPU's clock, the other runs' sockets in TIME_WAIT) falls on both sides alike.
for round in $(seq 1 "$RUNS"); do
  if [ $((round % 2)) -eq 1 ]; then
    run_closed; run_open
  else
    run_open; run_closed
  fi
done

closed_rps=$(awk '{print $1}' "$WORK/closed" | median)
open_rps=$(awk '{print $1}' "$WORK/open" | median)
closed_cpu=$(awk '{print $2}' "$WORK/closed" | median)
open_cpu=$(awk '{print $2}' "$WORK/open" | median)
echo
echo "cluster-lb, wrk c=50, ${DURATION}s x $RUNS rounds, $LB_WORKERS workers, $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '| dashboard | rps (median) | LB CPU us/request (median) |\n|---|---|---|\n'
printf '| closed | %s | %s |\n' "$closed_rps" "$closed_cpu"
printf '| open (%s stream(s)) | %s | %s |\n' "$STREAMS" "$open_rps" "$open_cpu"
awk -v a="$closed_rps" -v b="$open_rps" -v c="$closed_cpu" -v d="$open_cpu" \
  'BEGIN { printf "rps with the dashboard open: %+.1f %%; CPU per request: %+.1f %%\n", (b - a) / a * 100, (d - c) / c * 100 }'
echo "idle balancer: $per_snapshot us of CPU per snapshot sent (20 streams, ${IDLE_SECONDS}s, CPU clock ticks of $((1000 / CLK_TCK)) ms)"
