//! Per-request observability, shared by every listener: a request id (the client's
//! `X-Request-Id` when it is sane, else a new one) echoed in the response and named by every
//! warning or error logged while serving the request, and the request counter and latency
//! histogram labelled by route template.
//!
//! The id travels in a task-local ([`crate::telemetry::current_request_id`]); a per-request
//! span exists only at debug level, because formatting one for every request costs as much at
//! info level as the rest of the request's bookkeeping.
//!
//! Routes served by the axum router learn their template only after routing, so [`tag_route`]
//! (a route layer) copies it into the response, where [`finish`] reads it; unmatched paths count
//! as `unmatched`. Hot routes dispatched by hand name their template themselves.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderValue};

use crate::telemetry;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The route template of a request the router handled, carried in the response's extensions.
#[derive(Clone)]
struct RouteTemplate(MatchedPath);

/// A per-process random prefix, so ids from several instances do not collide.
static ID_PREFIX: LazyLock<String> = LazyLock::new(|| {
    let mut b = [0u8; 5];
    let _ = getrandom::fill(&mut b);
    crate::crypto::hex(&b)
});
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request's id: the client's when it is 1 to 64 visible characters, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        if !v.is_empty() && v.len() <= 64 && v.as_bytes().iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{n:x}", *ID_PREFIX);
    HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("-"))
}

/// Records the finished request and echoes its id. `route` is the template of a hot route;
/// `None` reads the template [`tag_route`] left in the response.
pub fn finish(
    listener: &'static str,
    route: Option<&'static str>,
    response: &mut Response,
    request_id: HeaderValue,
    started: Instant,
) {
    let status = response.status().as_u16();
    match route {
        Some(r) => telemetry::hot_request(listener, r, status, started.elapsed()),
        None => {
            let tagged = response.extensions_mut().remove::<RouteTemplate>();
            let route = tagged.map_or("unmatched".into(), |t| t.0.as_str().to_owned().into());
            telemetry::http_request(listener, route, status, started.elapsed());
        }
    }
    response.headers_mut().insert(REQUEST_ID, request_id);
}

/// Route layer: remembers the matched route template for [`finish`].
pub async fn tag_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(req).await;
    if let Some(m) = matched {
        response.extensions_mut().insert(RouteTemplate(m));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let mut h = HeaderMap::new();
        let a = request_id(&h);
        let b = request_id(&h);
        assert_ne!(a, b);
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
