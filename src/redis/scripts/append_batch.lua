-- append_batch: appends one stream entry holding the events whose idempotency key (if any)
-- was not seen in the last 24 h, and records their keys, atomically (the keys share the
-- stream's slot). A key used twice in one batch counts as seen for the second use.
--
-- KEYS  stream, then the batch's idempotency keys
-- ARGV  layout (from queue::entry), idempotency_ttl_s, then per event: id, tenant, type,
--       content_type, body, key_index (its idempotency key's position in KEYS, 0: none),
--       fingerprint
-- Answer {"stored": [...]}, per event '' when appended, else the `<event id> <fingerprint>`
--        recorded for its key
local stream = KEYS[1]
local layout, ttl = entry_layout(ARGV[1]), ARGV[2]

local stored = {}
local fields = entry_start(layout)
local keep = {}
local n = (#ARGV - 2) / 7
for i = 0, n - 1 do
  local b = 3 + i * 7
  local k = tonumber(ARGV[b + 5])
  local prev = false
  if k > 0 then
    prev = redis.call('GET', KEYS[k])
    if not prev then prev = keep[KEYS[k]] or false end
  end
  if prev then
    stored[i + 1] = prev
  else
    entry_event(layout, fields, ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4])
    if k > 0 then keep[KEYS[k]] = ARGV[b] .. ' ' .. ARGV[b + 6] end
    stored[i + 1] = ''
  end
end
if #fields > 2 then
  redis.call('XADD', stream, '*', unpack(fields))
  for key, v in pairs(keep) do redis.call('SET', key, v, 'EX', ttl) end
end
return cjson.encode({stored = stored})
