//! A tenant's sources: the inbound webhook URLs of external platforms, with their
//! verification, their silence watch, its incidents and what was last received.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::{Map, Value, json};

use super::ctx::{Ctx, Item, Kept};
use crate::web::client::seg;
use crate::web::error::WebError;
use crate::web::form::{Form, Params};
use crate::web::layout::{badge, csrf_field, fields, items, notice, page, s, text, when};
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
    let sources = state.api.get(&ctx.api("/sources")).await?;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Sources" }
        div.table-wrap { table id="sources" {
            thead { tr { th { "Name" } th { "Verification" } th { "Event type from" } th { "Silence watch" } th { "Last received (UTC)" } } }
            tbody {
                @for src in items(&sources) {
                    tr {
                        td { a href=(ctx.page(&format!("/sources/{}", seg(s(src, "id"))))) { (s(src, "name")) } }
                        td { (src.get("verify").map(|v| text(v, "scheme")).unwrap_or_default()) }
                        td { (src.get("event_type").map(Value::to_string).unwrap_or_default()) }
                        td.watch {
                            @if src.get("silent") == Some(&Value::Bool(true)) { (badge("down")) " silent, expected every " (text(src, "expect_every_s")) " s" }
                            @else if src.get("expect_every_s").is_some_and(|v| !v.is_null()) { (badge("up")) " every " (text(src, "expect_every_s")) " s" }
                            @else { "none" }
                        }
                        td { (when(src, "last_received_at")) }
                    }
                }
                @if items(&sources).is_empty() { tr { td colspan="5" { "No sources yet." } } }
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
fn with_url(ctx: &Ctx, title: &str, src: &Value) -> Response {
    let back = ctx.page(&format!("/sources/{}", seg(s(src, "id"))));
    ctx.shown_once(
        &format!("{title}: {}", s(src, "name")),
        "/sources",
        Kept::Hashed,
        &[(
            "Webhook URL (a path on the edge listener)",
            "source-url",
            s(src, "url"),
        )],
        &back,
    )
}

/// `POST …/sources`.
pub async fn create(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let created = state
        .api
        .post(&ctx.api("/sources"), source_body(&form)?)
        .await?;
    Ok(with_url(&ctx, "Source created", &created))
}

/// `GET …/sources/{source_id}`.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    Params(p): Params,
) -> Result<Response, WebError> {
    let src = state.api.get(&ctx.api(&format!("/sources/{id}"))).await?;
    let incidents = state
        .api
        .get(&ctx.api(&format!("/sources/{id}/incidents")))
        .await?;
    let checks = state
        .api
        .get(&ctx.api(&format!("/sources/{id}/checks")))
        .await?;
    let refusals = state
        .api
        .get(&ctx.api(&format!("/sources/{id}/refusals")))
        .await?;
    let watched = src.get("expect_every_s").is_some_and(|v| !v.is_null());
    let open = src.get("silent") == Some(&Value::Bool(true));
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Source " (s(&src, "name")) }
        section.card {
            dl.fields id="source-state" {
                dt { "Silence watch" } dd {
                    @if !watched { "none" }
                    @else if open { (badge("down")) " silent past its deadline" }
                    @else { (badge("up")) " every " (text(&src, "expect_every_s")) " s, grace " (text(&src, "grace_s")) " s" }
                }
                dt { "Last received (UTC)" } dd id="last-received" { (when(&src, "last_received_at")) }
            }
            (fields(&src, &["name", "expect_every_s", "grace_s"]))
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
                    @for i in items(&incidents) { tr { td { (when(i, "opened_at")) } td { (s(i, "reason")) } td { (when(i, "resolved_at")) } } }
                    @if items(&incidents).is_empty() { tr { td colspan="3" { "No incidents." } } }
                }
            } }
        }
        section.card {
            h2 { "Refused deliveries" }
            p.muted { "The last 20 webhooks refused in 30 days: a bad or stale signature, or a delivery sent twice." }
            div.table-wrap { table id="refusals" {
                thead { tr { th { "At (UTC)" } th { "Reason" } th { "Sender" } } }
                tbody {
                    @for r in items(&refusals) { tr { td { (when(r, "at")) } td { (s(r, "reason")) } td { (text(r, "sender_ip")) } } }
                    @if items(&refusals).is_empty() { tr { td colspan="3" { "None refused." } } }
                }
            } }
        }
        section.card {
            h2 { "Recent checks" }
            div.table-wrap { table {
                thead { tr { th { "At (UTC)" } th { "Signal" } th { "Status" } th { "Reason" } } }
                tbody {
                    @for c in items(&checks) { tr { td { (when(c, "at")) } td { (s(c, "signal")) } td { (badge(s(c, "status"))) } td { (s(c, "reason")) } } }
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
    let rotated = state
        .api
        .post(&ctx.api(&format!("/sources/{id}/rotate-token")), json!({}))
        .await?;
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
    ctx.delete_then(&state, &format!("/sources/{id}"), "/sources")
        .await
}
