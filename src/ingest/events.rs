//! `POST /v1/events/{event_type}`: authenticate, check, read the body within bounds, enqueue,
//! and answer 202 only once Redis holds the event.
//!
//! Order matters: the cheap refusals (token, event type, rate limit, declared length) come
//! before reading the body, so a refused client costs no body bandwidth or memory.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Serialize;

use super::catalogue::Catalogues;
use crate::auth::{Auth, TenantAuth};
use crate::crypto::sha256_hex;
use crate::http::body;
use crate::http::body::BodyLimits;
use crate::http::error::{ApiError, IngestErrors};
use crate::model::{EventId, EventType, event_meta};
use crate::queue::{Enqueued, Enqueuer, Idempotency, NewEvent};
use crate::telemetry;

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The prefix of the route; the rest of the path is the (percent-encoded) event type.
const ROUTE_PREFIX: &str = "/v1/events/";

/// What the event routes share.
#[derive(Clone, Debug)]
pub struct IngestState {
    /// Token → tenant.
    pub auth: Arc<Auth>,
    /// Each tenant's event catalogue.
    pub catalogues: Catalogues,
    /// Durable writes.
    pub enqueuer: Enqueuer,
    /// Body bounds.
    pub body_limits: BodyLimits,
}

/// The answer to an accepted event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventAccepted {
    /// The event's id (the first event's, for a repeated `Idempotency-Key`).
    pub id: EventId,
    pub event_type: EventType,
    /// Whether an earlier request with the same `Idempotency-Key` wrote this event.
    pub duplicate: bool,
}

/// Handles one request to the route; served by hand on the hot path and through the router
/// alike, so both give the same answers.
pub async fn post_event<B>(state: &IngestState, req: Request<B>) -> Response
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    match accept(state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Enqueues the raw body as one event of `event_type`.
///
/// The body is kept byte for byte, with its `Content-Type`. With an `Idempotency-Key`, a repeat
/// within 24 h answers the first event's id and enqueues nothing.
#[utoipa::path(
    post,
    path = "/v1/events/{event}",
    tag = "events",
    operation_id = "post_event",
    params(
        ("event" = EventType, Path, description = "The event type."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat within 24 h returns the first event's id.", max_length = 255, pattern = r"^[\x20-\x7E]+$"),
        ("Estafeta-Schema-Version" = Option<String>, Header, nullable = false, description = "The schema version of the event type the body follows, when the tenant's catalogue checks bodies; the highest when absent.", pattern = r"^[1-9][0-9]{0,5}$"),
    ),
    request_body(
        description = "The event's body, any content type, kept byte for byte.",
        content(
            (serde_json::Value = "application/json"),
            (String = "text/plain"),
            (Vec<u8> = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 202, description = "The event is durably in the queue.", body = EventAccepted, headers(("Deprecation" = Option<String>, description = "The catalogue deprecates the event type, since this time (RFC 9745: `@<unix seconds>`)."))),
        IngestErrors,
    ),
    security(("tenant_token" = [])),
)]
pub async fn post_event_routed(State(state): State<IngestState>, req: Request<Body>) -> Response {
    post_event(&state, req).await
}

async fn accept<B>(state: &IngestState, req: Request<B>) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (parts, request_body) = req.into_parts();
    let headers = &parts.headers;
    let tenant = state
        .auth
        .authenticate_header(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes))
        .await?;
    let event_type = parts
        .uri
        .path()
        .strip_prefix(ROUTE_PREFIX)
        .and_then(|raw| percent_decode_str(raw).decode_utf8().ok())
        .and_then(|t| EventType::parse(&t).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_event_type",
                "the event type must be 1 to 128 of A-Z a-z 0-9 _ . -",
            )
        })?;
    if crate::model::notice::is_reserved(event_type.as_str()) {
        return Err(ApiError::bad_request(
            "reserved_event_type",
            "event types starting with \"estafeta.\" are the gateway's own operational events",
        ));
    }
    if let Err(wait) = tenant.check_rate() {
        telemetry::rate_limited();
        return Err(ApiError::rate_limited(wait));
    }
    let idempotency_key = idempotency_key(headers)?;
    let body = body::read(request_body, headers, &state.body_limits).await?;
    let key_digest = idempotency_key.map(|key| sha256_hex(&[key.as_bytes()]));
    enqueue_and_answer(state, &tenant, event_type, headers, body, key_digest).await
}

/// Enqueues one event of `tenant` (its body read within bounds) and answers
/// `202 {"id", "event_type", "duplicate"}` once Redis holds it. `key_digest` is the
/// idempotency key's digest, if the request has one. Shared by `/v1/events` and `/v1/hooks`.
pub async fn enqueue_and_answer(
    state: &IngestState,
    tenant: &TenantAuth,
    event_type: EventType,
    headers: &HeaderMap,
    body: Bytes,
    key_digest: Option<String>,
) -> Result<Response, ApiError> {
    use crate::traces::{Decision, Span};
    use opentelemetry::KeyValue;
    use opentelemetry::trace::SpanKind;
    // Traces off, or a trace not kept: no span, and the traceparent its event keeps, if any.
    let parent = match crate::traces::on() {
        false => None,
        true => {
            let incoming = headers.get("traceparent").map(HeaderValue::as_bytes);
            match crate::traces::decide(incoming) {
                Decision::Skip(traceparent) => {
                    let trace = Trace::Passed(Some(&traceparent));
                    return enqueue(state, tenant, event_type, headers, body, key_digest, trace)
                        .await;
                }
                Decision::Sample(parent) => Some(parent),
            }
        }
    };
    let attributes = || {
        // Room for the event id and the status set later, so neither grows the vector.
        let mut a = Vec::with_capacity(4);
        a.push(KeyValue::new(
            "estafeta.tenant_id",
            tenant.id.as_str().to_owned(),
        ));
        a.push(KeyValue::new(
            "estafeta.event_type",
            event_type.as_str().to_owned(),
        ));
        a
    };
    let span = parent.and_then(|p| Span::start("ingest", SpanKind::Server, p, attributes()));
    let Some(span) = span else {
        let trace = Trace::Passed(None);
        return enqueue(state, tenant, event_type, headers, body, key_digest, trace).await;
    };
    let trace = Trace::Recorded(&span);
    let answer = enqueue(state, tenant, event_type, headers, body, key_digest, trace).await;
    let status = match &answer {
        Ok(r) => r.status(),
        Err(e) => e.status,
    };
    span.set(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if answer.is_err() {
        span.fail("");
    }
    answer
}

/// The trace an event belongs to, as ingest knows it.
enum Trace<'a> {
    /// Not recorded here: the `traceparent` stored with the event and passed on to its
    /// receivers (the sender's, or a new unsampled one), if any.
    Passed(Option<&'a str>),
    /// Recorded: the request's `ingest` span, whose `traceparent` is stored.
    Recorded(&'a crate::traces::Span),
}

/// [`enqueue_and_answer`] in `trace`.
async fn enqueue(
    state: &IngestState,
    tenant: &TenantAuth,
    event_type: EventType,
    headers: &HeaderMap,
    body: Bytes,
    key_digest: Option<String>,
    trace: Trace<'_>,
) -> Result<Response, ApiError> {
    let checked = state
        .catalogues
        .check(tenant.catalogue, &tenant.id, &event_type, headers, &body)
        .await?;
    let raw_content_type = headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes);
    // The content type with the headers the tenant keeps (see `model::event_meta`).
    let content_type = event_meta::pack(
        raw_content_type,
        tenant.keep_headers.names().iter().flat_map(|name| {
            headers
                .get_all(name.as_str())
                .iter()
                .map(move |v| (name.as_str(), v.as_bytes()))
        }),
        checked.schema_errors.as_deref(),
    );
    let content_type = match &trace {
        Trace::Passed(None) => content_type,
        Trace::Passed(Some(tp)) => event_meta::with_traceparent(content_type, tp),
        Trace::Recorded(span) => event_meta::with_traceparent(content_type, &span.traceparent()),
    };
    let started = Instant::now();
    let idempotency = key_digest.map(|key_digest| Idempotency {
        key_digest,
        fingerprint: sha256_hex(&[
            event_type.as_str().as_bytes(),
            // Not the kept headers: a sender's retry may carry a new delivery id in one.
            raw_content_type.unwrap_or_default(),
            &body,
        ]),
    });
    let json_type = event_type.clone();
    let event = NewEvent {
        id: EventId::generate(),
        tenant: tenant.id.clone(),
        shard: tenant.shard,
        event_type,
        content_type,
        body,
        idempotency,
        trace: match &trace {
            Trace::Recorded(span) => Some(span.link()),
            Trace::Passed(_) => None,
        },
    };
    let enqueued = match trace {
        Trace::Passed(_) => state.enqueuer.enqueue(event).await?,
        Trace::Recorded(span) => {
            use opentelemetry::KeyValue;
            let enqueued = state.enqueuer.enqueue(event).await;
            // The request's event: the one stored before it, for a duplicate.
            match &enqueued {
                Ok(Enqueued::New { id }) => {
                    span.set(KeyValue::new("estafeta.event_id", id.as_str().to_owned()));
                }
                Ok(Enqueued::Duplicate { id }) => {
                    span.set(KeyValue::new("estafeta.event_id", id.as_str().to_owned()));
                    span.set(KeyValue::new("estafeta.duplicate", true));
                }
                Err(_) => {}
            }
            enqueued?
        }
    };
    let (id, duplicate) = match enqueued {
        Enqueued::New { id } => (id, false),
        Enqueued::Duplicate { id } => (id, true),
    };
    telemetry::event_enqueued(duplicate, started.elapsed());
    // Written by hand: this is every event's answer, and both values are from fixed alphabets
    // (ids, validated event types), so no escaping is needed.
    let json = format!(r#"{{"id":"{id}","event_type":"{json_type}","duplicate":{duplicate}}}"#);
    let mut response = (
        StatusCode::ACCEPTED,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json,
    )
        .into_response();
    if let Some(since) = checked.deprecated_at_ms {
        // RFC 9745: when the type was deprecated, as a structured-field date.
        if let Ok(v) = HeaderValue::from_str(&format!("@{}", since / 1000)) {
            response.headers_mut().insert("deprecation", v);
        }
    }
    Ok(response)
}

/// The `Idempotency-Key` header, validated.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        return Err(bad());
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_validation() {
        let mut h = HeaderMap::new();
        assert!(matches!(idempotency_key(&h), Ok(None)));
        h.insert("idempotency-key", HeaderValue::from_static("order-1 retry"));
        assert!(matches!(idempotency_key(&h), Ok(Some("order-1 retry"))));
        h.insert("idempotency-key", HeaderValue::from_static(""));
        assert!(idempotency_key(&h).is_err());
        let long = "k".repeat(256);
        h.insert(
            "idempotency-key",
            HeaderValue::from_str(&long).unwrap_or(HeaderValue::from_static("x")),
        );
        assert!(idempotency_key(&h).is_err());
    }
}
