-- wrk script: POST the pre-encoded OTLP batches in BODY_DIR (0.pb .. N-1.pb,
-- N in BODY_N) to /v1/traces in turn; each wrk thread starts at its own
-- offset so the batches are spread over the connections.
local dir = os.getenv("BODY_DIR")
local n = tonumber(os.getenv("BODY_N"))
local bodies = {}
local i = 0
local threads = 0

function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end

function init(args)
  for k = 0, n - 1 do
    local f = assert(io.open(dir .. "/" .. k .. ".pb", "rb"))
    bodies[k] = f:read("*a")
    f:close()
  end
  i = (first or 0) * 7919 % n
end

function request()
  local b = bodies[i]
  i = (i + 1) % n
  return wrk.format("POST", "/v1/traces", {["Content-Type"] = "application/x-protobuf"}, b)
end
