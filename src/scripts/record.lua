-- record: records delivery outcomes of one shard, each atomically: the delivery state, the
-- bounded attempt log (fields `a:<slot>` of the record, `an` counting), the tenant's counters, the retry schedule or the error queue, and
-- (with a log store) whether the event is now finished and ready to ship. A record that is
-- gone (expired after shipping, or flushed) is not written again: a late duplicate outcome
-- must not leave a record without a lifetime.
--
-- KEYS  retries (the shard's schedule), dead_letter_total, unfinished, ship, then per
--       outcome: event_record, attempts (the list of earlier versions, unused), stats,
--       dead_letters
-- ARGV  n, attempts_kept, ttl_s, now_ms, then per outcome: event_id, target_id, state
--       (compact text), attempt (compact text or ''), kind ('done' | 'retry' | 'held' | 'dead' |
--       'drop': given up, the target is gone),
--       due_ms, member, body, content_type, dead_letter_id, dead_letter (JSON), latency_ms
--       ('' when there was no response)
-- Answer {"recorded": n}
local retries, dead_total, unfinished, ship = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n, kept, ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]

for i = 1, n do
  local k = 4 + (i - 1) * 4
  local record, attempts, stats, dead_letters = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local a = 4 + (i - 1) * 12
  local id, target, state, attempt = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local kind, due, member, body = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local ct, dl_id, dl_json, latency = ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], ARGV[a + 12]
  local exists = redis.call('EXISTS', record) == 1
  if exists then
    local before = state_kind(redis.call('HGET', record, 'd:' .. target))
    redis.call('HSET', record, 'd:' .. target, state)
    track(record, id, before, state_kind(state), unfinished, ship, now)
    if attempt ~= '' then
      -- The newest `kept` attempts, in a ring of fields of the record itself: one key per
      -- event, not two.
      local seq = redis.call('HINCRBY', record, 'an', 1)
      redis.call('HSET', record, 'a:' .. ((seq - 1) % kept), attempt)
    end
  end
  if latency ~= '' then
    redis.call('HINCRBY', stats, 'response_ms_total', latency)
    redis.call('HINCRBY', stats, 'responses', 1)
  end
  -- A held delivery (an ordered target's head) is retried by its process, not the schedule.
  if kind ~= 'held' then
    local was_waiting = redis.call('ZREM', retries, member)
    if kind == 'retry' then
      if exists then
        -- The body outlives the stream entry only when a retry or the error queue needs it.
        if redis.call('HEXISTS', record, 'body') == 0 then
          redis.call('HSET', record, 'body', body)
          if ct ~= '' then redis.call('HSET', record, 'ct', ct) end
        end
        redis.call('ZADD', retries, due, member)
        if was_waiting == 0 then redis.call('HINCRBY', stats, 'in_retry', 1) end
      elseif was_waiting == 1 then
        redis.call('HINCRBY', stats, 'in_retry', -1)
      end
    else
      if was_waiting == 1 then redis.call('HINCRBY', stats, 'in_retry', -1) end
      if kind == 'done' then
        redis.call('HINCRBY', stats, 'succeeded', 1)
      elseif kind == 'dead' then
        if exists then
          if redis.call('HEXISTS', record, 'body') == 0 then
            redis.call('HSET', record, 'body', body)
            if ct ~= '' then redis.call('HSET', record, 'ct', ct) end
          end
          redis.call('EXPIRE', record, ttl)
        end
        redis.call('HSET', dead_letters, dl_id, dl_json)
        redis.call('INCR', dead_total)
        redis.call('HINCRBY', stats, 'failed', 1)
      end
    end
  end
end
return cjson.encode({recorded = n})
