//! Configuration: defaults in code, then the TOML file, then `ESTAFETA_<SECTION>__<KEY>` overrides.
//!
//! Every struct denies unknown fields, so a misspelt key fails at start with its path. Values with a
//! unit carry it in their name (`_ms`, `_bytes`, `_hours`). [`Config::load`] merges and validates;
//! [`Config::warnings`] lists legal but risky choices that `serve` logs at start.

mod checks;
mod declared;
mod error;
mod redis_url;
mod secret;
mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

pub use declared::{MonitorDecl, TargetDecl, TenantDecl};
pub use error::ConfigError;
use error::invalid;
pub use redis_url::{UrlError, is_cluster_url, normalize_url, redact_url, validate_url};
pub use secret::{MIN_SECRET_TOKEN_LEN, Secret};
pub use telemetry::{OtlpProtocol, TelemetryConfig, Tracing};

use crate::model::{Invalid, RateLimit, RetryPolicy};

/// Where the config is read from when neither `--config` nor `ESTAFETA_CONFIG` is given.
pub const DEFAULT_PATH: &str = "config/estafeta.toml";

/// `redis.prefix`: letters, digits and `_.:-`, at most 64, no braces (they would change the
/// cluster hash tags).
fn validate_prefix(prefix: &str) -> Result<(), Invalid> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new("must be 1 to 64 of A-Z a-z 0-9 _ . : -"))
    }
}

/// The whole configuration of one `estafeta` process.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listeners: tenants and external platforms.
    #[serde(default)]
    pub edge: EdgeConfig,
    /// Operators' listener.
    pub admin: AdminConfig,
    /// Certificate for the TLS edge listener.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Connection to Redis, the only state store.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Keys and outbound safety.
    pub security: SecurityConfig,
    /// Layout and retention of the event streams.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Bearer-token cache.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Outbound deliveries.
    #[serde(default)]
    pub dispatch: DispatchConfig,
    /// Passive monitors.
    #[serde(default)]
    pub monitors: MonitorsConfig,
    /// Log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Traces (OpenTelemetry, OTLP): off unless a collector is named.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The async runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Sizes and lifetimes of the definition caches behind targets, sources and monitors.
    #[serde(default)]
    pub caches: CachesConfig,
    /// The long-term event log in PostgreSQL (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_store: Option<LogStoreConfig>,
    /// The operator console and the tenant portal.
    #[serde(default)]
    pub web: WebConfig,
    /// jq programs: targets' transformations and monitors' status maps.
    #[serde(default)]
    pub transform: TransformConfig,
    /// Tenants applied idempotently at start (config-driven deployments).
    #[serde(default)]
    pub tenants: Vec<TenantDecl>,
}

/// The log store: where finished events go when they leave Redis.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogStoreConfig {
    /// `postgres://user:password@host:5432/database` (`env:NAME` reads a variable).
    pub url: Secret,
}

/// One in-process cache.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Most entries.
    pub capacity: u64,
    /// How long a found definition stays cached (changes arrive sooner, by invalidation).
    pub ttl_ms: u64,
    /// How long a definition found missing stays cached.
    pub negative_ttl_ms: u64,
}

impl CacheConfig {
    const fn new(capacity: u64, ttl_ms: u64, negative_ttl_ms: u64) -> CacheConfig {
        CacheConfig {
            capacity,
            ttl_ms,
            negative_ttl_ms,
        }
    }
}

/// The definition caches.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CachesConfig {
    /// A tenant's compiled targets, in each dispatcher.
    pub targets: CacheConfig,
    /// Sources by URL token, on the edge.
    pub sources: CacheConfig,
    /// Monitors by URL token and by id, on the edge.
    pub monitors: CacheConfig,
    /// Each tenant's event catalogue, on the edge (tenants whose `catalogue` is not `off`).
    pub catalogue: CacheConfig,
}

impl Default for CachesConfig {
    fn default() -> Self {
        CachesConfig {
            targets: CacheConfig::new(100_000, 30_000, 30_000),
            sources: CacheConfig::new(100_000, 30_000, 1_000),
            monitors: CacheConfig::new(200_000, 30_000, 1_000),
            catalogue: CacheConfig::new(100_000, 30_000, 1_000),
        }
    }
}

/// The edge listeners and their hardening limits.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// TLS listener (HTTP/1.1 and HTTP/2 by ALPN).
    pub listen: Option<SocketAddr>,
    /// Optional cleartext listener, for a load balancer that terminates TLS, or for benches.
    pub plain_listen: Option<SocketAddr>,
    /// Largest accepted request body; larger bodies get 413 without being buffered.
    pub max_body_bytes: u64,
    /// Largest request head (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head; also the idle limit between requests.
    pub header_read_timeout_ms: u64,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout_ms: u64,
    /// Longest pause allowed between two pieces of a request body.
    pub body_idle_timeout_ms: u64,
    /// Longest time allowed to receive a whole request body.
    pub body_timeout_ms: u64,
    /// Open connections per listener; further clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings (0 disables them).
    pub h2_keepalive_interval_ms: u64,
    /// How long SIGTERM waits for in-flight requests before closing connections.
    pub shutdown_grace_ms: u64,
    /// Rate limit for tenants that have none of their own; none means unlimited.
    pub default_rate_limit: Option<RateLimit>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: None,
            plain_listen: None,
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            header_read_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 5_000,
            body_idle_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            max_connections: 10_000,
            h2_max_concurrent_streams: 256,
            h2_keepalive_interval_ms: 30_000,
            shutdown_grace_ms: 10_000,
            default_rate_limit: None,
        }
    }
}

/// The operator console (admin listener) and the tenant portal (edge listeners).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// The edge's public base URL (`https://hooks.example.com`): portal links are absolute
    /// when it is set, paths otherwise.
    pub public_url: Option<String>,
    /// Origins that may embed the portal in a frame (`frame-ancestors`); empty: none may.
    pub frame_ancestors: Vec<String>,
    /// A session ends after this long without a request.
    pub session_idle_s: u64,
    /// A session ends this long after sign-in, however busy.
    pub session_max_s: u64,
    /// The longest lifetime a portal link may be given.
    pub portal_link_max_ttl_s: u64,
    /// Whether a portal link signs in once only (its first use becomes a session), unless the
    /// request issuing it says otherwise.
    pub portal_link_single_use: bool,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` and `X-Forwarded-Proto`
    /// are believed; from any other peer those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Failed sign-ins (console or portal) allowed per client address, and per credential,
    /// in a minute; past it, sign-in answers 429 until the minute is over.
    pub signin_failures_per_minute: u32,
}

impl WebConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url {
            let ok = url::Url::parse(u)
                .map(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some())
                .unwrap_or(false);
            if !ok {
                return Err(invalid(
                    "web.public_url",
                    "must be an http(s) URL such as https://hooks.example.com",
                ));
            }
        }
        for origin in &self.frame_ancestors {
            // Each becomes a CSP source expression: no spaces, quotes or separators.
            let ok = !origin.is_empty()
                && origin
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'\'' | b'"'));
            if !ok {
                return Err(invalid(
                    "web.frame_ancestors",
                    format!("{origin:?} is not an origin such as https://app.example.com"),
                ));
            }
        }
        self.proxies()?;
        if !(1..=10_000).contains(&self.signin_failures_per_minute) {
            return Err(invalid(
                "web.signin_failures_per_minute",
                "must be between 1 and 10000",
            ));
        }
        for (key, v) in [
            ("web.session_idle_s", self.session_idle_s),
            ("web.session_max_s", self.session_max_s),
            ("web.portal_link_max_ttl_s", self.portal_link_max_ttl_s),
        ] {
            if v == 0 || v > 366 * 24 * 3600 {
                return Err(invalid(key, "must be between 1 and 31622400"));
            }
        }
        Ok(())
    }
}

impl WebConfig {
    /// `trusted_proxies`, parsed: an address is a block of one.
    pub fn proxies(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "web.trusted_proxies",
                            format!("{p:?} is not an address or a CIDR block such as 10.0.0.0/8"),
                        )
                    })
            })
            .collect()
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            public_url: None,
            frame_ancestors: Vec::new(),
            session_idle_s: 30 * 60,
            session_max_s: 12 * 3600,
            portal_link_max_ttl_s: 7 * 24 * 3600,
            portal_link_single_use: true,
            trusted_proxies: Vec::new(),
            signin_failures_per_minute: 10,
        }
    }
}

/// The admin listener.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API, `/metrics` and `/openapi.json`.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token of the admin API.
    pub token: Secret,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// The TLS certificate of the edge.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Generate a self-signed development certificate at start when the files are missing.
    pub generate_dev_cert: bool,
    /// Names the generated development certificate is valid for.
    pub dev_cert_hosts: Vec<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: PathBuf::from("certs/dev.crt"),
            key: PathBuf::from("certs/dev.key"),
            generate_dev_cert: false,
            dev_cert_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        }
    }
}

/// Redis connection and durability settings.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis-cluster://host:port,host:port`.
    pub url: String,
    /// Every key the gateway writes starts with this.
    pub prefix: String,
    /// Longest wait for a Redis reply before the request fails with 503.
    pub command_timeout_ms: u64,
    /// Longest wait to open a connection.
    pub connect_timeout_ms: u64,
    /// Refuse to start unless Redis is set up so that an acknowledged event survives a crash.
    pub require_durable: bool,
    /// Make every 202 wait until Redis has fsynced the event to its AOF (`WAITAOF`, Redis 7.2+).
    pub wait_aof: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "estafeta".into(),
            command_timeout_ms: 2_000,
            connect_timeout_ms: 5_000,
            require_durable: false,
            wait_aof: false,
        }
    }
}

/// Keys and outbound safety.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// 32 bytes, base64: the root of every key that hashes tokens and seals secrets at rest.
    pub master_key: Secret,
    /// Allow delivery targets on loopback, private and link-local addresses (SSRF guard off).
    #[serde(default)]
    pub allow_private_targets: bool,
}

/// Layout and retention of the event streams.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Number of shard streams. Fixed for the life of a deployment: it decides which stream
    /// holds each tenant's events.
    pub shards: u16,
    /// How long events, deliveries and attempts stay readable.
    pub retention_hours: u64,
    /// With a log store: how long finished events stay in Redis after they were shipped.
    pub hot_window_s: u64,
    /// The event rate (events/s) the start-up line projects Redis memory for, when there is
    /// no log store; unset: the rate observed in the streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_events_per_s: Option<f64>,
    /// Most events written to Redis as one batch (one stream entry per shard).
    pub max_batch: usize,
    /// Batches in flight to Redis at once. More lowers latency when Redis is far away; fewer
    /// makes batches larger and Redis's work per event smaller.
    pub max_inflight_batches: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            shards: 16,
            retention_hours: 14 * 24,
            hot_window_s: 3600,
            expected_events_per_s: None,
            max_batch: 256,
            max_inflight_batches: 1,
        }
    }
}

/// The bearer-token cache in front of Redis.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a valid token or tenant stays cached (invalidations arrive sooner by pub/sub).
    pub cache_ttl_ms: u64,
    /// How long an unknown token is remembered as unknown.
    pub negative_ttl_ms: u64,
    /// Most tokens (and tenants) cached.
    pub cache_capacity: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            cache_ttl_ms: 60_000,
            negative_ttl_ms: 1_000,
            cache_capacity: 100_000,
        }
    }
}

/// Which attempts keep their headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepHeaders {
    /// Attempts that did not deliver: what an operator reads to find out why, at no cost to
    /// the deliveries that succeed (their record stays as small as without headers).
    #[default]
    Failed,
    /// Every attempt.
    All,
    /// None.
    None,
}

impl KeepHeaders {
    /// Whether an attempt that `delivered` (or not) keeps its headers.
    pub fn keeps(self, delivered: bool) -> bool {
        match self {
            KeepHeaders::All => true,
            KeepHeaders::Failed => !delivered,
            KeepHeaders::None => false,
        }
    }
}

/// Outbound deliveries.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Deliveries in flight per dispatcher process.
    pub concurrency: usize,
    /// Time limit of one delivery attempt.
    pub request_timeout_ms: u64,
    /// Default retry policy of persistent targets.
    pub retry: RetryPolicy,
    /// Deliveries in flight to one target.
    pub per_target_concurrency: usize,
    /// Deliveries waiting in memory for one target; more are deferred to the retry schedule.
    pub max_waiting_per_target: usize,
    /// A stream entry pending this long with no progress is taken over by another consumer;
    /// must exceed the request timeout with margin.
    pub reclaim_idle_ms: u64,
    /// Stream entries read per `XREADGROUP`.
    pub read_batch: usize,
    /// Period of the retry schedule's poll.
    pub retry_poll_ms: u64,
    /// How long the previous secret keeps signing after a rotation.
    pub secret_rotation_overlap_ms: u64,
    /// Attempts kept in each event's attempt log.
    pub attempts_kept: u32,
    /// Which attempts keep their request and response headers (credentials redacted):
    /// `failed` (default), `all` or `none`.
    pub attempt_headers: KeepHeaders,
    /// Each target's circuit breaker (a target may override any field).
    pub breaker: crate::model::target_health::BreakerSettings,
    /// Hours a target may fail (its breaker open, or every attempt failing) before it is
    /// disabled with `disabled_reason = "failing"`; fractional hours allowed.
    pub disable_after_h: f64,
    /// Seconds before the first probe of a target disabled for failing; each probe that
    /// fails doubles the wait, up to six hours. Fractional seconds allowed.
    pub heal_probe_s: f64,
    /// Most events replayed to a target enabled again by its probes (the newest of its gap).
    pub heal_replay_max_events: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            concurrency: 4096,
            request_timeout_ms: 10_000,
            retry: RetryPolicy::default(),
            per_target_concurrency: 256,
            max_waiting_per_target: 512,
            reclaim_idle_ms: 60_000,
            read_batch: 16,
            retry_poll_ms: 250,
            secret_rotation_overlap_ms: 24 * 3600 * 1000,
            attempts_kept: 50,
            attempt_headers: KeepHeaders::Failed,
            breaker: crate::model::target_health::BreakerSettings::default(),
            // Svix's five days.
            disable_after_h: 120.0,
            heal_probe_s: 60.0,
            heal_replay_max_events: 10_000,
        }
    }
}

/// jq programs, run in worker processes (see [`crate::sandbox`]).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// Bound of one run of a program, from the moment a worker has it.
    pub timeout_ms: u64,
    /// Worker processes (each runs one program at a time).
    pub workers: usize,
    /// Address space of each worker process (MiB); a program that needs more fails.
    pub memory_mb: u64,
    /// Largest output of one run (bytes, as JSON).
    pub max_output_bytes: usize,
    /// The `estafeta` executable the workers are started from; the running one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<PathBuf>,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            timeout_ms: 50,
            // Each worker idles while the gateway handles its answer: two per core keep both
            // sides busy (measured: fan-out 10 with transformations, 0.76 of plain with 2, 0.86
            // with 4, on 2 cores).
            workers: 4,
            memory_mb: 512,
            max_output_bytes: 1024 * 1024,
            executable: None,
        }
    }
}

/// Passive monitors.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorsConfig {
    /// Period of the overdue-monitor check.
    pub check_every_ms: u64,
    /// Status records kept per monitor (and per watched source).
    pub checks_kept: u32,
    /// Incidents kept per monitor (and per watched source).
    pub incidents_kept: u32,
}

impl Default for MonitorsConfig {
    fn default() -> Self {
        MonitorsConfig {
            check_every_ms: 60_000,
            checks_kept: 50,
            incidents_kept: 100,
        }
    }
}

/// Log output.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// Default filter (`RUST_LOG` overrides it), e.g. `info` or `estafeta=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The async runtime.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per CPU. On a machine shared with Redis, leaving Redis a
    /// core (CPUs - 1) avoids the cost of workers waking each other for every request.
    pub worker_threads: usize,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Largest `queue.max_batch`: a script's `unpack` of an entry's fields must stay far below
/// Lua's stack limit (8000).
pub const MAX_BATCH_EVENTS: usize = 512;

impl Config {
    /// Reads `path`, applies environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::NotFound(path.to_owned()));
        }
        Self::from_figment(Figment::new().merge(Toml::file_exact(path)))
    }

    /// Parses a TOML text (plus environment overrides); used by tests and benches.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        // Only `SECTION__KEY` variables are overrides: ESTAFETA_CONFIG and the secrets that
        // `env:` points at (ESTAFETA_ADMIN_TOKEN...) share the prefix but are not config keys.
        let env = Env::prefixed("ESTAFETA_")
            .filter(|k| k.as_str().contains("__"))
            .split("__");
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The decoded master key.
    pub fn master_key(&self) -> Result<[u8; 32], ConfigError> {
        decode_master_key(self.security.master_key.expose())
            .map_err(|e| invalid("security.master_key", e.to_string()))
    }

    /// Durations derived from the `_ms` fields.
    pub fn redis_command_timeout(&self) -> Duration {
        Duration::from_millis(self.redis.command_timeout_ms)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> Result<String, ConfigError> {
        let mut value =
            toml::Value::try_from(self).map_err(|e| ConfigError::Parse(e.to_string()))?;
        // A Redis URL may carry a password (`redis://user:password@host`).
        if let Some(url) = value.get_mut("redis").and_then(|r| r.get_mut("url")) {
            if let Some(text) = url.as_str() {
                *url = toml::Value::String(redact_url(text));
            }
        }
        toml::to_string_pretty(&value).map_err(|e| ConfigError::Parse(e.to_string()))
    }
}

/// Why a master key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    #[error("must be base64 (32 random bytes, e.g. `openssl rand -base64 32`)")]
    NotBase64,
    #[error("must be 32 bytes of base64, got {0} bytes (e.g. `openssl rand -base64 32`)")]
    Length(usize),
}

/// Decodes a base64 master key and checks its length.
pub fn decode_master_key(text: &str) -> Result<[u8; 32], MasterKeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| MasterKeyError::NotBase64)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| MasterKeyError::Length(bytes.len()))
}

/// Figment errors can span lines; the contract wants one line naming the key.
fn one_line(e: &figment::Error) -> String {
    let mut parts = Vec::new();
    for err in e.clone() {
        // Array elements as `tenants[0]`, the way every other message names them.
        let mut path = String::new();
        for part in &err.path {
            if part.bytes().all(|b| b.is_ascii_digit()) && !path.is_empty() {
                path.push_str(&format!("[{part}]"));
            } else {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(part);
            }
        }
        let msg = err.kind.to_string();
        let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        if path.is_empty() {
            parts.push(msg);
        } else {
            parts.push(format!("{path}: {msg}"));
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn base(extra: &str) -> String {
        format!(
            r#"
[edge]
plain_listen = "127.0.0.1:18080"
[admin]
token = "0123456789abcdef0123456789abcdef"
[security]
master_key = "{KEY}"
{extra}
"#
        )
    }

    #[test]
    fn minimal_config_gets_defaults() -> anyhow::Result<()> {
        let c = Config::from_toml(&base(""))?;
        assert_eq!(c.edge.max_body_bytes, 1024 * 1024);
        assert_eq!(c.redis.prefix, "estafeta");
        assert_eq!(c.queue.shards, 16);
        assert_eq!(c.dispatch.retry.max_attempts(), 10);
        assert_eq!(c.master_key()?, [0u8; 32]);
        Ok(())
    }

    #[test]
    fn which_attempts_keep_their_headers_is_one_of_three() -> anyhow::Result<()> {
        use KeepHeaders;
        assert_eq!(
            Config::from_toml(&base(""))?.dispatch.attempt_headers,
            KeepHeaders::Failed
        );
        let all = Config::from_toml(&base("[dispatch]\nattempt_headers = \"all\""))?;
        assert_eq!(all.dispatch.attempt_headers, KeepHeaders::All);
        let err = Config::from_toml(&base("[dispatch]\nattempt_headers = \"some\""))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("attempt_headers") && err.contains("some"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml(&base("[redis]\nurll = \"x\""))
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("redis") && err.contains("urll"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn short_master_key_is_refused() {
        let text = base("").replace(KEY, "AAAA");
        let err = Config::from_toml(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("security.master_key: must be 32 bytes"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (extra, key) in [
            ("[queue]\nshards = 0", "queue.shards"),
            ("[dispatch]\nretry = { max_attempts = 0 }", "dispatch.retry"),
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[redis]\nprefix = \"a b\"", "redis.prefix"),
            (
                "[edge.default_rate_limit]\nper_second = -1",
                "edge.default_rate_limit",
            ),
            ("[[tenants]]\nid = \"a b\"\nname = \"A\"", "tenants[0].id"),
            (
                "[[tenants]]\nid = \"a\"\nname = \"A\"\ntoken = \"short\"",
                "tenants[0].token",
            ),
            (
                "[dispatch]\nrequest_timeout_ms = 30000\nreclaim_idle_ms = 40000",
                "dispatch.reclaim_idle_ms",
            ),
            (
                "[dispatch]\nper_target_concurrency = 0",
                "dispatch.per_target_concurrency",
            ),
            ("[dispatch]\nheal_probe_s = 0", "dispatch.heal_probe_s"),
            ("[dispatch]\nheal_probe_s = 30000", "dispatch.heal_probe_s"),
            ("[dispatch]\nheal_probe_s = nan", "dispatch.heal_probe_s"),
            (
                "[dispatch]\nheal_replay_max_events = 2000000",
                "dispatch.heal_replay_max_events",
            ),
            (
                "[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.targets]]\nid = \"t\"\nurl = \"gopher://x\"\nevents = [\"*\"]",
                "tenants[0].targets[0]",
            ),
            (
                "[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.targets]]\nid = \"t\"\nurl = \"https://example.com\"\nevents = [\"*\"]\n[[tenants.targets]]\nid = \"t\"\nurl = \"https://example.com\"\nevents = [\"*\"]",
                "tenants[0].targets[1].id",
            ),
            (
                "[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.targets]]\nid = \"t\"\nurl = \"https://example.com\"\nevents = [\"*\"]\ntls = { ca_pem = \"not PEM\" }",
                "tenants[0].targets[0]",
            ),
        ] {
            let err = Config::from_toml(&base(extra))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(key), "{extra:?} gave {err:?}");
        }
    }

    #[test]
    fn declared_targets_take_tls_and_oauth2() -> anyhow::Result<()> {
        let c = Config::from_toml(&base(
            "[[tenants]]\nid = \"a\"\nname = \"A\"\n[[tenants.targets]]\nid = \"t\"\nurl = \"https://example.com/hook\"\nevents = [\"*\"]\ntls = { server_name = \"receiver.internal\" }\nauth = { oauth2 = { token_url = \"https://auth.example.com/token\", client_id = \"c\", client_secret = \"topsecret-oauth\", method = \"client_secret_post\" } }",
        ))?;
        let spec = c.tenants[0].targets[0].spec();
        assert!(spec.tls.as_ref().is_some_and(|t| t.server_name().is_some()));
        assert!(matches!(
            spec.auth,
            Some(crate::model::TargetAuth::OAuth2(_))
        ));
        assert!(!c.to_redacted_toml()?.contains("topsecret-oauth"));
        Ok(())
    }

    #[test]
    fn missing_secret_variable_names_key_and_variable() {
        let text = base("").replace(
            "\"0123456789abcdef0123456789abcdef\"",
            "\"env:ESTAFETA_TEST_UNSET_VAR_XYZ\"",
        );
        let err = Config::from_toml(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("admin.token") && err.contains("ESTAFETA_TEST_UNSET_VAR_XYZ"),
            "{err}"
        );
    }

    #[test]
    fn redacted_toml_hides_secrets() -> anyhow::Result<()> {
        let c = Config::from_toml(&base(""))?;
        let out = c.to_redacted_toml()?;
        assert!(!out.contains("0123456789abcdef"));
        assert!(!out.contains(KEY));
        assert!(out.contains("[redacted]"));
        let c = Config::from_toml(&base(
            "[redis]\nurl = \"redis://default:hunter2-password@10.0.0.7:6379\"",
        ))?;
        let out = c.to_redacted_toml()?;
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("redis://***@10.0.0.7:6379"), "{out}");
        Ok(())
    }

    #[test]
    fn literal_secrets_are_warned() -> anyhow::Result<()> {
        let c = Config::from_toml(&base(""))?;
        let w = c.warnings();
        assert!(w.iter().any(|l| l.contains("admin.token")));
        assert!(w.iter().any(|l| l.contains("security.master_key")));
        Ok(())
    }

    #[test]
    fn stored_limits_and_policies_are_refused_out_of_bounds() {
        for extra in [
            "[edge.default_rate_limit]\nper_second = 1e-12",
            "[dispatch]\nretry = { multiplier = 1e308 }",
            "[dispatch]\nretry = { initial_delay_ms = 18446744073709551615 }",
        ] {
            assert!(Config::from_toml(&base(extra)).is_err(), "{extra}");
        }
    }
}
