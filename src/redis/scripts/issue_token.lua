-- issue_token: registers a token for a tenant; idempotent for a token already registered to
-- that tenant (config-declared tokens are registered at every start).
--
-- KEYS  tenant, token (the token hash's key), tenant_tokens
-- ARGV  tenant_id, token_id, token_hash, now_ms, max_tokens
-- Answer {"status": "ok" | "exists" | "not_found" | "taken" | "too_many"}
local tenant, token, tenant_tokens = unpack(KEYS)
local tenant_id, token_id, token_hash, now, max_tokens = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'not_found'}) end
local owner = redis.call('HGET', token, 'tenant')
if owner then
  if owner == tenant_id then
    redis.call('HSET', tenant_tokens, redis.call('HGET', token, 'id'), token_hash)
    return cjson.encode({status = 'exists'})
  end
  return cjson.encode({status = 'taken'})
end
if redis.call('HLEN', tenant_tokens) >= tonumber(max_tokens) then
  return cjson.encode({status = 'too_many'})
end
redis.call('HSET', token, 'tenant', tenant_id, 'id', token_id, 'created_at', now)
redis.call('HSET', tenant_tokens, token_id, token_hash)
return cjson.encode({status = 'ok'})
