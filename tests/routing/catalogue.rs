//! The event catalogue: event types with owners and JSON Schemas by version, through both
//! APIs and the config file; import and export as OpenAPI 3.1 `webhooks`; ingest held to it
//! (`warn`, `enforce`), on every instance within a second of a change.

use std::time::Duration;

use super::*;
use support::eventually;
use support::http::Request;

fn order_schema() -> Json {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["id", "amount"],
        "properties": {
            "id": {"type": "string", "pattern": "^ord_"},
            "amount": {"type": "integer", "minimum": 0},
            "email": {"type": "string", "format": "email"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}}
        },
        "$defs": {"item": {"type": "object", "required": ["sku"]}}
    })
}

async fn put(gw: &Gateway, tenant: &str, name: &str, body: Json) -> support::http::Response {
    gw.admin(
        "PUT",
        &format!("/admin/tenants/{tenant}/event-types/{name}"),
        Some(body),
    )
    .await
}

async fn set_mode(gw: &Gateway, tenant: &str, mode: &str) {
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}"),
            Some(json!({ "catalogue": mode })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

async fn post(
    gw: &Gateway,
    token: &str,
    event_type: &str,
    version: Option<&str>,
    body: &[u8],
) -> support::http::Response {
    let mut r = Request::new("POST", &format!("/v1/events/{event_type}"))
        .bearer(token)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(v) = version {
        r = r.header("estafeta-schema-version", v);
    }
    r.send_plain(gw.addrs.plain).await.unwrap()
}

#[tokio::test]
async fn event_types_are_written_read_changed_archived_and_kept_apart() {
    let gw = gateway("catalogue-crud").await;
    let (tenant, token) = gw.tenant("acme").await;
    let (other, other_token) = gw.tenant("globex").await;

    let spec = json!({
        "description": "An order was paid.\nBy card or transfer.",
        "owner": {"service": "billing-api", "team": "Payments", "repository_url": "https://git.example.com/billing"},
        "group": "billing",
        "schemas": {"1": order_schema()},
    });
    let r = put(&gw, &tenant, "order.paid", spec.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["name"], json!("order.paid"));
    assert_eq!(v["latest_version"], json!(1));
    assert_eq!(v["owner"]["team"], json!("Payments"));
    assert_eq!(v["schemas"]["1"], order_schema());
    assert_eq!(v["deprecated"], json!(false));
    let again = put(&gw, &tenant, "order.paid", spec.clone()).await;
    assert_eq!(again.status, 200, "the same again is no new type");
    assert_eq!(again.json()["updated_at"], v["updated_at"], "and no write");

    // Bad input is refused with the place at fault, and stores nothing.
    for (name, body, says) in [
        (
            "order.bad",
            json!({"schemas": {"1": {"properties": {"amount": {"minimum": "x"}}}}}),
            "/properties/amount/minimum",
        ),
        (
            "order.bad",
            json!({"schemas": {"1": {"$ref": "https://example.com/x.json"}}}),
            "does not compile",
        ),
        ("order.bad", json!({"schemas": {"0": {}}}), "whole numbers"),
        (
            "order.bad",
            json!({"schemas": {"1": {"$schema": "http://json-schema.org/draft-04/schema#"}}}),
            "draft 7",
        ),
        (
            "order.bad",
            json!({"owner": {"repository_url": "ftp://x"}}),
            "http or https",
        ),
        (
            "order.bad",
            json!({"owner": {"pager": "x"}}),
            "unknown field",
        ),
        (
            "order.bad",
            json!({"name": "order.other"}),
            "the event type in the path",
        ),
        ("order.bad", json!({"description": "a\u{0}b"}), "control"),
    ] {
        let r = put(&gw, &tenant, name, body).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.is_error("invalid_event_type"), "{}", r.text());
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
    let r = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{tenant}/event-types/order.bad"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = put(&gw, &tenant, "bad%20name", json!({})).await;
    assert_eq!(r.status, 404, "a name outside the grammar names nothing");
    let clash = put(&gw, &tenant, "Order.Paid", json!({})).await;
    assert_eq!(clash.status, 409, "{}", clash.text());

    // PATCH: a version added, one removed, deprecation, group removed.
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/event-types/order.paid"),
            Some(json!({"schemas": {"2": {"type": "object", "required": ["id"]}}, "deprecated": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["latest_version"], json!(2));
    assert_eq!(r.json()["deprecated"], json!(true));
    assert!(r.json()["deprecated_at"].is_string());
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/event-types/order.paid"),
            Some(json!({"schemas": {"2": null, "3": {"type": 7}}})),
        )
        .await;
    assert_eq!(
        r.status,
        400,
        "a bad version refuses the whole patch: {}",
        r.text()
    );
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/event-types/order.paid"),
            Some(json!({"schemas": {"2": null}, "group": null})),
        )
        .await;
    assert_eq!(r.json()["latest_version"], json!(1));
    assert_eq!(r.json()["group"], Json::Null);

    // The tenant API sees its own catalogue only.
    let r = Request::new("PUT", "/v1/event-types/user.created")
        .bearer(&token)
        .json(&json!({"description": "A user signed up."}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let mine = gw.get_as(&token, "/v1/event-types").await.json();
    assert_eq!(mine["data"].as_array().unwrap().len(), 2);
    let theirs = gw.get_as(&other_token, "/v1/event-types").await.json();
    assert_eq!(theirs["data"], json!([]));
    assert_eq!(
        gw.get_as(&other_token, "/v1/event-types/order.paid")
            .await
            .status,
        404
    );
    let r = Request::new("DELETE", "/v1/event-types/order.paid")
        .bearer(&other_token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 404, "another tenant cannot archive it");
    let r = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{other}/event-types/order.paid"),
            None,
        )
        .await;
    assert_eq!(r.status, 404);

    // DELETE archives (hidden unless asked for); expunge deletes.
    let r = Request::new("DELETE", "/v1/event-types/user.created")
        .bearer(&token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let listed = gw.get_as(&token, "/v1/event-types").await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let listed = gw
        .get_as(&token, "/v1/event-types?include_archived=true")
        .await
        .json();
    assert_eq!(listed["data"][1]["archived"], json!(true));
    let r = Request::new("DELETE", "/v1/event-types/user.created?expunge=true")
        .bearer(&token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(
        gw.get_as(&token, "/v1/event-types/user.created")
            .await
            .status,
        404
    );

    // A catalogue longer than the largest page, paged by name.
    for i in 0..520 {
        let r = put(
            &gw,
            &other,
            &format!("t.{i:04}"),
            json!({"group": if i % 2 == 0 { "even" } else { "odd" }}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            Some(after) => format!("/v1/event-types?limit=500&after={after}"),
            None => "/v1/event-types?limit=500".to_owned(),
        };
        let page = gw.get_as(&other_token, &path).await.json();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(n) => next = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 520);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "by name, once each");
    let odd = gw
        .get_as(&other_token, "/v1/event-types?group=odd&limit=500")
        .await
        .json();
    assert_eq!(odd["data"].as_array().unwrap().len(), 260);
    assert_eq!(
        gw.get_as(&other_token, "/v1/event-types?limit=501")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn an_enforcing_catalogue_refuses_what_breaks_it_and_a_warning_one_notes_it() {
    let gw = gateway("catalogue-enforce").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    gw.create_target(&tenant, json!({"url": sink.url("/all"), "events": ["*"]}))
        .await;
    assert_eq!(put(&gw, &tenant, "order.paid", json!({"schemas": {"1": order_schema(), "2": {"type": "object", "required": ["order_id"]}}})).await.status, 201);
    assert_eq!(
        put(&gw, &tenant, "order.legacy", json!({"deprecated": true}))
            .await
            .status,
        201
    );
    assert_eq!(
        put(&gw, &tenant, "order.gone", json!({"archived": true}))
            .await
            .status,
        201
    );
    assert_eq!(put(&gw, &tenant, "free.form", json!({})).await.status, 201);

    // Off by default: anything goes.
    assert_eq!(
        post(&gw, &token, "nobody.knows", None, b"\x00\xff")
            .await
            .status,
        202
    );
    // A malformed version is bad input in any mode.
    for bad in ["0", "v2", "1.0", "1000000"] {
        let r = post(&gw, &token, "order.paid", Some(bad), b"{}").await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.is_error("invalid_schema_version"), "{}", r.text());
    }

    set_mode(&gw, &tenant, "enforce").await;
    let r = post(&gw, &token, "nobody.knows", None, b"{}").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.is_error("unknown_event_type"), "{}", r.text());
    let r = post(&gw, &token, "ORDER.PAID", None, b"{}").await;
    assert!(
        r.is_error("unknown_event_type") && r.text().contains("order.paid"),
        "a hint: {}",
        r.text()
    );
    let r = post(&gw, &token, "order.gone", None, b"{}").await;
    assert!(
        r.is_error("unknown_event_type") && r.text().contains("archived"),
        "{}",
        r.text()
    );

    // The highest version unless the request names one.
    let r = post(
        &gw,
        &token,
        "order.paid",
        None,
        br#"{"id":"ord_1","amount":5}"#,
    )
    .await;
    assert_eq!(r.status, 422, "version 2 needs order_id: {}", r.text());
    let r = post(&gw, &token, "order.paid", None, br#"{"order_id":"x"}"#).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = post(
        &gw,
        &token,
        "order.paid",
        Some("1"),
        br#"{"id":"ord_1","amount":5}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = post(
        &gw,
        &token,
        "order.paid",
        Some("1"),
        br#"{"id":"x","amount":-1,"email":"nope","items":[{"sku":"a"},{}]}"#,
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.is_error("schema_mismatch"), "{}", r.text());
    let errors = r.json()["error"]["errors"].as_array().unwrap().clone();
    let pointers: Vec<&str> = errors
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for p in ["/id", "/amount", "/email", "/items/1"] {
        assert!(pointers.contains(&p), "{p} in {pointers:?}");
    }
    assert!(errors.iter().all(|e| e["message"].is_string()));
    let many: Vec<Json> = (0..40).map(|i| json!({"n": i})).collect();
    let body = serde_json::to_vec(&json!({"id": "ord_1", "amount": 1, "items": many})).unwrap();
    let r = post(&gw, &token, "order.paid", Some("1"), &body).await;
    assert_eq!(
        r.json()["error"]["errors"].as_array().unwrap().len(),
        10,
        "at most ten"
    );
    let r = post(&gw, &token, "order.paid", Some("9"), b"{}").await;
    assert!(
        r.is_error("unknown_schema_version") && r.text().contains("1, 2"),
        "{}",
        r.text()
    );
    let r = post(&gw, &token, "order.paid", Some("1"), b"\x00\xff not json").await;
    assert!(
        r.is_error("schema_mismatch") && r.text().contains("not JSON"),
        "{}",
        r.text()
    );
    let r = post(
        &gw,
        &token,
        "order.paid",
        Some("1"),
        br#"{"id":"ord_1","amount":1,"amount":2}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.is_error("duplicate_key"));
    // A type without a schema takes any body; a deprecated one says so.
    assert_eq!(
        post(&gw, &token, "free.form", None, b"\x00\xff")
            .await
            .status,
        202
    );
    let r = post(&gw, &token, "order.legacy", None, b"x").await;
    assert_eq!(r.status, 202);
    let deprecation = r.header("deprecation").unwrap_or_default();
    assert!(
        deprecation.starts_with('@') && deprecation[1..].parse::<u64>().is_ok(),
        "{deprecation}"
    );
    assert!(
        post(&gw, &token, "order.paid", None, br#"{"order_id":"x"}"#)
            .await
            .header("deprecation")
            .is_none()
    );

    // Warn: accepted, noted on the event, counted.
    set_mode(&gw, &tenant, "warn").await;
    let r = post(
        &gw,
        &token,
        "order.paid",
        Some("1"),
        br#"{"id":"nope","amount":"x"}"#,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let warned = r.json()["id"].as_str().unwrap().to_owned();
    let unknown = gw.post_ok(&token, "nobody.knows", b"{}").await;
    let fine = post(
        &gw,
        &token,
        "order.paid",
        Some("1"),
        br#"{"id":"ord_2","amount":2}"#,
    )
    .await;
    let fine = fine.json()["id"].as_str().unwrap().to_owned();
    gw.settled().await;
    let v = gw
        .get_as(&token, &format!("/v1/events/{warned}"))
        .await
        .json();
    let noted: Vec<&str> = v["schema_errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(noted.len(), 2, "{v}");
    assert!(noted.contains(&"/id") && noted.contains(&"/amount"));
    assert_eq!(v["content_type"], json!("application/json"));
    let v = gw
        .get_as(&token, &format!("/v1/events/{unknown}"))
        .await
        .json();
    assert!(
        v["schema_errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not in the tenant's event catalogue")
    );
    let v = gw
        .get_as(&token, &format!("/v1/events/{fine}"))
        .await
        .json();
    assert!(v.get("schema_errors").is_none(), "{v}");
    let delivered = sink.received("/all");
    assert!(
        delivered
            .iter()
            .all(|r| r.header("content-type").as_deref() != Some("")
                && !r.header("content-type").unwrap_or_default().contains('\n')),
        "the notes never reach a receiver"
    );
    let metrics = gw
        .metrics_showing("estafeta_catalogue_breaches_total")
        .await;
    assert!(
        metrics.contains("estafeta_catalogue_breaches_total{mode=\"warn\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("estafeta_catalogue_breaches_total{mode=\"enforce\"}"));
}

#[tokio::test]
async fn a_change_reaches_every_instance_within_a_second() {
    let prefix = unique_prefix("catalogue-instances");
    let redis = RedisServer::shared().url();
    let a = Gateway::start_with(&redis, &prefix, FAST).await;
    let b = Gateway::start_with(&redis, &prefix, FAST).await;
    let (tenant, token) = a.tenant("acme").await;
    assert_eq!(
        put(
            &a,
            &tenant,
            "order.paid",
            json!({"schemas": {"1": {"type": "object"}}})
        )
        .await
        .status,
        201
    );
    set_mode(&a, &tenant, "enforce").await;
    eventually(Duration::from_secs(1), "instance b enforces", || async {
        post(&b, &token, "not.there", None, b"{}").await.status == 422
    })
    .await;
    // b has the catalogue cached now; a change made through a reaches b within a second.
    assert_eq!(
        post(&b, &token, "order.paid", None, b"[1]").await.status,
        422
    );
    let r = a
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}/event-types/order.paid"),
            Some(json!({"schemas": {"2": {"type": "array"}}})),
        )
        .await;
    assert_eq!(r.status, 200);
    eventually(
        Duration::from_secs(1),
        "instance b checks version 2",
        || async { post(&b, &token, "order.paid", None, b"[1]").await.status == 202 },
    )
    .await;
    assert_eq!(put(&a, &tenant, "not.there", json!({})).await.status, 201);
    eventually(
        Duration::from_secs(1),
        "instance b knows the new type",
        || async { post(&b, &token, "not.there", None, b"{}").await.status == 202 },
    )
    .await;
}

#[tokio::test]
async fn the_catalogue_goes_out_and_comes_back_as_openapi_webhooks() {
    let gw = gateway("catalogue-openapi").await;
    let (a, _) = gw.tenant("acme").await;
    let (b, _) = gw.tenant("globex").await;
    let doc = json!({
        "openapi": "3.1.0",
        "info": {"title": "Billing", "version": "1"},
        "webhooks": {
            "order.paid": {"post": {
                "summary": "Order paid",
                "description": "An order was paid.",
                "tags": ["billing"],
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
                "responses": {"200": {"description": "ok"}}
            }},
            "orderRefunded": {"post": {
                "x-estafeta-event-type": "order.refunded",
                "deprecated": true,
                "requestBody": {"content": {"application/cloudevents+json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "ok"}}
            }},
            "ping": {"post": {"responses": {"200": {"description": "ok"}}}}
        },
        "components": {"schemas": {
            "Order": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}},
            "Line": {"type": "object", "required": ["sku"]},
            "Unused": {"type": "string"}
        }}
    });
    let import = |tenant: String, query: &'static str, doc: Json| {
        let gw = &gw;
        async move {
            gw.admin(
                "POST",
                &format!("/admin/tenants/{tenant}/event-types/import{query}"),
                Some(doc),
            )
            .await
        }
    };
    // A dry run says what would change and changes nothing.
    let r = import(a.clone(), "?dry_run=true", doc.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["created"],
        json!(["order.paid", "order.refunded", "ping"])
    );
    assert_eq!(r.json()["dry_run"], json!(true));
    assert_eq!(
        gw.admin("GET", &format!("/admin/tenants/{a}/event-types"), None)
            .await
            .json()["data"],
        json!([])
    );
    let r = import(a.clone(), "", doc.clone()).await;
    assert_eq!(
        r.json()["created"].as_array().unwrap().len(),
        3,
        "{}",
        r.text()
    );
    let paid = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{a}/event-types/order.paid"),
            None,
        )
        .await
        .json();
    assert_eq!(paid["group"], json!("billing"));
    assert_eq!(paid["description"], json!("An order was paid."));
    let schema = &paid["schemas"]["1"];
    assert_eq!(schema["$ref"], json!("#/$defs/Order"));
    assert!(
        schema["$defs"]["Line"].is_object() && schema["$defs"].get("Unused").is_none(),
        "{schema}"
    );
    let refunded = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{a}/event-types/order.refunded"),
            None,
        )
        .await
        .json();
    assert_eq!(refunded["deprecated"], json!(true));

    // The same document again changes nothing; a changed schema becomes the next version.
    let r = import(a.clone(), "", doc.clone()).await;
    assert_eq!(
        r.json()["unchanged"].as_array().unwrap().len(),
        3,
        "{}",
        r.text()
    );
    let mut changed = doc.clone();
    changed["components"]["schemas"]["Line"]["required"] = json!(["sku", "qty"]);
    let r = import(a.clone(), "", changed).await;
    assert_eq!(r.json()["updated"], json!(["order.paid"]), "{}", r.text());
    let paid = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{a}/event-types/order.paid"),
            None,
        )
        .await
        .json();
    assert_eq!(paid["latest_version"], json!(2));

    // Export, and import into another tenant: the same catalogue, owners and versions too.
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{a}/event-types/ping"),
            Some(json!({"owner": {"service": "edge", "team": "SRE"}})),
        )
        .await;
    assert_eq!(r.status, 200);
    let exported = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{a}/event-types/export"),
            None,
        )
        .await;
    assert_eq!(exported.status, 200, "{}", exported.text());
    let exported = exported.json();
    assert_eq!(exported["openapi"], json!("3.1.0"));
    assert!(exported["webhooks"]["order.paid"]["post"]["x-estafeta-schemas"]["2"].is_object());
    let r = import(b.clone(), "", exported.clone()).await;
    assert_eq!(
        r.json()["created"].as_array().unwrap().len(),
        3,
        "{}",
        r.text()
    );
    let mut back = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{b}/event-types/export"),
            None,
        )
        .await
        .json();
    let mut there = exported.clone();
    back["info"] = Json::Null;
    there["info"] = Json::Null;
    assert_eq!(back, there, "a round trip changes nothing");

    // replace_all archives what the document no longer has.
    let mut fewer = exported.clone();
    fewer["webhooks"].as_object_mut().unwrap().remove("ping");
    let r = import(b.clone(), "?replace_all=true&dry_run=true", fewer.clone()).await;
    assert_eq!(r.json()["archived"], json!(["ping"]));
    let r = import(b.clone(), "?replace_all=true", fewer).await;
    assert_eq!(r.json()["archived"], json!(["ping"]));
    let ping = gw
        .admin("GET", &format!("/admin/tenants/{b}/event-types/ping"), None)
        .await
        .json();
    assert_eq!(ping["archived"], json!(true));

    // Documents that are not what an import reads: 400, nothing stored.
    let (c, _) = gw.tenant("initech").await;
    for (bad, says) in [
        (json!({"openapi": "3.0.3", "paths": {}}), "3.1"),
        (json!({"openapi": "3.1.0"}), "webhooks"),
        (
            json!({"openapi": "3.1.0", "webhooks": {"a b": {"post": {}}}}),
            "webhooks.a b",
        ),
        (
            json!({"openapi": "3.1.0", "webhooks": {"x": {"get": {}}}}),
            "post",
        ),
        (
            json!({"openapi": "3.1.0", "webhooks": {"ok": {"post": {}}, "x": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Missing"}}}}}}}}),
            "webhooks.x",
        ),
        (
            json!({"openapi": "3.1.0", "webhooks": {"x": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "http://169.254.169.254/latest"}}}}}}}}),
            "does not compile",
        ),
        (json!([1, 2]), "JSON object"),
    ] {
        let r = import(c.clone(), "", bad).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.is_error("invalid_document"), "{}", r.text());
        assert!(r.text().contains(says), "{says}: {}", r.text());
    }
    assert_eq!(
        gw.admin("GET", &format!("/admin/tenants/{c}/event-types"), None)
            .await
            .json()["data"],
        json!([])
    );
}

#[tokio::test]
async fn declared_event_types_are_applied_at_start_and_again_unchanged() {
    let extra = format!(
        r#"{FAST}
[[tenants]]
id = "decl"
name = "Declared"
token = "decl-token-0123456789abcdef"
catalogue = "enforce"

[[tenants.event_types]]
name = "invoice.issued"
description = "An invoice was issued."
group = "billing"
owner = {{ service = "invoicing", team = "Finance", repository_url = "https://git.example.com/inv" }}
schemas."1" = {{ type = "object", required = ["number"], properties = {{ number = {{ type = "string" }} }} }}
"#
    );
    let prefix = unique_prefix("catalogue-decl");
    let redis = RedisServer::shared().url();
    let gw = Gateway::start_with(&redis, &prefix, &extra).await;
    let r = gw
        .admin(
            "GET",
            "/admin/tenants/decl/event-types/invoice.issued",
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    assert_eq!(first["origin"], json!("config"));
    assert_eq!(first["schemas"]["1"]["required"], json!(["number"]));
    let token = "decl-token-0123456789abcdef";
    assert_eq!(
        post(&gw, token, "invoice.issued", None, br#"{"number":"A-1"}"#)
            .await
            .status,
        202
    );
    assert_eq!(
        post(&gw, token, "invoice.issued", None, br#"{"number":1}"#)
            .await
            .status,
        422
    );
    drop(gw);
    // A second start with the same file writes nothing.
    let again = Gateway::start_with(&redis, &prefix, &extra).await;
    let r = again
        .admin(
            "GET",
            "/admin/tenants/decl/event-types/invoice.issued",
            None,
        )
        .await;
    assert_eq!(r.json()["updated_at"], first["updated_at"]);
}
