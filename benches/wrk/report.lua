-- wrk script used by benches/http.sh. Plain GETs by default; when WRK_BODY is
-- set it POSTs that JSON body instead (the login flood). At the end it prints
-- one machine-readable line:
--   RESULT <req/s> <p50 ms> <p95 ms> <p99 ms> <non-2xx/3xx> <socket errors>
-- With WRK_VOTE_TOKEN set, it PUTs votes instead, alternating +1 and -1, so
-- every request changes the vote (a real write: the vote row and the
-- question's counters, under the question's row lock).
-- With WRK_TOKENS (a file of access tokens, one a line) and WRK_ATTEMPTS (a
-- file of "<exercise id> <answer>" lines) it POSTs attempts, each request as
-- the next learner on the next exercise; with WRK_TOKENS and WRK_QUESTIONS (a
-- file of question ids) it PUTs votes, each request the next voter on the next
-- question, flipping that pair's vote: writes spread over many users and rows.
-- WRK_TOKENS alone: GETs of the URL as the next user each time.
local body = os.getenv("WRK_BODY")
local vote_token = os.getenv("WRK_VOTE_TOKEN")
local tokens_file = os.getenv("WRK_TOKENS")
local attempts_file = os.getenv("WRK_ATTEMPTS")
local questions_file = os.getenv("WRK_QUESTIONS")

local function lines(path)
  local out = {}
  for line in io.lines(path) do
    if line ~= "" then out[#out + 1] = line end
  end
  return out
end
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

if tokens_file and not (attempts_file or questions_file) then
  -- Per-user GETs (progress, dashboard): the next user's token each time.
  local tokens = lines(tokens_file)
  local n = 0
  request = function()
    n = n + 1
    wrk.headers["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1]
    return wrk.format("GET")
  end
elseif tokens_file then
  local tokens = lines(tokens_file)
  local targets = lines(attempts_file or questions_file)
  wrk.headers["Content-Type"] = "application/json"
  local n = 0
  request = function()
    n = n + 1
    -- Coprime strides: every (learner, target) pair comes up before any repeats.
    local token = tokens[(n % #tokens) + 1]
    local target = targets[((n * 7) % #targets) + 1]
    wrk.headers["Authorization"] = "Bearer " .. token
    if attempts_file then
      local id, answer = target:match("^(%d+) (.+)$")
      return wrk.format("POST", "/api/v1/exercises/" .. id .. "/attempts", nil,
        '{"answer": "' .. answer .. '"}')
    end
    local value = (math.floor(n / #tokens) % 2 == 0) and "1" or "-1"
    return wrk.format("PUT", "/api/v1/questions/" .. target .. "/vote", nil,
      '{"value": ' .. value .. '}')
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
