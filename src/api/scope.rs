//! What the management handlers share, and the tenant a request acts for.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::auth::Auth;
use crate::body::BodyLimits;
use crate::error::ApiError;
use crate::extract::BodyLimited;
use crate::history::History;
use crate::keyspace::shard_of;
use crate::model::TenantId;
use crate::monitors::state::Watches;
use crate::store::{Deliveries, Store};

/// What the management handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub deliveries: Deliveries,
    /// Event reads and replays across Redis and the log store.
    pub history: History,
    /// This instance's auth cache, dropped at once after changes made here (other instances
    /// hear of them by invalidation).
    pub auth: Arc<Auth>,
    /// Live state of monitors and watched sources.
    pub watches: Watches,
    /// Bounds of management bodies.
    pub body_limits: BodyLimits,
    pub allow_private_targets: bool,
    /// How long a rotated target secret keeps signing, when the request does not say.
    pub rotation_overlap_ms: u64,
    pub shards: u16,
    /// How portal links are issued.
    pub portal_links: PortalLinkSettings,
    /// What the system status tells of this deployment.
    pub system: Arc<SystemFacts>,
}

/// How portal links are issued.
#[derive(Debug, Clone)]
pub struct PortalLinkSettings {
    /// Links are absolute under this base URL when it is set, paths otherwise.
    pub public_url: Option<String>,
    /// The longest lifetime a link may be given.
    pub max_ttl_s: u64,
}

impl BodyLimited for ApiState {
    fn body_limits(&self) -> &BodyLimits {
        &self.body_limits
    }
}

/// Set by the admin router's auth layer: the request acts for the tenant in its path.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdminScope;

/// The tenant a request acts for, and its shard.
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant: TenantId,
    pub shard: u16,
}

impl FromRequestParts<ApiState> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let tenant = if parts.extensions.get::<AdminScope>().is_some() {
            let params = RawPathParams::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::invalid_path())?;
            let id = params
                .iter()
                .find(|(k, _)| *k == "id")
                .and_then(|(_, v)| TenantId::parse(v).ok())
                .ok_or_else(|| ApiError::not_found("tenant"))?;
            if state.store.tenant(&id).await?.is_none() {
                return Err(ApiError::not_found("tenant"));
            }
            id
        } else {
            let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
            state.auth.authenticate_header(header).await?.id.clone()
        };
        let shard = shard_of(&tenant, state.shards);
        Ok(TenantScope { tenant, shard })
    }
}

/// What the system page and operators read of the running deployment.
#[derive(Debug)]
pub struct SystemFacts {
    /// The effective configuration as TOML, secrets redacted.
    pub config_toml: String,
    /// `redis.wait_aof`: whether each 202 waits for the AOF fsync.
    pub wait_aof: bool,
}
