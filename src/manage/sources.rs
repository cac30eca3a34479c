//! Source handlers (both scopes; see [`super`]).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};

use super::{ManageState, TenantScope, deleted, found, listing, path_id, read_valid};
use crate::error::ApiError;
use crate::monitors::state::Kind;
use crate::store::sources::{Source, SourceSpec};

fn source_id(params: &HashMap<String, String>) -> Result<&str, ApiError> {
    path_id(params, &["source_id"], "source")
}

/// The view with its URL token, shown at creation and rotation only.
fn with_token(s: &Source, token: &str) -> serde_json::Value {
    let mut v = s.view();
    v["token"] = token.into();
    v["url"] = format!("/v1/hooks/{token}").into();
    v
}

pub async fn create(
    State(s): State<ManageState>,
    scope: TenantScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let spec = read_valid(&s, &headers, body, "invalid_source", SourceSpec::validate).await?;
    let (source, token) = s.store.create_source(&scope.tenant, &spec).await?;
    if let Some(subject) = source.watch_subject(scope.shard) {
        s.watches.describe(subject).await?;
    }
    Ok((StatusCode::CREATED, Json(with_token(&source, &token))).into_response())
}

pub async fn list(State(s): State<ManageState>, scope: TenantScope) -> Result<Response, ApiError> {
    let sources = s.store.sources_of(&scope.tenant).await?;
    Ok(listing(sources.iter().map(Source::view).collect()))
}

pub async fn read(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let source = s.store.source(&scope.tenant, source_id(&params)?).await?;
    found(source.map(|src| src.view()), "source")
}

pub async fn remove(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = source_id(&params)?;
    let done = crate::monitors::delete_watched(
        &s.store,
        &s.watches,
        Kind::Source,
        &scope.tenant,
        scope.shard,
        id,
    )
    .await?;
    deleted(done, "source")
}

pub async fn rotate_token(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let rotated = s
        .store
        .rotate_source_token(&scope.tenant, source_id(&params)?)
        .await?;
    found(
        rotated.map(|(src, token)| with_token(&src, &token)),
        "source",
    )
}
