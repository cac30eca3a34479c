-- delete_target: deletes a target, its index entry and its transformation versions.
--
-- KEYS  target, tenant_targets, transforms
-- ARGV  id
-- Answer {"deleted": 0 | 1}
local target, tenant_targets, transforms = unpack(KEYS)
local id = ARGV[1]

redis.call('ZREM', tenant_targets, id)
if transforms then redis.call('DEL', transforms) end
return cjson.encode({deleted = redis.call('DEL', target)})
