//! `POST /v1/hooks/{source_token}`: an external platform's webhook. The URL token names the
//! source; the sender's signature is verified over the raw bytes before anything is written;
//! the event type comes from the source's rule; the event is enqueued exactly like
//! `POST /v1/events/{type}` (same limits, rate limit and durability), with the sender's delivery
//! id, when it sends one, as the idempotency key.
//!
//! Replays: a request whose signature was already accepted (same id, timestamp and signature)
//! is refused; a sender's retry of the same delivery (new timestamp and signature, same id) is
//! answered with the first event (`duplicate: true`), not enqueued again.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use fred::prelude::*;
use http::{HeaderMap, HeaderValue};

use super::verify::{Scheme, VerifyError};
use crate::crypto::sha256_hex;
use crate::error::ApiError;
use crate::ingest::EdgeState;
use crate::ingest::events::enqueue_and_answer;
use crate::monitors::state::Signal;
use crate::queue::valid_event_type;
use crate::store::sources::{EventTypeRule, Source};
use crate::store::{Store, StoreError, now_ms};
use crate::{body, telemetry};

/// Sources by URL-token hash, cached briefly; changes are announced as `source:<hash>`.
#[derive(Debug, Clone)]
pub struct SourceCache {
    store: Store,
    cache: moka::future::Cache<String, Option<Arc<Source>>>,
}

impl SourceCache {
    pub fn new(store: Store) -> SourceCache {
        SourceCache {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
        }
    }

    async fn get(&self, hash: &str) -> Result<Option<Arc<Source>>, Arc<StoreError>> {
        let store = self.store.clone();
        let h = hash.to_owned();
        Box::pin(self.cache.try_get_with(hash.to_owned(), async move {
            Ok::<_, StoreError>(store.source_by_token(&h).await?.map(Arc::new))
        }))
        .await
    }

    /// Drops an entry (`source:<hash>` announced).
    pub async fn invalidate(&self, hash: &str) {
        self.cache.invalidate(hash).await;
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// What the hook handler needs.
#[derive(Debug, Clone)]
pub struct HookState {
    pub edge: EdgeState,
    pub store: Store,
    pub sources: SourceCache,
    pub redis: Client,
    /// Silence watches of sources that declare `expect_every_s`.
    pub watches: crate::monitors::state::Watches,
}

fn refused() -> ApiError {
    // One answer for every failure: no hint of which part did not match.
    ApiError::unauthorized(
        "invalid_signature",
        "the request's signature could not be verified",
    )
}

pub async fn post_hook(
    State(s): State<HookState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    if crate::store::validate_token_text(&token).is_err() {
        return Err(ApiError::not_found("source"));
    }
    let hash = s.store.crypto().hash_token(&token).to_hex();
    let source = s
        .sources
        .get(&hash)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "source lookup failed");
            ApiError::unavailable("the source store is unreachable; retry shortly")
        })?
        .ok_or_else(|| ApiError::not_found("source"))?;
    let tenant = s.edge.auth.tenant_by_id(&source.tenant).await?;
    if let Err(wait) = tenant.check_rate() {
        telemetry::rate_limited();
        return Err(ApiError::rate_limited(wait));
    }
    let raw = body::read(request_body, &headers, &s.edge.body_limits).await?;
    let verified = source
        .verifier
        .verify(&headers, &raw, (now_ms() / 1000) as i64)
        .map_err(|e| {
            tracing::info!(source = %source.id, reason = %e, "inbound webhook refused");
            if e == VerifyError::BadSecret {
                ApiError::internal(&e)
            } else {
                refused()
            }
        })?;
    refuse_replay(&s, &source, tenant.shard, &headers).await?;
    let event_type = event_type(&source.event_type, &headers, &raw)?;
    let key_digest = verified
        .delivery_id
        .map(|id| sha256_hex(&[b"source:", source.id.as_bytes(), b":", id.as_bytes()]));
    let answer =
        enqueue_and_answer(&s.edge, &tenant, event_type, &headers, raw, key_digest).await?;
    if let Some(subject) = source.watch_subject(tenant.shard) {
        // The event is already durable: a failed watch update must not turn it into an error
        // (the sender would retry a delivery we hold). At worst it raises a silence alert
        // early, which the next event resolves. A source deleted meanwhile is left alone.
        let exists = async { Ok(s.store.source(subject.tenant, subject.id).await?.is_some()) };
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

/// Remembers each accepted signature of a timestamped scheme for twice the tolerance; the
/// same signed request again is a replay.
async fn refuse_replay(
    s: &HookState,
    source: &Source,
    shard: u16,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let header = match source.verifier.scheme {
        Scheme::StandardWebhooks => "webhook-signature",
        Scheme::Stripe => "stripe-signature",
        _ => return Ok(()),
    };
    let signed = [
        headers
            .get("webhook-id")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default(),
        headers
            .get("webhook-timestamp")
            .map(HeaderValue::as_bytes)
            .unwrap_or_default(),
        headers
            .get(header)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default(),
    ];
    let key = s
        .store
        .keyspace()
        .source_seen(shard, &source.id, &sha256_hex(&signed));
    let ttl = (source.verifier.tolerance().as_secs() * 2).max(1) as i64;
    let first: Result<Option<String>, _> = s
        .redis
        .set(
            key,
            "1",
            Some(fred::types::Expiration::EX(ttl)),
            Some(fred::types::SetOptions::NX),
            false,
        )
        .await;
    match first {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(refused()),
        Err(e) => {
            telemetry::redis_error("replay_check");
            tracing::warn!(error = %e, "replay check failed");
            Err(ApiError::unavailable(
                "the queue is unreachable; retry shortly",
            ))
        }
    }
}

/// The event type by the source's rule, validated.
fn event_type(rule: &EventTypeRule, headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let found = match rule {
        EventTypeRule::Fixed(t) => Some(t.clone()),
        EventTypeRule::Header(h) => headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned()),
        EventTypeRule::JsonPointer(p) => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.pointer(p).and_then(|t| t.as_str()).map(str::to_owned)),
    };
    found.filter(|t| valid_event_type(t)).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_event_type",
            "the request carries no valid event type where the source says to find it",
        )
    })
}
