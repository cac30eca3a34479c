//! Batched deliveries: a target's events gathered in Redis and sent as one signed POST when a
//! batch is full or has waited long enough; retried whole with the same id and events.

use std::time::Duration;

use super::*;
use support::eventually;
use support::http::Request;
use support::sink::Reply;

/// The batches `path` received: (webhook-id, event ids, the whole body).
fn batches(sink: &Sink, path: &str) -> Vec<(String, Vec<String>, Json)> {
    sink.received(path)
        .iter()
        .map(|r| {
            let body: Json = serde_json::from_slice(&r.body).unwrap();
            let ids = body["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect();
            (r.header("webhook-id").unwrap(), ids, body)
        })
        .collect()
}

#[tokio::test]
async fn events_go_in_batches_by_size_and_by_time_signed_and_in_order() {
    let gw = gateway("batch-size-time").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/batched"), "events": ["*"],
                   "batch": {"max_events": 10, "max_wait_ms": 60000}}),
        )
        .await;
    assert_eq!(t["batch"], json!({"max_events": 10, "max_wait_ms": 60000}));
    let plain = gw
        .create_target(&tenant, json!({"url": sink.url("/plain"), "events": ["*"]}))
        .await;
    let mut posted = Vec::new();
    for i in 0..24 {
        posted.push(
            gw.post_ok(&token, "order.paid", format!(r#"{{"n":{i}}}"#).as_bytes())
                .await,
        );
    }
    // A body that is not JSON, every byte in it.
    let raw: Vec<u8> = (0u8..=255).collect();
    let r = Request::new("POST", "/v1/events/blob.raw")
        .bearer(&token)
        .header("content-type", "application/octet-stream")
        .body(raw.clone())
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    posted.push(r.json()["id"].as_str().unwrap().to_owned());

    eventually(Duration::from_secs(10), "two full batches", || async {
        sink.count("/batched") >= 2
    })
    .await;
    gw.settled().await;
    assert_eq!(
        sink.count("/plain"),
        25,
        "the unbatched target gets one request per event"
    );
    let full = batches(&sink, "/batched");
    assert_eq!(full.len(), 2, "the last 5 wait for more or for their time");
    let mut seen: Vec<String> = full.iter().flat_map(|(_, ids, _)| ids.clone()).collect();
    assert_eq!(seen, posted[..20].to_vec(), "in order, each once");
    for (id, ids, _) in &full {
        assert!(id.starts_with("bat_"), "{id}");
        assert_eq!(ids.len(), 10);
    }
    let secret = t["secret"].as_str().unwrap();
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    for r in sink.received("/batched") {
        wh.verify(&r.body, &r.headers)
            .expect("one signature over the whole batch");
        assert_eq!(
            r.header("estafeta-event-type").as_deref(),
            Some("estafeta.batch")
        );
    }
    let first = &full[0].2["events"][0];
    assert_eq!(first["type"], json!("order.paid"));
    assert_eq!(
        first["body"],
        json!({"n": 0}),
        "a JSON body is embedded as JSON"
    );
    assert!(first["received_at"].as_str().unwrap().ends_with('Z'));

    // The rest goes once its first event has waited max_wait_ms (the clock moves, no sleep).
    gw.advance(Duration::from_secs(61));
    eventually(
        Duration::from_secs(10),
        "the last batch by time",
        || async { sink.count("/batched") == 3 },
    )
    .await;
    let last = batches(&sink, "/batched").pop().unwrap();
    assert_eq!(last.1, posted[20..].to_vec());
    let blob = &last.2["events"][4];
    assert_eq!(blob["body_encoding"], json!("base64"));
    assert_eq!(blob["content_type"], json!("application/octet-stream"));
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(blob["body"].as_str().unwrap())
            .unwrap(),
        raw
    );
    seen.extend(last.1.clone());
    assert_eq!(seen, posted);

    // Each event's delivery view names its batch and its outcome.
    gw.settled().await;
    let v = gw
        .get_as(&token, &format!("/v1/events/{}", posted[3]))
        .await
        .json();
    let d = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target_id"] == t["id"])
        .unwrap()
        .clone();
    assert_eq!(d["state"], json!("succeeded"), "{v}");
    assert_eq!(d["batch_id"], json!(full[0].0));
    let p = v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target_id"] == plain["id"])
        .unwrap()
        .clone();
    assert_eq!(p["batch_id"], Json::Null);
}

#[tokio::test]
async fn a_failed_batch_is_sent_again_whole_then_parked_event_by_event() {
    let gw = gateway("batch-retry").await;
    let sink = Sink::start().await;
    sink.plan("/flaky", vec![Reply::Status(500)], Reply::Status(200));
    sink.plan("/down", vec![], Reply::Status(503));
    let (tenant, token) = gw.tenant("acme").await;
    gw.create_target(
        &tenant,
        json!({"url": sink.url("/flaky"), "events": ["*"], "batch": {"max_events": 3, "max_wait_ms": 60000}}),
    )
    .await;
    let down = gw
        .create_target(
            &tenant,
            json!({"url": sink.url("/down"), "events": ["*"], "batch": {"max_events": 3, "max_wait_ms": 60000}}),
        )
        .await;
    let mut posted = Vec::new();
    for i in 0..3 {
        posted.push(
            gw.post_ok(&token, "order.paid", format!(r#"{{"n":{i}}}"#).as_bytes())
                .await,
        );
    }
    eventually(Duration::from_secs(10), "the retry succeeds", || async {
        sink.count("/flaky") == 2
    })
    .await;
    let sent = batches(&sink, "/flaky");
    assert_eq!(sent[0].0, sent[1].0, "the same batch id");
    assert_eq!(sent[0].1, sent[1].1, "the same events");
    assert_eq!(sent[0].1, posted);
    // The receiver that stays down: two attempts (FAST's policy), then each event is in the
    // error queue on its own, replayable.
    eventually(Duration::from_secs(10), "the batch is parked", || async {
        let dl = gw.get_as(&token, "/v1/dead-letters").await.json();
        dl["data"].as_array().map(|d| d.len()) == Some(3)
    })
    .await;
    assert_eq!(sink.count("/down"), 2);
    let dl = gw.get_as(&token, "/v1/dead-letters").await.json();
    assert!(
        dl["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["target_id"] == down["id"]
                && d["attempts"] == json!(2)
                && d["last_status"] == json!(503))
    );
}

#[tokio::test]
async fn batch_settings_are_bounded_and_combine_only_with_what_a_batch_can_be() {
    let gw = gateway("batch-bad").await;
    let (tenant, _) = gw.tenant("acme").await;
    for (batch, extra, says) in [
        (
            json!({"max_events": 0, "max_wait_ms": 0}),
            json!({}),
            "between 1 and 1000",
        ),
        (
            json!({"max_events": 1001, "max_wait_ms": 0}),
            json!({}),
            "between 1 and 1000",
        ),
        (
            json!({"max_events": 10, "max_wait_ms": 300001}),
            json!({}),
            "between 0 and 300000",
        ),
        (json!({"max_events": 10}), json!({}), "max_wait_ms"),
        (
            json!({"max_events": 10, "max_wait_ms": 1}),
            json!({"mode": "fire_and_forget"}),
            "batch",
        ),
        (
            json!({"max_events": 10, "max_wait_ms": 1}),
            json!({"ordered": true}),
            "ordered",
        ),
        (
            json!({"max_events": 10, "max_wait_ms": 1}),
            json!({"format": "slack"}),
            "chat format",
        ),
        (
            json!({"max_events": 10, "max_wait_ms": 1}),
            json!({"transform": {"program": "."}}),
            "transformation",
        ),
    ] {
        let mut spec = json!({"url": "http://127.0.0.1:9/x", "events": ["*"], "batch": batch});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = create(&gw, &tenant, spec).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/targets"), None)
        .await;
    assert_eq!(listed.json()["data"], json!([]));
    let t = gw
        .create_target(
            &tenant,
            json!({"url": "http://127.0.0.1:9/x", "events": ["*"], "transform": {"program": "."}}),
        )
        .await;
    let r = gw
        .admin(
            "PATCH",
            &format!(
                "/admin/tenants/{tenant}/targets/{}",
                t["id"].as_str().unwrap()
            ),
            Some(json!({"batch": {"max_events": 5, "max_wait_ms": 10}})),
        )
        .await;
    assert_eq!(
        r.status,
        400,
        "a patch is held to the same rules: {}",
        r.text()
    );
}
