//! Operational events: what the gateway tells a tenant about its own targets and deliveries.
//! Each is an ordinary event of a reserved type (`estafeta.…`) appended to the tenant's own
//! stream, so a target whose `events` name it receives it signed, retried, filtered and
//! recoverable like any other; the dispatcher never delivers one to the target it is about
//! ([`about_target`]). Tenants cannot send these types themselves.
//!
//! [`crate::queue::notices`] appends them. A notice is told once, best effort: written when what it tells happens, and only logged
//! when Redis cannot take it (what it tells is recorded in the target and the delivery
//! already).

use std::time::Duration;

use serde_json::Value as Json;

/// A target was disabled: `{target_id, trigger, reason, failing_since}`.
pub const TARGET_DISABLED: &str = "estafeta.target.disabled";
/// A target was enabled again: `{target_id, trigger}`.
pub const TARGET_ENABLED: &str = "estafeta.target.enabled";
/// A target's breaker opened (from closed): `{target_id, until, opens}`.
pub const BREAKER_OPENED: &str = "estafeta.target.breaker_opened";
/// A target's breaker closed: `{target_id}`.
pub const BREAKER_CLOSED: &str = "estafeta.target.breaker_closed";
/// A delivery failed its fourth attempt (at most one per target and hour).
pub const DELIVERY_FAILING: &str = "estafeta.delivery.failing";
/// A delivery ran out of attempts and went to the error queue.
pub const DELIVERY_EXHAUSTED: &str = "estafeta.delivery.exhausted";
/// A delivery succeeded after four or more failed attempts.
pub const DELIVERY_RECOVERED: &str = "estafeta.delivery.recovered";

/// The attempt after which a delivery is `failing` (and after which its success is a
/// recovery).
pub const FAILING_AFTER: u32 = 4;

/// How often one target may be the subject of `estafeta.delivery.failing`.
pub const FAILING_EVERY: Duration = Duration::from_secs(3600);

/// Whether `event_type` is reserved for the gateway's own events (`estafeta.`, any case).
pub fn is_reserved(event_type: &str) -> bool {
    event_type
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case("estafeta."))
}

/// The target an operational event is about, read from its body; `None` for any other event.
pub fn about_target(event_type: &str, body: &[u8]) -> Option<String> {
    if !is_reserved(event_type) {
        return None;
    }
    let v: Json = serde_json::from_slice(body).ok()?;
    v.get("target_id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estafeta_prefix_is_reserved_in_any_case() {
        assert!(is_reserved("estafeta.target.disabled"));
        assert!(is_reserved("Estafeta.x"));
        assert!(is_reserved("ESTAFETA.ping"));
        assert!(!is_reserved("estafeta"));
        assert!(!is_reserved("estafetas.x"));
        assert!(!is_reserved("monitor.down"));
        assert!(!is_reserved("é"));
    }

    #[test]
    fn only_operational_events_are_about_a_target() {
        let body = br#"{"target_id": "tgt_1", "trigger": "automatic"}"#;
        assert_eq!(
            about_target(TARGET_DISABLED, body),
            Some("tgt_1".to_owned())
        );
        assert_eq!(about_target("order.paid", body), None);
        assert_eq!(about_target(TARGET_DISABLED, b"\x00\xff not json"), None);
        assert_eq!(about_target(TARGET_DISABLED, br#"{"target_id": 5}"#), None);
    }
}
