-- cut_batch: cuts a batched target's next batch from its gathering list (at most max_events,
-- oldest first) into a batch record, due to be sent now; the rest waits for the next cut,
-- due at once when it is a whole batch already, else max_wait_ms from now.
--
-- KEYS  gather (the target's list), gathering, batches, batch (the new batch's record)
-- ARGV  member ('<tenant>|<target>'), batch_id, tenant, target, max_events, max_wait_ms, now_ms
-- Answer {"size": events in the batch (0: nothing was gathered, no batch), "left": events still
--        gathered (a whole batch or more: the caller cuts again at once)}
local list, gathering, batches, batch = unpack(KEYS)
local member, batch_id, tenant, target, max_events, max_wait, now = unpack(ARGV)
max_events, max_wait, now = tonumber(max_events), tonumber(max_wait), tonumber(now)

local ids = redis.call('LRANGE', list, 0, max_events - 1)
if #ids == 0 then
  redis.call('ZREM', gathering, member)
  return cjson.encode({size = 0, left = 0})
end
redis.call('LTRIM', list, #ids, -1)
redis.call('HSET', batch, 'tenant', tenant, 'target', target, 'events', table.concat(ids, ','),
  'attempts', 0, 'created_at', now)
redis.call('ZADD', batches, now, batch_id)
local left = redis.call('LLEN', list)
if left >= max_events then
  redis.call('ZADD', gathering, now, member)
elseif left > 0 then
  redis.call('ZADD', gathering, now + max_wait, member)
else
  redis.call('ZREM', gathering, member)
end
return cjson.encode({size = #ids, left = left})
