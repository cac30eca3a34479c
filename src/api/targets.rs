//! Targets (both scopes; see [`super`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Listing;
use super::scope::{ApiState, TenantScope};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, JsonBody, PathParams};
use crate::model::notice as notices;
use crate::model::target::{TargetAuthView, UrlProblem};
use crate::model::time::rfc3339;
use crate::model::{
    EventPattern, Format, Mode, Origin, RetryPolicy, SigningSecret, TargetId, TargetPatch,
    TargetSpec, TargetUrl, TenantId,
};
use crate::queue::notices::Notices;
use crate::store::deliveries::health::{HealthState, TargetHealth};
use crate::store::{StoreError, Target};

/// Longest overlap of a secret rotation: 30 days.
const MAX_OVERLAP_MS: u64 = 30 * 24 * 3600 * 1000;

impl JsonBody for TargetSpec {
    const INVALID: &'static str = "invalid_target";
}

impl JsonBody for TargetPatch {
    const INVALID: &'static str = "invalid_target";
}

/// A target (secrets left out, credentials masked).
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    pub id: TargetId,
    pub tenant_id: TenantId,
    pub url: String,
    pub events: Vec<EventPattern>,
    pub mode: Mode,
    /// `null`: the deployment's default policy.
    pub retry: Option<RetryPolicy>,
    pub headers: BTreeMap<String, String>,
    pub auth: Option<TargetAuthView>,
    /// Its TLS settings: the CA bundle and client certificate as given, the key masked.
    pub tls: Option<crate::model::target_tls::TargetTlsView>,
    pub ordered: bool,
    pub active: bool,
    pub format: Format,
    /// The payload filter, as written; `null`: every subscribed event.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    /// The jq transformation and its version; `null`: deliveries go as the event came.
    pub transform: Option<TransformView>,
    /// How events are gathered into batches; `null`: one request per event.
    pub batch: Option<crate::model::target::TargetBatch>,
    /// Its own circuit-breaker settings over `[dispatch.breaker]`; `null`: the deployment's.
    pub breaker: Option<crate::model::target_health::BreakerOverride>,
    /// Deliveries per second across every dispatcher; `null`: unlimited.
    pub rate_limit: Option<crate::model::RateLimit>,
    /// Hours of failure before it is disabled; `null`: `[dispatch] disable_after_h`.
    pub disable_after_h: Option<crate::model::target_health::Hours>,
    /// Whether it is probed and enabled again after the gateway disabled it for failing.
    pub heal: bool,
    /// Deliveries in flight at once per dispatcher: `"adaptive"` or a fixed number.
    pub concurrency: crate::model::target_health::Concurrency,
    /// Why the gateway disabled the target (`gone` after a 410), if it did.
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs, during a rotation.
    #[schema(format = DateTime)]
    pub secret_rotating_until: Option<String>,
    pub origin: Origin,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// How it fares: its attempts over the last hour, its newest attempt, since when it fails.
    pub health: TargetHealthView,
}

/// How a target fares (kept by the dispatcher, per target, shared by every instance).
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetHealthView {
    /// `failing`: its newest attempt failed; `degraded`: delivering, but under 90 % of the
    /// window's attempts did; `idle`: no attempt in the window; `disabled`.
    pub state: HealthState,
    /// The share of the window's attempts that delivered (0 to 1); `null` without attempts.
    pub success_ratio: Option<f64>,
    /// Attempts in the window.
    pub attempts: u64,
    /// Attempts in the window that did not deliver.
    pub failed: u64,
    /// Where the window starts: the last hour, in whole ten-minute buckets (60 to 70 minutes).
    #[schema(format = DateTime)]
    pub window_start: String,
    /// Its newest attempt, however old.
    pub last_attempt: Option<LastAttemptView>,
    /// When an attempt last delivered.
    #[schema(format = DateTime)]
    pub last_success_at: Option<String>,
    /// Its first failed attempt since its last success, while its newest attempt failed.
    #[schema(format = DateTime)]
    pub failing_since: Option<String>,
    /// Its circuit breaker, shared by every dispatcher.
    pub breaker: BreakerView,
    /// Until when a 429's `Retry-After` holds all its deliveries.
    #[schema(format = DateTime)]
    pub paused_until: Option<String>,
    /// Deliveries in flight at once a dispatcher last allowed it (adaptive, or its fixed
    /// number); `null` before its first attempt.
    pub concurrency_limit: Option<u32>,
}

/// A target's circuit breaker.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerView {
    pub state: crate::store::deliveries::gate::BreakerState,
    /// When it entered that state; `null` for a breaker that never opened.
    #[schema(format = DateTime)]
    pub since: Option<String>,
    /// While open: when probes are let through.
    #[schema(format = DateTime)]
    pub until: Option<String>,
    /// How many times it opened since it was last closed (each doubles the open time).
    pub opens: u32,
    /// While closed: attempts and the share that failed (network errors, timeouts, 5xx)
    /// over its current and previous window.
    pub window_attempts: u64,
    pub failure_ratio: Option<f64>,
}

impl BreakerView {
    /// Its state as one word (`half_open`).
    pub fn state_word(&self) -> &'static str {
        self.state.as_str()
    }
}

/// A target's newest attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastAttemptView {
    #[schema(format = DateTime)]
    pub at: String,
    /// The response's status; `null` when none came (connection refused, timeout).
    pub status: Option<u16>,
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub latency_ms: u64,
}

impl TargetHealthView {
    pub fn new(h: &TargetHealth, active: bool) -> TargetHealthView {
        TargetHealthView {
            state: h.state(active),
            // Four decimals: a ratio, not a float's noise.
            success_ratio: h.success_ratio().map(|r| (r * 10_000.0).round() / 10_000.0),
            attempts: h.attempts,
            failed: h.failed,
            window_start: rfc3339(h.window_start_ms),
            last_attempt: h.last.as_ref().map(|a| LastAttemptView {
                at: rfc3339(a.at_ms),
                status: a.status,
                error: a.error.clone(),
                latency_ms: a.latency_ms,
            }),
            last_success_at: h.last_success_ms.map(rfc3339),
            failing_since: h.failing_since_ms.map(rfc3339),
            breaker: BreakerView {
                state: h.breaker.state,
                since: (h.breaker.since_ms > 0).then(|| rfc3339(h.breaker.since_ms)),
                until: (h.breaker.state == crate::store::deliveries::gate::BreakerState::Open)
                    .then(|| rfc3339(h.breaker.until_ms)),
                opens: h.breaker.opens,
                window_attempts: h.breaker_window.0,
                failure_ratio: (h.breaker_window.0 > 0).then(|| {
                    (h.breaker_window.1 as f64 / h.breaker_window.0 as f64 * 10_000.0).round()
                        / 10_000.0
                }),
            },
            paused_until: h.paused_until_ms.map(rfc3339),
            concurrency_limit: h.concurrency_limit,
        }
    }
}

impl TargetView {
    /// A target with how it fares.
    pub fn with_health(t: &Target, h: &TargetHealth) -> TargetView {
        let mut v = TargetView::from(t);
        v.health = TargetHealthView::new(h, t.active);
        v
    }
}

/// How the tenant's targets fare, read at once.
pub async fn health_of(
    s: &ApiState,
    scope: &TenantScope,
) -> Result<(std::collections::HashMap<TargetId, TargetHealth>, u64), ApiError> {
    let now = s.store.clock().now_ms();
    Ok((
        s.deliveries
            .target_health(scope.shard, &scope.tenant, now)
            .await?,
        now,
    ))
}

/// One target's view with its health.
async fn view(s: &ApiState, scope: &TenantScope, t: &Target) -> Result<TargetView, ApiError> {
    let (health, now) = health_of(s, scope).await?;
    let h = health
        .get(&t.id)
        .cloned()
        .unwrap_or_else(|| TargetHealth::none(now));
    Ok(TargetView::with_health(t, &h))
}

impl From<&Target> for TargetView {
    /// The view of a target as written; its health is that of a target without attempts
    /// (see [`TargetView::with_health`]).
    fn from(t: &Target) -> TargetView {
        TargetView {
            health: TargetHealthView::new(&TargetHealth::none(t.updated_at_ms), t.active),
            id: t.id.clone(),
            tenant_id: t.tenant.clone(),
            url: t.url.as_str().to_owned(),
            events: t.events.as_slice().to_vec(),
            mode: t.mode,
            retry: t.retry,
            headers: t.headers.as_map().clone(),
            auth: t.auth.as_ref().map(|a| a.redacted()),
            tls: t.tls.as_ref().map(|t| t.view()),
            ordered: t.ordered,
            active: t.active,
            format: t.format,
            filter: t.filter.as_ref().map(|f| f.source().clone()),
            transform: t.transform.as_ref().map(|tr| TransformView {
                program: tr.program.as_str().to_owned(),
                enabled: tr.enabled,
                version: t.transform_version,
            }),
            batch: t.batch,
            breaker: t.breaker,
            rate_limit: t.rate_limit,
            disable_after_h: t.disable_after_h,
            heal: t.heal,
            concurrency: t.concurrency,
            disabled_reason: t.disabled_reason.clone(),
            secret_rotating_until: t.rotating_until_ms().map(rfc3339),
            origin: t.origin,
            created_at: rfc3339(t.created_at_ms),
            updated_at: rfc3339(t.updated_at_ms),
        }
    }
}

/// A target's transformation.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransformView {
    pub program: String,
    pub enabled: bool,
    /// Its version: 1 for the first program, one more at each change.
    pub version: u32,
}

/// Refuses a transformation whose program does not compile, with jaq's words.
pub(super) async fn check_transform(
    s: &ApiState,
    transform: Option<&crate::model::transform::TargetTransform>,
) -> Result<(), ApiError> {
    let Some(t) = transform else { return Ok(()) };
    match s.sandbox.check(t.program.as_str()).await {
        Ok(()) => Ok(()),
        Err(crate::sandbox::SandboxError::Invalid(why)) => Err(ApiError::bad_request(
            "invalid_target",
            format!("transform.program does not compile: {why}"),
        )),
        Err(other) => Err(ApiError::unavailable(format!(
            "the program could not be checked ({other}); retry shortly"
        ))),
    }
}

/// A target with its signing secret: shown at creation and rotation only.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetWithSecret {
    #[serde(flatten)]
    pub target: TargetView,
    /// The signing secret (`whsec_…`).
    pub secret: String,
}

impl From<&Target> for TargetWithSecret {
    fn from(t: &Target) -> TargetWithSecret {
        TargetWithSecret {
            target: TargetView::from(t),
            secret: t.secret.expose().to_owned(),
        }
    }
}

/// A secret rotation.
#[derive(Debug, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// A chosen new secret; generated when absent.
    #[serde(default)]
    pub secret: Option<SigningSecret>,
    /// How long the old secret keeps signing (ms, at most 30 days); the deployment's
    /// `dispatch.secret_rotation_overlap_ms` when absent.
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[schema(minimum = 0, maximum = 2592000000_u64)]
    pub overlap_ms: Option<u64>,
}

impl JsonBody for Rotate {
    const INVALID: &'static str = "invalid_target";
}

/// The path of one target.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TargetPath {
    pub(super) target_id: TargetId,
}

impl PathParams for TargetPath {
    const WHAT: &'static str = "target";
}

/// A target's validation against the deployment (the SSRF guard), as the API reports it.
fn refused(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(i) => ApiError::invalid("invalid_target", &i),
        other => other.into(),
    }
}

/// Refuses a URL whose name resolves to a private address, unless private targets are allowed.
async fn check_resolution(s: &ApiState, url: &TargetUrl) -> Result<(), ApiError> {
    if s.allow_private_targets {
        return Ok(());
    }
    crate::dispatch::ssrf::check_resolution(url.as_str())
        .await
        .map_err(|_| {
            ApiError::invalid(
                "invalid_target",
                &UrlProblem::ResolvesPrivate.invalid().within("url"),
            )
        })
}

/// Refuses an OAuth2 token endpoint whose name resolves to a private address, as for URLs.
async fn check_token_resolution(
    s: &ApiState,
    auth: Option<&crate::model::TargetAuth>,
) -> Result<(), ApiError> {
    let Some(crate::model::TargetAuth::OAuth2(o)) = auth else {
        return Ok(());
    };
    if s.allow_private_targets {
        return Ok(());
    }
    crate::dispatch::ssrf::check_resolution(o.token_url.as_str())
        .await
        .map_err(|_| {
            ApiError::invalid(
                "invalid_target",
                &UrlProblem::ResolvesPrivate
                    .invalid()
                    .within("auth.oauth2.token_url"),
            )
        })
}

/// Creates a target; its signing secret is shown this once.
#[utoipa::path(
    post,
    path = "/targets",
    tag = "targets",
    operation_id = "create_target",
    request_body = TargetSpec,
    responses((status = 201, description = "Created; the secret is shown this once.", body = TargetWithSecret), WriteErrors),
)]
pub async fn create(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiJson(spec): ApiJson<TargetSpec>,
) -> Result<Response, ApiError> {
    let created = create_target(&s, &scope, &spec).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `create_target`.
pub async fn create_target(
    s: &ApiState,
    scope: &TenantScope,
    spec: &TargetSpec,
) -> Result<TargetWithSecret, ApiError> {
    spec.validate(s.allow_private_targets)
        .map_err(|e| ApiError::invalid("invalid_target", &e))?;
    check_resolution(s, &spec.url).await?;
    check_token_resolution(s, spec.auth.as_ref()).await?;
    check_transform(s, spec.transform.as_ref()).await?;
    let created = s
        .store
        .create_target(&scope.tenant, spec, None, Origin::Api)
        .await?;
    Ok(TargetWithSecret::from(&created))
}

/// Lists the tenant's targets, in creation order.
#[utoipa::path(
    get,
    path = "/targets",
    tag = "targets",
    operation_id = "list_targets",
    responses((status = 200, description = "The tenant's targets.", body = Listing<TargetView>), ReadErrors),
)]
pub async fn list(State(s): State<ApiState>, scope: TenantScope) -> Result<Response, ApiError> {
    Ok(list_targets(&s, &scope).await?.into_response())
}

/// `list_targets`.
pub async fn list_targets(
    s: &ApiState,
    scope: &TenantScope,
) -> Result<Listing<TargetView>, ApiError> {
    let targets = s.store.targets_of(&scope.tenant).await?;
    let (health, now) = health_of(s, scope).await?;
    let none = TargetHealth::none(now);
    Ok(Listing {
        data: targets
            .iter()
            .map(|t| TargetView::with_health(t, health.get(&t.id).unwrap_or(&none)))
            .collect::<Vec<_>>(),
    })
}

/// Reads a target.
#[utoipa::path(
    get,
    path = "/targets/{target_id}",
    tag = "targets",
    operation_id = "read_target",
    params(TargetPath),
    responses((status = 200, description = "The target.", body = TargetView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
) -> Result<Response, ApiError> {
    Ok(Json(read_target(&s, &scope, &p.target_id).await?).into_response())
}

/// `read_target`.
pub async fn read_target(
    s: &ApiState,
    scope: &TenantScope,
    id: &TargetId,
) -> Result<TargetView, ApiError> {
    match s.store.target(&scope.tenant, id).await? {
        Some(t) => view(s, scope, &t).await,
        None => Err(ApiError::not_found("target")),
    }
}

/// Changes a target: absent fields stay; `null` removes `retry` or `auth`. Enabling a
/// target the gateway disabled clears its `disabled_reason`.
#[utoipa::path(
    patch,
    path = "/targets/{target_id}",
    tag = "targets",
    operation_id = "update_target",
    params(TargetPath),
    request_body(content = Option<TargetPatch>, description = "Only the fields to change; an empty body changes nothing."),
    responses((status = 200, description = "The target as changed.", body = TargetView), WriteErrors),
)]
pub async fn update(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
    ApiJson(patch): ApiJson<TargetPatch>,
) -> Result<Response, ApiError> {
    Ok(Json(update_target(&s, &scope, &p.target_id, &patch).await?).into_response())
}

/// `update_target`.
pub async fn update_target(
    s: &ApiState,
    scope: &TenantScope,
    id: &TargetId,
    patch: &TargetPatch,
) -> Result<TargetView, ApiError> {
    if let Some(url) = &patch.url {
        check_resolution(s, url).await?;
    }
    if let Some(auth) = &patch.auth {
        check_token_resolution(s, auth.as_ref()).await?;
    }
    check_transform(s, patch.transform.as_ref().and_then(Option::as_ref)).await?;
    let was_active = match patch.active {
        Some(_) => s.store.target(&scope.tenant, id).await?.map(|t| t.active),
        None => None,
    };
    let updated = s
        .store
        .update_target(&scope.tenant, id, patch, s.allow_private_targets)
        .await
        .map_err(refused)?;
    if let (Some(t), Some(true)) = (&updated, patch.active) {
        // Enabled again by an operator: its breaker starts closed, with nothing held
        // against it.
        s.deliveries
            .reset_gate(scope.shard, &scope.tenant, &t.id)
            .await?;
    }
    if let (Some(t), Some(_)) = (&updated, patch.active) {
        // An operator's word ends the probes of a target disabled for failing.
        s.deliveries
            .end_heal(scope.shard, &scope.tenant, &t.id)
            .await?;
    }
    if let (Some(t), Some(was)) = (&updated, was_active)
        && was != t.active
    {
        let (event_type, fields) = if t.active {
            (
                notices::TARGET_ENABLED,
                serde_json::json!({"target_id": t.id, "trigger": "manual"}),
            )
        } else {
            (
                notices::TARGET_DISABLED,
                serde_json::json!({"target_id": t.id, "trigger": "manual", "reason": "manual",
                                   "failing_since": null}),
            )
        };
        let wanted =
            crate::dispatch::targets::TenantTargets::new(s.store.targets_of(&scope.tenant).await?)
                .matching(event_type)
                .iter()
                .any(|other| other.id != t.id);
        if wanted {
            Notices::new(&s.store)
                .tell(scope.shard, &scope.tenant, event_type, fields)
                .await;
        }
    }
    match updated {
        Some(t) => view(s, scope, &t).await,
        None => Err(ApiError::not_found("target")),
    }
}

/// Deletes a target; its scheduled retries are dropped when they come due.
#[utoipa::path(
    delete,
    path = "/targets/{target_id}",
    tag = "targets",
    operation_id = "delete_target",
    params(TargetPath),
    responses((status = 204, description = "Deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
) -> Result<Response, ApiError> {
    delete_target(&s, &scope, &p.target_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `delete_target`.
pub async fn delete_target(
    s: &ApiState,
    scope: &TenantScope,
    id: &TargetId,
) -> Result<(), ApiError> {
    if !s.store.delete_target(&scope.tenant, id).await? {
        return Err(ApiError::not_found("target"));
    }
    // Left behind, it would only take room: nothing reads a deleted target's health.
    if let Err(e) = s
        .deliveries
        .forget_target_health(scope.shard, &scope.tenant, id)
        .await
    {
        tracing::warn!(target_id = %id, error = %e, "could not forget a deleted target's health");
    }
    Ok(())
}

/// Replaces the signing secret; during the overlap both secrets sign every delivery.
#[utoipa::path(
    post,
    path = "/targets/{target_id}/rotate-secret",
    tag = "targets",
    operation_id = "rotate_target_secret",
    params(TargetPath),
    request_body(content = Option<Rotate>, description = "Empty: a generated secret, the default overlap."),
    responses((status = 200, description = "The target with its new secret, shown this once.", body = TargetWithSecret), WriteErrors),
)]
pub async fn rotate_secret(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
    ApiJson(req): ApiJson<Rotate>,
) -> Result<Response, ApiError> {
    Ok(Json(rotate_target_secret(&s, &scope, &p.target_id, req).await?).into_response())
}

/// `rotate_target_secret`.
pub async fn rotate_target_secret(
    s: &ApiState,
    scope: &TenantScope,
    id: &TargetId,
    req: Rotate,
) -> Result<TargetWithSecret, ApiError> {
    let overlap = match req.overlap_ms {
        Some(o) if o > MAX_OVERLAP_MS => {
            return Err(ApiError::bad_request(
                "invalid_target",
                format!("overlap_ms must be at most {MAX_OVERLAP_MS}"),
            ));
        }
        Some(o) => o,
        None => s.rotation_overlap_ms.min(MAX_OVERLAP_MS),
    };
    let rotated = s
        .store
        .rotate_target_secret(&scope.tenant, id, req.secret, overlap)
        .await?;
    match rotated {
        Some(t) => Ok(TargetWithSecret {
            target: view(s, scope, &t).await?,
            secret: t.secret.expose().to_owned(),
        }),
        None => Err(ApiError::not_found("target")),
    }
}

/// What a test delivery did.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestDelivery {
    /// The `webhook-id` it carried: a fresh event id, stored nowhere.
    pub webhook_id: String,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// The response's status; `null` when none came.
    pub status: Option<u16>,
    /// From connecting to the response's first bytes, in milliseconds to the microsecond
    /// (`0.412`).
    pub latency_ms: f64,
    /// Why there was no usable response (or what the status means).
    pub error: Option<String>,
    /// The first 512 bytes of the response body, as text (NUL and invalid UTF-8 replaced).
    pub response: Option<String>,
    /// The version of the target's transformation the ping went through, if it has one.
    pub transform_version: Option<u32>,
}

/// Sends the target a signed `estafeta.ping` now, through its transformation like any
/// delivery, and says what happened. Nothing is recorded: not an event, not an attempt, not
/// its health. A disabled target is tested too (to check it before enabling it).
#[utoipa::path(
    post,
    path = "/targets/{target_id}/test",
    tag = "targets",
    operation_id = "test_target",
    params(TargetPath),
    responses((status = 200, description = "What the receiver answered, or why it did not.", body = TestDelivery), ReadErrors),
)]
pub async fn test(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
) -> Result<Response, ApiError> {
    Ok(Json(test_target(&s, &scope, &p.target_id).await?).into_response())
}

/// `test_target`.
pub async fn test_target(
    s: &ApiState,
    scope: &TenantScope,
    target_id: &TargetId,
) -> Result<TestDelivery, ApiError> {
    let target = s
        .store
        .target(&scope.tenant, target_id)
        .await?
        .ok_or_else(|| ApiError::not_found("target"))?;
    let now = s.store.clock().now_ms();
    let p =
        crate::dispatch::ping::ping(&s.client, &s.sandbox, s.allow_private_targets, &target, now)
            .await;
    Ok(TestDelivery {
        webhook_id: p.webhook_id.to_string(),
        delivered: p.delivered,
        status: p.status,
        latency_ms: (p.latency.as_micros() as f64) / 1000.0,
        error: p.error,
        response: p.response,
        transform_version: p.transform_version,
    })
}
