-- record: records delivery outcomes of one shard, each atomically: the delivery state, the
-- bounded attempt log (fields `a:<slot>` of the record, `an` counting), the tenant's counters,
-- the retry schedule or the error queue, and (with a log store) whether the event is now
-- finished and ready to ship. A record that is gone (expired after shipping, or flushed) is
-- not written again: a late duplicate outcome must not leave a record without a lifetime.
-- A first-attempt success is four commands (state read, attempt counter, one HSET of state
-- and attempt, schedule removal); the counters of the whole call move once per tenant.
-- So do the per-minute series (`store::series`, fields `<minute>:<metric>` of the hour's
-- hashes the caller named by now_ms): succeeded (`s`), attempts (`a`), failed attempts (`f`,
-- every attempt that did not deliver) and their latency (`l`), at most four HINCRBY and one
-- EXPIRE per series hash of the call (the tenants' and the shard-wide one).
-- How each target fares (`store::deliveries::health`) moves once per target and call too: its
-- ten-minute bucket of attempts and failures, its newest attempt, when it last delivered and
-- since when it fails (the first failure after its last success).
--
-- KEYS  retries (the shard's schedule), dead_letter_total, unfinished, ship, the shard-wide
--       series of the hour, then per outcome: event_record, stats, dead_letters, the
--       tenant's series of the hour, dead_letter_order, the tenant's target health
-- ARGV  n, attempts_kept, ttl_s, now_ms, logged ('1' with a log store), series_ttl_s, then
--       per outcome: event_id, target_id, state (compact text), attempt (compact text or ''),
--       kind ('done' | 'retry' | 'held' | 'dead' | 'drop': given up, the target is gone),
--       due_ms, member, body, content_type, dead_letter_id, dead_letter (JSON), latency_ms
--       ('' when there was no response), attempt_ms (the attempt's duration, response or
--       not; '' when no attempt was made), gate ('' or, for an attempt, what the target's
--       circuit breaker makes of it: `class,probe,pause_until_ms,enabled,window_ms,
--       min_requests,failure_ratio,open_ms,max_open_ms,probe_requests,disable_after_ms,
--       concurrency_limit` (the dispatcher's in-flight limit, kept as `<target>:cl`);
--       class `o` (counts as a success: 2xx, and 4xx but 429), `f` (a failure: network
--       error, timeout, 5xx) or `n` (not counted: 429, a transformation's failure))
-- Each target's circuit breaker (fields `<target>:br` = `state:since:until:opens:granted:
-- probes_ok`, state c(losed), o(pen) or h(alf-open), and `<target>:bw` = the sliding window
-- `start:attempts:failed:previous_attempts:previous_failed`) moves with its health, in the
-- same two commands: closed, it opens when the window (the previous one weighted by how much
-- of it is still inside) holds at least min_requests attempts and failure_ratio of them
-- failed; half-open (set by `breaker_probe.lua`), a failed probe opens it again for twice as
-- long (up to max_open_ms) and probe_requests successful ones close it. Attempts that were
-- in flight while it was open count for nothing. `<target>:pause` holds a 429's Retry-After
-- for all of the target's deliveries.
-- Answer {"recorded": n, "failed": [[i, error], …], "counters_failed": [key, …], "gates":
--        [[target, state, since, until, opens, news, disable, pause_until, failing_since], …]}
--        (the targets of the call whose breaker is not closed, moved, or that are paused or
--        due to be disabled: news is '' | 'opened' | 'reopened' | 'closed'): each outcome
--        runs protected (pcall), so one whose keys Redis refuses (a record overwritten with
--        another type) fails alone, its counter moves dropped, and the others are recorded;
--        the call's counters are written key by key the same way. Nothing is ever applied
--        twice: the caller sets a failed outcome aside instead of sending it again.
local retries, dead_total, unfinished, ship = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local series_all = KEYS[5]
local n, kept, ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local logged, series_ttl = ARGV[5] == '1', ARGV[6]
local minute = string.format('%d:', math.floor(tonumber(now) / 60000) % 60)
-- The ten-minute bucket of `now` in each target's ring of 12 (two hours).
local bucket_ms = 600000
local bucket_n = math.floor(tonumber(now) / bucket_ms)
local bucket_start = string.format('%d', bucket_n * bucket_ms)
local bucket_field = string.format(':b%d', bucket_n % 12)

-- Counter moves of the call, per key (counters and series), written once at the end. An
-- outcome's moves are kept apart until it is recorded whole (`pending`).
local counts, order = {}, {}
local pending = {}
local function count(stats, field, by)
  pending[#pending + 1] = {stats, field, by}
end
-- Target health of the call, per health key and target, in the order first seen; an
-- outcome's attempt joins it only once the outcome is recorded whole.
local health, health_order, pending_health = {}, {}, nil
local function commit_health()
  local p = pending_health
  if not p then return end
  pending_health = nil
  local id = p.key .. '\0' .. p.target
  local h = health[id]
  if not h then
    h = {key = p.key, target = p.target, a = 0, f = 0, last = '', ok = false, failing = false,
         gate = nil, ba = 0, bf = 0, pok = 0, pf = 0, pause = 0}
    health[id] = h
    health_order[#health_order + 1] = id
  end
  h.a = h.a + 1
  if p.ok then
    h.ok = true
    h.failing = false
  else
    h.f = h.f + 1
    h.failing = true
  end
  if p.attempt ~= '' then h.last = p.attempt end
  local g = p.gate
  if g then
    h.gate = g
    if g.pause > h.pause then h.pause = g.pause end
    if g.probe then
      if g.class == 'o' then h.pok = h.pok + 1 elseif g.class == 'f' then h.pf = h.pf + 1 end
    elseif g.class ~= 'n' then
      h.ba = h.ba + 1
      if g.class == 'f' then h.bf = h.bf + 1 end
    end
  end
end

-- An outcome's gate argument, parsed; nil when empty or unreadable.
local function parse_gate(arg)
  if arg == nil or arg == '' then return nil end
  local class, probe, pause, enabled, win, min, ratio, open, max_open, probes, disable, limit =
    string.match(arg,
      '^(%a),(%d),(%d+),(%d),(%d+),(%d+),([%d%.]+),(%d+),(%d+),(%d+),(%d+),(%d+)$')
  if not class then return nil end
  return {class = class, probe = probe == '1', pause = tonumber(pause), enabled = enabled == '1',
          win = tonumber(win), min = tonumber(min), ratio = tonumber(ratio),
          open = tonumber(open), max_open = tonumber(max_open), probes = tonumber(probes),
          disable = tonumber(disable), limit = limit}
end
local function commit()
  commit_health()
  for _, p in ipairs(pending) do
    local stats, field, by = p[1], p[2], p[3]
    local c = counts[stats]
    if not c then
      c = {}
      counts[stats] = c
      order[#order + 1] = stats
    end
    c[field] = (c[field] or 0) + by
  end
  pending = {}
end
-- Series hashes written by the call: each gets its lifetime once, after its counters.
local expiring = {}
local function tally(series, metric, by)
  count(series, minute .. metric, by)
  count(series_all, minute .. metric, by)
  expiring[series] = true
  expiring[series_all] = true
end

-- The message of an error raised inside pcall: Redis's reply, or Lua's own.
local function message(e)
  if type(e) == 'table' then return e.err or cjson.encode(e) end
  return tostring(e)
end

local function one(i)
  local k = 5 + (i - 1) * 6
  local record, stats, dead_letters = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local dead_order, target_health = KEYS[k + 5], KEYS[k + 6]
  local series = KEYS[k + 4]
  local a = 6 + (i - 1) * 14
  local id, target, state, attempt = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local kind, due, member, body = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local ct, dl_id, dl_json, latency = ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12]
  local attempt_ms = ARGV[a + 13]
  local field = 'd:' .. target
  local previous = redis.call('HGET', record, field)
  local exists = previous ~= false or redis.call('EXISTS', record) == 1
  if exists then
    if logged then
      track(record, id, state_kind(previous), state_kind(state), unfinished, ship, now)
    end
    if attempt ~= '' then
      -- The newest `kept` attempts, in a ring of fields of the record itself: one key per
      -- event, not two.
      local seq = redis.call('HINCRBY', record, 'an', 1)
      redis.call('HSET', record, field, state, 'a:' .. ((seq - 1) % kept), attempt)
    else
      redis.call('HSET', record, field, state)
    end
  end
  if latency ~= '' then
    count(stats, 'response_ms_total', tonumber(latency))
    count(stats, 'responses', 1)
  end
  -- Counted like the tenant's counters, even for a record that is gone: the attempt was made.
  if attempt_ms ~= '' then
    tally(series, 'a', 1)
    tally(series, 'l', tonumber(attempt_ms))
    if kind ~= 'done' then tally(series, 'f', 1) end
    pending_health = {key = target_health, target = target, ok = kind == 'done', attempt = attempt,
                      gate = parse_gate(ARGV[a + 14])}
  end
  -- A held delivery (an ordered target's head) is retried by its process, not the schedule.
  if kind ~= 'held' then
    local was_waiting = redis.call('ZREM', retries, member)
    if kind == 'retry' then
      if exists then
        -- The body outlives the stream entry only when a retry or the error queue needs it.
        keep_body(record, body, ct)
        redis.call('ZADD', retries, due, member)
        if was_waiting == 0 then count(stats, 'in_retry', 1) end
      elseif was_waiting == 1 then
        count(stats, 'in_retry', -1)
      end
    else
      if was_waiting == 1 then count(stats, 'in_retry', -1) end
      if kind == 'done' then
        count(stats, 'succeeded', 1)
        tally(series, 's', 1)
      elseif kind == 'dead' then
        if exists then
          keep_body(record, body, ct)
          redis.call('EXPIRE', record, ttl)
        end
        redis.call('HSET', dead_letters, dl_id, dl_json)
        redis.call('ZADD', dead_order, 0, dl_id)
        redis.call('INCR', dead_total)
        count(stats, 'failed', 1)
      end
    end
  end
end

local failed, recorded = {}, 0
for i = 1, n do
  local ok, e = pcall(one, i)
  if ok then
    commit()
    recorded = recorded + 1
  else
    pending = {}
    pending_health = nil
    failed[#failed + 1] = {i, message(e)}
  end
end
local function write_counters(key)
  local wrote = false
  for field, by in pairs(counts[key]) do
    if by ~= 0 then
      redis.call('HINCRBY', key, field, by)
      wrote = true
    end
  end
  if wrote and expiring[key] then redis.call('EXPIRE', key, series_ttl) end
end
local counters_failed = {}
for _, key in ipairs(order) do
  if not pcall(write_counters, key) then counters_failed[#counters_failed + 1] = key end
end
-- One target's health: its bucket (a ring slot holding an older bucket starts again), its
-- newest attempt, its success or failure time and its breaker: two commands (read, write)
-- unless it recovers, when its failing time goes too.
local gates = {}
local function parse_breaker(v)
  local st, since, untl, opens, granted, okp =
    string.match(v or '', '^(%a):(%d+):(%d+):(%d+):(%d+):(%d+)$')
  if not st then return {s = 'c', since = 0, untl = 0, opens = 0, granted = 0, okp = 0} end
  return {s = st, since = tonumber(since), untl = tonumber(untl), opens = tonumber(opens),
          granted = tonumber(granted), okp = tonumber(okp)}
end
local function open_for(g, opens)
  local ms = g.open * math.pow(2, math.min(opens, 40))
  if ms > g.max_open then ms = g.max_open end
  return ms
end
-- The breaker after this call's attempts; `news` when it moved.
local function move_breaker(h, br, bw_value, now_n)
  local g, news, window = h.gate, '', nil
  if not g.enabled then
    if br.s ~= 'c' then news = 'closed' end
    return {s = 'c', since = now_n, untl = 0, opens = 0, granted = 0, okp = 0}, news, ''
  end
  if br.s == 'c' then
    local ws = math.floor(now_n / g.win) * g.win
    local w0, a, f, pa, pf = string.match(bw_value or '', '^(%d+):(%d+):(%d+):(%d+):(%d+)$')
    w0 = tonumber(w0)
    if w0 == ws then
      a, f, pa, pf = tonumber(a), tonumber(f), tonumber(pa), tonumber(pf)
    elseif w0 == ws - g.win then
      pa, pf, a, f = tonumber(a), tonumber(f), 0, 0
    else
      a, f, pa, pf = 0, 0, 0, 0
    end
    a, f = a + h.ba, f + h.bf
    local weight = 1 - (now_n - ws) / g.win
    local ea, ef = a + pa * weight, f + pf * weight
    if h.bf > 0 and ea >= g.min and ef >= g.ratio * ea then
      br = {s = 'o', since = now_n, untl = now_n + open_for(g, br.opens), opens = br.opens + 1,
            granted = 0, okp = 0}
      return br, 'opened', ''
    end
    return br, news, string.format('%d:%d:%d:%d:%d', ws, a, f, pa, pf)
  elseif br.s == 'h' then
    if h.pf > 0 then
      br = {s = 'o', since = now_n, untl = now_n + open_for(g, br.opens), opens = br.opens + 1,
            granted = 0, okp = 0}
      return br, 'reopened', nil
    end
    if h.pok > 0 then
      br.okp = br.okp + h.pok
      if br.okp >= g.probes then
        return {s = 'c', since = now_n, untl = 0, opens = 0, granted = 0, okp = 0}, 'closed', ''
      end
    end
  end
  return br, news, nil
end
local function write_health(h)
  local b = h.target .. bucket_field
  local since = h.target .. ':fail_since'
  local brf, bwf, pausef = h.target .. ':br', h.target .. ':bw', h.target .. ':pause'
  local cur = redis.call('HMGET', h.key, b, since, brf, bwf, pausef)
  local a, f = h.a, h.f
  if cur[1] then
    local start, ca, cf = string.match(cur[1], '^(%d+):(%d+):(%d+)$')
    if start == bucket_start then
      a = a + tonumber(ca)
      f = f + tonumber(cf)
    end
  end
  local fields = {b, bucket_start .. ':' .. a .. ':' .. f}
  if h.last ~= '' then
    fields[#fields + 1] = h.target .. ':last'
    fields[#fields + 1] = h.last
  end
  if h.ok then
    fields[#fields + 1] = h.target .. ':ok_at'
    fields[#fields + 1] = now
  end
  -- Failing since the first failure after the last success: this call's, when it delivered
  -- before failing or nothing failed before it.
  local failing_since = nil
  if h.failing then
    if h.ok or not cur[2] then
      fields[#fields + 1] = since
      fields[#fields + 1] = now
      failing_since = tonumber(now)
    else
      failing_since = tonumber(cur[2])
    end
  end
  if h.gate then
    local now_n = tonumber(now)
    local br, news, window = move_breaker(h, parse_breaker(cur[3]), cur[4], now_n)
    if news ~= '' then
      fields[#fields + 1] = brf
      fields[#fields + 1] = string.format('%s:%d:%d:%d:%d:%d', br.s, br.since, br.untl,
                                          br.opens, br.granted, br.okp)
    elseif br.s == 'h' and h.pok > 0 then
      fields[#fields + 1] = brf
      fields[#fields + 1] = string.format('%s:%d:%d:%d:%d:%d', br.s, br.since, br.untl,
                                          br.opens, br.granted, br.okp)
    end
    if window and window ~= '' then
      fields[#fields + 1] = bwf
      fields[#fields + 1] = window
    elseif window == '' then
      redis.call('HDEL', h.key, bwf)
    end
    local pause = tonumber(cur[5] or '0') or 0
    if h.pause > pause then
      pause = h.pause
      fields[#fields + 1] = pausef
      fields[#fields + 1] = string.format('%d', pause)
    end
    if pause <= now_n then pause = 0 end
    if h.gate.limit ~= '0' then
      fields[#fields + 1] = h.target .. ':cl'
      fields[#fields + 1] = h.gate.limit
    end
    -- Failing for the whole of disable_after (every attempt, or the breaker held open).
    local disable = 0
    if h.gate.disable > 0 and failing_since and (br.s ~= 'c' or not h.gate.enabled)
       and now_n - failing_since >= h.gate.disable then
      disable = 1
    end
    if br.s ~= 'c' or news ~= '' or pause > 0 or disable == 1 then
      gates[#gates + 1] = {h.target, br.s, br.since, br.untl, br.opens, news, disable, pause,
                           failing_since or 0}
    end
  end
  redis.call('HSET', h.key, unpack(fields))
  if not h.failing and cur[2] then redis.call('HDEL', h.key, since) end
end
for _, id in ipairs(health_order) do
  local h = health[id]
  if not pcall(write_health, h) then counters_failed[#counters_failed + 1] = h.key end
end
return cjson.encode({recorded = recorded, failed = failed, counters_failed = counters_failed,
                     gates = gates})
