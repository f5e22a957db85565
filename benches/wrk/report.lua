-- wrk script used by benches/http.sh. Plain GETs by default; when WRK_BODY is
-- set it POSTs that JSON body instead (the login flood). At the end it prints
-- one machine-readable line:
--   RESULT <req/s> <p50 ms> <p95 ms> <p99 ms> <non-2xx/3xx> <socket errors>
-- With WRK_VOTE_TOKEN set, it PUTs votes instead, alternating +1 and -1, so
-- every request changes the vote (a real write: the vote row and the
-- question's counters, under the question's row lock).
local body = os.getenv("WRK_BODY")
local vote_token = os.getenv("WRK_VOTE_TOKEN")
if body then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end
if vote_token then
  wrk.method = "PUT"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. vote_token
  local n = 0
  request = function()
    n = n + 1
    local value = (n % 2 == 0) and "1" or "-1"
    return wrk.format(nil, nil, nil, '{"value": ' .. value .. '}')
  end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d %d\n",
    summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, errors))
end
