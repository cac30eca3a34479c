//! The retry schedule's poller: claims due deliveries of one shard and runs them.

use std::sync::Arc;
use std::time::Duration;

use super::delivery::{Delivery, EventData};
use super::state::Inner;
use super::worker::start;
use crate::model::DeadLetterId;
use crate::store::deliveries::{DeadLetter, DeliveryState, Next, Outcome, State};

/// Most deliveries claimed per poll.
const CLAIM_LIMIT: usize = 256;

pub(super) async fn poll_loop(inner: Arc<Inner>, shard: u16) {
    let mut pause = inner.settings.retry_poll;
    loop {
        tokio::select! {
            _ = inner.stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
        let room = inner.admission.available_permits().min(CLAIM_LIMIT);
        if room == 0 {
            pause = inner.settings.retry_poll;
            continue;
        }
        let now = inner.deliveries.clock().now_ms();
        // The lease outlasts an attempt with margin; a crash only delays the delivery to its end.
        let lease_end = now.saturating_add(inner.settings.reclaim_idle.as_millis() as u64);
        let due = match inner
            .deliveries
            .claim_due(shard, now, lease_end, room)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                crate::telemetry::redis_error("claim_due");
                tracing::debug!(shard, error = %e, "cannot claim due retries");
                pause = inner.settings.retry_poll * 4;
                continue;
            }
        };
        // A full batch means more may be due: poll again at once.
        pause = if due.len() == room {
            Duration::ZERO
        } else {
            inner.settings.retry_poll
        };
        for item in due {
            let targets = match inner.targets.get(&item.tenant).await {
                Ok(t) => t,
                Err(_) => continue, // the lease ends and it comes back
            };
            let Some(target) = targets.by_id(&item.target_id).cloned() else {
                tracing::info!(target_id = %item.target_id, "dropping a scheduled delivery to a deleted target");
                if let Err(e) = inner
                    .deliveries
                    .unschedule(
                        shard,
                        &item.tenant,
                        &item.event_id,
                        &item.target_id,
                        item.attempts_so_far,
                    )
                    .await
                {
                    tracing::warn!(target_id = %item.target_id, error = %e, "could not drop a delivery to a deleted target; it comes back when its lease ends");
                }
                continue;
            };
            if !target.active {
                // Parked, not dropped: replayable once the target is enabled again.
                let now = inner.deliveries.clock().now_ms();
                let outcome = Outcome {
                    shard,
                    tenant: item.tenant.clone(),
                    event_id: item.event_id.clone(),
                    target_id: item.target_id.clone(),
                    state: DeliveryState {
                        state: State::DeadLettered,
                        attempts: item.attempts_so_far,
                        last_status: None,
                        last_error: Some("the target is disabled".into()),
                        next_retry_at_ms: None,
                        updated_at_ms: now,
                        deferrals: 0,
                    },
                    attempt: None,
                    next: Next::DeadLetter(DeadLetter {
                        id: DeadLetterId::failed_at(now),
                        event_id: item.event_id.clone(),
                        target_id: item.target_id.clone(),
                        event_type: item.event_type.clone(),
                        attempts: item.attempts_so_far,
                        last_status: None,
                        last_error: Some("the target is disabled".into()),
                        failed_at_ms: now,
                    }),
                    body: item.body.clone(),
                    content_type: item.content_type.clone(),
                    gate: None,
                };
                if let Err(e) = inner.deliveries.record(&outcome).await {
                    // The lease ends and the delivery comes back to be parked again.
                    tracing::warn!(target_id = %item.target_id, error = %e, "could not park a delivery to a disabled target");
                }
                continue;
            }
            let Some(permit) = inner.admit(&item.tenant).await else {
                return;
            };
            let d = Delivery {
                shard,
                event: Arc::new(EventData {
                    id: item.event_id,
                    tenant: item.tenant,
                    event_type: item.event_type,
                    content_type: item.content_type,
                    body: item.body,
                }),
                target,
                attempt: item.attempts_so_far + 1,
                deferrals: item.deferrals_so_far,
                entry: None,
            };
            start(&inner, d, permit, false).await;
        }
    }
}
