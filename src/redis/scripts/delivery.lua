-- Shared by the scripts that change delivery states (prepended to each).
--
-- A delivery state is the text '<kind>|<attempts>|<last status>|<next retry ms>|<updated ms>|
-- <deferrals>|<last error>' (kind p pending, r retrying, s succeeded, d dead-lettered, n sent,
-- c cancelled by the target's transformation),
-- or the JSON document of earlier versions. With a log store, an event's record counts its
-- unfinished deliveries in `open`: the event sits in the shard's unfinished set while any is
-- unfinished and in its ship queue once none is, scored by its position in the stream (the
-- entry's time), which retention never trims past.
local json_kinds = {pending = 'p', retrying = 'r', succeeded = 's', dead_lettered = 'd', sent = 'n',
  cancelled = 'c'}

local function state_kind(v)
  if not v then return nil end
  if string.sub(v, 1, 1) == '{' then
    return json_kinds[string.match(v, '"state"%s*:%s*"([%a_]+)"') or '']
  end
  return string.sub(v, 1, 1)
end

local function is_final(kind)
  return kind == 's' or kind == 'd' or kind == 'n' or kind == 'c'
end

-- The stream position of a record's event: its entry's time, or its receive time.
local function position(record)
  local entry = redis.call('HGET', record, 'entry')
  local ms = entry and string.match(entry, '^(%d+)%-%d+$')
  if ms then return ms end
  return redis.call('HGET', record, 'at') or '0'
end

-- One delivery of the event `member` went from kind `before` to kind `after`.
local function track(record, member, before, after, unfinished, ship, now)
  if redis.call('HEXISTS', record, 'open') == 0 then return end
  local was, is = is_final(before), is_final(after)
  if was == is then return end
  local open = redis.call('HINCRBY', record, 'open', is and -1 or 1)
  if is and open <= 0 then
    redis.call('ZREM', unfinished, member)
    redis.call('HSET', record, 'fin_at', now)
    redis.call('HINCRBY', record, 'fin', 1)
    redis.call('ZADD', ship, position(record), member)
  elseif not is and open == 1 then
    redis.call('ZREM', ship, member)
    redis.call('ZADD', unfinished, position(record), member)
  end
end


-- Keeps an event's body (and its content type) in its record, once: what outlives the stream
-- entry (a retry, the error queue, a batch) reads it from there.
local function keep_body(record, body, ct)
  if redis.call('HEXISTS', record, 'body') == 0 then
    if ct ~= '' then
      redis.call('HSET', record, 'body', body, 'ct', ct)
    else
      redis.call('HSET', record, 'body', body)
    end
  end
end
