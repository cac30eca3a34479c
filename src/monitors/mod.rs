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
