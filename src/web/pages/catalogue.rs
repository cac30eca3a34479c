//! A tenant's event catalogue: the types with their owners and schema versions, a type's page
//! (its schemas shown readably, a new version, deprecate, archive), through the API's typed
//! operations.

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{FromRequestParts, RawPathParams, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ctx::Ctx;
use crate::api::event_types::{
    EventTypeQuery, EventTypeView, list_event_types, put_event_type, read_event_type,
    remove_event_type, update_event_type,
};
use crate::model::EventType;
use crate::model::catalogue::{EventTypePatch, EventTypeSpec};
use crate::web::error::WebError;
use crate::web::form::{Form, Params, decode};
use crate::web::href::{query, seg};
use crate::web::layout::{badge, csrf_field, notice, page, see_other, stamp};
use crate::web::state::WebState;

/// The event type a page's path names.
#[derive(Debug)]
pub struct TypeName(EventType);

impl<S: Send + Sync> FromRequestParts<S> for TypeName {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<TypeName, WebError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_: RawPathParamsRejection| WebError::NotFound("event type"))?;
        params
            .iter()
            .last()
            .and_then(|(_, v)| EventType::parse(v).ok())
            .map(TypeName)
            .ok_or(WebError::NotFound("event type"))
    }
}

/// An event type as a path segment: as it is (its alphabet is safe in a path), but for one
/// made of dots only, which a path would read as `.` or `..`.
fn type_seg(name: &str) -> String {
    if name.chars().all(|c| c == '.') {
        seg(name)
    } else {
        name.to_owned()
    }
}

const ASK_EXPUNGE: &str =
    "Delete this event type for good? An enforcing catalogue then refuses its events.";

/// `GET …/event-types`.
pub async fn list(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let archived = p.opt("archived") == Some("1");
    let q = EventTypeQuery {
        include_archived: archived,
        limit: Some(500),
        ..EventTypeQuery::default()
    };
    let types = list_event_types(&state.core, &ctx.scope, &q).await?;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Event catalogue" }
        p.muted { "The event types this tenant sends, who owns them, and the JSON Schemas their bodies follow. Whether ingest holds events to it is the tenant's catalogue setting (off, warn, enforce)." }
        p { @if archived { a href=(ctx.page("/event-types")) { "Hide archived types" } }
            @else { a href=(ctx.page(&format!("/event-types{}", query(&[("archived", "1")])))) { "Show archived types" } } }
        div.table-wrap { table id="event-types" {
            thead { tr { th { "Type" } th { "Group" } th { "Owner" } th { "Schema versions" } th { "State" } } }
            tbody {
                @for t in &types.data {
                    tr {
                        td { a href=(ctx.page(&format!("/event-types/{}", type_seg(t.name.as_str())))) { code { (t.name.as_str()) } } }
                        td { (t.group.as_ref().map(|g| g.as_str()).unwrap_or("—")) }
                        td { (owner_text(t)) }
                        td { @if t.schemas.is_empty() { "none: any body" } @else { (t.schemas.keys().cloned().collect::<Vec<_>>().join(", ")) } }
                        td { (state_badges(t)) }
                    }
                }
                @if types.data.is_empty() { tr { td colspan="5" { "No event types yet." } } }
            }
        } }
        @if types.next.is_some() { p.muted { "The first 500 types are shown; the API pages through the rest." } }
        section.card {
            h2 { "Add or replace a type" }
            form.stack method="post" action=(ctx.page("/event-types")) id="event-type-form" {
                (csrf_field(&ctx.csrf))
                label { "Name (A-Z a-z 0-9 _ . -)" input type="text" name="name" required placeholder="order.paid"; }
                label { "Description" textarea name="description" rows="2" {} }
                label { "Group" input type="text" name="group" placeholder="billing"; }
                fieldset {
                    legend { "Owner" }
                    label { "Service" input type="text" name="owner_service"; }
                    label { "Team" input type="text" name="owner_team"; }
                    label { "Repository URL" input type="url" name="owner_repository_url"; }
                }
                label { "JSON Schema of version 1 (empty: any body)" textarea name="schema" spellcheck="false" rows="8" {} }
                div { button type="submit" { "Save type" } }
            }
        }
    };
    Ok(page(&ctx.shell("Event catalogue", "/event-types"), body).into_response())
}

fn owner_text(t: &EventTypeView) -> String {
    let o = &t.owner;
    let parts: Vec<&str> = [o.team.as_ref(), o.service.as_ref()]
        .into_iter()
        .flatten()
        .map(|n| n.as_str())
        .collect();
    if parts.is_empty() {
        "—".into()
    } else {
        parts.join(" · ")
    }
}

fn state_badges(t: &EventTypeView) -> Markup {
    html! {
        @if t.archived { (badge("archived")) }
        @else if t.deprecated { (badge("deprecated")) }
        @else { (badge("active")) }
    }
}

/// A JSON document a form field holds, or `None` when it is empty.
fn json_field(form: &Form, name: &str) -> Result<Option<Value>, WebError> {
    let text = form.get(name).trim();
    if text.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| WebError::BadRequest(format!("{name}: not JSON ({e})")))
}

/// `POST …/event-types`: creates or replaces a type from the form.
pub async fn save(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let name = EventType::parse(form.get("name").trim())
        .map_err(|e| WebError::BadRequest(format!("name {e}")))?;
    let mut spec = Map::new();
    spec.insert("description".into(), json!(form.get("description")));
    if !form.get("group").trim().is_empty() {
        spec.insert("group".into(), json!(form.get("group").trim()));
    }
    let mut owner = Map::new();
    for (field, key) in [
        ("owner_service", "service"),
        ("owner_team", "team"),
        ("owner_repository_url", "repository_url"),
    ] {
        let v = form.get(field).trim();
        if !v.is_empty() {
            owner.insert(key.into(), json!(v));
        }
    }
    spec.insert("owner".into(), Value::Object(owner));
    if let Some(schema) = json_field(&form, "schema")? {
        spec.insert("schemas".into(), json!({ "1": schema }));
    }
    let spec: EventTypeSpec = decode(Value::Object(spec))?;
    put_event_type(&state.core, &ctx.scope, &name, &spec).await?;
    Ok(see_other(&ctx.page(&format!(
        "/event-types/{}?notice=saved",
        type_seg(name.as_str())
    ))))
}

/// `GET …/event-types/{name}`.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    TypeName(name): TypeName,
    Params(p): Params,
) -> Result<Response, WebError> {
    let t = read_event_type(&state.core, &ctx.scope, &name).await?;
    let base = format!("/event-types/{}", type_seg(name.as_str()));
    let next_version = t.latest_version.map_or(1, |v| v + 1);
    let action = |what: &str, label: &str, class: &str, id: &str, ask: Option<&str>| {
        html! {
            form.inline method="post" action=(ctx.page(&base)) data-confirm=[ask] {
                (csrf_field(&ctx.csrf))
                input type="hidden" name="action" value=(what);
                button class=(class) type="submit" id=(id) { (label) }
            }
        }
    };
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Event type " code { (name.as_str()) } " " (state_badges(&t)) }
        section.card {
            dl.fields id="event-type-details" {
                dt { "Description" } dd { @if t.description.is_empty() { "—" } @else { pre.inline { (t.description) } } }
                dt { "Group" } dd { (t.group.as_ref().map(|g| g.as_str()).unwrap_or("—")) }
                dt { "Service" } dd { (t.owner.service.as_ref().map(|n| n.as_str()).unwrap_or("—")) }
                dt { "Team" } dd { (t.owner.team.as_ref().map(|n| n.as_str()).unwrap_or("—")) }
                dt { "Repository" } dd { @match &t.owner.repository_url { Some(u) => a href=(u.as_str()) rel="noopener noreferrer" { (u.as_str()) }, None => "—" } }
                dt { "Deprecated since" } dd { (t.deprecated_at.as_deref().map(stamp).unwrap_or_else(|| "—".into())) }
                dt { "Declared by" } dd { (t.origin.as_str()) }
                dt { "Changed" } dd { (stamp(&t.updated_at)) }
            }
            div.actions {
                @if t.deprecated { (action("undeprecate", "Undeprecate", "secondary", "undeprecate", None)) }
                @else { (action("deprecate", "Deprecate", "secondary", "deprecate", None)) }
                @if t.archived { (action("restore", "Restore", "secondary", "restore", None)) }
                @else { (action("archive", "Archive", "secondary", "archive", None)) }
                (action("expunge", "Delete for good", "danger", "expunge", Some(ASK_EXPUNGE)))
            }
        }
        h2 { "Schemas" }
        @if t.schemas.is_empty() { p.muted { "None: any body is accepted." } }
        @for (version, schema) in t.schemas.iter().rev() {
            section.card.schema data-version=(version) {
                h3 { "Version " (version) @if Some(version.as_str()) == t.latest_version.map(|v| v.to_string()).as_deref() { " " span.muted { "(the default)" } } }
                pre.body { (serde_json::to_string_pretty(schema).unwrap_or_default()) }
            }
        }
        section.card {
            h2 { "Add version " (next_version) }
            form.stack method="post" action=(ctx.page(&base)) id="schema-version-form" {
                (csrf_field(&ctx.csrf))
                input type="hidden" name="action" value="version";
                label { "JSON Schema (draft 7 or 2020-12)" textarea name="schema" spellcheck="false" rows="8" required {} }
                div { button type="submit" { "Add version" } }
            }
        }
        p { a href=(ctx.page("/event-types")) { "Back to the catalogue" } }
    };
    Ok(page(&ctx.shell("Event type", "/event-types"), body).into_response())
}

/// `POST …/event-types/{name}`: a new schema version, (un)deprecate, archive, restore, delete.
pub async fn act(
    State(state): State<WebState>,
    ctx: Ctx,
    TypeName(name): TypeName,
    form: Form,
) -> Result<Response, WebError> {
    let base = format!("/event-types/{}", type_seg(name.as_str()));
    let patch = |v: Value| -> Result<EventTypePatch, WebError> { decode(v) };
    let (change, done) = match form.get("action") {
        "version" => {
            let schema = json_field(&form, "schema")?
                .ok_or_else(|| WebError::BadRequest("schema: write a JSON Schema".into()))?;
            let current = read_event_type(&state.core, &ctx.scope, &name).await?;
            let next = current.latest_version.map_or(1, |v| v + 1);
            (
                patch(json!({"schemas": { next.to_string(): schema }}))?,
                "version_added",
            )
        }
        "deprecate" => (patch(json!({"deprecated": true}))?, "deprecated"),
        "undeprecate" => (patch(json!({"deprecated": false}))?, "saved"),
        "archive" => (patch(json!({"archived": true}))?, "archived"),
        "restore" => (patch(json!({"archived": false}))?, "restored"),
        "expunge" => {
            let action = ctx.page(&base);
            if let Some(ask) = ctx.confirm_first(&form, ASK_EXPUNGE, &action) {
                return Ok(ask);
            }
            remove_event_type(&state.core, &ctx.scope, &name, true).await?;
            return Ok(see_other(&ctx.page("/event-types?notice=deleted")));
        }
        other => {
            return Err(WebError::BadRequest(format!("unknown action {other:?}")));
        }
    };
    update_event_type(&state.core, &ctx.scope, &name, &change).await?;
    Ok(see_other(&ctx.page(&format!("{base}?notice={done}"))))
}
