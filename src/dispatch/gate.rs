//! Whether a delivery may go to its target now: the target's circuit breaker and a 429's pause
//! (both shared in Redis, see [`crate::store::deliveries::gate`]) and its rate limit.
//!
//! Each dispatcher keeps a view of every target's breaker and pause: what its own recording
//! calls answered, and a read of Redis at most once a second per target while in use, so a
//! breaker another instance opened holds this one's deliveries within a second. A closed
//! breaker costs no Redis command; an open one costs none until its time is over; only then
//! (and for every half-open probe) is Redis asked, by one script call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{TargetId, TenantId};
use serde_json::json;

use super::targets::TargetCache;
use crate::model::notice;
use crate::model::time::rfc3339;
use crate::queue::notices::Notices;
use crate::store::Store;
use crate::store::deliveries::gate::{Breaker, GateReport, News};

/// How long a view is trusted before Redis is read again.
const REFRESH: Duration = Duration::from_secs(1);

/// Why a delivery waits, as its delivery view says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    Breaker,
    Paused,
    RateLimited,
    /// Redis could not be asked; looked at again shortly.
    Unknown,
}

impl Why {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Why::Breaker => "waiting: the target's circuit breaker is open",
            Why::Paused => "waiting: the target answered 429 with Retry-After",
            Why::RateLimited => "waiting: the target's rate limit",
            Why::Unknown => "waiting: the target's gate could not be read",
        }
    }

    pub(super) fn metric(self) -> &'static str {
        match self {
            Why::Breaker => "breaker",
            Why::Paused => "retry_after",
            Why::RateLimited => "rate_limit",
            Why::Unknown => "unknown",
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    /// Send it (`probe`: as one of a half-open breaker's probes).
    Go { probe: bool },
    /// Park it in the retry schedule until then (ms), without spending an attempt.
    Wait { until_ms: u64, why: Why },
}

#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub(super) breaker: Breaker,
    pub(super) pause_until_ms: u64,
    read_at: Instant,
    /// The target's `updated_at` when Redis was read: a view older than the target's last
    /// change is not trusted (an enable resets the gate in Redis, which no outcome tells).
    changed_ms: u64,
}

/// Every target's gate as this dispatcher sees it.
#[derive(Debug, Default)]
pub(super) struct Gates {
    views: Mutex<HashMap<TargetId, View>>,
}

impl Gates {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TargetId, View>> {
        match self.views.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The view of `target` as of its change at `changed_ms`, and whether it is due for a
    /// read of Redis (marked read now, so concurrent deliveries do not all read it).
    pub(super) fn view(&self, target: &TargetId, changed_ms: u64) -> (Option<View>, bool) {
        let mut views = self.lock();
        if views.len() > 100_000 {
            views.retain(|_, v| v.read_at.elapsed() < REFRESH * 60);
        }
        match views.get_mut(target) {
            // Read before the target changed: nothing of it holds until Redis is read again.
            Some(v) if v.changed_ms < changed_ms => (None, true),
            Some(v) if v.read_at.elapsed() < REFRESH => (Some(*v), false),
            Some(v) => {
                let seen = *v;
                v.read_at = Instant::now();
                (Some(seen), true)
            }
            None => {
                views.insert(
                    target.clone(),
                    View {
                        breaker: Breaker::default(),
                        pause_until_ms: 0,
                        read_at: Instant::now(),
                        changed_ms,
                    },
                );
                (None, true)
            }
        }
    }

    /// A pause only ends by time: the longer of the one known here and the one given stays
    /// (a read of Redis may come before this dispatcher's own 429 is recorded), unless the
    /// target changed since (`changed_ms`; `None`: as of the view held).
    pub(super) fn set(
        &self,
        target: &TargetId,
        breaker: Breaker,
        pause_until_ms: u64,
        changed_ms: Option<u64>,
    ) {
        let mut views = self.lock();
        let held = views.get(target);
        let held_changed = held.map_or(0, |v| v.changed_ms);
        let changed_ms = changed_ms.unwrap_or(held_changed).max(held_changed);
        let pause_until_ms = match held {
            Some(v) if v.changed_ms == changed_ms => v.pause_until_ms.max(pause_until_ms),
            _ => pause_until_ms,
        };
        views.insert(
            target.clone(),
            View {
                breaker,
                pause_until_ms,
                read_at: Instant::now(),
                changed_ms,
            },
        );
    }

    /// What a recording call said of a target's breaker, unless a newer state is known:
    /// calls run concurrently, and one that ran before the breaker opened may answer after
    /// the one that opened it.
    fn merge(&self, target: &TargetId, breaker: Breaker, pause_until_ms: u64) {
        let newer_known = self
            .lock()
            .get(target)
            .is_some_and(|v| v.breaker.since_ms > breaker.since_ms);
        if newer_known {
            self.pause(target, pause_until_ms);
        } else {
            self.set(target, breaker, pause_until_ms, None);
        }
    }

    /// A 429's pause, seen by this dispatcher at once (the others read it from Redis).
    pub(super) fn pause(&self, target: &TargetId, until_ms: u64) {
        let mut views = self.lock();
        if let Some(v) = views.get_mut(target) {
            v.pause_until_ms = v.pause_until_ms.max(until_ms);
        }
    }

    /// What a recording call said of its targets: `recorded` are the targets whose attempts
    /// it recorded with a gate note (those absent from `reports` are closed and unpaused).
    /// Breakers that moved are logged and counted; targets due to be disabled are.
    pub(super) async fn apply(
        &self,
        effects: &Effects,
        shard: u16,
        at_ms: u64,
        recorded: &[(TenantId, TargetId)],
        reports: Vec<GateReport>,
    ) {
        let Effects {
            notices, targets, ..
        } = effects;
        let mut reported: HashMap<String, GateReport> =
            reports.into_iter().map(|r| (r.target.clone(), r)).collect();
        // A target with several outcomes in the call is named once per outcome.
        let mut seen = std::collections::HashSet::new();
        for (tenant, target) in recorded {
            if !seen.insert(target) {
                continue;
            }
            let Some(r) = reported.remove(target.as_str()) else {
                let closed = Breaker {
                    since_ms: at_ms,
                    ..Breaker::default()
                };
                self.merge(target, closed, 0);
                continue;
            };
            self.merge(target, r.breaker, r.pause_until_ms);
            if let Some(news) = r.news {
                announce(tenant, target, news, &r.breaker);
                let notice = match news {
                    News::Opened => Some((
                        notice::BREAKER_OPENED,
                        json!({"target_id": target, "until": rfc3339(r.breaker.until_ms),
                               "opens": r.breaker.opens}),
                    )),
                    // A re-open is the same outage going on: told once, when it began.
                    News::Reopened => None,
                    News::Closed => Some((notice::BREAKER_CLOSED, json!({"target_id": target}))),
                };
                if let Some((event_type, fields)) = notice
                    && targets.wanted(tenant, event_type, target).await
                {
                    notices.tell(shard, tenant, event_type, fields).await;
                }
            }
            if r.disable {
                let tell = targets
                    .wanted(tenant, notice::TARGET_DISABLED, target)
                    .await;
                let since = r.failing_since_ms.unwrap_or(at_ms);
                disable(effects, tell, shard, tenant, target, since).await;
            }
        }
    }
}

/// What a breaker's move or a disable reaches beyond the gate: the target's record, the
/// tenant's operational events, and which targets want them.
#[derive(Debug, Clone)]
pub(super) struct Effects {
    pub(super) store: Store,
    pub(super) notices: Notices,
    pub(super) targets: TargetCache,
    /// Puts a target disabled for failing on the heal schedule.
    pub(super) deliveries: crate::store::Deliveries,
    /// The wait before its first probe (ms).
    pub(super) heal_probe_ms: u64,
}

fn announce(tenant: &TenantId, target: &TargetId, news: News, b: &Breaker) {
    let to = match news {
        News::Opened | News::Reopened => "open",
        News::Closed => "closed",
    };
    crate::telemetry::breaker_transition(to);
    match news {
        News::Opened | News::Reopened => tracing::warn!(
            tenant = %tenant,
            target_id = %target,
            opens = b.opens,
            until_ms = b.until_ms,
            "circuit breaker opened: the target's deliveries wait in the retry schedule"
        ),
        News::Closed => tracing::info!(
            tenant = %tenant,
            target_id = %target,
            "circuit breaker closed: deliveries to the target resume"
        ),
    }
}

async fn disable(
    effects: &Effects,
    tell: bool,
    shard: u16,
    tenant: &TenantId,
    target: &TargetId,
    since: u64,
) {
    let store = &effects.store;
    // Outcomes in flight after the first disable report it again: told once.
    let heal = match store.target(tenant, target).await {
        Ok(Some(t)) if !t.active => return,
        Ok(Some(t)) => t.heal,
        Ok(None) => return,
        Err(_) => true,
    };
    match store.disable_target(tenant, target, "failing").await {
        Ok(()) => {
            crate::telemetry::target_auto_disabled();
            let fields = json!({"target_id": target, "trigger": "automatic", "reason": "failing",
                                "failing_since": rfc3339(since)});
            if tell {
                effects
                    .notices
                    .tell(shard, tenant, notice::TARGET_DISABLED, fields)
                    .await;
            }
            if heal {
                start_probing(effects, shard, tenant, target, since).await;
            }
            tracing::warn!(tenant = %tenant, target_id = %target, failing_since_ms = ?since, "target failed for disable_after_h; disabled (reason failing)");
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant, target_id = %target, error = %e, "could not disable a failing target; tried again at its next failure");
        }
    }
}

/// Puts a target just disabled for failing on the heal schedule: probed after
/// `heal_probe_s`, its gap counted from `since_ms`.
async fn start_probing(
    effects: &Effects,
    shard: u16,
    tenant: &TenantId,
    target: &TargetId,
    since_ms: u64,
) {
    let healing = crate::store::deliveries::heal::Healing {
        wait_ms: effects.heal_probe_ms,
        oks: 0,
        since_ms,
    };
    let due = effects.deliveries.clock().now_ms() + effects.heal_probe_ms;
    if let Err(e) = effects
        .deliveries
        .schedule_heal(shard, tenant, target, healing, due)
        .await
    {
        tracing::warn!(tenant = %tenant, target_id = %target, error = %e, "could not schedule the probes of a target disabled for failing: it stays disabled until enabled by hand");
    }
}
