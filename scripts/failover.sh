#!/usr/bin/env bash
# Failover, shown on the running compose cluster (docker-compose.yml):
#   1. log in through the load balancer;
#   2. read the same session back on every node directly: the session lives in Redis;
#   3. put a bounded load of GET /whoami on the load balancer;
#   4. SIGKILL the node that served last, in the middle of the load;
#   5. check that no GET failed and the session is still logged in;
#   6. start the node again and check that it serves again.
# Narrates each step and exits non-zero when a check fails. Talks only to ports published
# on 127.0.0.1. Run it from anywhere, after `docker compose up` (or docker-compose up).
#
# `scripts/failover.sh --redis` kills the Redis primary instead of a node, on the cluster
# started with docker-compose.sentinel.yml: it runs scripts/redis-failover.sh.
#
# Settings (environment): LB_PORT, LB_ADMIN_PORT, NODE1_PORT..NODE3_PORT (as in
# docker-compose.yml), LOAD_SECONDS (8), LOAD_CONNECTIONS (4), KILL_AFTER_SECONDS (3),
# REJOIN_SECONDS (10: how long the restarted node may take to get traffic again).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  --redis) exec scripts/redis-failover.sh ;;
  "") ;;
  *) echo "usage: $0 [--redis]" >&2; exit 2 ;;
esac

LB="http://127.0.0.1:${LB_PORT:-8080}"
LB_ADMIN="http://127.0.0.1:${LB_ADMIN_PORT:-8081}"
declare -A NODE_URL=(
  [node1]="http://127.0.0.1:${NODE1_PORT:-8001}"
  [node2]="http://127.0.0.1:${NODE2_PORT:-8002}"
  [node3]="http://127.0.0.1:${NODE3_PORT:-8003}"
)
NODES=(node1 node2 node3)
USER_NAME=alice
LOAD_SECONDS=${LOAD_SECONDS:-8}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-4}
KILL_AFTER_SECONDS=${KILL_AFTER_SECONDS:-3}
REJOIN_SECONDS=${REJOIN_SECONDS:-10}
# Each connection waits this long between requests: at most 4 x 500 = 2000 requests/s.
LOAD_DELAY_MS=2
LOAD_MAX_REQUESTS_PER_THREAD=10000

# shellcheck source=scripts/failover-common.sh
. scripts/failover-common.sh

workdir=$(mktemp -d)
load_pid=""
cleanup() {
  [ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

# http METHOD URL [curl args...]: the body goes to $workdir/body, prints "STATUS SERVED_BY".
http() {
  local method=$1 url=$2; shift 2
  local status
  status=$(curl -sS -m 5 -X "$method" -o "$workdir/body" -D "$workdir/headers" \
    -w '%{http_code}' "$@" "$url") || status=000
  printf '%s %s\n' "$status" "$(served_by)"
}
served_by() {
  tr -d '\r' <"$workdir/headers" 2>/dev/null | awk -F': ' 'tolower($1) == "x-served-by" { print $2 }'
}
body() { cat "$workdir/body"; }

container_of() { "${compose[@]}" ps -q "$1"; }
health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1"; }

step "Wait until the load balancer reports all three nodes up ($LB_ADMIN/backends)"
for _ in $(seq 60); do
  up=$(curl -sS -m 2 "$LB_ADMIN/backends" 2>/dev/null | grep -o '"state":"up"' | wc -l) || up=0
  [ "$up" -ge 3 ] && break
  sleep 0.5
done
[ "${up:-0}" -ge 3 ] || fail "only ${up:-0} of 3 backends up after 30 s (is the cluster running? docker compose ps)"
ok "3 backends up"

step "Log in as $USER_NAME through the load balancer (POST $LB/login)"
read -r status node < <(http POST "$LB/login" -H 'content-type: application/json' \
  -d "{\"user\":\"$USER_NAME\"}")
[ "$status" = 200 ] || fail "login answered $status: $(body)"
cookie=$(tr -d '\r' <"$workdir/headers" | awk 'tolower($1) == "set-cookie:" { sub(/;.*/, "", $2); print $2; exit }')
[ -n "$cookie" ] || fail "login set no cookie"
say "served by $node: $(body)"
ok "logged in; the browser now holds cookie ${cookie%%=*} (the session itself lives in Redis)"

step "Read the session back on every node directly (GET /whoami with the cookie)"
for n in "${NODES[@]}"; do
  read -r status node < <(http GET "${NODE_URL[$n]}/whoami" -H "Cookie: $cookie")
  say "${NODE_URL[$n]} -> $status from $node: $(body)"
  [ "$status" = 200 ] || fail "$n answered $status"
  grep -q "\"user\":\"$USER_NAME\"" "$workdir/body" || fail "$n does not see $USER_NAME logged in"
done
ok "all three nodes read the same session"

step "Ask the load balancer who serves (GET $LB/whoami, 6 times)"
victim=""
for _ in $(seq 6); do
  read -r status node < <(http GET "$LB/whoami" -H "Cookie: $cookie")
  say "$status from $node"
  [ "$status" = 200 ] || fail "GET /whoami through the load balancer answered $status"
  victim=$node
done
victim_container=$(container_of "$victim")
[ -n "$victim_container" ] || fail "no container for service $victim (is NODE_ID the service name?)"
ok "$victim served last: it is the one we will kill (container ${victim_container:0:12})"

step "Load: GET /whoami through the load balancer for ${LOAD_SECONDS} s, $LOAD_CONNECTIONS connections"
FAILOVER_COOKIE=$cookie FAILOVER_USER=$USER_NAME FAILOVER_DELAY_MS=$LOAD_DELAY_MS \
FAILOVER_MAX_REQUESTS_PER_THREAD=$LOAD_MAX_REQUESTS_PER_THREAD \
  wrk -t 2 -c "$LOAD_CONNECTIONS" -d "${LOAD_SECONDS}s" --timeout 3s \
    -s scripts/failover-load.lua "$LB/whoami" >"$workdir/wrk.out" 2>&1 &
load_pid=$!
say "wrk running (pid $load_pid)"
sleep "$KILL_AFTER_SECONDS"

step "SIGKILL $victim under load (docker kill -s SIGKILL)"
docker kill -s SIGKILL "$victim_container" >/dev/null
say "$victim killed at $(date -u +%T) UTC, $KILL_AFTER_SECONDS s into the load; no drain, no goodbye"

step "Wait for the load to finish and count failed GETs"
wait "$load_pid" || fail "wrk failed: $(cat "$workdir/wrk.out")"
load_pid=""
result=$(grep '^RESULT ' "$workdir/wrk.out") || fail "wrk printed no result: $(cat "$workdir/wrk.out")"
say "${result#RESULT }"
grep '^SERVED ' "$workdir/wrk.out" | sort | while read -r _ n count; do say "served by $n: $count"; done
value() { sed -E "s/.* $1=([0-9.]+).*/\1/" <<<"$result"; }
requests=$(value requests)
failed=$(( $(value not_ok) + $(value logged_out) + $(value connect_errors) + $(value read_errors) \
  + $(value write_errors) + $(value timeouts) ))
[ "$requests" -gt 0 ] || fail "no request completed"
[ "$failed" -eq 0 ] || fail "$failed of $requests GETs failed or showed no logged-in user"
ok "$requests GETs, 0 failed, every one showed $USER_NAME logged in"

step "The session after the failover (GET $LB/whoami)"
read -r status node < <(http GET "$LB/whoami" -H "Cookie: $cookie")
say "$status from $node: $(body)"
if [ "$status" != 200 ] || ! grep -q "\"user\":\"$USER_NAME\"" "$workdir/body"; then
  fail "the session is gone after the failover"
fi
[ "$node" != "$victim" ] || fail "a killed node cannot have answered"
ok "still logged in, served by $node"
say "the load balancer's view: $(curl -sS -m 2 "$LB_ADMIN/backends" || echo unavailable)"
say "its retry counters since it started: $( (curl -sS -m 2 "$LB_ADMIN/metrics" |
  grep -E '^lb_(retries|retries_refused|upstream_errors)_total' | tr '\n' ' ') || echo unavailable)"

step "Start $victim again (docker start) and wait until it is healthy"
docker start "$victim_container" >/dev/null
for _ in $(seq 60); do
  [ "$(health_of "$victim_container")" = healthy ] && break
  sleep 0.5
done
[ "$(health_of "$victim_container")" = healthy ] ||
  fail "$victim is $(health_of "$victim_container") 30 s after docker start"
read -r status node < <(http GET "${NODE_URL[$victim]}/whoami" -H "Cookie: $cookie")
say "${NODE_URL[$victim]} -> $status from $node: $(body)"
if [ "$status" != 200 ] || ! grep -q "\"user\":\"$USER_NAME\"" "$workdir/body"; then
  fail "the restarted $victim does not see the session"
fi
ok "$victim is healthy and reads the session: nothing was stored on the node itself"

step "Wait until the load balancer sends traffic to $victim again (at most ${REJOIN_SECONDS} s)"
say "one GET every 0.1 s: the load balancer's health check must see $victim ready twice; then"
say "it starts $victim with a fresh latency estimate, so traffic follows within a second or so"
healthy_at=$(date +%s%N)
elapsed_ms() { echo $(( ($(date +%s%N) - healthy_at) / 1000000 )); }
requests_after=0
node=""
while [ "$(elapsed_ms)" -lt $((REJOIN_SECONDS * 1000)) ]; do
  read -r status node < <(http GET "$LB/whoami" -H "Cookie: $cookie")
  requests_after=$((requests_after + 1))
  [ "$status" = 200 ] || fail "GET /whoami through the load balancer answered $status"
  [ "$node" = "$victim" ] && break
  sleep 0.1
done
[ "$node" = "$victim" ] || fail "$victim got none of $requests_after requests in the $REJOIN_SECONDS s after its restart"
ok "$victim served request $requests_after through the load balancer, $(elapsed_ms) ms after it was healthy"
say "the load balancer's view: $(curl -sS -m 2 "$LB_ADMIN/backends" || echo unavailable)"

printf '\nPASS: %s was killed under load; %s GETs, none failed; the session survived; %s serves again.\n' \
  "$victim" "$requests" "$victim"
