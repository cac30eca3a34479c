//! Outcome recording in batches: deliveries finishing together are written with one script call
//! per shard (each outcome still atomic), so Redis sees one command for many outcomes, as the
//! edge's enqueuer does for events. The batching itself is [`crate::batch`]'s.
//!
//! One outcome that the script refuses for what its keys hold (a record overwritten with a
//! value of another type, say) would fail every batch it joins, forever: such a batch is split
//! ([`crate::batch::isolate`]) until the outcome at fault is found, which is set aside in the
//! shard's quarantine (the delivery counts as recorded there, so its entry is acknowledged);
//! the batch's other outcomes are recorded as usual.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{Batcher, Flush, Isolate, Limits, isolate};
use crate::store::StoreError;
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
                let store = ShardRecords {
                    deliveries: &self.deliveries,
                    shard,
                };
                let ok = match isolate(&store, &outcomes).await {
                    Ok(_) => true,
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

/// One shard's delivery records, as [`isolate`] writes outcomes to them.
struct ShardRecords<'a> {
    deliveries: &'a Deliveries,
    shard: u16,
}

impl Isolate<Outcome> for ShardRecords<'_> {
    type Written = ();
    type Error = StoreError;

    async fn write(&self, outcomes: &[Outcome]) -> Result<(), StoreError> {
        self.deliveries.record_many(self.shard, outcomes).await
    }

    fn is_fault(e: &StoreError) -> bool {
        e.is_data_fault()
    }

    async fn set_aside(&self, o: &Outcome, e: &StoreError) -> Result<(), StoreError> {
        let record = serde_json::json!({
            "tenant": o.tenant,
            "event_id": o.event_id,
            "target_id": o.target_id,
            "state": o.state,
            "attempt": o.attempt,
            "next": format!("{:?}", o.next),
        });
        crate::store::quarantine::put(
            self.deliveries.redis(),
            self.deliveries.keys(),
            self.shard,
            "recorder",
            &format!("{}:{}", o.event_id, o.target_id),
            &e.to_string(),
            vec![(
                bytes::Bytes::from_static(b"outcome"),
                bytes::Bytes::from(serde_json::to_vec(&record)?),
            )],
        )
        .await?;
        Ok(())
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
