-- delete_target: deletes a target and its index entry.
--
-- KEYS  target, tenant_targets
-- ARGV  id
-- Answer {"deleted": 0 | 1}
local target, tenant_targets = unpack(KEYS)
local id = ARGV[1]

redis.call('ZREM', tenant_targets, id)
return cjson.encode({deleted = redis.call('DEL', target)})
