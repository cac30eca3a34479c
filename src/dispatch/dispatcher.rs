//! The running dispatcher: its start (one reader, reclaimer and retry poller per shard, and
//! the gauges) and its bounded shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::DeliveryClient;
use super::gate::{Effects, Gates};
use super::hold::OpenEntries;
use super::recorder::Recorder;
use super::settings::Settings;
use super::state::Inner;
use super::targets::TargetCache;
use super::{batches, consumer, retries, takeover};
use crate::config::RedisConfig;
use crate::queue::StreamReader;
use crate::store::{Deliveries, Store};

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("delivery client: {0}")]
    Client(#[from] rustls::Error),
    #[error(transparent)]
    Redis(#[from] crate::redis::connection::RedisSetupError),
    #[error("redis: {0}")]
    Command(#[from] fred::error::Error),
}

/// The running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    /// Ends the liveness lease, after the in-flight deliveries of a stop.
    lease: CancellationToken,
    lease_task: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    /// Starts readers, reclaimers and retry pollers for every shard.
    pub async fn start(
        settings: Settings,
        redis_cfg: &RedisConfig,
        redis: fred::prelude::Client,
        store: Store,
        deliveries: Deliveries,
        targets: TargetCache,
        sandbox: crate::sandbox::Sandbox,
    ) -> Result<Dispatcher, DispatchError> {
        let client = DeliveryClient::new(
            settings.request_timeout,
            settings.allow_private,
            // Many targets often share one host: keep every connection the caps allow alive.
            settings.concurrency,
        )?;
        // A process restarted on this host comes back under the same name and finds what
        // its previous run read and did not finish in its own pending list, at once (the
        // takeover sweep), instead of waiting for the old name's lease to lapse.
        let consumer = match settings.admin_port {
            Some(port) => format!("{}-a{port}", hostname()),
            None => format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                &crate::model::ids::generate("c")[2..12]
            ),
        };
        let reader = StreamReader::new(redis.clone(), store.keyspace().clone(), consumer);
        let admission_total = settings.concurrency * 4 + settings.read_batch * 64;
        let stop = CancellationToken::new();
        let entries = OpenEntries::new(reader.clone(), settings.reclaim_idle, stop.clone());
        let tasks = TaskTracker::new();
        let breakers = Arc::new(Gates::default());
        let notices = crate::queue::notices::Notices::new(&store);
        let recorder = Recorder::start(
            deliveries.clone(),
            Effects {
                store: store.clone(),
                notices: notices.clone(),
                targets: targets.clone(),
                deliveries: deliveries.clone(),
                heal_probe_ms: settings.heal_probe_ms,
            },
            breakers.clone(),
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
            breakers,
            notices,
            tenant_shares: Mutex::new(HashMap::new()),
            ordered: Mutex::new(HashMap::new()),
            entries,
            stop,
            tasks,
            recorder,
            settings,
            store,
            deliveries,
            targets,
            client,
            sandbox,
        });
        // The lease is held before the first read, so no other process takes this
        // consumer's entries for a dead one's.
        if let Err(e) = inner.reader.renew_lease(takeover::LEASE_TTL).await {
            tracing::warn!(error = %e, "could not take the consumer's liveness lease");
        }
        let lease = CancellationToken::new();
        let lease_task = tokio::spawn(takeover::lease_loop(inner.reader.clone(), lease.clone()));
        for shard in 0..inner.settings.shards {
            // Blocking reads get a connection of their own per shard.
            let conn = crate::redis::connection::connect(redis_cfg).await?;
            inner
                .tasks
                .spawn(consumer::read_loop(inner.clone(), shard, conn));
            inner
                .tasks
                .spawn(consumer::reclaim_loop(inner.clone(), shard));
            inner
                .tasks
                .spawn(takeover::sweep_loop(inner.clone(), shard));
            inner.tasks.spawn(retries::poll_loop(inner.clone(), shard));
            inner.tasks.spawn(batches::batch_loop(inner.clone(), shard));
        }
        inner.tasks.spawn(consumer::gauges_loop(inner.clone()));
        tracing::info!(consumer = %inner.reader.consumer(), shards = inner.settings.shards, "dispatcher started");
        Ok(Dispatcher {
            inner,
            lease,
            lease_task,
        })
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
        // Dropping the lease lets another process take over what is left at once.
        self.lease.cancel();
        let _ = self.lease_task.await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && crate::model::ids::is_valid(h))
        .unwrap_or_else(|| "estafeta".into())
}
