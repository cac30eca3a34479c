//! The handle to the log store: opening it (pool, migrations, partitions), its upkeep.

use std::sync::Arc;
use std::time::Duration;

use super::connect::{self, LogStoreError, redact_url};
use super::partitions::Partitions;
use crate::model::time::Clock;

/// Handle to the log store. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    pub(super) pool: deadpool_postgres::Pool,
    pub(super) partitions: Arc<Partitions>,
    /// How long the log keeps an event (`queue.retention_hours`).
    pub(super) retention: Duration,
    /// The URL without its password, for messages.
    shown_url: Arc<str>,
    /// The time retention is judged by.
    pub(super) clock: Clock,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("url", &self.shown_url)
            .field("retention", &self.retention)
            .finish()
    }
}

impl LogStore {
    /// Connects, runs the migrations and creates the partitions of the days around now.
    pub async fn open(url: &str, retention: Duration) -> Result<LogStore, LogStoreError> {
        let shown_url: Arc<str> = redact_url(url).into();
        let pool = connect::pool(url)?;
        let store = LogStore {
            pool,
            partitions: Arc::new(Partitions::default()),
            retention,
            shown_url,
            clock: Clock::system(),
        };
        let mut client = store.pool.get().await?;
        connect::migrate(&mut client).await?;
        store
            .partitions
            .maintain(&client, retention, store.clock.now_ms())
            .await?;
        Ok(store)
    }

    /// The same log store on `clock`.
    pub fn with_clock(mut self, clock: Clock) -> LogStore {
        self.clock = clock;
        self
    }

    /// The URL without its password.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// How long the log keeps an event.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Creates the partitions ahead and drops those past retention; how many of each. The
    /// quarantine is small and unpartitioned: its rows past retention are deleted.
    pub async fn maintain(&self) -> Result<(usize, usize), LogStoreError> {
        let client = self.pool.get().await?;
        let now = self.clock.now_ms();
        let done = self
            .partitions
            .maintain(&client, self.retention, now)
            .await?;
        let cutoff = (std::time::UNIX_EPOCH + Duration::from_millis(now))
            .checked_sub(self.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        client
            .execute("DELETE FROM quarantine WHERE at < $1", &[&cutoff])
            .await?;
        Ok(done)
    }

    /// Whether PostgreSQL answers a query within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let probe = async {
            let client = self.pool.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(timeout, probe).await, Ok(Some(_)))
    }
}

/// The periodic partition upkeep: creates tomorrow's partitions before they are needed and
/// drops the days past retention.
pub async fn maintenance(
    store: LogStore,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.maintain().await {
            Ok((0, 0)) => {}
            Ok((created, dropped)) => {
                tracing::info!(created, dropped, "log store partitions maintained")
            }
            Err(e) => tracing::warn!(error = %e, "log store partition upkeep failed; will retry"),
        }
    }
}
