//! `/metrics` and `/openapi.json`, on the admin listener, without auth: the listener is meant
//! for an internal network, and neither carries tenant data.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use metrics_exporter_prometheus::PrometheusHandle;

/// Prometheus metrics (text format). Labels carry no tenant ids.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain")),
)]
pub async fn metrics(State(handle): State<PrometheusHandle>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        handle.render(),
    )
        .into_response()
}

/// This description (OpenAPI 3.1) of the edge and admin APIs.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json")),
)]
pub async fn openapi(State(document): State<Arc<String>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document.as_str().to_owned(),
    )
        .into_response()
}

/// The deployment's state: streams, consumers, Redis durability, version and configuration.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SystemStatus {
    pub version: String,
    pub redis: RedisStatus,
    pub shards: Vec<ShardStatus>,
    /// The effective configuration (TOML), secrets redacted.
    pub config: String,
}

/// Redis, and whether acknowledged events survive its crash (the start-up check's verdict).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RedisStatus {
    pub version: Option<String>,
    pub appendonly: Option<bool>,
    pub appendfsync: Option<String>,
    pub maxmemory_policy: Option<String>,
    /// `true` when acknowledged events survive a crash; `null` when it cannot be read.
    pub durable: Option<bool>,
    /// The risk, in a sentence, or why it could not be read.
    pub verdict: String,
}

/// One shard stream and its dispatch group.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ShardStatus {
    pub shard: u16,
    /// Entries in the stream.
    pub length: u64,
    /// Entries the dispatch group has not read yet.
    pub lag: Option<u64>,
    /// Entries read and not yet finished.
    pub pending: u64,
    pub consumers: Vec<ConsumerStatus>,
}

/// A dispatcher consumer of a shard.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ConsumerStatus {
    pub name: String,
    pub pending: u64,
    pub idle_ms: u64,
    /// Whether its liveness lease is held (a process is running it).
    pub alive: bool,
}

/// The deployment's state: what the console's system page shows.
#[utoipa::path(
    get,
    path = "/admin/system",
    tag = "system",
    operation_id = "system_status",
    responses((status = 200, description = "The deployment's state.", body = SystemStatus), crate::http::error::ReadErrors),
)]
pub async fn status(
    State(s): State<super::scope::ApiState>,
) -> Result<Response, crate::http::error::ApiError> {
    Ok(axum::Json(system_status(&s).await?).into_response())
}

/// `system_status`.
pub async fn system_status(
    s: &super::scope::ApiState,
) -> Result<SystemStatus, crate::http::error::ApiError> {
    let redis = s.store.redis();
    let shards = shards(s).await?;
    let redis_status = match crate::redis::connection::read_durability(redis).await {
        Ok(d) => {
            let risk = d.risk(s.system.wait_aof);
            RedisStatus {
                durable: Some(risk.is_none()),
                verdict: risk
                    .unwrap_or_else(|| "acknowledged events survive a crash of Redis".to_owned()),
                version: Some(d.version),
                appendonly: Some(d.appendonly),
                appendfsync: Some(d.appendfsync),
                maxmemory_policy: Some(d.maxmemory_policy),
            }
        }
        Err(e) => RedisStatus {
            version: None,
            appendonly: None,
            appendfsync: None,
            maxmemory_policy: None,
            durable: None,
            verdict: format!("cannot read Redis persistence settings: {e}"),
        },
    };
    Ok(SystemStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        redis: redis_status,
        shards,
        config: s.system.config_toml.clone(),
    })
}

/// Every shard stream with its dispatch group's consumers: the system page's table, and the
/// home page's backlog.
pub async fn shards(
    s: &super::scope::ApiState,
) -> Result<Vec<ShardStatus>, crate::http::error::ApiError> {
    use fred::prelude::*;
    let redis = s.store.redis();
    let keys = s.store.keyspace();
    let reader =
        crate::queue::consume::StreamReader::new(redis.clone(), keys.clone(), String::new());
    let mut shards = Vec::with_capacity(usize::from(s.shards));
    for shard in 0..s.shards {
        let length: u64 = redis.xlen(keys.stream(shard)).await.map_err(store)?;
        let consumers = reader.consumers(shard).await.unwrap_or_default();
        let mut listed = Vec::with_capacity(consumers.len());
        for c in consumers {
            let alive = reader.lease_held(&c.name).await.map_err(store)?;
            listed.push(ConsumerStatus {
                name: c.name,
                pending: c.pending,
                idle_ms: c.idle_ms,
                alive,
            });
        }
        shards.push(ShardStatus {
            shard,
            length,
            lag: reader.lag(shard).await,
            pending: listed.iter().map(|c| c.pending).sum(),
            consumers: listed,
        });
    }
    Ok(shards)
}

fn store(e: fred::error::Error) -> crate::http::error::ApiError {
    crate::store::StoreError::Redis(e).into()
}
