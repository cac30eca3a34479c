//! A signed `estafeta.ping`, sent through a target's whole path (its transformation, its
//! auth) and recorded nowhere: what `POST …/targets/{id}/test` answers, and how a target
//! disabled for failing is probed before it is enabled again.

use std::time::Duration;

use super::client::{DeliveryClient, Message};
use super::signing::SigningKey;
use super::transform::{self, EventInput, Transformed};
use crate::model::EventId;
use crate::model::time::rfc3339;
use crate::sandbox::Sandbox;
use crate::store::Target;

/// What a ping did.
#[derive(Debug, Clone)]
pub struct Pinged {
    /// The `webhook-id` it carried: a fresh event id, stored nowhere.
    pub webhook_id: EventId,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why there was no usable response (or what the status means).
    pub error: Option<String>,
    /// The first bytes of the response body, as text.
    pub response: Option<String>,
    /// The version of the transformation it went through, if the target has one.
    pub transform_version: Option<u32>,
}

/// Sends `target` a signed `estafeta.ping` at `now_ms`.
pub async fn ping(
    client: &DeliveryClient,
    sandbox: &Sandbox,
    allow_private: bool,
    target: &Target,
    now_ms: u64,
) -> Pinged {
    let id = EventId::generate();
    let body = bytes::Bytes::from(
        serde_json::json!({
            "type": "estafeta.ping",
            "target_id": target.id,
            "sent_at": rfc3339(now_ms),
        })
        .to_string(),
    );
    let unsent = |error: String, version: u32| Pinged {
        webhook_id: id.clone(),
        delivered: false,
        status: None,
        latency: Duration::ZERO,
        error: Some(error),
        response: None,
        transform_version: Some(version),
    };
    let event = EventInput {
        event_type: "estafeta.ping",
        meta: Some(b"application/json"),
        body: &body,
    };
    let shaped = match transform::apply(sandbox, target, None, event, allow_private).await {
        Transformed::Untouched => None,
        Transformed::Send(shaped) => Some(shaped),
        Transformed::Cancel { version } => {
            return unsent(
                "the target's transformation cancels it: nothing was sent".into(),
                version,
            );
        }
        Transformed::Fail { version, error, .. } => return unsent(error, version),
    };
    let keys = SigningKey::all(&target.secrets_at(now_ms));
    let msg = Message {
        shaped: shaped.as_ref(),
        event_id: id.as_str(),
        event_type: "estafeta.ping",
        content_type: Some(b"application/json"),
        body: &body,
    };
    let r = client
        .send(target, &keys, msg, (now_ms / 1000) as i64)
        .await;
    let delivered = r.status.is_some_and(|c| (200..300).contains(&c));
    Pinged {
        webhook_id: id.clone(),
        delivered,
        status: r.status,
        latency: r.latency,
        error: r.error.or_else(|| {
            r.status
                .filter(|_| !delivered)
                .map(|c| format!("the target answered {c}"))
        }),
        response: r.response,
        transform_version: shaped.map(|s| s.version),
    }
}
