//! Liveness and readiness, on every listener.
//!
//! `/healthz` answers 200 while the process serves at all. `/readyz` answers 200 only once
//! start-up has finished, before shutdown has begun, and while Redis takes a write in time (a
//! `SET` with a short TTL: a `PING` still answers while Redis refuses writes at `maxmemory`):
//! a load balancer stops routing to an instance that could only answer 503. Readiness moves one
//! way only: starting → ready → draining; a process never becomes ready again after its
//! shutdown began.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fred::prelude::*;
use http::StatusCode;
use serde::Serialize;

use crate::http::error::{ApiError, ErrorBody};
use crate::log_store::LogStore;
use crate::log_store::shipper::ShipperStatus;

/// How long `/readyz` waits for Redis (and for the log store).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// The log store as readiness reports it.
#[derive(Debug)]
pub struct LogStoreHealth {
    pub store: LogStore,
    /// This process's shipper (roles `all` and `dispatcher`).
    pub shipper: Option<Arc<ShipperStatus>>,
    /// Lag beyond which the log store is reported `behind`.
    pub behind_after: Duration,
}

/// The log store as `/readyz` and the console's home page report it.
#[derive(Debug, Clone)]
pub struct LogStoreState {
    /// `ok`, `behind`, `unreachable` or `refusing` (see [`Health::log_store`]).
    pub state: &'static str,
    /// Why it is `unreachable` or `refusing`, in PostgreSQL's words where it said something.
    pub error: Option<String>,
    /// Age of the oldest finished event not yet in it, in seconds.
    pub lag_s: Option<f64>,
}

/// Readiness shared by every listener of a process.
#[derive(Debug)]
pub struct Readiness {
    /// `STARTING`, `READY` or `DRAINING`; only ever increases.
    phase: AtomicU8,
    /// Written to on every `/readyz`.
    redis: Client,
    /// The key written.
    probe: String,
    log: Option<LogStoreHealth>,
}

impl Readiness {
    pub fn new(redis: Client, probe: String, log: Option<LogStoreHealth>) -> Arc<Readiness> {
        Arc::new(Readiness {
            phase: AtomicU8::new(STARTING),
            redis,
            probe,
            log,
        })
    }

    /// Start-up has finished. No effect once draining.
    pub fn ready(&self) {
        let _ = self
            .phase
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Shutdown has begun: not ready, for good.
    pub fn drain(&self) {
        self.phase.store(DRAINING, Ordering::SeqCst);
    }

    /// The log store's state as readiness reports it; `None` without a log store.
    pub async fn log_store(&self) -> Option<LogStoreState> {
        let h = self.log.as_ref()?;
        let lag = h.shipper.as_ref().map(|s| s.lag());
        let problem = h.shipper.as_ref().and_then(|s| s.problem());
        let (state, error) = match problem {
            Some(p) => (p.state(), Some(p.message().to_owned())),
            None if !h.store.ping(PROBE_TIMEOUT).await => (
                "unreachable",
                Some("PostgreSQL does not answer a query".to_owned()),
            ),
            None if lag.is_some_and(|l| l > h.behind_after) => ("behind", None),
            None => ("ok", None),
        };
        Some(LogStoreState {
            state,
            error,
            lag_s: lag.map(|l| l.as_secs_f64()),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == READY
    }
}

/// The body of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (live) or `ready`.
    pub status: String,
    /// With a log store (`/readyz` only): `ok`, `behind` (finished events wait in Redis
    /// longer than they should), `unreachable` (PostgreSQL cannot be reached) or `refusing`
    /// (PostgreSQL answers but refuses to store a batch: `log_store_error` says why). Ingest
    /// stays safe either way: Redis keeps the events until the log store takes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_store: Option<String>,
    /// Why the log store is `unreachable` or `refusing`, in PostgreSQL's words where it said
    /// something. On the admin listener only: the edge is public, and PostgreSQL's words name
    /// users and tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_store_error: Option<String>,
    /// Age of the oldest finished event not yet in the log store, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_store_lag_s: Option<f64>,
}

/// Liveness: the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    operation_id = "healthz",
    responses((status = 200, description = "The process serves.", body = Health)),
)]
pub async fn healthz() -> Response {
    Json(Health {
        status: "ok".into(),
        log_store: None,
        log_store_error: None,
        log_store_lag_s: None,
    })
    .into_response()
}

/// Readiness: started, not shutting down, and Redis answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    operation_id = "readyz",
    responses(
        (status = 200, description = "Ready to serve.", body = Health),
        (status = 503, description = "Starting up, shutting down, or Redis does not answer.", body = ErrorBody),
    ),
)]
pub async fn readyz(
    State(readiness): State<Arc<Readiness>>,
    admin: Option<axum::Extension<crate::edge::service::OnAdmin>>,
) -> Response {
    if !readiness.is_ready() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "starting up or shutting down",
        )
        .into_response();
    }
    let write = readiness.redis.set::<(), _, _>(
        readiness.probe.as_str(),
        1,
        Some(Expiration::PX(10_000)),
        None,
        false,
    );
    match tokio::time::timeout(PROBE_TIMEOUT, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.details().starts_with("OOM") => {
            return ApiError::unavailable("Redis refuses writes (maxmemory reached)")
                .into_response();
        }
        _ => return ApiError::unavailable("Redis does not answer").into_response(),
    }
    let (log_store, log_store_error, log_store_lag_s) = match readiness.log_store().await {
        None => (None, None, None),
        Some(l) => (
            Some(l.state.to_owned()),
            l.error.filter(|_| admin.is_some()),
            l.lag_s,
        ),
    };
    Json(Health {
        status: "ready".into(),
        log_store,
        log_store_error,
        log_store_lag_s,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_only_moves_forward() {
        let client = Builder::default_centralized().build();
        let Ok(client) = client else { return };
        let r = Readiness::new(client, "probe".into(), None);
        assert!(!r.is_ready());
        r.ready();
        assert!(r.is_ready());
        r.drain();
        assert!(!r.is_ready());
        r.ready();
        assert!(
            !r.is_ready(),
            "a draining process never becomes ready again"
        );
    }
}
