-- expand: marks each event of the stream entries of one read as expanded by its entry, unless
-- another entry did it first (one call for a whole read: the guard costs per read, not per
-- event or per entry). A command the Redis client re-sent after a reconnect appends a second
-- entry holding the same event ids: its events are reported as not owned, so each event
-- yields one delivery per target. The same entry read again (a reclaim, a takeover) still owns
-- its events, and names the deliveries that need nothing more: an outcome recorded (delivered,
-- waiting for a retry, in the error queue), fire-and-forget ones (sent once), and targets the
-- first expansion did not include. Only the deliveries still pending ('p', in flight when the
-- first reader died) are made again.
-- Each delivery starts pending ('p'); a fire-and-forget one is recorded as sent ('n') at once,
-- since nothing waits for its response.
--
-- KEYS  the events' records (n of them), then their tenants' counters (n), then the shard's
--       unfinished set and ship queue
-- ARGV  ttl_s, n, logged ('1' with a log store), now_ms, then per event: entry_id, event_id,
--       tenant, type, content_type, received_at_ms, targets (comma-separated ids),
--       fire-and-forget targets (comma-separated ids)
-- Answer {"owned": [true | false, ...], "settled": ["<target>,<target>" | "", ...]}, one per event
local ttl, n, logged, now = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local unfinished, ship = KEYS[2 * n + 1], KEYS[2 * n + 2]

local owned, settled = {}, {}
for i = 1, n do
  local record, stats = KEYS[i], KEYS[n + i]
  local a = 4 + (i - 1) * 8
  local entry, id, tenant, etype = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local ct, at, targets, unrecorded = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local position = string.match(entry, '^(%d+)%-%d+$') or now
  local owner = redis.call('HGET', record, 'entry')
  if not owner then
    redis.call('HSET', record, 'entry', entry, 'tenant', tenant, 'type', etype, 'at', at)
    if ct ~= '' then redis.call('HSET', record, 'ct', ct) end
    local open = 0
    for t in string.gmatch(targets, '[^,]+') do
      redis.call('HSET', record, 'd:' .. t, 'p')
      open = open + 1
    end
    for t in string.gmatch(unrecorded, '[^,]+') do redis.call('HSET', record, 'd:' .. t, 'n') end
    if logged then
      redis.call('HSET', record, 'open', open)
      if open > 0 then
        redis.call('ZADD', unfinished, position, id)
      else
        redis.call('HSET', record, 'fin', 1, 'fin_at', now)
        redis.call('ZADD', ship, position, id)
      end
    end
    redis.call('EXPIRE', record, ttl)
    redis.call('HINCRBY', stats, 'events_received', 1)
    owned[i] = true
    settled[i] = ''
  else
    owned[i] = owner == entry
    local done = {}
    if owned[i] then
      for t in string.gmatch(targets .. ',' .. unrecorded, '[^,]+') do
        local state = redis.call('HGET', record, 'd:' .. t)
        if not state or string.sub(state, 1, 1) ~= 'p' then done[#done + 1] = t end
      end
    end
    settled[i] = table.concat(done, ',')
  end
end
return cjson.encode({owned = owned, settled = settled})
