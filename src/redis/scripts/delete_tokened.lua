-- delete_tokened: deletes a document reached by a URL token, its token entry and its index
-- entry.
--
-- KEYS  doc_key, token_entry, tenant_index
-- ARGV  id
-- Answer {"deleted": 0 | 1}
local doc_key, token_entry, tenant_index = unpack(KEYS)
local id = ARGV[1]

redis.call('ZREM', tenant_index, id)
redis.call('DEL', token_entry)
return cjson.encode({deleted = redis.call('DEL', doc_key)})
