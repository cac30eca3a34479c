//! Portal links: signed, expiring links into one tenant's portal (admin API only).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::scope::ApiState;
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::extract::{ApiJson, ApiPath, JsonBody, PathParams};
use crate::model::time::rfc3339;
use crate::model::{PortalLinkId, TenantId};

/// Lifetime of a link when the request does not say.
const DEFAULT_TTL_S: u64 = 3600;

/// A link to issue.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalLinkSpec {
    /// Seconds the link stays valid (default 3600, at most `web.portal_link_max_ttl_s`, which
    /// is itself at most a year and a day).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[schema(minimum = 1, maximum = 31622400)]
    pub ttl_s: Option<u64>,
}

impl JsonBody for PortalLinkSpec {
    const INVALID: &'static str = "invalid_portal_link";
}

/// An issued link: its URL signs the tenant in to its portal until `expires_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLinkIssued {
    pub id: PortalLinkId,
    /// The portal's sign-in URL (absolute when `web.public_url` is set).
    pub url: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// The path of a tenant's links.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LinksPath {
    id: TenantId,
}

impl PathParams for LinksPath {
    const WHAT: &'static str = "tenant";
}

/// The path of one link.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LinkPath {
    id: TenantId,
    link_id: PortalLinkId,
}

impl PathParams for LinkPath {
    const WHAT: &'static str = "portal link";
}

/// Issues a link into the tenant's portal; the tenant's developers open it to debug their
/// own deliveries. Revocable; it ends the sessions opened with it.
#[utoipa::path(
    post,
    path = "/admin/tenants/{id}/portal-links",
    tag = "tenants",
    operation_id = "create_portal_link",
    params(LinksPath),
    request_body(content = Option<PortalLinkSpec>, description = "An empty body issues a link valid for an hour."),
    responses((status = 201, description = "Issued.", body = PortalLinkIssued), WriteErrors),
)]
pub async fn create(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<LinksPath>,
    ApiJson(spec): ApiJson<PortalLinkSpec>,
) -> Result<Response, ApiError> {
    let ttl_s = spec.ttl_s.unwrap_or(DEFAULT_TTL_S);
    let max = s.portal_links.max_ttl_s;
    if ttl_s == 0 || ttl_s > max {
        return Err(ApiError::bad_request(
            "invalid_portal_link",
            format!("ttl_s must be between 1 and {max} (web.portal_link_max_ttl_s)"),
        ));
    }
    if s.store.tenant(&p.id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let (link, text) = s.store.create_portal_link(&p.id, ttl_s).await?;
    let base = s.portal_links.public_url.as_deref().unwrap_or_default();
    tracing::info!(tenant = %p.id, link = %link.id, ttl_s, "portal link issued");
    let body = PortalLinkIssued {
        id: link.id,
        url: format!("{base}/portal/link/{text}"),
        expires_at: rfc3339(link.expires_ms),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Revokes a portal link, and the portal sessions opened with it.
#[utoipa::path(
    delete,
    path = "/admin/tenants/{id}/portal-links/{link_id}",
    tag = "tenants",
    operation_id = "revoke_portal_link",
    params(LinkPath),
    responses((status = 204, description = "Revoked."), ReadErrors),
)]
pub async fn revoke(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<LinkPath>,
) -> Result<Response, ApiError> {
    if !s.store.revoke_portal_link(&p.id, &p.link_id).await? {
        return Err(ApiError::not_found("portal link"));
    }
    tracing::info!(tenant = %p.id, link = %p.link_id, "portal link revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
