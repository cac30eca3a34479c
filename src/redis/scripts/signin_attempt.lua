-- signin_attempt: counts a sign-in attempt against its counters (the client's address, the
-- credential) before the credential is checked, atomically, so parallel attempts cannot slip
-- past the limit between a check and an increment. The first attempt of a window starts it
-- (a counter always has its TTL: set in the same step). A successful sign-in gives its
-- attempt back (`refund`), so only failures use up the window.
--
-- KEYS  the attempt's counters (one or two)
-- ARGV  mode ('take' | 'refund'), limit, window_ms
-- Answer {"allowed": bool, "wait_ms": n} (take: `allowed` false when a counter is past the
--        limit, `wait_ms` until its window ends); {"allowed": true, "wait_ms": 0} (refund)
local mode, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if mode == 'refund' then
  for _, key in ipairs(KEYS) do
    if redis.call('EXISTS', key) == 1 then redis.call('DECR', key) end
  end
  return cjson.encode({allowed = true, wait_ms = 0})
end
local allowed, wait = true, 0
for _, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  if n > limit then
    allowed = false
    if ttl > wait then wait = ttl end
  end
end
return cjson.encode({allowed = allowed, wait_ms = wait})
