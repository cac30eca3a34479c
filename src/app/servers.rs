//! The listeners and what they serve: the states of the APIs, the console and the portal
//! built from the [`Core`], the edge's enqueue batcher (on the writers' tasks), and one
//! server task per bound listener. Stopping them says "not ready", stops accepting and drains
//! in-flight requests within `edge.shutdown_grace_ms`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::core::Core;
use super::process::{Listeners, StartError};
use super::stages::{Stage, Tasks};
use crate::api::health::Readiness;
use crate::api::{self, ApiState, EdgeParts};
use crate::config::Config;
use crate::edge::listener::{self, HttpLimits, ListenerSpec};
use crate::edge::service::HttpService;
use crate::history::History;
use crate::http::body::BodyLimits;
use crate::ingest::IngestState;
use crate::ingest::heartbeats::HeartbeatState;
use crate::queue::{Enqueuer, EnqueuerConfig};
use crate::sources::hooks::HookState;
use crate::web;

/// The running listeners.
pub struct Servers {
    tracker: TaskTracker,
    stop: CancellationToken,
    readiness: Arc<Readiness>,
}

impl Stage for Servers {
    fn name(&self) -> &'static str {
        "in-flight requests"
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.readiness.drain();
            self.stop.cancel();
            self.tracker.close();
            self.tracker.wait().await;
        })
    }
}

/// The bounds of event bodies (the edge's) and of management bodies (JSON documents, small
/// whatever the event size limit).
fn body_limits(config: &Config) -> (BodyLimits, BodyLimits) {
    let events = BodyLimits {
        max_bytes: config.edge.max_body_bytes,
        idle: Duration::from_millis(config.edge.body_idle_timeout_ms),
        total: Duration::from_millis(config.edge.body_timeout_ms),
    };
    let documents = BodyLimits {
        max_bytes: 64 * 1024,
        ..events
    };
    (events, documents)
}

/// What the management handlers (and the pages through them) act on.
fn api_state(
    core: &Core,
    listeners: &Listeners,
    limits: BodyLimits,
) -> Result<ApiState, StartError> {
    let config = &core.config;
    Ok(ApiState {
        store: core.store.clone(),
        deliveries: core.deliveries.clone(),
        history: History {
            deliveries: core.deliveries.clone(),
            redis: core.redis.clone(),
            log: core.log.clone(),
        },
        auth: core.auth.clone(),
        watches: core.watches.clone(),
        sandbox: core.sandbox.clone(),
        body_limits: limits,
        allow_private_targets: config.security.allow_private_targets,
        rotation_overlap_ms: config.dispatch.secret_rotation_overlap_ms,
        shards: config.queue.shards,
        portal_links: portal_link_settings(config, listeners),
        system: Arc::new(api::scope::SystemFacts {
            config_toml: config.to_redacted_toml()?,
            wait_aof: config.redis.wait_aof,
            readiness: core.readiness.clone(),
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
    })
}

fn web_state(core: &Core, api: &ApiState) -> web::WebState {
    let config = &core.config;
    web::WebState {
        admin_token: config.admin.token.clone(),
        core: api.clone(),
        sessions: web::Sessions::new(
            core.redis.clone(),
            core.keys.clone(),
            core.crypto.clone(),
            config.web.session_idle_s,
            config.web.session_max_s,
            core.clock.clone(),
        ),
        store: core.store.clone(),
        auth: core.auth.clone(),
        settings: Arc::new(web::WebSettings::new(&config.web)),
        throttle: web::SignInThrottle::new(
            core.redis.clone(),
            core.keys.clone(),
            core.crypto.clone(),
            config.web.signin_failures_per_minute,
        ),
    }
}

impl Servers {
    /// Serves every bound listener; the edge's enqueue batcher runs on `writers`, which stop
    /// after these servers, so every accepted request's event is written first.
    pub fn start(
        core: &Core,
        listeners: Listeners,
        tls: Option<TlsAcceptor>,
        writers: &Tasks,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
    ) -> Result<Servers, StartError> {
        let config = &core.config;
        let (event_limits, document_limits) = body_limits(config);
        let api_state = api_state(core, &listeners, document_limits)?;
        let web_state = web_state(core, &api_state);
        let enqueuer = Enqueuer::start(
            core.redis.clone(),
            &core.keys,
            EnqueuerConfig {
                max_batch: config.queue.max_batch,
                max_inflight: config.queue.max_inflight_batches,
                capacity: 16 * 1024,
                command_timeout: config.redis_command_timeout(),
                wait_aof: config.redis.wait_aof,
                shards: config.queue.shards,
            },
            &writers.tracker,
            writers.stop.clone(),
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
        let servers = Servers {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            readiness: core.readiness.clone(),
        };
        let ingest = IngestState {
            auth: core.auth.clone(),
            catalogues: core.catalogues.clone(),
            enqueuer,
            body_limits: event_limits,
        };
        let heartbeats = HeartbeatState {
            auth: core.auth.clone(),
            store: core.store.clone(),
            monitors: core.monitor_cache.clone(),
            watches: core.watches.clone(),
            body_limits: document_limits,
            mapped_limits: event_limits,
            sandbox: core.sandbox.clone(),
        };
        let edge_router = api::edge(EdgeParts {
            api: api_state.clone(),
            ingest: ingest.clone(),
            hooks: HookState {
                ingest: ingest.clone(),
                store: core.store.clone(),
                sources: core.source_cache.clone(),
                redis: core.redis.clone(),
                watches: core.watches.clone(),
                trusted_proxies: config.web.proxies().unwrap_or_default().into(),
                // An enqueue's longest wait (a Redis command), twice, and a second more.
                claim_for: config.redis_command_timeout() * 2 + std::time::Duration::from_secs(1),
            },
            heartbeats: heartbeats.clone(),
            readiness: core.readiness.clone(),
            portal: web::portal(web_state.clone()),
        });
        for (name, l, tls) in [
            ("edge_tls", listeners.edge_tls, tls),
            ("edge_plain", listeners.edge_plain, None),
        ] {
            if let Some(l) = l {
                let service = HttpService::edge(
                    name,
                    ingest.clone(),
                    heartbeats.clone(),
                    edge_router.clone(),
                );
                servers.tracker.spawn(listener::serve(
                    l,
                    spec(name, tls),
                    service,
                    servers.stop.clone(),
                ));
            }
        }
        if let Some(l) = listeners.admin {
            let router = api::admin(
                web::console(web_state),
                api_state,
                config.admin.token.clone(),
                core.readiness.clone(),
                metrics,
                Arc::new(api::doc::document_json(api::doc::Deployed {
                    portal_link_max_ttl_s: config.web.portal_link_max_ttl_s,
                })),
            );
            servers.tracker.spawn(listener::serve(
                l,
                spec("admin", None),
                HttpService::routed("admin", router),
                servers.stop.clone(),
            ));
        }
        // The handles held here drop now: once the servers stop, nothing submits to the
        // batchers but the dispatcher's own.
        drop((ingest, heartbeats, edge_router));
        servers.tracker.close();
        Ok(servers)
    }
}

/// How portal links are issued: under `web.public_url`, else under the edge listener this
/// process bound (TLS preferred), else the configured one (a dispatcher-only process).
fn portal_link_settings(config: &Config, listeners: &Listeners) -> api::PortalLinkSettings {
    let bound = |l: &Option<tokio::net::TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
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
