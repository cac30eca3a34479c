//! Traces (OpenTelemetry over OTLP), off unless `[telemetry]` or the `OTEL_*` variables name
//! a collector. When off nothing here runs: callers ask [`on`] (one relaxed load) before they
//! make a span or read a header.
//!
//! One event's trace: the sender's `traceparent` (if it sent one) is the parent of the
//! `ingest` span (the request), whose children are `append` (the wait for the event to be
//! durable in Redis), `expand` (a dispatcher reading it from the stream and finding its
//! targets) and one `attempt` per delivery attempt (target, status, latency). The stream
//! carries the link: the `ingest` span's own `traceparent` is stored with the event (a gateway
//! note in its packed metadata, [`crate::model::event_meta::traceparent`]), so whichever
//! instance reads it, now or at a retry hours later, continues the same trace; each attempt
//! sends the receiver a `traceparent` naming the attempt's span. Every span carries
//! `estafeta.event_id`.
//!
//! Spans are `tracing` spans of the target [`TARGET`], turned into OpenTelemetry spans by
//! tracing-opentelemetry and exported in batches by the SDK's own thread; the log output never
//! sees them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::{OtlpProtocol, Tracing};

/// The `tracing` target of the spans that are exported.
pub const TARGET: &str = "estafeta::traces";

static ON: AtomicBool = AtomicBool::new(false);
/// `sample_ratio` as the bits of an f64.
static RATIO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether traces are exported.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Keeps the exporter running; dropping it sends what is buffered and stops it.
pub struct Guard {
    provider: SdkTracerProvider,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("traces::Guard")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        ON.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("estafeta: traces not all exported at shutdown: {e}");
        }
    }
}

/// The exporter, the sampler and the tracer of `t`. Must run inside the Tokio runtime: the
/// gRPC channel and the HTTP client live on it.
pub fn tracer(t: &Tracing) -> Result<(opentelemetry_sdk::trace::Tracer, Guard), String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = match t.protocol {
        OtlpProtocol::Grpc => {
            let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
            if let Some(e) = &t.endpoint {
                b = b.with_endpoint(e);
            }
            b.build().map_err(|e| e.to_string())?
        }
        OtlpProtocol::Http => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(RuntimeClient::new()?);
            if let Some(e) = &t.endpoint {
                b = b.with_endpoint(e);
            }
            b.build().map_err(|e| e.to_string())?
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Whether a trace is kept is decided once, at ingest ([`decide`]); every span made
        // has a sampled parent from then on.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(t.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("estafeta");
    RATIO.store(t.sample_ratio.to_bits(), Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
    Ok((tracer, Guard { provider }))
}

/// What one request's trace is.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Kept: its spans are made, continuing the sender's trace when it sent one (parsed
    /// here once, for [`set_parent`]).
    Sample(Option<opentelemetry::Context>),
    /// Not kept: no span is made, and this `traceparent` (the sender's, or a new unsampled
    /// one) is stored with the event and passed on to receivers, so a trace the gateway does
    /// not record still reaches them whole. It costs what a string costs.
    Skip(String),
}

/// Whether the trace of a request with `traceparent` is kept: a sender's decision is
/// followed (parent-based), a new trace is kept at `sample_ratio`, decided on its trace id as
/// the specification's TraceIdRatioBased sampler does.
pub fn decide(traceparent: Option<&[u8]>) -> Decision {
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    decide_at(traceparent, ratio)
}

fn decide_at(traceparent: Option<&[u8]>, ratio: f64) -> Decision {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let sender = traceparent
        .and_then(parse)
        .map(|cx| (cx.span().span_context().clone(), cx));
    match sender {
        Some((sc, cx)) if sc.is_sampled() => Decision::Sample(Some(cx)),
        Some((sc, _)) => Decision::Skip(format!("00-{}-{}-00", sc.trace_id(), sc.span_id())),
        None => {
            let ids = RandomIdGenerator::default();
            let trace = ids.new_trace_id();
            let low =
                u64::from_be_bytes(trace.to_bytes()[8..].try_into().unwrap_or([0xff; 8])) >> 1;
            // As TraceIdRatioBased: the trace's lower 63 bits against the ratio's share.
            if (low as f64) < ratio * (1u64 << 63) as f64 {
                Decision::Sample(None)
            } else {
                Decision::Skip(format!("00-{trace}-{}-00", ids.new_span_id()))
            }
        }
    }
}

/// Whether a stored `traceparent` belongs to a kept trace (its spans are made).
pub fn sampled(traceparent: &[u8]) -> bool {
    // `00-<32 hex>-<16 hex>-<2 hex flags>`: the sampled flag is the low bit of the last digit.
    traceparent.len() == 55
        && traceparent
            .last()
            .and_then(|d| (*d as char).to_digit(16))
            .is_some_and(|d| d & 1 == 1)
}

/// The context of a W3C `traceparent` value; `None` when it is malformed.
fn parse(traceparent: &[u8]) -> Option<opentelemetry::Context> {
    let value = std::str::from_utf8(traceparent).ok()?;
    let cx = TraceContextPropagator::new().extract(&OneHeader(value));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` continue the trace of `traceparent` (a W3C header value); a missing or
/// malformed one leaves it a new trace.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&[u8]>) {
    if let Some(cx) = traceparent.and_then(parse) {
        set_parent(span, cx);
    }
}

/// Makes `span` a child of `cx`.
pub fn set_parent(span: &tracing::Span, cx: opentelemetry::Context) {
    // Fails only when the span is disabled (traces off): nothing to continue then.
    let _ = span.set_parent(cx);
}

/// `span`'s own `traceparent`, for what continues its trace (the stored event, a delivery).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// One `traceparent` header as the propagator reads it.
struct OneHeader<'a>(&'a str);

impl opentelemetry::propagation::Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The OTLP/HTTP exporter's client: hyper on the gateway's runtime. The SDK exports from a
/// thread of its own, where no runtime runs, so each request is spawned onto the runtime the
/// exporter was built in and awaited from there.
#[derive(Debug)]
struct RuntimeClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    runtime: tokio::runtime::Handle,
}

/// Longest wait for the collector, and the largest answer read from it.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 4 * 1024 * 1024;

impl RuntimeClient {
    fn new() -> Result<RuntimeClient, String> {
        let tls = crate::model::target_tls::default_client_config()
            .map_err(|e| format!("the collector's TLS: {e}"))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(RuntimeClient {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build(https),
            runtime: tokio::runtime::Handle::current(),
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let sent = self.client.request(request.map(Full::new));
        let exchange = async move {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, sent)
                .await
                .map_err(|_| "the collector did not answer in time".to_owned())?
                .map_err(|e| {
                    let mut text = e.to_string();
                    let mut cause = std::error::Error::source(&e);
                    while let Some(c) = cause {
                        text.push_str(": ");
                        text.push_str(&c.to_string());
                        cause = c.source();
                    }
                    text
                })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>(http::Response::from_parts(parts, body))
        };
        match self.runtime.spawn(exchange).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.to_string().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_kept_as_its_sender_says_or_at_the_ratio() {
        let sampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(matches!(
            decide_at(Some(sampled), 0.0),
            Decision::Sample(Some(_))
        ));
        assert!(matches!(
            decide_at(Some(unsampled), 1.0),
            Decision::Skip(tp) if tp.as_bytes() == unsampled
        ));
        assert!(matches!(decide_at(None, 1.0), Decision::Sample(None)));
        assert!(matches!(
            decide_at(Some(b"garbage"), 1.0),
            Decision::Sample(None)
        ));
        let Decision::Skip(new) = decide_at(None, 0.0) else {
            panic!("a ratio of 0 keeps nothing");
        };
        assert!(!sampled_flag_set(&new) && new.len() == 55, "{new}");
        assert!(crate::traces::sampled(sampled) && !crate::traces::sampled(unsampled));
        assert!(!crate::traces::sampled(b"00-zz"));
        // About a tenth at 0.1.
        let kept = (0..20_000)
            .filter(|_| matches!(decide_at(None, 0.1), Decision::Sample(_)))
            .count();
        assert!((1_600..2_400).contains(&kept), "{kept}");
    }

    fn sampled_flag_set(tp: &str) -> bool {
        sampled(tp.as_bytes())
    }

    #[test]
    fn a_malformed_traceparent_starts_no_trace() {
        let carrier = OneHeader("00-xyz-1-01");
        let cx = TraceContextPropagator::new().extract(&carrier);
        assert!(!cx.span().span_context().is_valid());
        let carrier = OneHeader("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let cx = TraceContextPropagator::new().extract(&carrier);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
