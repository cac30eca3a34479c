//! A tenant's events: the list (newest first, filtered, updating itself) and one event's
//! page (its body, and every attempt per target, with *resend*).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::ctx::{Ctx, Item};
use crate::web::client::{query, seg};
use crate::web::error::WebError;
use crate::web::form::{Form, Params};
use crate::web::layout::{badge, csrf_field, items, notice, page, s, see_other, text, when};
use crate::web::state::WebState;

/// Events per page of the list.
const PAGE: &str = "50";
/// Largest part of a body a page shows.
const SHOWN_BODY: usize = 64 * 1024;
/// Seconds between the list's refreshes (its first page only).
const REFRESH_S: u32 = 5;

const STATUSES: &[&str] = &["in_progress", "succeeded", "failed", "no_targets"];

/// A `datetime-local` value (`2026-12-01T10:00`, UTC) as RFC 3339; RFC 3339 passes as is.
pub(super) fn rfc3339_of(local: &str) -> String {
    match local.len() {
        0 => String::new(),
        16 => format!("{local}:00Z"),
        19 => format!("{local}Z"),
        _ => local.to_owned(),
    }
}

/// The list's filters, as the API's query.
fn api_query(p: &Form) -> String {
    let since = rfc3339_of(p.get("since"));
    let until = rfc3339_of(p.get("until"));
    query(&[
        ("event_type", p.get("event_type")),
        ("status", p.get("status")),
        ("target_id", p.get("target_id")),
        ("since", &since),
        ("until", &until),
        ("before", p.get("before")),
        ("limit", PAGE),
    ])
}

/// The filters as the page's own query (for the refresh and the next page).
fn page_query(p: &Form, before: &str) -> String {
    query(&[
        ("event_type", p.get("event_type")),
        ("status", p.get("status")),
        ("target_id", p.get("target_id")),
        ("since", p.get("since")),
        ("until", p.get("until")),
        ("before", before),
    ])
}

/// The rows of the list; the first page asks to be refreshed every few seconds.
fn rows_markup(ctx: &Ctx, p: &Form, listing: &Value) -> Markup {
    let first_page = p.get("before").is_empty();
    let refresh = ctx.page(&format!("/events/rows{}", page_query(p, "")));
    html! {
        tbody id="event-rows"
            hx-get=[first_page.then_some(&refresh)]
            hx-trigger=[first_page.then_some(format!("every {REFRESH_S}s"))]
            hx-swap=[first_page.then_some("outerHTML")] {
            @for e in items(listing) {
                tr {
                    td { a href=(ctx.page(&format!("/events/{}", seg(s(e, "id"))))) { code { (s(e, "id")) } } }
                    td { (s(e, "event_type")) }
                    td { (badge(s(e, "status"))) }
                    td { (when(e, "received_at")) }
                    td {
                        @if let Some(ds) = e.get("deliveries").and_then(Value::as_array) {
                            (ds.len()) " target" @if ds.len() != 1 { "s" }
                        }
                    }
                }
            }
            @if items(listing).is_empty() { tr { td colspan="5" { "No events match." } } }
        }
    }
}

/// `GET …/events`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let listing = state
        .api
        .get(&ctx.api(&format!("/events{}", api_query(&p))))
        .await?;
    let next = listing
        .get("next")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let status = p.get("status");
    // Targets are chosen by their URL, never by a pasted id.
    let targets = state.api.get(&ctx.api("/targets")).await?;
    let target = p.get("target_id");
    let body = html! {
        h1 { "Events" }
        form.filters method="get" action=(ctx.page("/events")) id="event-filters" {
            label { "Event type" input type="text" name="event_type" placeholder="order.* or order.paid" value=(p.get("event_type")); }
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    @for st in STATUSES { option value=(st) selected[*st == status] { (st.replace('_', " ")) } }
                }
            }
            label { "Target"
                select name="target_id" {
                    option value="" { "any" }
                    @for t in items(&targets) {
                        option value=(s(t, "id")) selected[s(t, "id") == target] { (s(t, "url")) }
                    }
                }
            }
            label { "From (UTC)" input type="datetime-local" name="since" value=(p.get("since")); }
            label { "To (UTC)" input type="datetime-local" name="until" value=(p.get("until")); }
            button.secondary type="submit" { "Filter" }
        }
        div.table-wrap { table id="events" {
            thead { tr { th { "Event" } th { "Type" } th { "Status" } th { "Received (UTC)" } th { "Deliveries" } } }
            (rows_markup(&ctx, &p, &listing))
        } }
        @if let Some(n) = next {
            p { a href=(ctx.page(&format!("/events{}", page_query(&p, &n)))) id="older-events" { "Older events" } }
        }
    };
    Ok(page(&ctx.shell("Events", "/events"), body).into_response())
}

/// `GET …/events/rows`: the list's rows alone, for its refresh.
pub async fn rows(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let listing = state
        .api
        .get(&ctx.api(&format!("/events{}", api_query(&p))))
        .await?;
    Ok(rows_markup(&ctx, &p, &listing).into_response())
}

/// A body for people: pretty JSON when it parses as JSON, else the text; clipped.
fn shown_body(body: &Value) -> (String, bool) {
    let raw = s(body, "body");
    let text = if s(body, "encoding") == "base64" {
        format!("(binary body, base64)\n{raw}")
    } else {
        pretty_json(raw).unwrap_or_else(|| raw.to_owned())
    };
    if text.len() > SHOWN_BODY {
        let mut cut = SHOWN_BODY;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        (text[..cut].to_owned(), true)
    } else {
        (text, false)
    }
}

/// `raw` indented, when it is a JSON object or array, keys in the sender's order.
fn pretty_json(raw: &str) -> Option<String> {
    if !raw.trim_start().starts_with(['{', '[']) {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    let mut out = Vec::with_capacity(raw.len() * 2);
    let mut ser = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(&mut de, &mut ser).ok()?;
    de.end().ok()?;
    String::from_utf8(out).ok()
}

/// `GET …/events/{event}`.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    Params(p): Params,
) -> Result<Response, WebError> {
    let event = state.api.get(&ctx.api(&format!("/events/{id}"))).await?;
    let body = match state.api.get(&ctx.api(&format!("/events/{id}/body"))).await {
        Ok(b) => Some(b),
        Err(WebError::Api { status, .. }) if status == http::StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e),
    };
    let attempts: Vec<Value> = event
        .get("attempts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let deliveries: Vec<Value> = event
        .get("deliveries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let html_body = html! {
        (notice(p.opt("notice")))
        h1 { "Event " code { (s(&event, "id")) } }
        section.card {
            dl.fields {
                dt { "Type" } dd id="event-type" { (text(&event, "event_type")) }
                dt { "Content type" } dd { (text(&event, "content_type")) }
                dt { "Received (UTC)" } dd { (when(&event, "received_at")) }
            }
        }
        section.card {
            h2 { "Body" }
            @match &body {
                Some(b) => {
                    @let (shown, clipped) = shown_body(b);
                    p.muted { (text(b, "size")) " bytes" @if clipped { ", the first " (SHOWN_BODY / 1024) " kB shown" } }
                    pre.body id="event-body" { (shown) }
                }
                None => p.muted { "The body is no longer kept (past retention)." }
            }
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() { p { "No target took this event (yet)." } }
        @for d in &deliveries {
            @let target = s(d, "target_id");
            section.card.delivery data-target=(target) {
                h3 { "Target " a href=(ctx.page(&format!("/targets/{}", seg(target)))) { code { (target) } } " " (badge(s(d, "state"))) }
                dl.fields {
                    dt { "Attempts" } dd { (text(d, "attempts")) }
                    dt { "Last status" } dd { (text(d, "last_status")) }
                    dt { "Last error" } dd { (text(d, "last_error")) }
                    dt { "Next retry" } dd { (when(d, "next_retry_at")) }
                }
                div.table-wrap { table.attempts {
                    thead { tr { th { "#" } th { "At (UTC)" } th { "Status" } th { "Latency" } th { "Error" } th { "Response" } } }
                    tbody {
                        @for a in attempts.iter().filter(|a| s(a, "target_id") == target) {
                            tr {
                                td { (text(a, "attempt")) }
                                td { (when(a, "at")) }
                                td { (text(a, "status")) }
                                td { (stored_latency(a)) }
                                td { (text(a, "error")) }
                                td { code { (text(a, "response")) } }
                            }
                        }
                    }
                } }
                @if s(d, "state") == "dead_lettered" {
                    form.inline method="post" action=(ctx.page(&format!("/events/{id}/resend"))) {
                        (csrf_field(&ctx.csrf))
                        input type="hidden" name="target_id" value=(target);
                        button type="submit" class="resend" { "Resend" }
                    }
                }
            }
        }
    };
    Ok(page(&ctx.shell("Event", "/events"), html_body).into_response())
}

/// `POST …/events/{event}/resend`: sends the event to a target again, through its error
/// queue entry.
pub async fn resend(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let event = crate::model::EventId::parse(&id).map_err(|_| WebError::NotFound("event"))?;
    let target = crate::model::TargetId::parse(form.get("target_id"))
        .map_err(|_| WebError::BadRequest("which target? (target_id)".into()))?;
    // Only its error queue entries are resent, found however long the queue is: a
    // time-range recovery could take other events of the same instant along.
    let r = state
        .api
        .post(
            &ctx.api("/dead-letters/replay"),
            json!({ "event_id": event.as_str(), "target_id": target.as_str() }),
        )
        .await?;
    let sent = r.get("replayed").and_then(Value::as_u64).unwrap_or(0);
    let done = if sent > 0 { "resent" } else { "nothing" };
    Ok(see_other(&ctx.page(&format!(
        "/events/{}?notice={done}",
        seg(event.as_str())
    ))))
}

/// A stored attempt's latency: kept in whole milliseconds, so one that took less says so
/// rather than "0 ms".
pub fn stored_latency(a: &Value) -> String {
    match a.get("latency_ms").and_then(Value::as_u64) {
        Some(0) => "< 1 ms".to_owned(),
        Some(ms) => format!("{ms} ms"),
        None => "—".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_the_senders_key_order_and_leaves_other_text() {
        assert_eq!(
            pretty_json(r#"{"z":1,"a":[true,null]}"#).as_deref(),
            Some("{\n  \"z\": 1,\n  \"a\": [\n    true,\n    null\n  ]\n}")
        );
        assert_eq!(pretty_json("plain <b>text</b>"), None);
        assert_eq!(pretty_json(r#"{"a":1} trailing"#), None);
        assert_eq!(pretty_json("42"), None);
    }
}
