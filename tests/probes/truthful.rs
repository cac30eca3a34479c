//! Pipelines that must not stop and answers that must be true, against the binary with real
//! Redis and PostgreSQL: the probes of issue 19 that found an outage any receiver could cause
//! (a NUL byte in a response), readiness saying "unreachable" of a PostgreSQL that was up, a
//! 503 saying "not accepted" of events that landed, and retries that gave up inside an outage
//! shorter than their policy.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::support::http::{Request, Response};
use super::support::postgres::{PgServer, connect};
use super::support::process::Served;
use super::support::sink::{Reply, Sink};
use super::support::{ADMIN_TOKEN, RedisServer, eventually};

async fn admin(s: &Served, method: &str, path: &str, body: Option<Json>) -> Response {
    let mut r = Request::new(method, path).bearer(ADMIN_TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send_plain(s.addrs.admin).await.unwrap()
}

async fn tenant_and_target(
    s: &Served,
    name: &str,
    url: &str,
    retry: Option<Json>,
) -> (String, String) {
    let r = admin(s, "POST", "/admin/tenants", Some(json!({"name": name}))).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (id, token) = (
        r.json()["id"].as_str().unwrap().to_owned(),
        r.json()["token"].as_str().unwrap().to_owned(),
    );
    let mut target = json!({"url": url, "events": ["*"]});
    if let Some(retry) = retry {
        target["retry"] = retry;
    }
    let r = admin(
        s,
        "POST",
        &format!("/admin/tenants/{id}/targets"),
        Some(target),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    (id, token)
}

async fn post(s: &Served, token: &str, event_type: &str, body: &[u8]) -> Response {
    Request::new("POST", &format!("/v1/events/{event_type}"))
        .bearer(token)
        .body(body.to_vec())
        .send_plain(s.addrs.plain)
        .await
        .unwrap()
}

async fn count(db: &str, sql: &str) -> i64 {
    connect(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

async fn readyz(s: &Served) -> Json {
    Request::get("/readyz")
        .send_plain(s.addrs.admin)
        .await
        .unwrap()
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_nul_and_a_refused_row_never_stop_the_log_store() {
    let db = PgServer::shared().database("probe_nul").await;
    let extra = format!(
        "[dispatch]\nretry = {{ initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 200, max_attempts = 2 }}\nretry_poll_ms = 20\n\n[log_store]\nurl = \"{db}\"\n"
    );
    let s = Served::on(
        &RedisServer::shared().url(),
        "probe-nul",
        &extra,
        &[("ESTAFETA_QUEUE__HOT_WINDOW_S", "2")],
    )
    .await;
    connect(&db)
        .await
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (event_type <> 'poison.pill')",
        )
        .await
        .unwrap();
    let sink = Sink::start().await;
    // The attacker's receiver: `ok`, a NUL, then every byte.
    let mut answer = b"ok\0".to_vec();
    answer.extend(0u8..=255);
    sink.plan("/nul", vec![], Reply::Body(200, Bytes::from(answer)));
    // Forty tenants over four shards: the attacker's shares its shard with others.
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(
            tenant_and_target(&s, &format!("t{i}"), &sink.url("/nul"), None)
                .await
                .1,
        );
    }
    let mut ids = Vec::new();
    let body: Vec<u8> = (0u8..=255).collect();
    for token in &tokens {
        let r = post(&s, token, "order.paid", &body).await;
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let poison = post(&s, &tokens[0], "poison.pill", b"{}").await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    let shipped = format!(
        "SELECT count(*) FROM events WHERE id IN ({})",
        list.join(",")
    );
    eventually(
        Duration::from_secs(40),
        "every tenant's events in PostgreSQL",
        || async { count(&db, &shipped).await == ids.len() as i64 },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the refused event quarantined",
        || async {
            count(
                &db,
                &format!("SELECT count(*) FROM quarantine WHERE record_id = '{poison}'"),
            )
            .await
                == 1
        },
    )
    .await;
    let c = connect(&db).await;
    let row = c
        .query_one(
            "SELECT response FROM attempts WHERE event_id = $1",
            &[&ids[5]],
        )
        .await
        .unwrap();
    let response: String = row.get(0);
    assert!(response.starts_with("ok\u{FFFD}"), "{response:?}");
    let stored: Vec<u8> = c
        .query_one("SELECT body FROM events WHERE id = $1", &[&ids[5]])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, body, "bodies are byte-exact");
    let ready = readyz(&s).await;
    assert_eq!(ready["log_store"], "ok", "{ready}");
    // Readiness says what is true when PostgreSQL answers and refuses: not "unreachable".
    c.batch_execute("ALTER TABLE attempts RENAME TO attempts_away")
        .await
        .unwrap();
    let id = post(&s, &tokens[1], "a", b"{}").await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually(
        Duration::from_secs(20),
        "readiness says refusing",
        || async { readyz(&s).await["log_store"] == "refusing" },
    )
    .await;
    let ready = readyz(&s).await;
    let error = ready["log_store_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("PostgreSQL refuses the batch") && error.contains("attempts"),
        "{ready}"
    );
    c.batch_execute("ALTER TABLE attempts_away RENAME TO attempts")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "shipped once the table is back",
        || async {
            count(
                &db,
                &format!("SELECT count(*) FROM events WHERE id = '{id}'"),
            )
            .await
                == 1
        },
    )
    .await;
    let metrics = Request::get("/metrics")
        .send_plain(s.addrs.admin)
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains(r#"estafeta_quarantined_total{consumer="log_store_events"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_during_a_stall_says_the_event_may_have_landed_and_it_did() {
    let redis = RedisServer::start(false);
    let s = Served::on(&redis.url(), "probe-stall", "", &[]).await;
    let r = admin(&s, "POST", "/admin/tenants", Some(json!({"name": "acme"}))).await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(post(&s, &token, "warm", b"{}").await.status, 202);
    // Connected before the stall: a connection made during it waits for its end.
    let probe = redis.client().await;
    let sleeper = redis.client().await;
    let stall = tokio::spawn(async move {
        use fred::prelude::*;
        let _: Result<fred::types::Value, _> = sleeper
            .custom(
                fred::cmd!("DEBUG"),
                vec!["SLEEP".to_owned(), "2".to_owned()],
            )
            .await;
    });
    crate::support::until_asleep(&probe).await;
    let send = || {
        Request::new("POST", "/v1/events/order.paid")
            .bearer(&token)
            .header("idempotency-key", "order-7")
            .body(b"{}".to_vec())
    };
    let first = send().send_plain(s.addrs.plain).await.unwrap();
    assert_eq!(first.status, 503, "{}", first.text());
    let message = first.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("may have been accepted"), "{message}");
    assert!(
        message.contains("same Idempotency-Key is safe"),
        "{message}"
    );
    stall.await.unwrap();
    let again = send().send_plain(s.addrs.plain).await.unwrap();
    assert_eq!(again.status, 202, "{}", again.text());
    assert_eq!(
        again.json()["duplicate"],
        true,
        "it had landed: {}",
        again.text()
    );
    // The API description says the same.
    let doc = Request::get("/openapi.json")
        .send_plain(s.addrs.admin)
        .await
        .unwrap()
        .json();
    let described = doc["paths"]["/v1/events/{event}"]["post"]["responses"]["503"]["description"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(described.contains("may have been accepted"), "{described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_shorter_than_the_retry_policy_dead_letters_nothing() {
    let s = Served::on(
        &RedisServer::shared().url(),
        "probe-outage",
        "[dispatch]\nretry_poll_ms = 50\nrequest_timeout_ms = 2000\nreclaim_idle_ms = 10000\n",
        &[],
    )
    .await;
    let sink = Sink::start().await;
    // The issue's policy: 2 s × 2 up to 16 s, 5 attempts, a nominal span of 30 s.
    let policy = json!({"initial_delay_ms": 2000, "multiplier": 2.0, "max_delay_ms": 16000, "max_attempts": 5});
    let (tenant, token) = tenant_and_target(&s, "acme", &sink.url("/down"), Some(policy)).await;
    sink.plan("/down", vec![], Reply::Status(503));
    // A 20 s outage, with events arriving all through it (about 10 a second).
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        let r = post(&s, &token, "order.paid", b"{}").await;
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.plan("/down", vec![], Reply::Status(200));
    assert!(ids.len() >= 150, "{} events", ids.len());
    eventually(Duration::from_secs(60), "every event delivered", || async {
        let delivered: std::collections::HashSet<String> = sink
            .received("/down")
            .iter()
            .filter_map(|r| r.header("webhook-id"))
            .collect();
        ids.iter().all(|id| delivered.contains(id))
    })
    .await;
    let dead = admin(
        &s,
        "GET",
        &format!("/admin/tenants/{tenant}/dead-letters"),
        None,
    )
    .await;
    assert_eq!(
        dead.json()["data"].as_array().map(Vec::len),
        Some(0),
        "{}",
        dead.text()
    );
    // The retries of events that failed together did not come back together.
    let attempts = sink.received("/down");
    let mut seconds: std::collections::BTreeMap<u64, usize> = Default::default();
    for a in &attempts {
        *seconds
            .entry(a.at.duration_since(attempts[0].at).as_secs())
            .or_default() += 1;
    }
    let busiest = seconds.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= attempts.len() / 4,
        "{busiest} of {} attempts in one second: {seconds:?}",
        attempts.len()
    );
}
