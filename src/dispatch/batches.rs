//! Batched targets: events gathered per target in Redis are cut into batches when a batch is
//! full or its first event has waited `max_wait_ms`, and each batch is sent as one signed POST
//! `{"events": [{"id", "type", "received_at", "body"}]}` with the batch id as `webhook-id`.
//! One outcome for the batch, recorded on each of its events' deliveries (with the batch id in
//! their attempt log); a retry sends the same batch again (same id, same events, in order).
//!
//! Every dispatcher process runs this loop per shard; the cut and the lease on a batch are
//! atomic in Redis, so two processes never cut the same events or send a batch at once.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::value::RawValue;

use super::backoff::{Verdict, delay, unit_random, verdict_for_status};
use super::client::Message;
use super::signing::SigningKey;
use super::state::Inner;
use crate::model::delivery::{AttemptRecord, DeadLetter, DeliveryState, Next, Outcome, State};
use crate::model::time::rfc3339;
use crate::model::{BatchId, DeadLetterId, EventType, Mode};
use crate::store::Target;
use crate::store::deliveries::batches::{BatchedEvent, DueBatch, DueCut};

/// Most targets cut, and batches claimed, per pass.
const PER_PASS: usize = 64;
/// Most batches cut from one target in a pass (while whole batches are waiting).
const CUTS_PER_TARGET: usize = 50;

/// The event type a batch is announced as (`estafeta-event-type`).
pub const BATCH_EVENT_TYPE: &str = "estafeta.batch";

/// Cuts due batches and sends due ones, for one shard, until the dispatcher stops.
pub(super) async fn batch_loop(inner: Arc<Inner>, shard: u16) {
    let mut pause = inner.settings.retry_poll;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let (cut, more) = cut_due(&inner, shard).await;
        let sent = send_due(&inner, shard).await;
        // A full pass, or whole batches still waiting, means more to do: go again at once.
        pause = if more || cut == PER_PASS || sent == PER_PASS {
            Duration::ZERO
        } else {
            inner.settings.retry_poll
        };
    }
}

/// The bounds a target's batches are cut with; a target no longer batched (or gone) gets what
/// it gathered sent in batches of the largest size, at once.
fn bounds(target: Option<&Target>) -> (u64, u64) {
    match target.and_then(|t| t.batch) {
        Some(b) => (b.max_events.get(), b.max_wait_ms.get()),
        None => (1000, 0),
    }
}

/// Cuts the batches due in `shard`: how many targets were due, and whether whole batches are
/// still waiting (a target that gathers faster than it is cut).
async fn cut_due(inner: &Inner, shard: u16) -> (usize, bool) {
    let now = inner.deliveries.clock().now_ms();
    let due = match inner.deliveries.due_cuts(shard, now, PER_PASS).await {
        Ok(d) => d,
        Err(e) => {
            crate::telemetry::redis_error("batches");
            tracing::debug!(shard, error = %e, "cannot read the targets due for a batch");
            return (0, false);
        }
    };
    let n = due.len();
    let mut more = false;
    for cut in due {
        let target = target_of(inner, &cut).await;
        let (max_events, max_wait_ms) = bounds(target.as_deref());
        // Whole batches go at once, one after the other; a part batch waits for its time.
        for _ in 0..CUTS_PER_TARGET {
            let id = BatchId::generate();
            match inner
                .deliveries
                .cut_batch(shard, &cut, &id, max_events, max_wait_ms)
                .await
            {
                Ok((0, _)) => break,
                Ok((size, left)) => {
                    tracing::debug!(shard, batch = %id, target_id = %cut.target, size, "batch cut");
                    crate::telemetry::batch_cut(size);
                    if left < max_events {
                        break;
                    }
                    more = true;
                }
                Err(e) => {
                    crate::telemetry::redis_error("batches");
                    tracing::warn!(shard, target_id = %cut.target, error = %e, "cannot cut a batch; it is tried again");
                    break;
                }
            }
        }
    }
    (n, more)
}

async fn target_of(inner: &Inner, cut: &DueCut) -> Option<Arc<Target>> {
    inner
        .targets
        .get(&cut.tenant)
        .await
        .ok()
        .and_then(|t| t.by_id(&cut.target).cloned())
}

async fn send_due(inner: &Arc<Inner>, shard: u16) -> usize {
    let now = inner.deliveries.clock().now_ms();
    let lease_end = now.saturating_add(inner.settings.reclaim_idle.as_millis() as u64);
    let due = match inner
        .deliveries
        .claim_batches(shard, now, lease_end, PER_PASS)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            crate::telemetry::redis_error("batches");
            tracing::debug!(shard, error = %e, "cannot claim due batches");
            return 0;
        }
    };
    let n = due.len();
    for batch in due {
        let Ok(permit) = inner.global.clone().acquire_owned().await else {
            return n;
        };
        let inner2 = inner.clone();
        inner.tasks.spawn(async move {
            let _permit = permit;
            send(&inner2, shard, batch).await;
        });
    }
    n
}

/// The body of a batch: each event with its body embedded as JSON when it is JSON, else in
/// base64 with its content type.
pub fn body(events: &[BatchedEvent]) -> Bytes {
    #[derive(serde::Serialize)]
    struct Item<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        event_type: &'a EventType,
        received_at: String,
        body: BodyOf<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body_encoding: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum BodyOf<'a> {
        Json(&'a RawValue),
        Base64(String),
    }
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        events: Vec<Item<'a>>,
    }
    let items = events
        .iter()
        .map(|e| {
            let content_type = e
                .content_type
                .as_deref()
                .and_then(crate::model::event_meta::content_type)
                .map(|c| String::from_utf8_lossy(c).into_owned());
            let json = std::str::from_utf8(&e.body)
                .ok()
                .and_then(|t| serde_json::from_str::<&RawValue>(t).ok());
            match json {
                Some(raw) => Item {
                    id: e.id.as_str(),
                    event_type: &e.event_type,
                    received_at: rfc3339(e.received_at_ms),
                    body: BodyOf::Json(raw),
                    body_encoding: None,
                    content_type: None,
                },
                None => Item {
                    id: e.id.as_str(),
                    event_type: &e.event_type,
                    received_at: rfc3339(e.received_at_ms),
                    body: BodyOf::Base64(base64::engine::general_purpose::STANDARD.encode(&e.body)),
                    body_encoding: Some("base64"),
                    content_type,
                },
            }
        })
        .collect();
    Bytes::from(serde_json::to_vec(&Batch { events: items }).unwrap_or_default())
}

/// The `attempt` span of a batch some of whose events' traces are kept: linked to each of
/// them (a child of the first), so every event's trace leads to the request that carried it.
fn batch_span(batch: &DueBatch, target: &Target) -> Option<crate::traces::Span> {
    use opentelemetry::KeyValue;
    if !crate::traces::on() {
        return None;
    }
    let links: Vec<_> = batch
        .events
        .iter()
        .filter_map(|e| crate::traces::Link::of_event_meta(e.content_type.as_deref()))
        .collect();
    crate::traces::Span::batch(
        "attempt",
        opentelemetry::trace::SpanKind::Client,
        links,
        vec![
            KeyValue::new("estafeta.batch_id", batch.id.as_str().to_owned()),
            KeyValue::new("estafeta.target_id", target.id.as_str().to_owned()),
            KeyValue::new("estafeta.batch_events", batch.events.len() as i64),
        ],
    )
}

/// Sends one batch and records its outcome on each of its events.
async fn send(inner: &Inner, shard: u16, batch: DueBatch) {
    let cut = DueCut {
        tenant: batch.tenant.clone(),
        target: batch.target.clone(),
    };
    if batch.events.is_empty() {
        finish(inner, shard, &batch.id).await;
        return;
    }
    let Some(target) = target_of(inner, &cut).await else {
        // The target is gone: its events' deliveries end here, like scheduled ones.
        for e in &batch.events {
            if let Err(err) = inner
                .deliveries
                .unschedule(shard, &batch.tenant, &e.id, &batch.target, e.attempts)
                .await
            {
                tracing::warn!(batch = %batch.id, error = %err, "cannot drop a batch to a deleted target; it comes back when its lease ends");
                return;
            }
        }
        finish(inner, shard, &batch.id).await;
        return;
    };
    let now = inner.deliveries.clock().now_ms();
    let attempt = batch.attempts + 1;
    let body = body(&batch.events);
    let (verdict, status, error, retry_after, latency) = if target.active {
        let keys = SigningKey::all(&target.secrets_at(now));
        let msg = Message {
            event_id: batch.id.as_str(),
            event_type: BATCH_EVENT_TYPE,
            content_type: Some(b"application/json"),
            body: &body,
            shaped: None,
        };
        let now_secs = (now / 1000) as i64;
        let r = match batch_span(&batch, &target) {
            Some(span) => {
                inner
                    .client
                    .send_in(&target, &keys, msg, now_secs, span)
                    .await
            }
            None => inner.client.send(&target, &keys, msg, now_secs).await,
        };
        let verdict = match (r.status, r.refused) {
            (_, true) => Verdict::Final,
            (Some(s), _) => verdict_for_status(s),
            (None, _) => Verdict::Retry,
        };
        let error = r.error.clone().or_else(|| match (verdict, r.status) {
            (Verdict::Delivered, _) | (_, None) => None,
            (_, Some(s)) => Some(format!("the target answered {s}")),
        });
        (verdict, r.status, error, r.retry_after, r.latency)
    } else {
        // Parked, not dropped: replayable once the target is enabled again.
        (
            Verdict::Final,
            None,
            Some("the target is disabled".into()),
            None,
            Duration::ZERO,
        )
    };
    crate::telemetry::delivery(
        match verdict {
            Verdict::Delivered => "delivered",
            Verdict::Retry => "retry",
            _ => "dead_letter",
        },
        Some(latency),
    );
    let policy = target.retry.unwrap_or(inner.settings.retry);
    let can_retry = target.mode == Mode::Persistent && attempt < policy.max_attempts();
    let next_due = (verdict == Verdict::Retry && can_retry).then(|| {
        now.saturating_add(
            delay(&policy, attempt + 1, retry_after, unit_random()).as_millis() as u64,
        )
    });
    let outcomes: Vec<Outcome> = batch
        .events
        .iter()
        .map(|e| {
            let mut state = DeliveryState {
                state: State::Succeeded,
                attempts: attempt,
                last_status: status,
                last_error: error.clone(),
                next_retry_at_ms: None,
                updated_at_ms: now,
                deferrals: 0,
            };
            let next = match (verdict, next_due) {
                (Verdict::Delivered, _) => Next::Done,
                // The batch is rescheduled as a whole; each event only waits with it.
                (_, Some(due)) => {
                    state.state = State::Retrying;
                    state.next_retry_at_ms = Some(due);
                    Next::HeldUntil(due)
                }
                _ => {
                    state.state = State::DeadLettered;
                    Next::DeadLetter(DeadLetter {
                        id: DeadLetterId::failed_at(now),
                        event_id: e.id.clone(),
                        target_id: target.id.clone(),
                        event_type: e.event_type.clone(),
                        attempts: attempt,
                        last_status: status,
                        last_error: error.clone(),
                        failed_at_ms: now,
                    })
                }
            };
            Outcome {
                shard,
                tenant: batch.tenant.clone(),
                event_id: e.id.clone(),
                target_id: target.id.clone(),
                state,
                attempt: Some(AttemptRecord {
                    target_id: target.id.clone(),
                    attempt,
                    at_ms: now,
                    status,
                    latency_ms: latency.as_millis() as u64,
                    error: error.clone(),
                    response: None,
                    headers: None,
                    transform_version: None,
                    batch_id: Some(batch.id.to_string()),
                }),
                next,
                body: e.body.clone(),
                content_type: e.content_type.clone(),
                gate: None,
            }
        })
        .collect();
    match inner.deliveries.record_many(shard, &outcomes).await {
        Ok(recorded) => {
            for (i, why) in recorded.failed {
                tracing::warn!(batch = %batch.id, event = ?outcomes.get(i).map(|o| &o.event_id), reason = %why, "Redis refused one event's batch outcome");
            }
        }
        Err(e) => {
            // Still leased: the batch is sent again when its lease ends.
            crate::telemetry::redis_error("record");
            tracing::warn!(batch = %batch.id, error = %e, "cannot record a batch's outcome; it is sent again when its lease ends");
            return;
        }
    }
    match next_due {
        Some(due) => {
            if let Err(e) = inner
                .deliveries
                .reschedule_batch(shard, &batch.id, attempt, due)
                .await
            {
                tracing::warn!(batch = %batch.id, error = %e, "cannot reschedule a batch; it comes back when its lease ends");
            }
        }
        None => finish(inner, shard, &batch.id).await,
    }
    if verdict == Verdict::Gone {
        tracing::warn!(target_id = %target.id, "target answered 410 Gone; disabling it");
        if let Err(e) = inner
            .store
            .disable_target(&target.tenant, &target.id, "gone")
            .await
        {
            tracing::warn!(target_id = %target.id, error = %e, "could not disable the target");
        }
    }
}

async fn finish(inner: &Inner, shard: u16, batch: &BatchId) {
    if let Err(e) = inner.deliveries.finish_batch(shard, batch).await {
        tracing::warn!(batch = %batch, error = %e, "cannot take a finished batch off the schedule; it is sent again when its lease ends");
    }
}
