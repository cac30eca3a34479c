//! Each Lua script of `src/redis/scripts/` run on its own against the real Redis of the harness, by
//! the `KEYS` and `ARGV` its header documents: the answers, the keys it leaves behind, and the
//! edge cases its callers rely on (a re-sent append, an idempotency key used twice in one batch,
//! a claim raced by two callers, an overdue subject claimed by two checkers, a replay of an
//! event that expired).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use fred::prelude::*;
use serde_json::{Value as Json, json};
use support::{RedisServer, stream_events, unique_prefix};

use estafeta::queue::entry::LAYOUT;
use estafeta::redis::scripts::{self, Script};

/// Runs `script` with string keys and arguments and returns its decoded answer.
async fn run(redis: &Client, script: &Script, keys: &[&str], args: &[&str]) -> Json {
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    script
        .run(redis, keys, args)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", script.name()))
}

async fn status(redis: &Client, script: &Script, keys: &[&str], args: &[&str]) -> String {
    let answer = run(redis, script, keys, args).await;
    answer["status"].as_str().unwrap_or_default().to_owned()
}

/// Keys of one test, in one hash slot as the scripts require on a cluster.
struct Keys(String);

impl Keys {
    fn new(name: &str) -> Keys {
        Keys(unique_prefix(name))
    }
    fn k(&self, name: &str) -> String {
        format!("{{{}}}:{name}", self.0)
    }
}

async fn redis() -> Client {
    RedisServer::shared().client().await
}

async fn hash(redis: &Client, key: &str) -> HashMap<String, String> {
    redis.hgetall(key).await.unwrap()
}

async fn exists(redis: &Client, key: &str) -> bool {
    let n: u32 = redis.exists(key).await.unwrap();
    n == 1
}

// ---- control plane: tenants and tokens ----

#[tokio::test]
async fn create_tenant_refuses_a_taken_id_or_external_id_and_writes_nothing() {
    let r = redis().await;
    let k = Keys::new("create-tenant");
    let (tenant, tenants, ext, token, tokens) = (
        k.k("tenant:a"),
        k.k("tenants"),
        k.k("ext:x"),
        k.k("token:h1"),
        k.k("tokens:a"),
    );
    let create = |id: &'static str, tenant: String, ext_index: &'static str| {
        let (tenants, ext, token, tokens, r) = (
            tenants.clone(),
            ext.clone(),
            token.clone(),
            tokens.clone(),
            r.clone(),
        );
        async move {
            status(
                &r,
                &scripts::CREATE_TENANT,
                &[&tenant, &tenants, &ext, &token, &tokens],
                &[
                    id, "Acme", "sealed", ext_index, "1", "10", "20", "1000", "api", "tok_1", "h1",
                ],
            )
            .await
        }
    };
    assert_eq!(create("a", tenant.clone(), "x").await, "ok");
    let stored = hash(&r, &tenant).await;
    assert_eq!(stored["name"], "Acme");
    assert_eq!(stored["ext_idx"], "x");
    assert_eq!(stored["rl_ps"], "10");
    assert_eq!(hash(&r, &token).await["tenant"], "a");
    assert_eq!(hash(&r, &tokens).await["tok_1"], "h1");
    let ext_owner: String = r.get(&ext).await.unwrap();
    assert_eq!(ext_owner, "a");

    assert_eq!(create("a", tenant.clone(), "x").await, "exists");
    // Another tenant with the same external id: refused before anything is written.
    let other = k.k("tenant:b");
    assert_eq!(create("b", other.clone(), "x").await, "external_id_taken");
    assert!(!exists(&r, &other).await);
    let ids: Vec<String> = r
        .zrange(&tenants, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(ids, vec!["a".to_owned()]);
}

#[tokio::test]
async fn update_tenant_moves_the_external_id_and_retries_on_a_stale_read() {
    let r = redis().await;
    let k = Keys::new("update-tenant");
    let (tenant, old_ext, new_ext) = (k.k("tenant:a"), k.k("ext:x"), k.k("ext:y"));
    let update = |expected: &'static str, ext: &'static str, ext_key: String| {
        let (r, tenant, old_ext) = (r.clone(), tenant.clone(), old_ext.clone());
        async move {
            status(
                &r,
                &scripts::UPDATE_TENANT,
                &[&tenant, &old_ext, &ext_key],
                &[
                    "a", expected, "1", "Renamed", "1", "0", "1", "5", "6", "1", "sealed-y", ext,
                    "2000",
                ],
            )
            .await
        }
    };
    assert_eq!(update("x", "y", new_ext.clone()).await, "not_found");

    let _: () = r
        .hset(
            &tenant,
            [("name", "Acme"), ("ext_idx", "x"), ("active", "1")],
        )
        .await
        .unwrap();
    let _: () = r.set(&old_ext, "a", None, None, false).await.unwrap();
    // The caller read another external id than the stored one.
    assert_eq!(update("z", "y", new_ext.clone()).await, "retry");
    // The new external id belongs to another tenant.
    let _: () = r.set(&new_ext, "b", None, None, false).await.unwrap();
    assert_eq!(update("x", "y", new_ext.clone()).await, "external_id_taken");
    assert_eq!(hash(&r, &tenant).await["name"], "Acme");

    let _: () = r.del(&new_ext).await.unwrap();
    assert_eq!(update("x", "y", new_ext.clone()).await, "ok");
    let stored = hash(&r, &tenant).await;
    assert_eq!(stored["name"], "Renamed");
    assert_eq!(stored["active"], "0");
    assert_eq!(
        (stored["rl_ps"].as_str(), stored["rl_burst"].as_str()),
        ("5", "6")
    );
    assert_eq!(stored["ext_idx"], "y");
    assert!(
        !exists(&r, &old_ext).await,
        "the old index entry is removed"
    );
    let owner: String = r.get(&new_ext).await.unwrap();
    assert_eq!(owner, "a");
}

#[tokio::test]
async fn delete_tenant_removes_its_tokens_unless_they_changed_since_listed() {
    let r = redis().await;
    let k = Keys::new("delete-tenant");
    let (tenant, tenants, tokens, ext, t1, t2) = (
        k.k("tenant:a"),
        k.k("tenants"),
        k.k("tokens:a"),
        k.k("ext:x"),
        k.k("token:h1"),
        k.k("token:h2"),
    );
    let _: () = r
        .hset(&tenant, [("name", "A"), ("ext_idx", "x")])
        .await
        .unwrap();
    let _: () = r
        .zadd(&tenants, None, None, false, false, (0.0, "a"))
        .await
        .unwrap();
    let _: () = r.set(&ext, "a", None, None, false).await.unwrap();
    let _: () = r
        .hset(&tokens, [("tok_1", "h1"), ("tok_2", "h2")])
        .await
        .unwrap();
    let _: () = r.hset(&t1, ("tenant", "a")).await.unwrap();
    let _: () = r.hset(&t2, ("tenant", "a")).await.unwrap();
    let keys = [&tenant, &tenants, &tokens, &ext, &t1, &t2].map(String::as_str);

    // A token was issued after the caller listed one.
    let listed_one = status(&r, &scripts::DELETE_TENANT, &keys[..5], &["a", "x", "1"]).await;
    assert_eq!(listed_one, "retry");
    assert!(exists(&r, &tenant).await);

    assert_eq!(
        status(&r, &scripts::DELETE_TENANT, &keys, &["a", "x", "2"]).await,
        "ok"
    );
    for key in [&tenant, &tokens, &ext, &t1, &t2] {
        assert!(!exists(&r, key).await, "{key} outlived its tenant");
    }
    let left: u32 = r.zcard(&tenants).await.unwrap();
    assert_eq!(left, 0);
    assert_eq!(
        status(&r, &scripts::DELETE_TENANT, &keys, &["a", "x", "2"]).await,
        "not_found"
    );
}

#[tokio::test]
async fn issue_token_is_idempotent_for_its_tenant_and_bounded() {
    let r = redis().await;
    let k = Keys::new("issue-token");
    let (tenant, tokens) = (k.k("tenant:a"), k.k("tokens:a"));
    let issue =
        |token_key: String, tenant_id: &'static str, id: &'static str, hash: &'static str| {
            let (r, tenant, tokens) = (r.clone(), tenant.clone(), tokens.clone());
            async move {
                status(
                    &r,
                    &scripts::ISSUE_TOKEN,
                    &[&tenant, &token_key, &tokens],
                    &[tenant_id, id, hash, "1000", "2"],
                )
                .await
            }
        };
    assert_eq!(
        issue(k.k("token:h1"), "a", "tok_1", "h1").await,
        "not_found"
    );
    let _: () = r.hset(&tenant, ("name", "A")).await.unwrap();
    assert_eq!(issue(k.k("token:h1"), "a", "tok_1", "h1").await, "ok");
    // A declared token registered again at the next start.
    assert_eq!(issue(k.k("token:h1"), "a", "tok_9", "h1").await, "exists");
    assert_eq!(
        hash(&r, &tokens).await.len(),
        1,
        "no second id for one token"
    );
    // The same secret claimed for another tenant.
    assert_eq!(issue(k.k("token:h1"), "b", "tok_2", "h1").await, "taken");
    assert_eq!(issue(k.k("token:h2"), "a", "tok_2", "h2").await, "ok");
    assert_eq!(issue(k.k("token:h3"), "a", "tok_3", "h3").await, "too_many");
    assert!(!exists(&r, &k.k("token:h3")).await);
}

#[tokio::test]
async fn revoke_token_needs_the_matching_hash() {
    let r = redis().await;
    let k = Keys::new("revoke-token");
    let (tokens, token) = (k.k("tokens:a"), k.k("token:h1"));
    let _: () = r.hset(&tokens, ("tok_1", "h1")).await.unwrap();
    let _: () = r.hset(&token, ("tenant", "a")).await.unwrap();
    let keys = [tokens.as_str(), token.as_str()];
    assert_eq!(
        status(&r, &scripts::REVOKE_TOKEN, &keys, &["tok_1", "other"]).await,
        "not_found"
    );
    assert!(exists(&r, &token).await);
    assert_eq!(
        status(&r, &scripts::REVOKE_TOKEN, &keys, &["tok_1", "h1"]).await,
        "ok"
    );
    assert!(!exists(&r, &token).await);
    assert!(hash(&r, &tokens).await.is_empty());
    assert_eq!(
        status(&r, &scripts::REVOKE_TOKEN, &keys, &["tok_1", "h1"]).await,
        "not_found"
    );
}

#[tokio::test]
async fn publish_invalidation_numbers_each_message() {
    let r = redis().await;
    let subscriber = redis().await;
    let k = Keys::new("invalidation");
    let channel = k.k("channel");
    let mut messages = subscriber.message_rx();
    subscriber.subscribe(&channel).await.unwrap();
    let seq = k.k("seq");
    let first = run(
        &r,
        &scripts::PUBLISH_INVALIDATION,
        &[&seq],
        &[&channel, "t:a"],
    )
    .await;
    let second = run(
        &r,
        &scripts::PUBLISH_INVALIDATION,
        &[&seq],
        &[&channel, "x:b"],
    )
    .await;
    assert_eq!(
        (first["seq"].as_u64(), second["seq"].as_u64()),
        (Some(1), Some(2))
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(5), messages.recv())
            .await
            .expect("no message published")
            .unwrap();
        if m.channel == channel {
            got.push(m.value.as_string().unwrap());
        }
    }
    assert_eq!(got, vec!["1 t:a".to_owned(), "2 x:b".to_owned()]);
}

// ---- documents: targets, sources and monitors ----

#[tokio::test]
async fn save_target_checks_its_tenant_and_version() {
    let r = redis().await;
    let k = Keys::new("save-target");
    let (target, index, tenant) = (k.k("target:t"), k.k("targets:a"), k.k("tenant:a"));
    let save = |doc: &'static str, expected: &'static str| {
        let (r, target, index, tenant) = (r.clone(), target.clone(), index.clone(), tenant.clone());
        async move {
            status(
                &r,
                &scripts::SAVE_TARGET,
                &[&target, &index, &tenant],
                &["t", doc, expected, "a"],
            )
            .await
        }
    };
    assert_eq!(save("{}", "0").await, "no_tenant");
    let _: () = r.hset(&tenant, ("name", "A")).await.unwrap();
    assert_eq!(save(r#"{"v":1}"#, "0").await, "ok");
    assert_eq!(save(r#"{"v":"dup"}"#, "0").await, "exists");
    assert_eq!(save(r#"{"v":2}"#, "1").await, "ok");
    // Made from version 1, which another writer replaced.
    assert_eq!(save(r#"{"v":"stale"}"#, "1").await, "retry");
    let stored = hash(&r, &target).await;
    assert_eq!(
        (stored["doc"].as_str(), stored["ver"].as_str()),
        (r#"{"v":2}"#, "2")
    );
    assert_eq!(stored["tenant"], "a");
    let ids: Vec<String> = r
        .zrange(&index, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(ids, vec!["t".to_owned()]);

    let keys = [target.as_str(), index.as_str()];
    let deleted = run(&r, &scripts::DELETE_TARGET, &keys, &["t"]).await;
    assert_eq!(deleted["deleted"], 1);
    assert!(!exists(&r, &target).await);
    let left: u32 = r.zcard(&index).await.unwrap();
    assert_eq!(left, 0);
    let again = run(&r, &scripts::DELETE_TARGET, &keys, &["t"]).await;
    assert_eq!(again["deleted"], 0);
}

#[tokio::test]
async fn save_tokened_moves_the_token_and_refuses_a_lost_update() {
    let r = redis().await;
    let k = Keys::new("save-tokened");
    let (doc, index, tenant) = (k.k("monitor:m"), k.k("monitors:a"), k.k("tenant:a"));
    let (tok1, tok2) = (k.k("mtoken:h1"), k.k("mtoken:h2"));
    let save = |entry: String, old: String, body: &'static str, expected: &'static str| {
        let (r, doc, index, tenant) = (r.clone(), doc.clone(), index.clone(), tenant.clone());
        async move {
            status(
                &r,
                &scripts::SAVE_TOKENED,
                &[&doc, &entry, &index, &tenant, &old],
                &["m", body, "a", expected],
            )
            .await
        }
    };
    assert_eq!(
        save(tok1.clone(), tok1.clone(), "d1", "").await,
        "no_tenant"
    );
    let _: () = r.hset(&tenant, ("name", "A")).await.unwrap();
    assert_eq!(save(tok1.clone(), tok1.clone(), "d1", "").await, "ok");
    let points: String = r.get(&tok1).await.unwrap();
    assert_eq!(points, "m");
    // A second creation of the same id: a document is there already.
    assert_eq!(save(tok1.clone(), tok1.clone(), "d1b", "").await, "changed");
    // A rotation made from a document another writer replaced.
    assert_eq!(
        save(tok2.clone(), tok1.clone(), "d2", "d0").await,
        "changed"
    );
    assert!(!exists(&r, &tok2).await);
    // The rotation: the old token stops pointing anywhere.
    assert_eq!(save(tok2.clone(), tok1.clone(), "d2", "d1").await, "ok");
    assert!(!exists(&r, &tok1).await);
    let points: String = r.get(&tok2).await.unwrap();
    assert_eq!(points, "m");
    assert_eq!(hash(&r, &doc).await["doc"], "d2");

    let keys = [doc.as_str(), tok2.as_str(), index.as_str()];
    let deleted = run(&r, &scripts::DELETE_TOKENED, &keys, &["m"]).await;
    assert_eq!(deleted["deleted"], 1);
    assert!(!exists(&r, &doc).await && !exists(&r, &tok2).await);
    let left: u32 = r.zcard(&index).await.unwrap();
    assert_eq!(left, 0);
    let again = run(&r, &scripts::DELETE_TOKENED, &keys, &["m"]).await;
    assert_eq!(again["deleted"], 0);
}

// ---- the queue: appends and expansion ----

/// The arguments of one event of `append_batch`; `key_index` is its key's position in KEYS
/// (1 is the stream, so keys start at 2; 0: no key).
fn event<'a>(id: &'a str, key_index: &'a str, fingerprint: &'a str) -> [&'a str; 7] {
    [
        id,
        "ten_a",
        "order.paid",
        "application/json",
        r#"{"n":1}"#,
        key_index,
        fingerprint,
    ]
}

async fn append(redis: &Client, keys: &[&str], events: &[[&str; 7]]) -> Vec<String> {
    let mut args = vec![LAYOUT.as_str(), "60"];
    for e in events {
        args.extend_from_slice(e);
    }
    let answer = run(redis, &scripts::APPEND_BATCH, keys, &args).await;
    strings(&answer["stored"])
}

/// The strings of a JSON array in a script's answer.
fn strings(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn append_batch_writes_one_entry_in_the_layout_the_reader_decodes() {
    let r = redis().await;
    let k = Keys::new("append");
    let stream = k.k("stream");
    let stored = append(
        &r,
        &[&stream],
        &[event("evt_1", "0", ""), event("evt_2", "0", "")],
    )
    .await;
    assert_eq!(stored, vec!["", ""]);
    let len: u64 = r.xlen(&stream).await.unwrap();
    assert_eq!(len, 1, "one entry per batch");
    let events = stream_events(&r, &stream).await;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["evt_1", "evt_2"]);
    assert_eq!(events[0].tenant.as_str(), "ten_a");
    assert_eq!(events[0].event_type.as_str(), "order.paid");
    assert_eq!(
        events[0].content_type.as_deref(),
        Some(&b"application/json"[..])
    );
    assert_eq!(&events[0].body[..], br#"{"n":1}"#);
}

#[tokio::test]
async fn append_batch_counts_a_key_used_twice_in_one_batch_as_seen() {
    let r = redis().await;
    let k = Keys::new("append-key-twice");
    let (stream, key) = (k.k("stream"), k.k("idem:k"));
    let stored = append(
        &r,
        &[&stream, &key],
        &[
            event("evt_1", "2", "fp1"),
            event("evt_2", "2", "fp2"),
            event("evt_3", "0", ""),
        ],
    )
    .await;
    assert_eq!(stored, vec!["", "evt_1 fp1", ""]);
    let ids: Vec<String> = stream_events(&r, &stream)
        .await
        .into_iter()
        .map(|e| e.id.as_str().to_owned())
        .collect();
    assert_eq!(ids, ["evt_1", "evt_3"]);
    let recorded: String = r.get(&key).await.unwrap();
    assert_eq!(recorded, "evt_1 fp1");
    let ttl: i64 = r.ttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 60, "ttl {ttl}");
}

#[tokio::test]
async fn a_re_sent_append_with_keys_appends_nothing_and_names_the_first_events() {
    let r = redis().await;
    let k = Keys::new("append-resent");
    let (stream, key) = (k.k("stream"), k.k("idem:k"));
    let batch = [event("evt_1", "2", "fp1")];
    assert_eq!(append(&r, &[&stream, &key], &batch).await, vec![""]);
    // The client re-sent the same command after a reconnect.
    assert_eq!(
        append(&r, &[&stream, &key], &batch).await,
        vec!["evt_1 fp1"]
    );
    let len: u64 = r.xlen(&stream).await.unwrap();
    assert_eq!(len, 1);
    // A batch of nothing but seen keys writes no empty entry either.
    let later = [event("evt_9", "2", "fp9")];
    assert_eq!(
        append(&r, &[&stream, &key], &later).await,
        vec!["evt_1 fp1"]
    );
    let len: u64 = r.xlen(&stream).await.unwrap();
    assert_eq!(len, 1);
}

/// `expand`'s keys for events `ids` of tenant `ten_a`: their records, their tenant's counters
/// and series, the unfinished set, the ship queue and the shard-wide series.
fn expand_keys(k: &Keys, ids: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = ids.iter().map(|id| k.k(&format!("event:{id}"))).collect();
    keys.extend(ids.iter().map(|_| k.k("stats:ten_a")));
    keys.extend(ids.iter().map(|_| k.k("series:ten_a")));
    keys.extend([k.k("unfinished"), k.k("ship"), k.k("series_all")]);
    keys
}

/// The answer of `expand` of events of tenant `ten_a` held by `entry`, each to `targets`
/// (recorded) and `tgt_f` (fire-and-forget); `logged` as with a log store.
async fn expand_call(
    redis: &Client,
    k: &Keys,
    entry: &str,
    ids: &[&str],
    targets: &str,
    logged: bool,
) -> serde_json::Value {
    let keys = expand_keys(k, ids);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let n = ids.len().to_string();
    let mut args = vec![
        "600",
        n.as_str(),
        if logged { "1" } else { "" },
        "4242",
        "7200",
    ];
    for id in ids {
        args.extend_from_slice(&[
            entry,
            id,
            "ten_a",
            "order.paid",
            "application/json",
            "1000",
            targets,
            "tgt_f",
        ]);
    }
    let answer = run(redis, &scripts::EXPAND, &keys, &args).await;
    let settled = answer["settled"].as_array().map_or(0, Vec::len);
    assert_eq!(settled, ids.len(), "one settled list per event: {answer}");
    answer
}

/// Which events of an `expand_call` the entry owns.
async fn expand_with(
    redis: &Client,
    k: &Keys,
    entry: &str,
    ids: &[&str],
    targets: &str,
    logged: bool,
) -> Vec<bool> {
    expand_call(redis, k, entry, ids, targets, logged).await["owned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect()
}

/// The `settled` lists of an `expand` of `ids` by `entry` (targets `tgt_1,tgt_2,tgt_new`,
/// `tgt_f`).
async fn settled_on_read(redis: &Client, k: &Keys, entry: &str, ids: &[&str]) -> Vec<String> {
    strings(&expand_call(redis, k, entry, ids, "tgt_1,tgt_2,tgt_new", false).await["settled"])
}

#[tokio::test]
async fn one_call_expands_the_events_of_several_entries_each_by_its_own() {
    let r = redis().await;
    let k = Keys::new("expand-many");
    let keys = expand_keys(&k, &["evt_1", "evt_2", "evt_1"]);
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut args = vec!["600", "3", "", "4242", "7200"];
    // evt_1 in entry 7-0, evt_2 in 7-1, and evt_1 again in 7-2 (a re-sent append).
    for (entry, id) in [("7-0", "evt_1"), ("7-1", "evt_2"), ("7-2", "evt_1")] {
        args.extend_from_slice(&[entry, id, "ten_a", "a", "", "1000", "tgt_1", ""]);
    }
    let answer = run(&r, &scripts::EXPAND, &keys, &args).await;
    assert_eq!(answer["owned"], serde_json::json!([true, true, false]));
    assert_eq!(hash(&r, &k.k("event:evt_1")).await["entry"], "7-0");
    assert_eq!(hash(&r, &k.k("event:evt_2")).await["entry"], "7-1");
}

#[tokio::test]
async fn record_less_events_count_as_received_in_the_same_call() {
    let r = redis().await;
    let k = Keys::new("expand-counted");
    let record = k.k("event:evt_1");
    let (stats_a, stats_b) = (k.k("stats:ten_a"), k.k("stats:ten_b"));
    let (series_a, series_b, all) = (k.k("series:a"), k.k("series:b"), k.k("series_all"));
    let (unfinished, ship) = (k.k("unfinished"), k.k("ship"));
    // One event with a delivery (tenant a), then counters for 3 more of a and 2 of b that
    // matched no target.
    let keys = [
        record.as_str(),
        stats_a.as_str(),
        series_a.as_str(),
        unfinished.as_str(),
        ship.as_str(),
        all.as_str(),
        stats_a.as_str(),
        series_a.as_str(),
        stats_b.as_str(),
        series_b.as_str(),
    ];
    let args = [
        "600", "1", "", "4242", "7200", "7-0", "evt_1", "ten_a", "a", "", "1000", "tgt_1", "", "3",
        "2",
    ];
    let answer = run(&r, &scripts::EXPAND, &keys, &args).await;
    assert_eq!(answer["owned"], serde_json::json!([true]));
    let a: String = r.hget(&stats_a, "events_received").await.unwrap();
    let b: String = r.hget(&stats_b, "events_received").await.unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("4", "2"));
}

#[tokio::test]
async fn an_event_fanned_out_to_thousands_of_targets_is_recorded_whole() {
    let r = redis().await;
    let k = Keys::new("expand-wide");
    let targets: Vec<String> = (0..5000).map(|i| format!("tgt_{i}")).collect();
    let joined = targets.join(",");
    assert_eq!(
        expand_with(&r, &k, "9-0", &["evt_1"], &joined, true).await,
        [true]
    );
    let record = hash(&r, &k.k("event:evt_1")).await;
    assert!(targets.iter().all(|t| record[&format!("d:{t}")] == "p"));
    assert_eq!(record["open"], "5000");
}

#[tokio::test]
async fn an_entry_read_again_redoes_only_the_deliveries_without_an_outcome() {
    let r = redis().await;
    let k = Keys::new("expand-again");
    assert_eq!(expand(&r, &k, "5-0", &["evt_1"]).await, [true]);
    // tgt_1 delivered, tgt_2 still in flight when the first reader died.
    let _: () = r
        .hset(k.k("event:evt_1"), ("d:tgt_1", "s|1|200|0|5|0|"))
        .await
        .unwrap();
    assert_eq!(
        settled_on_read(&r, &k, "5-0", &["evt_1"]).await,
        ["tgt_1,tgt_new,tgt_f"],
        "delivered, never expanded and fire-and-forget need nothing more; tgt_2 is redone"
    );
    // Another entry holding the same event is a duplicate: nothing is settled, nothing owned.
    assert_eq!(settled_on_read(&r, &k, "6-0", &["evt_1"]).await, [""]);
    assert_eq!(expand(&r, &k, "6-0", &["evt_1"]).await, [false]);
}

async fn expand(redis: &Client, k: &Keys, entry: &str, ids: &[&str]) -> Vec<bool> {
    expand_with(redis, k, entry, ids, "tgt_1,tgt_2", false).await
}

#[tokio::test]
async fn expand_gives_each_event_to_the_first_entry_that_holds_it() {
    let r = redis().await;
    let k = Keys::new("expand");
    let stream = k.k("stream");
    // A re-sent append without idempotency keys: two entries with the same event ids.
    let batch = [event("evt_1", "0", ""), event("evt_2", "0", "")];
    append(&r, &[&stream], &batch).await;
    append(&r, &[&stream], &batch).await;
    let entries: Vec<(String, HashMap<String, String>)> =
        r.xrange(&stream, "-", "+", None).await.unwrap();
    let (first, second) = (entries[0].0.clone(), entries[1].0.clone());

    assert_eq!(
        expand(&r, &k, &first, &["evt_1", "evt_2"]).await,
        [true, true]
    );
    assert_eq!(
        expand(&r, &k, &second, &["evt_1", "evt_2"]).await,
        [false, false]
    );
    // The first entry read again (reclaimed from a crashed consumer) still owns its events.
    assert_eq!(
        expand(&r, &k, &first, &["evt_1", "evt_2"]).await,
        [true, true]
    );

    let record = hash(&r, &k.k("event:evt_1")).await;
    assert_eq!(record["entry"], first);
    assert_eq!(record["d:tgt_1"], "p", "recorded deliveries start pending");
    assert_eq!(record["d:tgt_2"], "p");
    assert_eq!(
        record["d:tgt_f"], "n",
        "fire-and-forget is sent, never recorded"
    );
    assert_eq!(record["tenant"], "ten_a");
    assert!(
        !record.contains_key("open"),
        "no finish tracking without a log store"
    );
    let ttl: i64 = r.ttl(k.k("event:evt_1")).await.unwrap();
    assert!(ttl > 0 && ttl <= 600);
    let received: String = r.hget(k.k("stats:ten_a"), "events_received").await.unwrap();
    assert_eq!(received, "2", "each event is counted once");
    // Small values: the record stays a listpack.
    let encoding: String = r
        .custom(
            fred::types::CustomCommand::new_static("OBJECT", None, false),
            vec!["ENCODING".to_owned(), k.k("event:evt_1")],
        )
        .await
        .unwrap();
    assert_eq!(encoding, "listpack");
}

// ---- deliveries: outcomes, the retry schedule, the error queue ----

struct Outcome<'a> {
    target: &'a str,
    kind: &'a str,
    state: &'a str,
    due_ms: &'a str,
    attempt: &'a str,
    latency: &'a str,
    attempt_ms: &'a str,
}

async fn record(redis: &Client, k: &Keys, outcomes: &[Outcome<'_>]) {
    let (retries, dead_total) = (k.k("retries"), k.k("dead_total"));
    let (unfinished, ship) = (k.k("unfinished"), k.k("ship"));
    let (event, stats, dead) = (k.k("event:evt_1"), k.k("stats:ten_a"), k.k("dead:ten_a"));
    let (series, series_all) = (k.k("series:ten_a"), k.k("series_all"));
    let order = k.k("dead_order:ten_a");
    let health = k.k("health:ten_a");
    let mut keys = vec![
        retries.as_str(),
        dead_total.as_str(),
        unfinished.as_str(),
        ship.as_str(),
        series_all.as_str(),
    ];
    let n = outcomes.len().to_string();
    // Logged: `open` is tracked wherever a record has it (the expansion decides).
    let mut args = vec![n.as_str(), "3", "600", "5555", "1", "7200"];
    let members: Vec<String> = outcomes
        .iter()
        .map(|o| format!("evt_1:{}", o.target))
        .collect();
    for (o, member) in outcomes.iter().zip(&members) {
        keys.extend([
            event.as_str(),
            stats.as_str(),
            dead.as_str(),
            series.as_str(),
            order.as_str(),
            health.as_str(),
        ]);
        args.extend([
            "evt_1",
            o.target,
            o.state,
            o.attempt,
            o.kind,
            o.due_ms,
            member.as_str(),
            "the body",
            "text/plain",
            "dl_1",
            r#"{"id":"dl_1"}"#,
            o.latency,
            o.attempt_ms,
            "",
        ]);
    }
    let answer = run(redis, &scripts::RECORD, &keys, &args).await;
    assert_eq!(answer["recorded"].as_u64(), Some(outcomes.len() as u64));
}

fn outcome<'a>(target: &'a str, kind: &'a str) -> Outcome<'a> {
    Outcome {
        target,
        kind,
        state: match kind {
            "done" => "s|1|200||9|0|",
            "dead" => "d|3|500||9|0|boom",
            _ => "r|1|500|5000|9|0|boom",
        },
        due_ms: "5000",
        attempt: r#"{"n":1}"#,
        latency: "12",
        attempt_ms: "12",
    }
}

#[tokio::test]
async fn record_keeps_the_schedule_the_counters_and_the_error_queue_consistent() {
    let r = redis().await;
    let k = Keys::new("record");
    let _: () = r.hset(k.k("event:evt_1"), ("entry", "1-0")).await.unwrap();
    let stats = |field: &'static str| {
        let (r, key) = (r.clone(), k.k("stats:ten_a"));
        async move {
            let v: Option<i64> = r.hget(key, field).await.unwrap();
            v.unwrap_or(0)
        }
    };

    // A failed attempt: scheduled, counted once in retry however often it is rescheduled.
    record(&r, &k, &[outcome("tgt_1", "retry")]).await;
    record(&r, &k, &[outcome("tgt_1", "retry")]).await;
    let due: Option<f64> = r.zscore(k.k("retries"), "evt_1:tgt_1").await.unwrap();
    assert_eq!(due, Some(5000.0));
    assert_eq!(stats("in_retry").await, 1);
    assert_eq!(hash(&r, &k.k("event:evt_1")).await["body"], "the body");

    // An ordered target's head is retried by its process: the schedule is not touched.
    record(&r, &k, &[outcome("tgt_3", "held")]).await;
    let held: Option<f64> = r.zscore(k.k("retries"), "evt_1:tgt_3").await.unwrap();
    assert_eq!(held, None);

    // Success of tgt_1 and the end of tgt_2, in one call.
    record(
        &r,
        &k,
        &[outcome("tgt_1", "done"), outcome("tgt_2", "dead")],
    )
    .await;
    let left: u32 = r.zcard(k.k("retries")).await.unwrap();
    assert_eq!(left, 0);
    assert_eq!(stats("in_retry").await, 0);
    assert_eq!(stats("succeeded").await, 1);
    assert_eq!(stats("failed").await, 1);
    assert_eq!(stats("responses").await, 5);
    assert_eq!(stats("response_ms_total").await, 60);
    assert_eq!(
        hash(&r, &k.k("dead:ten_a")).await["dl_1"],
        r#"{"id":"dl_1"}"#
    );
    let total: i64 = r.get(k.k("dead_total")).await.unwrap();
    assert_eq!(total, 1);
    let stored = hash(&r, &k.k("event:evt_1")).await;
    assert_eq!(stored["d:tgt_2"], "d|3|500||9|0|boom");
    // The attempt log keeps the newest `attempts_kept` (3) of the five, in the record.
    let slots = |h: &HashMap<String, String>| h.keys().filter(|f| f.starts_with("a:")).count();
    assert_eq!(slots(&stored), 3);
    assert_eq!(stored["an"], "5");
    assert!(
        !exists(&r, &k.k("attempts:evt_1")).await,
        "no second key per event"
    );

    // No response (a refused connection): no latency counted; no attempt: no log entry.
    let silent = Outcome {
        latency: "",
        attempt: "",
        attempt_ms: "",
        ..outcome("tgt_4", "done")
    };
    record(&r, &k, &[silent]).await;
    assert_eq!(stats("responses").await, 5);
    assert_eq!(hash(&r, &k.k("event:evt_1")).await["an"], "5");

    // A late duplicate outcome of a record that is gone writes no record back.
    let _: () = r.del(k.k("event:evt_1")).await.unwrap();
    let _: () = r.del(k.k("attempts:evt_1")).await.unwrap();
    record(
        &r,
        &k,
        &[outcome("tgt_1", "done"), outcome("tgt_2", "retry")],
    )
    .await;
    assert!(!exists(&r, &k.k("event:evt_1")).await);
    assert!(!exists(&r, &k.k("attempts:evt_1")).await);
    let scheduled: u32 = r.zcard(k.k("retries")).await.unwrap();
    assert_eq!(scheduled, 0, "no retry of an event that is gone");
}

/// A `now` in minute 17 of hour 493 000 (ms), as the scripts get it.
const SERIES_NOW: u64 = 493_000 * 3_600_000 + 17 * 60_000 + 5_000;

async fn series_of(redis: &Client, key: &str) -> HashMap<String, i64> {
    redis.hgetall(key).await.unwrap()
}

async fn ttl_of(redis: &Client, key: &str) -> i64 {
    redis.ttl(key).await.unwrap()
}

#[tokio::test]
async fn expand_and_record_count_each_minute_in_the_series_of_its_hour() {
    let r = redis().await;
    let k = Keys::new("series");
    let (series_a, series_b, all) = (k.k("series:a"), k.k("series:b"), k.k("series_all"));
    let now = SERIES_NOW.to_string();

    // Two first expansions of tenant a, then 3 record-less events of a and 2 of b.
    let expand_once = || {
        let (r, k, now) = (r.clone(), &k, now.clone());
        let (series_a, series_b, all) = (series_a.clone(), series_b.clone(), all.clone());
        async move {
            let keys = [
                k.k("event:evt_1"),
                k.k("event:evt_2"),
                k.k("stats:a"),
                k.k("stats:a"),
                series_a.clone(),
                series_a.clone(),
                k.k("unfinished"),
                k.k("ship"),
                all,
                k.k("stats:a"),
                series_a,
                k.k("stats:b"),
                series_b,
            ];
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let mut args = vec!["600", "2", "", now.as_str(), "7200"];
            for id in ["evt_1", "evt_2"] {
                args.extend_from_slice(&["7-0", id, "a", "t", "", "1000", "tgt_1", ""]);
            }
            args.extend_from_slice(&["3", "2"]);
            run(&r, &scripts::EXPAND, &keys, &args).await
        }
    };
    expand_once().await;
    let want = |pairs: &[(&str, i64)]| -> HashMap<String, i64> {
        pairs.iter().map(|(f, v)| (f.to_string(), *v)).collect()
    };
    assert_eq!(series_of(&r, &series_a).await, want(&[("17:r", 5)]));
    assert_eq!(series_of(&r, &series_b).await, want(&[("17:r", 2)]));
    assert_eq!(series_of(&r, &all).await, want(&[("17:r", 7)]));
    for key in [&series_a, &series_b, &all] {
        let ttl = ttl_of(&r, key).await;
        assert!(ttl > 7000 && ttl <= 7200, "{key}: {ttl}");
    }
    // The same entry read again: its events were counted once; only the record-less
    // ones count again (as the tenants' `events_received` does).
    expand_once().await;
    assert_eq!(series_of(&r, &series_a).await, want(&[("17:r", 8)]));

    // Outcomes of a and b in one call: a delivered on its first attempt (12 ms), failed and
    // retried (30 ms), held (20 ms), dead (8 ms) and delivered without an attempt (no
    // attempt, no attempt counted); b delivered (5 ms).
    for key in [&series_a, &series_b, &all] {
        let _: i64 = r.del(key.as_str()).await.unwrap();
    }
    let outcomes: [(&str, &str, &str, &str); 6] = [
        ("a", "tgt_1", "done", "12"),
        ("a", "tgt_2", "retry", "30"),
        ("a", "tgt_3", "held", "20"),
        ("a", "tgt_4", "dead", "8"),
        ("a", "tgt_5", "done", ""),
        ("b", "tgt_6", "done", "5"),
    ];
    let mut keys = vec![
        k.k("retries"),
        k.k("dead_total"),
        k.k("unfinished"),
        k.k("ship"),
        all.clone(),
    ];
    let mut args: Vec<String> = ["6", "3", "600", now.as_str(), "", "7200"]
        .map(String::from)
        .to_vec();
    for (tenant, target, kind, ms) in outcomes {
        keys.extend([
            k.k("event:evt_1"),
            k.k(&format!("stats:{tenant}")),
            k.k(&format!("dead:{tenant}")),
            k.k(&format!("series:{tenant}")),
            k.k(&format!("dead_order:{tenant}")),
            k.k(&format!("health:{tenant}")),
        ]);
        let attempt = if ms.is_empty() { "" } else { "attempt" };
        let member = format!("evt_1:{target}");
        args.extend(
            [
                "evt_1",
                target,
                "s|1|200||9|0|",
                attempt,
                kind,
                "9000",
                member.as_str(),
                "body",
                "",
                "dl_1",
                "{}",
                ms,
                ms,
                "",
            ]
            .map(String::from),
        );
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer = run(&r, &scripts::RECORD, &keys, &args).await;
    assert_eq!(answer["recorded"], 6);
    assert_eq!(
        series_of(&r, &series_a).await,
        want(&[("17:s", 2), ("17:a", 4), ("17:f", 3), ("17:l", 70)])
    );
    assert_eq!(
        series_of(&r, &series_b).await,
        want(&[("17:s", 1), ("17:a", 1), ("17:l", 5)])
    );
    assert_eq!(
        series_of(&r, &all).await,
        want(&[("17:s", 3), ("17:a", 5), ("17:f", 3), ("17:l", 75)])
    );
    for key in [&series_a, &series_b, &all] {
        let ttl = ttl_of(&r, key).await;
        assert!(ttl > 7000 && ttl <= 7200, "{key}: {ttl}");
    }

    // A call whose outcomes carry no attempt and no success writes no series at all.
    let quiet = k.k("series:quiet");
    let keys = [
        k.k("retries"),
        k.k("dead_total"),
        k.k("unfinished"),
        k.k("ship"),
        k.k("series_all_quiet"),
        k.k("event:evt_1"),
        k.k("stats:q"),
        k.k("dead:q"),
        quiet.clone(),
        k.k("dead_order:q"),
        k.k("health:q"),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let args = [
        "1",
        "3",
        "600",
        now.as_str(),
        "",
        "7200",
        "evt_1",
        "tgt_9",
        "d|0|||9|0|gone",
        "",
        "drop",
        "",
        "evt_1:tgt_9",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ];
    run(&r, &scripts::RECORD, &keys, &args).await;
    assert!(!exists(&r, &quiet).await);
    assert!(!exists(&r, &k.k("series_all_quiet")).await);
    assert!(!exists(&r, &k.k("health:q")).await, "no attempt, no health");
}

#[tokio::test]
async fn with_a_log_store_an_event_is_queued_for_shipping_once_its_last_delivery_finishes() {
    let r = redis().await;
    let k = Keys::new("finish");
    let stream = k.k("stream");
    append(
        &r,
        &[&stream],
        &[event("evt_1", "0", ""), event("evt_9", "0", "")],
    )
    .await;
    let entries: Vec<(String, HashMap<String, String>)> =
        r.xrange(&stream, "-", "+", None).await.unwrap();
    let entry = entries[0].0.clone();
    let position: f64 = entry.split('-').next().unwrap().parse().unwrap();
    assert_eq!(
        expand_with(&r, &k, &entry, &["evt_1"], "tgt_1,tgt_2", true).await,
        [true]
    );
    // No recorded target: finished at once.
    assert_eq!(
        expand_with(&r, &k, &entry, &["evt_9"], "", true).await,
        [true]
    );
    let score = |key: &'static str, m: &'static str| {
        let (r, key) = (r.clone(), k.k(key));
        async move {
            let s: Option<f64> = r.zscore(key, m).await.unwrap();
            s
        }
    };
    assert_eq!(score("unfinished", "evt_1").await, Some(position));
    assert_eq!(score("ship", "evt_9").await, Some(position));
    assert_eq!(hash(&r, &k.k("event:evt_1")).await["open"], "2");

    record(&r, &k, &[outcome("tgt_1", "retry")]).await;
    record(&r, &k, &[outcome("tgt_1", "done")]).await;
    // The same outcome recorded twice (a reclaimed entry delivered again) counts once.
    record(&r, &k, &[outcome("tgt_1", "done")]).await;
    assert_eq!(hash(&r, &k.k("event:evt_1")).await["open"], "1");
    assert_eq!(score("ship", "evt_1").await, None, "tgt_2 is not finished");
    record(&r, &k, &[outcome("tgt_2", "dead")]).await;
    let rec = hash(&r, &k.k("event:evt_1")).await;
    assert_eq!(rec["open"], "0");
    assert_eq!(rec["fin"], "1");
    assert_eq!(rec["fin_at"], "5555");
    assert_eq!(score("unfinished", "evt_1").await, None);
    assert_eq!(score("ship", "evt_1").await, Some(position));

    // A replay opens it again: off the ship queue, back in the unfinished set, full lifetime.
    let (dead, retries, stats, rec_key, total, attempts, unfinished, ship) = (
        k.k("dead:ten_a"),
        k.k("retries"),
        k.k("stats:ten_a"),
        k.k("event:evt_1"),
        k.k("dead_total"),
        k.k("attempts:evt_1"),
        k.k("unfinished"),
        k.k("ship"),
    );
    let order = k.k("dead_order:ten_a");
    let _: () = r.expire(&rec_key, 5, None).await.unwrap();
    let keys = [
        &dead,
        &retries,
        &stats,
        &rec_key,
        &total,
        &attempts,
        &unfinished,
        &ship,
        &order,
    ]
    .map(String::as_str);
    let answer = run(
        &r,
        &scripts::REPLAY,
        &keys,
        &[
            "dl_1",
            "evt_1:tgt_2",
            "tgt_2",
            "r|0|500|7000|7000|0|",
            "7000",
            "600",
            "evt_1",
            "0",
            "7000",
        ],
    )
    .await;
    assert_eq!(answer["replayed"], 1);
    assert_eq!(score("ship", "evt_1").await, None);
    assert_eq!(score("unfinished", "evt_1").await, Some(position));
    let ttl: i64 = r.ttl(&rec_key).await.unwrap();
    assert!(ttl > 5, "a replayed record lives on");
    // A succeeded delivery is not replayed.
    let again = run(
        &r,
        &scripts::REPLAY,
        &keys,
        &[
            "",
            "evt_1:tgt_1",
            "tgt_1",
            "r|0|||7000|0|",
            "7000",
            "600",
            "evt_1",
            "0",
            "7000",
        ],
    )
    .await;
    assert_eq!(again["replayed"], 0);
    assert_eq!(again["missing"], false);
    // A target the event never went to (disabled when it came) is sent it only when asked
    // (`fresh`, a healed target's gap), due when told, and the record is open again.
    let never = |fresh: &'static str| {
        [
            "",
            "evt_1:tgt_9",
            "tgt_9",
            "r|0|||9000|0|",
            "9000",
            "600",
            "evt_1",
            fresh,
            "9500",
        ]
    };
    let skipped = run(&r, &scripts::REPLAY, &keys, &never("0")).await;
    assert_eq!(skipped["replayed"], 0, "not without fresh");
    let sent = run(&r, &scripts::REPLAY, &keys, &never("1")).await;
    assert_eq!(sent["replayed"], 1);
    assert_eq!(score("retries", "evt_1:tgt_9").await, Some(9500.0));
    let again = run(&r, &scripts::REPLAY, &keys, &never("1")).await;
    assert_eq!(again["replayed"], 0, "a fresh delivery is made once");
}

#[tokio::test]
async fn shipped_expires_only_what_did_not_finish_again_and_restore_brings_an_event_back() {
    let r = redis().await;
    let k = Keys::new("shipped");
    let ship = k.k("ship");
    for (id, fin) in [("evt_a", "1"), ("evt_b", "2")] {
        let _: () = r
            .hset(
                k.k(&format!("event:{id}")),
                [("tenant", "ten_a"), ("fin", fin)],
            )
            .await
            .unwrap();
        let _: () = r.rpush(k.k(&format!("att:{id}")), "x").await.unwrap();
        let _: () = r
            .zadd(&ship, None, None, false, false, (1.0, id))
            .await
            .unwrap();
    }
    let _: () = r
        .zadd(&ship, None, None, false, false, (1.0, "evt_gone"))
        .await
        .unwrap();
    let keys = [
        ship.clone(),
        k.k("event:evt_a"),
        k.k("att:evt_a"),
        k.k("event:evt_b"),
        k.k("att:evt_b"),
        k.k("event:evt_gone"),
        k.k("att:evt_gone"),
    ];
    let keys = keys.each_ref().map(String::as_str);
    // evt_b finished again (fin 2) since it was read with fin 1.
    let answer = run(
        &r,
        &scripts::SHIPPED,
        &keys,
        &["30", "3", "evt_a", "1", "evt_b", "1", "evt_gone", "1"],
    )
    .await;
    assert_eq!(answer["shipped"], 2);
    let left: Vec<String> = r
        .zrange(&ship, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(left, vec!["evt_b".to_owned()]);
    let ttl: i64 = r.ttl(k.k("event:evt_a")).await.unwrap();
    assert!(ttl > 0 && ttl <= 30);
    let ttl: i64 = r.ttl(k.k("att:evt_a")).await.unwrap();
    assert!(ttl > 0 && ttl <= 30);
    let ttl: i64 = r.ttl(k.k("event:evt_b")).await.unwrap();
    assert_eq!(ttl, -1, "not expired: its newer state is not shipped yet");

    let rec = k.k("event:evt_r");
    let restore = async |args: &[&str]| {
        run(&r, &scripts::RESTORE, &[rec.as_str()], args).await["restored"].as_bool()
    };
    let args = [
        "600",
        "1",
        "ten_a",
        "a.b",
        "text/plain",
        "1000",
        "the body",
        "tgt_1",
        "d|3|500||9|0|x",
        "tgt_2",
        "s|1|200||9|0|",
    ];
    assert_eq!(restore(&args).await, Some(true));
    let h = hash(&r, &rec).await;
    assert_eq!(h["entry"], "restored");
    assert_eq!(h["body"], "the body");
    assert_eq!(h["d:tgt_1"], "d|3|500||9|0|x");
    assert_eq!(h["open"], "0");
    assert_eq!(
        restore(&args).await,
        Some(false),
        "a record that is there is kept"
    );
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_lapses() {
    let r = redis().await;
    let k = Keys::new("lease");
    let lease = k.k("lease");
    let take = async |holder: &str, ms: &str| {
        run(&r, &scripts::LEASE, &[lease.as_str()], &[holder, ms]).await["held"].as_bool()
    };
    assert_eq!(take("a", "200").await, Some(true));
    assert_eq!(take("b", "200").await, Some(false));
    assert_eq!(take("a", "200").await, Some(true), "renewed by its holder");
    let ttl: i64 = r.pttl(&lease).await.unwrap();
    assert!(
        (1..=200).contains(&ttl),
        "the lease lapses by itself: {ttl} ms"
    );
    // Lapsed, as it would be 200 ms later (Redis's own expiry, not the script's).
    let _: i64 = r.del(&lease).await.unwrap();
    assert_eq!(take("b", "200").await, Some(true), "taken over once lapsed");
    assert_eq!(take("a", "200").await, Some(false));
}

#[tokio::test]
async fn claim_due_raced_by_two_callers_gives_each_retry_to_one() {
    let r = redis().await;
    let other = redis().await;
    let k = Keys::new("claim");
    let retries = k.k("retries");
    let members: Vec<String> = (0..200).map(|i| format!("evt_{i}:tgt_1")).collect();
    for (i, m) in members.iter().enumerate() {
        // Half due at 1000, half at 9000 (not yet due at 5000).
        let score = if i % 2 == 0 { 1000.0 } else { 9000.0 };
        let _: () = r
            .zadd(&retries, None, None, false, false, (score, m.as_str()))
            .await
            .unwrap();
    }
    let claim = |client: Client| {
        let retries = retries.clone();
        async move {
            let mut mine = Vec::new();
            loop {
                let answer = run(
                    &client,
                    &scripts::CLAIM_DUE,
                    &[&retries],
                    &["5000", "60000", "7"],
                )
                .await;
                let got: Vec<String> = answer["members"]
                    .as_array()
                    .map(|a| a.iter().map(|m| m.as_str().unwrap().to_owned()).collect())
                    .unwrap_or_default();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got);
            }
        }
    };
    let (a, b) = tokio::join!(claim(r.clone()), claim(other));
    let (a, b): (HashSet<String>, HashSet<String>) =
        (a.into_iter().collect(), b.into_iter().collect());
    assert!(
        a.is_disjoint(&b),
        "{} retries claimed twice",
        a.intersection(&b).count()
    );
    let claimed: HashSet<String> = a.union(&b).cloned().collect();
    let due: HashSet<String> = members.iter().step_by(2).cloned().collect();
    assert_eq!(claimed, due, "every due retry claimed, nothing else");
    // Leased to the end of the lease, where a crash would leave it.
    let leased: Option<f64> = r.zscore(&retries, "evt_0:tgt_1").await.unwrap();
    assert_eq!(leased, Some(60000.0));
    let waiting: Option<f64> = r.zscore(&retries, "evt_1:tgt_1").await.unwrap();
    assert_eq!(waiting, Some(9000.0));
}

#[tokio::test]
async fn replay_and_delete_take_an_error_queue_entry_once() {
    let r = redis().await;
    let k = Keys::new("replay");
    let (dead, retries, stats, event, total, attempts, unfinished, ship) = (
        k.k("dead:ten_a"),
        k.k("retries"),
        k.k("stats:ten_a"),
        k.k("event:evt_1"),
        k.k("dead_total"),
        k.k("attempts:evt_1"),
        k.k("unfinished"),
        k.k("ship"),
    );
    let order = k.k("dead_order:ten_a");
    let _: () = r
        .hset(&dead, [("dl_1", "{}"), ("dl_2", "{}"), ("dl_3", "{}")])
        .await
        .unwrap();
    let _: () = r
        .zadd(
            &order,
            None,
            None,
            false,
            false,
            vec![(0.0, "dl_1"), (0.0, "dl_2"), (0.0, "dl_3")],
        )
        .await
        .unwrap();
    let _: () = r.set(&total, 3, None, None, false).await.unwrap();
    let _: () = r
        .hset(&event, [("entry", "1-0"), ("d:tgt_1", "d|3|500||9|0|x")])
        .await
        .unwrap();
    let keys = [
        &dead,
        &retries,
        &stats,
        &event,
        &total,
        &attempts,
        &unfinished,
        &ship,
        &order,
    ]
    .map(String::as_str);
    let args = |dl: &'static str| {
        [
            dl,
            "evt_1:tgt_1",
            "tgt_1",
            "r|0|500|7000|7000|0|",
            "7000",
            "600",
            "evt_1",
            "0",
            "7000",
        ]
    };
    let replay = async |dl: &'static str| run(&r, &scripts::REPLAY, &keys, &args(dl)).await;
    assert_eq!(replay("dl_1").await["replayed"], 1);
    assert_eq!(replay("dl_1").await["replayed"], 0, "replayed twice");
    let indexed: Vec<String> = r
        .zrange(&order, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(
        indexed,
        ["dl_2", "dl_3"],
        "a replayed entry leaves the index"
    );
    let due: Option<f64> = r.zscore(&retries, "evt_1:tgt_1").await.unwrap();
    assert_eq!(due, Some(7000.0));
    assert_eq!(hash(&r, &event).await["d:tgt_1"], "r|0|500|7000|7000|0|");
    let in_retry: i64 = r.hget(&stats, "in_retry").await.unwrap();
    assert_eq!(in_retry, 1);

    // The event's record is gone: reported missing, the entry kept for the caller to decide.
    let _: () = r.del(&event).await.unwrap();
    let _: () = r.del(&retries).await.unwrap();
    let answer = replay("dl_2").await;
    assert_eq!(answer["replayed"], 0);
    assert_eq!(answer["missing"], true);
    assert!(!exists(&r, &event).await, "no record brought back");
    assert!(hash(&r, &dead).await.contains_key("dl_2"));
    let scheduled: u32 = r.zcard(&retries).await.unwrap();
    assert_eq!(scheduled, 0);

    let dkeys = [dead.as_str(), total.as_str(), order.as_str()];
    for dl in ["dl_2", "dl_3"] {
        let deleted = run(&r, &scripts::DELETE_DEAD_LETTER, &dkeys, &[dl]).await;
        assert_eq!(deleted["deleted"], 1);
    }
    let again = run(&r, &scripts::DELETE_DEAD_LETTER, &dkeys, &["dl_3"]).await;
    assert_eq!(again["deleted"], 0);
    assert!(hash(&r, &dead).await.is_empty());
    let indexed: u32 = r.zcard(&order).await.unwrap();
    assert_eq!(indexed, 0, "deleted entries leave the index");
    let total: i64 = r.get(&total).await.unwrap();
    assert_eq!(total, 0, "each entry counted out once");
}

#[tokio::test]
async fn reindex_puts_every_entry_in_the_error_queue_index_and_nothing_else() {
    let r = redis().await;
    let k = Keys::new("reindex");
    let (dead, order) = (k.k("dead:ten_a"), k.k("dead_order:ten_a"));
    // 1,234 entries written before the index existed, and one id indexed without an entry.
    let entries: Vec<(String, String)> = (0..1234)
        .map(|i| (format!("dl_{i:05}"), "{}".to_owned()))
        .collect();
    let _: () = r.hset(&dead, entries).await.unwrap();
    let _: () = r
        .zadd(&order, None, None, false, false, (0.0, "dl_gone"))
        .await
        .unwrap();
    let answer = run(&r, &scripts::REINDEX_DEAD_LETTERS, &[&dead, &order], &[]).await;
    assert_eq!(answer["entries"], 1234);
    let indexed: Vec<String> = r
        .zrange(&order, 0, -1, None, false, None, false)
        .await
        .unwrap();
    assert_eq!(indexed.len(), 1234);
    assert_eq!(indexed.first().map(String::as_str), Some("dl_00000"));
    assert_eq!(indexed.last().map(String::as_str), Some("dl_01233"));
    assert!(
        !indexed.contains(&"dl_gone".to_owned()),
        "an id without an entry is dropped"
    );
}

// ---- watched subjects: describe, signal, forget ----

struct Watch {
    k: Keys,
}

impl Watch {
    fn new(name: &str) -> Watch {
        Watch { k: Keys::new(name) }
    }

    async fn describe(&self, r: &Client, name: &str, window_ms: &str) -> bool {
        let keys = [self.k.k("watch:mon_1"), self.k.k("due"), self.k.k("counts")];
        let keys = keys.each_ref().map(String::as_str);
        let answer = run(
            r,
            &scripts::DESCRIBE,
            &keys,
            &["mon_1", "ten_a", "monitor", name, window_ms, "0"],
        )
        .await;
        answer["created"].as_bool().unwrap()
    }

    /// One signal of `mon_1`; `more` as the header documents it.
    async fn signal(&self, r: &Client, signal: &str, want: &str, kind: &str) -> Json {
        self.signal_at(r, signal, want, kind, "0").await
    }

    /// [`Watch::signal`] from a caller whose clock is `ahead_ms` ahead of Redis's.
    async fn signal_at(
        &self,
        r: &Client,
        signal: &str,
        want: &str,
        kind: &str,
        ahead_ms: &str,
    ) -> Json {
        let keys = [
            self.k.k("due"),
            self.k.k("stream"),
            self.k.k("counts"),
            self.k.k("history"),
            self.k.k("unwell"),
            self.k.k("watch:mon_1"),
            self.k.k("checks:mon_1"),
            self.k.k("incidents:mon_1"),
        ];
        let keys = keys.each_ref().map(String::as_str);
        let more = "ten_a\nbilling\nevt_alert\ninc_1\n2026-12-01T00:00:00Z\nmissed\n";
        let args = [
            LAYOUT.as_str(),
            "10",
            "10",
            "1",
            ahead_ms,
            "mon_1",
            signal,
            want,
            kind,
            "50",
            more,
        ];
        let answer = run(r, &scripts::SIGNAL, &keys, &args).await;
        answer["subjects"][0].clone()
    }

    async fn counts(&self, r: &Client) -> HashMap<String, String> {
        hash(r, &self.k.k("counts")).await
    }
}

#[tokio::test]
async fn signal_never_brings_back_a_subject_that_was_not_described() {
    let r = redis().await;
    let w = Watch::new("signal-gone");
    assert_eq!(
        w.signal(&r, "heartbeat", "up", "monitor").await,
        json!({"gone": true})
    );
    assert!(!exists(&r, &w.k.k("watch:mon_1")).await);
    let due: u32 = r.zcard(w.k.k("due")).await.unwrap();
    assert_eq!(due, 0);
}

#[tokio::test]
async fn describe_then_signals_open_and_resolve_one_incident_with_alerts() {
    let r = redis().await;
    let w = Watch::new("signal");
    assert!(w.describe(&r, "billing", "50").await);
    assert!(
        !w.describe(&r, "billing job", "50").await,
        "a second describe renames"
    );
    assert_eq!(hash(&r, &w.k.k("watch:mon_1")).await["name"], "billing job");
    assert_eq!(w.counts(&r).await["monitor:new"], "1");

    // The first heartbeat only starts the watch: up, no alert.
    let first = w.signal(&r, "heartbeat", "up", "monitor").await;
    assert_eq!(first["status"], "up");
    assert_eq!(first["changed"], true);
    assert!(first.get("alert").is_none(), "{first}");
    assert!(first["last_heartbeat"].as_u64().is_some());
    let len: u64 = r.xlen(w.k.k("stream")).await.unwrap();
    assert_eq!(len, 0);
    // A routine heartbeat changes nothing and records no check.
    let routine = w.signal(&r, "heartbeat", "up", "monitor").await;
    assert_eq!(routine["changed"], false);
    let checks: u32 = r.llen(w.k.k("checks:mon_1")).await.unwrap();
    assert_eq!(checks, 1);

    let failed = w.signal(&r, "fail", "down", "monitor").await;
    assert_eq!(failed["status"], "down");
    assert_eq!(failed["alert"], "monitor.down");
    let since: Option<f64> = r.zscore(w.k.k("unwell"), "mon_1").await.unwrap();
    assert!(
        since.is_some(),
        "a subject that is down is listed as unwell"
    );
    let back = w.signal(&r, "heartbeat", "up", "monitor").await;
    assert_eq!(back["alert"], "monitor.up");
    let since: Option<f64> = r.zscore(w.k.k("unwell"), "mon_1").await.unwrap();
    assert_eq!(since, None, "and no more once it is up");

    let incidents: Vec<String> = r.lrange(w.k.k("incidents:mon_1"), 0, -1).await.unwrap();
    assert_eq!(incidents.len(), 1);
    let incident: Json = serde_json::from_str(&incidents[0]).unwrap();
    assert_eq!(incident["id"], "inc_1");
    assert_eq!(incident["resolved_reason"], "missed");
    assert!(incident["duration_ms"].as_i64().unwrap() >= 0);

    let alerts = stream_events(&r, &w.k.k("stream")).await;
    let types: Vec<&str> = alerts.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["monitor.down", "monitor.up"]);
    let down: Json = serde_json::from_slice(&alerts[0].body).unwrap();
    assert_eq!(
        down["monitor"],
        json!({"id": "mon_1", "name": "billing job"})
    );
    assert_eq!(down["incident_id"], "inc_1");
    assert_eq!(down["previous_status"], "up");
    assert_eq!(alerts[0].tenant.as_str(), "ten_a");
    let counts = w.counts(&r).await;
    assert_eq!(counts["monitor:up"], "1");
    assert_eq!(counts["monitor:new"], "0");
    assert_eq!(counts["monitor:down"], "0");
    // With a log store, each status record and incident change waits in the history stream.
    let history: Vec<(String, HashMap<String, String>)> =
        r.xrange(w.k.k("history"), "-", "+", None).await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|(_, f)| f["k"].as_str()).collect();
    assert!(
        kinds.contains(&"check") && kinds.contains(&"incident"),
        "{kinds:?}"
    );
    let incident = history
        .iter()
        .rev()
        .find(|(_, f)| f["k"] == "incident")
        .unwrap();
    assert_eq!(incident.1["s"], "mon_1");
    assert_eq!(incident.1["t"], "ten_a");
    let record: Json = serde_json::from_str(&incident.1["v"]).unwrap();
    assert!(
        record["resolved_at"].is_string(),
        "the resolution is logged too"
    );
}

#[tokio::test]
async fn an_overdue_subject_is_timed_out_by_one_of_two_racing_checkers() {
    let r = redis().await;
    let other = redis().await;
    let w = Watch::new("signal-timeout");
    w.describe(&r, "billing", "50").await;
    w.signal(&r, "heartbeat", "up", "monitor").await;
    // Not yet overdue: the deadline is 50 ms after the heartbeat.
    assert_eq!(
        w.signal(&r, "timeout", "down", "").await,
        json!({"skip": true})
    );

    // Checkers whose clocks are past the deadline: the script's time is Redis's plus theirs.
    let (a, b) = tokio::join!(
        w.signal_at(&r, "timeout", "down", "", "120"),
        w.signal_at(&other, "timeout", "down", "", "120")
    );
    let handled: Vec<&Json> = [&a, &b]
        .into_iter()
        .filter(|s| s.get("skip").is_none())
        .collect();
    assert_eq!(handled.len(), 1, "{a} {b}");
    assert_eq!(handled[0]["alert"], "monitor.down");
    assert_eq!(handled[0]["kind"], "monitor");
    let alerts = stream_events(&r, &w.k.k("stream")).await;
    assert_eq!(alerts.len(), 1, "one alert however many checkers");
    // A timeout leaves no deadline: the next heartbeat sets one.
    let due: Option<f64> = r.zscore(w.k.k("due"), "mon_1").await.unwrap();
    assert_eq!(due, None);
}

#[tokio::test]
async fn forget_removes_the_state_its_deadline_and_its_count() {
    let r = redis().await;
    let w = Watch::new("forget");
    w.describe(&r, "billing", "50").await;
    w.signal(&r, "heartbeat", "up", "monitor").await;
    w.signal(&r, "fail", "down", "monitor").await;
    let keys = [
        w.k.k("watch:mon_1"),
        w.k.k("due"),
        w.k.k("checks:mon_1"),
        w.k.k("incidents:mon_1"),
        w.k.k("counts"),
        w.k.k("unwell"),
    ];
    let keys = keys.each_ref().map(String::as_str);
    let answer = run(&r, &scripts::FORGET, &keys, &["mon_1"]).await;
    assert_eq!(
        answer["deleted"], 3,
        "the state, its check log and its incidents"
    );
    assert!(!exists(&r, &w.k.k("watch:mon_1")).await);
    let due: Option<f64> = r.zscore(w.k.k("due"), "mon_1").await.unwrap();
    assert_eq!(due, None);
    assert_eq!(w.counts(&r).await["monitor:down"], "0");
    assert!(!exists(&r, &w.k.k("unwell")).await, "nor is it unwell");
    // Signals after the deletion do not bring it back.
    assert_eq!(
        w.signal(&r, "heartbeat", "up", "monitor").await,
        json!({"gone": true})
    );
}

#[tokio::test]
async fn record_fails_an_outcome_whose_record_is_of_another_type_alone() {
    let r = redis().await;
    let k = Keys::new("record-protected");
    let _: () = r.hset(k.k("event:evt_1"), ("entry", "1-0")).await.unwrap();
    let _: () = r
        .set(k.k("event:evt_bad"), "corrupt", None, None, false)
        .await
        .unwrap();
    let shared = [
        k.k("retries"),
        k.k("dead_total"),
        k.k("unfinished"),
        k.k("ship"),
        k.k("series_all"),
    ];
    let own = |event: &str| {
        [
            k.k(event),
            k.k("stats:ten_a"),
            k.k("dead:ten_a"),
            k.k("series:ten_a"),
            k.k("dead_order:ten_a"),
            k.k("health:ten_a"),
        ]
    };
    let mut keys: Vec<String> = shared.to_vec();
    keys.extend(own("event:evt_bad"));
    keys.extend(own("event:evt_1"));
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut args = vec!["2", "3", "600", "5555", "", "7200"];
    for (event, target) in [("evt_bad", "tgt_1"), ("evt_1", "tgt_1")] {
        args.extend([
            event,
            target,
            "s|1|200||9|0|",
            r#"{"n":1}"#,
            "done",
            "",
            if event == "evt_1" {
                "evt_1:tgt_1"
            } else {
                "evt_bad:tgt_1"
            },
            "",
            "",
            "",
            "",
            "12",
            "12",
            "",
        ]);
    }
    let answer = run(&r, &scripts::RECORD, &keys, &args).await;
    assert_eq!(answer["recorded"], 1, "{answer}");
    assert_eq!(
        answer["failed"][0][0], 1,
        "the first outcome, 1-based: {answer}"
    );
    assert!(
        answer["failed"][0][1]
            .as_str()
            .unwrap()
            .contains("WRONGTYPE"),
        "{answer}"
    );
    // The good outcome is recorded and counted once; the refused one counted not at all.
    assert_eq!(
        hash(&r, &k.k("event:evt_1")).await["d:tgt_1"],
        "s|1|200||9|0|"
    );
    assert_eq!(hash(&r, &k.k("stats:ten_a")).await["succeeded"], "1");
}

#[tokio::test]
async fn signal_fails_a_subject_whose_keys_are_of_another_type_alone() {
    let r = redis().await;
    let w = Watch::new("signal-protected");
    assert!(w.describe(&r, "billing", "1000").await);
    let _: () = r
        .set(w.k.k("checks:mon_1"), "corrupt", None, None, false)
        .await
        .unwrap();
    let answer = w.signal(&r, "heartbeat", "up", "monitor").await;
    assert!(
        answer["failed"]
            .as_str()
            .unwrap_or_default()
            .contains("WRONGTYPE"),
        "{answer}"
    );
}

#[tokio::test]
async fn signin_attempt_counts_before_the_check_and_refunds_a_success() {
    let r = redis().await;
    let k = Keys::new("signin");
    let (addr, cred) = (k.k("addr"), k.k("cred"));
    let take = |keys: Vec<String>| {
        let r = r.clone();
        async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            run(&r, &scripts::SIGNIN_ATTEMPT, &keys, &["take", "2", "60000"]).await
        }
    };
    assert_eq!(
        take(vec![addr.clone(), cred.clone()]).await["allowed"],
        true
    );
    assert_eq!(take(vec![addr.clone()]).await["allowed"], true);
    let third = take(vec![addr.clone(), cred.clone()]).await;
    assert_eq!(third["allowed"], false, "{third}");
    let wait = third["wait_ms"].as_u64().unwrap();
    assert!((1..=60_000).contains(&wait), "{wait}");
    // Every counter has its window, set with its first count.
    let ttl: i64 = r.pttl(&cred).await.unwrap();
    assert!(ttl > 0, "{ttl}");
    // A success gives its attempt back; a missing counter is not made one without a TTL.
    let _ = run(
        &r,
        &scripts::SIGNIN_ATTEMPT,
        &[&cred, &k.k("gone")],
        &["refund", "0", "0"],
    )
    .await;
    let n: Option<i64> = r.get(&cred).await.unwrap();
    assert_eq!(n, Some(1));
    assert!(!exists(&r, &k.k("gone")).await);
}

// ---- routing: the event catalogue, batched targets ----

#[tokio::test]
async fn save_event_type_writes_over_what_was_read_only_and_keeps_names_apart_by_case() {
    let r = redis().await;
    let k = Keys::new("event_types");
    let (catalogue, tenant) = (k.k("event_types"), k.k("tenant"));
    let save = |name: &'static str, doc: &'static str, expected: &'static str| {
        let (r, catalogue, tenant) = (r.clone(), catalogue.clone(), tenant.clone());
        async move {
            run(
                &r,
                &scripts::SAVE_EVENT_TYPE,
                &[&catalogue, &tenant],
                &[name, doc, expected, "2"],
            )
            .await
        }
    };
    assert_eq!(save("a.b", "{}", "").await["status"], "no_tenant");
    let _: () = r.hset(&tenant, ("name", "t")).await.unwrap();
    assert_eq!(save("a.b", r#"{"v":1}"#, "").await["status"], "ok");
    assert_eq!(
        save("a.b", r#"{"v":2}"#, "").await["status"],
        "changed",
        "it exists now"
    );
    assert_eq!(
        save("a.b", r#"{"v":2}"#, r#"{"v":9}"#).await["status"],
        "changed",
        "not what was read"
    );
    assert_eq!(
        save("a.b", r#"{"v":2}"#, r#"{"v":1}"#).await["status"],
        "ok"
    );
    let clash = save("A.B", "{}", "").await;
    assert_eq!(clash["status"], "clash");
    assert_eq!(clash["other"], "a.b");
    assert_eq!(save("c.d", "{}", "").await["status"], "ok");
    assert_eq!(
        save("e.f", "{}", "").await["status"],
        "full",
        "at most 2 here"
    );
    let stored = hash(&r, &catalogue).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored["a.b"], r#"{"v":2}"#);
}

#[tokio::test]
async fn gather_puts_each_event_once_and_schedules_the_cut_by_size_or_time() {
    let r = redis().await;
    let k = Keys::new("gather");
    let (gathering, list) = (k.k("gathering"), k.k("gather:tgt_a"));
    let (rec1, rec2, rec3) = (k.k("ev:1"), k.k("ev:2"), k.k("ev:3"));
    let gather = |recs: Vec<String>, ids: Vec<&'static str>, max: &'static str| {
        let (r, gathering, list) = (r.clone(), gathering.clone(), list.clone());
        async move {
            let mut keys = vec![gathering];
            let mut args = vec![ids.len().to_string(), "1000".to_owned()];
            for (rec, id) in recs.iter().zip(&ids) {
                keys.push(rec.clone());
                keys.push(list.clone());
                args.extend([
                    id.to_string(),
                    "tgt_a".into(),
                    "ten_x|tgt_a".into(),
                    format!("body-{id}\u{0}\u{ff}"),
                    "application/json".into(),
                    max.into(),
                    "5000".into(),
                ]);
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&r, &scripts::GATHER, &keys, &args).await
        }
    };
    let a = gather(
        vec![rec1.clone(), rec2.clone()],
        vec!["evt_1", "evt_2"],
        "3",
    )
    .await;
    assert_eq!(a["gathered"], 2);
    let due: Option<f64> = r.zscore(&gathering, "ten_x|tgt_a").await.unwrap();
    assert_eq!(due, Some(6000.0), "its first event's time + max_wait_ms");
    // Sent again (a lost reply, an entry read twice): nothing is gathered twice.
    let again = gather(
        vec![rec1.clone(), rec2.clone()],
        vec!["evt_1", "evt_2"],
        "3",
    )
    .await;
    assert_eq!(again["gathered"], 0);
    let ids: Vec<String> = r.lrange(&list, 0, -1).await.unwrap();
    assert_eq!(ids, vec!["evt_1", "evt_2"]);
    assert_eq!(
        hash(&r, &rec1).await["ct"],
        "application/json",
        "the body is kept with its content type"
    );
    assert!(hash(&r, &rec1).await["body"].starts_with("body-evt_1"));
    // The batch is full: due at once.
    gather(vec![rec3.clone()], vec!["evt_3"], "3").await;
    let due: Option<f64> = r.zscore(&gathering, "ten_x|tgt_a").await.unwrap();
    assert_eq!(due, Some(1000.0));
}

#[tokio::test]
async fn cut_batch_takes_at_most_a_batch_in_order_and_reschedules_the_rest() {
    let r = redis().await;
    let k = Keys::new("cut");
    let (list, gathering, batches) = (k.k("gather:tgt_a"), k.k("gathering"), k.k("batches"));
    let _: i64 = r
        .rpush(&list, vec!["e1", "e2", "e3", "e4", "e5"])
        .await
        .unwrap();
    let _: i64 = r
        .zadd(&gathering, None, None, false, false, (0.0, "t|tgt_a"))
        .await
        .unwrap();
    let cut = |batch: &'static str, key: String| {
        let (r, list, gathering, batches) =
            (r.clone(), list.clone(), gathering.clone(), batches.clone());
        async move {
            run(
                &r,
                &scripts::CUT_BATCH,
                &[&list, &gathering, &batches, &key],
                &["t|tgt_a", batch, "ten_t", "tgt_a", "2", "500", "1000"],
            )
            .await
        }
    };
    let b1 = k.k("batch:b1");
    assert_eq!(cut("bat_1", b1.clone()).await["size"], 2);
    let record = hash(&r, &b1).await;
    assert_eq!(record["events"], "e1,e2");
    assert_eq!(record["target"], "tgt_a");
    assert_eq!(record["attempts"], "0");
    let due: Option<f64> = r.zscore(&batches, "bat_1").await.unwrap();
    assert_eq!(due, Some(1000.0), "due to be sent now");
    let next: Option<f64> = r.zscore(&gathering, "t|tgt_a").await.unwrap();
    assert_eq!(next, Some(1000.0), "three left: a whole batch, due at once");
    assert_eq!(cut("bat_2", k.k("batch:b2")).await["size"], 2);
    let next: Option<f64> = r.zscore(&gathering, "t|tgt_a").await.unwrap();
    assert_eq!(next, Some(1500.0), "one left: it waits max_wait_ms");
    assert_eq!(cut("bat_3", k.k("batch:b3")).await["size"], 1);
    let next: Option<f64> = r.zscore(&gathering, "t|tgt_a").await.unwrap();
    assert_eq!(next, None, "nothing left to cut");
    assert_eq!(cut("bat_4", k.k("batch:b4")).await["size"], 0);
    assert!(!exists(&r, &k.k("batch:b4")).await, "no empty batch");
}

#[test]
fn every_script_of_the_registry_is_exercised_here() {
    let source = include_str!("scripts.rs");
    for script in scripts::ALL {
        let name = script.name().to_uppercase();
        assert!(
            source.contains(&format!("scripts::{name}")),
            "{} has no test in tests/scripts.rs",
            script.name()
        );
    }
}

/// One `record` call of outcomes `(target, kind, attempt text)` of tenant a at `now`, each with
/// an attempt of 10 ms; the tenant's health hash after it.
async fn record_health(
    r: &Client,
    k: &Keys,
    now: u64,
    outcomes: &[(&str, &str, &str)],
) -> HashMap<String, String> {
    let gated: Vec<_> = outcomes.iter().map(|(t, k, a)| (*t, *k, *a, "")).collect();
    record_gated(r, k, now, &gated).await.1
}

/// The same with each outcome's `gate` argument; the answer and the health hash.
async fn record_gated(
    r: &Client,
    k: &Keys,
    now: u64,
    outcomes: &[(&str, &str, &str, &str)],
) -> (Json, HashMap<String, String>) {
    let mut keys = vec![
        k.k("retries"),
        k.k("dead_total"),
        k.k("unfinished"),
        k.k("ship"),
        k.k("series_all"),
    ];
    let now = now.to_string();
    let mut args: Vec<String> = [
        outcomes.len().to_string().as_str(),
        "3",
        "600",
        now.as_str(),
        "",
        "7200",
    ]
    .map(String::from)
    .to_vec();
    for (target, kind, attempt, gate) in outcomes {
        keys.extend([
            k.k("event:evt_1"),
            k.k("stats:ten_a"),
            k.k("dead:ten_a"),
            k.k("series:ten_a"),
            k.k("dead_order:ten_a"),
            k.k("health:ten_a"),
        ]);
        let member = format!("evt_1:{target}");
        args.extend(
            [
                "evt_1",
                target,
                "r|1|500|9|9|0|",
                attempt,
                kind,
                "9000",
                &member,
                "body",
                "",
                "dl_1",
                "{}",
                "10",
                "10",
                gate,
            ]
            .map(String::from),
        );
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let answer = run(r, &scripts::RECORD, &keys, &args).await;
    assert_eq!(answer["recorded"], outcomes.len(), "{answer}");
    // cjson writes an empty list as `{}`.
    assert!(
        [json!({}), json!([])].contains(&answer["counters_failed"]),
        "{answer}"
    );
    let health = hash(r, &k.k("health:ten_a")).await;
    (answer, health)
}

/// A gate argument: class, probe, pause, then a breaker of a 60 s window, 4 requests, ratio
/// 0.5, open 30 s doubling to 100 s, two probes, disabling after `disable_ms`.
fn gate(class: &str, probe: bool, pause: u64, disable_ms: u64) -> String {
    format!(
        "{class},{},{pause},1,60000,4,0.5000,30000,100000,2,{disable_ms},7",
        u8::from(probe)
    )
}

async fn probe(r: &Client, k: &Keys, now: u64) -> String {
    run(
        r,
        &scripts::BREAKER_PROBE,
        &[&k.k("health:ten_a")],
        &["tgt_1", &now.to_string(), "2", "5000"],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_owned()
}

#[tokio::test]
async fn record_opens_a_breaker_at_its_ratio_and_probes_close_or_reopen_it() {
    let r = redis().await;
    let k = Keys::new("record-breaker");
    let _: () = r.hset(k.k("event:evt_1"), ("entry", "1-0")).await.unwrap();
    let t0 = 6_000_000u64; // a window start: 100 windows of 60 s
    let (f, o, n) = (
        gate("f", false, 0, 0),
        gate("o", false, 0, 0),
        gate("n", false, 0, 0),
    );
    let at = "tgt_1|1|1|500|10|4|boom";

    // Three attempts, two failed, and a 429 that counts for nothing: below min_requests.
    let (answer, h) = record_gated(
        &r,
        &k,
        t0,
        &[
            ("tgt_1", "retry", at, &f),
            ("tgt_1", "done", at, &o),
            ("tgt_1", "retry", at, &f),
            ("tgt_1", "retry", at, &n),
        ],
    )
    .await;
    assert_eq!(h["tgt_1:bw"], format!("{t0}:3:2:0:0"));
    assert_eq!(h["tgt_1:cl"], "7", "the dispatcher's in-flight limit");
    assert!(!h.contains_key("tgt_1:br"), "still closed");
    assert!(
        [json!({}), json!([])].contains(&answer["gates"]),
        "{answer}"
    );
    assert_eq!(probe(&r, &k, t0).await, "c");

    // The fourth attempt, a failure: 3 of 4 failed, over 0.5: open for 30 s.
    let t1 = t0 + 1_000;
    let (answer, h) = record_gated(&r, &k, t1, &[("tgt_1", "retry", at, &f)]).await;
    assert_eq!(h["tgt_1:br"], format!("o:{t1}:{}:1:0:0", t1 + 30_000));
    assert!(!h.contains_key("tgt_1:bw"), "the window starts again");
    assert_eq!(
        answer["gates"][0],
        json!(["tgt_1", "o", t1, t1 + 30_000, 1, "opened", 0, 0, t0])
    );
    // Attempts that were in flight while it opened count for nothing.
    let (answer, _) = record_gated(&r, &k, t1 + 5, &[("tgt_1", "retry", at, &f)]).await;
    assert_eq!(answer["gates"][0][5], "", "{answer}");

    // Open: deliveries wait until its time; then two probes, no third.
    assert_eq!(
        probe(&r, &k, t1 + 29_999).await,
        format!("o:{}", t1 + 30_000)
    );
    let t2 = t1 + 30_000;
    assert_eq!(probe(&r, &k, t2).await, "p");
    assert_eq!(probe(&r, &k, t2 + 1).await, "p");
    assert_eq!(probe(&r, &k, t2 + 2).await, format!("h:{}", t2 + 5_000));
    // A grant not answered within the probe timeout is taken back.
    assert_eq!(probe(&r, &k, t2 + 5_000).await, "p");

    // One probe fails: open again, for twice as long.
    let pf = gate("f", true, 0, 0);
    let t3 = t2 + 6_000;
    let (answer, h) = record_gated(&r, &k, t3, &[("tgt_1", "retry", at, &pf)]).await;
    assert_eq!(h["tgt_1:br"], format!("o:{t3}:{}:2:0:0", t3 + 60_000));
    assert_eq!(answer["gates"][0][5], "reopened");
    // And once more: capped at 100 s.
    let t4 = t3 + 60_000;
    assert_eq!(probe(&r, &k, t4).await, "p");
    let (_, h) = record_gated(&r, &k, t4 + 1, &[("tgt_1", "retry", at, &pf)]).await;
    assert_eq!(
        h["tgt_1:br"],
        format!("o:{}:{}:3:0:0", t4 + 1, t4 + 1 + 100_000)
    );

    // Two successful probes close it; one is not enough.
    let t5 = t4 + 1 + 100_000;
    assert_eq!(probe(&r, &k, t5).await, "p");
    assert_eq!(probe(&r, &k, t5).await, "p");
    let po = gate("o", true, 0, 0);
    let (answer, h) = record_gated(&r, &k, t5 + 1, &[("tgt_1", "done", at, &po)]).await;
    assert!(h["tgt_1:br"].starts_with("h:"), "{h:?}");
    assert_eq!(answer["gates"][0][1], "h");
    let (answer, h) = record_gated(&r, &k, t5 + 2, &[("tgt_1", "done", at, &po)]).await;
    assert!(h["tgt_1:br"].starts_with("c:"), "{h:?}");
    assert_eq!(answer["gates"][0][5], "closed");
    assert_eq!(probe(&r, &k, t5 + 3).await, "c");

    // A 429's pause is kept and reported until it ends.
    let paused = gate("n", false, t5 + 10_000, 0);
    let (answer, h) = record_gated(&r, &k, t5 + 4, &[("tgt_1", "retry", at, &paused)]).await;
    assert_eq!(h["tgt_1:pause"], (t5 + 10_000).to_string());
    assert_eq!(answer["gates"][0][7], t5 + 10_000);

    // Read as the API reads it.
    let health = estafeta::store::deliveries::health::parse(h, t5 + 5);
    let one = &health[&estafeta::model::TargetId::parse("tgt_1").unwrap()];
    assert_eq!(
        one.breaker.state,
        estafeta::store::deliveries::gate::BreakerState::Closed
    );
    assert_eq!(one.paused_until_ms, Some(t5 + 10_000));
}

#[tokio::test]
async fn record_reports_a_target_failing_longer_than_its_disable_after() {
    let r = redis().await;
    let k = Keys::new("record-disable");
    let _: () = r.hset(k.k("event:evt_1"), ("entry", "1-0")).await.unwrap();
    let t0 = 6_000_000u64;
    let at = "tgt_1|1|1|500|10|4|boom";
    let f = gate("f", false, 0, 10_000);
    let mut answer = json!(null);
    for i in 0..4 {
        answer = record_gated(&r, &k, t0 + i, &[("tgt_1", "retry", at, &f)])
            .await
            .0;
    }
    assert_eq!(answer["gates"][0][5], "opened");
    assert_eq!(answer["gates"][0][6], 0, "not failing long enough yet");
    // Its probe fails ten seconds after the first failure: due to be disabled.
    assert_eq!(probe(&r, &k, t0 + 30_003).await, "p");
    let pf = gate("f", true, 0, 10_000);
    let (answer, _) = record_gated(&r, &k, t0 + 30_004, &[("tgt_1", "retry", at, &pf)]).await;
    assert_eq!(answer["gates"][0][6], 1, "{answer}");
    assert_eq!(answer["gates"][0][8], t0, "failing since its first failure");
    // With the breaker off, failing that long is enough.
    let k = Keys::new("record-disable-off");
    let _: () = r.hset(k.k("event:evt_1"), ("entry", "1-0")).await.unwrap();
    let off = gate("f", false, 0, 10_000).replacen(",1,60000", ",0,60000", 1);
    record_gated(&r, &k, t0, &[("tgt_1", "retry", at, &off)]).await;
    let (answer, _) = record_gated(&r, &k, t0 + 10_000, &[("tgt_1", "retry", at, &off)]).await;
    assert_eq!(answer["gates"][0][6], 1, "{answer}");
}

#[tokio::test]
async fn rate_limit_lets_the_burst_through_then_one_per_period() {
    let r = redis().await;
    let k = Keys::new("rate");
    let key = k.k("rate:tgt_1");
    // 10 per second (100 ms = 100,000 µs), burst 3.
    let mut waits = Vec::new();
    for _ in 0..5 {
        waits.push(
            run(&r, &scripts::RATE_LIMIT, &[&key], &["100000", "3"])
                .await
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(&waits[..3], &[0, 0, 0], "the burst goes at once: {waits:?}");
    // The fourth waits for the first cell to free: most of a period, at most one.
    assert!(waits[3] > 50_000 && waits[3] <= 100_000, "{waits:?}");
    // Had the refused one taken a cell, the next would wait a period more.
    assert!(
        waits[4] <= waits[3],
        "a refused one takes no cell: {waits:?}"
    );
    let ttl: i64 = r.pttl(&key).await.unwrap();
    assert!(ttl > 0 && ttl <= 1_400, "the key expires once idle: {ttl}");
}

#[tokio::test]
async fn record_keeps_each_targets_buckets_newest_attempt_and_failing_since() {
    let r = redis().await;
    let k = Keys::new("record-health");
    let _: () = r.hset(k.k("event:evt_1"), ("entry", "1-0")).await.unwrap();
    let bucket = 600_000u64;
    let t0 = 1_000 * bucket + 5;

    // Two failures in one call, one success of another target.
    let h = record_health(
        &r,
        &k,
        t0,
        &[
            ("tgt_1", "retry", "tgt_1|1|1|500|10|4|boom"),
            ("tgt_2", "done", "tgt_2|1|1|200|10||"),
            ("tgt_1", "dead", "tgt_1|2|2|503|10|4|down"),
        ],
    )
    .await;
    let slot = |n: u64| format!("tgt_1:b{}", n % 12);
    assert_eq!(h[&slot(1_000)], format!("{}:2:2", 1_000 * bucket));
    assert_eq!(
        h["tgt_1:last"], "tgt_1|2|2|503|10|4|down",
        "the newest attempt"
    );
    assert_eq!(h["tgt_1:fail_since"], t0.to_string());
    assert!(!h.contains_key("tgt_1:ok_at"));
    assert_eq!(h["tgt_2:ok_at"], t0.to_string());
    assert!(!h.contains_key("tgt_2:fail_since"));

    // Later failures keep the first failure's time and add to the same bucket.
    let t1 = t0 + 1_000;
    let h = record_health(&r, &k, t1, &[("tgt_1", "retry", "tgt_1|3|3|500|10|1|x")]).await;
    assert_eq!(h["tgt_1:fail_since"], t0.to_string());
    assert_eq!(h[&slot(1_000)], format!("{}:3:3", 1_000 * bucket));

    // A success then a failure in one call: failing since this call, delivered at it too.
    let t2 = t0 + bucket;
    let h = record_health(
        &r,
        &k,
        t2,
        &[
            ("tgt_1", "done", "tgt_1|4|4|200|10||"),
            ("tgt_1", "retry", "tgt_1|5|5|500|10|1|y"),
        ],
    )
    .await;
    assert_eq!(h["tgt_1:fail_since"], t2.to_string());
    assert_eq!(h["tgt_1:ok_at"], t2.to_string());
    assert_eq!(h[&slot(1_001)], format!("{}:2:1", 1_001 * bucket));

    // A success clears the failure.
    let h = record_health(&r, &k, t2 + 1, &[("tgt_1", "done", "tgt_1|6|6|200|10||")]).await;
    assert!(!h.contains_key("tgt_1:fail_since"));
    assert_eq!(h[&slot(1_001)], format!("{}:3:1", 1_001 * bucket));

    // Two hours on, the ring slot of the first bucket starts again rather than adding to it.
    let t3 = t0 + 12 * bucket;
    let h = record_health(&r, &k, t3, &[("tgt_1", "done", "tgt_1|7|7|200|10||")]).await;
    assert_eq!(h[&slot(1_012)], format!("{}:1:0", 1_012 * bucket));

    // Read as the API reads it: only the last hour counts.
    let health = estafeta::store::deliveries::health::parse(h, t3 + 1);
    let one = &health[&estafeta::model::TargetId::parse("tgt_1").unwrap()];
    assert_eq!((one.attempts, one.failed), (1, 0), "{one:?}");
    assert_eq!(one.last_success_ms, Some(t3));
    assert_eq!(one.last.as_ref().map(|a| a.status), Some(Some(200)));
}
