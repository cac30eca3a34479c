//! The routers of both listeners, built from the handlers' annotated routes, so that every
//! route served is in the API description ([`super::doc`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::AUTHORIZATION;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::health::{self, Readiness};
use super::scope::{AdminScope, ApiState};
use super::{
    catalogue_exchange, dead_letters, event_types, events, filters, find, monitors, overview,
    portal_links, sources, system, targets, tenants, transforms,
};
use crate::auth::bearer_token;
use crate::config::Secret;
use crate::crypto::secrets_equal;
use crate::edge::observe;
use crate::http::error::ApiError;
use crate::ingest::IngestState;
use crate::ingest::heartbeats::{self, HeartbeatState};
use crate::sources::hooks::{self, HookState};

/// The routes of a tenant's own resources, mounted under `/v1` and `/admin/tenants/{id}`.
fn tenant_scoped() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(targets::list, targets::create))
        .routes(routes!(targets::read, targets::update, targets::remove))
        .routes(routes!(targets::rotate_secret))
        .routes(routes!(targets::test))
        .routes(routes!(filters::target_filter_test))
        .routes(routes!(filters::filter_test))
        .routes(routes!(transforms::versions))
        .routes(routes!(transforms::simulate))
        .routes(routes!(event_types::list))
        .routes(routes!(
            event_types::read,
            event_types::put,
            event_types::update,
            event_types::remove
        ))
        .routes(routes!(catalogue_exchange::import))
        .routes(routes!(catalogue_exchange::export))
        .routes(routes!(events::recover))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(dead_letters::remove))
        .routes(routes!(events::list))
        .routes(routes!(events::read))
        .routes(routes!(events::body))
        .routes(routes!(events::stats))
        .routes(routes!(events::series))
        .routes(routes!(sources::list, sources::create))
        .routes(routes!(sources::read, sources::remove))
        .routes(routes!(sources::rotate_token))
        .routes(routes!(sources::incidents))
        .routes(routes!(sources::checks))
        .routes(routes!(sources::refusals))
        .routes(routes!(monitors::list, monitors::create))
        .routes(routes!(monitors::read, monitors::update, monitors::remove))
        .routes(routes!(monitors::rotate_token))
        .routes(routes!(monitors::incidents))
        .routes(routes!(monitors::checks))
        .routes(routes!(overview::tenant))
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
            .routes(routes!(heartbeats::heartbeat))
            .routes(routes!(heartbeats::job_signal)),
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
            .routes(routes!(tenants::tokens, tenants::issue))
            .routes(routes!(tenants::revoke))
            .routes(routes!(portal_links::create, portal_links::list))
            .routes(routes!(portal_links::revoke))
            .routes(routes!(system::status))
            .routes(routes!(overview::all))
            .routes(routes!(find::find))
            .routes(routes!(events::series_all))
            .nest("/admin/tenants/{id}", tenant_scoped()),
        metrics: OpenApiRouter::new().routes(routes!(system::metrics)),
        openapi: OpenApiRouter::new().routes(routes!(system::openapi)),
        health: health_routes(),
    }
}

/// The API description of every route both listeners serve, before [`doc`]'s finishing.
pub(super) fn route_docs() -> Vec<utoipa::openapi::OpenApi> {
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
    /// The tenant portal's pages (HTML, outside the API description).
    pub portal: Router,
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
    finish(router.merge(parts.portal))
}

/// The admin router: the admin API (admin token), `/metrics`, `/openapi.json` (serving
/// `document`), health, and the operator console's pages.
pub fn admin(
    console: Router,
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
    finish(router.merge(console))
}

/// Route templates in metrics, and the contract's JSON for unknown paths and methods.
fn finish(router: Router) -> Router {
    router
        .route_layer(axum::middleware::from_fn(observe::tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn require_admin(State(token): State<Arc<Secret>>, mut req: Request, next: Next) -> Response {
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
