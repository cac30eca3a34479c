-- replay: moves one error queue entry back into the retry schedule, due now, with fresh
-- attempts. An entry whose event record has expired is removed without a replay.
--
-- KEYS  dead_letters, retries, stats, event_record, dead_letter_total
-- ARGV  dead_letter_id, member, target_id, state (JSON), now_ms
-- Answer {"replayed": 0 | 1}
local dead_letters, retries, stats, record, dead_total = unpack(KEYS)
local dl_id, member, target, state, now = unpack(ARGV)

if redis.call('HDEL', dead_letters, dl_id) == 0 then return cjson.encode({replayed = 0}) end
redis.call('DECR', dead_total)
if redis.call('EXISTS', record) == 0 then return cjson.encode({replayed = 0}) end
redis.call('HSET', record, 'd:' .. target, state)
if redis.call('ZADD', retries, now, member) == 1 then
  redis.call('HINCRBY', stats, 'in_retry', 1)
end
return cjson.encode({replayed = 1})
