//! Shipping writes: one transaction per batch, one multi-row `INSERT … SELECT FROM unnest(…)`
//! per table. Attempts are `ON CONFLICT DO NOTHING`; an event keeps its body and takes the
//! latest status, and delivery states are upserted, newest update winning (an event replayed
//! from the error queue is shipped again when it finishes again), so a batch shipped twice (a shipper that crashed before
//! it could mark its batch shipped, two shippers racing) is stored once.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::connect::LogStoreError;
use super::handle::LogStore;
use super::partitions::day_of;
use crate::store::deliveries::LoggedEvent;

pub(super) fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(crate::model::time::MAX_RFC3339_MS))
}

pub(super) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const INSERT_EVENTS: &str = "INSERT INTO events \
    (tenant_id, id, received_at, event_type, content_type, body, status) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::bytea[], $7::text[]) \
    ON CONFLICT (id, received_at) DO UPDATE SET status = EXCLUDED.status \
    WHERE events.status IS DISTINCT FROM EXCLUDED.status";

const UPSERT_DELIVERIES: &str = "INSERT INTO deliveries \
    (tenant_id, event_id, received_at, target_id, state, attempts, last_status, last_error, next_retry_at, updated_at) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::int[], $7::int[], $8::text[], $9::timestamptz[], $10::timestamptz[]) \
    ON CONFLICT (event_id, target_id, received_at) DO UPDATE SET \
      state = EXCLUDED.state, attempts = EXCLUDED.attempts, last_status = EXCLUDED.last_status, \
      last_error = EXCLUDED.last_error, next_retry_at = EXCLUDED.next_retry_at, updated_at = EXCLUDED.updated_at \
    WHERE deliveries.updated_at <= EXCLUDED.updated_at";

const INSERT_ATTEMPTS: &str = "INSERT INTO attempts \
    (tenant_id, event_id, received_at, target_id, attempt, at, status, latency_ms, error, response) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[], $6::timestamptz[], $7::int[], $8::bigint[], $9::text[], $10::text[]) \
    ON CONFLICT DO NOTHING";

/// Columns of the events of a batch.
#[derive(Default)]
struct EventRows {
    tenant: Vec<String>,
    id: Vec<String>,
    at: Vec<SystemTime>,
    event_type: Vec<String>,
    content_type: Vec<Option<String>>,
    body: Vec<Vec<u8>>,
    status: Vec<String>,
}

#[derive(Default)]
struct DeliveryRows {
    tenant: Vec<String>,
    event: Vec<String>,
    at: Vec<SystemTime>,
    target: Vec<String>,
    state: Vec<String>,
    attempts: Vec<i32>,
    last_status: Vec<Option<i32>>,
    last_error: Vec<Option<String>>,
    next_retry: Vec<Option<SystemTime>>,
    updated: Vec<SystemTime>,
}

#[derive(Default)]
struct AttemptRows {
    tenant: Vec<String>,
    event: Vec<String>,
    at: Vec<SystemTime>,
    target: Vec<String>,
    attempt: Vec<i32>,
    tried_at: Vec<SystemTime>,
    status: Vec<Option<i32>>,
    latency: Vec<i64>,
    error: Vec<Option<String>>,
    response: Vec<Option<String>>,
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl LogStore {
    /// Stores a batch of finished events in one transaction; returns how many rows of events
    /// were new.
    pub async fn ship(&self, batch: &[LoggedEvent]) -> Result<u64, LogStoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let mut client = self.pool.get().await?;
        let days: Vec<i64> = batch
            .iter()
            .map(|e| day_of(e.received_at_ms))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.partitions.ensure(&client, &days).await?;

        let mut ev = EventRows::default();
        let mut dl = DeliveryRows::default();
        let mut at = AttemptRows::default();
        for e in batch {
            let received = time(e.received_at_ms);
            ev.tenant.push(e.tenant.to_string());
            ev.id.push(e.id.to_string());
            ev.at.push(received);
            ev.event_type.push(e.event_type.clone());
            ev.content_type.push(e.content_type.clone());
            ev.body.push(e.body.to_vec());
            ev.status.push(e.status().as_str().to_owned());
            for (target, s) in &e.deliveries {
                dl.tenant.push(e.tenant.to_string());
                dl.event.push(e.id.to_string());
                dl.at.push(received);
                dl.target.push(target.to_string());
                dl.state.push(s.state.as_str().to_owned());
                dl.attempts.push(clamp_i32(s.attempts));
                dl.last_status.push(s.last_status.map(i32::from));
                dl.last_error.push(s.last_error.clone());
                dl.next_retry.push(s.next_retry_at_ms.map(time));
                dl.updated.push(time(s.updated_at_ms));
            }
            for a in &e.attempts {
                at.tenant.push(e.tenant.to_string());
                at.event.push(e.id.to_string());
                at.at.push(received);
                at.target.push(a.target_id.to_string());
                at.attempt.push(clamp_i32(a.attempt));
                at.tried_at.push(time(a.at_ms));
                at.status.push(a.status.map(i32::from));
                at.latency
                    .push(i64::try_from(a.latency_ms).unwrap_or(i64::MAX));
                at.error.push(a.error.clone());
                at.response.push(a.response.clone());
            }
        }
        let tx = client.transaction().await?;
        let inserted = tx
            .execute(
                INSERT_EVENTS,
                &[
                    &ev.tenant,
                    &ev.id,
                    &ev.at,
                    &ev.event_type,
                    &ev.content_type,
                    &ev.body,
                    &ev.status,
                ],
            )
            .await?;
        if !dl.event.is_empty() {
            tx.execute(
                UPSERT_DELIVERIES,
                &[
                    &dl.tenant,
                    &dl.event,
                    &dl.at,
                    &dl.target,
                    &dl.state,
                    &dl.attempts,
                    &dl.last_status,
                    &dl.last_error,
                    &dl.next_retry,
                    &dl.updated,
                ],
            )
            .await?;
        }
        if !at.event.is_empty() {
            tx.execute(
                INSERT_ATTEMPTS,
                &[
                    &at.tenant,
                    &at.event,
                    &at.at,
                    &at.target,
                    &at.attempt,
                    &at.tried_at,
                    &at.status,
                    &at.latency,
                    &at.error,
                    &at.response,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }
}

/// What a history record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    Check,
    Incident,
}

/// One status record or incident state of a watched subject, as the history stream held it.
#[derive(Debug, Clone)]
pub struct HistoryRecord {
    /// The stream entry id, zero-padded so that text order is stream order.
    pub seq: String,
    pub kind: HistoryKind,
    pub tenant: String,
    pub subject: String,
    /// The record's JSON, as the APIs answer it.
    pub record: String,
    /// A check's time, or an incident's opening time (ms).
    pub at_ms: u64,
    /// An incident's id.
    pub incident_id: Option<String>,
}

impl LogStore {
    /// Stores a batch of history records in one transaction: checks once each, incidents in
    /// their newest state.
    pub async fn ship_history(&self, batch: &[HistoryRecord]) -> Result<(), LogStoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await?;
        let days: Vec<i64> = batch
            .iter()
            .map(|r| day_of(r.at_ms))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.partitions.ensure(&client, &days).await?;
        let checks: Vec<&HistoryRecord> = batch
            .iter()
            .filter(|r| r.kind == HistoryKind::Check)
            .collect();
        // One row per incident in a statement (its newest state in the batch).
        let mut incidents: std::collections::BTreeMap<&str, &HistoryRecord> = Default::default();
        for r in batch.iter().filter(|r| r.kind == HistoryKind::Incident) {
            if let Some(id) = r.incident_id.as_deref() {
                incidents.insert(id, r);
            }
        }
        let tx = client.transaction().await?;
        if !checks.is_empty() {
            let tenant: Vec<&str> = checks.iter().map(|r| r.tenant.as_str()).collect();
            let subject: Vec<&str> = checks.iter().map(|r| r.subject.as_str()).collect();
            let at: Vec<SystemTime> = checks.iter().map(|r| time(r.at_ms)).collect();
            let seq: Vec<&str> = checks.iter().map(|r| r.seq.as_str()).collect();
            let record: Vec<&str> = checks.iter().map(|r| r.record.as_str()).collect();
            tx.execute(
                "INSERT INTO checks (tenant_id, subject, at, seq, record) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) \
                 ON CONFLICT DO NOTHING",
                &[&tenant, &subject, &at, &seq, &record],
            )
            .await?;
        }
        if !incidents.is_empty() {
            let rows: Vec<(&str, &HistoryRecord)> = incidents.into_iter().collect();
            let tenant: Vec<&str> = rows.iter().map(|(_, r)| r.tenant.as_str()).collect();
            let subject: Vec<&str> = rows.iter().map(|(_, r)| r.subject.as_str()).collect();
            let id: Vec<&str> = rows.iter().map(|(id, _)| *id).collect();
            let opened: Vec<SystemTime> = rows.iter().map(|(_, r)| time(r.at_ms)).collect();
            let record: Vec<&str> = rows.iter().map(|(_, r)| r.record.as_str()).collect();
            let seq: Vec<&str> = rows.iter().map(|(_, r)| r.seq.as_str()).collect();
            tx.execute(
                "INSERT INTO incidents (tenant_id, subject, id, opened_at, record, seq) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
                 ON CONFLICT (id, opened_at) DO UPDATE SET record = EXCLUDED.record, seq = EXCLUDED.seq \
                 WHERE incidents.seq COLLATE \"C\" < EXCLUDED.seq COLLATE \"C\"",
                &[&tenant, &subject, &id, &opened, &record, &seq],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
