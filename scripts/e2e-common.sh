# Shared by the Docker end-to-end tests (scripts/compose-e2e.sh, scripts/swarm-e2e.sh); sourced,
# not run. Each test runs in its own namespace (project, stack, image tag, secrets, ports), so
# what they have in common is how they find that room and how they get the images:
#   free_ports N        N distinct free TCP ports on this machine, space-separated
#   random_hex BYTES    that many random bytes as hex, for session keys and tokens
#   quietly CMD...      runs CMD with its output in $log; on failure shows the tail and fails
#   e2e_base_images     exports REDIS_IMAGE and RUNTIME_IMAGE: from the environment, the
#                       official images if present, else the offline stand-ins
#   e2e_release_build   cargo build --release of the two binaries the image copies
# The caller defines say() (its own prefix) and log (a temporary file).

# N distinct TCP ports no socket uses, for the published ports: below 32768, where the kernel
# does not pick the local ports of outgoing connections (ip_local_port_range), and checked in
# every state, since a connection's local port blocks a listener too.
free_ports() {
  local count=$1 ports=() port
  while [ ${#ports[@]} -lt "$count" ]; do
    port=$((20000 + RANDOM % 12768))
    [[ " ${ports[*]} " == *" $port "* ]] && continue
    [ -z "$(ss -Htan "sport = :$port")" ] && ports+=("$port")
  done
  echo "${ports[*]}"
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Runs a stage quietly; on failure shows its output and fails the test.
quietly() {
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log"
    say "failed: $*"
    return 1
  fi
}

# Never pulls from a registry: a machine with registry access can `docker pull redis:7
# debian:bookworm-slim` first and the tests use them.
e2e_base_images() {
  if [ -n "${REDIS_IMAGE:-}" ] && [ -n "${RUNTIME_IMAGE:-}" ]; then
    say "base images from the environment: $REDIS_IMAGE, $RUNTIME_IMAGE"
  elif docker image inspect redis:7 debian:bookworm-slim >/dev/null 2>&1; then
    export REDIS_IMAGE=redis:7 RUNTIME_IMAGE=debian:bookworm-slim
    say "base images: redis:7 and debian:bookworm-slim (present locally)"
  else
    say "redis:7 / debian:bookworm-slim not present: offline stand-ins (scripts/offline-images.sh)"
    eval "$(scripts/offline-images.sh)"
    # APP_TARGET from offline-images.sh is runtime-prebuilt as well.
  fi
}

e2e_release_build() {
  say "cargo build --release -p cluster-app -p cluster-lb"
  quietly env -u CARGO_TARGET_DIR cargo build --release -p cluster-app -p cluster-lb
}
