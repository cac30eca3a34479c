-- save_tokened: writes a document reached by a URL token (a source or a monitor) and points
-- its token at it, if its tenant exists and the stored document is still the one the change
-- was made from ('' for a creation: there must be none). The old token's entry is removed
-- when the token changed.
--
-- KEYS  doc_key (the document's hash), token_entry, tenant_index, tenant, old_token_entry
--       (the new entry again when the token did not change)
-- ARGV  id, doc (JSON, secret sealed), tenant_id, expected_doc
-- Answer {"status": "ok" | "changed" | "no_tenant"}
local doc_key, token_entry, tenant_index, tenant, old_token_entry = unpack(KEYS)
local id, doc, tenant_id, expected = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'no_tenant'}) end
if (redis.call('HGET', doc_key, 'doc') or '') ~= expected then
  return cjson.encode({status = 'changed'})
end
if old_token_entry ~= token_entry then redis.call('DEL', old_token_entry) end
redis.call('HSET', doc_key, 'doc', doc, 'tenant', tenant_id)
redis.call('SET', token_entry, id)
redis.call('ZADD', tenant_index, 0, id)
return cjson.encode({status = 'ok'})
