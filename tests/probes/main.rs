//! The probe suite: what black-box probes of the gateway found, kept as regressions.
//!
//! - here, issue 9's, through the real listeners of an in-process gateway: numbers the model
//!   bounds (a rate limit, a retry policy) are refused at the API and come back clamped when
//!   an older version stored them; invalid UTF-8 in a path answers the contract's JSON error;
//! - [`hostile`]: issue 19's hostile and ambiguous input, against the binary (CI runs the
//!   release build: `ESTAFETA_BIN`): every input of the README's table of hostile inputs gets
//!   the answer the table gives;
//! - [`truthful`]: issue 19's pipelines that must not stop and answers that must be true, against
//!   the binary with real Redis and PostgreSQL: a receiver answering a NUL byte, a row
//!   PostgreSQL refuses, a Redis stall's 503, an outage shorter than the retry policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod hostile;
mod truthful;

use std::time::Duration;

use fred::prelude::*;
use serde_json::{Value as Json, json};
use support::http::Request;
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

use estafeta::model::{TargetId, TenantId};
use estafeta::redis::keyspace::Keyspace;

const FAST_RETRIES: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 300, max_attempts = 4 }
"#;

#[tokio::test]
async fn a_rate_limit_out_of_bounds_is_refused_with_its_field() {
    let gw = Gateway::start("probe-rate").await;
    for rate in [json!(1e-12), json!(0), json!(-1), json!(1e12)] {
        let r = gw
            .admin(
                "POST",
                "/admin/tenants",
                Some(json!({"name": "r", "rate_limit": {"per_second": rate, "burst": 1}})),
            )
            .await;
        assert_eq!(r.status, 400, "per_second {rate}: {}", r.text());
        assert!(r.is_error("invalid_tenant"), "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("rate_limit.per_second"), "{message}");
    }
    let r = gw
        .admin(
            "POST",
            "/admin/tenants",
            Some(json!({"name": "r", "rate_limit": {"per_second": 5, "burst": 0}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("burst")
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_stored_rate_out_of_bounds_is_clamped_not_a_panic() {
    let gw = Gateway::start("probe-stored-rate").await;
    let redis = RedisServer::shared().client().await;
    let keys = Keyspace::new(&gw.prefix);
    for stored in ["0", "NaN", "1e-12", "-5", "inf"] {
        let (id, token) = gw.tenant(&format!("stored {stored}")).await;
        let key = keys.tenant(&TenantId::parse(&id).unwrap());
        let before: Option<String> = redis.hget(&key, "rl_ps").await.unwrap();
        assert!(
            before.is_some(),
            "the tenant hash has no rl_ps: the probe tests nothing"
        );
        let _: () = redis.hset(&key, ("rl_ps", stored)).await.unwrap();
        // First use of the token: the tenant is read from Redis now.
        let r = gw.post_event(&token, "a", b"{}").await;
        assert!(
            r.status == 202 || r.status == 429,
            "stored rate {stored}: {} {}",
            r.status,
            r.text()
        );
    }
    // A record that is not a number at all is a server fault, answered as one.
    let (id, token) = gw.tenant("stored garbage").await;
    let key = keys.tenant(&TenantId::parse(&id).unwrap());
    let _: () = redis.hset(&key, ("rl_ps", "not a number")).await.unwrap();
    let r = gw.post_event(&token, "a", b"{}").await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.is_error("internal"), "{}", r.text());
    assert!(
        !r.text().contains("rl_ps"),
        "the cause is logged, not answered: {}",
        r.text()
    );
    // The gateway still answers: no worker died on the way.
    let (_, token) = gw.tenant("after").await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_retry_policy_out_of_bounds_is_refused_with_its_field() {
    let gw = Gateway::start("probe-retry").await;
    let (tenant, _) = gw.tenant("retry").await;
    for (retry, field) in [
        (
            json!({"initial_delay_ms": u64::MAX, "multiplier": 1.0, "max_delay_ms": u64::MAX}),
            "retry.initial_delay_ms",
        ),
        (json!({"multiplier": 1e308}), "retry.multiplier"),
        (json!({"multiplier": 10.5}), "retry.multiplier"),
        (json!({"max_delay_ms": 86_400_001u64}), "retry.max_delay_ms"),
        (json!({"max_attempts": 0}), "retry.max_attempts"),
        (json!({"max_attempts": 101}), "retry.max_attempts"),
    ] {
        let r = gw
            .admin(
                "POST",
                &format!("/admin/tenants/{tenant}/targets"),
                Some(json!({"url": "http://127.0.0.1:9/", "events": ["*"], "retry": retry})),
            )
            .await;
        assert_eq!(r.status, 400, "{retry}: {}", r.text());
        assert!(r.is_error("invalid_target"), "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(field), "{retry}: {message}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_event_of_a_target_with_a_stored_huge_retry_policy_stays_readable() {
    let sink = Sink::start().await;
    sink.plan("/fail", vec![], Reply::Status(500));
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("probe-stored-retry"),
        FAST_RETRIES,
    )
    .await;
    let (tenant, token) = gw.tenant("stored retry").await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets"),
            Some(json!({"url": sink.url("/fail"), "events": ["*"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let target = r.json()["id"].as_str().unwrap().to_owned();

    // What an older version accepted, written where it keeps the target.
    let redis = RedisServer::shared().client().await;
    let key = Keyspace::new(&gw.prefix).target(&TargetId::parse(&target).unwrap());
    let doc: String = redis.hget(&key, "doc").await.unwrap();
    let mut doc: Json = serde_json::from_str(&doc).unwrap();
    assert!(
        doc.get("retry").is_some(),
        "no retry in the stored doc: {doc}"
    );
    doc["retry"] = json!({
        "initial_delay_ms": u64::MAX,
        "multiplier": 1e308,
        "max_delay_ms": u64::MAX,
        "max_attempts": 10
    });
    let _: () = redis.hset(&key, ("doc", doc.to_string())).await.unwrap();

    let r = gw.post_event(&token, "order.paid", b"{}").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let event = r.json()["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "a failed attempt", || async {
        sink.count("/fail") >= 1
    })
    .await;
    eventually(Duration::from_secs(10), "the attempt recorded", || async {
        let r = Request::get(&format!("/v1/events/{event}"))
            .bearer(&token)
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let delivery = &r.json()["deliveries"][0];
        delivery["attempts"].as_u64().unwrap_or(0) >= 1 && delivery["next_retry_at"].is_string()
    })
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_in_a_path_is_the_contracts_json_error() {
    let gw = Gateway::start("probe-utf8").await;
    let (tenant, token) = gw.tenant("utf8").await;
    let cases = [
        (
            "GET",
            "/admin/tenants/%ff%fe",
            gw.addrs.admin,
            support::ADMIN_TOKEN,
        ),
        ("GET", "/v1/targets/%ff", gw.addrs.plain, token.as_str()),
        ("POST", "/v1/hooks/%c0%af", gw.addrs.plain, ""),
        ("GET", "/v1/monitors/%ff/heartbeat", gw.addrs.plain, ""),
        (
            "DELETE",
            &format!("/admin/tenants/{tenant}/targets/%ff"),
            gw.addrs.admin,
            support::ADMIN_TOKEN,
        ),
    ];
    for (method, path, addr, bearer) in cases {
        let mut req = Request::new(method, path);
        if !bearer.is_empty() {
            req = req.bearer(bearer);
        }
        let r = req.send_plain(addr).await.unwrap();
        assert_eq!(r.status, 400, "{method} {path}: {}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{method} {path}"
        );
        assert!(r.is_error("invalid_path"), "{method} {path}: {}", r.text());
    }
    gw.stop().await.unwrap();
}

/// Sends `raw` on a fresh connection and reads the answer until the server closes or 2 s pass.
async fn raw_exchange(addr: std::net::SocketAddr, raw: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n")
                    && String::from_utf8_lossy(&answer).contains("\"error\"")
                {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_http11_request_needs_exactly_one_host() {
    let gw = Gateway::start("probe-host").await;
    for addr in [gw.addrs.plain, gw.addrs.admin] {
        let missing = raw_exchange(addr, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
        assert!(missing.contains("\"invalid_host\""), "{missing}");
        let twice = raw_exchange(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(twice.starts_with("HTTP/1.1 400"), "{twice}");
        assert!(twice.contains("one Host header"), "{twice}");
        let once = raw_exchange(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(once.starts_with("HTTP/1.1 200"), "{once}");
        // HTTP/1.0 predates Host.
        let old = raw_exchange(addr, "GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(old.starts_with("HTTP/1.0 200"), "{old}");
    }
    // HTTP/2 names the authority in `:authority`; no Host header is needed.
    let h2 = Request::get("/healthz")
        .send_plain_h2(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(h2.status, 200);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn every_exported_metric_has_help_text() {
    let gw = Gateway::start("probe-help").await;
    let (_, token) = gw.tenant("acme").await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    let text = gw.metrics_showing("estafeta_dead_letters").await;
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(typed.len() > 10, "{text}");
    for name in typed {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line"
        );
    }
    gw.stop().await.unwrap();
}
