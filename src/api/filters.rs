//! Trying payload filters before saving them (both scopes; see [`super`]): against the
//! tenant's stored events of a target's types, in both tiers, or against one event written out.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::scope::{ApiState, TenantScope};
use super::targets::TargetPath;
use crate::http::error::{ApiError, ReadErrors};
use crate::http::extract::{ApiJson, ApiPath, JsonBody};
use crate::model::delivery::EventFilter;
use crate::model::event_meta;
use crate::model::filter::{Subject, TargetFilter};
use crate::model::time::{parse_rfc3339, rfc3339};
use crate::model::{EventId, TargetId};

/// Events evaluated when a test names no `limit`.
const DEFAULT_LIMIT: u32 = 1_000;
/// Most events one test evaluates.
const MAX_LIMIT: u32 = 10_000;
/// Ids of matching events shown.
const SAMPLE: usize = 20;
/// Events read per page of the listing.
const PAGE: usize = 500;
/// Events whose body could not be read, named.
const ERRORS_SHOWN: usize = 20;

/// What to try against the target's stored events.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterTest {
    /// The filter to try; the target's own when absent.
    #[serde(default)]
    pub filter: Option<TargetFilter>,
    /// Only events received at or after this time.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// Most events evaluated, newest first (1 to 10,000; 1,000 when absent).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[schema(minimum = 1, maximum = 10000)]
    pub limit: Option<u64>,
}

impl JsonBody for FilterTest {
    const INVALID: &'static str = "invalid_filter";
}

/// What a filter did to the stored events.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterTested {
    /// Events of the target's types evaluated.
    pub evaluated: u64,
    /// Of those, the ones the filter lets through.
    pub matched: u64,
    /// Ids of matching events, newest first (at most 20).
    pub sample: Vec<EventId>,
    /// Events that could not be evaluated (their body is gone), at most 20 named.
    pub errors: Vec<FilterTestError>,
}

/// An event a filter test could not evaluate.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilterTestError {
    pub event_id: EventId,
    pub message: String,
}

/// Evaluates a filter (the one given, or the target's own) against the tenant's stored events
/// of the target's types, newest first, from Redis and the log store. Nothing is saved.
#[utoipa::path(
    post,
    path = "/targets/{target_id}/filter-test",
    tag = "targets",
    operation_id = "test_target_filter",
    params(TargetPath),
    request_body = FilterTest,
    responses((status = 200, description = "What the filter lets through.", body = FilterTested), ReadErrors),
)]
pub async fn target_filter_test(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
    ApiJson(req): ApiJson<FilterTest>,
) -> Result<Response, ApiError> {
    Ok(Json(test_target_filter(&s, &scope, &p.target_id, &req).await?).into_response())
}

/// `test_target_filter`.
pub async fn test_target_filter(
    s: &ApiState,
    scope: &TenantScope,
    target_id: &TargetId,
    req: &FilterTest,
) -> Result<FilterTested, ApiError> {
    let invalid = |m: &str| ApiError::bad_request("invalid_filter", m.to_owned());
    let limit = match req.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=u64::from(MAX_LIMIT)).contains(&n) => n as u32,
        Some(_) => return Err(invalid("limit must be between 1 and 10000")),
    };
    let since_ms = match req.since.as_deref() {
        None => None,
        Some(t) => Some(parse_rfc3339(t).ok_or_else(|| {
            invalid("since must be an RFC 3339 time, such as 2026-12-01T10:00:00Z")
        })?),
    };
    let target = s
        .store
        .target(&scope.tenant, target_id)
        .await?
        .ok_or_else(|| ApiError::not_found("target"))?;
    let Some(filter) = req.filter.as_ref().or(target.filter.as_ref()) else {
        return Err(invalid(
            "the target has no filter: name one in the request's filter",
        ));
    };
    let mut out = FilterTested {
        evaluated: 0,
        matched: 0,
        sample: Vec::new(),
        errors: Vec::new(),
    };
    let mut failed: u64 = 0;
    let mut page = EventFilter {
        since_ms,
        ..EventFilter::default()
    };
    'pages: loop {
        let listed = s
            .history
            .list(scope.shard, &scope.tenant, &page, PAGE)
            .await?;
        for e in &listed.events {
            if out.evaluated + failed >= u64::from(limit) {
                break 'pages;
            }
            if !target
                .events
                .as_slice()
                .iter()
                .any(|p| p.matches(&e.event_type))
            {
                continue;
            }
            let body = if filter.filter().reads_body() {
                s.history
                    .body(scope.shard, &scope.tenant, &e.id)
                    .await?
                    .map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
            } else {
                Some(None)
            };
            let Some(body) = body else {
                failed += 1;
                if out.errors.len() < ERRORS_SHOWN {
                    out.errors.push(FilterTestError {
                        event_id: e.id.clone(),
                        message: "its body is no longer stored".into(),
                    });
                }
                continue;
            };
            let received_at = rfc3339(e.received_at_ms);
            let headers = serde_json::Value::Object(
                e.content_type
                    .as_deref()
                    .map(|packed| event_meta::headers_json(packed.as_bytes()))
                    .unwrap_or_default(),
            );
            let subject = Subject {
                event_type: &e.event_type,
                body: body.as_ref(),
                headers: &headers,
                received_at: &received_at,
            };
            out.evaluated += 1;
            if filter.filter().matches(&subject) {
                out.matched += 1;
                if out.sample.len() < SAMPLE {
                    out.sample.push(e.id.clone());
                }
            }
        }
        match listed.next {
            Some(next) => page.before = Some(next),
            None => break,
        }
    }
    Ok(out)
}

/// One event, written out, to try a filter on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriedEvent {
    #[serde(rename = "type")]
    pub event_type: crate::model::EventType,
    /// The body as JSON; `null` or absent for a body that is not JSON.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Header name → value, as kept headers reach a filter.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// When it was received; now when absent.
    #[serde(default)]
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
}

/// A filter and one event.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventFilterTest {
    pub filter: TargetFilter,
    pub event: TriedEvent,
}

impl JsonBody for EventFilterTest {
    const INVALID: &'static str = "invalid_filter";
}

/// Whether a filter lets one event through.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventFilterTested {
    pub matched: bool,
    /// Whether the filter looks into the body (a body that is not JSON never passes such a
    /// filter).
    pub reads_body: bool,
}

/// Evaluates a filter against one event written out in the request. Nothing is saved.
#[utoipa::path(
    post,
    path = "/filter-test",
    tag = "targets",
    operation_id = "test_filter",
    request_body = EventFilterTest,
    responses((status = 200, description = "Whether the filter lets the event through.", body = EventFilterTested), ReadErrors),
)]
pub async fn filter_test(
    State(s): State<ApiState>,
    _scope: TenantScope,
    ApiJson(req): ApiJson<EventFilterTest>,
) -> Result<Response, ApiError> {
    Ok(Json(test_filter(&s, &req)?).into_response())
}

/// `test_filter`.
pub fn test_filter(s: &ApiState, req: &EventFilterTest) -> Result<EventFilterTested, ApiError> {
    let received_at = match req.event.received_at.as_deref() {
        None => rfc3339(s.store.clock().now_ms()),
        Some(t) => rfc3339(parse_rfc3339(t).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_filter",
                "event.received_at must be an RFC 3339 time, such as 2026-12-01T10:00:00Z",
            )
        })?),
    };
    let headers = serde_json::Value::Object(
        req.event
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect(),
    );
    let subject = Subject {
        event_type: req.event.event_type.as_str(),
        body: req.event.body.as_ref(),
        headers: &headers,
        received_at: &received_at,
    };
    Ok(EventFilterTested {
        matched: req.filter.filter().matches(&subject),
        reads_body: req.filter.filter().reads_body(),
    })
}
