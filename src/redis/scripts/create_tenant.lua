-- create_tenant: creates a tenant, and its first token when one is given, unless the id or the
-- external id is taken. Every key is in the control-plane slot {m}.
--
-- KEYS  tenant          the tenant's hash
--       tenants         sorted set of every tenant id
--       ext_index       external-id index entry (a placeholder key when there is none)
--       token           the token's hash (a placeholder key when there is none)
--       tenant_tokens   the tenant's token ids → token hashes
-- ARGV  id, name, sealed_ext, ext_index, active ('1'/'0'), rate_per_second, rate_burst,
--       now_ms, origin, token_id (''), token_hash (''), catalogue (off|warn|enforce),
--       keep_headers (names, newline-separated)
-- Answer {"status": "ok" | "exists" | "external_id_taken"}
local tenant, tenants, ext_index_key, token_key, tenant_tokens = unpack(KEYS)
local id, name, sealed_ext, ext_index, active, rl_ps, rl_burst, now, origin, token_id, token_hash,
  catalogue, keep_headers = unpack(ARGV)

if redis.call('EXISTS', tenant) == 1 then return cjson.encode({status = 'exists'}) end
if ext_index ~= '' then
  if not redis.call('SET', ext_index_key, id, 'NX') then
    return cjson.encode({status = 'external_id_taken'})
  end
end
redis.call('HSET', tenant, 'name', name, 'ext', sealed_ext, 'ext_idx', ext_index,
  'active', active, 'rl_ps', rl_ps, 'rl_burst', rl_burst, 'created_at', now, 'updated_at', now,
  'origin', origin, 'catalogue', catalogue or 'off', 'keep_headers', keep_headers or '')
redis.call('ZADD', tenants, 0, id)
if token_id ~= '' then
  redis.call('HSET', token_key, 'tenant', id, 'id', token_id, 'created_at', now)
  redis.call('HSET', tenant_tokens, token_id, token_hash)
end
return cjson.encode({status = 'ok'})
