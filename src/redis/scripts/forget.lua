-- forget: removes a watched subject's state, deadline and history.
--
-- KEYS  watch, due, checks, incidents, counts, unwell
-- ARGV  subject
-- Answer {"deleted": <keys removed>}
local watch, due, checks, incidents, counts, unwell = unpack(KEYS)
local subject = ARGV[1]

local h = redis.call('HMGET', watch, 'kind', 'status')
if h[1] and h[2] then redis.call('HINCRBY', counts, h[1] .. ':' .. h[2], -1) end
redis.call('ZREM', due, subject)
redis.call('ZREM', unwell, subject)
return cjson.encode({deleted = redis.call('DEL', watch, checks, incidents)})
