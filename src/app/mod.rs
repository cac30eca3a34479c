//! Builds a process from a [`Config`] and runs it until shutdown, as stages.
//!
//! Start, in order: TLS (a bad certificate fails before anything touches Redis) → the
//! [`Core`](core::Core): keys → Redis and its durability check → scripts → the store's
//! one-time upgrades → the config's tenants, targets and monitors → consumer groups → the log
//! store → readiness and the caches → the stages of [`run`]'s list: background tasks (the
//! invalidation listener subscribes before anything serves; retention, shipping, rollups and
//! the monitor checker with roles `all` and `dispatcher`) → the dispatcher → the edge's
//! batched writers → the servers → ready.
//!
//! Shutdown stops the stages in reverse: not ready, the servers stop accepting and drain
//! in-flight requests (bounded by `edge.shutdown_grace_ms`) → the batchers write what they
//! hold (each in-flight request already has its answer) → the dispatcher stops reading and
//! finishes in-flight deliveries (bounded; what is left stays pending in Redis) → background
//! tasks stop → the Redis connection closes. Every task runs on a stage's tracker and is
//! waited for.

mod core;
mod process;
mod servers;
mod stages;

use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::core::Core;
pub use self::process::{Listeners, Role, StartError};
use self::servers::Servers;
use self::stages::{Dispatch, Stage, Tasks};
use crate::config::Config;
use crate::edge::tls;
use crate::model::time::Clock;
use crate::telemetry;

/// Runs the gateway until `shutdown` is cancelled, then stops its stages in reverse.
pub async fn run(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    run_on(config, role, listeners, shutdown, Clock::system()).await
}

/// [`run`] on `clock`: everything the gateway decides by time (a retry's due time, a
/// session's or a portal link's age, a monitor's deadline, retention) asks it, so a test
/// that moves the clock ahead sees what a wait that long would show.
pub async fn run_on(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
    clock: Clock,
) -> Result<(), StartError> {
    let metrics = telemetry::prometheus();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let tls = match &listeners.edge_tls {
        Some(_) => Some(TlsAcceptor::from(tls::server_config(&config.tls)?)),
        None => None,
    };
    // The batchers' tasks exist before the core: the monitors' signal batcher is the core's.
    let writers = Tasks::new("batched writes");
    let core = Core::open(config, role, clock, &writers.tracker, writers.stop.clone()).await?;

    // In start order; stopped in reverse.
    let mut stages: Vec<Box<dyn Stage>> = Vec::new();
    stages.push(Box::new(stages::background(&core, metrics.clone()).await?));
    if let Some(d) = Dispatch::start(&core).await? {
        stages.push(Box::new(d));
    }
    let servers = Servers::start(&core, listeners, tls, &writers, metrics)?;
    stages.push(Box::new(writers));
    stages.push(Box::new(servers));
    core.readiness.ready();
    tracing::info!(role = ?role, "estafeta ready");

    shutdown.cancelled().await;
    for stage in stages.into_iter().rev() {
        tracing::info!("shutting down: {}", stage.name());
        stage.stop().await;
    }
    core.close().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
