-- wrk script used by scripts/failover.sh: GET /whoami with one session cookie and count every
-- response that is not a 200 showing the logged-in user. Bounded twice: each connection
-- waits FAILOVER_DELAY_MS between requests, and each thread stops after
-- FAILOVER_MAX_REQUESTS_PER_THREAD requests (wrk's -d bounds the time).
-- wrk runs one Lua state per thread, so the counters are per thread and summed in done().

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Cookie"] = os.getenv("FAILOVER_COOKIE")
  expected_user = '"user":"' .. os.getenv("FAILOVER_USER") .. '"'
  max_requests = tonumber(os.getenv("FAILOVER_MAX_REQUESTS_PER_THREAD"))
  delay_ms = tonumber(os.getenv("FAILOVER_DELAY_MS"))
  sent, not_ok, logged_out, served = 0, 0, 0, {}
end

function delay()
  return delay_ms
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
  elseif not string.find(body, expected_user, 1, true) then
    logged_out = logged_out + 1
  end
  local node = headers["X-Served-By"] or headers["x-served-by"] or "(none)"
  served[node] = (served[node] or 0) + 1
end

-- One machine-readable line for failover.sh, then one line per node that answered.
function done(summary, latency, requests)
  local total_not_ok, total_logged_out, total_served = 0, 0, {}
  for _, thread in ipairs(threads) do
    total_not_ok = total_not_ok + thread:get("not_ok")
    total_logged_out = total_logged_out + thread:get("logged_out")
    for node, count in pairs(thread:get("served")) do
      total_served[node] = (total_served[node] or 0) + count
    end
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d not_ok=%d logged_out=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p99_ms=%.1f\n",
    summary.requests, total_not_ok, total_logged_out, e.connect, e.read, e.write, e.timeout,
    latency:percentile(99) / 1000))
  for node, count in pairs(total_served) do
    io.write(string.format("SERVED %s %d\n", node, count))
  end
end
