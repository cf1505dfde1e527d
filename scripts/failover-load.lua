-- wrk script used by scripts/failover.sh and scripts/swarm-e2e.sh: send one request over and
-- over with one session cookie and count every response that is not a 200 showing what is
-- expected. Settings (environment):
--   FAILOVER_COOKIE, FAILOVER_USER    the session cookie, and the user a 200 must show
--   FAILOVER_METHOD                   GET (default) or e.g. POST (an empty body)
--   FAILOVER_EXPECT                   text a 200 must contain (default: the user, as JSON)
--   FAILOVER_DELAY_MS                 each connection waits this long between requests
--   FAILOVER_MAX_REQUESTS_PER_THREAD  each thread stops after this many requests
--   FAILOVER_STOP_FILE                optional: each thread stops once this file exists,
--                                     at its next response (so nothing is left in flight)
-- wrk's -d bounds the time. A stop file ends a run cleanly: stopping wrk by SIGINT while a
-- request is on the wire would miscount it (the LB may have served it, wrk never saw it).
-- With one connection per thread (-t N -c N), a thread that stops has nothing in flight.
-- wrk runs one Lua state per thread, so the counters are per thread and summed in done().

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Cookie"] = os.getenv("FAILOVER_COOKIE")
  wrk.method = os.getenv("FAILOVER_METHOD") or "GET"
  expected = os.getenv("FAILOVER_EXPECT") or ('"user":"' .. os.getenv("FAILOVER_USER") .. '"')
  max_requests = tonumber(os.getenv("FAILOVER_MAX_REQUESTS_PER_THREAD"))
  delay_ms = tonumber(os.getenv("FAILOVER_DELAY_MS"))
  stop_file = os.getenv("FAILOVER_STOP_FILE")
  sent, ok, not_ok, logged_out, served = 0, 0, 0, 0, {}
end

function delay()
  return delay_ms
end

local function stop_file_exists()
  if not stop_file or stop_file == "" then
    return false
  end
  local file = io.open(stop_file, "r")
  if file then
    file:close()
    return true
  end
  return false
end

function request()
  sent = sent + 1
  if sent > max_requests then
    wrk.thread:stop()
  end
  return wrk.request()
end

function response(status, headers, body)
  if status ~= 200 then
    not_ok = not_ok + 1
  elseif not string.find(body, expected, 1, true) then
    logged_out = logged_out + 1
  else
    ok = ok + 1
  end
  local node = headers["X-Served-By"] or headers["x-served-by"] or "(none)"
  served[node] = (served[node] or 0) + 1
  -- Here, not in request(): a request returned there is sent even if the thread stops, and
  -- its answer is never counted. Stopped here, the thread's connection is idle.
  if stop_file_exists() then
    wrk.thread:stop()
  end
end

-- One machine-readable line for the scripts, then one line per node that answered.
function done(summary, latency, requests)
  local total_ok, total_not_ok, total_logged_out, total_served = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_not_ok = total_not_ok + thread:get("not_ok")
    total_logged_out = total_logged_out + thread:get("logged_out")
    for node, count in pairs(thread:get("served")) do
      total_served[node] = (total_served[node] or 0) + count
    end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d ok=%d not_ok=%d logged_out=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p99_ms=%.1f\n",
    summary.requests, total_ok, total_not_ok, total_logged_out, e.connect, e.read, e.write,
    e.timeout, latency:percentile(99) / 1000))
  for node, count in pairs(total_served) do
    io.write(string.format("SERVED %s %d\n", node, count))
  end
end
