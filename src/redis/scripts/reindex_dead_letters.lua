-- reindex_dead_letters: brings a tenant's error queue index (ids, score 0) in line with its
-- entries: every entry's id in it, no id without an entry. Run when their counts differ (an
-- error queue written before the index existed); atomic, so an entry written meanwhile is
-- neither missed nor dropped.
--
-- KEYS  dead_letters, dead_letter_order
-- ARGV  none
-- Answer {"entries": n}
local dead_letters, dead_order = unpack(KEYS)

local ids = redis.call('HKEYS', dead_letters)
-- ZADD's arguments go through the Lua stack: a bounded number at a time.
for i = 1, #ids, 500 do
  local args = {}
  for j = i, math.min(i + 499, #ids) do
    args[#args + 1] = 0
    args[#args + 1] = ids[j]
  end
  redis.call('ZADD', dead_order, unpack(args))
end
for _, m in ipairs(redis.call('ZRANGE', dead_order, 0, -1)) do
  if redis.call('HEXISTS', dead_letters, m) == 0 then redis.call('ZREM', dead_order, m) end
end
return cjson.encode({entries = #ids})
