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

/// How a request reached the gateway: over TLS or not, and from which client. Forwarded
/// headers (`X-Forwarded-Proto`, `X-Forwarded-For`) are believed only from a peer listed in
/// `web.trusted_proxies`: any client can send them, and a client-sent `https` must not make a
/// cleartext listener's cookie `Secure`, nor a made-up address dodge the sign-in throttle.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// On the TLS listener, or forwarded as `https` by a trusted proxy: cookies are `Secure`.
    pub tls: bool,
    /// The client's address: the peer's, or the one a trusted proxy names.
    pub client: Option<std::net::IpAddr>,
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

/// How a request came: over TLS or not, from which client address; forwarded headers are
/// believed only from `trusted_proxies`.
pub fn transport_of(parts: &http::request::Parts, trusted_proxies: &[ipnet::IpNet]) -> Transport {
    {
        let on_tls = parts
            .extensions
            .get::<crate::edge::service::OverTls>()
            .is_some();
        let peer = parts
            .extensions
            .get::<crate::edge::service::Peer>()
            .map(|p| p.0.ip().to_canonical());
        let trusted = |ip: &std::net::IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
        let Some(peer) = peer.filter(|p| trusted(p)) else {
            return Transport {
                tls: on_tls,
                client: peer,
            };
        };
        let forwarded_tls = parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        // The client is the last address in the chain that is not one of our proxies: what
        // comes before it, the client itself could have written. An entry that is not an
        // address ends the walk at the proxy that wrote it.
        let entries: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let client = client_behind(peer, &entries, trusted);
        Transport {
            tls: on_tls || forwarded_tls,
            client: Some(client),
        }
    }
}

/// The client behind a trusted `peer`: walking `X-Forwarded-For` from the right, past our
/// own proxies, the first address that is not one; an entry that is not an address ends the
/// walk at the proxy that wrote it.
fn client_behind(
    peer: std::net::IpAddr,
    entries: &[&str],
    trusted: impl Fn(&std::net::IpAddr) -> bool,
) -> std::net::IpAddr {
    let mut client = peer;
    for entry in entries.iter().rev() {
        match forwarded_address(entry) {
            Some(ip) if trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => break,
        }
    }
    client
}

/// An `X-Forwarded-For` entry's address: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`; IPv4-mapped IPv6 addresses count as IPv4.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))?;
    Some(ip.to_canonical())
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
                let now = self
                    .store
                    .crypto()
                    .hash_token(self.api.admin_token().expose());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_address_our_proxies_did_not_write() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap_or([0, 0, 0, 0].into());
        let proxies = |a: &std::net::IpAddr| a.to_string().starts_with("10.");
        let peer = ip("10.0.0.1");
        let walk = |entries: &[&str]| client_behind(peer, entries, proxies);
        assert_eq!(walk(&["203.0.113.7"]), ip("203.0.113.7"));
        // What the client wrote before it is ignored.
        assert_eq!(
            walk(&["6.6.6.6", "203.0.113.7", "10.0.0.2"]),
            ip("203.0.113.7")
        );
        assert_eq!(walk(&["203.0.113.7:4711"]), ip("203.0.113.7"));
        assert_eq!(walk(&["[2001:db8::1]:4711"]), ip("2001:db8::1"));
        assert_eq!(walk(&["::ffff:203.0.113.7"]), ip("203.0.113.7"));
        // Garbage ends the walk at the proxy that passed it on, not at what precedes it.
        assert_eq!(walk(&["6.6.6.6", "unknown", "10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(walk(&[]), peer);
    }
}
