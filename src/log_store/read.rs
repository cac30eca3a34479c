//! Reads of the event log. Every query names the tenant, so one tenant never sees another's
//! rows, and bounds the receive time, so PostgreSQL reads only the partitions in range.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;

use super::connect::LogStoreError;
use super::handle::LogStore;
use super::write::{HistoryKind, millis, time};
use crate::model::delivery::LoggedEvent;
use crate::model::delivery::{
    AttemptRecord, DeliveryState, EventFilter, EventRecord, EventStatus, EventSummary, State,
};
use crate::model::{EventId, EventPattern, TargetId, TenantId};

/// Where a lookup of one event may look: the day of its id's timestamp, when it has one.
fn day_bounds(id: &EventId) -> (SystemTime, SystemTime) {
    match id.received_at_ms() {
        Some(ms) => (time(ms), time(ms)),
        None => (time(0), time(u64::MAX)),
    }
}

fn parse_state(text: &str) -> Result<State, LogStoreError> {
    State::parse(text).ok_or_else(|| LogStoreError::Data(format!("delivery state `{text}`")))
}

fn parse_id<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, crate::model::Invalid>,
) -> Result<T, LogStoreError> {
    parse(text).map_err(|_| LogStoreError::Data(format!("id `{text}`")))
}

impl LogStore {
    /// One event of `tenant`, its deliveries and attempts; `None` when the log does not hold
    /// it (or it is another tenant's).
    pub async fn event(
        &self,
        tenant: &TenantId,
        id: &EventId,
    ) -> Result<Option<EventRecord>, LogStoreError> {
        let Some(logged) = self.logged(tenant, id, true).await? else {
            return Ok(None);
        };
        Ok(Some(EventRecord {
            id: logged.id,
            event_type: Some(logged.event_type),
            content_type: logged.content_type,
            received_at_ms: logged.received_at_ms,
            deliveries: logged
                .deliveries
                .into_iter()
                .map(|(t, s)| (t, Some(s)))
                .collect(),
            attempts: logged.attempts,
        }))
    }

    /// The tenant whose event `id` is: the operator's search by id. The id's time names the
    /// day partition, so this reads one partition.
    pub async fn event_tenant(&self, id: &EventId) -> Result<Option<TenantId>, LogStoreError> {
        let client = self.pool.get().await?;
        let (from, to) = day_bounds(id);
        let row = client
            .query_opt(
                "SELECT tenant_id FROM events WHERE id = $1 AND received_at BETWEEN $2 AND $3 \
                 LIMIT 1",
                &[&id.as_str(), &from, &to],
            )
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(parse_id(r.get::<_, &str>(0), TenantId::parse)?)),
        }
    }

    /// One event of `tenant` with its body and delivery states (and its attempts when
    /// `with_attempts`): what a replay needs to bring it back into Redis.
    pub async fn logged(
        &self,
        tenant: &TenantId,
        id: &EventId,
        with_attempts: bool,
    ) -> Result<Option<LoggedEvent>, LogStoreError> {
        let client = self.pool.get().await?;
        let (from, to) = day_bounds(id);
        let row = client
            .query_opt(
                "SELECT received_at, event_type, content_type, body FROM events \
                 WHERE tenant_id = $1 AND id = $2 AND received_at BETWEEN $3 AND $4",
                &[&tenant.as_str(), &id.as_str(), &from, &to],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let received: SystemTime = row.try_get(0)?;
        let body: Vec<u8> = row.try_get(3)?;
        let mut logged = LoggedEvent {
            tenant: tenant.clone(),
            id: id.clone(),
            received_at_ms: millis(received),
            event_type: row.try_get(1)?,
            content_type: row.try_get(2)?,
            body: Bytes::from(body),
            deliveries: Vec::new(),
            attempts: Vec::new(),
        };
        let rows = client
            .query(
                "SELECT target_id, state, attempts, last_status, last_error, next_retry_at, updated_at \
                 FROM deliveries WHERE tenant_id = $1 AND event_id = $2 AND received_at = $3 \
                 ORDER BY target_id",
                &[&tenant.as_str(), &id.as_str(), &received],
            )
            .await?;
        for r in rows {
            let target: String = r.try_get(0)?;
            let state: String = r.try_get(1)?;
            let attempts: i32 = r.try_get(2)?;
            let last_status: Option<i32> = r.try_get(3)?;
            let next: Option<SystemTime> = r.try_get(5)?;
            let updated: SystemTime = r.try_get(6)?;
            logged.deliveries.push((
                parse_id(&target, TargetId::parse)?,
                DeliveryState {
                    state: parse_state(&state)?,
                    attempts: attempts.max(0) as u32,
                    last_status: last_status.and_then(|s| u16::try_from(s).ok()),
                    last_error: r.try_get(4)?,
                    next_retry_at_ms: next.map(millis),
                    updated_at_ms: millis(updated),
                    deferrals: 0,
                },
            ));
        }
        if with_attempts {
            let rows = client
                .query(
                    "SELECT target_id, attempt, at, status, latency_ms, error, response, headers \
                     FROM attempts WHERE tenant_id = $1 AND event_id = $2 AND received_at = $3 \
                     ORDER BY at, attempt",
                    &[&tenant.as_str(), &id.as_str(), &received],
                )
                .await?;
            for r in rows {
                let target: String = r.try_get(0)?;
                let attempt: i32 = r.try_get(1)?;
                let at: SystemTime = r.try_get(2)?;
                let status: Option<i32> = r.try_get(3)?;
                let latency: i64 = r.try_get(4)?;
                let (headers, notes) = match r.try_get::<_, Option<String>>(7)? {
                    Some(text) => AttemptRecord::read_headers_text(&text),
                    None => (None, Default::default()),
                };
                logged.attempts.push(AttemptRecord {
                    target_id: parse_id(&target, TargetId::parse)?,
                    attempt: attempt.max(0) as u32,
                    at_ms: millis(at),
                    status: status.and_then(|s| u16::try_from(s).ok()),
                    latency_ms: latency.max(0) as u64,
                    error: r.try_get(5)?,
                    response: r.try_get(6)?,
                    headers,
                    transform_version: notes.transform_version,
                    batch_id: notes.batch_id,
                });
            }
        }
        Ok(Some(logged))
    }

    /// The newest events of `tenant` that pass `filter`, at most `limit`, newest first.
    pub async fn list(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<Vec<EventSummary>, LogStoreError> {
        let client = self.pool.get().await?;
        let oldest = self
            .clock
            .now_ms()
            .saturating_sub(self.retention.as_millis() as u64);
        let since = time(filter.since_ms.unwrap_or(0).max(oldest));
        let mut until_ms = filter.until_ms.unwrap_or(u64::MAX);
        if let Some(ms) = filter.before.as_ref().and_then(|b| b.received_at_ms()) {
            until_ms = until_ms.min(ms);
        }
        let until = time(until_ms);
        let before = filter.before.as_ref().map(|b| b.as_str());
        // A pattern is an exact type, a prefix (`starts_with`, no LIKE wildcards to escape),
        // or every type.
        let (event_type, type_prefix) = match &filter.event_type {
            Some(EventPattern::Exact(t)) => (Some(t.as_str()), None),
            Some(EventPattern::Prefix(p)) => (None, Some(p.as_str())),
            Some(EventPattern::All) | None => (None, None),
        };
        let target = filter.target_id.as_ref().map(|t| t.as_str());
        // With a target, the status is that delivery's; without, the event's.
        let (event_status, delivery_states): (Option<&str>, Option<Vec<&str>>) =
            match (filter.status, target) {
                (None, _) => (None, None),
                (Some(s), None) => (Some(s.as_str()), None),
                (Some(s), Some(_)) => (
                    None,
                    Some(s.delivery_states().iter().map(|d| d.as_str()).collect()),
                ),
            };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT e.id, e.received_at, e.event_type, e.content_type, e.status FROM events e \
                 WHERE e.tenant_id = $1 AND e.received_at >= $2 AND e.received_at <= $3 \
                   AND ($4::text IS NULL OR e.event_type = $4) \
                   AND ($10::text IS NULL OR starts_with(e.event_type, $10)) \
                   AND ($5::text IS NULL OR e.id COLLATE \"C\" < $5) \
                   AND ($6::text IS NULL OR e.status = $6) \
                   AND ($7::text IS NULL OR EXISTS (SELECT 1 FROM deliveries d \
                        WHERE d.tenant_id = e.tenant_id AND d.event_id = e.id \
                          AND d.received_at = e.received_at AND d.target_id = $7 \
                          AND ($8::text[] IS NULL OR d.state = ANY($8)))) \
                 ORDER BY e.received_at DESC, e.id COLLATE \"C\" DESC LIMIT $9",
                &[
                    &tenant.as_str(),
                    &since,
                    &until,
                    &event_type,
                    &before,
                    &event_status,
                    &target,
                    &delivery_states,
                    &limit,
                    &type_prefix,
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get(0)?;
            let at: SystemTime = r.try_get(1)?;
            let status: String = r.try_get(4)?;
            out.push(EventSummary {
                id: parse_id(&id, EventId::parse)?,
                event_type: r.try_get(2)?,
                content_type: r.try_get(3)?,
                received_at_ms: millis(at),
                status: EventStatus::parse(&status)
                    .ok_or_else(|| LogStoreError::Data(format!("event status `{status}`")))?,
                deliveries: Vec::new(),
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<&str> = out.iter().map(|e| e.id.as_str()).collect();
        let lo = out.iter().map(|e| e.received_at_ms).min().unwrap_or(0);
        let hi = out
            .iter()
            .map(|e| e.received_at_ms)
            .max()
            .unwrap_or(u64::MAX);
        let rows = client
            .query(
                "SELECT event_id, target_id, state, attempts FROM deliveries \
                 WHERE tenant_id = $1 AND event_id = ANY($2) AND received_at BETWEEN $3 AND $4 \
                 ORDER BY target_id",
                &[&tenant.as_str(), &ids, &time(lo), &time(hi)],
            )
            .await?;
        let mut by_event: HashMap<String, Vec<(TargetId, State, u32)>> = HashMap::new();
        for r in rows {
            let event: String = r.try_get(0)?;
            let target: String = r.try_get(1)?;
            let state: String = r.try_get(2)?;
            let attempts: i32 = r.try_get(3)?;
            by_event.entry(event).or_default().push((
                parse_id(&target, TargetId::parse)?,
                parse_state(&state)?,
                attempts.max(0) as u32,
            ));
        }
        for e in &mut out {
            e.deliveries = by_event.remove(e.id.as_str()).unwrap_or_default();
        }
        Ok(out)
    }

    /// Events of `tenant` received in `[since, until]` that `target` did not receive
    /// successfully (their delivery there ended in the error queue), oldest first.
    pub async fn failed_for_target(
        &self,
        tenant: &TenantId,
        target: &TargetId,
        since_ms: u64,
        until_ms: u64,
        limit: usize,
    ) -> Result<Vec<EventId>, LogStoreError> {
        let client = self.pool.get().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT event_id FROM deliveries \
                 WHERE tenant_id = $1 AND target_id = $2 AND received_at BETWEEN $3 AND $4 \
                   AND state = $5 ORDER BY received_at, event_id COLLATE \"C\" LIMIT $6",
                &[
                    &tenant.as_str(),
                    &target.as_str(),
                    &time(since_ms),
                    &time(until_ms),
                    &State::DeadLettered.as_str(),
                    &limit,
                ],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(0)?;
                parse_id(&id, EventId::parse)
            })
            .collect()
    }
}

impl LogStore {
    /// The history of `subject` of `tenant` older than `before_ms` (a check's time, an
    /// incident's opening), newest first: the records' JSON.
    pub async fn history(
        &self,
        tenant: &str,
        subject: &str,
        kind: HistoryKind,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<String>, LogStoreError> {
        let client = self.pool.get().await?;
        let oldest = self
            .clock
            .now_ms()
            .saturating_sub(self.retention.as_millis() as u64);
        let sql = match kind {
            HistoryKind::Check => {
                "SELECT record FROM checks WHERE tenant_id = $1 AND subject = $2 \
                 AND at >= $3 AND at < $4 ORDER BY at DESC, seq COLLATE \"C\" DESC LIMIT $5"
            }
            HistoryKind::Incident => {
                "SELECT record FROM incidents WHERE tenant_id = $1 AND subject = $2 \
                 AND opened_at >= $3 AND opened_at < $4 ORDER BY opened_at DESC LIMIT $5"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                sql,
                &[&tenant, &subject, &time(oldest), &time(before_ms), &limit],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map_err(LogStoreError::from))
            .collect()
    }
}
