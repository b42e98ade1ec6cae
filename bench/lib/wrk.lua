-- wrk script for bench/run: an optional list of request paths, and one result
-- line the driver parses.
--
--   wrk ... -s wrk.lua URL                 every request is GET URL (wrk's static,
--                                          fastest request path)
--   wrk ... -s wrk.lua URL -- PATHS-FILE   requests cycle through the file's lines
--                                          (one path a line), each thread from its
--                                          own offset so threads do not move in step

local paths = nil
local i = 0

function init(args)
  if args[1] == nil then
    return
  end
  paths = {}
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  assert(#paths > 0, "empty paths file " .. args[1])
  -- wrk gives every thread its own Lua state; a shared counter address makes
  -- distinct offsets without a random seed.
  i = tonumber(tostring({}):match("0x(%x+)"), 16) % #paths
  -- Only now, so wrk keeps its static request when no list is given.
  request = function()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "bytes": %d, "duration_us": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "non_2xx_3xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "mean_us": %.3f, "max_us": %d}\n',
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.timeout, e.status, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max))
end
