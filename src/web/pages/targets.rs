//! A tenant's targets: the list, a new one, and one target's settings, health and actions.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ctx::{Ctx, Item, Kept, target_id};
use super::events::rfc3339_of;
use super::home::{health_badge, ratio_text};
use crate::api::events::{Recover, recover_target};
use crate::api::targets::{
    Rotate, TargetHealthView, TargetView, create_target, delete_target, list_targets, read_target,
    rotate_target_secret, test_target, update_target,
};
use crate::api::transforms::list_transform_versions;
use crate::model::target::TargetAuthView;
use crate::model::{TargetPatch, TargetSpec};
use crate::web::error::WebError;
use crate::web::form::{Form, Params, decode};
use crate::web::href::{query, seg};
use crate::web::layout::{at, badge, csrf_field, notice, page, see_other, stamp};
use crate::web::state::WebState;

/// The questions its destructive actions ask first (in the browser, or as a page).
const ASK_DISABLE: &str =
    "Disable this target? Its deliveries are parked in the error queue until it is enabled again.";
const ASK_ROTATE: &str = "Rotate the signing secret? The old one keeps signing during the overlap.";
const ASK_DELETE: &str = "Delete this target? Its pending deliveries are dropped.";

/// `GET …/targets`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let targets = list_targets(&state.core, &ctx.scope).await?.data;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Targets" }
        p { a href=(ctx.page("/targets/new")) id="new-target" { "New target" } }
        div.table-wrap { table id="targets" {
            thead { tr { th { "URL" } th { "Events" } th { "Mode" } th { "Health (last hour)" } th { "State" } } }
            tbody {
                @for t in &targets {
                    tr {
                        td { a href=(ctx.page(&format!("/targets/{}", seg(t.id.as_str())))) { (t.url) } }
                        td { (patterns(t)) }
                        td { (t.mode.as_str().replace('_', " ")) }
                        td.health { (health_cell(&t.health)) }
                        td {
                            @if t.active { (badge("active")) }
                            @else { (badge("disabled")) @if let Some(r) = &t.disabled_reason { " " span.muted { (r) } } }
                        }
                    }
                }
                @if targets.is_empty() { tr { td colspan="5" { "No targets yet." } } }
            }
        } }
    };
    Ok(page(&ctx.shell("Targets", "/targets"), body).into_response())
}

/// A target's health in a table cell: its state (red when failing, never green beside a low
/// ratio), the last hour's success ratio, and its newest attempt's status.
fn health_cell(h: &TargetHealthView) -> Markup {
    let ratio = h.success_ratio.map(|r| format!("{:.1} %", r * 100.0));
    let last = h.last_attempt.as_ref().map(|a| match a.status {
        Some(code) => code.to_string(),
        None => "no answer".to_owned(),
    });
    html! {
        (health_badge(h))
        @if let Some(r) = ratio { " " (r) }
        @if let Some(l) = last { " " span.muted { "last: " (l) } }
    }
}

fn patterns(t: &TargetView) -> String {
    t.events
        .iter()
        .map(|p| p.text())
        .collect::<Vec<_>>()
        .join(", ")
}

fn headers_text(t: &TargetView) -> String {
    t.headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fields of a target's form; `current` when editing.
fn target_fields(current: Option<&TargetView>) -> Markup {
    let mode = current.map_or("persistent", |t| t.mode.as_str());
    html! {
        label { "URL" input type="url" name="url" value=[current.map(|t| &t.url)] required placeholder="https://example.com/webhooks"; }
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
                    option value="oauth2" { "OAuth2 client credentials" }
                }
            }
            label { "Bearer token, password, header value or OAuth2 client secret" input type="password" name="auth_secret" autocomplete="off"; }
            label { "User name (basic), header name or OAuth2 client id" input type="text" name="auth_name" autocomplete="off"; }
            label { "OAuth2 token URL" input type="url" name="oauth2_token_url" placeholder="https://auth.example.com/oauth/token"; }
            label { "OAuth2 scope (optional)" input type="text" name="oauth2_scope"; }
            label { "OAuth2 audience (optional)" input type="text" name="oauth2_audience"; }
            label { "OAuth2 client authentication"
                select name="oauth2_method" {
                    option value="client_secret_basic" { "client_secret_basic (HTTP Basic)" }
                    option value="client_secret_post" { "client_secret_post (in the form)" }
                }
            }
        }
        fieldset id="tls-fields" {
            legend { "TLS to the receiver" }
            label { "Settings"
                select name="tls" {
                    @if current.is_some() { option value="keep" selected { "unchanged (the key is never shown)" } }
                    option value="fields" { "as below (all empty: the web's public CAs)" }
                }
            }
            label { "CA certificates, PEM (they replace the public roots for this target)" textarea name="tls_ca_pem" spellcheck="false" {} }
            label { "Client certificate, PEM (mTLS)" textarea name="tls_client_cert_pem" spellcheck="false" {} }
            label { "Client private key, PEM (sealed, never shown again)" textarea name="tls_client_key_pem" spellcheck="false" autocomplete="off" {} }
            label { "Server name (when its certificate names another host than the URL's)" input type="text" name="tls_server_name"; }
        }
        label { "Format"
            select name="format" {
                @let format = current.map_or("raw", |t| t.format.as_str());
                @for (f, label) in [("raw", "raw: the event's body as sent"), ("slack", "Slack message"), ("discord", "Discord message")] {
                    option value=(f) selected[f == format] { (label) }
                }
            }
        }
        fieldset id="retry-fields" {
            @let retry = current.and_then(|t| t.retry);
            legend { "Retries (empty: the deployment's policy)" }
            label { "Attempts in all" input type="number" name="retry_max_attempts" min="1" max="100" value=[retry.map(|r| r.max_attempts())]; }
            label { "First delay (ms)" input type="number" name="retry_initial_delay_ms" min="1" max="86400000" value=[retry.map(|r| r.initial_delay_ms())]; }
            label { "Growth per attempt" input type="number" name="retry_multiplier" min="1" max="10" step="0.1" value=[retry.map(|r| r.multiplier())]; }
            label { "Longest delay (ms)" input type="number" name="retry_max_delay_ms" min="1" max="86400000" value=[retry.map(|r| r.max_delay_ms())]; }
        }
        label { "Payload filter (JSON, e.g. {\"body.amount\": {\"$gte\": 1000}}; empty: every subscribed event)"
            textarea name="filter" spellcheck="false" { (current.and_then(filter_text).unwrap_or_default()) }
        }
        fieldset id="transform-fields" {
            legend { "Transformation (jq; empty: send the event as it came)" }
            label { "Program: gets {type, body, headers, url, method}, answers the same or {cancel: true}"
                textarea name="transform_program" spellcheck="false" rows="6" { (current.and_then(|t| t.transform.as_ref()).map(|t| t.program.as_str()).unwrap_or_default()) }
            }
            label { input type="checkbox" name="transform_enabled" checked[current.and_then(|t| t.transform.as_ref()).is_none_or(|t| t.enabled)]; " Enabled" }
        }
        fieldset id="batch-fields" {
            @let batch = current.and_then(|t| t.batch);
            legend { "Batches (empty: one request per event)" }
            label { "Events per batch (1–1000)" input type="number" name="batch_max_events" min="1" max="1000" value=[batch.map(|b| b.max_events.get())]; }
            label { "Longest wait (ms, 0–300000)" input type="number" name="batch_max_wait_ms" min="0" max="300000" value=[batch.map(|b| b.max_wait_ms.get())]; }
        }
        fieldset id="pace-fields" {
            @let limit = current.and_then(|t| t.rate_limit);
            legend { "Health and pace (empty: the deployment's settings, no rate limit)" }
            label { "Deliveries per second, across every dispatcher" input type="number" name="rate_per_second" min="0.001" step="any" value=[limit.map(|l| l.per_second())]; }
            label { "Burst" input type="number" name="rate_burst" min="1" value=[limit.and_then(|l| l.burst())]; }
            label { "In flight at once: adaptive, or a number" input type="text" name="concurrency" value=(current.map_or_else(|| "adaptive".to_owned(), |t| match t.concurrency { crate::model::target_health::Concurrency::Adaptive => "adaptive".to_owned(), crate::model::target_health::Concurrency::Fixed(n) => n.to_string() })); }
            label { "Disable after failing this many hours (fractional)" input type="number" name="disable_after_h" min="0.0001" max="8760" step="any" value=[current.and_then(|t| t.disable_after_h).map(|h| h.get())]; }
            label { input type="checkbox" name="heal" checked[current.is_none_or(|t| t.heal)]; " Heal: probe it once disabled for failing, enable it again when it answers, and send it what it missed" }
            label { "Circuit breaker overrides (JSON, e.g. {\"min_requests\": 20, \"open_s\": 60})"
                textarea name="breaker" spellcheck="false" { (current.and_then(|t| t.breaker.as_ref()).and_then(|b| serde_json::to_string(b).ok()).unwrap_or_default()) }
            }
        }
        label { input type="checkbox" name="ordered" checked[current.is_some_and(|t| t.ordered)]; " Ordered (one delivery at a time, in order)" }
        label { input type="checkbox" name="active" checked[current.is_none_or(|t| t.active)]; " Active" }
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
        "oauth2" => {
            let mut o = Map::new();
            o.insert(
                "token_url".into(),
                json!(form.get("oauth2_token_url").trim()),
            );
            o.insert("client_id".into(), json!(name));
            o.insert("client_secret".into(), json!(secret));
            for field in ["scope", "audience"] {
                let v = form.get(&format!("oauth2_{field}")).trim();
                if !v.is_empty() {
                    o.insert(field.into(), json!(v));
                }
            }
            if !form.get("oauth2_method").is_empty() {
                o.insert("method".into(), json!(form.get("oauth2_method")));
            }
            Some(json!({"oauth2": o}))
        }
        other => {
            return Err(WebError::BadRequest(format!(
                "unknown authentication {other:?}"
            )));
        }
    };
    if let Some(a) = auth {
        t.insert("auth".into(), a);
    }
    if form.get("tls") != "keep" {
        let mut tls = Map::new();
        for field in ["ca_pem", "client_cert_pem", "client_key_pem", "server_name"] {
            let v = form.get(&format!("tls_{field}")).trim();
            if !v.is_empty() {
                tls.insert(field.into(), json!(v));
            }
        }
        t.insert(
            "tls".into(),
            if tls.is_empty() {
                Value::Null
            } else {
                Value::Object(tls)
            },
        );
    }
    t.insert("ordered".into(), json!(form.checked("ordered")));
    t.insert("heal".into(), json!(form.checked("heal")));
    t.insert("active".into(), json!(form.checked("active")));
    if !form.get("format").is_empty() {
        t.insert("format".into(), json!(form.get("format")));
    }
    t.insert("retry".into(), retry_body(form)?);
    t.insert("filter".into(), filter_body(form)?);
    let program = form.get("transform_program").trim();
    t.insert(
        "transform".into(),
        if program.is_empty() {
            Value::Null
        } else {
            json!({"program": program, "enabled": form.checked("transform_enabled")})
        },
    );
    t.insert("batch".into(), batch_body(form)?);
    pace_body(form, &mut t)?;
    Ok(Value::Object(t))
}

/// The rate limit, auto-disable delay and breaker overrides a form gives (`null` when empty);
/// the API checks them and names the field it refuses.
fn pace_body(form: &Form, t: &mut Map<String, Value>) -> Result<(), WebError> {
    let number = |key: &str, what: &str| -> Result<Option<Value>, WebError> {
        let text = form.get(key).trim();
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str::<serde_json::Number>(text)
            .map(|n| Some(Value::Number(n)))
            .map_err(|_| WebError::BadRequest(format!("{what} must be a number")))
    };
    let per_second = number("rate_per_second", "rate_limit.per_second")?;
    let burst = number("rate_burst", "rate_limit.burst")?;
    let limit = match (per_second, burst) {
        (None, None) => Value::Null,
        (Some(p), None) => json!({"per_second": p}),
        (p, Some(b)) => json!({"per_second": p.unwrap_or(Value::Null), "burst": b}),
    };
    t.insert("rate_limit".into(), limit);
    let concurrency = form.get("concurrency").trim();
    if !concurrency.is_empty() {
        let value = match concurrency.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(concurrency),
        };
        t.insert("concurrency".into(), value);
    }
    t.insert(
        "disable_after_h".into(),
        number("disable_after_h", "disable_after_h")?.unwrap_or(Value::Null),
    );
    let breaker = form.get("breaker").trim();
    t.insert(
        "breaker".into(),
        if breaker.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(breaker)
                .map_err(|e| WebError::BadRequest(format!("breaker: not JSON ({e})")))?
        },
    );
    Ok(())
}

/// The batch settings a form gives: `null` (none) when both are empty; the API checks them.
fn batch_body(form: &Form) -> Result<Value, WebError> {
    let (events, wait) = (
        form.get("batch_max_events").trim(),
        form.get("batch_max_wait_ms").trim(),
    );
    if events.is_empty() && wait.is_empty() {
        return Ok(Value::Null);
    }
    let number = |text: &str, key: &str| -> Result<Value, WebError> {
        serde_json::from_str::<serde_json::Number>(if text.is_empty() { "0" } else { text })
            .map(Value::Number)
            .map_err(|_| WebError::BadRequest(format!("batch.{key} must be a number")))
    };
    Ok(json!({
        "max_events": number(events, "max_events")?,
        "max_wait_ms": number(wait, "max_wait_ms")?,
    }))
}

/// The filter a form gives: `null` (none) when empty, else its JSON, which the API compiles
/// (naming the path it refuses).
fn filter_body(form: &Form) -> Result<Value, WebError> {
    let text = form.get("filter").trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text).map_err(|e| WebError::BadRequest(format!("filter: not JSON ({e})")))
}

/// A target's filter, pretty-printed.
fn filter_text(t: &TargetView) -> Option<String> {
    t.filter
        .as_ref()
        .and_then(|f| serde_json::to_string_pretty(f).ok())
}

/// The retry policy a form gives: `null` (the deployment's) when every field is empty, else
/// the fields given (the API fills in and checks the rest, naming the field it refuses).
fn retry_body(form: &Form) -> Result<Value, WebError> {
    let mut r = Map::new();
    for (field, key) in [
        ("retry_max_attempts", "max_attempts"),
        ("retry_initial_delay_ms", "initial_delay_ms"),
        ("retry_multiplier", "multiplier"),
        ("retry_max_delay_ms", "max_delay_ms"),
    ] {
        let text = form.get(field).trim();
        if text.is_empty() {
            continue;
        }
        let n: serde_json::Number = serde_json::from_str(text)
            .map_err(|_| WebError::BadRequest(format!("retry.{key} must be a number")))?;
        r.insert(key.into(), Value::Number(n));
    }
    Ok(if r.is_empty() {
        Value::Null
    } else {
        Value::Object(r)
    })
}

/// A target's settings as sentences, not JSON.
fn details(t: &TargetView) -> Markup {
    html! {
        dl.fields id="target-details" {
            dt { "URL" } dd { code { (t.url) } }
            dt { "Event types" } dd { (patterns(t)) }
            dt { "Mode" } dd { (t.mode.as_str().replace('_', " ")) }
            dt { "Format" } dd { (t.format.as_str()) }
            dt { "Ordered" } dd { @if t.ordered { "yes: one delivery at a time, in order" } @else { "no" } }
            dt { "Retries" } dd { @match t.retry {
                None => "the deployment's policy",
                Some(r) => {
                    (r.max_attempts()) " attempts in all; the first retry after up to " (r.initial_delay_ms())
                    " ms, growing ×" (r.multiplier()) " per attempt, at most " (r.max_delay_ms()) " ms"
                }
            } }
            dt { "Headers" } dd { @let h = headers_text(t); @if h.is_empty() { "none" } @else { pre.inline { (h) } } }
            dt { "Payload filter" } dd { @match filter_text(t) {
                None => "none: every subscribed event",
                Some(f) => pre.inline id="target-filter" { (f) },
            } }
            dt { "Transformation" } dd { @match &t.transform {
                None => "none: deliveries go as the event came",
                Some(tr) => { "version " (tr.version) @if !tr.enabled { " (disabled)" } pre.inline id="target-transform" { (tr.program) } },
            } }
            dt { "Batches" } dd id="target-batch" { @match t.batch {
                None => "no: one request per event",
                Some(b) => { "up to " (b.max_events.get()) " events, sent at most " (b.max_wait_ms.get()) " ms after the first" },
            } }
            dt { "Authentication" } dd { @match &t.auth {
                None => "none",
                Some(TargetAuthView::Bearer(_)) => "bearer (masked)",
                Some(TargetAuthView::Basic { .. }) => "basic (masked)",
                Some(TargetAuthView::Header { .. }) => "header (masked)",
                Some(TargetAuthView::OAuth2 { token_url, client_id, .. }) => {
                    "OAuth2 client credentials: client " code { (client_id) } " at " code { (token_url) } " (secret masked)"
                },
            } }
            dt { "TLS" } dd id="target-tls" { @match &t.tls {
                None => "the web's public CAs, no client certificate",
                Some(tls) => {
                    @match &tls.ca_pem {
                        Some(ca) => { "private CA (" (ca.matches("BEGIN CERTIFICATE").count()) " certificates, instead of the public roots)" },
                        None => "the web's public CAs",
                    }
                    @if tls.client_cert_pem.is_some() { " · client certificate (mTLS; key sealed)" }
                    @if let Some(n) = &tls.server_name { " · server name " code { (n) } }
                },
            } }
            dt { "Signing secret" } dd { "sealed; shown at creation and rotation only"
                @if let Some(until) = &t.secret_rotating_until { " · the previous one signs too until " (stamp(until)) } }
            dt { "Declared by" } dd { (t.origin.as_str()) }
            dt { "Created" } dd { (stamp(&t.created_at)) }
            dt { "Changed" } dd { (stamp(&t.updated_at)) }
        }
    }
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
    let spec: TargetSpec = decode(target_body(&form)?)?;
    let created = create_target(&state.core, &ctx.scope, &spec).await?;
    let back = ctx.page(&format!("/targets/{}", seg(created.target.id.as_str())));
    Ok(ctx.shown_once(
        "Target created",
        "/targets",
        Kept::Sealed,
        &[("Its signing secret", "target-secret", &created.secret)],
        &back,
    ))
}

/// `GET …/targets/{target_id}`: settings, health and actions.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    Params(p): Params,
) -> Result<Response, WebError> {
    let t = read_target(&state.core, &ctx.scope, &target_id(&id)?).await?;
    let versions = list_transform_versions(&state.core, &ctx.scope, &t.id)
        .await?
        .data;
    let raw_id = t.id.as_str();
    let h = &t.health;
    let active = t.active;
    let last = h.last_attempt.as_ref();
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Target " (t.url) }
        section.card id="target-health" {
            h2 { "Health" }
            dl.fields {
                dt { "State" } dd { (badge(if active { "active" } else { "disabled" }))
                    @if let Some(r) = &t.disabled_reason { " " (r) } }
                dt { "Health" } dd id="health-state" { (health_cell(h)) }
                dt { "Delivered since " (stamp(&h.window_start)) } dd { (ratio_text(h)) }
                dt { "Failing since" } dd { (at(h.failing_since.as_deref())) }
                dt { "Circuit breaker" } dd id="breaker-state" {
                    (badge(h.breaker.state_word()))
                    @if let Some(u) = &h.breaker.until { " until " (stamp(u)) }
                    @if h.breaker.opens > 0 { " · opened " (h.breaker.opens) "× since it last closed" }
                    @if let Some(r) = h.breaker.failure_ratio { " · " (format!("{:.0} %", r * 100.0)) " of " (h.breaker.window_attempts) " recent attempts failed" }
                }
                @if let Some(p) = &h.paused_until { dt { "Paused by Retry-After" } dd { "until " (stamp(p)) } }
                @if let Some(r) = &t.rate_limit { dt { "Rate limit" } dd { (r.per_second()) " per second, burst " (r.effective_burst()) } }
                dt { "In flight at once" } dd id="concurrency-limit" {
                    @match h.concurrency_limit { Some(n) => (n), None => "—" }
                    " (" @match t.concurrency { crate::model::target_health::Concurrency::Adaptive => "adaptive", crate::model::target_health::Concurrency::Fixed(_) => "fixed" } ")"
                }
                dt { "Last success" } dd { (at(h.last_success_at.as_deref())) }
                dt { "Last status" } dd { @match last { Some(a) => { (a.status.map_or_else(|| "—".to_owned(), |c| c.to_string())) " at " (stamp(&a.at)) " (" (super::events::stored_latency(a.latency_ms)) ")" }, None => "—" } }
                dt { "Last error" } dd { @match last { Some(a) => (a.error.as_deref().unwrap_or("—")), None => "—" } }
            }
            p { a href=(ctx.page(&format!("/events{}", query(&[("target_id", raw_id)])))) { "Its events" } " · "
                a href=(ctx.page(&format!("/dead-letters{}", query(&[("target_id", raw_id)])))) { "Its error queue" } }
        }
        section.card id="test-target" {
            h2 { "Send a test event" }
            p.muted { "Sends a signed " code { "estafeta.ping" } " now and shows what the receiver answered. Nothing is recorded: not an event, not an attempt." }
            form.inline method="post" action=(ctx.page(&format!("/targets/{id}/test"))) {
                (csrf_field(csrf))
                button.secondary type="submit" id="send-test" { "Send test event" }
            }
        }
        (super::routing::sections(&ctx, &t, &versions))
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
            (details(&t))
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
    let patch: TargetPatch = decode(target_body(&form)?)?;
    update_target(&state.core, &ctx.scope, &target_id(&id)?, &patch).await?;
    Ok(see_other(&ctx.page(&format!("/targets/{id}?notice=saved"))))
}

/// `POST …/targets/{target_id}/test`: sends a signed `estafeta.ping` and shows the answer.
pub async fn test(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
) -> Result<Response, WebError> {
    let r = test_target(&state.core, &ctx.scope, &target_id(&id)?).await?;
    let body = html! {
        h1 { "Test delivery" }
        section.card id="test-result" {
            dl.fields {
                dt { "Result" } dd { (badge(if r.delivered { "delivered" } else { "failed" })) }
                dt { "Status" } dd { @match r.status { Some(c) => (c), None => "no answer" } }
                dt { "Latency" } dd { (latency_text(r.latency_ms)) }
                dt { "Error" } dd { @match &r.error { Some(e) => (e), None => "—" } }
                dt { "webhook-id" } dd { code { (r.webhook_id) } }
                @if let Some(v) = r.transform_version {
                    dt { "Transformation" } dd { "version " (v) }
                }
            }
            @if let Some(resp) = &r.response { h3 { "Response (first 512 bytes)" } pre.body { (resp) } }
        }
        p { a href=(ctx.page(&format!("/targets/{id}"))) { "Back to the target" } }
    };
    Ok(page(&ctx.shell("Test delivery", "/targets"), body).into_response())
}

/// A latency in ms as people read it: sub-millisecond ones in µs, not as 0 ms.
pub fn latency_text(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
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
    let patch = TargetPatch {
        active: Some(active),
        ..TargetPatch::default()
    };
    update_target(&state.core, &ctx.scope, &target_id(&id)?, &patch).await?;
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
    let until = rfc3339_of(form.get("until"));
    let mut range = Recover {
        since: rfc3339_of(form.get("since")),
        until: (!until.is_empty()).then_some(until),
        dry_run: !form.checked("confirmed"),
    };
    let target = target_id(&id)?;
    if range.dry_run {
        let n = recover_target(&state.core, &ctx.scope, &target, &range)
            .await?
            .recovering;
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
    range.dry_run = false;
    let n = recover_target(&state.core, &ctx.scope, &target, &range)
        .await?
        .recovering;
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
    let rotated =
        rotate_target_secret(&state.core, &ctx.scope, &target_id(&id)?, Rotate::default()).await?;
    let back = ctx.page(&format!("/targets/{id}"));
    Ok(ctx.shown_once(
        "Secret rotated",
        "/targets",
        Kept::Sealed,
        &[("The new signing secret", "target-secret", &rotated.secret)],
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
    delete_target(&state.core, &ctx.scope, &target_id(&id)?).await?;
    Ok(see_other(&ctx.page("/targets?notice=deleted")))
}
