//! Passive monitors end to end: heartbeats and status pushes on real sockets, the overdue
//! checker against a real Redis, alerts delivered to real HTTP receivers, incident history,
//! several checkers at once, silence watches on sources, and chat formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use support::http::{Request, Response};
use support::sink::Sink;
use support::{Gateway, RedisServer, eventually, unique_prefix};

/// A fast checker and fast retries, so a 1 s monitor goes down within about a second.
const FAST: &str = r#"
[monitors]
check_every_ms = 100

[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 300, max_attempts = 4 }
"#;

async fn gateway(name: &str) -> Gateway {
    Gateway::start_with(&RedisServer::shared().url(), &unique_prefix(name), FAST).await
}

/// How many events of `kind` the streams of `prefix` hold.
async fn streamed(prefix: &str, kind: &str) -> usize {
    let client = RedisServer::shared().client().await;
    support::all_events(&client, prefix)
        .await
        .iter()
        .filter(|(_, e)| e.event_type.as_str() == kind)
        .count()
}

async fn created(gw: &Gateway, path: &str, body: Json) -> Json {
    let r = gw.admin("POST", path, Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

async fn monitor(gw: &Gateway, tenant: &str, body: Json) -> Json {
    created(gw, &format!("/admin/tenants/{tenant}/monitors"), body).await
}

/// A target of `tenant` subscribed to `events`, delivering to `path` on the sink.
async fn target(gw: &Gateway, tenant: &str, sink: &Sink, path: &str, extra: Json) -> Json {
    let mut body = json!({"url": sink.url(path), "events": ["monitor.*", "source.*"]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    created(gw, &format!("/admin/tenants/{tenant}/targets"), body).await
}

async fn send(gw: &Gateway, r: Request) -> Response {
    r.send_plain(gw.addrs.plain).await.unwrap()
}

async fn beat(gw: &Gateway, token: &str, suffix: &str) -> Response {
    send(
        gw,
        Request::get(&format!("/v1/monitors/{token}/heartbeat{suffix}")),
    )
    .await
}

async fn push(gw: &Gateway, token: &str, body: &Json, signature: Option<&str>) -> Response {
    let mut r = Request::new("POST", &format!("/v1/monitors/{token}")).json(body);
    if let Some(s) = signature {
        r = r.header("x-webhook-signature", s);
    }
    send(gw, r).await
}

async fn read(gw: &Gateway, tenant: &str, path: &str) -> Json {
    let r = gw
        .admin("GET", &format!("/admin/tenants/{tenant}{path}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Alerts of `event_type` received on `path`, as JSON bodies.
fn alerts(sink: &Sink, path: &str, event_type: &str) -> Vec<Json> {
    sink.received(path)
        .into_iter()
        .filter(|r| r.header("estafeta-event-type").as_deref() == Some(event_type))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn silence_turns_a_monitor_down_once_and_the_next_heartbeat_recovers_it() {
    let gw = gateway("mon-life").await;
    let sink = Sink::start().await;
    let (tenant, _) = gw.tenant("acme").await;
    target(&gw, &tenant, &sink, "/alerts", json!({})).await;
    let m = monitor(
        &gw,
        &tenant,
        json!({"name": "nightly backup", "heartbeat_interval_s": 1, "grace_s": 0}),
    )
    .await;
    let token = m["token"].as_str().unwrap().to_owned();
    let id = m["id"].as_str().unwrap().to_owned();
    assert!(token.len() >= 43, "a 256-bit token");
    assert_eq!(m["status"], "new");
    assert_eq!(
        m["heartbeat_url"],
        format!("/v1/monitors/{token}/heartbeat")
    );
    assert_eq!(m["status_url"], format!("/v1/monitors/{token}"));

    // Heartbeats within the interval keep it up; the first one only starts the watch.
    for _ in 0..3 {
        let r = beat(&gw, &token, "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["monitor"]["status"], "up");
        assert_eq!(r.json()["monitor"]["id"], id.as_str());
        assert!(r.json()["monitor"]["last_heartbeat"].is_string());
        gw.advance(Duration::from_millis(700));
        gw.check_monitors_now().await;
    }
    let post = send(
        &gw,
        Request::new("POST", &format!("/v1/monitors/{token}/heartbeat")),
    )
    .await;
    assert_eq!(post.status, 200, "POST works as GET does");
    assert!(
        sink.received("/alerts").is_empty(),
        "no alert without a change"
    );

    // Silence past interval + grace: down within a check period, one alert.
    eventually(Duration::from_secs(5), "monitor.down delivered", || async {
        !alerts(&sink, "/alerts", "monitor.down").is_empty()
    })
    .await;
    let view = read(&gw, &tenant, &format!("/monitors/{id}")).await;
    assert_eq!(view["status"], "down");
    let down = &alerts(&sink, "/alerts", "monitor.down")[0];
    assert_eq!(down["type"], "monitor.down");
    assert_eq!(down["monitor"]["id"], id.as_str());
    assert_eq!(down["monitor"]["name"], "nightly backup");
    assert_eq!(down["reason"], "heartbeat_missed");
    assert_eq!(down["previous_status"], "up");
    let incident_id = down["incident_id"].as_str().unwrap().to_owned();
    assert_eq!(view["open_incident_id"], incident_id.as_str());
    let delivery = &sink.received("/alerts")[0];
    assert!(
        delivery.header("webhook-signature").is_some(),
        "signed like any delivery"
    );

    // Several more check periods: still exactly one alert.
    for _ in 0..3 {
        gw.advance(Duration::from_secs(2));
        gw.check_monitors_now().await;
    }
    assert_eq!(streamed(&gw.prefix, "monitor.down").await, 1);
    assert_eq!(alerts(&sink, "/alerts", "monitor.down").len(), 1);

    let r = beat(&gw, &token, "").await;
    assert_eq!(r.json()["monitor"]["status"], "up");
    eventually(Duration::from_secs(5), "monitor.up delivered", || async {
        !alerts(&sink, "/alerts", "monitor.up").is_empty()
    })
    .await;
    let up = &alerts(&sink, "/alerts", "monitor.up")[0];
    assert_eq!(up["previous_status"], "down");
    assert_eq!(up["incident_id"], incident_id.as_str());

    let incidents = read(&gw, &tenant, &format!("/monitors/{id}/incidents")).await;
    let incidents = incidents["data"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["id"], incident_id.as_str());
    assert_eq!(incidents[0]["reason"], "heartbeat_missed");
    assert_eq!(incidents[0]["resolved_reason"], "heartbeat");
    assert!(incidents[0]["opened_at"].is_string() && incidents[0]["resolved_at"].is_string());
    let checks = read(&gw, &tenant, &format!("/monitors/{id}/checks")).await;
    let signals: Vec<&str> = checks["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["signal"].as_str().unwrap())
        .collect();
    assert_eq!(
        signals,
        ["heartbeat", "timeout", "heartbeat"],
        "newest first"
    );
    assert_eq!(alerts(&sink, "/alerts", "monitor.up").len(), 1);

    let metrics = Request::get("/metrics")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains(r#"estafeta_watch_transitions_total{kind="monitor",status="down"}"#),
        "transitions are counted"
    );
    assert!(metrics.contains("estafeta_monitor_check_seconds"));
    assert!(!metrics.contains(&id), "no monitor ids in metric labels");
}

#[tokio::test]
async fn status_pushes_record_checks_and_alert_only_on_change() {
    let gw = gateway("mon-push").await;
    let sink = Sink::start().await;
    let (tenant, _) = gw.tenant("acme").await;
    target(&gw, &tenant, &sink, "/alerts", json!({})).await;
    let m = monitor(&gw, &tenant, json!({"name": "payments api"})).await;
    let token = m["token"].as_str().unwrap().to_owned();
    let id = m["id"].as_str().unwrap().to_owned();

    let degraded =
        json!({"status": "degraded", "message": "p99 > 2s", "metadata": {"p99_ms": 2300}});
    let r = push(&gw, &token, &degraded, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["monitor"],
        json!({"id": id, "name": "payments api", "status": "degraded", "last_heartbeat": null, "last_duration_ms": null})
    );
    assert_eq!(push(&gw, &token, &degraded, None).await.status, 200);
    // A routine heartbeat does not override what the service pushed (no flapping).
    let r = beat(&gw, &token, "").await;
    assert_eq!(r.json()["monitor"]["status"], "degraded");
    assert!(r.json()["monitor"]["last_heartbeat"].is_string());
    let r = push(&gw, &token, &json!({"status": "down"}), None).await;
    assert_eq!(r.json()["monitor"]["status"], "down");
    let r = push(
        &gw,
        &token,
        &json!({"status": "up", "message": "fixed"}),
        None,
    )
    .await;
    assert_eq!(r.json()["monitor"]["status"], "up");

    eventually(Duration::from_secs(5), "three alerts", || async {
        sink.count("/alerts") >= 3
    })
    .await;
    // Each push's alert is in the stream when the push is answered: no more are coming.
    let mut appended = 0;
    for k in ["monitor.degraded", "monitor.down", "monitor.up"] {
        appended += streamed(&gw.prefix, k).await;
    }
    assert_eq!(appended, 3, "one alert per change");
    let kinds: Vec<String> = sink
        .received("/alerts")
        .iter()
        .map(|r| r.header("estafeta-event-type").unwrap())
        .collect();
    assert_eq!(
        kinds.len(),
        3,
        "the repeated push alerts nothing: {kinds:?}"
    );
    for k in ["monitor.degraded", "monitor.down", "monitor.up"] {
        assert!(kinds.iter().any(|x| x == k), "{k} in {kinds:?}");
    }
    let d = &alerts(&sink, "/alerts", "monitor.degraded")[0];
    assert_eq!(d["message"], "p99 > 2s");
    assert_eq!(d["metadata"]["p99_ms"], 2300);
    assert_eq!(d["reason"], "status_push");

    let checks = read(&gw, &tenant, &format!("/monitors/{id}/checks")).await;
    assert_eq!(
        checks["data"].as_array().unwrap().len(),
        4,
        "every push is a check"
    );
    let incidents = read(&gw, &tenant, &format!("/monitors/{id}/incidents")).await;
    let incidents = incidents["data"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "degraded then down is one incident");
    assert_eq!(incidents[0]["status"], "down");
    assert_eq!(incidents[0]["reason"], "status_push");
    assert!(incidents[0]["resolved_at"].is_string());

    // Bad input: clear errors.
    for body in [
        json!({"status": "sideways"}),
        json!({"state": "up"}),
        json!([1]),
    ] {
        let r = push(&gw, &token, &body, None).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.is_error("invalid_status"), "{}", r.text());
    }
    let r = push(&gw, "mt_unknown", &json!({"status": "up"}), None).await;
    assert_eq!(r.status, 404);

    // With a secret, pushes must carry the body's HMAC.
    let s = monitor(
        &gw,
        &tenant,
        json!({"name": "signed", "secret": "mon-secret"}),
    )
    .await;
    let stoken = s["token"].as_str().unwrap().to_owned();
    assert_eq!(s["has_secret"], true);
    assert!(s.get("secret").is_none(), "the secret is never shown");
    let body = json!({"status": "down"});
    let raw = serde_json::to_vec(&body).unwrap();
    assert_eq!(push(&gw, &stoken, &body, None).await.status, 401);
    let wrong = hmac_hex(b"other", &raw);
    assert_eq!(push(&gw, &stoken, &body, Some(&wrong)).await.status, 401);
    let right = hmac_hex(b"mon-secret", &raw);
    let r = push(&gw, &stoken, &body, Some(&right)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["monitor"]["status"], "down");
    // A signature over another body does not carry over.
    let r = push(&gw, &stoken, &json!({"status": "up"}), Some(&right)).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn job_signals_measure_runs_and_exit_codes() {
    let gw = gateway("mon-jobs").await;
    let (tenant, _) = gw.tenant("acme").await;
    let m = monitor(&gw, &tenant, json!({"name": "cron"})).await;
    let token = m["token"].as_str().unwrap().to_owned();
    let id = m["id"].as_str().unwrap().to_owned();

    let r = beat(&gw, &token, "/start").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["monitor"]["status"],
        "new",
        "a start changes no status"
    );
    gw.advance(Duration::from_millis(250));
    let r = beat(&gw, &token, "/0").await;
    assert_eq!(r.json()["monitor"]["status"], "up");
    let took = r.json()["monitor"]["last_duration_ms"].as_u64().unwrap();
    assert!((250..5_000).contains(&took), "measured {took} ms");

    beat(&gw, &token, "/start").await;
    let r = beat(&gw, &token, "/3").await;
    assert_eq!(r.json()["monitor"]["status"], "down");
    let r = beat(&gw, &token, "/fail").await;
    assert_eq!(r.json()["monitor"]["status"], "down");
    let r = beat(&gw, &token, "").await;
    assert_eq!(r.json()["monitor"]["status"], "up");

    let checks = read(&gw, &tenant, &format!("/monitors/{id}/checks")).await;
    let checks = checks["data"].as_array().unwrap();
    let exit = checks
        .iter()
        .find(|c| c["signal"] == "exit" && c["status"] == "down");
    let exit = exit.expect("the failing run is recorded");
    assert_eq!(exit["exit_code"], 3);
    assert!(exit["duration_ms"].is_u64());
    let view = read(&gw, &tenant, &format!("/monitors/{id}")).await;
    assert!(view["last_duration_ms"].is_u64());
    assert!(view["running_since"].is_null());

    for bad in ["/abc", "/256", "/-1"] {
        let r = beat(&gw, &token, bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.is_error("invalid_signal"));
    }
    assert_eq!(beat(&gw, "mt_nope", "").await.status, 404);
}

#[tokio::test]
async fn the_bearer_header_names_a_monitor_by_id_within_its_tenant_only() {
    let gw = gateway("mon-bearer").await;
    let (a, a_token) = gw.tenant("a").await;
    let (_b, b_token) = gw.tenant("b").await;
    // The tenant manages its own monitors.
    let r = send(
        &gw,
        Request::new("POST", "/v1/monitors")
            .bearer(&a_token)
            .json(&json!({"name": "worker"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let m = r.json();
    let id = m["id"].as_str().unwrap().to_owned();
    let token = m["token"].as_str().unwrap().to_owned();

    let by_id = |bearer: String| {
        let id = id.clone();
        let gw = &gw;
        async move {
            send(
                gw,
                Request::new("POST", &format!("/v1/monitors/{id}/heartbeat")).bearer(&bearer),
            )
            .await
        }
    };
    // A URL token works whatever Authorization header a proxy adds.
    let r = send(
        &gw,
        Request::get(&format!("/v1/monitors/{token}/heartbeat"))
            .header("authorization", "Basic cHJveHk6cGFzcw=="),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = by_id(a_token.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["monitor"]["status"], "up");
    assert_eq!(
        by_id(b_token.clone()).await.status,
        404,
        "another tenant's monitor"
    );
    assert_eq!(by_id("not-a-token".into()).await.status, 401);

    let r = send(
        &gw,
        Request::get(&format!("/v1/monitors/{id}")).bearer(&b_token),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send(&gw, Request::get("/v1/monitors").bearer(&b_token)).await;
    assert_eq!(r.json()["data"], json!([]));
    let r = send(&gw, Request::get("/v1/monitors").bearer(&a_token)).await;
    assert_eq!(r.json()["data"][0]["id"], id.as_str());
    assert_eq!(r.json()["data"][0]["status"], "up");
    assert!(
        r.json()["data"][0].get("token").is_none(),
        "tokens are shown once"
    );

    // Patch, rotate, delete.
    let r = send(
        &gw,
        Request::new("PATCH", &format!("/v1/monitors/{id}"))
            .bearer(&a_token)
            .json(&json!({"heartbeat_interval_s": 0})),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &gw,
        Request::new("PATCH", &format!("/v1/monitors/{id}"))
            .bearer(&a_token)
            .json(&json!({"name": "worker-2", "grace_s": 5})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "worker-2");
    assert_eq!(r.json()["grace_s"], 5);
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{a}/monitors/{id}/rotate-token"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_token = r.json()["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token);
    assert_eq!(
        beat(&gw, &token, "").await.status,
        404,
        "the old token is gone"
    );
    let r = beat(&gw, &new_token, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["monitor"]["name"], "worker-2");
    let r = send(
        &gw,
        Request::new("DELETE", &format!("/v1/monitors/{id}")).bearer(&b_token),
    )
    .await;
    assert_eq!(r.status, 404, "b cannot delete a's monitor");
    let r = gw
        .admin("DELETE", &format!("/admin/tenants/{a}/monitors/{id}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(beat(&gw, &new_token, "").await.status, 404);
    let r = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{a}/monitors/{id}/incidents"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn two_checkers_raise_one_alert_per_transition() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix("mon-two");
    let gw1 = Gateway::start_with(&redis.url(), &prefix, FAST).await;
    let gw2 = Gateway::start_with(&redis.url(), &prefix, FAST).await;
    let (tenant, _) = gw1.tenant("acme").await;
    const N: usize = 40;
    let mut tokens = Vec::new();
    for i in 0..N {
        let m = monitor(
            &gw1,
            &tenant,
            json!({"name": format!("m{i}"), "heartbeat_interval_s": 1, "grace_s": 0}),
        )
        .await;
        tokens.push(m["token"].as_str().unwrap().to_owned());
    }
    for (i, t) in tokens.iter().enumerate() {
        // Both instances take signals.
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        assert_eq!(beat(gw, t, "").await.status, 200);
    }
    let client = redis.client().await;
    let count = |kind: &'static str| {
        let client = client.clone();
        let prefix = prefix.clone();
        async move {
            support::all_events(&client, &prefix)
                .await
                .iter()
                .filter(|(_, e)| e.event_type.as_str() == kind)
                .count()
        }
    };
    eventually(Duration::from_secs(8), "every monitor down", || async {
        count("monitor.down").await >= N
    })
    .await;
    // More passes of both checkers, later still.
    for gw in [&gw1, &gw2, &gw1, &gw2] {
        gw.advance(Duration::from_secs(2));
        gw.check_monitors_now().await;
    }
    assert_eq!(count("monitor.down").await, N, "one alert per monitor");
    for t in &tokens {
        assert_eq!(beat(&gw2, t, "").await.json()["monitor"]["status"], "up");
    }
    assert_eq!(count("monitor.up").await, N);
}

#[tokio::test]
async fn a_silent_source_raises_an_incident_and_recovers_with_its_next_event() {
    let gw = gateway("src-silence").await;
    let sink = Sink::start().await;
    let (tenant, _) = gw.tenant("acme").await;
    target(&gw, &tenant, &sink, "/alerts", json!({})).await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/sources"),
            Some(json!({"name": "gh", "verify": {"scheme": "none"},
                "event_type": {"fixed": "push"}, "grace_s": 5})),
        )
        .await;
    assert_eq!(r.status, 400, "grace without a watch is refused");
    let s = created(
        &gw,
        &format!("/admin/tenants/{tenant}/sources"),
        json!({"name": "gh", "verify": {"scheme": "none"}, "event_type": {"fixed": "push"},
            "expect_every_s": 1, "grace_s": 0}),
    )
    .await;
    assert_eq!(s["expect_every_s"], 1);
    let id = s["id"].as_str().unwrap().to_owned();
    let url = s["url"].as_str().unwrap().to_owned();
    let hook = || async {
        let r = send(&gw, Request::new("POST", &url).body(b"{}".to_vec())).await;
        assert_eq!(r.status, 202, "{}", r.text());
    };
    hook().await;
    eventually(
        Duration::from_secs(5),
        "source.silent delivered",
        || async { !alerts(&sink, "/alerts", "source.silent").is_empty() },
    )
    .await;
    let silent = &alerts(&sink, "/alerts", "source.silent")[0];
    assert_eq!(silent["source"]["id"], id.as_str());
    assert_eq!(silent["reason"], "silent");
    // The source says it is silent, and its last receipt stays the webhook's time, not the
    // silence check's.
    let seen = read(&gw, &tenant, &format!("/sources/{id}")).await;
    assert_eq!(seen["silent"], true, "{seen}");
    let received = seen["last_received_at"].as_str().unwrap().to_owned();
    let listed = read(&gw, &tenant, "/sources").await;
    assert_eq!(listed["data"][0]["silent"], true);
    assert_eq!(listed["data"][0]["last_received_at"], received.as_str());
    let checks = read(&gw, &tenant, &format!("/sources/{id}/checks")).await;
    assert!(
        checks["data"][0]["at"].as_str().unwrap() > received.as_str(),
        "the newest check is the silence, after the receipt: {checks}"
    );
    hook().await;
    eventually(
        Duration::from_secs(5),
        "source.resumed delivered",
        || async { !alerts(&sink, "/alerts", "source.resumed").is_empty() },
    )
    .await;
    let incidents = read(&gw, &tenant, &format!("/sources/{id}/incidents")).await;
    let incidents = incidents["data"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["reason"], "silent");
    assert_eq!(incidents[0]["resolved_reason"], "event_received");
    assert_eq!(alerts(&sink, "/alerts", "source.silent").len(), 1);
    eventually(
        Duration::from_secs(5),
        "a receipt after the silence",
        || async {
            let seen = read(&gw, &tenant, &format!("/sources/{id}")).await;
            seen["silent"] == false && seen["last_received_at"].as_str() > Some(received.as_str())
        },
    )
    .await;
}

#[tokio::test]
async fn chat_targets_get_slack_and_discord_messages_signed_as_sent() {
    let gw = gateway("mon-chat").await;
    let sink = Sink::start().await;
    let (tenant, _) = gw.tenant("acme").await;
    let slack = target(&gw, &tenant, &sink, "/slack", json!({"format": "slack"})).await;
    target(
        &gw,
        &tenant,
        &sink,
        "/discord",
        json!({"format": "discord"}),
    )
    .await;
    target(&gw, &tenant, &sink, "/raw", json!({})).await;
    assert_eq!(slack["format"], "slack");
    let bad = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets"),
            Some(json!({"url": sink.url("/x"), "events": ["*"], "format": "teams"})),
        )
        .await;
    assert_eq!(bad.status, 400);
    let m = monitor(&gw, &tenant, json!({"name": "checkout <eu>"})).await;
    let token = m["token"].as_str().unwrap().to_owned();
    let r = push(
        &gw,
        &token,
        &json!({"status": "down", "message": "db unreachable"}),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    eventually(Duration::from_secs(5), "three deliveries", || async {
        sink.count("/slack") == 1 && sink.count("/discord") == 1 && sink.count("/raw") == 1
    })
    .await;

    let s = &sink.received("/slack")[0];
    assert_eq!(
        s.header("content-type").as_deref(),
        Some("application/json")
    );
    let v: Json = serde_json::from_slice(&s.body).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.contains("Monitor checkout &lt;eu&gt; is DOWN"),
        "{text}"
    );
    assert!(text.contains("db unreachable"), "{text}");
    assert_eq!(v["blocks"][0]["type"], "section");
    // Signed over the body actually sent.
    let secret = slack["secret"].as_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let (id, ts) = (
        s.header("webhook-id").unwrap(),
        s.header("webhook-timestamp").unwrap(),
    );
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&s.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert!(s.header("webhook-signature").unwrap().contains(&expected));

    let d: Json = serde_json::from_slice(&sink.received("/discord")[0].body).unwrap();
    assert_eq!(d["content"], "Monitor checkout <eu> is DOWN");
    assert_eq!(d["embeds"][0]["title"], "Monitor checkout <eu> is DOWN");
    assert!(d["embeds"][0]["color"].is_u64());
    assert_eq!(d["allowed_mentions"]["parse"], json!([]));

    let raw: Json = serde_json::from_slice(&sink.received("/raw")[0].body).unwrap();
    assert_eq!(raw["type"], "monitor.down");
    assert_eq!(raw["message"], "db unreachable");
}

#[tokio::test]
async fn config_declared_monitors_are_applied_idempotently() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix("mon-config");
    let decl = r#"
[[tenants]]
id = "ops"
name = "Ops"
token = "ops-token-0123456789abcdef0123456789"

[[tenants.monitors]]
id = "backup"
name = "Nightly backup"
heartbeat_interval_s = 86400
grace_s = 3600
token = "backup-monitor-token-0123456789abcdef"
"#;
    let gw = Gateway::start_with(&redis.url(), &prefix, decl).await;
    let r = beat(&gw, "backup-monitor-token-0123456789abcdef", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["monitor"]["id"], "backup");
    gw.stop().await.unwrap();

    let gw = Gateway::start_with(
        &redis.url(),
        &prefix,
        &decl.replace("grace_s = 3600", "grace_s = 60"),
    )
    .await;
    let r = gw.admin("GET", "/admin/tenants/ops/monitors", None).await;
    let data = r.json()["data"].clone();
    assert_eq!(data.as_array().unwrap().len(), 1, "applied, not duplicated");
    assert_eq!(data[0]["grace_s"], 60);
    assert_eq!(data[0]["origin"], "config");
    assert_eq!(data[0]["status"], "up", "state survives a restart");
    let r = beat(&gw, "backup-monitor-token-0123456789abcdef", "").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn deleting_a_tenant_silences_its_monitors() {
    let redis = RedisServer::shared();
    let gw = gateway("mon-gone").await;
    let (tenant, _) = gw.tenant("short-lived").await;
    let m = monitor(
        &gw,
        &tenant,
        json!({"name": "m", "heartbeat_interval_s": 1, "grace_s": 0}),
    )
    .await;
    let token = m["token"].as_str().unwrap().to_owned();
    assert_eq!(beat(&gw, &token, "").await.status, 200);
    let r = gw
        .admin("DELETE", &format!("/admin/tenants/{tenant}"), None)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(beat(&gw, &token, "").await.status, 404);
    // Well past its deadline, by a pass that has surely run.
    gw.advance(Duration::from_secs(5));
    gw.check_monitors_now().await;
    let client = redis.client().await;
    let alerts = support::all_events(&client, &gw.prefix).await;
    assert!(
        alerts
            .iter()
            .all(|(_, e)| !e.event_type.as_str().starts_with("monitor.")),
        "no alert for a deleted tenant's monitor"
    );
}

#[tokio::test]
async fn a_signal_never_brings_a_deleted_subject_back() {
    let redis = RedisServer::shared();
    let client = redis.client().await;
    let prefix = unique_prefix("mon-gone-state");
    let keys = estafeta::redis::keyspace::Keyspace::new(&prefix);
    let tasks = tokio_util::task::TaskTracker::new();
    let watches = estafeta::monitors::state::Watches::new(
        client.clone(),
        keys.clone(),
        estafeta::monitors::state::WatchSettings {
            checks_kept: 10,
            incidents_kept: 10,
            deadline: Duration::from_secs(2),
            logged: false,
            clock: estafeta::model::time::Clock::system(),
        },
        &tasks,
        tokio_util::sync::CancellationToken::new(),
    );
    let tenant = estafeta::model::TenantId::parse("ten_x").unwrap();
    let subject = estafeta::monitors::state::Subject {
        kind: estafeta::model::WatchKind::Monitor,
        id: "mon_deleted",
        tenant: &tenant,
        name: "deleted",
        shard: 1,
        window: Duration::from_secs(1),
    };
    let signal = estafeta::monitors::state::Signal::Heartbeat;
    // As a stale cache would send it after the monitor was deleted.
    assert!(watches.signal(subject, &signal).await.unwrap().is_none());
    let exists: i64 =
        fred::interfaces::KeysInterface::exists(&client, keys.watch(1, "mon_deleted"))
            .await
            .unwrap();
    assert_eq!(exists, 0, "no state was made");
    let due: Option<f64> =
        fred::interfaces::SortedSetsInterface::zscore(&client, keys.due(1), "mon_deleted")
            .await
            .unwrap();
    assert!(due.is_none(), "no deadline was set");
    // Described (created), then signalled, then forgotten (deleted): gone again.
    watches.describe(subject).await.unwrap();
    assert_eq!(
        watches
            .signal(subject, &signal)
            .await
            .unwrap()
            .unwrap()
            .status,
        estafeta::monitors::state::LiveStatus::Up
    );
    watches.forget(1, "mon_deleted").await.unwrap();
    assert!(watches.signal(subject, &signal).await.unwrap().is_none());
}

#[tokio::test]
async fn the_status_url_reads_the_monitor_for_its_own_tenant_only() {
    let gw = gateway("status-url").await;
    let (a, a_token) = gw.tenant("a").await;
    let (_, b_token) = gw.tenant("b").await;
    let m = monitor(&gw, &a, json!({"name": "job"})).await;
    let (id, status_url) = (m["id"].as_str().unwrap(), m["status_url"].as_str().unwrap());

    // The URL a client was given names the same monitor as its id.
    let r = send(&gw, Request::get(status_url).bearer(&a_token)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id);
    // Another tenant holding the token learns nothing and changes nothing.
    let r = send(&gw, Request::get(status_url).bearer(&b_token)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = send(&gw, Request::new("DELETE", status_url).bearer(&b_token)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = gw
        .admin("GET", &format!("/admin/tenants/{a}/monitors/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Its own tenant may delete it by the token too; the token then names nothing.
    let r = send(&gw, Request::new("DELETE", status_url).bearer(&a_token)).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = send(
        &gw,
        Request::get(&format!("/v1/monitors/{id}")).bearer(&a_token),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    gw.stop().await.unwrap();
}
