//! What the management handlers share, and the tenant a request acts for.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::auth::Auth;
use crate::history::History;
use crate::http::body::BodyLimits;
use crate::http::error::ApiError;
use crate::http::extract::BodyLimited;
use crate::model::TenantId;
use crate::monitors::state::Watches;
use crate::redis::keyspace::shard_of;
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
    /// Compiles and runs jq programs (transformations, status maps).
    pub sandbox: crate::sandbox::Sandbox,
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
    /// Sends test deliveries (`…/targets/{id}/test`), through the same SSRF guard and
    /// timeout as the dispatcher's.
    pub client: crate::dispatch::client::DeliveryClient,
}

/// How portal links are issued.
#[derive(Debug, Clone)]
pub struct PortalLinkSettings {
    /// Links are absolute under this base URL when it is set (`web.public_url`).
    pub public_url: Option<String>,
    /// Else under the edge listener: its scheme and address (TLS preferred).
    pub edge: Option<(&'static str, std::net::SocketAddr)>,
    /// The longest lifetime a link may be given.
    pub max_ttl_s: u64,
    /// Whether a link signs in once only, when the request does not say.
    pub single_use: bool,
}

impl PortalLinkSettings {
    /// The base URL of the portal: the public URL, else the edge listener's address (an
    /// unspecified address, `0.0.0.0`, takes the host the admin request was sent to, which
    /// names this machine as its operator reaches it).
    pub fn base(&self, request_host: Option<&str>) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let Some((scheme, addr)) = self.edge else {
            return String::new();
        };
        let host = if addr.ip().is_unspecified() {
            request_host.map_or_else(|| "localhost".to_owned(), str::to_owned)
        } else {
            match addr.ip() {
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            }
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        if addr.port() == default_port {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", addr.port())
        }
    }
}

/// The host (no port) a request was sent to, when its `Host` header names one well.
#[derive(Debug, Clone)]
pub struct RequestHost(Option<String>);

impl RequestHost {
    pub fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestHost {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<RequestHost, Self::Rejection> {
        let header = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.host());
        Ok(RequestHost(header.and_then(host_of)))
    }
}

/// The host of a `Host` value (`name[:port]`, `[v6][:port]`), parsed as a URL host.
fn host_of(value: &str) -> Option<String> {
    let host = match value.strip_prefix('[') {
        Some(rest) => &value[..rest.find(']')? + 2],
        None => value.split(':').next()?,
    };
    let parsed = url::Host::parse(host).ok()?;
    Some(match parsed {
        url::Host::Ipv6(v6) => format!("[{v6}]"),
        other => other.to_string(),
    })
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
    /// This process's readiness, whose log-store verdict the home page repeats.
    pub readiness: Arc<super::health::Readiness>,
}

#[cfg(test)]
mod portal_base_tests {
    use super::*;

    fn settings(public: Option<&str>, edge: Option<(&'static str, &str)>) -> PortalLinkSettings {
        PortalLinkSettings {
            public_url: public.map(str::to_owned),
            edge: edge.map(|(s, a)| (s, a.parse().expect("an address"))),
            max_ttl_s: 3600,
            single_use: true,
        }
    }

    #[test]
    fn links_are_absolute_under_the_public_url_or_the_edge_listener() {
        let s = settings(
            Some("https://hooks.example.com"),
            Some(("https", "127.0.0.1:8443")),
        );
        assert_eq!(s.base(Some("admin.internal")), "https://hooks.example.com");
        let s = settings(None, Some(("https", "127.0.0.1:8443")));
        assert_eq!(s.base(Some("admin.internal")), "https://127.0.0.1:8443");
        let s = settings(None, Some(("https", "0.0.0.0:443")));
        assert_eq!(s.base(Some("gw.example.net")), "https://gw.example.net");
        assert_eq!(s.base(None), "https://localhost");
        let s = settings(None, Some(("http", "[::1]:8080")));
        assert_eq!(s.base(None), "http://[::1]:8080");
        assert_eq!(settings(None, None).base(None), "");
    }

    #[test]
    fn only_a_well_formed_host_is_taken_from_the_request() {
        assert_eq!(
            host_of("gw.example.net:9090").as_deref(),
            Some("gw.example.net")
        );
        assert_eq!(host_of("[::1]:9090").as_deref(), Some("[::1]"));
        assert_eq!(host_of("a b"), None);
        assert_eq!(host_of("evil.com/x?"), None);
        assert_eq!(host_of(""), None);
    }
}
