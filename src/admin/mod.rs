//! The admin listener: operators' API, metrics and API description.
//!
//! | route | auth | what |
//! | --- | --- | --- |
//! | `POST/GET /admin/tenants` | admin token | create, list (`?external_id=`, `?after=`, `?limit=`) |
//! | `GET/PATCH/DELETE /admin/tenants/{id}` | admin token | read, update, delete (revokes its tokens) |
//! | `POST/GET /admin/tenants/{id}/tokens` | admin token | issue a token (shown once), list token ids |
//! | `DELETE /admin/tenants/{id}/tokens/{token_id}` | admin token | revoke |
//! | `/admin/tenants/{id}/targets…`, `…/dead-letters…`, `…/events/{event_id}`, `…/stats`, `…/sources…`, `…/monitors…` | admin token | [`crate::manage`] |
//! | `GET /metrics` | none | Prometheus text format |
//! | `GET /openapi.json` | none | OpenAPI 3 description of the edge and admin APIs |
//! | `GET /healthz`, `GET /readyz` | none | liveness, readiness |
//!
//! The admin token is compared in constant time. The listener is meant for an internal network;
//! `/metrics` carries no tenant ids.

mod tenants;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::{Auth, bearer_token};
use crate::body::BodyLimits;
use crate::config::Secret;
use crate::crypto::secrets_equal;
use crate::error::ApiError;
use crate::health::{self, Readiness};
use crate::ingest::{method_not_allowed, not_found};
use crate::observe;
use crate::store::Store;

/// The OpenAPI description served at `/openapi.json`.
const OPENAPI: &str = include_str!("openapi.json");

/// What admin handlers share.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Tenants and tokens.
    pub store: Store,
    /// This instance's auth cache, invalidated at once after changes made here (other
    /// instances hear of them by pub/sub).
    pub auth: Arc<Auth>,
    /// Bounds of admin request bodies.
    pub body_limits: BodyLimits,
    /// Live state of monitors and watched sources (dropped with their tenant).
    pub watches: crate::monitors::state::Watches,
    /// Number of shard streams.
    pub shards: u16,
}

/// The admin router.
pub fn router(
    state: AdminState,
    manage: crate::manage::ManageState,
    admin_token: Secret,
    readiness: Arc<Readiness>,
    metrics: PrometheusHandle,
) -> Router {
    let api = Router::new()
        .route("/admin/tenants", get(tenants::list).post(tenants::create))
        .route(
            "/admin/tenants/{id}",
            get(tenants::read)
                .patch(tenants::update)
                .delete(tenants::remove),
        )
        .route(
            "/admin/tenants/{id}/tokens",
            get(tenants::list_tokens).post(tenants::issue_token),
        )
        .route(
            "/admin/tenants/{id}/tokens/{token_id}",
            delete(tenants::revoke_token),
        )
        .with_state(state)
        .merge(crate::manage::routes("/admin/tenants/{id}", manage.clone()))
        .route(
            "/admin/tenants/{id}/events/{event_id}",
            get(crate::manage::dead_letters::event).with_state(manage),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(admin_token),
            require_admin,
        ));
    let open = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics)
        .route("/openapi.json", get(openapi))
        .merge(
            Router::new()
                .route("/healthz", get(health::healthz))
                .route("/readyz", get(health::readyz))
                .with_state(readiness),
        );
    api.merge(open)
        .route_layer(axum::middleware::from_fn(observe::tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn require_admin(State(token): State<Arc<Secret>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(bearer_token);
    match presented {
        Some(p) if secrets_equal(p.as_bytes(), token.expose().as_bytes()) => next.run(req).await,
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

async fn render_metrics(State(handle): State<PrometheusHandle>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        handle.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        OPENAPI,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_is_json_and_lists_routes() -> anyhow::Result<()> {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI)?;
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        for path in [
            "/v1/events/{event_type}",
            "/admin/tenants",
            "/admin/tenants/{id}",
            "/admin/tenants/{id}/tokens",
            "/admin/tenants/{id}/tokens/{token_id}",
            "/admin/tenants/{id}/targets/{target_id}/rotate-secret",
            "/admin/tenants/{id}/dead-letters/replay",
            "/admin/tenants/{id}/events/{event_id}",
            "/v1/targets",
            "/v1/dead-letters",
            "/v1/sources",
            "/v1/hooks/{source_token}",
            "/admin/tenants/{id}/sources/{source_id}/rotate-token",
            "/admin/tenants/{id}/monitors",
            "/admin/tenants/{id}/monitors/{monitor_id}/rotate-token",
            "/admin/tenants/{id}/monitors/{monitor_id}/incidents",
            "/admin/tenants/{id}/monitors/{monitor_id}/checks",
            "/admin/tenants/{id}/sources/{source_id}/incidents",
            "/v1/monitors/{monitor_id}",
            "/v1/monitors/{monitor_id}/heartbeat",
            "/v1/monitors/{monitor_id}/heartbeat/{signal}",
        ] {
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} missing from openapi.json"
            );
        }
        Ok(())
    }
}
