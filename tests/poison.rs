//! One bad record never stops a pipeline. Every consumer of stored data is fed a record it
//! cannot process, and each must set it aside visibly (a quarantine, a metric) and go on with
//! the others: the log shipper (a row PostgreSQL refuses, and every byte 0x00–0xFF in every
//! column a sender or a receiver controls), the stream reader (an entry that cannot be
//! decoded), the outcome recorder and the monitor checker (a record of the wrong type under
//! their scripts), and the retry poller (a malformed member, a record of the wrong type); and
//! a key no record owns going bad sets nothing aside. The same through the binary, with a
//! receiver answering NUL and readiness while PostgreSQL refuses: `tests/probes/truthful.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use estafeta::log_store::LogStore;
use estafeta::model::{EventId, TargetId, TenantId};
use estafeta::redis::keyspace::{Keyspace, shard_of};
use estafeta::store::deliveries::{AttemptRecord, DeliveryState, LoggedEvent, State};
use estafeta::store::quarantine;
use fred::prelude::*;
use serde_json::{Value as Json, json};
use support::now_ms;
use support::postgres::{PgServer, connect};
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

/// Every byte, as the text a sender or receiver can put in a string: U+0000 to U+00FF.
fn every_char() -> String {
    (0u8..=255).map(char::from).collect()
}

/// Every byte, as raw bytes.
fn every_byte() -> Vec<u8> {
    (0u8..=255).collect()
}

/// What a text column holds after PostgreSQL took `text`: NUL shown as U+FFFD.
fn stored_form(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn logged(tenant: &TenantId, event_type: &str) -> LoggedEvent {
    let target = TargetId::generate();
    let at = now_ms();
    LoggedEvent {
        tenant: tenant.clone(),
        id: EventId::generate(),
        received_at_ms: at,
        event_type: event_type.into(),
        content_type: Some("text/plain".into()),
        body: Bytes::from_static(b"{}"),
        deliveries: vec![(
            target.clone(),
            DeliveryState {
                state: State::Succeeded,
                attempts: 1,
                last_status: Some(200),
                last_error: None,
                next_retry_at_ms: None,
                updated_at_ms: at + 5,
                deferrals: 0,
            },
        )],
        attempts: vec![AttemptRecord {
            target_id: target,
            attempt: 1,
            at_ms: at + 3,
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

async fn text_of(db: &str, sql: &str) -> String {
    let c = connect(db).await;
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn count(db: &str, sql: &str) -> i64 {
    let c = connect(db).await;
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_text_column_takes_every_byte_and_bodies_stay_byte_exact() {
    let db = PgServer::shared().database("every_byte").await;
    let log = LogStore::open(&db, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    let hostile = every_char();
    let tenant = TenantId::generate();
    // One event per column, only that column hostile: each must be stored, none quarantined.
    type Edit = fn(&mut LoggedEvent, &str);
    let columns: [(&str, Edit, &str); 5] = [
        (
            "events.event_type",
            |e, t| e.event_type = t.into(),
            "SELECT event_type FROM events WHERE id = '{id}'",
        ),
        (
            "events.content_type",
            |e, t| e.content_type = Some(t.into()),
            "SELECT content_type FROM events WHERE id = '{id}'",
        ),
        (
            "deliveries.last_error",
            |e, t| e.deliveries[0].1.last_error = Some(t.into()),
            "SELECT last_error FROM deliveries WHERE event_id = '{id}'",
        ),
        (
            "attempts.error",
            |e, t| e.attempts[0].error = Some(t.into()),
            "SELECT error FROM attempts WHERE event_id = '{id}'",
        ),
        (
            "attempts.response",
            |e, t| e.attempts[0].response = Some(t.into()),
            "SELECT response FROM attempts WHERE event_id = '{id}'",
        ),
    ];
    for (column, edit, query) in columns {
        let mut event = logged(&tenant, "a.b");
        event.body = Bytes::from(every_byte());
        edit(&mut event, &hostile);
        let stored = log.ship(std::slice::from_ref(&event)).await.unwrap();
        assert_eq!(stored.quarantined, 0, "{column}: {:?}", stored.refusal);
        assert_eq!(stored.new_events, 1, "{column}");
        let got = text_of(&db, &query.replace("{id}", event.id.as_str())).await;
        assert_eq!(
            got,
            stored_form(&hostile),
            "{column} holds every character but NUL as sent"
        );
        let c = connect(&db).await;
        let body: Vec<u8> = c
            .query_one(
                "SELECT body FROM events WHERE id = $1",
                &[&event.id.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(body, every_byte(), "{column}: the body is byte-exact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_history_column_takes_every_byte() {
    use estafeta::log_store::write::{HistoryKind, HistoryRecord};
    let db = PgServer::shared().database("every_byte_history").await;
    let log = LogStore::open(&db, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    let hostile = every_char();
    let record = |kind, seq: &str, incident: Option<&str>| HistoryRecord {
        seq: seq.into(),
        kind,
        tenant: TenantId::generate().to_string(),
        subject: hostile.clone(),
        record: hostile.clone(),
        at_ms: now_ms(),
        incident_id: incident.map(str::to_owned),
    };
    let batch = [
        record(HistoryKind::Check, "00000000000001-0", None),
        record(HistoryKind::Incident, "00000000000002-0", Some("inc_1")),
    ];
    let stored = log.ship_history(&batch).await.unwrap();
    assert_eq!(stored.quarantined, 0, "{:?}", stored.refusal);
    for table in ["checks", "incidents"] {
        let subject = text_of(&db, &format!("SELECT subject FROM {table}")).await;
        let kept = text_of(&db, &format!("SELECT record FROM {table}")).await;
        assert_eq!(subject, stored_form(&hostile), "{table}.subject");
        assert_eq!(kept, stored_form(&hostile), "{table}.record");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_postgres_refuses_is_quarantined_and_the_rest_of_its_batch_is_stored() {
    let db = PgServer::shared().database("refused_row").await;
    let log = LogStore::open(&db, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    // Something PostgreSQL refuses for one row's data, whatever sanitising does.
    connect(&db)
        .await
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (event_type <> 'poison.pill')",
        )
        .await
        .unwrap();
    let tenant = TenantId::generate();
    let mut batch: Vec<LoggedEvent> = (0..300).map(|_| logged(&tenant, "order.paid")).collect();
    for i in [0, 151, 299] {
        batch[i].event_type = "poison.pill".into();
        batch[i].body = Bytes::from(every_byte());
    }
    let stored = log.ship(&batch).await.unwrap();
    assert_eq!(stored.new_events, 297);
    assert_eq!(stored.quarantined, 3);
    let refusal = stored.refusal.unwrap();
    assert!(refusal.contains("no_poison"), "{refusal}");
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 297);
    assert_eq!(count(&db, "SELECT count(*) FROM attempts").await, 297);
    // The refused events are kept whole, with PostgreSQL's reason.
    let c = connect(&db).await;
    let rows = c
        .query(
            "SELECT record_id, reason, record FROM quarantine WHERE kind = 'event' ORDER BY record_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        let id: String = row.get(0);
        let reason: String = row.get(1);
        let record: Vec<u8> = row.get(2);
        assert!(reason.contains("check constraint"), "{reason}");
        let json: Json = serde_json::from_slice(&record).unwrap();
        assert_eq!(json["id"], id.as_str());
        assert_eq!(json["event_type"], "poison.pill");
        let body = base64::engine::general_purpose::STANDARD
            .decode(json["body_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(body, every_byte());
    }
    // Shipped again (a shipper that crashed before marking the batch), stored once each.
    let again = log.ship(&batch).await.unwrap();
    assert_eq!((again.new_events, again.quarantined), (0, 3));
    assert_eq!(count(&db, "SELECT count(*) FROM events").await, 297);
    assert_eq!(count(&db, "SELECT count(*) FROM quarantine").await, 3);
}

/// A gateway without a log store, with a fast checker and fast retries.
async fn gateway(name: &str) -> Gateway {
    Gateway::start_with(
        &RedisServer::shared().url(),
        &unique_prefix(name),
        r#"
[monitors]
check_every_ms = 100

[dispatch]
request_timeout_ms = 2000
retry_poll_ms = 20
retry = { initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 200, max_attempts = 3 }
"#,
    )
    .await
}

/// The value of `estafeta_quarantined_total{consumer}` in a scrape.
fn counted(metrics: &str, consumer: &str) -> u64 {
    let name = format!("estafeta_quarantined_total{{consumer=\"{consumer}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits until the dispatch group of `stream` has no entry pending: the pipeline moved on.
async fn nothing_pending(redis: &Client, stream: &str) {
    eventually(Duration::from_secs(10), "no entry left pending", || async {
        let pending: Value = redis
            .xpending(stream, "dispatch", ())
            .await
            .unwrap_or(Value::Null);
        matches!(pending, Value::Array(ref a) if a.first().and_then(Value::as_i64) == Some(0))
    })
    .await;
}

async fn quarantined(redis: &Client, prefix: &str, consumer: &str) -> Vec<quarantine::Quarantined> {
    let keys = Keyspace::new(prefix);
    let mut out = Vec::new();
    for shard in 0..4 {
        out.extend(
            quarantine::newest(redis, &keys, shard, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|q| q.consumer == consumer),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_reader_sets_an_entry_it_cannot_decode_aside_and_delivers_the_rest() {
    let gw = gateway("poison-stream").await;
    let redis = RedisServer::shared().client().await;
    let (tenant, token) = gw.tenant("acme").await;
    let sink = Sink::start().await;
    gw.create_target(&tenant, json!({"url": sink.url("/in"), "events": ["*"]}))
        .await;
    let shard = shard_of(&TenantId::parse(&tenant).unwrap(), 4);
    let stream = gw.stream(shard);
    // An entry of a format this version does not know, and one whose second event is good
    // but whose first is malformed: written behind the gateway's back, as a bug or an
    // operator could.
    let good = EventId::generate();
    let _: String = redis
        .xadd(
            &stream,
            false,
            None,
            "*",
            vec![("v", "9"), ("whatever", "x")],
        )
        .await
        .unwrap();
    let _: String = redis
        .xadd(
            &stream,
            false,
            None,
            "*",
            vec![
                ("v", "1".as_bytes()),
                ("id", b"not an id"),
                ("tenant", tenant.as_bytes()),
                ("type", b"a"),
                ("ct", b""),
                ("body", b"\0\xff"),
                ("id", good.as_str().as_bytes()),
                ("tenant", tenant.as_bytes()),
                ("type", b"a"),
                ("ct", b""),
                ("body", b"good"),
            ],
        )
        .await
        .unwrap();
    let after = gw.post_ok(&token, "a", b"after").await;
    eventually(
        Duration::from_secs(10),
        "the good events delivered",
        || async {
            let got = sink.received("/in");
            got.iter()
                .any(|r| r.header("webhook-id").as_deref() == Some(good.as_str()))
                && got
                    .iter()
                    .any(|r| r.header("webhook-id").as_deref() == Some(after.as_str()))
        },
    )
    .await;
    let aside = quarantined(&redis, &gw.prefix, "stream_reader").await;
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(
        aside.iter().any(|q| q.reason.contains("format \"9\"")),
        "{aside:?}"
    );
    let bad = aside
        .iter()
        .find(|q| q.reason.contains("malformed: id"))
        .unwrap();
    assert!(
        bad.fields
            .iter()
            .any(|(k, v)| k.as_ref() == b"body" && v.as_ref() == b"\0\xff"),
        "the bad event's fields are kept byte for byte: {bad:?}"
    );
    assert!(
        !bad.fields.iter().any(|(_, v)| v.as_ref() == b"good"),
        "the good event is not in the quarantine"
    );
    // Nothing is left pending: the pipeline moved on.
    nothing_pending(&redis, &stream).await;
    let metrics = gw
        .metrics_showing(r#"estafeta_quarantined_total{consumer="stream_reader"}"#)
        .await;
    assert!(counted(&metrics, "stream_reader") >= 2, "{metrics}");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_sets_an_outcome_aside_that_its_script_refuses_and_records_the_others() {
    let gw = gateway("poison-recorder").await;
    let redis = RedisServer::shared().client().await;
    let (tenant, token) = gw.tenant("acme").await;
    let sink = Sink::start().await;
    // Slow answers: every delivery is in flight when the record is corrupted, and they finish
    // together, so their outcomes share batches.
    sink.plan(
        "/slow",
        vec![],
        Reply::Slow(Duration::from_millis(800), 200),
    );
    gw.create_target(&tenant, json!({"url": sink.url("/slow"), "events": ["*"]}))
        .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(gw.post_ok(&token, "a", format!("{i}").as_bytes()).await);
    }
    let shard = shard_of(&TenantId::parse(&tenant).unwrap(), 4);
    let keys = Keyspace::new(&gw.prefix);
    let victim = EventId::parse(&ids[7]).unwrap();
    let record = keys.event_record(shard, &victim);
    eventually(
        Duration::from_secs(5),
        "the victim's record exists",
        || async { redis.exists::<i64, _>(&record).await.unwrap() == 1 },
    )
    .await;
    // The record becomes a string: the recording script's HSET fails with WRONGTYPE.
    let _: () = redis.del(&record).await.unwrap();
    let _: () = redis
        .set(&record, "corrupt", None, None, false)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "the other outcomes recorded",
        || async {
            let mut ok = 0;
            for id in ids.iter().filter(|i| **i != ids[7]) {
                let r = gw.get_as(&token, &format!("/v1/events/{id}")).await;
                if r.status == 200 && r.json()["deliveries"][0]["state"] == "succeeded" {
                    ok += 1;
                }
            }
            ok == 19
        },
    )
    .await;
    let aside = quarantined(&redis, &gw.prefix, "recorder").await;
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].id.starts_with(victim.as_str()), "{aside:?}");
    assert!(aside[0].reason.contains("WRONGTYPE"), "{aside:?}");
    // Every entry is acknowledged: the victim's outcome counts as recorded in the quarantine.
    let stream = keys.stream(shard);
    nothing_pending(&redis, &stream).await;
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_sets_a_monitor_aside_that_its_script_refuses_and_times_out_the_others() {
    let gw = gateway("poison-checker").await;
    let redis = RedisServer::shared().client().await;
    let (tenant, _) = gw.tenant("acme").await;
    let mut monitors = Vec::new();
    for i in 0..3 {
        let r = gw
            .admin(
                "POST",
                &format!("/admin/tenants/{tenant}/monitors"),
                Some(json!({"name": format!("m{i}"), "heartbeat_interval_s": 1, "grace_s": 0})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        monitors.push(r.json());
    }
    for m in &monitors {
        let token = m["token"].as_str().unwrap();
        let r = support::http::Request::get(&format!("/v1/monitors/{token}/heartbeat"))
            .send_plain(gw.addrs.plain)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let shard = shard_of(&TenantId::parse(&tenant).unwrap(), 4);
    let keys = Keyspace::new(&gw.prefix);
    let victim = monitors[1]["id"].as_str().unwrap().to_owned();
    let watch = keys.watch(shard, &victim);
    let _: () = redis.del(&watch).await.unwrap();
    let _: () = redis
        .set(&watch, "corrupt", None, None, false)
        .await
        .unwrap();
    for m in [&monitors[0], &monitors[2]] {
        let id = m["id"].as_str().unwrap();
        eventually(
            Duration::from_secs(10),
            "the healthy monitors time out",
            || async {
                let r = gw
                    .admin(
                        "GET",
                        &format!("/admin/tenants/{tenant}/monitors/{id}"),
                        None,
                    )
                    .await;
                r.json()["status"] == "down"
            },
        )
        .await;
    }
    let aside = quarantined(&redis, &gw.prefix, "checker").await;
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(aside[0].id, victim);
    let due: Option<f64> = redis.zscore(keys.due(shard), &victim).await.unwrap();
    assert_eq!(due, None, "the monitor at fault is off the deadline set");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_poller_sets_malformed_and_corrupt_members_aside_and_runs_the_others() {
    let gw = gateway("poison-retries").await;
    let redis = RedisServer::shared().client().await;
    let (tenant, token) = gw.tenant("acme").await;
    let sink = Sink::start().await;
    sink.plan("/flaky", vec![Reply::Status(503)], Reply::Status(200));
    gw.create_target(&tenant, json!({"url": sink.url("/flaky"), "events": ["*"]}))
        .await;
    let shard = shard_of(&TenantId::parse(&tenant).unwrap(), 4);
    let keys = Keyspace::new(&gw.prefix);
    let retries = keys.retries(shard);
    // A member that is no `<event>:<target>`, and one whose record is of the wrong type, both
    // due now.
    let corrupt = EventId::generate();
    let _: () = redis
        .set(
            keys.event_record(shard, &corrupt),
            "corrupt",
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let members = vec![
        (1.0, "no colon here".to_owned()),
        (1.0, format!("{corrupt}:{}", TargetId::generate())),
    ];
    let _: i64 = redis
        .zadd(&retries, None, None, false, false, members)
        .await
        .unwrap();
    let id = gw.post_ok(&token, "a", b"{}").await;
    eventually(
        Duration::from_secs(10),
        "the real retry delivered",
        || async {
            let r = gw.get_as(&token, &format!("/v1/events/{id}")).await;
            r.json()["deliveries"][0]["state"] == "succeeded"
        },
    )
    .await;
    let aside = quarantined(&redis, &gw.prefix, "retries").await;
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(aside.iter().any(|q| q.id == "no colon here"));
    assert!(
        aside.iter().any(|q| q.reason.contains("WRONGTYPE")),
        "{aside:?}"
    );
    let left: i64 = redis.zcard(&retries).await.unwrap();
    assert_eq!(left, 0, "both are off the schedule");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_whole_shard_shares_going_bad_sets_nothing_aside() {
    support::logs::capture();
    let gw = gateway("poison-shared").await;
    let redis = RedisServer::shared().client().await;
    let (tenant, token) = gw.tenant("acme").await;
    let sink = Sink::start().await;
    sink.plan(
        "/slow",
        vec![],
        Reply::Slow(Duration::from_millis(500), 200),
    );
    gw.create_target(&tenant, json!({"url": sink.url("/slow"), "events": ["*"]}))
        .await;
    let m = gw
        .admin(
            "POST",
            &format!("/admin/tenants/{tenant}/monitors"),
            Some(json!({"name": "m", "heartbeat_interval_s": 1, "grace_s": 0})),
        )
        .await
        .json();
    let beat = format!("/v1/monitors/{}/heartbeat", m["token"].as_str().unwrap());
    let r = support::http::Request::get(&beat)
        .send_plain(gw.addrs.plain)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(gw.post_ok(&token, "a", format!("{i}").as_bytes()).await);
    }
    // While the deliveries are in flight, two keys every outcome and every monitor of the
    // shard share become strings: the retry schedule and the status counts.
    let shard = shard_of(&TenantId::parse(&tenant).unwrap(), 4);
    let keys = Keyspace::new(&gw.prefix);
    let counts: std::collections::HashMap<String, String> =
        redis.hgetall(keys.watch_counts(shard)).await.unwrap();
    for key in [keys.retries(shard), keys.watch_counts(shard)] {
        let _: () = redis.del(&key).await.unwrap();
        let _: () = redis.set(&key, "corrupt", None, None, false).await.unwrap();
    }
    // The recorder has met the corrupt schedule with every outcome, twice (it logs each
    // failure and retries), and a checker pass past the monitor's deadline has met the
    // corrupt counts.
    eventually(
        Duration::from_secs(15),
        "every outcome's recording failed twice",
        || async {
            ids.iter()
                .all(|id| support::logs::lines_with(&[id, "cannot record"]) >= 2)
        },
    )
    .await;
    gw.advance(Duration::from_secs(2));
    gw.check_monitors_now().await;
    for consumer in ["recorder", "checker"] {
        let aside = quarantined(&redis, &gw.prefix, consumer).await;
        assert!(
            aside.is_empty(),
            "{consumer} set aside what is no record's fault: {aside:?}"
        );
    }
    // Repaired, everything goes through: nothing was dropped meanwhile.
    let _: () = redis.del(keys.retries(shard)).await.unwrap();
    let _: () = redis.del(keys.watch_counts(shard)).await.unwrap();
    if !counts.is_empty() {
        let _: () = redis.hset(keys.watch_counts(shard), counts).await.unwrap();
    }
    eventually(
        Duration::from_secs(15),
        "every outcome recorded",
        || async {
            let mut ok = 0;
            for id in &ids {
                let r = gw.get_as(&token, &format!("/v1/events/{id}")).await;
                if r.json()["deliveries"][0]["state"] == "succeeded" {
                    ok += 1;
                }
            }
            ok == ids.len()
        },
    )
    .await;
    let id = m["id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "the monitor timed out", || async {
        gw.admin(
            "GET",
            &format!("/admin/tenants/{tenant}/monitors/{id}"),
            None,
        )
        .await
        .json()["status"]
            == "down"
    })
    .await;
    gw.stop().await.unwrap();
}
