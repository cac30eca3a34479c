//! Takeover in seconds: liveness leases, and the sweep of this consumer's own lost entries.
//!
//! Every dispatcher renews a lease (`P:alive:<consumer>`, a key with a TTL of
//! [`LEASE_TTL`]) while its process runs. Once a second, per shard, each dispatcher looks at
//! the group's consumers: one with entries pending, idle for a whole lease, and no lease is
//! gone (killed, or cut off from Redis), and its pending entries are claimed at once instead of
//! after `reclaim_idle_ms`, which stays for consumers that are alive but stuck. A claim names
//! a minimum idle time, so of two processes racing for the same entry one gets it. Duplicates
//! are bounded by what the dead consumer had in flight.
//!
//! The same pass finds this consumer's own pending entries that it does not hold: reads whose
//! reply it never saw (a Redis stall past the command timeout, where Redis still executed the
//! read), and entries left pending when recording an outcome failed. Nobody else would touch
//! them before `reclaim_idle_ms`, since this consumer is alive.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::consumer::process_entries;
use super::state::Inner;
use crate::queue::StreamReader;
use crate::queue::consume::ReadError;

/// Lifetime of a liveness lease: a consumer not heard from for this long is dead.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a live process renews its lease.
const LEASE_RENEW: Duration = Duration::from_secs(1);
/// How often each shard looks for dead consumers and lost entries.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A dead consumer's entries are claimed only if idle this long (one claimer wins a race).
const DEAD_MIN_IDLE: Duration = Duration::from_secs(1);
/// An own entry counts as lost once it is idle this long and not held (a held entry is being
/// expanded or delivered; one just read is held before any Redis call is made for it).
const LOST_MIN_IDLE: Duration = Duration::from_secs(2);
/// Entries claimed per command.
const CLAIM_BATCH: usize = 256;

/// Renews this consumer's lease (taken at start, before the first read) until `stop`, then
/// gives it up. Runs outside the dispatcher's task set: the lease must outlive the in-flight
/// deliveries of a graceful stop.
pub(super) async fn lease_loop(reader: StreamReader, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(LEASE_RENEW) => {}
        }
        match reader.renew_lease(LEASE_TTL).await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "could not renew the consumer's liveness lease");
                }
                failing = true;
            }
        }
    }
    if let Err(e) = reader.drop_lease().await {
        tracing::debug!(error = %e, "could not drop the liveness lease; it expires by itself");
    }
}

/// Once a second: takes over the entries of dead consumers of `shard`, and picks up this
/// consumer's own lost ones.
pub(super) async fn sweep_loop(inner: Arc<Inner>, shard: u16) {
    loop {
        if !inner.pause(SWEEP_EVERY).await {
            break;
        }
        if inner.admission.available_permits() == 0 {
            continue;
        }
        if let Err(e) = sweep(&inner, shard).await {
            if !matches!(e, ReadError::NoGroup) {
                crate::telemetry::redis_error("takeover");
                tracing::debug!(shard, error = %e, "takeover sweep failed");
            }
        }
    }
}

async fn sweep(inner: &Arc<Inner>, shard: u16) -> Result<(), ReadError> {
    let me = inner.reader.consumer().to_owned();
    for consumer in inner.reader.consumers(shard).await? {
        if consumer.pending == 0 || consumer.idle_ms < LEASE_TTL.as_millis() as u64 {
            continue;
        }
        if consumer.name == me {
            continue;
        }
        if inner.reader.lease_held(&consumer.name).await? {
            continue;
        }
        let taken = claim_all(inner, shard, &consumer.name, DEAD_MIN_IDLE, false).await?;
        if taken > 0 {
            crate::telemetry::reclaimed(taken);
            tracing::info!(
                shard,
                consumer = %consumer.name,
                entries = taken,
                "took over the entries of a consumer whose liveness lease expired"
            );
        }
    }
    let lost = claim_all(inner, shard, &me, LOST_MIN_IDLE, true).await?;
    if lost > 0 {
        crate::telemetry::reclaimed(lost);
        tracing::info!(
            shard,
            entries = lost,
            "picked up entries this consumer read but never received (a stalled or failed read)"
        );
    }
    Ok(())
}

/// Claims and processes `owner`'s pending entries of `shard` idle at least `min_idle`; with
/// `skip_held`, only those this process does not hold. How many were processed.
async fn claim_all(
    inner: &Arc<Inner>,
    shard: u16,
    owner: &str,
    min_idle: Duration,
    skip_held: bool,
) -> Result<usize, ReadError> {
    let mut total = 0;
    let mut after: Option<String> = None;
    loop {
        if inner.stop.is_cancelled() || inner.admission.available_permits() == 0 {
            return Ok(total);
        }
        let mut ids = inner
            .reader
            .pending_of(shard, owner, min_idle, after.as_deref(), CLAIM_BATCH)
            .await?;
        let listed = ids.len();
        after = ids.last().cloned();
        if skip_held {
            ids.retain(|id| !inner.entries.holds(shard, id));
        }
        if !ids.is_empty() {
            let entries = inner.reader.claim(shard, ids, min_idle).await?;
            total += entries.len();
            process_entries(inner, shard, entries).await;
        }
        if listed < CLAIM_BATCH {
            return Ok(total);
        }
    }
}
