//! What of an attempt's headers is kept (`dispatch.attempt_headers`): the request as sent,
//! with its credentials redacted, and the response as received, bounded, so an operator can
//! read why a receiver refused a delivery without the record growing without limit.

pub use crate::config::KeepHeaders;
use crate::model::TargetAuth;
use crate::model::delivery::AttemptHeaders;
use crate::store::Target;
use http::HeaderMap;

/// Headers kept per side of an attempt.
const MAX_HEADERS: usize = 32;
/// Bytes kept of one header value.
const MAX_VALUE: usize = 256;
/// What a redacted value reads.
pub const REDACTED: &str = "[redacted]";

/// Whether a header's value is a credential, never kept: the target's own authentication
/// header, and the standard ones that carry credentials or sessions either way.
fn is_secret(name: &str, target: &Target) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || matches!(&target.auth, Some(TargetAuth::Header { name: own, .. }) if own.eq_ignore_ascii_case(name))
}

/// One side's headers as kept: in order, at most [`MAX_HEADERS`], values cut at
/// [`MAX_VALUE`] bytes and made visible text (what a receiver sends may be any bytes).
fn side(map: &HeaderMap, target: &Target) -> Vec<(String, String)> {
    map.iter()
        .take(MAX_HEADERS)
        .map(|(name, value)| {
            let name = name.as_str();
            let value = if is_secret(name, target) {
                REDACTED.to_owned()
            } else {
                let bytes = value.as_bytes();
                let cut = &bytes[..bytes.len().min(MAX_VALUE)];
                crate::model::text::visible_text(cut).replace(['\r', '\n'], " ")
            };
            (name.to_owned(), value)
        })
        .collect()
}

/// The headers an attempt keeps: what was `sent` and what was `received` (no response: none).
pub fn kept(sent: &HeaderMap, received: Option<&HeaderMap>, target: &Target) -> AttemptHeaders {
    AttemptHeaders {
        request: side(sent, target),
        response: received.map(|r| side(r, target)).unwrap_or_default(),
    }
}
