#!/usr/bin/env bash
# End-to-end test of the Docker path, on the Docker engine of this machine:
#   base images (the offline stand-ins when redis:7 / debian:bookworm-slim are not present)
#   -> cargo build --release -> compose build (target runtime-prebuilt) -> up, wait healthy
#   -> scripts/failover.sh -> down -v; then the same with Redis behind Sentinel
#   (docker-compose.sentinel.yml): up -> scripts/failover.sh --redis -> down -v.
# Its own compose project, image tag, secrets and free ports, so it neither touches nor
# collides with a cluster you run yourself; everything it starts is removed on every exit
# path (the cached base images stay). Without a Docker engine it prints one SKIP line.
# Never pulls from a registry: a machine with registry access can `docker pull redis:7
# debian:bookworm-slim` first and this script uses them.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/e2e-common.sh
. scripts/e2e-common.sh

say() { echo "compose-e2e: $*"; }

if ! docker info >/dev/null 2>&1; then
  echo "SKIP compose e2e: no Docker engine"
  exit 0
fi

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  if ! command -v docker-compose >/dev/null; then
    say "installing docker-compose"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
  fi
  compose=(docker-compose)
fi

timings=()
stage_started=$SECONDS
stage_done() {
  timings+=(" $1 $((SECONDS - stage_started))")
  stage_started=$SECONDS
}

# The first three numbers of a /24 under 172.31 that no route of this machine covers (every
# Docker network has one), for docker-compose.sentinel.yml's fixed addresses.
free_redis_net() {
  local third
  for _ in $(seq 100); do
    third=$((200 + RANDOM % 55))
    if [ -z "$(ip -4 route show to match "172.31.$third.0/24" | grep -v '^default')" ]; then
      echo "172.31.$third"
      return
    fi
  done
  say "no free 172.31.x.0/24 network"
  return 1
}

# Everything compose reads is set here, so the caller's .env (if any) changes nothing that
# matters; a docker-compose.override.yml is ignored too.
run_id="clusterlab-e2e-$$-$RANDOM"
export COMPOSE_PROJECT_NAME=$run_id
export COMPOSE_FILE=docker-compose.yml
export APP_IMAGE="actix-cluster-lab:$run_id"
export APP_TARGET=runtime-prebuilt
SESSION_KEY=$(random_hex 64)
LB_ADMIN_TOKEN=$(random_hex 32)
export SESSION_KEY LB_ADMIN_TOKEN

log=$(mktemp)
project_up=no
finish() {
  local status=$?
  if [ "$project_up" = yes ]; then
    if [ "$status" -ne 0 ]; then
      say "failed; the last lines of every container's log:"
      "${compose[@]}" logs --no-color --tail 30 2>&1 || true
    fi
    say "removing project $COMPOSE_PROJECT_NAME (containers, network, volume, image)"
    "${compose[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    stage_done "down"
  fi
  docker image rm -f "$APP_IMAGE" >/dev/null 2>&1 || true
  rm -f "$log"
  local IFS=,
  if [ "$status" -eq 0 ]; then
    say "PASS; seconds per stage: ${timings[*]}"
  else
    say "FAIL (exit $status)"
  fi
  exit "$status"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

e2e_base_images
stage_done "base-images"

e2e_release_build
stage_done "cargo-build"

# One build: every app service runs this image tag. (Building each service would copy
# target/release four times, and a cargo build running meanwhile could leave images behind.)
say "compose build node1 ($APP_TARGET on $RUNTIME_IMAGE, tagged $APP_IMAGE, used by all 4 app services)"
quietly "${compose[@]}" build node1
stage_done "compose-build"

# One compose project from the image built above: up with the compose files given, wait
# until its containers are healthy, run a failover script, down -v. Its own project name and
# free ports; `finish` removes the project on any exit path.
#   run_cluster NAME COMPOSE_FILE CONTAINERS FAILOVER_COMMAND...
run_cluster() {
  local name=$1 compose_file=$2 expected=$3; shift 3
  export COMPOSE_PROJECT_NAME="$run_id-$name"
  export COMPOSE_FILE=$compose_file
  read -r LB_PORT LB_ADMIN_PORT NODE1_PORT NODE2_PORT NODE3_PORT < <(free_ports 5)
  export LB_PORT LB_ADMIN_PORT NODE1_PORT NODE2_PORT NODE3_PORT

  say "compose up -d (project $COMPOSE_PROJECT_NAME, $COMPOSE_FILE; LB on 127.0.0.1:$LB_PORT, admin :$LB_ADMIN_PORT, nodes :$NODE1_PORT :$NODE2_PORT :$NODE3_PORT)"
  project_up=yes
  quietly "${compose[@]}" up -d
  local healthy=no statuses containers
  for _ in $(seq 120); do
    mapfile -t containers < <("${compose[@]}" ps -q)
    statuses=$(docker inspect -f '{{.State.Health.Status}}' "${containers[@]}" | sort | uniq -c | tr -s ' \n' ' ') ||
      statuses=" (docker inspect failed) "
    if [ "$statuses" = " $expected healthy " ]; then
      healthy=yes
      break
    fi
    sleep 0.5
  done
  [ "$healthy" = yes ] || { say "not all $expected containers healthy after 60 s:$statuses"; return 1; }
  say "all $expected containers healthy"
  stage_done "$name-up"

  "$@"
  stage_done "$name-failover"

  say "removing project $COMPOSE_PROJECT_NAME"
  "${compose[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1
  project_up=no
  stage_done "$name-down"
}

run_cluster single docker-compose.yml 5 scripts/failover.sh

# Redis behind Sentinel: a primary, two replicas, three sentinels on fixed addresses in a
# network of their own; the Redis primary killed under load. failover.sh --redis fails on a
# lost session, a lost acknowledged increment, or a failed request that was not a 503.
REDIS_NET=$(free_redis_net)
export REDIS_NET
run_cluster sentinel docker-compose.yml:docker-compose.sentinel.yml 10 scripts/failover.sh --redis
