//! Operational events, on real sinks: a target subscribed to `estafeta.*` receives, signed,
//! what happens to the tenant's other targets and deliveries (a delivery failing, exhausted,
//! recovered; a breaker opening and closing; a target disabled by the gateway or an operator,
//! and enabled again), at most one `failing` per target and hour however many deliveries
//! fail, and never an event about itself; `*` alone does not take them. Tenants cannot send
//! these types.

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::support::sink::{Reply, Sink};
use crate::support::{Gateway, RedisServer, eventually, unique_prefix};

const OPS: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 20, multiplier = 1.0, max_delay_ms = 20, max_attempts = 50 }
disable_after_h = 0.5

[dispatch.breaker]
window_s = 3600
min_requests = 30
failure_ratio = 0.5
open_s = 600
max_open_s = 600
"#;

const WAIT: Duration = Duration::from_secs(15);

/// The operational events `sink` received on `path`, as (type, body), each verified
/// against the target's secret.
fn notices(sink: &Sink, path: &str, secret: &str) -> Vec<(String, Json)> {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    sink.received(path)
        .iter()
        .filter_map(|r| {
            let t = r.header("estafeta-event-type")?;
            // Signed at the gateway's clock, which a test moves ahead: checked by signing
            // again rather than against this machine's time.
            let id = r.header("webhook-id").unwrap();
            let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
            let expected = wh.sign(&id, ts, &r.body).unwrap();
            let sent = r.header("webhook-signature").unwrap();
            assert!(
                sent.split(' ').any(|s| s == expected),
                "signed like any delivery"
            );
            Some((t, serde_json::from_slice(&r.body).unwrap()))
        })
        .collect()
}

fn of_type<'a>(got: &'a [(String, Json)], t: &str) -> Vec<&'a Json> {
    got.iter().filter(|(k, _)| k == t).map(|(_, b)| b).collect()
}

#[tokio::test]
async fn operational_events_reach_the_targets_that_ask_and_never_the_one_they_are_about() {
    let gw =
        Gateway::start_with(&RedisServer::shared().url(), &unique_prefix("notices"), OPS).await;
    let sink = Sink::start().await;
    sink.plan("/down", vec![], Reply::Status(500));
    sink.plan("/final", vec![], Reply::Status(422));
    let flaky_replies = vec![Reply::Status(500); 4];
    sink.plan("/flaky", flaky_replies, Reply::Status(200));
    let (tenant, token) = gw.tenant("Ops Ltd").await;
    let ops = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/ops"), "events": ["estafeta.*"]}),
        )
        .await;
    let secret = ops["secret"].as_str().unwrap().to_owned();
    // The failing target takes every event and asks for notices: those about it must still
    // not reach it.
    let down = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/down"), "events": ["*", "estafeta.*"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let once = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/final"), "events": ["order.*"], "mode": "once"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let flaky = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/flaky"), "events": ["payment.*"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // `*` alone does not take operational events: a target asks for them by name.
    gw.create_target(&tenant, json!({"url": sink.url("/all"), "events": ["*"]}))
        .await;
    // Tenants cannot send the gateway's own types.
    let r = gw
        .post_event(&token, "estafeta.target.disabled", br#"{"target_id": "x"}"#)
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "reserved_event_type");

    let payment = gw.post_ok(&token, "payment.settled", b"{}").await;
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(
            gw.post_ok(&token, "order.paid", format!("{{\"n\":{i}}}").as_bytes())
                .await,
        );
    }
    eventually(
        WAIT,
        "failing, exhausted, recovered and the breaker",
        || async {
            let got = notices(&sink, "/ops", &secret);
            !of_type(&got, "estafeta.delivery.failing").is_empty()
                && of_type(&got, "estafeta.delivery.exhausted").len() == 3
                && of_type(&got, "estafeta.delivery.recovered").len() == 1
                && of_type(&got, "estafeta.target.breaker_opened").len() == 1
        },
    )
    .await;
    let got = notices(&sink, "/ops", &secret);
    // Three deliveries to the same target failed four times: one notice in the hour.
    let failing = of_type(&got, "estafeta.delivery.failing");
    assert_eq!(
        failing
            .iter()
            .filter(|b| b["target_id"] == down.as_str())
            .count(),
        1,
        "{got:?}"
    );
    let f = failing
        .iter()
        .find(|b| b["target_id"] == down.as_str())
        .unwrap();
    assert_eq!(f["attempts"], 4);
    assert_eq!(f["last_status"], 500);
    let about = f["event_id"].as_str().unwrap().to_owned();
    assert!(events.contains(&about) || about == payment, "{f}");
    for e in of_type(&got, "estafeta.delivery.exhausted") {
        assert_eq!(e["target_id"], once.as_str());
        assert_eq!(e["last_status"], 422);
        assert!(
            e["dead_letter_id"].as_str().unwrap().starts_with("dl_"),
            "{e}"
        );
    }
    let rec = of_type(&got, "estafeta.delivery.recovered")[0];
    assert_eq!(rec["target_id"], flaky.as_str());
    assert_eq!(rec["attempts"], 5);
    let opened = of_type(&got, "estafeta.target.breaker_opened")[0];
    assert_eq!(opened["target_id"], down.as_str());
    assert_eq!(opened["type"], "estafeta.target.breaker_opened");
    assert!(opened["until"].is_string() && opened["at"].is_string());

    // Half an hour of failure on: the probe fails, the gateway disables the target.
    gw.advance(Duration::from_secs(1801));
    eventually(WAIT, "the disabled notice", || async {
        !of_type(&notices(&sink, "/ops", &secret), "estafeta.target.disabled").is_empty()
    })
    .await;
    let got = notices(&sink, "/ops", &secret);
    let d = of_type(&got, "estafeta.target.disabled")[0];
    assert_eq!(
        (&d["target_id"], &d["trigger"], &d["reason"]),
        (&json!(down), &json!("automatic"), &json!("failing"))
    );
    assert!(d["failing_since"].is_string());

    // An operator enables it and disables it again.
    let path = format!("/admin/tenants/{tenant}/targets/{down}");
    let r = gw
        .admin("PATCH", &path, Some(json!({"active": true})))
        .await;
    assert_eq!(r.status, 200);
    let r = gw
        .admin("PATCH", &path, Some(json!({"active": false})))
        .await;
    assert_eq!(r.status, 200);
    eventually(WAIT, "enabled and disabled by hand", || async {
        let got = notices(&sink, "/ops", &secret);
        of_type(&got, "estafeta.target.enabled").len() == 1
            && of_type(&got, "estafeta.target.disabled")
                .iter()
                .any(|d| d["trigger"] == "manual" && d["reason"] == "manual")
    })
    .await;

    // The target they are about got none of them; the stream holds them like any event.
    let to_self: Vec<Json> = sink
        .received("/down")
        .iter()
        .filter(|r| {
            r.header("estafeta-event-type")
                .is_some_and(|t| t.starts_with("estafeta."))
        })
        .map(|r| serde_json::from_slice::<Json>(&r.body).unwrap())
        .filter(|b| b["target_id"] == down.as_str())
        .collect();
    assert!(to_self.is_empty(), "{to_self:?}");
    // It asked for them, so it did get those about the others; `*` alone got none.
    assert!(
        sink.received("/all").iter().all(|r| !r
            .header("estafeta-event-type")
            .unwrap_or_default()
            .starts_with("estafeta.")),
        "a target subscribed to * only got operational events"
    );
    assert!(sink.count("/all") >= 4, "it got the tenant's own events");
    assert!(
        sink.received("/down")
            .iter()
            .any(|r| r.header("estafeta-event-type").as_deref()
                == Some("estafeta.delivery.exhausted"))
    );
    let listed = gw
        .get_as(&token, "/v1/events?event_type=estafeta.target.disabled")
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert!(
        listed.json()["data"].as_array().unwrap().len() >= 2,
        "{}",
        listed.text()
    );
}
