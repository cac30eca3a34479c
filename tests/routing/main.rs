//! Routing, against a real Redis and real sinks: which targets receive an event beyond its
//! type and in which shape.
//!
//! - [`filters`]: payload filters, and trying them on stored events;
//! - [`kept_headers`]: the ingest headers a tenant keeps, seen by filters and views;
//! - [`transforms`]: jq transformations: reshaped and cancelled deliveries, the sandbox,
//!   versions and simulations;
//! - [`sandbox`]: the jq pool itself: runs in flight per process, and those behind a lost one;
//! - [`batches`]: batched deliveries by size and by time, retried whole, bounded settings;
//! - [`status_maps`]: monitors' jq status maps over Alertmanager, Grafana and GitHub payloads;
//! - [`catalogue`]: the event catalogue (types, schemas, import and export) and ingest held
//!   to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod batches;
mod catalogue;
mod filters;
mod kept_headers;
mod sandbox;
mod status_maps;
mod transforms;

use serde_json::{Value as Json, json};
use support::sink::Sink;
use support::{Gateway, RedisServer, unique_prefix};

const FAST: &str = r#"
[dispatch]
request_timeout_ms = 1000
retry_poll_ms = 20
retry = { initial_delay_ms = 50, multiplier = 2.0, max_delay_ms = 200, max_attempts = 2 }
"#;

async fn gateway(name: &str) -> Gateway {
    Gateway::start_with(&RedisServer::shared().url(), &unique_prefix(name), FAST).await
}

async fn create(gw: &Gateway, tenant: &str, body: Json) -> support::http::Response {
    gw.admin(
        "POST",
        &format!("/admin/tenants/{tenant}/targets"),
        Some(body),
    )
    .await
}

/// The bodies `path` received, as text, in arrival order.
fn bodies(sink: &Sink, path: &str) -> Vec<String> {
    sink.received(path)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}
