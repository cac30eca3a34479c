//! Replays of a timestamped scheme's signed request (Standard Webhooks, Stripe): a signature
//! is remembered as seen for twice the scheme's tolerance, and the same signed request again is
//! refused.
//!
//! The mark is final only once the event is durably in the queue. Before the enqueue the
//! signature is *claimed* (`SET … NX` with a value that says so, for about as long as an
//! enqueue can take); after it, the claim becomes the mark (a 202) or is let go (any failure).
//! A mark written first, as before, turned the provider's retry of a request answered 503
//! during a Redis outage into a "replay", and the event was lost. Meanwhile the same request
//! arriving again is answered 503 (retry shortly), not refused: its first copy may yet fail.
//! A claim that cannot be let go (Redis gone) lapses on its own.

use std::time::Duration;

use fred::prelude::*;
use http::{HeaderMap, HeaderValue};

use crate::crypto::sha256_hex;
use crate::crypto::verify::Verifier;
use crate::http::error::ApiError;
use crate::model::{Scheme, SourceId};
use crate::redis::keyspace::Keyspace;
use crate::telemetry;

/// The value of a claim; a mark is `1`.
const CLAIMED: &str = "claimed";
const SEEN: &str = "1";

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claimed {
    /// Not a timestamped scheme: nothing to remember.
    Unmarked,
    /// The signature is this request's until [`Claim::settle`].
    Held(Claim),
    /// Seen before: a replay.
    Replay,
}

/// A signature held while its event is enqueued.
#[derive(Debug)]
pub struct Claim {
    key: String,
    /// How long the mark is kept: twice the scheme's tolerance.
    keep: Duration,
}

/// The header that carries `scheme`'s signature, for the schemes with a timestamp.
fn signature_header(scheme: Scheme) -> Option<&'static str> {
    match scheme {
        Scheme::StandardWebhooks => Some("webhook-signature"),
        Scheme::Stripe => Some("stripe-signature"),
        _ => None,
    }
}

/// Claims the signature of a request for `source`, checked by `verifier`, for `hold` at
/// most. Errors: 503 when Redis cannot be asked, or when another copy of the request is being
/// enqueued right now.
pub async fn claim(
    redis: &Client,
    keys: &Keyspace,
    (shard, source): (u16, &SourceId),
    verifier: &Verifier,
    headers: &HeaderMap,
    hold: Duration,
) -> Result<Claimed, ApiError> {
    let Some(header) = signature_header(verifier.scheme) else {
        return Ok(Claimed::Unmarked);
    };
    let value = |name: &str| {
        headers
            .get(name)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default()
    };
    let signed = [
        value("webhook-id"),
        value("webhook-timestamp"),
        value(header),
    ];
    let key = keys.source_seen(shard, source, &sha256_hex(&signed));
    let set: Result<Option<String>, _> = redis
        .set(
            key.as_str(),
            CLAIMED,
            Some(Expiration::PX(hold.as_millis().max(1) as i64)),
            Some(SetOptions::NX),
            false,
        )
        .await;
    let unreachable = |e: fred::error::Error| {
        telemetry::redis_error("replay_check");
        tracing::warn!(error = %e, "replay check failed");
        ApiError::unavailable("the queue is unreachable; retry shortly")
    };
    if set.map_err(unreachable)?.is_some() {
        let keep = (verifier.tolerance() * 2).max(Duration::from_secs(1));
        return Ok(Claimed::Held(Claim { key, keep }));
    }
    let found: Option<String> = redis.get(key.as_str()).await.map_err(unreachable)?;
    match found.as_deref() {
        Some(SEEN) => Ok(Claimed::Replay),
        // Claimed by a copy still being enqueued, or let go a moment ago: the sender's
        // retry decides, once the first copy has its answer.
        _ => Err(ApiError::unavailable(
            "the same delivery is being accepted; retry shortly",
        )),
    }
}

impl Claim {
    /// Makes the claim the mark (`enqueued`: the event is in the queue) or lets it go, so a
    /// retry of the request is accepted. A failure here is logged: a mark not written lets
    /// a replay through (at worst an event twice; the delivery id, when the scheme has one,
    /// still answers it as a duplicate); a claim not let go lapses after its hold.
    pub async fn settle(self, redis: &Client, enqueued: bool) {
        let done: Result<(), fred::error::Error> = if enqueued {
            redis
                .set(
                    self.key.as_str(),
                    SEEN,
                    Some(Expiration::PX(self.keep.as_millis() as i64)),
                    None,
                    false,
                )
                .await
        } else {
            redis.del(self.key.as_str()).await
        };
        if let Err(e) = done {
            telemetry::redis_error("replay_mark");
            tracing::warn!(error = %e, enqueued, "could not settle a signature's replay mark");
        }
    }
}
