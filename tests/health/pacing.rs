//! A target's pace, on real sinks: its rate limit holds across three dispatchers sharing one
//! Redis (within 10 % of the limit), and a 429 with `Retry-After`, in seconds or as an HTTP
//! date, holds every delivery to that target, not only the one answered.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::support::sink::{Reply, Sink};
use crate::support::{Gateway, RedisServer, certs, eventually, unique_prefix};

const FAST: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 20, multiplier = 1.0, max_delay_ms = 20, max_attempts = 20 }
"#;

#[tokio::test]
async fn a_rate_limit_holds_across_three_dispatchers() {
    let prefix = unique_prefix("pace");
    let redis = RedisServer::shared().url();
    let certs = Arc::new(certs());
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Gateway::start_full(&redis, &prefix, FAST, certs.clone()).await);
    }
    let gw = &gateways[0];
    let sink = Sink::start().await;
    let (tenant, token) = gw.tenant("Paced Ltd").await;
    let per_second = 20.0;
    let burst = 2;
    gw.create_target(
        &tenant,
        json!({"url": sink.url("/paced"), "events": ["*"],
               "rate_limit": {"per_second": per_second, "burst": burst}}),
    )
    .await;
    let n = 160;
    for i in 0..n {
        gateways[i % 3]
            .post_ok(&token, "tick", format!("{i}").as_bytes())
            .await;
    }
    eventually(Duration::from_secs(60), "every event delivered", || async {
        sink.count("/paced") >= n
    })
    .await;
    let got = sink.received("/paced");
    assert_eq!(
        got.len(),
        n,
        "each event once: nothing over the limit was dropped"
    );
    // Beyond the first burst, cells come at the limit's pace.
    let first = got[burst].at;
    let last = got[n - 1].at;
    let rate = (n - 1 - burst) as f64 / (last - first).as_secs_f64();
    assert!(
        (per_second * 0.9..=per_second * 1.1).contains(&rate),
        "{rate:.2} deliveries/s against a limit of {per_second}"
    );
    let metrics = gw
        .metrics_showing("estafeta_deliveries_held_total{reason=\"rate_limit\"}")
        .await;
    assert!(
        metrics.contains("estafeta_deliveries_held_total{reason=\"rate_limit\"}"),
        "{metrics}"
    );
}

/// Posts one event, lets the target answer it 429 with `retry_after`, then posts three more
/// at once: none of the four reaches the target again before `not_before(the 429's arrival)`.
async fn retry_after_holds_the_target(
    name: &str,
    retry_after: Vec<u8>,
    not_before: impl Fn(Instant) -> Instant,
) {
    let gw = Gateway::start_with(&RedisServer::shared().url(), &unique_prefix(name), FAST).await;
    let sink = Sink::start().await;
    sink.plan(
        "/busy",
        vec![Reply::Headers(429, vec![("retry-after", retry_after)])],
        Reply::Status(200),
    );
    let (tenant, token) = gw.tenant("Busy Ltd").await;
    gw.create_target(&tenant, json!({"url": sink.url("/busy"), "events": ["*"]}))
        .await;
    let first = gw.post_ok(&token, "a", b"0").await;
    eventually(Duration::from_secs(10), "the 429", || async {
        sink.count("/busy") == 1
    })
    .await;
    let mut events = vec![first];
    for i in 1..4 {
        events.push(gw.post_ok(&token, "a", format!("{i}").as_bytes()).await);
    }
    // The new ones wait for the pause, without an attempt.
    for e in &events[1..] {
        eventually(
            Duration::from_secs(10),
            "a new event held by the pause",
            || async {
                let d = gw.get_as(&token, &format!("/v1/events/{e}")).await.json()["deliveries"][0]
                    .clone();
                d["state"] == "retrying"
                    && d["attempts"] == 0
                    && d["last_error"]
                        .as_str()
                        .is_some_and(|s| s.contains("Retry-After"))
            },
        )
        .await;
    }
    eventually(Duration::from_secs(20), "all four delivered", || async {
        sink.count("/busy") == 5
    })
    .await;
    let got = sink.received("/busy");
    let bound = not_before(got[0].at);
    for r in &got[1..] {
        assert!(
            r.at >= bound,
            "a delivery {:?} after the 429, {:?} before the pause's end",
            r.at - got[0].at,
            bound - r.at
        );
    }
}

#[tokio::test]
async fn retry_after_in_seconds_holds_every_delivery_of_the_target() {
    // The gateway reads the answer after the sink saw the request: two seconds from then.
    retry_after_holds_the_target("ra_secs", b"2".to_vec(), |at| at + Duration::from_secs(2)).await;
}

#[tokio::test]
async fn retry_after_as_an_http_date_holds_every_delivery_of_the_target() {
    // An HTTP date holds whole seconds: the pause ends at the date as written, read on
    // this machine's clock (the gateway's, here).
    let (sys0, inst0) = (SystemTime::now(), Instant::now());
    let written = httpdate::fmt_http_date(sys0 + Duration::from_secs(3));
    let until = httpdate::parse_http_date(&written).unwrap();
    let end = inst0 + until.duration_since(sys0).unwrap_or_default();
    // Millisecond rounding of the gateway's time, and nothing more.
    let end = end - Duration::from_millis(5);
    retry_after_holds_the_target("ra_date", written.into_bytes(), move |_| end).await;
}
