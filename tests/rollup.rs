//! Charts over a week: the per-minute counters live two days, so older hours are read from
//! hourly rollups that every instance writes off the delivery path, each hour once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use estafeta::crypto::Keys;
use estafeta::model::TenantId;
use estafeta::redis::keyspace::{Keyspace, shard_of};
use estafeta::store::Store;
use estafeta::store::series::HOUR_MS;
use fred::prelude::*;
use serde_json::Value as Json;
use support::now_ms;
use support::{Gateway, RedisServer, eventually, unique_prefix};

/// The harness's `queue.shards`.
const SHARDS: u16 = 4;

#[tokio::test]
async fn a_week_of_counters_reads_the_hourly_rollups_past_two_days() {
    let prefix = unique_prefix("rollup");
    let gw = Gateway::start_with(&RedisServer::shared().url(), &prefix, "").await;
    let (tenant, token) = gw.tenant("Week Ltd").await;
    let (other, _) = gw.tenant("Other Ltd").await;
    for _ in 0..3 {
        gw.post_ok(&token, "x.y", b"{}").await;
    }
    let week = format!("/admin/tenants/{tenant}/stats/series?minutes=10080");
    eventually(
        Duration::from_secs(10),
        "this hour's events counted",
        || async {
            let v = gw.admin("GET", &week, None).await.json();
            v["data"][167]["received"] == 3
        },
    )
    .await;

    // An hour three days ago, as the dispatch path wrote it then.
    let redis = RedisServer::shared().client().await;
    let keys = Keyspace::new(&prefix);
    let id = TenantId::parse(&tenant).unwrap();
    let shard = shard_of(&id, SHARDS);
    let now = now_ms();
    let old = now / HOUR_MS - 72;
    let minutes = keys.series(shard, &id, old);
    let _: () = redis
        .hset(
            &minutes,
            [
                ("5:r", "7"),
                ("6:r", "2"),
                ("6:s", "4"),
                ("6:a", "5"),
                ("6:l", "50"),
            ],
        )
        .await
        .unwrap();
    let all = keys.series_all(shard, old);
    let _: () = redis.hset(&all, [("5:r", "9")]).await.unwrap();
    let store = Store::new(
        redis.clone(),
        keys.clone(),
        Arc::new(Keys::derive(&[7; 32])),
    );
    // Rolled twice (two instances, or a crash before the marker): the same sums, not double.
    store.roll_up(SHARDS, old).await.unwrap();
    store.roll_up(SHARDS, old).await.unwrap();
    // Past its two days the per-minute hash is gone; the rollup answers for it.
    let _: () = redis.del(&minutes).await.unwrap();
    let _: () = redis.del(&all).await.unwrap();

    let v: Json = gw.admin("GET", &week, None).await.json();
    assert_eq!(v["step_minutes"], 60);
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 168);
    let row = rows
        .iter()
        .find(|r| r["minute_ms"] == old * HOUR_MS)
        .expect("the old hour's row");
    assert_eq!(row["received"], 9, "{row}");
    assert_eq!(row["succeeded"], 4);
    assert_eq!(
        (row["attempts"].clone(), row["latency_ms_sum"].clone()),
        (5.into(), 50.into())
    );
    assert_eq!(
        rows[167]["received"], 3,
        "the current hour, from the minutes"
    );
    let other_week = format!("/admin/tenants/{other}/stats/series?minutes=10080");
    let theirs: Json = gw.admin("GET", &other_week, None).await.json();
    assert!(
        theirs["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["received"] == 0),
        "another tenant's rollups are its own: {theirs}"
    );
    let total: Json = gw
        .admin("GET", "/admin/stats/series?minutes=10080", None)
        .await
        .json();
    let row = total["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["minute_ms"] == old * HOUR_MS)
        .unwrap();
    assert_eq!(row["received"], 9, "the shard-wide rollup: {row}");

    // Each finished hour is rolled once across instances: the gateway's own pass and ours
    // share the markers, and a second pass finds nothing left.
    store.roll_up_due(SHARDS, now).await.unwrap();
    assert_eq!(store.roll_up_due(SHARDS, now).await.unwrap(), 0);
    let done: Option<String> = redis
        .get(keys.rollup_marker(now / HOUR_MS - 2))
        .await
        .unwrap();
    assert_eq!(done.as_deref(), Some("done"));

    for bad in ["minutes=10081", "minutes=0", "hours=2"] {
        let r = gw
            .admin(
                "GET",
                &format!("/admin/tenants/{tenant}/stats/series?{bad}"),
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_query");
    }
    gw.stop().await.unwrap();
}
