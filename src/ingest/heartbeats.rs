//! What monitored services send: `POST /v1/monitors/{monitor_id}` (status push) and
//! `GET|POST /v1/monitors/{monitor_token}/heartbeat[/start|/fail|/{exit_code}]`.
//!
//! `{monitor_id}` is the monitor's URL token (looked up first); or, when the request carries
//! `Authorization: Bearer <tenant token>`, the monitor's id (for senders that can keep a header
//! secret and would rather not put one in a URL). The definition comes from a cache, so a
//! signal costs one Redis round trip: the `signal` script, batched with its shard's others.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};

use crate::auth::{Auth, TenantAuth};
use crate::crypto::TokenHash;
use crate::crypto::verify::Verifier;
use crate::http::body;
use crate::http::body::{BodyLimits, decode_json};
use crate::http::error::{ApiError, PushErrors, SignalErrors};
use crate::http::extract::{ApiPath, PathParams};
use crate::model::time::rfc3339;
use crate::model::{MonitorId, Scheme, Status};
use crate::monitors::state::{LiveStatus, Recorded, Signal, Subject, Watches};
use crate::redis::cache::{Cache, CacheSettings};
use crate::redis::invalidation::{Invalidate, Invalidation};
use crate::sandbox::Sandbox;
use crate::store::{Monitor, Store, StoreError};
use crate::telemetry;
use crate::telemetry::CacheName;

/// Longest status message.
const MAX_MESSAGE: usize = 2048;
/// Largest metadata object, serialized.
const MAX_METADATA: usize = 16 * 1024;
/// Header of a status push's signature.
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// A monitor with the verifier of its status pushes, as requests use it.
#[derive(Debug)]
pub struct PushMonitor {
    pub monitor: Monitor,
    /// Verifies status pushes when the monitor has a secret.
    pub verifier: Option<Verifier>,
}

/// How a request names a monitor: its URL token's hash, or its id (with the tenant's token).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MonitorKey {
    Token(TokenHash),
    Id(MonitorId),
}

/// Monitor definitions by URL-token hash or by id, cached briefly; changes are announced as
/// [`Invalidation::Monitor`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MonitorCache {
    store: Store,
    cache: Cache<MonitorKey, Arc<PushMonitor>>,
}

impl MonitorCache {
    pub fn new(store: Store, settings: CacheSettings) -> MonitorCache {
        MonitorCache {
            store,
            cache: Cache::new(CacheName::Monitors, settings),
        }
    }

    async fn get(&self, key: MonitorKey) -> Result<Option<Arc<PushMonitor>>, Arc<StoreError>> {
        let store = self.store.clone();
        let k = key.clone();
        self.cache
            .get_or_load(key, async move {
                let found = match k {
                    MonitorKey::Token(hash) => store.monitor_by_token(&hash).await?,
                    MonitorKey::Id(id) => store.monitor_by_id(&id).await?,
                };
                let Some(monitor) = found else {
                    return Ok(None);
                };
                let verifier = match &monitor.secret {
                    Some(secret) => Some(
                        Verifier::new(
                            Scheme::HmacSha256Hex,
                            secret.expose(),
                            Some(SIGNATURE_HEADER),
                            None,
                        )
                        .map_err(|e| StoreError::Corrupt {
                            key: format!("monitor {}", monitor.id),
                            reason: e.to_string(),
                        })?,
                    ),
                    None => None,
                };
                Ok::<_, StoreError>(Some(Arc::new(PushMonitor { monitor, verifier })))
            })
            .await
    }

    fn keys(message: &Invalidation) -> Option<[MonitorKey; 2]> {
        match message {
            Invalidation::Monitor { id, token } => {
                Some([MonitorKey::Id(id.clone()), MonitorKey::Token(*token)])
            }
            _ => None,
        }
    }
}

impl Invalidate for MonitorCache {
    fn invalidate<'a>(&'a self, message: &'a Invalidation) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for key in Self::keys(message).into_iter().flatten() {
                self.cache.invalidate(&key).await;
            }
        })
    }

    fn recheck<'a>(&'a self, message: &'a Invalidation, changed_at: Instant) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for key in Self::keys(message).into_iter().flatten() {
                self.cache.invalidate_if_read_before(&key, changed_at).await;
            }
        })
    }

    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// What the signal handlers need.
#[derive(Debug, Clone)]
pub struct HeartbeatState {
    pub auth: Arc<Auth>,
    pub store: Store,
    pub monitors: MonitorCache,
    pub watches: Watches,
    pub body_limits: BodyLimits,
    /// Bounds of a push to a monitor with a status map: a platform's whole webhook (the
    /// event bounds).
    pub mapped_limits: BodyLimits,
    /// Runs status maps.
    pub sandbox: Sandbox,
}

/// The monitor a request names, and its tenant (active, within its rate limit).
async fn resolve(
    s: &HeartbeatState,
    key: &str,
    headers: &HeaderMap,
) -> Result<(Arc<PushMonitor>, Arc<TenantAuth>), ApiError> {
    let unavailable = |e: Arc<StoreError>| ApiError::from_shared_store(&e, "monitor lookup");
    // The URL token first: the contract's form, whatever headers a proxy adds.
    let by_token = if crate::model::text::check_token(key).is_ok() {
        let hash = s.store.crypto().hash_token(key);
        s.monitors
            .get(MonitorKey::Token(hash))
            .await
            .map_err(unavailable)?
    } else {
        None
    };
    let (monitor, tenant) = match (by_token, headers.get(AUTHORIZATION)) {
        (Some(monitor), _) => {
            let tenant = s.auth.tenant_by_id(&monitor.monitor.tenant).await?;
            (monitor, tenant)
        }
        (None, Some(header)) => {
            let tenant = s.auth.authenticate_header(Some(header.as_bytes())).await?;
            let Ok(id) = MonitorId::parse(key) else {
                return Err(ApiError::not_found("monitor"));
            };
            let monitor = s
                .monitors
                .get(MonitorKey::Id(id))
                .await
                .map_err(unavailable)?
                .filter(|m| m.monitor.tenant == tenant.id)
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
    s: &HeartbeatState,
    monitor: &Monitor,
    tenant: &TenantAuth,
    signal: &Signal,
) -> Result<Recorded, ApiError> {
    // No live state means the monitor was deleted (this cache had not heard yet), unless the
    // store still holds it.
    let exists = async {
        Ok::<_, StoreError>(
            s.store
                .monitor(&monitor.tenant, &monitor.id)
                .await?
                .is_some(),
        )
    };
    s.watches
        .signal_existing(Subject::monitor(monitor, tenant.shard), signal, exists)
        .await?
        .ok_or_else(|| ApiError::not_found("monitor"))
}

/// What a signal's answer says of its monitor.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MonitorSignal {
    pub id: MonitorId,
    #[schema(value_type = String)]
    pub name: String,
    pub status: LiveStatus,
    /// RFC 3339.
    pub last_heartbeat: Option<String>,
    /// The run's duration, when a `start` preceded this signal.
    pub last_duration_ms: Option<u64>,
}

/// The answer to a signal.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignalAnswer {
    pub monitor: MonitorSignal,
}

fn answer(monitor: &Monitor, r: &Recorded) -> Response {
    // Written by hand: this is every heartbeat's answer. Ids and statuses are from fixed
    // alphabets; the name is escaped once, when the monitor is loaded.
    let quoted = |v: Option<String>| v.map_or_else(|| "null".to_owned(), |t| format!("\"{t}\""));
    let json = format!(
        r#"{{"monitor":{{"id":"{}","name":{},"status":"{}","last_heartbeat":{},"last_duration_ms":{}}}}}"#,
        monitor.id,
        monitor.name_json,
        r.status.as_str(),
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusPush {
    pub status: Status,
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub message: Option<String>,
    /// Any JSON object, at most 16 KiB serialized.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
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

/// The path of a monitor's signal routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MonitorKeyPath {
    /// The monitor's URL token; or its id, with the tenant's bearer token.
    #[param(min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    monitor_id: String,
}

impl PathParams for MonitorKeyPath {
    const WHAT: &'static str = "monitor";
}

/// The path of a heartbeat.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HeartbeatPath {
    /// The monitor's URL token; or its id, with the tenant's bearer token.
    #[param(min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    monitor_token: String,
}

impl PathParams for HeartbeatPath {
    const WHAT: &'static str = "monitor";
}

/// The path of a job signal.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobSignalPath {
    /// The monitor's URL token; or its id, with the tenant's bearer token.
    #[param(min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    monitor_token: String,
    /// `start`, `fail`, or an exit code from 0 to 255 (0 is success).
    #[param(pattern = "^(start|fail|[0-9]{1,2}|[01][0-9]{2}|2[0-4][0-9]|25[0-5])$")]
    signal: String,
}

impl PathParams for JobSignalPath {
    const WHAT: &'static str = "monitor";
}

/// A status update of a passive monitor.
///
/// When the monitor has a secret, `X-Webhook-Signature: <hex HMAC-SHA256(secret, raw body)>`
/// is required.
#[utoipa::path(
    post,
    path = "/v1/monitors/{monitor_id}",
    tag = "monitors",
    operation_id = "push_status",
    params(
        MonitorKeyPath,
        ("X-Webhook-Signature" = Option<String>, Header, description = "Hex HMAC-SHA256 of the raw body, for a monitor with a secret."),
    ),
    request_body = StatusPush,
    responses(
        (status = 200, description = "The status was recorded.", body = SignalAnswer),
        (status = 202, description = "The monitor's status map ignored the push (`{\"ignore\": true}`): nothing was recorded.", body = Object),
        PushErrors,
    ),
    security((), ("tenant_token" = [])),
)]
pub async fn push_status(
    State(s): State<HeartbeatState>,
    ApiPath(path): ApiPath<MonitorKeyPath>,
    headers: HeaderMap,
    request_body: Body,
) -> Result<Response, ApiError> {
    let (pm, tenant) = resolve(&s, &path.monitor_id, &headers).await?;
    let limits = match pm.monitor.status_map {
        Some(_) => &s.mapped_limits,
        None => &s.body_limits,
    };
    let raw = body::read(request_body, &headers, limits).await?;
    if let Some(verifier) = &pm.verifier {
        verifier
            .verify(&headers, &raw, (s.store.clock().now_ms() / 1000) as i64)
            .map_err(|e| {
                tracing::info!(monitor = %pm.monitor.id, reason = %e, "status push refused");
                ApiError::unauthorized(
                    "invalid_signature",
                    "the request's signature could not be verified",
                )
            })?;
    }
    let push: StatusPush = match &pm.monitor.status_map {
        None => {
            decode_json(&raw).map_err(|e| ApiError::bad_request("invalid_status", e.to_string()))?
        }
        Some(program) => match mapped(&s, program.as_str(), &raw).await? {
            Some(push) => push,
            None => return Ok(ignored(&pm.monitor)),
        },
    };
    let signal = Signal::Status {
        status: push.status,
        extra: push.extra()?,
    };
    let recorded = record(&s, &pm.monitor, &tenant, &signal).await?;
    Ok(answer(&pm.monitor, &recorded))
}

/// What the monitor's status map makes of a pushed document: a status push, or `None` when
/// the program says to ignore it (`{"ignore": true}`).
async fn mapped(
    s: &HeartbeatState,
    program: &str,
    raw: &[u8],
) -> Result<Option<StatusPush>, ApiError> {
    let failed = |m: String| {
        ApiError::new(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            "status_map_failed",
            m,
        )
    };
    let input = match body::parse_unique(raw) {
        Ok(v) => v,
        Err(body::Unreadable::NotJson(e)) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("the monitor maps JSON pushes to a status, and the body is not JSON: {e}"),
            ));
        }
        Err(body::Unreadable::Duplicate(key)) => {
            return Err(ApiError::bad_request(
                "duplicate_key",
                format!(
                    "the key {key:?} appears twice in one object of the body; readers disagree on which one counts, so it is refused"
                ),
            ));
        }
    };
    let output = match s.sandbox.run(program, input).await {
        Ok(o) => o,
        Err(e) if e.is_final() => return Err(failed(format!("the status map failed: {e}"))),
        Err(e) => {
            return Err(ApiError::unavailable(format!(
                "the status map could not run ({e}); retry"
            )));
        }
    };
    if output.get("ignore") == Some(&serde_json::Value::Bool(true)) {
        return Ok(None);
    }
    let push: StatusPush = serde_json::from_value(output.clone()).map_err(|e| {
        let shown: String = output.to_string().chars().take(200).collect();
        failed(format!(
            "the status map's output {shown} is not a status push ({{\"status\": \"up\"|\"down\"|\"degraded\", \"message\"?}}): {e}"
        ))
    })?;
    Ok(Some(push))
}

/// The answer to a push its status map ignored: nothing was recorded.
fn ignored(monitor: &Monitor) -> Response {
    let json = format!(
        r#"{{"monitor":{{"id":"{}","name":{}}},"ignored":true}}"#,
        monitor.id, monitor.name_json,
    );
    (
        http::StatusCode::ACCEPTED,
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// A heartbeat of a passive monitor (GET as well as POST, for the simplest senders).
#[utoipa::path(
    method(get, post),
    path = "/v1/monitors/{monitor_token}/heartbeat",
    tag = "monitors",
    operation_id = "heartbeat",
    params(HeartbeatPath),
    responses(
        (status = 200, description = "The heartbeat was recorded.", body = SignalAnswer),
        SignalErrors,
    ),
    security((), ("tenant_token" = [])),
)]
pub async fn heartbeat(
    State(s): State<HeartbeatState>,
    ApiPath(path): ApiPath<HeartbeatPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    beat(&s, &path.monitor_token, None, &headers).await
}

/// A job's signal: `start`, `fail`, or its exit code (0 is success); GET or POST.
#[utoipa::path(
    method(get, post),
    path = "/v1/monitors/{monitor_token}/heartbeat/{signal}",
    tag = "monitors",
    operation_id = "job_signal",
    params(JobSignalPath),
    responses(
        (status = 200, description = "The signal was recorded.", body = SignalAnswer),
        SignalErrors,
    ),
    security((), ("tenant_token" = [])),
)]
pub async fn job_signal(
    State(s): State<HeartbeatState>,
    ApiPath(path): ApiPath<JobSignalPath>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    beat(&s, &path.monitor_token, Some(&path.signal), &headers).await
}

/// A heartbeat (`signal` `None`) or a job signal.
pub async fn beat(
    s: &HeartbeatState,
    key: &str,
    signal: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let signal = match signal {
        None => Signal::Heartbeat,
        Some("start") => Signal::Start,
        Some("fail") => Signal::Fail,
        // Digits only: `u8`'s parser would also take `+5`.
        Some(code) => match code.parse::<u8>() {
            Ok(c) if code.len() <= 3 && code.bytes().all(|b| b.is_ascii_digit()) => Signal::Exit(c),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_signal",
                    "the signal must be `start`, `fail` or an exit code from 0 to 255",
                ));
            }
        },
    };
    let (pm, tenant) = resolve(s, key, headers).await?;
    let recorded = record(s, &pm.monitor, &tenant, &signal).await?;
    Ok(answer(&pm.monitor, &recorded))
}

/// The hot form of the heartbeat routes, served without the router ([`crate::edge::service`]):
/// `path` is `/v1/monitors/{monitor_token}/heartbeat[/{signal}]`.
pub async fn beat_hot(s: &HeartbeatState, path: &str, headers: &HeaderMap) -> Response {
    let rest = path.strip_prefix("/v1/monitors/").unwrap_or_default();
    let (key, signal) = match rest.split_once("/heartbeat") {
        Some((key, "")) => (key, None),
        Some((key, signal)) => (key, signal.strip_prefix('/')),
        None => (rest, None),
    };
    // Decoded as the router decodes path parameters, so both give the same answers.
    fn decode(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
        percent_encoding::percent_decode_str(raw).decode_utf8().ok()
    }
    let (Some(key), signal) = (decode(key), signal.map(decode)) else {
        return ApiError::invalid_path().into_response();
    };
    let signal = match signal {
        Some(None) => return ApiError::invalid_path().into_response(),
        Some(Some(s)) => Some(s),
        None => None,
    };
    match beat(s, &key, signal.as_deref(), headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}
