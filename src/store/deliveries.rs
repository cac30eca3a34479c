//! Delivery records: what happened to each event at each target, the retry schedule, the error
//! queue and the per-tenant counters. All of a tenant's records live in its shard's slot
//! (`{q<n>}`), next to its stream, so each change is one atomic script on one node.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::scripts::Script;
use serde::{Deserialize, Serialize};

use super::{StoreError, rfc3339};
use crate::keyspace::Keyspace;

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Expanded, no outcome yet.
    Pending,
    Succeeded,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Parked in the error queue.
    DeadLettered,
    /// Fire-and-forget: sent, response not recorded.
    Sent,
}

/// The state of one (event, target) delivery, as `GET /v1/events/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryState {
    pub state: State,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_retry_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// Times the delivery was put back unsent because its target was saturated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One attempt, kept in the event's bounded attempt log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub target_id: String,
    pub attempt: u32,
    pub at_ms: u64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first bytes of the response body (lossy UTF-8).
    pub response: Option<String>,
}

/// An error queue entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub event_id: String,
    pub target_id: String,
    pub event_type: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub failed_at_ms: u64,
}

impl DeadLetter {
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "event_id": self.event_id,
            "target_id": self.target_id,
            "event_type": self.event_type,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "failed_at": rfc3339(self.failed_at_ms),
        })
    }
}

/// What a recorded outcome does to the schedule.
#[derive(Debug, Clone)]
pub enum Next {
    /// Delivered: done.
    Done,
    /// Try again at this time (ms), from the shared schedule.
    RetryAt(u64),
    /// Try again at this time (ms), held by this process: an ordered target's head, which
    /// must block the deliveries behind it rather than go to the schedule.
    HeldUntil(u64),
    /// Park in the error queue.
    DeadLetter(DeadLetter),
}

/// The outcome of one delivery, to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub shard: u16,
    pub tenant: String,
    pub event_id: String,
    pub target_id: String,
    pub state: DeliveryState,
    pub attempt: Option<AttemptRecord>,
    pub next: Next,
    /// Needed when the event must outlive its stream entry (retry, error queue).
    pub body: Bytes,
    pub content_type: Option<Bytes>,
}

/// An event as one expansion writes it.
#[derive(Debug, Clone)]
pub struct Expansion<'a> {
    pub event_id: &'a str,
    pub tenant: &'a str,
    pub event_type: &'a str,
    pub content_type: &'a [u8],
    pub received_at_ms: u64,
    pub targets: Vec<&'a str>,
}

/// A delivery due for another attempt, loaded from its record.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub member: String,
    pub event_id: String,
    pub target_id: String,
    pub tenant: String,
    pub event_type: String,
    pub content_type: Option<Bytes>,
    pub body: Bytes,
    pub attempts_so_far: u32,
    pub deferrals_so_far: u32,
}

/// Which error queue entries to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    pub ids: Option<Vec<String>>,
    pub target_id: Option<String>,
}

/// Marks each event of a stream entry as expanded by that entry, unless another entry did it
/// first (a re-sent `XADD`). KEYS: the events' records, then their tenants' counters.
/// ARGV: entry id, ttl seconds, n, then per event: tenant, type, ct, at, targets.
/// Returns 1 (expand) or 0 (duplicate) per event.
static EXPAND: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local n = tonumber(ARGV[3])
local out = {}
for i = 1, n do
  local key = KEYS[i]
  local base = 3 + (i - 1) * 5
  local owner = redis.call('HGET', key, 'entry')
  if not owner then
    redis.call('HSET', key, 'entry', ARGV[1], 'tenant', ARGV[base + 1], 'type', ARGV[base + 2],
      'ct', ARGV[base + 3], 'at', ARGV[base + 4], 'targets', ARGV[base + 5])
    redis.call('EXPIRE', key, ARGV[2])
    redis.call('HINCRBY', KEYS[n + i], 'events_received', 1)
    out[i] = 1
  elseif owner == ARGV[1] then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#,
    )
});

/// Records delivery outcomes of one shard, atomically each. KEYS: retries, error queue total,
/// then per outcome: event record, attempts, counters, error queue. ARGV: n, attempts kept,
/// ttl, then per outcome: target, state JSON, attempt JSON (or ''), kind (done|retry|held|dead),
/// due ms, member, body, ct, dead letter id, dead letter JSON, latency ms (or '').
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local n, kept, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 1, n do
  local k = 2 + (i - 1) * 4
  local ev, att, stats, dlq = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local a = 3 + (i - 1) * 11
  local target, state, attempt, kind = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local due, member, body, ct = ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local dl_id, dl_json, latency = ARGV[a + 9], ARGV[a + 10], ARGV[a + 11]
  redis.call('HSET', ev, 'd:' .. target, state)
  if attempt ~= '' then
    redis.call('RPUSH', att, attempt)
    redis.call('LTRIM', att, -kept, -1)
    redis.call('EXPIRE', att, ttl)
  end
  if latency ~= '' then
    redis.call('HINCRBY', stats, 'response_ms_total', latency)
    redis.call('HINCRBY', stats, 'responses', 1)
  end
  if kind ~= 'held' then
    local was_waiting = redis.call('ZREM', KEYS[1], member)
    if kind == 'retry' then
      if redis.call('HEXISTS', ev, 'body') == 0 then
        redis.call('HSET', ev, 'body', body, 'ct', ct)
      end
      redis.call('ZADD', KEYS[1], due, member)
      if was_waiting == 0 then redis.call('HINCRBY', stats, 'in_retry', 1) end
    else
      if was_waiting == 1 then redis.call('HINCRBY', stats, 'in_retry', -1) end
      if kind == 'done' then
        redis.call('HINCRBY', stats, 'succeeded', 1)
      elseif kind == 'dead' then
        if redis.call('HEXISTS', ev, 'body') == 0 then
          redis.call('HSET', ev, 'body', body, 'ct', ct)
        end
        redis.call('EXPIRE', ev, ttl)
        redis.call('HSET', dlq, dl_id, dl_json)
        redis.call('INCR', KEYS[2])
        redis.call('HINCRBY', stats, 'failed', 1)
      end
    end
  end
end
return n
"#,
    )
});

/// Claims due retries: moves each due member's score to the lease end, so no other instance
/// takes it, and a crash before its outcome is recorded only delays it. KEYS: retries.
/// ARGV: now, lease end, limit.
static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"#,
    )
});

/// Moves one error queue entry back into the retry schedule with fresh attempts. KEYS: error
/// queue, retries, counters, event record, error queue total. ARGV: entry id, member, target,
/// state JSON, now.
static REPLAY: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DECR', KEYS[5])
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('HSET', KEYS[4], 'd:' .. ARGV[3], ARGV[4])
if redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'in_retry', 1)
end
return 1
"#,
    )
});

/// Removes one error queue entry. KEYS: error queue, error queue total. ARGV: entry id.
static DELETE_DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DECR', KEYS[2])
return 1
"#,
    )
});

/// Preloads the scripts (a missing one is also reloaded on first use).
pub async fn preload(redis: &Client) -> Result<(), fred::error::Error> {
    for s in [
        &*EXPAND,
        &*RECORD,
        &*CLAIM_DUE,
        &*REPLAY,
        &*DELETE_DEAD_LETTER,
    ] {
        s.load(redis).await?;
    }
    Ok(())
}

/// The retry-schedule member of a delivery.
pub fn member(event_id: &str, target_id: &str) -> String {
    format!("{event_id}:{target_id}")
}

/// Handle to the delivery records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Deliveries {
    redis: Client,
    keys: Keyspace,
    /// How long records live (the stream retention).
    ttl_secs: u64,
    /// Attempts kept per event.
    attempts_kept: u32,
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

impl Deliveries {
    pub fn new(redis: Client, keys: Keyspace, ttl_secs: u64, attempts_kept: u32) -> Deliveries {
        Deliveries {
            redis,
            keys,
            ttl_secs,
            attempts_kept,
        }
    }

    /// Records the expansion of one stream entry's events (all in `shard`); `true` per event
    /// that this entry owns (expand it), `false` for a duplicate seen in another entry.
    pub async fn expand(
        &self,
        shard: u16,
        entry_id: &str,
        events: &[Expansion<'_>],
    ) -> Result<Vec<bool>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = events
            .iter()
            .map(|e| self.keys.event_record(shard, e.event_id))
            .collect();
        keys.extend(events.iter().map(|e| self.keys.stats(shard, e.tenant)));
        let mut args: Vec<String> = Vec::with_capacity(3 + events.len() * 5);
        args.push(entry_id.to_owned());
        args.push(self.ttl_secs.to_string());
        args.push(events.len().to_string());
        for e in events {
            args.push(e.tenant.to_owned());
            args.push(e.event_type.to_owned());
            args.push(String::from_utf8_lossy(e.content_type).into_owned());
            args.push(e.received_at_ms.to_string());
            args.push(e.targets.join(","));
        }
        let flags: Vec<i64> = EXPAND.evalsha_with_reload(&self.redis, keys, args).await?;
        Ok(flags.into_iter().map(|f| f == 1).collect())
    }

    /// Records one outcome atomically (state, attempt log, counters, schedule, error queue).
    pub async fn record(&self, o: &Outcome) -> Result<(), StoreError> {
        self.record_many(o.shard, std::slice::from_ref(o)).await
    }

    /// Records outcomes of one shard in one call, each atomically.
    pub async fn record_many(&self, shard: u16, outcomes: &[Outcome]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(2 + outcomes.len() * 4);
        keys.push(self.keys.retries(shard));
        keys.push(self.keys.dead_letter_total(shard));
        let mut args: Vec<Value> = Vec::with_capacity(3 + outcomes.len() * 11);
        args.push((outcomes.len() as i64).into());
        args.push(i64::from(self.attempts_kept).into());
        args.push((self.ttl_secs as i64).into());
        for o in outcomes {
            keys.push(self.keys.event_record(shard, &o.event_id));
            keys.push(self.keys.attempts(shard, &o.event_id));
            keys.push(self.keys.stats(shard, &o.tenant));
            keys.push(self.keys.dead_letters(shard, &o.tenant));
            let (kind, due, dl_id, dl_json) = match &o.next {
                Next::Done => ("done", String::new(), String::new(), String::new()),
                Next::RetryAt(due) => ("retry", due.to_string(), String::new(), String::new()),
                Next::HeldUntil(_) => ("held", String::new(), String::new(), String::new()),
                Next::DeadLetter(dl) => ("dead", String::new(), dl.id.clone(), json(dl)),
            };
            let latency = o
                .attempt
                .as_ref()
                .filter(|a| a.status.is_some())
                .map(|a| a.latency_ms.to_string())
                .unwrap_or_default();
            // The body is sent only when the outcome keeps the event beyond its stream entry.
            let needs_body = matches!(kind, "retry" | "dead");
            args.extend([
                Value::from(o.target_id.clone()),
                json(&o.state).into(),
                o.attempt.as_ref().map(json).unwrap_or_default().into(),
                kind.into(),
                due.into(),
                member(&o.event_id, &o.target_id).into(),
                Value::Bytes(if needs_body {
                    o.body.clone()
                } else {
                    Bytes::new()
                }),
                Value::Bytes(o.content_type.clone().unwrap_or_default()),
                dl_id.into(),
                dl_json.into(),
                latency.into(),
            ]);
        }
        let _: i64 = RECORD.evalsha_with_reload(&self.redis, keys, args).await?;
        Ok(())
    }

    /// Claims up to `limit` due deliveries of `shard`, leased until `lease_until_ms`, and loads
    /// what they need. Deliveries whose event record expired are dropped from the schedule.
    pub async fn claim_due(
        &self,
        shard: u16,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let retries = self.keys.retries(shard);
        let members: Vec<String> = CLAIM_DUE
            .evalsha_with_reload(
                &self.redis,
                vec![retries.clone()],
                vec![
                    now_ms.to_string(),
                    lease_until_ms.to_string(),
                    limit.to_string(),
                ],
            )
            .await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        let mut parsed = Vec::with_capacity(members.len());
        for m in &members {
            let Some((event, target)) = m.split_once(':') else {
                continue;
            };
            let fields = vec![
                "tenant".to_owned(),
                "type".into(),
                "ct".into(),
                "body".into(),
                format!("d:{target}"),
            ];
            let _: () = pipeline
                .hmget(self.keys.event_record(shard, event), fields)
                .await?;
            parsed.push((m.clone(), event.to_owned(), target.to_owned()));
        }
        let rows: Vec<Vec<Value>> = pipeline.all().await?;
        let mut out = Vec::with_capacity(parsed.len());
        for ((member, event_id, target_id), row) in parsed.into_iter().zip(rows) {
            let text = |i: usize| row.get(i).and_then(|v| v.as_string());
            let (Some(tenant), Some(event_type), Some(body)) = (
                text(0),
                text(1),
                row.get(3)
                    .and_then(|v| v.as_bytes().map(Bytes::copy_from_slice)),
            ) else {
                tracing::warn!(
                    event_id,
                    target_id,
                    "a scheduled delivery's event record has expired; dropping it"
                );
                let _: i64 = self.redis.zrem(&retries, member.clone()).await?;
                continue;
            };
            let content_type = row
                .get(2)
                .and_then(|v| v.as_bytes())
                .filter(|b| !b.is_empty())
                .map(Bytes::copy_from_slice);
            let state = text(4).and_then(|s| serde_json::from_str::<DeliveryState>(&s).ok());
            let attempts_so_far = state.as_ref().map(|s| s.attempts).unwrap_or(0);
            let deferrals_so_far = state.as_ref().map(|s| s.deferrals).unwrap_or(0);
            out.push(DueDelivery {
                member,
                event_id,
                target_id,
                tenant,
                event_type,
                content_type,
                body,
                attempts_so_far,
                deferrals_so_far,
            });
        }
        Ok(out)
    }

    /// Drops a delivery from the schedule (its target is gone).
    pub async fn unschedule(
        &self,
        shard: u16,
        tenant: &str,
        member: &str,
    ) -> Result<(), StoreError> {
        let removed: i64 = self.redis.zrem(self.keys.retries(shard), member).await?;
        if removed == 1 {
            let _: i64 = self
                .redis
                .hincrby(self.keys.stats(shard, tenant), "in_retry", -1)
                .await?;
        }
        Ok(())
    }

    /// Entries in `shard`'s error queues.
    pub async fn dead_letter_total(&self, shard: u16) -> Result<u64, StoreError> {
        let n: Option<i64> = self.redis.get(self.keys.dead_letter_total(shard)).await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Deliveries waiting in `shard`'s schedule.
    pub async fn scheduled(&self, shard: u16) -> Result<u64, StoreError> {
        Ok(self.redis.zcard(self.keys.retries(shard)).await?)
    }

    /// The tenant's error queue, oldest first, optionally for one target.
    pub async fn dead_letters(
        &self,
        shard: u16,
        tenant: &str,
        target_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let all: HashMap<String, String> = self
            .redis
            .hgetall(self.keys.dead_letters(shard, tenant))
            .await?;
        let mut out: Vec<DeadLetter> = all
            .values()
            .filter_map(|v| serde_json::from_str::<DeadLetter>(v).ok())
            .filter(|d| target_id.is_none_or(|t| d.target_id == t))
            .collect();
        out.sort_by(|a, b| {
            a.failed_at_ms
                .cmp(&b.failed_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        out.truncate(limit);
        Ok(out)
    }

    /// Removes one error queue entry; `false` when it is not there.
    pub async fn delete_dead_letter(
        &self,
        shard: u16,
        tenant: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let keys = vec![
            self.keys.dead_letters(shard, tenant),
            self.keys.dead_letter_total(shard),
        ];
        let removed: i64 = DELETE_DEAD_LETTER
            .evalsha_with_reload(&self.redis, keys, vec![id.to_owned()])
            .await?;
        Ok(removed == 1)
    }

    /// Puts the selected error queue entries back on the schedule, due now; how many moved.
    pub async fn replay(
        &self,
        shard: u16,
        tenant: &str,
        sel: &ReplaySelection,
    ) -> Result<u64, StoreError> {
        let entries = self
            .dead_letters(shard, tenant, sel.target_id.as_deref(), usize::MAX)
            .await?;
        let now = super::now_ms();
        let mut moved = 0;
        for d in entries {
            if let Some(ids) = &sel.ids {
                if !ids.contains(&d.id) {
                    continue;
                }
            }
            let state = DeliveryState {
                state: State::Retrying,
                attempts: 0,
                last_status: d.last_status,
                last_error: d.last_error.clone(),
                next_retry_at_ms: Some(now),
                updated_at_ms: now,
                deferrals: 0,
            };
            let keys = vec![
                self.keys.dead_letters(shard, tenant),
                self.keys.retries(shard),
                self.keys.stats(shard, tenant),
                self.keys.event_record(shard, &d.event_id),
                self.keys.dead_letter_total(shard),
            ];
            let args = vec![
                d.id.clone(),
                member(&d.event_id, &d.target_id),
                d.target_id.clone(),
                json(&state),
                now.to_string(),
            ];
            let n: i64 = REPLAY.evalsha_with_reload(&self.redis, keys, args).await?;
            moved += n as u64;
        }
        Ok(moved)
    }

    /// The delivery view of one event of `tenant`; `None` when unknown (or another tenant's).
    pub async fn event_view(
        &self,
        shard: u16,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let record: HashMap<String, Value> = self
            .redis
            .hgetall(self.keys.event_record(shard, event_id))
            .await?;
        let text = |k: &str| record.get(k).and_then(|v| v.as_string());
        if text("tenant").as_deref() != Some(tenant) {
            return Ok(None);
        }
        let attempts: Vec<String> = self
            .redis
            .lrange(self.keys.attempts(shard, event_id), 0, -1)
            .await?;
        let attempts: Vec<AttemptRecord> = attempts
            .iter()
            .filter_map(|a| serde_json::from_str(a).ok())
            .collect();
        let targets = text("targets").unwrap_or_default();
        let deliveries: Vec<serde_json::Value> = targets
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| {
                let st = text(&format!("d:{t}"))
                    .and_then(|s| serde_json::from_str::<DeliveryState>(&s).ok());
                let last = attempts.iter().rev().find(|a| a.target_id == t);
                match st {
                    Some(s) => serde_json::json!({
                        "target_id": t,
                        "state": s.state,
                        "attempts": s.attempts,
                        "last_status": s.last_status,
                        "last_error": s.last_error,
                        "next_retry_at": s.next_retry_at_ms.map(rfc3339),
                        "last_attempt_at": last.map(|a| rfc3339(a.at_ms)),
                    }),
                    None => serde_json::json!({
                        "target_id": t, "state": State::Pending, "attempts": 0, "last_status": null,
                        "last_error": null, "next_retry_at": null, "last_attempt_at": null,
                    }),
                }
            })
            .collect();
        let at = text("at").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let ct = text("ct").filter(|c| !c.is_empty());
        let attempt_views: Vec<serde_json::Value> = attempts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "target_id": a.target_id, "attempt": a.attempt, "at": rfc3339(a.at_ms),
                    "status": a.status, "latency_ms": a.latency_ms, "error": a.error, "response": a.response,
                })
            })
            .collect();
        Ok(Some(serde_json::json!({
            "id": event_id,
            "event_type": text("type"),
            "content_type": ct,
            "received_at": rfc3339(at),
            "deliveries": deliveries,
            "attempts": attempt_views,
        })))
    }

    /// The tenant's counters, as `GET /admin/tenants/{id}/stats` shows them.
    pub async fn stats(&self, shard: u16, tenant: &str) -> Result<serde_json::Value, StoreError> {
        let c: HashMap<String, i64> = self.redis.hgetall(self.keys.stats(shard, tenant)).await?;
        let dead: u64 = self
            .redis
            .hlen(self.keys.dead_letters(shard, tenant))
            .await?;
        let get = |k: &str| c.get(k).copied().unwrap_or(0).max(0);
        let responses = get("responses");
        let avg = if responses > 0 {
            get("response_ms_total") as f64 / responses as f64
        } else {
            0.0
        };
        Ok(serde_json::json!({
            "events_received": get("events_received"),
            "deliveries_succeeded": get("succeeded"),
            "deliveries_failed": get("failed"),
            "in_retry": get("in_retry"),
            "dead_letters": dead,
            "avg_response_ms": (avg * 10.0).round() / 10.0,
        }))
    }
}
