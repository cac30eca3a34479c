//! Passive monitoring: monitored services push status and heartbeats, sources may declare how
//! often they expect events, and the gateway raises incidents and alerts when either goes
//! quiet or reports trouble. Nothing is polled.
//!
//! - [`state`]: the live state of a watched subject, one script per signal (status, deadline,
//!   check record, incident, alert event in the tenant's stream);
//! - [`checker`]: the overdue checker, safe with several instances;
//! - [`unwell`]: the subjects that are down or degraded, across shards.
//!
//! Signals arrive through [`crate::ingest::heartbeats`] (monitors) and
//! [`crate::sources::hooks`] (watched sources). Alerts are ordinary events (`monitor.up`,
//! `monitor.down`, `monitor.degraded`, `source.silent`, `source.resumed`) appended to the
//! tenant's stream, so targets subscribed to them get the normal signing, retries and error
//! queue; [`crate::dispatch::format`] renders them for chat targets.

pub mod checker;
pub mod state;
pub mod unwell;
