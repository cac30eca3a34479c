//! Healing, on real sinks and a real Redis: a target the gateway disabled for failing is
//! probed with signed `estafeta.ping`s on a backoff; once two in a row answer 2xx it is
//! enabled again (`trigger: automatic`) and sent what it missed, once each, oldest first, at
//! most `heal_replay_max_events` (the newest of its gap). A target an operator disabled, or
//! one with `heal = false`, is never probed.

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::support::sink::{Received, Reply, Sink};
use crate::support::{Gateway, RedisServer, eventually, unique_prefix};

/// A breaker that opens after six attempts (half failed), half an hour of failure before a
/// disable (passed by the clock), probes from 0.2 s, and a gap of at most four events.
const HEAL: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 20, multiplier = 1.0, max_delay_ms = 20, max_attempts = 50 }
disable_after_h = 0.5
heal_probe_s = 0.2
heal_replay_max_events = 4

[dispatch.breaker]
window_s = 3600
min_requests = 6
failure_ratio = 0.5
open_s = 600
max_open_s = 1200
"#;

const WAIT: Duration = Duration::from_secs(20);

fn is_ping(r: &Received) -> bool {
    r.header("estafeta-event-type").as_deref() == Some("estafeta.ping")
}

fn pings(sink: &Sink, path: &str) -> usize {
    sink.received(path).iter().filter(|r| is_ping(r)).count()
}

/// The bodies of what `path` received after its `skip` first requests, pings left out.
fn deliveries_after(sink: &Sink, path: &str, skip: usize) -> Vec<String> {
    sink.received(path)
        .iter()
        .skip(skip)
        .filter(|r| !is_ping(r))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[tokio::test]
async fn a_target_disabled_for_failing_is_probed_enabled_again_and_sent_its_gap() {
    let gw = Gateway::start_with(&RedisServer::shared().url(), &unique_prefix("heal"), HEAL).await;
    let sink = Sink::start().await;
    for path in ["/flaky", "/noheal", "/manual"] {
        sink.plan(path, vec![], Reply::Status(502));
    }
    sink.plan("/watch", vec![], Reply::Status(200));
    let (tenant, token) = gw.tenant("Heal Ltd").await;
    let create = |body: Json| {
        let gw = &gw;
        let tenant = tenant.clone();
        async move {
            gw.create_target(&tenant, body).await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // One at a time, so the gap arrives in the order it is sent.
    let flaky =
        create(json!({"url": sink.url("/flaky"), "events": ["order.*"], "concurrency": 1})).await;
    let noheal =
        create(json!({"url": sink.url("/noheal"), "events": ["order.*"], "heal": false})).await;
    let manual = create(json!({"url": sink.url("/manual"), "events": ["other.*"]})).await;
    let watcher = create(json!({"url": sink.url("/watch"), "events": ["estafeta.target.*"]})).await;
    let path = |id: &str| format!("/admin/tenants/{tenant}/targets/{id}");
    let view = |id: String| {
        let gw = &gw;
        let p = path(&id);
        async move { gw.admin("GET", &p, None).await.json() }
    };
    assert_eq!(view(flaky.clone()).await["heal"], true);
    assert_eq!(view(noheal.clone()).await["heal"], false);

    gw.post_ok(&token, "order.placed", b"a0").await;
    eventually(WAIT, "both breakers open", || async {
        view(flaky.clone()).await["health"]["breaker"]["state"] == "open"
            && view(noheal.clone()).await["health"]["breaker"]["state"] == "open"
    })
    .await;
    // An operator disables the third: it is never probed.
    let r = gw
        .admin("PATCH", &path(&manual), Some(json!({"active": false})))
        .await;
    assert_eq!(r.json()["disabled_reason"], "manual");
    // Past the open time and half an hour of failure: the probes fail, both are disabled.
    gw.advance(Duration::from_secs(1801));
    eventually(WAIT, "both failing targets are disabled", || async {
        let (f, n) = (view(flaky.clone()).await, view(noheal.clone()).await);
        f["disabled_reason"] == "failing" && n["disabled_reason"] == "failing"
    })
    .await;
    // What comes while it is disabled is missed: five events, one it does not want.
    for i in 1..=5 {
        gw.post_ok(&token, "order.placed", format!("b{i}").as_bytes())
            .await;
    }
    gw.post_ok(&token, "user.created", b"unwanted").await;
    // Probes go out and fail while the receiver is still down.
    eventually(WAIT, "two failed probes", || async {
        pings(&sink, "/flaky") >= 2
    })
    .await;
    let ping = sink.received("/flaky").into_iter().find(is_ping).unwrap();
    assert!(
        ping.header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,"))
    );
    let before = sink.received("/flaky").len();
    sink.plan("/flaky", vec![], Reply::Status(200));
    eventually(WAIT, "enabled again by its probes", || async {
        let t = view(flaky.clone()).await;
        t["active"] == true && t["disabled_reason"] == Json::Null
    })
    .await;
    // The gap was a0 (held, then parked when it was disabled) and b1..b5: the newest four go,
    // once each, oldest first.
    eventually(WAIT, "the gap delivered", || async {
        deliveries_after(&sink, "/flaky", before).len() >= 4
    })
    .await;
    let t = view(flaky.clone()).await;
    assert_eq!(t["health"]["breaker"]["state"], "closed", "{t}");
    // New events flow as before.
    gw.post_ok(&token, "order.placed", b"c1").await;
    eventually(WAIT, "a new event delivered", || async {
        deliveries_after(&sink, "/flaky", before).contains(&"c1".to_owned())
    })
    .await;
    let got = deliveries_after(&sink, "/flaky", before);
    assert_eq!(got, ["b2", "b3", "b4", "b5", "c1"], "{got:?}");
    assert!(pings(&sink, "/flaky") >= 4, "two failed probes, two passed");

    // The watcher heard both moves, each automatic.
    eventually(WAIT, "the watcher told of the enable", || async {
        sink.received("/watch")
            .iter()
            .any(|r| r.header("estafeta-event-type").as_deref() == Some("estafeta.target.enabled"))
    })
    .await;
    let told: Vec<(String, Json)> = sink
        .received("/watch")
        .iter()
        .map(|r| {
            (
                r.header("estafeta-event-type").unwrap_or_default(),
                serde_json::from_slice::<Json>(&r.body).unwrap(),
            )
        })
        .filter(|(_, b)| b["target_id"] == flaky.as_str())
        .collect();
    let disabled = told
        .iter()
        .find(|(t, _)| t == "estafeta.target.disabled")
        .unwrap();
    assert_eq!(disabled.1["trigger"], "automatic", "{told:?}");
    let enabled = told
        .iter()
        .find(|(t, _)| t == "estafeta.target.enabled")
        .unwrap();
    assert_eq!(enabled.1["trigger"], "automatic", "{told:?}");
    assert_eq!(enabled.1["replayed"], 4, "{told:?}");
    assert!(enabled.1["failing_since"].is_string(), "{told:?}");
    assert!(
        !told.iter().any(|(_, b)| b["target_id"] == watcher.as_str()),
        "nothing about the watcher"
    );

    // Neither the operator's disable nor `heal = false` is ever probed, and each stays as it was.
    assert_eq!(pings(&sink, "/manual"), 0);
    assert_eq!(pings(&sink, "/noheal"), 0);
    assert_eq!(view(manual.clone()).await["disabled_reason"], "manual");
    let n = view(noheal.clone()).await;
    assert_eq!(
        (n["active"].clone(), n["disabled_reason"].clone()),
        (json!(false), json!("failing"))
    );
    let metrics = gw.metrics_showing("estafeta_targets_healed_total").await;
    assert!(
        metrics.contains("estafeta_targets_healed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("estafeta_heal_probes_total{outcome=\"ok\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_heal_that_is_not_a_boolean_is_refused_naming_the_field() {
    let gw = Gateway::start_with(&RedisServer::shared().url(), &unique_prefix("healbad"), "").await;
    let (tenant, _) = gw.tenant("Heal Bad").await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets"),
            Some(json!({"url": "https://example.com/h", "events": ["*"], "heal": "yes"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("heal"), "{}", r.text());
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/targets"), None)
        .await;
    assert_eq!(
        listed.json()["data"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
}
