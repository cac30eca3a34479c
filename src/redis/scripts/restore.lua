-- restore: brings an event back into Redis from the log store, so that a replay or a
-- recovery can send it again: its record with the body and every delivery state, unless a
-- record is there already. Its `entry` is 'restored': no stream entry holds it any more.
--
-- KEYS  event_record
-- ARGV  ttl_s, logged ('1' with a log store), tenant, type, content_type, received_at_ms,
--       body, then target_id, state (compact text) pairs
-- Answer {"restored": true | false}
local record = KEYS[1]
local ttl, logged, tenant, etype, ct, at, body = ARGV[1], ARGV[2] == '1', ARGV[3], ARGV[4],
  ARGV[5], ARGV[6], ARGV[7]

if redis.call('EXISTS', record) == 1 then return cjson.encode({restored = false}) end
redis.call('HSET', record, 'entry', 'restored', 'tenant', tenant, 'type', etype, 'at', at,
  'body', body)
if ct ~= '' then redis.call('HSET', record, 'ct', ct) end
local open = 0
for i = 8, #ARGV, 2 do
  redis.call('HSET', record, 'd:' .. ARGV[i], ARGV[i + 1])
  if not is_final(state_kind(ARGV[i + 1])) then open = open + 1 end
end
if logged then redis.call('HSET', record, 'open', open, 'fin', 0) end
redis.call('EXPIRE', record, ttl)
return cjson.encode({restored = true})
