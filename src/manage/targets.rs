//! Target handlers (both scopes; see [`super`]).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::collections::HashMap;

use super::{ManageState, TenantScope, deleted, found, listing, path_id};
use crate::body::read_json;
use crate::error::ApiError;
use crate::store::{Target, TargetPatch, TargetSpec};

fn target_id(params: &HashMap<String, String>) -> Result<&str, ApiError> {
    path_id(params, &["target_id"], "target")
}

/// The view with the signing secret, shown at creation and rotation only.
fn with_secret(t: &Target) -> serde_json::Value {
    let mut view = t.view();
    view["secret"] = t.secret.clone().into();
    view
}

fn invalid(m: String) -> ApiError {
    ApiError::bad_request("invalid_target", m)
}

pub async fn create(
    State(s): State<ManageState>,
    scope: TenantScope,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let spec: TargetSpec = read_json(body, &headers, &s.body_limits).await?;
    spec.validate(s.allow_private_targets).map_err(invalid)?;
    let created = s
        .store
        .create_target(&scope.tenant, &spec, None, "api")
        .await?;
    Ok((StatusCode::CREATED, Json(with_secret(&created))).into_response())
}

pub async fn list(State(s): State<ManageState>, scope: TenantScope) -> Result<Response, ApiError> {
    let targets = s.store.targets_of(&scope.tenant).await?;
    Ok(listing(targets.iter().map(Target::view).collect()))
}

pub async fn read(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let target = s.store.target(&scope.tenant, target_id(&params)?).await?;
    found(target.map(|t| t.view()), "target")
}

pub async fn update(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = target_id(&params)?.to_owned();
    let patch: TargetPatch = read_json(body, &headers, &s.body_limits).await?;
    let updated = s
        .store
        .update_target(&scope.tenant, &id, &patch, s.allow_private_targets)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid(m) => invalid(m),
            other => other.into(),
        })?;
    found(updated.map(|t| t.view()), "target")
}

pub async fn remove(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let done = s
        .store
        .delete_target(&scope.tenant, target_id(&params)?)
        .await?;
    deleted(done, "target")
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// A chosen new secret; generated when absent.
    #[serde(default)]
    secret: Option<String>,
    /// How long the old secret keeps signing; the config's default when absent.
    #[serde(default)]
    overlap_ms: Option<u64>,
}

pub async fn rotate_secret(
    State(s): State<ManageState>,
    scope: TenantScope,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = target_id(&params)?.to_owned();
    // An empty body means "generate a secret, default overlap".
    let req: Rotate = read_json(body, &headers, &s.body_limits).await?;
    if let Some(secret) = &req.secret {
        if crate::dispatch::signing::SigningKey::parse(secret).is_none() {
            return Err(invalid(
                "secret must be `whsec_` followed by base64 of 16 to 64 bytes".into(),
            ));
        }
    }
    let overlap = req
        .overlap_ms
        .unwrap_or(s.rotation_overlap_ms)
        .min(30 * 24 * 3600 * 1000);
    let rotated = s
        .store
        .rotate_target_secret(&scope.tenant, &id, req.secret, overlap)
        .await?;
    found(rotated.as_ref().map(with_secret), "target")
}
