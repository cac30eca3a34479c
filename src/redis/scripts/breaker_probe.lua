-- breaker_probe: asks a target's circuit breaker whether a delivery may go (see record.lua
-- for its fields). Closed: yes. Open until a time not yet reached: no, wait until then. Open
-- past its time, or half-open with probes left: yes, as a probe (the breaker turns
-- half-open and counts the grant). Half-open with every probe granted: no; grants older than
-- probe_timeout are taken back (a dispatcher that died with its probe in flight must not hold
-- the breaker half-open forever).
--
-- KEYS  the tenant's target health hash
-- ARGV  target, now_ms, probe_requests, probe_timeout_ms
-- Answer (a JSON string) `c` | `p` | `o:<until_ms>` | `h:<retry_at_ms>`
local key, field = KEYS[1], ARGV[1] .. ':br'
local now, probes, timeout = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local v = redis.call('HGET', key, field)
local st, since, untl, opens, granted, okp =
  string.match(v or '', '^(%a):(%d+):(%d+):(%d+):(%d+):(%d+)$')
if not st or st == 'c' then return cjson.encode('c') end
since, untl, opens, granted, okp =
  tonumber(since), tonumber(untl), tonumber(opens), tonumber(granted), tonumber(okp)
local function grant(s, n)
  redis.call('HSET', key, field, string.format('h:%d:%d:%d:%d:%d', s, untl, opens, n, okp))
  return cjson.encode('p')
end
if st == 'o' then
  if now < untl then return cjson.encode('o:' .. untl) end
  okp = 0
  return grant(now, 1)
end
if granted < probes then return grant(since, granted + 1) end
if now - since >= timeout then
  okp = 0
  return grant(now, 1)
end
return cjson.encode('h:' .. (since + timeout))
