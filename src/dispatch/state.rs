//! What the dispatcher's tasks share: its parts, the caps on deliveries in flight and in
//! memory (process-wide, per tenant, per target), the queues of ordered targets, and the
//! stop signal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::DeliveryClient;
use super::delivery::{Memory, Queued};
use super::hold::OpenEntries;
use super::recorder::Recorder;
use super::settings::Settings;
use super::targets::TargetCache;
use crate::model::{TargetId, TenantId};
use crate::queue::StreamReader;
use crate::store::{Deliveries, Store, Target};

/// The per-target gate: in-flight cap and a count of deliveries waiting for it.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) permits: Arc<Semaphore>,
    /// Deliveries started for the target and not yet holding a permit.
    pub(super) waiting: std::sync::atomic::AtomicUsize,
    /// Signalled when one of them gets its permit (or gives up).
    pub(super) room: tokio::sync::Notify,
}

/// What the dispatcher's tasks share.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) settings: Settings,
    /// This consumer's side of the queue protocol.
    pub(super) reader: StreamReader,
    pub(super) store: Store,
    pub(super) deliveries: Deliveries,
    /// Batches outcome writes.
    pub(super) recorder: Recorder,
    pub(super) targets: TargetCache,
    pub(super) client: DeliveryClient,
    /// Runs the targets' transformations.
    pub(super) sandbox: crate::sandbox::Sandbox,
    /// Deliveries in flight, all targets.
    pub(super) global: Arc<Semaphore>,
    /// Deliveries held in memory (waiting or in flight); bounds the reader.
    pub(super) admission: Arc<Semaphore>,
    /// The size of `admission`.
    pub(super) admission_total: usize,
    pub(super) gates: Mutex<HashMap<TargetId, Arc<Gate>>>,
    /// Each tenant's share of `admission` (half), so one tenant's backlog cannot fill memory
    /// and stop the readers of other tenants' shards.
    pub(super) tenant_shares: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    /// The queues of ordered targets, each drained by one task.
    pub(super) ordered: Mutex<HashMap<TargetId, tokio::sync::mpsc::Sender<Queued>>>,
    /// Entries this consumer is still working on: kept from looking idle, acked at the end.
    pub(super) entries: OpenEntries,
    pub(super) stop: CancellationToken,
    pub(super) tasks: TaskTracker,
}

impl Inner {
    /// Sleeps for `d`; `false` when the dispatcher stopped meanwhile.
    pub(super) async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Waits for room for one more delivery of `tenant`; `None` once stopping.
    pub(super) async fn admit(&self, tenant: &TenantId) -> Option<Memory> {
        let share = {
            let mut shares = match self.tenant_shares.lock() {
                Ok(s) => s,
                Err(poisoned) => poisoned.into_inner(),
            };
            if shares.len() > 100_000 {
                shares.retain(|_, s| Arc::strong_count(s) > 1);
            }
            let cap = (self.admission_total / 2).max(1);
            shares
                .entry(tenant.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(cap)))
                .clone()
        };
        let tenant = tokio::select! {
            _ = self.stop.cancelled() => return None,
            p = share.acquire_owned() => p.ok()?,
        };
        let all = tokio::select! {
            _ = self.stop.cancelled() => return None,
            p = self.admission.clone().acquire_owned() => p.ok()?,
        };
        Some(Memory {
            _tenant: tenant,
            _all: all,
        })
    }

    /// The gate of `target`, made on first use.
    pub(super) fn gate(&self, target: &Target) -> Arc<Gate> {
        let cap = if target.ordered {
            1
        } else {
            self.settings.per_target_concurrency
        };
        let mut gates = match self.gates.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if gates.len() > 100_000 {
            // Forget idle gates; busy ones are still held by their deliveries.
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        gates
            .entry(target.id.clone())
            .or_insert_with(|| {
                Arc::new(Gate {
                    permits: Arc::new(tokio::sync::Semaphore::new(cap)),
                    waiting: std::sync::atomic::AtomicUsize::new(0),
                    room: tokio::sync::Notify::new(),
                })
            })
            .clone()
    }
}
