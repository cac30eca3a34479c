//! Each target's circuit breaker, on real sinks and a real Redis: it opens at its failure
//! ratio once the window holds `min_requests`, holds deliveries in the retry schedule without
//! spending their attempts, lets a probe through when its time is over and closes on the
//! probe's success; a second instance that never saw a failure holds the target's deliveries
//! too. A target failing for `disable_after_h` is disabled (`failing`); an operator's disable
//! is `manual`, and enabling it again starts its breaker closed.
//!
//! Open times are long (minutes) and passed by moving the gateway's clock: nothing here waits
//! for a breaker in real time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::support::sink::{Reply, Sink};
use crate::support::{Gateway, RedisServer, certs, eventually, unique_prefix};

/// Fast retries that never run out during a test, and a breaker that opens after six
/// attempts of which half failed, for ten minutes.
const BREAKER: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 20, multiplier = 1.0, max_delay_ms = 20, max_attempts = 50 }

[dispatch.breaker]
window_s = 3600
min_requests = 6
failure_ratio = 0.5
open_s = 600
max_open_s = 1200
"#;

const WAIT: Duration = Duration::from_secs(15);

async fn breaker_of(gw: &Gateway, tenant: &str, target: &str) -> Json {
    let r = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{tenant}/targets/{target}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["health"]["breaker"].clone()
}

/// The delivery of `event` to its one target, as the tenant's API shows it.
async fn delivery(gw: &Gateway, token: &str, event: &str) -> Json {
    let r = gw.get_as(token, &format!("/v1/events/{event}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["deliveries"][0].clone()
}

/// Whether the delivery waits for the breaker: retrying, `attempts` attempts spent at most.
fn held(d: &Json, attempts: u64) -> bool {
    d["state"] == "retrying"
        && d["attempts"].as_u64().is_some_and(|a| a <= attempts)
        && d["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("circuit breaker"))
}

#[tokio::test]
async fn a_failing_target_opens_its_breaker_holds_deliveries_and_a_probe_closes_it() {
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("breaker"),
        BREAKER,
    )
    .await;
    let sink = Sink::start().await;
    sink.plan("/flaky", vec![], Reply::Status(503));
    let (tenant, token) = gw.tenant("Breaker Ltd").await;
    let target = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/flaky"), "events": ["order.*"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(breaker_of(&gw, &tenant, &target).await["state"], "closed");

    let mut events = Vec::new();
    for i in 0..3 {
        events.push(
            gw.post_ok(&token, "order.paid", format!("{{\"n\":{i}}}").as_bytes())
                .await,
        );
    }
    eventually(WAIT, "the breaker opens", || async {
        breaker_of(&gw, &tenant, &target).await["state"] == "open"
    })
    .await;
    let b = breaker_of(&gw, &tenant, &target).await;
    assert_eq!(b["opens"], 1, "{b}");
    assert!(b["until"].is_string() && b["since"].is_string(), "{b}");
    // It opened at its ratio once six attempts were in, not before.
    assert!(sink.count("/flaky") >= 6, "{}", sink.count("/flaky"));

    // Those that failed before keep the attempts they made and wait; once the dispatcher
    // holds them it knows the breaker is open (it learns from the call that opened it, a
    // moment after Redis does), and events arriving now are not sent: no attempt spent.
    for e in &events[..3] {
        eventually(WAIT, "a failed event held by the breaker", || async {
            held(&delivery(&gw, &token, e).await, 49)
        })
        .await;
    }
    for i in 3..8 {
        events.push(
            gw.post_ok(&token, "order.paid", format!("{{\"n\":{i}}}").as_bytes())
                .await,
        );
    }
    for e in &events[3..] {
        eventually(WAIT, "a new event held by the breaker", || async {
            held(&delivery(&gw, &token, e).await, 0)
        })
        .await;
    }
    let sent = sink.count("/flaky");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.count("/flaky"),
        sent,
        "nothing is sent while it is open"
    );
    let metrics = gw
        .metrics_showing("estafeta_deliveries_held_total{reason=\"breaker\"}")
        .await;
    assert!(
        metrics.contains("estafeta_breaker_transitions_total{to=\"open\"}"),
        "{metrics}"
    );

    // The receiver recovers; the open time passes: one probe goes, succeeds, closes it, and
    // every held event is delivered once.
    sink.plan("/flaky", vec![], Reply::Status(200));
    gw.advance(Duration::from_secs(601));
    eventually(WAIT, "every event delivered after the probe", || async {
        let mut all = true;
        for e in &events {
            all &= delivery(&gw, &token, e).await["state"] == "succeeded";
        }
        all
    })
    .await;
    let b = breaker_of(&gw, &tenant, &target).await;
    assert_eq!(b["state"], "closed", "{b}");
    assert_eq!(b["opens"], 0, "{b}");
    let delivered: HashSet<String> = sink
        .received("/flaky")
        .iter()
        .skip(sent)
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(delivered.len(), events.len());
    for e in &events {
        let d = delivery(&gw, &token, e).await;
        assert!(d["attempts"].as_u64().unwrap() < 50, "{d}");
    }
}

#[tokio::test]
async fn a_second_instance_holds_deliveries_for_a_breaker_the_first_opened() {
    let prefix = unique_prefix("breaker2");
    let redis = RedisServer::shared().url();
    let certs = Arc::new(certs());
    let first = Gateway::start_full(&redis, &prefix, BREAKER, certs.clone()).await;
    let sink = Sink::start().await;
    sink.plan("/down", vec![], Reply::Status(500));
    let (tenant, token) = first.tenant("Shared Ltd").await;
    let target = first
        .create_target(&tenant, json!({"url": sink.url("/down"), "events": ["*"]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    first.post_ok(&token, "a", b"1").await;
    eventually(WAIT, "the first instance opens the breaker", || async {
        breaker_of(&first, &tenant, &target).await["state"] == "open"
    })
    .await;
    first.stop().await.unwrap();
    let sent = sink.count("/down");

    // A new instance, which never saw an attempt to this target.
    let second = Gateway::start_full(&redis, &prefix, BREAKER, certs).await;
    let mut events = Vec::new();
    for i in 0..4 {
        events.push(second.post_ok(&token, "a", format!("{i}").as_bytes()).await);
    }
    for e in &events {
        eventually(WAIT, "the second instance holds the new event", || async {
            held(&delivery(&second, &token, e).await, 0)
        })
        .await;
    }
    assert_eq!(
        sink.count("/down"),
        sent,
        "the second instance sent nothing"
    );
}

#[tokio::test]
async fn a_target_failing_past_disable_after_is_disabled_and_an_operators_disable_is_manual() {
    let extra = format!("{BREAKER}\n");
    // Half an hour of failure disables (fractional hours), passed by the clock.
    let extra = extra.replace(
        "max_attempts = 50 }",
        "max_attempts = 50 }\ndisable_after_h = 0.5",
    );
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("disable"),
        &extra,
    )
    .await;
    let sink = Sink::start().await;
    sink.plan("/dead", vec![], Reply::Status(502));
    sink.plan("/ok", vec![], Reply::Status(200));
    let (tenant, token) = gw.tenant("Disable Ltd").await;
    let dead = gw
        .create_target(&tenant, json!({"url": sink.url("/dead"), "events": ["*"]}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A target of its own setting waits longer: not disabled with the first.
    let patient = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/dead"), "events": ["*"], "disable_after_h": 2.0}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = |id: &str| format!("/admin/tenants/{tenant}/targets/{id}");
    gw.post_ok(&token, "a", b"1").await;
    eventually(WAIT, "both breakers open", || async {
        breaker_of(&gw, &tenant, &dead).await["state"] == "open"
            && breaker_of(&gw, &tenant, &patient).await["state"] == "open"
    })
    .await;
    // Past the open time and half an hour of failure: the probe fails, the target goes.
    gw.advance(Duration::from_secs(1801));
    eventually(WAIT, "the failing target is disabled", || async {
        let t = gw.admin("GET", &path(&dead), None).await.json();
        t["active"] == false && t["disabled_reason"] == "failing"
    })
    .await;
    let t = gw.admin("GET", &path(&dead), None).await.json();
    assert!(t["health"]["failing_since"].is_string(), "{t}");
    // The patient one probed and failed too, but has not failed for two hours yet.
    eventually(WAIT, "the patient target's probe failed", || async {
        breaker_of(&gw, &tenant, &patient).await["opens"] == 2
    })
    .await;
    let p = gw.admin("GET", &path(&patient), None).await.json();
    assert_eq!(p["active"], true, "{p}");
    assert_eq!(p["disable_after_h"], 2.0);
    let metrics = gw
        .metrics_showing("estafeta_targets_auto_disabled_total")
        .await;
    assert!(
        metrics.contains("estafeta_targets_auto_disabled_total 1"),
        "{metrics}"
    );

    // An operator enables it: reason cleared, breaker closed; disables it: `manual`.
    let r = gw
        .admin("PATCH", &path(&dead), Some(json!({"active": true})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["disabled_reason"], Json::Null);
    assert_eq!(t["health"]["breaker"]["state"], "closed", "{t}");
    let r = gw
        .admin("PATCH", &path(&dead), Some(json!({"active": false})))
        .await;
    assert_eq!(r.json()["disabled_reason"], "manual");
}

#[tokio::test]
async fn breaker_settings_and_rate_limits_out_of_range_are_refused_naming_the_field() {
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("breaker_bad"),
        BREAKER,
    )
    .await;
    let (tenant, _) = gw.tenant("Strict Ltd").await;
    let url = "http://127.0.0.1:9/x";
    for (body, field) in [
        (
            json!({"breaker": {"failure_ratio": 0}}),
            "breaker.failure_ratio",
        ),
        (
            json!({"breaker": {"failure_ratio": 1.5}}),
            "breaker.failure_ratio",
        ),
        (
            json!({"breaker": {"probe_requests": 6}}),
            "breaker.probe_requests",
        ),
        (json!({"breaker": {"window_s": 0}}), "breaker.window_s"),
        (
            json!({"breaker": {"open_s": 60, "max_open_s": 30}}),
            "breaker.max_open_s",
        ),
        (json!({"breaker": {"colour": "red"}}), "breaker"),
        // Not an object: serde would take a sequence of the (all optional) fields.
        (json!({"breaker": [null, null]}), "breaker"),
        (
            json!({"rate_limit": {"per_second": 0}}),
            "rate_limit.per_second",
        ),
        (
            json!({"rate_limit": {"per_second": 5, "burst": 0}}),
            "rate_limit.burst",
        ),
        (
            json!({"rate_limit": {"per_second": 5}, "mode": "fire_and_forget"}),
            "rate_limit",
        ),
        (json!({"disable_after_h": 0}), "disable_after_h"),
        (json!({"disable_after_h": -1}), "disable_after_h"),
    ] {
        let mut spec = json!({"url": url, "events": ["*"]});
        for (k, v) in body.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let r = gw
            .admin(
                "POST",
                &format!("/admin/tenants/{tenant}/targets"),
                Some(spec.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{spec}: {}", r.text());
        let e = r.json();
        assert!(
            e["error"]["message"].as_str().unwrap().contains(field),
            "{spec}: {e}"
        );
    }
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/targets"), None)
        .await
        .json();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );

    // Good settings are kept and shown; a patch changes one, `null` removes them.
    let t = gw
        .create_target(
            &tenant,
            json!({"url": url, "events": ["*"], "breaker": {"min_requests": 3},
                   "rate_limit": {"per_second": 2.5, "burst": 4}, "disable_after_h": 0.25}),
        )
        .await;
    assert_eq!(t["breaker"], json!({"min_requests": 3}));
    assert_eq!(t["rate_limit"], json!({"per_second": 2.5, "burst": 4}));
    assert_eq!(t["disable_after_h"], 0.25);
    let path = format!(
        "/admin/tenants/{tenant}/targets/{}",
        t["id"].as_str().unwrap()
    );
    let r = gw
        .admin(
            "PATCH",
            &path,
            Some(json!({"breaker": {"probe_requests": 9}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = gw
        .admin("PATCH", &path, Some(json!({"breaker": [null, null]})))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = gw
        .admin(
            "PATCH",
            &path,
            Some(json!({"breaker": null, "rate_limit": null, "disable_after_h": null})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(
        (&t["breaker"], &t["rate_limit"], &t["disable_after_h"]),
        (&Json::Null, &Json::Null, &Json::Null)
    );
}
