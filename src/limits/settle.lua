-- Settlement of one scope, once: the lease (if any) is returned with its reservation, and the
-- real usage is added. Each instance numbers its settlements in the order it sends them; the
-- scope keeps the last number applied per instance, so a batch resent after a lost reply is not
-- counted twice.
--
-- KEYS[1..5] as in admit.lua
-- ARGV: now_us, lease ('' for usage admitted without a lease), tokens, spend (pico-USD string),
--       instance, sequence number
-- Returns 1 if applied, 0 if it had been applied already.

local seq_field, seq = 'seq:' .. ARGV[5], tonumber(ARGV[6])
if seq <= tonumber(redis.call('HGET', KEYS[1], seq_field) or '0') then
  return 0
end
redis.call('HSET', KEYS[1], seq_field, seq)
redis.call('PEXPIRE', KEYS[1], 86400000)
local now, lease, tokens, spend = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
if lease ~= '' then
  return_lease(lease)
end
if tokens > 0 then
  redis.call('HINCRBY', KEYS[3], math.floor(now / 1000000), tokens)
  redis.call('EXPIRE', KEYS[3], 120)
end
if spend ~= '0' then
  redis.call('INCRBY', KEYS[4], spend)
  redis.call('EXPIRE', KEYS[4], 2 * 86400)
  redis.call('INCRBY', KEYS[5], spend)
  redis.call('EXPIRE', KEYS[5], 32 * 86400)
end
return 1
