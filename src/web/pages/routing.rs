//! A target's routing, on its page: trying its payload filter on the tenant's stored events,
//! and its transformation (versions, and a simulation on a real event) before either is saved.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::ctx::{Ctx, Item, target_id};
use crate::api::filters::{FilterTest, test_target_filter};
use crate::api::targets::TargetView;
use crate::api::transforms::{Simulate, TransformVersionView, simulate_transform};
use crate::model::EventId;
use crate::model::filter::TargetFilter;
use crate::model::transform::JqProgram;
use crate::web::error::WebError;
use crate::web::form::Form;
use crate::web::href::seg;
use crate::web::layout::{badge, csrf_field, page, stamp};
use crate::web::state::WebState;

/// The routing sections of a target's page.
pub fn sections(ctx: &Ctx, t: &TargetView, versions: &[TransformVersionView]) -> Markup {
    let id = seg(t.id.as_str());
    let filter = t
        .filter
        .as_ref()
        .and_then(|f| serde_json::to_string_pretty(f).ok())
        .unwrap_or_default();
    let program = t
        .transform
        .as_ref()
        .map(|tr| tr.program.clone())
        .unwrap_or_default();
    html! {
        section.card id="filter-try" {
            h2 { "Try a filter on stored events" }
            p.muted { "Evaluates the filter below (the target's own when it is empty) on the tenant's stored events of this target's types, newest first, from Redis and the log store. Nothing is saved." }
            form.stack method="post" action=(ctx.page(&format!("/targets/{id}/filter-try"))) {
                (csrf_field(&ctx.csrf))
                label { "Filter (JSON)" textarea name="filter" spellcheck="false" { (filter) } }
                label { "Events to evaluate (1–10000)" input type="number" name="limit" min="1" max="10000" value="1000"; }
                div { button.secondary type="submit" id="filter-try-run" { "Try it" } }
            }
        }
        section.card id="transform" {
            h2 { "Transformation" }
            @match &t.transform {
                None => p.muted { "None: deliveries go as the event came. Write a program in the settings below, or try one here first." },
                Some(tr) => p { "Version " (tr.version) " · " (badge(if tr.enabled { "active" } else { "disabled" })) },
            }
            form.stack method="post" action=(ctx.page(&format!("/targets/{id}/simulate"))) id="simulate-form" {
                (csrf_field(&ctx.csrf))
                label { "Program (empty: the target's own)" textarea name="program" spellcheck="false" rows="6" { (program) } }
                label { "On the stored event (its id)" input type="text" name="event_id" placeholder="evt_…"; }
                label { "Or on this event (JSON: {\"type\", \"body\", \"headers\"?})" textarea name="event" spellcheck="false" rows="4" {} }
                div { button.secondary type="submit" id="simulate-run" { "Simulate" } }
            }
            @if !versions.is_empty() {
                details id="transform-versions" {
                    summary { "Versions (the last " (versions.len()) ")" }
                    @for v in versions {
                        h3 { "Version " (v.version) " · " (stamp(&v.saved_at)) @if !v.enabled { " (disabled)" } }
                        pre.inline { (v.program) }
                    }
                }
            }
        }
    }
}

/// `POST …/targets/{target_id}/filter-try`: the filter's result on the stored events.
pub async fn filter_try(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let target = target_id(&id)?;
    let text = form.get("filter").trim();
    let filter = if text.is_empty() {
        None
    } else {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| WebError::BadRequest(format!("filter: not JSON ({e})")))?;
        Some(TargetFilter::new(value).map_err(|e| WebError::BadRequest(format!("filter: {e}")))?)
    };
    let limit = match form.get("limit").trim() {
        "" => None,
        n => Some(
            n.parse::<u64>()
                .map_err(|_| WebError::BadRequest("limit must be a whole number".into()))?,
        ),
    };
    let req = FilterTest {
        filter,
        since: None,
        limit,
    };
    let r = test_target_filter(&state.core, &ctx.scope, &target, &req).await?;
    let body = html! {
        h1 { "Filter tried" }
        section.card id="filter-result" {
            dl.fields {
                dt { "Evaluated" } dd id="filter-evaluated" { (r.evaluated) " events of the target's types" }
                dt { "Let through" } dd id="filter-matched" { (r.matched) }
                dt { "Could not be read" } dd { (r.errors.len()) }
            }
            @if !r.sample.is_empty() {
                h3 { "Newest matches" }
                ul id="filter-sample" {
                    @for e in &r.sample {
                        li { a href=(ctx.page(&format!("/events/{}", seg(e.as_str())))) { code { (e.as_str()) } } }
                    }
                }
            }
            @for e in &r.errors { p.muted { code { (e.event_id.as_str()) } ": " (e.message) } }
        }
        p { a href=(ctx.page(&format!("/targets/{id}"))) { "Back to the target" } }
    };
    Ok(page(&ctx.shell("Filter tried", "/targets"), body).into_response())
}

/// `POST …/targets/{target_id}/simulate`: what the transformation would send.
pub async fn simulate(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let target = target_id(&id)?;
    let program = match form.get("program").trim() {
        "" => None,
        p => Some(JqProgram::parse(p).map_err(|e| WebError::BadRequest(format!("program {e}")))?),
    };
    let event_id = match form.get("event_id").trim() {
        "" => None,
        e => Some(EventId::parse(e).map_err(|_| WebError::BadRequest("no such event id".into()))?),
    };
    let event = match form.get("event").trim() {
        "" => None,
        text => Some(
            serde_json::from_str(text).map_err(|e| WebError::BadRequest(format!("event: {e}")))?,
        ),
    };
    let req = Simulate {
        program,
        event_id,
        event,
    };
    let r = simulate_transform(&state.core, &ctx.scope, &target, &req).await?;
    let body = html! {
        h1 { "Simulated delivery" }
        section.card id="simulation" {
            dl.fields {
                dt { "Outcome" } dd id="simulation-outcome" { (badge(r.outcome)) }
                dt { "Program version" } dd { @match r.version { Some(v) => (v), None => "—" } }
                @if let Some(e) = &r.error { dt { "Why" } dd id="simulation-error" { (e) } }
            }
            @if let Some(req) = &r.request {
                h3 { "Request" }
                p { code id="simulation-line" { (req.method) " " (req.url) } }
                dl.fields {
                    dt { "Content type" } dd { (req.content_type.as_deref().unwrap_or("—")) }
                    @for h in &req.headers { dt { (h.name) } dd { (h.value) } }
                }
                h3 { "Body" }
                pre.body id="simulation-body" { (req.body) }
                p.muted { "The gateway adds webhook-id, webhook-timestamp, webhook-signature (over this body), estafeta-event-type, user-agent and the target's authentication." }
            }
        }
        p { a href=(ctx.page(&format!("/targets/{id}"))) { "Back to the target" } }
    };
    Ok(page(&ctx.shell("Simulated delivery", "/targets"), body).into_response())
}
