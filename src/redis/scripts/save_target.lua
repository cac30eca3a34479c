-- save_target: writes a target document if its version is still the expected one (0: it
-- must not exist yet) and its tenant exists.
--
-- KEYS  target, tenant_targets (the tenant's target index), tenant
-- ARGV  id, doc (JSON, secrets sealed), expected_version, tenant_id
-- Answer {"status": "ok" | "retry" | "exists" | "no_tenant"}
local target, tenant_targets, tenant = unpack(KEYS)
local id, doc, expected, tenant_id = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'no_tenant'}) end
local version = tonumber(redis.call('HGET', target, 'ver') or '0')
if version ~= tonumber(expected) then
  if tonumber(expected) == 0 then return cjson.encode({status = 'exists'}) end
  return cjson.encode({status = 'retry'})
end
redis.call('HSET', target, 'doc', doc, 'ver', version + 1, 'tenant', tenant_id)
redis.call('ZADD', tenant_targets, 0, id)
return cjson.encode({status = 'ok'})
