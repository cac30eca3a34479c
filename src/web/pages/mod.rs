//! The pages, and the routes of both faces.
//!
//! The tenant pages (`overview`, `targets`, `events`, `dead_letters`, `sources`,
//! `monitors`) are one router, nested at `/console/tenants/{id}` and at `/portal`; a
//! [`Ctx`] tells them which tenant they show, where their links go and which face they
//! are on. The console's own pages are `tenants` (the list and the operator's actions on
//! one tenant) and `system`; `signin` serves both faces' sign-in and sign-out.

pub mod dead_letters;
pub mod events;
pub mod monitors;
pub mod overview;
pub mod signin;
pub mod sources;
pub mod system;
pub mod targets;
pub mod tenants;

use axum::Router;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use http::request::Parts;

use super::client::seg;
use super::guard::{Signed, require_session, security_headers};
use super::layout::{Shell, s};
use super::session::Principal;
use super::{Ui, WebError, WebState, assets};
use crate::model::TenantId;

/// The tenant a tenant page shows, and how it links.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub ui: Ui,
    pub tenant: TenantId,
    pub tenant_name: String,
    /// Where this tenant's pages are: `/console/tenants/<id>` or `/portal`.
    pub base: String,
    /// Where this tenant's API is: `/admin/tenants/<id>`.
    pub api: String,
    pub csrf: String,
}

impl Ctx {
    /// The shell of a page of this tenant on tab `tab`.
    pub fn shell<'a>(&'a self, title: &'a str, tab: &'a str) -> Shell<'a> {
        Shell {
            ui: self.ui,
            title,
            csrf: Some(&self.csrf),
            tenant: Some((&self.tenant_name, &self.base)),
            tab,
        }
    }

    /// This tenant's API path `rest` (which starts with `/`).
    pub fn api(&self, rest: &str) -> String {
        format!("{}{rest}", self.api)
    }

    /// This tenant's page `rest`.
    pub fn page(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Ctx, WebError> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| WebError::Internal("tenant page outside a tenant".into()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Signed, WebError> {
        parts
            .extensions
            .get::<Signed>()
            .cloned()
            .ok_or_else(|| WebError::Internal("page outside a session".into()))
    }
}

/// Resolves the tenant of a tenant page: for the console, the `{id}` of the path (which must
/// name a tenant); for the portal, the session's tenant and nothing else.
async fn tenant_ctx(
    State((state, ui)): State<(WebState, Ui)>,
    mut req: Request,
    next: Next,
) -> Result<Response, WebError> {
    let signed = req
        .extensions()
        .get::<Signed>()
        .cloned()
        .ok_or(WebError::SignedOut(ui))?;
    let tenant = match (&signed.session.principal, ui) {
        (Principal::Tenant { tenant, .. }, Ui::Portal) => tenant.clone(),
        (Principal::Operator, Ui::Console) => {
            let (mut parts, body) = req.into_parts();
            let params = RawPathParams::from_request_parts(&mut parts, &state)
                .await
                .map_err(|_| WebError::NotFound("tenant"))?;
            let id = params
                .iter()
                .find(|(k, _)| *k == "id")
                .and_then(|(_, v)| TenantId::parse(v).ok())
                .ok_or(WebError::NotFound("tenant"))?;
            req = Request::from_parts(parts, body);
            id
        }
        _ => return Err(WebError::SignedOut(ui)),
    };
    let api = format!("/admin/tenants/{}", seg(tenant.as_str()));
    let record = state.api.get(&api).await?;
    let base = match ui {
        Ui::Console => format!("/console/tenants/{}", seg(tenant.as_str())),
        Ui::Portal => "/portal".to_owned(),
    };
    req.extensions_mut().insert(Ctx {
        ui,
        tenant_name: s(&record, "name").to_owned(),
        tenant,
        base,
        api,
        csrf: signed.session.csrf.clone(),
    });
    Ok(next.run(req).await)
}

/// The tenant pages, relative to their base.
fn tenant_pages() -> Router<WebState> {
    Router::new()
        .route("/", get(overview::show))
        .route("/targets", get(targets::list).post(targets::create))
        .route("/targets/new", get(targets::new_form))
        .route(
            "/targets/{target_id}",
            get(targets::show).post(targets::update),
        )
        .route("/targets/{target_id}/rotate", post(targets::rotate))
        .route("/targets/{target_id}/toggle", post(targets::toggle))
        .route("/targets/{target_id}/delete", post(targets::remove))
        .route("/events", get(events::list))
        .route("/events/rows", get(events::rows))
        .route("/events/{event}", get(events::show))
        .route("/events/{event}/resend", post(events::resend))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/dead-letters/delete", post(dead_letters::remove))
        .route("/sources", get(sources::list).post(sources::create))
        .route("/sources/{source_id}", get(sources::show))
        .route("/sources/{source_id}/rotate", post(sources::rotate))
        .route("/sources/{source_id}/delete", post(sources::remove))
        .route("/monitors", get(monitors::board).post(monitors::create))
        .route("/monitors/tiles", get(monitors::tiles))
        .route(
            "/monitors/{monitor_id}",
            get(monitors::show).post(monitors::update),
        )
        .route("/monitors/{monitor_id}/rotate", post(monitors::rotate))
        .route("/monitors/{monitor_id}/delete", post(monitors::remove))
}

/// The pages that need no session: sign-in and the assets.
fn open_routes(ui: Ui) -> Router<WebState> {
    let root = ui.root();
    let r = Router::new().route(&format!("{root}/assets/{{file}}"), get(assets::serve));
    match ui {
        Ui::Portal => r
            .route(
                "/portal/login",
                get(signin::portal_form).post(signin::portal_submit),
            )
            .route("/portal/link/{link}", get(signin::enter_link)),
        Ui::Console => r.route(
            "/console/login",
            get(signin::console_form).post(signin::console_submit),
        ),
    }
}

/// The console: `/console…` on the admin listener.
pub fn console_routes(state: WebState) -> Router {
    let ui = Ui::Console;
    let tenant = tenant_pages()
        .merge(tenants::operator_routes())
        .route_layer(from_fn_with_state((state.clone(), ui), tenant_ctx));
    let signed = Router::new()
        .route(
            "/console",
            get(|| async { super::layout::see_other("/console/tenants") }),
        )
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/system", get(system::show))
        .route("/console/logout", post(signin::console_logout))
        .nest("/console/tenants/{id}", tenant)
        .route_layer(from_fn_with_state((state.clone(), ui), require_session));
    signed
        .merge(open_routes(ui))
        .layer(from_fn_with_state((state.clone(), ui), security_headers))
        .with_state(state)
}

/// The portal: `/portal…` on the edge listeners.
pub fn portal_routes(state: WebState) -> Router {
    let ui = Ui::Portal;
    let signed = Router::new()
        .route("/portal/logout", post(signin::portal_logout))
        .nest(
            "/portal",
            tenant_pages().route_layer(from_fn_with_state((state.clone(), ui), tenant_ctx)),
        )
        .route_layer(from_fn_with_state((state.clone(), ui), require_session));
    signed
        .merge(open_routes(ui))
        .layer(from_fn_with_state((state.clone(), ui), security_headers))
        .with_state(state)
}
