//! The dispatcher end to end: events posted to the edge reach real HTTP receivers on loopback,
//! signed; failures retry, park in the error queue and replay; tenants stay apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use fred::prelude::*;
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

const FAST_RETRIES: &str = r#"
[dispatch]
request_timeout_ms = 1000
reclaim_idle_ms = 6000
retry_poll_ms = 20
retry = { initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 300, max_attempts = 4 }
"#;

async fn gateway(name: &str) -> Gateway {
    Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix(name),
        FAST_RETRIES,
    )
    .await
}

async fn target(gw: &Gateway, tenant: &str, body: Json) -> Json {
    gw.create_target(tenant, body).await
}

async fn post(gw: &Gateway, token: &str, event_type: &str, body: &[u8]) -> String {
    gw.post_ok(token, event_type, body).await
}

/// Independent Standard Webhooks verification (not the gateway's signing code).
fn verify(secret: &str, id: &str, ts: &str, body: &[u8], header: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    header.split(' ').any(|s| s == expected)
}

async fn stats(gw: &Gateway, tenant: &str) -> Json {
    gw.admin("GET", &format!("/admin/tenants/{tenant}/stats"), None)
        .await
        .json()
}

/// The tenant's error queue, as the admin API answers it (`{"data": […]}`).
async fn dead_letters(gw: &Gateway, tenant: &str) -> Json {
    gw.admin(
        "GET",
        &format!("/admin/tenants/{tenant}/dead-letters"),
        None,
    )
    .await
    .json()
}

async fn event_view(gw: &Gateway, tenant: &str, id: &str) -> Json {
    let r = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/events/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn fans_out_by_pattern_signed_with_body_and_headers_intact() {
    let gw = gateway("fanout").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let orders = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/orders"), "events": ["order.*"],
        "headers": {"X-Route": "blue"}, "auth": {"bearer": "receiver-secret"}}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/paid"), "events": ["order.paid"]}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/users"), "events": ["user.*"]}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/all"), "events": ["*"]}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/off"), "events": ["*"], "active": false}),
    )
    .await;
    assert!(orders["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        orders["auth"]["bearer"], "***",
        "credentials are never shown back"
    );

    let body = br#"{"order": 42, "note": "caf\u00e9"}"#;
    let paid = post(&gw, &token, "order.paid", body).await;
    let created = post(&gw, &token, "user.created", b"plain text").await;

    eventually(Duration::from_secs(10), "all deliveries", || async {
        sink.count("/orders") == 1
            && sink.count("/paid") == 1
            && sink.count("/users") == 1
            && sink.count("/all") == 2
    })
    .await;
    gw.settled().await;
    assert_eq!(sink.count("/orders"), 1, "no duplicate");
    assert_eq!(sink.count("/off"), 0, "inactive targets get nothing");

    let got = &sink.received("/orders")[0];
    assert_eq!(&got.body[..], body, "raw body byte for byte");
    assert_eq!(
        got.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(got.header("webhook-id").as_deref(), Some(paid.as_str()));
    assert_eq!(
        got.header("estafeta-event-type").as_deref(),
        Some("order.paid")
    );
    assert_eq!(got.header("x-route").as_deref(), Some("blue"));
    assert_eq!(
        got.header("authorization").as_deref(),
        Some("Bearer receiver-secret")
    );
    let ts = got.header("webhook-timestamp").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((ts.parse::<i64>().unwrap() - now).abs() < 30);
    let sig = got.header("webhook-signature").unwrap();
    assert!(
        verify(orders["secret"].as_str().unwrap(), &paid, &ts, body, &sig),
        "signature {sig}"
    );
    assert!(!verify(
        orders["secret"].as_str().unwrap(),
        &paid,
        &ts,
        b"tampered",
        &sig
    ));

    let users = &sink.received("/users")[0];
    assert_eq!(
        users.header("webhook-id").as_deref(),
        Some(created.as_str())
    );
    assert_eq!(&users.body[..], b"plain text");

    eventually(
        Duration::from_secs(5),
        "delivery view shows success",
        || async {
            let v = event_view(&gw, &tenant, &paid).await;
            let d = v["deliveries"].as_array().cloned().unwrap_or_default();
            d.len() == 3
                && d.iter().all(|d| {
                    d["state"] == "succeeded" && d["attempts"] == 1 && d["last_status"] == 200
                })
        },
    )
    .await;
    let tenant_view = support::http::Request::get(&format!("/v1/events/{paid}"))
        .bearer(&token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(tenant_view.status, 200, "{}", tenant_view.text());
    assert_eq!(tenant_view.json()["event_type"], "order.paid");
    let stats = stats(&gw, &tenant).await;
    assert_eq!(stats["events_received"], 2);
    assert_eq!(stats["deliveries_succeeded"], 5);
    assert_eq!(stats["deliveries_failed"], 0);
}

#[tokio::test]
async fn retries_with_backoff_until_success() {
    let gw = gateway("retry").await;
    let sink = Sink::start().await;
    sink.plan(
        "/flaky",
        vec![Reply::Status(500), Reply::Status(503)],
        Reply::Status(200),
    );
    let (tenant, token) = gw.tenant("acme").await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/flaky"), "events": ["*"]}),
    )
    .await;
    let id = post(&gw, &token, "a.b", b"{}").await;
    eventually(
        Duration::from_secs(10),
        "third attempt succeeds",
        || async { sink.count("/flaky") == 3 },
    )
    .await;
    let got = sink.received("/flaky");
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id").as_deref() == Some(id.as_str())),
        "webhook-id is stable across retries"
    );
    eventually(Duration::from_secs(5), "recorded as succeeded", || async {
        let v = event_view(&gw, &tenant, &id).await;
        v["deliveries"][0]["state"] == "succeeded" && v["deliveries"][0]["attempts"] == 3
    })
    .await;
    let v = event_view(&gw, &tenant, &id).await;
    let statuses: Vec<Json> = v["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(503), json!(200)]);
    gw.settled().await;
    assert_eq!(sink.count("/flaky"), 3, "nothing after success");
    let stats = stats(&gw, &tenant).await;
    assert_eq!(stats["in_retry"], 0);
    assert_eq!(stats["deliveries_succeeded"], 1);
}

#[tokio::test]
async fn final_failures_go_to_the_error_queue_and_replay_delivers() {
    let gw = gateway("dlq").await;
    let sink = Sink::start().await;
    sink.plan("/bad", vec![], Reply::Status(400));
    sink.plan("/down", vec![], Reply::Status(500));
    let (tenant, token) = gw.tenant("acme").await;
    let bad = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/bad"), "events": ["x"]}),
    )
    .await;
    let down = target(&gw, &tenant, json!({"url": sink.url("/down"), "events": ["x"],
        "retry": {"initial_delay_ms": 20, "multiplier": 1.0, "max_delay_ms": 20, "max_attempts": 3}})).await;
    let id = post(&gw, &token, "x", b"{\"n\":1}").await;

    let list = || async {
        dead_letters(&gw, &tenant).await["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually(
        Duration::from_secs(10),
        "both in the error queue",
        || async { list().await.len() == 2 },
    )
    .await;
    assert_eq!(sink.count("/bad"), 1, "a 400 is not retried");
    assert_eq!(sink.count("/down"), 3, "max_attempts honoured");
    let entries = list().await;
    let bad_entry = entries
        .iter()
        .find(|e| e["target_id"] == bad["id"])
        .unwrap();
    assert_eq!(bad_entry["event_id"], id.as_str());
    assert_eq!(bad_entry["event_type"], "x");
    assert_eq!(bad_entry["attempts"], 1);
    assert_eq!(bad_entry["last_status"], 400);
    let down_entry = entries
        .iter()
        .find(|e| e["target_id"] == down["id"])
        .unwrap();
    assert_eq!(down_entry["attempts"], 3);
    assert_eq!(down_entry["last_status"], 500);
    let filtered = gw
        .admin(
            "GET",
            &format!(
                "/admin/tenants/{tenant}/dead-letters?target_id={}",
                bad["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(filtered.json()["data"].as_array().unwrap().len(), 1);
    let stats = stats(&gw, &tenant).await;
    assert_eq!(stats["dead_letters"], 2);
    assert_eq!(stats["deliveries_failed"], 2);

    // The receivers are fixed; replay one by id through the tenant's own API, the rest by target.
    sink.plan("/bad", vec![], Reply::Status(200));
    sink.plan("/down", vec![], Reply::Status(200));
    let r = support::http::Request::new("POST", "/v1/dead-letters/replay")
        .bearer(&token)
        .json(&json!({"ids": [bad_entry["id"]]}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["replayed"], 1);
    eventually(
        Duration::from_secs(5),
        "replayed delivery arrives",
        || async { sink.count("/bad") == 2 },
    )
    .await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/dead-letters/replay"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.json()["replayed"], 1);
    eventually(Duration::from_secs(5), "second replay arrives", || async {
        sink.count("/down") == 4
    })
    .await;
    assert_eq!(
        &sink.received("/down")[3].body[..],
        b"{\"n\":1}",
        "the body survives in the error queue"
    );
    eventually(Duration::from_secs(5), "error queue empty", || async {
        list().await.is_empty()
    })
    .await;
    eventually(Duration::from_secs(5), "state succeeded", || async {
        let v = event_view(&gw, &tenant, &id).await;
        v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["state"] == "succeeded")
    })
    .await;
}

#[tokio::test]
async fn gone_disables_and_retry_after_is_honoured() {
    let gw = gateway("gone").await;
    let sink = Sink::start().await;
    sink.plan("/gone", vec![], Reply::Status(410));
    sink.plan("/busy", vec![Reply::RetryAfter(429, 1)], Reply::Status(200));
    let (tenant, token) = gw.tenant("acme").await;
    let gone = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/gone"), "events": ["*"]}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/busy"), "events": ["*"]}),
    )
    .await;
    post(&gw, &token, "e", b"1").await;
    eventually(Duration::from_secs(10), "busy target retried", || async {
        sink.count("/busy") == 2
    })
    .await;
    let busy = sink.received("/busy");
    let gap = busy[1].at - busy[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 honoured, retried after {gap:?}"
    );
    let path = format!(
        "/admin/tenants/{tenant}/targets/{}",
        gone["id"].as_str().unwrap()
    );
    eventually(
        Duration::from_secs(5),
        "410 disables the target",
        || async {
            let t = gw.admin("GET", &path, None).await.json();
            t["active"] == false && t["disabled_reason"] == "gone"
        },
    )
    .await;
    post(&gw, &token, "e", b"2").await;
    eventually(
        Duration::from_secs(5),
        "busy gets the next event",
        || async { sink.count("/busy") == 3 },
    )
    .await;
    assert_eq!(
        sink.count("/gone"),
        1,
        "a disabled target gets nothing more"
    );
    // Enabling it again clears the reason.
    let r = gw
        .admin("PATCH", &path, Some(json!({"active": true})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["disabled_reason"], Json::Null);
}

#[tokio::test]
async fn modes_once_and_fire_and_forget() {
    let gw = gateway("modes").await;
    let sink = Sink::start().await;
    sink.plan("/once", vec![], Reply::Status(503));
    sink.plan("/ff", vec![], Reply::Status(500));
    let (tenant, token) = gw.tenant("acme").await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/once"), "events": ["*"], "mode": "once"}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ff"), "events": ["*"], "mode": "fire_and_forget"}),
    )
    .await;
    post(&gw, &token, "e", b"{}").await;
    eventually(
        Duration::from_secs(10),
        "once-mode failure parked",
        || async {
            dead_letters(&gw, &tenant).await["data"]
                .as_array()
                .map(|a| a.len())
                == Some(1)
        },
    )
    .await;
    eventually(Duration::from_secs(5), "fire-and-forget sent", || async {
        sink.count("/ff") == 1
    })
    .await;
    gw.settled().await;
    assert_eq!(sink.count("/once"), 1, "once means one attempt");
    assert_eq!(sink.count("/ff"), 1, "fire-and-forget is never retried");
    let dl = dead_letters(&gw, &tenant).await;
    assert_eq!(
        dl["data"][0]["last_status"], 503,
        "only the once target is in the error queue"
    );
}

#[tokio::test]
async fn a_hanging_target_times_out_without_stalling_others() {
    let gw = gateway("hang").await;
    let sink = Sink::start().await;
    sink.plan("/hang", vec![], Reply::Hang);
    let (tenant, token) = gw.tenant("acme").await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/hang"), "events": ["*"], "mode": "once"}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["*"]}),
    )
    .await;
    let started = Instant::now();
    let id = post(&gw, &token, "e", b"{}").await;
    eventually(
        Duration::from_secs(5),
        "the healthy target is served",
        || async { sink.count("/ok") == 1 },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "served before the hanging one timed out"
    );
    eventually(
        Duration::from_secs(5),
        "the hanging attempt timed out",
        || async {
            let v = event_view(&gw, &tenant, &id).await;
            v["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["error"].as_str().is_some_and(|e| e.contains("timed out")))
        },
    )
    .await;
}

#[tokio::test]
async fn secret_rotation_signs_with_both_secrets_during_the_overlap() {
    let gw = gateway("rotate").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/r"), "events": ["*"]}),
    )
    .await;
    let old = t["secret"].as_str().unwrap().to_owned();
    let r = gw
        .admin(
            "POST",
            &format!(
                "/admin/tenants/{tenant}/targets/{}/rotate-secret",
                t["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new = r.json()["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    let id = post(&gw, &token, "e", b"{}").await;
    eventually(Duration::from_secs(5), "delivered", || async {
        sink.count("/r") == 1
    })
    .await;
    let got = &sink.received("/r")[0];
    let (ts, sig) = (
        got.header("webhook-timestamp").unwrap(),
        got.header("webhook-signature").unwrap(),
    );
    assert_eq!(sig.split(' ').count(), 2);
    assert!(verify(&old, &id, &ts, b"{}", &sig) && verify(&new, &id, &ts, b"{}", &sig));
}

#[tokio::test]
async fn tenants_cannot_reach_each_other() {
    let gw = gateway("isolation").await;
    let sink = Sink::start().await;
    sink.plan("/a", vec![], Reply::Status(400));
    let (a, a_token) = gw.tenant("a").await;
    let (_b, b_token) = gw.tenant("b").await;
    let ta = target(&gw, &a, json!({"url": sink.url("/a"), "events": ["*"]})).await;
    let event = post(&gw, &a_token, "e", b"{}").await;
    eventually(
        Duration::from_secs(5),
        "a's error queue has the entry",
        || async {
            dead_letters(&gw, &a).await["data"]
                .as_array()
                .map(|a| a.len())
                == Some(1)
        },
    )
    .await;
    let dl = dead_letters(&gw, &a).await;
    let dl_id = dl["data"][0]["id"].as_str().unwrap().to_owned();
    let as_b = |method: &str, path: String| {
        let token = b_token.clone();
        let method = method.to_owned();
        async move {
            support::http::Request::new(&method, &path)
                .bearer(&token)
                .header("content-type", "application/json")
                .body(b"{}".to_vec())
                .send_plain(gw.addrs.plain)
                .await
                .unwrap()
        }
    };
    let tid = ta["id"].as_str().unwrap();
    assert_eq!(as_b("GET", format!("/v1/targets/{tid}")).await.status, 404);
    assert_eq!(
        as_b("PATCH", format!("/v1/targets/{tid}")).await.status,
        404
    );
    assert_eq!(
        as_b("DELETE", format!("/v1/targets/{tid}")).await.status,
        404
    );
    assert_eq!(
        as_b("POST", format!("/v1/targets/{tid}/rotate-secret"))
            .await
            .status,
        404
    );
    assert_eq!(as_b("GET", format!("/v1/events/{event}")).await.status, 404);
    assert_eq!(
        as_b("DELETE", format!("/v1/dead-letters/{dl_id}"))
            .await
            .status,
        404
    );
    let listed = as_b("GET", "/v1/targets".into()).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
    let dlq = as_b("GET", "/v1/dead-letters".into()).await.json();
    assert_eq!(dlq["data"].as_array().unwrap().len(), 0);
    let replay = support::http::Request::new("POST", "/v1/dead-letters/replay")
        .bearer(&b_token)
        .json(&json!({"ids": [dl_id]}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(replay.status, 404, "another tenant's id is not found");
    assert_eq!(replay.json()["error"]["code"], "not_found");
    let still = dead_letters(&gw, &a).await;
    assert_eq!(
        still["data"].as_array().unwrap().len(),
        1,
        "b's replay touched nothing of a's"
    );
    // Without a token: 401, as everywhere.
    let anon = support::http::Request::get("/v1/targets")
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(anon.status, 401);
}

#[tokio::test]
async fn bad_target_definitions_are_refused_with_clear_errors() {
    let gw = Gateway::start_edited(
        &RedisServer::shared().url(),
        &unique_prefix("ssrf"),
        "",
        Arc::new(support::certs()),
        |t| {
            t.replace(
                "allow_private_targets = true",
                "allow_private_targets = false",
            )
        },
    )
    .await;
    let (tenant, token) = gw.tenant("acme").await;
    let mut refused: Vec<(String, &str)> = [
        ("http://127.0.0.1:9/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "private"),
        ("http://[::1]/x", "private"),
        ("http://10.0.0.8/x", "private"),
        ("http://localhost:8080/x", "private"),
        // Numeric forms the resolver reads as IPv4, and IPv6 forms that embed IPv4.
        ("http://2130706433/", "private"),
        ("http://0x7f000001/", "private"),
        ("http://0177.0.0.1/", "private"),
        ("http://127.1/", "private"),
        ("http://0/", "private"),
        ("http://0xa9fea9fe/", "private"),
        ("http://0251.0376.0251.0376/", "private"),
        ("http://10.1/", "private"),
        ("http://localhost./", "private"),
        ("http://[::127.0.0.1]/", "private"),
        ("http://[::10.0.0.1]/", "private"),
        ("http://[::a9fe:a9fe]/", "private"),
        ("ftp://example.com/x", "http or https"),
        ("not a url", "valid"),
    ]
    .into_iter()
    .map(|(url, why)| (url.to_owned(), why))
    .collect();
    // A name this machine resolves to a loopback address (its own host name, from
    // /etc/hosts) is refused at creation.
    let name = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .map(|a| a.collect())
        .unwrap_or_default();
    if resolved.iter().any(|a| a.ip().is_loopback()) {
        refused.push((format!("http://{name}:9/x"), "resolves to a private"));
    }
    for (url, why) in refused {
        let r = gw
            .admin(
                "POST",
                &format!("/admin/tenants/{tenant}/targets"),
                Some(json!({"url": url, "events": ["*"]})),
            )
            .await;
        assert_eq!(r.status, 400, "{url}: {}", r.text());
        assert!(
            r.json()["error"]["message"].as_str().unwrap().contains(why),
            "{url}: {}",
            r.text()
        );
    }
    for (body, why) in [
        (
            json!({"url": "https://example.com", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com", "events": ["a*"]}),
            "pattern",
        ),
        (
            json!({"url": "https://example.com", "events": ["*"], "mode": "sometimes"}),
            "mode",
        ),
        (
            json!({"url": "https://example.com", "events": ["*"], "headers": {"Webhook-Signature": "x"}}),
            "set by the gateway",
        ),
        (
            json!({"url": "https://example.com", "events": ["*"], "retry": {"max_attempts": 0}}),
            "max_attempts",
        ),
        (
            json!({"url": "https://example.com", "events": ["*"], "surprise": 1}),
            "surprise",
        ),
    ] {
        let r = support::http::Request::new("POST", "/v1/targets")
            .bearer(&token)
            .json(&body)
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.text().contains(why), "{body}: {}", r.text());
    }
    let ok = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets"),
            Some(json!({"url": "https://example.com/hook", "events": ["*"]})),
        )
        .await;
    assert_eq!(ok.status, 201);
    let moved = gw
        .admin(
            "PATCH",
            &format!(
                "/admin/tenants/{tenant}/targets/{}",
                ok.json()["id"].as_str().unwrap()
            ),
            Some(json!({"url": "http://192.168.0.1/"})),
        )
        .await;
    assert_eq!(
        moved.status,
        400,
        "an update is checked too: {}",
        moved.text()
    );
}

#[tokio::test]
async fn an_event_written_twice_is_delivered_once() {
    let gw = gateway("dupe").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/d"), "events": ["*"]}),
    )
    .await;
    let id = post(&gw, &token, "e", b"{}").await;
    eventually(Duration::from_secs(5), "delivered", || async {
        sink.count("/d") == 1
    })
    .await;
    // What a client library re-sending the XADD after a reconnect produces: a second entry
    // holding the same event id.
    let redis = RedisServer::shared().client().await;
    let (shard, event) = support::all_events(&redis, &gw.prefix)
        .await
        .into_iter()
        .find(|(_, e)| e.id.as_str() == id)
        .unwrap();
    let _: String = redis
        .xadd(
            gw.stream(shard),
            false,
            None,
            "*",
            vec![
                ("v", "1"),
                ("id", event.id.as_str()),
                ("tenant", event.tenant.as_str()),
                ("type", "e"),
                ("ct", ""),
                ("body", "{}"),
            ],
        )
        .await
        .unwrap();
    gw.settled().await;
    assert_eq!(sink.count("/d"), 1, "the repeat is not expanded again");
}

#[tokio::test]
async fn targets_are_managed_by_the_tenant_itself() {
    let gw = gateway("selfserve").await;
    let sink = Sink::start().await;
    let (_tenant, token) = gw.tenant("acme").await;
    let call = |method: &str, path: &str, body: Option<Json>| {
        let mut r = support::http::Request::new(method, path).bearer(&token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let addr = gw.addrs.plain;
        async move { r.send_plain(addr).await.unwrap() }
    };
    let created = call(
        "POST",
        "/v1/targets",
        Some(json!({"url": sink.url("/mine"), "events": ["a.*"]})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let listed = call("GET", "/v1/targets", None).await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown at creation only"
    );
    let patched = call(
        "PATCH",
        &format!("/v1/targets/{id}"),
        Some(json!({"events": ["b.*"]})),
    )
    .await;
    assert_eq!(patched.json()["events"], json!(["b.*"]));
    post(&gw, &token, "a.x", b"1").await;
    post(&gw, &token, "b.x", b"2").await;
    eventually(
        Duration::from_secs(5),
        "the updated filter applies",
        || async { sink.count("/mine") == 1 },
    )
    .await;
    assert_eq!(&sink.received("/mine")[0].body[..], b"2");
    assert_eq!(
        call("DELETE", &format!("/v1/targets/{id}"), None)
            .await
            .status,
        204
    );
    assert_eq!(
        call("GET", &format!("/v1/targets/{id}"), None).await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_to_a_slow_target_does_not_hold_back_another_tenant() {
    let gw = gateway("fair").await;
    let sink = Sink::start().await;
    sink.plan(
        "/slow",
        vec![],
        Reply::Slow(Duration::from_millis(200), 200),
    );
    let (a, _) = gw.tenant("big").await;
    // Another shard than a's, so b's events are not queued behind a's in one stream.
    let shard_a =
        estafeta::redis::keyspace::shard_of(&estafeta::model::TenantId::parse(&a).unwrap(), 4);
    let (b, b_token) = loop {
        let (b, t) = gw.tenant("small").await;
        if estafeta::redis::keyspace::shard_of(&estafeta::model::TenantId::parse(&b).unwrap(), 4)
            != shard_a
        {
            break (b, t);
        }
    };
    target(&gw, &a, json!({"url": sink.url("/slow"), "events": ["*"]})).await;
    target(&gw, &b, json!({"url": sink.url("/fast"), "events": ["*"]})).await;

    // a's backlog: 100 000 events written straight into its stream, as the edge writes them.
    const BACKLOG: usize = 100_000;
    let redis = RedisServer::shared().client().await;
    let stream = gw.stream(shard_a);
    let pipeline = redis.pipeline();
    for batch in 0..BACKLOG / 500 {
        let mut fields: Vec<(String, String)> = vec![("v".into(), "1".into())];
        for i in 0..500 {
            let id = format!("evt_{}", ulid::Ulid::new());
            fields.extend([
                ("id".into(), id),
                ("tenant".into(), a.clone()),
                ("type".into(), "bulk".into()),
                ("ct".into(), "application/json".into()),
                ("body".into(), format!("{{\"b\":{batch},\"i\":{i}}}")),
            ]);
        }
        let _: () = pipeline
            .xadd(stream.as_str(), false, None, "*", fields)
            .await
            .unwrap();
    }
    let _: Vec<String> = pipeline.all().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the slow target is busy with the backlog",
        || async { sink.count("/slow") > 50 },
    )
    .await;

    let mut latencies = Vec::new();
    for i in 0..20 {
        let sent = Instant::now();
        post(&gw, &b_token, "small.event", format!("{i}").as_bytes()).await;
        eventually(Duration::from_secs(10), "b's event delivered", || async {
            sink.count("/fast") > i
        })
        .await;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    eprintln!(
        "tenant b, beside a 100k backlog to a slow target: p50 {:?}, max {:?}; slow target received {}",
        latencies[10],
        latencies[19],
        sink.count("/slow")
    );
    // Queued behind a's backlog b would wait minutes (100 000 events at 32 × 5/s); it is served
    // at once. The bound is loose on purpose: this is a debug build on a shared machine.
    assert!(
        latencies[19] < Duration::from_secs(1),
        "b was held back: {latencies:?}"
    );
    let stats = stats(&gw, &b).await;
    assert_eq!(stats["deliveries_succeeded"], 20);
}

#[tokio::test]
async fn an_ordered_target_gets_events_in_order_and_a_failing_head_blocks_only_it() {
    let gw = gateway("ordered").await;
    let sink = Sink::start().await;
    sink.plan(
        "/ordered",
        vec![Reply::Status(503), Reply::Status(503)],
        Reply::Status(200),
    );
    let (tenant, token) = gw.tenant("acme").await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ordered"), "events": ["*"], "ordered": true}),
    )
    .await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/other"), "events": ["*"]}),
    )
    .await;
    for i in 0..20 {
        post(&gw, &token, "seq", format!("{i}").as_bytes()).await;
    }
    eventually(
        Duration::from_secs(5),
        "the unordered target is not blocked",
        || async { sink.count("/other") == 20 },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the ordered target catches up",
        || async { sink.count("/ordered") == 22 },
    )
    .await;
    let bodies: Vec<String> = sink
        .received("/ordered")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let mut expected: Vec<String> = vec!["0".into(), "0".into()];
    expected.extend((0..20).map(|i| i.to_string()));
    assert_eq!(
        bodies, expected,
        "the head is retried first, then the rest in order"
    );
}

#[tokio::test]
async fn targets_declared_in_the_config_are_applied_idempotently() {
    let sink = Sink::start().await;
    let prefix = unique_prefix("declared");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let token = "declared-tenant-token-0123456789abcdef";
    let config = |path: &str| {
        format!(
            r#"{FAST_RETRIES}
[[tenants]]
id = "shop"
name = "Shop"
token = "{token}"

[[tenants.targets]]
id = "shop-orders"
url = "{}"
events = ["order.*"]
secret = "{secret}"
headers = {{ "X-From" = "config" }}
"#,
            sink.url(path)
        )
    };
    let certs = Arc::new(support::certs());
    let gw = Gateway::start_full(
        &RedisServer::shared().url(),
        &prefix,
        &config("/v1"),
        certs.clone(),
    )
    .await;
    let id = post(&gw, token, "order.paid", b"{}").await;
    eventually(
        Duration::from_secs(5),
        "delivered to the declared target",
        || async { sink.count("/v1") == 1 },
    )
    .await;
    let got = &sink.received("/v1")[0];
    assert_eq!(got.header("x-from").as_deref(), Some("config"));
    let (ts, sig) = (
        got.header("webhook-timestamp").unwrap(),
        got.header("webhook-signature").unwrap(),
    );
    assert!(
        verify(secret, &id, &ts, b"{}", &sig),
        "signed with the declared secret"
    );
    gw.stop().await.unwrap();

    // Started again with the target moved: updated in place, not duplicated.
    let gw =
        Gateway::start_full(&RedisServer::shared().url(), &prefix, &config("/v2"), certs).await;
    let listed = gw
        .admin("GET", "/admin/tenants/shop/targets", None)
        .await
        .json();
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "shop-orders");
    assert_eq!(data[0]["url"], sink.url("/v2").as_str());
    post(&gw, token, "order.paid", b"{}").await;
    eventually(
        Duration::from_secs(5),
        "delivered to the moved target",
        || async { sink.count("/v2") == 1 },
    )
    .await;
    assert_eq!(sink.count("/v1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_log_store_listings_read_redis_with_the_same_filters_and_pages() {
    let gw = gateway("listing").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let (_other, other_token) = gw.tenant("other").await;
    let ok = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["order.*"]}),
    )
    .await;
    let ok = ok["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(post(&gw, &token, "order.paid", format!("{i}").as_bytes()).await);
    }
    ids.push(post(&gw, &token, "user.created", b"u").await);
    post(&gw, &other_token, "order.paid", b"not yours").await;
    eventually(Duration::from_secs(10), "delivered", || async {
        sink.count("/ok") == 5
    })
    .await;
    let get = async |path: String| {
        let r = gw.get_as(&token, &path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    };
    let ids_of = |v: &Json| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut newest_first = ids.clone();
    newest_first.reverse();
    let mut seen = Vec::new();
    let mut v = get("/v1/events?limit=4".into()).await;
    seen.extend(ids_of(&v));
    while let Some(next) = v["next"].as_str().map(str::to_owned) {
        v = get(format!("/v1/events?limit=4&before={next}")).await;
        seen.extend(ids_of(&v));
    }
    assert_eq!(
        seen, newest_first,
        "the tenant's events only, newest first, once each"
    );
    let v = get("/v1/events?status=no_targets".into()).await;
    assert_eq!(ids_of(&v), vec![ids[5].clone()]);
    assert_eq!(v["data"][0]["event_type"], "user.created");
    let v = get(format!("/v1/events?target_id={ok}&status=succeeded")).await;
    assert_eq!(ids_of(&v).len(), 5);
    assert_eq!(v["data"][0]["deliveries"][0]["state"], "succeeded");
    let v = get("/v1/events?event_type=order.paid&status=in_progress".into()).await;
    assert_eq!(ids_of(&v), Vec::<String>::new());
    let admin = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{tenant}/events?limit=500"),
            None,
        )
        .await;
    assert_eq!(ids_of(&admin.json()).len(), 6);
    gw.stop().await.unwrap();
}

async fn listed(gw: &Gateway, token: &str, query: &str) -> Vec<Json> {
    let r = gw.get_as(token, &format!("/v1/events{query}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().cloned().unwrap_or_default()
}

/// An event that matches no target costs its share of a read and nothing more: no record in
/// Redis. It still reads back (view and listing, from its stream entry), counts as received,
/// and shows as in progress while no dispatcher has read it.
#[tokio::test]
async fn events_without_targets_leave_no_record_and_still_read_back() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix("recordless");
    let certs = Arc::new(support::certs());
    let edge = Gateway::start_as(
        estafeta::app::Role::Edge,
        &redis.url(),
        &prefix,
        "",
        certs.clone(),
        |t| t,
    )
    .await;
    let (tenant, token) = edge.tenant("quiet").await;
    let (_, other_token) = edge.tenant("other").await;
    let id = post(&edge, &token, "user.created", b"{\"n\":1}").await;
    // No dispatcher yet: the event waits for its first read.
    let rows = listed(&edge, &token, "").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["status"], "in_progress");
    let r = edge.get_as(&token, &format!("/v1/events/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let view = r.json();
    assert_eq!(view["event_type"], "user.created");
    assert_eq!(view["content_type"], "application/json");
    assert_eq!(view["deliveries"], json!([]));
    // Another tenant neither sees it nor reads it.
    assert_eq!(
        edge.get_as(&other_token, &format!("/v1/events/{id}"))
            .await
            .status,
        404
    );
    assert!(listed(&edge, &other_token, "").await.is_empty());

    // A consumer reads the entry and dies before expanding it: still in progress (the
    // dispatcher below takes the entry over once that consumer has been idle for 5 s).
    let r = redis.client().await;
    let keys = estafeta::redis::keyspace::Keyspace::new(&prefix);
    let mut read = 0;
    for shard in 0..16 {
        let stream = keys.stream(shard);
        if r.xlen::<u64, _>(&stream).await.unwrap_or(0) == 0 {
            continue;
        }
        let got: fred::types::Value = r
            .xreadgroup("dispatch", "gone", Some(10), None, false, &stream, ">")
            .await
            .unwrap();
        read += usize::from(!got.is_null());
    }
    assert_eq!(
        read, 1,
        "the event's entry read by a consumer that then died"
    );
    let rows = listed(&edge, &token, "").await;
    assert_eq!(rows[0]["status"], "in_progress", "{rows:?}");

    let all = Gateway::start_as(
        estafeta::app::Role::Dispatcher,
        &redis.url(),
        &prefix,
        "",
        certs,
        |t| t,
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the event is taken over and read",
        || async { stats(&edge, &tenant).await["events_received"] == 1 },
    )
    .await;
    let rows = listed(&edge, &token, "?status=no_targets").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["deliveries"], json!([]));
    assert!(
        listed(&edge, &token, "?status=in_progress")
            .await
            .is_empty()
    );
    assert_eq!(
        edge.get_as(&token, &format!("/v1/events/{id}"))
            .await
            .status,
        200
    );
    let keys_naming = |event: String| {
        let (r, pattern) = (r.clone(), format!("{prefix}:*{event}*"));
        async move {
            let keys: Vec<String> = r
                .custom(
                    fred::types::CustomCommand::new_static("KEYS", None, false),
                    vec![pattern],
                )
                .await
                .unwrap();
            keys
        }
    };
    let keys = keys_naming(id.clone()).await;
    assert!(keys.is_empty(), "no key names the event: {keys:?}");
    // A later event with a target is recorded as before.
    let sink = Sink::start().await;
    edge.create_target(&tenant, json!({"url": sink.url("/t"), "events": ["*"]}))
        .await;
    let routed = post(&edge, &token, "user.created", b"{}").await;
    eventually(Duration::from_secs(10), "delivered", || async {
        sink.count("/t") == 1
    })
    .await;
    let keys = keys_naming(routed).await;
    assert_eq!(keys.len(), 1, "the routed event has its record: {keys:?}");
    assert_eq!(stats(&edge, &tenant).await["events_received"], 2);
    all.stop().await.unwrap();
    edge.stop().await.unwrap();
}

/// The sums of a series answer (`{"data": [MinuteCounts…]}`): received, succeeded, failed,
/// attempts.
fn series_sums(answer: &Json) -> [u64; 4] {
    let mut sums = [0; 4];
    for row in answer["data"].as_array().into_iter().flatten() {
        for (sum, name) in sums
            .iter_mut()
            .zip(["received", "succeeded", "failed", "attempts"])
        {
            *sum += row[name].as_u64().unwrap_or(0);
        }
    }
    sums
}

/// The sums of the admin API's series at `path` once they are `want`, or after 15 s.
async fn series_settled(gw: &Gateway, path: &str, want: [u64; 4]) -> [u64; 4] {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = series_sums(&gw.admin("GET", path, None).await.json());
        if seen == want || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn minute_now() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    ms / 60_000 * 60_000
}

#[tokio::test]
async fn per_minute_series_count_each_tenant_and_all_of_them() {
    let gw = gateway("series").await;
    let sink = Sink::start().await;
    sink.plan("/down", vec![], Reply::Status(500));
    sink.plan(
        "/flaky",
        vec![Reply::Status(503), Reply::Status(503)],
        Reply::Status(200),
    );
    let (a, a_token) = gw.tenant("a").await;
    let (b, b_token) = gw.tenant("b").await;
    target(&gw, &a, json!({"url": sink.url("/ok"), "events": ["ok"]})).await;
    target(
        &gw,
        &a,
        json!({"url": sink.url("/down"), "events": ["down"], "mode": "once"}),
    )
    .await;
    target(
        &gw,
        &a,
        json!({"url": sink.url("/flaky"), "events": ["flaky"]}),
    )
    .await;
    target(&gw, &b, json!({"url": sink.url("/b"), "events": ["ok"]})).await;
    let first_minute = minute_now();

    // a: 3 delivered, 2 failing once each (final), 1 delivered on its third attempt, 1 that
    // matches no target (received only); b: 1 delivered.
    for _ in 0..3 {
        post(&gw, &a_token, "ok", b"{}").await;
    }
    for _ in 0..2 {
        post(&gw, &a_token, "down", b"{}").await;
    }
    post(&gw, &a_token, "flaky", b"{}").await;
    post(&gw, &a_token, "nobody", b"{}").await;
    post(&gw, &b_token, "ok", b"{}").await;

    let a_path = format!("/admin/tenants/{a}/stats/series?minutes=10");
    let a_want = [7, 4, 4, 8];
    let b_want = [1, 1, 0, 1];
    let b_path = format!("/admin/tenants/{b}/stats/series?minutes=10");
    assert_eq!(series_settled(&gw, &a_path, a_want).await, a_want);
    assert_eq!(series_settled(&gw, &b_path, b_want).await, b_want);
    let last_minute = minute_now();
    assert_eq!(sink.count("/flaky"), 3);

    let a_series = gw.admin("GET", &a_path, None).await;
    assert_eq!(a_series.status, 200, "{}", a_series.text());
    let rows = a_series.json()["data"].as_array().cloned().unwrap();
    assert_eq!(rows.len(), 10, "one row per minute");
    let minutes: Vec<u64> = rows
        .iter()
        .map(|r| r["minute_ms"].as_u64().unwrap())
        .collect();
    assert!(
        minutes.windows(2).all(|w| w[1] == w[0] + 60_000),
        "{minutes:?}"
    );
    let newest = *minutes.last().unwrap();
    assert!(
        newest >= last_minute && newest <= minute_now(),
        "ends at the current minute"
    );
    for row in &rows {
        let busy = row["received"].as_u64() > Some(0) || row["attempts"].as_u64() > Some(0);
        let at = row["minute_ms"].as_u64().unwrap();
        assert!(
            !busy || (first_minute..=last_minute).contains(&at),
            "counted in a minute the test did not run in: {row}"
        );
        if row["attempts"].as_u64() > Some(0) {
            assert!(row["latency_ms_sum"].is_u64(), "{row}");
        }
    }

    // The tenant's own view, and b's, each without the other's numbers.
    let own = gw.get_as(&a_token, "/v1/stats/series?minutes=10").await;
    assert_eq!(own.status, 200, "{}", own.text());
    assert_eq!(series_sums(&own.json()), a_want);
    let b_own = gw.get_as(&b_token, "/v1/stats/series?minutes=10").await;
    assert_eq!(series_sums(&b_own.json()), b_want);

    // Every tenant: the sum of both.
    let all = gw
        .admin("GET", "/admin/stats/series?minutes=10", None)
        .await;
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(series_sums(&all.json()), [8, 5, 4, 9]);

    // The default range is 3 h; the longest 48 h.
    let default = gw.get_as(&a_token, "/v1/stats/series").await;
    assert_eq!(default.json()["data"].as_array().map(Vec::len), Some(180));
    assert_eq!(series_sums(&default.json()), a_want);
    let longest = gw
        .admin("GET", "/admin/stats/series?minutes=2880", None)
        .await;
    assert_eq!(longest.json()["data"].as_array().map(Vec::len), Some(2880));
    assert_eq!(longest.json()["step_minutes"], 1);
    // Past 48 hours, a row per hour over the whole hours that cover the range.
    let week = gw
        .admin("GET", "/admin/stats/series?minutes=2881", None)
        .await;
    assert_eq!(week.json()["step_minutes"], 60, "{}", week.text());
    assert_eq!(week.json()["data"].as_array().map(Vec::len), Some(49));

    for query in [
        "minutes=0",
        "minutes=10081",
        "minutes=ten",
        "minutes=-1",
        "since=1",
    ] {
        for r in [
            gw.get_as(&a_token, &format!("/v1/stats/series?{query}"))
                .await,
            gw.admin(
                "GET",
                &format!("/admin/tenants/{a}/stats/series?{query}"),
                None,
            )
            .await,
            gw.admin("GET", &format!("/admin/stats/series?{query}"), None)
                .await,
        ] {
            assert_eq!(r.status, 400, "{query}: {}", r.text());
            assert!(r.is_error("invalid_query"), "{query}: {}", r.text());
        }
    }
    // Every tenant's numbers are the operator's only.
    let as_tenant = support::http::Request::get("/admin/stats/series")
        .bearer(&a_token)
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(as_tenant.status, 401);
}
