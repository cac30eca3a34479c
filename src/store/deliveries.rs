//! Delivery records: what happened to each event at each target, the retry schedule, the error
//! queue and the per-tenant counters. All of a tenant's records live in its shard's slot
//! (`{q<n>}`), next to its stream, so each change is one atomic script on one node.

use std::collections::HashMap;

use bytes::Bytes;
use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::keyspace::Keyspace;
use crate::model::time::now_ms;
use crate::model::{DeadLetterId, EventId, EventType, TargetId, TenantId};
use crate::scripts::{CLAIM_DUE, DELETE_DEAD_LETTER, EXPAND, RECORD, REPLAY};

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The state of one (event, target) delivery, as stored.
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
    pub target_id: TargetId,
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
    pub id: DeadLetterId,
    pub event_id: EventId,
    pub target_id: TargetId,
    pub event_type: EventType,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub failed_at_ms: u64,
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
    pub tenant: TenantId,
    pub event_id: EventId,
    pub target_id: TargetId,
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
    pub event_id: &'a EventId,
    pub tenant: &'a TenantId,
    pub event_type: &'a EventType,
    pub content_type: &'a [u8],
    pub received_at_ms: u64,
    pub targets: Vec<&'a TargetId>,
}

/// A delivery due for another attempt, loaded from its record.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub member: String,
    pub event_id: EventId,
    pub target_id: TargetId,
    pub tenant: TenantId,
    pub event_type: EventType,
    pub content_type: Option<Bytes>,
    pub body: Bytes,
    pub attempts_so_far: u32,
    pub deferrals_so_far: u32,
}

/// Which error queue entries to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    pub ids: Option<Vec<DeadLetterId>>,
    pub target_id: Option<TargetId>,
}

/// An event's delivery record: what it was, and where each of its deliveries stands.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: EventId,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    pub received_at_ms: u64,
    /// Each target it was expanded to, with its state (`None`: no outcome yet).
    pub deliveries: Vec<(TargetId, Option<DeliveryState>)>,
    /// The recent attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// A tenant's delivery counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub events_received: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub in_retry: u64,
    pub dead_letters: u64,
    pub responses: u64,
    pub response_ms_total: u64,
}

/// The retry-schedule member of a delivery.
pub fn member(event_id: &EventId, target_id: &TargetId) -> String {
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

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
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
        #[derive(Deserialize)]
        struct Expanded {
            #[serde(deserialize_with = "crate::scripts::list")]
            owned: Vec<bool>,
        }
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
            args.push(e.tenant.to_string());
            args.push(e.event_type.to_string());
            args.push(String::from_utf8_lossy(e.content_type).into_owned());
            args.push(e.received_at_ms.to_string());
            let targets: Vec<&str> = e.targets.iter().map(|t| t.as_str()).collect();
            args.push(targets.join(","));
        }
        let answer: Expanded = EXPAND.run(&self.redis, keys, args).await?;
        if answer.owned.len() != events.len() {
            return Err(StoreError::Reply(format!(
                "expand answered {} flags for {} events",
                answer.owned.len(),
                events.len()
            )));
        }
        Ok(answer.owned)
    }

    /// Records outcomes of one shard in one call, each atomically (state, attempt log,
    /// counters, schedule, error queue).
    pub async fn record_many(&self, shard: u16, outcomes: &[Outcome]) -> Result<(), StoreError> {
        #[derive(Deserialize)]
        struct Recorded {
            #[allow(dead_code)]
            recorded: u64,
        }
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
                Next::DeadLetter(dl) => ("dead", String::new(), dl.id.to_string(), json(dl)?),
            };
            let latency = o
                .attempt
                .as_ref()
                .filter(|a| a.status.is_some())
                .map(|a| a.latency_ms.to_string())
                .unwrap_or_default();
            // The body is sent only when the outcome keeps the event beyond its stream entry.
            let needs_body = matches!(kind, "retry" | "dead");
            let attempt = match &o.attempt {
                Some(a) => json(a)?,
                None => String::new(),
            };
            args.extend([
                Value::from(o.target_id.as_str()),
                json(&o.state)?.into(),
                attempt.into(),
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
        let _: Recorded = RECORD.run(&self.redis, keys, args).await?;
        Ok(())
    }

    /// Records one outcome.
    pub async fn record(&self, o: &Outcome) -> Result<(), StoreError> {
        self.record_many(o.shard, std::slice::from_ref(o)).await
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
        #[derive(Deserialize)]
        struct Claimed {
            #[serde(deserialize_with = "crate::scripts::list")]
            members: Vec<String>,
        }
        let retries = self.keys.retries(shard);
        let claimed: Claimed = CLAIM_DUE
            .run(
                &self.redis,
                vec![retries.clone()],
                vec![
                    now_ms.to_string(),
                    lease_until_ms.to_string(),
                    limit.to_string(),
                ],
            )
            .await?;
        if claimed.members.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        let mut parsed = Vec::with_capacity(claimed.members.len());
        for m in claimed.members {
            let ids = m
                .split_once(':')
                .and_then(|(e, t)| Some((EventId::parse(e).ok()?, TargetId::parse(t).ok()?)));
            let Some((event, target)) = ids else {
                tracing::warn!(member = %m, "dropping a malformed member of the retry schedule");
                let _: i64 = self.redis.zrem(&retries, m.clone()).await?;
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
                .hmget(self.keys.event_record(shard, &event), fields)
                .await?;
            parsed.push((m, event, target));
        }
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Vec<Value>> = pipeline.all().await?;
        let mut out = Vec::with_capacity(parsed.len());
        for ((member, event_id, target_id), row) in parsed.into_iter().zip(rows) {
            let text = |i: usize| row.get(i).and_then(|v| v.as_string());
            let loaded = (|| {
                Some((
                    TenantId::parse(&text(0)?).ok()?,
                    EventType::parse(&text(1)?).ok()?,
                    row.get(3)?.as_bytes().map(Bytes::copy_from_slice)?,
                ))
            })();
            let Some((tenant, event_type, body)) = loaded else {
                tracing::warn!(
                    event_id = %event_id,
                    target_id = %target_id,
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
            out.push(DueDelivery {
                member,
                event_id,
                target_id,
                tenant,
                event_type,
                content_type,
                body,
                attempts_so_far: state.as_ref().map(|s| s.attempts).unwrap_or(0),
                deferrals_so_far: state.as_ref().map(|s| s.deferrals).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Drops a delivery from the schedule (its target is gone).
    pub async fn unschedule(
        &self,
        shard: u16,
        tenant: &TenantId,
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
        tenant: &TenantId,
        target_id: Option<&TargetId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let all: HashMap<String, String> = self
            .redis
            .hgetall(self.keys.dead_letters(shard, tenant))
            .await?;
        let mut out: Vec<DeadLetter> = all
            .values()
            .filter_map(|v| serde_json::from_str::<DeadLetter>(v).ok())
            .filter(|d| target_id.is_none_or(|t| d.target_id == *t))
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
        tenant: &TenantId,
        id: &DeadLetterId,
    ) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Deleted {
            deleted: u64,
        }
        let keys = vec![
            self.keys.dead_letters(shard, tenant),
            self.keys.dead_letter_total(shard),
        ];
        let d: Deleted = DELETE_DEAD_LETTER
            .run(&self.redis, keys, vec![id.to_string()])
            .await?;
        Ok(d.deleted == 1)
    }

    /// Puts the selected error queue entries back on the schedule, due now; how many moved.
    pub async fn replay(
        &self,
        shard: u16,
        tenant: &TenantId,
        sel: &ReplaySelection,
    ) -> Result<u64, StoreError> {
        #[derive(Deserialize)]
        struct Replayed {
            replayed: u64,
        }
        let entries = self
            .dead_letters(shard, tenant, sel.target_id.as_ref(), usize::MAX)
            .await?;
        let now = now_ms();
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
                d.id.to_string(),
                member(&d.event_id, &d.target_id),
                d.target_id.to_string(),
                json(&state)?,
                now.to_string(),
            ];
            let r: Replayed = REPLAY.run(&self.redis, keys, args).await?;
            moved += r.replayed;
        }
        Ok(moved)
    }

    /// The delivery record of one event of `tenant`; `None` when unknown (or another tenant's).
    pub async fn event(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_id: &EventId,
    ) -> Result<Option<EventRecord>, StoreError> {
        let record: HashMap<String, Value> = self
            .redis
            .hgetall(self.keys.event_record(shard, event_id))
            .await?;
        let text = |k: &str| record.get(k).and_then(|v| v.as_string());
        if text("tenant").as_deref() != Some(tenant.as_str()) {
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
        let deliveries = text("targets")
            .unwrap_or_default()
            .split(',')
            .filter_map(|t| TargetId::parse(t).ok())
            .map(|t| {
                let state = text(&format!("d:{t}"))
                    .and_then(|s| serde_json::from_str::<DeliveryState>(&s).ok());
                (t, state)
            })
            .collect();
        Ok(Some(EventRecord {
            id: event_id.clone(),
            event_type: text("type"),
            content_type: text("ct").filter(|c| !c.is_empty()),
            received_at_ms: text("at").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            deliveries,
            attempts,
        }))
    }

    /// The tenant's counters.
    pub async fn counters(&self, shard: u16, tenant: &TenantId) -> Result<Counters, StoreError> {
        let c: HashMap<String, i64> = self.redis.hgetall(self.keys.stats(shard, tenant)).await?;
        let dead: u64 = self
            .redis
            .hlen(self.keys.dead_letters(shard, tenant))
            .await?;
        let get = |k: &str| c.get(k).copied().unwrap_or(0).max(0) as u64;
        Ok(Counters {
            events_received: get("events_received"),
            succeeded: get("succeeded"),
            failed: get("failed"),
            in_retry: get("in_retry"),
            dead_letters: dead,
            responses: get("responses"),
            response_ms_total: get("response_ms_total"),
        })
    }
}
