//! Error queue, event delivery view and counters (both scopes; see [`super`]).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde::Deserialize;

use super::{ManageState, TenantScope};
use crate::body::read_json;
use crate::error::ApiError;
use crate::store::deliveries::ReplaySelection;
use crate::store::is_id;

/// Largest page of the error queue.
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    target_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn list(
    State(s): State<ManageState>,
    scope: TenantScope,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let entries = s
        .deliveries
        .dead_letters(scope.shard, &scope.tenant, q.target_id.as_deref(), limit)
        .await?;
    Ok(super::listing(entries.iter().map(|d| d.view()).collect()))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Replay {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    target_id: Option<String>,
}

pub async fn replay(
    State(s): State<ManageState>,
    scope: TenantScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // An empty body replays everything.
    let req: Replay = read_json(body, &headers, &s.body_limits).await?;
    if let Some(ids) = &req.ids {
        if ids.len() > 10_000 || ids.iter().any(|i| !is_id(i)) {
            return Err(ApiError::bad_request(
                "invalid_ids",
                "ids must be up to 10000 error queue entry ids",
            ));
        }
    }
    let selection = ReplaySelection {
        ids: req.ids,
        target_id: req.target_id,
    };
    let replayed = s
        .deliveries
        .replay(scope.shard, &scope.tenant, &selection)
        .await?;
    Ok(Json(serde_json::json!({ "replayed": replayed })).into_response())
}

pub async fn remove(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = super::path_id(&params, &["dl_id"], "dead letter")?;
    let done = s
        .deliveries
        .delete_dead_letter(scope.shard, &scope.tenant, id)
        .await?;
    super::deleted(done, "dead letter")
}

/// `GET …/events/{event_id}`: the event's deliveries per target and its recent attempts.
pub async fn event(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // `event_type` under `/v1/events/{…}`: the GET shares the path template of the POST.
    let id = super::path_id(&params, &["event_id", "event_type"], "event")?;
    let view = s
        .deliveries
        .event_view(scope.shard, &scope.tenant, id)
        .await?;
    super::found(view, "event")
}

pub async fn stats(State(s): State<ManageState>, scope: TenantScope) -> Result<Response, ApiError> {
    Ok(Json(s.deliveries.stats(scope.shard, &scope.tenant).await?).into_response())
}
