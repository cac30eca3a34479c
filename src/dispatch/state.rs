//! What the dispatcher's tasks share: its parts, the caps on deliveries in flight and in
//! memory (process-wide, per tenant, per target), the queues of ordered targets, and the
//! stop signal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::DeliveryClient;
use super::delivery::{Memory, Queued};
use super::hold::OpenEntries;
use super::limit::{Limit, Signal};
use super::recorder::Recorder;
use super::settings::Settings;
use super::targets::TargetCache;
use crate::model::target_health::Concurrency;
use crate::model::{TargetId, TenantId};
use crate::queue::StreamReader;
use crate::store::{Deliveries, Store, Target};

/// How many `defer`s a delivery may wait for its target's permit while the target serves.
const MAX_DEFERS_WAITED: u32 = 8;

/// The per-target gate: in-flight cap and a count of deliveries waiting for it.
#[derive(Debug)]
pub(super) struct Gate {
    pub(super) permits: Arc<Semaphore>,
    /// Deliveries started for the target and not yet holding a permit.
    pub(super) waiting: std::sync::atomic::AtomicUsize,
    /// Signalled when one of them gets its permit (or gives up).
    pub(super) room: tokio::sync::Notify,
    /// The in-flight limit (fixed, or adaptive) and the setting it was made for.
    pub(super) limit: Limit,
    setting: Concurrency,
    /// Permits the semaphore should hold: the limit.
    cap: AtomicUsize,
    /// Permits out (in flight) that are to be forgotten when they come back: the limit fell
    /// below what was in flight.
    debt: AtomicUsize,
    /// Attempts that have given their permit back: a waiter sees from it whether the target
    /// is serving its queue.
    served: AtomicU64,
}

impl Gate {
    fn new(limit: Limit, setting: Concurrency) -> Gate {
        let cap = limit.current();
        Gate {
            permits: Arc::new(Semaphore::new(cap)),
            waiting: AtomicUsize::new(0),
            room: tokio::sync::Notify::new(),
            limit,
            setting,
            cap: AtomicUsize::new(cap),
            debt: AtomicUsize::new(0),
            served: AtomicU64::new(0),
        }
    }

    /// A permit for one of the deliveries counted as `waiting`, which it stops being: waited
    /// for while the target is serving, that is as long as the target gave back a permit
    /// within the last `defer` (a busy target, or one still finding its limit, serves its
    /// queue), up to [`MAX_DEFERS_WAITED`] of them. `None`: the target served nothing for
    /// `defer` (hanging, or far slower than its queue), and the delivery is to be parked.
    pub(super) async fn permit_while_served(
        &self,
        defer: Duration,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let give_up = tokio::time::Instant::now() + defer * MAX_DEFERS_WAITED;
        // One acquisition throughout: the semaphore is fair, and acquiring again would lose
        // the delivery's place in the queue.
        let acquire = self.permits.clone().acquire_owned();
        tokio::pin!(acquire);
        let mut seen = self.served.load(Ordering::Acquire);
        let mut check = tokio::time::Instant::now() + defer;
        let permit = loop {
            tokio::select! {
                permit = &mut acquire => break permit.ok(),
                _ = tokio::time::sleep_until(check) => {
                    let served = self.served.load(Ordering::Acquire);
                    if served == seen || check >= give_up {
                        break None;
                    }
                    seen = served;
                    check += defer;
                }
            }
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        self.room.notify_one();
        permit
    }

    /// Deliveries holding a permit now.
    pub(super) fn in_flight(&self) -> usize {
        let total = self.cap.load(Ordering::Acquire) + self.debt.load(Ordering::Acquire);
        total.saturating_sub(self.permits.available_permits())
    }

    /// Learns from one attempt and moves the semaphore to the new limit.
    pub(super) fn observe(&self, rtt: std::time::Duration, signal: Signal) {
        if !self.limit.is_adaptive() {
            return;
        }
        let new = self.limit.sample(rtt, signal, self.in_flight());
        let old = self.cap.swap(new, Ordering::AcqRel);
        if new > old {
            let mut more = new - old;
            // Permits owed are kept rather than added again.
            while more > 0 {
                let owed = self.debt.load(Ordering::Acquire);
                if owed == 0 {
                    break;
                }
                let paid = owed.min(more);
                if self
                    .debt
                    .compare_exchange(owed, owed - paid, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    more -= paid;
                }
            }
            self.permits.add_permits(more);
        } else if new < old {
            let fewer = old - new;
            let forgotten = self.permits.forget_permits(fewer);
            self.debt.fetch_add(fewer - forgotten, Ordering::AcqRel);
        }
        if new != old {
            crate::telemetry::concurrency_limit(new);
        }
    }

    /// Gives a permit back, or forgets it while the limit is below what was in flight.
    pub(super) fn release(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.served.fetch_add(1, Ordering::AcqRel);
        let owed = self
            .debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1));
        if owed.is_ok() {
            permit.forget();
        }
    }
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
    /// Each target's breaker and pause as this dispatcher sees them.
    pub(super) breakers: Arc<super::gate::Gates>,
    /// Appends operational events.
    pub(super) notices: crate::queue::notices::Notices,
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

    /// The gate of `target`, made on first use (and again when its setting changed).
    pub(super) fn gate(&self, target: &Target) -> Arc<Gate> {
        let setting = if target.ordered {
            Concurrency::Fixed(1)
        } else {
            target.concurrency
        };
        let max = self.settings.per_target_concurrency;
        let mut gates = match self.gates.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if gates.len() > 100_000 {
            // Forget idle gates; busy ones are still held by their deliveries.
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        if let Some(g) = gates.get(&target.id).filter(|g| g.setting == setting) {
            return g.clone();
        }
        let limit = match setting {
            Concurrency::Adaptive => Limit::adaptive(max),
            Concurrency::Fixed(n) => Limit::fixed(n as usize),
        };
        let gate = Arc::new(Gate::new(limit, setting));
        gates.insert(target.id.clone(), gate.clone());
        gate
    }
}
