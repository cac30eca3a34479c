-- record: records delivery outcomes of one shard, each atomically: the delivery state, the
-- bounded attempt log, the tenant's counters, and the retry schedule or the error queue.
--
-- KEYS  retries (the shard's schedule), dead_letter_total, then per outcome: event_record,
--       attempts, stats, dead_letters
-- ARGV  n, attempts_kept, ttl_s, then per outcome: target_id, state (JSON), attempt (JSON or
--       ''), kind ('done' | 'retry' | 'held' | 'dead'), due_ms, member, body, content_type,
--       dead_letter_id, dead_letter (JSON), latency_ms ('' when there was no response)
-- Answer {"recorded": n}
local retries, dead_total = KEYS[1], KEYS[2]
local n, kept, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]

for i = 1, n do
  local k = 2 + (i - 1) * 4
  local record, attempts, stats, dead_letters = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local a = 3 + (i - 1) * 11
  local target, state, attempt, kind = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local due, member, body, ct = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local dl_id, dl_json, latency = ARGV[a + 9], ARGV[a + 10], ARGV[a + 11]
  redis.call('HSET', record, 'd:' .. target, state)
  if attempt ~= '' then
    redis.call('RPUSH', attempts, attempt)
    redis.call('LTRIM', attempts, -kept, -1)
    redis.call('EXPIRE', attempts, ttl)
  end
  if latency ~= '' then
    redis.call('HINCRBY', stats, 'response_ms_total', latency)
    redis.call('HINCRBY', stats, 'responses', 1)
  end
  -- A held delivery (an ordered target's head) is retried by its process, not the schedule.
  if kind ~= 'held' then
    local was_waiting = redis.call('ZREM', retries, member)
    if kind == 'retry' then
      -- The body outlives the stream entry only when a retry or the error queue needs it.
      if redis.call('HEXISTS', record, 'body') == 0 then
        redis.call('HSET', record, 'body', body, 'ct', ct)
      end
      redis.call('ZADD', retries, due, member)
      if was_waiting == 0 then redis.call('HINCRBY', stats, 'in_retry', 1) end
    else
      if was_waiting == 1 then redis.call('HINCRBY', stats, 'in_retry', -1) end
      if kind == 'done' then
        redis.call('HINCRBY', stats, 'succeeded', 1)
      elseif kind == 'dead' then
        if redis.call('HEXISTS', record, 'body') == 0 then
          redis.call('HSET', record, 'body', body, 'ct', ct)
        end
        redis.call('EXPIRE', record, ttl)
        redis.call('HSET', dead_letters, dl_id, dl_json)
        redis.call('INCR', dead_total)
        redis.call('HINCRBY', stats, 'failed', 1)
      end
    end
  end
end
return cjson.encode({recorded = n})
