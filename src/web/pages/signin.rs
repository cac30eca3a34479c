//! Signing in and out: the console with the admin token, the portal with a tenant token or
//! through a portal link.
//!
//! The sign-in forms come before any session, so their CSRF guard is a double-submit: the
//! form's hidden token must equal the `estafeta_signin` cookie set with the form (a page of
//! another site can set neither).

use crate::store::portal_links::Opened;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use maud::html;

use crate::crypto::{random_token, secrets_equal};
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Form;
use crate::web::guard::{SIGNIN_COOKIE, Signed, Transport};
use crate::web::layout::{Shell, page, see_other};
use crate::web::session::{Principal, cookie};
use crate::web::state::WebState;
use crate::web::throttle::Attempt;

/// How long a sign-in form stays valid.
const SIGNIN_FORM_S: u64 = 15 * 60;

fn render_form(
    state: &WebState,
    ui: Ui,
    transport: Transport,
    message: Option<&str>,
) -> Result<Response, WebError> {
    let csrf = random_token("")?;
    let (title, label, hint) = match ui {
        Ui::Console => (
            "Sign in",
            "Admin token",
            "The `admin.token` of the gateway's configuration.",
        ),
        Ui::Portal => (
            "Sign in",
            "Tenant token",
            "A bearer token of your tenant, or open the portal link you were given.",
        ),
    };
    let shell = Shell {
        ui,
        title,
        csrf: None,
        tenant: None,
        tab: "",
    };
    let body = html! {
        section.card {
            h1 { (title) }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form.stack method="post" action={ (ui.root()) "/login" } {
                input type="hidden" name="_csrf" value=(csrf);
                label { (label)
                    input type="password" name="token" id="token" autocomplete="current-password" required autofocus;
                }
                p.muted { (hint) }
                div { button type="submit" id="sign-in" { "Sign in" } }
            }
        }
    };
    let set = state.signin_cookie(ui, transport).set(&csrf, SIGNIN_FORM_S);
    let status = if message.is_some() {
        http::StatusCode::UNAUTHORIZED
    } else {
        http::StatusCode::OK
    };
    Ok((status, [(header::SET_COOKIE, set)], page(&shell, body)).into_response())
}

/// `GET /{console,portal}/login`.
pub async fn form(
    state: WebState,
    headers: HeaderMap,
    transport: Transport,
    ui: Ui,
) -> Result<Response, WebError> {
    if state.session(ui, &headers).await?.is_some() {
        return Ok(see_other(ui.root()));
    }
    render_form(&state, ui, transport, None)
}

/// `POST /{console,portal}/login`.
pub async fn submit(
    state: WebState,
    headers: HeaderMap,
    transport: Transport,
    form: Form,
    ui: Ui,
) -> Result<Response, WebError> {
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !secrets_equal(form.get("_csrf").as_bytes(), expected.as_bytes()) {
        return Err(WebError::Csrf);
    }
    let token = form.get("token");
    let face = face_name(ui);
    let attempt = counted(&state, face, transport, token).await?;
    let principal = match ui {
        Ui::Console => {
            let admin = &state.admin_token;
            if token.is_empty() || !secrets_equal(token.as_bytes(), admin.expose().as_bytes()) {
                refused(face, transport);
                return render_form(&state, ui, transport, Some("That is not the admin token."));
            }
            Principal::Operator {
                admin: state.store.crypto().hash_token(admin.expose()).to_hex(),
            }
        }
        Ui::Portal => match state.auth.authenticate(token).await {
            Ok(t) => Principal::Tenant {
                tenant: t.id.clone(),
                link: None,
                token: Some(state.store.crypto().hash_token(token).to_hex()),
            },
            Err(crate::auth::AuthError::Store(e)) => {
                return Err(match &*e {
                    crate::store::StoreError::Redis(r) => WebError::Redis(r.clone()),
                    other => WebError::internal(other),
                });
            }
            Err(_) => {
                refused(face, transport);
                return render_form(
                    &state,
                    ui,
                    transport,
                    Some("That token is not a live token of an active tenant."),
                );
            }
        },
    };
    state.throttle.succeeded(attempt).await?;
    start(&state, &headers, transport, ui, principal).await
}

/// The face's name in throttle keys and logs.
fn face_name(ui: Ui) -> &'static str {
    match ui {
        Ui::Console => "console",
        Ui::Portal => "portal",
    }
}

/// Counts a sign-in attempt before its credential is checked; refuses it (`429`) while the
/// client's address or the credential has used up its tries of the minute.
async fn counted(
    state: &WebState,
    face: &'static str,
    transport: Transport,
    credential: &str,
) -> Result<Attempt, WebError> {
    match state
        .throttle
        .attempt(face, transport.client, credential)
        .await?
    {
        Ok(attempt) => Ok(attempt),
        Err(retry_after_s) => {
            tracing::warn!(face, client = ?transport.client, retry_after_s, "sign-in throttled after repeated failures");
            Err(WebError::Throttled { retry_after_s })
        }
    }
}

/// Logs a failed sign-in (the address, never the credential); its attempt stays counted.
fn refused(face: &'static str, transport: Transport) {
    tracing::warn!(face, client = ?transport.client, "sign-in refused: wrong credential");
}

/// Opens a session for `principal` (ending the one the browser had, if any) and goes to the
/// face's first page.
async fn start(
    state: &WebState,
    headers: &HeaderMap,
    transport: Transport,
    ui: Ui,
    principal: Principal,
) -> Result<Response, WebError> {
    if let Some(old) = cookie(headers, WebState::cookie_name(ui)) {
        state.sessions.end(old).await?;
    }
    let (id, _) = state.sessions.create(principal).await?;
    let spec = state.cookie(ui, transport);
    let mut res = see_other(ui.root());
    let h = res.headers_mut();
    for value in [
        spec.set(&id, state.sessions.max_s()),
        state.signin_cookie(ui, transport).clear(),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.append(header::SET_COOKIE, v);
        }
    }
    tracing::info!(face = ui.root(), "signed in");
    Ok(res)
}

/// `GET /portal/link/{link}`: a portal link becomes a session of its tenant.
pub async fn enter_link(
    State(state): State<WebState>,
    headers: HeaderMap,
    transport: Transport,
    Path(link): Path<String>,
) -> Result<Response, WebError> {
    let attempt = counted(&state, "portal_link", transport, &link).await?;
    let link = match state.store.open_portal_link(&link).await? {
        Opened::Valid(link) => link,
        Opened::Used => {
            refused("portal_link", transport);
            return Err(WebError::Api {
                status: http::StatusCode::FORBIDDEN,
                code: "portal_link_used".into(),
                message: "This portal link was used already: it signs in once. Ask for a new \
                          one, or sign in with a tenant token."
                    .into(),
            });
        }
        Opened::Invalid => {
            refused("portal_link", transport);
            return Err(WebError::Api {
                status: http::StatusCode::FORBIDDEN,
                code: "invalid_portal_link".into(),
                message: "This portal link is not valid: it has expired, was revoked, or was \
                          altered. Ask for a new one."
                    .into(),
            });
        }
    };
    let tenant_active = state
        .store
        .tenant(&link.tenant)
        .await?
        .is_some_and(|t| t.active);
    if !tenant_active {
        return Err(WebError::Api {
            status: http::StatusCode::FORBIDDEN,
            code: "tenant_disabled".into(),
            message: "This tenant is disabled or gone.".into(),
        });
    }
    state.throttle.succeeded(attempt).await?;
    let principal = Principal::Tenant {
        tenant: link.tenant,
        link: Some(link.id.to_string()),
        token: None,
    };
    start(&state, &headers, transport, Ui::Portal, principal).await
}

/// `POST /{console,portal}/logout`: ends the session.
pub async fn logout(
    state: WebState,
    signed: Signed,
    transport: Transport,
    ui: Ui,
) -> Result<Response, WebError> {
    state.sessions.end(&signed.id).await?;
    let mut res = see_other(&format!("{}/login", ui.root()));
    if let Ok(v) = http::HeaderValue::from_str(&state.cookie(ui, transport).clear()) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    tracing::info!(face = ui.root(), "signed out");
    Ok(res)
}

macro_rules! face_handlers {
    ($ui:expr, $form:ident, $submit:ident, $logout:ident) => {
        pub async fn $form(
            State(s): State<WebState>,
            h: HeaderMap,
            t: Transport,
        ) -> Result<Response, WebError> {
            form(s, h, t, $ui).await
        }
        pub async fn $submit(
            State(s): State<WebState>,
            h: HeaderMap,
            t: Transport,
            f: Form,
        ) -> Result<Response, WebError> {
            submit(s, h, t, f, $ui).await
        }
        pub async fn $logout(
            State(s): State<WebState>,
            g: Signed,
            t: Transport,
        ) -> Result<Response, WebError> {
            logout(s, g, t, $ui).await
        }
    };
}

face_handlers!(Ui::Console, console_form, console_submit, console_logout);
face_handlers!(Ui::Portal, portal_form, portal_submit, portal_logout);
