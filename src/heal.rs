//! Healing: a target the gateway disabled for failing is probed with a signed
//! `estafeta.ping` on a backoff (`[dispatch] heal_probe_s`, doubling after each failed probe
//! up to six hours). Two 2xx in a row enable it again (`trigger: automatic`), and the events
//! it missed since it began failing are sent to it, oldest first, at most
//! `heal_replay_max_events`. A target disabled by an operator (or after a 410) is never
//! probed; `heal = false` turns probing off for a target.
//!
//! The schedule lives in Redis and is leased like the retry schedule, so with several
//! dispatchers each target is probed by one at a time, and a crash mid-probe only delays it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::TargetCache;
use crate::dispatch::client::DeliveryClient;
use crate::dispatch::ping::ping;
use crate::history::History;
use crate::history::gap::Gap;
use crate::model::notice;
use crate::model::{TargetId, TenantId};
use crate::queue::notices::Notices;
use crate::sandbox::Sandbox;
use crate::store::deliveries::heal::Healing;
use crate::store::{Deliveries, Store};

/// Targets probed per pass and shard.
const BATCH: usize = 16;
/// The longest wait between two probes.
const MAX_WAIT_MS: u64 = 6 * 3_600_000;
/// 2xx answers in a row that enable a target again.
const OKS_NEEDED: u32 = 2;
/// How long after its enabling the gap is due: every dispatcher has heard of the change by
/// then, so none parks a gap delivery for a target it still thinks disabled.
const GAP_DELAY_MS: u64 = 1_000;

/// What the healer needs: where targets and their schedule live, how to reach them, and
/// whom to tell.
#[derive(Debug, Clone)]
pub struct Healer {
    pub store: Store,
    pub deliveries: Deliveries,
    /// Sends a target enabled again the events it missed.
    pub history: History,
    pub targets: TargetCache,
    pub notices: Notices,
    pub client: DeliveryClient,
    pub sandbox: Sandbox,
    pub allow_private: bool,
    /// `heal_probe_s` (ms): the first wait, and the wait between two passing probes.
    pub probe_ms: u64,
    /// `heal_replay_max_events`.
    pub replay_max: usize,
    /// The delivery timeout: a probe's lease outlasts it.
    pub request_timeout: Duration,
}

/// The running healer: one loop per shard.
#[derive(Debug)]
pub struct Running {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Healer {
    /// Starts probing every shard's due targets.
    pub fn start(self, shards: u16) -> Running {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let healer = Arc::new(self);
        for shard in 0..shards {
            tasks.spawn(heal_loop(healer.clone(), shard, stop.clone()));
        }
        tasks.close();
        Running { stop, tasks }
    }
}

impl Running {
    /// Stops after the probes in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// Probes the shard's targets as they come due, until `stop`.
async fn heal_loop(inner: Arc<Healer>, shard: u16, stop: CancellationToken) {
    let poll = Duration::from_millis(inner.probe_ms.clamp(50, 1_000));
    // A probe takes at most the request timeout; the lease outlasts it with margin.
    let lease = (inner.request_timeout.as_millis() as u64).saturating_mul(2) + 5_000;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        let now = inner.deliveries.clock().now_ms();
        let claimed = match inner
            .deliveries
            .claim_heals(shard, now, now + lease, BATCH)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                crate::telemetry::redis_error("claim_heals");
                tracing::debug!(shard, error = %e, "cannot claim due probes");
                continue;
            }
        };
        for (tenant, target, healing) in claimed {
            probe(&inner, shard, &tenant, &target, healing).await;
        }
    }
}

/// What one probe leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Probe again at this wait (ms), with this progress.
    Again(u64, Healing),
    /// Enough 2xx in a row: enable it.
    Enable(Healing),
}

/// The next step after a probe answered `ok` (or not), from `base_ms` (`heal_probe_s`).
fn next_step(h: Healing, ok: bool, base_ms: u64) -> Step {
    if !ok {
        // The wait that led to this probe, doubled.
        let wait = h.wait_ms.max(base_ms).saturating_mul(2).min(MAX_WAIT_MS);
        return Step::Again(
            wait,
            Healing {
                wait_ms: wait,
                oks: 0,
                ..h
            },
        );
    }
    let h = Healing {
        oks: h.oks + 1,
        ..h
    };
    if h.oks >= OKS_NEEDED {
        Step::Enable(h)
    } else {
        // One more, soon: a receiver that answers once is not yet one that answers.
        Step::Again(base_ms, h)
    }
}

async fn probe(
    inner: &Healer,
    shard: u16,
    tenant: &TenantId,
    id: &TargetId,
    healing: Option<Healing>,
) {
    let deliveries = &inner.deliveries;
    let end = || async {
        if let Err(e) = deliveries.end_heal(shard, tenant, id).await {
            tracing::debug!(target_id = %id, error = %e, "could not take a target off the heal schedule; its lease ends and it is looked at again");
        }
    };
    let target = match inner.store.target(tenant, id).await {
        Ok(Some(t)) => t,
        Ok(None) => return end().await,
        // The lease ends and it is looked at again.
        Err(e) => {
            tracing::debug!(target_id = %id, error = %e, "cannot read a target due for a probe");
            return;
        }
    };
    if target.active || !target.heal || target.disabled_reason.as_deref() != Some("failing") {
        return end().await;
    }
    let base = inner.probe_ms;
    let now = deliveries.clock().now_ms();
    let healing = healing.unwrap_or(Healing {
        wait_ms: base,
        oks: 0,
        since_ms: now,
    });
    let p = ping(
        &inner.client,
        &inner.sandbox,
        inner.allow_private,
        &target,
        now,
    )
    .await;
    crate::telemetry::heal_probe(p.delivered);
    tracing::info!(tenant = %tenant, target_id = %id, delivered = p.delivered, status = ?p.status, error = ?p.error, "probed a target disabled for failing");
    match next_step(healing, p.delivered, base) {
        Step::Again(wait, h) => {
            let due = deliveries.clock().now_ms() + wait;
            if let Err(e) = deliveries.schedule_heal(shard, tenant, id, h, due).await {
                tracing::debug!(target_id = %id, error = %e, "could not schedule the next probe; its lease ends and it is probed again");
            }
        }
        Step::Enable(h) => enable(inner, shard, tenant, &target, h.since_ms).await,
    }
}

/// Enables a target whose probes passed, tells who asked, and sends it its gap.
async fn enable(
    inner: &Healer,
    shard: u16,
    tenant: &TenantId,
    target: &crate::store::Target,
    since_ms: u64,
) {
    let id = &target.id;
    match inner.store.enable_healed(tenant, id).await {
        Ok(true) => {}
        Ok(false) => {
            let _ = inner.deliveries.end_heal(shard, tenant, id).await;
            return;
        }
        // The lease ends and it is probed again.
        Err(e) => {
            tracing::warn!(tenant = %tenant, target_id = %id, error = %e, "a target's probes passed but it could not be enabled; probed again");
            return;
        }
    }
    crate::telemetry::target_healed();
    inner.targets.forget(tenant).await;
    if let Err(e) = inner.deliveries.reset_gate(shard, tenant, id).await {
        tracing::warn!(target_id = %id, error = %e, "could not reset the breaker of a healed target");
    }
    if let Err(e) = inner.deliveries.end_heal(shard, tenant, id).await {
        tracing::debug!(target_id = %id, error = %e, "could not take a healed target off the heal schedule; its next claim drops it");
    }
    let now = inner.deliveries.clock().now_ms();
    let gap = inner
        .history
        .send_gap(
            shard,
            tenant,
            target,
            Gap {
                since_ms,
                until_ms: now,
                max: inner.replay_max,
                start_ms: now + GAP_DELAY_MS,
            },
        )
        .await;
    let replayed = match gap {
        Ok(n) => {
            tracing::info!(tenant = %tenant, target_id = %id, replayed = n, "target answered two probes: enabled again, its missed events sent");
            Some(n)
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant, target_id = %id, error = %e, since_ms, "target enabled again, but the events it missed could not be sent: recover them with POST …/targets/{id}/recover");
            None
        }
    };
    if inner
        .targets
        .wanted(tenant, notice::TARGET_ENABLED, id)
        .await
    {
        let fields = json!({"target_id": id, "trigger": "automatic",
                            "failing_since": crate::model::time::rfc3339(since_ms),
                            "replayed": replayed});
        inner
            .notices
            .tell(shard, tenant, notice::TARGET_ENABLED, fields)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_back_off_and_two_passes_in_a_row_enable() {
        let base = 60_000;
        let mut h = Healing {
            wait_ms: base,
            oks: 0,
            since_ms: 7,
        };
        let mut waits = Vec::new();
        for _ in 0..12 {
            match next_step(h, false, base) {
                Step::Again(wait, next) => {
                    waits.push(wait);
                    h = next;
                }
                Step::Enable(_) => panic!("a failed probe never enables"),
            }
        }
        assert_eq!(
            &waits[..5],
            &[120_000, 240_000, 480_000, 960_000, 1_920_000]
        );
        assert_eq!(*waits.last().unwrap_or(&0), MAX_WAIT_MS);
        // One pass: probed again soon, not after the long wait.
        let Step::Again(wait, once) = next_step(h, true, base) else {
            panic!("one pass is not enough");
        };
        assert_eq!((wait, once.oks), (base, 1));
        // A failure in between starts the count again.
        let Step::Again(_, reset) = next_step(once, false, base) else {
            panic!("a failure is never enough");
        };
        assert_eq!(reset.oks, 0);
        assert_eq!(
            next_step(once, true, base),
            Step::Enable(Healing { oks: 2, ..once })
        );
        assert_eq!(once.since_ms, 7, "the gap's start is kept");
    }
}
