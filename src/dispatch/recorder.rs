//! Outcome recording in batches: deliveries finishing together are written with one script call
//! per shard (each outcome still atomic), so Redis sees one command for many outcomes, as the
//! edge's enqueuer does for events.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::deliveries::{Deliveries, Outcome};

/// Most outcomes in one call.
const MAX_BATCH: usize = 256;
/// Calls in flight at once.
const MAX_INFLIGHT: usize = 4;

type Pending = (Outcome, oneshot::Sender<bool>);

/// Handle of the batching recorder. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    pub(super) fn start(
        deliveries: Deliveries,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> Recorder {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 32);
        tasks.spawn(collect(rx, deliveries, stop));
        Recorder { tx }
    }

    /// Records `outcome`; `false` when Redis refused or the recorder has stopped.
    pub(super) async fn record(&self, outcome: Outcome) -> bool {
        let (done, answer) = oneshot::channel();
        if self.tx.send((outcome, done)).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

async fn collect(mut rx: mpsc::Receiver<Pending>, deliveries: Deliveries, stop: CancellationToken) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT));
    let flushes = TaskTracker::new();
    loop {
        let first = tokio::select! {
            p = rx.recv() => p,
            _ = stop.cancelled() => {
                // Whatever is queued still gets written; nothing new is waited for.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut by_shard: HashMap<u16, (Vec<Outcome>, Vec<oneshot::Sender<bool>>)> = HashMap::new();
        for (outcome, done) in batch {
            let group = by_shard.entry(outcome.shard).or_default();
            group.0.push(outcome);
            group.1.push(done);
        }
        for (shard, (outcomes, waiters)) in by_shard {
            let Ok(permit) = inflight.clone().acquire_owned().await else {
                break;
            };
            let deliveries = deliveries.clone();
            flushes.spawn(async move {
                let ok = match deliveries.record_many(shard, &outcomes).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::debug!(shard, error = %e, "recording a batch of outcomes failed");
                        false
                    }
                };
                for w in waiters {
                    let _ = w.send(ok);
                }
                drop(permit);
            });
        }
    }
    flushes.close();
    flushes.wait().await;
}
