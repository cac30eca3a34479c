-- save_event_type: writes one event type of a tenant's catalogue if its stored document is
-- still the one the caller read, the tenant exists, and (for a new type) the catalogue has
-- room and no type whose name differs only in letter case.
--
-- KEYS  catalogue (the tenant's event types: name → JSON), tenant
-- ARGV  name, doc (JSON), expected ('' when the type must not exist yet, else the document
--       the caller read), max_types
-- Answer {"status": "ok" | "no_tenant" | "changed" | "full" | "clash", "other"?: name}
local catalogue, tenant = unpack(KEYS)
local name, doc, expected, max_types = unpack(ARGV)

if redis.call('EXISTS', tenant) == 0 then return cjson.encode({status = 'no_tenant'}) end
local current = redis.call('HGET', catalogue, name)
if (current or '') ~= expected then return cjson.encode({status = 'changed'}) end
if not current then
  if redis.call('HLEN', catalogue) >= tonumber(max_types) then
    return cjson.encode({status = 'full'})
  end
  local folded = string.lower(name)
  for _, other in ipairs(redis.call('HKEYS', catalogue)) do
    if string.lower(other) == folded then return cjson.encode({status = 'clash', other = other}) end
  end
end
redis.call('HSET', catalogue, name, doc)
return cjson.encode({status = 'ok'})
