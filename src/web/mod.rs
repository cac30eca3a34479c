//! The faces for people: the operator console (`/console`, admin listener) and the tenant
//! portal (`/portal`, edge listeners).
//!
//! Pages are rendered on the server from [`maud`] templates, which escape every value they
//! are given: what tenants and senders control (event types, bodies, URLs, header values,
//! names) only ever reaches a page as text. Scripts come from the binary ([`assets`]): htmx
//! for polling and partial updates, uPlot for charts, and a small script of ours for copy
//! buttons, confirmations and charts; the Content-Security-Policy allows nothing else.
//!
//! Every read and change goes through the admin API's handlers in process ([`client`]), so
//! no rule is written twice. The tenant pages ([`pages`]) are one set, mounted for the
//! operator under `/console/tenants/{id}` and for a tenant under `/portal`, where the tenant
//! comes from the session only: a portal page can only ever name its own tenant's resources,
//! and another tenant's ids are not found.
//!
//! | module | what |
//! | --- | --- |
//! | [`session`] | server-side sessions in Redis, cookies, CSRF tokens |
//! | [`guard`] | the sign-in checks and the security headers of every answer |
//! | [`client`] | the in-process API client |
//! | [`form`] | form bodies |
//! | [`layout`] | the page shell and small pieces shared by pages |
//! | [`pages`] | the pages |
//! | [`assets`] | the vendored scripts and the stylesheet |

pub mod assets;
pub mod client;
pub mod form;
pub mod guard;
pub mod layout;
pub mod pages;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::config::WebConfig;
use crate::store::Store;

pub use client::ApiClient;
pub use session::Sessions;

/// Which face a request is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ui {
    Console,
    Portal,
}

impl Ui {
    /// The path every page of this face is under.
    pub fn root(self) -> &'static str {
        match self {
            Ui::Console => "/console",
            Ui::Portal => "/portal",
        }
    }
}

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

/// The console's routes (admin listener).
pub fn console(state: WebState) -> Router {
    pages::console_routes(state)
}

/// The portal's routes (edge listeners).
pub fn portal(state: WebState) -> Router {
    pages::portal_routes(state)
}

/// Why a page could not be served. Each maps to a status and an HTML page (or, signed out,
/// to the sign-in page).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The API refused or failed; its status and message are shown.
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No live session: go and sign in.
    #[error("sign in first")]
    SignedOut(Ui),
    /// A state-changing form without this session's CSRF token.
    #[error("this form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the queue is unreachable: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("{0}")]
    Internal(String),
}

impl WebError {
    pub fn internal(e: impl std::fmt::Display) -> WebError {
        WebError::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebError::Api { status, .. } => *status,
            WebError::SignedOut(_) => StatusCode::UNAUTHORIZED,
            WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> WebError {
        match e {
            crate::store::StoreError::Redis(e) => WebError::Redis(e),
            other => WebError::internal(other),
        }
    }
}

impl From<crate::crypto::CryptoError> for WebError {
    fn from(e: crate::crypto::CryptoError) -> WebError {
        WebError::internal(e)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::SignedOut(ui) = self {
            return layout::see_other(&format!("{}/login", ui.root()));
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "page failed");
        }
        (status, layout::error_page(status, &self.to_string())).into_response()
    }
}
