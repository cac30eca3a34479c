//! Tenants and their tokens (admin API only).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Page;
use super::scope::ApiState;
use super::watched::purge;
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::model::time::rfc3339;
use crate::model::{
    CatalogueMode, ExternalId, KeepHeaders, Name, Origin, RateLimit, TenantId, TenantPatch,
    TenantSpec, TokenId,
};
use crate::redis::invalidation::Invalidation;
use crate::store::tokens::generate_token;
use crate::store::{TenantRecord, TokenInfo};
use crate::telemetry::current_request_id;

/// Largest page of a listing.
const MAX_PAGE: usize = 500;
/// Default page of a listing.
const DEFAULT_PAGE: usize = 100;

impl JsonBody for TenantSpec {
    const INVALID: &'static str = "invalid_tenant";
}

impl JsonBody for TenantPatch {
    const INVALID: &'static str = "invalid_tenant";
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    pub id: TenantId,
    pub name: Name,
    pub external_id: Option<ExternalId>,
    pub active: bool,
    pub rate_limit: Option<RateLimit>,
    /// How ingest holds events to the tenant's event catalogue.
    pub catalogue: CatalogueMode,
    /// Ingest request headers kept with each event (lowercase).
    pub keep_headers: KeepHeaders,
    /// `api` or `config`: who created the tenant.
    pub origin: Origin,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&TenantRecord> for TenantView {
    fn from(r: &TenantRecord) -> TenantView {
        TenantView {
            id: r.id.clone(),
            name: r.name.clone(),
            external_id: r.external_id.clone(),
            active: r.active,
            rate_limit: r.rate_limit,
            catalogue: r.catalogue,
            keep_headers: r.keep_headers.clone(),
            origin: r.origin,
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
        }
    }
}

/// A new tenant, with its first token: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    #[serde(flatten)]
    pub tenant: TenantView,
    /// The tenant's first bearer token. It is stored only as a keyed hash.
    pub token: String,
    pub token_id: TokenId,
}

/// A newly issued token: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssued {
    pub id: TokenId,
    pub token: String,
}

/// A token as listed: never its text.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: TokenId,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
}

impl From<&TokenInfo> for TokenView {
    fn from(t: &TokenInfo) -> TokenView {
        TokenView {
            id: t.id.clone(),
            created_at: t.created_at_ms.map(rfc3339),
        }
    }
}

/// The query of the tenant listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// The tenant with this external id (no paging).
    #[serde(default)]
    pub external_id: Option<ExternalId>,
    /// The `next` of the previous page.
    #[serde(default)]
    pub after: Option<TenantId>,
    /// Tenants per page (default 100).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// The path of one tenant.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    id: TenantId,
}

impl PathParams for TenantPath {
    const WHAT: &'static str = "tenant";
}

/// The path of one token.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    id: TenantId,
    token_id: TokenId,
}

impl PathParams for TokenPath {
    const WHAT: &'static str = "token";
}

/// Creates a tenant and its first token.
#[utoipa::path(
    post,
    path = "/admin/tenants",
    tag = "tenants",
    operation_id = "create_tenant",
    request_body = TenantSpec,
    responses((status = 201, description = "Created; the token is shown this once.", body = TenantCreated), WriteErrors),
)]
pub async fn create(
    State(s): State<ApiState>,
    ApiJson(spec): ApiJson<TenantSpec>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::CREATED, Json(create_tenant(&s, &spec).await?)).into_response())
}

/// `create_tenant`: the tenant and its first token.
pub async fn create_tenant(s: &ApiState, spec: &TenantSpec) -> Result<TenantCreated, ApiError> {
    let (token_id, token) = generate_token()?;
    let hash = s.store.crypto().hash_token(&token);
    let record = s
        .store
        .create_tenant(None, spec, Origin::Api, Some((&token_id, &hash)))
        .await?;
    tracing::info!(request_id = %current_request_id(), tenant = %record.id, "tenant created");
    Ok(TenantCreated {
        tenant: TenantView::from(&record),
        token,
        token_id,
    })
}

/// Lists tenants in id order (ids sort by creation), a page at a time.
#[utoipa::path(
    get,
    path = "/admin/tenants",
    tag = "tenants",
    operation_id = "list_tenants",
    params(TenantQuery),
    responses((status = 200, description = "A page of tenants.", body = Page<TenantView>), ReadErrors),
)]
pub async fn list(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(list_tenants(&s, &q).await?).into_response())
}

/// `list_tenants`: a page of tenants, or the one with an external id.
pub async fn list_tenants(s: &ApiState, q: &TenantQuery) -> Result<Page<TenantView>, ApiError> {
    if let Some(ext) = &q.external_id {
        let found = s.store.tenant_by_external_id(ext).await?;
        let data = found.iter().map(TenantView::from).collect();
        return Ok(Page { data, next: None });
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE as u64) as usize;
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let (records, more) = s.store.list_tenants(q.after.as_ref(), limit).await?;
    let next = if more {
        records.last().map(|r| r.id.to_string())
    } else {
        None
    };
    let data = records.iter().map(TenantView::from).collect();
    Ok(Page { data, next })
}

/// Reads a tenant.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}",
    tag = "tenants",
    operation_id = "read_tenant",
    params(TenantPath),
    responses((status = 200, description = "The tenant.", body = TenantView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    Ok(Json(read_tenant(&s, &p.id).await?).into_response())
}

/// `read_tenant`.
pub async fn read_tenant(s: &ApiState, id: &TenantId) -> Result<TenantView, ApiError> {
    match s.store.tenant(id).await? {
        Some(r) => Ok(TenantView::from(&r)),
        None => Err(ApiError::not_found("tenant")),
    }
}

/// Changes a tenant: `name`, `active`, `rate_limit` (`null` removes it), `external_id`.
/// A disabled tenant gets 403 on every instance within a second.
#[utoipa::path(
    patch,
    path = "/admin/tenants/{id}",
    tag = "tenants",
    operation_id = "update_tenant",
    params(TenantPath),
    request_body(content = Option<TenantPatch>, description = "Only the fields to change; an empty body changes nothing."),
    responses((status = 200, description = "The tenant as changed.", body = TenantView), WriteErrors),
)]
pub async fn update(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<TenantPath>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Response, ApiError> {
    Ok(Json(update_tenant(&s, &p.id, &patch).await?).into_response())
}

/// `update_tenant`.
pub async fn update_tenant(
    s: &ApiState,
    id: &TenantId,
    patch: &TenantPatch,
) -> Result<TenantView, ApiError> {
    let record = s
        .store
        .update_tenant(id, patch)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    // This instance drops its entry now; the others when the published invalidation arrives.
    s.auth.forget(&Invalidation::Tenant(id.clone())).await;
    tracing::info!(request_id = %current_request_id(), tenant = %id, active = record.active, "tenant updated");
    Ok(TenantView::from(&record))
}

/// Deletes a tenant, its tokens, targets, sources and monitors.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}",
    tag = "tenants",
    operation_id = "delete_tenant",
    params(TenantPath),
    responses((status = 204, description = "Deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    delete_tenant(&s, &p.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `delete_tenant`.
pub async fn delete_tenant(s: &ApiState, id: &TenantId) -> Result<(), ApiError> {
    if !s.store.delete_tenant(id).await? {
        return Err(ApiError::not_found("tenant"));
    }
    s.auth.forget(&Invalidation::Tenant(id.clone())).await;
    // Its targets, sources and monitors go too (the tenant is already gone, so nothing new
    // can reach them), with the monitors' live state so no alert outlives them.
    purge(s, id).await;
    tracing::info!(request_id = %current_request_id(), tenant = %id, "tenant deleted");
    Ok(())
}

/// Issues a new token for the tenant (rotation: issue, switch, revoke the old one).
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/tokens",
    tag = "tenants",
    operation_id = "issue_token",
    params(TenantPath),
    responses((status = 201, description = "Issued; the token is shown this once.", body = TokenIssued), WriteErrors),
)]
pub async fn issue(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    Ok((StatusCode::CREATED, Json(issue_token(&s, &p.id).await?)).into_response())
}

/// `issue_token`.
pub async fn issue_token(s: &ApiState, tenant: &TenantId) -> Result<TokenIssued, ApiError> {
    let issued = s
        .store
        .issue_token(tenant)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    tracing::info!(request_id = %current_request_id(), tenant = %tenant, token_id = %issued.id, "token issued");
    Ok(TokenIssued {
        id: issued.id,
        token: issued.token,
    })
}

/// Lists the tenant's tokens (ids and creation times, never their text).
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/tokens",
    tag = "tenants",
    operation_id = "list_tokens",
    params(TenantPath),
    responses((status = 200, description = "The tenant's tokens.", body = Page<TokenView>), ReadErrors),
)]
pub async fn tokens(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<TenantPath>,
) -> Result<Response, ApiError> {
    Ok(Json(list_tokens(&s, &p.id).await?).into_response())
}

/// `list_tokens`.
pub async fn list_tokens(s: &ApiState, tenant: &TenantId) -> Result<Page<TokenView>, ApiError> {
    if s.store.tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let tokens = s.store.list_tokens(tenant).await?;
    Ok(Page {
        data: tokens.iter().map(TokenView::from).collect(),
        next: None,
    })
}

/// Revokes a token, on every instance within a second.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}/tokens/{token_id}",
    tag = "tenants",
    operation_id = "revoke_token",
    params(TokenPath),
    responses((status = 204, description = "Revoked."), ReadErrors),
)]
pub async fn revoke(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<TokenPath>,
) -> Result<Response, ApiError> {
    revoke_token(&s, &p.id, &p.token_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `revoke_token`.
pub async fn revoke_token(
    s: &ApiState,
    tenant: &TenantId,
    token_id: &TokenId,
) -> Result<(), ApiError> {
    let Some(hash) = s.store.revoke_token(tenant, token_id).await? else {
        return Err(ApiError::not_found("token"));
    };
    // This instance refuses the token at once; the others hear of it by invalidation.
    s.auth.forget(&Invalidation::Token(hash)).await;
    tracing::info!(request_id = %current_request_id(), tenant = %tenant, token_id = %token_id, "token revoked");
    Ok(())
}
