-- wrk script for make bench: each request picks a user (Zipf-skewed over the first <population>
-- users of the file, hottest first) and sends that user's own pre-generated JWT.
-- wrk -s bench/load.lua URL -- zipf <endpoint|mix> <users file> <zipf exponent> <population>

local users, chars, cdf = {}, {}, {}
local endpoint, population
local mix = {}

local function path_for(name, u)
  if name == "subscription" then return "GET", "/api/subscription" end
  if name == "stats" then return "GET", "/api/subscription/stats" end
  if name == "characters" then return "GET", "/api/characters" end
  if name == "character" then return "GET", "/api/characters/" .. chars[math.random(#chars)] end
  if name == "chat_history" then return "GET", "/api/chat/" .. u.char .. "/sessions/" .. u.session .. "/messages" end
  if name == "coins" then return "GET", "/api/me/coins" end
  if name == "settings" then return "GET", "/api/generation/settings" end
  if name == "me" then return "GET", "/api/me" end
  if name == "floor" then return "GET", "/api/bench/floor" end
  if name == "chat_post" then
    return "POST", "/api/chat/" .. u.char .. "/sessions/" .. u.session .. "/messages",
      '{"content":"Tell me more about the sea, please ' .. math.random(1000000) .. '"}'
  end
  if name == "generation" then
    return "POST", "/api/generations", '{"prompt":"a lighthouse at dusk, number ' .. math.random(1000000) .. '"}'
  end
  error("unknown endpoint " .. name)
end

-- ~90% reads, ~10% writes, shaped like a chat app.
local MIX = {
  {"subscription", 20}, {"chat_history", 22}, {"characters", 14}, {"character", 14},
  {"coins", 10}, {"settings", 5}, {"stats", 5}, {"chat_post", 7}, {"generation", 3},
}

function setup(thread)
  thread:set("tid", math.random(1000000))
end

function init(args)
  endpoint = args[2] or "mix"
  local file = args[3]
  local s = tonumber(args[4] or "1.1")
  for line in io.lines(file) do
    if line:sub(1, 6) == "chars " then
      for c in line:sub(7):gmatch("%S+") do chars[#chars + 1] = c end
    else
      local token, char, session = line:match("^(%S+) (%S+) (%S+)$")
      users[#users + 1] = {auth = "Bearer " .. token, char = char, session = session}
    end
  end
  population = math.min(tonumber(args[5] or #users), #users)
  local total = 0
  for i = 1, population do
    total = total + 1 / (i ^ s)
    cdf[i] = total
  end
  for i = 1, population do cdf[i] = cdf[i] / total end
  for _, pair in ipairs(MIX) do
    for _ = 1, pair[2] do mix[#mix + 1] = pair[1] end
  end
  math.randomseed(os.time() + (tid or 0))
end

local function zipf_user()
  local r = math.random()
  local lo, hi = 1, population
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return users[lo]
end

function request()
  local u = zipf_user()
  local name = endpoint
  if name == "mix" then name = mix[math.random(#mix)] end
  local method, path, body = path_for(name, u)
  local headers = {Authorization = u.auth}
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
