//! Builds the components from a [`Config`] and runs them until shutdown, in order.
//!
//! Start: keys → Redis (and its durability check) → config tenants, targets and monitors →
//! consumer groups → auth, target, source and monitor caches and their invalidation
//! subscription → dispatcher, monitor checker and retention (roles `all`, `dispatcher`) →
//! enqueuer → listeners → ready.
//!
//! Shutdown: not ready → listeners stop accepting and drain in-flight requests (bounded by
//! `edge.shutdown_grace_ms`) → the enqueuer finishes the batches it holds (each in-flight
//! request already has its answer) → the dispatcher stops reading and finishes in-flight
//! deliveries (bounded; what is left stays pending in Redis) → background tasks stop → Redis
//! connections close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::auth::{Auth, Invalidations};
use crate::body::BodyLimits;
use crate::config::Config;
use crate::crypto::Keys;
use crate::dispatch::{Dispatcher, Settings as DispatchSettings, TargetCache};
use crate::health::Readiness;
use crate::ingest::{self, EdgeState};
use crate::keyspace::Keyspace;
use crate::listener::{self, HttpLimits, ListenerSpec};
use crate::manage::ManageState;
use crate::monitors::push::{MonitorCache, PushState};
use crate::monitors::state::Watches;
use crate::queue::{Enqueuer, EnqueuerConfig, Retention, ensure_groups};
use crate::redis::RedisSetupError;
use crate::service::HttpService;
use crate::sources::hooks::{HookState, SourceCache};
use crate::store::Store;
use crate::store::deliveries::Deliveries;
use crate::{telemetry, tls};

/// What a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Edge and admin listeners, dispatcher, monitor checker, maintenance.
    All,
    /// Edge and admin listeners only.
    Edge,
    /// Dispatcher, monitor checker and maintenance, with the admin listener for metrics.
    Dispatcher,
}

impl Role {
    fn serves_edge(self) -> bool {
        matches!(self, Role::All | Role::Edge)
    }

    fn runs_background(self) -> bool {
        matches!(self, Role::All | Role::Dispatcher)
    }
}

/// A failure to start; its message is the one line `serve` prints.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr} ({key}): {cause}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        cause: String,
    },
    #[error("cannot apply tenants[{index}] (`{id}`) from the config: {cause}")]
    DeclaredTenant {
        index: usize,
        id: String,
        cause: String,
    },
    #[error("cannot prepare Redis: {0}")]
    Prepare(String),
}

/// The sockets a process serves on, bound before [`run`] so tests can bind port 0.
#[derive(Debug, Default)]
pub struct Listeners {
    pub edge_tls: Option<TcpListener>,
    pub edge_plain: Option<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses that `role` serves.
    pub async fn bind(config: &Config, role: Role) -> Result<Listeners, StartError> {
        async fn bind_one(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
            TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
                key,
                addr,
                cause: e.to_string(),
            })
        }
        let mut out = Listeners::default();
        if role.serves_edge() {
            if let Some(addr) = config.edge.listen {
                out.edge_tls = Some(bind_one("edge.listen", addr).await?);
            }
            if let Some(addr) = config.edge.plain_listen {
                out.edge_plain = Some(bind_one("edge.plain_listen", addr).await?);
            }
        }
        out.admin = Some(bind_one("admin.listen", config.admin.listen).await?);
        Ok(out)
    }
}

/// Runs the gateway until `shutdown` is cancelled, then stops in order.
pub async fn run(
    config: Config,
    role: Role,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let master = config.master_key()?;
    let crypto = Arc::new(Keys::derive(&master));
    let metrics = telemetry::prometheus();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // TLS first: a bad certificate should fail before anything touches Redis.
    let tls_acceptor = match &listeners.edge_tls {
        Some(_) => Some(TlsAcceptor::from(tls::server_config(&config.tls)?)),
        None => None,
    };

    let redis = crate::redis::connect(&config.redis).await?;
    crate::redis::check_durability(&redis, &config.redis).await?;
    let keys = Keyspace::new(&config.redis.prefix);
    let store = Store::new(redis.clone(), keys.clone(), crypto.clone());
    let watches = Watches::new(
        redis.clone(),
        keys.clone(),
        config.monitors.checks_kept,
        config.monitors.incidents_kept,
    );
    for (index, decl) in config.tenants.iter().enumerate() {
        let failed = |e: crate::store::StoreError| StartError::DeclaredTenant {
            index,
            id: decl.id.clone(),
            cause: e.to_string(),
        };
        store.apply_declared_tenant(decl).await.map_err(failed)?;
        for target in &decl.targets {
            store
                .apply_declared_target(&decl.id, &target.id, &target.spec())
                .await
                .map_err(failed)?;
        }
        for monitor in &decl.monitors {
            let applied = store
                .apply_declared_monitor(
                    &decl.id,
                    &monitor.id,
                    &monitor.spec(),
                    monitor.token.as_ref().map(|t| t.expose()),
                )
                .await
                .map_err(failed)?;
            let shard = crate::queue::shard_of(&decl.id, config.queue.shards);
            watches
                .describe(applied.subject(shard))
                .await
                .map_err(failed)?;
        }
    }
    ensure_groups(&redis, &keys, config.queue.shards)
        .await
        .map_err(|e| StartError::Prepare(format!("creating consumer groups: {e}")))?;
    Enqueuer::preload(&redis)
        .await
        .map_err(|e| StartError::Prepare(format!("loading scripts: {e}")))?;
    watches
        .preload()
        .await
        .map_err(|e| StartError::Prepare(format!("loading scripts: {e}")))?;

    let readiness = Readiness::new(redis.clone());
    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let auth = Arc::new(Auth::new(
        store.clone(),
        &config.auth,
        config.edge.default_rate_limit,
        config.queue.shards,
    ));
    // Subscribe before serving: a change made after the first request must reach this cache.
    let subscriber = crate::redis::connect_subscriber(&config.redis).await?;
    let deliveries = Deliveries::new(
        redis.clone(),
        keys.clone(),
        config.queue.retention_hours * 3600,
        config.dispatch.attempts_kept,
    );
    let target_cache = TargetCache::new(store.clone(), Duration::from_secs(30));
    let source_cache = SourceCache::new(store.clone());
    let monitor_cache = MonitorCache::new(store.clone());
    let mut invalidations = Invalidations::new(
        auth.clone(),
        subscriber,
        store.clone(),
        config.redis_command_timeout() + Duration::from_millis(500),
    )
    .with_targets(target_cache.clone())
    .with_sources(source_cache.clone())
    .with_monitors(monitor_cache.clone());
    invalidations
        .subscribe()
        .await
        .map_err(|e| StartError::Prepare(format!("subscribing to invalidations: {e}")))?;
    background.spawn(invalidations.run(stop_background.clone()));
    background.spawn(upkeep(metrics.clone(), stop_background.clone()));
    if role.runs_background() {
        let retention = Retention::new(
            redis.clone(),
            keys.clone(),
            config.queue.shards,
            Duration::from_secs(config.queue.retention_hours * 3600),
            Duration::from_secs(60),
        );
        background.spawn(retention.run(stop_background.clone()));
        background.spawn(crate::monitors::checker::run(
            watches.clone(),
            config.queue.shards,
            Duration::from_millis(config.monitors.check_every_ms),
            stop_background.clone(),
        ));
    }
    let dispatcher = if role.runs_background() {
        Some(
            Dispatcher::start(
                DispatchSettings::from_config(&config),
                &config.redis,
                redis.clone(),
                store.clone(),
                deliveries.clone(),
                target_cache.clone(),
            )
            .await
            .map_err(|e| StartError::Prepare(format!("starting the dispatcher: {e}")))?,
        )
    } else {
        None
    };
    let body_limits = BodyLimits {
        max_bytes: config.edge.max_body_bytes,
        idle: Duration::from_millis(config.edge.body_idle_timeout_ms),
        total: Duration::from_millis(config.edge.body_timeout_ms),
    };
    // Management bodies (JSON documents) are small whatever the event size limit.
    let api_body_limits = BodyLimits {
        max_bytes: 64 * 1024,
        ..body_limits
    };
    let manage = ManageState {
        store: store.clone(),
        deliveries: deliveries.clone(),
        auth: auth.clone(),
        body_limits: api_body_limits,
        allow_private_targets: config.security.allow_private_targets,
        rotation_overlap_ms: config.dispatch.secret_rotation_overlap_ms,
        shards: config.queue.shards,
        watches: watches.clone(),
    };

    let enqueue_tasks = TaskTracker::new();
    let enqueuer = Enqueuer::start(
        redis.clone(),
        &keys,
        EnqueuerConfig {
            max_batch: config.queue.max_batch,
            max_inflight: config.queue.max_inflight_batches,
            capacity: 16 * 1024,
            command_timeout: config.redis_command_timeout(),
            wait_aof: config.redis.wait_aof,
            shards: config.queue.shards,
        },
        &enqueue_tasks,
    );
    let http = HttpLimits {
        header_read_timeout: Duration::from_millis(config.edge.header_read_timeout_ms),
        max_header_bytes: config.edge.max_header_bytes,
        h2_max_concurrent_streams: config.edge.h2_max_concurrent_streams,
        h2_keepalive_interval: (config.edge.h2_keepalive_interval_ms > 0)
            .then(|| Duration::from_millis(config.edge.h2_keepalive_interval_ms)),
    };
    let spec = |name: &'static str, tls: Option<TlsAcceptor>| ListenerSpec {
        name,
        tls,
        tls_handshake_timeout: Duration::from_millis(config.edge.tls_handshake_timeout_ms),
        max_connections: config.edge.max_connections,
        http: http.clone(),
        grace: Duration::from_millis(config.edge.shutdown_grace_ms),
    };

    let servers = TaskTracker::new();
    let stop_listeners = CancellationToken::new();
    {
        let edge_state = EdgeState {
            auth: auth.clone(),
            enqueuer,
            body_limits,
        };
        let hooks = HookState {
            edge: edge_state.clone(),
            store: store.clone(),
            sources: source_cache.clone(),
            redis: redis.clone(),
            watches: watches.clone(),
        };
        let push = PushState {
            auth: auth.clone(),
            store: store.clone(),
            monitors: monitor_cache.clone(),
            watches: watches.clone(),
            body_limits: api_body_limits,
        };
        let edge_router = ingest::router(
            edge_state.clone(),
            manage.clone(),
            hooks,
            push.clone(),
            readiness.clone(),
        );
        if let Some(l) = listeners.edge_tls {
            let service = HttpService::edge(
                "edge_tls",
                edge_state.clone(),
                push.clone(),
                edge_router.clone(),
            );
            servers.spawn(listener::serve(
                l,
                spec("edge_tls", tls_acceptor),
                service,
                stop_listeners.clone(),
            ));
        }
        if let Some(l) = listeners.edge_plain {
            let service = HttpService::edge(
                "edge_plain",
                edge_state.clone(),
                push.clone(),
                edge_router.clone(),
            );
            servers.spawn(listener::serve(
                l,
                spec("edge_plain", None),
                service,
                stop_listeners.clone(),
            ));
        }
        if let Some(l) = listeners.admin {
            let state = AdminState {
                store: store.clone(),
                auth: auth.clone(),
                body_limits: api_body_limits,
                watches: watches.clone(),
                shards: config.queue.shards,
            };
            let router = admin::router(
                state,
                manage.clone(),
                config.admin.token.clone(),
                readiness.clone(),
                metrics,
            );
            let service = HttpService::routed("admin", router);
            servers.spawn(listener::serve(
                l,
                spec("admin", None),
                service,
                stop_listeners.clone(),
            ));
        }
        // `edge_state` (and with it this scope's enqueuer handle) drops here: once the servers
        // stop, no handle is left and the enqueuer's collector ends.
    }
    servers.close();
    readiness.set_ready(true);
    tracing::info!(role = ?role, "estafeta ready");

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining in-flight requests");
    readiness.set_ready(false);
    stop_listeners.cancel();
    servers.wait().await;
    enqueue_tasks.close();
    enqueue_tasks.wait().await;
    if let Some(d) = dispatcher {
        tracing::info!("shutting down: finishing in-flight deliveries");
        d.shutdown(Duration::from_millis(config.edge.shutdown_grace_ms))
            .await;
    }
    stop_background.cancel();
    background.close();
    background.wait().await;
    let _ = fred::interfaces::ClientLike::quit(&redis).await;
    tracing::info!("stopped cleanly");
    Ok(())
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
