-- revoke_token: revokes one token of a tenant.
--
-- KEYS  tenant_tokens, token (the token hash's key)
-- ARGV  token_id, token_hash
-- Answer {"status": "ok" | "not_found"}
local tenant_tokens, token = unpack(KEYS)
local token_id, token_hash = unpack(ARGV)

if redis.call('HGET', tenant_tokens, token_id) ~= token_hash then
  return cjson.encode({status = 'not_found'})
end
redis.call('HDEL', tenant_tokens, token_id)
redis.call('DEL', token)
return cjson.encode({status = 'ok'})
