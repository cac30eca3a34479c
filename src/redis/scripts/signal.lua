-- signal: records signals of watched subjects (monitors, and sources with a silence watch) of
-- one shard, in order. Per subject, in one atomic step: the deadline moves, the check is
-- recorded, the incident opens or resolves, and the alert event is appended to the shard's
-- stream when the status changed. Times are Redis's (`TIME`), whichever instance calls, plus
-- `ahead_ms` (how far the caller's clock was moved ahead: 0 but in tests).
--
-- A timeout (from the overdue checker) first claims its subject: it proceeds only if the
-- subject's deadline has passed, and removes it, so with several checkers each overdue
-- subject is handled once.
--
-- With a log store, every status record and every incident change is also appended to the
-- shard's history stream, which the shipper moves to the log store.
--
-- KEYS  due (the shard's deadlines), stream (the shard's events), counts, history, unwell
--       (the shard's subjects that are down or degraded), then per subject: watch, checks,
--       incidents
-- ARGV  layout (from queue::entry), checks_kept, incidents_kept, logged ('1' with a log
--       store), ahead_ms, then per subject:
--       subject, signal ('heartbeat' | 'start' | 'fail' | 'exit' | 'status' | 'event' |
--       'timeout'), wanted_status ('' for start), kind ('' for a timeout: read from the
--       state), window_ms, and `more`: newline-separated tenant, name, event_id, incident_id,
--       at (RFC 3339), reason, extra (JSON object members, '' for none). `more` is split only
--       when the status changes, so a routine heartbeat does not pay for it.
-- Answer {"subjects": [...]}, per subject {"status", "last_heartbeat"?, "changed",
--        "duration_ms"?, "alert"?, "kind"}, or {"skip": true} when a timeout finds the subject
--        no longer overdue, or {"gone": true} when a signal names a subject with no state, or
--        {"failed": "<why>"} when Redis refused what the subject's keys hold (each subject
--        runs protected, so one refused subject does not fail the others of the call).
local due, stream, counts, history, unwell = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local layout = entry_layout(ARGV[1])
local keep_checks, keep_incidents = tonumber(ARGV[2]), tonumber(ARGV[3])
local logged = ARGV[4] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) + tonumber(ARGV[5])

local function split_more(p)
  local t = {}
  for f in string.gmatch(p .. '\n', '([^\n]*)\n') do t[#t + 1] = f end
  return t
end

-- `extra` holds JSON object members written by the gateway (a status push's message and
-- metadata, an exit code). They are spliced in as they are, not decoded: Lua numbers would
-- lose the precision of large integers in metadata, and empty arrays would become objects.
local function encode_with(t, extra)
  local json = cjson.encode(t)
  if extra == '' then return json end
  return string.sub(json, 1, -2) .. ',' .. extra .. '}'
end

local function log_history(kind, subject, tenant, record)
  if logged then
    redis.call('XADD', history, '*', 'k', kind, 's', subject, 't', tenant, 'v', record)
  end
end

local function answer(status, hb, changed, dur, alert, kind)
  return {status = status, last_heartbeat = tonumber(hb), changed = changed,
    duration_ms = tonumber(dur), alert = alert, kind = kind}
end

local function one(watch, checks, incidents, a)
  local subject, signal, want = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local more = nil
  local function m(i)
    if not more then more = split_more(ARGV[a + 5]) end
    return more[i]
  end
  local kind, reason = ARGV[a + 3], nil
  local st = redis.call('HMGET', watch, 'status', 'started_at', 'incident', 'last_heartbeat',
    'tenant', 'kind', 'name', 'by')
  if signal == 'timeout' then
    local d = redis.call('ZSCORE', due, subject)
    if not d or tonumber(d) > now then return {skip = true} end
    redis.call('ZREM', due, subject)
    if not st[5] or not st[6] then return {skip = true} end
    kind = st[6]
    if kind == 'source' then reason = 'silent' end
  else
    -- The state is made by `describe` when the subject is created and removed when it is
    -- deleted: a signal never brings a deleted subject back.
    if not st[6] then return {gone = true} end
    redis.call('ZADD', due, now + tonumber(ARGV[a + 4]), subject)
  end
  local prev = st[1]
  if not prev then
    prev = 'new'
    redis.call('HSET', watch, 'status', prev, 'since', now)
    redis.call('HINCRBY', counts, kind .. ':' .. prev, 1)
  end
  local hb = st[4] or ''
  if signal == 'start' then
    redis.call('HSET', watch, 'started_at', now, 'last_signal', now)
    return answer(prev, hb, false, '', nil, kind)
  end
  local dur = ''
  if signal == 'heartbeat' or signal == 'fail' or signal == 'exit' then
    hb = tostring(now)
    if st[2] then
      dur = tostring(now - tonumber(st[2]))
      redis.call('HSET', watch, 'last_signal', now, 'last_heartbeat', now, 'last_duration_ms', dur)
      redis.call('HDEL', watch, 'started_at')
    else
      redis.call('HSET', watch, 'last_signal', now, 'last_heartbeat', now)
    end
  elseif signal ~= 'timeout' then
    redis.call('HSET', watch, 'last_signal', now)
  end
  -- A status the service pushed is changed by its next push, a failure or a timeout; a
  -- routine heartbeat does not override it (no degraded/up flapping).
  if want == 'up' and st[8] == 'push' and signal ~= 'status' then want = prev end
  if want == prev and signal ~= 'status' then return answer(want, hb, false, dur, nil, kind) end
  reason = reason or m(6)
  local tenant, name = st[5] or m(1), st[7] or m(2)
  local extra = ''
  if signal == 'status' or signal == 'exit' then extra = m(7) end
  if dur ~= '' then
    if extra ~= '' then extra = extra .. ',' end
    extra = extra .. '"duration_ms":' .. dur
  end
  local check = encode_with({at = m(5), signal = signal, status = want,
    previous_status = prev, reason = reason}, extra)
  redis.call('LPUSH', checks, check)
  redis.call('LTRIM', checks, 0, keep_checks - 1)
  log_history('check', subject, tenant, check)
  if want == prev then return answer(want, hb, false, dur, nil, kind) end
  local by = 'signal'
  if signal == 'status' then by = 'push' end
  redis.call('HSET', watch, 'status', want, 'since', now, 'by', by)
  redis.call('HINCRBY', counts, kind .. ':' .. prev, -1)
  redis.call('HINCRBY', counts, kind .. ':' .. want, 1)
  if want == 'down' or want == 'degraded' then
    redis.call('ZADD', unwell, now, subject)
  else
    redis.call('ZREM', unwell, subject)
  end
  local incident = st[3] or ''
  if want == 'up' then
    if incident ~= '' then
      local head = redis.call('LINDEX', incidents, 0)
      if head then
        local i = cjson.decode(head)
        if i.id == incident then
          i.resolved_at = m(5)
          i.resolved_reason = reason
          i.duration_ms = now - i.opened_ms
          local record = cjson.encode(i)
          redis.call('LSET', incidents, 0, record)
          log_history('incident', subject, tenant, record)
        end
      end
      redis.call('HSET', watch, 'incident', '')
    end
  elseif incident == '' then
    incident = m(4)
    local record = cjson.encode({id = incident, status = want, reason = reason,
      opened_at = m(5), opened_ms = now})
    redis.call('LPUSH', incidents, record)
    log_history('incident', subject, tenant, record)
    redis.call('LTRIM', incidents, 0, keep_incidents - 1)
    redis.call('HSET', watch, 'incident', incident)
  else
    local head = redis.call('LINDEX', incidents, 0)
    if head then
      local i = cjson.decode(head)
      if i.id == incident then
        i.status = want
        local record = cjson.encode(i)
        redis.call('LSET', incidents, 0, record)
        log_history('incident', subject, tenant, record)
      end
    end
  end
  -- The first signal of a new subject only starts the watch: nothing was wrong before it.
  if prev == 'new' and want == 'up' then return answer(want, hb, true, dur, nil, kind) end
  local etype = kind .. '.' .. want
  if kind == 'source' then
    if want == 'up' then etype = 'source.resumed' else etype = 'source.silent' end
  end
  local body = {type = etype, status = want, previous_status = prev, reason = reason,
    incident_id = cjson.null, at = m(5)}
  if incident ~= '' then body.incident_id = incident end
  body[kind] = {id = subject, name = name}
  local fields = entry_start(layout)
  entry_event(layout, fields, m(3), tenant, etype, 'application/json', encode_with(body, extra))
  redis.call('XADD', stream, '*', unpack(fields))
  return answer(want, hb, true, dur, etype, kind)
end

-- The message of an error raised inside pcall: Redis's reply, or Lua's own.
local function message(e)
  if type(e) == 'table' then return e.err or cjson.encode(e) end
  return tostring(e)
end

local out = {}
for i = 0, (#KEYS - 5) / 3 - 1 do
  local ok, r = pcall(one, KEYS[6 + i * 3], KEYS[7 + i * 3], KEYS[8 + i * 3], 6 + i * 6)
  if ok then out[i + 1] = r else out[i + 1] = {failed = message(r)} end
end
return cjson.encode({subjects = out})
