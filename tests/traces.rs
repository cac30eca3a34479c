//! Traces end to end, with the binary as users run it: a test collector (OTLP over HTTP with
//! protobuf bodies, or over gRPC, decoded with the protocol's own types) receives the spans
//! of one event,
//! `ingest` → `append`, `expand`, `attempt`, in the sender's trace, and the receiver gets a
//! `traceparent` that continues it from the attempt's span. Without a `traceparent` the event
//! starts a trace of its own, and the receiver continues that one. A Redis write of many
//! events is one `append` span, a dispatcher's read of many one `expand` span, and a batched
//! target's request one `attempt` span, each linked to every event's `ingest`. An event
//! replayed from the log store, gone from Redis, is still in its trace.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use support::http::Request;
use support::process::Served;
use support::sink::Sink;
use support::{ADMIN_TOKEN, RedisServer, eventually};
use tokio::net::TcpListener;

/// One exported span, as the collector decoded it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    service: String,
    /// The spans it links to: (trace id, span id).
    links: Vec<(String, String)>,
}

/// An OTLP/HTTP collector on loopback that keeps every span it is sent.
struct Collector {
    addr: std::net::SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            Ok::<_, Infallible>(match path.as_str() {
                                "/v1/traces" => {
                                    let decoded = ExportTraceServiceRequest::decode(body).unwrap();
                                    kept.lock().unwrap().extend(spans_of(decoded));
                                    hyper::Response::builder()
                                        .status(200)
                                        .header("content-type", "application/x-protobuf")
                                        .body(Full::new(Bytes::new()).boxed())
                                        .unwrap()
                                }
                                GRPC_EXPORT => {
                                    kept.lock().unwrap().extend(spans_of(grpc_request(&body)));
                                    grpc_ok()
                                }
                                _ => hyper::Response::builder()
                                    .status(404)
                                    .body(Full::new(Bytes::new()).boxed())
                                    .unwrap(),
                            })
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// OTLP/gRPC's one method for traces.
const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The request of a gRPC call: one message, after gRPC's prefix (an uncompressed flag and
/// its length, big-endian).
fn grpc_request(body: &[u8]) -> ExportTraceServiceRequest {
    assert_eq!(body[0], 0, "an uncompressed message");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    assert_eq!(body.len(), 5 + len, "one message");
    ExportTraceServiceRequest::decode(&body[5..]).unwrap()
}

/// A gRPC success: an empty `ExportTraceServiceResponse` and `grpc-status: 0` in the trailers.
fn grpc_ok() -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let frames = [
        Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
        Ok(Frame::trailers(trailers)),
    ];
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Posts events `{"n": n}` for each `n` of `ns`, each accepted.
async fn post_events(served: &Served, token: &str, ns: std::ops::Range<u32>) {
    for n in ns {
        let sent = Request::new("POST", "/v1/events/order.paid")
            .bearer(token)
            .body(format!("{{\"n\":{n}}}").into_bytes())
            .send_plain(served.addrs.plain)
            .await
            .unwrap();
        assert_eq!(sent.status, 202, "{}", sent.text());
    }
}

/// Waits (at most 15 s) until the admin listener's `/metrics` shows `series`.
async fn metrics_show(served: &Served, series: &str) {
    eventually(Duration::from_secs(15), series, || async {
        Request::get("/metrics")
            .send_plain(served.addrs.admin)
            .await
            .unwrap()
            .text()
            .contains(series)
    })
    .await;
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| text(&a.value))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for s in scope.spans {
                let mut keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
                keys.sort_unstable();
                let before = keys.len();
                keys.dedup();
                assert_eq!(
                    before,
                    keys.len(),
                    "a key twice in span {}: {keys:?}",
                    s.name
                );
                out.push(Span {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(&a.value)))
                        .collect(),
                    service: service.clone(),
                    links: s
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    out
}

/// A tenant of `served` with one target made from `spec`: (tenant id, token, target id).
async fn tenant_with_target(served: &Served, spec: serde_json::Value) -> (String, String, String) {
    let created = Request::new("POST", "/admin/tenants")
        .bearer(ADMIN_TOKEN)
        .json(&json!({"name": "traced"}))
        .send_plain(served.addrs.admin)
        .await
        .unwrap()
        .json();
    let tenant = created["id"].as_str().unwrap().to_owned();
    let target = Request::new("POST", &format!("/admin/tenants/{tenant}/targets"))
        .bearer(ADMIN_TOKEN)
        .json(&spec)
        .send_plain(served.addrs.admin)
        .await
        .unwrap();
    assert_eq!(target.status, 201, "{}", target.text());
    (
        tenant,
        created["token"].as_str().unwrap().to_owned(),
        target.json()["id"].as_str().unwrap().to_owned(),
    )
}

/// A gateway (role all) exporting every trace to `collector` over OTLP/HTTP, every 100 ms
/// (the SDK's own variable; its default is 5 s).
async fn traced_gateway(collector: &Collector, prefix: &str) -> Served {
    traced_gateway_over(collector, prefix, "http").await
}

/// [`traced_gateway`] over `protocol` (`http` or `grpc`).
async fn traced_gateway_over(collector: &Collector, prefix: &str, protocol: &str) -> Served {
    let path = if protocol == "http" { "/v1/traces" } else { "" };
    let extra = format!(
        "[telemetry]\notlp_endpoint = \"http://{}{path}\"\notlp_protocol = \"{protocol}\"\nsample_ratio = 1.0\nservice_name = \"estafeta-test\"\n",
        collector.addr
    );
    Served::on(
        &RedisServer::shared().url(),
        prefix,
        &extra,
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await
}

const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

/// Posts `{"n":1}` with the sender's `traceparent` (sampled); returns the event id.
async fn post_in_senders_trace(served: &Served, token: &str) -> String {
    let sent = Request::new("POST", "/v1/events/order.paid")
        .bearer(token)
        .header(
            "traceparent",
            &format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01"),
        )
        .body(b"{\"n\":1}".to_vec())
        .send_plain(served.addrs.plain)
        .await
        .unwrap();
    assert_eq!(sent.status, 202, "{}", sent.text());
    sent.json()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn one_events_spans_reach_the_collector_and_the_receiver_continues_the_senders_trace() {
    let collector = Collector::start().await;
    let sink = Sink::start().await;
    let served = traced_gateway(&collector, "traces").await;
    let hook = json!({"url": sink.url("/hook"), "events": ["*"]});
    let (tenant, token, target_id) = tenant_with_target(&served, hook).await;

    let event = post_in_senders_trace(&served, &token).await;

    eventually(Duration::from_secs(15), "the delivery", || async {
        sink.count("/hook") == 1
    })
    .await;
    let received = sink.received("/hook")[0]
        .header("traceparent")
        .expect("the delivery carries a traceparent");
    let parts: Vec<&str> = received.split('-').collect();
    assert_eq!(parts.len(), 4, "{received}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", SENDER_TRACE, "01"));
    assert_ne!(
        parts[2], SENDER_SPAN,
        "the attempt's own span, not the sender's"
    );

    let named = |spans: &[Span], name: &str| -> Option<Span> {
        spans
            .iter()
            .find(|s| s.name == name && s.attributes.get("estafeta.event_id") == Some(&event))
            .cloned()
    };
    // The batch's write and the dispatcher's read link to the ingest of each of their events.
    let linked = |spans: &[Span], name: &str, ingest: &Span| -> Option<Span> {
        let me = (ingest.trace_id.clone(), ingest.span_id.clone());
        spans
            .iter()
            .find(|s| s.name == name && s.links.contains(&me))
            .cloned()
    };
    let append_of = |spans: &[Span], ingest: &Span| linked(spans, "append", ingest);
    let expand_of = |spans: &[Span], ingest: &Span| linked(spans, "expand", ingest);
    eventually(Duration::from_secs(15), "the four spans", || async {
        let spans = collector.spans();
        ["ingest", "attempt"]
            .iter()
            .all(|n| named(&spans, n).is_some())
            && named(&spans, "ingest")
                .is_some_and(|i| append_of(&spans, &i).is_some() && expand_of(&spans, &i).is_some())
    })
    .await;
    let spans = collector.spans();
    let ingest = named(&spans, "ingest").unwrap();
    assert_eq!(ingest.trace_id, SENDER_TRACE, "{ingest:?}");
    assert_eq!(ingest.parent_span_id, SENDER_SPAN);
    assert_eq!(ingest.service, "estafeta-test");
    assert_eq!(ingest.attributes["estafeta.tenant_id"], tenant);
    assert_eq!(ingest.attributes["http.response.status_code"], "202");
    let append = append_of(&spans, &ingest).unwrap();
    assert_eq!(append.attributes["estafeta.batch_events"], "1");
    assert_eq!(append.links.len(), 1, "{append:?}");
    let expand = expand_of(&spans, &ingest).unwrap();
    assert_eq!(expand.attributes["estafeta.batch_events"], "1");
    assert_eq!(expand.attributes["estafeta.deliveries"], "1");
    assert_eq!(expand.links.len(), 1, "{expand:?}");
    for (child, s) in [
        ("append", append),
        ("expand", expand),
        ("attempt", named(&spans, "attempt").unwrap()),
    ] {
        assert_eq!(s.trace_id, SENDER_TRACE, "{s:?}");
        assert_eq!(
            s.parent_span_id, ingest.span_id,
            "{child} is a child of ingest"
        );
    }
    let attempt = named(&spans, "attempt").unwrap();
    assert_eq!(
        attempt.span_id, parts[2],
        "the receiver continues from the attempt"
    );
    assert_eq!(attempt.attributes["estafeta.target_id"], target_id);
    assert_eq!(attempt.attributes["http.response.status_code"], "200");

    // Without a traceparent, the event's trace is its own, and the receiver continues it.
    let sent = Request::new("POST", "/v1/events/order.paid")
        .bearer(&token)
        .body(b"{\"n\":2}".to_vec())
        .send_plain(served.addrs.plain)
        .await
        .unwrap();
    assert_eq!(sent.status, 202);
    let second = sent.json()["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(15), "the second delivery", || async {
        sink.count("/hook") == 2
    })
    .await;
    let received = sink.received("/hook")[1].header("traceparent").unwrap();
    eventually(
        Duration::from_secs(15),
        "the second event's ingest span",
        || async {
            collector.spans().iter().any(|s| {
                s.name == "ingest" && s.attributes.get("estafeta.event_id") == Some(&second)
            })
        },
    )
    .await;
    let own = collector
        .spans()
        .into_iter()
        .find(|s| s.name == "ingest" && s.attributes.get("estafeta.event_id") == Some(&second))
        .unwrap();
    metrics_show(&served, "estafeta_trace_spans_total{outcome=\"exported\"}").await;
    assert_eq!(own.parent_span_id, "", "a root span");
    assert_ne!(own.trace_id, SENDER_TRACE);
    assert!(
        received.starts_with(&format!("00-{}-", own.trace_id)),
        "{received}"
    );

    // A sender's retry (the same idempotency key): its ingest span names the event stored
    // the first time, once, and says it was a duplicate.
    let mut firsts = Vec::new();
    for _ in 0..2 {
        let sent = Request::new("POST", "/v1/events/order.paid")
            .bearer(&token)
            .header("idempotency-key", "traced-retry")
            .body(b"{\"n\":3}".to_vec())
            .send_plain(served.addrs.plain)
            .await
            .unwrap();
        assert_eq!(sent.status, 202, "{}", sent.text());
        firsts.push(sent.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(firsts[0], firsts[1]);
    eventually(
        Duration::from_secs(15),
        "the repeat's ingest span",
        || async {
            collector.spans().iter().any(|s| {
                s.name == "ingest"
                    && s.attributes.get("estafeta.duplicate").map(String::as_str) == Some("true")
            })
        },
    )
    .await;
    let ingests: Vec<_> = collector
        .spans()
        .into_iter()
        .filter(|s| s.name == "ingest" && s.attributes.get("estafeta.event_id") == Some(&firsts[0]))
        .collect();
    assert_eq!(ingests.len(), 2, "both requests name the stored event");
    assert_eq!(
        ingests
            .iter()
            .filter(|s| s.attributes.contains_key("estafeta.duplicate"))
            .count(),
        1
    );

    // Many requests at once share Redis writes: each write is one `append` span, the child of
    // its first event's ingest and linked to every event's ingest; each ingest is linked from
    // exactly one write.
    let sent = futures_util::future::join_all((0..60).map(|n| {
        let request = Request::new("POST", "/v1/events/order.paid")
            .bearer(&token)
            .body(format!("{{\"burst\":{n}}}").into_bytes());
        let plain = served.addrs.plain;
        async move { request.send_plain(plain).await }
    }))
    .await;
    let burst: Vec<String> = sent
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            assert_eq!(r.status, 202, "{}", r.text());
            r.json()["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let burst_ingests = |spans: &[Span]| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| {
                s.name == "ingest"
                    && s.attributes
                        .get("estafeta.event_id")
                        .is_some_and(|id| burst.contains(id))
            })
            .cloned()
            .collect()
    };
    eventually(Duration::from_secs(15), "the burst's spans", || async {
        let spans = collector.spans();
        let ingests = burst_ingests(&spans);
        ingests.len() == 60
            && ingests
                .iter()
                .all(|i| append_of(&spans, i).is_some() && expand_of(&spans, i).is_some())
    })
    .await;
    // The dispatcher reads them in a few reads, and each read is one `expand` span likewise.
    // Every event of this gateway is traced, so a batch's links are all of its events.
    let spans = collector.spans();
    for ingest in burst_ingests(&spans) {
        let me = (ingest.trace_id.clone(), ingest.span_id.clone());
        for name in ["append", "expand"] {
            let batches: Vec<&Span> = spans
                .iter()
                .filter(|s| s.name == name && s.links.contains(&me))
                .collect();
            assert_eq!(batches.len(), 1, "one {name} per event: {batches:?}");
            let batch = batches[0];
            assert_eq!(
                batch.attributes["estafeta.batch_events"],
                batch.links.len().to_string(),
                "every event of the batch is traced, so linked: {batch:?}"
            );
            assert_eq!(
                (&batch.trace_id, &batch.parent_span_id),
                (&batch.links[0].0, &batch.links[0].1),
                "{name}: a child of its first event's ingest"
            );
        }
    }
}

#[tokio::test]
async fn a_batched_targets_request_is_one_attempt_span_linked_to_each_events_trace() {
    let collector = Collector::start().await;
    let sink = Sink::start().await;
    let served = traced_gateway(&collector, "traces-batch").await;
    let batched = json!({"url": sink.url("/batched"), "events": ["*"],
                         "batch": {"max_events": 3, "max_wait_ms": 60000}});
    let (_, token, target_id) = tenant_with_target(&served, batched).await;
    let token = token.as_str();
    // Three senders' traces, one event each: one batch of three.
    let senders: Vec<String> = (1..=3).map(|n| format!("{n:032x}")).collect();
    for trace in &senders {
        let sent = Request::new("POST", "/v1/events/order.paid")
            .bearer(token)
            .header("traceparent", &format!("00-{trace}-{SENDER_SPAN}-01"))
            .body(b"{}".to_vec())
            .send_plain(served.addrs.plain)
            .await
            .unwrap();
        assert_eq!(sent.status, 202, "{}", sent.text());
    }
    eventually(Duration::from_secs(15), "the batch", || async {
        sink.count("/batched") == 1
    })
    .await;
    let received = sink.received("/batched")[0]
        .header("traceparent")
        .expect("a batch carries a traceparent");
    let attempt_of = |spans: &[Span]| {
        spans
            .iter()
            .find(|s| s.name == "attempt" && s.attributes.contains_key("estafeta.batch_id"))
            .cloned()
    };
    eventually(
        Duration::from_secs(15),
        "the batch's attempt span",
        || async { attempt_of(&collector.spans()).is_some() },
    )
    .await;
    let spans = collector.spans();
    let attempt = attempt_of(&spans).unwrap();
    assert_eq!(attempt.attributes["estafeta.batch_events"], "3");
    assert_eq!(attempt.attributes["estafeta.target_id"], target_id);
    assert_eq!(attempt.attributes["http.response.status_code"], "200");
    assert!(!attempt.attributes.contains_key("estafeta.event_id"));
    // Linked to each event's ingest span, in each sender's own trace.
    let mut linked: Vec<&str> = attempt.links.iter().map(|(t, _)| t.as_str()).collect();
    linked.sort_unstable();
    assert_eq!(
        linked,
        senders.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for (trace, span) in &attempt.links {
        assert!(
            spans
                .iter()
                .any(|s| s.name == "ingest" && &s.trace_id == trace && &s.span_id == span),
            "a link to an ingest span: {trace}-{span}"
        );
    }
    // The receiver continues the attempt, in the trace of the batch's first event.
    assert_eq!(attempt.trace_id, attempt.links[0].0);
    assert_eq!(attempt.parent_span_id, attempt.links[0].1);
    assert_eq!(
        received,
        format!("00-{}-{}-01", attempt.trace_id, attempt.span_id)
    );
}

#[tokio::test]
async fn spans_reach_a_grpc_collector() {
    let collector = Collector::start().await;
    let sink = Sink::start().await;
    let served = traced_gateway_over(&collector, "traces-grpc", "grpc").await;
    let hook = json!({"url": sink.url("/hook"), "events": ["*"]});
    let (_, token, _) = tenant_with_target(&served, hook).await;
    post_events(&served, &token, 0..3).await;
    eventually(Duration::from_secs(15), "the deliveries", || async {
        sink.count("/hook") == 3
    })
    .await;
    let attempt_of = |traceparent: &str| {
        let mut parts = traceparent.split('-').skip(1);
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let received: Vec<(String, String)> = sink
        .received("/hook")
        .iter()
        .map(|r| attempt_of(&r.header("traceparent").unwrap()))
        .collect();
    eventually(
        Duration::from_secs(15),
        "each event's spans over gRPC",
        || async {
            let spans = collector.spans();
            received.iter().all(|(trace, span)| {
                let attempt = spans
                    .iter()
                    .find(|s| s.name == "attempt" && (&s.trace_id, &s.span_id) == (trace, span));
                attempt.is_some_and(|a| {
                    spans.iter().any(|s| {
                        s.name == "ingest"
                            && s.span_id == a.parent_span_id
                            && s.service == "estafeta-test"
                    })
                })
            })
        },
    )
    .await;
    let spans = collector.spans();
    for name in ["append", "expand"] {
        assert!(spans.iter().any(|s| s.name == name), "{name}: {spans:?}");
    }
    metrics_show(&served, "estafeta_trace_spans_total{outcome=\"exported\"}").await;
}

#[tokio::test]
async fn a_collector_that_is_down_costs_ingest_and_deliveries_nothing() {
    // Nothing listens on the collector's port: gRPC exports fail, in the background.
    let closed = support::free_port();
    let sink = Sink::start().await;
    let extra = format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}\"\notlp_protocol = \"grpc\"\n"
    );
    let mut served = Served::on(
        &RedisServer::shared().url(),
        "traces-down",
        &extra,
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await;
    let hook = json!({"url": sink.url("/hook"), "events": ["*"]});
    let (_, token, _) = tenant_with_target(&served, hook).await;
    post_events(&served, &token, 0..20).await;
    eventually(Duration::from_secs(15), "every delivery", || async {
        sink.count("/hook") == 20
    })
    .await;
    assert!(sink.received("/hook").iter().all(|r| {
        r.header("traceparent")
            .is_some_and(|t| t.starts_with("00-"))
    }));
    // The failed exports are counted, and told once, not once per batch.
    metrics_show(&served, "estafeta_trace_spans_total{outcome=\"failed\"}").await;
    post_events(&served, &token, 20..40).await;
    eventually(Duration::from_secs(15), "the second twenty", || async {
        sink.count("/hook") == 40
    })
    .await;
    let warned = served.logs().matches("spans could not be exported").count();
    assert_eq!(warned, 1, "{}", served.logs());
    // Still serving, and it stops cleanly with exports pending.
    assert_eq!(
        Request::get("/readyz")
            .send_plain(served.addrs.admin)
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        served.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        served.logs()
    );
    assert!(!served.logs().contains("panicked"), "{}", served.logs());
}

#[tokio::test]
async fn a_replay_from_the_log_store_continues_the_events_trace() {
    // The event outlives Redis (a hot window of two seconds; a record lives twice the reclaim
    // idle, 12 s here) and comes back from PostgreSQL:
    // its stored `traceparent` comes back with it, so the replayed attempt is in the sender's
    // trace, a child of the original `ingest`.
    let collector = Collector::start().await;
    let sink = Sink::start().await;
    sink.plan("/hook", vec![], support::sink::Reply::Status(503));
    let db = support::postgres::PgServer::shared()
        .database("traces_replay")
        .await;
    let prefix = support::unique_prefix("traces-replay");
    let extra = format!(
        "[telemetry]\notlp_endpoint = \"http://{}/v1/traces\"\notlp_protocol = \"http\"\nsample_ratio = 1.0\n\n[log_store]\nurl = \"{db}\"\n\n[dispatch]\nrequest_timeout_ms = 1000\nreclaim_idle_ms = 6000\n",
        collector.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let addrs = support::process::addrs();
    let text = support::config_toml(
        &RedisServer::shared().url(),
        &prefix,
        &addrs,
        certs.path(),
        &extra,
    )
    .replace(
        "[queue]\nshards = 4",
        "[queue]\nshards = 4\nhot_window_s = 2",
    );
    let config = support::process::write_config(dir.path(), &text);
    let mut served = Served::start(&config, addrs, &[("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    served.dirs = vec![dir, certs];
    served.wait_ready().await;
    let hook = json!({"url": sink.url("/hook"), "events": ["*"], "mode": "once"});
    let (_, token, _) = tenant_with_target(&served, hook).await;

    let event = post_in_senders_trace(&served, &token).await;
    let dead_letters = || async {
        Request::get("/v1/dead-letters")
            .bearer(&token)
            .send_plain(served.addrs.plain)
            .await
            .unwrap()
            .json()["data"]
            .clone()
    };
    eventually(
        Duration::from_secs(15),
        "the event dead-lettered",
        || async {
            dead_letters()
                .await
                .as_array()
                .is_some_and(|a| a.len() == 1)
        },
    )
    .await;
    // Shipped to PostgreSQL, then gone from Redis.
    let pg = support::postgres::connect(&db).await;
    eventually(Duration::from_secs(20), "the event shipped", || async {
        let n: i64 = pg
            .query_one("SELECT count(*) FROM events WHERE id = $1", &[&event])
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    let redis = RedisServer::shared().client().await;
    eventually(
        Duration::from_secs(40),
        "its Redis copy expired",
        || async {
            let mut left = 0i64;
            for shard in 0..4 {
                left += redis
                    .exists::<i64, _>(format!("{prefix}:{{q{shard}}}:ev:{event}"))
                    .await
                    .unwrap();
            }
            left == 0
        },
    )
    .await;

    sink.plan("/hook", vec![], support::sink::Reply::Status(200));
    let dl = dead_letters().await[0]["id"].clone();
    let replayed = Request::new("POST", "/v1/dead-letters/replay")
        .bearer(&token)
        .json(&json!({"ids": [dl]}))
        .send_plain(served.addrs.plain)
        .await
        .unwrap();
    assert_eq!(replayed.json()["replayed"], 1, "{}", replayed.text());
    // The first request was the failed attempt (503), the second the replay.
    eventually(Duration::from_secs(15), "the replayed delivery", || async {
        sink.count("/hook") == 2
    })
    .await;
    let traceparent = sink.received("/hook")[1].header("traceparent").unwrap();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts[1], parts[3]), (SENDER_TRACE, "01"), "{traceparent}");
    eventually(
        Duration::from_secs(15),
        "the replayed attempt's span",
        || async {
            let spans = collector.spans();
            let ingest = spans.iter().find(|s| {
                s.name == "ingest" && s.attributes.get("estafeta.event_id") == Some(&event)
            });
            let attempt = spans
                .iter()
                .find(|s| s.name == "attempt" && s.span_id == parts[2]);
            match (ingest, attempt) {
                (Some(i), Some(a)) => {
                    assert_eq!(a.trace_id, SENDER_TRACE, "{a:?}");
                    assert_eq!(
                        a.parent_span_id, i.span_id,
                        "a child of the original ingest"
                    );
                    assert_eq!(a.attributes["http.response.status_code"], "200");
                    true
                }
                _ => false,
            }
        },
    )
    .await;
}
