//! The overdue checker: every `monitors.check_every_ms`, for each shard, reads the subjects
//! whose deadline has passed (a range read of the deadline set: nothing else is touched, so a
//! million monitors cost nothing between deadlines) and times them out, a page per call of the
//! signal script, which claims each one first. Several instances may run the checker: each overdue subject
//! is handled by the first script that claims it; the others find it gone and skip it.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::state::Watches;

/// Overdue subjects read, and timed out in one script call, per step: small enough that one
/// call holds Redis for a few milliseconds at most.
const STEP: i64 = 200;
/// How often the per-status gauges are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(15);

/// What one pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Subjects timed out by this instance.
    pub timed_out: usize,
    /// Redis commands issued (range reads and scripts).
    pub commands: usize,
}

/// One pass over every shard at `now` (Redis's clock), shards concurrently.
pub async fn check_once(watches: &Watches, shards: u16, now: u64) -> Pass {
    let passes = join_all((0..shards).map(|shard| check_shard(watches, shard, now))).await;
    passes.into_iter().fold(Pass::default(), |total, p| Pass {
        timed_out: total.timed_out + p.timed_out,
        commands: total.commands + p.commands,
    })
}

async fn check_shard(watches: &Watches, shard: u16, now: u64) -> Pass {
    let mut pass = Pass::default();
    loop {
        pass.commands += 1;
        let overdue = match watches.overdue(shard, now, STEP).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(shard, error = %e, "reading overdue monitors failed");
                break;
            }
        };
        if overdue.is_empty() {
            break;
        }
        pass.commands += 1;
        match watches.time_out(shard, &overdue, now).await {
            Ok(results) => {
                pass.timed_out += results.iter().flatten().filter(|r| r.changed).count();
            }
            Err(e) => {
                // The subjects stay overdue: the next pass takes them again.
                tracing::warn!(shard, error = %e, "timing out monitors failed");
                break;
            }
        }
        // A short page is the end.
        if (overdue.len() as i64) < STEP {
            break;
        }
    }
    pass
}

/// Runs the checker until `stop`.
pub async fn run(watches: Watches, shards: u16, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gauges_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        // Deadlines are in Redis's clock; this instance's may differ.
        let now = match watches.clock().await {
            Ok(now) => now,
            Err(_) => watches.local_clock().now_ms(),
        };
        let pass = check_once(&watches, shards, now).await;
        crate::telemetry::monitor_check(started.elapsed(), pass.timed_out);
        if gauges_at.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
            gauges_at = Some(Instant::now());
            match watches.counts(shards).await {
                Ok(counts) => crate::telemetry::watched(&counts),
                Err(e) => tracing::warn!(error = %e, "reading monitor counts failed"),
            }
        }
    }
}
