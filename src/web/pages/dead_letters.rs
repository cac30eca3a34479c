//! A tenant's error queue: filter by target, select and replay, replay all, delete.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::{Map, Value, json};

use super::ctx::Ctx;
use crate::web::client::{query, seg};
use crate::web::error::WebError;
use crate::web::form::{Form, Params};
use crate::web::layout::{csrf_field, items, notice, page, s, see_other, text, when};
use crate::web::state::WebState;

/// Entries a page shows.
const PAGE: &str = "500";

/// `GET …/dead-letters[?target_id=]`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let target = p.get("target_id");
    let entries = state
        .api
        .get(&ctx.api(&format!(
            "/dead-letters{}",
            query(&[("target_id", target), ("limit", PAGE)])
        )))
        .await?;
    let rows = items(&entries);
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Error queue" }
        form.filters method="get" action=(ctx.page("/dead-letters")) {
            label { "Target id" input type="text" name="target_id" value=(target); }
            button.secondary type="submit" { "Filter" }
        }
        form method="post" action=(ctx.page("/dead-letters/replay")) id="dead-letters" {
            (csrf_field(csrf))
            input type="hidden" name="target_id" value=(target);
            div.table-wrap { table {
                thead { tr {
                    th { input type="checkbox" data-select-all="ids" aria-label="Select all"; }
                    th { "Event" } th { "Type" } th { "Target" } th { "Attempts" } th { "Last status" } th { "Last error" } th { "Failed (UTC)" }
                } }
                tbody {
                    @for e in rows {
                        tr {
                            td { input type="checkbox" name="ids" value=(s(e, "id")) aria-label="Select"; }
                            td { a href=(ctx.page(&format!("/events/{}", seg(s(e, "event_id"))))) { code { (s(e, "event_id")) } } }
                            td { (s(e, "event_type")) }
                            td { code { (s(e, "target_id")) } }
                            td { (text(e, "attempts")) }
                            td { (text(e, "last_status")) }
                            td { (text(e, "last_error")) }
                            td { (when(e, "failed_at")) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" { "The error queue is empty." } } }
                }
            } }
            @if !rows.is_empty() {
                div.actions {
                    button type="submit" name="which" value="selected" id="replay-selected" { "Replay selected" }
                    button.secondary type="submit" name="which" value="all" id="replay-all" { "Replay all" @if !target.is_empty() { " of this target" } }
                    button.danger type="submit" formaction=(ctx.page("/dead-letters/delete")) id="delete-selected" { "Delete selected" }
                }
            }
        }
    };
    Ok(page(&ctx.shell("Error queue", "/dead-letters"), body).into_response())
}

/// `POST …/dead-letters/replay`: the ticked entries, or all (of the filtered target).
pub async fn replay(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let mut body = Map::new();
    if form.get("which") == "all" {
        if let Some(t) = form.opt("target_id") {
            body.insert("target_id".into(), json!(t));
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
    state
        .api
        .post(&ctx.api("/dead-letters/replay"), Value::Object(body))
        .await?;
    Ok(see_other(&ctx.page(&format!(
        "/dead-letters{}",
        query(&[("target_id", form.get("target_id")), ("notice", "replayed")])
    ))))
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
    for id in ids {
        let id =
            crate::model::DeadLetterId::parse(id).map_err(|_| WebError::NotFound("dead letter"))?;
        state
            .api
            .delete(&ctx.api(&format!("/dead-letters/{}", seg(id.as_str()))))
            .await?;
    }
    Ok(see_other(&ctx.page(&format!(
        "/dead-letters{}",
        query(&[("target_id", form.get("target_id")), ("notice", "deleted")])
    ))))
}
