//! Passive monitors (both scopes; see [`super`]): definitions with their live state, URL
//! tokens, and the incident and check history of monitors and watched sources.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::listing::Listing;
use super::scope::{ApiState, TenantScope};
use super::watched::{Watched, delete_watched};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery, JsonBody, PathParams};
use crate::log_store::write::HistoryKind;
use crate::model::monitor::{Every, Grace};
use crate::model::text::check_token;
use crate::model::time::{parse_rfc3339, rfc3339};
use crate::model::{IncidentId, MonitorId, MonitorPatch, MonitorSpec, Name, Origin, TenantId};
use crate::monitors::state::{Check, Incident, LiveState, LiveStatus, Subject};
use crate::store::Monitor;

impl JsonBody for MonitorSpec {
    const INVALID: &'static str = "invalid_monitor";
}

impl JsonBody for MonitorPatch {
    const INVALID: &'static str = "invalid_monitor";
}

/// A monitor: its definition (no secret, no token) and its live state.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorView {
    pub id: MonitorId,
    pub tenant_id: TenantId,
    pub name: Name,
    #[schema(inline)]
    pub heartbeat_interval_s: Every,
    #[schema(inline)]
    pub grace_s: Grace,
    /// Whether status pushes must be signed.
    pub has_secret: bool,
    /// The jq program that turns pushed JSON into a status, when the monitor has one.
    pub status_map: Option<String>,
    pub origin: Origin,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub status: LiveStatus,
    #[schema(format = DateTime)]
    pub status_since: Option<String>,
    #[schema(format = DateTime)]
    pub last_heartbeat: Option<String>,
    #[schema(format = DateTime)]
    pub last_signal: Option<String>,
    pub last_duration_ms: Option<u64>,
    /// When the running job started, if one is running.
    #[schema(format = DateTime)]
    pub running_since: Option<String>,
    pub open_incident_id: Option<IncidentId>,
    /// When the monitor is overdue unless a signal comes first.
    #[schema(format = DateTime)]
    pub next_deadline: Option<String>,
}

impl MonitorView {
    fn new(m: &Monitor, live: LiveState) -> MonitorView {
        MonitorView {
            id: m.id.clone(),
            tenant_id: m.tenant.clone(),
            name: m.name.clone(),
            heartbeat_interval_s: m.interval_s,
            grace_s: m.grace_s,
            has_secret: m.secret.is_some(),
            status_map: m.status_map.as_ref().map(|p| p.as_str().to_owned()),
            origin: m.origin,
            created_at: rfc3339(m.created_at_ms),
            updated_at: rfc3339(m.updated_at_ms),
            status: live.status,
            status_since: live.status_since_ms.map(rfc3339),
            last_heartbeat: live.last_heartbeat_ms.map(rfc3339),
            last_signal: live.last_signal_ms.map(rfc3339),
            last_duration_ms: live.last_duration_ms,
            running_since: live.running_since_ms.map(rfc3339),
            open_incident_id: live.open_incident,
            next_deadline: live.next_deadline_ms.map(rfc3339),
        }
    }
}

/// A monitor with its URL token and URLs: shown at creation and rotation only.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorWithToken {
    #[serde(flatten)]
    pub monitor: MonitorView,
    /// The URL token. It is stored only as a keyed hash.
    pub token: String,
    /// `/v1/monitors/{token}`: status pushes.
    pub status_url: String,
    /// `/v1/monitors/{token}/heartbeat`: heartbeats.
    pub heartbeat_url: String,
}

async fn view(s: &ApiState, scope: &TenantScope, m: &Monitor) -> Result<MonitorView, ApiError> {
    let live = s.watches.live(scope.shard, m.id.as_str()).await?;
    Ok(MonitorView::new(m, live))
}

async fn with_token(
    s: &ApiState,
    scope: &TenantScope,
    m: &Monitor,
    token: String,
) -> Result<MonitorWithToken, ApiError> {
    Ok(MonitorWithToken {
        monitor: view(s, scope, m).await?,
        status_url: format!("/v1/monitors/{token}"),
        heartbeat_url: format!("/v1/monitors/{token}/heartbeat"),
        token,
    })
}

/// The path of one monitor.
///
/// `/v1/monitors/{…}` is also where a monitor's status is pushed, by its URL token: so a
/// monitor is found here by its id or by that token alike, and the `status_url` a client was
/// given reads the monitor it pushes to.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MonitorPath {
    /// The monitor's id (`mon_…`), or its URL token (`mt_…`).
    #[param(min_length = 1, max_length = 256, pattern = "^[!-~]+$")]
    monitor_id: String,
}

impl PathParams for MonitorPath {
    const WHAT: &'static str = "monitor";
}

/// The id of the tenant's monitor that `named` names: its id or its URL token.
async fn resolve(s: &ApiState, scope: &TenantScope, named: &str) -> Result<MonitorId, ApiError> {
    // The token first, as the status route does: an id may be any text of the id
    // alphabet (declared monitors choose theirs), so `mt_…` may parse as one.
    if check_token(named).is_ok() {
        let hash = s.store.crypto().hash_token(named);
        let found = s.store.monitor_by_token(&hash).await?;
        if let Some(m) = found.filter(|m| m.tenant == scope.tenant) {
            return Ok(m.id);
        }
    }
    MonitorId::parse(named).map_err(|_| ApiError::not_found("monitor"))
}

/// Creates a monitor; its URL token is shown this once.
#[utoipa::path(
    post,
    path = "/monitors",
    tag = "monitors",
    operation_id = "create_monitor",
    request_body = MonitorSpec,
    responses((status = 201, description = "Created; the token is shown this once.", body = MonitorWithToken), WriteErrors),
)]
pub async fn create(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiJson(spec): ApiJson<MonitorSpec>,
) -> Result<Response, ApiError> {
    let created = create_monitor(&s, &scope, &spec).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `create_monitor`.
pub async fn create_monitor(
    s: &ApiState,
    scope: &TenantScope,
    spec: &MonitorSpec,
) -> Result<MonitorWithToken, ApiError> {
    spec.validate()
        .map_err(|e| ApiError::invalid("invalid_monitor", &e))?;
    check_status_map(s, spec.status_map.as_ref()).await?;
    let (monitor, token) = s
        .store
        .create_monitor(&scope.tenant, spec, None, None, Origin::Api)
        .await?;
    s.watches
        .describe(Subject::monitor(&monitor, scope.shard))
        .await?;
    with_token(s, scope, &monitor, token).await
}

/// Refuses a status map whose program does not compile, with jaq's words.
async fn check_status_map(
    s: &ApiState,
    program: Option<&crate::model::transform::JqProgram>,
) -> Result<(), ApiError> {
    let Some(p) = program else { return Ok(()) };
    match s.sandbox.check(p.as_str()).await {
        Ok(()) => Ok(()),
        Err(crate::sandbox::SandboxError::Invalid(why)) => Err(ApiError::bad_request(
            "invalid_monitor",
            format!("status_map does not compile: {why}"),
        )),
        Err(other) => Err(ApiError::unavailable(format!(
            "the program could not be checked ({other}); retry shortly"
        ))),
    }
}

/// Lists the tenant's monitors with their live state.
#[utoipa::path(
    get,
    path = "/monitors",
    tag = "monitors",
    operation_id = "list_monitors",
    responses((status = 200, description = "The tenant's monitors.", body = Listing<MonitorView>), ReadErrors),
)]
pub async fn list(State(s): State<ApiState>, scope: TenantScope) -> Result<Response, ApiError> {
    Ok(list_monitors(&s, &scope).await?.into_response())
}

/// `list_monitors`.
pub async fn list_monitors(
    s: &ApiState,
    scope: &TenantScope,
) -> Result<Listing<MonitorView>, ApiError> {
    let monitors = s.store.monitors_of(&scope.tenant).await?;
    let mut data = Vec::with_capacity(monitors.len());
    for m in &monitors {
        data.push(view(s, scope, m).await?);
    }
    Ok(Listing { data })
}

/// Reads a monitor and its live state.
#[utoipa::path(
    get,
    path = "/monitors/{monitor_id}",
    tag = "monitors",
    operation_id = "read_monitor",
    params(MonitorPath),
    responses((status = 200, description = "The monitor.", body = MonitorView), ReadErrors),
)]
pub async fn read(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<MonitorPath>,
) -> Result<Response, ApiError> {
    Ok(Json(read_monitor(&s, &scope, &p.monitor_id).await?).into_response())
}

/// `read_monitor`: by its id or its URL token.
pub async fn read_monitor(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
) -> Result<MonitorView, ApiError> {
    let id = resolve(s, scope, monitor).await?;
    let Some(m) = s.store.monitor(&scope.tenant, &id).await? else {
        return Err(ApiError::not_found("monitor"));
    };
    view(s, scope, &m).await
}

/// Changes a monitor: absent fields stay; `"secret": null` removes the secret.
#[utoipa::path(
    patch,
    path = "/monitors/{monitor_id}",
    tag = "monitors",
    operation_id = "update_monitor",
    params(MonitorPath),
    request_body(content = Option<MonitorPatch>, description = "Only the fields to change; an empty body changes nothing."),
    responses((status = 200, description = "The monitor as changed.", body = MonitorView), WriteErrors),
)]
pub async fn update(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<MonitorPath>,
    ApiJson(patch): ApiJson<MonitorPatch>,
) -> Result<Response, ApiError> {
    Ok(Json(update_monitor(&s, &scope, &p.monitor_id, &patch).await?).into_response())
}

/// `update_monitor`.
pub async fn update_monitor(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
    patch: &MonitorPatch,
) -> Result<MonitorView, ApiError> {
    patch
        .validate()
        .map_err(|e| ApiError::invalid("invalid_monitor", &e))?;
    check_status_map(s, patch.status_map.as_ref().and_then(Option::as_ref)).await?;
    let id = resolve(s, scope, monitor).await?;
    let Some(m) = s.store.update_monitor(&scope.tenant, &id, patch).await? else {
        return Err(ApiError::not_found("monitor"));
    };
    s.watches
        .describe(Subject::monitor(&m, scope.shard))
        .await?;
    view(s, scope, &m).await
}

/// Deletes a monitor and its live state; no alert outlives it.
#[utoipa::path(
    delete,
    path = "/monitors/{monitor_id}",
    tag = "monitors",
    operation_id = "delete_monitor",
    params(MonitorPath),
    responses((status = 204, description = "Deleted."), ReadErrors),
)]
pub async fn remove(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<MonitorPath>,
) -> Result<Response, ApiError> {
    delete_monitor(&s, &scope, &p.monitor_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `delete_monitor`.
pub async fn delete_monitor(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
) -> Result<(), ApiError> {
    let id = resolve(s, scope, monitor).await?;
    if delete_watched(s, &scope.tenant, scope.shard, Watched::Monitor(&id)).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("monitor"))
    }
}

/// Replaces the URL token; the old one stops working at once.
#[utoipa::path(
    post,
    path = "/monitors/{monitor_id}/rotate-token",
    tag = "monitors",
    operation_id = "rotate_monitor_token",
    params(MonitorPath),
    responses((status = 200, description = "The monitor with its new token, shown this once.", body = MonitorWithToken), WriteErrors),
)]
pub async fn rotate_token(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<MonitorPath>,
) -> Result<Response, ApiError> {
    Ok(Json(rotate_monitor_token(&s, &scope, &p.monitor_id).await?).into_response())
}

/// `rotate_monitor_token`.
pub async fn rotate_monitor_token(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
) -> Result<MonitorWithToken, ApiError> {
    let id = resolve(s, scope, monitor).await?;
    let Some((m, token)) = s
        .store
        .rotate_monitor_token(&scope.tenant, &id, None)
        .await?
    else {
        return Err(ApiError::not_found("monitor"));
    };
    with_token(s, scope, &m, token).await
}

/// `?limit=` and `?before=` of history reads.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Most records (default 50).
    #[serde(default, deserialize_with = "crate::model::number::whole_opt")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u64>,
    /// Only records older than this time (RFC 3339): the time of the last record of the
    /// previous page. Older records come from the log store, when there is one.
    #[serde(default)]
    #[param(format = DateTime)]
    pub before: Option<String>,
}

impl HistoryQuery {
    pub(super) fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n) if (1..=100).contains(&n) => Ok(n as i64),
            Some(_) => Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be between 1 and 100",
            )),
        }
    }

    fn before_ms(&self) -> Result<Option<u64>, ApiError> {
        self.before
            .as_deref()
            .map(|b| {
                parse_rfc3339(b).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        "before must be an RFC 3339 time, such as 2026-12-01T10:00:00Z",
                    )
                })
            })
            .transpose()
    }
}

/// Where a history page starts and how long it is.
#[derive(Debug, Clone, Copy)]
struct PageOf<'a> {
    subject: &'a str,
    kind: HistoryKind,
    before: Option<u64>,
    limit: usize,
}

impl HistoryQuery {
    /// The page this query asks of `subject`'s history of `kind`, and how much of what
    /// Redis keeps to read for it (with a cursor the page may start anywhere: all of it).
    fn page_of<'a>(
        &self,
        subject: &'a str,
        kind: HistoryKind,
    ) -> Result<(PageOf<'a>, i64), ApiError> {
        let limit = self.limit()?;
        let before = self.before_ms()?;
        let hot_limit = if before.is_some() { -1 } else { limit };
        let page = PageOf {
            subject,
            kind,
            before,
            limit: limit as usize,
        };
        Ok((page, hot_limit))
    }
}

/// Newest first: what Redis keeps, then (with a log store) older records from it.
async fn two_tier<T: serde::de::DeserializeOwned>(
    s: &ApiState,
    scope: &TenantScope,
    page: PageOf<'_>,
    hot: Vec<T>,
    time_of: impl Fn(&T) -> Option<u64>,
) -> Result<Vec<T>, ApiError> {
    let PageOf {
        subject,
        kind,
        before,
        limit,
    } = page;
    let hot_oldest = hot.iter().filter_map(&time_of).min();
    let mut out: Vec<T> = hot
        .into_iter()
        .filter(|r| before.is_none_or(|b| time_of(r).is_some_and(|t| t < b)))
        .take(limit)
        .collect();
    if out.len() < limit {
        if let Some(log) = &s.history.log {
            let below = match (before, hot_oldest) {
                (Some(b), Some(h)) => b.min(h),
                (Some(b), None) => b,
                (None, Some(h)) => h,
                (None, None) => u64::MAX,
            };
            let older = log
                .history(
                    scope.tenant.as_str(),
                    subject,
                    kind,
                    below,
                    limit - out.len(),
                )
                .await?;
            out.extend(older.iter().filter_map(|r| serde_json::from_str(r).ok()));
        }
    }
    Ok(out)
}

/// A monitor's or watched source's incidents, newest first, from both tiers.
pub(super) async fn incidents_of(
    s: &ApiState,
    scope: &TenantScope,
    subject: &str,
    q: &HistoryQuery,
) -> Result<Listing<Incident>, ApiError> {
    let (page, hot_limit) = q.page_of(subject, HistoryKind::Incident)?;
    let hot = s.watches.incidents(scope.shard, subject, hot_limit).await?;
    let time = |i: &Incident| parse_rfc3339(&i.opened_at);
    Ok(Listing {
        data: two_tier(s, scope, page, hot, time).await?,
    })
}

/// A monitor's or watched source's status records, newest first, from both tiers.
pub(super) async fn checks_of(
    s: &ApiState,
    scope: &TenantScope,
    subject: &str,
    q: &HistoryQuery,
) -> Result<Listing<Check>, ApiError> {
    let (page, hot_limit) = q.page_of(subject, HistoryKind::Check)?;
    let hot = s.watches.checks(scope.shard, subject, hot_limit).await?;
    let time = |c: &Check| parse_rfc3339(&c.at);
    Ok(Listing {
        data: two_tier(s, scope, page, hot, time).await?,
    })
}

/// The tenant's monitor `monitor` names, checked before its history is read.
async fn monitor_subject(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
    q: &HistoryQuery,
) -> Result<MonitorId, ApiError> {
    q.limit()?;
    let id = resolve(s, scope, monitor).await?;
    s.store
        .monitor(&scope.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("monitor"))?;
    Ok(id)
}

/// `monitor_incidents`.
pub async fn monitor_incidents(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
    q: &HistoryQuery,
) -> Result<Listing<Incident>, ApiError> {
    let id = monitor_subject(s, scope, monitor, q).await?;
    incidents_of(s, scope, id.as_str(), q).await
}

/// `monitor_checks`.
pub async fn monitor_checks(
    s: &ApiState,
    scope: &TenantScope,
    monitor: &str,
    q: &HistoryQuery,
) -> Result<Listing<Check>, ApiError> {
    let id = monitor_subject(s, scope, monitor, q).await?;
    checks_of(s, scope, id.as_str(), q).await
}

/// The monitor's incidents (opened and resolved), newest first.
#[utoipa::path(
    get,
    path = "/monitors/{monitor_id}/incidents",
    tag = "monitors",
    operation_id = "monitor_incidents",
    params(MonitorPath, HistoryQuery),
    responses((status = 200, description = "Incidents, newest first.", body = Listing<Incident>), ReadErrors),
)]
pub async fn incidents(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<MonitorPath>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    Ok(monitor_incidents(&s, &scope, &p.monitor_id, &q)
        .await?
        .into_response())
}

/// The monitor's recent status records, newest first.
#[utoipa::path(
    get,
    path = "/monitors/{monitor_id}/checks",
    tag = "monitors",
    operation_id = "monitor_checks",
    params(MonitorPath, HistoryQuery),
    responses((status = 200, description = "Status records, newest first.", body = Listing<Check>), ReadErrors),
)]
pub async fn checks(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<MonitorPath>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    Ok(monitor_checks(&s, &scope, &p.monitor_id, &q)
        .await?
        .into_response())
}
