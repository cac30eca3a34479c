//! The stages of a running process, each started from the [`Core`] and stopped by its own
//! [`Stage::stop`]: [`Background`] (invalidations, retention, shipping, rollups, the monitor
//! checker), the dispatcher, the [`Tasks`] of the edge's batched writers, and the
//! [`Servers`]. [`super::run`] lists them in start order and stops them in reverse.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::Core;
use super::process::StartError;
use crate::dispatch::{Dispatcher, Settings as DispatchSettings};
use crate::log_store::shipper::Shipper;
use crate::queue::Retention;
use crate::redis::invalidation::Listener;
use crate::telemetry;

/// A started stage: stopping it waits until everything it runs has ended.
pub trait Stage: Send {
    /// What the shutdown log says it is doing.
    fn name(&self) -> &'static str;
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Tasks that stop together: one tracker and the token that tells them to stop.
#[derive(Debug, Default)]
pub struct Tasks {
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
    name: &'static str,
}

impl Tasks {
    pub fn new(name: &'static str) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            name,
        }
    }
}

impl Stage for Tasks {
    fn name(&self) -> &'static str {
        self.name
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.stop.cancel();
            self.tracker.close();
            self.tracker.wait().await;
        })
    }
}

/// The background work of a process: the invalidation listener and metrics upkeep
/// (always), and with role `all` or `dispatcher`, retention, shipping to the log store and
/// its upkeep, the hourly rollups and the monitor checker.
pub async fn background(
    core: &Core,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<Tasks, StartError> {
    let tasks = Tasks::new("background tasks");
    let config = &core.config;
    // Subscribe before serving: a change made after the first request must reach the caches.
    let subscriber = crate::redis::connection::connect_subscriber(&config.redis).await?;
    let mut invalidations = Listener::new(
        subscriber,
        core.store.publisher().clone(),
        config.redis_command_timeout() + Duration::from_millis(500),
    );
    invalidations.register(core.auth.clone());
    invalidations.register(std::sync::Arc::new(core.target_cache.clone()));
    invalidations.register(std::sync::Arc::new(core.source_cache.clone()));
    invalidations.register(std::sync::Arc::new(core.monitor_cache.clone()));
    invalidations.register(std::sync::Arc::new(core.catalogues.clone()));
    invalidations
        .subscribe()
        .await
        .map_err(StartError::prepare("subscribing to invalidations"))?;
    let (spawn, stop) = (&tasks.tracker, &tasks.stop);
    spawn.spawn(invalidations.run(stop.clone()));
    spawn.spawn(upkeep(metrics, stop.clone()));
    if !core.role.runs_background() {
        return Ok(tasks);
    }
    let hot_window = Duration::from_secs(config.queue.hot_window_s);
    let stream_age = match &core.log {
        Some(_) => hot_window,
        None => Duration::from_secs(config.queue.retention_hours * 3600),
    };
    let retention = Retention::new(
        core.redis.clone(),
        core.keys.clone(),
        config.queue.shards,
        stream_age,
        Duration::from_secs(60).min(hot_window),
        core.log.is_some(),
    )
    .with_clock(core.clock.clone());
    spawn.spawn(retention.run(stop.clone()));
    if let (Some(store), Some(status)) = (&core.log, &core.shipper_status) {
        // A record must outlive the reclaim of an entry whose consumer died between
        // recording the outcome and acking it, or the reclaim would expand it again.
        let record_lifetime =
            hot_window.max(Duration::from_millis(2 * config.dispatch.reclaim_idle_ms));
        let shipper = Shipper {
            log: store.clone(),
            deliveries: core.deliveries.clone(),
            redis: core.redis.clone(),
            shards: config.queue.shards,
            hot_window: record_lifetime,
            idle: Duration::from_millis(500),
            status: status.clone(),
            holder: crate::model::ids::generate("shipper"),
        };
        spawn.spawn(shipper.run(stop.clone()));
        spawn.spawn(crate::log_store::maintenance(
            store.clone(),
            Duration::from_secs(3600),
            stop.clone(),
        ));
    }
    spawn.spawn(crate::store::rollup::run(
        core.store.clone(),
        config.queue.shards,
        stop.clone(),
    ));
    spawn.spawn(crate::monitors::checker::run(
        core.watches.clone(),
        config.queue.shards,
        Duration::from_millis(config.monitors.check_every_ms),
        stop.clone(),
    ));
    Ok(tasks)
}

/// Keeps the Prometheus recorder's histograms drained.
async fn upkeep(handle: metrics_exporter_prometheus::PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(telemetry::upkeep_interval());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// The dispatcher (roles `all` and `dispatcher`); stopping it stops its reads and waits for
/// its in-flight deliveries up to `grace` (what is left stays pending in Redis).
pub struct Dispatch {
    dispatcher: Dispatcher,
    healer: crate::heal::Running,
    grace: Duration,
}

impl Dispatch {
    pub async fn start(core: &Core) -> Result<Option<Dispatch>, StartError> {
        if !core.role.runs_background() {
            return Ok(None);
        }
        let dispatcher = Dispatcher::start(
            DispatchSettings::from_config(&core.config),
            &core.config.redis,
            core.redis.clone(),
            core.store.clone(),
            core.deliveries.clone(),
            core.target_cache.clone(),
            core.sandbox.clone(),
        )
        .await
        .map_err(|e| StartError::Prepare {
            what: "starting the dispatcher",
            cause: Box::new(e),
        })?;
        let config = &core.config;
        let healer = crate::heal::Healer {
            store: core.store.clone(),
            deliveries: core.deliveries.clone(),
            history: crate::history::History {
                deliveries: core.deliveries.clone(),
                redis: core.redis.clone(),
                log: core.log.clone(),
            },
            targets: core.target_cache.clone(),
            notices: crate::queue::notices::Notices::new(&core.store),
            client: crate::dispatch::client::DeliveryClient::new(
                Duration::from_millis(config.dispatch.request_timeout_ms),
                config.security.allow_private_targets,
                1,
            )
            .map_err(|e| StartError::Prepare {
                what: "starting the healer's client",
                cause: Box::new(e),
            })?,
            sandbox: core.sandbox.clone(),
            allow_private: config.security.allow_private_targets,
            probe_ms: (config.dispatch.heal_probe_s * 1000.0).round() as u64,
            replay_max: config.dispatch.heal_replay_max_events as usize,
            request_timeout: Duration::from_millis(config.dispatch.request_timeout_ms),
        }
        .start(config.queue.shards);
        Ok(Some(Dispatch {
            dispatcher,
            healer,
            grace: Duration::from_millis(core.config.edge.shutdown_grace_ms),
        }))
    }
}

impl Stage for Dispatch {
    fn name(&self) -> &'static str {
        "in-flight deliveries"
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.healer.stop().await;
            self.dispatcher.shutdown(self.grace).await
        })
    }
}
