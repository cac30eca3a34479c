//! Payload filters: which subscribed events a target receives, by their content.

use super::*;

#[tokio::test]
async fn filters_choose_which_subscribed_events_a_target_receives() {
    let gw = gateway("route-filter").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let big = create(
        &gw,
        &tenant,
        json!({"url": sink.url("/big"), "events": ["order.*"],
               "filter": {"body.amount": {"$gte": 1000}}}),
    )
    .await;
    assert_eq!(big.status, 201, "{}", big.text());
    assert_eq!(big.json()["filter"], json!({"body.amount": {"$gte": 1000}}));
    let brl = create(
        &gw,
        &tenant,
        json!({"url": sink.url("/brl"), "events": ["*"],
               "filter": {"$or": [{"body.currency": "BRL"}, {"body.items.$.sku": {"$startsWith": "BR-"}}]}}),
    )
    .await;
    assert_eq!(brl.status, 201, "{}", brl.text());
    let not_test = create(
        &gw,
        &tenant,
        json!({"url": sink.url("/types"), "events": ["*"],
               "filter": {"type": {"$not_an_operator": 1}}}),
    )
    .await;
    assert_eq!(not_test.status, 400, "{}", not_test.text());
    assert!(
        not_test.text().contains("type.$not_an_operator"),
        "the refusal names the path: {}",
        not_test.text()
    );
    let by_type = create(
        &gw,
        &tenant,
        json!({"url": sink.url("/types"), "events": ["*"],
               "filter": {"$not": {"type": {"$startsWith": "order."}}}}),
    )
    .await;
    assert_eq!(by_type.status, 201, "{}", by_type.text());
    let all = create(
        &gw,
        &tenant,
        json!({"url": sink.url("/all"), "events": ["*"]}),
    )
    .await;
    assert_eq!(all.status, 201);

    let events: [(&str, &[u8]); 5] = [
        ("order.paid", br#"{"amount": 1500, "currency": "USD"}"#),
        ("order.paid", br#"{"amount": 20, "currency": "BRL"}"#),
        (
            "order.created",
            br#"{"amount": 999, "items": [{"sku": "US-1"}, {"sku": "BR-7"}]}"#,
        ),
        ("user.created", br#"{"amount": 5000, "currency": "BRL"}"#),
        // Not JSON: only filters that do not look into the body can match it.
        ("user.note", b"\x00\xff amount=5000 \x80"),
    ];
    for (event_type, body) in events {
        gw.post_ok(&token, event_type, body).await;
    }
    gw.settled().await;
    assert_eq!(
        bodies(&sink, "/all").len(),
        5,
        "the unfiltered target gets all"
    );
    assert_eq!(
        bodies(&sink, "/big"),
        vec![r#"{"amount": 1500, "currency": "USD"}"#],
        "order.* with amount >= 1000 (user.created is not subscribed)"
    );
    let brl: Vec<String> = bodies(&sink, "/brl");
    assert_eq!(brl.len(), 3, "BRL or a BR- item: {brl:?}");
    let types = sink.received("/types");
    assert_eq!(types.len(), 2, "everything but order.*");
    assert_eq!(
        &types[1].body[..],
        b"\x00\xff amount=5000 \x80",
        "bytes as sent"
    );

    // A filter is changed and removed like any field.
    let id = big.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/tenants/{tenant}/targets/{id}");
    let r = gw
        .admin(
            "PATCH",
            &path,
            Some(json!({"filter": {"body.currency": {"$in": ["BRL"]}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["filter"],
        json!({"body.currency": {"$in": ["BRL"]}})
    );
    let r = gw
        .admin(
            "PATCH",
            &path,
            Some(json!({"filter": {"body.currency": {"$regex": "("}}})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("body.currency.$regex"), "{}", r.text());
    let r = gw.admin("GET", &path, None).await;
    assert_eq!(
        r.json()["filter"],
        json!({"body.currency": {"$in": ["BRL"]}}),
        "a refused patch changes nothing"
    );
    gw.post_ok(&token, "order.paid", br#"{"amount": 1, "currency": "BRL"}"#)
        .await;
    gw.settled().await;
    assert_eq!(bodies(&sink, "/big").len(), 2, "the new filter applies");
    let r = gw
        .admin("PATCH", &path, Some(json!({"filter": null})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["filter"], Json::Null);
    gw.post_ok(&token, "order.paid", br#"{"amount": 1}"#).await;
    gw.settled().await;
    assert_eq!(
        bodies(&sink, "/big").len(),
        3,
        "without a filter, every order.*"
    );
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_tenant_token_manages_its_targets_filters_too() {
    let gw = gateway("route-filter-tenant").await;
    let sink = Sink::start().await;
    let (_, token) = gw.tenant("acme").await;
    let r = support::http::Request::new("POST", "/v1/targets")
        .bearer(&token)
        .json(&json!({"url": sink.url("/t"), "events": ["*"],
                      "filter": {"headers.x-kind": {"$exist": true}}}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    // No ingest header is kept yet, so a filter on one never matches.
    gw.post_ok(&token, "a", b"{}").await;
    gw.settled().await;
    assert_eq!(sink.count("/t"), 0);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_declared_target_takes_its_filter_from_the_config_file() {
    let sink = Sink::start().await;
    let token = "routing-declared-token-0123456789abcdef";
    let declared = |filter: &str| {
        format!(
            r#"{FAST}
[[tenants]]
id = "shop"
name = "Shop"
token = "{token}"

[[tenants.targets]]
id = "shop-kept"
url = "{}"
events = ["*"]
filter = {filter}
"#,
            sink.url("/kept")
        )
    };
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("route-declared"),
        &declared(r#"{ "body.kind" = "keep", "body.n" = { "$gt" = 1 } }"#),
    )
    .await;
    gw.post_ok(token, "a", br#"{"kind": "keep", "n": 2}"#).await;
    gw.post_ok(token, "a", br#"{"kind": "keep", "n": 1}"#).await;
    gw.post_ok(token, "a", br#"{"kind": "drop", "n": 5}"#).await;
    gw.settled().await;
    assert_eq!(bodies(&sink, "/kept"), vec![r#"{"kind": "keep", "n": 2}"#]);
    gw.stop().await.unwrap();

    // A filter that does not compile stops the start with its path.
    let text = support::config_toml(
        &RedisServer::shared().url(),
        "route-declared-bad",
        &support::process::addrs(),
        std::path::Path::new("/nonexistent"),
        &declared(r#"{ "body.n" = { "$gt" = [1] } }"#),
    );
    let e = estafeta::config::Config::from_toml(&text)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("body.n.$gt"), "{e}");
}

#[tokio::test]
async fn a_filter_is_tried_on_the_stored_events_before_it_is_saved() {
    let gw = gateway("route-filter-test").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = create(
        &gw,
        &tenant,
        json!({"url": sink.url("/orders"), "events": ["order.*"]}),
    )
    .await
    .json();
    let id = t["id"].as_str().unwrap().to_owned();
    // More events than a page of the listing (500), and some of other types.
    let mut ids = Vec::new();
    for i in 0..620 {
        ids.push(
            gw.post_ok(
                &token,
                "order.paid",
                format!(r#"{{"amount": {i}}}"#).as_bytes(),
            )
            .await,
        );
        if i % 100 == 0 {
            gw.post_ok(&token, "user.created", br#"{"amount": 10000}"#)
                .await;
        }
    }
    gw.post_ok(&token, "order.note", b"\x00\xff not json").await;
    let path = format!("/admin/tenants/{tenant}/targets/{id}/filter-test");
    let tried = |body: Json| {
        let (gw, path) = (&gw, path.clone());
        async move { gw.admin("POST", &path, Some(body)).await }
    };
    let r = tried(json!({"filter": {"body.amount": {"$gte": 600}}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["evaluated"], 621,
        "every order.* event, the one that is not JSON too: {v}"
    );
    assert_eq!(v["matched"], 20, "{v}");
    let sample: Vec<&str> = v["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let newest: Vec<&str> = ids.iter().rev().take(20).map(String::as_str).collect();
    assert_eq!(sample, newest, "newest first");
    assert_eq!(v["errors"], json!([]));

    let r = tried(json!({"filter": {"body.amount": {"$gte": 600}}, "limit": 5})).await;
    assert_eq!(r.json()["evaluated"], 5, "{}", r.text());
    let r = tried(json!({"filter": {"type": "order.note"}})).await;
    assert_eq!(
        r.json()["matched"],
        1,
        "a filter on the type passes a body that is not JSON"
    );
    let r = tried(json!({"filter": {"body.amount": {"$gt": []}}})).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("body.amount.$gt"), "{}", r.text());
    let r = tried(json!({})).await;
    assert_eq!(r.status, 400, "no filter to try: {}", r.text());
    let r = tried(json!({"filter": {"type": "order.paid"}, "limit": 10001})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    // The saved filter is tried when none is named; nothing of the test is saved.
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/targets/{id}"),
            Some(json!({"filter": {"body.amount": {"$lt": 3}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = tried(json!({})).await;
    assert_eq!(r.json()["matched"], 3, "{}", r.text());
    let r = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{tenant}/targets/{id}"),
            None,
        )
        .await;
    assert_eq!(r.json()["filter"], json!({"body.amount": {"$lt": 3}}));
    // Another tenant cannot try filters on this one's target.
    let (_, other) = gw.tenant("other").await;
    let r = support::http::Request::new("POST", &format!("/v1/targets/{id}/filter-test"))
        .bearer(&other)
        .json(&json!({"filter": {"type": "order.paid"}}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn a_filter_is_tried_on_one_event_written_out() {
    let gw = gateway("route-filter-one").await;
    let (_, token) = gw.tenant("acme").await;
    let try_it = |body: Json| {
        let (gw, token) = (&gw, token.clone());
        async move {
            support::http::Request::new("POST", "/v1/filter-test")
                .bearer(&token)
                .json(&body)
                .send_plain(gw.addrs.plain)
                .await
                .unwrap()
        }
    };
    let r = try_it(json!({
        "filter": {"body.items.$.sku": "B-2", "headers.x-shop": {"$startsWith": "eu-"}},
        "event": {"type": "order.paid", "body": {"items": [{"sku": "A-1"}, {"sku": "B-2"}]},
                  "headers": {"X-Shop": "eu-west"}}
    }))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"matched": true, "reads_body": true}));
    let r = try_it(json!({
        "filter": {"body.items.$.sku": "C-3"},
        "event": {"type": "order.paid", "body": {"items": [{"sku": "A-1"}]}}
    }))
    .await;
    assert_eq!(r.json()["matched"], false);
    let r = try_it(json!({
        "filter": {"received_at": {"$lt": "2026-01-01T00:00:00Z"}},
        "event": {"type": "a", "received_at": "2025-06-01T10:00:00+02:00"}
    }))
    .await;
    assert_eq!(
        r.json(),
        json!({"matched": true, "reads_body": false}),
        "{}",
        r.text()
    );
    let r = try_it(json!({"filter": {"$or": "x"}, "event": {"type": "a"}})).await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("$or"), "{}", r.text());
    gw.stop().await.unwrap();
}
