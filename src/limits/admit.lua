-- Admission of one scope (a key, or a model for all keys), atomic: check every limit, and only if
-- all pass, take a lease and reserve the estimate. Every key of a scope shares one hash tag, so
-- the script runs in a Redis Cluster too.
--
-- KEYS[1] scope hash: tat (GCRA theoretical arrival time, µs), t (its emission interval),
--         rt (reserved tokens), rs (reserved spend, pico-USD), r:<lease> = "tokens:spend"
-- KEYS[2] leases in flight: zset lease -> expiry (µs); an expired lease's reservation is returned
-- KEYS[3] settled tokens per unix second: hash second -> tokens
-- KEYS[4] settled spend of the day; KEYS[5] of the month (pico-USD, strings: exact beyond 2^53)
-- ARGV: now_us, lease, lease_expiry_us, rpm, tpm, concurrency (0: none), daily, monthly
--       (pico-USD, '' none), estimated tokens, estimated spend (pico-USD), '1' when the spend is
--       exact (a media task: admitted only if it fits whole in what a budget has left)
-- Returns {0, refused_by, retry_after_s}, {0, 'daily_exact' | 'monthly_exact', spent} or
--         {1, requests_remaining, requests_reset_ms, tokens_used, tokens_reset_ms}.

-- Money is compared as decimal strings: Lua's numbers are doubles, exact only to 2^53 pico-USD.
local function dec_add(a, b)
  local digits, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry + (i > 0 and tonumber(a:sub(i, i)) or 0) + (j > 0 and tonumber(b:sub(j, j)) or 0)
    table.insert(digits, 1, s % 10)
    carry = math.floor(s / 10)
    i, j = i - 1, j - 1
  end
  local out = table.concat(digits):gsub('^0+', '')
  return out == '' and '0' or out
end
local function dec_at_least(a, b)
  if #a ~= #b then return #a > #b end
  return a >= b
end
local function non_negative(s)
  if not s or s:sub(1, 1) == '-' then return '0' end
  return s
end

local now = tonumber(ARGV[1])
local lease, expiry = ARGV[2], tonumber(ARGV[3])
local rpm, tpm, conc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local daily, monthly = ARGV[7], ARGV[8]
local est_tokens, est_spend = tonumber(ARGV[9]), ARGV[10]

-- Leases of a crashed instance expire: their slots and reservations come back.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  return_lease(id)
end

if conc > 0 and redis.call('ZCARD', KEYS[2]) >= conc then
  return {0, 'concurrency', 1}
end

local t, tau, tat = 0, 0, 0
if rpm > 0 then
  t = math.max(1, math.floor(60000000 / rpm))
  tau = t * (rpm - 1)
  tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
  local t_old = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
  -- A changed rpm carries the requests still outstanding over as a count, not as time.
  if t_old > 0 and t_old ~= t then
    local ahead = math.max(tat - now, 0)
    tat = now + math.floor(ahead / t_old) * t + math.floor((ahead % t_old) * t / t_old)
  end
  tat = math.max(tat, now)
  if tat - now > tau then
    return {0, 'requests', math.max(1, math.ceil((tat - tau - now) / 1000000))}
  end
end

local sec = math.floor(now / 1000000)
local used, oldest = 0, nil
local live = {}
if tpm > 0 then
  local b = redis.call('HGETALL', KEYS[3])
  for i = 1, #b, 2 do
    local s, n = tonumber(b[i]), tonumber(b[i + 1])
    if s > sec - 60 then
      used = used + n
      table.insert(live, {s, n})
      if not oldest or s < oldest then oldest = s end
    else
      redis.call('HDEL', KEYS[3], b[i])
    end
  end
  local settled = used
  used = used + math.max(0, tonumber(redis.call('HGET', KEYS[1], 'rt') or '0'))
  -- A request larger than the whole limit passes when nothing else is in use: slow, not refused forever.
  if used > 0 and used + est_tokens > tpm then
    -- Held by requests in flight, not used: they settle within seconds.
    if settled == 0 or settled + est_tokens <= tpm then
      return {0, 'tokens', 1}
    end
    table.sort(live, function(x, y) return x[1] < y[1] end)
    local free, retry = math.max(tpm - used, 0), 60
    for _, e in ipairs(live) do
      free = free + e[2]
      if free >= est_tokens then
        retry = math.max(1, math.ceil(((e[1] + 60) * 1000000 - now) / 1000000))
        break
      end
    end
    return {0, 'tokens', retry}
  end
end

if daily ~= '' or monthly ~= '' then
  local reserved = non_negative(redis.call('HGET', KEYS[1], 'rs'))
  local day_spent = non_negative(redis.call('GET', KEYS[4]))
  local month_spent = non_negative(redis.call('GET', KEYS[5]))
  -- Spent: refused until the period ends. Only held by requests in flight: a rate limit of 1 s.
  if daily ~= '' and dec_at_least(day_spent, daily) then
    return {0, 'daily', 0}
  end
  if monthly ~= '' and dec_at_least(month_spent, monthly) then
    return {0, 'monthly', 0}
  end
  local exact = ARGV[11] == '1'
  -- more than the cap: the cap plus one is at least it
  local function over(amount, cap) return dec_at_least(amount, dec_add(cap, '1')) end
  if exact and daily ~= '' and over(dec_add(day_spent, est_spend), daily) then
    return {0, 'daily_exact', day_spent}
  end
  if exact and monthly ~= '' and over(dec_add(month_spent, est_spend), monthly) then
    return {0, 'monthly_exact', month_spent}
  end
  for _, p in ipairs({{daily, day_spent}, {monthly, month_spent}}) do
    local cap, held = p[1], dec_add(p[2], reserved)
    if cap ~= '' and (dec_at_least(held, cap) or (exact and over(dec_add(held, est_spend), cap))) then
      return {0, 'budget', 1}
    end
  end
end

redis.call('ZADD', KEYS[2], expiry, lease)
redis.call('HSET', KEYS[1], 'r:' .. lease, ARGV[9] .. ':' .. est_spend)
if est_tokens > 0 then redis.call('HINCRBY', KEYS[1], 'rt', est_tokens) end
if est_spend ~= '0' then redis.call('HINCRBY', KEYS[1], 'rs', est_spend) end
local remaining, reset_ms = -1, 0
if rpm > 0 then
  tat = tat + t
  redis.call('HSET', KEYS[1], 'tat', tat, 't', t)
  local ahead = tat - now
  remaining = math.floor((math.max(tau - ahead, -t) + t) / t)
  reset_ms = math.floor(ahead / 1000)
end
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PEXPIRE', KEYS[2], 86400000)
local tokens_reset_ms = 0
if oldest then
  tokens_reset_ms = math.max(0, math.floor(((oldest + 60) * 1000000 - now) / 1000))
elseif used + est_tokens > 0 then
  -- only reservations so far: they count for a whole minute once they settle
  tokens_reset_ms = 60000
end
return {1, remaining, reset_ms, used + est_tokens, tokens_reset_ms}
