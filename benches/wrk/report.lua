-- wrk script used by benches/http.sh. Plain GETs by default; when WRK_BODY is
-- set it POSTs that JSON body instead (the login flood). At the end it prints
-- one machine-readable line:
--   RESULT <req/s> <p50 ms> <p95 ms> <p99 ms> <non-2xx/3xx> <socket errors>
local body = os.getenv("WRK_BODY")
if body then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d %d\n",
    summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.errors.status, errors))
end
