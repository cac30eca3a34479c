//! The log store: the long-term event log in PostgreSQL (`[log_store] url`).
//!
//! With a log store, Redis holds only the hot window (unfinished deliveries, the retry
//! schedule, the error-queue index, monitor live state, and finished events for
//! `queue.hot_window_s`); the [`shipper`] moves each finished event, with its per-target
//! delivery states and attempts, into PostgreSQL, and only then lets the Redis copies expire.
//! Reads ([`crate::api`]) look in Redis first and here for the rest.
//!
//! - [`connect`]: the pool (tokio-postgres + deadpool-postgres, rustls), migrations;
//! - [`partitions`]: one partition per UTC day, created ahead, dropped whole by retention;
//! - [`write`]: batched, idempotent inserts of shipped events; rows PostgreSQL refuses go to
//!   the quarantine table;
//! - [`text`]: the one type of every `text` column's values (no NUL: nothing can be refused);
//! - [`read`]: an event, listings with filters, what a target failed in a time range;
//! - [`shipper`]: the task that moves finished events from Redis to here.

pub mod connect;
pub mod handle;
pub mod partitions;
pub mod read;
pub mod shipper;
pub mod text;
pub mod write;

pub use crate::store::deliveries::LoggedEvent;
pub use connect::{LogStoreError, redact_url};
pub use handle::{LogStore, maintenance};
