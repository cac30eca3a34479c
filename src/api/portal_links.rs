//! Portal links: signed, expiring links into one tenant's portal (admin API only).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Listing;
use super::scope::{ApiState, RequestHost};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, JsonBody, PathParams};
use crate::model::time::rfc3339;
use crate::model::{PortalLinkId, TenantId};

/// Lifetime of a link when the request does not say.
const DEFAULT_TTL_S: u64 = 3600;

/// A link to issue.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalLinkSpec {
    /// Seconds the link stays valid (default 3600, at most `web.portal_link_max_ttl_s`; the
    /// served description states this deployment's ceiling).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[schema(minimum = 1, maximum = 31622400)]
    pub ttl_s: Option<u64>,
    /// Whether the link signs in once only (default `web.portal_link_single_use`, true):
    /// its first use becomes a session, and a second use is refused.
    #[serde(default)]
    pub single_use: Option<bool>,
}

impl JsonBody for PortalLinkSpec {
    const INVALID: &'static str = "invalid_portal_link";
}

/// An issued link: its URL signs the tenant in to its portal until `expires_at`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLinkIssued {
    pub id: PortalLinkId,
    /// The portal's sign-in URL: under `web.public_url`, else under the edge listener.
    pub url: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub single_use: bool,
}

/// A live link (never its URL, which is shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalLinkView {
    pub id: PortalLinkId,
    #[schema(format = DateTime)]
    pub created_at: Option<String>,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub single_use: bool,
    /// When a single-use link was exchanged for a session; `null` while unused.
    #[schema(format = DateTime)]
    pub used_at: Option<String>,
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
    host: RequestHost,
    ApiPath(p): ApiPath<LinksPath>,
    ApiJson(spec): ApiJson<PortalLinkSpec>,
) -> Result<Response, ApiError> {
    let issued = create_portal_link(&s, &p.id, &spec, host.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// `create_portal_link`; `host` is the one the request was sent to (see
/// [`super::scope::PortalLinkSettings::base`]).
pub async fn create_portal_link(
    s: &ApiState,
    tenant: &TenantId,
    spec: &PortalLinkSpec,
    host: Option<&str>,
) -> Result<PortalLinkIssued, ApiError> {
    let ttl_s = spec.ttl_s.unwrap_or(DEFAULT_TTL_S);
    let max = s.portal_links.max_ttl_s;
    if ttl_s == 0 || ttl_s > max {
        return Err(ApiError::bad_request(
            "invalid_portal_link",
            format!("ttl_s must be between 1 and {max} (web.portal_link_max_ttl_s)"),
        ));
    }
    if s.store.tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let single_use = spec.single_use.unwrap_or(s.portal_links.single_use);
    let (link, text) = s
        .store
        .create_portal_link(tenant, ttl_s, single_use)
        .await?;
    let base = s.portal_links.base(host);
    tracing::info!(tenant = %tenant, link = %link.id, ttl_s, single_use, "portal link issued");
    Ok(PortalLinkIssued {
        id: link.id,
        url: format!("{base}/portal/link/{text}"),
        expires_at: rfc3339(link.expires_ms),
        single_use,
    })
}

/// Lists the tenant's live links, soonest to expire first.
#[utoipa::path(
    get,
    path = "/admin/tenants/{id}/portal-links",
    tag = "tenants",
    operation_id = "list_portal_links",
    params(LinksPath),
    responses((status = 200, description = "The live links.", body = Listing<PortalLinkView>), ReadErrors),
)]
pub async fn list(
    State(s): State<ApiState>,
    ApiPath(p): ApiPath<LinksPath>,
) -> Result<Response, ApiError> {
    Ok(list_portal_links(&s, &p.id).await?.into_response())
}

/// `list_portal_links`.
pub async fn list_portal_links(
    s: &ApiState,
    tenant: &TenantId,
) -> Result<Listing<PortalLinkView>, ApiError> {
    if s.store.tenant(tenant).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let links = s.store.portal_links(tenant).await?;
    Ok(Listing {
        data: links
            .into_iter()
            .map(|l| PortalLinkView {
                id: l.link.id,
                created_at: (l.link.created_ms > 0).then(|| rfc3339(l.link.created_ms)),
                expires_at: rfc3339(l.link.expires_ms),
                single_use: l.link.single_use,
                used_at: l.used_ms.map(rfc3339),
            })
            .collect::<Vec<_>>(),
    })
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
    revoke_portal_link(&s, &p.id, &p.link_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `revoke_portal_link`.
pub async fn revoke_portal_link(
    s: &ApiState,
    tenant: &TenantId,
    link: &PortalLinkId,
) -> Result<(), ApiError> {
    if !s.store.revoke_portal_link(tenant, link).await? {
        return Err(ApiError::not_found("portal link"));
    }
    tracing::info!(tenant = %tenant, link = %link, "portal link revoked");
    Ok(())
}
