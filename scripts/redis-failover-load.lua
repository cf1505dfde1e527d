-- wrk script used by scripts/redis-failover.sh: POST /counter/incr?mode=atomic with one
-- logged-in session's cookie, the ledger of a failover. Every 200 is an acknowledged increment:
-- the script counts them and keeps the highest counter value acknowledged, so that the final
-- counter tells whether a failover lost any. Every other answer is counted by status, and the
-- wall-clock times of the first failure and of the first success after the last one give the
-- client-visible unavailability. Bounded twice: each connection waits REDIS_LOAD_DELAY_MS
-- between requests, and each thread stops after REDIS_LOAD_MAX_REQUESTS_PER_THREAD requests
-- (wrk's -d bounds the time). wrk runs one Lua state per thread, so the counters are per
-- thread and combined in done().

-- LuaJIT's foreign-function interface gives the wall clock in milliseconds, which plain Lua
-- (os.time, in seconds) does not.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } cluster_lab_timespec;
  int clock_gettime(int clock_id, cluster_lab_timespec *tp);
]]
local CLOCK_REALTIME = 0
local now_buffer = ffi.new("cluster_lab_timespec")
local function now_ms()
  ffi.C.clock_gettime(CLOCK_REALTIME, now_buffer)
  return tonumber(now_buffer.tv_sec) * 1000 + math.floor(tonumber(now_buffer.tv_nsec) / 1e6)
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Cookie"] = os.getenv("REDIS_LOAD_COOKIE")
  max_requests = tonumber(os.getenv("REDIS_LOAD_MAX_REQUESTS_PER_THREAD"))
  delay_ms = tonumber(os.getenv("REDIS_LOAD_DELAY_MS"))
  sent, acked, highest_acked = 0, 0, 0
  -- failures[status] = count; times in ms since the epoch, 0 when none yet.
  failures = {}
  first_failure_ms, last_failure_ms, recovered_ms = 0, 0, 0
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
  local now = now_ms()
  if status == 200 then
    acked = acked + 1
    local counter = tonumber(string.match(body, '"counter":(%d+)'))
    if counter and counter > highest_acked then
      highest_acked = counter
    end
    if last_failure_ms > 0 and recovered_ms == 0 then
      recovered_ms = now
    end
  else
    failures[status] = (failures[status] or 0) + 1
    if first_failure_ms == 0 then
      first_failure_ms = now
    end
    last_failure_ms = now
    recovered_ms = 0
  end
end

-- One machine-readable line for redis-failover.sh, then one line per failed status.
-- Unavailability across connections: from the first failure any connection saw to the moment
-- the last connection to recover had its first success.
function done(summary, latency, requests)
  local total_acked, highest, first_failure, recovered, last_failure = 0, 0, 0, 0, 0
  local total_failures = {}
  for _, thread in ipairs(threads) do
    total_acked = total_acked + thread:get("acked")
    highest = math.max(highest, thread:get("highest_acked"))
    local first = thread:get("first_failure_ms")
    if first > 0 and (first_failure == 0 or first < first_failure) then
      first_failure = first
    end
    last_failure = math.max(last_failure, thread:get("last_failure_ms"))
    if thread:get("last_failure_ms") > 0 then
      local thread_recovered = thread:get("recovered_ms")
      if thread_recovered == 0 then
        recovered = -1
      elseif recovered >= 0 then
        recovered = math.max(recovered, thread_recovered)
      end
    end
    for status, count in pairs(thread:get("failures")) do
      total_failures[status] = (total_failures[status] or 0) + count
    end
  end
  local failed = 0
  for _, count in pairs(total_failures) do
    failed = failed + count
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d acked=%d highest_acked=%d failed=%d first_failure_ms=%d last_failure_ms=%d recovered_ms=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p99_ms=%.1f\n",
    summary.requests, total_acked, highest, failed, first_failure, last_failure, recovered,
    e.connect, e.read, e.write, e.timeout, latency:percentile(99) / 1000))
  for status, count in pairs(total_failures) do
    io.write(string.format("FAILED %d %d\n", status, count))
  end
end
