//! Builds the components from a [`Config`] and runs them until shutdown, in order.
//!
//! Start: keys → Redis (and its durability check) → scripts → config tenants, targets and
//! monitors → consumer groups → caches, registered with the invalidation listener, which
//! subscribes before anything serves → dispatcher, monitor checker and retention (roles
//! `all`, `dispatcher`) → the batchers of the edge's writes → listeners → ready.
//!
//! Shutdown: not ready → listeners stop accepting and drain in-flight requests (bounded by
//! `edge.shutdown_grace_ms`) → the batchers write what they hold (each in-flight request
//! already has its answer) → the dispatcher stops reading and finishes in-flight deliveries
//! (bounded; what is left stays pending in Redis) → background tasks stop → Redis connections
//! close. Every task runs on one of the trackers here and is waited for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::health::{LogStoreHealth, Readiness};
use crate::api::{self, ApiState, EdgeParts};
use crate::auth::Auth;
use crate::config::{CacheConfig, Config};
use crate::crypto::Keys;
use crate::dispatch::targets::TargetCache;
use crate::dispatch::{Dispatcher, Settings as DispatchSettings};
use crate::edge::listener::{self, HttpLimits, ListenerSpec};
use crate::edge::service::HttpService;
use crate::edge::tls;
use crate::history::History;
use crate::http::body::BodyLimits;
use crate::ingest::IngestState;
use crate::ingest::heartbeats::{HeartbeatState, MonitorCache};
use crate::log_store::LogStore;
use crate::log_store::shipper::Shipper;
use crate::monitors::state::{Subject, WatchSettings, Watches};
use crate::queue::{Enqueuer, EnqueuerConfig, Retention, ensure_groups};
use crate::redis::cache::CacheSettings;
use crate::redis::connection::RedisSetupError;
use crate::redis::invalidation::Listener;
use crate::redis::keyspace::{Keyspace, shard_of};
use crate::sources::cache::SourceCache;
use crate::sources::hooks::HookState;
use crate::store::{Deliveries, Store, StoreError};
use crate::telemetry;
use crate::web;

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
        cause: std::io::Error,
    },
    #[error("cannot apply tenants[{index}] (`{id}`) from the config: {cause}")]
    DeclaredTenant {
        index: usize,
        id: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot use the log store at {url}: {cause}")]
    LogStore {
        url: String,
        cause: crate::log_store::LogStoreError,
    },
    #[error("cannot prepare Redis: {what}: {cause}")]
    Prepare {
        what: &'static str,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartError {
    fn prepare(what: &'static str) -> impl FnOnce(fred::error::Error) -> StartError {
        move |e| StartError::Prepare {
            what,
            cause: Box::new(e),
        }
    }
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
            TcpListener::bind(addr)
                .await
                .map_err(|cause| StartError::Bind { key, addr, cause })
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

/// How portal links are issued: under `web.public_url`, else under the edge listener this
/// process bound (TLS preferred), else the configured one (a dispatcher-only process).
fn portal_link_settings(config: &Config, listeners: &Listeners) -> api::PortalLinkSettings {
    let bound = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let edge = bound(&listeners.edge_tls)
        .or(config.edge.listen)
        .map(|a| ("https", a))
        .or_else(|| {
            bound(&listeners.edge_plain)
                .or(config.edge.plain_listen)
                .map(|a| ("http", a))
        });
    let settings = api::PortalLinkSettings {
        public_url: config
            .web
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned()),
        edge,
        max_ttl_s: config.web.portal_link_max_ttl_s,
        single_use: config.web.portal_link_single_use,
    };
    if settings.public_url.is_none() {
        tracing::warn!(
            base = %settings.base(None),
            "web.public_url is not set: portal links are built from the edge listener; set it \
             when clients reach the edge through a proxy or a load balancer"
        );
    }
    settings
}

fn cache_settings(c: &CacheConfig) -> CacheSettings {
    CacheSettings {
        capacity: c.capacity,
        ttl: Duration::from_millis(c.ttl_ms),
        negative_ttl: Duration::from_millis(c.negative_ttl_ms),
    }
}

/// Makes the store match the tenants, targets and monitors the config declares.
async fn apply_declared(
    config: &Config,
    store: &Store,
    watches: &Watches,
) -> Result<(), StartError> {
    for (index, decl) in config.tenants.iter().enumerate() {
        let failed = |cause: Box<dyn std::error::Error + Send + Sync>| StartError::DeclaredTenant {
            index,
            id: decl.id.to_string(),
            cause,
        };
        let store_failed = |e: StoreError| failed(Box::new(e));
        let tokens: Vec<&str> = decl.all_tokens().map(|s| s.expose()).collect();
        store
            .apply_declared_tenant(&decl.id, &decl.spec(), &tokens)
            .await
            .map_err(store_failed)?;
        for target in &decl.targets {
            store
                .apply_declared_target(&decl.id, &target.id, &target.spec())
                .await
                .map_err(store_failed)?;
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
                .map_err(store_failed)?;
            let shard = shard_of(&decl.id, config.queue.shards);
            watches
                .describe(Subject::monitor(&applied, shard))
                .await
                .map_err(|e| failed(Box::new(e)))?;
        }
    }
    Ok(())
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

    let redis = crate::redis::connection::connect(&config.redis).await?;
    crate::redis::connection::check_durability(&redis, &config.redis).await?;
    crate::redis::scripts::preload(&redis)
        .await
        .map_err(StartError::prepare("loading scripts"))?;
    let keys = Keyspace::new(&config.redis.prefix);
    let store = Store::new(redis.clone(), keys.clone(), crypto.clone());

    // Writes of the edge (events, monitor signals) are batched; their batchers stop after
    // the listeners, and write what they hold first.
    let writers = TaskTracker::new();
    let stop_writers = CancellationToken::new();
    let watches = Watches::new(
        redis.clone(),
        keys.clone(),
        WatchSettings {
            checks_kept: config.monitors.checks_kept,
            incidents_kept: config.monitors.incidents_kept,
            deadline: config.redis_command_timeout(),
            logged: config.log_store.is_some(),
        },
        &writers,
        stop_writers.clone(),
    );
    match store.index_external_ids_normalised().await {
        Ok((0, 0)) => {}
        Ok((moved, clashes)) => {
            tracing::info!(
                moved,
                clashes,
                "tenants' external ids indexed in their normalised form"
            )
        }
        Err(e) => {
            return Err(StartError::Prepare {
                what: "indexing external ids",
                cause: Box::new(e),
            });
        }
    }
    match watches.index_unwell(&store, config.queue.shards).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            subjects = n,
            "monitors and sources that are down or degraded indexed for the console"
        ),
        Err(e) => {
            return Err(StartError::Prepare {
                what: "indexing unwell monitors",
                cause: Box::new(e),
            });
        }
    }
    apply_declared(&config, &store, &watches).await?;
    ensure_groups(&redis, &keys, config.queue.shards)
        .await
        .map_err(StartError::prepare("creating consumer groups"))?;

    let log = match &config.log_store {
        Some(ls) => {
            let url = ls.url.expose();
            let retention = Duration::from_secs(config.queue.retention_hours * 3600);
            let store =
                LogStore::open(url, retention)
                    .await
                    .map_err(|cause| StartError::LogStore {
                        url: crate::log_store::redact_url(url),
                        cause,
                    })?;
            tracing::info!(
                log_store = %store.shown_url(),
                hot_window_s = config.queue.hot_window_s,
                retention_hours = config.queue.retention_hours,
                "storage: Redis holds the queue, unfinished deliveries, the retry schedule, the error-queue index, monitor state and finished events for queue.hot_window_s; PostgreSQL holds the event log for queue.retention_hours"
            );
            Some(store)
        }
        None => {
            tracing::info!(
                retention_hours = config.queue.retention_hours,
                "storage: Redis holds everything (no [log_store]): events, deliveries and attempts for queue.retention_hours"
            );
            project_memory(&config, &redis, &keys).await;
            None
        }
    };
    let shipper_status = (log.is_some() && role.runs_background())
        .then(|| Arc::new(crate::log_store::shipper::ShipperStatus::default()));
    let readiness = Readiness::new(
        redis.clone(),
        keys.readiness_probe(),
        log.clone().map(|store| LogStoreHealth {
            store,
            shipper: shipper_status.clone(),
            behind_after: Duration::from_secs(60)
                .max(Duration::from_secs(config.queue.hot_window_s)),
        }),
    );
    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    let auth = Arc::new(Auth::new(
        store.clone(),
        &config.auth,
        config.edge.default_rate_limit,
        config.queue.shards,
    ));
    let target_cache = TargetCache::new(store.clone(), cache_settings(&config.caches.targets));
    let source_cache = SourceCache::new(store.clone(), cache_settings(&config.caches.sources));
    let monitor_cache = MonitorCache::new(store.clone(), cache_settings(&config.caches.monitors));
    // Subscribe before serving: a change made after the first request must reach the caches.
    let subscriber = crate::redis::connection::connect_subscriber(&config.redis).await?;
    let mut invalidations = Listener::new(
        subscriber,
        store.publisher().clone(),
        config.redis_command_timeout() + Duration::from_millis(500),
    );
    invalidations.register(auth.clone());
    invalidations.register(Arc::new(target_cache.clone()));
    invalidations.register(Arc::new(source_cache.clone()));
    invalidations.register(Arc::new(monitor_cache.clone()));
    invalidations
        .subscribe()
        .await
        .map_err(StartError::prepare("subscribing to invalidations"))?;
    background.spawn(invalidations.run(stop_background.clone()));
    background.spawn(upkeep(metrics.clone(), stop_background.clone()));
    let deliveries = Deliveries::new(
        redis.clone(),
        keys.clone(),
        config.queue.retention_hours * 3600,
        config.dispatch.attempts_kept,
        log.is_some(),
    );
    let hot_window = Duration::from_secs(config.queue.hot_window_s);
    if role.runs_background() {
        let stream_age = match &log {
            Some(_) => hot_window,
            None => Duration::from_secs(config.queue.retention_hours * 3600),
        };
        let retention = Retention::new(
            redis.clone(),
            keys.clone(),
            config.queue.shards,
            stream_age,
            Duration::from_secs(60).min(hot_window),
            log.is_some(),
        );
        background.spawn(retention.run(stop_background.clone()));
        if let (Some(store), Some(status)) = (&log, &shipper_status) {
            // A record must outlive the reclaim of an entry whose consumer died between
            // recording the outcome and acking it, or the reclaim would expand it again.
            let record_lifetime =
                hot_window.max(Duration::from_millis(2 * config.dispatch.reclaim_idle_ms));
            let shipper = Shipper {
                log: store.clone(),
                deliveries: deliveries.clone(),
                redis: redis.clone(),
                shards: config.queue.shards,
                hot_window: record_lifetime,
                idle: Duration::from_millis(500),
                status: status.clone(),
                holder: crate::model::ids::generate("shipper"),
            };
            background.spawn(shipper.run(stop_background.clone()));
            background.spawn(crate::log_store::maintenance(
                store.clone(),
                Duration::from_secs(3600),
                stop_background.clone(),
            ));
        }
        background.spawn(crate::store::rollup::run(
            store.clone(),
            config.queue.shards,
            stop_background.clone(),
        ));
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
            .map_err(|e| StartError::Prepare {
                what: "starting the dispatcher",
                cause: Box::new(e),
            })?,
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
    let api_state = ApiState {
        store: store.clone(),
        deliveries: deliveries.clone(),
        history: History {
            deliveries: deliveries.clone(),
            redis: redis.clone(),
            log: log.clone(),
        },
        auth: auth.clone(),
        watches: watches.clone(),
        body_limits: api_body_limits,
        allow_private_targets: config.security.allow_private_targets,
        rotation_overlap_ms: config.dispatch.secret_rotation_overlap_ms,
        shards: config.queue.shards,
        portal_links: portal_link_settings(&config, &listeners),
        system: Arc::new(api::scope::SystemFacts {
            config_toml: config.to_redacted_toml()?,
            wait_aof: config.redis.wait_aof,
            readiness: readiness.clone(),
        }),
        client: crate::dispatch::client::DeliveryClient::new(
            Duration::from_millis(config.dispatch.request_timeout_ms),
            config.security.allow_private_targets,
            1,
        )
        .map_err(|cause| StartError::Prepare {
            what: "building the test-delivery client",
            cause: Box::new(cause),
        })?,
    };
    let web_state = web::WebState {
        admin_token: config.admin.token.clone(),
        core: api_state.clone(),
        sessions: web::Sessions::new(
            redis.clone(),
            keys.clone(),
            crypto.clone(),
            config.web.session_idle_s,
            config.web.session_max_s,
        ),
        store: store.clone(),
        auth: auth.clone(),
        settings: Arc::new(web::WebSettings::new(&config.web)),
        throttle: web::SignInThrottle::new(
            redis.clone(),
            keys.clone(),
            crypto.clone(),
            config.web.signin_failures_per_minute,
        ),
    };
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
        &writers,
        stop_writers.clone(),
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
    let ingest = IngestState {
        auth: auth.clone(),
        enqueuer,
        body_limits,
    };
    let heartbeats = HeartbeatState {
        auth: auth.clone(),
        store: store.clone(),
        monitors: monitor_cache,
        watches: watches.clone(),
        body_limits: api_body_limits,
    };
    let edge_router = api::edge(EdgeParts {
        api: api_state.clone(),
        ingest: ingest.clone(),
        hooks: HookState {
            ingest: ingest.clone(),
            store: store.clone(),
            sources: source_cache,
            redis: redis.clone(),
            watches: watches.clone(),
            trusted_proxies: config.web.proxies().unwrap_or_default().into(),
        },
        heartbeats: heartbeats.clone(),
        readiness: readiness.clone(),
        portal: web::portal(web_state.clone()),
    });
    for (name, l, tls) in [
        ("edge_tls", listeners.edge_tls, tls_acceptor),
        ("edge_plain", listeners.edge_plain, None),
    ] {
        if let Some(l) = l {
            let service = HttpService::edge(
                name,
                ingest.clone(),
                heartbeats.clone(),
                edge_router.clone(),
            );
            servers.spawn(listener::serve(
                l,
                spec(name, tls),
                service,
                stop_listeners.clone(),
            ));
        }
    }
    if let Some(l) = listeners.admin {
        let router = api::admin(
            web::console(web_state),
            api_state,
            config.admin.token.clone(),
            readiness.clone(),
            metrics,
            Arc::new(api::doc::document_json(api::doc::Deployed {
                portal_link_max_ttl_s: config.web.portal_link_max_ttl_s,
            })),
        );
        servers.spawn(listener::serve(
            l,
            spec("admin", None),
            HttpService::routed("admin", router),
            stop_listeners.clone(),
        ));
    }
    // The handles this scope holds drop here: once the servers stop, nothing submits to the
    // batchers but the dispatcher's own.
    drop((ingest, heartbeats, edge_router));
    servers.close();
    readiness.ready();
    tracing::info!(role = ?role, "estafeta ready");

    shutdown.cancelled().await;
    tracing::info!("shutting down: draining in-flight requests");
    readiness.drain();
    stop_listeners.cancel();
    servers.wait().await;
    stop_writers.cancel();
    writers.close();
    writers.wait().await;
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

/// Says what the retention will cost Redis when Redis holds everything, and warns when that
/// exceeds what Redis may use.
async fn project_memory(config: &Config, redis: &fred::prelude::Client, keys: &Keyspace) {
    use crate::queue::sizing::{self, human_bytes};
    let retention = Duration::from_secs(config.queue.retention_hours * 3600);
    let projection = sizing::project(
        redis,
        keys,
        config.queue.shards,
        retention,
        config.queue.expected_events_per_s,
    )
    .await;
    let p = match projection {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "cannot project Redis memory");
            return;
        }
    };
    let basis = if p.stated {
        "queue.expected_events_per_s"
    } else {
        "the rate observed in the streams"
    };
    let limit = if p.limit_is_maxmemory {
        "maxmemory"
    } else {
        "the host's memory"
    };
    let line = format!(
        "projected Redis memory for {} h of retention at {:.1} events/s ({basis}): {} (about {} bytes per event); {limit}: {}",
        config.queue.retention_hours,
        p.rate,
        human_bytes(p.projected_bytes),
        sizing::BYTES_PER_EVENT,
        if p.limit_bytes > 0 {
            human_bytes(p.limit_bytes)
        } else {
            "unknown".into()
        },
    );
    if p.exceeds_limit() {
        tracing::warn!(
            "{line}: more than Redis may use; configure a [log_store], lower queue.retention_hours, or give Redis more memory"
        );
    } else {
        tracing::info!("{line}");
    }
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
