//! A tenant's sources: the inbound webhook URLs of external platforms, with their
//! verification, their silence watch, its incidents and what was last received.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ctx::{Ctx, Item, Kept};
use crate::api::monitors::HistoryQuery;
use crate::api::sources::{
    SourceView, SourceWithToken, create_source, delete_source, list_sources, read_source,
    rotate_source_token, source_checks, source_incidents, source_refusals,
};
use crate::model::{SourceId, SourceSpec};
use crate::web::error::WebError;
use crate::web::form::{Form, Params, decode};
use crate::web::href::seg;
use crate::web::layout::{at, badge, csrf_field, notice, or_dash, page, see_other, stamp};
use crate::web::state::WebState;

/// The questions its destructive actions ask first (in the browser, or as a page).
const ASK_ROTATE: &str = "Rotate the URL token? The old URL stops working at once.";
const ASK_DELETE: &str = "Delete this source?";

const SCHEMES: &[&str] = &["standard_webhooks", "github", "stripe", "hmac_sha256_hex"];

/// `GET …/sources`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let sources = list_sources(&state.core, &ctx.scope).await?.data;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Sources" }
        div.table-wrap { table id="sources" {
            thead { tr { th { "Name" } th { "Verification" } th { "Event type from" } th { "Silence watch" } th { "Last received (UTC)" } } }
            tbody {
                @for src in &sources {
                    tr {
                        td { a href=(ctx.page(&format!("/sources/{}", seg(src.id.as_str())))) { (src.name.as_str()) } }
                        td { (src.verify.scheme.as_str()) }
                        td { (src.event_type.describe()) }
                        td.watch { (watch_text(src)) }
                        td { (at(src.last_received_at.as_deref())) }
                    }
                }
                @if sources.is_empty() { tr { td colspan="5" { "No sources yet." } } }
            }
        } }
        section.card {
            h2 { "New source" }
            form.stack method="post" action=(ctx.page("/sources")) id="new-source" {
                (csrf_field(&ctx.csrf))
                label { "Name" input type="text" name="name" required; }
                label { "Signature scheme" select name="scheme" { @for sc in SCHEMES { option value=(sc) { (sc.replace('_', " ")) } } } }
                label { "Signing secret (from the platform)" input type="password" name="secret" required autocomplete="off"; }
                label { "Signature header (optional, for hmac sha256 hex)" input type="text" name="header"; }
                label { "Event type from" select name="event_type_from" {
                    option value="header" { "a header" } option value="json_pointer" { "a JSON pointer into the body" } option value="fixed" { "a fixed type" }
                } }
                label { "Header name, JSON pointer or type" input type="text" name="event_type_value" required placeholder="X-GitHub-Event"; }
                label { "Expect a webhook every (seconds, optional: opens an incident when silent)" input type="number" name="expect_every_s" min="1"; }
                label { "Grace (seconds)" input type="number" name="grace_s" min="0"; }
                div { button type="submit" { "Create source" } }
            }
        }
    };
    Ok(page(&ctx.shell("Sources", "/sources"), body).into_response())
}

/// A source's silence watch in words, with its state.
fn watch_text(src: &SourceView) -> Markup {
    html! {
        @match (src.expect_every_s, src.silent) {
            (None, _) => "none",
            (Some(every), Some(true)) => { (badge("down")) " silent, expected every " (every.get()) " s" },
            (Some(every), _) => {
                (badge("up")) " every " (every.get()) " s"
                @if let Some(g) = src.grace_s { ", grace " (g.get()) " s" }
            },
        }
    }
}

fn source_body(form: &Form) -> Result<Value, WebError> {
    let mut verify = Map::new();
    verify.insert("scheme".into(), json!(form.get("scheme")));
    verify.insert("secret".into(), json!(form.get("secret")));
    if let Some(h) = form.opt("header") {
        verify.insert("header".into(), json!(h));
    }
    let from = form.get("event_type_from");
    if !matches!(from, "header" | "json_pointer" | "fixed") {
        return Err(WebError::BadRequest(
            "choose where the event type comes from".into(),
        ));
    }
    let mut body = Map::new();
    body.insert("name".into(), json!(form.get("name")));
    body.insert("verify".into(), Value::Object(verify));
    body.insert(
        "event_type".into(),
        json!({ from: form.get("event_type_value") }),
    );
    if let Some(e) = form.number("expect_every_s", "Expect a webhook every")? {
        body.insert("expect_every_s".into(), json!(e));
    }
    if let Some(g) = form.number("grace_s", "Grace")? {
        body.insert("grace_s".into(), json!(g));
    }
    Ok(Value::Object(body))
}

/// A source's URL (it holds the token), shown at creation and rotation.
fn with_url(ctx: &Ctx, title: &str, src: &SourceWithToken) -> Response {
    let back = ctx.page(&format!("/sources/{}", seg(src.source.id.as_str())));
    ctx.shown_once(
        &format!("{title}: {}", src.source.name.as_str()),
        "/sources",
        Kept::Hashed,
        &[(
            "Webhook URL (a path on the edge listener)",
            "source-url",
            &src.url,
        )],
        &back,
    )
}

/// The source a page's path names (an id out of the id grammar names none).
fn source_id(id: &str) -> Result<SourceId, WebError> {
    SourceId::parse(id).map_err(|_| WebError::NotFound("source"))
}

/// `POST …/sources`.
pub async fn create(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let spec: SourceSpec = decode(source_body(&form)?)?;
    let created = create_source(&state.core, &ctx.scope, &spec).await?;
    Ok(with_url(&ctx, "Source created", &created))
}

/// `GET …/sources/{source_id}`.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    Params(p): Params,
) -> Result<Response, WebError> {
    let source = source_id(&id)?;
    let (core, scope) = (&state.core, &ctx.scope);
    let src = read_source(core, scope, &source).await?;
    let recent = HistoryQuery::default();
    let incidents = source_incidents(core, scope, &source, &recent).await?.data;
    let checks = source_checks(core, scope, &source, &recent).await?.data;
    let refusals = source_refusals(core, scope, &source).await?.data;
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Source " (src.name.as_str()) }
        section.card {
            dl.fields id="source-state" {
                dt { "Silence watch" } dd {
                    @if src.silent == Some(true) { (badge("down")) " silent past its deadline" }
                    @else { (watch_text(&src)) }
                }
                dt { "Last received (UTC)" } dd id="last-received" { (at(src.last_received_at.as_deref())) }
            }
            dl.fields id="source-details" {
                dt { "Id" } dd { code { (src.id.as_str()) } }
                dt { "Verification" } dd { (src.verify.scheme.as_str().replace('_', " "))
                    @if let Some(h) = &src.verify.header { ", header " code { (h) } }
                    @if let Some(t) = src.verify.tolerance_s { ", timestamps within " (t.get()) " s" } }
                dt { "Event type from" } dd { (src.event_type.describe()) }
                dt { "Created" } dd { (stamp(&src.created_at)) }
                dt { "Changed" } dd { (stamp(&src.updated_at)) }
            }
            div.actions {
                form.inline method="post" action=(ctx.page(&format!("/sources/{id}/rotate"))) data-confirm=(ASK_ROTATE) {
                    (csrf_field(csrf))
                    button.secondary type="submit" { "Rotate URL token" }
                }
                form.inline method="post" action=(ctx.page(&format!("/sources/{id}/delete"))) data-confirm=(ASK_DELETE) {
                    (csrf_field(csrf))
                    button.danger type="submit" { "Delete" }
                }
            }
        }
        section.card {
            h2 { "Incidents" }
            div.table-wrap { table {
                thead { tr { th { "Opened (UTC)" } th { "Reason" } th { "Resolved (UTC)" } } }
                tbody {
                    @for i in &incidents { tr { td { (stamp(&i.opened_at)) } td { (i.reason) } td { (at(i.resolved_at.as_deref())) } } }
                    @if incidents.is_empty() { tr { td colspan="3" { "No incidents." } } }
                }
            } }
        }
        section.card {
            h2 { "Refused deliveries" }
            p.muted { "The last 20 webhooks refused in 30 days: a bad or stale signature, or a delivery sent twice." }
            div.table-wrap { table id="refusals" {
                thead { tr { th { "At (UTC)" } th { "Reason" } th { "Sender" } } }
                tbody {
                    @for r in &refusals { tr { td { (stamp(&r.at)) } td { (r.reason) } td { (or_dash(r.sender_ip.as_ref())) } } }
                    @if refusals.is_empty() { tr { td colspan="3" { "None refused." } } }
                }
            } }
        }
        section.card {
            h2 { "Recent checks" }
            div.table-wrap { table {
                thead { tr { th { "At (UTC)" } th { "Signal" } th { "Status" } th { "Reason" } } }
                tbody {
                    @for c in &checks { tr { td { (stamp(&c.at)) } td { (c.signal) } td { (badge(c.status.as_str())) } td { (c.reason) } } }
                }
            } }
        }
    };
    Ok(page(&ctx.shell("Source", "/sources"), body).into_response())
}

/// `POST …/sources/{source_id}/rotate`: a new URL, shown this once.
pub async fn rotate(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/sources/{id}/rotate"));
    if let Some(ask) = ctx.confirm_first(&form, ASK_ROTATE, &action) {
        return Ok(ask);
    }
    let rotated = rotate_source_token(&state.core, &ctx.scope, &source_id(&id)?).await?;
    Ok(with_url(&ctx, "URL token rotated", &rotated))
}

/// `POST …/sources/{source_id}/delete`.
pub async fn remove(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/sources/{id}/delete"));
    if let Some(ask) = ctx.confirm_first(&form, ASK_DELETE, &action) {
        return Ok(ask);
    }
    delete_source(&state.core, &ctx.scope, &source_id(&id)?).await?;
    Ok(see_other(&ctx.page("/sources?notice=deleted")))
}
