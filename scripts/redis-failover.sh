#!/usr/bin/env bash
# The Redis primary killed under load, on the compose cluster with Sentinel
# (docker-compose.yml + docker-compose.sentinel.yml), with the accounting of what it cost:
#   1. log in through the load balancer;
#   2. put a bounded load of atomic increments on the load balancer, counting each one
#      acknowledged (scripts/redis-failover-load.lua);
#   3. SIGKILL the container of the current primary, in the middle of the load;
#   4. print how long Sentinel took to name a new primary, how long clients saw failures
#      (they must be served again within 1 s of the new primary's naming), which statuses
#      failed (they must all be 503), whether the session survived, and how many acknowledged
#      increments the final counter lacks (it must be none);
#   5. start the old primary again and print when it is a replica in sync with the new one.
# Exits non-zero when a check fails. Talks only to ports published on 127.0.0.1 and, through
# `docker exec`, to the Redis containers. Run by `scripts/failover.sh --redis`, after
#   docker compose -f docker-compose.yml -f docker-compose.sentinel.yml up
# (or docker-compose). Run it as often as you like on the same cluster: it kills whichever
# instance is the primary at the time.
#
# Settings (environment): LB_PORT, LB_ADMIN_PORT (as in docker-compose.yml), COMPOSE_FILE
# (default docker-compose.yml:docker-compose.sentinel.yml), LOAD_SECONDS (15: long enough for
# a failover whose first election is a split vote, ~9 s), LOAD_CONNECTIONS (4),
# KILL_AFTER_SECONDS (3), SYNC_SECONDS (60: how long the old primary may take to be a replica
# in sync again).
set -euo pipefail
cd "$(dirname "$0")/.."

LB="http://127.0.0.1:${LB_PORT:-8080}"
LB_ADMIN="http://127.0.0.1:${LB_ADMIN_PORT:-8081}"
export COMPOSE_FILE=${COMPOSE_FILE:-docker-compose.yml:docker-compose.sentinel.yml}
USER_NAME=alice
MASTER_NAME=cluster-lab
REDIS_SERVICES=(redis redis2 redis3)
SENTINEL_SERVICES=(sentinel1 sentinel2 sentinel3)
LOAD_SECONDS=${LOAD_SECONDS:-15}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-4}
KILL_AFTER_SECONDS=${KILL_AFTER_SECONDS:-3}
SYNC_SECONDS=${SYNC_SECONDS:-60}
# Each connection waits this long between requests: at most 4 x 200 = 800 increments/s.
LOAD_DELAY_MS=5
LOAD_MAX_REQUESTS_PER_THREAD=10000
# How long Sentinel may take to name a new primary before the run fails.
NEW_PRIMARY_SECONDS=30
# The nodes' promise: every connection is served again within 1 s of a sentinel naming the
# new primary (they ask the sentinels every 100 ms while they have none).
SERVED_AFTER_NAMED_MS=1000

# shellcheck source=scripts/failover-common.sh
. scripts/failover-common.sh

workdir=$(mktemp -d)
load_pid=""
watch_pid=""
cleanup() {
  [ -z "$load_pid" ] || kill "$load_pid" 2>/dev/null || true
  [ -z "$watch_pid" ] || kill "$watch_pid" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# http METHOD URL [curl args...]: the body goes to $workdir/body, prints "STATUS SERVED_BY".
http() {
  local method=$1 url=$2; shift 2
  local status
  status=$(curl -sS -m 5 -X "$method" -o "$workdir/body" -D "$workdir/headers" \
    -w '%{http_code}' "$@" "$url") || status=000
  printf '%s %s\n' "$status" "$(tr -d '\r' <"$workdir/headers" 2>/dev/null |
    awk -F': ' 'tolower($1) == "x-served-by" { print $2 }')"
}
body() { cat "$workdir/body"; }
counter_in() { sed -E 's/.*"counter":([0-9]+).*/\1/' "$workdir/body"; }

container_of() { "${compose[@]}" ps -q "$1"; }
address_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }

# The address the first sentinel that answers names as the primary ("" when none answers).
named_primary() {
  local sentinel answer
  for sentinel in "${sentinel_containers[@]}"; do
    answer=$(docker exec "$sentinel" redis-cli -p 26379 --raw \
      SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1) || continue
    [ -n "$answer" ] && { echo "$answer"; return; }
  done
  echo ""
}

# INFO replication of a Redis container, as key:value lines.
replication_of() { docker exec "$1" redis-cli --raw INFO replication 2>/dev/null | tr -d '\r'; }
field() { awk -F: -v key="$1" '$1 == key { print $2 }'; }

step "Find the Redis instances and the sentinels (compose files: $COMPOSE_FILE)"
declare -A redis_container service_at
for service in "${REDIS_SERVICES[@]}"; do
  redis_container[$service]=$(container_of "$service")
  [ -n "${redis_container[$service]}" ] ||
    fail "no container for $service: is the cluster up with docker-compose.sentinel.yml?"
done
sentinel_containers=()
for service in "${SENTINEL_SERVICES[@]}"; do
  container=$(container_of "$service")
  [ -n "$container" ] || fail "no container for $service: is the cluster up with docker-compose.sentinel.yml?"
  sentinel_containers+=("$container")
done
# A container that is stopped has no address: start any that a previous run left stopped.
for service in "${REDIS_SERVICES[@]}"; do
  if [ "$(docker inspect -f '{{.State.Running}}' "${redis_container[$service]}")" != true ]; then
    say "$service is stopped: docker start"
    docker start "${redis_container[$service]}" >/dev/null
  fi
done
for _ in $(seq 60); do
  all_addressed=yes
  for service in "${REDIS_SERVICES[@]}"; do
    address=$(address_of "${redis_container[$service]}")
    [ -n "$address" ] || { all_addressed=no; continue; }
    service_at[$address]=$service
  done
  [ "$all_addressed" = yes ] && break
  sleep 0.5
done
[ "$all_addressed" = yes ] || fail "a Redis container has no address"
for address in "${!service_at[@]}"; do say "${service_at[$address]} at $address"; done

step "Wait until the sentinels name a primary with two replicas in sync, and the load balancer has 3 nodes up"
primary=""
ready=no
for _ in $(seq 120); do
  primary=$(named_primary)
  if [ -n "$primary" ] && [ -n "${service_at[$primary]:-}" ]; then
    info=$(replication_of "${redis_container[${service_at[$primary]}]}")
    online=$(grep -c '^slave[0-9]*:.*state=online' <<<"$info" || true)
    up=$(curl -sS -m 2 "$LB_ADMIN/backends" 2>/dev/null | grep -o '"state":"up"' | wc -l) || up=0
    if [ "$(field role <<<"$info")" = master ] && [ "$online" -ge 2 ] && [ "$up" -ge 3 ]; then
      ready=yes
      break
    fi
  fi
  sleep 0.5
done
[ "$ready" = yes ] ||
  fail "after 60 s: primary '${primary:-none}', replicas online ${online:-0}, backends up ${up:-0}"
old_primary=$primary
old_service=${service_at[$primary]}
old_container=${redis_container[$old_service]}
ok "the sentinels name $old_service ($old_primary) the primary; 2 replicas online; 3 nodes up"

step "Log in as $USER_NAME through the load balancer (POST $LB/login)"
read -r status node < <(http POST "$LB/login" -H 'content-type: application/json' \
  -d "{\"user\":\"$USER_NAME\"}")
[ "$status" = 200 ] || fail "login answered $status: $(body)"
cookie=$(tr -d '\r' <"$workdir/headers" | awk 'tolower($1) == "set-cookie:" { sub(/;.*/, "", $2); print $2; exit }')
[ -n "$cookie" ] || fail "login set no cookie"
read -r status node < <(http GET "$LB/counter?mode=atomic" -H "Cookie: $cookie")
[ "$status" = 200 ] || fail "GET /counter?mode=atomic answered $status: $(body)"
counter_before=$(counter_in)
ok "logged in (served by $node); the session's atomic counter is $counter_before"

step "Load: POST /counter/incr?mode=atomic through the load balancer for ${LOAD_SECONDS} s, $LOAD_CONNECTIONS connections"
REDIS_LOAD_COOKIE=$cookie REDIS_LOAD_DELAY_MS=$LOAD_DELAY_MS \
REDIS_LOAD_MAX_REQUESTS_PER_THREAD=$LOAD_MAX_REQUESTS_PER_THREAD \
  wrk -t 2 -c "$LOAD_CONNECTIONS" -d "${LOAD_SECONDS}s" --timeout 3s \
    -s scripts/redis-failover-load.lua "$LB/counter/incr?mode=atomic" >"$workdir/wrk.out" 2>&1 &
load_pid=$!
say "wrk running (pid $load_pid); each 200 is an increment Redis acknowledged"
sleep "$KILL_AFTER_SECONDS"

step "SIGKILL the Redis primary, $old_service, under load (docker kill -s SIGKILL)"
# Watched from inside a sentinel's container: one `docker exec`, asking all three sentinels
# every 100 ms (the one that leads the failover knows first), prints the time (ms since the
# epoch) and address when one of them names another primary.
sentinel_addresses=$(for sentinel in "${sentinel_containers[@]}"; do address_of "$sentinel"; done | tr '\n' ' ')
docker exec "${sentinel_containers[0]}" sh -c "
  for i in \$(seq $((NEW_PRIMARY_SECONDS * 10))); do
    for sentinel in $sentinel_addresses; do
      named=\$(redis-cli -h \$sentinel -p 26379 --raw SENTINEL get-master-addr-by-name $MASTER_NAME | head -n 1)
      if [ -n \"\$named\" ] && [ \"\$named\" != $old_primary ]; then
        echo \"\$(date +%s%N) \$named\"; exit 0
      fi
    done
    sleep 0.1
  done" >"$workdir/new-primary" 2>/dev/null &
watch_pid=$!
killed_ms=$(now_ms)
docker kill -s SIGKILL "$old_container" >/dev/null
say "$old_service killed at $(date -u +%T) UTC, $KILL_AFTER_SECONDS s into the load"

step "Wait for Sentinel to name a new primary"
wait "$watch_pid" || true
watch_pid=""
read -r named_ns new_primary <"$workdir/new-primary" ||
  fail "no sentinel named another primary within $NEW_PRIMARY_SECONDS s"
new_service=${service_at[$new_primary]:-unknown}
new_primary_ms=$(( named_ns / 1000000 - killed_ms ))
ok "$new_service ($new_primary) is the primary, named $new_primary_ms ms after the kill"

step "Wait for the load to finish and account for every increment"
wait "$load_pid" || fail "wrk failed: $(cat "$workdir/wrk.out")"
load_pid=""
result=$(grep '^RESULT ' "$workdir/wrk.out") || fail "wrk printed no result: $(cat "$workdir/wrk.out")"
say "${result#RESULT }"
value() { sed -E "s/.* $1=(-?[0-9.]+).*/\1/" <<<"$result"; }
requests=$(value requests)
acked=$(value acked)
failed=$(value failed)
socket_errors=$(( $(value connect_errors) + $(value read_errors) + $(value write_errors) + $(value timeouts) ))
[ "$requests" -gt 0 ] || fail "no request completed"
failed_by_status=$(grep '^FAILED ' "$workdir/wrk.out" | sort | awk '{ printf "%s%s x %s", sep, $3, $2; sep = ", " }')
not_503=$(grep '^FAILED ' "$workdir/wrk.out" | awk '$2 != 503 { n += $3 } END { print n + 0 }')
first_failure_ms=$(value first_failure_ms)
recovered_ms=$(value recovered_ms)
if [ "$failed" -gt 0 ]; then
  say "failed: $failed of $requests ($failed_by_status)"
  if [ "$recovered_ms" -gt 0 ]; then
    unavailable_ms=$(( recovered_ms - first_failure_ms ))
    say "unavailable for $unavailable_ms ms: first failure $(( first_failure_ms - killed_ms )) ms after the kill, every connection served again $(( recovered_ms - killed_ms )) ms after it"
    served_after_named_ms=$(( recovered_ms - killed_ms - new_primary_ms ))
    say "served again $served_after_named_ms ms after a sentinel named the new primary"
    [ "$served_after_named_ms" -le "$SERVED_AFTER_NAMED_MS" ] ||
      fail "the nodes took $served_after_named_ms ms after the new primary was named to serve again (at most $SERVED_AFTER_NAMED_MS)"
  else
    fail "the load ended before every connection was served again"
  fi
else
  unavailable_ms=0
  say "no request failed"
fi
[ "$socket_errors" -eq 0 ] || fail "$socket_errors requests ended without an answer (connect/read/write errors, timeouts)"
[ "$not_503" -eq 0 ] || fail "$not_503 failed requests were not 503 ($failed_by_status)"
ok "every failed request was a 503, none hung or lost its connection"

read -r status node < <(http GET "$LB/whoami" -H "Cookie: $cookie")
say "GET /whoami: $status from $node: $(body)"
if [ "$status" != 200 ] || ! grep -q "\"user\":\"$USER_NAME\"" "$workdir/body"; then
  fail "the session is gone after the failover"
fi
ok "the session survived: still $USER_NAME"

read -r status node < <(http GET "$LB/counter?mode=atomic" -H "Cookie: $cookie")
[ "$status" = 200 ] || fail "GET /counter?mode=atomic answered $status: $(body)"
counter_after=$(counter_in)
expected=$(( counter_before + acked ))
lost=$(( expected > counter_after ? expected - counter_after : 0 ))
say "acknowledged increments: $acked (highest value acknowledged $(value highest_acked)); counter $counter_before before, $counter_after after"
say "increments applied without an acknowledgement (a 503 after the INCR ran): $(( counter_after > expected ? counter_after - expected : 0 ))"
[ "$lost" -eq 0 ] || fail "$lost acknowledged increments lost: the counter is $counter_after, $expected were acknowledged"
[ "$(value highest_acked)" -le "$counter_after" ] ||
  fail "the counter ($counter_after) is below a value already acknowledged ($(value highest_acked))"
ok "0 acknowledged increments lost"

step "Start the old primary, $old_service, again and wait until it is a replica in sync"
docker start "$old_container" >/dev/null
started_ms=$(now_ms)
in_sync=no
for _ in $(seq $((SYNC_SECONDS * 4))); do
  info=$(replication_of "$old_container" || true)
  if [ "$(field role <<<"$info")" = slave ] && [ "$(field master_host <<<"$info")" = "$new_primary" ] &&
    [ "$(field master_link_status <<<"$info")" = up ] && [ "$(field master_sync_in_progress <<<"$info")" = 0 ]; then
    in_sync=yes
    break
  fi
  sleep 0.25
done
sync_ms=$(( $(now_ms) - started_ms ))
[ "$in_sync" = yes ] || fail "$old_service is not a replica of $new_service in sync $SYNC_SECONDS s after docker start"
ok "$old_service is a replica of $new_service, in sync, $sync_ms ms after docker start"
read -r status node < <(http GET "$LB/counter?mode=atomic" -H "Cookie: $cookie")
[ "$status" = 200 ] && [ "$(counter_in)" = "$counter_after" ] ||
  fail "after $old_service returned, the counter reads $status $(body), not $counter_after"
ok "the counter still reads $counter_after: nothing was written to the old primary"

printf '\nPASS: Redis primary %s killed under load; new primary %s named after %d ms; unavailable %d ms; %d of %d requests failed, all 503; session kept; %d acknowledged increments, 0 lost; %s in sync again %d ms after restart.\n' \
  "$old_service" "$new_service" "$new_primary_ms" "$unavailable_ms" "$failed" "$requests" \
  "$acked" "$old_service" "$sync_ms"
