//! Ingest over real sockets against a real Redis: what a tenant sees, and what lands in Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::json;
use support::http::{Alpn, Request};
use support::{Gateway, RedisServer, all_events};

#[tokio::test]
async fn event_lands_in_its_stream_byte_for_byte_over_every_listener() {
    let gw = Gateway::start("happy").await;
    let (tenant, token) = gw.tenant("acme").await;
    let cert = gw.certs.path().join("dev.crt");
    // A body that is not JSON and not UTF-8, with an unusual content type: kept as is.
    let bodies: Vec<(Vec<u8>, &str)> = vec![
        (br#"{"user":{"id":1}}"#.to_vec(), "application/json"),
        (
            vec![0, 159, 146, 150, 255, b'\n'],
            "application/octet-stream",
        ),
        (
            b"a=1&b=2".to_vec(),
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
    ];
    let mut ids = Vec::new();
    for (i, (body, ct)) in bodies.iter().enumerate() {
        let req = Request::new("POST", "/v1/events/user.created")
            .bearer(&token)
            .header("content-type", ct)
            .body(body.clone());
        let res = match i {
            0 => req.send_plain(gw.addrs.plain).await.unwrap(),
            1 => req.send_tls(gw.addrs.tls, &cert, Alpn::H1).await.unwrap(),
            _ => req.send_tls(gw.addrs.tls, &cert, Alpn::H2).await.unwrap(),
        };
        assert_eq!(res.status, 202, "{}", res.text());
        if i == 2 {
            assert_eq!(res.version, hyper::Version::HTTP_2);
        }
        let v = res.json();
        assert_eq!(v["event_type"], "user.created");
        assert_eq!(v["duplicate"], false);
        let id = v["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("evt_"));
        assert!(res.header("x-request-id").is_some());
        ids.push(id);
    }
    let redis = RedisServer::shared().client().await;
    let events = all_events(&redis, &gw.prefix).await;
    assert_eq!(events.len(), 3);
    for (id, (body, ct)) in ids.iter().zip(&bodies) {
        let (_, e) = events
            .iter()
            .find(|(_, e)| e.id.as_str() == id.as_str())
            .expect("an event for each id");
        assert_eq!(&e.body[..], &body[..]);
        assert_eq!(e.content_type.as_deref(), Some(ct.as_bytes()));
        assert_eq!(e.event_type.as_str(), "user.created");
        assert_eq!(e.tenant.as_str(), tenant);
    }
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn one_tenants_events_stay_in_one_shard_in_order() {
    let gw = Gateway::start("order").await;
    let (_, token) = gw.tenant("acme").await;
    for i in 0..20 {
        let res = gw
            .post_event(&token, "seq", format!("{i}").as_bytes())
            .await;
        assert_eq!(res.status, 202);
    }
    let redis = RedisServer::shared().client().await;
    let mut non_empty = 0;
    for shard in 0..4 {
        let events = support::stream_events(&redis, &gw.stream(shard)).await;
        if events.is_empty() {
            continue;
        }
        non_empty += 1;
        let bodies: Vec<String> = events
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect();
        let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert_eq!(bodies, expected);
    }
    assert_eq!(non_empty, 1, "a tenant's events must all go to one shard");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn bad_credentials_get_401_with_error_json() {
    let gw = Gateway::start("auth").await;
    let (tenant, token) = gw.tenant("acme").await;
    let cases = [
        (None, "missing_token"),
        (
            Some("Basic dXNlcjpwYXNz".to_owned()),
            "malformed_authorization",
        ),
        (Some("Bearer".to_owned()), "malformed_authorization"),
        (
            Some("Bearer est_not-a-real-token".to_owned()),
            "invalid_token",
        ),
        (Some(format!("Bearer {token}x")), "invalid_token"),
    ];
    for (header, code) in cases {
        let mut req = Request::new("POST", "/v1/events/a").body("{}");
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let res = req.send_plain(gw.addrs.plain).await.unwrap();
        assert_eq!(res.status, 401, "{header:?}");
        assert!(res.is_error(code), "{header:?}: {}", res.text());
        assert_eq!(res.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    // Revoked: issue a second token, revoke the first.
    let second = gw
        .admin("POST", &format!("/admin/tenants/{tenant}/tokens"), None)
        .await;
    assert_eq!(second.status, 201);
    let list = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/tokens"), None)
        .await
        .json();
    let first_id = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .find(|id| *id != second.json()["id"])
        .unwrap();
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    let revoked = gw
        .admin(
            "DELETE",
            &format!("/admin/tenants/{tenant}/tokens/{first_id}"),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);
    let res = gw.post_event(&token, "a", b"{}").await;
    assert_eq!(res.status, 401);
    assert!(res.is_error("invalid_token"));
    let new_token = second.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(gw.post_event(&new_token, "a", b"{}").await.status, 202);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn disabled_tenant_gets_403_and_enabled_again_202() {
    let gw = Gateway::start("disabled").await;
    let (tenant, token) = gw.tenant("acme").await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["active"], false);
    let res = gw.post_event(&token, "a", b"{}").await;
    assert_eq!(res.status, 403);
    assert!(res.is_error("tenant_disabled"));
    gw.admin(
        "PATCH",
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"active": true})),
    )
    .await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn body_caps_and_event_type_rules() {
    let gw = Gateway::start("caps").await;
    let (_, token) = gw.tenant("acme").await;
    // The test config caps bodies at 65536 bytes.
    assert_eq!(
        gw.post_event(&token, "big", &vec![b'x'; 65536])
            .await
            .status,
        202
    );
    let res = gw.post_event(&token, "big", &vec![b'x'; 65537]).await;
    assert_eq!(res.status, 413);
    assert!(res.is_error("payload_too_large"));
    for bad in ["bad%20type!", "a%2Fb", &"x".repeat(129)] {
        let res = gw.post_event(&token, bad, b"{}").await;
        assert_eq!(res.status, 400, "{bad}");
        assert!(res.is_error("invalid_event_type"));
    }
    assert_eq!(
        gw.post_event(&token, &"x".repeat(128), b"{}").await.status,
        202
    );
    // An empty body is an event too.
    assert_eq!(gw.post_event(&token, "ping", b"").await.status, 202);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_error_json() {
    let gw = Gateway::start("routes").await;
    let res = Request::get("/v1/nothing")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(res.status, 404);
    assert!(res.is_error("not_found"));
    let res = Request::new("PUT", "/v1/events/x")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(res.status, 405);
    assert!(res.is_error("method_not_allowed"));
    let res = Request::get("/healthz")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn idempotency_key_returns_first_id_and_writes_once() {
    let gw = Gateway::start("idem").await;
    let (_, token) = gw.tenant("acme").await;
    let (_, other) = gw.tenant("other").await;
    let send = |token: String, key: &'static str, body: &'static str| {
        let addr = gw.addrs.plain;
        async move {
            Request::new("POST", "/v1/events/order.paid")
                .bearer(&token)
                .header("idempotency-key", key)
                .body(body)
                .send_plain(addr)
                .await
                .unwrap()
        }
    };
    let first = send(token.clone(), "k-1", "{\"a\":1}").await;
    assert_eq!(first.status, 202);
    assert_eq!(first.json()["duplicate"], false);
    let again = send(token.clone(), "k-1", "{\"a\":1}").await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["id"], first.json()["id"]);
    // Same key, different request: refused rather than silently answered with another event.
    let conflict = send(token.clone(), "k-1", "{\"a\":2}").await;
    assert_eq!(conflict.status, 409);
    assert!(conflict.is_error("idempotency_key_reused"));
    // Keys are per tenant.
    let theirs = send(other.clone(), "k-1", "{\"a\":1}").await;
    assert_eq!(theirs.status, 202);
    assert_eq!(theirs.json()["duplicate"], false);
    assert_ne!(theirs.json()["id"], first.json()["id"]);

    let redis = RedisServer::shared().client().await;
    assert_eq!(
        all_events(&redis, &gw.prefix).await.len(),
        2,
        "one event per tenant"
    );
    // Concurrent repeats of a fresh key still write once.
    let results =
        futures_util::future::join_all((0..20).map(|_| send(token.clone(), "k-2", "x"))).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        results
            .iter()
            .filter(|r| r.json()["duplicate"] == false)
            .count(),
        1
    );
    assert_eq!(all_events(&redis, &gw.prefix).await.len(), 3);
    let bad = Request::new("POST", "/v1/events/x")
        .bearer(&token)
        .header("idempotency-key", &"k".repeat(300))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let gw = Gateway::start("rate").await;
    let (tenant, token) = gw
        .tenant_with(json!({"name": "slow", "rate_limit": {"per_second": 1, "burst": 3}}))
        .await;
    let (_, free) = gw.tenant("free").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = gw.post_event(&token, "a", b"{}").await;
        if res.status == 429 {
            assert!(res.is_error("rate_limited"));
            let after: u64 = res.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=2).contains(&after), "Retry-After {after}");
        }
        statuses.push(res.status);
    }
    assert_eq!(statuses, vec![202, 202, 202, 429, 429]);
    // Other tenants are not affected.
    for _ in 0..10 {
        assert_eq!(gw.post_event(&free, "a", b"{}").await.status, 202);
    }
    // Raising the limit takes effect.
    gw.admin(
        "PATCH",
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"rate_limit": {"per_second": 1000, "burst": 100}})),
    )
    .await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn default_rate_limit_applies_to_tenants_without_one() {
    let prefix = support::unique_prefix("defrate");
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &prefix,
        "[edge.default_rate_limit]\nper_second = 0.5\nburst = 2",
    )
    .await;
    let (_, token) = gw.tenant("acme").await;
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..3).map(|_| gw.post_event(&token, "a", b"{}")))
            .await
            .iter()
            .map(|r| r.status)
            .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 2);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1);
    gw.stop().await.unwrap();
}
