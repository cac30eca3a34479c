//! The core every stage starts from: keys, the Redis connection (its durability checked, the
//! scripts loaded), the store and its one-time upgrades, the tenants the config declares, the
//! consumer groups, the log store, readiness, and the caches the edge and dispatcher read
//! through. Opening it starts no task but the writers' batchers (see [`super::stages`]).

use std::sync::Arc;
use std::time::Duration;

use crate::api::health::{LogStoreHealth, Readiness};
use crate::auth::Auth;
use crate::config::{CacheConfig, Config};
use crate::crypto::Keys;
use crate::dispatch::targets::TargetCache;
use crate::ingest::catalogue::Catalogues;
use crate::ingest::heartbeats::MonitorCache;
use crate::log_store::LogStore;
use crate::log_store::shipper::ShipperStatus;
use crate::model::Origin;
use crate::model::time::Clock;
use crate::monitors::state::{Subject, WatchSettings, Watches};
use crate::queue::ensure_groups;
use crate::redis::cache::CacheSettings;
use crate::redis::keyspace::{Keyspace, shard_of};
use crate::sandbox::{Sandbox, SandboxSettings};
use crate::sources::cache::SourceCache;
use crate::store::{Deliveries, Store, StoreError};

use super::process::{Role, StartError};

/// What every stage shares. Cheap handles: clone what a stage keeps.
#[derive(Debug)]
pub struct Core {
    pub config: Config,
    pub role: Role,
    pub crypto: Arc<Keys>,
    pub redis: fred::prelude::Client,
    pub keys: Keyspace,
    pub store: Store,
    pub deliveries: Deliveries,
    /// Live state of monitors and watched sources; its signal batcher runs on the writers.
    pub watches: Watches,
    pub log: Option<LogStore>,
    /// The shipper's progress, when this process ships to a log store.
    pub shipper_status: Option<Arc<ShipperStatus>>,
    pub readiness: Arc<Readiness>,
    pub auth: Arc<Auth>,
    pub target_cache: TargetCache,
    pub source_cache: SourceCache,
    pub monitor_cache: MonitorCache,
    /// Each tenant's event catalogue, for ingest.
    pub catalogues: Catalogues,
    /// The worker processes that run jq programs (transformations, status maps).
    pub sandbox: Sandbox,
    /// The time every stage decides by.
    pub clock: Clock,
}

impl Core {
    /// Opens everything in order: Redis (durability checked, scripts loaded) → one-time
    /// upgrades of the store → the declared tenants → consumer groups → the log store. The
    /// monitors' signal batcher is spawned on `writers`, and stops with `stop_writers`.
    pub async fn open(
        config: Config,
        role: Role,
        clock: Clock,
        writers: &tokio_util::task::TaskTracker,
        stop_writers: tokio_util::sync::CancellationToken,
    ) -> Result<Core, StartError> {
        let master = config.master_key()?;
        let crypto = Arc::new(Keys::derive(&master));
        let redis = crate::redis::connection::connect(&config.redis).await?;
        crate::redis::connection::check_durability(&redis, &config.redis).await?;
        crate::redis::scripts::preload(&redis)
            .await
            .map_err(StartError::prepare("loading scripts"))?;
        let keys = Keyspace::new(&config.redis.prefix);
        let store =
            Store::new(redis.clone(), keys.clone(), crypto.clone()).with_clock(clock.clone());
        let watches = Watches::new(
            redis.clone(),
            keys.clone(),
            WatchSettings {
                checks_kept: config.monitors.checks_kept,
                incidents_kept: config.monitors.incidents_kept,
                deadline: config.redis_command_timeout(),
                logged: config.log_store.is_some(),
                clock: clock.clone(),
            },
            writers,
            stop_writers,
        );
        upgrade(&config, &store, &watches).await?;
        let sandbox = Sandbox::new(sandbox_settings(&config)?);
        apply_declared(&config, &store, &watches, &sandbox).await?;
        ensure_groups(&redis, &keys, config.queue.shards)
            .await
            .map_err(StartError::prepare("creating consumer groups"))?;
        let log = open_log_store(&config, &redis, &keys)
            .await?
            .map(|log| log.with_clock(clock.clone()));
        let shipper_status =
            (log.is_some() && role.runs_background()).then(|| Arc::new(ShipperStatus::default()));
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
        let auth = Arc::new(Auth::new(
            store.clone(),
            &config.auth,
            config.edge.default_rate_limit,
            config.queue.shards,
        ));
        let deliveries = Deliveries::new(
            redis.clone(),
            keys.clone(),
            config.queue.retention_hours * 3600,
            config.dispatch.attempts_kept,
            log.is_some(),
        )
        .with_clock(clock.clone());
        Ok(Core {
            target_cache: TargetCache::new(store.clone(), cache_settings(&config.caches.targets)),
            source_cache: SourceCache::new(store.clone(), cache_settings(&config.caches.sources)),
            monitor_cache: MonitorCache::new(
                store.clone(),
                cache_settings(&config.caches.monitors),
            ),
            catalogues: Catalogues::new(store.clone(), cache_settings(&config.caches.catalogue)),
            sandbox,
            config,
            role,
            crypto,
            redis,
            keys,
            store,
            deliveries,
            watches,
            log,
            shipper_status,
            readiness,
            auth,
            clock,
        })
    }

    /// Closes the Redis connection, once every stage has stopped.
    pub async fn close(self) {
        let _ = fred::interfaces::ClientLike::quit(&self.redis).await;
    }
}

/// The store's one-time upgrades, each a no-op once done: external ids indexed in their
/// normalised form, the index of unwell monitors and sources built.
async fn upgrade(config: &Config, store: &Store, watches: &Watches) -> Result<(), StartError> {
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
    match watches.index_unwell(store, config.queue.shards).await {
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
    Ok(())
}

/// The log store, when the config has one (migrated, its partitions made); says at start
/// which store holds what.
async fn open_log_store(
    config: &Config,
    redis: &fred::prelude::Client,
    keys: &Keyspace,
) -> Result<Option<LogStore>, StartError> {
    let Some(ls) = &config.log_store else {
        tracing::info!(
            retention_hours = config.queue.retention_hours,
            "storage: Redis holds everything (no [log_store]): events, deliveries and attempts for queue.retention_hours"
        );
        project_memory(config, redis, keys).await;
        return Ok(None);
    };
    let url = ls.url.expose();
    let retention = Duration::from_secs(config.queue.retention_hours * 3600);
    let store = LogStore::open(url, retention)
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
    Ok(Some(store))
}

fn cache_settings(c: &CacheConfig) -> CacheSettings {
    CacheSettings {
        capacity: c.capacity,
        ttl: Duration::from_millis(c.ttl_ms),
        negative_ttl: Duration::from_millis(c.negative_ttl_ms),
    }
}

/// Makes the store match the tenants, targets and monitors the config declares.
/// How the jq sandbox runs: the workers are this executable unless the config names one.
fn sandbox_settings(config: &Config) -> Result<SandboxSettings, StartError> {
    let t = &config.transform;
    let executable = match &t.executable {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| StartError::Prepare {
            what: "finding the executable for jq workers (set transform.executable)",
            cause: Box::new(e),
        })?,
    };
    Ok(SandboxSettings {
        executable,
        workers: t.workers,
        timeout: Duration::from_millis(t.timeout_ms),
        compile_timeout: Duration::from_millis(t.timeout_ms.max(2_000)),
        memory_mb: t.memory_mb,
        max_output_bytes: t.max_output_bytes,
    })
}

async fn apply_declared(
    config: &Config,
    store: &Store,
    watches: &Watches,
    sandbox: &Sandbox,
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
            if let Some(t) = &target.transform {
                sandbox.check(t.program.as_str()).await.map_err(|e| {
                    failed(format!("target {}: transform.program: {e}", target.id).into())
                })?;
            }
            store
                .apply_declared_target(&decl.id, &target.id, &target.spec())
                .await
                .map_err(store_failed)?;
        }
        for event_type in &decl.event_types {
            store
                .put_event_type(
                    &decl.id,
                    &event_type.name,
                    &event_type.spec(),
                    Origin::Config,
                )
                .await
                .map_err(store_failed)?;
        }
        for monitor in &decl.monitors {
            if let Some(map) = &monitor.status_map {
                sandbox.check(map.as_str()).await.map_err(|e| {
                    failed(format!("monitor {}: status_map: {e}", monitor.id).into())
                })?;
            }
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
