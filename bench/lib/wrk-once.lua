-- wrk script for "narinfo asked the first time": every path of a list asked
-- exactly once, then stop.
--
--   wrk -tT -cC -s wrk-once.lua URL -- PATHS-FILE T C
--
-- Thread k (0-based) asks the lines k, k + T, k + 2T, ... of PATHS-FILE, one
-- request at a time on each of its C / T connections (wrk's split). A
-- connection whose turn comes after the thread's last path gets an empty
-- request, which wrk writes as nothing, so it stays silent; once all of them
-- are silent every answer is in, and the thread prints ONCE-DONE and stops.
-- wrk's main thread still sleeps out -d, so the driver interrupts it (SIGINT)
-- when it has read T ONCE-DONE lines; the rate comes from the threads' own
-- clocks (first request written, last answer read), not from -d.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_once_timespec;
int clock_gettime(int clock, bench_once_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_once_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

-- In the main Lua state: number the threads, keep them for done().
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  threads[#threads + 1] = thread
end

-- In each thread's own state.
local mine, next_i, silent, per_thread = {}, 0, 0, 0
-- wrk calls thread 0's request() once before the run, to count the requests
-- it returns (pipelining); that call must not use up a path.
local verifying = false
sent, first_us, last_us = 0, 0, 0

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  per_thread = math.floor(tonumber(args[3]) / nthreads)
  assert(file and nthreads and per_thread > 0, "usage: -- PATHS-FILE THREADS CONNECTIONS")
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then
      mine[#mine + 1] = line
    end
    n = n + 1
  end
  verifying = id == 0
end

function request()
  if verifying then
    verifying = false
    return wrk.format("GET", mine[1] or "/")
  end
  if next_i < #mine then
    next_i = next_i + 1
    if next_i == 1 then
      first_us = now_us()
    end
    sent = next_i
    return wrk.format("GET", mine[next_i])
  end
  -- One call a connection after its last answer: all silent, all answered.
  silent = silent + 1
  if silent == per_thread then
    last_us = now_us()
    io.write("ONCE-DONE\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
  return ""
end

function done(summary, latency, requests)
  local n, first, last = 0, math.huge, 0
  for _, t in ipairs(threads) do
    n = n + t:get("sent")
    first = math.min(first, t:get("first_us"))
    last = math.max(last, t:get("last_us"))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "sent": %d, "first_to_last_us": %.0f, "bytes": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"non_2xx_3xx": %d}\n',
    summary.requests, n, last - first, summary.bytes, e.connect, e.read, e.write,
    e.timeout, e.status))
end
