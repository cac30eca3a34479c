//! The per-request entry point of every listener.
//!
//! Each request gets its id, span and metrics here, then goes either to a hot route dispatched
//! by hand or to the listener's axum router. Hot routes are the ones external senders hit at
//! volume (`POST /v1/events/{type}`): they skip the router's layers of boxed futures and
//! per-request service clones, which cost as much as the rest of the request together.
//! Everything else (health, admin, management, errors for unknown paths) goes through axum.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use http::{Method, Request};
use hyper::body::Incoming;
use tower::ServiceExt;
use tracing::Instrument;

use std::panic::AssertUnwindSafe;

use axum::response::IntoResponse;
use futures_util::FutureExt;

use super::framing::{BodyWatch, WatchedBody};
use super::observe;
use crate::http::error::ApiError;
use crate::ingest::IngestState;
use crate::ingest::heartbeats::{self, HeartbeatState};
use crate::telemetry;

/// A listener's request handler. Cheap to clone (one `Arc`); each connection gets its own
/// copy, which knows the peer's address.
#[derive(Clone, Debug)]
pub struct HttpService {
    inner: Arc<Inner>,
    /// The connection's peer, set by [`HttpService::for_connection`].
    peer: Option<std::net::SocketAddr>,
    /// What the connection's framing says of the body being read.
    watch: Option<Arc<BodyWatch>>,
}

#[derive(Debug)]
struct Inner {
    /// Label of the listener in logs and metrics.
    listener: &'static str,
    /// Ingest and monitor-signal state, on edge listeners: enables the hot routes.
    edge: Option<(IngestState, HeartbeatState)>,
    /// Every other route.
    router: Router,
    /// The listener terminates TLS: its routed requests carry [`OverTls`].
    over_tls: bool,
}

/// Set on the requests of the admin listener: what only operators may read there (the log
/// store's error in `/readyz`) is shown.
#[derive(Debug, Clone, Copy)]
pub struct OnAdmin;

pub use crate::http::extract::client::{OverTls, Peer};

/// A hot route, recognised without the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    /// `POST /v1/events/{event_type}`.
    Event,
    /// `GET|POST /v1/monitors/{key}/heartbeat`.
    Heartbeat,
    /// `GET|POST /v1/monitors/{key}/heartbeat/{signal}`.
    JobSignal,
}

impl Hot {
    fn template(self) -> &'static str {
        match self {
            Hot::Event => "/v1/events/{event}",
            Hot::Heartbeat => "/v1/monitors/{monitor_token}/heartbeat",
            Hot::JobSignal => "/v1/monitors/{monitor_token}/heartbeat/{signal}",
        }
    }
}

fn hot_route(method: &Method, path: &str) -> Option<Hot> {
    if let Some(event_type) = path.strip_prefix("/v1/events/") {
        return (method == Method::POST && !event_type.is_empty() && !event_type.contains('/'))
            .then_some(Hot::Event);
    }
    let rest = path.strip_prefix("/v1/monitors/")?;
    if method != Method::GET && method != Method::POST {
        return None;
    }
    let (key, after) = rest.split_once("/heartbeat")?;
    if key.is_empty() || key.contains('/') {
        return None;
    }
    match after.strip_prefix('/') {
        None if after.is_empty() => Some(Hot::Heartbeat),
        Some(signal) if !signal.is_empty() && !signal.contains('/') => Some(Hot::JobSignal),
        _ => None,
    }
}

impl HttpService {
    /// An edge listener's service: hot routes plus `router`.
    pub fn edge(
        listener: &'static str,
        state: IngestState,
        push: HeartbeatState,
        router: Router,
    ) -> HttpService {
        HttpService {
            inner: Arc::new(Inner {
                listener,
                edge: Some((state, push)),
                router,
                over_tls: listener == "edge_tls",
            }),
            peer: None,
            watch: None,
        }
    }

    /// A service that only routes through `router` (the admin listener).
    pub fn routed(listener: &'static str, router: Router) -> HttpService {
        HttpService {
            inner: Arc::new(Inner {
                listener,
                edge: None,
                router,
                over_tls: false,
            }),
            peer: None,
            watch: None,
        }
    }

    /// This service for one connection from `peer`, whose framing reader publishes what the
    /// bodies declare in `watch`.
    pub fn for_connection(&self, peer: std::net::SocketAddr, watch: Arc<BodyWatch>) -> HttpService {
        HttpService {
            inner: self.inner.clone(),
            peer: Some(peer),
            watch: Some(watch),
        }
    }

    async fn handle(self, req: Request<Incoming>) -> Response {
        let started = Instant::now();
        let request_id = observe::request_id(req.headers());
        let listener = self.inner.listener;
        if let Some(refusal) = host_problem(&req) {
            let mut response = ApiError::bad_request("invalid_host", refusal).into_response();
            observe::finish(listener, None, &mut response, request_id, started);
            return response;
        }
        let hot = match &self.inner.edge {
            Some(_) => hot_route(req.method(), req.uri().path()),
            None => None,
        };
        // A panic answers 500 and is counted like one, instead of dropping the connection
        // (HTTP/1) or the stream (HTTP/2) with nothing recorded.
        let served = AssertUnwindSafe(self.respond(req, hot, request_id.clone()))
            .catch_unwind()
            .await;
        let (route, mut response) = match served {
            Ok(served) => served,
            Err(_) => {
                telemetry::panicked(listener);
                tracing::error!(
                    request_id = request_id.to_str().unwrap_or("-"),
                    "a request handler panicked"
                );
                let route = hot.map_or("panicked", Hot::template);
                (Some(route), ApiError::fault().into_response())
            }
        };
        observe::finish(listener, route, &mut response, request_id, started);
        response
    }

    /// Serves one request; the template of the hot route it took, if any, and the response.
    async fn respond(
        self,
        req: Request<Incoming>,
        hot: Option<Hot>,
        request_id: http::HeaderValue,
    ) -> (Option<&'static str>, Response) {
        let span = tracing::debug_span!(
            "request",
            request_id = request_id.to_str().unwrap_or("-"),
            method = %req.method(),
            path = req.uri().path(),
        );
        let inner = &self.inner;
        let hot = match &inner.edge {
            Some((edge, push)) => hot.map(|h| (edge, push, h)),
            None => None,
        };
        match hot {
            Some((edge, push, hot)) => {
                // The handlers' futures are large: boxed once here, every layer around them
                // (span, request id scope, panic guard, hyper's own) moves a pointer instead
                // of copying kilobytes per request.
                let watch = self.watch.clone();
                let serve: Pin<Box<dyn Future<Output = Response> + Send + '_>> = match hot {
                    Hot::Event => Box::pin(crate::ingest::events::post_event(
                        edge,
                        req.map(|b| WatchedBody::new(b, watch)),
                    )),
                    Hot::Heartbeat | Hot::JobSignal => Box::pin(async move {
                        heartbeats::beat_hot(push, req.uri().path(), req.headers()).await
                    }),
                };
                let response =
                    telemetry::with_request_id(request_id.clone(), serve.instrument(span)).await;
                (Some(hot.template()), response)
            }
            None => {
                let mut req = req;
                if inner.over_tls {
                    req.extensions_mut().insert(OverTls);
                }
                if let Some(peer) = self.peer {
                    req.extensions_mut().insert(Peer(peer));
                }
                if inner.edge.is_none() {
                    req.extensions_mut().insert(OnAdmin);
                }
                let watch = self.watch.clone();
                let routed = Box::pin(
                    inner
                        .router
                        .clone()
                        .oneshot(req.map(|b| Body::new(WatchedBody::new(b, watch)))),
                );
                let response =
                    match telemetry::with_request_id(request_id.clone(), routed.instrument(span))
                        .await
                    {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                (None, response)
            }
        }
    }
}

/// Why a request's `Host` is unacceptable: RFC 9112 §3.2 asks for a 400 when an HTTP/1.1
/// request has none, has two, or has one that is not `uri-host [":" port]` (RFC 3986: no
/// spaces, no user info). HTTP/1.0 may omit it; HTTP/2 carries `:authority`, which hyper checks.
fn host_problem<B>(req: &Request<B>) -> Option<&'static str> {
    if req.version() > http::Version::HTTP_11 {
        return None;
    }
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request needs a Host header")
        }
        (None, _) => None,
        (Some(_), Some(_)) => Some("a request may carry one Host header only"),
        (Some(host), None) if !is_uri_host(host.as_bytes()) => {
            Some("the Host header is not a host name or address with an optional port")
        }
        (Some(_), None) => None,
    }
}

/// Whether `value` is `uri-host [":" port]` (RFC 3986 §3.2.2–3.2.3), or empty (RFC 9112
/// allows an empty Host for targets without an authority).
fn is_uri_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let (host, port) = match value.iter().rposition(|b| *b == b':') {
        // An IPv6 literal holds colons of its own: the port follows its `]`.
        Some(at) if !value.starts_with(b"[") || value[..at].ends_with(b"]") => {
            (&value[..at], Some(&value[at + 1..]))
        }
        _ => (value, None),
    };
    if port.is_some_and(|p| p.len() > 5 || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    match host {
        [b'[', inner @ .., b']'] => {
            !inner.is_empty()
                && inner
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        }
        _ => {
            !host.is_empty()
                && host.iter().all(|b| {
                    b.is_ascii_alphanumeric()
                        // unreserved, sub-delims and pct-encoded: what a reg-name may hold
                        || b"-._~!$&'()*+,;=%".contains(b)
                })
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_routes_are_recognised_exactly() {
        assert_eq!(
            hot_route(&Method::POST, "/v1/events/order.paid"),
            Some(Hot::Event)
        );
        assert_eq!(
            hot_route(&Method::POST, "/v1/events/a%20b"),
            Some(Hot::Event)
        );
        assert!(hot_route(&Method::POST, "/v1/events/").is_none());
        assert!(hot_route(&Method::GET, "/v1/events/order.paid").is_none());
        assert!(hot_route(&Method::POST, "/v1/events/a/b").is_none());
        assert!(hot_route(&Method::POST, "/v1/eventsx").is_none());
        assert_eq!(
            hot_route(&Method::GET, "/v1/monitors/mt_x/heartbeat"),
            Some(Hot::Heartbeat)
        );
        assert_eq!(
            hot_route(&Method::POST, "/v1/monitors/mt_x/heartbeat/0"),
            Some(Hot::JobSignal)
        );
        assert!(hot_route(&Method::DELETE, "/v1/monitors/mt_x/heartbeat").is_none());
        assert!(hot_route(&Method::POST, "/v1/monitors/mt_x").is_none());
        assert!(hot_route(&Method::GET, "/v1/monitors/mt_x/heartbeats").is_none());
        assert!(hot_route(&Method::GET, "/v1/monitors/mt_x/heartbeat/a/b").is_none());
        assert!(hot_route(&Method::GET, "/v1/monitors//heartbeat").is_none());
        assert!(hot_route(&Method::GET, "/v1/monitors/a/b/heartbeat").is_none());
    }

    #[test]
    fn hosts_are_checked_against_rfc_3986() {
        for ok in [
            &b"example.com"[..],
            b"example.com:8443",
            b"127.0.0.1:80",
            b"[::1]:8080",
            b"[2001:db8::1]",
            b"xn--bcher-kva.example",
            b"",
        ] {
            assert!(is_uri_host(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"a b"[..],
            b"user@example.com",
            b"example.com:http",
            b"example.com:123456",
            b"[::1",
            b"ex\\ample.com",
            b"exa\"mple.com",
            b":80",
        ] {
            assert!(!is_uri_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hot_routes_are_documented_routes() -> anyhow::Result<()> {
        let doc = serde_json::to_value(crate::api::doc::document())?;
        for (hot, methods) in [
            (Hot::Event, &["post"][..]),
            (Hot::Heartbeat, &["get", "post"][..]),
            (Hot::JobSignal, &["get", "post"][..]),
        ] {
            for method in methods {
                let documented = &doc["paths"][hot.template()][method];
                assert!(
                    documented.is_object(),
                    "{method} {} is not in the document",
                    hot.template()
                );
            }
        }
        Ok(())
    }
}
