//! Tenant resources that both operators and tenants manage: targets, the error queue, the
//! delivery view of an event, and counters. One handler serves two scopes: under
//! `/admin/tenants/{id}/…` (admin token; the tenant is in the path) and under `/v1/…` (the
//! tenant's own bearer token). [`TenantScope`] resolves which tenant a request acts for, so a
//! tenant can only ever name its own resources: every lookup is keyed by that tenant.
//!
//! | admin route | tenant route | handler |
//! | --- | --- | --- |
//! | `GET/POST /admin/tenants/{id}/targets` | `GET/POST /v1/targets` | [`targets::list`], [`targets::create`] |
//! | `GET/PATCH/DELETE …/targets/{target_id}` | `GET/PATCH/DELETE /v1/targets/{target_id}` | [`targets::read`], [`targets::update`], [`targets::remove`] |
//! | `POST …/targets/{target_id}/rotate-secret` | `POST /v1/targets/{target_id}/rotate-secret` | [`targets::rotate_secret`] |
//! | `GET …/dead-letters` | `GET /v1/dead-letters` | [`dead_letters::list`] |
//! | `POST …/dead-letters/replay` | `POST /v1/dead-letters/replay` | [`dead_letters::replay`] |
//! | `DELETE …/dead-letters/{dl_id}` | `DELETE /v1/dead-letters/{dl_id}` | [`dead_letters::remove`] |
//! | `GET …/events/{event_id}` | `GET /v1/events/{event_id}` | [`dead_letters::event`] |
//! | `GET …/stats` | `GET /v1/stats` | [`dead_letters::stats`] |
//! | `GET/POST …/sources`, `GET/DELETE …/sources/{source_id}`, `POST …/rotate-token` | same under `/v1` | [`sources`] |
//! | `GET/POST …/monitors`, `GET/PATCH/DELETE …/monitors/{monitor_id}`, `POST …/rotate-token` | same under `/v1` | [`monitors`] |
//! | `GET …/monitors/{monitor_id}/incidents`, `…/checks` (and the same under `…/sources/{source_id}`) | same under `/v1` | [`monitors::incidents`], [`monitors::checks`] |
//!
//! Under `/v1`, `POST /v1/monitors/{key}` and `…/heartbeat…` are the monitored service's own
//! routes ([`crate::monitors::push`]); the edge router adds them beside these.

pub mod dead_letters;
pub mod monitors;
pub mod sources;
pub mod targets;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::routing::{get, post};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::auth::Auth;
use crate::body::BodyLimits;
use crate::error::ApiError;
use crate::queue::shard_of;
use crate::store::Store;
use crate::store::deliveries::Deliveries;

/// What the management handlers share.
#[derive(Debug, Clone)]
pub struct ManageState {
    pub store: Store,
    pub deliveries: Deliveries,
    pub auth: Arc<Auth>,
    pub body_limits: BodyLimits,
    pub allow_private_targets: bool,
    pub rotation_overlap_ms: u64,
    pub shards: u16,
    /// Live state of monitors and watched sources.
    pub watches: crate::monitors::state::Watches,
}

/// The tenant a request acts for, and its shard.
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant: String,
    pub shard: u16,
}

impl FromRequestParts<ManageState> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ManageState) -> Result<Self, ApiError> {
        let tenant = if parts.uri.path().starts_with("/admin/") {
            // The admin token was checked by the admin router's layer.
            let params = RawPathParams::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found("tenant"))?;
            let id = params
                .iter()
                .find(|(k, _)| *k == "id")
                .map(|(_, v)| v.to_owned())
                .ok_or_else(|| ApiError::not_found("tenant"))?;
            if !crate::store::is_id(&id) || state.store.tenant(&id).await?.is_none() {
                return Err(ApiError::not_found("tenant"));
            }
            id
        } else {
            let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
            state.auth.authenticate_header(header).await?.id.to_string()
        };
        let shard = shard_of(&tenant, state.shards);
        Ok(TenantScope { tenant, shard })
    }
}

/// A path parameter holding an id (the first of `names` present), or the contract's `404`
/// naming `what`: ids are checked before they reach a Redis key.
fn path_id<'a>(
    params: &'a std::collections::HashMap<String, String>,
    names: &[&str],
    what: &str,
) -> Result<&'a str, ApiError> {
    names
        .iter()
        .find_map(|n| params.get(*n))
        .map(String::as_str)
        .filter(|id| crate::store::is_id(id))
        .ok_or_else(|| ApiError::not_found(what))
}

/// A JSON body within the management limits, checked by `validate`; a failed check is the
/// contract's `400` with `code` and the check's message.
async fn read_valid<T: serde::de::DeserializeOwned>(
    s: &ManageState,
    headers: &http::HeaderMap,
    body: axum::body::Body,
    code: &'static str,
    validate: impl FnOnce(&T) -> Result<(), String>,
) -> Result<T, ApiError> {
    let value: T = crate::body::read_json(body, headers, &s.body_limits).await?;
    validate(&value).map_err(|m| ApiError::bad_request(code, m))?;
    Ok(value)
}

/// `200 {"data": […]}`.
fn listing(data: Vec<serde_json::Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::Json(serde_json::json!({ "data": data })).into_response()
}

/// `200` with the JSON, or the contract's `404` naming `what`.
fn found(
    value: Option<serde_json::Value>,
    what: &str,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    value
        .map(|v| axum::Json(v).into_response())
        .ok_or_else(|| ApiError::not_found(what))
}

/// `204`, or the contract's `404` naming `what`.
fn deleted(done: bool, what: &str) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if done {
        Ok(http::StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(what))
    }
}

/// The same routes under a prefix: `/admin/tenants/{id}` or `/v1`.
pub fn routes(prefix: &str, state: ManageState) -> Router {
    let p = |path: &str| format!("{prefix}{path}");
    let r = Router::new()
        .route(&p("/targets"), get(targets::list).post(targets::create))
        .route(
            &p("/targets/{target_id}"),
            get(targets::read)
                .patch(targets::update)
                .delete(targets::remove),
        )
        .route(
            &p("/targets/{target_id}/rotate-secret"),
            post(targets::rotate_secret),
        )
        .route(&p("/dead-letters"), get(dead_letters::list))
        .route(&p("/dead-letters/replay"), post(dead_letters::replay))
        .route(
            &p("/dead-letters/{dl_id}"),
            axum::routing::delete(dead_letters::remove),
        )
        .route(&p("/stats"), get(dead_letters::stats))
        .route(&p("/sources"), get(sources::list).post(sources::create))
        .route(
            &p("/sources/{source_id}"),
            get(sources::read).delete(sources::remove),
        )
        .route(
            &p("/sources/{source_id}/rotate-token"),
            post(sources::rotate_token),
        )
        .route(
            &p("/sources/{source_id}/incidents"),
            get(monitors::incidents),
        )
        .route(&p("/sources/{source_id}/checks"), get(monitors::checks))
        .route(&p("/monitors"), get(monitors::list).post(monitors::create))
        .route(
            &p("/monitors/{monitor_id}"),
            get(monitors::read)
                .patch(monitors::update)
                .delete(monitors::remove),
        )
        .route(
            &p("/monitors/{monitor_id}/rotate-token"),
            post(monitors::rotate_token),
        )
        .route(
            &p("/monitors/{monitor_id}/incidents"),
            get(monitors::incidents),
        )
        .route(&p("/monitors/{monitor_id}/checks"), get(monitors::checks));
    r.with_state(state)
}
