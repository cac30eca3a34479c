//! What the pages share.

use std::sync::Arc;

use crate::config::WebConfig;
use crate::store::Store;

use super::client::ApiClient;
use super::session::Sessions;

/// What the pages share.
#[derive(Debug, Clone)]
pub struct WebState {
    pub api: ApiClient,
    pub sessions: Sessions,
    pub store: Store,
    /// Tenant tokens, for the portal's sign-in.
    pub auth: Arc<crate::auth::Auth>,
    pub settings: Arc<WebSettings>,
}

/// The web settings, resolved once.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Portal links are `public_url` + path when it is set.
    pub public_url: Option<String>,
    /// The portal's `frame-ancestors` sources; empty: `'none'`.
    pub frame_ancestors: Vec<String>,
    /// Session cookies carry `Secure` (the edge is reached over TLS).
    pub secure_cookies: bool,
}

impl WebSettings {
    pub fn new(web: &WebConfig, tls_only_edge: bool) -> Self {
        let public_https = web
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        WebSettings {
            public_url: web
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            frame_ancestors: web.frame_ancestors.clone(),
            secure_cookies: public_https || tls_only_edge,
        }
    }
}
