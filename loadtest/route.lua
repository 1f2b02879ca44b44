-- wrk script for translated.sh: POST one chat body through one route of the gateway.
--   CM_PATH=/v1/messages CM_DIALECT=anthropic CM_BODY=body.json wrk -t1 -c32 -d5s -s route.lua URL
-- CM_DIALECT picks the caller's key header (openai: Authorization: Bearer; anthropic: x-api-key
-- and anthropic-version). CM_KEY overrides the demo key. CM_HEADER ("name: value") adds one header
-- to every request. Prints the same WRK_JSON line as post.lua.
local key = os.getenv("CM_KEY") or "cm_demo_key_not_secret"
local f = assert(io.open(assert(os.getenv("CM_BODY"), "CM_BODY not set"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = assert(os.getenv("CM_PATH"), "CM_PATH not set")
wrk.headers["Content-Type"] = "application/json"
if os.getenv("CM_DIALECT") == "anthropic" then
  wrk.headers["x-api-key"] = key
  wrk.headers["anthropic-version"] = "2023-06-01"
else
  wrk.headers["Authorization"] = "Bearer " .. key
end
local extra = os.getenv("CM_HEADER")
if extra and extra ~= "" then
  local name, value = extra:match("^([^:]+):%s*(.*)$")
  wrk.headers[assert(name, "CM_HEADER is not name: value")] = value
end

done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    e.status, errors, latency:percentile(50), latency:percentile(99)))
end
