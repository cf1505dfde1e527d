#!/usr/bin/env bash
# End-to-end test of the Docker Swarm stack (deploy/swarm/stack.yml) on this machine's engine:
# a single-node swarm, the images of the compose path, then three changes under continuous
# load through the load balancer, each with a logged-in session:
#   1. scale the node service 3 -> 6, then 6 -> 2;
#   2. roll every node (docker service update --force: one at a time, start-first);
#   3. SIGKILL one node's container (Swarm replaces it).
# For each: requests sent, failed GETs, failed POSTs, the LB's retries, and whether the session
# survived (same user; the atomic counter grew by the POSTs that were answered). Fails if a
# GET failed, the session was lost or the counter disagrees.
#
# Initialises the swarm only if it is inactive, and leaves it at the end only then. Its own
# stack name, image tag, secrets and free ports; a trap removes them on every exit path.
# Without a Docker engine, or where `docker swarm init` fails, it prints one SKIP line.
# Settings (environment): STEP_LOAD_SECONDS (6: load before and after each change).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/e2e-common.sh
. scripts/e2e-common.sh

say() { echo "swarm-e2e: $*"; }

if ! docker info >/dev/null 2>&1; then
  echo "SKIP swarm e2e: no Docker engine"
  exit 0
fi
for tool in curl wrk; do
  command -v "$tool" >/dev/null || { echo "SKIP swarm e2e: $tool is not installed"; exit 0; }
done

STEP_LOAD_SECONDS=${STEP_LOAD_SECONDS:-6}
STACK="clusterlab-swarm-$$"
export APP_IMAGE="actix-cluster-lab:$STACK"
export SESSION_KEY_SECRET="${STACK}_session_key"
export LB_ADMIN_TOKEN_SECRET="${STACK}_lb_admin_token"
read -r LB_PORT LB_ADMIN_PORT < <(free_ports 2)
export LB_PORT LB_ADMIN_PORT
LB="http://127.0.0.1:$LB_PORT"
LB_ADMIN="http://127.0.0.1:$LB_ADMIN_PORT"
USER_NAME=alice

log=$(mktemp)
workdir=$(mktemp -d)
we_initialised=no
gwbridge_existed=yes
stack_deployed=no
load_pids=()
started=$SECONDS

finish() {
  local status=$?
  local pid
  for pid in "${load_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  if [ "$stack_deployed" = yes ]; then
    if [ "$status" -ne 0 ]; then
      say "failed; the last lines of every service's log:"
      for service in redis node lb; do
        docker service logs --no-task-ids --tail 15 "${STACK}_$service" 2>&1 | sed "s/^/  /" || true
      done
    fi
    say "removing stack $STACK (services, network, volume, secrets, image)"
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    # The stack's containers and network go asynchronously; the volume only once they are gone.
    for _ in $(seq 60); do
      [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ] &&
        [ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ] && break
      sleep 0.5
    done
    docker volume rm "${STACK}_redis-data" >/dev/null 2>&1 || true
  fi
  docker secret rm "$SESSION_KEY_SECRET" "$LB_ADMIN_TOKEN_SECRET" >/dev/null 2>&1 || true
  docker image rm -f "$APP_IMAGE" >/dev/null 2>&1 || true
  if [ "$we_initialised" = yes ]; then
    say "leaving the swarm this test initialised"
    docker swarm leave --force >/dev/null 2>&1 || true
    [ "$gwbridge_existed" = yes ] || docker network rm docker_gwbridge >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir" "$log"
  if [ "$status" -eq 0 ]; then
    say "PASS in $((SECONDS - started)) s"
  else
    say "FAIL (exit $status)"
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The swarm ---
swarm_state=$(docker info -f '{{.Swarm.LocalNodeState}}')
case "$swarm_state" in
  active) say "the engine is already in a swarm: using it, and leaving it as it is" ;;
  inactive)
    docker network inspect docker_gwbridge >/dev/null 2>&1 || gwbridge_existed=no
    if ! docker swarm init --advertise-addr 127.0.0.1 >"$log" 2>&1; then
      echo "SKIP swarm e2e: docker swarm init failed: $(head -n 1 "$log")"
      exit 0
    fi
    we_initialised=yes
    say "docker swarm init --advertise-addr 127.0.0.1 (left again at the end)"
    ;;
  *)
    echo "SKIP swarm e2e: this engine's swarm is $swarm_state"
    exit 0
    ;;
esac
if [ "$(docker info -f '{{.Swarm.ControlAvailable}}')" != true ]; then
  echo "SKIP swarm e2e: this engine is a swarm worker, not a manager"
  exit 0
fi

# --- Images, secrets, deploy ---
e2e_base_images
e2e_release_build
say "docker build --target runtime-prebuilt ($RUNTIME_IMAGE, tagged $APP_IMAGE)"
quietly docker build -f deploy/Dockerfile --target runtime-prebuilt \
  --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" -t "$APP_IMAGE" .

random_hex 64 | docker secret create "$SESSION_KEY_SECRET" - >/dev/null
random_hex 32 >"$workdir/admin-token"
docker secret create "$LB_ADMIN_TOKEN_SECRET" "$workdir/admin-token" >/dev/null
admin_auth="Authorization: Bearer $(cat "$workdir/admin-token")"

say "docker stack deploy $STACK (LB on 127.0.0.1:$LB_PORT, admin :$LB_ADMIN_PORT)"
deployed_at=$SECONDS
stack_deployed=yes
quietly docker stack deploy --resolve-image never -c deploy/swarm/stack.yml "$STACK"

# --- Observing the stack ---
running_tasks() {
  docker service ps "${STACK}_node" --filter desired-state=running \
    --format '{{.CurrentState}}' 2>/dev/null | grep -c '^Running' || true
}
backends_up() {
  curl -sS -m 2 "$LB_ADMIN/backends" 2>/dev/null | grep -o '"state":"up"' | wc -l || true
}
backends_listed() {
  curl -sS -m 2 "$LB_ADMIN/backends" 2>/dev/null | grep -o '"address":' | wc -l || true
}
metric() {
  curl -sS -m 2 "$LB_ADMIN/metrics" | awk -v name="$1" '$1 == name { print $2; exit }'
}
# Waits until N node tasks run and the LB lists exactly N backends, all up.
wait_converged() {
  local want=$1 limit=$2 deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    if [ "$(running_tasks)" -eq "$want" ] && [ "$(backends_up)" -eq "$want" ] &&
      [ "$(backends_listed)" -eq "$want" ]; then
      return 0
    fi
    sleep 0.5
  done
  say "after $limit s: $(running_tasks) tasks running, LB: $(backends_up) up of $(backends_listed)"
  return 1
}

say "waiting for 3 node tasks and the LB to see them up"
wait_converged 3 120
say "stack up $((SECONDS - deployed_at)) s after the deploy"

# --- A logged-in session ---
login_headers="$workdir/login-headers"
curl -sS -m 5 -D "$login_headers" -o "$workdir/body" -H 'content-type: application/json' \
  -d "{\"user\":\"$USER_NAME\"}" "$LB/login" >/dev/null
cookie=$(tr -d '\r' <"$login_headers" | awk 'tolower($1) == "set-cookie:" { sub(/;.*/, "", $2); print $2; exit }')
[ -n "$cookie" ] || { say "login set no cookie: $(cat "$workdir/body")"; exit 1; }
say "logged in as $USER_NAME through the LB"

counter() {
  curl -sS -m 5 -H "Cookie: $cookie" "$LB/counter?mode=atomic" |
    sed -nE 's/.*"counter":([0-9]+).*/\1/p'
}
session_user_ok() {
  curl -sS -m 5 -H "Cookie: $cookie" "$LB/whoami" | grep -q "\"user\":\"$USER_NAME\""
}

# start_load: GETs of /whoami on 2 connections and POSTs of /counter/incr on 1, until the
# stop file appears (wrk's -d is only the upper bound).
start_load() {
  rm -f "$workdir/stop"
  load_pids=()
  FAILOVER_COOKIE=$cookie FAILOVER_USER=$USER_NAME FAILOVER_DELAY_MS=2 \
  FAILOVER_MAX_REQUESTS_PER_THREAD=1000000 FAILOVER_STOP_FILE="$workdir/stop" \
    wrk -t 2 -c 2 -d 300s --timeout 5s -s scripts/failover-load.lua "$LB/whoami" \
    >"$workdir/get.out" 2>&1 &
  load_pids+=($!)
  FAILOVER_COOKIE=$cookie FAILOVER_USER=$USER_NAME FAILOVER_DELAY_MS=5 \
  FAILOVER_MAX_REQUESTS_PER_THREAD=1000000 FAILOVER_STOP_FILE="$workdir/stop" \
  FAILOVER_METHOD=POST FAILOVER_EXPECT='"counter":' \
    wrk -t 1 -c 1 -d 300s --timeout 5s -s scripts/failover-load.lua \
    "$LB/counter/incr?mode=atomic" >"$workdir/post.out" 2>&1 &
  load_pids+=($!)
}

# stop_load: the threads see the stop file after their current response, then wrk is told
# to print its summary (SIGINT ends its timer; no request is on the wire any more).
stop_load() {
  touch "$workdir/stop"
  sleep 1
  local pid
  for pid in "${load_pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${load_pids[@]}"; do wait "$pid" || true; done
  load_pids=()
}

field() { sed -nE "s/^RESULT (.* )?$2=([0-9]+).*/\2/p" "$workdir/$1.out"; }
failures() {
  local f=$1
  echo $(( $(field "$f" not_ok) + $(field "$f" logged_out) + $(field "$f" connect_errors) \
    + $(field "$f" read_errors) + $(field "$f" write_errors) + $(field "$f" timeouts) ))
}

report=()
failed_checks=0
# run_step NAME ACTION...: load, the action, load until the stack has settled, then checks.
run_step() {
  local name=$1; shift
  local counter_before retries_before retries get_requests post_requests get_failed post_failed
  local posts_ok gain survived step_started=$SECONDS
  counter_before=$(counter)
  retries_before=$(metric lb_retries_total)
  start_load
  sleep "$STEP_LOAD_SECONDS"
  "$@"
  sleep "$STEP_LOAD_SECONDS"
  stop_load
  for f in get post; do
    grep -q '^RESULT ' "$workdir/$f.out" || { say "wrk ($f) printed no result:"; cat "$workdir/$f.out"; exit 1; }
  done
  get_requests=$(field get requests)
  post_requests=$(field post requests)
  get_failed=$(failures get)
  post_failed=$(failures post)
  posts_ok=$(field post ok)
  retries=$(( $(metric lb_retries_total) - retries_before ))
  gain=$(( $(counter) - counter_before ))
  survived=no
  session_user_ok && survived=yes
  local line
  line=$(printf '%-22s requests=%d (GET %d, POST %d) failed_GET=%d failed_POST=%d lb_retries=%d session=%s counter_gain=%d acked_POST=%d seconds=%d' \
    "$name" $((get_requests + post_requests)) "$get_requests" "$post_requests" "$get_failed" \
    "$post_failed" "$retries" "$survived" "$gain" "$posts_ok" $((SECONDS - step_started)))
  report+=("$line")
  say "$line"
  grep '^SERVED ' "$workdir/get.out" | sort | sed 's/^SERVED /    GETs served by /'
  # A POST whose connection died with its node may have been applied without an answer:
  # the counter may exceed the acknowledged POSTs by at most the failed ones, never fall short.
  if [ "$get_failed" -ne 0 ]; then say "FAIL $name: $get_failed GETs failed"; failed_checks=$((failed_checks + 1)); fi
  if [ "$survived" != yes ]; then say "FAIL $name: the session is gone"; failed_checks=$((failed_checks + 1)); fi
  if [ "$gain" -lt "$posts_ok" ] || [ "$gain" -gt $((posts_ok + post_failed)) ]; then
    say "FAIL $name: counter grew by $gain, $posts_ok POSTs answered, $post_failed failed"
    failed_checks=$((failed_checks + 1))
  fi
  [ "$get_requests" -gt 0 ] && [ "$post_requests" -gt 0 ] ||
    { say "FAIL $name: no load went through"; failed_checks=$((failed_checks + 1)); }
}

scale_up_then_down() {
  say "docker service scale node=6"
  quietly docker service scale --detach "${STACK}_node=6"
  wait_converged 6 120
  say "6 tasks up in the LB; docker service scale node=2"
  quietly docker service scale --detach "${STACK}_node=2"
  wait_converged 2 120
}

rolling_update() {
  say "docker service update --force node (one at a time, start-first)"
  quietly docker service update --detach --force "${STACK}_node"
  local deadline=$((SECONDS + 180)) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "${STACK}_node")
    [ "$state" = completed ] && break
    case "$state" in rollback*|paused) say "update ended $state"; return 1 ;; esac
    sleep 0.5
  done
  [ "$state" = completed ] || { say "update still $state after 180 s"; return 1; }
  wait_converged 2 60
}

kill_one_node() {
  local victim
  victim=$(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_node" | head -n 1)
  [ -n "$victim" ] || { say "no node container to kill"; return 1; }
  say "docker kill -s SIGKILL ${victim:0:12} (a node task's container)"
  docker kill -s SIGKILL "$victim" >/dev/null
  # Swarm notices, starts a replacement; back to 2 tasks, both up in the LB.
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ] && docker ps -q --no-trunc | grep -q "^$victim"; do sleep 0.2; done
  wait_converged 2 120
}

run_step "scale 3->6->2" scale_up_then_down
run_step "rolling update" rolling_update
run_step "SIGKILL one node" kill_one_node

echo
say "summary ($(date -u +%F), $(nproc) cores; all load through 127.0.0.1:$LB_PORT):"
for line in "${report[@]}"; do echo "  $line"; done
[ "$failed_checks" -eq 0 ] || { say "$failed_checks checks failed"; exit 1; }
