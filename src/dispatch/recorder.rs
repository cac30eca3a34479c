//! Outcome recording in batches: deliveries finishing together are written with one script call
//! per shard (each outcome still atomic), so Redis sees one command for many outcomes, as the
//! edge's enqueuer does for events. The batching itself is [`crate::batch`]'s.
//!
//! One outcome whose keys Redis refuses (a record overwritten with a value of another type,
//! say) fails alone inside the script call (`record.lua` runs each outcome protected, and
//! nothing of it is applied), so it cannot fail the batch it joins. It is set aside in the
//! shard's quarantine and counts as recorded there, so its entry is acknowledged. Only when
//! the refusal is the outcome's own (another outcome of the call was recorded, or one of its
//! own keys is of another type) is it set aside: a key every outcome of the shard shares going
//! bad is not any outcome's fault, and those outcomes are retried, loudly.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use super::gate::{Effects, Gates};
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
    effects: Effects,
    /// Told what each call said of its targets' breakers.
    breakers: Arc<Gates>,
}

impl Flush for Writer {
    type Item = Outcome;
    /// Whether the outcome is in Redis (recorded, or set aside in the quarantine).
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
                let ok = self.write_shard(shard, &outcomes).await;
                (at, ok)
            },
        ))
        .await;
        let mut out = vec![false; n];
        for (at, ok) in written {
            for (i, ok) in at.into_iter().zip(ok) {
                out[i] = ok;
            }
        }
        out
    }
}

impl Writer {
    /// Records one shard's outcomes; per outcome, whether it is in Redis.
    async fn write_shard(&self, shard: u16, outcomes: &[Outcome]) -> Vec<bool> {
        let mut recorded = match self.deliveries.record_many(shard, outcomes).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(shard, error = %e, "recording a batch of outcomes failed");
                return vec![false; outcomes.len()];
            }
        };
        let gated: Vec<_> = outcomes
            .iter()
            .enumerate()
            .filter(|(i, o)| o.gate.is_some() && !recorded.failed.iter().any(|(f, _)| f == i))
            .map(|(_, o)| (o.tenant.clone(), o.target_id.clone()))
            .collect();
        if !gated.is_empty() || !recorded.gates.is_empty() {
            self.breakers
                .apply(
                    &self.effects,
                    shard,
                    recorded.at_ms,
                    &gated,
                    std::mem::take(&mut recorded.gates),
                )
                .await;
        }
        if !recorded.counters_failed.is_empty() {
            tracing::error!(shard, keys = ?recorded.counters_failed, "Redis refused counter keys of recorded outcomes (a key of another type?); those counts are lost");
        }
        let mut ok = vec![true; outcomes.len()];
        // Another outcome of the call was recorded: the refusal is the failed one's own.
        let some_recorded = recorded.failed.len() < outcomes.len();
        for (i, why) in recorded.failed {
            let Some(o) = outcomes.get(i) else { continue };
            ok[i] = self.set_aside_if_own(shard, o, &why, some_recorded).await;
        }
        ok
    }

    /// Sets a refused outcome aside when the refusal is its own; `false` (retry it) when it
    /// is not, or when the quarantine cannot be written.
    async fn set_aside_if_own(
        &self,
        shard: u16,
        o: &Outcome,
        why: &str,
        some_recorded: bool,
    ) -> bool {
        let own = some_recorded
            || match self.deliveries.foreign_keys_of(o).await {
                Ok(wrong) => !wrong.is_empty(),
                Err(_) => false,
            };
        if !own {
            tracing::error!(shard, event = %o.event_id, target_id = %o.target_id, reason = why, "Redis refuses to record outcomes of this shard and no key of the outcome's own is at fault (a key the shard shares may be of another type); retrying");
            return false;
        }
        let record = serde_json::json!({
            "tenant": o.tenant,
            "event_id": o.event_id,
            "target_id": o.target_id,
            "state": o.state,
            "attempt": o.attempt,
            "next": format!("{:?}", o.next),
        });
        let fields = vec![(
            bytes::Bytes::from_static(b"outcome"),
            bytes::Bytes::from(serde_json::to_vec(&record).unwrap_or_default()),
        )];
        let put = crate::store::quarantine::put(
            self.deliveries.redis(),
            self.deliveries.keys(),
            shard,
            "recorder",
            &format!("{}:{}", o.event_id, o.target_id),
            why,
            fields,
        )
        .await;
        if put.is_err() {
            return false;
        }
        if let Err(e) = self.deliveries.release_unfinished(shard, &o.event_id).await {
            tracing::warn!(shard, event = %o.event_id, error = %e, "an outcome set aside still holds its event unfinished");
        }
        true
    }
}

impl Recorder {
    /// Starts the batcher on `tasks`; what is queued when `stop` fires is still written.
    pub(super) fn start(
        deliveries: Deliveries,
        effects: Effects,
        breakers: Arc<Gates>,
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
            batcher: Batcher::start(
                Writer {
                    deliveries,
                    effects,
                    breakers,
                },
                limits,
                tasks,
                stop,
            ),
        }
    }

    /// Records `outcome`; `false` when Redis refused, or the recorder is full or has stopped
    /// (the caller retries).
    pub(super) async fn record(&self, outcome: Outcome) -> bool {
        self.batcher.submit(outcome).await.unwrap_or(false)
    }
}
