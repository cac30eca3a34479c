//! Outcome recording in batches: deliveries finishing together are written with one script call
//! per shard (each outcome still atomic), so Redis sees one command for many outcomes, as the
//! edge's enqueuer does for events. The batching itself is [`crate::batch`]'s.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{Batcher, Flush, Limits};
use crate::store::deliveries::{Deliveries, Outcome};

/// Most outcomes in one call.
const MAX_BATCH: usize = 256;
/// Calls in flight at once.
const MAX_INFLIGHT: usize = 4;

/// Handle of the batching recorder. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    batcher: Batcher<Writer>,
}

#[derive(Debug)]
struct Writer {
    deliveries: Deliveries,
}

impl Flush for Writer {
    type Item = Outcome;
    /// Whether the outcome is in Redis.
    type Output = bool;

    async fn flush(&self, outcomes: Vec<Outcome>, _deadline: tokio::time::Instant) -> Vec<bool> {
        let n = outcomes.len();
        let mut by_shard: BTreeMap<u16, (Vec<usize>, Vec<Outcome>)> = BTreeMap::new();
        for (i, o) in outcomes.into_iter().enumerate() {
            let group = by_shard.entry(o.shard).or_default();
            group.0.push(i);
            group.1.push(o);
        }
        let written = futures_util::future::join_all(by_shard.into_iter().map(
            |(shard, (at, outcomes))| async move {
                let ok = match self.deliveries.record_many(shard, &outcomes).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(shard, error = %e, "recording a batch of outcomes failed");
                        false
                    }
                };
                (at, ok)
            },
        ))
        .await;
        let mut out = vec![false; n];
        for (at, ok) in written {
            for i in at {
                out[i] = ok;
            }
        }
        out
    }
}

impl Recorder {
    /// Starts the batcher on `tasks`; what is queued when `stop` fires is still written.
    pub(super) fn start(
        deliveries: Deliveries,
        deadline: Duration,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> Recorder {
        let limits = Limits {
            max_items: MAX_BATCH,
            max_bytes: usize::MAX,
            max_inflight: MAX_INFLIGHT,
            capacity: MAX_BATCH * 32,
            deadline,
        };
        Recorder {
            batcher: Batcher::start(Writer { deliveries }, limits, tasks, stop),
        }
    }

    /// Records `outcome`; `false` when Redis refused, or the recorder is full or has stopped
    /// (the caller retries).
    pub(super) async fn record(&self, outcome: Outcome) -> bool {
        self.batcher.submit(outcome).await.unwrap_or(false)
    }
}
