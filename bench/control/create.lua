-- wrk script for bench/control/api.sh: every request creates a Service with
-- a distinct name (thread number + counter), so each one is a real insert.
-- wrk counts answers other than 2xx/3xx ("Non-2xx or 3xx responses").
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads) -- a global in that thread's Lua state
end

function request()
  counter = counter + 1
  local name = string.format("c%d-%d", tid or 0, counter)
  local body = '{"apiVersion":"skiff.dev/v1","kind":"Service","metadata":{"name":"' .. name ..
    '"},"spec":{"endpoints":["127.0.0.1:9001"]}}'
  return wrk.format("POST", wrk.path, wrk.headers, body)
end
