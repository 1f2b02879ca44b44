-- Shared by admit.lua and settle.lua (prepended to each: see shared.rs).
-- Returns lease `id` of a scope: its slot (KEYS[2]) and what it reserved (KEYS[1] r:<id>).
-- Amounts are passed to HINCRBY as strings: Redis adds them exactly.
local function return_lease(id)
  local r = redis.call('HGET', KEYS[1], 'r:' .. id)
  if r then
    local t, c = string.match(r, '^(%d+):(%d+)$')
    if t ~= '0' then redis.call('HINCRBY', KEYS[1], 'rt', '-' .. t) end
    if c ~= '0' then redis.call('HINCRBY', KEYS[1], 'rs', '-' .. c) end
    redis.call('HDEL', KEYS[1], 'r:' .. id)
  end
  redis.call('ZREM', KEYS[2], id)
end

