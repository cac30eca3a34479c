//! An event's delivery view, and a tenant's counters (both scopes; see [`super`]).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::scope::{ApiState, TenantScope};
use crate::error::{ApiError, ReadErrors};
use crate::extract::{ApiPath, PathParams};
use crate::model::time::rfc3339;
use crate::model::{EventId, TargetId};
use crate::store::deliveries::{AttemptRecord, EventRecord, State as DeliveryStateKind};

/// Where one delivery of an event stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub target_id: TargetId,
    pub state: DeliveryStateKind,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub next_retry_at: Option<String>,
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub target_id: TargetId,
    pub attempt: u32,
    #[schema(format = DateTime)]
    pub at: String,
    /// The response status, when there was a response.
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first bytes of the response body.
    pub response: Option<String>,
}

impl From<&AttemptRecord> for AttemptView {
    fn from(a: &AttemptRecord) -> AttemptView {
        AttemptView {
            target_id: a.target_id.clone(),
            attempt: a.attempt,
            at: rfc3339(a.at_ms),
            status: a.status,
            latency_ms: a.latency_ms,
            error: a.error.clone(),
            response: a.response.clone(),
        }
    }
}

/// An event and its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: EventId,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    /// One per target the event was expanded to.
    pub deliveries: Vec<DeliveryView>,
    /// The recent attempts, oldest first.
    pub attempts: Vec<AttemptView>,
}

impl From<&EventRecord> for EventView {
    fn from(r: &EventRecord) -> EventView {
        let deliveries = r
            .deliveries
            .iter()
            .map(|(target, state)| {
                let last = r.attempts.iter().rev().find(|a| a.target_id == *target);
                let last_attempt_at = last.map(|a| rfc3339(a.at_ms));
                match state {
                    Some(s) => DeliveryView {
                        target_id: target.clone(),
                        state: s.state,
                        attempts: s.attempts,
                        last_status: s.last_status,
                        last_error: s.last_error.clone(),
                        next_retry_at: s.next_retry_at_ms.map(rfc3339),
                        last_attempt_at,
                    },
                    None => DeliveryView {
                        target_id: target.clone(),
                        state: DeliveryStateKind::Pending,
                        attempts: 0,
                        last_status: None,
                        last_error: None,
                        next_retry_at: None,
                        last_attempt_at: None,
                    },
                }
            })
            .collect();
        EventView {
            id: r.id.clone(),
            event_type: r.event_type.clone(),
            content_type: r.content_type.clone(),
            received_at: rfc3339(r.received_at_ms),
            deliveries,
            attempts: r.attempts.iter().map(AttemptView::from).collect(),
        }
    }
}

/// The path of one event.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventPath {
    /// The event's id.
    event: EventId,
}

impl PathParams for EventPath {
    const WHAT: &'static str = "event";
}

/// An event's deliveries per target and its recent attempts.
#[utoipa::path(
    get,
    path = "/events/{event}",
    tag = "events",
    operation_id = "read_event",
    params(EventPath),
    responses((status = 200, description = "The event and its deliveries.", body = EventView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<EventPath>,
) -> Result<Response, ApiError> {
    let record = s
        .deliveries
        .event(scope.shard, &scope.tenant, &p.event)
        .await?;
    record
        .map(|r| Json(EventView::from(&r)).into_response())
        .ok_or_else(|| ApiError::not_found("event"))
}

/// A tenant's delivery counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub events_received: u64,
    pub deliveries_succeeded: u64,
    pub deliveries_failed: u64,
    pub in_retry: u64,
    pub dead_letters: u64,
    /// Mean response time of the targets, in milliseconds (one decimal).
    pub avg_response_ms: f64,
}

/// The tenant's counters.
#[utoipa::path(
    get,
    path = "/stats",
    tag = "events",
    operation_id = "read_stats",
    responses((status = 200, description = "The tenant's counters.", body = Stats), ReadErrors),
)]
pub async fn stats(State(s): State<ApiState>, scope: TenantScope) -> Result<Response, ApiError> {
    let c = s.deliveries.counters(scope.shard, &scope.tenant).await?;
    let avg = if c.responses > 0 {
        c.response_ms_total as f64 / c.responses as f64
    } else {
        0.0
    };
    Ok(Json(Stats {
        events_received: c.events_received,
        deliveries_succeeded: c.succeeded,
        deliveries_failed: c.failed,
        in_retry: c.in_retry,
        dead_letters: c.dead_letters,
        avg_response_ms: (avg * 10.0).round() / 10.0,
    })
    .into_response())
}
