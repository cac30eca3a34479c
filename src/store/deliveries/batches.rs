//! Batched targets' deliveries in Redis: the gathering lists, the batches cut from them, and
//! the schedule that sends (and retries) each batch under a lease, like the retry schedule,
//! but in a sorted set of its own (`P:{q<n>}:batches`), so a process that does not know
//! batches never takes one for a malformed retry.
//!
//! A batch is durable from its first event on: an event is gathered (its body kept in its
//! record) before its stream entry is acknowledged, a batch is cut atomically from the list,
//! and a cut batch stays in the schedule, leased while it is sent, until its outcome is
//! recorded. A process killed at any point leaves the gathering list, the batch or its lease
//! behind, and another picks it up.

use std::collections::HashMap;

use bytes::Bytes;
use fred::prelude::*;
use serde::Deserialize;

use super::Deliveries;
use crate::model::{BatchId, EventId, EventType, TargetId, TenantId};
use crate::redis::scripts::{CLAIM_DUE, CUT_BATCH, GATHER};
use crate::store::error::StoreError;

/// An event gathered for a batched target.
#[derive(Debug, Clone, Copy)]
pub struct Gathered<'a> {
    pub event_id: &'a EventId,
    pub tenant: &'a TenantId,
    pub target: &'a TargetId,
    pub body: &'a Bytes,
    /// The packed content type and kept headers.
    pub content_type: Option<&'a Bytes>,
    pub max_events: u64,
    pub max_wait_ms: u64,
}

/// A target whose next batch is due to be cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCut {
    pub tenant: TenantId,
    pub target: TargetId,
}

/// One event of a batch, as its record holds it.
#[derive(Debug, Clone)]
pub struct BatchedEvent {
    pub id: EventId,
    pub event_type: EventType,
    pub received_at_ms: u64,
    /// The packed content type and kept headers.
    pub content_type: Option<Bytes>,
    pub body: Bytes,
    /// Attempts of its delivery so far.
    pub attempts: u32,
}

/// A batch due to be sent.
#[derive(Debug, Clone)]
pub struct DueBatch {
    pub id: BatchId,
    pub tenant: TenantId,
    pub target: TargetId,
    /// Attempts made so far.
    pub attempts: u32,
    /// Its events still held in Redis, in order.
    pub events: Vec<BatchedEvent>,
    /// Events whose record is gone (past retention): sent no more.
    pub missing: Vec<EventId>,
}

fn member_of(tenant: &TenantId, target: &TargetId) -> String {
    format!("{tenant}|{target}")
}

impl Deliveries {
    /// Gathers events of `shard` for their batched targets (each once, whatever happens).
    pub async fn gather(&self, shard: u16, items: &[Gathered<'_>]) -> Result<u64, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            gathered: u64,
        }
        if items.is_empty() {
            return Ok(0);
        }
        let mut keys = Vec::with_capacity(1 + items.len() * 2);
        keys.push(self.keys.gathering(shard));
        let mut args: Vec<Value> = Vec::with_capacity(2 + items.len() * 7);
        args.push(Value::from(items.len().to_string()));
        args.push(Value::from(self.clock.now_ms().to_string()));
        for g in items {
            keys.push(self.keys.event_record(shard, g.event_id));
            keys.push(self.keys.gather(shard, g.target));
            args.extend([
                Value::from(g.event_id.as_str()),
                Value::from(g.target.as_str()),
                Value::from(member_of(g.tenant, g.target)),
                Value::Bytes(g.body.clone()),
                Value::Bytes(g.content_type.cloned().unwrap_or_default()),
                Value::from(g.max_events.to_string()),
                Value::from(g.max_wait_ms.to_string()),
            ]);
        }
        let answer: Answer = GATHER.run(&self.redis, keys, args).await?;
        Ok(answer.gathered)
    }

    /// Targets of `shard` whose next batch is due to be cut by `now_ms`.
    pub async fn due_cuts(
        &self,
        shard: u16,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueCut>, StoreError> {
        let members: Vec<String> = self
            .redis
            .zrangebyscore(
                self.keys.gathering(shard),
                "-inf",
                now_ms as f64,
                false,
                Some((0, limit as i64)),
            )
            .await?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let parsed = m.split_once('|').and_then(|(t, g)| {
                Some(DueCut {
                    tenant: TenantId::parse(t).ok()?,
                    target: TargetId::parse(g).ok()?,
                })
            });
            match parsed {
                Some(c) => out.push(c),
                None => {
                    // Nothing can be done with it; it would come back at every pass.
                    crate::store::quarantine::put(
                        &self.redis,
                        &self.keys,
                        shard,
                        "batches",
                        &m,
                        "a malformed member of the gathering schedule",
                        Vec::new(),
                    )
                    .await?;
                    let _: i64 = self.redis.zrem(self.keys.gathering(shard), &m).await?;
                }
            }
        }
        Ok(out)
    }

    /// Cuts `target`'s next batch (at most `max_events`): its size (0 when nothing was
    /// gathered: no batch is made) and how many events are left gathered.
    pub async fn cut_batch(
        &self,
        shard: u16,
        cut: &DueCut,
        batch: &BatchId,
        max_events: u64,
        max_wait_ms: u64,
    ) -> Result<(u64, u64), StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            size: u64,
            #[serde(default)]
            left: u64,
        }
        let answer: Answer = CUT_BATCH
            .run(
                &self.redis,
                vec![
                    self.keys.gather(shard, &cut.target),
                    self.keys.gathering(shard),
                    self.keys.batches(shard),
                    self.keys.batch(shard, batch),
                ],
                vec![
                    member_of(&cut.tenant, &cut.target),
                    batch.to_string(),
                    cut.tenant.to_string(),
                    cut.target.to_string(),
                    max_events.to_string(),
                    max_wait_ms.to_string(),
                    self.clock.now_ms().to_string(),
                ],
            )
            .await?;
        Ok((answer.size, answer.left))
    }

    /// Claims up to `limit` batches of `shard` due by `now_ms`, leased until
    /// `lease_until_ms`, with their events. A batch whose record is gone is dropped.
    pub async fn claim_batches(
        &self,
        shard: u16,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueBatch>, StoreError> {
        #[derive(Deserialize)]
        struct Claimed {
            #[serde(deserialize_with = "crate::redis::scripts::list")]
            members: Vec<String>,
        }
        let claimed: Claimed = CLAIM_DUE
            .run(
                &self.redis,
                vec![self.keys.batches(shard)],
                vec![
                    now_ms.to_string(),
                    lease_until_ms.to_string(),
                    limit.to_string(),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(claimed.members.len());
        for m in claimed.members {
            let Ok(id) = BatchId::parse(&m) else {
                let _: i64 = self.redis.zrem(self.keys.batches(shard), &m).await?;
                continue;
            };
            let fields: HashMap<String, String> =
                self.redis.hgetall(self.keys.batch(shard, &id)).await?;
            let head = (|| {
                Some((
                    TenantId::parse(fields.get("tenant")?).ok()?,
                    TargetId::parse(fields.get("target")?).ok()?,
                ))
            })();
            let Some((tenant, target)) = head else {
                tracing::warn!(batch = %id, "a scheduled batch's record is gone or unreadable; dropping it");
                self.finish_batch(shard, &id).await?;
                continue;
            };
            let ids: Vec<EventId> = fields
                .get("events")
                .map(|e| {
                    e.split(',')
                        .filter_map(|i| EventId::parse(i).ok())
                        .collect()
                })
                .unwrap_or_default();
            let attempts = fields
                .get("attempts")
                .and_then(|a| a.parse().ok())
                .unwrap_or(0);
            let (events, missing) = self.batched_events(shard, &target, ids).await?;
            out.push(DueBatch {
                id,
                tenant,
                target,
                attempts,
                events,
                missing,
            });
        }
        Ok(out)
    }

    /// The events of a batch as their records hold them; those whose record is gone apart.
    async fn batched_events(
        &self,
        shard: u16,
        target: &TargetId,
        ids: Vec<EventId>,
    ) -> Result<(Vec<BatchedEvent>, Vec<EventId>), StoreError> {
        if ids.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let pipeline = self.redis.pipeline();
        for id in &ids {
            let fields = vec![
                "type".to_owned(),
                "at".into(),
                "ct".into(),
                "body".into(),
                format!("d:{target}"),
            ];
            let _: () = pipeline
                .hmget(self.keys.event_record(shard, id), fields)
                .await?;
        }
        let rows: Vec<Result<Vec<Value>, fred::error::Error>> = pipeline.try_all().await;
        let (mut events, mut missing) = (Vec::new(), Vec::new());
        for (id, row) in ids.into_iter().zip(rows) {
            let row = match row {
                Ok(r) => r,
                Err(e) if crate::redis::connection::is_data_fault(&e) => {
                    missing.push(id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let text = |i: usize| row.get(i).and_then(|v| v.as_string());
            let read = (|| {
                Some(BatchedEvent {
                    event_type: EventType::parse(&text(0)?).ok()?,
                    received_at_ms: text(1)
                        .and_then(|a| a.parse().ok())
                        .or_else(|| id.received_at_ms())?,
                    content_type: row
                        .get(2)
                        .and_then(|v| v.as_bytes())
                        .filter(|b| !b.is_empty())
                        .map(Bytes::copy_from_slice),
                    body: row.get(3)?.as_bytes().map(Bytes::copy_from_slice)?,
                    attempts: text(4)
                        .and_then(|s| super::DeliveryState::decode(&s))
                        .map(|s| s.attempts)
                        .unwrap_or(0),
                    id: id.clone(),
                })
            })();
            match read {
                Some(e) => events.push(e),
                None => missing.push(id),
            }
        }
        Ok((events, missing))
    }

    /// Schedules a batch's next attempt at `due_ms`, counting `attempts` made.
    pub async fn reschedule_batch(
        &self,
        shard: u16,
        batch: &BatchId,
        attempts: u32,
        due_ms: u64,
    ) -> Result<(), StoreError> {
        let pipeline = self.redis.pipeline();
        let _: () = pipeline
            .hset(self.keys.batch(shard, batch), ("attempts", attempts))
            .await?;
        let _: () = pipeline
            .zadd(
                self.keys.batches(shard),
                None,
                None,
                false,
                false,
                (due_ms as f64, batch.as_str()),
            )
            .await?;
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Takes a batch whose outcome is recorded out of the schedule.
    pub async fn finish_batch(&self, shard: u16, batch: &BatchId) -> Result<(), StoreError> {
        let pipeline = self.redis.pipeline();
        let _: () = pipeline
            .zrem(self.keys.batches(shard), batch.as_str())
            .await?;
        let _: () = pipeline.del(self.keys.batch(shard, batch)).await?;
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Batches of `shard` waiting to be sent or retried.
    pub async fn batches_scheduled(&self, shard: u16) -> Result<u64, StoreError> {
        Ok(self.redis.zcard(self.keys.batches(shard)).await?)
    }
}
