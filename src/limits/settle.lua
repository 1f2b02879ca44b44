-- Settlement of one scope, once: the lease (if any) is returned with its reservation, and the
-- real usage is added. Each instance numbers its settlements in the order it sends them; the
-- scope keeps the last number applied per instance (KEYS[6], which expires a day after that
-- instance's last settlement), so a batch resent after a lost reply is not counted twice.
--
-- KEYS[1..5] as in admit.lua; KEYS[6] the last number applied from this instance
-- ARGV: now_us, lease ('' for usage admitted without a lease), tokens, spend (pico-USD string),
--       sequence number
-- Returns 1 if applied, 0 if it had been applied already.

local seq = tonumber(ARGV[5])
if seq <= tonumber(redis.call('GET', KEYS[6]) or '0') then
  return 0
end
redis.call('SET', KEYS[6], seq, 'EX', 86400)
local now, lease, tokens, spend = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
if lease ~= '' then
  return_lease(lease)
end
if tokens > 0 then
  redis.call('HINCRBY', KEYS[3], math.floor(now / 1000000), tokens)
  redis.call('EXPIRE', KEYS[3], 120)
end
if spend ~= '0' then
  -- A negative spend (a failed task's refund) never takes a count below 0: the charge it gives
  -- back may be gone with a Redis that lost its data.
  for _, k in ipairs({KEYS[4], KEYS[5]}) do
    if redis.call('INCRBY', k, spend) < 0 then
      redis.call('SET', k, 0)
    end
  end
  redis.call('EXPIRE', KEYS[4], 2 * 86400)
  redis.call('EXPIRE', KEYS[5], 32 * 86400)
end
return 1
