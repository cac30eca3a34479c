//! What the dispatcher runs with, from `[dispatch]` and its neighbours.

use std::time::Duration;

use crate::config::Config;
use crate::model::RetryPolicy;

/// What the dispatcher runs with, from `[dispatch]` and neighbours.
#[derive(Debug, Clone)]
pub struct Settings {
    pub shards: u16,
    pub concurrency: usize,
    pub per_target_concurrency: usize,
    pub max_waiting_per_target: usize,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub reclaim_idle: Duration,
    pub read_batch: usize,
    pub retry_poll: Duration,
    pub allow_private: bool,
    /// Longest a reader blocks in `XREADGROUP`; below the Redis command timeout.
    pub block: Duration,
    /// How long a deferred delivery waits before it is looked at again.
    pub defer: Duration,
    /// Longest an outcome waits for its recording batch (the Redis command timeout).
    pub record_deadline: Duration,
    /// The admin listener's port, which no other process on this host can hold at the same
    /// time: with the host name it makes a consumer name that survives a restart (`None` for
    /// port 0).
    pub admin_port: Option<u16>,
    /// Which attempts keep their headers.
    pub attempt_headers: super::headers::KeepHeaders,
    /// The deployment's breaker settings (targets override them field by field).
    pub breaker: crate::model::target_health::BreakerSettings,
    /// How long a target may fail before it is disabled (ms).
    pub disable_after_ms: u64,
    /// The first wait before probing a target disabled for failing (ms).
    pub heal_probe_ms: u64,
}

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let d = &c.dispatch;
        Settings {
            shards: c.queue.shards,
            concurrency: d.concurrency,
            per_target_concurrency: d.per_target_concurrency,
            max_waiting_per_target: d.max_waiting_per_target,
            request_timeout: Duration::from_millis(d.request_timeout_ms),
            retry: d.retry,
            reclaim_idle: Duration::from_millis(d.reclaim_idle_ms),
            read_batch: d.read_batch,
            retry_poll: Duration::from_millis(d.retry_poll_ms),
            allow_private: c.security.allow_private_targets,
            block: (c.redis_command_timeout() / 2)
                .clamp(Duration::from_millis(10), Duration::from_millis(1000)),
            defer: Duration::from_millis(d.retry_poll_ms.max(250) * 4),
            record_deadline: c.redis_command_timeout(),
            admin_port: Some(c.admin.listen.port()).filter(|p| *p != 0),
            attempt_headers: d.attempt_headers,
            breaker: d.breaker,
            disable_after_ms: (d.disable_after_h * 3_600_000.0).round() as u64,
            heal_probe_ms: (d.heal_probe_s * 1000.0).round() as u64,
        }
    }
}
