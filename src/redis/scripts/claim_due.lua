-- claim_due: claims the shard's due retries by moving each one's score to the end of a lease,
-- so no other instance takes it, and a crash before its outcome is recorded only delays it to
-- the lease's end.
--
-- KEYS  retries
-- ARGV  now_ms, lease_until_ms, limit
-- Answer {"members": ["<event id>:<target id>", ...]}
local retries = KEYS[1]
local now, lease_until, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])

local due = redis.call('ZRANGEBYSCORE', retries, '-inf', now, 'LIMIT', 0, limit)
for _, m in ipairs(due) do redis.call('ZADD', retries, lease_until, m) end
return cjson.encode({members = due})
