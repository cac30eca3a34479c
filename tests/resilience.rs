//! Failures and hostile clients: Redis going away under load, several instances staying
//! coherent, clients that stall, and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::http::Request;
use support::{Gateway, RedisServer, all_events, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gets_503_then_recovers_and_loses_nothing_acknowledged() {
    let mut redis = RedisServer::start(true);
    let prefix = support::unique_prefix("outage");
    let gw = Gateway::start_with(&redis.url(), &prefix, "").await;
    let (_, token) = gw.tenant("acme").await;

    // Load from 8 clients for the whole test, recording what was acknowledged.
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let statuses = Arc::new(Mutex::new(Vec::<(u16, Duration)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..8 {
        let (acked, statuses, stop, token, addr) = (
            acked.clone(),
            statuses.clone(),
            stop.clone(),
            token.clone(),
            gw.addrs.plain,
        );
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let started = Instant::now();
                let r = Request::new("POST", "/v1/events/load")
                    .bearer(&token)
                    .body(format!("{{\"client\":{c},\"n\":{i}}}"))
                    .send_plain(addr)
                    .await;
                let Ok(r) = r else { continue };
                statuses.lock().unwrap().push((r.status, started.elapsed()));
                if r.status == 202 {
                    acked
                        .lock()
                        .unwrap()
                        .insert(r.json()["id"].as_str().unwrap().to_owned());
                } else {
                    assert_eq!(
                        r.status,
                        503,
                        "only 202 or 503, got {}: {}",
                        r.status,
                        r.text()
                    );
                    assert!(r.is_error("unavailable"));
                    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // Under load before the outage: acknowledgements flowing.
    eventually(Duration::from_secs(10), "load acknowledged", || {
        let acked = acked.clone();
        async move { acked.lock().unwrap().len() >= 40 }
    })
    .await;
    redis.stop();
    let down_at = Instant::now();
    // While Redis is down: 503, and quickly (the test config's command timeout is 1 s).
    eventually(Duration::from_secs(5), "a 503 while Redis is down", || {
        let statuses = statuses.clone();
        async move { statuses.lock().unwrap().iter().any(|(s, _)| *s == 503) }
    })
    .await;
    let readyz = Request::get("/readyz")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(readyz.status, 503);
    // An outage long enough that every client met it again and again.
    eventually(
        Duration::from_secs(10),
        "many 503s during the outage",
        || {
            let statuses = statuses.clone();
            async move {
                statuses
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(s, _)| *s == 503)
                    .count()
                    >= 40
            }
        },
    )
    .await;
    redis.restart();
    let up_at = Instant::now();
    let before = acked.lock().unwrap().len();
    eventually(
        Duration::from_secs(10),
        "202 again after Redis returns",
        || {
            let acked = acked.clone();
            async move { acked.lock().unwrap().len() > before + 20 }
        },
    )
    .await;
    let recovery = up_at.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let slowest_503 = statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == 503)
        .map(|(_, d)| *d)
        .max()
        .unwrap();
    assert!(
        slowest_503 < Duration::from_millis(2500),
        "a 503 took {slowest_503:?}"
    );
    eprintln!("outage {:?}, recovered in {recovery:?}", up_at - down_at);

    // Every acknowledged event survived the restart (AOF with appendfsync always).
    let client = redis.client().await;
    let stored: HashSet<String> = all_events(&client, &prefix)
        .await
        .into_iter()
        .map(|(_, e)| e.id.to_string())
        .collect();
    let acked: Vec<String> = acked.lock().unwrap().iter().cloned().collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(acked.len() > 50);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn revocation_and_disabling_reach_a_second_instance_within_a_second() {
    let redis = RedisServer::shared();
    let prefix = support::unique_prefix("coherent");
    let one = Gateway::start_with(&redis.url(), &prefix, "").await;
    let two = Gateway::start_with(&redis.url(), &prefix, "").await;
    let (tenant, token) = one.tenant("acme").await;
    let issued = one
        .admin("POST", &format!("/admin/tenants/{tenant}/tokens"), None)
        .await
        .json();
    let (token2, token2_id) = (
        issued["token"].as_str().unwrap().to_owned(),
        issued["id"].as_str().unwrap().to_owned(),
    );
    // Warm the second instance's cache with both tokens.
    assert_eq!(two.post_event(&token, "a", b"{}").await.status, 202);
    assert_eq!(two.post_event(&token2, "a", b"{}").await.status, 202);

    let revoked_at = Instant::now();
    let r = one
        .admin(
            "DELETE",
            &format!("/admin/tenants/{tenant}/tokens/{token2_id}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    eventually(
        Duration::from_secs(1),
        "the revoked token refused by the other instance",
        || async { two.post_event(&token2, "a", b"{}").await.status == 401 },
    )
    .await;
    eprintln!("revocation seen in {:?}", revoked_at.elapsed());
    assert_eq!(two.post_event(&token, "a", b"{}").await.status, 202);

    let disabled_at = Instant::now();
    one.admin(
        "PATCH",
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"active": false})),
    )
    .await;
    eventually(
        Duration::from_secs(1),
        "the disabled tenant refused by the other instance",
        || async { two.post_event(&token, "a", b"{}").await.status == 403 },
    )
    .await;
    eprintln!("disabling seen in {:?}", disabled_at.elapsed());
    one.admin(
        "PATCH",
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"active": true})),
    )
    .await;
    eventually(
        Duration::from_secs(1),
        "the enabled tenant accepted again",
        || async { two.post_event(&token, "a", b"{}").await.status == 202 },
    )
    .await;
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

/// Reads until the peer closes; returns how long that took, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {} // a 408 or similar before closing is fine
        }
    }
}

#[tokio::test]
async fn clients_that_stall_are_disconnected() {
    // The test config sets the header, TLS handshake and body idle timeouts to 1 s.
    let gw = Gateway::start("stall").await;
    let (_, token) = gw.tenant("acme").await;

    let mut headers = TcpStream::connect(gw.addrs.plain).await.unwrap();
    headers
        .write_all(b"POST /v1/events/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = closed_within(&mut headers, Duration::from_secs(5)).await;
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(900)),
        "unfinished head: {t:?}"
    );

    let mut idle = TcpStream::connect(gw.addrs.plain).await.unwrap();
    let t = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        t.is_some(),
        "a connection that never sends a request is closed"
    );

    let mut tls = TcpStream::connect(gw.addrs.tls).await.unwrap();
    let t = closed_within(&mut tls, Duration::from_secs(5)).await;
    assert!(
        t.is_some_and(|t| t >= Duration::from_millis(900)),
        "stalled TLS handshake: {t:?}"
    );

    let mut partial_tls = TcpStream::connect(gw.addrs.tls).await.unwrap();
    partial_tls
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(
        closed_within(&mut partial_tls, Duration::from_secs(5))
            .await
            .is_some()
    );

    // A body that stops arriving.
    let mut body = TcpStream::connect(gw.addrs.plain).await.unwrap();
    let head = format!(
        "POST /v1/events/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\n{{\"a\":"
    );
    body.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), body.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "a stalled body is cut off");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_chunked_body_is_refused_without_reading_it_all() {
    let gw = Gateway::start("chunked").await;
    let (_, token) = gw.tenant("acme").await;
    let mut s = TcpStream::connect(gw.addrs.plain).await.unwrap();
    let head = format!(
        "POST /v1/events/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "x".repeat(16 * 1024));
    // Offer 64 MiB; the cap is 64 KiB. The server answers and stops reading long before.
    let mut sent = 0usize;
    let mut write_failed = false;
    for _ in 0..4096 {
        match tokio::time::timeout(Duration::from_secs(2), s.write_all(chunk.as_bytes())).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => {
                write_failed = true;
                break;
            }
        }
    }
    assert!(
        write_failed,
        "the server kept reading a body far over the cap"
    );
    assert!(
        sent < 32 * 1024 * 1024,
        "sent {sent} bytes before the server stopped reading"
    );
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"));
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let gw = Gateway::start("drain").await;
    let (_, token) = gw.tenant("acme").await;
    // A request whose body is still arriving when shutdown starts.
    let mut s = TcpStream::connect(gw.addrs.plain).await.unwrap();
    let head = format!(
        "POST /v1/events/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 7\r\n\r\n{{\"a\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // Time for the server to accept and read the head: nothing outside shows that it has.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let plain = gw.addrs.plain;
    let stopping = tokio::spawn(gw.stop());
    // Shutdown under way: the listener takes no new connection.
    eventually(Duration::from_secs(5), "the listener closed", || async {
        TcpStream::connect(plain).await.is_err()
    })
    .await;
    s.write_all(b"1}").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 202"),
        "in-flight request answered: {text}"
    );
    stopping.await.unwrap().unwrap();
    assert!(
        TcpStream::connect(plain).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn revocations_during_a_dropped_subscription_are_not_lost() {
    let redis = RedisServer::start(false);
    let prefix = support::unique_prefix("subdrop");
    let one = Gateway::start_with(&redis.url(), &prefix, "").await;
    let two = Gateway::start_with(&redis.url(), &prefix, "").await;
    let (tenant, _) = one.tenant("acme").await;
    for round in 0..5 {
        let issued = one
            .admin("POST", &format!("/admin/tenants/{tenant}/tokens"), None)
            .await
            .json();
        let (token, token_id) = (
            issued["token"].as_str().unwrap().to_owned(),
            issued["id"].as_str().unwrap().to_owned(),
        );
        assert_eq!(two.post_event(&token, "a", b"{}").await.status, 202);
        // Cut every subscriber connection, then revoke while they reconnect.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        if round % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(20 * round)).await;
        }
        let r = one
            .admin(
                "DELETE",
                &format!("/admin/tenants/{tenant}/tokens/{token_id}"),
                None,
            )
            .await;
        assert_eq!(r.status, 204);
        eventually(
            Duration::from_secs(3),
            "a revocation made while subscriptions were down",
            || async { two.post_event(&token, "a", b"{}").await.status == 401 },
        )
        .await;
    }
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

#[tokio::test]
async fn a_redis_that_restarts_empty_does_not_lock_out_cached_tenants() {
    let mut redis = RedisServer::start(false);
    let prefix = support::unique_prefix("restart");
    let gw = Gateway::start_with(&redis.url(), &prefix, "").await;
    let (_, token) = gw.tenant("acme").await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    redis.stop();
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 503);
    redis.restart();
    eventually(
        Duration::from_secs(10),
        "202 again after an empty Redis came back",
        || async { gw.post_event(&token, "a", b"{}").await.status == 202 },
    )
    .await;
    gw.stop().await.unwrap();
}

/// A Redis stall longer than the command timeout makes the dispatcher give up on a read that
/// Redis still executes: the entries land in a live consumer's pending list without the
/// consumer knowing, and nobody else touches them before `reclaim_idle_ms` (60 s here). The
/// state is made here directly (`XCLAIM … FORCE` of an entry to the running consumer); its own
/// sweep must pick the entry up in seconds and settle it (already delivered: acked, not sent
/// again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_in_a_live_consumers_pending_list_that_it_does_not_hold_is_settled_in_seconds() {
    use fred::prelude::*;
    let redis = RedisServer::shared();
    let prefix = support::unique_prefix("lost-read");
    let sink = support::sink::Sink::start().await;
    let gw = Gateway::start_with(
        &redis.url(),
        &prefix,
        "[dispatch]\nreclaim_idle_ms = 60000\nrequest_timeout_ms = 2000\n",
    )
    .await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets"),
            Some(json!({"url": sink.url("/hook"), "events": ["*"]})),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text());
    let posted = gw.post_event(&token, "lost.read", b"{}").await;
    assert_eq!(posted.status, 202);
    eventually(Duration::from_secs(10), "the event delivered", || async {
        sink.count("/hook") == 1
    })
    .await;

    let client = redis.client().await;
    let keys = estafeta::redis::keyspace::Keyspace::new(&prefix);
    let mut found = None;
    for shard in 0..4 {
        let entries: Vec<(String, Vec<(String, String)>)> = client
            .xrange(keys.stream(shard), "-", "+", None)
            .await
            .unwrap();
        if let Some((id, _)) = entries.into_iter().next() {
            found = Some((keys.stream(shard), id));
        }
    }
    let (stream, entry) = found.expect("the event's stream entry");
    let consumers: Vec<Vec<Value>> = client
        .xinfo_consumers(stream.as_str(), "dispatch")
        .await
        .unwrap();
    let name = consumers[0][1].as_string().unwrap();
    // The consumer "read" the entry again without knowing it.
    let _: Value = client
        .custom(
            fred::cmd!("XCLAIM"),
            vec![
                stream.clone(),
                "dispatch".into(),
                name,
                "0".into(),
                entry,
                "FORCE".into(),
                "JUSTID".into(),
            ],
        )
        .await
        .unwrap();
    let pending = || async {
        let summary: Vec<Value> = client
            .xpending(stream.as_str(), "dispatch", ())
            .await
            .unwrap();
        summary[0].as_u64().unwrap()
    };
    assert_eq!(pending().await, 1, "the entry is pending");
    eventually(
        Duration::from_secs(15),
        "the lost entry settled by its own consumer, long before reclaim_idle_ms",
        || async { pending().await == 0 },
    )
    .await;
    assert_eq!(
        sink.count("/hook"),
        1,
        "a delivered event is not sent again"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn readiness_fails_while_redis_refuses_writes_and_returns_after() {
    let redis = RedisServer::start(false);
    let gw = Gateway::start_with(&redis.url(), &support::unique_prefix("oom"), "").await;
    let ready = || async {
        Request::get("/readyz")
            .send_plain(gw.addrs.plain)
            .await
            .unwrap()
    };
    assert_eq!(ready().await.status, 200);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "1"]);
    let full = ready().await;
    assert_eq!(full.status, 503, "{}", full.text());
    assert!(full.text().contains("refuses writes"), "{}", full.text());
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_eq!(ready().await.status, 200);
    gw.stop().await.unwrap();
}

/// During a Redis stall every ingest request and every heartbeat hears back within the
/// command timeout (1 s here) with a 503, the one that waited behind the stalled batch as
/// well: its own batch gets what is left of its deadline, not a whole timeout more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_redis_stall_each_request_is_answered_within_the_command_timeout() {
    use fred::prelude::*;
    let redis = RedisServer::start(false);
    let gw = Gateway::start_with(&redis.url(), &support::unique_prefix("stall-503"), "").await;
    let (tenant, token) = gw.tenant("acme").await;
    assert_eq!(gw.post_event(&token, "warm", b"{}").await.status, 202);
    let monitor = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": "stalled"})),
        )
        .await
        .json();
    let beat = format!(
        "/v1/monitors/{}/heartbeat",
        monitor["token"].as_str().unwrap()
    );
    let warm = Request::new("POST", &beat)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(warm.status, 200, "{}", warm.text());

    for (what, path, auth) in [
        (
            "event",
            "/v1/events/stalled".to_owned(),
            Some(token.clone()),
        ),
        ("heartbeat", beat.clone(), None),
    ] {
        // Connected before the stall: a connection made during it waits for its end.
        let probe = redis.client().await;
        let sleeper = redis.client().await;
        let stall = tokio::spawn(async move {
            let _: Result<fred::types::Value, _> = sleeper
                .custom(
                    fred::cmd!("DEBUG"),
                    vec!["SLEEP".to_owned(), "2.5".to_owned()],
                )
                .await;
        });
        support::until_asleep(&probe).await;
        let timed = || {
            let (addr, path, auth) = (gw.addrs.plain, path.clone(), auth.clone());
            async move {
                let started = Instant::now();
                let mut req = Request::new("POST", &path).body(b"{}".to_vec());
                if let Some(token) = &auth {
                    req = req.bearer(token);
                }
                let r = req.send_plain(addr).await.unwrap();
                (r.status, started.elapsed())
            }
        };
        let first = tokio::spawn(timed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let behind = tokio::spawn(timed());
        let (first, behind) = (first.await.unwrap(), behind.await.unwrap());
        // Before, the second request waited for the first batch (1 s) and then for its own
        // (1 s more): 1.5 s after it was sent.
        for (which, (status, took)) in [("first", first), ("behind", behind)] {
            assert_eq!(status, 503, "{what} {which}");
            assert!(
                took < Duration::from_millis(1_350),
                "{what} {which} answered after {took:?}"
            );
        }
        stall.await.unwrap();
        eventually(
            Duration::from_secs(10),
            "served after the stall",
            || async {
                let mut req = Request::new("POST", &path).body(b"{}".to_vec());
                if let Some(token) = &auth {
                    req = req.bearer(token);
                }
                matches!(req.send_plain(gw.addrs.plain).await, Ok(r) if r.status < 300)
            },
        )
        .await;
    }
    gw.stop().await.unwrap();
}
