//! What the pages share.

use std::sync::Arc;

use crate::config::WebConfig;
use crate::store::Store;

use super::session::Sessions;

/// What the pages share.
#[derive(Debug, Clone)]
pub struct WebState {
    /// The admin token: the console's sign-in compares with it.
    pub admin_token: crate::config::Secret,
    /// What the API's typed operations act on: the pages call them and render the typed
    /// views they return.
    pub core: crate::api::scope::ApiState,
    pub sessions: Sessions,
    pub store: Store,
    /// Tenant tokens, for the portal's sign-in.
    pub auth: Arc<crate::auth::Auth>,
    pub settings: Arc<WebSettings>,
    /// Failed sign-ins, counted across instances.
    pub throttle: super::throttle::SignInThrottle,
}

/// The web settings, resolved once.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The portal's `frame-ancestors` sources; empty: `'none'`.
    pub frame_ancestors: Vec<String>,
    /// Session cookies carry `Secure` whatever the request came over: the public URL is
    /// https (a proxy in front terminates TLS). Requests on the TLS listener are marked anyway.
    pub secure_cookies: bool,
    /// The proxies whose forwarded headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl WebSettings {
    pub fn new(web: &WebConfig) -> Self {
        WebSettings {
            frame_ancestors: web.frame_ancestors.clone(),
            secure_cookies: web
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
            // Validated with the config: a list that does not parse was refused at start.
            trusted_proxies: web.proxies().unwrap_or_default(),
        }
    }
}
