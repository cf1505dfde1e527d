# Sourced by the load-balancer benchmarks (bench-lb.sh, bench-slow-clients.sh): a work folder
# and every process they start are removed on every exit path, and the port checks they share.
# Before sourcing, set WORK_NAME (the work folder's prefix) and BASE_PORT.

WORK=$(mktemp -d "/tmp/$WORK_NAME.XXXXXX")
declare -A PIDS=()
cleanup() {
  for name in "${!PIDS[@]}"; do
    kill -9 "${PIDS[$name]}" 2>/dev/null || true
    wait "${PIDS[$name]}" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Two backends, the proxy and its admin listener, on four ports from BASE_PORT.
B1_PORT=$BASE_PORT; B2_PORT=$((BASE_PORT + 1)); PROXY_PORT=$((BASE_PORT + 2)); ADMIN_PORT=$((BASE_PORT + 3))
for port in "$B1_PORT" "$B2_PORT" "$PROXY_PORT" "$ADMIN_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; set BASE_PORT to a free range" >&2; exit 1
  fi
done

wait_port() { # wait_port <port>: until something listens there, 10 s at most
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; exit 1
}
