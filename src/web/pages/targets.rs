//! A tenant's targets: the list, a new one, and one target's settings, health and actions.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ctx::{Ctx, Item, Kept};
use super::events::rfc3339_of;
use crate::web::client::{query, seg};
use crate::web::error::WebError;
use crate::web::form::{Form, Params};
use crate::web::layout::{
    badge, csrf_field, fields, items, notice, page, s, see_other, text, when,
};
use crate::web::state::WebState;

/// The questions its destructive actions ask first (in the browser, or as a page).
const ASK_DISABLE: &str =
    "Disable this target? Its deliveries are parked in the error queue until it is enabled again.";
const ASK_ROTATE: &str = "Rotate the signing secret? The old one keeps signing during the overlap.";
const ASK_DELETE: &str = "Delete this target? Its pending deliveries are dropped.";

/// Recent deliveries a target's health is worked out from.
const HEALTH_WINDOW: usize = 100;

/// `GET …/targets`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let targets = state.api.get(&ctx.api("/targets")).await?;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Targets" }
        p { a href=(ctx.page("/targets/new")) id="new-target" { "New target" } }
        div.table-wrap { table id="targets" {
            thead { tr { th { "URL" } th { "Events" } th { "Mode" } th { "State" } } }
            tbody {
                @for t in items(&targets) {
                    tr {
                        td { a href=(ctx.page(&format!("/targets/{}", seg(s(t, "id"))))) { (s(t, "url")) } }
                        td { (patterns(t)) }
                        td { (s(t, "mode").replace('_', " ")) }
                        td {
                            @if t.get("active") == Some(&Value::Bool(true)) { (badge("active")) }
                            @else { (badge("disabled")) @if let Some(r) = t.get("disabled_reason").and_then(Value::as_str) { " " span.muted { (r) } } }
                        }
                    }
                }
                @if items(&targets).is_empty() { tr { td colspan="4" { "No targets yet." } } }
            }
        } }
    };
    Ok(page(&ctx.shell("Targets", "/targets"), body).into_response())
}

fn patterns(t: &Value) -> String {
    t.get("events")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

fn headers_text(t: &Value) -> String {
    t.get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The fields of a target's form; `current` when editing.
fn target_fields(current: Option<&Value>) -> Markup {
    let v = |k: &str| current.map(|t| s(t, k).to_owned()).unwrap_or_default();
    let mode = current.map(|t| s(t, "mode")).unwrap_or("persistent");
    let flag = |k: &str, default: bool| {
        current
            .and_then(|t| t.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(default)
    };
    html! {
        label { "URL" input type="url" name="url" value=(v("url")) required placeholder="https://example.com/webhooks"; }
        label { "Event types (comma separated: exact names, prefix.* or *)"
            input type="text" name="events" value=(current.map(patterns).unwrap_or_else(|| "*".into())) required;
        }
        label { "Mode"
            select name="mode" {
                @for (m, label) in [("persistent", "persistent: retry with backoff"), ("once", "once: one attempt"), ("fire_and_forget", "fire and forget")] {
                    option value=(m) selected[m == mode] { (label) }
                }
            }
        }
        label { "Headers (one per line, Name: value)"
            textarea name="headers" { (current.map(headers_text).unwrap_or_default()) }
        }
        fieldset {
            legend { "Authentication" }
            label { "Kind"
                select name="auth" {
                    @if current.is_some() { option value="keep" selected { "unchanged" } }
                    option value="none" { "none" }
                    option value="bearer" { "bearer token" }
                    option value="basic" { "basic (user and password)" }
                    option value="header" { "a header" }
                }
            }
            label { "Bearer token, password, or header value" input type="password" name="auth_secret" autocomplete="off"; }
            label { "User name (basic) or header name" input type="text" name="auth_name" autocomplete="off"; }
        }
        label { input type="checkbox" name="ordered" checked[flag("ordered", false)]; " Ordered (one delivery at a time, in order)" }
        label { input type="checkbox" name="active" checked[flag("active", true)]; " Active" }
    }
}

/// The target a form describes, as the API takes it.
fn target_body(form: &Form) -> Result<Value, WebError> {
    let mut t = Map::new();
    t.insert("url".into(), json!(form.get("url")));
    let events: Vec<&str> = form
        .get("events")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    t.insert("events".into(), json!(events));
    t.insert("mode".into(), json!(form.get("mode")));
    let mut headers = Map::new();
    for line in form
        .get("headers")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let Some((k, v)) = line.split_once(':') else {
            return Err(WebError::BadRequest(format!(
                "header line {line:?} must be `Name: value`"
            )));
        };
        headers.insert(k.trim().to_owned(), json!(v.trim()));
    }
    t.insert("headers".into(), Value::Object(headers));
    let secret = form.get("auth_secret");
    let name = form.get("auth_name");
    let auth = match form.get("auth") {
        "keep" | "" => None,
        "none" => Some(Value::Null),
        "bearer" => Some(json!({"bearer": secret})),
        "basic" => Some(json!({"basic": {"username": name, "password": secret}})),
        "header" => Some(json!({"header": {"name": name, "value": secret}})),
        other => {
            return Err(WebError::BadRequest(format!(
                "unknown authentication {other:?}"
            )));
        }
    };
    if let Some(a) = auth {
        t.insert("auth".into(), a);
    }
    t.insert("ordered".into(), json!(form.checked("ordered")));
    t.insert("active".into(), json!(form.checked("active")));
    Ok(Value::Object(t))
}

/// `GET …/targets/new`.
pub async fn new_form(ctx: Ctx) -> Result<Response, WebError> {
    let body = html! {
        h1 { "New target" }
        section.card {
            form.stack method="post" action=(ctx.page("/targets")) id="target-form" {
                (csrf_field(&ctx.csrf))
                (target_fields(None))
                div { button type="submit" { "Create target" } }
            }
        }
    };
    Ok(page(&ctx.shell("New target", "/targets"), body).into_response())
}

/// `POST …/targets`: creates a target and shows its signing secret, this once.
pub async fn create(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let created = state
        .api
        .post(&ctx.api("/targets"), target_body(&form)?)
        .await?;
    let back = ctx.page(&format!("/targets/{}", seg(s(&created, "id"))));
    Ok(ctx.shown_once(
        "Target created",
        "/targets",
        Kept::Sealed,
        &[("Its signing secret", "target-secret", s(&created, "secret"))],
        &back,
    ))
}

/// How a target has fared over its recent deliveries.
struct Health {
    finished: usize,
    succeeded: usize,
    retrying: usize,
    /// The newest attempt: (status, error, time).
    last: Option<Value>,
}

async fn health(state: &WebState, ctx: &Ctx, id: &str) -> Result<Health, WebError> {
    let path = ctx.api(&format!(
        "/events{}",
        query(&[("target_id", id), ("limit", &HEALTH_WINDOW.to_string())])
    ));
    let events = state.api.get(&path).await?;
    let mut h = Health {
        finished: 0,
        succeeded: 0,
        retrying: 0,
        last: None,
    };
    for e in items(&events) {
        let Some(deliveries) = e.get("deliveries").and_then(Value::as_array) else {
            continue;
        };
        for d in deliveries.iter().filter(|d| s(d, "target_id") == id) {
            match s(d, "state") {
                "succeeded" | "sent" => {
                    h.finished += 1;
                    h.succeeded += 1;
                }
                "dead_lettered" => h.finished += 1,
                "retrying" => h.retrying += 1,
                _ => {}
            }
        }
    }
    // The newest event that has an attempt of this target tells its last status and error.
    for e in items(&events).iter().take(5) {
        let view = state
            .api
            .get(&ctx.api(&format!("/events/{}", seg(s(e, "id")))))
            .await?;
        let last = view
            .get("attempts")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().rev().find(|a| s(a, "target_id") == id).cloned());
        if last.is_some() {
            h.last = last;
            break;
        }
    }
    Ok(h)
}

/// `GET …/targets/{target_id}`: settings, health and actions.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    Params(p): Params,
) -> Result<Response, WebError> {
    let t = state.api.get(&ctx.api(&format!("/targets/{id}"))).await?;
    let raw_id = s(&t, "id").to_owned();
    let h = health(&state, &ctx, &raw_id).await?;
    let active = t.get("active") == Some(&Value::Bool(true));
    let rate = if h.finished == 0 {
        "—".to_owned()
    } else {
        format!(
            "{:.1} % of {}",
            100.0 * h.succeeded as f64 / h.finished as f64,
            h.finished
        )
    };
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Target " (s(&t, "url")) }
        section.card id="target-health" {
            h2 { "Health (its last " (HEALTH_WINDOW) " events)" }
            dl.fields {
                dt { "State" } dd { (badge(if active { "active" } else { "disabled" }))
                    @if let Some(r) = t.get("disabled_reason").and_then(Value::as_str) { " " (r) } }
                dt { "Success rate" } dd { (rate) }
                dt { "In retry" } dd { (h.retrying) }
                dt { "Last status" } dd { @match &h.last { Some(a) => { (text(a, "status")) " at " (when(a, "at")) }, None => "—" } }
                dt { "Last error" } dd { @match &h.last { Some(a) => (text(a, "error")), None => "—" } }
            }
            p { a href=(ctx.page(&format!("/events{}", query(&[("target_id", &raw_id)])))) { "Its events" } " · "
                a href=(ctx.page(&format!("/dead-letters{}", query(&[("target_id", &raw_id)])))) { "Its error queue" } }
        }
        @if let Some(n) = p.opt("recovered").and_then(|n| n.parse::<u64>().ok()) {
            p.notice role="status" id="recovered" { "Recovered " (n) " " (if n == 1 { "event" } else { "events" }) ": sent to this target again." }
        }
        section.card id="recover" {
            h2 { "Recover a time range" }
            p.muted { "Sends again every event of the range whose delivery to this target ended in the error queue, from Redis and the log store alike. Count first; nothing is sent until you confirm." }
            form.row method="post" action=(ctx.page(&format!("/targets/{id}/recover"))) id="recover-form" {
                (csrf_field(csrf))
                label { "From (UTC)" input type="datetime-local" name="since" required; }
                label { "To (UTC, empty: now)" input type="datetime-local" name="until"; }
                button.secondary type="submit" id="recover-count" { "Count" }
            }
        }
        section.card {
            h2 { "Settings" }
            form.stack method="post" action=(ctx.page(&format!("/targets/{id}"))) id="target-form" {
                (csrf_field(csrf))
                (target_fields(Some(&t)))
                div { button type="submit" { "Save" } }
            }
        }
        section.card {
            h2 { "Details" }
            (fields(&t, &["url", "events", "headers", "mode", "active", "ordered"]))
            div.actions {
                form.inline method="post" action=(ctx.page(&format!("/targets/{id}/toggle"))) data-confirm=[active.then_some(ASK_DISABLE)] {
                    (csrf_field(csrf))
                    input type="hidden" name="active" value=(if active { "false" } else { "true" });
                    button.secondary type="submit" id="toggle-target" { @if active { "Disable" } @else { "Enable" } }
                }
                form.inline method="post" action=(ctx.page(&format!("/targets/{id}/rotate"))) data-confirm=(ASK_ROTATE) {
                    (csrf_field(csrf))
                    button.secondary type="submit" id="rotate-secret" { "Rotate secret" }
                }
                form.inline method="post" action=(ctx.page(&format!("/targets/{id}/delete"))) data-confirm=(ASK_DELETE) {
                    (csrf_field(csrf))
                    button.danger type="submit" id="delete-target" { "Delete" }
                }
            }
        }
    };
    Ok(page(&ctx.shell("Target", "/targets"), body).into_response())
}

/// `POST …/targets/{target_id}`: saves the settings.
pub async fn update(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    state
        .api
        .patch(&ctx.api(&format!("/targets/{id}")), target_body(&form)?)
        .await?;
    Ok(see_other(&ctx.page(&format!("/targets/{id}?notice=saved"))))
}

/// `POST …/targets/{target_id}/toggle`.
pub async fn toggle(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let active = form.get("active") == "true";
    if !active {
        let action = ctx.page(&format!("/targets/{id}/toggle"));
        if let Some(ask) = ctx.confirm_first(&form, ASK_DISABLE, &action) {
            return Ok(ask);
        }
    }
    state
        .api
        .patch(
            &ctx.api(&format!("/targets/{id}")),
            json!({"active": active}),
        )
        .await?;
    let done = if active { "enabled" } else { "disabled" };
    Ok(see_other(
        &ctx.page(&format!("/targets/{id}?notice={done}")),
    ))
}

/// `POST …/targets/{target_id}/recover`: without `confirmed`, counts what the range would send
/// again (a dry run) and asks; confirmed, sends it and says how many went.
pub async fn recover(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let since = rfc3339_of(form.get("since"));
    let until = rfc3339_of(form.get("until"));
    let mut spec = Map::new();
    spec.insert("since".into(), json!(since));
    if !until.is_empty() {
        spec.insert("until".into(), json!(until));
    }
    let path = ctx.api(&format!("/targets/{id}/recover"));
    if !form.checked("confirmed") {
        let mut dry = spec.clone();
        dry.insert("dry_run".into(), json!(true));
        let counted = state.api.post(&path, Value::Object(dry)).await?;
        let n = counted
            .get("recovering")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let action = ctx.page(&format!("/targets/{id}/recover"));
        let question = format!(
            "{n} {} of this range did not reach this target. Send {} again?",
            if n == 1 { "event" } else { "events" },
            if n == 1 { "it" } else { "them" },
        );
        if n == 0 {
            return Ok(see_other(&ctx.page(&format!("/targets/{id}?recovered=0"))));
        }
        if let Some(ask) = ctx.confirm_first(&form, &question, &action) {
            return Ok(ask);
        }
    }
    let sent = state.api.post(&path, Value::Object(spec)).await?;
    let n = sent.get("recovering").and_then(Value::as_u64).unwrap_or(0);
    Ok(see_other(
        &ctx.page(&format!("/targets/{id}?recovered={n}")),
    ))
}

/// `POST …/targets/{target_id}/rotate`: a new signing secret, shown this once.
pub async fn rotate(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/targets/{id}/rotate"));
    if let Some(ask) = ctx.confirm_first(&form, ASK_ROTATE, &action) {
        return Ok(ask);
    }
    let rotated = state
        .api
        .post(&ctx.api(&format!("/targets/{id}/rotate-secret")), json!({}))
        .await?;
    let back = ctx.page(&format!("/targets/{id}"));
    Ok(ctx.shown_once(
        "Secret rotated",
        "/targets",
        Kept::Sealed,
        &[(
            "The new signing secret",
            "target-secret",
            s(&rotated, "secret"),
        )],
        &back,
    ))
}

/// `POST …/targets/{target_id}/delete`.
pub async fn remove(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/targets/{id}/delete"));
    if let Some(ask) = ctx.confirm_first(&form, ASK_DELETE, &action) {
        return Ok(ask);
    }
    ctx.delete_then(&state, &format!("/targets/{id}"), "/targets")
        .await
}
