-- publish_invalidation: numbers a cache invalidation and publishes it as `<seq> <message>`, so
-- a subscriber that missed one (its connection dropped) can tell.
--
-- KEYS  seq       the invalidation counter
-- ARGV  channel, message (an encoded invalidation)
-- Answer {"seq": <number>}
local seq = KEYS[1]
local channel, message = unpack(ARGV)

local n = redis.call('INCR', seq)
redis.call('PUBLISH', channel, n .. ' ' .. message)
return cjson.encode({seq = n})
