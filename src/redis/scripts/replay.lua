-- replay: sends a dead-lettered delivery again: back into the retry schedule, due now, with
-- fresh attempts, its error queue entry (if any) removed. Only a delivery that ended in the
-- error queue is replayed; one that succeeded or is still being tried is left alone (its
-- error queue entry, stale, is removed). An event whose record is gone is reported missing,
-- untouched, so the caller can bring it back from the log store and try again.
--
-- KEYS  dead_letters, retries, stats, event_record, dead_letter_total, attempts, unfinished,
--       ship, dead_letter_order
-- ARGV  dead_letter_id ('' for none), member, target_id, state (compact text), now_ms, ttl_s,
--       event_id, fresh ('1': a target the event was never delivered to is sent it too, as
--       for a target enabled again after the event came), due_ms (its place in the schedule)
-- Answer {"replayed": 0 | 1, "missing": true | false}
local dead_letters, retries, stats, record, dead_total, attempts, unfinished, ship, dead_order =
  unpack(KEYS)
local dl_id, member, target, state, now, ttl, id, fresh, due = unpack(ARGV)

if redis.call('EXISTS', record) == 0 then
  return cjson.encode({replayed = 0, missing = true})
end
if dl_id ~= '' then
  if redis.call('HDEL', dead_letters, dl_id) == 1 then redis.call('DECR', dead_total) end
  redis.call('ZREM', dead_order, dl_id)
end
local before = state_kind(redis.call('HGET', record, 'd:' .. target))
-- Never sent to the target: as good as finished for the record's count of open deliveries.
if before == nil and fresh == '1' then before = 'd' end
if before ~= 'd' then return cjson.encode({replayed = 0, missing = false}) end
redis.call('HSET', record, 'd:' .. target, state)
track(record, id, before, state_kind(state), unfinished, ship, now)
-- A shipped record was living out its hot window; it is live again.
redis.call('EXPIRE', record, ttl)
redis.call('EXPIRE', attempts, ttl)
if redis.call('ZADD', retries, due, member) == 1 then
  redis.call('HINCRBY', stats, 'in_retry', 1)
end
return cjson.encode({replayed = 1, missing = false})
