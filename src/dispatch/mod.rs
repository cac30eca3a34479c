//! The dispatcher: reads the shard streams through the consumer group, expands each event into
//! one delivery per matching target, sends them signed, and records every outcome before the
//! stream entry is acknowledged.
//!
//! - **Reading** (`consumer`, over [`crate::queue::consume`]): one reader per shard
//!   (`XREADGROUP … BLOCK`, on its own connection), plus a reclaimer that takes over entries
//!   left pending by a consumer that stopped (`XAUTOCLAIM`, after `dispatch.reclaim_idle_ms`),
//!   keeps this consumer's own long entries from looking idle, and recreates a missing group or
//!   stream (`NOGROUP`). `hold` counts an entry's open deliveries and acks it at zero.
//! - **Expanding**: one script per entry marks each event as expanded by that entry; an event id
//!   already expanded by *another* entry (a re-sent `XADD`) is skipped, so it yields one
//!   delivery per target, not two.
//! - **Matching** ([`matcher`], [`targets`]): each tenant's targets compiled into hash lookups,
//!   cached and reloaded when the store announces a change.
//! - **Delivering** (`worker`, [`client`], [`signing`], [`ssrf`], [`format`]): a per-target gate (`per_target_concurrency` in flight, at most
//!   `max_waiting_per_target` waiting) then the global cap (`concurrency`). A delivery that
//!   finds its target's queue full is deferred to the retry schedule in Redis instead of
//!   waiting in memory, so a slow target costs memory for its cap, not its backlog, and its
//!   tenant's other targets and other tenants keep moving.
//! - **Recording** (`recorder`, batched): one script call per shard for many outcomes writes the delivery state, the attempt log, the
//!   counters, and the retry schedule or error queue entry. Only then does the entry's count of
//!   open deliveries go down; at zero the entry is acknowledged.
//! - **Retrying** (`retries`): each shard's schedule is a sorted set of due times; a claim
//!   script leases due deliveries (moves their score forward), so two dispatchers never fire one
//!   retry twice, and a crash only delays it until the lease ends.
//!
//! Nothing acknowledged is lost: an entry is acked after all its outcomes are in Redis, and
//! anything in flight when a process dies is still pending (stream) or leased (schedule).

pub mod backoff;
pub mod client;
mod consumer;
pub mod format;
mod hold;
pub mod matcher;
mod recorder;
mod retries;
pub mod signing;
pub mod ssrf;
pub mod targets;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use targets::{TargetCache, TenantTargets};

use crate::config::{Config, RedisConfig};
use crate::model::{RetryPolicy, TargetId, TenantId};
use crate::queue::StreamReader;
use crate::store::{Deliveries, Store};
use client::DeliveryClient;

/// What the dispatcher runs with, from `[dispatch]` and neighbours.
#[derive(Debug, Clone)]
pub struct Settings {
    pub shards: u16,
    pub concurrency: usize,
    pub per_target_concurrency: usize,
    pub max_waiting_per_target: usize,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub reclaim_idle: Duration,
    pub read_batch: usize,
    pub retry_poll: Duration,
    pub allow_private: bool,
    /// Longest a reader blocks in `XREADGROUP`; below the Redis command timeout.
    pub block: Duration,
    /// How long a deferred delivery waits before it is looked at again.
    pub defer: Duration,
    /// Longest an outcome waits for its recording batch (the Redis command timeout).
    pub record_deadline: Duration,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let d = &c.dispatch;
        Settings {
            shards: c.queue.shards,
            concurrency: d.concurrency,
            per_target_concurrency: d.per_target_concurrency,
            max_waiting_per_target: d.max_waiting_per_target,
            request_timeout: Duration::from_millis(d.request_timeout_ms),
            retry: d.retry,
            reclaim_idle: Duration::from_millis(d.reclaim_idle_ms),
            read_batch: d.read_batch,
            retry_poll: Duration::from_millis(d.retry_poll_ms),
            allow_private: c.security.allow_private_targets,
            block: (c.redis_command_timeout() / 2)
                .clamp(Duration::from_millis(10), Duration::from_millis(1000)),
            defer: Duration::from_millis(d.retry_poll_ms.max(250) * 4),
            record_deadline: c.redis_command_timeout(),
        }
    }
}

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("delivery client: {0}")]
    Client(#[from] rustls::Error),
    #[error(transparent)]
    Redis(#[from] crate::redis::RedisSetupError),
    #[error("redis: {0}")]
    Command(#[from] fred::error::Error),
}

/// The per-target gate: in-flight cap and a count of deliveries waiting for it.
#[derive(Debug)]
struct Gate {
    permits: Arc<Semaphore>,
    /// Deliveries started for the target and not yet holding a permit.
    waiting: std::sync::atomic::AtomicUsize,
    /// Signalled when one of them gets its permit (or gives up).
    room: tokio::sync::Notify,
}

/// What the dispatcher's tasks share.
#[derive(Debug)]
struct Inner {
    settings: Settings,
    /// This consumer's side of the queue protocol.
    reader: StreamReader,
    store: Store,
    deliveries: Deliveries,
    /// Batches outcome writes.
    recorder: recorder::Recorder,
    targets: TargetCache,
    client: DeliveryClient,
    /// Deliveries in flight, all targets.
    global: Arc<Semaphore>,
    /// Deliveries held in memory (waiting or in flight); bounds the reader.
    admission: Arc<Semaphore>,
    /// The size of `admission`.
    admission_total: usize,
    gates: Mutex<HashMap<TargetId, Arc<Gate>>>,
    /// Each tenant's share of `admission` (half), so one tenant's backlog cannot fill memory
    /// and stop the readers of other tenants' shards.
    tenant_shares: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
    /// The queues of ordered targets, each drained by one task.
    ordered: Mutex<HashMap<TargetId, tokio::sync::mpsc::Sender<(worker::Delivery, Memory)>>>,
    /// Entries this consumer is still working on, by shard: kept from looking idle.
    open_entries: Mutex<HashMap<(u16, String), ()>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Room in memory for one delivery: its tenant's share and the process-wide bound.
#[derive(Debug)]
pub(crate) struct Memory {
    _tenant: tokio::sync::OwnedSemaphorePermit,
    _all: tokio::sync::OwnedSemaphorePermit,
}

impl Inner {
    /// Sleeps for `d`; `false` when the dispatcher stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Waits for room for one more delivery of `tenant`; `None` once stopping.
    async fn admit(&self, tenant: &TenantId) -> Option<Memory> {
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
}

/// The running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl Dispatcher {
    /// Starts readers, reclaimers and retry pollers for every shard.
    pub async fn start(
        settings: Settings,
        redis_cfg: &RedisConfig,
        redis: Client,
        store: Store,
        deliveries: Deliveries,
        targets: TargetCache,
    ) -> Result<Dispatcher, DispatchError> {
        let client = DeliveryClient::new(
            settings.request_timeout,
            settings.allow_private,
            // Many targets often share one host: keep every connection the caps allow alive.
            settings.concurrency,
        )?;
        let consumer = format!(
            "{}-{}-{}",
            hostname(),
            std::process::id(),
            &crate::model::ids::generate("c")[2..12]
        );
        let reader = StreamReader::new(redis.clone(), store.keyspace().clone(), consumer);
        let admission_total = settings.concurrency * 4 + settings.read_batch * 64;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let recorder = recorder::Recorder::start(
            deliveries.clone(),
            settings.record_deadline,
            stop.clone(),
            &tasks,
        );
        let inner = Arc::new(Inner {
            reader,
            global: Arc::new(Semaphore::new(settings.concurrency)),
            admission: Arc::new(Semaphore::new(admission_total)),
            admission_total,
            gates: Mutex::new(HashMap::new()),
            tenant_shares: Mutex::new(HashMap::new()),
            ordered: Mutex::new(HashMap::new()),
            open_entries: Mutex::new(HashMap::new()),
            stop,
            tasks,
            recorder,
            settings,
            store,
            deliveries,
            targets,
            client,
        });
        for shard in 0..inner.settings.shards {
            // Blocking reads get a connection of their own per shard.
            let conn = crate::redis::connect(redis_cfg).await?;
            inner
                .tasks
                .spawn(consumer::read_loop(inner.clone(), shard, conn));
            inner
                .tasks
                .spawn(consumer::reclaim_loop(inner.clone(), shard));
            inner.tasks.spawn(retries::poll_loop(inner.clone(), shard));
        }
        inner.tasks.spawn(consumer::gauges_loop(inner.clone()));
        tracing::info!(consumer = %inner.reader.consumer(), shards = inner.settings.shards, "dispatcher started");
        Ok(Dispatcher { inner })
    }

    /// Stops reading, lets in-flight deliveries finish (bounded by `grace`), then returns.
    /// What did not finish stays pending in Redis and is reclaimed.
    pub async fn shutdown(self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "deliveries still in flight at shutdown; their entries stay pending and will be reclaimed"
            );
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && crate::model::ids::is_valid(h))
        .unwrap_or_else(|| "estafeta".into())
}
