-- gather: puts events in their batched targets' gathering lists, in order, once each: an
-- event's record is marked (`g:<target>`) in the same step, so a call re-sent after a lost
-- reply, or an entry read again after a takeover, gathers nothing twice. The body is kept in
-- the record (its stream entry is acknowledged once it is gathered). A target's next batch is
-- due `max_wait_ms` after its first event, or at once when it holds `max_events`.
--
-- KEYS  gathering, then per item: event_record, the target's gathering list
-- ARGV  n, now_ms, then per item: event_id, target_id, member ('<tenant>|<target>'), body,
--       content_type, max_events, max_wait_ms
-- Answer {"gathered": n}
local gathering = KEYS[1]
local n, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local gathered = 0
for i = 1, n do
  local record, list = KEYS[2 * i], KEYS[2 * i + 1]
  local a = 2 + (i - 1) * 7
  local id, target, member, body, ct = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local max_events, max_wait = tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7])
  if redis.call('HSETNX', record, 'g:' .. target, 1) == 1 then
    keep_body(record, body, ct)
    local len = redis.call('RPUSH', list, id)
    if len >= max_events then
      redis.call('ZADD', gathering, now, member)
    elseif len == 1 then
      redis.call('ZADD', gathering, 'NX', now + max_wait, member)
    end
    gathered = gathered + 1
  end
end
return cjson.encode({gathered = gathered})
