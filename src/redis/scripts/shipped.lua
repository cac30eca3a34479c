-- shipped: marks events as stored in the log store: each leaves the ship queue and its
-- record and attempts get the hot window as their time to live. An event that finished
-- again since it was read (a replay: its finish count moved on) stays queued, so its newer
-- state is shipped too.
--
-- KEYS  ship, then per event: event_record, attempts
-- ARGV  hot_window_s, n, then per event: event_id, fin (the finish count that was read)
-- Answer {"shipped": count}
local ship = KEYS[1]
local hot, n = ARGV[1], tonumber(ARGV[2])

local shipped = 0
for i = 1, n do
  local record, attempts = KEYS[1 + (i - 1) * 2 + 1], KEYS[1 + (i - 1) * 2 + 2]
  local id, fin = ARGV[2 + (i - 1) * 2 + 1], ARGV[2 + (i - 1) * 2 + 2]
  local now_fin = redis.call('HGET', record, 'fin')
  if not now_fin or now_fin == fin then
    redis.call('ZREM', ship, id)
    if now_fin then
      redis.call('EXPIRE', record, hot)
      redis.call('EXPIRE', attempts, hot)
    end
    shipped = shipped + 1
  end
end
return cjson.encode({shipped = shipped})
