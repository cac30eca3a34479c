//! Delivery records: what happened to each event at each target, the retry schedule, the error
//! queue and the per-tenant counters. All of a tenant's records live in its shard's slot
//! (`{q<n>}`), next to its stream, so each change is one atomic script on one node.
//!
//! [`records`] holds what a record says (states, attempts, their compact text), [`ship`] the
//! log store's side, [`dead_letters`] the error queue's reads, [`health`] each target's health.

mod attempts;
pub mod dead_letters;
pub mod health;
pub mod ship;

use attempts::attempts_of;

pub use crate::model::delivery::{
    AttemptHeaders, AttemptRecord, DeliveryState, EventFilter, EventRecord, EventStatus,
    EventSummary, LoggedEvent, Replayed, State,
};

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::series::{self, hour_of};
use crate::model::time::now_ms;
use crate::model::{DeadLetterId, EventId, EventType, TargetId, TenantId};
use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::{CLAIM_DUE, EXPAND, RECORD, REPLAY, RESTORE};

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
    /// Give up without a trace in the error queue: the target is gone.
    Dropped,
}

/// What recording a batch of outcomes did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Outcomes Redis refused (their position in the batch, and why): nothing of them is
    /// recorded, nor counted.
    pub failed: Vec<(usize, String)>,
    /// Counter and series keys Redis refused: those counts of the call are lost.
    pub counters_failed: Vec<String>,
}

/// `record.lua`'s answer.
#[derive(Debug, Deserialize)]
struct RecordAnswer {
    #[serde(default, deserialize_with = "crate::redis::scripts::list")]
    failed: Vec<(usize, String)>,
    #[serde(default, deserialize_with = "crate::redis::scripts::list")]
    counters_failed: Vec<String>,
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
    /// The stream entry holding the event.
    pub entry_id: &'a str,
    pub event_id: &'a EventId,
    pub tenant: &'a TenantId,
    pub event_type: &'a EventType,
    pub content_type: &'a [u8],
    pub received_at_ms: u64,
    /// Targets whose outcome is recorded.
    pub targets: Vec<&'a TargetId>,
    /// Fire-and-forget targets: sent, never recorded.
    pub unrecorded: Vec<&'a TargetId>,
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
    /// Whether a log store takes finished events (the records then track what is finished).
    logged: bool,
}

fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    Ok(serde_json::to_string(v)?)
}

impl Deliveries {
    pub fn new(
        redis: Client,
        keys: Keyspace,
        ttl_secs: u64,
        attempts_kept: u32,
        logged: bool,
    ) -> Deliveries {
        Deliveries {
            redis,
            keys,
            ttl_secs,
            attempts_kept,
            logged,
        }
    }

    /// The key layout.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// The Redis client.
    pub fn redis(&self) -> &Client {
        &self.redis
    }

    fn logged_flag(&self) -> &'static str {
        if self.logged { "1" } else { "" }
    }

    /// Records the expansion of events read from `shard`'s stream, in one call; per event,
    /// `None` for a duplicate seen in another entry, else the targets whose delivery needs
    /// nothing more (empty on a first read; on a re-read, those with an outcome recorded).
    ///
    /// Without a log store, an event that matches no target gets no record: it only counts as
    /// received (once per read of its entry), and its view and listing row come from the
    /// stream entry. Nothing is delivered for it, so a second entry holding it (a re-sent
    /// `XADD`) has nothing to repeat; the guard against that is the record, which only
    /// events with deliveries need.
    pub async fn expand(
        &self,
        shard: u16,
        events: &[Expansion<'_>],
    ) -> Result<Vec<Option<Vec<String>>>, StoreError> {
        #[derive(Deserialize)]
        struct Expanded {
            #[serde(deserialize_with = "crate::redis::scripts::list")]
            owned: Vec<bool>,
            #[serde(deserialize_with = "crate::redis::scripts::list")]
            settled: Vec<String>,
        }
        let (recorded, counted): (Vec<&Expansion<'_>>, Vec<&Expansion<'_>>) =
            events.iter().partition(|e| self.needs_record(e));
        let mut received: BTreeMap<&TenantId, u64> = BTreeMap::new();
        for e in &counted {
            *received.entry(e.tenant).or_default() += 1;
        }
        // One `now` names the series' hour here and their minute in the script.
        let now = now_ms();
        let hour = hour_of(now);
        if recorded.is_empty() {
            self.count_received(shard, &received, now).await?;
            return Ok(events.iter().map(|_| Some(Vec::new())).collect());
        }
        let mut keys: Vec<String> = Vec::with_capacity(3 * recorded.len() + 3 + 2 * received.len());
        keys.extend(
            recorded
                .iter()
                .map(|e| self.keys.event_record(shard, e.event_id)),
        );
        keys.extend(recorded.iter().map(|e| self.keys.stats(shard, e.tenant)));
        keys.extend(
            recorded
                .iter()
                .map(|e| self.keys.series(shard, e.tenant, hour)),
        );
        keys.push(self.keys.unfinished(shard));
        keys.push(self.keys.ship(shard));
        keys.push(self.keys.series_all(shard, hour));
        for t in received.keys() {
            keys.push(self.keys.stats(shard, t));
            keys.push(self.keys.series(shard, t, hour));
        }
        let mut args: Vec<String> = Vec::with_capacity(5 + recorded.len() * 8 + received.len());
        args.push(self.ttl_secs.to_string());
        args.push(recorded.len().to_string());
        args.push(self.logged_flag().to_owned());
        args.push(now.to_string());
        args.push(series::TTL_S.to_string());
        let joined = |ids: &[&TargetId]| {
            let ids: Vec<&str> = ids.iter().map(|t| t.as_str()).collect();
            ids.join(",")
        };
        for e in &recorded {
            args.push(e.entry_id.to_owned());
            args.push(e.event_id.to_string());
            args.push(e.tenant.to_string());
            args.push(e.event_type.to_string());
            args.push(crate::model::text::visible_text(e.content_type));
            args.push(e.received_at_ms.to_string());
            args.push(joined(&e.targets));
            args.push(joined(&e.unrecorded));
        }
        args.extend(received.values().map(u64::to_string));
        let answer: Expanded = EXPAND.run(&self.redis, keys, args).await?;
        if answer.owned.len() != recorded.len() || answer.settled.len() != recorded.len() {
            return Err(StoreError::Reply(format!(
                "expand answered {} flags and {} settled lists for {} events",
                answer.owned.len(),
                answer.settled.len(),
                recorded.len()
            )));
        }
        let mut answers = answer.owned.into_iter().zip(answer.settled);
        Ok(events
            .iter()
            .map(|e| {
                if !self.needs_record(e) {
                    return Some(Vec::new());
                }
                let (owned, settled) = answers.next()?;
                owned.then(|| {
                    settled
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
            })
            .collect())
    }

    /// Whether the expansion of `e` writes a record: with deliveries, or with a log store
    /// (which ships every event from its record).
    fn needs_record(&self, e: &Expansion<'_>) -> bool {
        self.logged || !e.targets.is_empty() || !e.unrecorded.is_empty()
    }

    /// Counts events as received without a record (see [`Deliveries::expand`]), in the
    /// tenants' counters and in the series of the minute of `now_ms`, in one round trip.
    async fn count_received(
        &self,
        shard: u16,
        received: &BTreeMap<&TenantId, u64>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if received.is_empty() {
            return Ok(());
        }
        let hour = hour_of(now_ms);
        let field = series::field(now_ms, series::RECEIVED);
        let ttl = series::TTL_S as i64;
        let pipeline = self.redis.pipeline();
        let mut total: i64 = 0;
        for (tenant, n) in received {
            let n = *n as i64;
            total += n;
            let _: () = pipeline
                .hincrby(self.keys.stats(shard, tenant), "events_received", n)
                .await?;
            let key = self.keys.series(shard, tenant, hour);
            let _: () = pipeline.hincrby(key.as_str(), field.as_str(), n).await?;
            let _: () = pipeline.expire(key, ttl, None).await?;
        }
        let all = self.keys.series_all(shard, hour);
        let _: () = pipeline
            .hincrby(all.as_str(), field.as_str(), total)
            .await?;
        let _: () = pipeline.expire(all, ttl, None).await?;
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }

    /// Records outcomes of one shard in one call, each on its own (state, attempt log,
    /// counters, schedule, error queue): an outcome whose keys Redis refuses fails alone and
    /// is named in the answer, and is never applied twice (see `record.lua`).
    pub async fn record_many(
        &self,
        shard: u16,
        outcomes: &[Outcome],
    ) -> Result<Recorded, StoreError> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        // One `now` names the series' hour here and their minute in the script.
        let now = now_ms();
        let hour = hour_of(now);
        let mut keys = Vec::with_capacity(5 + outcomes.len() * 6);
        keys.push(self.keys.retries(shard));
        keys.push(self.keys.dead_letter_total(shard));
        keys.push(self.keys.unfinished(shard));
        keys.push(self.keys.ship(shard));
        keys.push(self.keys.series_all(shard, hour));
        let mut args: Vec<Value> = Vec::with_capacity(6 + outcomes.len() * 13);
        args.push((outcomes.len() as i64).into());
        args.push(i64::from(self.attempts_kept).into());
        args.push((self.ttl_secs as i64).into());
        args.push((now as i64).into());
        args.push(self.logged_flag().into());
        args.push((series::TTL_S as i64).into());
        for o in outcomes {
            keys.push(self.keys.event_record(shard, &o.event_id));
            keys.push(self.keys.stats(shard, &o.tenant));
            keys.push(self.keys.dead_letters(shard, &o.tenant));
            keys.push(self.keys.series(shard, &o.tenant, hour));
            keys.push(self.keys.dead_letter_order(shard, &o.tenant));
            keys.push(self.keys.target_health(shard, &o.tenant));
            let (kind, due, dl_id, dl_json) = match &o.next {
                Next::Done => ("done", String::new(), String::new(), String::new()),
                Next::RetryAt(due) => ("retry", due.to_string(), String::new(), String::new()),
                Next::HeldUntil(_) => ("held", String::new(), String::new(), String::new()),
                Next::DeadLetter(dl) => ("dead", String::new(), dl.id.to_string(), json(dl)?),
                Next::Dropped => ("drop", String::new(), String::new(), String::new()),
            };
            let latency = o
                .attempt
                .as_ref()
                .filter(|a| a.status.is_some())
                .map(|a| a.latency_ms.to_string())
                .unwrap_or_default();
            // Every attempt's duration, answered or not: the series' mean is over attempts.
            let attempt_ms = o
                .attempt
                .as_ref()
                .map(|a| a.latency_ms.to_string())
                .unwrap_or_default();
            // The body is sent only when the outcome keeps the event beyond its stream entry.
            let needs_body = matches!(kind, "retry" | "dead");
            let attempt = match &o.attempt {
                Some(a) => a.encode(),
                None => String::new(),
            };
            args.extend([
                Value::from(o.event_id.as_str()),
                Value::from(o.target_id.as_str()),
                o.state.encode().into(),
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
                attempt_ms.into(),
            ]);
        }
        let answer: RecordAnswer = RECORD.run(&self.redis, keys, args).await?;
        Ok(Recorded {
            failed: answer
                .failed
                .into_iter()
                .map(|(i, why)| (i.saturating_sub(1), why))
                .collect(),
            counters_failed: answer.counters_failed,
        })
    }

    /// Records one outcome; `StoreError::Refused` when Redis refuses it for what its keys hold.
    pub async fn record(&self, o: &Outcome) -> Result<(), StoreError> {
        let recorded = self.record_many(o.shard, std::slice::from_ref(o)).await?;
        match recorded.failed.into_iter().next() {
            None => Ok(()),
            Some((_, why)) => Err(StoreError::Refused(why)),
        }
    }

    /// The types of the keys of `o`'s own (its record, its tenant's counters, error queue and
    /// its order, series of the hour, target health) that are not what they should be: what a refused outcome is at fault for, as
    /// opposed to a key the whole shard shares.
    pub async fn foreign_keys_of(&self, o: &Outcome) -> Result<Vec<(String, String)>, StoreError> {
        let hour = hour_of(now_ms());
        let own = [
            self.keys.event_record(o.shard, &o.event_id),
            self.keys.stats(o.shard, &o.tenant),
            self.keys.dead_letters(o.shard, &o.tenant),
            self.keys.series(o.shard, &o.tenant, hour),
            self.keys.target_health(o.shard, &o.tenant),
        ];
        let mut wrong = Vec::new();
        let order = self.keys.dead_letter_order(o.shard, &o.tenant);
        for (key, expected) in own
            .into_iter()
            .map(|k| (k, "hash"))
            .chain([(order, "zset")])
        {
            let kind: String = self.redis.r#type(&key).await?;
            if kind != expected && kind != "none" {
                wrong.push((key, kind));
            }
        }
        Ok(wrong)
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
            #[serde(deserialize_with = "crate::redis::scripts::list")]
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
                self.set_aside_due(shard, &m, "a malformed member of the retry schedule")
                    .await?;
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
        // Each read on its own: one record of the wrong type must not hold up the others.
        let rows: Vec<Result<Vec<Value>, fred::error::Error>> = pipeline.try_all().await;
        let mut out = Vec::with_capacity(parsed.len());
        for ((member, event_id, target_id), row) in parsed.into_iter().zip(rows) {
            let row = match row {
                Ok(row) => row,
                Err(e) if crate::redis::connection::is_data_fault(&e) => {
                    self.set_aside_due(shard, &member, &e.to_string()).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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
            let state = text(4).and_then(|s| DeliveryState::decode(&s));
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

    /// Takes a member of the retry schedule that cannot be processed off it, into the shard's
    /// quarantine: it would otherwise come back at every lease's end.
    async fn set_aside_due(
        &self,
        shard: u16,
        member: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        // In the quarantine first: a failure between the two steps leaves it on the schedule.
        crate::store::quarantine::put(
            &self.redis,
            &self.keys,
            shard,
            "retries",
            member,
            reason,
            Vec::new(),
        )
        .await?;
        let _: i64 = self.redis.zrem(self.keys.retries(shard), member).await?;
        if let Some(event) = member
            .split_once(':')
            .and_then(|(e, _)| EventId::parse(e).ok())
        {
            self.release_unfinished(shard, &event).await?;
        }
        Ok(())
    }

    /// Stops counting `event` as unfinished, once what held it open was set aside: stream
    /// retention and shipping never wait for it again.
    pub async fn release_unfinished(&self, shard: u16, event: &EventId) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .zrem(self.keys.unfinished(shard), event.as_str())
            .await?;
        Ok(())
    }

    /// Drops a delivery whose target is gone: off the schedule, and finished in its record
    /// (dead-lettered, with no error queue entry), so its event can be shipped.
    pub async fn unschedule(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_id: &EventId,
        target_id: &TargetId,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let outcome = Outcome {
            shard,
            tenant: tenant.clone(),
            event_id: event_id.clone(),
            target_id: target_id.clone(),
            state: DeliveryState {
                state: State::DeadLettered,
                attempts,
                last_status: None,
                last_error: Some("the target was deleted".into()),
                next_retry_at_ms: None,
                updated_at_ms: now,
                deferrals: 0,
            },
            attempt: None,
            next: Next::Dropped,
            body: Bytes::new(),
            content_type: None,
        };
        self.record(&outcome).await
    }

    /// Deliveries waiting in `shard`'s schedule.
    pub async fn scheduled(&self, shard: u16) -> Result<u64, StoreError> {
        Ok(self.redis.zcard(self.keys.retries(shard)).await?)
    }

    /// Sends one dead-lettered delivery again (due now, fresh attempts), removing its error
    /// queue entry `dl_id` if given.
    pub async fn replay_one(
        &self,
        shard: u16,
        tenant: &TenantId,
        dl_id: Option<&DeadLetterId>,
        event_id: &EventId,
        target_id: &TargetId,
        last: Option<(Option<u16>, Option<String>)>,
    ) -> Result<Replayed, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            replayed: u64,
            missing: bool,
        }
        let now = now_ms();
        let (last_status, last_error) = last.unwrap_or_default();
        let state = DeliveryState {
            state: State::Retrying,
            attempts: 0,
            last_status,
            last_error,
            next_retry_at_ms: Some(now),
            updated_at_ms: now,
            deferrals: 0,
        };
        let keys = vec![
            self.keys.dead_letters(shard, tenant),
            self.keys.retries(shard),
            self.keys.stats(shard, tenant),
            self.keys.event_record(shard, event_id),
            self.keys.dead_letter_total(shard),
            self.keys.attempts(shard, event_id),
            self.keys.unfinished(shard),
            self.keys.ship(shard),
            self.keys.dead_letter_order(shard, tenant),
        ];
        let args = vec![
            dl_id.map(|d| d.to_string()).unwrap_or_default(),
            member(event_id, target_id),
            target_id.to_string(),
            state.encode(),
            now.to_string(),
            self.ttl_secs.to_string(),
            event_id.to_string(),
        ];
        let r: Answer = REPLAY.run(&self.redis, keys, args).await?;
        Ok(match (r.missing, r.replayed) {
            (true, _) => Replayed::Missing,
            (false, 1) => Replayed::Replayed,
            _ => Replayed::Skipped,
        })
    }

    /// Writes an event read back from the log store into Redis (unless its record is there);
    /// `true` when it was written.
    pub async fn restore(&self, shard: u16, e: &LoggedEvent) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            restored: bool,
        }
        let mut args: Vec<Value> = vec![
            (self.ttl_secs as i64).into(),
            self.logged_flag().into(),
            e.tenant.as_str().into(),
            e.event_type.as_str().into(),
            e.content_type.clone().unwrap_or_default().into(),
            (e.received_at_ms as i64).into(),
            Value::Bytes(e.body.clone()),
        ];
        for (target, state) in &e.deliveries {
            args.push(target.as_str().into());
            args.push(state.encode().into());
        }
        let a: Answer = RESTORE
            .run(
                &self.redis,
                vec![self.keys.event_record(shard, &e.id)],
                args,
            )
            .await?;
        Ok(a.restored)
    }

    /// The delivery record of one event of `tenant`; `None` when unknown (or another tenant's).
    /// The tenant whose event `event_id` is, while Redis holds its record: the operator's
    /// search by id, which does not know the shard (one pipelined read per shard).
    pub async fn event_tenant(
        &self,
        shards: u16,
        event_id: &EventId,
    ) -> Result<Option<TenantId>, StoreError> {
        let pipeline = self.redis.pipeline();
        for shard in 0..shards {
            let _: () = pipeline
                .hget(self.keys.event_record(shard, event_id), "tenant")
                .await?;
        }
        let owners: Vec<Option<String>> = pipeline.all().await?;
        Ok(owners
            .into_iter()
            .flatten()
            .find_map(|t| TenantId::parse(&t).ok()))
    }

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
        let Some(parsed) = Parsed::of(&record).filter(|p| p.tenant == tenant.as_str()) else {
            return Ok(None);
        };
        // Records of earlier versions kept their attempts in a list of their own.
        let listed: Vec<String> = self
            .redis
            .lrange(self.keys.attempts(shard, event_id), 0, -1)
            .await?;
        let attempts = attempts_of(&record, &listed);
        Ok(Some(EventRecord {
            id: event_id.clone(),
            event_type: Some(parsed.event_type),
            content_type: parsed.content_type,
            received_at_ms: parsed.received_at_ms,
            deliveries: parsed.deliveries,
            attempts,
        }))
    }

    /// Listing summaries of these events of `tenant`, in order; `None` for an event whose
    /// record is gone or is another tenant's.
    pub async fn summaries(
        &self,
        shard: u16,
        tenant: &TenantId,
        ids: &[EventId],
    ) -> Result<Vec<Option<EventSummary>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for id in ids {
            let _: () = pipeline.hgetall(self.keys.event_record(shard, id)).await?;
        }
        let rows: Vec<Value> = pipeline.all().await?;
        Ok(ids
            .iter()
            .zip(rows)
            .map(|(id, row)| {
                let fields = hash_fields(row);
                let p = Parsed::of(&fields).filter(|p| p.tenant == tenant.as_str())?;
                Some(p.summary(id.clone()))
            })
            .collect())
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

/// The fields of an `HGETALL` reply (a RESP3 map or a RESP2 flat array).
pub(super) fn hash_fields(v: Value) -> HashMap<String, Value> {
    match v {
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        Value::Array(flat) => {
            let mut out = HashMap::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = k.as_string() {
                    out.insert(k, v);
                }
            }
            out
        }
        _ => HashMap::new(),
    }
}

/// An event record's fields, read.
pub(super) struct Parsed {
    tenant: String,
    event_type: String,
    content_type: Option<String>,
    received_at_ms: u64,
    deliveries: Vec<(TargetId, Option<DeliveryState>)>,
}

impl Parsed {
    /// `None` for a record without a tenant (gone, or not a record).
    fn of(record: &HashMap<String, Value>) -> Option<Parsed> {
        let text = |k: &str| record.get(k).and_then(|v| v.as_string());
        let tenant = text("tenant")?;
        let mut deliveries: Vec<(TargetId, Option<DeliveryState>)> = record
            .iter()
            .filter_map(|(k, v)| {
                let t = TargetId::parse(k.strip_prefix("d:")?).ok()?;
                Some((t, v.as_string().and_then(|s| DeliveryState::decode(&s))))
            })
            .collect();
        // Records of earlier versions list their targets; a target without a state is pending.
        for t in text("targets").unwrap_or_default().split(',') {
            if let Ok(t) = TargetId::parse(t) {
                if !deliveries.iter().any(|(d, _)| *d == t) {
                    deliveries.push((t, None));
                }
            }
        }
        deliveries.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Parsed {
            tenant,
            event_type: text("type").unwrap_or_default(),
            content_type: text("ct").filter(|c| !c.is_empty()),
            received_at_ms: text("at").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            deliveries,
        })
    }

    fn summary(self, id: EventId) -> EventSummary {
        EventSummary {
            status: EventStatus::of(
                self.deliveries
                    .iter()
                    .map(|(_, s)| s.as_ref().map(|s| s.state)),
            ),
            id,
            event_type: self.event_type,
            content_type: self.content_type,
            received_at_ms: self.received_at_ms,
            deliveries: self
                .deliveries
                .into_iter()
                .map(|(t, s)| {
                    let s = s.unwrap_or_else(DeliveryState::pending);
                    (t, s.state, s.attempts)
                })
                .collect(),
        }
    }
}
