//! What needs looking at: targets failing or degraded, monitors down, sources silent, error
//! queues, the shards' backlog, Redis and the log store. Across tenants for the operator
//! (`GET /admin/overview`, the console's home page) and for one tenant (`…/overview` in both
//! scopes, its overview page).
//!
//! Built from indexes, never from event logs: one hash of target health and one error-queue
//! count per tenant (pipelined, 500 tenants per round trip), target documents only for the
//! tenants with a target in trouble, and the shards' index of unwell subjects. The lists are
//! capped at [`LISTED`] and say how many there are in all.

use std::collections::HashMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use fred::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::scope::{ApiState, TenantScope};
use super::targets::TargetHealthView;
use crate::http::error::{ApiError, ReadErrors};
use crate::model::time::rfc3339;
use crate::model::{TargetId, TenantId, WatchKind};
use crate::monitors::state::LiveStatus;
use crate::redis::keyspace::shard_of;
use crate::store::StoreError;
use crate::store::deliveries::health::{HealthState, TargetHealth};

/// The longest list of each kind.
pub const LISTED: usize = 100;
/// Tenants read per round trip.
const TENANT_PAGE: usize = 500;
/// How long the Redis check waits.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// What needs looking at.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// When it was read.
    #[schema(format = DateTime)]
    pub at: String,
    /// Tenants looked at (one in a tenant's scope).
    pub tenants: u64,
    /// Targets failing (their newest attempt failed), degraded (under 90 % delivered in the
    /// last hour), or disabled by the gateway (a 410): failing first, the longest failing
    /// first, then the lowest success ratio.
    pub troubled_targets: Vec<TroubledTarget>,
    /// All troubled targets, listed or not.
    pub troubled_targets_total: u64,
    /// Monitors down or degraded and sources silent, the longest first.
    pub unwell: Vec<UnwellSubject>,
    pub unwell_total: u64,
    /// Tenants whose error queue holds entries, the fullest first.
    pub error_queues: Vec<ErrorQueueSize>,
    /// Entries in every error queue looked at.
    pub error_queue_total: u64,
    /// The event streams' backlog (operator only).
    pub shards: Option<Vec<ShardBacklog>>,
    /// Redis and the log store (operator only).
    pub storage: Option<Storage>,
}

/// A target in trouble.
#[derive(Debug, Serialize, ToSchema)]
pub struct TroubledTarget {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub target_id: TargetId,
    pub url: String,
    /// Why the gateway disabled it (`gone` after a 410), if it did.
    pub disabled_reason: Option<String>,
    pub health: TargetHealthView,
}

/// A monitor down or degraded, or a source silent.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnwellSubject {
    pub id: String,
    pub kind: WatchKind,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub name: String,
    /// `down` (for a source: silent) or `degraded`.
    pub status: LiveStatus,
    #[schema(format = DateTime)]
    pub since: String,
}

/// A tenant's error queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorQueueSize {
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub entries: u64,
}

/// One shard stream's backlog.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardBacklog {
    pub shard: u16,
    /// Entries in the stream.
    pub length: u64,
    /// Entries the dispatch group has not read yet (`null`: it cannot tell).
    pub lag: Option<u64>,
    /// Entries read and not yet finished.
    pub pending: u64,
}

/// Redis and the log store, as this instance sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Storage {
    /// `ok`, or why not (`Redis does not answer`).
    pub redis: String,
    /// `null` without a log store; else as `/readyz` says: `ok`, `behind`, `unreachable`,
    /// `refusing`.
    pub log_store: Option<String>,
    /// Why the log store is `unreachable` or `refusing`.
    pub log_store_error: Option<String>,
    /// Age of the oldest finished event not yet in the log store, in seconds.
    pub log_store_lag_s: Option<f64>,
}

/// A tenant looked at.
struct Looked {
    id: TenantId,
    name: String,
    shard: u16,
}

/// Across every tenant (operator) or one.
pub async fn build(s: &ApiState, only: Option<&TenantScope>) -> Result<Overview, ApiError> {
    let now = s.store.clock().now_ms();
    let tenants = match only {
        Some(scope) => {
            let record = s
                .store
                .tenant(&scope.tenant)
                .await?
                .ok_or_else(|| ApiError::not_found("tenant"))?;
            vec![Looked {
                id: record.id,
                name: record.name.to_string(),
                shard: scope.shard,
            }]
        }
        None => all_tenants(s).await?,
    };
    let names: HashMap<&TenantId, &str> =
        tenants.iter().map(|t| (&t.id, t.name.as_str())).collect();

    let mut troubled = Vec::new();
    let mut queues = Vec::new();
    for chunk in tenants.chunks(TENANT_PAGE) {
        let (health, sizes) = read_chunk(s, chunk, now).await?;
        for ((t, h), entries) in chunk.iter().zip(health).zip(sizes) {
            if entries > 0 {
                queues.push(ErrorQueueSize {
                    tenant_id: t.id.clone(),
                    tenant_name: t.name.clone(),
                    entries,
                });
            }
            troubled.extend(troubled_of(s, t, h).await?);
        }
    }
    troubled.sort_by(|a, b| worst_first(&a.1, &b.1));
    queues.sort_by_key(|q| std::cmp::Reverse(q.entries));
    let error_queue_total = queues.iter().map(|q| q.entries).sum();

    let (unwell, unwell_total) = unwell(s, only, &names).await?;
    let operator = only.is_none();
    Ok(Overview {
        at: rfc3339(now),
        tenants: tenants.len() as u64,
        troubled_targets_total: troubled.len() as u64,
        troubled_targets: troubled.into_iter().take(LISTED).map(|t| t.0).collect(),
        unwell,
        unwell_total,
        error_queues: queues.into_iter().take(LISTED).collect(),
        error_queue_total,
        shards: if operator {
            Some(backlog(s).await?)
        } else {
            None
        },
        storage: if operator {
            Some(storage(s).await)
        } else {
            None
        },
    })
}

async fn all_tenants(s: &ApiState) -> Result<Vec<Looked>, ApiError> {
    let mut out = Vec::new();
    let mut after: Option<TenantId> = None;
    loop {
        let (page, more) = s.store.list_tenants(after.as_ref(), TENANT_PAGE).await?;
        after = page.last().map(|t| t.id.clone());
        out.extend(page.into_iter().map(|t| Looked {
            shard: shard_of(&t.id, s.shards),
            name: t.name.to_string(),
            id: t.id,
        }));
        if !more || after.is_none() {
            return Ok(out);
        }
    }
}

/// The target health and error-queue size of each tenant of `chunk`, in one round trip.
async fn read_chunk(
    s: &ApiState,
    chunk: &[Looked],
    now: u64,
) -> Result<(Vec<HashMap<TargetId, TargetHealth>>, Vec<u64>), StoreError> {
    let pairs: Vec<(u16, &TenantId)> = chunk.iter().map(|t| (t.shard, &t.id)).collect();
    let health = s.deliveries.targets_health_of(&pairs, now).await?;
    let keys = s.store.keyspace();
    let pipeline = s.store.redis().pipeline();
    for t in chunk {
        let _: () = pipeline
            .zcard(keys.dead_letter_order(t.shard, &t.id))
            .await?;
    }
    let sizes: Vec<u64> = if chunk.is_empty() {
        Vec::new()
    } else {
        pipeline.all().await?
    };
    Ok((health, sizes))
}

/// The troubled targets of one tenant, with the state that sorts them.
async fn troubled_of(
    s: &ApiState,
    t: &Looked,
    health: HashMap<TargetId, TargetHealth>,
) -> Result<Vec<(TroubledTarget, TargetHealth)>, ApiError> {
    // The documents are read only for a tenant with a target whose counters say trouble (the
    // target's own state can only make a healthy-looking one disabled, not the reverse).
    if !health.values().any(|h| h.state(true).is_bad()) {
        return Ok(Vec::new());
    }
    let targets = s.store.targets_of(&t.id).await?;
    Ok(targets
        .into_iter()
        .filter_map(|target| {
            let h = health.get(&target.id)?;
            let state = h.state(target.active);
            // A target an operator disabled is not in trouble; one the gateway disabled is.
            let gateway_disabled = !target.active && target.disabled_reason.is_some();
            (state.is_bad() || (gateway_disabled && h.state(true).is_bad())).then(|| {
                (
                    TroubledTarget {
                        tenant_id: t.id.clone(),
                        tenant_name: t.name.clone(),
                        url: target.url.as_str().to_owned(),
                        disabled_reason: target.disabled_reason.clone(),
                        health: TargetHealthView::new(h, target.active),
                        target_id: target.id,
                    },
                    h.clone(),
                )
            })
        })
        .collect())
}

/// Failing before degraded; among failing, the longest failing; among degraded, the lowest
/// ratio.
fn worst_first(a: &TargetHealth, b: &TargetHealth) -> std::cmp::Ordering {
    let rank = |h: &TargetHealth| match h.state(true) {
        HealthState::Failing => 0,
        _ => 1,
    };
    rank(a)
        .cmp(&rank(b))
        .then(a.failing_since_ms.cmp(&b.failing_since_ms))
        .then(
            a.success_ratio()
                .unwrap_or(1.0)
                .total_cmp(&b.success_ratio().unwrap_or(1.0)),
        )
}

async fn unwell(
    s: &ApiState,
    only: Option<&TenantScope>,
    names: &HashMap<&TenantId, &str>,
) -> Result<(Vec<UnwellSubject>, u64), ApiError> {
    // A tenant's own are found among everyone's: the index is by shard, not by tenant, and
    // reading past other tenants' entries costs O(unwell), not O(monitors).
    let limit = if only.is_some() { usize::MAX } else { LISTED };
    let (list, total) = s
        .watches
        .unwell(s.shards, limit.min(100_000))
        .await
        .map_err(|e| ApiError::unavailable(format!("the monitors' state cannot be read: {e}")))?;
    let mut out: Vec<UnwellSubject> = list
        .into_iter()
        .filter(|u| only.is_none_or(|scope| u.tenant == scope.tenant))
        .map(|u| UnwellSubject {
            tenant_name: names.get(&u.tenant).copied().unwrap_or_default().to_owned(),
            id: u.id,
            kind: u.kind,
            tenant_id: u.tenant,
            name: u.name,
            status: u.status,
            since: rfc3339(u.since_ms),
        })
        .collect();
    let total = if only.is_some() {
        out.len() as u64
    } else {
        total
    };
    out.truncate(LISTED);
    Ok((out, total))
}

async fn backlog(s: &ApiState) -> Result<Vec<ShardBacklog>, ApiError> {
    Ok(super::system::shards(s)
        .await?
        .into_iter()
        .map(|sh| ShardBacklog {
            shard: sh.shard,
            length: sh.length,
            lag: sh.lag,
            pending: sh.pending,
        })
        .collect())
}

async fn storage(s: &ApiState) -> Storage {
    let ping = tokio::time::timeout(PING_TIMEOUT, s.store.redis().ping::<String>(None)).await;
    let redis = match ping {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("Redis refuses: {e}"),
        Err(_) => "Redis does not answer".to_owned(),
    };
    let log = s.system.readiness.log_store().await;
    Storage {
        redis,
        log_store: log.as_ref().map(|l| l.state.to_owned()),
        log_store_error: log.as_ref().and_then(|l| l.error.clone()),
        log_store_lag_s: log.and_then(|l| l.lag_s),
    }
}

/// What needs looking at across tenants: the console's home page.
#[utoipa::path(
    get,
    path = "/admin/overview",
    tag = "system",
    operation_id = "overview",
    responses((status = 200, description = "What needs looking at.", body = Overview), ReadErrors),
)]
pub async fn all(State(s): State<ApiState>) -> Result<Response, ApiError> {
    Ok(Json(build(&s, None).await?).into_response())
}

/// What needs looking at in this tenant: its troubled targets, monitors down, sources silent
/// and error queue.
#[utoipa::path(
    get,
    path = "/overview",
    tag = "tenants",
    operation_id = "tenant_overview",
    responses((status = 200, description = "What needs looking at.", body = Overview), ReadErrors),
)]
pub async fn tenant(State(s): State<ApiState>, scope: TenantScope) -> Result<Response, ApiError> {
    Ok(Json(build(&s, Some(&scope)).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(failing_since: Option<u64>, attempts: u64, failed: u64) -> TargetHealth {
        TargetHealth {
            attempts,
            failed,
            failing_since_ms: failing_since,
            ..TargetHealth::none(0)
        }
    }

    #[test]
    fn the_longest_failing_come_first_then_the_lowest_ratio() {
        let mut list = [
            health(None, 10, 5),
            health(Some(20), 10, 0),
            health(None, 10, 8),
            health(Some(10), 10, 10),
        ];
        list.sort_by(worst_first);
        let order: Vec<(Option<u64>, u64)> = list
            .iter()
            .map(|h| (h.failing_since_ms, h.failed))
            .collect();
        assert_eq!(order, [(Some(10), 10), (Some(20), 0), (None, 8), (None, 5)]);
    }
}
