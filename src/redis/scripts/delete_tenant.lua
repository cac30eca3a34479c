-- delete_tenant: deletes a tenant, its indexes and all its tokens. Optimistic: `retry` when
-- its tokens or its external id changed since the caller listed them.
--
-- KEYS  tenant, tenants, tenant_tokens, ext_index (placeholder when none), then every token
--       hash key of the tenant
-- ARGV  id, expected_ext_index, expected_token_count
-- Answer {"status": "ok" | "not_found" | "retry"}
local tenant, tenants, tenant_tokens, ext_index_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id, expected_ext, expected_tokens = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'not_found'}) end
if (redis.call('HGET', tenant, 'ext_idx') or '') ~= expected_ext then
  return cjson.encode({status = 'retry'})
end
if redis.call('HLEN', tenant_tokens) ~= tonumber(expected_tokens) then
  return cjson.encode({status = 'retry'})
end
for i = 5, #KEYS do redis.call('DEL', KEYS[i]) end
if expected_ext ~= '' then redis.call('DEL', ext_index_key) end
redis.call('DEL', tenant_tokens, tenant)
redis.call('ZREM', tenants, id)
return cjson.encode({status = 'ok'})
