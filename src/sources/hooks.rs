//! `POST /v1/hooks/{source_token}`: an external platform's webhook. The URL token names the
//! source; the sender's signature is verified over the raw bytes before anything is written;
//! the event type comes from the source's rule; the event is enqueued exactly like
//! `POST /v1/events/{type}` (same limits, rate limit and durability), with the sender's
//! delivery id, when it sends one, as the idempotency key.
//!
//! Replays: a request whose signature was already accepted (same id, timestamp and signature)
//! is refused, the signature being marked once its event is in the queue ([`super::replay`]);
//! a sender's retry of the same delivery (new timestamp and signature, same id) is answered
//! with the first event (`duplicate: true`), not enqueued again.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use fred::prelude::*;
use http::HeaderMap;

use super::cache::SourceCache;
use super::replay::{self, Claimed};
use crate::crypto::sha256_hex;
use crate::http::body;
use crate::http::error::{ApiError, HookErrors};
use crate::http::extract::ApiPath;
use crate::ingest::events::{IngestState, enqueue_and_answer};
use crate::model::{EventType, EventTypeRule};
use crate::monitors::state::{Signal, Subject, Watches};
use crate::store::source_activity::Refusal;
use crate::store::{Source, Store, StoreError};
use crate::telemetry;

/// What the hook handler needs.
#[derive(Debug, Clone)]
pub struct HookState {
    pub ingest: IngestState,
    pub store: Store,
    pub sources: SourceCache,
    pub redis: Client,
    /// Silence watches of sources that declare `expect_every_s`.
    pub watches: Watches,
    /// Proxies whose `X-Forwarded-For` names the sender of a refused delivery.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// How long a signature is claimed while its event is enqueued (see [`super::replay`]).
    pub claim_for: std::time::Duration,
}

fn refused() -> ApiError {
    // One answer for every failure: no hint of which part did not match.
    ApiError::unauthorized(
        "invalid_signature",
        "the request's signature could not be verified",
    )
}

/// The path of a hook.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HookPath {
    /// The source's URL token.
    #[param(min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    source_token: String,
}

impl crate::http::extract::PathParams for HookPath {
    const WHAT: &'static str = "source";
}

/// An inbound webhook of an external platform.
///
/// No bearer header: the URL token names the source, which says how to verify the sender's
/// signature (over the raw body) and where the event type comes from.
#[utoipa::path(
    post,
    path = "/v1/hooks/{source_token}",
    tag = "sources",
    operation_id = "post_hook",
    params(HookPath),
    request_body(
        description = "The sender's body, any content type, kept byte for byte.",
        content(
            (serde_json::Value = "application/json"),
            (String = "text/plain"),
            (Vec<u8> = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 202, description = "The event is durably in the queue.", body = crate::ingest::events::EventAccepted),
        HookErrors,
    ),
)]
pub async fn post_hook(
    State(s): State<HookState>,
    ApiPath(path): ApiPath<HookPath>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, request_body) = request.into_parts();
    let headers = &parts.headers;
    let token = path.source_token;
    if crate::model::text::check_token(&token).is_err() {
        return Err(ApiError::not_found("source"));
    }
    let hash = s.store.crypto().hash_token(&token);
    let hook = s
        .sources
        .get(hash)
        .await
        .map_err(|e| ApiError::from_shared_store(&e, "source lookup"))?
        .ok_or_else(|| ApiError::not_found("source"))?;
    let source = &hook.source;
    let tenant = s.ingest.auth.tenant_by_id(&source.tenant).await?;
    if let Err(wait) = tenant.check_rate() {
        telemetry::rate_limited();
        return Err(ApiError::rate_limited(wait));
    }
    let raw = body::read(request_body, headers, &s.ingest.body_limits).await?;
    let sender = || {
        crate::http::extract::client::transport_of(&parts, &s.trusted_proxies)
            .client
            .map(|ip| ip.to_string())
    };
    let verified =
        match hook
            .verifier
            .verify(headers, &raw, (s.store.clock().now_ms() / 1000) as i64)
        {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(source = %source.id, reason = %e, "inbound webhook refused");
                note_refusal(&s, source, e.to_string(), sender());
                return Err(refused());
            }
        };
    // Before the replay claim: a request refused here leaves nothing behind.
    let event_type = event_type(&source.event_type, headers, &raw)?;
    let claimed = replay::claim(
        &s.redis,
        s.store.keyspace(),
        (tenant.shard, &source.id),
        &hook.verifier,
        headers,
        s.claim_for,
    )
    .await?;
    let claim = match claimed {
        Claimed::Replay => {
            let why = "a delivery already accepted, sent again";
            note_refusal(&s, source, why.into(), sender());
            return Err(refused());
        }
        Claimed::Held(claim) => Some(claim),
        Claimed::Unmarked => None,
    };
    let key_digest = verified.delivery_id.map(|id| {
        sha256_hex(&[
            b"source:",
            source.id.as_str().as_bytes(),
            b":",
            id.as_bytes(),
        ])
    });
    let answer = enqueue_and_answer(&s.ingest, &tenant, event_type, headers, raw, key_digest).await;
    if let Some(claim) = claim {
        claim.settle(&s.redis, answer.is_ok()).await;
    }
    let answer = answer?;
    note_received(&s, source);
    if let Some(subject) = Subject::source(source, tenant.shard) {
        // The event is already durable: a failed watch update must not turn it into an error
        // (the sender would retry a delivery we hold). At worst it raises a silence alert
        // early, which the next event resolves. A source deleted meanwhile is left alone.
        let exists = async {
            Ok::<_, StoreError>(s.store.source(&source.tenant, &source.id).await?.is_some())
        };
        if let Err(e) = s
            .watches
            .signal_existing(subject, &Signal::Event, exists)
            .await
        {
            tracing::warn!(source = %source.id, error = %e, "source watch update failed");
        }
    }
    Ok(answer)
}

/// Notes that `source` accepted a webhook, after its sender has the answer.
fn note_received(s: &HookState, source: &Source) {
    let (store, id) = (s.store.clone(), source.id.clone());
    tokio::spawn(async move {
        if let Err(e) = store.source_received(&id, store.clock().now_ms()).await {
            tracing::warn!(source = %id, error = %e, "could not note a received webhook");
        }
    });
}

/// Notes a refused delivery of `source` for its page, after its sender has the answer.
fn note_refusal(s: &HookState, source: &Source, reason: String, sender_ip: Option<String>) {
    let (store, id) = (s.store.clone(), source.id.clone());
    let refusal = Refusal {
        at_ms: s.store.clock().now_ms(),
        reason,
        sender_ip,
    };
    tokio::spawn(async move {
        if let Err(e) = store.source_refused(&id, &refusal).await {
            tracing::warn!(source = %id, error = %e, "could not note a refused webhook");
        }
    });
}

/// The event type by the source's rule, validated.
fn event_type(
    rule: &EventTypeRule,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<EventType, ApiError> {
    let found = match rule {
        EventTypeRule::Fixed(t) => Some(t.as_str().to_owned()),
        EventTypeRule::Header(h) => headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned()),
        EventTypeRule::JsonPointer(p) => {
            // The receiver reads the same body: a key it could read differently is refused.
            if let Some(key) = crate::http::body::duplicate_key(body) {
                return Err(ApiError::bad_request(
                    "duplicate_key",
                    format!(
                        "the body holds the key {key:?} twice in one object, so its event type is ambiguous"
                    ),
                ));
            }
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.pointer(p).and_then(|t| t.as_str()).map(str::to_owned))
        }
    };
    found
        .and_then(|t| EventType::parse(&t).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_event_type",
                "the request carries no valid event type where the source says to find it",
            )
        })
}
