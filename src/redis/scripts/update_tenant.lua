-- update_tenant: changes a tenant's fields. Optimistic: `retry` when its external id changed
-- since the caller read it (the caller reads again and retries).
--
-- KEYS  tenant          the tenant's hash
--       old_ext_index   the current external-id index entry (placeholder when none)
--       new_ext_index   the new external-id index entry (placeholder when none)
-- ARGV  id, expected_ext_index, set_name ('1'/'0'), name, set_active, active, set_rate,
--       rate_per_second, rate_burst, set_ext, sealed_ext, new_ext_index, now_ms,
--       set_catalogue, catalogue, set_keep_headers, keep_headers
-- Answer {"status": "ok" | "not_found" | "retry" | "external_id_taken"}
local tenant, old_ext_key, new_ext_key = unpack(KEYS)
local id, expected_ext, set_name, name, set_active, active, set_rate, rl_ps, rl_burst,
  set_ext, sealed_ext, new_ext, now, set_catalogue, catalogue, set_keep, keep_headers = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'not_found'}) end
local current = redis.call('HGET', tenant, 'ext_idx') or ''
if current ~= expected_ext then return cjson.encode({status = 'retry'}) end
if set_ext == '1' and new_ext ~= current then
  if new_ext ~= '' then
    local owner = redis.call('GET', new_ext_key)
    if owner and owner ~= id then return cjson.encode({status = 'external_id_taken'}) end
    redis.call('SET', new_ext_key, id)
  end
  if current ~= '' then redis.call('DEL', old_ext_key) end
  redis.call('HSET', tenant, 'ext', sealed_ext, 'ext_idx', new_ext)
end
if set_name == '1' then redis.call('HSET', tenant, 'name', name) end
if set_active == '1' then redis.call('HSET', tenant, 'active', active) end
if set_rate == '1' then redis.call('HSET', tenant, 'rl_ps', rl_ps, 'rl_burst', rl_burst) end
if set_catalogue == '1' then redis.call('HSET', tenant, 'catalogue', catalogue) end
if set_keep == '1' then redis.call('HSET', tenant, 'keep_headers', keep_headers) end
redis.call('HSET', tenant, 'updated_at', now)
return cjson.encode({status = 'ok'})
