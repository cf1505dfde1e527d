#!/usr/bin/env bash
# Slow-client figures for cluster-lb: what silent connections and stalled uploads cost it.
#
# Starts cluster-lb (release) in front of two trivial Python backends on 127.0.0.1, then a
# raw-socket client opens SILENT connections that send nothing and STALLED uploads that declare
# 1 MiB and stop one byte short. It reports the balancer's RSS before, while they are held and
# after the deadline, how many of those connections the balancer still holds after the
# deadline (client timeout and body idle timeout, both DEADLINE_MS), and whether a normal
# request is served meanwhile. Everything started here is stopped on exit.
#
# Usage: scripts/bench-slow-clients.sh            # builds this tree's cluster-lb
#        LB_BIN=/path/to/cluster-lb scripts/bench-slow-clients.sh   # an existing binary
# Knobs: SILENT (default 200), STALLED (default 40), DEADLINE_MS (default 2000),
#        UPLOAD_METHOD (default POST, whose body cluster-lb streams to the backend; PUT's it
#        buffers, under the shared body budget), BASE_PORT (default 19200), LB_WORKERS (default 2).
# Timeouts go through environment variables, which an older binary without a flag ignores.
set -euo pipefail
cd "$(dirname "$0")/.."

SILENT=${SILENT:-200}
STALLED=${STALLED:-40}
UPLOAD_METHOD=${UPLOAD_METHOD:-POST}
DEADLINE_MS=${DEADLINE_MS:-2000}
BASE_PORT=${BASE_PORT:-19200}
LB_WORKERS=${LB_WORKERS:-2}

if [ -z "${LB_BIN:-}" ]; then
  echo "building cluster-lb (release)..." >&2
  cargo build --release -q -p cluster-lb --bin cluster-lb
  LB_BIN="${CARGO_TARGET_DIR:-target}/release/cluster-lb"
fi

WORK_NAME=bench-slow-clients
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"

# A backend that answers 200 to everything, health checks included.
cat > "$WORK/backend.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = answer
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
EOF

# The hostile client: holds the connections and reads the balancer's RSS from /proc.
cat > "$WORK/slow_clients.py" <<'EOF'
import http.client, socket, sys, time

pid, port, silent, stalled, deadline_ms = (int(a) for a in sys.argv[1:6])
method = sys.argv[6]
MIB = 1024 * 1024

def rss_mib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")

def normal_request():
    started = time.monotonic()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/normal")
        status = connection.getresponse().status
        connection.close()
    except OSError as e:
        status = type(e).__name__
    return f"{status} in {(time.monotonic() - started) * 1000:.0f} ms"

def still_open(sock):
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False

print(f"rss_before={rss_mib():.1f}")
held = []
for _ in range(silent):
    held.append(socket.create_connection(("127.0.0.1", port)))
uploads = []
head = f"{method} /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {MIB}\r\n\r\n".encode()
for _ in range(stalled):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)
    try:
        sock.sendall(head + b"x" * (MIB - 1))
    except OSError:
        pass
    uploads.append(sock)
opened = time.monotonic()
time.sleep(1)
print(f"rss_during={rss_mib():.1f}")
print(f"normal_during={normal_request()}")
time.sleep(max(0.0, deadline_ms / 1000 + 3 - (time.monotonic() - opened)))
print(f"silent_open_after_deadline={sum(still_open(s) for s in held)}/{silent}")
print(f"stalled_open_after_deadline={sum(still_open(s) for s in uploads)}/{stalled}")
print(f"rss_after_deadline={rss_mib():.1f}")
print(f"normal_after_deadline={normal_request()}")
for sock in held + uploads:
    sock.close()
time.sleep(1)
print(f"rss_after_close={rss_mib():.1f}")
EOF

# Their stderr goes to a file: a streamed upload the balancer aborts at its deadline leaves a
# backend thread writing to a closed socket, which Python reports with a traceback.
python3 "$WORK/backend.py" "$B1_PORT" 2>>"$WORK/backends.log" & PIDS[b1]=$!
python3 "$WORK/backend.py" "$B2_PORT" 2>>"$WORK/backends.log" & PIDS[b2]=$!
wait_port "$B1_PORT"; wait_port "$B2_PORT"

LB_CLIENT_TIMEOUT_MS=$DEADLINE_MS LB_BODY_IDLE_TIMEOUT_MS=$DEADLINE_MS RUST_LOG=warn \
  "$LB_BIN" --listen "127.0.0.1:$PROXY_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --workers "$LB_WORKERS" --backend "127.0.0.1:$B1_PORT" --backend "127.0.0.1:$B2_PORT" \
  2>"$WORK/cluster-lb.log" &
PIDS[lb]=$!
wait_port "$PROXY_PORT"
sleep 1 # let health checks settle

echo "cluster-lb: $LB_BIN ($("$LB_BIN" --version)), $SILENT silent connections," \
  "$STALLED $UPLOAD_METHOD uploads stalled at 1 MiB - 1, deadline ${DEADLINE_MS} ms"
python3 "$WORK/slow_clients.py" "${PIDS[lb]}" "$PROXY_PORT" "$SILENT" "$STALLED" "$DEADLINE_MS" "$UPLOAD_METHOD" |
  while IFS='=' read -r key value; do printf '  %-28s %s\n' "$key" "$value"; done
