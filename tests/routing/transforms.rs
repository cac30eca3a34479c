//! Transformations: a target's jq program reshapes each delivery (body, headers, path and
//! query, method) or cancels it, runs in the sandbox's worker processes (a program that loops
//! or crashes costs its own delivery only), is versioned, and can be simulated.

use std::time::Duration;

use super::*;
use support::eventually;
use support::http::Request;

async fn target(gw: &Gateway, tenant: &str, body: Json) -> Json {
    let r = create(gw, tenant, body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

async fn delivery_state(gw: &Gateway, token: &str, event: &str, target: &str) -> Json {
    let v = gw
        .get_as(token, &format!("/v1/events/{event}"))
        .await
        .json();
    v["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["target_id"] == json!(target))
        .cloned()
        .unwrap_or(Json::Null)
}

#[tokio::test]
async fn a_transformation_reshapes_what_is_sent_and_the_signature_covers_it() {
    let gw = gateway("transform-shape").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}"),
            Some(json!({"keep_headers": ["X-Shop"]})),
        )
        .await;
    assert_eq!(r.status, 200);
    let program = r#"{
        type,
        url: (.url + "/v2?shop=" + .headers["x-shop"]),
        method: "PUT",
        headers: (.headers + {"x-amount-cents": (.body.amount * 100 | tostring)}),
        body: {order: .body.id, cents: (.body.amount * 100)}
    }"#;
    let shaped = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/orders"), "events": ["order.*"], "headers": {"X-Team": "billing"},
               "transform": {"program": program}}),
    )
    .await;
    assert_eq!(shaped["transform"]["version"], json!(1));
    assert_eq!(shaped["transform"]["enabled"], json!(true));
    let cancel = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/big"), "events": ["order.*"],
               "transform": {"program": "if .body.amount < 10 then {cancel: true} else . end"}}),
    )
    .await;
    let failing = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/never"), "events": ["order.*"],
               "transform": {"program": "if .body.amount > 100 then error(\"too big for this receiver\") else . end"}}),
    )
    .await;
    let forbidden = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/never"), "events": ["order.*"],
               "transform": {"program": ". + {headers: {\"Webhook-Signature\": \"v1,forged\"}}"}}),
    )
    .await;

    let post = |body: &'static [u8]| {
        let token = token.clone();
        let addr = gw.addrs.plain;
        async move {
            let r = Request::new("POST", "/v1/events/order.paid")
                .bearer(&token)
                .header("content-type", "application/json")
                .header("x-shop", "acme")
                .body(body.to_vec())
                .send_plain(addr)
                .await
                .unwrap();
            assert_eq!(r.status, 202, "{}", r.text());
            r.json()["id"].as_str().unwrap().to_owned()
        }
    };
    let small = post(br#"{"id":"o1","amount":5}"#).await;
    let big = post(br#"{"id":"o2","amount":500}"#).await;
    gw.settled().await;

    let got = sink.received("/orders/v2");
    assert_eq!(got.len(), 2, "both reshaped");
    let first = &got[0];
    assert_eq!(first.method, "PUT");
    assert_eq!(first.query.as_deref(), Some("shop=acme"));
    let sent: Json = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(sent, json!({"order": "o1", "cents": 500}));
    assert_eq!(
        first.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(first.header("x-amount-cents").as_deref(), Some("500"));
    assert_eq!(
        first.header("x-team").as_deref(),
        Some("billing"),
        "the target's own headers ride along"
    );
    assert_eq!(
        first.header("x-shop").as_deref(),
        Some("acme"),
        "kept headers the program leaves on go too"
    );
    assert_eq!(first.header("webhook-id").as_deref(), Some(small.as_str()));
    let secret = shaped["secret"].as_str().unwrap();
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    for r in &got {
        wh.verify(&r.body, &r.headers)
            .expect("the Standard Webhooks library verifies the transformed body");
    }
    assert!(
        wh.verify(br#"{"id":"o1","amount":5}"#, &first.headers)
            .is_err(),
        "not the original body"
    );

    // Cancelled: nothing sent, the delivery finished as cancelled, not failed.
    let cancel_id = cancel["id"].as_str().unwrap();
    let big_sent = sink.received("/big");
    assert_eq!(big_sent.len(), 1, "only the big order");
    let sent: Json = serde_json::from_slice(&big_sent[0].body).unwrap();
    assert_eq!(
        sent,
        json!({"id": "o2", "amount": 500}),
        "`.` sends the body back as JSON"
    );
    let d = delivery_state(&gw, &token, &small, cancel_id).await;
    assert_eq!(d["state"], json!("cancelled"), "{d}");
    let view = gw
        .get_as(&token, &format!("/v1/events/{small}"))
        .await
        .json();
    let attempts = view["attempts"].as_array().unwrap();
    let noted = attempts
        .iter()
        .find(|a| a["target_id"] == json!(cancel_id))
        .unwrap();
    assert_eq!(noted["transform_version"], json!(1));
    assert!(noted["error"].as_str().unwrap().contains("cancelled"));
    assert!(
        attempts
            .iter()
            .filter(|a| a["target_id"] == shaped["id"])
            .all(|a| a["transform_version"] == json!(1))
    );

    // A program that refuses an input fails that delivery finally (no retry, error queue).
    let failing_id = failing["id"].as_str().unwrap();
    let d = delivery_state(&gw, &token, &big, failing_id).await;
    assert_eq!(d["state"], json!("dead_lettered"), "{d}");
    assert_eq!(d["attempts"], json!(1));
    assert_eq!(
        d["last_error"],
        json!("transform_failed: too big for this receiver")
    );
    assert_eq!(
        delivery_state(&gw, &token, &small, failing_id).await["state"],
        json!("succeeded")
    );
    // An output that sets a header the gateway owns is refused the same way.
    let d = delivery_state(&gw, &token, &small, forbidden["id"].as_str().unwrap()).await;
    assert_eq!(d["state"], json!("dead_lettered"), "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("headers.Webhook-Signature"),
        "{d}"
    );
    assert_eq!(
        sink.count("/never"),
        1,
        "the failing target's small order went through untouched"
    );
    let dl = gw.get_as(&token, "/v1/dead-letters").await.json();
    assert_eq!(
        dl["data"].as_array().unwrap().len(),
        3,
        "the forbidden output twice, the refused input once: {dl}"
    );
}

#[tokio::test]
async fn programs_that_loop_or_crash_cost_only_their_own_deliveries() {
    let gw = Gateway::start_edited(
        &RedisServer::shared().url(),
        &unique_prefix("transform-sandbox"),
        FAST,
        std::sync::Arc::new(support::certs()),
        |t| t.replace("[transform]\n", "[transform]\ntimeout_ms = 1000\n"),
    )
    .await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let looping = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/loop"), "events": ["slow.*"], "transform": {"program": "def f: f; f"}}),
    )
    .await;
    let crashing = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/crash"), "events": ["slow.*"], "transform": {"program": "def f: 1 + f; f"}}),
    )
    .await;
    let fine = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/fine"), "events": ["*"], "transform": {"program": ".body |= {n: .n}"}}),
    )
    .await;
    let slow = gw.post_ok(&token, "slow.one", br#"{"n":0}"#).await;
    let started = std::time::Instant::now();
    for n in 1..=100 {
        gw.post_ok(
            &token,
            "fast.one",
            format!(r#"{{"n":{n},"x":1}}"#).as_bytes(),
        )
        .await;
    }
    eventually(
        Duration::from_secs(20),
        "the other deliveries go on",
        || async { sink.count("/fine") >= 101 },
    )
    .await;
    eprintln!(
        "101 transformed deliveries in {:?} beside a loop and a crash",
        started.elapsed()
    );
    assert_eq!(sink.count("/loop") + sink.count("/crash"), 0);
    assert!(
        sink.received("/fine")
            .iter()
            .all(|r| !r.body.contains(&b'x'))
    );
    gw.settled().await;
    let d = delivery_state(&gw, &token, &slow, looping["id"].as_str().unwrap()).await;
    assert_eq!(d["state"], json!("dead_lettered"), "{d}");
    assert_eq!(d["attempts"], json!(2), "a timeout is retried: {d}");
    assert_eq!(d["last_error"], json!("transform_failed: timeout"));
    let d = delivery_state(&gw, &token, &slow, crashing["id"].as_str().unwrap()).await;
    assert_eq!(d["state"], json!("dead_lettered"), "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("crashed its sandbox"),
        "{d}"
    );
    let d = delivery_state(&gw, &token, &slow, fine["id"].as_str().unwrap()).await;
    assert_eq!(d["state"], json!("succeeded"));
    let metrics = gw.metrics_showing("estafeta_jq_runs_total").await;
    for result in ["ok", "timeout", "crashed"] {
        assert!(
            metrics.contains(&format!("estafeta_jq_runs_total{{result=\"{result}\"}}")),
            "{result}"
        );
    }
}

#[tokio::test]
async fn transformations_are_checked_versioned_and_simulated() {
    let gw = Gateway::start_edited(
        &RedisServer::shared().url(),
        &unique_prefix("transform-api"),
        FAST,
        std::sync::Arc::new(support::certs()),
        |t| {
            t.replace(
                "allow_private_targets = true",
                "allow_private_targets = false",
            )
        },
    )
    .await;
    let (tenant, token) = gw.tenant("acme").await;
    let base = json!({"url": "https://receiver.example.com/hooks", "events": ["*"]});
    // Programs that do not compile, or use what the sandbox leaves out: 400, nothing stored.
    for (program, says) in [
        (".a |", "does not compile"),
        ("now", "undefined filter `now`"),
        ("env.HOME", "undefined"),
        ("input", "undefined"),
        ("  ", "jq program"),
    ] {
        let mut spec = base.clone();
        spec["transform"] = json!({ "program": program });
        let r = create(&gw, &tenant, spec).await;
        assert_eq!(r.status, 400, "{program}: {}", r.text());
        assert!(r.text().contains(says), "{program}: {}", r.text());
    }
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/targets"), None)
        .await;
    assert_eq!(listed.json()["data"], json!([]));

    let mut spec = base.clone();
    spec["transform"] = json!({"program": ".body.v = 1"});
    let t = target(&gw, &tenant, spec).await;
    let id = t["id"].as_str().unwrap();
    let path = format!("/v1/targets/{id}");
    let patch = |body: Json| {
        let path = path.clone();
        let token = token.clone();
        let addr = gw.addrs.plain;
        async move {
            Request::new("PATCH", &path)
                .bearer(&token)
                .json(&body)
                .send_plain(addr)
                .await
                .unwrap()
        }
    };
    let r = patch(json!({"transform": {"program": ".body.v = 2"}})).await;
    assert_eq!(r.json()["transform"]["version"], json!(2));
    let r = patch(json!({"transform": {"program": ".body.v = ("}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = patch(json!({"transform": {"program": ".body.v = 2", "enabled": false}})).await;
    assert_eq!(r.json()["transform"]["version"], json!(3));
    let r = patch(json!({"url": "https://receiver.example.com/other"})).await;
    assert_eq!(
        r.json()["transform"]["version"],
        json!(3),
        "other changes keep the version"
    );
    let versions = gw
        .get_as(&token, &format!("/v1/targets/{id}/transform/versions"))
        .await
        .json();
    let listed: Vec<(u64, bool)> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, vec![(3, false), (2, true), (1, true)]);

    let simulate = |body: Json| {
        let token = token.clone();
        let addr = gw.addrs.plain;
        let path = format!("/v1/targets/{id}/transform/simulate");
        async move {
            Request::new("POST", &path)
                .bearer(&token)
                .json(&body)
                .send_plain(addr)
                .await
                .unwrap()
        }
    };
    let event = json!({"type": "order.paid", "body": {"id": 1}, "headers": {"X-Shop": "acme"}});
    let r = simulate(json!({"event": event})).await;
    assert_eq!(
        r.json()["outcome"],
        json!("untouched"),
        "disabled: {}",
        r.text()
    );
    let r = simulate(json!({"event": event, "program": ".method = \"PATCH\" | .url += \"?x=1\" | .headers[\"x-shop\"] |= ascii_upcase"})).await;
    let v = r.json();
    assert_eq!(v["outcome"], json!("send"), "{v}");
    assert_eq!(
        v["version"],
        json!(4),
        "a program tried would be the next version"
    );
    assert_eq!(v["request"]["method"], json!("PATCH"));
    assert_eq!(
        v["request"]["url"],
        json!("https://receiver.example.com/other?x=1")
    );
    assert_eq!(v["request"]["body"], json!(r#"{"id":1}"#));
    assert_eq!(v["request"]["content_type"], json!("application/json"));
    assert!(
        v["request"]["headers"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "x-shop", "value": "ACME"}))
    );
    let r = simulate(json!({"event": event, "program": "{cancel: true}"})).await;
    assert_eq!(r.json()["outcome"], json!("cancel"));
    let r =
        simulate(json!({"event": event, "program": ".url = \"http://10.1.2.3/internal\""})).await;
    assert_eq!(r.json()["outcome"], json!("fail"));
    assert!(
        r.json()["error"].as_str().unwrap().contains("url"),
        "{}",
        r.text()
    );
    let r = simulate(json!({"event": event, "program": ".body = \"plain \\u0000 text\" | .headers[\"content-type\"] = \"text/plain\""})).await;
    assert_eq!(r.json()["request"]["body"], json!("plain \u{0} text"));
    assert_eq!(r.json()["request"]["content_type"], json!("text/plain"));
    // A stored event by id.
    let stored = gw.post_ok(&token, "order.paid", br#"{"id":7}"#).await;
    let r = simulate(json!({"event_id": stored, "program": ".body.id += 1"})).await;
    assert_eq!(
        r.json()["request"]["body"],
        json!(r#"{"id":8}"#),
        "{}",
        r.text()
    );
    let raw = gw.post_ok(&token, "blob", b"\xff\x00 not text").await;
    let r = simulate(json!({"event_id": raw, "program": "."})).await;
    assert_eq!(r.json()["outcome"], json!("fail"));
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("neither JSON nor UTF-8")
    );
    for bad in [
        json!({}),
        json!({"event": event, "event_id": stored}),
        json!({"event_id": stored, "program": "("}),
    ] {
        assert_eq!(simulate(bad.clone()).await.status, 400, "{bad}");
    }
    // Removed: the versions stay listed; a new program continues the count.
    let r = patch(json!({"transform": null})).await;
    assert_eq!(r.json()["transform"], Json::Null);
    let r = patch(json!({"transform": {"program": "."}})).await;
    assert_eq!(r.json()["transform"]["version"], json!(4));
}

#[tokio::test]
async fn a_declared_target_takes_its_transformation_from_the_config_file() {
    let extra = format!(
        r#"{FAST}
[[tenants]]
id = "decl"
name = "Declared"
token = "decl-token-0123456789abcdef"

[[tenants.targets]]
id = "tgt_decl"
url = "http://127.0.0.1:9/hook"
events = ["*"]
transform = {{ program = ".body |= {{wrapped: .}}" }}
"#
    );
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("transform-decl"),
        &extra,
    )
    .await;
    let r = gw
        .admin("GET", "/admin/tenants/decl/targets/tgt_decl", None)
        .await;
    assert_eq!(r.json()["transform"]["version"], json!(1), "{}", r.text());
    assert_eq!(
        r.json()["transform"]["program"],
        json!(".body |= {wrapped: .}")
    );
}

#[tokio::test]
async fn a_test_ping_goes_through_the_transformation_like_a_delivery() {
    let gw = gateway("transform-ping").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let shaped = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ping"), "events": ["*"], "transform": {"program": ".body.shaped = true | .headers[\"x-ping\"] = .type | .method = \"PUT\""}}),
    )
    .await;
    let id = shaped["id"].as_str().unwrap();
    let r = Request::new("POST", &format!("/v1/targets/{id}/test"))
        .bearer(&token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["delivered"], json!(true), "{v}");
    assert_eq!(v["transform_version"], json!(1), "{v}");
    let got = sink.received("/ping");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "PUT");
    assert_eq!(got[0].header("x-ping").as_deref(), Some("estafeta.ping"));
    let body: Json = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["shaped"], json!(true), "{body}");
    assert_eq!(body["type"], json!("estafeta.ping"));

    // A program that cancels pings, or fails on them, sends nothing and says why.
    for (program, says) in [
        (
            r#"if .type == "estafeta.ping" then {cancel: true} else . end"#,
            "cancels it",
        ),
        (r#"error("no pings here")"#, "no pings here"),
    ] {
        let r = gw
            .admin(
                "PATCH",
                &format!("/admin/tenants/{tenant}/targets/{id}"),
                Some(json!({"transform": {"program": program}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = gw
            .admin(
                "POST",
                &format!("/admin/tenants/{tenant}/targets/{id}/test"),
                None,
            )
            .await;
        let v = r.json();
        assert_eq!(v["delivered"], json!(false), "{v}");
        assert_eq!(v["status"], Json::Null);
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
        assert!(v["transform_version"].as_u64().unwrap() > 1, "{v}");
    }
    assert_eq!(sink.count("/ping"), 1, "nothing more was sent");
    // A target without a transformation says so with null.
    let plain = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/plain"), "events": ["*"]}),
    )
    .await;
    let r = gw
        .admin(
            "POST",
            &format!(
                "/admin/tenants/{tenant}/targets/{}/test",
                plain["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.json()["transform_version"], Json::Null);
    assert_eq!(sink.count("/plain"), 1);
}
