-- rate_limit: one delivery against a target's limit, shared by every dispatcher: a GCRA
-- (the generic cell rate algorithm) on Redis's own clock, so dispatchers whose clocks differ
-- still agree. The key holds the theoretical arrival time (µs) and expires once idle.
--
-- KEYS  the target's limit key
-- ARGV  period_us (1 / per_second), burst
-- Answer 0 when the delivery may go, else how long to wait (µs).
local period, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local tolerance = period * (burst - 1)
local wait = tat - tolerance - now
if wait > 0 then return cjson.encode(math.ceil(wait)) end
local new_tat = tat + period
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return cjson.encode(0)
