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
-- Events that match no target (without a log store) are not passed: they get no record, and
-- only count as received, through the trailing counters.
--
-- Received events also move the per-minute series (`store::series`): field `<minute>:r` of
-- the tenant's hash and of the shard-wide one, for the hour of now_ms the caller named them by.
--
-- KEYS  the events' records (n of them), then their tenants' counters (n), then their tenants'
--       series of the hour (n), then the shard's unfinished set, ship queue and shard-wide
--       series of the hour, then m more pairs of a tenant's counters and its series
-- ARGV  ttl_s, n, logged ('1' with a log store), now_ms, series_ttl_s, then per event:
--       entry_id, event_id, tenant, type, content_type, received_at_ms, targets
--       (comma-separated ids), fire-and-forget targets (comma-separated ids); then, per
--       trailing pair, how many record-less events it receives
-- Answer {"owned": [true | false, ...], "settled": ["<target>,<target>" | "", ...]}, one per event
local ttl, n, logged, now = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[4]
local series_ttl = ARGV[5]
local unfinished, ship, series_all = KEYS[3 * n + 1], KEYS[3 * n + 2], KEYS[3 * n + 3]

-- A first expansion is three commands per event (HSETNX claims the record, one HSET writes
-- every other field, EXPIRE), and the tenants' counters move once per call: per event the
-- script's cost is its share of the call, not one command per field. So do the series: two
-- commands (HINCRBY, EXPIRE) per tenant of the call, and two for the shard-wide hash.
local owned, settled, received, series_of = {}, {}, {}, {}
-- Writes `fields` into `record` once it holds `at_least` items (HSET's arguments go through
-- Lua's stack, which a tenant with thousands of targets would overflow in one call).
local function write(record, fields, at_least)
  if #fields >= at_least and #fields > 0 then
    redis.call('HSET', record, unpack(fields))
    for k = #fields, 1, -1 do fields[k] = nil end
  end
end
for i = 1, n do
  local record, stats = KEYS[i], KEYS[n + i]
  series_of[stats] = KEYS[2 * n + i]
  local a = 5 + (i - 1) * 8
  local entry, id, tenant, etype = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local ct, at, targets, unrecorded = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local position = string.match(entry, '^(%d+)%-%d+$') or now
  if redis.call('HSETNX', record, 'entry', entry) == 1 then
    local fields = {'tenant', tenant, 'type', etype, 'at', at}
    if ct ~= '' then fields[#fields + 1] = 'ct'; fields[#fields + 1] = ct end
    local open = 0
    for t in string.gmatch(targets, '[^,]+') do
      fields[#fields + 1] = 'd:' .. t; fields[#fields + 1] = 'p'
      open = open + 1
      write(record, fields, 1000)
    end
    for t in string.gmatch(unrecorded, '[^,]+') do
      fields[#fields + 1] = 'd:' .. t; fields[#fields + 1] = 'n'
      write(record, fields, 1000)
    end
    if logged then
      fields[#fields + 1] = 'open'; fields[#fields + 1] = open
      if open > 0 then
        redis.call('ZADD', unfinished, position, id)
      else
        fields[#fields + 1] = 'fin'; fields[#fields + 1] = 1
        fields[#fields + 1] = 'fin_at'; fields[#fields + 1] = now
        redis.call('ZADD', ship, position, id)
      end
    end
    write(record, fields, 1)
    redis.call('EXPIRE', record, ttl)
    received[stats] = (received[stats] or 0) + 1
    owned[i] = true
    settled[i] = ''
  else
    local owner = redis.call('HGET', record, 'entry')
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
for j = 1, (#KEYS - 3 * n - 3) / 2 do
  local stats = KEYS[3 * n + 2 + 2 * j]
  series_of[stats] = KEYS[3 * n + 3 + 2 * j]
  received[stats] = (received[stats] or 0) + tonumber(ARGV[5 + 8 * n + j])
end
local minute = string.format('%d:r', math.floor(tonumber(now) / 60000) % 60)
local total = 0
for stats, count in pairs(received) do
  redis.call('HINCRBY', stats, 'events_received', count)
  if count > 0 then
    redis.call('HINCRBY', series_of[stats], minute, count)
    redis.call('EXPIRE', series_of[stats], series_ttl)
    total = total + count
  end
end
if total > 0 then
  redis.call('HINCRBY', series_all, minute, total)
  redis.call('EXPIRE', series_all, series_ttl)
end
return cjson.encode({owned = owned, settled = settled})
