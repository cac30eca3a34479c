//! A tenant's events: the list (newest first, filtered, updating itself) and one event's
//! page (its body, and every attempt per target, with *resend*).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::ctx::{Ctx, Item};
use crate::api::dead_letters::{Replay, Selection, replay_dead_letters};
use crate::api::events::EventView;
use crate::api::events::{
    BodyEncoding, EventBody, EventList, EventQuery, HeaderView, list_events, read_event,
    read_event_body,
};
use crate::api::targets::{TargetView, list_targets};
use crate::http::extract::decode_query;
use crate::model::{EventId, TargetId};
use crate::store::deliveries::State as DeliveryState;
use crate::web::error::WebError;
use crate::web::form::{Form, Params};
use crate::web::href::{query, seg};
use crate::web::layout::{at, badge, csrf_field, notice, or_dash, page, see_other, stamp};
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

/// The list's filters, as the API's query, decoded by the API's rules.
fn api_query(p: &Form) -> Result<EventQuery, WebError> {
    let since = rfc3339_of(p.get("since"));
    let until = rfc3339_of(p.get("until"));
    let text = query(&[
        ("event_type", p.get("event_type")),
        ("status", p.get("status")),
        ("target_id", p.get("target_id")),
        ("since", &since),
        ("until", &until),
        ("before", p.get("before")),
        ("limit", PAGE),
    ]);
    Ok(decode_query(text.trim_start_matches('?'))?)
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
fn rows_markup(ctx: &Ctx, p: &Form, listing: &EventList) -> Markup {
    let first_page = p.get("before").is_empty();
    let refresh = ctx.page(&format!("/events/rows{}", page_query(p, "")));
    html! {
        tbody id="event-rows"
            hx-get=[first_page.then_some(&refresh)]
            hx-trigger=[first_page.then_some(format!("every {REFRESH_S}s"))]
            hx-swap=[first_page.then_some("outerHTML")] {
            @for e in &listing.data {
                tr {
                    td { a href=(ctx.page(&format!("/events/{}", seg(e.id.as_str())))) { code { (e.id.as_str()) } } }
                    td { (e.event_type) }
                    td { (badge(e.status.as_str())) }
                    td { (stamp(&e.received_at)) }
                    td { (e.deliveries.len()) " target" @if e.deliveries.len() != 1 { "s" } }
                }
            }
            @if listing.data.is_empty() { tr { td colspan="5" { "No events match." } } }
        }
    }
}

/// `GET …/events`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let listing = list_events(&state.core, &ctx.scope, api_query(&p)?).await?;
    let next = listing.next.as_ref().map(|n| n.as_str().to_owned());
    let status = p.get("status");
    // Targets are chosen by their URL, never by a pasted id.
    let targets = list_targets(&state.core, &ctx.scope).await?.data;
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
                    @for t in &targets {
                        option value=(t.id.as_str()) selected[t.id.as_str() == target] { (t.url) }
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
    let listing = list_events(&state.core, &ctx.scope, api_query(&p)?).await?;
    Ok(rows_markup(&ctx, &p, &listing).into_response())
}

/// A body for people: pretty JSON when it parses as JSON, else the text; clipped.
fn shown_body(body: &EventBody) -> (String, bool) {
    let raw = &body.body;
    let text = match body.encoding {
        BodyEncoding::Base64 => format!("(binary body, base64)\n{raw}"),
        BodyEncoding::Utf8 => pretty_json(raw).unwrap_or_else(|| raw.to_owned()),
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
    let event_id = EventId::parse(&id).map_err(|_| WebError::NotFound("event"))?;
    let event = read_event(&state.core, &ctx.scope, &event_id).await?;
    let body = match read_event_body(&state.core, &ctx.scope, &event_id).await {
        Ok(b) => Some(b),
        Err(e) if e.status == http::StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e.into()),
    };
    let attempts = &event.attempts;
    let deliveries = &event.deliveries;
    // Targets are shown by their URL; a target deleted since keeps its id.
    let targets = list_targets(&state.core, &ctx.scope).await?.data;
    let url_of = |id: &TargetId| targets.iter().find(|t| t.id == *id).map(|t| t.url.clone());
    let html_body = html! {
        (notice(p.opt("notice")))
        h1 { "Event " code { (event.id.as_str()) } }
        section.card {
            dl.fields {
                dt { "Type" } dd id="event-type" { (event.event_type.as_deref().unwrap_or("—")) }
                dt { "Content type" } dd { (event.content_type.as_deref().unwrap_or("—")) }
                dt { "Received (UTC)" } dd { (stamp(&event.received_at)) }
                @for (name, value) in &event.headers {
                    dt.kept-header { (name) } dd { (value.as_str().unwrap_or_default()) }
                }
            }
            @if let Some(errors) = &event.schema_errors {
                div id="schema-errors" {
                    h3 { "What the catalogue found (accepted: the catalogue only warns)" }
                    ul { @for e in errors { li { code { @if e.pointer.is_empty() { "(body)" } @else { (e.pointer) } } " " (e.message) } } }
                }
            }
        }
        section.card {
            h2 { "Body" }
            @match &body {
                Some(b) => {
                    @let (shown, clipped) = shown_body(b);
                    p.muted { (b.size) " bytes" @if clipped { ", the first " (SHOWN_BODY / 1024) " kB shown" } }
                    pre.body id="event-body" { (shown) }
                }
                None => p.muted { "The body is no longer kept (past retention)." }
            }
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() { p { "No target took this event (yet)." } }
        @let passed_over = passed_over(&targets, &event, body.as_ref());
        @if !passed_over.is_empty() {
            section.card id="not-delivered" {
                h3 { "Subscribed targets that did not get it" }
                ul { @for (t, why) in &passed_over {
                    li { a href=(ctx.page(&format!("/targets/{}", seg(t.id.as_str())))) { (t.url) } ": " (why) }
                } }
            }
        }
        @for d in deliveries {
            @let target = d.target_id.as_str();
            section.card.delivery data-target=(target) {
                h3 {
                    "Target "
                    @match url_of(&d.target_id) {
                        Some(url) => { a href=(ctx.page(&format!("/targets/{}", seg(target)))) title=(target) { (url) } },
                        None => { code { (target) } " " span.muted { "(deleted)" } },
                    }
                    " " (badge(d.state.as_str()))
                }
                dl.fields {
                    dt { "Attempts" } dd { (d.attempts) }
                    dt { "Last status" } dd { (or_dash(d.last_status)) }
                    dt { "Last error" } dd { (d.last_error.as_deref().unwrap_or("—")) }
                    dt { "Next retry" } dd { (at(d.next_retry_at.as_deref())) }
                    @if let Some(b) = &d.batch_id { dt { "Batch" } dd.batch { code { (b) } } }
                }
                div.table-wrap { table.attempts {
                    thead { tr { th { "#" } th { "At (UTC)" } th { "Status" } th { "Latency" } th { "Error" } th { "Response" } th { "Shaped by" } } }
                    tbody {
                        @for a in attempts.iter().filter(|a| a.target_id == d.target_id) {
                            tr {
                                td { (a.attempt) }
                                td { (stamp(&a.at)) }
                                td { (or_dash(a.status)) }
                                td { (stored_latency(a.latency_ms)) }
                                td { (a.error.as_deref().unwrap_or("—")) }
                                td { code { (a.response.as_deref().unwrap_or("—")) } }
                                td.shaped { @match a.transform_version { Some(v) => { "transformation v" (v) }, None => "—" } }
                            }
                            @if let (Some(sent), Some(received)) = (&a.request_headers, &a.response_headers) {
                                tr.headers {
                                    td colspan="7" {
                                        details {
                                            summary { "Headers of attempt " (a.attempt) }
                                            div.header-lists {
                                                (header_list("Sent", sent))
                                                (header_list("Received", received))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                } }
                @if d.state == DeliveryState::DeadLettered {
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

/// The tenant's targets that subscribe to the event's type and have no delivery of it, with
/// why, as far as their settings today tell: a payload filter that does not let it through,
/// or the target was disabled or created after the event was read.
fn passed_over<'a>(
    targets: &'a [TargetView],
    event: &EventView,
    stored: Option<&EventBody>,
) -> Vec<(&'a TargetView, String)> {
    let Some(event_type) = event.event_type.as_deref() else {
        return Vec::new();
    };
    let body: Option<serde_json::Value> = stored
        .filter(|b| matches!(b.encoding, BodyEncoding::Utf8))
        .and_then(|b| serde_json::from_str(&b.body).ok());
    targets
        .iter()
        .filter(|t| t.events.iter().any(|p| p.matches(event_type)))
        .filter(|t| !event.deliveries.iter().any(|d| d.target_id == t.id))
        .map(|t| {
            let why = if !t.active {
                "the target is disabled".to_owned()
            } else if let Some(f) = &t.filter {
                match crate::model::filter::Filter::compile(f) {
                    Ok(filter) if filter.reads_body() && stored.is_none() => {
                        "its payload filter looks into the body, which is no longer kept".to_owned()
                    }
                    Ok(filter) => {
                        let headers = serde_json::Value::Object(event.headers.clone());
                        let subject = crate::model::filter::Subject {
                            event_type,
                            body: body.as_ref(),
                            headers: &headers,
                            received_at: &event.received_at,
                        };
                        if filter.matches(&subject) {
                            "its filter lets it through today; it was written or changed after the event".to_owned()
                        } else {
                            "its payload filter does not let it through".to_owned()
                        }
                    }
                    Err(_) => "its payload filter".to_owned(),
                }
            } else {
                "subscribed after the event was read, or the event is still being read".to_owned()
            };
            (t, why)
        })
        .collect()
}

/// `POST …/events/{event}/resend`: sends the event to a target again, through its error
/// queue entry.
pub async fn resend(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let event = EventId::parse(&id).map_err(|_| WebError::NotFound("event"))?;
    let target = TargetId::parse(form.get("target_id"))
        .map_err(|_| WebError::BadRequest("which target? (target_id)".into()))?;
    // Only its error queue entries are resent, found however long the queue is: a
    // time-range recovery could take other events of the same instant along.
    let only_these = Replay {
        ids: None,
        select: Selection {
            event_id: Some(event.clone()),
            target_id: Some(target),
            ..Selection::default()
        },
    };
    let sent = replay_dead_letters(&state.core, &ctx.scope, only_these)
        .await?
        .replayed;
    let done = if sent > 0 { "resent" } else { "nothing" };
    Ok(see_other(&ctx.page(&format!(
        "/events/{}?notice={done}",
        seg(event.as_str())
    ))))
}

/// One side of an attempt's headers, as `name: value` lines.
fn header_list(title: &str, headers: &[HeaderView]) -> Markup {
    html! {
        div {
            h4 { (title) }
            @if headers.is_empty() { p.muted { "none (no response)" } }
            @else {
                pre.inline { @for h in headers { (h.name) ": " (h.value) "\n" } }
            }
        }
    }
}

/// A stored attempt's latency: kept in whole milliseconds, so one that took less says so
/// rather than "0 ms".
pub fn stored_latency(ms: u64) -> String {
    match ms {
        0 => "< 1 ms".to_owned(),
        ms => format!("{ms} ms"),
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
