//! Overdue-checker cost: fills a Redis with `monitors` watched monitors (through the same
//! signal script heartbeats use), `overdue_pct` % of them already past their deadline, then
//! times checker passes and counts the Redis commands each one sends, and the commands Redis ran
//! for it (`total_commands_processed` from `INFO stats`, before and after, less the `INFO`
//! itself; it includes the commands run inside scripts).
//!
//! `checker_bench <redis url> <monitors> <overdue percent>`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use estafeta::model::time::Clock;
use estafeta::model::{TenantId, WatchKind};
use estafeta::monitors::checker::check_once;
use estafeta::monitors::state::{Signal, Subject, WatchSettings, Watches};
use estafeta::redis::keyspace::Keyspace;
use estafeta::redis::keyspace::shard_of;
use fred::prelude::*;
use futures_util::StreamExt;

const SHARDS: u16 = 16;

async fn commands(redis: &Client) -> u64 {
    let info: String = redis
        .info(Some(fred::types::InfoKind::Stats))
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

async fn timed_pass(redis: &Client, watches: &Watches, now: u64, label: &str) {
    let before = commands(redis).await;
    let started = Instant::now();
    let pass = check_once(watches, SHARDS, now).await;
    let took = started.elapsed();
    // The second INFO is counted in the total; the first was counted before `before` was read.
    let issued = commands(redis).await - before - 1;
    println!(
        "{label:<42} {:>8.2} ms {:>6} sent {:>7} run by Redis {:>6} timed out",
        took.as_secs_f64() * 1000.0,
        pass.commands,
        issued,
        pass.timed_out
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = &args[1];
    let monitors: usize = args[2].parse().unwrap();
    let overdue_pct: f64 = args[3].parse().unwrap();
    let redis = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    redis.init().await.unwrap();
    estafeta::redis::scripts::preload(&redis).await.unwrap();
    let tasks = tokio_util::task::TaskTracker::new();
    let settings = WatchSettings {
        checks_kept: 50,
        incidents_kept: 100,
        deadline: Duration::from_secs(5),
        logged: false,
        clock: Clock::system(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let watches = Watches::new(
        redis.clone(),
        Keyspace::new("cbench"),
        settings,
        &tasks,
        stop,
    );

    let overdue_every = (100.0 / overdue_pct).round().max(1.0) as usize;
    let started = Instant::now();
    let before_fill = Clock::system().now_ms();
    futures_util::stream::iter(0..monitors)
        .map(|i| {
            let watches = watches.clone();
            async move {
                let id = format!("mon_{i:07}");
                let tenant = TenantId::parse(&format!("ten_{}", i % 1000)).unwrap();
                let window = if i % overdue_every == 0 {
                    Duration::from_millis(1)
                } else {
                    Duration::from_secs(3600)
                };
                let subject = Subject {
                    kind: WatchKind::Monitor,
                    id: &id,
                    tenant: &tenant,
                    name: &id,
                    shard: shard_of(&tenant, SHARDS),
                    window,
                };
                watches.describe(subject).await.unwrap();
                watches.signal(subject, &Signal::Heartbeat).await.unwrap();
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
    let fill = started.elapsed();
    println!(
        "filled {monitors} monitors ({:.1} % overdue) in {:.1} s (created, then one heartbeat each): {:.0}/s",
        100.0 / overdue_every as f64,
        fill.as_secs_f64(),
        monitors as f64 / fill.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_millis(20)).await;

    timed_pass(
        &redis,
        &watches,
        before_fill,
        "pass between deadlines (nothing overdue)",
    )
    .await;
    timed_pass(
        &redis,
        &watches,
        Clock::system().now_ms(),
        "pass with the overdue monitors",
    )
    .await;
    timed_pass(
        &redis,
        &watches,
        Clock::system().now_ms(),
        "next pass (all handled)",
    )
    .await;
    let memory: String = redis
        .info(Some(fred::types::InfoKind::Memory))
        .await
        .unwrap();
    if let Some(m) = memory
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:"))
    {
        println!("Redis memory: {}", m.trim());
    }
}
