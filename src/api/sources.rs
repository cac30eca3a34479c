//! Inbound sources (both scopes; see [`super`]), and the history of their silence watch.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Listing;
use super::monitors::{HistoryQuery, checks_of, incidents_of};
use super::scope::{ApiState, TenantScope};
use super::watched::{Watched, delete_watched};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::model::monitor::{Every, Grace};
use crate::model::source::Tolerance;
use crate::model::time::rfc3339;
use crate::model::{EventTypeRule, Name, Scheme, SourceId, SourceSpec, TenantId};
use crate::monitors::state::{Check, Incident, Subject};
use crate::store::Source;

impl JsonBody for SourceSpec {
    const INVALID: &'static str = "invalid_source";
}

/// How a source's requests are verified (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyView {
    pub scheme: Scheme,
    pub header: Option<String>,
    #[schema(inline)]
    pub tolerance_s: Option<Tolerance>,
}

/// A source (no secret, no token).
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub id: SourceId,
    pub tenant_id: TenantId,
    pub name: Name,
    pub verify: VerifyView,
    pub event_type: EventTypeRule,
    /// The silence watch's interval, if it has one.
    #[schema(inline)]
    pub expect_every_s: Option<Every>,
    #[schema(inline)]
    pub grace_s: Option<Grace>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// When the source last accepted a webhook (`null`: not in the last 30 days, or never).
    #[schema(format = DateTime)]
    pub last_received_at: Option<String>,
    /// With a silence watch: whether it is silent past its deadline now (`null`: no watch).
    pub silent: Option<bool>,
}

impl From<&Source> for SourceView {
    fn from(s: &Source) -> SourceView {
        SourceView {
            id: s.id.clone(),
            tenant_id: s.tenant.clone(),
            name: s.name.clone(),
            verify: VerifyView {
                scheme: s.scheme,
                header: s.header.clone(),
                tolerance_s: s.tolerance_s,
            },
            event_type: s.event_type.clone(),
            expect_every_s: s.watch.map(|w| w.expect_every_s),
            grace_s: s.watch.map(|w| w.grace_s),
            created_at: rfc3339(s.created_at_ms),
            updated_at: rfc3339(s.updated_at_ms),
            last_received_at: None,
            silent: None,
        }
    }
}

/// A source's view with what it last received and whether it is silent.
async fn view(s: &ApiState, scope: &TenantScope, src: &Source) -> Result<SourceView, ApiError> {
    let mut v = SourceView::from(src);
    v.last_received_at = s
        .store
        .source_activity(&src.id)
        .await?
        .last_received_ms
        .map(rfc3339);
    if src.watch.is_some() {
        let live = s.watches.live(scope.shard, src.id.as_str()).await?;
        v.silent = Some(live.status == crate::monitors::state::LiveStatus::Down);
    }
    Ok(v)
}

/// A refused delivery of a source.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefusalView {
    #[schema(format = DateTime)]
    pub at: String,
    /// Why it was refused (never what the signature should have been).
    pub reason: String,
    /// The sender's address, as the edge saw it (through `web.trusted_proxies`).
    pub sender_ip: Option<String>,
}

/// A source with its URL token: shown at creation and rotation only.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceWithToken {
    #[serde(flatten)]
    pub source: SourceView,
    /// The URL token. It is stored only as a keyed hash.
    pub token: String,
    /// Where the platform sends its webhooks: `/v1/hooks/{token}` on the edge listener.
    pub url: String,
}

impl SourceWithToken {
    fn new(s: &Source, token: String) -> SourceWithToken {
        SourceWithToken {
            source: SourceView::from(s),
            url: format!("/v1/hooks/{token}"),
            token,
        }
    }
}

/// The path of one source.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SourcePath {
    source_id: SourceId,
}

impl PathParams for SourcePath {
    const WHAT: &'static str = "source";
}

/// Creates a source; its URL token is shown this once.
#[utoipa::path(
    post,
    path = "/sources",
    tag = "sources",
    operation_id = "create_source",
    request_body = SourceSpec,
    responses((status = 201, description = "Created; the token is shown this once.", body = SourceWithToken), WriteErrors),
)]
pub async fn create(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiJson(spec): ApiJson<SourceSpec>,
) -> Result<Response, ApiError> {
    let created = create_source(&s, &scope, &spec).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `create_source`.
pub async fn create_source(
    s: &ApiState,
    scope: &TenantScope,
    spec: &SourceSpec,
) -> Result<SourceWithToken, ApiError> {
    spec.validate()
        .map_err(|e| ApiError::invalid("invalid_source", &e))?;
    let (source, token) = s.store.create_source(&scope.tenant, spec).await?;
    if let Some(subject) = Subject::source(&source, scope.shard) {
        s.watches.describe(subject).await?;
    }
    Ok(SourceWithToken::new(&source, token))
}

/// Lists the tenant's sources.
#[utoipa::path(
    get,
    path = "/sources",
    tag = "sources",
    operation_id = "list_sources",
    responses((status = 200, description = "The tenant's sources.", body = Listing<SourceView>), ReadErrors),
)]
pub async fn list(State(s): State<ApiState>, scope: TenantScope) -> Result<Response, ApiError> {
    Ok(list_sources(&s, &scope).await?.into_response())
}

/// `list_sources`.
pub async fn list_sources(
    s: &ApiState,
    scope: &TenantScope,
) -> Result<Listing<SourceView>, ApiError> {
    let sources = s.store.sources_of(&scope.tenant).await?;
    let mut data = Vec::with_capacity(sources.len());
    for src in &sources {
        data.push(view(s, scope, src).await?);
    }
    Ok(Listing { data })
}

/// Reads a source.
#[utoipa::path(
    get,
    path = "/sources/{source_id}",
    tag = "sources",
    operation_id = "read_source",
    params(SourcePath),
    responses((status = 200, description = "The source.", body = SourceView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<SourcePath>,
) -> Result<Response, ApiError> {
    Ok(Json(read_source(&s, &scope, &p.source_id).await?).into_response())
}

/// `read_source`.
pub async fn read_source(
    s: &ApiState,
    scope: &TenantScope,
    id: &SourceId,
) -> Result<SourceView, ApiError> {
    let source = source_of(s, scope, id).await?;
    view(s, scope, &source).await
}

/// The source's last refused deliveries (at most 20, 30 days), newest first.
#[utoipa::path(
    get,
    path = "/sources/{source_id}/refusals",
    tag = "sources",
    operation_id = "source_refusals",
    params(SourcePath),
    responses((status = 200, description = "Refused deliveries, newest first.", body = Listing<RefusalView>), ReadErrors),
)]
pub async fn refusals(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<SourcePath>,
) -> Result<Response, ApiError> {
    Ok(source_refusals(&s, &scope, &p.source_id)
        .await?
        .into_response())
}

/// `source_refusals`.
pub async fn source_refusals(
    s: &ApiState,
    scope: &TenantScope,
    id: &SourceId,
) -> Result<Listing<RefusalView>, ApiError> {
    let source = source_of(s, scope, id).await?;
    let activity = s.store.source_activity(&source.id).await?;
    Ok(Listing {
        data: activity
            .refusals
            .into_iter()
            .map(|r| RefusalView {
                at: rfc3339(r.at_ms),
                reason: r.reason,
                sender_ip: r.sender_ip,
            })
            .collect::<Vec<_>>(),
    })
}

/// Deletes a source and its silence watch.
#[utoipa::path(
    delete,
    path = "/sources/{source_id}",
    tag = "sources",
    operation_id = "delete_source",
    params(SourcePath),
    responses((status = 204, description = "Deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<SourcePath>,
) -> Result<Response, ApiError> {
    delete_source(&s, &scope, &p.source_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `delete_source`.
pub async fn delete_source(
    s: &ApiState,
    scope: &TenantScope,
    id: &SourceId,
) -> Result<(), ApiError> {
    if delete_watched(s, &scope.tenant, scope.shard, Watched::Source(id)).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("source"))
    }
}

/// Replaces the URL token; the old one stops working at once.
#[utoipa::path(
    post,
    path = "/sources/{source_id}/rotate-token",
    tag = "sources",
    operation_id = "rotate_source_token",
    params(SourcePath),
    responses((status = 200, description = "The source with its new token, shown this once.", body = SourceWithToken), WriteErrors),
)]
pub async fn rotate_token(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<SourcePath>,
) -> Result<Response, ApiError> {
    Ok(Json(rotate_source_token(&s, &scope, &p.source_id).await?).into_response())
}

/// `rotate_source_token`.
pub async fn rotate_source_token(
    s: &ApiState,
    scope: &TenantScope,
    id: &SourceId,
) -> Result<SourceWithToken, ApiError> {
    let rotated = s.store.rotate_source_token(&scope.tenant, id).await?;
    rotated
        .map(|(src, token)| SourceWithToken::new(&src, token))
        .ok_or_else(|| ApiError::not_found("source"))
}

/// The source's silence incidents, newest first.
#[utoipa::path(
    get,
    path = "/sources/{source_id}/incidents",
    tag = "sources",
    operation_id = "source_incidents",
    params(SourcePath, HistoryQuery),
    responses((status = 200, description = "Incidents, newest first.", body = Listing<Incident>), ReadErrors),
)]
pub async fn incidents(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<SourcePath>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    Ok(source_incidents(&s, &scope, &p.source_id, &q)
        .await?
        .into_response())
}

/// `source_incidents`.
pub async fn source_incidents(
    s: &ApiState,
    scope: &TenantScope,
    id: &SourceId,
    q: &HistoryQuery,
) -> Result<Listing<Incident>, ApiError> {
    q.limit()?;
    source_of(s, scope, id).await?;
    incidents_of(s, scope, id.as_str(), q).await
}

/// The source's recent status records, newest first.
#[utoipa::path(
    get,
    path = "/sources/{source_id}/checks",
    tag = "sources",
    operation_id = "source_checks",
    params(SourcePath, HistoryQuery),
    responses((status = 200, description = "Status records, newest first.", body = Listing<Check>), ReadErrors),
)]
pub async fn checks(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<SourcePath>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    Ok(source_checks(&s, &scope, &p.source_id, &q)
        .await?
        .into_response())
}

/// `source_checks`.
pub async fn source_checks(
    s: &ApiState,
    scope: &TenantScope,
    id: &SourceId,
    q: &HistoryQuery,
) -> Result<Listing<Check>, ApiError> {
    q.limit()?;
    source_of(s, scope, id).await?;
    checks_of(s, scope, id.as_str(), q).await
}

/// The tenant's source `id`, or the contract's 404.
async fn source_of(s: &ApiState, scope: &TenantScope, id: &SourceId) -> Result<Source, ApiError> {
    s.store
        .source(&scope.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("source"))
}
