//! An event's delivery view, and a tenant's counters, in total and per minute (both scopes;
//! see [`super`]), and every tenant's per-minute counters (admin only).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::scope::{ApiState, TenantScope};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::model::catalogue::SchemaError;
use crate::model::time::{parse_rfc3339, rfc3339};
use crate::model::{EventId, TargetId, event_meta};
use crate::store::deliveries::{
    AttemptRecord, EventFilter, EventRecord, EventStatus, EventSummary, State as DeliveryStateKind,
};
use crate::store::series::{HOUR_MS, MINUTE_MS, MinuteCounts, SeriesScope};

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
    /// The batch its last attempt was sent in, for a batched target.
    pub batch_id: Option<String>,
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
    /// The request's headers as sent, credentials (`authorization`, `cookie`, the target's
    /// own authentication header) as `[redacted]`; `null` when they were not kept
    /// (`dispatch.attempt_headers`: by default, attempts that delivered keep none).
    pub request_headers: Option<Vec<HeaderView>>,
    /// The response's headers (`set-cookie` redacted), empty without a response; `null`
    /// when they were not kept.
    pub response_headers: Option<Vec<HeaderView>>,
    /// The version of the target's transformation that shaped (or cancelled) the request;
    /// `null` when none ran.
    pub transform_version: Option<u32>,
    /// The batch the event was sent in (its `webhook-id`), for a batched target.
    pub batch_id: Option<String>,
}

/// One header of an attempt, in the order it was sent or received.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeaderView {
    pub name: String,
    pub value: String,
}

fn header_views(list: &[(String, String)]) -> Vec<HeaderView> {
    list.iter()
        .map(|(name, value)| HeaderView {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
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
            request_headers: a.headers.as_ref().map(|h| header_views(&h.request)),
            response_headers: a.headers.as_ref().map(|h| header_views(&h.response)),
            transform_version: a.transform_version,
            batch_id: a.batch_id.clone(),
        }
    }
}

/// An event and its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: EventId,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    /// The ingest request headers the tenant keeps (`keep_headers`), name → value; a header
    /// sent several times is one value joined with `, `.
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// What a `warn` catalogue found wrong with the event when it was received (an unknown
    /// type, or the body against its schema); absent when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_errors: Option<Vec<SchemaError>>,
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
                let batch_id = last.and_then(|a| a.batch_id.clone());
                match state {
                    Some(s) => DeliveryView {
                        target_id: target.clone(),
                        state: s.state,
                        attempts: s.attempts,
                        last_status: s.last_status,
                        last_error: s.last_error.clone(),
                        next_retry_at: s.next_retry_at_ms.map(rfc3339),
                        last_attempt_at,
                        batch_id,
                    },
                    None => DeliveryView {
                        target_id: target.clone(),
                        state: DeliveryStateKind::Pending,
                        attempts: 0,
                        last_status: None,
                        last_error: None,
                        next_retry_at: None,
                        last_attempt_at: None,
                        batch_id: None,
                    },
                }
            })
            .collect();
        let packed = r.content_type.as_deref().unwrap_or_default();
        EventView {
            id: r.id.clone(),
            event_type: r.event_type.clone(),
            content_type: event_meta::content_type_text(packed).map(str::to_owned),
            headers: event_meta::headers_json(packed.as_bytes()),
            schema_errors: event_meta::schema_errors(packed.as_bytes())
                .and_then(|json| serde_json::from_slice(json).ok()),
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
    Ok(Json(read_event(&s, &scope, &p.event).await?).into_response())
}

/// `read_event`.
pub async fn read_event(
    s: &ApiState,
    scope: &TenantScope,
    event: &EventId,
) -> Result<EventView, ApiError> {
    let record = s.history.event(scope.shard, &scope.tenant, event).await?;
    record
        .map(|r| EventView::from(&r))
        .ok_or_else(|| ApiError::not_found("event"))
}

/// How an event's body is written in [`EventBody`].
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    /// The body is UTF-8 text, as is.
    Utf8,
    /// The body is not UTF-8: base64 (standard alphabet, padded).
    Base64,
}

/// An event's body, byte for byte as it was received.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventBody {
    pub id: EventId,
    pub content_type: Option<String>,
    /// Bytes in the body.
    pub size: u64,
    pub encoding: BodyEncoding,
    pub body: String,
}

/// An event's body, from whichever tier holds it.
#[utoipa::path(
    get,
    path = "/events/{event}/body",
    tag = "events",
    operation_id = "read_event_body",
    params(EventPath),
    responses((status = 200, description = "The event's body.", body = EventBody), ReadErrors),
)]
pub async fn body(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<EventPath>,
) -> Result<Response, ApiError> {
    Ok(Json(read_event_body(&s, &scope, &p.event).await?).into_response())
}

/// `read_event_body`.
pub async fn read_event_body(
    s: &ApiState,
    scope: &TenantScope,
    event: &EventId,
) -> Result<EventBody, ApiError> {
    use base64::Engine;
    let Some((content_type, bytes)) = s.history.body(scope.shard, &scope.tenant, event).await?
    else {
        return Err(ApiError::not_found("event"));
    };
    let (encoding, body) = match std::str::from_utf8(&bytes) {
        Ok(text) => (BodyEncoding::Utf8, text.to_owned()),
        Err(_) => (
            BodyEncoding::Base64,
            base64::engine::general_purpose::STANDARD.encode(&bytes),
        ),
    };
    Ok(EventBody {
        id: event.clone(),
        content_type: content_type
            .as_deref()
            .and_then(event_meta::content_type_text)
            .map(str::to_owned),
        size: bytes.len() as u64,
        encoding,
        body,
    })
}

/// Largest page of an event listing.
const MAX_PAGE: u64 = 500;

/// Where one delivery of a listed event stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliverySummary {
    pub target_id: TargetId,
    pub state: DeliveryStateKind,
    pub attempts: u32,
}

/// One event of a listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventListItem {
    pub id: EventId,
    pub event_type: String,
    pub content_type: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    pub status: EventStatus,
    pub deliveries: Vec<DeliverySummary>,
}

impl From<EventSummary> for EventListItem {
    fn from(e: EventSummary) -> EventListItem {
        EventListItem {
            id: e.id,
            event_type: e.event_type,
            content_type: e
                .content_type
                .as_deref()
                .and_then(event_meta::content_type_text)
                .map(str::to_owned),
            received_at: rfc3339(e.received_at_ms),
            status: e.status,
            deliveries: e
                .deliveries
                .into_iter()
                .map(|(target_id, state, attempts)| DeliverySummary {
                    target_id,
                    state,
                    attempts,
                })
                .collect(),
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventListItem>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub next: Option<EventId>,
}

/// The filters of an event listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this type, or of these (`prefix.*`, `*`).
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = r"^(\*|[A-Za-z0-9_.-]{1,128}|[A-Za-z0-9_.-]{1,128}\.\*)$")]
    pub event_type: Option<crate::model::EventPattern>,
    /// Only events with this status; with `target_id`, the status of that delivery.
    #[serde(default)]
    pub status: Option<EventStatus>,
    /// Only events delivered (or to be delivered) to this target.
    #[serde(default)]
    pub target_id: Option<TargetId>,
    /// Received at or after this time (RFC 3339).
    #[serde(default)]
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Received at or before this time (RFC 3339).
    #[serde(default)]
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Only events older than this one: the `next` of the previous page.
    #[serde(default)]
    pub before: Option<EventId>,
    /// Most events (default 50, at most 500).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    time_field("invalid_query", name, value)
}

/// An RFC 3339 time of a query or body field; a 400 under `code` when it is not one.
pub(super) fn time_field(
    code: &'static str,
    name: &str,
    value: Option<&str>,
) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            parse_rfc3339(v).ok_or_else(|| {
                ApiError::bad_request(
                    code,
                    format!("{name} must be an RFC 3339 time, such as 2026-12-01T10:00:00Z"),
                )
            })
        })
        .transpose()
}

/// Lists events, newest first, from both tiers (Redis for the hot window, the log store for
/// the rest).
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    operation_id = "list_events",
    params(EventQuery),
    responses((status = 200, description = "A page of events.", body = EventList), ReadErrors),
)]
pub async fn list(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(list_events(&s, &scope, q).await?).into_response())
}

/// `list_events`.
pub async fn list_events(
    s: &ApiState,
    scope: &TenantScope,
    q: EventQuery,
) -> Result<EventList, ApiError> {
    let limit = match q.limit {
        None => 50,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
    };
    let filter = EventFilter {
        event_type: q.event_type,
        status: q.status,
        target_id: q.target_id,
        since_ms: time_param("since", q.since.as_deref())?,
        until_ms: time_param("until", q.until.as_deref())?,
        before: q.before,
    };
    let page = s
        .history
        .list(scope.shard, &scope.tenant, &filter, limit)
        .await?;
    Ok(EventList {
        data: page.events.into_iter().map(EventListItem::from).collect(),
        next: page.next,
    })
}

/// A time range of a target's deliveries to send again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// From this time (RFC 3339).
    #[schema(format = DateTime)]
    pub since: String,
    /// To this time (RFC 3339); now when absent.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// Only count what would be sent again (answers 200), sending nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl JsonBody for Recover {
    const INVALID: &'static str = "invalid_range";
}

/// How many deliveries were sent again (or, in a dry run, would be).
#[derive(Debug, Serialize, ToSchema)]
pub struct Recovering {
    pub recovering: u64,
    /// Whether nothing was sent: the count of a dry run.
    pub dry_run: bool,
}

/// The path of one target.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecoverPath {
    target_id: TargetId,
}

impl PathParams for RecoverPath {
    const WHAT: &'static str = "target";
}

/// Sends again every event of the range that this target did not receive successfully
/// (its delivery ended in the error queue), from either tier.
#[utoipa::path(
    post,
    path = "/targets/{target_id}/recover",
    tag = "targets",
    operation_id = "recover_target",
    params(RecoverPath),
    request_body = Recover,
    responses(
        (status = 202, description = "How many deliveries go out again.", body = Recovering),
        (status = 200, description = "A dry run: how many would.", body = Recovering),
        WriteErrors,
    ),
)]
pub async fn recover(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<RecoverPath>,
    ApiJson(req): ApiJson<Recover>,
) -> Result<Response, ApiError> {
    let answer = recover_target(&s, &scope, &p.target_id, &req).await?;
    let status = if answer.dry_run {
        http::StatusCode::OK
    } else {
        http::StatusCode::ACCEPTED
    };
    Ok((status, Json(answer)).into_response())
}

/// `recover_target`.
pub async fn recover_target(
    s: &ApiState,
    scope: &TenantScope,
    target: &TargetId,
    req: &Recover,
) -> Result<Recovering, ApiError> {
    let invalid = |m: &str| ApiError::bad_request("invalid_range", m.to_owned());
    let since = parse_rfc3339(&req.since)
        .ok_or_else(|| invalid("since must be an RFC 3339 time, such as 2026-12-01T10:00:00Z"))?;
    let until = match req.until.as_deref() {
        Some(u) => parse_rfc3339(u).ok_or_else(|| {
            invalid("until must be an RFC 3339 time, such as 2026-12-01T11:00:00Z")
        })?,
        None => s.store.clock().now_ms(),
    };
    if until < since {
        return Err(invalid("until must not be before since"));
    }
    if s.store.target(&scope.tenant, target).await?.is_none() {
        return Err(ApiError::not_found("target"));
    }
    let recovering = if req.dry_run {
        s.history
            .recoverable(scope.shard, &scope.tenant, target, since, until)
            .await?
            .len() as u64
    } else {
        s.history
            .recover(scope.shard, &scope.tenant, target, since, until)
            .await?
    };
    Ok(Recovering {
        recovering,
        dry_run: req.dry_run,
    })
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
    Ok(Json(read_stats(&s, &scope).await?).into_response())
}

/// `read_stats`.
pub async fn read_stats(s: &ApiState, scope: &TenantScope) -> Result<Stats, ApiError> {
    let c = s.deliveries.counters(scope.shard, &scope.tenant).await?;
    let avg = if c.responses > 0 {
        c.response_ms_total as f64 / c.responses as f64
    } else {
        0.0
    };
    Ok(Stats {
        events_received: c.events_received,
        deliveries_succeeded: c.succeeded,
        deliveries_failed: c.failed,
        in_retry: c.in_retry,
        dead_letters: c.dead_letters,
        avg_response_ms: (avg * 10.0).round() / 10.0,
    })
}

/// The longest series read per minute, in minutes (48 h): the per-minute counters live 49 h.
const MAX_MINUTE_SERIES: u64 = 2880;
/// The longest series a request may ask for, in minutes (a week, per hour).
const MAX_SERIES_MINUTES: u64 = 7 * 1440;
/// The series length when the request does not say, in minutes (3 h).
const DEFAULT_SERIES_MINUTES: u64 = 180;

/// How much of the series to read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// The last this many minutes, up to the current one (default 180, at most 10080: a
    /// week). Up to 2880 (48 h) a row per minute; beyond, a row per hour, over the whole
    /// hours that cover them (hours older than two days come from the hourly rollups).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 10080)]
    pub minutes: Option<u64>,
}

impl SeriesQuery {
    /// The range the query names, ending at `now` (ms, both included), and whether by the hour.
    fn range(&self, now: u64) -> Result<(u64, u64, bool), ApiError> {
        let minutes = match self.minutes {
            None => DEFAULT_SERIES_MINUTES,
            Some(n) if (1..=MAX_SERIES_MINUTES).contains(&n) => n,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("minutes must be between 1 and {MAX_SERIES_MINUTES}"),
                ));
            }
        };
        if minutes > MAX_MINUTE_SERIES {
            let hours = minutes.div_ceil(60);
            let first = (now / HOUR_MS).saturating_sub(hours - 1) * HOUR_MS;
            return Ok((first, now, true));
        }
        let first = (now / MINUTE_MS).saturating_sub(minutes - 1) * MINUTE_MS;
        Ok((first, now, false))
    }
}

/// Counters per minute (or per hour), oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// One per minute (per hour past 48 h) of the range, zero where nothing happened;
    /// `minute_ms` is the row's first minute.
    pub data: Vec<MinuteCounts>,
    /// Minutes a row covers: 1, or 60 for a range over 48 hours.
    pub step_minutes: u64,
}

/// The tenant's counters per minute over the last `minutes` minutes, for charts.
#[utoipa::path(
    get,
    path = "/stats/series",
    tag = "events",
    operation_id = "read_stats_series",
    params(SeriesQuery),
    responses((status = 200, description = "The tenant's counters per minute, oldest first.", body = Series), ReadErrors),
)]
pub async fn series(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(read_stats_series(&s, Some(&scope), &q).await?).into_response())
}

/// `read_stats_series` for a tenant; `read_all_stats_series` without one.
pub async fn read_stats_series(
    s: &ApiState,
    scope: Option<&TenantScope>,
    q: &SeriesQuery,
) -> Result<Series, ApiError> {
    let (from, to, hourly) = q.range(s.store.clock().now_ms())?;
    let scope = match scope {
        Some(scope) => SeriesScope::Tenant {
            tenant: &scope.tenant,
            shard: scope.shard,
        },
        None => SeriesScope::All { shards: s.shards },
    };
    if hourly {
        let data = s.store.series_hours(scope, from, to, to).await?;
        return Ok(Series {
            data,
            step_minutes: 60,
        });
    }
    let data = s.store.series(scope, from, to).await?;
    Ok(Series {
        data,
        step_minutes: 1,
    })
}

/// Every tenant's counters per minute, summed, over the last `minutes` minutes (admin only).
#[utoipa::path(
    get,
    path = "/admin/stats/series",
    tag = "events",
    operation_id = "read_all_stats_series",
    params(SeriesQuery),
    responses((status = 200, description = "Every tenant's counters per minute, summed, oldest first.", body = Series), ReadErrors),
)]
pub async fn series_all(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(read_stats_series(&s, None, &q).await?).into_response())
}
