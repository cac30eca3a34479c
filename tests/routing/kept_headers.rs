//! The ingest headers a tenant keeps (`keep_headers`): stored with the event, read by filters
//! and views, never sent on as the content type, never a credential.

use super::*;
use support::http::Request;

/// Every byte a header value may carry but the ones HTTP forbids (controls but tab, DEL),
/// between two brackets (white space at either end is not part of a value).
fn every_header_byte() -> Vec<u8> {
    let mut v = vec![b'<'];
    v.extend((0u8..=255).filter(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80));
    v.push(b'>');
    v
}

#[tokio::test]
async fn kept_headers_reach_filters_and_views_and_nothing_else() {
    let gw = gateway("kept-headers").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;

    // Refusals first: a credential header, a bad name, too many names. Nothing changes.
    for (bad, says) in [
        (json!(["X-GitHub-Event", "Authorization"]), "credentials"),
        (json!(["bad name"]), "not a valid HTTP header name"),
        (
            Json::Array((0..21).map(|i| json!(format!("x-{i}"))).collect()),
            "at most 20",
        ),
    ] {
        let r = gw
            .admin(
                "PATCH",
                &format!("/admin/tenants/{tenant}"),
                Some(json!({ "keep_headers": bad })),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(says), "{}", r.text());
    }
    let r = gw
        .admin("GET", &format!("/admin/tenants/{tenant}"), None)
        .await;
    assert_eq!(r.json()["keep_headers"], json!([]));

    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}"),
            Some(json!({ "keep_headers": ["X-GitHub-Event", "X-Raw", "x-github-event"] })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["keep_headers"],
        json!(["x-github-event", "x-raw"]),
        "kept lowercase, once each"
    );

    for (path, filter) in [
        ("/push", json!({"headers.x-github-event": "push"})),
        (
            "/ping",
            json!({"headers.x-github-event": {"$in": ["ping"]}}),
        ),
        (
            "/absent",
            json!({"headers.authorization": {"$exist": true}}),
        ),
    ] {
        let r = create(
            &gw,
            &tenant,
            json!({"url": sink.url(path), "events": ["*"], "filter": filter}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }

    let raw = every_header_byte();
    let post = |event_type: &'static str, github: &'static str, key: &'static str, raw: Vec<u8>| {
        let token = token.clone();
        let addr = gw.addrs.plain;
        async move {
            Request::new("POST", &format!("/v1/events/{event_type}"))
                .bearer(&token)
                .header("content-type", "application/json; charset=utf-8")
                .header("x-github-event", github)
                .header("idempotency-key", key)
                .header_bytes("x-raw", &raw)
                .header("x-not-kept", "nope")
                .body(br#"{"zen":"ok"}"#.to_vec())
                .send_plain(addr)
                .await
                .unwrap()
        }
    };
    let first = post("gh.push", "push", "k1", raw.clone()).await;
    assert_eq!(first.status, 202, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    // The sender's retry with the same key is the same event, whatever its kept headers say
    // (a retry may carry a new delivery id).
    let again = post("gh.push", "push", "k1", b"another value".to_vec()).await;
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(again.json()["id"], json!(id));
    assert_eq!(again.json()["duplicate"], json!(true));
    gw.post_ok(&token, "gh.other", b"{}").await;
    let ping = post("gh.ping", "ping", "k2", b"x".to_vec()).await;
    assert_eq!(ping.status, 202);
    gw.settled().await;

    let push = sink.received("/push");
    assert_eq!(push.len(), 1, "one push event, sent once");
    assert_eq!(
        push[0].header("content-type").as_deref(),
        Some("application/json; charset=utf-8"),
        "the content type goes on alone"
    );
    assert!(
        push[0].headers.get("x-raw").is_none(),
        "kept is not forwarded"
    );
    assert_eq!(sink.count("/ping"), 1);
    assert_eq!(sink.count("/absent"), 0, "Authorization is never kept");

    let view = gw.get_as(&token, &format!("/v1/events/{id}")).await;
    assert_eq!(view.status, 200, "{}", view.text());
    let v = view.json();
    assert_eq!(v["content_type"], json!("application/json; charset=utf-8"));
    assert_eq!(v["headers"]["x-github-event"], json!("push"));
    assert_eq!(
        v["headers"]["x-raw"],
        json!(String::from_utf8_lossy(&raw)),
        "bytes that are not UTF-8 read as U+FFFD"
    );
    assert!(v["headers"].get("x-not-kept").is_none());
    assert!(v.get("schema_errors").is_none());
    let body = gw.get_as(&token, &format!("/v1/events/{id}/body")).await;
    assert_eq!(
        body.json()["content_type"],
        json!("application/json; charset=utf-8")
    );
    let listed = gw.get_as(&token, "/v1/events?limit=10").await;
    assert!(
        listed.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["content_type"].as_str().unwrap_or("").contains('\n')),
        "{}",
        listed.text()
    );

    // A filter test over the stored events reads the kept headers too.
    let targets = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/targets"), None)
        .await
        .json();
    let push_id = targets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["url"].as_str().unwrap().ends_with("/push"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tried = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets/{push_id}/filter-test"),
            Some(json!({})),
        )
        .await;
    assert_eq!(tried.status, 200, "{}", tried.text());
    assert_eq!(tried.json()["evaluated"], json!(3));
    assert_eq!(tried.json()["matched"], json!(1));
    assert_eq!(tried.json()["sample"], json!([id]));

    // Keeping nothing again: new events carry no headers.
    let r = gw
        .admin(
            "PATCH",
            &format!("/admin/tenants/{tenant}"),
            Some(json!({ "keep_headers": [] })),
        )
        .await;
    assert_eq!(r.status, 200);
    let later = post("gh.push", "push", "k3", b"x".to_vec()).await;
    assert_eq!(later.status, 202);
    let later_id = later.json()["id"].as_str().unwrap().to_owned();
    gw.settled().await;
    assert_eq!(
        sink.count("/push"),
        1,
        "without the header the filter fails"
    );
    let v = gw
        .get_as(&token, &format!("/v1/events/{later_id}"))
        .await
        .json();
    assert_eq!(v["headers"], json!({}));
}

#[tokio::test]
async fn a_declared_tenant_keeps_headers_from_the_config_file() {
    let extra = format!(
        "{FAST}\n[[tenants]]\nid = \"decl\"\nname = \"Declared\"\ntoken = \"decl-token-0123456789abcdef\"\nkeep_headers = [\"X-Source\"]\ncatalogue = \"warn\"\n"
    );
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("kept-decl"),
        &extra,
    )
    .await;
    let r = gw.admin("GET", "/admin/tenants/decl", None).await;
    assert_eq!(
        r.json()["keep_headers"],
        json!(["x-source"]),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["catalogue"], json!("warn"));
}
