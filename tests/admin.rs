//! The admin API against a real Redis: tenants, tokens, what is stored, and config-declared
//! tenants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fred::prelude::*;
use serde_json::json;
use support::http::Request;
use support::{ADMIN_TOKEN, Gateway, RedisServer};

#[tokio::test]
async fn admin_api_requires_the_admin_token() {
    let gw = Gateway::start("adminauth").await;
    let none = Request::get("/admin/tenants")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(none.status, 401);
    assert!(none.is_error("missing_token"));
    assert_eq!(none.header("www-authenticate").as_deref(), Some("Bearer"));
    let wrong = Request::get("/admin/tenants")
        .bearer("wrong")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    assert!(wrong.is_error("invalid_token"));
    let almost = Request::get("/admin/tenants")
        .bearer(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(almost.status, 401);
    // A tenant token is not an admin token.
    let (_, token) = gw.tenant("acme").await;
    let tenant = Request::get("/admin/tenants")
        .bearer(&token)
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(tenant.status, 401);
    // The admin API is not served on the edge.
    let edge = Request::get("/admin/tenants")
        .bearer(ADMIN_TOKEN)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(edge.status, 404);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn tenant_lifecycle() {
    let gw = Gateway::start("lifecycle").await;
    let created = gw
        .admin(
            "POST",
            "/admin/tenants",
            Some(json!({"name": "Açme Ltda", "external_id": "12.345.678/0001-90", "rate_limit": {"per_second": 50}})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let t = created.json();
    let id = t["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ten_"));
    assert_eq!(t["name"], "Açme Ltda");
    assert_eq!(t["external_id"], "12.345.678/0001-90");
    assert_eq!(t["active"], true);
    assert_eq!(t["rate_limit"]["per_second"], 50.0);
    assert!(t["token"].as_str().unwrap().starts_with("est_"));
    assert!(t["token_id"].as_str().unwrap().starts_with("tok_"));

    let read = gw.admin("GET", &format!("/admin/tenants/{id}"), None).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["external_id"], "12.345.678/0001-90");
    assert!(
        read.json().get("token").is_none(),
        "the token is shown once only"
    );

    let by_ext = gw
        .admin(
            "GET",
            "/admin/tenants?external_id=12.345.678%2F0001-90",
            None,
        )
        .await;
    assert_eq!(by_ext.status, 200);
    assert_eq!(by_ext.json()["data"][0]["id"], id.as_str());
    let none = gw
        .admin("GET", "/admin/tenants?external_id=nope", None)
        .await;
    assert_eq!(none.json()["data"].as_array().unwrap().len(), 0);

    let dup = gw
        .admin(
            "POST",
            "/admin/tenants",
            Some(json!({"name": "B", "external_id": "12.345.678/0001-90"})),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert!(dup.is_error("conflict"));

    let patched = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{id}"),
            Some(json!({"name": "Acme", "rate_limit": null, "external_id": "99"})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text());
    assert_eq!(patched.json()["name"], "Acme");
    assert_eq!(patched.json()["rate_limit"], serde_json::Value::Null);
    assert_eq!(patched.json()["external_id"], "99");
    // The old external id is free again; the new one points here.
    let b = gw
        .admin(
            "POST",
            "/admin/tenants",
            Some(json!({"name": "B", "external_id": "12.345.678/0001-90"})),
        )
        .await;
    assert_eq!(b.status, 201);
    let by_new = gw.admin("GET", "/admin/tenants?external_id=99", None).await;
    assert_eq!(by_new.json()["data"][0]["id"], id.as_str());

    let token = t["token"].as_str().unwrap();
    assert_eq!(gw.post_event(token, "a", b"{}").await.status, 202);
    let deleted = gw
        .admin("DELETE", &format!("/admin/tenants/{id}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        gw.admin("GET", &format!("/admin/tenants/{id}"), None)
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin("DELETE", &format!("/admin/tenants/{id}"), None)
            .await
            .status,
        404
    );
    let after = gw.post_event(token, "a", b"{}").await;
    assert_eq!(after.status, 401, "deleting a tenant revokes its tokens");
    let gone = gw.admin("GET", "/admin/tenants?external_id=99", None).await;
    assert_eq!(gone.json()["data"].as_array().unwrap().len(), 0);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn bad_admin_input_gets_400_with_error_json() {
    let gw = Gateway::start("badinput").await;
    let cases = [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x", "unknown": 1}),
        json!({"name": "x", "rate_limit": {"per_second": 0}}),
        json!({"name": "x", "rate_limit": {"per_second": 1, "burst": 0}}),
        json!({"name": 5}),
        json!({"name": "x", "external_id": ""}),
    ];
    for body in cases {
        let r = gw.admin("POST", "/admin/tenants", Some(body.clone())).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let code = r.json()["error"]["code"].as_str().unwrap().to_owned();
        assert!(code.starts_with("invalid"), "{body}: {code}");
    }
    let raw = Request::new("POST", "/admin/tenants")
        .bearer(ADMIN_TOKEN)
        .body("{not json")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(raw.status, 400);
    assert!(raw.is_error("invalid_body"));
    assert_eq!(
        gw.admin("GET", "/admin/tenants/ten_nope", None)
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin("GET", "/admin/tenants/bad%20id", None)
            .await
            .status,
        404
    );
    assert_eq!(
        gw.admin("GET", "/admin/tenants?limit=0", None).await.status,
        400
    );
    assert_eq!(
        gw.admin("POST", "/admin/tenants/ten_nope/tokens", None)
            .await
            .status,
        404
    );
    assert_eq!(gw.admin("PUT", "/admin/tenants", None).await.status, 405);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn listing_pages_through_every_tenant_once() {
    let gw = Gateway::start("paging").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(gw.tenant(&format!("t{i}")).await.0);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/tenants?limit=3&after={a}"),
            None => "/admin/tenants?limit=3".to_owned(),
        };
        let page = gw.admin("GET", &path, None).await.json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(data.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "ids sort by creation and each appears once");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn secrets_are_stored_only_hashed_or_sealed() {
    let gw = Gateway::start("atrest").await;
    let ext = "CNPJ-12.345.678/0001-90";
    let (id, token) = gw
        .tenant_with(json!({"name": "acme", "external_id": ext}))
        .await;
    let second = gw
        .admin("POST", &format!("/admin/tenants/{id}/tokens"), None)
        .await
        .json();
    let token2 = second["token"].as_str().unwrap().to_owned();
    let redis = RedisServer::shared().client().await;
    let keys: Vec<String> = redis
        .custom(fred::cmd!("KEYS"), vec![format!("{}:*", gw.prefix)])
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let mut everything = String::new();
    for key in &keys {
        everything.push_str(key);
        let kind: String = redis
            .custom(fred::cmd!("TYPE"), vec![key.clone()])
            .await
            .unwrap();
        let dump: Value = match kind.as_str() {
            "hash" => redis.hgetall(key).await.unwrap(),
            "string" => redis.get(key).await.unwrap(),
            "zset" => redis
                .zrange(key, 0, -1, None, false, None, false)
                .await
                .unwrap(),
            _ => Value::Null,
        };
        everything.push_str(&format!("{dump:?}"));
    }
    for secret in [token.as_str(), token2.as_str(), ext] {
        assert!(!everything.contains(secret), "{secret} is stored in clear");
    }
    assert!(everything.contains("v1."), "the external id is sealed");
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn token_rotation_and_listing() {
    let gw = Gateway::start("rotation").await;
    let (id, first) = gw.tenant("acme").await;
    let issued = gw
        .admin("POST", &format!("/admin/tenants/{id}/tokens"), None)
        .await;
    assert_eq!(issued.status, 201);
    let second = issued.json()["token"].as_str().unwrap().to_owned();
    let second_id = issued.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(gw.post_event(&first, "a", b"{}").await.status, 202);
    assert_eq!(gw.post_event(&second, "a", b"{}").await.status, 202);
    let list = gw
        .admin("GET", &format!("/admin/tenants/{id}/tokens"), None)
        .await
        .json();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&second_id.as_str()));
    assert!(
        !list.to_string().contains(&second),
        "listing never shows token text"
    );
    let revoke = gw
        .admin(
            "DELETE",
            &format!("/admin/tenants/{id}/tokens/{second_id}"),
            None,
        )
        .await;
    assert_eq!(revoke.status, 204);
    assert_eq!(gw.post_event(&second, "a", b"{}").await.status, 401);
    assert_eq!(gw.post_event(&first, "a", b"{}").await.status, 202);
    let again = gw
        .admin(
            "DELETE",
            &format!("/admin/tenants/{id}/tokens/{second_id}"),
            None,
        )
        .await;
    assert_eq!(again.status, 404);
    // Another tenant cannot revoke this tenant's token by id.
    let (other, _) = gw.tenant("other").await;
    let first_id = ids.iter().find(|i| **i != second_id).unwrap();
    let cross = gw
        .admin(
            "DELETE",
            &format!("/admin/tenants/{other}/tokens/{first_id}"),
            None,
        )
        .await;
    assert_eq!(cross.status, 404);
    assert_eq!(gw.post_event(&first, "a", b"{}").await.status, 202);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn config_declared_tenants_apply_idempotently() {
    let redis = RedisServer::shared();
    let prefix = support::unique_prefix("declared");
    let token_a = "cfg-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let token_b = "cfg-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let decl = |token: &str, active: bool| {
        format!(
            "[[tenants]]\nid = \"acme\"\nname = \"Acme\"\nexternal_id = \"ext-1\"\nactive = {active}\ntoken = \"{token}\"\nrate_limit = {{ per_second = 100 }}\n"
        )
    };
    for _ in 0..2 {
        let gw = Gateway::start_with(&redis.url(), &prefix, &decl(token_a, true)).await;
        assert_eq!(gw.post_event(token_a, "a", b"{}").await.status, 202);
        let list = gw.admin("GET", "/admin/tenants", None).await.json();
        assert_eq!(
            list["data"].as_array().unwrap().len(),
            1,
            "applied twice, one tenant"
        );
        assert_eq!(list["data"][0]["id"], "acme");
        assert_eq!(list["data"][0]["external_id"], "ext-1");
        gw.stop().await.unwrap();
    }
    // Rotating the declared token revokes the old one; API-issued tokens survive.
    let gw = Gateway::start_with(&redis.url(), &prefix, &decl(token_a, true)).await;
    let issued = gw
        .admin("POST", "/admin/tenants/acme/tokens", None)
        .await
        .json();
    let api_token = issued["token"].as_str().unwrap().to_owned();
    gw.stop().await.unwrap();
    let gw = Gateway::start_with(&redis.url(), &prefix, &decl(token_b, true)).await;
    assert_eq!(gw.post_event(token_a, "a", b"{}").await.status, 401);
    assert_eq!(gw.post_event(token_b, "a", b"{}").await.status, 202);
    assert_eq!(gw.post_event(&api_token, "a", b"{}").await.status, 202);
    gw.stop().await.unwrap();
    // Declared fields win at start.
    let gw = Gateway::start_with(&redis.url(), &prefix, &decl(token_b, false)).await;
    assert_eq!(gw.post_event(token_b, "a", b"{}").await.status, 403);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_and_openapi_are_served() {
    let gw = Gateway::start("metrics").await;
    let (_, token) = gw.tenant("acme").await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    assert_eq!(
        gw.post_event("nope-nope-nope", "a", b"{}").await.status,
        401
    );
    let m = Request::get("/metrics")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(m.status, 200);
    let text = m.text();
    for needle in [
        "estafeta_http_requests_total{listener=\"edge_plain\",route=\"/v1/events/{event}\",status=\"202\"}",
        "estafeta_http_requests_total{listener=\"edge_plain\",route=\"/v1/events/{event}\",status=\"401\"}",
        "estafeta_ingest_duration_seconds_bucket",
        "estafeta_auth_cache_total",
        "estafeta_events_enqueued_total{result=\"new\"}",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}");
    }
    assert!(!text.contains(&token));
    let doc = Request::get("/openapi.json")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(doc.status, 200);
    assert!(doc.json()["paths"]["/v1/events/{event}"].is_object());
    let ready = Request::get("/readyz")
        .send_plain(gw.addrs.admin)
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    gw.stop().await.unwrap();
}

#[tokio::test]
async fn an_events_body_reads_back_byte_for_byte_for_its_tenant_only() {
    let gw = Gateway::start("event_body").await;
    let (a, a_token) = gw.tenant("a").await;
    let (_, b_token) = gw.tenant("b").await;
    let text = gw
        .post_ok(&a_token, "note.added", "olá <b>".as_bytes())
        .await;
    let binary = Request::new("POST", "/v1/events/blob.added")
        .bearer(&a_token)
        .header("content-type", "application/octet-stream")
        .body(vec![0xff, 0x00, 0xfe])
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    let binary = binary.json()["id"].as_str().unwrap().to_owned();

    let r = gw
        .get_as(&a_token, &format!("/v1/events/{text}/body"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["body"], "olá <b>");
    assert_eq!(v["encoding"], "utf8");
    assert_eq!(v["size"], "olá <b>".len());
    assert_eq!(v["content_type"], "application/json");
    let r = gw
        .admin(
            "GET",
            &format!("/admin/tenants/{a}/events/{binary}/body"),
            None,
        )
        .await;
    let v = r.json();
    assert_eq!(v["encoding"], "base64");
    assert_eq!(v["body"], "/wD+");
    assert_eq!(v["content_type"], "application/octet-stream");

    // Another tenant, an unknown id and a malformed one are all not found.
    let r = gw
        .get_as(&b_token, &format!("/v1/events/{text}/body"))
        .await;
    assert!(r.status == 404 && r.is_error("not_found"), "{}", r.text());
    let r = gw
        .get_as(&a_token, "/v1/events/evt_01M8SXHZ5C0GAPRFQTDH83MJ7G/body")
        .await;
    assert_eq!(r.status, 404);
    let r = gw.get_as(&a_token, "/v1/events/not-an-id!/body").await;
    assert!(r.status == 400 || r.status == 404, "{}", r.text());
}
