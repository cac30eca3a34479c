//! Passive monitoring: monitored services push status and heartbeats, sources may declare how
//! often they expect events, and the gateway raises incidents and alerts when either goes
//! quiet or reports trouble. We never poll anything.
//!
//! - [`state`]: the live state of a watched subject, one script per signal (status, deadline,
//!   check record, incident, alert event in the tenant's stream);
//! - [`push`]: the `/v1/monitors/{key}` endpoints that record signals;
//! - [`checker`]: the overdue checker, safe with several instances;
//! - [`format`]: Slack and Discord message formats for alert targets.
//!
//! Alerts are ordinary events (`monitor.up`, `monitor.down`, `monitor.degraded`,
//! `source.silent`, `source.resumed`) appended to the tenant's stream, so targets subscribed to
//! them get the normal signing, retries and error queue.

pub mod checker;
pub mod format;
pub mod push;
pub mod state;

use crate::store::{Store, StoreError};
use state::{Kind, Watches};

/// Deletes a monitor's definition, or a source, and then its live state (so no alert outlives
/// it); `false` when it is not there for this tenant.
pub async fn delete_watched(
    store: &Store,
    watches: &Watches,
    kind: Kind,
    tenant: &str,
    shard: u16,
    id: &str,
) -> Result<bool, StoreError> {
    let gone = match kind {
        Kind::Monitor => store.delete_monitor(tenant, id).await?.is_some(),
        Kind::Source => store.delete_source(tenant, id).await?,
    };
    if gone {
        watches.forget(shard, id).await?;
    }
    Ok(gone)
}
