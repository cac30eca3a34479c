-- expand: marks each event of one stream entry as expanded by that entry, unless another
-- entry did it first. A command the Redis client re-sent after a reconnect appends a second
-- entry holding the same event ids: its events are reported as not owned, so each event
-- yields one delivery per target. The same entry read again (a reclaim) still owns its events.
--
-- KEYS  the events' records (n of them), then their tenants' counters (n)
-- ARGV  entry_id, ttl_s, n, then per event: tenant, type, content_type, received_at_ms,
--       targets (comma-separated ids)
-- Answer {"owned": [true | false, ...]}, one per event
local entry, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3])

local owned = {}
for i = 1, n do
  local record, stats = KEYS[i], KEYS[n + i]
  local a = 3 + (i - 1) * 5
  local tenant, etype, ct, at, targets = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4],
    ARGV[a + 5]
  local owner = redis.call('HGET', record, 'entry')
  if not owner then
    redis.call('HSET', record, 'entry', entry, 'tenant', tenant, 'type', etype, 'ct', ct,
      'at', at, 'targets', targets)
    redis.call('EXPIRE', record, ttl)
    redis.call('HINCRBY', stats, 'events_received', 1)
    owned[i] = true
  else
    owned[i] = owner == entry
  end
end
return cjson.encode({owned = owned})
