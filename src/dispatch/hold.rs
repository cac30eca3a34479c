//! The entries this consumer holds open (read, with deliveries unfinished), and each entry's
//! hold: the last of its deliveries to record an outcome acknowledges it; a delivery that
//! cannot record its outcome leaves the entry pending, for a reclaim.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::queue::StreamReader;

/// The entries this consumer is still working on, by shard.
#[derive(Debug)]
pub(super) struct OpenEntries {
    reader: StreamReader,
    open: Mutex<HashSet<(u16, String)>>,
    /// How idle a released entry is made to look, so a reclaim takes it at once.
    reclaim_idle: Duration,
    stop: CancellationToken,
}

impl OpenEntries {
    pub(super) fn new(
        reader: StreamReader,
        reclaim_idle: Duration,
        stop: CancellationToken,
    ) -> OpenEntries {
        OpenEntries {
            reader,
            open: Mutex::new(HashSet::new()),
            reclaim_idle,
            stop,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(u16, String)>> {
        match self.open.lock() {
            Ok(open) => open,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Holds an entry open: it is kept from looking idle until acked or abandoned. `false`
    /// when it was held already (another path of this process is working on it).
    pub(super) fn open(&self, shard: u16, id: String) -> bool {
        self.lock().insert((shard, id))
    }

    /// Whether this process is working on the entry.
    pub(super) fn holds(&self, shard: u16, id: &str) -> bool {
        self.lock().contains(&(shard, id.to_owned()))
    }

    /// The entries of `shard` held open.
    pub(super) fn of_shard(&self, shard: u16) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(s, _)| *s == shard)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// Stops holding an entry without acknowledging it: it stays pending, and the sweep of
    /// this consumer's own pending entries brings it back.
    pub(super) fn drop_hold(&self, shard: u16, id: &str) {
        self.lock().remove(&(shard, id.to_owned()));
    }

    /// Acknowledges finished entries of `shard`, in one command.
    pub(super) async fn ack(&self, shard: u16, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        {
            let mut open = self.lock();
            for id in &ids {
                open.remove(&(shard, id.clone()));
            }
        }
        let count = ids.len();
        if let Err(e) = self.reader.ack(shard, ids).await {
            // The outcomes are recorded; the sweep of own entries finds them done and acks.
            crate::telemetry::redis_error("xack");
            tracing::warn!(shard, entries = count, error = %e, "could not ack finished entries");
        }
    }

    /// Hands entries back for another consumer's next reclaim.
    pub(super) async fn release(&self, shard: u16, ids: Vec<String>) {
        if let Err(e) = self.reader.release(shard, ids, self.reclaim_idle).await {
            tracing::debug!(shard, error = %e, "could not release entries; they are reclaimed after the idle time");
        }
    }
}

/// The open deliveries of one entry.
#[derive(Debug)]
pub(super) struct EntryHold {
    shard: u16,
    id: String,
    open: AtomicUsize,
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
    pub(super) async fn finish(&self, entries: &OpenEntries) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            entries.ack(self.shard, vec![self.id.clone()]).await;
        }
    }

    /// A delivery could not record its outcome (Redis gone, shutting down): the entry stays
    /// pending for a reclaim, and stops being kept alive.
    pub(super) async fn abandon(&self, entries: &OpenEntries) {
        let was_open = entries.lock().remove(&(self.shard, self.id.clone()));
        if was_open && entries.stop.is_cancelled() {
            // Shutting down with Redis reachable: let another dispatcher take it at once.
            entries.release(self.shard, vec![self.id.clone()]).await;
        }
    }
}
