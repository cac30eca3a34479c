//! Deleting what is watched (monitors, sources with a silence watch) with its live state, and
//! everything a deleted tenant owned.

use super::scope::ApiState;
use crate::http::error::ApiError;
use crate::model::{MonitorId, SourceId, TenantId};
use crate::redis::keyspace::shard_of;

/// A watched subject to delete: a monitor, or a source (with its silence watch).
#[derive(Debug, Clone, Copy)]
pub(super) enum Watched<'a> {
    Monitor(&'a MonitorId),
    Source(&'a SourceId),
}

/// Deletes a monitor's definition, or a source, and then its live state, so no alert outlives
/// it; `false` when it is not there for this tenant.
pub(super) async fn delete_watched(
    s: &ApiState,
    tenant: &TenantId,
    shard: u16,
    what: Watched<'_>,
) -> Result<bool, ApiError> {
    let (gone, subject) = match what {
        Watched::Monitor(id) => (
            s.store.delete_monitor(tenant, id).await?.is_some(),
            id.as_str(),
        ),
        Watched::Source(id) => (s.store.delete_source(tenant, id).await?, id.as_str()),
    };
    if gone {
        s.watches.forget(shard, subject).await?;
    }
    Ok(gone)
}

/// Deletes what belonged to a deleted tenant. Each step is tried even if another fails (the
/// tenant cannot be deleted twice), and failures are logged.
pub(super) async fn purge(s: &ApiState, tenant: &TenantId) {
    let shard = shard_of(tenant, s.shards);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(request_id = %crate::telemetry::current_request_id(), tenant = %tenant, error = %e, "could not delete a deleted tenant's {what}");
    };
    if let Err(e) = s.store.delete_targets_of(tenant).await {
        failed("targets", &e);
    }
    if let Err(e) = s.store.delete_catalogue_of(tenant).await {
        failed("event catalogue", &e);
    }
    if let Err(e) = s.deliveries.forget_tenant_health(shard, tenant).await {
        failed("targets' health", &e);
    }
    match s.store.sources_of(tenant).await {
        Ok(sources) => {
            for src in sources {
                if let Err(e) = delete_watched(s, tenant, shard, Watched::Source(&src.id)).await {
                    failed("source", &e.message);
                }
            }
        }
        Err(e) => failed("sources", &e),
    }
    match s.store.monitors_of(tenant).await {
        Ok(monitors) => {
            for m in monitors {
                if let Err(e) = delete_watched(s, tenant, shard, Watched::Monitor(&m.id)).await {
                    failed("monitor", &e.message);
                }
            }
        }
        Err(e) => failed("monitors", &e),
    }
}
