//! The edge router: what tenants and external platforms call.
//!
//! | route | handler |
//! | --- | --- |
//! | `POST /v1/events/{event_type}` | [`events::post_event`] |
//! | `GET /v1/events/{id}`, `/v1/targets…`, `/v1/dead-letters…`, `/v1/sources…`, `/v1/stats` | [`crate::manage`] |
//! | `POST /v1/hooks/{source_token}` | [`crate::sources::hooks::post_hook`] |
//! | `POST /v1/monitors/{key}`, `GET\|POST /v1/monitors/{key}/heartbeat[/…]` | [`crate::monitors::push`] |
//! | `GET/POST /v1/monitors…` (tenant management) | [`crate::manage`] |
//! | `GET /healthz`, `GET /readyz` | [`crate::health`] |
//!
//! Every other path answers the contract's JSON 404, every wrong method its JSON 405.

pub mod events;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::Auth;
use crate::body::BodyLimits;
use crate::error::ApiError;
use crate::health::{self, Readiness};
use crate::observe;
use crate::queue::Enqueuer;

/// What edge handlers share.
#[derive(Clone, Debug)]
pub struct EdgeState {
    /// Token → tenant.
    pub auth: Arc<Auth>,
    /// Durable writes.
    pub enqueuer: Enqueuer,
    /// Body bounds.
    pub body_limits: BodyLimits,
}

/// The edge router. The hot route is also served by hand ([`crate::service`]); it is routed
/// here too so that other methods on its path get 405 and the router alone is complete.
pub fn router(
    state: EdgeState,
    manage: crate::manage::ManageState,
    hooks: crate::sources::hooks::HookState,
    push: crate::monitors::push::PushState,
    readiness: Arc<Readiness>,
) -> Router {
    // `GET /v1/events/{id}` shares the path template of the hot POST route.
    let events_route = post(events::post_event_routed)
        .with_state(state)
        .merge(get(crate::manage::dead_letters::event).with_state(manage.clone()));
    let api = Router::new()
        .route("/v1/events/{event_type}", events_route)
        .merge(crate::manage::routes("/v1", manage))
        .merge(crate::monitors::push::routes(push))
        .route(
            "/v1/hooks/{source_token}",
            post(crate::sources::hooks::post_hook).with_state(hooks),
        );
    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(readiness);
    api.merge(health)
        .route_layer(axum::middleware::from_fn(observe::tag_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// JSON 404 for unknown paths.
pub async fn not_found() -> Response {
    ApiError::new(http::StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
}

/// JSON 405 for known paths with the wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::method_not_allowed().into_response()
}
