//! End-to-end delivery bench: a local sink that answers 200 at once, a tenant with `fanout`
//! targets on it, `events` events posted to a running Estafeta; measures completed deliveries
//! per second (first 202 to last delivery) and the delivery latency (event id's timestamp, taken
//! by the gateway before the write, to arrival at the sink).
//!
//! `dispatch_bench <edge plain addr> <admin addr> <admin token> <events> <fanout> <rate/s, 0 = max> [--sink-down] [--routed] [--batch N]`
//!
//! With `--routed` every target has a payload filter (that lets every event through, so the
//! deliveries are the same) and every other target a jq transformation; with `--batch N` every
//! target gathers its events into batches of N (the sink counts the events of each batch).
//!
//! With `--dead K` the last K targets point at a closed port (a receiver that is down next to
//! live ones): deliveries are counted, and waited for, on the live ones only.
//!
//! With `--sink-down` the targets point at a closed port: nothing is delivered, and the caller
//! watches the gateway's memory while the backlog builds up. With `--sink-delay-ms N` the sink
//! answers each delivery after N ms (a slow receiver: what bounds throughput is then the number
//! of deliveries in flight).
//!
//! Receivers with a capacity (one dispatcher's adaptive limit must find it): with
//! `--knee N` the sink's answer takes `sink-delay-ms × max(1, in flight / N)` (latency grows
//! past N requests in flight, as a receiver whose workers are all busy queues the rest);
//! with `--limit-429 N` it answers 429 at once to a request that finds N already in flight.
//! Either prints a second line: what the sink served (its own answer times, the 429s) over
//! the whole run and after the first 10 s. `--target-concurrency N` gives every target a
//! fixed `concurrency` instead of the adaptive default (the hand-tuned reference).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[derive(Default)]
struct Tally {
    count: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    last_ms: AtomicU64,
    in_flight: AtomicU64,
    /// Every answer: (ms since the epoch when it was sent, µs the sink took, whether a 429).
    answers: Mutex<Vec<(u64, u64, bool)>>,
}

/// How the sink answers.
#[derive(Clone, Copy, Default)]
struct Receiver {
    delay: Duration,
    knee: Option<u64>,
    limit_429: Option<u64>,
}

async fn sink(tally: Arc<Tally>, receiver: Receiver) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tally = tally.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let tally = tally.clone();
                    async move {
                        let batched = req
                            .headers()
                            .get("estafeta-event-type")
                            .is_some_and(|v| v.as_bytes() == b"estafeta.batch");
                        let sent = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|id| id.strip_prefix("evt_"))
                            .and_then(|u| ulid::Ulid::from_string(u).ok())
                            .map(|u| u.timestamp_ms());
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        // A batch counts its events.
                        let n = if batched {
                            serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["events"].as_array().map(|a| a.len() as u64))
                                .unwrap_or(0)
                        } else {
                            1
                        };
                        let arrived = Instant::now();
                        let in_flight = tally.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                        if receiver.limit_429.is_some_and(|n| in_flight > n) {
                            tally.in_flight.fetch_sub(1, Ordering::Relaxed);
                            let took = arrived.elapsed().as_micros() as u64;
                            tally.answers.lock().unwrap().push((now_ms(), took, true));
                            let mut r = hyper::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = hyper::StatusCode::TOO_MANY_REQUESTS;
                            return Ok::<_, Infallible>(r);
                        }
                        let delay = match receiver.knee {
                            Some(knee) if in_flight > knee => {
                                receiver.delay.mul_f64(in_flight as f64 / knee as f64)
                            }
                            _ => receiver.delay,
                        };
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        tally.in_flight.fetch_sub(1, Ordering::Relaxed);
                        let now = now_ms();
                        if receiver.knee.is_some() || receiver.limit_429.is_some() {
                            let took = arrived.elapsed().as_micros() as u64;
                            tally.answers.lock().unwrap().push((now, took, false));
                        }
                        if let Some(sent) = sent {
                            tally
                                .latencies
                                .lock()
                                .unwrap()
                                .push(now.saturating_sub(sent));
                        }
                        tally.count.fetch_add(n, Ordering::Relaxed);
                        tally.last_ms.store(now, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: String,
) -> serde_json::Value {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "bench")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!(
            "usage: dispatch_bench <edge> <admin> <admin token> <events> <fanout> <rate> [--sink-down] [--sink-delay-ms N]"
        );
        std::process::exit(2);
    }
    let edge: SocketAddr = args[1].parse().unwrap();
    let admin: SocketAddr = args[2].parse().unwrap();
    let admin_token = &args[3];
    let events: u64 = args[4].parse().unwrap();
    let fanout: u64 = args[5].parse().unwrap();
    let rate: f64 = args[6].parse().unwrap();
    let sink_down = args.iter().any(|a| a == "--sink-down");
    let routed = args.iter().any(|a| a == "--routed");
    let batch: Option<u64> = args
        .iter()
        .position(|a| a == "--batch")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    let number = |flag: &str| -> Option<u64> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|n| n.parse().unwrap())
    };
    let receiver = Receiver {
        delay: Duration::from_millis(number("--sink-delay-ms").unwrap_or(0)),
        knee: number("--knee"),
        limit_429: number("--limit-429"),
    };
    let target_concurrency = number("--target-concurrency");

    let dead: u64 = args
        .iter()
        .position(|a| a == "--dead")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(fanout);
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tally = Arc::new(Tally::default());
    let sink_addr = if sink_down {
        // A port nobody listens on.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    } else {
        sink(tally.clone(), receiver).await
    };
    let tenant = call(
        admin,
        "POST",
        "/admin/tenants",
        admin_token,
        r#"{"name":"bench"}"#.into(),
    )
    .await;
    let (tenant_id, token) = (
        tenant["id"].as_str().unwrap().to_owned(),
        tenant["token"].as_str().unwrap().to_owned(),
    );
    for i in 0..fanout {
        let addr = if i >= fanout - dead {
            closed
        } else {
            sink_addr
        };
        let mut spec = serde_json::json!({"url": format!("http://{addr}/t{i}"), "events": ["*"]});
        if routed {
            spec["filter"] = serde_json::json!({"body.amount": {"$gte": 0}, "body.currency": {"$in": ["BRL", "USD"]}});
            if i % 2 == 1 {
                spec["transform"] = serde_json::json!({"program": ".body.cents = (.body.amount * 100) | .headers[\"x-order\"] = (.body.order | tostring)"});
            }
        }
        if let Some(n) = target_concurrency {
            spec["concurrency"] = serde_json::json!(n);
        }
        if let Some(n) = batch {
            spec["batch"] = serde_json::json!({"max_events": n, "max_wait_ms": 200});
        }
        let body = spec.to_string();
        let t = call(
            admin,
            "POST",
            &format!("/admin/tenants/{tenant_id}/targets"),
            admin_token,
            body,
        )
        .await;
        assert!(t["id"].is_string(), "target not created: {t}");
    }

    const CONNS: u64 = 32;
    let started = Instant::now();
    let accepted = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for c in 0..CONNS {
        let token = token.clone();
        let accepted = accepted.clone();
        let mine = events / CONNS + u64::from(c < events % CONNS);
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(CONNS as f64 / rate));
        senders.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(edge).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let begin = Instant::now();
            for i in 0..mine {
                if let Some(iv) = interval {
                    let at = begin + iv * i as u32;
                    tokio::time::sleep_until(at.into()).await;
                }
                let req = hyper::Request::post("/v1/events/order.paid")
                    .header("host", "bench")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"order":{i},"conn":{c},"amount":129900,"currency":"BRL"}}"#
                    ))))
                    .unwrap();
                send.ready().await.unwrap();
                let resp = send.send_request(req).await.unwrap();
                let ok = resp.status() == 202;
                let _ = resp.into_body().collect().await;
                if ok {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let sent_in = started.elapsed();
    let accepted = accepted.load(Ordering::Relaxed);
    if sink_down {
        println!(
            "sink down: {accepted} events accepted in {:.1} s; nothing delivered",
            sent_in.as_secs_f64()
        );
        return;
    }
    let expected = accepted * (fanout - dead);
    let deadline = Instant::now() + Duration::from_secs(300);
    while tally.count.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = tally.count.load(Ordering::Relaxed);
    let start_ms = now_ms() - started.elapsed().as_millis() as u64;
    let span_ms = tally
        .last_ms
        .load(Ordering::Relaxed)
        .saturating_sub(start_ms)
        .max(1);
    let mut lat = tally.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    println!(
        "fan-out {fanout:>2}{}{}, {accepted} events ({}): {delivered}/{expected} deliveries in {:.1} s = {:.0} deliveries/s; ingest {:.0} events/s; {}",
        match (routed, batch) {
            (true, _) => " routed".to_owned(),
            (_, Some(n)) => format!(" batched by {n}"),
            _ => String::new(),
        },
        if dead > 0 {
            format!(" ({dead} down)")
        } else {
            String::new()
        },
        if rate > 0.0 {
            format!("paced at {rate:.0}/s")
        } else {
            "as fast as accepted".to_owned()
        },
        span_ms as f64 / 1000.0,
        delivered as f64 * 1000.0 / span_ms as f64,
        accepted as f64 / sent_in.as_secs_f64(),
        if lat.is_empty() {
            // A batch's events are not timed one by one.
            "latency not measured".to_owned()
        } else {
            format!(
                "latency p50 {} ms, p99 {} ms, max {} ms",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(0)
            )
        },
    );
    if receiver.knee.is_some() || receiver.limit_429.is_some() {
        let answers = tally.answers.lock().unwrap().clone();
        println!("  sink: {}", served(&answers, start_ms, receiver));
    }
}

/// What a sink with a capacity served: its answer times and 429s, over the run and after the
/// first 10 s (once a limiter has had time to find the capacity).
fn served(answers: &[(u64, u64, bool)], start_ms: u64, receiver: Receiver) -> String {
    let part = |from_ms: u64| {
        let mine: Vec<_> = answers.iter().filter(|a| a.0 >= from_ms).collect();
        let refused = mine.iter().filter(|a| a.2).count();
        let mut took: Vec<u64> = mine.iter().filter(|a| !a.2).map(|a| a.1).collect();
        took.sort_unstable();
        let ok = took.len() as f64;
        let last = mine.iter().map(|a| a.0).max().unwrap_or(from_ms);
        let secs = (last.saturating_sub(from_ms)).max(1) as f64 / 1000.0;
        format!(
            "{} attempts, {refused} answered 429 ({:.2} %), {:.0} answered 200/s, answer time p50 {:.1} ms p99 {:.1} ms",
            mine.len(),
            100.0 * refused as f64 / mine.len().max(1) as f64,
            ok / secs,
            percentile(&took, 0.5) as f64 / 1000.0,
            percentile(&took, 0.99) as f64 / 1000.0,
        )
    };
    let capacity = match (
        receiver.knee.or(receiver.limit_429),
        receiver.delay.as_secs_f64(),
    ) {
        (Some(n), d) if d > 0.0 => format!(" (capacity {:.0}/s", n as f64 / d),
        _ => " (".to_owned(),
    };
    format!(
        "unloaded answer {} ms{capacity}); whole run: {}; after 10 s: {}",
        receiver.delay.as_millis(),
        part(start_ms),
        part(start_ms + 10_000)
    )
}
