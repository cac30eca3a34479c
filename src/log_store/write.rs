//! Shipping writes: one transaction per batch, one multi-row `INSERT … SELECT FROM unnest(…)`
//! per table. Attempts are `ON CONFLICT DO NOTHING`; an event keeps its body and takes the
//! latest status, and delivery states are upserted, newest update winning (an event replayed
//! from the error queue is shipped again when it finishes again), so a batch shipped twice (a shipper that crashed before
//! it could mark its batch shipped, two shippers racing) is stored once.
//!
//! One bad row never stops a shard: every text column is a [`PgText`] (no NUL) and bodies are
//! `bytea`, and a batch PostgreSQL still refuses for its data ([`LogStoreError::is_row_fault`])
//! is split in halves until the rows at fault are found. Those are stored whole in the
//! `quarantine` table (the record as JSON, byte for byte) and counted; the rest of the batch is
//! stored as usual. Any other failure (connection, timeout, a missing table) fails the batch,
//! which the shipper retries whole.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;

use super::connect::LogStoreError;
use super::handle::LogStore;
use super::partitions::day_of;
use super::text::{PgText, opt};
use crate::batch::{Isolate, Isolated, isolate};
use crate::model::delivery::{AttemptRecord, DeliveryState, LoggedEvent};

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
    (tenant_id, event_id, received_at, target_id, attempt, at, status, latency_ms, error, response, headers) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::int[], $6::timestamptz[], $7::int[], $8::bigint[], $9::text[], $10::text[], $11::text[]) \
    ON CONFLICT DO NOTHING";

/// Columns of the events of a batch.
#[derive(Default)]
struct EventRows {
    tenant: Vec<PgText>,
    id: Vec<PgText>,
    at: Vec<SystemTime>,
    event_type: Vec<PgText>,
    content_type: Vec<Option<PgText>>,
    body: Vec<Vec<u8>>,
    status: Vec<PgText>,
}

#[derive(Default)]
struct DeliveryRows {
    tenant: Vec<PgText>,
    event: Vec<PgText>,
    at: Vec<SystemTime>,
    target: Vec<PgText>,
    state: Vec<PgText>,
    attempts: Vec<i32>,
    last_status: Vec<Option<i32>>,
    last_error: Vec<Option<PgText>>,
    next_retry: Vec<Option<SystemTime>>,
    updated: Vec<SystemTime>,
}

#[derive(Default)]
struct AttemptRows {
    tenant: Vec<PgText>,
    event: Vec<PgText>,
    at: Vec<SystemTime>,
    target: Vec<PgText>,
    attempt: Vec<i32>,
    tried_at: Vec<SystemTime>,
    status: Vec<Option<i32>>,
    latency: Vec<i64>,
    error: Vec<Option<PgText>>,
    response: Vec<Option<PgText>>,
    headers: Vec<Option<PgText>>,
}

fn clamp_i32(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What storing a batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Rows of events that were new.
    pub new_events: u64,
    /// Records PostgreSQL refused, stored in the quarantine table instead.
    pub quarantined: usize,
    /// PostgreSQL's first refusal, when there was one.
    pub refusal: Option<String>,
}

impl From<Isolated<u64>> for Stored {
    fn from(i: Isolated<u64>) -> Stored {
        Stored {
            new_events: i.written.iter().sum(),
            quarantined: i.set_aside,
            refusal: i.first_fault,
        }
    }
}

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine (kind, tenant_id, record_id, reason, record) \
    VALUES ($1, $2, $3, $4, $5) \
    ON CONFLICT (kind, tenant_id, record_id) DO UPDATE SET reason = EXCLUDED.reason, record = EXCLUDED.record, at = now()";

/// An event as the quarantine table keeps it: everything the shipper held, the body in base64.
#[derive(serde::Serialize)]
struct QuarantinedEvent<'a> {
    tenant: &'a str,
    id: &'a str,
    received_at_ms: u64,
    event_type: &'a str,
    content_type: Option<&'a str>,
    body_base64: String,
    deliveries: Vec<(&'a str, &'a DeliveryState)>,
    attempts: &'a [AttemptRecord],
}

/// The events table group as [`isolate`] writes to it.
struct EventsTable<'a>(&'a LogStore);

impl Isolate<LoggedEvent> for EventsTable<'_> {
    type Written = u64;
    type Error = LogStoreError;

    async fn write(&self, part: &[LoggedEvent]) -> Result<u64, LogStoreError> {
        self.0.insert_events(part).await
    }

    fn is_fault(e: &LogStoreError) -> bool {
        e.is_row_fault()
    }

    async fn set_aside(
        &self,
        e: &LoggedEvent,
        refusal: &LogStoreError,
    ) -> Result<(), LogStoreError> {
        let record = QuarantinedEvent {
            tenant: e.tenant.as_str(),
            id: e.id.as_str(),
            received_at_ms: e.received_at_ms,
            event_type: &e.event_type,
            content_type: e.content_type.as_deref(),
            body_base64: base64::engine::general_purpose::STANDARD.encode(&e.body),
            deliveries: e.deliveries.iter().map(|(t, s)| (t.as_str(), s)).collect(),
            attempts: &e.attempts,
        };
        let json =
            serde_json::to_vec(&record).map_err(|err| LogStoreError::Data(err.to_string()))?;
        self.0
            .quarantine(
                "event",
                e.tenant.as_str(),
                e.id.as_str(),
                &refusal.to_string(),
                &json,
            )
            .await
    }

    async fn probe(&self) -> Result<(), LogStoreError> {
        let now = self.0.clock.now_ms();
        let target = crate::model::TargetId::generate();
        let event = LoggedEvent {
            tenant: crate::model::TenantId::generate(),
            id: crate::model::EventId::generate(),
            received_at_ms: now,
            event_type: "estafeta.probe".into(),
            content_type: None,
            body: bytes::Bytes::new(),
            deliveries: vec![(target.clone(), DeliveryState::pending())],
            attempts: vec![AttemptRecord {
                target_id: target,
                attempt: 1,
                at_ms: now,
                status: Some(200),
                latency_ms: 1,
                error: None,
                response: None,
                headers: None,
                transform_version: None,
                batch_id: None,
            }],
        };
        self.0
            .insert_events_once(std::slice::from_ref(&event), false)
            .await
            .map(|_| ())
    }
}

/// The history tables as [`isolate`] writes to them.
struct HistoryTables<'a>(&'a LogStore);

impl Isolate<HistoryRecord> for HistoryTables<'_> {
    type Written = u64;
    type Error = LogStoreError;

    async fn write(&self, part: &[HistoryRecord]) -> Result<u64, LogStoreError> {
        self.0.insert_history(part).await.map(|()| 0)
    }

    fn is_fault(e: &LogStoreError) -> bool {
        e.is_row_fault()
    }

    async fn set_aside(
        &self,
        r: &HistoryRecord,
        refusal: &LogStoreError,
    ) -> Result<(), LogStoreError> {
        let record = serde_json::json!({
            "seq": r.seq,
            "kind": match r.kind {
                HistoryKind::Check => "check",
                HistoryKind::Incident => "incident",
            },
            "tenant": r.tenant,
            "subject": r.subject,
            "at_ms": r.at_ms,
            "record": r.record,
        });
        let json =
            serde_json::to_vec(&record).map_err(|err| LogStoreError::Data(err.to_string()))?;
        self.0
            .quarantine("history", &r.tenant, &r.seq, &refusal.to_string(), &json)
            .await
    }

    async fn probe(&self) -> Result<(), LogStoreError> {
        let now = self.0.clock.now_ms();
        let record = |kind, incident: Option<&str>| HistoryRecord {
            seq: "00000000000000-0".into(),
            kind,
            tenant: crate::model::TenantId::generate().to_string(),
            subject: "probe".into(),
            record: "{}".into(),
            at_ms: now,
            incident_id: incident.map(str::to_owned),
        };
        let batch = [
            record(HistoryKind::Check, None),
            record(HistoryKind::Incident, Some("inc_probe")),
        ];
        self.0.insert_history_once(&batch, false).await
    }
}

impl LogStore {
    /// Stores a batch of finished events; rows PostgreSQL refuses for their data are stored
    /// in the quarantine table instead (see the module's documentation).
    pub async fn ship(&self, batch: &[LoggedEvent]) -> Result<Stored, LogStoreError> {
        if batch.is_empty() {
            return Ok(Stored::default());
        }
        isolate(&EventsTable(self), batch).await.map(Stored::from)
    }

    /// Stores one refused or unreadable record in the quarantine table (again, when it was
    /// refused before), and counts it.
    pub async fn quarantine(
        &self,
        kind: &str,
        tenant: &str,
        record_id: &str,
        reason: &str,
        record: &[u8],
    ) -> Result<(), LogStoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                INSERT_QUARANTINE,
                &[
                    &PgText::new(kind),
                    &PgText::new(tenant),
                    &PgText::new(record_id),
                    &PgText::new(reason),
                    &record,
                ],
            )
            .await?;
        tracing::warn!(
            kind,
            tenant,
            record = record_id,
            reason,
            "the log store refused a record; it is kept in the quarantine table"
        );
        crate::telemetry::quarantined(match kind {
            "event" => "log_store_events",
            _ => "log_store_history",
        });
        Ok(())
    }

    /// Stores a batch of finished events in one transaction; returns how many rows of events
    /// were new.
    async fn insert_events(&self, batch: &[LoggedEvent]) -> Result<u64, LogStoreError> {
        self.partitions_checked(self.insert_events_once(batch, true).await)
    }

    /// `result`, after forgetting the known partitions when PostgreSQL said one is missing (the
    /// shipper's retry creates it).
    fn partitions_checked<T>(&self, result: Result<T, LogStoreError>) -> Result<T, LogStoreError> {
        if let Err(e) = &result {
            if e.is_missing_partition() {
                self.partitions.forget_all();
            }
        }
        result
    }

    /// One transaction for `batch`: committed when `keep`, rolled back otherwise (a probe).
    async fn insert_events_once(
        &self,
        batch: &[LoggedEvent],
        keep: bool,
    ) -> Result<u64, LogStoreError> {
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
            let tenant = PgText::new(e.tenant.as_str());
            let id = PgText::new(e.id.as_str());
            ev.tenant.push(tenant.clone());
            ev.id.push(id.clone());
            ev.at.push(received);
            ev.event_type.push(PgText::new(&e.event_type));
            ev.content_type.push(opt(e.content_type.as_deref()));
            ev.body.push(e.body.to_vec());
            ev.status.push(PgText::new(e.status().as_str()));
            for (target, s) in &e.deliveries {
                dl.tenant.push(tenant.clone());
                dl.event.push(id.clone());
                dl.at.push(received);
                dl.target.push(PgText::new(target.as_str()));
                dl.state.push(PgText::new(s.state.as_str()));
                dl.attempts.push(clamp_i32(s.attempts));
                dl.last_status.push(s.last_status.map(i32::from));
                dl.last_error.push(opt(s.last_error.as_deref()));
                dl.next_retry.push(s.next_retry_at_ms.map(time));
                dl.updated.push(time(s.updated_at_ms));
            }
            for a in &e.attempts {
                at.tenant.push(tenant.clone());
                at.event.push(id.clone());
                at.at.push(received);
                at.target.push(PgText::new(a.target_id.as_str()));
                at.attempt.push(clamp_i32(a.attempt));
                at.tried_at.push(time(a.at_ms));
                at.status.push(a.status.map(i32::from));
                at.latency
                    .push(i64::try_from(a.latency_ms).unwrap_or(i64::MAX));
                at.error.push(opt(a.error.as_deref()));
                at.response.push(opt(a.response.as_deref()));
                at.headers.push(a.headers_text().map(|h| PgText::new(&h)));
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
                    &at.headers,
                ],
            )
            .await?;
        }
        if keep {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
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
    /// Stores a batch of history records: checks once each, incidents in their newest state;
    /// records PostgreSQL refuses for their data go to the quarantine table instead.
    pub async fn ship_history(&self, batch: &[HistoryRecord]) -> Result<Stored, LogStoreError> {
        if batch.is_empty() {
            return Ok(Stored::default());
        }
        isolate(&HistoryTables(self), batch).await.map(Stored::from)
    }

    /// Stores a batch of history records in one transaction.
    async fn insert_history(&self, batch: &[HistoryRecord]) -> Result<(), LogStoreError> {
        self.partitions_checked(self.insert_history_once(batch, true).await)
    }

    /// One transaction for `batch`: committed when `keep`, rolled back otherwise (a probe).
    async fn insert_history_once(
        &self,
        batch: &[HistoryRecord],
        keep: bool,
    ) -> Result<(), LogStoreError> {
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
            let tenant: Vec<PgText> = checks.iter().map(|r| PgText::new(&r.tenant)).collect();
            let subject: Vec<PgText> = checks.iter().map(|r| PgText::new(&r.subject)).collect();
            let at: Vec<SystemTime> = checks.iter().map(|r| time(r.at_ms)).collect();
            let seq: Vec<PgText> = checks.iter().map(|r| PgText::new(&r.seq)).collect();
            let record: Vec<PgText> = checks.iter().map(|r| PgText::new(&r.record)).collect();
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
            let tenant: Vec<PgText> = rows.iter().map(|(_, r)| PgText::new(&r.tenant)).collect();
            let subject: Vec<PgText> = rows.iter().map(|(_, r)| PgText::new(&r.subject)).collect();
            let id: Vec<PgText> = rows.iter().map(|(id, _)| PgText::new(id)).collect();
            let opened: Vec<SystemTime> = rows.iter().map(|(_, r)| time(r.at_ms)).collect();
            let record: Vec<PgText> = rows.iter().map(|(_, r)| PgText::new(&r.record)).collect();
            let seq: Vec<PgText> = rows.iter().map(|(_, r)| PgText::new(&r.seq)).collect();
            tx.execute(
                "INSERT INTO incidents (tenant_id, subject, id, opened_at, record, seq) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
                 ON CONFLICT (id, opened_at) DO UPDATE SET record = EXCLUDED.record, seq = EXCLUDED.seq \
                 WHERE incidents.seq COLLATE \"C\" < EXCLUDED.seq COLLATE \"C\"",
                &[&tenant, &subject, &id, &opened, &record, &seq],
            )
            .await?;
        }
        if keep {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(())
    }
}
