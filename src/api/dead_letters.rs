//! The error queue (both scopes; see [`super`]): deliveries that kept failing, listed,
//! replayed or deleted.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::events::time_field;
use super::scope::{ApiState, TenantScope};
use crate::history::ReplaySelection;
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::model::time::rfc3339;
use crate::model::{DeadLetterId, EventId, EventPattern, EventType, TargetId};
use crate::store::deliveries::DeadLetter;
use crate::store::deliveries::dead_letters::{DeadLetterFilter, Order};

/// Largest page of the error queue.
const MAX_PAGE: usize = 1000;
/// Most ids in one replay.
const MAX_REPLAY_IDS: usize = 10_000;

/// An error queue entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: DeadLetterId,
    pub event_id: EventId,
    pub target_id: TargetId,
    pub event_type: EventType,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub failed_at: String,
}

impl From<&DeadLetter> for DeadLetterView {
    fn from(d: &DeadLetter) -> DeadLetterView {
        DeadLetterView {
            id: d.id.clone(),
            event_id: d.event_id.clone(),
            target_id: d.target_id.clone(),
            event_type: d.event_type.clone(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            failed_at: rfc3339(d.failed_at_ms),
        }
    }
}

/// The query of the error queue.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this target's entries.
    #[serde(default)]
    pub target_id: Option<TargetId>,
    /// Only entries of this event type, or of a `prefix.*`.
    #[serde(default)]
    #[param(value_type = Option<String>, example = "order.*", pattern = r"^(\*|[A-Za-z0-9_.-]{1,128}|[A-Za-z0-9_.-]{1,128}\.\*)$")]
    event_type: Option<String>,
    /// Only this event's entries.
    #[serde(default)]
    event_id: Option<EventId>,
    /// Failed at or after this time (RFC 3339).
    #[serde(default)]
    #[param(format = DateTime)]
    since: Option<String>,
    /// Failed at or before this time (RFC 3339).
    #[serde(default)]
    #[param(format = DateTime)]
    until: Option<String>,
    /// `newest` (the default) or `oldest` first.
    #[serde(default)]
    #[param(inline)]
    order: Option<Direction>,
    /// Only entries past this one: the `next` of the previous page.
    #[serde(default)]
    after: Option<DeadLetterId>,
    /// Most entries (default 100, at most 1000).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// Which way the error queue is listed.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Newest,
    Oldest,
}

/// Which entries a replay selects (every field narrows).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only this target's entries.
    #[serde(default)]
    pub target_id: Option<TargetId>,
    /// Only entries of this event type, or of a `prefix.*`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "order.*", pattern = r"^(\*|[A-Za-z0-9_.-]{1,128}|[A-Za-z0-9_.-]{1,128}\.\*)$")]
    pub event_type: Option<String>,
    /// Only this event's entries.
    #[serde(default)]
    pub event_id: Option<EventId>,
    /// Failed at or after this time (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Failed at or before this time (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
}

impl Selection {
    /// The store's filter; a bad type pattern or time is the caller's 400 under `code`.
    pub fn filter(&self, code: &'static str) -> Result<DeadLetterFilter, ApiError> {
        let event_type = self
            .event_type
            .as_deref()
            .map(|p| {
                EventPattern::parse(p)
                    .map_err(|e| ApiError::bad_request(code, format!("event_type: {e}")))
            })
            .transpose()?;
        let since_ms = time_field(code, "since", self.since.as_deref())?;
        let until_ms = time_field(code, "until", self.until.as_deref())?;
        Ok(DeadLetterFilter {
            target_id: self.target_id.clone(),
            event_type,
            event_id: self.event_id.clone(),
            since_ms,
            until_ms,
        })
    }

    fn is_empty(&self) -> bool {
        self.target_id.is_none()
            && self.event_type.is_none()
            && self.event_id.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// A page of the error queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    pub data: Vec<DeadLetterView>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<DeadLetterId>,
    /// How many entries the query selects, over all its pages.
    pub total: u64,
}

/// Which entries to replay: `ids`, or every entry the other fields select (an empty body
/// replays them all).
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// These entries only.
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub ids: Option<Vec<DeadLetterId>>,
    #[serde(flatten)]
    pub select: Selection,
}

impl JsonBody for Replay {
    const INVALID: &'static str = "invalid_ids";
}

/// How many entries went back to the schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

/// The path of one entry.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeadLetterPath {
    dl_id: DeadLetterId,
}

impl PathParams for DeadLetterPath {
    const WHAT: &'static str = "dead letter";
}

/// Lists the error queue, newest first unless `order=oldest`, a page at a time, with the
/// number of entries the query selects.
#[utoipa::path(
    get,
    path = "/dead-letters",
    tag = "dead_letters",
    operation_id = "list_dead_letters",
    params(DeadLetterQuery),
    responses((status = 200, description = "A page of entries.", body = DeadLetterList), ReadErrors),
)]
pub async fn list(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(list_dead_letters(&s, &scope, q).await?).into_response())
}

/// `list_dead_letters`.
pub async fn list_dead_letters(
    s: &ApiState,
    scope: &TenantScope,
    q: DeadLetterQuery,
) -> Result<DeadLetterList, ApiError> {
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
    };
    let filter = Selection {
        target_id: q.target_id,
        event_type: q.event_type,
        event_id: q.event_id,
        since: q.since,
        until: q.until,
    }
    .filter("invalid_query")?;
    let order = match q.order {
        None | Some(Direction::Newest) => Order::NewestFirst,
        Some(Direction::Oldest) => Order::OldestFirst,
    };
    let page = s
        .deliveries
        .dead_letter_page(
            scope.shard,
            &scope.tenant,
            &filter,
            order,
            q.after.as_ref(),
            limit,
        )
        .await?;
    Ok(DeadLetterList {
        data: page.entries.iter().map(DeadLetterView::from).collect(),
        next: page.next,
        total: page.total,
    })
}

/// Puts entries back on the retry schedule, due now, with fresh attempts.
#[utoipa::path(
    post,
    path = "/dead-letters/replay",
    tag = "dead_letters",
    operation_id = "replay_dead_letters",
    request_body(content = Option<Replay>, description = "Empty: every entry; else the entries named by `ids` or selected by the other fields, replayed server-side however many they are."),
    responses((status = 200, description = "How many entries were replayed.", body = Replayed), WriteErrors),
)]
pub async fn replay(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiJson(req): ApiJson<Replay>,
) -> Result<Response, ApiError> {
    Ok(Json(replay_dead_letters(&s, &scope, req).await?).into_response())
}

/// `replay_dead_letters`.
pub async fn replay_dead_letters(
    s: &ApiState,
    scope: &TenantScope,
    req: Replay,
) -> Result<Replayed, ApiError> {
    if req
        .ids
        .as_ref()
        .is_some_and(|ids| ids.len() > MAX_REPLAY_IDS)
    {
        return Err(ApiError::bad_request(
            "invalid_ids",
            format!("ids must list at most {MAX_REPLAY_IDS} entries"),
        ));
    }
    if req.ids.is_some() && !req.select.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_ids",
            "give ids, or the fields that select entries, not both",
        ));
    }
    let filter = req.select.filter("invalid_selection")?;
    // A target that is not the tenant's is a mistake to point out, not an empty selection.
    if let Some(target) = &req.select.target_id {
        if s.store.target(&scope.tenant, target).await?.is_none() {
            return Err(ApiError::bad_request(
                "invalid_ids",
                format!("target_id: {target} is not a target of this tenant"),
            ));
        }
    }
    let selection = match req.ids {
        Some(ids) => ReplaySelection::Ids(ids),
        None => ReplaySelection::Matching(filter),
    };
    let replayed = s
        .history
        .replay(scope.shard, &scope.tenant, &selection)
        .await?;
    Ok(Replayed { replayed })
}

/// Deletes an entry.
#[utoipa::path(
    delete,
    path = "/dead-letters/{dl_id}",
    tag = "dead_letters",
    operation_id = "delete_dead_letter",
    params(DeadLetterPath),
    responses((status = 204, description = "Deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<DeadLetterPath>,
) -> Result<Response, ApiError> {
    delete_dead_letter(&s, &scope, &p.dl_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `delete_dead_letter`.
pub async fn delete_dead_letter(
    s: &ApiState,
    scope: &TenantScope,
    id: &DeadLetterId,
) -> Result<(), ApiError> {
    if s.deliveries
        .delete_dead_letter(scope.shard, &scope.tenant, id)
        .await?
    {
        Ok(())
    } else {
        Err(ApiError::not_found("dead letter"))
    }
}
