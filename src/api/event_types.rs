//! The event catalogue (both scopes; see [`super`]): event types with their owners and their
//! JSON Schemas by version. Import and export as OpenAPI 3.1 `webhooks` are in
//! [`super::catalogue_exchange`].

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::listing::Page;
use super::scope::{ApiState, TenantScope};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::model::catalogue::{EventTypePatch, EventTypeSpec, Owner};
use crate::model::time::rfc3339;
use crate::model::{EventType, Name, Origin};
use crate::store::StoreError;
use crate::store::event_types::{EventTypeRecord, Written};

/// Largest page of a listing.
const MAX_PAGE: u64 = 500;
/// Default page of a listing.
const DEFAULT_PAGE: u64 = 100;

/// Largest event type written at once: room for a few of the largest schemas.
const MAX_SPEC_BYTES: u64 = 1024 * 1024;

impl JsonBody for EventTypeSpec {
    const INVALID: &'static str = "invalid_event_type";
    const MAX_BYTES: Option<u64> = Some(MAX_SPEC_BYTES);
}

impl JsonBody for EventTypePatch {
    const INVALID: &'static str = "invalid_event_type";
    const MAX_BYTES: Option<u64> = Some(MAX_SPEC_BYTES);
}

/// An event type of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    pub name: EventType,
    pub description: String,
    pub owner: Owner,
    pub group: Option<Name>,
    /// JSON Schemas by version.
    #[schema(value_type = Object)]
    pub schemas: BTreeMap<String, Value>,
    /// The highest version: the one a body is checked against unless the request names
    /// another (`Estafeta-Schema-Version`).
    pub latest_version: Option<u32>,
    pub deprecated: bool,
    #[schema(format = DateTime)]
    pub deprecated_at: Option<String>,
    pub archived: bool,
    #[schema(format = DateTime)]
    pub archived_at: Option<String>,
    pub origin: Origin,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

impl From<&EventTypeRecord> for EventTypeView {
    fn from(r: &EventTypeRecord) -> EventTypeView {
        EventTypeView {
            name: r.name.clone(),
            description: r.description.as_str().to_owned(),
            owner: r.owner.clone(),
            group: r.group.clone(),
            schemas: r
                .schemas
                .iter()
                .map(|(v, s)| (v.to_string(), s.clone()))
                .collect(),
            latest_version: r.schemas.keys().next_back().copied(),
            deprecated: r.deprecated_at_ms.is_some(),
            deprecated_at: r.deprecated_at_ms.map(rfc3339),
            archived: r.archived_at_ms.is_some(),
            archived_at: r.archived_at_ms.map(rfc3339),
            origin: r.origin,
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
        }
    }
}

/// The query of the catalogue's listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventTypeQuery {
    /// List archived types too.
    #[serde(default)]
    pub include_archived: bool,
    /// Only the types of this group.
    #[serde(default)]
    pub group: Option<Name>,
    /// The `next` of the previous page.
    #[serde(default)]
    pub after: Option<EventType>,
    /// Types per page (default 100).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// The path of one event type.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventTypePath {
    pub(super) name: EventType,
}

impl PathParams for EventTypePath {
    const WHAT: &'static str = "event type";
}

/// How an event type is removed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Delete it for good instead of archiving it.
    #[serde(default)]
    pub expunge: bool,
}

/// Lists the catalogue by name, a page at a time.
#[utoipa::path(
    get,
    path = "/event-types",
    tag = "event-types",
    operation_id = "list_event_types",
    params(EventTypeQuery),
    responses((status = 200, description = "A page of event types.", body = Page<EventTypeView>), ReadErrors),
)]
pub async fn list(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<EventTypeQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(list_event_types(&s, &scope, &q).await?).into_response())
}

/// `list_event_types`.
pub async fn list_event_types(
    s: &ApiState,
    scope: &TenantScope,
    q: &EventTypeQuery,
) -> Result<Page<EventTypeView>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let all = s.store.event_types_of(&scope.tenant).await?;
    let mut shown = all
        .iter()
        .filter(|r| q.include_archived || r.archived_at_ms.is_none())
        .filter(|r| q.group.is_none() || r.group == q.group)
        .filter(|r| q.after.as_ref().is_none_or(|a| r.name > *a));
    let data: Vec<EventTypeView> = shown
        .by_ref()
        .take(limit as usize)
        .map(EventTypeView::from)
        .collect();
    let next = if shown.next().is_some() {
        data.last().map(|v| v.name.to_string())
    } else {
        None
    };
    Ok(Page { data, next })
}

/// Reads an event type.
#[utoipa::path(
    get,
    path = "/event-types/{name}",
    tag = "event-types",
    operation_id = "read_event_type",
    params(EventTypePath),
    responses((status = 200, description = "The event type.", body = EventTypeView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<EventTypePath>,
) -> Result<Response, ApiError> {
    Ok(Json(read_event_type(&s, &scope, &p.name).await?).into_response())
}

/// `read_event_type`.
pub async fn read_event_type(
    s: &ApiState,
    scope: &TenantScope,
    name: &EventType,
) -> Result<EventTypeView, ApiError> {
    let found = s.store.event_type(&scope.tenant, name).await?;
    found
        .as_ref()
        .map(EventTypeView::from)
        .ok_or_else(|| ApiError::not_found("event type"))
}

/// Creates or replaces an event type.
#[utoipa::path(
    put,
    path = "/event-types/{name}",
    tag = "event-types",
    operation_id = "put_event_type",
    params(EventTypePath),
    request_body(content = Option<EventTypeSpec>, description = "The type's fields; an empty body writes a type with no description, owner or schema."),
    responses(
        (status = 201, description = "Created.", body = EventTypeView),
        (status = 200, description = "Replaced (or already so).", body = EventTypeView),
        WriteErrors,
    ),
)]
pub async fn put(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<EventTypePath>,
    ApiJson(spec): ApiJson<EventTypeSpec>,
) -> Result<Response, ApiError> {
    let (view, written) = put_event_type(&s, &scope, &p.name, &spec).await?;
    let status = if written == Written::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)).into_response())
}

/// `put_event_type`.
pub async fn put_event_type(
    s: &ApiState,
    scope: &TenantScope,
    name: &EventType,
    spec: &EventTypeSpec,
) -> Result<(EventTypeView, Written), ApiError> {
    if spec.name.as_ref().is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(
            "invalid_event_type",
            "name must be the event type in the path",
        ));
    }
    let (record, written) = s
        .store
        .put_event_type(&scope.tenant, name, spec, Origin::Api)
        .await
        .map_err(refused)?;
    Ok((EventTypeView::from(&record), written))
}

/// Changes an event type.
#[utoipa::path(
    patch,
    path = "/event-types/{name}",
    tag = "event-types",
    operation_id = "update_event_type",
    params(EventTypePath),
    request_body(content = Option<EventTypePatch>, description = "Only the fields to change; an empty body changes nothing."),
    responses((status = 200, description = "Changed.", body = EventTypeView), WriteErrors),
)]
pub async fn update(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<EventTypePath>,
    ApiJson(patch): ApiJson<EventTypePatch>,
) -> Result<Response, ApiError> {
    Ok(Json(update_event_type(&s, &scope, &p.name, &patch).await?).into_response())
}

/// `update_event_type`.
pub async fn update_event_type(
    s: &ApiState,
    scope: &TenantScope,
    name: &EventType,
    patch: &EventTypePatch,
) -> Result<EventTypeView, ApiError> {
    let changed = s
        .store
        .patch_event_type(&scope.tenant, name, patch)
        .await
        .map_err(refused)?;
    changed
        .as_ref()
        .map(EventTypeView::from)
        .ok_or_else(|| ApiError::not_found("event type"))
}

/// Archives an event type (an enforcing catalogue then refuses its events), or with
/// `expunge=true` deletes it.
#[utoipa::path(
    delete,
    path = "/event-types/{name}",
    tag = "event-types",
    operation_id = "delete_event_type",
    params(EventTypePath, RemoveQuery),
    responses((status = 204, description = "Archived, or deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<EventTypePath>,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> Result<Response, ApiError> {
    remove_event_type(&s, &scope, &p.name, q.expunge).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `delete_event_type`.
pub async fn remove_event_type(
    s: &ApiState,
    scope: &TenantScope,
    name: &EventType,
    expunge: bool,
) -> Result<(), ApiError> {
    let found = if expunge {
        s.store.expunge_event_type(&scope.tenant, name).await?
    } else {
        let archive = EventTypePatch {
            archived: Some(true),
            ..EventTypePatch::default()
        };
        s.store
            .patch_event_type(&scope.tenant, name, &archive)
            .await?
            .is_some()
    };
    if found {
        Ok(())
    } else {
        Err(ApiError::not_found("event type"))
    }
}

/// A change that breaks a rule once applied, as the API reports it.
fn refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(i) => ApiError::invalid("invalid_event_type", &i),
        other => other.into(),
    }
}
