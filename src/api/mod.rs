//! The HTTP APIs: the admin API (operators), the tenant API (each tenant for itself), the
//! routers that serve them with the ingest routes, and their OpenAPI description, derived from
//! the handlers' annotations ([`doc`]).
//!
//! Tenant resources (targets, the error queue, event views, counters, sources, monitors) are
//! served by one set of handlers mounted twice: under `/admin/tenants/{id}` (admin token; the
//! tenant is in the path) and under `/v1` (the tenant's own bearer token). [`TenantScope`]
//! resolves which tenant a request acts for, so a tenant can only ever name its own resources:
//! every lookup is keyed by that tenant.
//!
//! | module | routes |
//! | --- | --- |
//! | [`tenants`] | `/admin/tenants…`, `…/tokens…` (admin only) |
//! | [`targets`] | `…/targets`, `…/targets/{target_id}`, `…/rotate-secret` |
//! | [`dead_letters`] | `…/dead-letters`, `…/dead-letters/replay`, `…/dead-letters/{dl_id}` |
//! | [`events`] | `…/events/{event}` (delivery view), `…/stats` |
//! | [`sources`] | `…/sources…`, and their incident and check history |
//! | [`monitors`] | `…/monitors…`, and their incident and check history |
//! | [`health`] | `/healthz`, `/readyz` (every listener) |
//! | [`system`] | `/metrics`, `/openapi.json` (admin listener) |

pub mod dead_letters;
pub mod doc;
pub mod events;
pub mod health;
pub mod monitors;
pub mod sources;
pub mod system;
pub mod targets;
pub mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::AUTHORIZATION;
use http::request::Parts;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Auth, bearer_token};
use crate::body::BodyLimits;
use crate::config::Secret;
use crate::crypto::secrets_equal;
use crate::edge::observe;
use crate::error::ApiError;
use crate::extract::BodyLimited;
use crate::ingest::IngestState;
use crate::ingest::heartbeats::{self, HeartbeatState};
use crate::ingest::hooks::{self, HookState};
use crate::keyspace::shard_of;
use crate::model::TenantId;
use crate::monitors::state::Watches;
use crate::store::{Deliveries, Store};
use health::Readiness;

/// What the management handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub deliveries: Deliveries,
    /// This instance's auth cache, dropped at once after changes made here (other instances
    /// hear of them by invalidation).
    pub auth: Arc<Auth>,
    /// Live state of monitors and watched sources.
    pub watches: Watches,
    /// Bounds of management bodies.
    pub body_limits: BodyLimits,
    pub allow_private_targets: bool,
    /// How long a rotated target secret keeps signing, when the request does not say.
    pub rotation_overlap_ms: u64,
    pub shards: u16,
}

impl BodyLimited for ApiState {
    fn body_limits(&self) -> &BodyLimits {
        &self.body_limits
    }
}

/// Set by the admin router's auth layer: the request acts for the tenant in its path.
#[derive(Debug, Clone, Copy)]
struct AdminScope;

/// The tenant a request acts for, and its shard.
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant: TenantId,
    pub shard: u16,
}

impl FromRequestParts<ApiState> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let tenant = if parts.extensions.get::<AdminScope>().is_some() {
            let params = RawPathParams::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::invalid_path())?;
            let id = params
                .iter()
                .find(|(k, _)| *k == "id")
                .and_then(|(_, v)| TenantId::parse(v).ok())
                .ok_or_else(|| ApiError::not_found("tenant"))?;
            if state.store.tenant(&id).await?.is_none() {
                return Err(ApiError::not_found("tenant"));
            }
            id
        } else {
            let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
            state.auth.authenticate_header(header).await?.id.clone()
        };
        let shard = shard_of(&tenant, state.shards);
        Ok(TenantScope { tenant, shard })
    }
}

/// A list answer: `{"data": […]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub data: Vec<T>,
}

impl<T: Serialize> IntoResponse for Listing<T> {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// A page of a longer list: `{"data": […], "next": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
}

/// The routes of a tenant's own resources, mounted under `/v1` and `/admin/tenants/{id}`.
fn tenant_scoped() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(targets::list, targets::create))
        .routes(routes!(targets::read, targets::update, targets::remove))
        .routes(routes!(targets::rotate_secret))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(dead_letters::remove))
        .routes(routes!(events::read))
        .routes(routes!(events::stats))
        .routes(routes!(sources::list, sources::create))
        .routes(routes!(sources::read, sources::remove))
        .routes(routes!(sources::rotate_token))
        .routes(routes!(sources::incidents))
        .routes(routes!(sources::checks))
        .routes(routes!(monitors::list, monitors::create))
        .routes(routes!(monitors::read, monitors::update, monitors::remove))
        .routes(routes!(monitors::rotate_token))
        .routes(routes!(monitors::incidents))
        .routes(routes!(monitors::checks))
}

/// The health routes of every listener.
fn health_routes() -> OpenApiRouter<Arc<Readiness>> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// Every route of the edge listeners, by the state it needs.
struct EdgeRoutes {
    tenant: OpenApiRouter<ApiState>,
    events: OpenApiRouter<IngestState>,
    hooks: OpenApiRouter<HookState>,
    signals: OpenApiRouter<HeartbeatState>,
    health: OpenApiRouter<Arc<Readiness>>,
}

fn edge_routes() -> EdgeRoutes {
    EdgeRoutes {
        tenant: OpenApiRouter::new().nest("/v1", tenant_scoped()),
        events: OpenApiRouter::new().routes(routes!(crate::ingest::events::post_event_routed)),
        hooks: OpenApiRouter::new().routes(routes!(hooks::post_hook)),
        signals: OpenApiRouter::new()
            .routes(routes!(heartbeats::push_status))
            .routes(routes!(heartbeats::heartbeat_get, heartbeats::heartbeat_post))
            .routes(routes!(heartbeats::job_signal_get, heartbeats::job_signal_post)),
        health: health_routes(),
    }
}

/// Every route of the admin listener, by the state it needs.
struct AdminRoutes {
    /// Behind the admin token.
    guarded: OpenApiRouter<ApiState>,
    metrics: OpenApiRouter<PrometheusHandle>,
    openapi: OpenApiRouter<Arc<String>>,
    health: OpenApiRouter<Arc<Readiness>>,
}

fn admin_routes() -> AdminRoutes {
    AdminRoutes {
        guarded: OpenApiRouter::new()
            .routes(routes!(tenants::list, tenants::create))
            .routes(routes!(tenants::read, tenants::update, tenants::remove))
            .routes(routes!(tenants::list_tokens, tenants::issue_token))
            .routes(routes!(tenants::revoke_token))
            .nest("/admin/tenants/{id}", tenant_scoped()),
        metrics: OpenApiRouter::new().routes(routes!(system::metrics)),
        openapi: OpenApiRouter::new().routes(routes!(system::openapi)),
        health: health_routes(),
    }
}

/// The API description of every route both listeners serve, before [`doc`]'s finishing.
pub(crate) fn route_docs() -> Vec<utoipa::openapi::OpenApi> {
    let e = edge_routes();
    let a = admin_routes();
    vec![
        e.tenant.into_openapi(),
        e.events.into_openapi(),
        e.hooks.into_openapi(),
        e.signals.into_openapi(),
        e.health.into_openapi(),
        a.guarded.into_openapi(),
        a.metrics.into_openapi(),
        a.openapi.into_openapi(),
    ]
}

/// What the edge router serves.
#[derive(Debug, Clone)]
pub struct EdgeParts {
    pub api: ApiState,
    pub ingest: IngestState,
    pub hooks: HookState,
    pub heartbeats: HeartbeatState,
    pub readiness: Arc<Readiness>,
}

/// The edge router: ingest, hooks, monitor signals, the tenant API under `/v1`, health.
pub fn edge(parts: EdgeParts) -> Router {
    let r = edge_routes();
    let router: Router = r
        .tenant
        .with_state(parts.api)
        .merge(r.events.with_state(parts.ingest))
        .merge(r.hooks.with_state(parts.hooks))
        .merge(r.signals.with_state(parts.heartbeats))
        .merge(r.health.with_state(parts.readiness))
        .into();
    finish(router)
}

/// The admin router: the admin API (admin token), `/metrics`, `/openapi.json` (serving
/// `document`), health.
pub fn admin(
    api: ApiState,
    admin_token: Secret,
    readiness: Arc<Readiness>,
    metrics: PrometheusHandle,
    document: Arc<String>,
) -> Router {
    let r = admin_routes();
    let router: Router = r
        .guarded
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(admin_token),
            require_admin,
        ))
        .with_state(api)
        .merge(r.metrics.with_state(metrics))
        .merge(r.openapi.with_state(document))
        .merge(r.health.with_state(readiness))
        .into();
    finish(router)
}

/// Route templates in metrics, and the contract's JSON for unknown paths and methods.
fn finish(router: Router) -> Router {
    router
        .route_layer(axum::middleware::from_fn(observe::tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn require_admin(
    State(token): State<Arc<Secret>>,
    mut req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(bearer_token);
    match presented {
        Some(p) if secrets_equal(p.as_bytes(), token.expose().as_bytes()) => {
            req.extensions_mut().insert(AdminScope);
            next.run(req).await
        }
        Some(_) => {
            ApiError::unauthorized("invalid_token", "the admin token is wrong").into_response()
        }
        None => ApiError::unauthorized(
            "missing_token",
            "send the admin token as `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// JSON 404 for unknown paths.
pub async fn not_found() -> Response {
    ApiError::new(http::StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

/// JSON 405 for known paths with the wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::method_not_allowed().into_response()
}

/// A watched subject to delete: a monitor, or a source (with its silence watch).
#[derive(Debug, Clone, Copy)]
enum Watched<'a> {
    Monitor(&'a crate::model::MonitorId),
    Source(&'a crate::model::SourceId),
}

/// Deletes a monitor's definition, or a source, and then its live state, so no alert outlives
/// it; `false` when it is not there for this tenant.
async fn delete_watched(
    s: &ApiState,
    tenant: &TenantId,
    shard: u16,
    what: Watched<'_>,
) -> Result<bool, ApiError> {
    let (gone, subject) = match what {
        Watched::Monitor(id) => (s.store.delete_monitor(tenant, id).await?.is_some(), id.as_str()),
        Watched::Source(id) => (s.store.delete_source(tenant, id).await?, id.as_str()),
    };
    if gone {
        s.watches.forget(shard, subject).await?;
    }
    Ok(gone)
}

/// Deletes what belonged to a deleted tenant. Each step is tried even if another fails (the
/// tenant cannot be deleted twice), and failures are logged.
async fn purge(s: &ApiState, tenant: &TenantId) {
    let shard = shard_of(tenant, s.shards);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(request_id = %crate::telemetry::current_request_id(), tenant = %tenant, error = %e, "could not delete a deleted tenant's {what}");
    };
    if let Err(e) = s.store.delete_targets_of(tenant).await {
        failed("targets", &e);
    }
    match s.store.sources_of(tenant).await {
        Ok(sources) => {
            for src in sources {
                if let Err(e) = delete_watched(s, tenant, shard, Watched::Source(&src.id)).await {
                    failed("source", &e.message);
                }
            }
        }
        Err(e) => failed("sources", &e),
    }
    match s.store.monitors_of(tenant).await {
        Ok(monitors) => {
            for m in monitors {
                if let Err(e) = delete_watched(s, tenant, shard, Watched::Monitor(&m.id)).await {
                    failed("monitor", &e.message);
                }
            }
        }
        Err(e) => failed("monitors", &e),
    }
}
