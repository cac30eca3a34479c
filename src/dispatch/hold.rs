//! An entry's hold: the deliveries of one stream entry that have no recorded outcome yet. The
//! last outcome acknowledges the entry; a delivery that cannot record its outcome leaves the
//! entry pending, for a reclaim.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Inner;

/// The open deliveries of one entry.
#[derive(Debug)]
pub(super) struct EntryHold {
    pub(super) shard: u16,
    pub(super) id: String,
    pub(super) open: AtomicUsize,
}

impl EntryHold {
    pub(super) fn new(shard: u16, id: String, deliveries: usize) -> EntryHold {
        EntryHold {
            shard,
            id,
            open: AtomicUsize::new(deliveries),
        }
    }

    /// One delivery of the entry has its outcome in Redis.
    pub(super) async fn finish(&self, inner: &Inner) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            ack(inner, self.shard, &self.id).await;
        }
    }

    /// A delivery could not record its outcome (Redis gone, shutting down): the entry stays
    /// pending for a reclaim, and stops being kept alive.
    pub(super) async fn abandon(&self, inner: &Inner) {
        let was_open = match inner.open_entries.lock() {
            Ok(mut open) => open.remove(&(self.shard, self.id.clone())).is_some(),
            Err(_) => false,
        };
        if was_open && inner.stop.is_cancelled() {
            // Shutting down with Redis reachable: let another dispatcher take it at once.
            release(inner, self.shard, vec![self.id.clone()]).await;
        }
    }
}

/// Acknowledges a finished entry.
pub(super) async fn ack(inner: &Inner, shard: u16, id: &str) {
    if let Ok(mut open) = inner.open_entries.lock() {
        open.remove(&(shard, id.to_owned()));
    }
    if let Err(e) = inner.reader.ack(shard, id).await {
        // The outcomes are recorded; a reclaim will find them done and ack then.
        crate::telemetry::redis_error("xack");
        tracing::warn!(shard, entry = id, error = %e, "could not ack a finished entry");
    }
}

/// Hands entries back for another consumer's next reclaim.
pub(super) async fn release(inner: &Inner, shard: u16, ids: Vec<String>) {
    if let Err(e) = inner
        .reader
        .release(shard, ids, inner.settings.reclaim_idle)
        .await
    {
        tracing::debug!(shard, error = %e, "could not release entries; they are reclaimed after the idle time");
    }
}
