//! Inbound webhooks through sources: each signature scheme accepted when right and refused when
//! wrong, stale or replayed; event types derived by each rule; token rotation and deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use support::http::{Request, Response};
use support::{Gateway, RedisServer, unique_prefix};

async fn gateway(name: &str) -> Gateway {
    Gateway::start_with(&RedisServer::shared().url(), &unique_prefix(name), "").await
}

async fn source(gw: &Gateway, tenant: &str, body: Json) -> Json {
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/sources"),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// A Stripe source (secret `whsec_stripe`, the type at `/type`); returns its URL.
async fn stripe_source(gw: &Gateway, tenant: &str) -> String {
    let s = source(
        gw,
        tenant,
        json!({"name": "stripe", "verify": {"scheme": "stripe", "secret": "whsec_stripe"},
        "event_type": {"json_pointer": "/type"}}),
    )
    .await;
    s["url"].as_str().unwrap().to_owned()
}

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn hook(gw: &Gateway, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut r = Request::new("POST", url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.send_plain(gw.addrs.plain).await.unwrap()
}

#[tokio::test]
async fn github_signatures_and_header_event_types() {
    let gw = gateway("src-github").await;
    let (tenant, _) = gw.tenant("acme").await;
    let s = source(
        &gw,
        &tenant,
        json!({"name": "gh", "verify": {"scheme": "github", "secret": "gh-secret"},
        "event_type": {"header": "X-GitHub-Event"}}),
    )
    .await;
    let url = s["url"].as_str().unwrap().to_owned();
    assert!(s["token"].as_str().unwrap().len() >= 43, "a 256-bit token");
    let body = br#"{"action":"opened"}"#;
    let sig = format!("sha256={}", hmac_hex(b"gh-secret", &[body]));
    let ok = hook(
        &gw,
        &url,
        &[
            ("x-hub-signature-256", &sig),
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-1"),
        ],
        body,
    )
    .await;
    assert_eq!(ok.status, 202, "{}", ok.text());
    assert_eq!(ok.json()["event_type"], "pull_request");
    let id = ok.json()["id"].as_str().unwrap().to_owned();
    let redis = RedisServer::shared().client().await;
    let stored = support::all_events(&redis, &gw.prefix)
        .await
        .into_iter()
        .find(|(_, e)| e.id.as_str() == id)
        .unwrap()
        .1;
    assert_eq!(&stored.body[..], body, "raw body kept");
    assert_eq!(stored.tenant.as_str(), tenant);
    // The provider's redelivery (same delivery id) is the same event.
    let again = hook(
        &gw,
        &url,
        &[
            ("x-hub-signature-256", &sig),
            ("x-github-event", "pull_request"),
            ("x-github-delivery", "d-1"),
        ],
        body,
    )
    .await;
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.json()["duplicate"], true);

    let wrong = format!("sha256={}", hmac_hex(b"other", &[body]));
    for (headers, body) in [
        (
            vec![
                ("x-hub-signature-256", wrong.as_str()),
                ("x-github-event", "push"),
            ],
            &body[..],
        ),
        (
            vec![
                ("x-hub-signature-256", sig.as_str()),
                ("x-github-event", "push"),
            ],
            &br#"{"action":"closed"}"#[..],
        ),
        (vec![("x-github-event", "push")], &body[..]),
    ] {
        let r = hook(&gw, &url, &headers, body).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(r.is_error("invalid_signature"));
    }
    let no_type = hook(&gw, &url, &[("x-hub-signature-256", &sig)], body).await;
    assert_eq!(no_type.status, 400, "{}", no_type.text());
    // The three refusals are on the source's record, newest first, with the sender's
    // address; the accepted webhook is its last receipt.
    let sid = s["id"].as_str().unwrap();
    let read = async |path: String| {
        let r = gw
            .admin("GET", &format!("/admin/tenants/{tenant}{path}"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    support::eventually(
        std::time::Duration::from_secs(5),
        "refusals noted",
        || async {
            read(format!("/sources/{sid}/refusals")).await["data"]
                .as_array()
                .map(Vec::len)
                == Some(3)
        },
    )
    .await;
    let refusals = read(format!("/sources/{sid}/refusals")).await;
    for r in refusals["data"].as_array().unwrap() {
        assert_eq!(r["sender_ip"], "127.0.0.1", "{r}");
        assert!(r["reason"].as_str().is_some_and(|t| !t.is_empty()), "{r}");
        assert!(!r.to_string().contains("gh-secret"));
    }
    let src = read(format!("/sources/{sid}")).await;
    assert!(src["last_received_at"].is_string(), "{src}");
    assert_eq!(src["silent"], Json::Null, "no watch, no silence");
    assert_eq!(
        hook(&gw, "/v1/hooks/hk_unknown", &[], b"{}").await.status,
        404
    );
}

#[tokio::test]
async fn standard_webhooks_with_tolerance_and_replay_refusal() {
    let gw = gateway("src-sw").await;
    let (tenant, _) = gw.tenant("acme").await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let s = source(
        &gw,
        &tenant,
        json!({"name": "sw", "verify": {"scheme": "standard_webhooks", "secret": secret},
        "event_type": {"json_pointer": "/type"}}),
    )
    .await;
    let url = s["url"].as_str().unwrap().to_owned();
    let key = base64::engine::general_purpose::STANDARD
        .decode(&secret[6..])
        .unwrap();
    let body = br#"{"type":"invoice.paid","data":{}}"#;
    let signed = |id: &str, ts: i64| {
        let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        m.update(format!("{id}.{ts}.").as_bytes());
        m.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        )
    };
    let send = |id: String, ts: i64, sig: String| {
        let url = url.clone();
        let gw = &gw;
        async move {
            let ts = ts.to_string();
            hook(
                gw,
                &url,
                &[
                    ("webhook-id", &id),
                    ("webhook-timestamp", &ts),
                    ("webhook-signature", &sig),
                ],
                body,
            )
            .await
        }
    };
    let t = now();
    let first = send("msg_1".into(), t, signed("msg_1", t)).await;
    assert_eq!(first.status, 202, "{}", first.text());
    assert_eq!(first.json()["event_type"], "invoice.paid");
    assert_eq!(
        send("msg_1".into(), t, signed("msg_1", t)).await.status,
        401,
        "the same signed request again is a replay"
    );
    let retry = send("msg_1".into(), t + 1, signed("msg_1", t + 1)).await;
    assert_eq!(
        retry.status, 202,
        "a sender's retry (new timestamp) is accepted"
    );
    assert_eq!(retry.json()["duplicate"], true, "…as the same event");
    assert_eq!(
        send("msg_2".into(), t - 600, signed("msg_2", t - 600))
            .await
            .status,
        401,
        "stale"
    );
    assert_eq!(
        send("msg_3".into(), t + 600, signed("msg_3", t + 600))
            .await
            .status,
        401,
        "future"
    );
    assert_eq!(
        send("msg_4".into(), t, signed("msg_other", t)).await.status,
        401,
        "signature of another id"
    );
}

#[tokio::test]
async fn stripe_hex_and_none_schemes() {
    let gw = gateway("src-more").await;
    let (tenant, _) = gw.tenant("acme").await;
    let url = stripe_source(&gw, &tenant).await;
    let url = url.as_str();
    let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let t = now();
    let sig = format!(
        "t={t},v1={}",
        hmac_hex(b"whsec_stripe", &[t.to_string().as_bytes(), b".", body])
    );
    assert_eq!(
        hook(&gw, url, &[("stripe-signature", &sig)], body)
            .await
            .status,
        202
    );
    assert_eq!(
        hook(&gw, url, &[("stripe-signature", &sig)], body)
            .await
            .status,
        401,
        "replayed"
    );
    let old = t - 1000;
    let stale = format!(
        "t={old},v1={}",
        hmac_hex(b"whsec_stripe", &[old.to_string().as_bytes(), b".", body])
    );
    assert_eq!(
        hook(&gw, url, &[("stripe-signature", &stale)], body)
            .await
            .status,
        401
    );

    let hex = source(&gw, &tenant, json!({"name": "hex", "verify": {"scheme": "hmac_sha256_hex", "secret": "k", "header": "X-Sig"},
        "event_type": {"fixed": "partner.update"}})).await;
    let url = hex["url"].as_str().unwrap();
    let good = hmac_hex(b"k", &[b"{}"]);
    let r = hook(&gw, url, &[("x-sig", &good)], b"{}").await;
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["event_type"], "partner.update");
    assert_eq!(
        hook(&gw, url, &[("x-sig", &good)], b"{ }").await.status,
        401
    );

    let none = source(
        &gw,
        &tenant,
        json!({"name": "open", "verify": {"scheme": "none"}, "event_type": {"fixed": "ping"}}),
    )
    .await;
    assert_eq!(
        hook(&gw, none["url"].as_str().unwrap(), &[], b"x")
            .await
            .status,
        202
    );
    // Without choosing `none`, a secret is required.
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/sources"),
            Some(
                json!({"name": "x", "verify": {"scheme": "github"}, "event_type": {"fixed": "a"}}),
            ),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn tokens_rotate_and_sources_belong_to_their_tenant() {
    let gw = gateway("src-rotate").await;
    let (tenant, token) = gw.tenant("acme").await;
    let (_, other_token) = gw.tenant("other").await;
    let created = Request::new("POST", "/v1/sources")
        .bearer(&token)
        .json(&json!({"name": "own", "verify": {"scheme": "none"}, "event_type": {"fixed": "e"}}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    let (id, url) = (
        created.json()["id"].as_str().unwrap().to_owned(),
        created.json()["url"].as_str().unwrap().to_owned(),
    );
    assert_eq!(hook(&gw, &url, &[], b"1").await.status, 202);
    let listed = gw
        .admin("GET", &format!("/admin/tenants/{tenant}/sources"), None)
        .await
        .json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(
        listed["data"][0].get("token").is_none(),
        "the token is shown once"
    );
    let other = Request::get(&format!("/v1/sources/{id}"))
        .bearer(&other_token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(other.status, 404, "another tenant cannot see it");

    let rotated = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/sources/{id}/rotate-token"),
            None,
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let new_url = rotated.json()["url"].as_str().unwrap().to_owned();
    assert_ne!(new_url, url);
    assert_eq!(
        hook(&gw, &url, &[], b"1").await.status,
        404,
        "the old token stops at once"
    );
    assert_eq!(hook(&gw, &new_url, &[], b"1").await.status, 202);

    // A disabled tenant's sources get 403, like its events.
    gw.admin(
        "PATCH",
        &format!("/admin/tenants/{tenant}"),
        Some(json!({"active": false})),
    )
    .await;
    support::eventually(std::time::Duration::from_secs(2), "disabled", || async {
        hook(&gw, &new_url, &[], b"1").await.status == 403
    })
    .await;
    assert_eq!(
        gw.admin(
            "DELETE",
            &format!("/admin/tenants/{tenant}/sources/{id}"),
            None
        )
        .await
        .status,
        204
    );
    assert_eq!(hook(&gw, &new_url, &[], b"1").await.status, 404);
}

#[tokio::test]
async fn a_request_answered_503_is_accepted_when_the_sender_retries_it() {
    // Redis answers the replay mark but refuses the event's write (an ACL taking the write
    // commands away stands for an outage that starts between the two): the sender gets a 503
    // and retries the same signed request, which must be accepted, not refused as a replay.
    let redis = RedisServer::start(false);
    let gw = Gateway::start_with(&redis.url(), &unique_prefix("src-outage"), "").await;
    let (tenant, token) = gw.tenant("acme").await;
    let url = stripe_source(&gw, &tenant).await;
    let url = url.as_str();
    let signed = |body: &[u8]| {
        let t = now();
        format!(
            "t={t},v1={}",
            hmac_hex(b"whsec_stripe", &[t.to_string().as_bytes(), b".", body])
        )
    };
    let send = |sig: String, body: &'static [u8]| {
        let gw = &gw;
        async move { hook(gw, url, &[("stripe-signature", &sig)], body).await }
    };
    let no_writes = |more: &[&str]| {
        let mut args = vec!["ACL", "SETUSER", "default", "-xadd", "-evalsha", "-eval"];
        args.extend(more);
        assert_eq!(redis.cli(&args).trim(), "OK");
    };
    let writes_back = || {
        assert_eq!(
            redis.cli(&["ACL", "SETUSER", "default", "+@all"]).trim(),
            "OK"
        )
    };

    let body: &[u8] = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
    let sig = signed(body);
    no_writes(&[]);
    let failed = send(sig.clone(), body).await;
    writes_back();
    assert_eq!(failed.status, 503, "{}", failed.text());
    let retried = send(sig.clone(), body).await;
    assert_eq!(
        retried.status,
        202,
        "the retry is accepted: {}",
        retried.text()
    );
    assert_eq!(
        send(sig, body).await.status,
        401,
        "once accepted, the same request again is a replay"
    );

    // The claim cannot even be let go (no DEL either): the retry is told to come back (503,
    // not a refusal) until the claim lapses (twice the test's 1 s command timeout and a second).
    let body: &[u8] = br#"{"id":"evt_2","type":"charge.succeeded"}"#;
    let sig = signed(body);
    no_writes(&["-del"]);
    let failed = send(sig.clone(), body).await;
    writes_back();
    assert_eq!(failed.status, 503, "{}", failed.text());
    let early = send(sig.clone(), body).await;
    assert_eq!(early.status, 503, "{}", early.text());
    assert!(early.text().contains("retry shortly"), "{}", early.text());
    support::eventually(
        std::time::Duration::from_secs(10),
        "the retry accepted once the claim lapsed",
        || async { send(sig.clone(), body).await.status == 202 },
    )
    .await;
    let delivered = gw
        .get_as(&token, "/v1/events?event_type=charge.succeeded")
        .await;
    assert_eq!(
        delivered.json()["data"].as_array().map(Vec::len),
        Some(2),
        "each event stored once: {}",
        delivered.text()
    );
}
