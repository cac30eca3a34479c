//! The log store end to end, on a real PostgreSQL started by the harness and a real Redis:
//! finished events move to PostgreSQL and stay readable after their Redis copies expire;
//! listings, replays and recoveries work across both tiers; PostgreSQL going away loses
//! nothing; re-shipped batches and two shippers store each event once; partitions are made
//! ahead and dropped whole; tenants stay apart on every read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use estafeta::log_store::LogStore;
use estafeta::log_store::partitions::{day_of, partition_name};
use estafeta::model::time::rfc3339;

use estafeta::model::{EventId, TargetId, TenantId};
use estafeta::queue::retention::Retention;
use estafeta::redis::keyspace::Keyspace;
use estafeta::store::deliveries::{AttemptRecord, DeliveryState, LoggedEvent, State};
use fred::prelude::*;
use serde_json::{Value as Json, json};
use support::postgres::{PgServer, connect};
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, certs, eventually, now_ms, unique_prefix};

const HOT_WINDOW_S: u64 = 2;

/// A gateway with a log store on database `db` and a hot window of two seconds.
async fn gateway_on(prefix: &str, db_url: &str) -> Gateway {
    let extra = format!(
        r#"
[monitors]
checks_kept = 2
incidents_kept = 1

[dispatch]
request_timeout_ms = 1000
reclaim_idle_ms = 6000
retry_poll_ms = 20
retry = {{ initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 200, max_attempts = 2 }}

[log_store]
url = "{db_url}"
"#
    );
    Gateway::start_edited(
        &RedisServer::shared().url(),
        prefix,
        &extra,
        Arc::new(certs()),
        |t| {
            t.replace(
                "[queue]\nshards = 4",
                &format!("[queue]\nshards = 4\nhot_window_s = {HOT_WINDOW_S}"),
            )
        },
    )
    .await
}

async fn gateway(name: &str) -> (Gateway, String) {
    let db = PgServer::shared().database(name).await;
    (gateway_on(&unique_prefix(name), &db).await, db)
}

async fn target(gw: &Gateway, tenant: &str, body: Json) -> String {
    gw.create_target(tenant, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn post(gw: &Gateway, token: &str, event_type: &str, body: &[u8]) -> String {
    gw.post_ok(token, event_type, body).await
}

async fn get(gw: &Gateway, token: &str, path: &str) -> support::http::Response {
    gw.get_as(token, path).await
}

async fn rows(db: &str, sql: &str) -> i64 {
    let c = connect(db).await;
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Whether any Redis record of `event` is left (any shard).
/// The TTL (ms) of `event`'s record in Redis; -2 when there is none.
async fn record_ttl_ms(redis: &Client, prefix: &str, event: &str) -> i64 {
    for shard in 0..4 {
        let ttl: i64 = redis
            .pttl(format!("{prefix}:{{q{shard}}}:ev:{event}"))
            .await
            .unwrap();
        if ttl != -2 {
            return ttl;
        }
    }
    -2
}

async fn in_redis(redis: &Client, prefix: &str, event: &str) -> bool {
    for shard in 0..4 {
        let n: i64 = redis
            .exists(format!("{prefix}:{{q{shard}}}:ev:{event}"))
            .await
            .unwrap();
        if n > 0 {
            return true;
        }
    }
    false
}

/// Waits until the events are in PostgreSQL and gone from Redis (hot window passed).
async fn wait_cold(gw: &Gateway, db: &str, ids: &[String]) {
    let redis = RedisServer::shared().client().await;
    let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    let sql = format!(
        "SELECT count(*) FROM events WHERE id IN ({})",
        list.join(",")
    );
    eventually(Duration::from_secs(20), "events shipped", || async {
        rows(db, &sql).await == ids.len() as i64
    })
    .await;
    eventually(Duration::from_secs(40), "Redis copies expired", || async {
        for id in ids {
            if in_redis(&redis, &gw.prefix, id).await {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_events_are_shipped_and_readable_after_they_leave_redis() {
    let (gw, db) = gateway("shipped").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["order.*"]}),
    )
    .await;
    // A refused delivery keeps its headers, and they are shipped with the attempt.
    sink.plan(
        "/no",
        vec![],
        Reply::Headers(503, vec![("x-receiver-id", b"r-42".to_vec())]),
    );
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/no"), "events": ["refund.*"], "mode": "once"}),
    )
    .await;
    let delivered = post(&gw, &token, "order.paid", br#"{"n":1}"#).await;
    let unmatched = post(&gw, &token, "user.created", b"plain text").await;
    let refused = post(&gw, &token, "refund.created", b"{}").await;
    eventually(Duration::from_secs(10), "delivered", || async {
        sink.count("/ok") == 1 && sink.count("/no") == 1
    })
    .await;
    wait_cold(
        &gw,
        &db,
        &[delivered.clone(), unmatched.clone(), refused.clone()],
    )
    .await;
    let r = get(&gw, &token, &format!("/v1/events/{refused}")).await;
    let attempt = &r.json()["attempts"][0];
    assert_eq!(attempt["status"], 503, "{}", r.text());
    let received = attempt["response_headers"].as_array().unwrap();
    assert!(
        received.contains(&json!({"name": "x-receiver-id", "value": "r-42"})),
        "{received:?}"
    );
    let sent = attempt["request_headers"].as_array().unwrap();
    assert!(
        sent.contains(&json!({"name": "webhook-id", "value": refused})),
        "{sent:?}"
    );

    for (listener, path, bearer) in [
        ("edge", format!("/v1/events/{delivered}"), token.clone()),
        (
            "admin",
            format!("/admin/tenants/{tenant}/events/{delivered}"),
            support::ADMIN_TOKEN.to_owned(),
        ),
    ] {
        let req = support::http::Request::get(&path).bearer(&bearer);
        let r = if listener == "edge" {
            req.send_plain(gw.addrs.plain).await.unwrap()
        } else {
            req.send_plain(gw.addrs.admin).await.unwrap()
        };
        assert_eq!(r.status, 200, "{listener}: {}", r.text());
        let v = r.json();
        assert_eq!(v["event_type"], "order.paid");
        assert_eq!(v["content_type"], "application/json");
        assert_eq!(v["deliveries"][0]["target_id"], t.as_str());
        assert_eq!(v["deliveries"][0]["state"], "succeeded");
        assert_eq!(v["deliveries"][0]["attempts"], 1);
        assert_eq!(v["deliveries"][0]["last_status"], 200);
        assert_eq!(v["attempts"].as_array().unwrap().len(), 1);
        assert_eq!(v["attempts"][0]["status"], 200);
    }
    let r = get(&gw, &token, &format!("/v1/events/{unmatched}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["deliveries"], json!([]));

    // The log holds the bodies byte for byte, with their statuses.
    let c = connect(&db).await;
    let row = c
        .query_one(
            "SELECT body, status FROM events WHERE id = $1",
            &[&unmatched],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), b"plain text");
    assert_eq!(row.get::<_, String>(1), "no_targets");
    let row = c
        .query_one(
            "SELECT body, status FROM events WHERE id = $1",
            &[&delivered],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), br#"{"n":1}"#);
    assert_eq!(row.get::<_, String>(1), "succeeded");

    // With the stream entries gone too (retention), the bodies come from the log.
    let redis = RedisServer::shared().client().await;
    for shard in 0..4 {
        let _: i64 = redis.xtrim(gw.stream(shard), ("MAXLEN", 0)).await.unwrap();
    }
    let r = get(&gw, &token, &format!("/v1/events/{unmatched}/body")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], "plain text");
    assert_eq!(r.json()["encoding"], "utf8");
    let r = get(&gw, &token, &format!("/v1/events/{delivered}/body")).await;
    assert_eq!(r.json()["body"], r#"{"n":1}"#);
    assert_eq!(r.json()["content_type"], "application/json");
    assert_eq!(r.json()["size"], 7);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_and_filters_span_both_tiers() {
    let (gw, db) = gateway("listing").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let ok = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["order.*"]}),
    )
    .await;
    let bad = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/bad"), "events": ["order.failed"], "mode": "once"}),
    )
    .await;
    sink.plan("/bad", vec![], Reply::Status(500));
    let mut cold = Vec::new();
    for i in 0..3 {
        cold.push(post(&gw, &token, "order.paid", format!("{i}").as_bytes()).await);
    }
    cold.push(post(&gw, &token, "order.failed", b"f").await);
    eventually(Duration::from_secs(10), "cold deliveries", || async {
        sink.count("/ok") == 4 && sink.count("/bad") == 1
    })
    .await;
    wait_cold(&gw, &db, &cold).await;
    let since = rfc3339(now_ms());
    let mut hot = Vec::new();
    for i in 0..2 {
        hot.push(post(&gw, &token, "user.created", format!("{i}").as_bytes()).await);
    }

    // Every event once, newest first, paged by `before`.
    let mut seen = Vec::new();
    let mut path = "/v1/events?limit=2".to_owned();
    loop {
        let r = get(&gw, &token, &path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        for e in v["data"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match v["next"].as_str() {
            Some(n) => path = format!("/v1/events?limit=2&before={n}"),
            None => break,
        }
    }
    let mut all: Vec<String> = cold.iter().chain(hot.iter()).cloned().collect();
    all.sort();
    all.reverse();
    assert_eq!(
        seen, all,
        "newest first, each event once, across both tiers"
    );

    let ids = |v: Json| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let r = get(&gw, &token, "/v1/events?event_type=order.paid").await;
    let mut want = cold[..3].to_vec();
    want.reverse();
    assert_eq!(ids(r.json()), want);
    // A prefix pattern in both tiers: the cold events from PostgreSQL, the hot from Redis.
    let r = get(&gw, &token, "/v1/events?event_type=order.*").await;
    let mut want = cold.clone();
    want.reverse();
    assert_eq!(ids(r.json()), want, "order.* from the log store");
    let r = get(&gw, &token, "/v1/events?event_type=user.*").await;
    let mut want = hot.clone();
    want.reverse();
    assert_eq!(ids(r.json()), want, "user.* from Redis");
    let r = get(&gw, &token, "/v1/events?event_type=*").await;
    assert_eq!(ids(r.json()), all);
    let r = get(&gw, &token, "/v1/events?event_type=orde.*").await;
    assert_eq!(
        ids(r.json()),
        Vec::<String>::new(),
        "a prefix ends at a dot"
    );
    let r = get(&gw, &token, "/v1/events?status=failed").await;
    assert_eq!(ids(r.json()), vec![cold[3].clone()]);
    let r = get(&gw, &token, &format!("/v1/events?target_id={bad}")).await;
    assert_eq!(ids(r.json()), vec![cold[3].clone()]);
    let r = get(
        &gw,
        &token,
        &format!("/v1/events?target_id={ok}&status=succeeded"),
    )
    .await;
    assert_eq!(ids(r.json()).len(), 4);
    let r = get(&gw, &token, &format!("/v1/events?since={since}")).await;
    let mut want = hot.clone();
    want.reverse();
    assert_eq!(ids(r.json()), want);
    let r = get(&gw, &token, &format!("/v1/events?until={since}")).await;
    assert_eq!(ids(r.json()).len(), 4);
    let v = get(&gw, &token, "/v1/events?event_type=order.failed")
        .await
        .json();
    assert_eq!(v["data"][0]["status"], "failed");
    assert_eq!(v["data"][0]["deliveries"].as_array().unwrap().len(), 2);

    for bad_query in [
        "status=lost",
        "since=yesterday",
        "limit=0",
        "limit=501",
        "colour=red",
        "event_type=order.**",
    ] {
        let r = get(&gw, &token, &format!("/v1/events?{bad_query}")).await;
        assert_eq!(r.status, 400, "{bad_query}: {}", r.text());
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_queue_replay_and_recovery_bring_events_back_from_the_log() {
    let (gw, db) = gateway("replay").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/flaky"), "events": ["*"], "mode": "once"}),
    )
    .await;
    sink.plan("/flaky", vec![], Reply::Status(503));
    let before = rfc3339(now_ms());
    let first = post(&gw, &token, "a.b", b"one").await;
    let second = post(&gw, &token, "a.b", b"two").await;
    eventually(Duration::from_secs(10), "both dead-lettered", || async {
        let r = get(&gw, &token, "/v1/dead-letters").await;
        r.json()["data"].as_array().map(|a| a.len()) == Some(2)
    })
    .await;
    wait_cold(&gw, &db, &[first.clone(), second.clone()]).await;
    let after = rfc3339(now_ms());

    // The receiver is back: replay the first from the error queue.
    sink.plan("/flaky", vec![], Reply::Status(200));
    let dl = get(&gw, &token, "/v1/dead-letters").await.json();
    let dl_first = dl["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == first.as_str())
        .unwrap()["id"]
        .clone();
    let r = support::http::Request::new("POST", "/v1/dead-letters/replay")
        .bearer(&token)
        .json(&json!({"ids": [dl_first]}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.json()["replayed"], 1, "{}", r.text());
    eventually(Duration::from_secs(10), "replayed delivery", || async {
        sink.received("/flaky")
            .iter()
            .any(|r| r.body.as_ref() == b"one" && r.at.elapsed() < Duration::from_secs(10))
    })
    .await;

    // The second by time-range recovery, which also takes it out of the error queue.
    let r = support::http::Request::new("POST", &format!("/v1/targets/{t}/recover"))
        .bearer(&token)
        .json(&json!({"since": before, "until": after}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["recovering"], 1, "only the one still failed");
    eventually(Duration::from_secs(10), "recovered delivery", || async {
        sink.received("/flaky")
            .iter()
            .filter(|r| r.body.as_ref() == b"two")
            .count()
            == 2
    })
    .await;
    let dl = get(&gw, &token, "/v1/dead-letters").await.json();
    assert_eq!(dl["data"], json!([]));

    // Both finished again and were shipped again: the log says they succeeded.
    eventually(Duration::from_secs(20), "re-shipped states", || async {
        let sql = format!(
            "SELECT count(*) FROM deliveries WHERE target_id = '{t}' AND state = 'succeeded'"
        );
        rows(&db, &sql).await == 2
    })
    .await;
    let v = get(&gw, &token, &format!("/v1/events/{second}"))
        .await
        .json();
    assert_eq!(v["deliveries"][0]["state"], "succeeded");
    assert_eq!(rows(&db, "SELECT count(*) FROM events").await, 2);

    // Bad ranges are refused.
    for body in [
        json!({"since": "x"}),
        json!({"since": after, "until": before}),
        json!({}),
    ] {
        let r = support::http::Request::new("POST", &format!("/v1/targets/{t}/recover"))
            .bearer(&token)
            .json(&body)
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.text());
    }
    gw.stop().await.unwrap();
}

/// The attempts of one target in an event view: (attempt, status), in the order shown.
fn attempts_of(view: &Json, target: &str) -> Vec<(u64, u64)> {
    view["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["target_id"] == target)
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_an_event_past_the_hot_window_keeps_every_attempt_in_view() {
    let (gw, db) = gateway("merged").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    sink.plan("/a", vec![], Reply::Status(500));
    sink.plan("/b", vec![], Reply::Status(502));
    let a = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/a"), "events": ["*"]}),
    )
    .await;
    let b = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/b"), "events": ["*"]}),
    )
    .await;
    let id = post(&gw, &token, "order.paid", b"{\"n\":1}").await;
    eventually(Duration::from_secs(15), "both dead-lettered", || async {
        get(&gw, &token, "/v1/dead-letters").await.json()["total"] == 2
    })
    .await;
    wait_cold(&gw, &db, std::slice::from_ref(&id)).await;
    let cold = get(&gw, &token, &format!("/v1/events/{id}")).await.json();
    assert_eq!(attempts_of(&cold, &a), [(1, 500), (2, 500)], "{cold}");
    assert_eq!(attempts_of(&cold, &b), [(1, 502), (2, 502)], "{cold}");

    // A's entry replayed while A still fails: the event comes back into Redis for it.
    let r = support::http::Request::new("POST", "/v1/dead-letters/replay")
        .bearer(&token)
        .json(&json!({"event_id": id, "target_id": a}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.json()["replayed"], 1, "{}", r.text());
    // Read while the record brought back is still in Redis (it lives the hot window).
    let redis = RedisServer::shared().client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let view = loop {
        let v = get(&gw, &token, &format!("/v1/events/{id}")).await.json();
        let again = v["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["target_id"] == a.as_str() && d["state"] == "dead_lettered")
            && v["attempts"].as_array().unwrap().iter().any(|x| {
                x["target_id"] == a.as_str()
                    && x["at"].as_str() > cold["attempts"][3]["at"].as_str()
            });
        if again && attempts_of(&v, &a).len() >= 4 {
            assert!(
                in_redis(&redis, &gw.prefix, &id).await,
                "read from the restored record"
            );
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A dead-lettered again: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        attempts_of(&view, &a),
        [(1, 500), (2, 500), (1, 500), (2, 500)],
        "the old attempts from the log store, the new ones from Redis: {view}"
    );
    assert_eq!(
        attempts_of(&view, &b),
        [(1, 502), (2, 502)],
        "the other target's history stays: {view}"
    );
    let deliveries = view["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2);
    for d in deliveries {
        assert_eq!(d["state"], "dead_lettered", "{view}");
        assert_eq!(d["attempts"], 2, "{view}");
    }
    // Shipped again and gone from Redis once more: the log store alone says the same.
    wait_cold(&gw, &db, std::slice::from_ref(&id)).await;
    eventually(
        Duration::from_secs(20),
        "the log store holds all six attempts",
        || async {
            let v = get(&gw, &token, &format!("/v1/events/{id}")).await.json();
            attempts_of(&v, &a).len() == 4 && attempts_of(&v, &b).len() == 2
        },
    )
    .await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_under_load_loses_nothing_and_shipping_resumes() {
    let pg = PgServer::start();
    let db = pg.database("down").await;
    let gw = gateway_on(&unique_prefix("pgdown"), &db).await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["*"]}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(post(&gw, &token, "x.y", format!("{i}").as_bytes()).await);
    }
    pg.stop();
    for i in 20..120 {
        ids.push(post(&gw, &token, "x.y", format!("{i}").as_bytes()).await);
    }
    eventually(Duration::from_secs(15), "all delivered", || async {
        sink.count("/ok") == 120
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "readyz says the log store is down",
        || async {
            let r = support::http::Request::get("/readyz")
                .send_plain(gw.addrs.plain)
                .await
                .unwrap();
            r.status == 200 && r.json()["log_store"] == "unreachable"
        },
    )
    .await;
    // Past a shipped record's life (12 s here) and the stream's hot window by the gateway's
    // clock, a trim must keep every unshipped event, whose record keeps the retention's TTL.
    gw.advance(Duration::from_secs(60));
    let redis = RedisServer::shared().client().await;
    let trim = Retention::new(
        redis.clone(),
        Keyspace::new(&gw.prefix),
        4,
        Duration::from_secs(HOT_WINDOW_S),
        Duration::from_secs(1),
        true,
    )
    .with_clock(gw.clock.clone());
    trim.trim_once().await.unwrap();
    let streamed: HashSet<String> = support::all_events(&redis, &gw.prefix)
        .await
        .into_iter()
        .map(|(_, e)| e.id.to_string())
        .collect();
    for id in &ids[20..] {
        assert!(streamed.contains(id), "{id} trimmed while unshipped");
        let ttl = record_ttl_ms(&redis, &gw.prefix, id).await;
        assert!(ttl > 60_000, "{id}'s record lives {ttl} ms, as if shipped");
    }
    let r = get(&gw, &token, &format!("/v1/events/{}", ids[119])).await;
    assert_eq!(r.status, 200, "hot events stay readable: {}", r.text());

    pg.restart();
    wait_cold(&gw, &db, &ids).await;
    let distinct = rows(&db, "SELECT count(DISTINCT id) FROM events").await;
    assert_eq!(distinct, 120);
    assert_eq!(
        rows(
            &db,
            "SELECT count(*) FROM deliveries WHERE state = 'succeeded'"
        )
        .await,
        120
    );
    eventually(Duration::from_secs(10), "readyz says ok again", || async {
        let r = support::http::Request::get("/readyz")
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        r.json()["log_store"] == "ok"
    })
    .await;
    // Every body survived the outage (the stream kept the ones that only it held).
    let c = connect(&db).await;
    let bodies: HashSet<Vec<u8>> = c
        .query("SELECT body FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for i in 0..120 {
        assert!(bodies.contains(format!("{i}").as_bytes()), "body {i}");
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_ship_the_same_shards_and_store_each_event_once() {
    let db = PgServer::shared().database("two").await;
    let prefix = unique_prefix("two");
    let a = gateway_on(&prefix, &db).await;
    let b = gateway_on(&prefix, &db).await;
    let sink = Sink::start().await;
    let (tenant, token) = a.tenant("acme").await;
    target(
        &a,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["*"]}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..100 {
        let gw = if i % 2 == 0 { &a } else { &b };
        ids.push(post(gw, &token, "x.y", format!("{i}").as_bytes()).await);
    }
    wait_cold(&a, &db, &ids).await;
    assert_eq!(rows(&db, "SELECT count(*) FROM events").await, 100);
    assert_eq!(rows(&db, "SELECT count(*) FROM deliveries").await, 100);
    assert_eq!(rows(&db, "SELECT count(*) FROM attempts").await, 100);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

fn logged(tenant: &TenantId, at_ms: u64, body: &'static [u8]) -> LoggedEvent {
    let target = TargetId::generate();
    LoggedEvent {
        tenant: tenant.clone(),
        id: EventId::generate(),
        received_at_ms: at_ms,
        event_type: "a.b".into(),
        content_type: Some("text/plain".into()),
        body: Bytes::from_static(body),
        deliveries: vec![(
            target.clone(),
            DeliveryState {
                state: State::Succeeded,
                attempts: 1,
                last_status: Some(200),
                last_error: None,
                next_retry_at_ms: None,
                updated_at_ms: at_ms + 5,
                deferrals: 0,
            },
        )],
        attempts: vec![AttemptRecord {
            target_id: target,
            attempt: 1,
            at_ms: at_ms + 3,
            status: Some(200),
            latency_ms: 2,
            error: None,
            response: Some("ok".into()),
            headers: None,
            transform_version: None,
            batch_id: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_shipped_twice_is_stored_once() {
    let db = PgServer::shared().database("twice").await;
    let log = LogStore::open(&db, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    let tenant = TenantId::generate();
    let batch: Vec<LoggedEvent> = (0..50).map(|_| logged(&tenant, now_ms(), b"x")).collect();
    assert_eq!(log.ship(&batch).await.unwrap().new_events, 50);
    log.ship(&batch).await.unwrap();
    assert_eq!(rows(&db, "SELECT count(*) FROM events").await, 50);
    assert_eq!(rows(&db, "SELECT count(*) FROM deliveries").await, 50);
    assert_eq!(rows(&db, "SELECT count(*) FROM attempts").await, 50);
    // Read back as it went in.
    let e = log.event(&tenant, &batch[0].id).await.unwrap().unwrap();
    assert_eq!(e.attempts.len(), 1);
    assert_eq!(e.attempts[0].response.as_deref(), Some("ok"));
    assert_eq!(e.deliveries[0].1.as_ref().unwrap().state, State::Succeeded);
    // Another tenant does not see it.
    assert!(
        log.event(&TenantId::generate(), &batch[0].id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_made_ahead_and_dropped_whole_by_retention() {
    let db = PgServer::shared().database("parts").await;
    let retention = Duration::from_secs(48 * 3600);
    let log = LogStore::open(&db, retention).await.unwrap();
    let c = connect(&db).await;
    let exists = |name: String| {
        let c = &c;
        async move {
            c.query_opt("SELECT 1 FROM pg_class WHERE relname = $1", &[&name])
                .await
                .unwrap()
                .is_some()
        }
    };
    let today = day_of(now_ms());
    for day in [today - 1, today, today + 1, today + 3] {
        for table in ["events", "deliveries", "attempts"] {
            assert!(exists(partition_name(table, day)).await, "{table} {day}");
        }
    }
    // A write for a day far off makes its partition on demand.
    let tenant = TenantId::generate();
    let old_ms = now_ms() - 4 * 24 * 3600 * 1000;
    let old = logged(&tenant, old_ms, b"old");
    log.ship(std::slice::from_ref(&old)).await.unwrap();
    assert!(exists(partition_name("events", day_of(old_ms))).await);
    let fresh = logged(&tenant, now_ms(), b"new");
    log.ship(std::slice::from_ref(&fresh)).await.unwrap();

    // The day entirely past retention goes, as a whole table, with its rows.
    let (_, dropped) = log.maintain().await.unwrap();
    assert!(dropped >= 1);
    assert!(!exists(partition_name("events", day_of(old_ms))).await);
    assert!(!exists(partition_name("attempts", day_of(old_ms))).await);
    assert!(log.event(&tenant, &old.id).await.unwrap().is_none());
    assert!(log.event(&tenant, &fresh.id).await.unwrap().is_some());
    // Opening again (a restart, another process) runs no migration twice.
    LogStore::open(&db, retention).await.unwrap();
    assert_eq!(
        rows(&db, "SELECT count(*) FROM refinery_schema_history").await,
        4,
        "each of the four migrations once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_stay_apart_on_every_read_of_either_tier() {
    let (gw, db) = gateway("isolation").await;
    let sink = Sink::start().await;
    let (a, a_token) = gw.tenant("a").await;
    let (_b, b_token) = gw.tenant("b").await;
    let t = target(
        &gw,
        &a,
        json!({"url": sink.url("/fail"), "events": ["*"], "mode": "once"}),
    )
    .await;
    sink.plan("/fail", vec![], Reply::Status(500));
    let since = rfc3339(now_ms() - 1000);
    let cold = post(&gw, &a_token, "x.y", b"secret").await;
    eventually(Duration::from_secs(10), "dead-lettered", || async {
        sink.count("/fail") == 1
    })
    .await;
    wait_cold(&gw, &db, std::slice::from_ref(&cold)).await;
    let hot = post(&gw, &a_token, "x.y", b"secret2").await;

    for id in [&cold, &hot] {
        let r = get(&gw, &b_token, &format!("/v1/events/{id}")).await;
        assert_eq!(r.status, 404, "{}", r.text());
    }
    let r = get(&gw, &b_token, "/v1/events").await;
    assert_eq!(r.json()["data"], json!([]));
    let r = get(&gw, &b_token, &format!("/v1/events?target_id={t}")).await;
    assert_eq!(r.json()["data"], json!([]));
    let r = get(&gw, &b_token, "/v1/dead-letters").await;
    assert_eq!(r.json()["data"], json!([]));
    let r = support::http::Request::new("POST", &format!("/v1/targets/{t}/recover"))
        .bearer(&b_token)
        .json(&json!({"since": since}))
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.text());
    let r = support::http::Request::new("POST", "/v1/dead-letters/replay")
        .bearer(&b_token)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.json()["replayed"], 0);
    // A still sees both.
    let r = get(&gw, &a_token, "/v1/events").await;
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_history_reads_redis_then_the_log_store() {
    let (gw, db) = gateway("history").await;
    let (tenant, token) = gw.tenant("acme").await;
    let (_other, other_token) = gw.tenant("other").await;
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": "billing"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let m = r.json();
    let (id, url_token) = (m["id"].as_str().unwrap(), m["token"].as_str().unwrap());
    for status in ["up", "down", "up", "down", "up"] {
        let r = support::http::Request::new("POST", &format!("/v1/monitors/{url_token}"))
            .json(&json!({"status": status, "message": status}))
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eventually(Duration::from_secs(20), "history shipped", || async {
        rows(&db, "SELECT count(*) FROM checks").await == 5
            && rows(
                &db,
                "SELECT count(*) FROM incidents WHERE record LIKE '%resolved_at%'",
            )
            .await
                == 2
    })
    .await;
    // Redis keeps 2 checks and 1 incident; the rest come from the log store, newest first.
    let v = get(&gw, &token, &format!("/v1/monitors/{id}/checks?limit=10"))
        .await
        .json();
    let statuses: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["up", "down", "up", "down", "up"]);
    let ats: Vec<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["at"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ats.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ats, sorted);
    // Paged by time.
    let page = get(
        &gw,
        &token,
        &format!("/v1/monitors/{id}/checks?limit=2&before={}", ats[1]),
    )
    .await
    .json();
    let paged: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["at"].as_str().unwrap())
        .collect();
    assert_eq!(paged, [ats[2].as_str(), ats[3].as_str()]);
    let v = get(
        &gw,
        &token,
        &format!("/v1/monitors/{id}/incidents?limit=10"),
    )
    .await
    .json();
    let incidents = v["data"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "{v}");
    assert!(
        incidents.iter().all(|i| i["resolved_at"].is_string()),
        "newest state shipped"
    );
    // Another tenant reads none of it.
    let r = get(
        &gw,
        &other_token,
        &format!("/v1/monitors/{id}/checks?limit=10"),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = get(
        &gw,
        &token,
        &format!("/v1/monitors/{id}/checks?before=soon"),
    )
    .await;
    assert_eq!(r.status, 400);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_test_reads_the_events_only_the_log_store_still_holds() {
    let (gw, db) = gateway("filter-test-cold").await;
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("acme").await;
    let t = target(
        &gw,
        &tenant,
        json!({"url": sink.url("/ok"), "events": ["order.*"]}),
    )
    .await;
    let mut cold = Vec::new();
    for i in 0..6 {
        cold.push(
            post(
                &gw,
                &token,
                "order.paid",
                format!(r#"{{"n":{i}}}"#).as_bytes(),
            )
            .await,
        );
    }
    eventually(Duration::from_secs(10), "delivered", || async {
        sink.count("/ok") == 6
    })
    .await;
    wait_cold(&gw, &db, &cold).await;
    // Newer events, still in Redis.
    let mut hot = Vec::new();
    for i in 6..9 {
        hot.push(
            post(
                &gw,
                &token,
                "order.paid",
                format!(r#"{{"n":{i}}}"#).as_bytes(),
            )
            .await,
        );
    }
    let r = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/targets/{t}/filter-test"),
            Some(json!({"filter": {"body.n": {"$in": [1, 4, 7]}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["evaluated"], 9, "both tiers: {v}");
    assert_eq!(v["matched"], 3, "{v}");
    assert_eq!(
        v["sample"],
        json!([hot[1], cold[4], cold[1]]),
        "newest first across the tiers"
    );
    assert_eq!(v["errors"], json!([]));
    gw.stop().await.unwrap();
}
