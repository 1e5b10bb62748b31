-- wrk script: each created request is then processed, so the load is seed 001's
-- create + process pair. Prints p50/p99 and non-2xx counts at the end.
local ids = {}
local body = '{"to":"bench@example.com","message":"benchmark offer","type":"email"}'
local headers = { ["Content-Type"] = "application/json" }
-- The service key, as a client presents it (scripts/bench-api.sh makes one).
local key = os.getenv("HERALD_API_KEY")
if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
local bad = 0

request = function()
  local id = table.remove(ids)
  if id then
    return wrk.format("POST", "/v1/requests/" .. id .. "/process", headers, "")
  end
  return wrk.format("POST", "/v1/requests", headers, body)
end

response = function(status, _, resp_body)
  if status == 201 then
    local id = resp_body:match('"id":"([^"]+)"')
    if id then table.insert(ids, id) end
  elseif status ~= 202 then
    bad = bad + 1
  end
end

done = function(summary, latency, _)
  local secs = summary.duration / 1e6
  io.write(string.format("requests/s: %.0f (create+process pairs/s: %.0f)\n",
    summary.requests / secs, summary.requests / secs / 2))
  io.write(string.format("latency p50: %.2f ms  p90: %.2f ms  p99: %.2f ms  max: %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
  io.write(string.format("socket errors: connect %d read %d write %d timeout %d; non-2xx: %d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status))
end
