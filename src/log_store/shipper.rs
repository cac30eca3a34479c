//! The log shipper: moves finished events from Redis to the log store.
//!
//! When the last delivery of an event finishes, the recording script puts the event in its
//! shard's ship queue ([`crate::redis::keyspace::Keyspace::ship`]). A shipper (one per `all` or
//! `dispatcher` process) takes a shard's lease, reads a batch of the queue with the records,
//! attempts and bodies (from the record, or from the stream entry that still holds it),
//! stores the batch in PostgreSQL in one transaction, and only then marks the events shipped:
//! they leave the queue and their Redis copies get the hot window as their time to live. An
//! event replayed meanwhile is not marked (its finish count moved on), so its newer state
//! is shipped when it finishes again.
//!
//! Nothing is lost when PostgreSQL is down: the batch stays in the queue, the shipper retries
//! with backoff, the stream keeps the bodies (retention never trims past an unshipped event),
//! and `/readyz` and `estafeta_log_store_lag_seconds` say the log is behind.
//!
//! One bad record never stops a shard: a record PostgreSQL refuses for its data goes to the
//! log store's quarantine table ([`LogStore::ship`]) and the rest of its batch is shipped; a
//! history record that cannot even be read is quarantined as it is. `/readyz` says what is
//! true: `unreachable` when PostgreSQL cannot be reached, `refusing` (with PostgreSQL's
//! words) when it answers but refuses a batch for a reason that is not one row's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::handle::LogStore;
use super::write::{HistoryKind, HistoryRecord};
use crate::model::EventId;
use crate::model::text::visible_text;
use crate::queue::consume::oldest_entries;
use crate::queue::decode;
use crate::store::Deliveries;
use crate::store::deliveries::LoggedEvent;
use crate::store::deliveries::ship::ShipCandidate;

/// Events read and shipped per batch: large batches make the per-event cost of shipping
/// (Redis reads, one multi-row insert per table) small.
const BATCH: usize = 2000;
/// Pause between full batches: shipping yields to deliveries during a burst and catches up
/// after it (the hot window is far longer than the lag this adds).
const BUSY_PAUSE: Duration = Duration::from_millis(200);
/// How long a shard's lease lasts; renewed on every batch.
const LEASE: Duration = Duration::from_secs(15);

/// What the shipper reports to readiness and metrics.
#[derive(Debug, Default)]
pub struct ShipperStatus {
    /// Age of the oldest finished event not yet in the log store (ms), 0 when none.
    lag_ms: AtomicU64,
    /// Why the last pass could not store what it read, `None` when it could.
    problem: Mutex<Option<ShipProblem>>,
}

/// Why batches are not being stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipProblem {
    /// PostgreSQL cannot be reached (connection, timeout).
    Unreachable(String),
    /// PostgreSQL answers and refuses the batch, for a reason that is not one row's (a missing
    /// table, a permission): retrying goes on, and an operator must look.
    Refusing(String),
}

impl ShipProblem {
    /// The state readiness reports: `unreachable` or `refusing`.
    pub fn state(&self) -> &'static str {
        match self {
            ShipProblem::Unreachable(_) => "unreachable",
            ShipProblem::Refusing(_) => "refusing",
        }
    }

    /// What happened, in PostgreSQL's words where it said something.
    pub fn message(&self) -> &str {
        match self {
            ShipProblem::Unreachable(m) | ShipProblem::Refusing(m) => m,
        }
    }
}

impl ShipperStatus {
    pub fn lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed))
    }

    /// Why storing in PostgreSQL fails right now, if it does.
    pub fn problem(&self) -> Option<ShipProblem> {
        match self.problem.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_problem(&self, problem: Option<ShipProblem>) {
        match self.problem.lock() {
            Ok(mut p) => *p = problem,
            Err(p) => *p.into_inner() = problem,
        }
    }
}

/// The shipping task of one process.
#[derive(Debug, Clone)]
pub struct Shipper {
    pub log: LogStore,
    pub deliveries: Deliveries,
    pub redis: Client,
    pub shards: u16,
    /// How long shipped events stay readable in Redis.
    pub hot_window: Duration,
    /// Time between passes when there is nothing to ship.
    pub idle: Duration,
    pub status: Arc<ShipperStatus>,
    /// This process, as the holder of shard leases.
    pub holder: String,
}

impl Shipper {
    /// Ships until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let mut busy = false;
            let mut failed = false;
            let mut problem = None;
            let mut lag_ms = 0;
            for shard in 0..self.shards {
                if shutdown.is_cancelled() {
                    return;
                }
                match self.ship_shard(shard, &mut lag_ms).await {
                    Ok(shipped) => busy |= shipped == BATCH,
                    Err(e) => {
                        failed = true;
                        tracing::warn!(shard, error = %e, "shipping to the log store failed; the events stay in Redis and will be shipped later");
                        if problem.is_none() {
                            problem = e.problem(shard);
                        }
                    }
                }
            }
            self.status.lag_ms.store(lag_ms, Ordering::Relaxed);
            self.status.set_problem(problem);
            crate::telemetry::log_store_lag(Duration::from_millis(lag_ms));
            let wait = if failed {
                failures = failures.saturating_add(1);
                Duration::from_millis(250u64 << failures.min(5))
            } else {
                failures = 0;
                if busy { BUSY_PAUSE } else { self.idle }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Ships one batch of one shard, if this process holds (or takes) the shard's lease; how
    /// many events left the ship queue. `lag_ms` grows to the age of the oldest finished
    /// event read, shipped or not.
    pub async fn ship_shard(&self, shard: u16, lag_ms: &mut u64) -> Result<usize, ShipError> {
        if !self
            .deliveries
            .lease_shipping(shard, &self.holder, LEASE)
            .await?
        {
            // Another process ships this shard; it reports the lag.
            return Ok(0);
        }
        let history = self.ship_history(shard).await?;
        let candidates = self.deliveries.ship_candidates(shard, BATCH).await?;
        if candidates.is_empty() {
            return Ok(history);
        }
        let now = self.deliveries.clock().now_ms();
        for c in &candidates {
            *lag_ms = (*lag_ms).max(now.saturating_sub(c.finished_at_ms));
        }
        let mut batch = Vec::with_capacity(candidates.len());
        let mut marks = Vec::with_capacity(candidates.len());
        let mut from_stream: HashMap<String, Vec<usize>> = HashMap::new();
        let oldest_kept = now.saturating_sub(self.log.retention().as_millis() as u64);
        for c in candidates {
            let ShipCandidate {
                event, fin, entry, ..
            } = c;
            let Some(event) = event else {
                // The record is gone (a flush, or an expiry long ago): nothing left to ship.
                marks.push((c.id, fin));
                continue;
            };
            marks.push((event.id.clone(), fin));
            if event.received_at_ms < oldest_kept {
                continue; // past retention: the log would drop it at once
            }
            if event.body.is_empty() && event_has_stream_body(&entry) {
                from_stream.entry(entry).or_default().push(batch.len());
            }
            batch.push(event);
        }
        self.fill_bodies(shard, &mut batch, from_stream).await?;
        let shipped = batch.len();
        let started = std::time::Instant::now();
        let stored = self.log.ship(&batch).await?;
        if let Some(refusal) = &stored.refusal {
            tracing::warn!(
                shard,
                batch = shipped,
                quarantined = stored.quarantined,
                refusal = %refusal,
                "PostgreSQL refused part of a batch; the refused events are in the quarantine table, the rest is shipped"
            );
        }
        crate::telemetry::log_store_shipped(shipped - stored.quarantined, started.elapsed());
        self.deliveries
            .mark_shipped(shard, &marks, self.hot_window)
            .await?;
        Ok(marks.len())
    }

    /// Ships one batch of the shard's monitor history (status records and incident changes),
    /// then trims what was shipped from the history stream; how many records.
    async fn ship_history(&self, shard: u16) -> Result<usize, ShipError> {
        let key = self.deliveries.keys().history(shard);
        let entries = oldest_entries(&self.redis, &key, "-", BATCH as u64).await?;
        let Some((last, _)) = entries.last() else {
            return Ok(0);
        };
        let last = last.clone();
        let mut records: Vec<HistoryRecord> = Vec::with_capacity(entries.len());
        for (id, fields) in &entries {
            match history_record(id, fields) {
                Some(r) => records.push(r),
                None => {
                    // Nothing can ever read it: kept as it is, out of the way.
                    let raw: Vec<(String, String)> = fields
                        .iter()
                        .map(|(k, v)| (visible_text(k), visible_text(v)))
                        .collect();
                    let json = serde_json::to_vec(&raw).unwrap_or_default();
                    let tenant = raw
                        .iter()
                        .find(|(k, _)| k == "t")
                        .map_or("", |(_, v)| v.as_str());
                    // Named by shard and entry: without a readable tenant, that is what is unique.
                    let at = format!("shard {shard} entry {id}");
                    self.log
                        .quarantine("history", tenant, &at, "unreadable history record", &json)
                        .await?;
                }
            }
        }
        let stored = self.log.ship_history(&records).await?;
        if let Some(refusal) = &stored.refusal {
            tracing::warn!(shard, quarantined = stored.quarantined, refusal = %refusal, "PostgreSQL refused monitor history records; they are in the quarantine table");
        }
        let Some(next) = crate::queue::retention::StreamId::parse(&last).map(|id| id.successor())
        else {
            return Ok(entries.len());
        };
        let cap =
            fred::types::streams::XCap::try_from(("MINID", "=", next.to_string().as_str(), None))?;
        let _: u64 = self.redis.xtrim(&key, cap).await?;
        Ok(entries.len())
    }

    /// Bodies that only the stream entry holds (events delivered on their first attempt).
    async fn fill_bodies(
        &self,
        shard: u16,
        batch: &mut [LoggedEvent],
        from_stream: HashMap<String, Vec<usize>>,
    ) -> Result<(), ShipError> {
        if from_stream.is_empty() {
            return Ok(());
        }
        let entries: Vec<(String, Vec<usize>)> = from_stream.into_iter().collect();
        let ids: Vec<&str> = entries.iter().map(|(e, _)| e.as_str()).collect();
        let read =
            crate::queue::consume::entries_by_id(&self.redis, self.deliveries.keys(), shard, &ids)
                .await?;
        for ((entry, indexes), fields) in entries.into_iter().zip(read) {
            let Some(fields) = fields else {
                tracing::warn!(shard, entry = %entry, "the stream entry of finished events is gone; shipping them without a body");
                continue;
            };
            let events = match decode(&fields) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(shard, entry = %entry, error = %e, "unreadable stream entry; shipping its events without a body");
                    continue;
                }
            };
            let mut bodies: HashMap<EventId, bytes::Bytes> =
                events.into_iter().map(|e| (e.id, e.body)).collect();
            for i in indexes {
                if let Some(e) = batch.get_mut(i) {
                    if let Some(body) = bodies.remove(&e.id) {
                        e.body = body;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A history stream entry (`k`, `s`, `t`, `v`), read; `None` when it is not one.
fn history_record(id: &str, fields: &[(bytes::Bytes, bytes::Bytes)]) -> Option<HistoryRecord> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    };
    let kind = match field("k")? {
        "check" => HistoryKind::Check,
        "incident" => HistoryKind::Incident,
        _ => return None,
    };
    let record = field("v")?;
    let json: serde_json::Value = serde_json::from_str(record).ok()?;
    let (at, incident_id) = match kind {
        HistoryKind::Check => (json.get("at")?.as_str()?, None),
        HistoryKind::Incident => (
            json.get("opened_at")?.as_str()?,
            Some(json.get("id")?.as_str()?.to_owned()),
        ),
    };
    let stream_id = crate::queue::retention::StreamId::parse(id)?;
    Some(HistoryRecord {
        seq: stream_id.padded(),
        kind,
        tenant: field("t")?.to_owned(),
        subject: field("s")?.to_owned(),
        record: record.to_owned(),
        at_ms: crate::model::time::parse_rfc3339(at)?,
        incident_id,
    })
}

/// Whether a record's `entry` names a stream entry (a record restored from the log store
/// for a replay holds its body itself).
fn event_has_stream_body(entry: &str) -> bool {
    crate::queue::retention::StreamId::parse(entry).is_some()
}

/// Why a pass failed; the events stay in the ship queue.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Log(#[from] super::connect::LogStoreError),
}

impl ShipError {
    /// What readiness says of the log store after this failure of `shard`'s batch; `None`
    /// when it was Redis that failed (readiness reports Redis itself).
    fn problem(&self, shard: u16) -> Option<ShipProblem> {
        let ShipError::Log(e) = self else {
            return None;
        };
        Some(match e.refusal() {
            Some(_) => ShipProblem::Refusing(format!(
                "PostgreSQL refuses the batch of shard {shard}: {e}"
            )),
            None => ShipProblem::Unreachable(format!(
                "PostgreSQL cannot be reached (shard {shard}): {e}"
            )),
        })
    }
}
