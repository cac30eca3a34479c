//! What stands in front of every page: the session check (and, for a state-changing form,
//! its CSRF token), and the security headers of every answer.

use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};

use super::error::WebError;
use super::face::Ui;
use super::form::{Form, MAX_FORM};
use super::session::{CookieSpec, Principal, Session};
use super::state::WebState;
use crate::crypto::{TokenHash, secrets_equal};
pub use crate::http::extract::client::{Transport, transport_of};

/// The console's session cookie: only ever sent to `/console` on the admin listener.
pub const CONSOLE_COOKIE: &str = "estafeta_console";
/// The portal's session cookie: only ever sent to `/portal` on the edge.
pub const PORTAL_COOKIE: &str = "estafeta_portal";
/// The double-submit cookie guarding the sign-in forms (before there is a session).
pub const SIGNIN_COOKIE: &str = "estafeta_signin";

/// The signed-in session of a request, put there by [`require_session`].
#[derive(Debug, Clone)]
pub struct Signed {
    pub session: Session,
    /// The cookie's value (to end the session).
    pub id: String,
}

impl FromRequestParts<WebState> for Transport {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &WebState,
    ) -> Result<Transport, std::convert::Infallible> {
        Ok(transport_of(parts, &state.settings.trusted_proxies))
    }
}

impl WebState {
    /// The session cookie of `ui`, for a request that came over `transport`.
    pub fn cookie(&self, ui: Ui, transport: Transport) -> CookieSpec {
        let secure = transport.tls || self.settings.secure_cookies;
        match ui {
            Ui::Console => CookieSpec {
                name: CONSOLE_COOKIE,
                path: "/console",
                secure,
                embeddable: false,
            },
            Ui::Portal => CookieSpec {
                name: PORTAL_COOKIE,
                path: "/portal",
                secure,
                // Browsers keep a cross-site (`SameSite=None`) cookie only when it is `Secure`,
                // and drop a `Secure` one set over cleartext: a portal reached over plain HTTP
                // keeps a first-party cookie that works, and is not embeddable there.
                embeddable: secure && !self.settings.frame_ancestors.is_empty(),
            },
        }
    }

    /// The sign-in forms' double-submit cookie of `ui`.
    pub fn signin_cookie(&self, ui: Ui, transport: Transport) -> CookieSpec {
        CookieSpec {
            name: SIGNIN_COOKIE,
            ..self.cookie(ui, transport)
        }
    }

    /// The name of `ui`'s session cookie.
    pub fn cookie_name(ui: Ui) -> &'static str {
        match ui {
            Ui::Console => CONSOLE_COOKIE,
            Ui::Portal => PORTAL_COOKIE,
        }
    }

    /// The live session of this request for `ui`, if any. A session of the other face (a
    /// portal session presented to the console, or the reverse) is no session here.
    pub async fn session(
        &self,
        ui: Ui,
        headers: &http::HeaderMap,
    ) -> Result<Option<Signed>, WebError> {
        let Some(id) = super::session::cookie(headers, Self::cookie_name(ui)) else {
            return Ok(None);
        };
        let Some(session) = self.sessions.read(id).await? else {
            return Ok(None);
        };
        let fits = match (&session.principal, ui) {
            // Signed in with the admin token the gateway has now (a changed token ends them).
            (Principal::Operator { admin }, Ui::Console) => {
                let now = self.store.crypto().hash_token(self.admin_token.expose());
                secrets_equal(admin.as_bytes(), now.to_hex().as_bytes())
            }
            (
                Principal::Tenant {
                    tenant,
                    link,
                    token,
                },
                Ui::Portal,
            ) => {
                // Signed in with a tenant token: that token must still be the tenant's.
                let token_live = match token.as_deref().map(TokenHash::from_hex) {
                    None => true,
                    Some(None) => false,
                    Some(Some(hash)) => self
                        .store
                        .token_owner(&hash)
                        .await?
                        .is_some_and(|o| o.tenant_id == *tenant),
                };
                let link_live = match link {
                    None => true,
                    Some(l) => match crate::model::PortalLinkId::parse(l) {
                        Ok(l) => self
                            .store
                            .portal_link(&l)
                            .await?
                            .is_some_and(|r| r.tenant == *tenant),
                        Err(_) => false,
                    },
                };
                let tenant_live = self.store.tenant(tenant).await?.is_some_and(|t| t.active);
                token_live && link_live && tenant_live
            }
            _ => false,
        };
        if !fits {
            return Ok(None);
        }
        Ok(Some(Signed {
            session,
            id: id.to_owned(),
        }))
    }
}

/// Lets a request through only with a live session of `ui`; a form must carry the session's
/// CSRF token (`_csrf`). The form is read here and handed on unchanged.
pub async fn require_session(
    State((state, ui)): State<(WebState, Ui)>,
    req: Request,
    next: Next,
) -> Result<Response, WebError> {
    let Some(signed) = state.session(ui, req.headers()).await? else {
        return Err(WebError::SignedOut(ui));
    };
    let (mut parts, body) = req.into_parts();
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        body
    } else {
        let bytes = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| WebError::BadRequest("the form is too large".into()))?;
        let form = Form::parse(&bytes);
        if !signed.session.csrf_matches(form.get("_csrf")) {
            return Err(WebError::Csrf);
        }
        axum::body::Body::from(bytes)
    };
    parts.extensions.insert(signed);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// The security headers of every page and asset of `ui`: a strict Content-Security-Policy
/// (scripts and styles from this origin only, nothing inline; frames only where the portal is
/// embedded), no sniffing, no referrer (a portal link must not leak through one), no caching of pages.
pub async fn security_headers(
    State((state, ui)): State<(WebState, Ui)>,
    req: Request,
    next: Next,
) -> Response {
    let is_asset = req.uri().path().contains("/assets/");
    let mut res = next.run(req).await;
    // A failed page, rendered where its face was not known: styled, with a way home.
    if let Some(crate::web::layout::PageError(message)) = res.extensions_mut().remove() {
        let status = res.status();
        let headers = std::mem::take(res.headers_mut());
        let page = crate::web::layout::error_page(Some(ui), status, &message);
        res = (status, page).into_response();
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                res.headers_mut().append(name, value.clone());
            }
        }
    }
    let ancestors = match ui {
        Ui::Portal if !state.settings.frame_ancestors.is_empty() => {
            state.settings.frame_ancestors.join(" ")
        }
        _ => "'none'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}"
    );
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if ui == Ui::Console || state.settings.frame_ancestors.is_empty() {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res.into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Signed, WebError> {
        parts
            .extensions
            .get::<Signed>()
            .cloned()
            .ok_or_else(|| WebError::Internal("page outside a session".into()))
    }
}
