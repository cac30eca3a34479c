//! Targets (both scopes; see [`super`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Listing;
use super::scope::{ApiState, TenantScope};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::extract::{ApiJson, ApiPath, JsonBody, PathParams};
use crate::model::target::{TargetAuthView, UrlProblem};
use crate::model::time::rfc3339;
use crate::model::{
    EventPattern, Format, Mode, Origin, RetryPolicy, SigningSecret, TargetId, TargetPatch,
    TargetSpec, TargetUrl, TenantId,
};
use crate::store::{StoreError, Target};

/// Longest overlap of a secret rotation: 30 days.
const MAX_OVERLAP_MS: u64 = 30 * 24 * 3600 * 1000;

impl JsonBody for TargetSpec {
    const INVALID: &'static str = "invalid_target";
}

impl JsonBody for TargetPatch {
    const INVALID: &'static str = "invalid_target";
}

/// A target (secrets left out, credentials masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    pub id: TargetId,
    pub tenant_id: TenantId,
    pub url: String,
    pub events: Vec<EventPattern>,
    pub mode: Mode,
    /// `null`: the deployment's default policy.
    pub retry: Option<RetryPolicy>,
    pub headers: BTreeMap<String, String>,
    pub auth: Option<TargetAuthView>,
    pub ordered: bool,
    pub active: bool,
    pub format: Format,
    /// Why the gateway disabled the target (`gone` after a 410), if it did.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs, during a rotation.
    #[schema(format = DateTime)]
    pub secret_rotating_until: Option<String>,
    pub origin: Origin,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&Target> for TargetView {
    fn from(t: &Target) -> TargetView {
        TargetView {
            id: t.id.clone(),
            tenant_id: t.tenant.clone(),
            url: t.url.as_str().to_owned(),
            events: t.events.as_slice().to_vec(),
            mode: t.mode,
            retry: t.retry,
            headers: t.headers.as_map().clone(),
            auth: t.auth.as_ref().map(|a| a.redacted()),
            ordered: t.ordered,
            active: t.active,
            format: t.format,
            disabled_reason: t.disabled_reason.clone(),
            secret_rotating_until: t.rotating_until_ms().map(rfc3339),
            origin: t.origin,
            created_at: rfc3339(t.created_at_ms),
            updated_at: rfc3339(t.updated_at_ms),
        }
    }
}

/// A target with its signing secret: shown at creation and rotation only.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetWithSecret {
    #[serde(flatten)]
    pub target: TargetView,
    /// The signing secret (`whsec_…`).
    pub secret: String,
}

impl From<&Target> for TargetWithSecret {
    fn from(t: &Target) -> TargetWithSecret {
        TargetWithSecret {
            target: TargetView::from(t),
            secret: t.secret.expose().to_owned(),
        }
    }
}

/// A secret rotation.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// A chosen new secret; generated when absent.
    #[serde(default)]
    pub secret: Option<SigningSecret>,
    /// How long the old secret keeps signing (ms, at most 30 days); the deployment's
    /// `dispatch.secret_rotation_overlap_ms` when absent.
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[schema(minimum = 0, maximum = 2592000000_u64)]
    pub overlap_ms: Option<u64>,
}

impl JsonBody for Rotate {
    const INVALID: &'static str = "invalid_target";
}

/// The path of one target.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TargetPath {
    target_id: TargetId,
}

impl PathParams for TargetPath {
    const WHAT: &'static str = "target";
}

/// A target's validation against the deployment (the SSRF guard), as the API reports it.
fn refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(i) => ApiError::invalid("invalid_target", &i),
        other => other.into(),
    }
}

/// Refuses a URL whose name resolves to a private address, unless private targets are allowed.
async fn check_resolution(s: &ApiState, url: &TargetUrl) -> Result<(), ApiError> {
    if s.allow_private_targets {
        return Ok(());
    }
    crate::dispatch::ssrf::check_resolution(url.as_str())
        .await
        .map_err(|_| {
            ApiError::invalid(
                "invalid_target",
                &UrlProblem::ResolvesPrivate.invalid().within("url"),
            )
        })
}

/// Creates a target; its signing secret is shown this once.
#[utoipa::path(
    post,
    path = "/targets",
    tag = "targets",
    operation_id = "create_target",
    request_body = TargetSpec,
    responses((status = 201, description = "Created; the secret is shown this once.", body = TargetWithSecret), WriteErrors),
)]
pub async fn create(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiJson(spec): ApiJson<TargetSpec>,
) -> Result<Response, ApiError> {
    spec.validate(s.allow_private_targets)
        .map_err(|e| ApiError::invalid("invalid_target", &e))?;
    check_resolution(&s, &spec.url).await?;
    let created = s
        .store
        .create_target(&scope.tenant, &spec, None, Origin::Api)
        .await?;
    Ok((StatusCode::CREATED, Json(TargetWithSecret::from(&created))).into_response())
}

/// Lists the tenant's targets, in creation order.
#[utoipa::path(
    get,
    path = "/targets",
    tag = "targets",
    operation_id = "list_targets",
    responses((status = 200, description = "The tenant's targets.", body = Listing<TargetView>), ReadErrors),
)]
pub async fn list(State(s): State<ApiState>, scope: TenantScope) -> Result<Response, ApiError> {
    let targets = s.store.targets_of(&scope.tenant).await?;
    Ok(Listing {
        data: targets.iter().map(TargetView::from).collect::<Vec<_>>(),
    }
    .into_response())
}

/// Reads a target.
#[utoipa::path(
    get,
    path = "/targets/{target_id}",
    tag = "targets",
    operation_id = "read_target",
    params(TargetPath),
    responses((status = 200, description = "The target.", body = TargetView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
) -> Result<Response, ApiError> {
    let target = s.store.target(&scope.tenant, &p.target_id).await?;
    target
        .map(|t| Json(TargetView::from(&t)).into_response())
        .ok_or_else(|| ApiError::not_found("target"))
}

/// Changes a target: absent fields stay; `null` removes `retry` or `auth`. Enabling a
/// target the gateway disabled clears its `disabled_reason`.
#[utoipa::path(
    patch,
    path = "/targets/{target_id}",
    tag = "targets",
    operation_id = "update_target",
    params(TargetPath),
    request_body(content = Option<TargetPatch>, description = "Only the fields to change; an empty body changes nothing."),
    responses((status = 200, description = "The target as changed.", body = TargetView), WriteErrors),
)]
pub async fn update(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
    ApiJson(patch): ApiJson<TargetPatch>,
) -> Result<Response, ApiError> {
    if let Some(url) = &patch.url {
        check_resolution(&s, url).await?;
    }
    let updated = s
        .store
        .update_target(&scope.tenant, &p.target_id, &patch, s.allow_private_targets)
        .await
        .map_err(refused)?;
    updated
        .map(|t| Json(TargetView::from(&t)).into_response())
        .ok_or_else(|| ApiError::not_found("target"))
}

/// Deletes a target; its scheduled retries are dropped when they come due.
#[utoipa::path(
    delete,
    path = "/targets/{target_id}",
    tag = "targets",
    operation_id = "delete_target",
    params(TargetPath),
    responses((status = 204, description = "Deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
) -> Result<Response, ApiError> {
    if s.store.delete_target(&scope.tenant, &p.target_id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("target"))
    }
}

/// Replaces the signing secret; during the overlap both secrets sign every delivery.
#[utoipa::path(
    post,
    path = "/targets/{target_id}/rotate-secret",
    tag = "targets",
    operation_id = "rotate_target_secret",
    params(TargetPath),
    request_body(content = Option<Rotate>, description = "Empty: a generated secret, the default overlap."),
    responses((status = 200, description = "The target with its new secret, shown this once.", body = TargetWithSecret), WriteErrors),
)]
pub async fn rotate_secret(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
    ApiJson(req): ApiJson<Rotate>,
) -> Result<Response, ApiError> {
    let overlap = match req.overlap_ms {
        Some(o) if o > MAX_OVERLAP_MS => {
            return Err(ApiError::bad_request(
                "invalid_target",
                format!("overlap_ms must be at most {MAX_OVERLAP_MS}"),
            ));
        }
        Some(o) => o,
        None => s.rotation_overlap_ms.min(MAX_OVERLAP_MS),
    };
    let rotated = s
        .store
        .rotate_target_secret(&scope.tenant, &p.target_id, req.secret, overlap)
        .await?;
    rotated
        .map(|t| Json(TargetWithSecret::from(&t)).into_response())
        .ok_or_else(|| ApiError::not_found("target"))
}
