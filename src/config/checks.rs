//! What a loaded configuration must satisfy before anything starts ([`Config::validate`]), and
//! the legal but risky choices `serve` warns about at start ([`Config::warnings`]).

use super::error::{broken, invalid};
use super::*;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.master_key()?;
        if self.admin.token.expose().len() < MIN_SECRET_TOKEN_LEN {
            return Err(invalid(
                "admin.token",
                format!("must be at least {MIN_SECRET_TOKEN_LEN} characters"),
            ));
        }
        self.web.validate()?;
        self.telemetry.check()?;
        let t = &self.transform;
        if !(1..=60_000).contains(&t.timeout_ms) {
            return Err(invalid(
                "transform.timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if !(1..=64).contains(&t.workers) {
            return Err(invalid("transform.workers", "must be between 1 and 64"));
        }
        if t.memory_mb != 0 && t.memory_mb < 256 {
            return Err(invalid(
                "transform.memory_mb",
                "must be at least 256 (a worker's stack alone reserves 64 MiB of address space, its code more; 0 leaves it unlimited)",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&t.max_output_bytes) {
            return Err(invalid(
                "transform.max_output_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let edge = &self.edge;
        if edge.listen.is_none() && edge.plain_listen.is_none() {
            return Err(invalid(
                "edge.listen",
                "set edge.listen (TLS) or edge.plain_listen (cleartext), or both",
            ));
        }
        if edge.max_body_bytes == 0 {
            return Err(invalid("edge.max_body_bytes", "must be at least 1"));
        }
        if !(8 * 1024..=1024 * 1024).contains(&edge.max_header_bytes) {
            return Err(invalid(
                "edge.max_header_bytes",
                "must be between 8192 and 1048576",
            ));
        }
        for (key, value) in [
            ("edge.header_read_timeout_ms", edge.header_read_timeout_ms),
            (
                "edge.tls_handshake_timeout_ms",
                edge.tls_handshake_timeout_ms,
            ),
            ("edge.body_idle_timeout_ms", edge.body_idle_timeout_ms),
            ("edge.body_timeout_ms", edge.body_timeout_ms),
            ("redis.command_timeout_ms", self.redis.command_timeout_ms),
            ("redis.connect_timeout_ms", self.redis.connect_timeout_ms),
            (
                "dispatch.request_timeout_ms",
                self.dispatch.request_timeout_ms,
            ),
            ("monitors.check_every_ms", self.monitors.check_every_ms),
            ("auth.cache_ttl_ms", self.auth.cache_ttl_ms),
            ("auth.negative_ttl_ms", self.auth.negative_ttl_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if edge.max_connections == 0 {
            return Err(invalid("edge.max_connections", "must be at least 1"));
        }
        if edge.h2_max_concurrent_streams == 0 {
            return Err(invalid(
                "edge.h2_max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if let (Some(a), Some(b)) = (edge.listen, edge.plain_listen) {
            if a == b {
                return Err(invalid("edge.plain_listen", "must differ from edge.listen"));
            }
        }
        if edge.listen == Some(self.admin.listen) || edge.plain_listen == Some(self.admin.listen) {
            return Err(invalid(
                "admin.listen",
                "must differ from the edge listeners",
            ));
        }
        validate_prefix(&self.redis.prefix).map_err(|e| broken("redis.prefix", e))?;
        validate_url(&self.redis.url).map_err(|e| invalid("redis.url", e.to_string()))?;
        if self.redis.wait_aof && is_cluster_url(&self.redis.url) {
            return Err(invalid(
                "redis.wait_aof",
                "is not supported with Redis Cluster (WAITAOF confirms one node only)",
            ));
        }
        if !(1..=1024).contains(&self.queue.shards) {
            return Err(invalid("queue.shards", "must be between 1 and 1024"));
        }
        if self.queue.retention_hours == 0 {
            return Err(invalid("queue.retention_hours", "must be at least 1"));
        }
        if self.queue.hot_window_s == 0
            || self.queue.hot_window_s > self.queue.retention_hours * 3600
        {
            return Err(invalid(
                "queue.hot_window_s",
                "must be at least 1 and at most queue.retention_hours (in seconds)",
            ));
        }
        if self
            .queue
            .expected_events_per_s
            .is_some_and(|r| !r.is_finite() || !(0.0..=10_000_000.0).contains(&r))
        {
            return Err(invalid(
                "queue.expected_events_per_s",
                "must be a number of events per second between 0 and 10000000",
            ));
        }
        if let Some(ls) = &self.log_store {
            let url = ls.url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "log_store.url",
                    "must be a postgres:// or postgresql:// URL",
                ));
            }
        }
        if !(1..=MAX_BATCH_EVENTS).contains(&self.queue.max_batch) {
            return Err(invalid(
                "queue.max_batch",
                format!("must be between 1 and {MAX_BATCH_EVENTS}"),
            ));
        }
        if !(1..=64).contains(&self.queue.max_inflight_batches) {
            return Err(invalid(
                "queue.max_inflight_batches",
                "must be between 1 and 64",
            ));
        }
        if self.auth.cache_capacity == 0 {
            return Err(invalid("auth.cache_capacity", "must be at least 1"));
        }
        let d = &self.dispatch;
        for (key, value) in [
            ("dispatch.concurrency", d.concurrency),
            ("dispatch.per_target_concurrency", d.per_target_concurrency),
            ("dispatch.max_waiting_per_target", d.max_waiting_per_target),
            ("dispatch.read_batch", d.read_batch),
            ("dispatch.retry_poll_ms", d.retry_poll_ms as usize),
            ("dispatch.attempts_kept", d.attempts_kept as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        d.breaker
            .check()
            .map_err(|e| invalid(&format!("dispatch.breaker.{}", e.path), e.message))?;
        crate::model::target_health::Hours::new(d.disable_after_h)
            .map_err(|e| invalid("dispatch.disable_after_h", e.message))?;
        if !(0.05..=21_600.0).contains(&d.heal_probe_s) {
            return Err(invalid(
                "dispatch.heal_probe_s",
                "must be between 0.05 and 21600 (six hours)",
            ));
        }
        if d.heal_replay_max_events > 1_000_000 {
            return Err(invalid(
                "dispatch.heal_replay_max_events",
                "must be at most 1000000",
            ));
        }
        if d.read_batch > 1000 {
            return Err(invalid("dispatch.read_batch", "must be at most 1000"));
        }
        let margin = (d.request_timeout_ms * 2).max(d.request_timeout_ms + 5_000);
        if d.reclaim_idle_ms < margin {
            return Err(invalid(
                "dispatch.reclaim_idle_ms",
                format!(
                    "must be at least {margin} (twice dispatch.request_timeout_ms, and 5 s more than it): a shorter one hands live deliveries to a second consumer"
                ),
            ));
        }
        for (key, c) in [
            ("caches.targets", &self.caches.targets),
            ("caches.sources", &self.caches.sources),
            ("caches.monitors", &self.caches.monitors),
        ] {
            if c.capacity == 0 || c.ttl_ms == 0 || c.negative_ttl_ms == 0 {
                return Err(invalid(
                    key,
                    "capacity, ttl_ms and negative_ttl_ms must be at least 1",
                ));
            }
        }
        declared::validate(&self.tenants, self.security.allow_private_targets)
    }

    /// Legal but risky settings, one sentence each, for `serve` to log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.admin.token.is_literal() {
            out.push(
                "admin.token is written in the config file; use env:NAME outside development"
                    .into(),
            );
        }
        if self.security.master_key.is_literal() {
            out.push(
                "security.master_key is written in the config file; use env:NAME outside development"
                    .into(),
            );
        }
        if self.security.allow_private_targets {
            out.push("security.allow_private_targets = true: targets may reach private and loopback addresses (SSRF guard off)".into());
        }
        if self.tls.generate_dev_cert {
            out.push(
                "tls.generate_dev_cert = true: a self-signed development certificate may be served"
                    .into(),
            );
        }
        if !self.web.frame_ancestors.is_empty() && self.edge.plain_listen.is_some() {
            out.push(
                "web.frame_ancestors is set: the portal is embeddable over HTTPS only; over the cleartext listener (edge.plain_listen) its cookie stays first-party (SameSite=Strict) and other sites' frames cannot keep a session".into(),
            );
        }
        for addr in [self.edge.plain_listen, Some(self.admin.listen)]
            .into_iter()
            .flatten()
        {
            if !addr.ip().is_loopback() {
                out.push(format!(
                    "cleartext listener on non-loopback address {addr}: put it behind a TLS-terminating proxy"
                ));
            }
        }
        for t in &self.tenants {
            if t.all_tokens().any(Secret::is_literal) {
                out.push(format!(
                    "tenants `{}` has a token written in the config file; use env:NAME outside development",
                    t.id
                ));
            }
        }
        out
    }
}
