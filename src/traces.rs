//! Traces (OpenTelemetry over OTLP), off unless `[telemetry]` or the `OTEL_*` variables name
//! a collector. When off nothing here runs: callers ask [`on`] (one relaxed load) before they
//! make a span or read a header.
//!
//! One event's trace: the sender's `traceparent` (if it sent one) is the parent of the
//! `ingest` span (the request), whose children are one `attempt` per delivery attempt
//! (target, status, latency). Work done at once for many events is one span, as
//! OpenTelemetry's messaging conventions do batches: the child of the first traced event's
//! `ingest`, linked to the `ingest` of every traced event in it, so each event's trace leads
//! to it. That is the Redis write (`append`, one command for a batch of events), a
//! dispatcher's read (`expand`: reading entries from the stream and finding their events'
//! targets) and a batched target's request (one `attempt` for many events). The stream
//! carries the link: the `ingest` span's own `traceparent` is stored with the event (a gateway
//! note in its packed metadata, [`crate::model::event_meta::traceparent`]), so whichever
//! instance reads it, now or at a retry hours later, continues the same trace; each attempt
//! sends the receiver a `traceparent` naming the attempt's span. Every span but a batch's
//! carries `estafeta.event_id`; a batch's carries its size.
//!
//! Spans are made with the OpenTelemetry API itself ([`Span`]), not as `tracing` spans
//! through tracing-opentelemetry: that bridge cost each span its place in the subscriber's
//! registry, a per-layer filter pass on every poll and a field visitor: most of the CPU
//! that tracing added to ingest at `sample_ratio = 1.0` (README, benchmarks). The SDK
//! exports them in batches from a thread of its own.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::config::{OtlpProtocol, Tracing};

static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();
static ON: AtomicBool = AtomicBool::new(false);
/// `sample_ratio` as the bits of an f64.
static RATIO: AtomicU64 = AtomicU64::new(0);

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

/// Spans the exporter may hold before it drops new ones, unless `OTEL_BSP_MAX_QUEUE_SIZE`
/// says: the SDK's 2,048 is a tenth of a second of a busy gateway's spans, less than a
/// contended machine may leave the export thread waiting for a core.
const QUEUE: usize = 65_536;

/// Starts exporting as `t` says: the exporter, the sampler and the tracer [`Span`] uses. Must
/// run inside the Tokio runtime (the gRPC channel and the HTTP client live on it), once.
pub fn start(t: &Tracing) -> Result<Guard, String> {
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
    let mut batch = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
        batch = batch.with_max_queue_size(QUEUE);
    }
    let exporter = Counted {
        inner: exporter,
        started: std::time::Instant::now(),
        warned_at: AtomicU64::new(0),
    };
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // Whether a trace is kept is decided once, at ingest ([`decide`]); every span made
        // has a sampled parent from then on.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        // A batch's `append` links to every event of it (the SDK keeps 128 by default).
        .with_max_links_per_span(crate::config::MAX_BATCH_EVENTS as u32)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(t.service_name.clone())
                .build(),
        )
        .build();
    if TRACER.set(provider.tracer("estafeta")).is_err() {
        return Err("traces are already exported by this process".into());
    }
    RATIO.store(t.sample_ratio.to_bits(), Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
    Ok(Guard { provider })
}

/// The OTLP exporter, counted (`estafeta_trace_spans_total{outcome}`) and quieter: while
/// exports fail it warns once a minute, where the SDK would log every failed batch (a hundred
/// lines a second from a busy gateway whose collector is down).
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::SpanExporter,
    started: std::time::Instant,
    /// When it last warned: seconds since `started`, plus one (0: never).
    warned_at: AtomicU64,
}

impl opentelemetry_sdk::trace::SpanExporter for Counted {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let spans = batch.len() as u64;
        let sent = self.inner.export(batch);
        async move {
            let failed = sent.await.err();
            let outcome = if failed.is_some() {
                "failed"
            } else {
                "exported"
            };
            metrics::counter!("estafeta_trace_spans_total", "outcome" => outcome).increment(spans);
            if let Some(e) = failed {
                // Seconds since the exporter started, plus one: 0 is "never warned".
                let now = self.started.elapsed().as_secs() + 1;
                let last = self.warned_at.load(Ordering::Relaxed);
                if (last == 0 || now >= last + 60)
                    && self
                        .warned_at
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(spans, error = %e, "traces: spans could not be exported (failures in the next minute are only counted: estafeta_trace_spans_total{{outcome=\"failed\"}})");
                }
            }
            // Failure is counted and told here; the SDK would log it again per batch.
            Ok(())
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// What one request's trace is.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Kept: its spans are made, continuing the sender's trace when it sent one (parsed
    /// here once, for [`Span::start`]).
    Sample(Option<Context>),
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
    match traceparent.and_then(parse) {
        Some(sc) if sc.is_sampled() => Decision::Sample(Some(remote(sc))),
        Some(sc) => Decision::Skip(format_traceparent(sc.trace_id(), sc.span_id(), 0)),
        None => {
            let ids = RandomIdGenerator::default();
            let trace = ids.new_trace_id();
            let low =
                u64::from_be_bytes(trace.to_bytes()[8..].try_into().unwrap_or([0xff; 8])) >> 1;
            // As TraceIdRatioBased: the trace's lower 63 bits against the ratio's share.
            if (low as f64) < ratio * (1u64 << 63) as f64 {
                Decision::Sample(None)
            } else {
                Decision::Skip(format_traceparent(trace, ids.new_span_id(), 0))
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

/// The context of a W3C `traceparent` value; `None` when it is malformed or invalid, which
/// the specification says to ignore. Parsed here rather than by the SDK's propagator, which
/// goes through the current context and a split into a vector: this runs for every recorded
/// expansion and attempt.
fn parse(traceparent: &[u8]) -> Option<SpanContext> {
    // `vv-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, lowercase; a later version may
    // append `-` and more, version 00 may not, version ff is invalid.
    let tp = traceparent;
    let dashes = tp.get(2) == Some(&b'-') && tp.get(35) == Some(&b'-') && tp.get(52) == Some(&b'-');
    let version = hex(tp.get(0..2)?)?;
    let length_fits = match version {
        0 => tp.len() == 55,
        0xff => false,
        _ => tp.len() == 55 || tp.get(55) == Some(&b'-'),
    };
    if !dashes || !length_fits {
        return None;
    }
    let trace = TraceId::from(hex(&tp[3..35])?);
    let span = SpanId::from(u64::try_from(hex(&tp[36..52])?).ok()?);
    let flags = u8::try_from(hex(&tp[53..55])?).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    // Flags other than sampled are not ours to pass on (W3C trace context, "other flags").
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    Some(SpanContext::new(
        trace,
        span,
        flags,
        true,
        TraceState::default(),
    ))
}

/// A context whose current span is `sc`, for a span to be made inside it.
fn remote(sc: SpanContext) -> Context {
    Context::new().with_remote_span_context(sc)
}

/// The value of lowercase hex digits (at most 32).
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(v))
    })
}

/// `00-<trace>-<span>-<flags>`, written without the formatting machinery (it is written for
/// every recorded ingest and attempt).
fn format_traceparent(trace: TraceId, span: SpanId, flags: u8) -> String {
    use crate::crypto::push_hex;
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, &trace.to_bytes());
    out.push('-');
    push_hex(&mut out, &span.to_bytes());
    out.push('-');
    push_hex(&mut out, &[flags]);
    out
}

/// A span being recorded, ended (and queued for export) when dropped. Made only for a kept
/// trace while traces are exported: every constructor answers `None` otherwise.
#[derive(Debug)]
pub struct Span(Context);

/// Where a span is, for work done later on behalf of several traces to link to (the one
/// Redis write of a batch of events).
#[derive(Debug, Clone)]
pub struct Link(SpanContext);

impl Link {
    /// The span a stored event's packed metadata names (its gateway note), when its trace
    /// is kept.
    pub fn of_event_meta(meta: Option<&[u8]>) -> Option<Link> {
        meta.and_then(crate::model::event_meta::traceparent)
            .and_then(Link::of_traceparent)
    }

    /// The span a stored `traceparent` names, when its trace is kept.
    pub fn of_traceparent(traceparent: &[u8]) -> Option<Link> {
        if !sampled(traceparent) {
            return None;
        }
        parse(traceparent).map(Link)
    }
}

impl Span {
    /// A span of a trace kept at ingest: the child of the sender's span (`parent`), or the
    /// root of a new trace.
    pub fn start(
        name: &'static str,
        kind: SpanKind,
        parent: Option<Context>,
        attributes: Vec<KeyValue>,
    ) -> Option<Span> {
        make(name, kind, &parent.unwrap_or_default(), attributes)
    }

    /// A span continuing the trace of a stored `traceparent`, when that trace is kept.
    pub fn continuing(
        name: &'static str,
        kind: SpanKind,
        traceparent: &[u8],
        attributes: Vec<KeyValue>,
    ) -> Option<Span> {
        if !on() || !sampled(traceparent) {
            return None;
        }
        make(name, kind, &remote(parse(traceparent)?), attributes)
    }

    /// A span for work done at once for several traces (one Redis write of many events):
    /// the child of the first of `links`, linked to every one of them. `None` without links.
    pub fn batch(
        name: &'static str,
        kind: SpanKind,
        links: Vec<Link>,
        attributes: Vec<KeyValue>,
    ) -> Option<Span> {
        let parent = remote(links.first()?.0.clone());
        let links = links
            .into_iter()
            .map(|l| opentelemetry::trace::Link::with_context(l.0))
            .collect();
        make_linked(name, kind, &parent, attributes, links)
    }

    /// This span, for a [`Span::batch`] to link to.
    pub fn link(&self) -> Link {
        Link(self.0.span().span_context().clone())
    }

    /// Adds an attribute. Once per key: the SDK keeps every value it is given.
    pub fn set(&self, attribute: KeyValue) {
        self.0.span().set_attribute(attribute);
    }

    /// Marks the span failed, with what went wrong if there is something to say.
    pub fn fail(&self, description: impl Into<std::borrow::Cow<'static, str>>) {
        self.0.span().set_status(Status::error(description));
    }

    /// The span's own `traceparent`, for what continues its trace (the stored event, a
    /// delivery's request).
    pub fn traceparent(&self) -> String {
        let span = self.0.span();
        let sc = span.span_context();
        format_traceparent(sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

fn make(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
) -> Option<Span> {
    make_linked(name, kind, parent, attributes, Vec::new())
}

fn make_linked(
    name: &'static str,
    kind: SpanKind,
    parent: &Context,
    attributes: Vec<KeyValue>,
    links: Vec<opentelemetry::trace::Link>,
) -> Option<Span> {
    let tracer = TRACER.get().filter(|_| on())?;
    let mut builder = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes);
    if !links.is_empty() {
        builder = builder.with_links(links);
    }
    let span = builder.start_with_context(tracer, parent);
    Some(Span(Context::new().with_span(span)))
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
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

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
        let context = |tp: &str| parse(tp.as_bytes());
        let malformed = [
            "",
            "00-xyz-1-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for tp in malformed {
            assert!(context(tp).is_none(), "{tp:?} was taken");
        }
        // Every byte value in every position of a valid value either parses as the SDK's
        // propagator reads it or is refused.
        let valid = *b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for at in 0..valid.len() {
            for byte in 0..=255u8 {
                let mut tp = valid;
                tp[at] = byte;
                let Some(ours) = parse(&tp) else {
                    continue;
                };
                let text = std::str::from_utf8(&tp).expect("only hex digits parse");
                let sdk = TraceContextPropagator::new().extract(&OneHeader(text));
                assert_eq!(&ours, sdk.span().span_context(), "{text}");
            }
        }
        // A later version may carry more fields; its first four are read.
        let later = context("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-what");
        let later = later.expect("a later version is read");
        assert!(later.is_sampled() && later.is_remote());
        let sc = context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("a valid traceparent");
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            format_traceparent(sc.trace_id(), sc.span_id(), 1),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }
}
