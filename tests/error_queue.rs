//! The error queue at the size operators meet it: thousands of entries, paged by key newest
//! first with their count, filtered by target, type and time, replayed all-matching by the
//! server, and one event's entries found and resent however deep in the queue they lie.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};
use support::sink::{Reply, Sink};
use support::{Gateway, RedisServer, eventually, unique_prefix};

const ONE_ATTEMPT: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
"#;

/// Orders to target A and users to target B, each dead-lettered after its one attempt.
const ORDERS: usize = 2_100;
const USERS: usize = 400;

struct Queue {
    gw: Arc<Gateway>,
    sink: Sink,
    tenant: String,
    a: String,
    b: String,
    /// Event ids in the order they were posted.
    events: Vec<String>,
}

async fn failing_queue(name: &str) -> Queue {
    let gw = Arc::new(
        Gateway::start_with(
            &RedisServer::shared().url(),
            &unique_prefix(name),
            ONE_ATTEMPT,
        )
        .await,
    );
    let sink = Sink::start().await;
    sink.plan("/a", vec![], Reply::Status(500));
    sink.plan("/b", vec![], Reply::Status(502));
    let (tenant, token) = gw.tenant("deep-queue").await;
    let target = |path: &str, events: &str| json!({"url": sink.url(path), "events": [events], "mode": "once"});
    let a = gw.create_target(&tenant, target("/a", "order.*")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = gw.create_target(&tenant, target("/b", "user.*")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut events = Vec::with_capacity(ORDERS + USERS);
    // Posted in waves, each wave at once: the queue's order is the order of failure, and
    // the ids come back in the order asked.
    let kinds: Vec<&str> = (0..ORDERS + USERS)
        .map(|i| {
            if i % 6 == 5 && i / 6 < USERS {
                "user.created"
            } else {
                "order.paid"
            }
        })
        .collect();
    for wave in kinds.chunks(50) {
        let mut posts = tokio::task::JoinSet::new();
        for (i, kind) in wave.iter().enumerate() {
            let (gw, token, kind) = (gw.clone(), token.clone(), kind.to_string());
            posts.spawn(async move {
                let body = format!("{{\"n\":{i},\"bytes\":\"\\u0000\\u00ff\"}}");
                (i, gw.post_ok(&token, &kind, body.as_bytes()).await)
            });
        }
        let mut ids: Vec<(usize, String)> = posts.join_all().await;
        ids.sort();
        events.extend(ids.into_iter().map(|(_, id)| id));
    }
    let q = Queue {
        gw,
        sink,
        tenant,
        a,
        b,
        events,
    };
    eventually(
        Duration::from_secs(120),
        "every event dead-lettered",
        || async { q.list("limit=1").await["total"] == (ORDERS + USERS) as u64 },
    )
    .await;
    q
}

impl Queue {
    async fn list(&self, query: &str) -> Json {
        let r = self
            .gw
            .admin(
                "GET",
                &format!("/admin/tenants/{}/dead-letters?{query}", self.tenant),
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()
    }

    /// Every page of a query, following `next`; each page's `total` checked against `total`.
    async fn walk(&self, query: &str, total: u64) -> Vec<Json> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = match &after {
                Some(a) => format!("{query}&after={a}"),
                None => query.to_owned(),
            };
            let page = self.list(&q).await;
            assert_eq!(page["total"], total, "{q}: the count is on every page");
            all.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => break,
            }
            assert!(all.len() <= 10_000, "paging ends");
        }
        all
    }

    async fn replay(&self, body: Json) -> (u16, Json) {
        let r = self
            .gw
            .admin(
                "POST",
                &format!("/admin/tenants/{}/dead-letters/replay", self.tenant),
                Some(body),
            )
            .await;
        (r.status, r.json())
    }
}

fn ids(entries: &[Json], key: &str) -> Vec<String> {
    entries
        .iter()
        .map(|e| e[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_dead_letters_page_newest_first_filter_count_and_replay_server_side() {
    let q = failing_queue("dlq-paging").await;
    let all = (ORDERS + USERS) as u64;

    // Newest first by default, in pages of at most 1,000, every entry exactly once.
    let newest = q.walk("limit=1000", all).await;
    assert_eq!(newest.len() as u64, all);
    let entry_ids = ids(&newest, "id");
    assert_eq!(
        entry_ids.iter().collect::<HashSet<_>>().len() as u64,
        all,
        "no entry twice across pages"
    );
    assert!(
        entry_ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, and ids are the order of failure"
    );
    let failed: Vec<&str> = newest
        .iter()
        .map(|e| e["failed_at"].as_str().unwrap())
        .collect();
    assert!(
        failed.windows(2).all(|w| w[0] >= w[1]),
        "failure times descend"
    );
    // The last wave's events are on the first page, the first wave's only on the last.
    let first_page: HashSet<String> = ids(&newest[..1000], "event_id").into_iter().collect();
    assert!(first_page.contains(q.events.last().unwrap()));
    assert!(!first_page.contains(&q.events[0]));

    // Oldest first is the same list reversed, and smaller pages agree with it.
    let oldest = q.walk("order=oldest&limit=333", all).await;
    let mut reversed = entry_ids.clone();
    reversed.reverse();
    assert_eq!(ids(&oldest, "id"), reversed);

    // Filters: by target, by a type pattern, both, and by the failure time.
    let by_b = q
        .walk(&format!("target_id={}&limit=150", q.b), USERS as u64)
        .await;
    assert!(by_b.iter().all(|e| e["target_id"] == q.b.as_str()));
    assert_eq!(q.list("event_type=user.*").await["total"], USERS as u64);
    assert_eq!(
        q.list(&format!("event_type=order.paid&target_id={}", q.a))
            .await["total"],
        ORDERS as u64
    );
    assert_eq!(
        q.list(&format!("event_type=user.*&target_id={}", q.a))
            .await["total"],
        0
    );
    let cut = failed[1200];
    let since: Vec<&&str> = failed.iter().filter(|t| **t >= cut).collect();
    let page = q.list(&format!("since={cut}&limit=1000")).await;
    assert_eq!(page["total"], since.len() as u64, "since {cut}");
    let up_to = failed.iter().filter(|t| **t <= cut).count() as u64;
    let until = q.walk(&format!("until={cut}&limit=1000"), up_to).await;
    assert_eq!(until.len() as u64, up_to);
    assert!(
        until
            .iter()
            .all(|e| e["failed_at"].as_str().unwrap() <= cut)
    );

    // Bad filters are the caller's 400, in the contract's shape.
    for bad in [
        "event_type=order.**",
        "since=yesterday",
        "order=sideways",
        "limit=1001",
    ] {
        let r =
            q.gw.admin(
                "GET",
                &format!("/admin/tenants/{}/dead-letters?{bad}", q.tenant),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_query", "{bad}");
    }

    // A range that ends before it starts selects nothing, as a filter does.
    let empty = q
        .list("since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z")
        .await;
    assert_eq!(empty["total"], 0);
    assert_eq!(empty["data"], json!([]));

    // "Replay all matching" is one call that replays every match, not one page of them.
    let before_b = q.sink.count("/b");
    let (status, answer) = q.replay(json!({"event_type": "user.*"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replayed"], USERS as u64);
    eventually(Duration::from_secs(60), "the users sent again", || async {
        q.sink.count("/b") == before_b + USERS
    })
    .await;
    // They failed again, each back in the queue once, under new ids; orders untouched.
    eventually(
        Duration::from_secs(30),
        "users back in the queue",
        || async { q.list("event_type=user.*").await["total"] == USERS as u64 },
    )
    .await;
    let again = q
        .walk(&format!("target_id={}&limit=1000", q.b), USERS as u64)
        .await;
    let old_b: HashSet<String> = ids(&by_b, "id").into_iter().collect();
    assert!(ids(&again, "id").iter().all(|id| !old_b.contains(id)));
    assert_eq!(q.list("limit=1").await["total"], all);
    assert_eq!(q.sink.count("/a"), ORDERS, "no order sent twice");

    // Ids and selecting fields together are ambiguous.
    let (status, answer) = q
        .replay(json!({"ids": [entry_ids[0]], "target_id": q.a}))
        .await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_events_entry_is_found_and_resent_however_deep_in_the_queue() {
    let q = failing_queue("dlq-resend").await;
    // The very first order: past the first 500 entries whichever way the queue is read.
    let first = q.events[0].clone();
    let newest = q.list("limit=1000").await;
    assert!(!ids(newest["data"].as_array().unwrap(), "event_id").contains(&first));
    let before = q.sink.count("/a");
    let (status, answer) = q.replay(json!({"event_id": first, "target_id": q.a})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replayed"], 1, "exactly its own entry");
    eventually(Duration::from_secs(20), "the event sent again", || async {
        q.sink.count("/a") == before + 1
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "back in the queue once",
        || async {
            let mine = q.list(&format!("event_id={first}")).await;
            mine["total"] == 1 && mine["data"][0]["attempts"] == 1
        },
    )
    .await;
    // Another target of the tenant has no entry for it: nothing to resend, said as such.
    let (status, answer) = q.replay(json!({"event_id": first, "target_id": q.b})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["replayed"], 0);
    // Another tenant sees none of it, and cannot replay it.
    let (other, _) = q.gw.tenant("other").await;
    let r =
        q.gw.admin(
            "POST",
            &format!("/admin/tenants/{other}/dead-letters/replay"),
            Some(json!({"event_id": first})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["replayed"], 0);
    let r =
        q.gw.admin("GET", &format!("/admin/tenants/{other}/dead-letters"), None)
            .await;
    assert_eq!(r.json()["total"], 0);
}
