//! Liveness and readiness.
//!
//! `/healthz` answers 200 while the process serves at all. `/readyz` answers 200 only once start
//! up has finished, while shutdown has not begun, and while Redis answers a `PING` in time: a
//! load balancer stops routing to an instance that could only answer 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fred::prelude::*;
use http::StatusCode;
use serde_json::json;

use crate::error::ApiError;

/// How long `/readyz` waits for Redis.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// Readiness shared by every listener of a process.
#[derive(Debug)]
pub struct Readiness {
    /// Set once start-up finished; cleared when shutdown begins.
    ready: AtomicBool,
    /// Pinged on every `/readyz`.
    redis: Client,
}

impl Readiness {
    pub fn new(redis: Client) -> Arc<Readiness> {
        Arc::new(Readiness {
            ready: AtomicBool::new(false),
            redis,
        })
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `GET /healthz`.
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`.
pub async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    if !readiness.is_ready() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "starting up or shutting down",
        )
        .into_response();
    }
    let ping = tokio::time::timeout(PING_TIMEOUT, readiness.redis.ping::<String>(None)).await;
    match ping {
        Ok(Ok(_)) => Json(json!({"status": "ready"})).into_response(),
        _ => ApiError::unavailable("Redis does not answer").into_response(),
    }
}
