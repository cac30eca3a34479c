//! Monitor handlers (both scopes; see [`super`]), and the incident and check history of
//! monitors and silence-watched sources.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{ManageState, TenantScope, deleted, found, listing, path_id, read_valid};
use crate::error::ApiError;
use crate::monitors::state::Kind;
use crate::store::monitors::{Monitor, MonitorPatch, MonitorSpec};

fn monitor_id(params: &HashMap<String, String>) -> Result<&str, ApiError> {
    path_id(params, &["monitor_id"], "monitor")
}

/// The definition with its live state.
async fn full_view(
    s: &ManageState,
    scope: &TenantScope,
    m: &Monitor,
) -> Result<serde_json::Value, ApiError> {
    let mut v = m.view();
    let state = s.watches.view(scope.shard, &m.id).await?;
    if let (Some(v), serde_json::Value::Object(state)) = (v.as_object_mut(), state) {
        v.extend(state);
    }
    Ok(v)
}

/// The view with its URL token and URLs, shown at creation and rotation only.
async fn with_token(
    s: &ManageState,
    scope: &TenantScope,
    m: &Monitor,
    token: &str,
) -> Result<serde_json::Value, ApiError> {
    let mut v = full_view(s, scope, m).await?;
    v["token"] = token.into();
    v["status_url"] = format!("/v1/monitors/{token}").into();
    v["heartbeat_url"] = format!("/v1/monitors/{token}/heartbeat").into();
    Ok(v)
}

pub async fn create(
    State(s): State<ManageState>,
    scope: TenantScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let spec = read_valid(&s, &headers, body, "invalid_monitor", MonitorSpec::validate).await?;
    let (monitor, token) = s
        .store
        .create_monitor(&scope.tenant, &spec, None, None, "api")
        .await?;
    s.watches.describe(monitor.subject(scope.shard)).await?;
    let v = with_token(&s, &scope, &monitor, &token).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list(State(s): State<ManageState>, scope: TenantScope) -> Result<Response, ApiError> {
    let monitors = s.store.monitors_of(&scope.tenant).await?;
    let mut out = Vec::with_capacity(monitors.len());
    for m in &monitors {
        out.push(full_view(&s, &scope, m).await?);
    }
    Ok(listing(out))
}

pub async fn read(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let monitor = s.store.monitor(&scope.tenant, monitor_id(&params)?).await?;
    let view = match monitor {
        Some(m) => Some(full_view(&s, &scope, &m).await?),
        None => None,
    };
    found(view, "monitor")
}

pub async fn update(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let patch = read_valid(
        &s,
        &headers,
        body,
        "invalid_monitor",
        MonitorPatch::validate,
    )
    .await?;
    let Some(m) = s
        .store
        .update_monitor(&scope.tenant, monitor_id(&params)?, &patch)
        .await?
    else {
        return Err(ApiError::not_found("monitor"));
    };
    s.watches.describe(m.subject(scope.shard)).await?;
    Ok(Json(full_view(&s, &scope, &m).await?).into_response())
}

pub async fn remove(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = monitor_id(&params)?;
    let done = crate::monitors::delete_watched(
        &s.store,
        &s.watches,
        Kind::Monitor,
        &scope.tenant,
        scope.shard,
        id,
    )
    .await?;
    deleted(done, "monitor")
}

pub async fn rotate_token(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let rotated = s
        .store
        .rotate_monitor_token(&scope.tenant, monitor_id(&params)?, None)
        .await?;
    let view = match rotated {
        Some((m, token)) => Some(with_token(&s, &scope, &m, &token).await?),
        None => None,
    };
    found(view, "monitor")
}

/// `?limit=` of history reads: 1 to 100, default 50.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default)]
    limit: Option<i64>,
}

impl HistoryQuery {
    fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=100).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be between 1 and 100",
            )),
        }
    }
}

/// Which history a route reads.
#[derive(Debug, Clone, Copy)]
enum History {
    Incidents,
    Checks,
}

/// The subject a history route names, if it belongs to the tenant: a monitor or a source.
async fn history(
    s: &ManageState,
    scope: &TenantScope,
    params: &HashMap<String, String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    which: History,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit()?;
    let id = if params.contains_key("monitor_id") {
        let id = monitor_id(params)?;
        s.store
            .monitor(&scope.tenant, id)
            .await?
            .ok_or_else(|| ApiError::not_found("monitor"))?;
        id
    } else {
        let id = path_id(params, &["source_id"], "source")?;
        s.store
            .source(&scope.tenant, id)
            .await?
            .ok_or_else(|| ApiError::not_found("source"))?;
        id
    };
    let items = match which {
        History::Incidents => s.watches.incidents(scope.shard, id, limit).await?,
        History::Checks => s.watches.checks(scope.shard, id, limit).await?,
    };
    Ok(listing(items))
}

pub async fn incidents(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    history(&s, &scope, &params, query, History::Incidents).await
}

pub async fn checks(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    history(&s, &scope, &params, query, History::Checks).await
}
