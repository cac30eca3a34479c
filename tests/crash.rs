//! Processes dying and Redis losing its data under a running dispatcher.
//!
//! - `kill -9` of one of two dispatchers in the middle of a 20 000-event run: every event
//!   answered 202 still reaches the target, through the dead consumer's expired liveness lease
//!   rather than `reclaim_idle_ms` (duplicates counted and reported).
//! - Redis flushed under a running dispatcher: it repairs its consumer group and delivers again.
//! - `kill -9` while a batch gathers: a process started after it sends every event in batches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use support::process::{Served, addrs, write_config};
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

const DISPATCH: &str = r#"
[dispatch]
request_timeout_ms = 500
reclaim_idle_ms = 5500
retry_poll_ms = 50
retry = { initial_delay_ms = 100, multiplier = 2.0, max_delay_ms = 1000, max_attempts = 10 }
"#;

/// `reclaim_idle_ms` at its default: a dead consumer's entries must be taken over through its
/// expired liveness lease, in seconds, not after the idle time.
const DISPATCH_DEFAULT_RECLAIM: &str = r#"
[dispatch]
request_timeout_ms = 500
retry_poll_ms = 50
retry = { initial_delay_ms = 100, multiplier = 2.0, max_delay_ms = 1000, max_attempts = 10 }
"#;

fn serve(redis: &str, prefix: &str, role: &str) -> Served {
    serve_with(redis, prefix, role, DISPATCH)
}

fn serve_with(redis: &str, prefix: &str, role: &str, extra: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::certs();
    let a = addrs();
    let text = support::config_toml(redis, prefix, &a, certs.path(), extra);
    let path = write_config(dir.path(), &text);
    let mut s = Served::start_args(&path, a, &[], &["--role", role]);
    s.dirs = vec![dir, certs];
    s
}

/// Posts `n` events over `conns` keep-alive connections; returns the ids answered 202.
async fn post_many(addr: std::net::SocketAddr, token: &str, n: usize, conns: usize) -> Vec<String> {
    let per = n / conns;
    let mut tasks = Vec::new();
    for c in 0..conns {
        let token = token.to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut ids = Vec::with_capacity(per);
            for i in 0..per {
                let req = hyper::Request::post("/v1/events/load.test")
                    .header("host", "x")
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!("{{\"c\":{c},\"i\":{i}}}"))))
                    .unwrap();
                send.ready().await.unwrap();
                let resp = send.send_request(req).await.unwrap();
                let status = resp.status().as_u16();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                if status == 202 {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    ids.push(v["id"].as_str().unwrap().to_owned());
                }
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn delivered_count(admin: std::net::SocketAddr) -> f64 {
    let r = support::http::Request::get("/metrics")
        .send_plain(admin)
        .await;
    let Ok(r) = r else { return 0.0 };
    r.text()
        .lines()
        .find(|l| l.starts_with("estafeta_deliveries_total{outcome=\"delivered\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_dispatcher_mid_run_loses_nothing() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix("kill9");
    let sink = Sink::start().await;
    // A little latency at the receiver keeps deliveries in flight when the process dies.
    sink.plan("/hook", vec![], Reply::Slow(Duration::from_millis(2), 200));
    let edge = serve(&redis.url(), &prefix, "edge");
    let mut edge = edge;
    edge.wait_ready().await;
    let token = edge.tenant_token().await;
    let tenant = {
        let r = support::http::Request::get("/admin/tenants")
            .bearer(support::ADMIN_TOKEN)
            .send_plain(edge.addrs.admin)
            .await
            .unwrap();
        r.json()["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let t = support::http::Request::new("POST", &format!("/admin/tenants/{tenant}/targets"))
        .bearer(support::ADMIN_TOKEN)
        .json(&json!({"url": sink.url("/hook"), "events": ["*"]}))
        .send_plain(edge.addrs.admin)
        .await
        .unwrap();
    assert_eq!(t.status, 201, "{}", t.text());
    let mut d1 = serve_with(
        &redis.url(),
        &prefix,
        "dispatcher",
        DISPATCH_DEFAULT_RECLAIM,
    );
    let mut d2 = serve_with(
        &redis.url(),
        &prefix,
        "dispatcher",
        DISPATCH_DEFAULT_RECLAIM,
    );
    d1.wait_ready().await;
    d2.wait_ready().await;

    const EVENTS: usize = 20_000;
    let sender = {
        let addr = edge.addrs.plain;
        let token = token.clone();
        tokio::spawn(async move { post_many(addr, &token, EVENTS, 16).await })
    };
    // Kill one dispatcher once both have delivered a share, mid-run.
    let killed = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (a, b) = (
            delivered_count(d1.addrs.admin).await,
            delivered_count(d2.addrs.admin).await,
        );
        if a > 500.0 && b > 500.0 && sink.count("/hook") > EVENTS / 4 {
            eprintln!("before the kill: dispatcher 1 delivered {a}, dispatcher 2 delivered {b}");
            d1.child.kill().unwrap(); // SIGKILL
            d1.child.wait().unwrap();
            killed.store(true, Ordering::SeqCst);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        killed.load(Ordering::SeqCst),
        "both dispatchers should have taken a share before the kill"
    );
    let killed_at = Instant::now();
    let accepted = sender.await.unwrap();
    assert_eq!(accepted.len(), EVENTS, "every event accepted");

    // Well within the 60 s `reclaim_idle_ms`: only the lease takeover can make it.
    eventually(
        Duration::from_secs(40).saturating_sub(killed_at.elapsed()),
        "every accepted event delivered, before reclaim_idle_ms could hand anything over",
        || async {
            let got: std::collections::HashSet<String> = sink
                .received("/hook")
                .iter()
                .filter_map(|r| r.header("webhook-id"))
                .collect();
            accepted.iter().all(|id| got.contains(id))
        },
    )
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in sink.received("/hook") {
        *seen.entry(r.header("webhook-id").unwrap()).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 run: {} events accepted, {} delivered, {duplicates} duplicates (deliveries in flight at the kill)",
        accepted.len(),
        seen.len()
    );
    assert!(
        duplicates < 2_000,
        "duplicates only for what was in flight: {duplicates}"
    );
    d2.terminate(Duration::from_secs(10));
    edge.terminate(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_recovers_after_redis_is_flushed() {
    let redis = RedisServer::start(false);
    let sink = Sink::start().await;
    let gw = Gateway::start_with(&redis.url(), &unique_prefix("flush"), DISPATCH).await;
    let setup = |name: &'static str| {
        let gw = &gw;
        let url = sink.url("/after");
        async move {
            let (tenant, token) = gw.tenant(name).await;
            let r = gw
                .admin(
                    "POST",
                    &format!("/admin/tenants/{tenant}/targets"),
                    Some(json!({"url": url, "events": ["*"]})),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            token
        }
    };
    let token = setup("before").await;
    assert_eq!(gw.post_event(&token, "e", b"1").await.status, 202);
    eventually(
        Duration::from_secs(5),
        "delivered before the flush",
        || async { sink.count("/after") == 1 },
    )
    .await;

    // Redis loses everything: streams, groups, tenants, targets.
    redis.cli(&["FLUSHALL"]);
    let token = setup("after").await;
    let started = Instant::now();
    let mut accepted = 0;
    while accepted < 3 && started.elapsed() < Duration::from_secs(10) {
        if gw.post_event(&token, "e", b"2").await.status == 202 {
            accepted += 1;
        }
    }
    eventually(
        Duration::from_secs(15),
        "delivered after the flush, without a restart",
        || async { sink.count("/after") == 1 + accepted },
    )
    .await;
}

/// `kill -9` while a batch gathers: the gathered events and the cut batches live in Redis, so
/// a process started after it sends every event, in batches, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_batch_gathers_loses_nothing() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix("kill9-batch");
    let sink = Sink::start().await;
    let mut first = serve(&redis.url(), &prefix, "all");
    first.wait_ready().await;
    let token = first.tenant_token().await;
    let tenant = {
        let r = support::http::Request::get("/admin/tenants")
            .bearer(support::ADMIN_TOKEN)
            .send_plain(first.addrs.admin)
            .await
            .unwrap();
        r.json()["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let t = support::http::Request::new("POST", &format!("/admin/tenants/{tenant}/targets"))
        .bearer(support::ADMIN_TOKEN)
        .json(&json!({"url": sink.url("/batched"), "events": ["*"],
                      "batch": {"max_events": 1000, "max_wait_ms": 15000}}))
        .send_plain(first.addrs.admin)
        .await
        .unwrap();
    assert_eq!(t.status, 201, "{}", t.text());
    let target = t.json()["id"].as_str().unwrap().to_owned();
    let posted = post_many(first.addrs.plain, &token, 600, 4).await;
    assert_eq!(posted.len(), 600);
    // Killed while events wait in the gathering list (the batch is cut 15 s after the first).
    let keys = estafeta::redis::keyspace::Keyspace::new(&prefix);
    let shard = estafeta::redis::keyspace::shard_of(
        &estafeta::model::TenantId::parse(&tenant).unwrap(),
        4, // the test config's queue.shards
    );
    let list = keys.gather(shard, &estafeta::model::TargetId::parse(&target).unwrap());
    let redis_client = redis.client().await;
    let mut gathered: i64 = 0;
    for _ in 0..100 {
        gathered = fred::prelude::ListInterface::llen(&redis_client, &list)
            .await
            .unwrap();
        if gathered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gathered > 0,
        "nothing was gathering when the process was killed"
    );
    first.child.kill().unwrap(); // SIGKILL
    let _ = first.wait_exit(Duration::from_secs(5));
    let mut second = serve(&redis.url(), &prefix, "all");
    second.wait_ready().await;
    eventually(
        Duration::from_secs(30),
        "every event, in a batch",
        || async {
            let mut seen: Vec<String> = sink
                .received("/batched")
                .iter()
                .flat_map(|r| {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    v["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["id"].as_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect();
            seen.sort();
            seen.dedup();
            let mut want = posted.clone();
            want.sort();
            seen == want
        },
    )
    .await;
    eprintln!(
        "{gathered} events gathering at the kill; {} batch request(s) for 600 events",
        sink.count("/batched")
    );
}
