//! Delivery records: what happened to each event at each target, the retry schedule, the error
//! queue and the per-tenant counters. All of a tenant's records live in its shard's slot
//! (`{q<n>}`), next to its stream, so each change is one atomic script on one node.

pub mod dead_letters;
pub mod health;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::series::{self, hour_of};
use crate::keyspace::Keyspace;
use crate::model::time::now_ms;
use crate::model::{DeadLetterId, EventId, EventType, TargetId, TenantId};
use crate::scripts::{CLAIM_DUE, EXPAND, LEASE, RECORD, REPLAY, RESTORE, SHIPPED};

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

impl State {
    /// The state's name in the APIs and the log store.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Succeeded => "succeeded",
            State::Retrying => "retrying",
            State::DeadLettered => "dead_lettered",
            State::Sent => "sent",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "succeeded" => State::Succeeded,
            "retrying" => State::Retrying,
            "dead_lettered" => State::DeadLettered,
            "sent" => State::Sent,
            _ => return None,
        })
    }

    /// The one-letter kind of the compact encoding (shared with `delivery.lua`).
    fn letter(self) -> char {
        match self {
            State::Pending => 'p',
            State::Retrying => 'r',
            State::Succeeded => 's',
            State::DeadLettered => 'd',
            State::Sent => 'n',
        }
    }

    fn from_letter(c: char) -> Option<State> {
        Some(match c {
            'p' => State::Pending,
            'r' => State::Retrying,
            's' => State::Succeeded,
            'd' => State::DeadLettered,
            'n' => State::Sent,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to the delivery (unless it is replayed).
    pub fn is_final(self) -> bool {
        matches!(self, State::Succeeded | State::DeadLettered | State::Sent)
    }
}

/// Where an event stands as a whole, over its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// A delivery is pending or waiting for a retry.
    InProgress,
    /// Every delivery succeeded (or was sent, fire-and-forget).
    Succeeded,
    /// Every delivery is finished and at least one ended in the error queue.
    Failed,
    /// No target wanted the event.
    NoTargets,
}

impl EventStatus {
    /// The status of an event whose deliveries stand at `states` (`None`: no outcome yet).
    pub fn of(states: impl Iterator<Item = Option<State>>) -> EventStatus {
        let mut any = false;
        let mut failed = false;
        for s in states {
            any = true;
            match s {
                None | Some(State::Pending | State::Retrying) => return EventStatus::InProgress,
                Some(State::DeadLettered) => failed = true,
                Some(State::Succeeded | State::Sent) => {}
            }
        }
        match (any, failed) {
            (false, _) => EventStatus::NoTargets,
            (true, true) => EventStatus::Failed,
            (true, false) => EventStatus::Succeeded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::InProgress => "in_progress",
            EventStatus::Succeeded => "succeeded",
            EventStatus::Failed => "failed",
            EventStatus::NoTargets => "no_targets",
        }
    }

    pub fn parse(text: &str) -> Option<EventStatus> {
        Some(match text {
            "in_progress" => EventStatus::InProgress,
            "succeeded" => EventStatus::Succeeded,
            "failed" => EventStatus::Failed,
            "no_targets" => EventStatus::NoTargets,
            _ => return None,
        })
    }

    /// The delivery states that give one delivery this status (for a filter by target).
    pub fn delivery_states(self) -> &'static [State] {
        match self {
            EventStatus::InProgress => &[State::Pending, State::Retrying],
            EventStatus::Succeeded => &[State::Succeeded, State::Sent],
            EventStatus::Failed => &[State::DeadLettered],
            EventStatus::NoTargets => &[],
        }
    }

    /// Whether one delivery in `state` gives this status.
    pub fn matches_delivery(self, state: State) -> bool {
        self.delivery_states().contains(&state)
    }
}

/// Which events a listing shows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// An event type, `prefix.*` or `*`.
    pub event_type: Option<crate::model::EventPattern>,
    /// The event's status or, with `target_id`, that delivery's.
    pub status: Option<EventStatus>,
    /// Only events expanded to this target.
    pub target_id: Option<TargetId>,
    /// Received at or after (ms).
    pub since_ms: Option<u64>,
    /// Received at or before (ms).
    pub until_ms: Option<u64>,
    /// Only events older than this one (the cursor of the previous page).
    pub before: Option<EventId>,
}

impl EventFilter {
    /// Whether an event passes the filter.
    pub fn admits(&self, e: &EventSummary) -> bool {
        if self
            .event_type
            .as_ref()
            .is_some_and(|p| !p.matches(&e.event_type))
        {
            return false;
        }
        if self.since_ms.is_some_and(|s| e.received_at_ms < s)
            || self.until_ms.is_some_and(|u| e.received_at_ms > u)
            || self.before.as_ref().is_some_and(|b| e.id >= *b)
        {
            return false;
        }
        match (&self.target_id, self.status) {
            (Some(t), status) => e
                .deliveries
                .iter()
                .find(|(id, _, _)| id == t)
                .is_some_and(|(_, s, _)| status.is_none_or(|st| st.matches_delivery(*s))),
            (None, Some(status)) => e.status == status,
            (None, None) => true,
        }
    }
}

/// One event of a listing.
#[derive(Debug, Clone)]
pub struct EventSummary {
    pub id: EventId,
    pub event_type: String,
    pub content_type: Option<String>,
    pub received_at_ms: u64,
    pub status: EventStatus,
    /// Target, state and attempts of each delivery.
    pub deliveries: Vec<(TargetId, State, u32)>,
}

/// A finished event with everything the log store keeps of it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub tenant: TenantId,
    pub id: EventId,
    pub received_at_ms: u64,
    pub event_type: String,
    pub content_type: Option<String>,
    /// Empty when only the stream entry holds it (see [`ShipCandidate::entry`]).
    pub body: Bytes,
    pub deliveries: Vec<(TargetId, DeliveryState)>,
    pub attempts: Vec<AttemptRecord>,
}

impl LoggedEvent {
    /// Where the event stands as a whole.
    pub fn status(&self) -> EventStatus {
        EventStatus::of(self.deliveries.iter().map(|(_, s)| Some(s.state)))
    }
}

/// An event of a shard's ship queue, as read for shipping.
#[derive(Debug, Clone)]
pub struct ShipCandidate {
    pub id: EventId,
    /// Its finish count when read ([`Deliveries::mark_shipped`] checks it did not move).
    pub fin: String,
    /// When it last finished (ms).
    pub finished_at_ms: u64,
    /// The stream entry that expanded it (`restored` for a record brought back for a replay).
    pub entry: String,
    /// `None` when its record is gone.
    pub event: Option<LoggedEvent>,
}

/// What replaying one delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Back on the schedule.
    Replayed,
    /// Not dead-lettered (succeeded, or still being tried): left alone.
    Skipped,
    /// The event's record is not in Redis.
    Missing,
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

impl DeliveryState {
    /// A delivery with no outcome yet.
    pub fn pending() -> DeliveryState {
        DeliveryState {
            state: State::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            next_retry_at_ms: None,
            updated_at_ms: 0,
            deferrals: 0,
        }
    }

    /// The compact text kept in Redis: `<kind>|<attempts>|<last status>|<next retry ms>|
    /// <updated ms>|<deferrals>|<last error>`. Short enough that an event's record stays a
    /// listpack (every value under 64 bytes) unless an error message is long.
    pub fn encode(&self) -> String {
        fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.state.letter(),
            self.attempts,
            opt(self.last_status),
            opt(self.next_retry_at_ms),
            self.updated_at_ms,
            self.deferrals,
            self.last_error.as_deref().unwrap_or_default()
        )
    }

    /// Reads the compact text, the bare kind a new delivery starts with (`p`), or the JSON of
    /// earlier versions.
    pub fn decode(text: &str) -> Option<DeliveryState> {
        if text.starts_with('{') {
            return serde_json::from_str(text).ok();
        }
        let mut parts = text.splitn(7, '|');
        let mut chars = parts.next()?.chars();
        let state = State::from_letter(chars.next()?)?;
        if chars.next().is_some() {
            return None;
        }
        let mut out = DeliveryState {
            state,
            ..DeliveryState::pending()
        };
        let Some(attempts) = parts.next() else {
            return Some(out); // the bare kind
        };
        out.attempts = attempts.parse().ok()?;
        let num = |p: Option<&str>| -> Option<Option<u64>> {
            match p? {
                "" => Some(None),
                t => t.parse().ok().map(Some),
            }
        };
        out.last_status = num(parts.next())?.and_then(|s| u16::try_from(s).ok());
        out.next_retry_at_ms = num(parts.next())?;
        out.updated_at_ms = num(parts.next())?.unwrap_or(0);
        out.deferrals = num(parts.next())?.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        out.last_error = parts.next().filter(|e| !e.is_empty()).map(str::to_owned);
        Some(out)
    }
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

impl AttemptRecord {
    /// The compact text kept in the event's record: `<target>|<attempt>|<at ms>|<status>|
    /// <latency ms>|<error length>|<error><response>` (a successful attempt stays under the
    /// 64 bytes that keep the record a listpack).
    pub fn encode(&self) -> String {
        let error = self.error.as_deref().unwrap_or_default();
        format!(
            "{}|{}|{}|{}|{}|{}|{}{}",
            self.target_id,
            self.attempt,
            self.at_ms,
            self.status.map(|s| s.to_string()).unwrap_or_default(),
            self.latency_ms,
            if self.error.is_some() {
                error.len().to_string()
            } else {
                String::new()
            },
            error,
            self.response.as_deref().unwrap_or_default()
        )
    }

    /// Reads the compact text, or the JSON of earlier versions.
    pub fn decode(text: &str) -> Option<AttemptRecord> {
        if text.starts_with('{') {
            return serde_json::from_str(text).ok();
        }
        let mut p = text.splitn(7, '|');
        let target_id = TargetId::parse(p.next()?).ok()?;
        let attempt = p.next()?.parse().ok()?;
        let at_ms = p.next()?.parse().ok()?;
        let status = match p.next()? {
            "" => None,
            s => Some(s.parse().ok()?),
        };
        let latency_ms = p.next()?.parse().ok()?;
        let error_len = p.next()?;
        let rest = p.next()?;
        let (error, response) = match error_len {
            "" => (None, rest),
            n => {
                let n: usize = n.parse().ok()?;
                let (e, r) = (rest.get(..n)?, rest.get(n..)?);
                (Some(e.to_owned()), r)
            }
        };
        Some(AttemptRecord {
            target_id,
            attempt,
            at_ms,
            status,
            latency_ms,
            error,
            response: (!response.is_empty()).then(|| response.to_owned()),
        })
    }
}

/// The attempts of a record (`a:<slot>` fields) and of an earlier version's attempt list,
/// oldest first.
fn attempts_of(record: &HashMap<String, Value>, list: &[String]) -> Vec<AttemptRecord> {
    let mut out: Vec<AttemptRecord> = list
        .iter()
        .filter_map(|a| AttemptRecord::decode(a))
        .collect();
    out.extend(
        record
            .iter()
            .filter(|(k, _)| k.starts_with("a:"))
            .filter_map(|(_, v)| AttemptRecord::decode(&v.as_string()?)),
    );
    out.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.attempt.cmp(&b.attempt)));
    out
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
    #[serde(default, deserialize_with = "crate::scripts::list")]
    failed: Vec<(usize, String)>,
    #[serde(default, deserialize_with = "crate::scripts::list")]
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
            #[serde(deserialize_with = "crate::scripts::list")]
            owned: Vec<bool>,
            #[serde(deserialize_with = "crate::scripts::list")]
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
                Err(e) if crate::redis::is_data_fault(&e) => {
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

    /// Takes or renews the lease of shipping `shard` for `holder`; `true` when it holds it.
    pub async fn lease_shipping(
        &self,
        shard: u16,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            held: bool,
        }
        let a: Answer = LEASE
            .run(
                &self.redis,
                vec![self.keys.ship_lease(shard)],
                vec![holder.to_owned(), lease.as_millis().to_string()],
            )
            .await?;
        Ok(a.held)
    }

    /// The oldest events of `shard`'s ship queue, with what the log store keeps of them. The
    /// bodies that only the stream holds are left empty for the caller to fetch.
    pub async fn ship_candidates(
        &self,
        shard: u16,
        limit: usize,
    ) -> Result<Vec<ShipCandidate>, StoreError> {
        self.prune_unfinished(shard).await?;
        let members: Vec<String> = self
            .redis
            .zrange(
                self.keys.ship(shard),
                0,
                limit as i64 - 1,
                None,
                false,
                None,
                false,
            )
            .await?;
        let ids: Vec<EventId> = members
            .iter()
            .filter_map(|m| EventId::parse(m).ok())
            .collect();
        if ids.len() != members.len() {
            let bad: Vec<&String> = members
                .iter()
                .filter(|m| EventId::parse(m).is_err())
                .collect();
            tracing::warn!(
                shard,
                count = bad.len(),
                "dropping malformed members of the ship queue"
            );
            let _: i64 = self.redis.zrem(self.keys.ship(shard), bad).await?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for id in &ids {
            let _: () = pipeline.hgetall(self.keys.event_record(shard, id)).await?;
            let _: () = pipeline
                .lrange(self.keys.attempts(shard, id), 0, -1)
                .await?;
        }
        let rows: Vec<Value> = pipeline.all().await?;
        let mut rows = rows.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(record), Some(attempts)) = (rows.next(), rows.next()) else {
                break;
            };
            let fields = hash_fields(record);
            let text = |k: &str| fields.get(k).and_then(|v| v.as_string());
            let fin = text("fin").unwrap_or_default();
            let finished_at_ms = text("fin_at").and_then(|t| t.parse().ok()).unwrap_or(0);
            let entry = text("entry").unwrap_or_default();
            let event = Parsed::of(&fields).and_then(|p| {
                let tenant = TenantId::parse(&p.tenant).ok()?;
                let body = fields
                    .get("body")
                    .and_then(|v| v.as_bytes())
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                let listed: Vec<String> = match &attempts {
                    Value::Array(items) => items.iter().filter_map(|a| a.as_string()).collect(),
                    _ => Vec::new(),
                };
                let attempts = attempts_of(&fields, &listed);
                Some(LoggedEvent {
                    tenant,
                    id: id.clone(),
                    received_at_ms: p.received_at_ms,
                    event_type: p.event_type,
                    content_type: p.content_type,
                    body,
                    deliveries: p
                        .deliveries
                        .into_iter()
                        .map(|(t, s)| (t, s.unwrap_or_else(DeliveryState::pending)))
                        .collect(),
                    attempts,
                })
            });
            out.push(ShipCandidate {
                id,
                fin,
                finished_at_ms,
                entry,
                event,
            });
        }
        Ok(out)
    }

    /// Drops from the head of `shard`'s unfinished set the events whose records are gone
    /// (expired past retention, or a delivery dropped with its target): they must not hold
    /// back the stream's trimming.
    async fn prune_unfinished(&self, shard: u16) -> Result<(), StoreError> {
        let key = self.keys.unfinished(shard);
        let head: Vec<String> = self
            .redis
            .zrange(&key, 0, 15, None, false, None, false)
            .await?;
        if head.is_empty() {
            return Ok(());
        }
        let pipeline = self.redis.pipeline();
        let mut ids = Vec::with_capacity(head.len());
        for m in &head {
            match EventId::parse(m) {
                Ok(id) => {
                    let _: () = pipeline.exists(self.keys.event_record(shard, &id)).await?;
                    ids.push(m.clone());
                }
                Err(_) => {
                    let _: i64 = self.redis.zrem(&key, m.clone()).await?;
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let exists: Vec<i64> = pipeline.all().await?;
        let gone: Vec<String> = ids
            .into_iter()
            .zip(exists)
            .filter(|(_, e)| *e == 0)
            .map(|(m, _)| m)
            .collect();
        if !gone.is_empty() {
            let _: i64 = self.redis.zrem(&key, gone).await?;
        }
        Ok(())
    }

    /// Marks events as stored in the log store (see `shipped.lua`); how many left the queue.
    pub async fn mark_shipped(
        &self,
        shard: u16,
        marks: &[(EventId, String)],
        hot_window: std::time::Duration,
    ) -> Result<u64, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            shipped: u64,
        }
        if marks.is_empty() {
            return Ok(0);
        }
        let mut keys = Vec::with_capacity(1 + marks.len() * 2);
        keys.push(self.keys.ship(shard));
        let mut args = Vec::with_capacity(2 + marks.len() * 2);
        args.push(hot_window.as_secs().max(1).to_string());
        args.push(marks.len().to_string());
        for (id, fin) in marks {
            keys.push(self.keys.event_record(shard, id));
            keys.push(self.keys.attempts(shard, id));
            args.push(id.to_string());
            args.push(fin.clone());
        }
        let a: Answer = SHIPPED.run(&self.redis, keys, args).await?;
        Ok(a.shipped)
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
fn hash_fields(v: Value) -> HashMap<String, Value> {
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
struct Parsed {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_states_and_attempts_read_back() {
        let s = DeliveryState {
            state: State::Retrying,
            attempts: 3,
            last_status: Some(503),
            last_error: Some("HTTP 503 | busy".into()),
            next_retry_at_ms: Some(1_800_000_000_000),
            updated_at_ms: 1_799_999_999_000,
            deferrals: 2,
        };
        let text = s.encode();
        let back = DeliveryState::decode(&text).unwrap();
        assert_eq!(back.state, State::Retrying);
        assert_eq!(back.last_error.as_deref(), Some("HTTP 503 | busy"));
        assert_eq!(back.next_retry_at_ms, Some(1_800_000_000_000));
        assert_eq!((back.attempts, back.deferrals), (3, 2));
        assert_eq!(DeliveryState::decode("p").unwrap().state, State::Pending);
        assert_eq!(DeliveryState::decode("n").unwrap().state, State::Sent);
        let json = r#"{"state":"succeeded","attempts":1,"last_status":200,"last_error":null,"next_retry_at_ms":null,"updated_at_ms":5}"#;
        assert_eq!(DeliveryState::decode(json).unwrap().state, State::Succeeded);
        for bad in ["", "x", "pp", "s|x", "s|1|2|3"] {
            assert!(DeliveryState::decode(bad).is_none(), "{bad}");
        }
        let ok = DeliveryState {
            state: State::Succeeded,
            attempts: 1,
            last_status: Some(200),
            last_error: None,
            next_retry_at_ms: None,
            updated_at_ms: 1_799_999_999_000,
            deferrals: 0,
        };
        assert!(ok.encode().len() < 64, "{}", ok.encode());

        let target = TargetId::parse("tgt_01JABCDEFGHJKMNPQRSTVWXYZ0").unwrap();
        let a = AttemptRecord {
            target_id: target.clone(),
            attempt: 2,
            at_ms: 1_799_999_999_123,
            status: Some(500),
            latency_ms: 17,
            error: Some("HTTP 500|x".into()),
            response: Some("oops|body".into()),
        };
        let back = AttemptRecord::decode(&a.encode()).unwrap();
        assert_eq!(back.error.as_deref(), Some("HTTP 500|x"));
        assert_eq!(back.response.as_deref(), Some("oops|body"));
        assert_eq!(
            (back.attempt, back.status, back.latency_ms),
            (2, Some(500), 17)
        );
        let quiet = AttemptRecord {
            error: None,
            response: None,
            status: Some(200),
            ..a
        };
        assert!(quiet.encode().len() < 64, "{}", quiet.encode());
        let back = AttemptRecord::decode(&quiet.encode()).unwrap();
        assert_eq!((back.error, back.response), (None, None));
        assert!(AttemptRecord::decode("tgt_1|x").is_none());
        assert!(AttemptRecord::decode("tgt_1|1|2||3|99|short").is_none());
    }

    #[test]
    fn event_status_sums_up_its_deliveries() {
        use State::*;
        let of = |s: &[Option<State>]| EventStatus::of(s.iter().copied());
        assert_eq!(of(&[]), EventStatus::NoTargets);
        assert_eq!(of(&[Some(Succeeded), Some(Sent)]), EventStatus::Succeeded);
        assert_eq!(
            of(&[Some(Succeeded), Some(DeadLettered)]),
            EventStatus::Failed
        );
        assert_eq!(
            of(&[Some(DeadLettered), Some(Retrying)]),
            EventStatus::InProgress
        );
        assert_eq!(of(&[None]), EventStatus::InProgress);
        for s in [
            EventStatus::InProgress,
            EventStatus::Succeeded,
            EventStatus::Failed,
            EventStatus::NoTargets,
        ] {
            assert_eq!(EventStatus::parse(s.as_str()), Some(s));
        }
        for s in [Pending, Retrying, Succeeded, DeadLettered, Sent] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
