//! A tenant's error queue: newest first, paged, filtered by target, type and time; select and
//! replay, replay all matching (one server-side action), delete.

use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::{Map, Value, json};

use super::ctx::Ctx;
use super::events::rfc3339_of;
use crate::api::dead_letters::{
    DeadLetterQuery, Replay, delete_dead_letter, list_dead_letters, replay_dead_letters,
};
use crate::api::targets::list_targets;
use crate::http::extract::decode_query;
use crate::model::DeadLetterId;
use crate::web::error::WebError;
use crate::web::form::{Form, Params, decode};
use crate::web::href::{query, seg};
use crate::web::layout::{csrf_field, notice, or_dash, page, see_other, stamp};
use crate::web::state::WebState;

/// The question deleting asks first (in the browser, or as a page); replaying all names how many.
const ASK_DELETE: &str = "Delete the ticked entries? Their deliveries are not sent again.";

fn ask_replay_all(n: u64) -> String {
    format!("Replay all {n} matching entries? Each delivery is sent again.")
}

/// Entries a page shows.
const PAGE: &str = "100";

/// The filters a page and its "replay all matching" share, as the API's names and values.
const FILTERS: [&str; 4] = ["target_id", "event_type", "since", "until"];

fn filters(f: &Form) -> Vec<(&'static str, String)> {
    FILTERS
        .iter()
        .map(|k| {
            let v = f.get(k);
            let v = if matches!(*k, "since" | "until") {
                rfc3339_of(v)
            } else {
                v.to_owned()
            };
            (*k, v)
        })
        .collect()
}

/// The error queue's query of a page's filters, `after` and `limit`, decoded by the API's
/// rules (a bad time or id is refused as the API refuses it).
fn listing_query(f: &Form, after: &str, limit: &str) -> Result<DeadLetterQuery, WebError> {
    let chosen = filters(f);
    let mut q: Vec<(&str, &str)> = chosen.iter().map(|(k, v)| (*k, v.as_str())).collect();
    q.extend([("after", after), ("limit", limit)]);
    let text = query(&q);
    Ok(decode_query(text.trim_start_matches('?'))?)
}

/// `GET …/dead-letters[?target_id=&event_type=&since=&until=&after=]`: newest first, a page
/// at a time, with the number of entries the filters select.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let q = listing_query(&p, p.get("after"), PAGE)?;
    let entries = list_dead_letters(&state.core, &ctx.scope, q).await?;
    let targets = list_targets(&state.core, &ctx.scope).await?.data;
    let urls: HashMap<&str, &str> = targets
        .iter()
        .map(|t| (t.id.as_str(), t.url.as_str()))
        .collect();
    let rows = &entries.data;
    let total = entries.total;
    let next = entries.next.as_ref().map(DeadLetterId::as_str);
    let target = p.get("target_id");
    let filtered = FILTERS.iter().any(|k| !p.get(k).is_empty());
    let mut next_q: Vec<(&str, &str)> = FILTERS.iter().map(|k| (*k, p.get(k))).collect();
    next_q.push(("after", next.unwrap_or_default()));
    let replayed = p.opt("replayed").and_then(|n| n.parse::<u64>().ok());
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        @if let Some(n) = replayed {
            p.notice role="status" id="replayed" { "Replayed " (n) " " (if n == 1 { "entry" } else { "entries" }) ": the deliveries go out again." }
        }
        h1 { "Error queue" }
        form.filters method="get" action=(ctx.page("/dead-letters")) id="dead-letter-filters" {
            label { "Target"
                select name="target_id" {
                    option value="" { "any" }
                    @for t in &targets {
                        option value=(t.id.as_str()) selected[t.id.as_str() == target] { (t.url) }
                    }
                }
            }
            label { "Event type" input type="text" name="event_type" placeholder="order.*" value=(p.get("event_type")); }
            label { "Failed from (UTC)" input type="datetime-local" name="since" value=(p.get("since")); }
            label { "To (UTC)" input type="datetime-local" name="until" value=(p.get("until")); }
            button.secondary type="submit" { "Filter" }
        }
        p id="dead-letter-total" {
            (total) " " (if total == 1 { "entry" } else { "entries" })
            @if filtered { " match" @if total == 1 { "es" } " the filters" }
            ", newest first."
        }
        form method="post" action=(ctx.page("/dead-letters/replay")) id="dead-letters" {
            (csrf_field(csrf))
            @for (k, v) in FILTERS.iter().map(|k| (*k, p.get(k))) {
                input type="hidden" name=(k) value=(v);
            }
            div.table-wrap { table {
                thead { tr {
                    th { input type="checkbox" data-select-all="ids" aria-label="Select all"; }
                    th { "Event" } th { "Type" } th { "Target" } th { "Attempts" } th { "Last status" } th { "Last error" } th { "Failed (UTC)" }
                } }
                tbody {
                    @for e in rows {
                        tr {
                            td { input type="checkbox" name="ids" value=(e.id.as_str()) aria-label="Select"; }
                            td { a href=(ctx.page(&format!("/events/{}", seg(e.event_id.as_str())))) { code { (e.event_id.as_str()) } } }
                            td { (e.event_type.as_str()) }
                            td { (urls.get(e.target_id.as_str()).copied().unwrap_or(e.target_id.as_str())) }
                            td { (e.attempts) }
                            td { (or_dash(e.last_status)) }
                            td { (e.last_error.as_deref().unwrap_or("—")) }
                            td { (stamp(&e.failed_at)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" { @if filtered { "No entry matches the filters." } @else { "The error queue is empty." } } } }
                }
            } }
            @if let Some(_) = next {
                p { a href=(ctx.page(&format!("/dead-letters{}", query(&next_q)))) id="older-dead-letters" { "Older entries" } }
            }
            @if !rows.is_empty() {
                div.actions {
                    button type="submit" name="which" value="selected" id="replay-selected" { "Replay selected" }
                    button.secondary type="submit" name="which" value="all" id="replay-all" data-confirm=(ask_replay_all(total)) {
                        "Replay all " (total) @if filtered { " matching" }
                    }
                    button.danger type="submit" formaction=(ctx.page("/dead-letters/delete")) id="delete-selected" data-confirm=(ASK_DELETE) { "Delete selected" }
                }
            }
        }
    };
    Ok(page(&ctx.shell("Error queue", "/dead-letters"), body).into_response())
}

/// `POST …/dead-letters/replay`: the ticked entries, or every entry the filters select,
/// replayed by the server however many there are.
pub async fn replay(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let mut body = Map::new();
    if form.get("which") == "all" {
        if !form.checked("confirmed") {
            // The page asks with the count it shows; without scripts, count again to ask.
            let q = listing_query(&form, "", "1")?;
            let n = list_dead_letters(&state.core, &ctx.scope, q).await?.total;
            let action = ctx.page("/dead-letters/replay");
            if let Some(ask) = ctx.confirm_first(&form, &ask_replay_all(n), &action) {
                return Ok(ask);
            }
        }
        for (k, v) in filters(&form) {
            if !v.is_empty() {
                body.insert(k.into(), json!(v));
            }
        }
    } else {
        let ids = form.all("ids");
        if ids.is_empty() {
            return Err(WebError::BadRequest(
                "tick the entries to replay first".into(),
            ));
        }
        body.insert("ids".into(), json!(ids));
    }
    let replay: Replay = decode(Value::Object(body))?;
    let n = replay_dead_letters(&state.core, &ctx.scope, replay)
        .await?
        .replayed
        .to_string();
    let mut q: Vec<(&str, &str)> = FILTERS.iter().map(|k| (*k, form.get(k))).collect();
    q.push(("replayed", &n));
    Ok(see_other(&ctx.page(&format!("/dead-letters{}", query(&q)))))
}

/// `POST …/dead-letters/delete`: deletes the ticked entries.
pub async fn remove(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let ids = form.all("ids");
    if ids.is_empty() {
        return Err(WebError::BadRequest(
            "tick the entries to delete first".into(),
        ));
    }
    if let Some(ask) = ctx.confirm_first(&form, ASK_DELETE, &ctx.page("/dead-letters/delete")) {
        return Ok(ask);
    }
    for id in ids {
        let id = DeadLetterId::parse(id).map_err(|_| WebError::NotFound("dead letter"))?;
        delete_dead_letter(&state.core, &ctx.scope, &id).await?;
    }
    let mut q: Vec<(&str, &str)> = FILTERS.iter().map(|k| (*k, form.get(k))).collect();
    q.push(("notice", "deleted"));
    Ok(see_other(&ctx.page(&format!("/dead-letters{}", query(&q)))))
}
