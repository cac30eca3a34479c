//! What monitored services send: `POST /v1/monitors/{key}` (status push) and
//! `GET|POST /v1/monitors/{key}/heartbeat[/start|/fail|/{exit_code}]`.
//!
//! `{key}` (routed as `{monitor_id}`, the template the tenant's management routes share) is
//! the monitor's URL token (looked up first); or, when the request carries `Authorization: Bearer
//! <tenant token>`, the monitor's id (for senders that can keep a header secret and would
//! rather not put one in a URL). The definition comes from a cache, so a signal costs one
//! Redis round trip: the [`SIGNAL`](super::state) script.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use http::header::AUTHORIZATION;
use serde::Deserialize;

use super::state::{Recorded, Signal, Status, Watches};
use crate::auth::{Auth, TenantAuth};
use crate::body::{BodyLimits, decode_json};
use crate::crypto::TokenHash;
use crate::error::ApiError;
use crate::store::monitors::Monitor;
use crate::store::{Store, StoreError, now_ms, rfc3339};
use crate::{body, telemetry};

/// Longest status message.
const MAX_MESSAGE: usize = 2048;
/// Largest metadata object, serialized.
const MAX_METADATA: usize = 16 * 1024;

/// Monitor definitions by URL-token hash or by id, cached briefly; changes are announced as
/// `monitor:<id>:<token hash>`.
#[derive(Debug, Clone)]
pub struct MonitorCache {
    store: Store,
    cache: moka::future::Cache<CacheKey, Option<Arc<Monitor>>>,
}

/// How a request names a monitor: its URL token's hash, or its id (with the tenant's token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Token(TokenHash),
    Id(String),
}

impl MonitorCache {
    pub fn new(store: Store) -> MonitorCache {
        MonitorCache {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
        }
    }

    async fn get(&self, key: CacheKey) -> Result<Option<Arc<Monitor>>, Arc<StoreError>> {
        if let Some(hit) = self.cache.get(&key).await {
            return Ok(hit);
        }
        let store = self.store.clone();
        let k = key.clone();
        Box::pin(self.cache.try_get_with(key, async move {
            let found = match k {
                CacheKey::Token(hash) => store.monitor_by_token(&hash.to_hex()).await?,
                CacheKey::Id(id) => store.monitor_by_id(&id).await?,
            };
            Ok::<_, StoreError>(found.map(Arc::new))
        }))
        .await
    }

    /// Drops the entries of an announced `<id>:<token hash>`.
    pub async fn invalidate(&self, id_and_hash: &str) {
        if let Some((id, hash)) = id_and_hash.split_once(':') {
            self.cache.invalidate(&CacheKey::Id(id.to_owned())).await;
            if let Some(hash) = TokenHash::from_hex(hash) {
                self.cache.invalidate(&CacheKey::Token(hash)).await;
            }
        }
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// What the push handlers need.
#[derive(Debug, Clone)]
pub struct PushState {
    pub auth: Arc<Auth>,
    pub store: Store,
    pub monitors: MonitorCache,
    pub watches: Watches,
    pub body_limits: BodyLimits,
}

/// The monitor a request names, and its tenant (active, within its rate limit).
async fn resolve(
    s: &PushState,
    key: &str,
    headers: &HeaderMap,
) -> Result<(Arc<Monitor>, Arc<TenantAuth>), ApiError> {
    let unavailable = |e: Arc<StoreError>| {
        tracing::warn!(error = %e, "monitor lookup failed");
        ApiError::unavailable("the monitor store is unreachable; retry shortly")
    };
    // The URL token first: the contract's form, whatever headers a proxy adds.
    let by_token = if crate::store::validate_token_text(key).is_ok() {
        let hash = s.store.crypto().hash_token(key);
        s.monitors
            .get(CacheKey::Token(hash))
            .await
            .map_err(unavailable)?
    } else {
        None
    };
    let (monitor, tenant) = match (by_token, headers.get(AUTHORIZATION)) {
        (Some(monitor), _) => {
            let tenant = s.auth.tenant_by_id(&monitor.tenant).await?;
            (monitor, tenant)
        }
        (None, Some(header)) => {
            let tenant = s.auth.authenticate_header(Some(header.as_bytes())).await?;
            if !crate::store::is_id(key) {
                return Err(ApiError::not_found("monitor"));
            }
            let monitor = s
                .monitors
                .get(CacheKey::Id(key.to_owned()))
                .await
                .map_err(unavailable)?
                .filter(|m| *m.tenant == *tenant.id)
                .ok_or_else(|| ApiError::not_found("monitor"))?;
            (monitor, tenant)
        }
        (None, None) => return Err(ApiError::not_found("monitor")),
    };
    if let Err(wait) = tenant.check_rate() {
        telemetry::rate_limited();
        return Err(ApiError::rate_limited(wait));
    }
    Ok((monitor, tenant))
}

async fn record(
    s: &PushState,
    monitor: &Monitor,
    tenant: &TenantAuth,
    signal: &Signal,
) -> Result<Recorded, ApiError> {
    // No live state means the monitor was deleted (this cache had not heard yet), unless the
    // store still holds it.
    let exists = async {
        Ok(s.store
            .monitor(&monitor.tenant, &monitor.id)
            .await?
            .is_some())
    };
    s.watches
        .signal_existing(monitor.subject(tenant.shard), signal, exists)
        .await?
        .ok_or_else(|| ApiError::not_found("monitor"))
}

fn answer(monitor: &Monitor, r: &Recorded) -> Response {
    // Written by hand: this is every heartbeat's answer. Ids and statuses are from fixed
    // alphabets; the name is escaped once, when the monitor is loaded.
    let quoted = |v: Option<String>| v.map_or_else(|| "null".to_owned(), |t| format!("\"{t}\""));
    let json = format!(
        r#"{{"monitor":{{"id":"{}","name":{},"status":"{}","last_heartbeat":{},"last_duration_ms":{}}}}}"#,
        monitor.id,
        monitor.name_json,
        r.status,
        quoted(r.last_heartbeat_ms.map(rfc3339)),
        r.duration_ms
            .map_or_else(|| "null".to_owned(), |d| d.to_string()),
    );
    (
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// A status push's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusPush {
    status: Status,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl StatusPush {
    /// Message and metadata as JSON object members, for the check record and the alert.
    fn extra(&self) -> Result<String, ApiError> {
        let mut members = Vec::new();
        if let Some(m) = &self.message {
            if m.chars().count() > MAX_MESSAGE {
                return Err(ApiError::bad_request(
                    "invalid_status",
                    format!("message must be at most {MAX_MESSAGE} characters"),
                ));
            }
            members.push(format!(
                r#""message":{}"#,
                serde_json::Value::from(m.as_str())
            ));
        }
        if let Some(meta) = &self.metadata {
            let json = serde_json::Value::Object(meta.clone()).to_string();
            if json.len() > MAX_METADATA {
                return Err(ApiError::bad_request(
                    "invalid_status",
                    format!("metadata must be at most {MAX_METADATA} bytes of JSON"),
                ));
            }
            members.push(format!(r#""metadata":{json}"#));
        }
        Ok(members.join(","))
    }
}

/// `POST /v1/monitors/{key}`.
pub async fn push_status(
    State(s): State<PushState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    let (monitor, tenant) = resolve(&s, &key, &headers).await?;
    let raw = body::read(request_body, &headers, &s.body_limits).await?;
    if let Some(verifier) = &monitor.verifier {
        verifier
            .verify(&headers, &raw, (now_ms() / 1000) as i64)
            .map_err(|e| {
                tracing::info!(monitor = %monitor.id, reason = %e, "status push refused");
                ApiError::unauthorized(
                    "invalid_signature",
                    "the request's signature could not be verified",
                )
            })?;
    }
    let push: StatusPush =
        decode_json(&raw).map_err(|e| ApiError::bad_request("invalid_status", e.to_string()))?;
    let signal = Signal::Status {
        status: push.status,
        extra: push.extra()?,
    };
    let recorded = record(&s, &monitor, &tenant, &signal).await?;
    Ok(answer(&monitor, &recorded))
}

/// `GET|POST /v1/monitors/{key}/heartbeat`.
pub async fn heartbeat(
    State(s): State<PushState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    beat(&s, &key, None, &headers).await
}

/// `GET|POST /v1/monitors/{key}/heartbeat/{start|fail|exit code}`.
pub async fn job_signal(
    State(s): State<PushState>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = params
        .get("monitor_id")
        .map(String::as_str)
        .unwrap_or_default();
    let signal = params.get("signal").map(String::as_str).unwrap_or_default();
    beat(&s, key, Some(signal), &headers).await
}

/// A heartbeat (`signal` `None`) or a job signal.
pub async fn beat(
    s: &PushState,
    key: &str,
    signal: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let signal = match signal {
        None => Signal::Heartbeat,
        Some("start") => Signal::Start,
        Some("fail") => Signal::Fail,
        Some(code) => match code.parse::<u8>() {
            Ok(c) if code.len() <= 3 => Signal::Exit(i64::from(c)),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_signal",
                    "the signal must be `start`, `fail` or an exit code from 0 to 255",
                ));
            }
        },
    };
    let (monitor, tenant) = resolve(s, key, headers).await?;
    let recorded = record(s, &monitor, &tenant, &signal).await?;
    Ok(answer(&monitor, &recorded))
}

/// The hot form of the heartbeat routes, served without the router ([`crate::service`]):
/// `path` is `/v1/monitors/{key}/heartbeat[/{signal}]`.
pub async fn beat_hot(s: &PushState, path: &str, headers: &HeaderMap) -> Response {
    let rest = path.strip_prefix("/v1/monitors/").unwrap_or_default();
    let (key, signal) = match rest.split_once("/heartbeat") {
        Some((key, "")) => (key, None),
        Some((key, signal)) => (key, signal.strip_prefix('/')),
        None => (rest, None),
    };
    // Decoded as the router decodes path parameters, so both give the same answers.
    let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy();
    let signal = signal.map(|sig| percent_encoding::percent_decode_str(sig).decode_utf8_lossy());
    match beat(s, &key, signal.as_deref(), headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The monitored service's routes, merged beside the tenant's `/v1/monitors` management routes.
pub fn routes(state: PushState) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/monitors/{monitor_id}", post(push_status))
        .route(
            "/v1/monitors/{monitor_id}/heartbeat",
            get(heartbeat).post(heartbeat),
        )
        .route(
            "/v1/monitors/{monitor_id}/heartbeat/{signal}",
            get(job_signal).post(job_signal),
        )
        .with_state(state)
}
