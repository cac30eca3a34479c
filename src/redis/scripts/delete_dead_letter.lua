-- delete_dead_letter: removes one error queue entry.
--
-- KEYS  dead_letters, dead_letter_total, dead_letter_order
-- ARGV  dead_letter_id
-- Answer {"deleted": 0 | 1}
local dead_letters, dead_total, dead_order = unpack(KEYS)
local dl_id = ARGV[1]

redis.call('ZREM', dead_order, dl_id)
if redis.call('HDEL', dead_letters, dl_id) == 0 then return cjson.encode({deleted = 0}) end
redis.call('DECR', dead_total)
return cjson.encode({deleted = 1})
