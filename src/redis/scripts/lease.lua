-- lease: takes or renews a lease that one process holds at a time (a shard's shipping).
--
-- KEYS  lease
-- ARGV  holder, lease_ms
-- Answer {"held": true | false}
local lease = KEYS[1]
local holder, ms = ARGV[1], ARGV[2]

local current = redis.call('GET', lease)
if current == holder then
  redis.call('PEXPIRE', lease, ms)
  return cjson.encode({held = true})
end
if not current then
  redis.call('SET', lease, holder, 'PX', ms)
  return cjson.encode({held = true})
end
return cjson.encode({held = false})
