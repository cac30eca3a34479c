//! The error queue (both scopes; see [`super`]): deliveries that kept failing, listed,
//! replayed or deleted.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Listing;
use super::scope::{ApiState, TenantScope};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::history::ReplaySelection;
use crate::model::time::rfc3339;
use crate::model::{DeadLetterId, EventId, EventType, TargetId};
use crate::store::deliveries::DeadLetter;

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
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Only this target's entries.
    #[serde(default)]
    target_id: Option<TargetId>,
    /// Most entries (default 100, at most 1000), oldest first.
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
}

/// Which entries to replay; an empty body replays them all.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// These entries only.
    #[serde(default)]
    #[schema(max_items = 10000)]
    pub ids: Option<Vec<DeadLetterId>>,
    /// This target's entries only.
    #[serde(default)]
    pub target_id: Option<TargetId>,
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

/// Lists the error queue, oldest first.
#[utoipa::path(
    get,
    path = "/dead-letters",
    tag = "dead_letters",
    operation_id = "list_dead_letters",
    params(DeadLetterQuery),
    responses((status = 200, description = "The entries.", body = Listing<DeadLetterView>), ReadErrors),
)]
pub async fn list(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Response, ApiError> {
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
    let entries = s
        .deliveries
        .dead_letters(scope.shard, &scope.tenant, q.target_id.as_ref(), limit)
        .await?;
    Ok(Listing {
        data: entries.iter().map(DeadLetterView::from).collect::<Vec<_>>(),
    }
    .into_response())
}

/// Puts entries back on the retry schedule, due now, with fresh attempts.
#[utoipa::path(
    post,
    path = "/dead-letters/replay",
    tag = "dead_letters",
    operation_id = "replay_dead_letters",
    request_body(content = Option<Replay>, description = "Empty: every entry."),
    responses((status = 200, description = "How many entries were replayed.", body = Replayed), WriteErrors),
)]
pub async fn replay(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiJson(req): ApiJson<Replay>,
) -> Result<Response, ApiError> {
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
    // A target that is not the tenant's is a mistake to point out, not an empty selection.
    if let Some(target) = &req.target_id {
        if s.store.target(&scope.tenant, target).await?.is_none() {
            return Err(ApiError::bad_request(
                "invalid_ids",
                format!("target_id: {target} is not a target of this tenant"),
            ));
        }
    }
    let selection = ReplaySelection {
        ids: req.ids,
        target_id: req.target_id,
    };
    let replayed = s
        .history
        .replay(scope.shard, &scope.tenant, &selection)
        .await?;
    Ok(Json(Replayed { replayed }).into_response())
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
    if s.deliveries
        .delete_dead_letter(scope.shard, &scope.tenant, &p.dl_id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("dead letter"))
    }
}
