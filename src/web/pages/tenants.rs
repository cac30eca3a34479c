//! The console's tenant list, and the operator's actions on one tenant (details, enable and
//! disable, rate limit, tokens, portal links, deletion).

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ctx::{Ctx, Kept};
use crate::api::portal_links::{self, PortalLinkSpec};
use crate::api::scope::RequestHost;
use crate::api::tenants::{self, TenantQuery, TenantView};
use crate::model::{PortalLinkId, RateLimit, TenantId, TenantPatch, TenantSpec, TokenId};
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::{Form, Params, decode};
use crate::web::guard::Signed;
use crate::web::href::seg;
use crate::web::layout::{Shell, at, badge, copyable, csrf_field, notice, page, see_other, stamp};
use crate::web::state::WebState;

/// The questions its destructive actions ask first (in the browser, or as a page).
const ASK_DISABLE: &str =
    "Disable this tenant? Its events are refused (403) until it is enabled again.";
const ASK_REVOKE_TOKEN: &str = "Revoke this token? Requests with it fail at once.";
const ASK_REVOKE_LINK: &str = "Revoke this link? The session it opened ends at once.";

/// Most tenants the list reads (pages of 500), searched or not.
const MAX_LISTED: usize = 5000;

/// The operator's actions on one tenant, relative to `/console/tenants/{id}`.
pub fn operator_routes() -> Router<WebState> {
    Router::new()
        .route("/update", post(update))
        .route("/toggle", post(toggle))
        .route("/delete", post(remove))
        .route("/tokens", post(issue_token))
        .route("/tokens/{token_id}/revoke", post(revoke_token))
        .route("/portal-links", post(create_link))
        .route("/portal-links/{link_id}/revoke", post(revoke_link))
}

fn console_shell<'a>(title: &'a str, csrf: &'a str) -> Shell<'a> {
    Shell {
        ui: Ui::Console,
        title,
        csrf: Some(csrf),
        tenant: None,
        tab: "tenants",
    }
}

/// Whether tenant `t` answers search `q` (name, external id or id, any case).
fn matches(t: &TenantView, q: &str) -> bool {
    let q = q.to_lowercase();
    [
        t.name.as_str(),
        t.external_id.as_ref().map_or("", |e| e.as_str()),
        t.id.as_str(),
    ]
    .iter()
    .any(|k| k.to_lowercase().contains(&q))
}

/// `GET /console/tenants[?q=]`: the tenants, searchable, and the form of a new one.
pub async fn list(
    State(state): State<WebState>,
    signed: Signed,
    Params(p): Params,
) -> Result<Response, WebError> {
    let q = p.get("q");
    let mut tenants = Vec::new();
    let mut after: Option<TenantId> = None;
    for _ in 0..MAX_LISTED / 500 {
        let listed = tenants::list_tenants(
            &state.core,
            &TenantQuery {
                after: after.take(),
                limit: Some(500),
                ..TenantQuery::default()
            },
        )
        .await?;
        tenants.extend(
            listed
                .data
                .into_iter()
                .filter(|t| q.is_empty() || matches(t, q)),
        );
        match listed.next.map(|n| TenantId::parse(&n)) {
            Some(Ok(next)) => after = Some(next),
            _ => break,
        }
    }
    let csrf = &signed.session.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Tenants" }
        form.filters role="search" method="get" action="/console/tenants" {
            label { "Search by name, external id or id"
                input type="search" name="q" value=(q) id="tenant-search";
            }
            button.secondary type="submit" { "Search" }
        }
        div.table-wrap {
            table id="tenants" {
                thead { tr { th { "Name" } th { "External id" } th { "Status" } th { "Rate limit" } th { "Created" } } }
                tbody {
                    @for t in &tenants {
                        tr {
                            td { a href={ "/console/tenants/" (seg(t.id.as_str())) } { (t.name.as_str()) } }
                            td { (t.external_id.as_ref().map_or("—", |e| e.as_str())) }
                            td { (badge(if t.active { "active" } else { "disabled" })) }
                            td { (rate(t.rate_limit.as_ref())) }
                            td { (stamp(&t.created_at)) }
                        }
                    }
                    @if tenants.is_empty() { tr { td colspan="5" { "No tenants" @if !q.is_empty() { " match this search" } "." } } }
                }
            }
        }
        section.card {
            h2 { "New tenant" }
            form.stack method="post" action="/console/tenants" id="new-tenant" {
                (csrf_field(csrf))
                label { "Name" input type="text" name="name" required maxlength="200"; }
                label { "External id (optional: your own id for it)" input type="text" name="external_id"; }
                (rate_fields(None))
                div { button type="submit" { "Create tenant" } }
            }
        }
    };
    Ok(page(&console_shell("Tenants", csrf), body).into_response())
}

/// A tenant's rate limit as text.
pub fn rate(r: Option<&RateLimit>) -> String {
    match r {
        Some(r) => format!("{}/s, burst {}", r.per_second(), r.effective_burst()),
        None => "none".to_owned(),
    }
}

/// The rate-limit fields of a form.
fn rate_fields(current: Option<&RateLimit>) -> Markup {
    let per_second = current.map(|r| r.per_second().to_string());
    let burst = current.and_then(RateLimit::burst).map(|b| b.to_string());
    html! {
        div.filters {
            label { "Rate limit per second" input type="number" name="per_second" min="1" value=[per_second]; }
            label { "Burst" input type="number" name="burst" min="1" value=[burst]; }
        }
    }
}

/// The rate limit a form asks for: `None` when both fields are empty.
fn rate_limit(form: &Form) -> Result<Option<Value>, WebError> {
    let per_second = form.number("per_second", "Rate limit per second")?;
    let burst = form.number("burst", "Burst")?;
    Ok(match (per_second, burst) {
        (None, None) => None,
        (Some(p), b) => Some(json!({"per_second": p, "burst": b.unwrap_or(p)})),
        (None, Some(_)) => {
            return Err(WebError::BadRequest(
                "a burst needs a rate limit per second".into(),
            ));
        }
    })
}

/// `POST /console/tenants`: creates a tenant and shows its token, this once.
pub async fn create(
    State(state): State<WebState>,
    signed: Signed,
    form: Form,
) -> Result<Response, WebError> {
    let mut spec = Map::new();
    spec.insert("name".into(), json!(form.get("name")));
    if let Some(ext) = form.opt("external_id") {
        spec.insert("external_id".into(), json!(ext));
    }
    if let Some(r) = rate_limit(&form)? {
        spec.insert("rate_limit".into(), r);
    }
    let spec: TenantSpec = decode(Value::Object(spec))?;
    let created = tenants::create_tenant(&state.core, &spec).await?;
    let csrf = &signed.session.csrf;
    let link = format!("/console/tenants/{}", seg(created.tenant.id.as_str()));
    let body = html! {
        h1 { "Tenant created: " (created.tenant.name.as_str()) }
        section.card.secret {
            p { strong { "Its token is shown this once." } " Store it now: only its keyed hash is kept." }
            p { (copyable("new-token", &created.token)) }
        }
        p { a href=(link) id="to-tenant" { "Go to the tenant" } }
    };
    Ok(page(&console_shell("Tenant created", csrf), body).into_response())
}

/// The operator's section of a tenant's overview.
pub async fn operator_section(
    state: &WebState,
    ctx: &Ctx,
    tenant: &TenantView,
) -> Result<Markup, WebError> {
    let tokens = tenants::list_tokens(&state.core, &ctx.tenant).await?.data;
    let links = portal_links::list_portal_links(&state.core, &ctx.tenant)
        .await?
        .data;
    let csrf = &ctx.csrf;
    let active = tenant.active;
    Ok(html! {
        section.card {
            h2 { "Settings" }
            form.stack method="post" action=(ctx.page("/update")) id="tenant-settings" {
                (csrf_field(csrf))
                label { "Name" input type="text" name="name" value=(tenant.name.as_str()) required; }
                label { "External id" input type="text" name="external_id" value=[tenant.external_id.as_ref().map(|e| e.as_str())]; }
                (rate_fields(tenant.rate_limit.as_ref()))
                p.muted { "Leave both rate fields empty to remove the tenant's own limit." }
                label { "Event catalogue at ingest"
                    select name="catalogue" {
                        @for (m, label) in [("off", "off: any type, any body"), ("warn", "warn: accept, note what breaks it"), ("enforce", "enforce: refuse what breaks it (422)")] {
                            option value=(m) selected[m == tenant.catalogue.as_str()] { (label) }
                        }
                    }
                }
                label { "Request headers kept with each event (comma separated, at most 20)"
                    input type="text" name="keep_headers" value=(tenant.keep_headers.names().join(", ")) placeholder="X-GitHub-Event, X-Request-Id";
                }
                div { button type="submit" { "Save" } }
            }
            div.actions {
                form.inline method="post" action=(ctx.page("/toggle")) data-confirm=[active.then_some(ASK_DISABLE)] {
                    (csrf_field(csrf))
                    input type="hidden" name="active" value=(if active { "false" } else { "true" });
                    button.secondary type="submit" id="toggle-tenant" { @if active { "Disable tenant" } @else { "Enable tenant" } }
                }
            }
        }
        section.card {
            h2 { "Tokens" }
            div.table-wrap { table id="tokens" {
                thead { tr { th { "Token id" } th { "Issued" } th {} } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { code { (t.id.as_str()) } }
                            td { (at(t.created_at.as_deref())) }
                            td {
                                form.inline method="post" action=(ctx.page(&format!("/tokens/{}/revoke", seg(t.id.as_str())))) data-confirm=(ASK_REVOKE_TOKEN) {
                                    (csrf_field(csrf))
                                    button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            } }
            form.inline method="post" action=(ctx.page("/tokens")) {
                (csrf_field(csrf))
                button type="submit" id="issue-token" { "Issue a new token" }
            }
        }
        section.card {
            h2 { "Portal links" }
            p.muted { "A signed link into this tenant's portal, for its developers: it expires, and it can be revoked. A single-use link signs in once; revoking a link ends the session it opened." }
            div.table-wrap { table id="portal-links" {
                thead { tr { th { "Link id" } th { "Issued (UTC)" } th { "Expires (UTC)" } th { "Use" } th {} } }
                tbody {
                    @for l in &links {
                        tr {
                            td { code { (l.id.as_str()) } }
                            td { (at(l.created_at.as_deref())) }
                            td { (stamp(&l.expires_at)) }
                            td {
                                @if !l.single_use { "reusable" }
                                @else if let Some(used) = &l.used_at { "used " (stamp(used)) }
                                @else { "single use, unused" }
                            }
                            td {
                                form.inline method="post" action=(ctx.page(&format!("/portal-links/{}/revoke", seg(l.id.as_str())))) data-confirm=(ASK_REVOKE_LINK) {
                                    (csrf_field(csrf))
                                    button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                    @if links.is_empty() { tr { td colspan="5" { "No live link." } } }
                }
            } }
            form.row method="post" action=(ctx.page("/portal-links")) id="new-portal-link" {
                (csrf_field(csrf))
                label { "Valid for (seconds)" input type="number" name="ttl_s" min="1" value="3600"; }
                label { input type="checkbox" name="single_use" checked; " Single use" }
                input type="hidden" name="single_use_shown" value="1";
                button type="submit" { "Create portal link" }
            }
        }
        section.card {
            h2 { "Delete" }
            form.row method="post" action=(ctx.page("/delete")) id="delete-tenant" data-confirm="Delete this tenant, its tokens, targets, sources and monitors?" {
                (csrf_field(csrf))
                label { "Type the tenant's name to confirm" input type="text" name="confirm" required; }
                button.danger type="submit" { "Delete tenant" }
            }
        }
    })
}

/// `POST …/update`: name, external id, rate limit.
async fn update(State(state): State<WebState>, ctx: Ctx, form: Form) -> Result<Response, WebError> {
    let mut patch = Map::new();
    patch.insert("name".into(), json!(form.get("name")));
    patch.insert(
        "external_id".into(),
        form.opt("external_id").map_or(Value::Null, |e| json!(e)),
    );
    patch.insert(
        "rate_limit".into(),
        rate_limit(&form)?.unwrap_or(Value::Null),
    );
    // The settings form carries both; a form without them changes neither.
    if let Some(mode) = form.opt("catalogue") {
        patch.insert("catalogue".into(), json!(mode));
        let names: Vec<&str> = form
            .get("keep_headers")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        patch.insert("keep_headers".into(), json!(names));
    }
    let patch: TenantPatch = decode(Value::Object(patch))?;
    tenants::update_tenant(&state.core, &ctx.tenant, &patch).await?;
    Ok(see_other(&format!("{}?notice=saved", ctx.base)))
}

/// `POST …/toggle`: enables or disables the tenant.
async fn toggle(State(state): State<WebState>, ctx: Ctx, form: Form) -> Result<Response, WebError> {
    let active = form.get("active") == "true";
    if !active {
        if let Some(ask) = ctx.confirm_first(&form, ASK_DISABLE, &ctx.page("/toggle")) {
            return Ok(ask);
        }
    }
    let patch = TenantPatch {
        active: Some(active),
        ..TenantPatch::default()
    };
    tenants::update_tenant(&state.core, &ctx.tenant, &patch).await?;
    let done = if active { "enabled" } else { "disabled" };
    Ok(see_other(&format!("{}?notice={done}", ctx.base)))
}

/// `POST …/delete`: deletes the tenant once its name is typed.
async fn remove(State(state): State<WebState>, ctx: Ctx, form: Form) -> Result<Response, WebError> {
    if form.get("confirm") != ctx.tenant_name {
        return Err(WebError::BadRequest(
            "type the tenant's name exactly to delete it".into(),
        ));
    }
    tenants::delete_tenant(&state.core, &ctx.tenant).await?;
    Ok(see_other("/console/tenants?notice=deleted"))
}

/// `POST …/tokens`: issues a token and shows it this once.
async fn issue_token(State(state): State<WebState>, ctx: Ctx) -> Result<Response, WebError> {
    let issued = tenants::issue_token(&state.core, &ctx.tenant).await?;
    Ok(ctx.shown_once(
        "Token issued",
        "",
        Kept::Hashed,
        &[("The new token", "new-token", &issued.token)],
        &ctx.base,
    ))
}

/// `POST …/tokens/{token_id}/revoke`.
async fn revoke_token(
    State(state): State<WebState>,
    ctx: Ctx,
    Path((_, token_id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/tokens/{}/revoke", seg(&token_id)));
    if let Some(ask) = ctx.confirm_first(&form, ASK_REVOKE_TOKEN, &action) {
        return Ok(ask);
    }
    let token = TokenId::parse(&token_id).map_err(|_| WebError::NotFound("token"))?;
    tenants::revoke_token(&state.core, &ctx.tenant, &token).await?;
    Ok(see_other(&format!("{}?notice=revoked", ctx.base)))
}

/// `POST …/portal-links`: issues a portal link and shows it, with its revocation.
async fn create_link(
    State(state): State<WebState>,
    ctx: Ctx,
    host: RequestHost,
    form: Form,
) -> Result<Response, WebError> {
    let mut spec = Map::new();
    if let Some(ttl) = form.number("ttl_s", "Valid for")? {
        spec.insert("ttl_s".into(), json!(ttl));
    }
    // An unticked box sends nothing: the hidden field tells it from a form without the box.
    if form.opt("single_use_shown").is_some() {
        spec.insert("single_use".into(), json!(form.checked("single_use")));
    }
    let spec: PortalLinkSpec = decode(Value::Object(spec))?;
    let link =
        portal_links::create_portal_link(&state.core, &ctx.tenant, &spec, host.as_deref()).await?;
    let body = html! {
        h1 { "Portal link" }
        section.card.secret {
            p { "Anyone with this link can open " strong { (ctx.tenant_name) } "'s portal until " (stamp(&link.expires_at)) " UTC"
                @if link.single_use { ", once: its first use becomes a session." } @else { ", as often as it is opened." } }
            p { strong { "It is shown this once." } " Only its id is listed on the tenant's page." }
            p { (copyable("portal-link", &link.url)) }
        }
        form.inline method="post" action=(ctx.page(&format!("/portal-links/{}/revoke", seg(link.id.as_str())))) {
            (csrf_field(&ctx.csrf))
            button.danger type="submit" id="revoke-link" { "Revoke this link" }
        }
        p { a href=(ctx.base) { "Back" } }
    };
    Ok(page(&ctx.shell("Portal link", ""), body).into_response())
}

/// `POST …/portal-links/{link_id}/revoke`.
async fn revoke_link(
    State(state): State<WebState>,
    ctx: Ctx,
    Path((_, link_id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/portal-links/{}/revoke", seg(&link_id)));
    if let Some(ask) = ctx.confirm_first(&form, ASK_REVOKE_LINK, &action) {
        return Ok(ask);
    }
    let link = PortalLinkId::parse(&link_id).map_err(|_| WebError::NotFound("portal link"))?;
    portal_links::revoke_portal_link(&state.core, &ctx.tenant, &link).await?;
    Ok(see_other(&format!("{}?notice=revoked", ctx.base)))
}
