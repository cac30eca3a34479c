//! The tenant a tenant page shows ([`Ctx`]), resolved once per request.

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;

use crate::api::scope::TenantScope;
use crate::model::TenantId;
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Form;
use crate::web::guard::Signed;
use crate::web::href::seg;
use axum::response::IntoResponse;
use maud::html;

use crate::web::layout::{Shell, copyable, page};
use crate::web::session::Principal;
use crate::web::state::WebState;

/// The tenant a tenant page shows, and how it links.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub ui: Ui,
    pub tenant: TenantId,
    /// The tenant and its shard, as the API's typed operations take them.
    pub scope: TenantScope,
    pub tenant_name: String,
    /// Where this tenant's pages are: `/console/tenants/<id>` or `/portal`.
    pub base: String,
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

/// Resolves the tenant of a tenant page: for the console, the `{id}` of the path (which must
/// name a tenant); for the portal, the session's tenant and nothing else.
pub async fn tenant_ctx(
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
        (Principal::Operator { .. }, Ui::Console) => {
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
    let record = crate::api::tenants::read_tenant(&state.core, &tenant).await?;
    let scope = TenantScope {
        shard: crate::redis::keyspace::shard_of(&tenant, state.core.shards),
        tenant: tenant.clone(),
    };
    let base = match ui {
        Ui::Console => format!("/console/tenants/{}", seg(tenant.as_str())),
        Ui::Portal => "/portal".to_owned(),
    };
    req.extensions_mut().insert(Ctx {
        ui,
        tenant_name: record.name.as_str().to_owned(),
        tenant,
        scope,
        base,
        csrf: signed.session.csrf.clone(),
    });
    Ok(next.run(req).await)
}

/// The id a page names: the last parameter of its path (the console's paths also carry the
/// tenant's `{id}` first), of the id grammar, so it is the same text encoded in a path.
#[derive(Debug, Clone)]
pub struct Item(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Item {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Item, WebError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| WebError::NotFound("page"))?;
        params
            .iter()
            .last()
            .map(|(_, v)| v)
            .filter(|v| crate::model::ids::is_valid(v))
            .map(|v| Item(v.to_owned()))
            .ok_or(WebError::NotFound("page"))
    }
}

impl Ctx {
    /// A destructive form's answer until it is confirmed: the page asking `question`, whose
    /// form posts the same fields again with `confirmed`. The script confirms in the browser
    /// and sends `confirmed` at once; without scripts this page is the confirmation.
    pub fn confirm_first(&self, form: &Form, question: &str, action: &str) -> Option<Response> {
        if form.checked("confirmed") {
            return None;
        }
        let body = html! {
            h1 { "Please confirm" }
            section.card {
                p id="confirm-question" { (question) }
                form.row method="post" action=(action) id="confirm" {
                    (crate::web::layout::csrf_field(&self.csrf))
                    @for (k, v) in form.0.iter().filter(|(k, _)| k != "_csrf" && k != "confirmed") {
                        input type="hidden" name=(k) value=(v);
                    }
                    input type="hidden" name="confirmed" value="1";
                    button.danger type="submit" id="confirm-yes" { "Yes, go on" }
                    a href=(self.base) id="confirm-no" { "Cancel" }
                }
            }
        };
        Some(page(&self.shell("Please confirm", ""), body).into_response())
    }
}

/// How a secret shown once is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// As a keyed hash: tokens, and URLs that hold one.
    Hashed,
    /// Encrypted, because the gateway uses it: a target's signing secret.
    Sealed,
}

impl Ctx {
    /// A page of secrets shown this once (a token, a signing secret, URLs holding a token):
    /// each `(label, element id, value)` with its copy button, and a link `back`; `kept` says
    /// truly how the gateway keeps them.
    pub fn shown_once(
        &self,
        title: &str,
        tab: &str,
        kept: Kept,
        secrets: &[(&str, &str, &str)],
        back: &str,
    ) -> Response {
        let how = match kept {
            Kept::Hashed => "Store it now: only a keyed hash is kept, so it cannot be read again.",
            Kept::Sealed => {
                "Store it now: it is kept sealed (AES-256-GCM under the master key) so the \
                 gateway can sign with it, and no page or API shows it again; rotate it for a new one."
            }
        };
        let body = html! {
            h1 { (title) }
            section.card.secret {
                p { strong { "Shown this once." } " " (how) }
                dl.fields {
                    @for (label, id, value) in secrets {
                        dt { (label) } dd { (copyable(id, value)) }
                    }
                }
            }
            p { a href=(back) { "Back" } }
        };
        page(&self.shell(title, tab), body).into_response()
    }
}

/// The target a page's path names (an id out of the id grammar names none).
pub fn target_id(id: &str) -> Result<crate::model::TargetId, crate::web::error::WebError> {
    crate::model::TargetId::parse(id).map_err(|_| crate::web::error::WebError::NotFound("target"))
}
