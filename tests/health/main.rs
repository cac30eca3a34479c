//! Health at a glance, end to end on real sockets: each target's health (the last hour's
//! success ratio, its newest attempt, since when it fails) in the target views, the overview
//! across tenants and per tenant (troubled targets, monitors down, sources silent, error
//! queues, backlog, storage), the unwell index built for a deployment that predates it, and
//! find by id for every kind of id.
//!
//! - [`breaker`]: each target's circuit breaker, shared by every instance, and the gateway
//!   disabling a target that fails too long;
//! - [`concurrency`]: adaptive per-target concurrency against receivers with a knee or a
//!   429 above N in flight, and a fixed one kept;
//! - [`heal`]: a target disabled for failing probed, enabled again and sent its gap;
//! - [`notices`]: operational events, delivered to the targets that ask, never to the one
//!   they are about;
//! - [`outbound`]: TLS to targets (a private CA, mTLS, a server name) and OAuth2 client
//!   credentials;
//! - [`pacing`]: per-target rate limits across dispatchers and a 429's `Retry-After` holding
//!   a whole target.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod breaker;
mod concurrency;
mod heal;
mod notices;
mod outbound;
mod pacing;

use std::time::Duration;

use fred::prelude::*;
use serde_json::{Value as Json, json};
use support::http::Request;
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

/// One attempt per delivery, a fast checker: a 1 s monitor goes down within about a second.
const FAST: &str = r#"
[monitors]
check_every_ms = 100

[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
"#;

/// The harness's `queue.shards`.
const SHARDS: u16 = 4;

const WAIT: Duration = Duration::from_secs(10);

async fn get(gw: &Gateway, path: &str) -> Json {
    let r = gw.admin("GET", path, None).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.json()
}

async fn target_health(gw: &Gateway, tenant: &str, id: &str) -> Json {
    get(gw, &format!("/admin/tenants/{tenant}/targets/{id}")).await["health"].clone()
}

fn id_of(v: &Json) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn target_views_say_how_each_target_fares_and_the_overview_lists_what_needs_looking_at() {
    let prefix = unique_prefix("health");
    let gw = Gateway::start_with(&RedisServer::shared().url(), &prefix, FAST).await;
    let sink = Sink::start().await;
    sink.plan("/bad", vec![], Reply::Status(500));
    sink.plan("/good", vec![], Reply::Status(200));
    let (tenant, token) = gw.tenant("Failing Ltd").await;
    let (other, other_token) = gw.tenant("Calm Ltd").await;
    let once = |path: &str| json!({"url": sink.url(path), "events": ["order.*"], "mode": "once"});
    let bad = id_of(&gw.create_target(&tenant, once("/bad")).await);
    let good = id_of(&gw.create_target(&tenant, once("/good")).await);
    let calm = id_of(&gw.create_target(&other, once("/good")).await);

    // Before any attempt: idle, no ratio.
    let h = target_health(&gw, &tenant, &bad).await;
    assert_eq!(h["state"], "idle", "{h}");
    assert_eq!(h["success_ratio"], Json::Null);
    assert_eq!(h["attempts"], 0);

    for i in 0..5 {
        gw.post_ok(&token, "order.paid", format!("{{\"n\":{i}}}").as_bytes())
            .await;
    }
    gw.post_ok(&other_token, "order.paid", b"{}").await;
    eventually(
        WAIT,
        "ten attempts of the tenant and one of the other",
        || async { sink.count("/bad") == 5 && sink.count("/good") == 6 },
    )
    .await;
    eventually(WAIT, "the failing target's health", || async {
        target_health(&gw, &tenant, &bad).await["attempts"] == 5
    })
    .await;
    let h = target_health(&gw, &tenant, &bad).await;
    assert_eq!(h["state"], "failing", "{h}");
    assert_eq!(h["failed"], 5);
    assert_eq!(h["success_ratio"], 0.0);
    assert_eq!(h["last_attempt"]["status"], 500);
    assert!(h["failing_since"].is_string(), "{h}");
    assert_eq!(h["last_success_at"], Json::Null);
    let window_start = h["window_start"].as_str().unwrap().to_owned();
    eventually(WAIT, "the delivering target's health", || async {
        target_health(&gw, &tenant, &good).await["attempts"] == 5
    })
    .await;
    let g = target_health(&gw, &tenant, &good).await;
    assert_eq!(g["state"], "healthy", "{g}");
    assert_eq!(g["success_ratio"], 1.0);
    assert!(g["last_success_at"].is_string());
    assert_eq!(g["failing_since"], Json::Null);
    // The list carries the same health, and the tenant's own API too.
    let listed = get(&gw, &format!("/admin/tenants/{tenant}/targets")).await;
    let row = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == bad.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["health"]["state"], "failing");
    let own = gw.get_as(&token, &format!("/v1/targets/{bad}")).await;
    assert_eq!(own.json()["health"]["failed"], 5);

    // The overview across tenants: the failing target (with its tenant's name) and the error
    // queue; the healthy ones are not listed.
    let o = get(&gw, "/admin/overview").await;
    assert_eq!(o["troubled_targets_total"], 1, "{o}");
    let t = &o["troubled_targets"][0];
    assert_eq!(t["target_id"], bad.as_str());
    assert_eq!(t["tenant_name"], "Failing Ltd");
    assert_eq!(t["url"], sink.url("/bad").as_str());
    assert_eq!(t["health"]["state"], "failing");
    assert_eq!(
        o["error_queues"],
        json!([{"tenant_id": tenant, "tenant_name": "Failing Ltd", "entries": 5}])
    );
    assert_eq!(o["error_queue_total"], 5);
    assert!(o["tenants"].as_u64().unwrap() >= 2);
    assert_eq!(o["storage"]["redis"], "ok");
    assert_eq!(o["storage"]["log_store"], Json::Null, "no log store here");
    assert_eq!(o["shards"].as_array().unwrap().len(), usize::from(SHARDS));

    // A monitor that goes quiet is listed as down, in its tenant.
    let m = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": "nightly backup", "heartbeat_interval_s": 1, "grace_s": 0})),
        )
        .await;
    assert_eq!(m.status, 201, "{}", m.text());
    let m = m.json();
    let monitor = id_of(&m);
    let beat = Request::get(m["heartbeat_url"].as_str().unwrap())
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(beat.status, 200, "{}", beat.text());
    eventually(WAIT, "the monitor listed as down", || async {
        get(&gw, "/admin/overview").await["unwell_total"] == 1
    })
    .await;
    let o = get(&gw, "/admin/overview").await;
    let u = &o["unwell"][0];
    assert_eq!(u["id"], monitor.as_str());
    assert_eq!(
        (&u["kind"], &u["status"], &u["tenant_id"], &u["name"]),
        (
            &json!("monitor"),
            &json!("down"),
            &json!(tenant),
            &json!("nightly backup")
        )
    );

    // So is a watched source that goes silent.
    let src = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/sources"),
            Some(json!({"name": "gh", "verify": {"scheme": "none"},
                "event_type": {"fixed": "push"}, "expect_every_s": 1, "grace_s": 0})),
        )
        .await;
    assert_eq!(src.status, 201, "{}", src.text());
    let src = src.json();
    let hook = Request::new("POST", src["url"].as_str().unwrap())
        .body(b"{}".to_vec())
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(hook.status, 202, "{}", hook.text());
    eventually(WAIT, "the source listed as silent", || async {
        get(&gw, "/admin/overview").await["unwell_total"] == 2
    })
    .await;
    let o = get(&gw, "/admin/overview").await;
    assert_eq!(o["unwell"][1]["kind"], "source", "{o}");
    assert_eq!(o["unwell"][1]["id"], src["id"]);

    // Each tenant's overview holds only its own, without the deployment's internals.
    let mine = get(&gw, &format!("/admin/tenants/{tenant}/overview")).await;
    assert_eq!(mine["troubled_targets_total"], 1);
    assert_eq!(mine["unwell_total"], 2);
    assert_eq!(mine["tenants"], 1);
    assert_eq!(mine["shards"], Json::Null);
    assert_eq!(mine["storage"], Json::Null);
    let theirs = gw.get_as(&other_token, "/v1/overview").await;
    assert_eq!(theirs.status, 200, "{}", theirs.text());
    let theirs = theirs.json();
    assert_eq!(theirs["troubled_targets"], json!([]), "{theirs}");
    assert_eq!(theirs["unwell"], json!([]));
    assert_eq!(theirs["error_queues"], json!([]));
    // A tenant cannot read the deployment's overview.
    let refused = gw.get_as(&other_token, "/admin/overview").await;
    assert!(
        refused.status == 401 || refused.status == 404,
        "{}",
        refused.status
    );

    // The failing target delivers again: no longer failing, degraded by the hour's ratio.
    sink.plan("/bad", vec![], Reply::Status(200));
    gw.post_ok(&token, "order.paid", b"{}").await;
    eventually(WAIT, "the recovered target's health", || async {
        target_health(&gw, &tenant, &bad).await["attempts"] == 6
    })
    .await;
    let h = target_health(&gw, &tenant, &bad).await;
    assert_eq!(h["state"], "degraded", "{h}");
    assert_eq!(h["failing_since"], Json::Null);
    assert_eq!(h["last_attempt"]["status"], 200);
    assert_eq!(h["window_start"], window_start.as_str());
    let ratio = h["success_ratio"].as_f64().unwrap();
    assert!((ratio - 1.0 / 6.0).abs() < 0.001, "{ratio}");

    // A deleted target's health goes with it.
    let redis = RedisServer::shared().client().await;
    let key = format!("{prefix}:{{q{}}}:thealth:{other}", shard_of(&other));
    let fields: Vec<String> = redis.hkeys(&key).await.unwrap();
    assert!(fields.iter().any(|f| f.starts_with(&calm)), "{fields:?}");
    let r = gw
        .admin(
            "DELETE",
            &format!("/admin/tenants/{other}/targets/{calm}"),
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let fields: Vec<String> = redis.hkeys(&key).await.unwrap();
    assert!(!fields.iter().any(|f| f.starts_with(&calm)), "{fields:?}");

    // A deployment from before the unwell index: the entry and the marker gone, a restart
    // indexes the monitor again.
    let unwell = format!("{prefix}:{{q{}}}:unwell", shard_of(&tenant));
    let _: i64 = redis.zrem(&unwell, monitor.as_str()).await.unwrap();
    let _: i64 = redis
        .del(format!("{prefix}:{{m}}:upgrade:unwell_index"))
        .await
        .unwrap();
    assert_eq!(get(&gw, "/admin/overview").await["unwell_total"], 1);
    let again = Gateway::start_with(&RedisServer::shared().url(), &prefix, FAST).await;
    let o = get(&again, "/admin/overview").await;
    assert_eq!(o["unwell_total"], 2, "{o}");
    assert_eq!(o["unwell"][0]["id"], monitor.as_str());
}

fn shard_of(tenant: &str) -> u16 {
    estafeta::redis::keyspace::shard_of(&estafeta::model::TenantId::parse(tenant).unwrap(), SHARDS)
}

#[tokio::test]
async fn find_by_id_names_the_kind_and_the_tenant_of_every_id() {
    let gw = Gateway::start_with(&RedisServer::shared().url(), &unique_prefix("find"), FAST).await;
    let sink = Sink::start().await;
    let (tenant, token) = gw
        .tenant_with(json!({"name": "Findable", "external_id": "crm-4711"}))
        .await;
    let target = id_of(
        &gw.create_target(&tenant, json!({"url": sink.url("/x"), "events": ["*"]}))
            .await,
    );
    let event = gw.post_ok(&token, "order.paid", b"{}").await;
    let made = |path: &'static str, body: Json| {
        let gw = &gw;
        let tenant = tenant.clone();
        async move {
            let r = gw
                .admin(
                    "POST",
                    &format!("/admin/tenants/{tenant}/{path}"),
                    Some(body),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text());
            id_of(&r.json())
        }
    };
    let monitor = made("monitors", json!({"name": "m", "heartbeat_interval_s": 60})).await;
    let source = made(
        "sources",
        json!({"name": "s", "verify": {"scheme": "none"}, "event_type": {"fixed": "push"}}),
    )
    .await;
    eventually(WAIT, "the event's record", || async {
        gw.admin("GET", &format!("/admin/find?q={event}"), None)
            .await
            .status
            == 200
    })
    .await;
    for (q, kind, id) in [
        (tenant.as_str(), "tenant", tenant.as_str()),
        ("crm-4711", "tenant", tenant.as_str()),
        (target.as_str(), "target", target.as_str()),
        (event.as_str(), "event", event.as_str()),
        (monitor.as_str(), "monitor", monitor.as_str()),
        (source.as_str(), "source", source.as_str()),
    ] {
        let r = gw
            .admin("GET", &format!("/admin/find?q={}", urlencode(q)), None)
            .await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"kind": kind, "tenant_id": tenant, "id": id}),
            "{q}"
        );
    }
    // Nothing has it: the contract's 404; an unreadable query: 400; a tenant may not search.
    let r = gw.admin("GET", "/admin/find?q=evt_nothing", None).await;
    assert_eq!(r.status, 404);
    assert!(r.is_error("not_found"), "{}", r.text());
    let r = gw.admin("GET", "/admin/find", None).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = gw.get_as(&token, &format!("/admin/find?q={target}")).await;
    assert!(r.status == 401 || r.status == 404, "{}", r.status);
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_test_delivery_is_signed_answered_and_recorded_nowhere() {
    let gw = Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix("test-delivery"),
        FAST,
    )
    .await;
    let sink = Sink::start().await;
    sink.plan("/ok", vec![], Reply::Status(204));
    sink.plan("/no", vec![], Reply::Status(503));
    let (tenant, token) = gw.tenant("tester").await;
    let (other, _) = gw.tenant("other").await;
    let ok = gw
        .create_target(&tenant, json!({"url": sink.url("/ok"), "events": ["*"]}))
        .await;
    let ok_id = id_of(&ok);
    let no = id_of(
        &gw.create_target(
            &tenant,
            json!({"url": sink.url("/no"), "events": ["*"], "active": false}),
        )
        .await,
    );
    let test = |tenant: String, id: String| {
        let gw = &gw;
        async move {
            gw.admin(
                "POST",
                &format!("/admin/tenants/{tenant}/targets/{id}/test"),
                None,
            )
            .await
        }
    };
    let r = test(tenant.clone(), ok_id.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["delivered"], true, "{v}");
    assert_eq!(v["status"], 204);
    assert_eq!(v["error"], Json::Null);
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0, "{v}");
    // What arrived is a signed ping with the answer's webhook-id, signed with the secret.
    let got = sink.received("/ok");
    assert_eq!(got.len(), 1);
    let ping = &got[0];
    assert_eq!(
        ping.header("webhook-id").as_deref(),
        v["webhook_id"].as_str()
    );
    assert_eq!(
        ping.header("estafeta-event-type").as_deref(),
        Some("estafeta.ping")
    );
    let body: Json = serde_json::from_slice(&ping.body).unwrap();
    assert_eq!(body["type"], "estafeta.ping");
    assert_eq!(body["target_id"], ok_id.as_str());
    let secret = ok["secret"].as_str().unwrap();
    let key = base64_decode(secret.strip_prefix("whsec_").unwrap());
    let signed = format!(
        "{}.{}.{}",
        ping.header("webhook-id").unwrap(),
        ping.header("webhook-timestamp").unwrap(),
        String::from_utf8(ping.body.to_vec()).unwrap()
    );
    let want = format!("v1,{}", hmac_b64(&key, signed.as_bytes()));
    assert!(
        ping.header("webhook-signature")
            .unwrap()
            .split(' ')
            .any(|s| s == want),
        "{:?}",
        ping.header("webhook-signature")
    );

    // A disabled target is tested too; a refusal is reported, not an error of the API.
    let r = test(tenant.clone(), no.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (&v["delivered"], &v["status"], &v["error"]),
        (
            &json!(false),
            &json!(503),
            &json!("the target answered 503")
        )
    );
    // The tenant's own API, and no other tenant's.
    let own = Request::new("POST", &format!("/v1/targets/{ok_id}/test"))
        .bearer(&token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(own.status, 200, "{}", own.text());
    let r = test(other, ok_id.clone()).await;
    assert_eq!(r.status, 404);
    // Nothing was recorded: no attempt in the target's health, no event.
    let h = get(&gw, &format!("/admin/tenants/{tenant}/targets/{ok_id}")).await;
    assert_eq!(h["health"]["attempts"], 0, "{h}");
    let events = get(&gw, &format!("/admin/tenants/{tenant}/events")).await;
    assert_eq!(events["data"], json!([]));
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

fn hmac_b64(key: &[u8], msg: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}
