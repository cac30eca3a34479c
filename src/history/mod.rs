//! The event history across both tiers: Redis for the hot window, the log store (when there
//! is one) for the rest. Reads give the same answers whichever tier holds an event, and
//! replays and recoveries bring an event that has left Redis back from the log store.
//!
//! Listings walk the shard stream newest first (it holds every event of the hot window, and
//! without a log store every event of the retention), merge what the log store holds, and
//! page by event id: a page holds every event newer than its cursor, whichever tier it is in.

use std::collections::{BTreeMap, HashMap};

use fred::prelude::*;

use crate::log_store::{LogStore, LogStoreError};
use crate::model::{DeadLetterId, EventId, TargetId, TenantId};
use crate::queue::consume::{
    entries_from, entry_position, last_read, newest_entries, pending_between,
};
use crate::queue::decode;
use crate::redis::keyspace::Keyspace;
use crate::store::deliveries::dead_letters::{DeadLetterFilter, DeadLetterScan, Order};
use crate::store::deliveries::replay::Resend;
use crate::store::deliveries::{
    DeadLetter, EventFilter, EventRecord, EventStatus, EventSummary, Replayed,
};
use crate::store::{Deliveries, StoreError};

/// Stream entries a listing reads per request at most; a page stops there and its cursor
/// lets the next one go on.
const SCAN_ENTRIES: u64 = 2_000;
/// Entries per `XREVRANGE`.
const SCAN_CHUNK: u64 = 200;
/// How far apart the gateway's clock (event ids) and Redis's (entry ids) may be.
const CLOCK_SKEW_MS: u64 = 60_000;
/// How far apart they usually are at most: where the look-up of one event starts.
const NEAR_MS: u64 = 1_000;
/// Most deliveries one recovery resends.
pub const MAX_RECOVER: usize = 10_000;

pub mod gap;

/// A failure of a history read or replay.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Log(#[from] LogStoreError),
}

/// A page of events.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    /// The cursor of the next page (`before`), when there may be one.
    pub next: Option<EventId>,
}

/// Which error queue entries to replay.
#[derive(Debug, Clone)]
pub enum ReplaySelection {
    /// These entries, every one of them the tenant's.
    Ids(Vec<DeadLetterId>),
    /// Every entry the filter selects that failed before the replay began (one that fails
    /// again while it runs is not replayed twice).
    Matching(DeadLetterFilter),
}

/// The listing row of an event without a record: its entry not read yet or not finished (in
/// progress), or finished and the event matching no target.
fn recordless(e: crate::queue::StoredEvent, unread: bool) -> EventSummary {
    EventSummary {
        received_at_ms: e.id.received_at_ms().unwrap_or(0),
        id: e.id,
        event_type: e.event_type.to_string(),
        content_type: e
            .content_type
            .map(|ct| crate::model::text::visible_text(&ct)),
        status: if unread {
            EventStatus::InProgress
        } else {
            EventStatus::NoTargets
        },
        deliveries: Vec::new(),
    }
}

/// One event as both tiers hold it: each delivery's newer state, every attempt once, oldest
/// first. Redis's record is the live one; the log store's has what happened before it.
fn merge(hot: EventRecord, logged: EventRecord) -> EventRecord {
    let mut deliveries = logged.deliveries;
    for (target, state) in hot.deliveries {
        match deliveries.iter_mut().find(|(t, _)| *t == target) {
            Some((_, held)) => {
                let newer = match (&state, &*held) {
                    (Some(h), Some(l)) => h.updated_at_ms >= l.updated_at_ms,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if newer {
                    *held = state;
                }
            }
            None => deliveries.push((target, state)),
        }
    }
    let mut attempts = logged.attempts;
    for a in hot.attempts {
        let known = attempts
            .iter()
            .any(|b| b.target_id == a.target_id && b.at_ms == a.at_ms && b.attempt == a.attempt);
        if !known {
            attempts.push(a);
        }
    }
    attempts.sort_by_key(|a| a.at_ms);
    EventRecord {
        id: hot.id,
        event_type: hot.event_type.or(logged.event_type),
        content_type: hot.content_type.or(logged.content_type),
        received_at_ms: hot.received_at_ms,
        deliveries,
        attempts,
    }
}

/// Reads and replays of the event history. Cheap to clone.
#[derive(Debug, Clone)]
pub struct History {
    pub deliveries: Deliveries,
    pub redis: Client,
    pub log: Option<LogStore>,
}

impl History {
    fn keys(&self) -> &Keyspace {
        self.deliveries.keys()
    }

    /// One event of `tenant` with its deliveries and attempts, from whichever tier holds it.
    /// An event without a record (it matched no target, or the dispatcher has not read it
    /// yet) is read from its stream entry, with no deliveries.
    pub async fn event(
        &self,
        shard: u16,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<EventRecord>, HistoryError> {
        let hot = self.deliveries.event(shard, tenant, id).await?;
        if let Some(log) = &self.log {
            // Both tiers can hold parts of one event: a record brought back for a replay holds
            // its states but none of its earlier attempts, which only the log store has.
            let logged = match (&hot, log.event(tenant, id).await) {
                (_, Ok(logged)) => logged,
                (Some(_), Err(e)) => {
                    tracing::warn!(event = %id, error = %e, "log store unreadable: the event shows Redis's part only");
                    None
                }
                (None, Err(e)) => return Err(e.into()),
            };
            match (hot, logged) {
                (Some(h), Some(l)) => return Ok(Some(merge(h, l))),
                (Some(h), None) | (None, Some(h)) => return Ok(Some(h)),
                (None, None) => {}
            }
        } else if let Some(h) = hot {
            return Ok(Some(h));
        }
        let Some(e) = self.stream_event(shard, id).await? else {
            return Ok(None);
        };
        if e.tenant != *tenant {
            return Ok(None);
        }
        let row = recordless(e, false);
        Ok(Some(EventRecord {
            id: row.id,
            event_type: Some(row.event_type),
            content_type: row.content_type,
            received_at_ms: row.received_at_ms,
            deliveries: Vec::new(),
            attempts: Vec::new(),
        }))
    }

    /// The body and content type of `tenant`'s event `id`: from its stream entry while Redis
    /// holds it, else from the log store. `None` once neither does (past retention).
    pub async fn body(
        &self,
        shard: u16,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<(Option<String>, bytes::Bytes)>, HistoryError> {
        if let Some(e) = self.stream_event(shard, id).await? {
            if e.tenant != *tenant {
                return Ok(None);
            }
            let ct = e.content_type.map(|c| crate::model::text::visible_text(&c));
            return Ok(Some((ct, e.body)));
        }
        if let Some(log) = &self.log {
            if let Some(l) = log.logged(tenant, id, false).await? {
                return Ok(Some((l.content_type, l.body)));
            }
        }
        Ok(None)
    }

    /// The event `id` as its stream entry holds it. Its entry was appended once the event's
    /// batch was written, so it is looked for from shortly before the time in its id onward,
    /// then further back (clocks apart), within [`CLOCK_SKEW_MS`] and [`SCAN_ENTRIES`] each way.
    async fn stream_event(
        &self,
        shard: u16,
        id: &EventId,
    ) -> Result<Option<crate::queue::StoredEvent>, HistoryError> {
        let Some(at) = id.received_at_ms() else {
            return Ok(None);
        };
        let near = at.saturating_sub(NEAR_MS);
        let ahead = at.saturating_add(CLOCK_SKEW_MS).to_string();
        if let Some(e) = self
            .scan_for(shard, id, near.to_string(), &ahead, true)
            .await?
        {
            return Ok(Some(e));
        }
        if near == 0 {
            return Ok(None);
        }
        let behind = at.saturating_sub(CLOCK_SKEW_MS).to_string();
        self.scan_for(shard, id, (near - 1).to_string(), &behind, false)
            .await
    }

    /// Looks for event `id` in `shard`'s stream from `from` towards `bound` (forward: oldest
    /// first), over [`SCAN_ENTRIES`] entries at most.
    async fn scan_for(
        &self,
        shard: u16,
        id: &EventId,
        mut from: String,
        bound: &str,
        forward: bool,
    ) -> Result<Option<crate::queue::StoredEvent>, HistoryError> {
        let key = self.keys().stream(shard);
        let mut scanned = 0;
        while scanned < SCAN_ENTRIES {
            let entries = if forward {
                entries_from(&self.redis, &key, &from, bound, SCAN_CHUNK).await?
            } else {
                newest_entries(&self.redis, self.keys(), shard, &from, bound, SCAN_CHUNK).await?
            };
            let found = entries
                .iter()
                .find_map(|(_, fields)| decode(fields).ok()?.into_iter().find(|e| e.id == *id));
            if found.is_some() {
                return Ok(found);
            }
            let Some((last, _)) = entries.last() else {
                break;
            };
            from = format!("({last}");
            scanned += entries.len() as u64;
            if (entries.len() as u64) < SCAN_CHUNK {
                break;
            }
        }
        Ok(None)
    }

    /// A page of `tenant`'s events that pass `filter`, newest first.
    pub async fn list(
        &self,
        shard: u16,
        tenant: &TenantId,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<EventPage, HistoryError> {
        let (hot, scanned_to) = self.hot_events(shard, tenant, filter, limit).await?;
        let mut merged: BTreeMap<EventId, EventSummary> = BTreeMap::new();
        if let Some(log) = &self.log {
            for e in log.list(tenant, filter, limit + 1).await? {
                // What the scan did not reach (older than where it stopped) belongs to the
                // next page, which goes on from there in both tiers.
                if scanned_to.as_ref().is_none_or(|stop| e.id >= *stop) {
                    merged.insert(e.id.clone(), e);
                }
            }
        }
        // Redis holds the fresher state of an event in both tiers.
        for e in hot {
            merged.insert(e.id.clone(), e);
        }
        let mut events: Vec<EventSummary> = merged.into_values().rev().collect();
        let more = events.len() > limit;
        events.truncate(limit);
        let next = if more {
            events.last().map(|e| e.id.clone())
        } else if events.len() < limit {
            scanned_to
        } else {
            events.last().map(|e| e.id.clone())
        };
        Ok(EventPage { events, next })
    }

    /// The hot tier's events of `tenant` that pass `filter` (up to `limit + 1`), and, when
    /// the scan stopped before the stream's start, the id it stopped at.
    async fn hot_events(
        &self,
        shard: u16,
        tenant: &TenantId,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<EventSummary>, Option<EventId>), HistoryError> {
        let mut upper = filter.until_ms.unwrap_or(u64::MAX);
        if let Some(ms) = filter.before.as_ref().and_then(|b| b.received_at_ms()) {
            upper = upper.min(ms);
        }
        let mut end = if upper == u64::MAX {
            "+".to_owned()
        } else {
            upper.saturating_add(CLOCK_SKEW_MS).to_string()
        };
        let start = match filter.since_ms {
            Some(ms) => ms.saturating_sub(CLOCK_SKEW_MS).to_string(),
            None => "-".to_owned(),
        };
        let mut found = Vec::new();
        let mut scanned = 0;
        let mut last_seen: Option<EventId> = None;
        // Entries after this one wait for their first read: their events are in progress.
        let read_to = last_read(&self.redis, self.keys(), shard).await?;
        loop {
            let entries =
                newest_entries(&self.redis, self.keys(), shard, &end, &start, SCAN_CHUNK).await?;
            let exhausted = (entries.len() as u64) < SCAN_CHUNK;
            scanned += entries.len() as u64;
            // Entries read and not finished may not be expanded yet (a read in progress, a
            // consumer that died): their events without record are in progress too.
            let pending = match (entries.last(), entries.first()) {
                (Some((oldest, _)), Some((newest, _))) => {
                    pending_between(
                        &self.redis,
                        self.keys(),
                        shard,
                        oldest,
                        newest,
                        entries.len() as u64,
                    )
                    .await?
                }
                _ => Default::default(),
            };
            let mut listed = Vec::new();
            for (entry_id, fields) in &entries {
                end = format!("({entry_id}");
                let Ok(events) = decode(fields) else { continue };
                let unread = entry_position(entry_id) > read_to || pending.contains(entry_id);
                for e in events.into_iter().rev() {
                    if e.tenant != *tenant {
                        continue;
                    }
                    let at = e.id.received_at_ms().unwrap_or(0);
                    if filter.since_ms.is_some_and(|s| at < s)
                        || filter.until_ms.is_some_and(|u| at > u)
                        || filter.before.as_ref().is_some_and(|b| e.id >= *b)
                        || filter
                            .event_type
                            .as_ref()
                            .is_some_and(|p| !p.matches(e.event_type.as_str()))
                    {
                        continue;
                    }
                    last_seen = Some(e.id.clone());
                    listed.push((e, unread));
                }
            }
            let ids: Vec<EventId> = listed.iter().map(|(e, _)| e.id.clone()).collect();
            let summaries = self.deliveries.summaries(shard, tenant, &ids).await?;
            for ((e, unread), s) in listed.into_iter().zip(summaries) {
                let s = match s {
                    Some(s) => s,
                    // With a log store every event read gets a record, until it is shipped:
                    // the log store's row is the one to list.
                    None if self.log.is_some() && !unread => continue,
                    None => recordless(e, unread),
                };
                if filter.admits(&s) {
                    found.push(s);
                }
            }
            if found.len() > limit || exhausted {
                return Ok((found, None));
            }
            if scanned >= SCAN_ENTRIES {
                // Stopped early: the events older than the last one looked at are unknown.
                return Ok((found, last_seen));
            }
        }
    }

    /// Replays the selected error queue entries of `tenant`; how many went back on the
    /// schedule. An entry whose event left Redis is brought back from the log store; one
    /// whose event is gone from both is removed.
    pub async fn replay(
        &self,
        shard: u16,
        tenant: &TenantId,
        sel: &ReplaySelection,
    ) -> Result<u64, HistoryError> {
        let mut moved = 0;
        match sel {
            ReplaySelection::Ids(ids) => {
                let found = self
                    .deliveries
                    .dead_letters_by_id(shard, tenant, ids)
                    .await?;
                // Named ids must all be this tenant's entries, as on every other route:
                // another tenant's id is indistinguishable from one that does not exist, and
                // nothing is replayed.
                if found.len() < ids.len() {
                    return Err(StoreError::NotFound("dead letter").into());
                }
                for d in found {
                    if self
                        .resend(shard, tenant, &d.event_id, &d.target_id, Some(&d))
                        .await?
                    {
                        moved += 1;
                    }
                }
            }
            ReplaySelection::Matching(filter) => {
                let began = self.deliveries.clock().now_ms();
                let filter = DeadLetterFilter {
                    until_ms: Some(filter.until_ms.map_or(began, |u| u.min(began))),
                    ..filter.clone()
                };
                let mut scan = DeadLetterScan::new(filter, Order::OldestFirst, None);
                while let Some(chunk) = self
                    .deliveries
                    .next_dead_letters(shard, tenant, &mut scan)
                    .await?
                {
                    for d in chunk {
                        if self
                            .resend(shard, tenant, &d.event_id, &d.target_id, Some(&d))
                            .await?
                        {
                            moved += 1;
                        }
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Resends every event of `[since, until]` that `target` did not receive successfully
    /// (its delivery there ended in the error queue), from either tier; how many.
    pub async fn recover(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<u64, HistoryError> {
        let events = self
            .recoverable(shard, tenant, target, since_ms, until_ms)
            .await?;
        // Their error queue entries go with them.
        let queued_filter = DeadLetterFilter {
            target_id: Some(target.clone()),
            since_ms: Some(since_ms),
            ..DeadLetterFilter::default()
        };
        let queued: HashMap<EventId, DeadLetter> = self
            .deliveries
            .dead_letters(shard, tenant, &queued_filter, usize::MAX)
            .await?
            .into_iter()
            .map(|d| (d.event_id.clone(), d))
            .collect();
        let mut resent = 0;
        for id in events {
            if self
                .resend(shard, tenant, &id, target, queued.get(&id))
                .await?
            {
                resent += 1;
            }
        }
        Ok(resent)
    }

    /// The events of `[since, until]` whose delivery to `target` ended in the error queue,
    /// from either tier (at most [`MAX_RECOVER`]): what a recovery would send again.
    pub async fn recoverable(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<EventId>, HistoryError> {
        let mut events: Vec<EventId> = Vec::new();
        // The hot tier: events of the range expanded to the target and dead-lettered there.
        let filter = EventFilter {
            target_id: Some(target.clone()),
            status: Some(crate::store::deliveries::EventStatus::Failed),
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
            ..EventFilter::default()
        };
        let mut cursor: Option<EventId> = None;
        loop {
            let f = EventFilter {
                before: cursor.clone(),
                ..filter.clone()
            };
            let page = self.list_hot_only(shard, tenant, &f).await?;
            events.extend(page.events.into_iter().map(|e| e.id));
            match page.next {
                Some(n) if events.len() < MAX_RECOVER => cursor = Some(n),
                _ => break,
            }
        }
        if let Some(log) = &self.log {
            events.extend(
                log.failed_for_target(tenant, target, since_ms, until_ms, MAX_RECOVER)
                    .await?,
            );
        }
        events.sort();
        events.dedup();
        events.truncate(MAX_RECOVER);
        Ok(events)
    }

    async fn list_hot_only(
        &self,
        shard: u16,
        tenant: &TenantId,
        filter: &EventFilter,
    ) -> Result<EventPage, HistoryError> {
        let (events, next) = self.hot_events(shard, tenant, filter, 500).await?;
        let next = next.or_else(|| {
            (events.len() > 500)
                .then(|| events.last().map(|e| e.id.clone()))
                .flatten()
        });
        Ok(EventPage { events, next })
    }

    /// Sends one dead-lettered delivery again, bringing its event back from the log store
    /// when it has left Redis; `true` when it went back on the schedule.
    async fn resend(
        &self,
        shard: u16,
        tenant: &TenantId,
        event: &EventId,
        target: &TargetId,
        queued: Option<&DeadLetter>,
    ) -> Result<bool, HistoryError> {
        let how = Resend {
            dl_id: queued.map(|d| &d.id),
            last: queued.map(|d| (d.last_status, d.last_error.clone())),
            fresh: false,
            due_ms: self.deliveries.clock().now_ms(),
        };
        self.send_via(shard, tenant, event, target, &how).await
    }

    /// Sends a delivery again as `how` says, bringing its event back into Redis when its
    /// record is gone: from its stream entry (for a `fresh` delivery of an event that had no
    /// record), else from the log store; `true` when it went back on the schedule.
    async fn send_via(
        &self,
        shard: u16,
        tenant: &TenantId,
        event: &EventId,
        target: &TargetId,
        how: &Resend<'_>,
    ) -> Result<bool, HistoryError> {
        let first = self
            .deliveries
            .send_again(shard, tenant, event, target, how)
            .await?;
        match first {
            Replayed::Replayed => return Ok(true),
            Replayed::Skipped => return Ok(false),
            Replayed::Missing => {}
        }
        let mut restored = false;
        if how.fresh
            && let Some(e) = self.stream_event(shard, event).await?
            && e.tenant == *tenant
        {
            restored = self.deliveries.restore(shard, &unrecorded(e)).await?;
        }
        if !restored && let Some(log) = &self.log {
            if let Some(logged) = log.logged(tenant, event, false).await? {
                if logged.received_at_ms + log.retention().as_millis() as u64
                    > self.deliveries.clock().now_ms()
                {
                    restored = self.deliveries.restore(shard, &logged).await?;
                }
            }
        }
        if restored {
            let again = self
                .deliveries
                .send_again(shard, tenant, event, target, how)
                .await?;
            if again != Replayed::Missing {
                return Ok(again == Replayed::Replayed);
            }
        }
        // Gone from both tiers: its error queue entry cannot be replayed any more.
        if let Some(d) = how.dl_id {
            self.deliveries.delete_dead_letter(shard, tenant, d).await?;
        }
        Ok(false)
    }
}

/// An event read from its stream entry, as a record with no delivery yet (it matched no
/// target when it came) is written back.
fn unrecorded(e: crate::queue::StoredEvent) -> crate::model::delivery::LoggedEvent {
    crate::model::delivery::LoggedEvent {
        tenant: e.tenant,
        received_at_ms: e.id.received_at_ms().unwrap_or(0),
        id: e.id,
        event_type: e.event_type.to_string(),
        content_type: e
            .content_type
            .map(|c| String::from_utf8_lossy(&c).into_owned()),
        body: e.body,
        deliveries: Vec::new(),
        attempts: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deliveries::{AttemptRecord, DeliveryState, State};

    fn state(state: State, attempts: u32, updated_at_ms: u64) -> Option<DeliveryState> {
        Some(DeliveryState {
            state,
            attempts,
            last_status: Some(500),
            last_error: None,
            next_retry_at_ms: None,
            updated_at_ms,
            deferrals: 0,
        })
    }

    fn attempt(target: &TargetId, attempt: u32, at_ms: u64) -> AttemptRecord {
        AttemptRecord {
            target_id: target.clone(),
            attempt,
            at_ms,
            status: Some(500),
            latency_ms: 3,
            error: None,
            response: None,
            headers: None,
            transform_version: None,
            batch_id: None,
        }
    }

    #[test]
    fn a_restored_record_and_the_log_store_make_one_history() {
        let (a, b) = (TargetId::generate(), TargetId::generate());
        let id = EventId::generate();
        // The log store: both targets dead-lettered after three attempts each.
        let logged = EventRecord {
            id: id.clone(),
            event_type: Some("order.paid".into()),
            content_type: None,
            received_at_ms: 1_000,
            deliveries: vec![
                (a.clone(), state(State::DeadLettered, 3, 1_300)),
                (b.clone(), state(State::DeadLettered, 3, 1_300)),
            ],
            attempts: (1..=3)
                .flat_map(|n| {
                    [
                        attempt(&a, n, 1_000 + n as u64 * 100),
                        attempt(&b, n, 1_000 + n as u64 * 100),
                    ]
                })
                .collect(),
        };
        // Redis: the record restored for a replay of `a`, which failed once more; `b` as
        // restored, with the state the log store gave it and no attempts.
        let hot = EventRecord {
            id: id.clone(),
            event_type: Some("order.paid".into()),
            content_type: None,
            received_at_ms: 1_000,
            deliveries: vec![
                (a.clone(), state(State::Retrying, 1, 9_000)),
                (b.clone(), state(State::DeadLettered, 3, 1_300)),
            ],
            attempts: vec![attempt(&a, 1, 9_000), attempt(&a, 3, 1_300)],
        };
        let m = merge(hot, logged);
        assert_eq!(m.deliveries.len(), 2);
        let of = |t: &TargetId| {
            m.deliveries
                .iter()
                .find(|(x, _)| x == t)
                .and_then(|(_, s)| s.clone())
        };
        assert_eq!(
            of(&a).map(|s| s.state),
            Some(State::Retrying),
            "the newer state wins"
        );
        assert_eq!(of(&b).map(|s| s.attempts), Some(3));
        let a_attempts: Vec<(u32, u64)> = m
            .attempts
            .iter()
            .filter(|x| x.target_id == a)
            .map(|x| (x.attempt, x.at_ms))
            .collect();
        assert_eq!(
            a_attempts,
            [(1, 1_100), (2, 1_200), (3, 1_300), (1, 9_000)],
            "every attempt once, in time order"
        );
        assert_eq!(m.attempts.iter().filter(|x| x.target_id == b).count(), 3);
    }
}
