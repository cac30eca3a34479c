-- save_target: writes a target document if its version is still the expected one (0: it
-- must not exist yet) and its tenant exists.
--
-- With a transformation that changed, its new version joins the target's last 20.
--
-- KEYS  target, tenant_targets (the tenant's target index), tenant, transforms (the target's
--       transformation versions)
-- ARGV  id, doc (JSON, secrets sealed), expected_version, tenant_id, transform version
--       entry (JSON, '' when the transformation did not change)
-- Answer {"status": "ok" | "retry" | "exists" | "no_tenant"}
local target, tenant_targets, tenant, transforms = unpack(KEYS)
local id, doc, expected, tenant_id, transform = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'no_tenant'}) end
local version = tonumber(redis.call('HGET', target, 'ver') or '0')
if version ~= tonumber(expected) then
  if tonumber(expected) == 0 then return cjson.encode({status = 'exists'}) end
  return cjson.encode({status = 'retry'})
end
redis.call('HSET', target, 'doc', doc, 'ver', version + 1, 'tenant', tenant_id)
redis.call('ZADD', tenant_targets, 0, id)
if transform and transform ~= '' then
  redis.call('LPUSH', transforms, transform)
  redis.call('LTRIM', transforms, 0, 19)
end
return cjson.encode({status = 'ok'})
