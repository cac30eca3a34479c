-- describe: creates a watched subject's live state (status `new`) or, when it exists, renames
-- it and moves its deadline to its last signal plus the new window. A subject's state exists
-- from its creation to its deletion: signals never create it.
--
-- KEYS  watch (the subject's hash), due (the shard's deadlines), counts
-- ARGV  subject, tenant, kind, name, window_ms, ahead_ms (how far the caller's clock was moved
--       ahead of Redis's `TIME`: 0 but in tests)
-- Answer {"created": true | false}
local watch, due, counts = unpack(KEYS)
local subject, tenant, kind, name, window, ahead = unpack(ARGV)

if redis.call('EXISTS', watch) == 0 then
  local clock = redis.call('TIME')
  redis.call('HSET', watch, 'tenant', tenant, 'kind', kind, 'name', name,
    'status', 'new', 'since',
    tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ahead))
  redis.call('HINCRBY', counts, kind .. ':new', 1)
  return cjson.encode({created = true})
end
redis.call('HSET', watch, 'name', name)
local last = redis.call('HGET', watch, 'last_signal')
if last and redis.call('ZSCORE', due, subject) then
  redis.call('ZADD', due, tonumber(last) + tonumber(window), subject)
end
return cjson.encode({created = false})
