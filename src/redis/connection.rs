//! The connection to Redis, and what the gateway checks about it at start.
//!
//! One multiplexed fred client carries every command; fred pipelines concurrent commands on the
//! socket and reconnects by itself (exponential backoff capped at one second, forever). Every
//! command has a deadline (`redis.command_timeout_ms`), so a dead or stalled Redis becomes a 503
//! within that time instead of a hung request.
//!
//! [`check_durability`] reads the server's persistence and eviction settings and says, in one
//! line, when an acknowledged event could be lost.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{ReconnectPolicy, UnresponsiveConfig};

use crate::config::{RedisConfig, UrlError, normalize_url, redact_url};

/// Failures to set up the Redis connection. Command failures at run time are `fred::Error`s.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    #[error("invalid redis.url: {0}")]
    Url(#[from] UrlError),
    #[error("cannot reach Redis at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{0}")]
    NotDurable(String),
    #[error("redis.wait_aof = true needs Redis 7.2 or newer (WAITAOF); the server is {0}")]
    NoWaitAof(String),
}

/// One field of an `XINFO` item (`XINFO GROUPS` / `CONSUMERS`): a flat `[name, value, …]`
/// array in RESP2, a map in RESP3.
pub fn info_field(item: &Value, name: &str) -> Option<Value> {
    match item {
        Value::Array(fields) => fields
            .chunks(2)
            .find(|kv| kv[0].as_str().as_deref() == Some(name))
            .and_then(|kv| kv.get(1).cloned()),
        Value::Map(map) => map
            .clone()
            .inner()
            .into_iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// Whether Redis refused a command for what the keys it touched hold, so sending it again
/// cannot succeed: a key of the wrong type (`WRONGTYPE`), or a script that failed on the data
/// it read (a Lua runtime error, `ERR user_script:…`). Not the connection, a timeout, a full
/// memory (`OOM`), a busy or loading server, or a script Redis lost (`NOSCRIPT`): those pass.
pub fn is_data_fault(e: &fred::error::Error) -> bool {
    let d = e.details();
    if d.contains("OOM") || d.starts_with("BUSY") || d.starts_with("LOADING") {
        return false;
    }
    d.starts_with("WRONGTYPE")
        || (d.starts_with("ERR")
            && (d.contains("user_script") || d.contains("Error running script")))
}

/// One stream entry: id and fields in order.
pub type RawEntry = (String, Vec<(bytes::Bytes, bytes::Bytes)>);

/// The entries of a stream reply (`XRANGE`, `XREVRANGE`, `XCLAIM`): id and fields in order.
pub fn stream_entries(list: Value) -> Vec<RawEntry> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = pair.pop()?.as_string()?;
            let flat: Vec<Value> = match fields {
                Value::Array(f) => f,
                // A deleted entry's fields come back as nil: nothing to deliver, but it must be
                // acked, which an empty field list achieves through the unreadable-entry path.
                _ => Vec::new(),
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((to_bytes(&kv[0])?, to_bytes(kv.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

fn to_bytes(v: &Value) -> Option<bytes::Bytes> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(bytes::Bytes::copy_from_slice(s.as_bytes())),
        Value::Integer(i) => Some(bytes::Bytes::from(i.to_string())),
        _ => None,
    }
}

/// The newest `count` entries of any stream `key` (XREVRANGE), newest first.
pub async fn newest_of(
    redis: &Client,
    key: &str,
    count: u64,
) -> Result<Vec<RawEntry>, fred::error::Error> {
    let reply: Value = redis.xrevrange(key, "+", "-", Some(count)).await?;
    Ok(stream_entries(reply))
}

/// A short, human cause for a connection error ("connection refused").
pub fn describe_error(e: &fred::error::Error) -> String {
    let details = e.details().to_string();
    let lower = details.to_lowercase();
    for known in [
        "connection refused",
        "connection reset",
        "timed out",
        "no route to host",
        "name or service not known",
        "failed to lookup address",
    ] {
        if lower.contains(known) {
            return known.to_owned();
        }
    }
    if details.is_empty() {
        format!("{:?}", e.kind())
    } else {
        details
    }
}

fn builder(cfg: &RedisConfig) -> Result<Builder, RedisSetupError> {
    let url = normalize_url(&cfg.url)?;
    let mut config = fred::types::config::Config::from_url(&url)
        .map_err(|e| UrlError::Client(e.details().to_string()))?;
    // The first connection must succeed: a wrong address is a startup error, not a silent retry.
    config.fail_fast = true;
    let command_timeout = Duration::from_millis(cfg.command_timeout_ms);
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let mut b = Builder::from_config(config);
    b.with_connection_config(|c| {
        c.connection_timeout = connect_timeout;
        c.internal_command_timeout = connect_timeout;
        c.tcp.nodelay = Some(true);
        // A connection that answers nothing for this long is closed and reopened; commands in
        // flight on it are retried (the event id makes a re-sent XADD recognisable).
        c.unresponsive = UnresponsiveConfig {
            max_timeout: Some(
                command_timeout
                    .saturating_mul(2)
                    .max(Duration::from_secs(2)),
            ),
            interval: Duration::from_millis(500),
        };
    })
    .with_performance_config(|p| {
        p.default_command_timeout = command_timeout;
    })
    .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2));
    Ok(b)
}

/// Connects the command client, failing with one clear line when Redis cannot be reached.
pub async fn connect(cfg: &RedisConfig) -> Result<Client, RedisSetupError> {
    let client = builder(cfg)?
        .build()
        .map_err(|e| UrlError::Client(e.details().to_string()))?;
    init(&client, cfg).await?;
    Ok(client)
}

/// Connects a client dedicated to pub/sub subscriptions.
pub async fn connect_subscriber(cfg: &RedisConfig) -> Result<SubscriberClient, RedisSetupError> {
    let client = builder(cfg)?
        .build_subscriber_client()
        .map_err(|e| UrlError::Client(e.details().to_string()))?;
    init(&client, cfg).await?;
    Ok(client)
}

async fn init<C: ClientLike>(client: &C, cfg: &RedisConfig) -> Result<(), RedisSetupError> {
    let unreachable = |cause: String| RedisSetupError::Unreachable {
        url: redact_url(&cfg.url),
        cause,
    };
    let deadline = Duration::from_millis(cfg.connect_timeout_ms);
    match tokio::time::timeout(deadline, client.init()).await {
        Ok(Ok(_task)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(describe_error(&e))),
        Err(_) => {
            let _ = client.quit().await;
            Err(unreachable("timed out".into()))
        }
    }
}

/// What the server's settings mean for acknowledged events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `appendonly`.
    pub appendonly: bool,
    /// `appendfsync` (`always`, `everysec`, `no`).
    pub appendfsync: String,
    /// `maxmemory-policy`.
    pub maxmemory_policy: String,
    /// Whether the server has `WAITAOF`.
    pub waitaof: bool,
    /// `redis_version` from INFO.
    pub version: String,
}

impl Durability {
    /// The risk to acknowledged events, in one sentence, or `None` when they survive a crash.
    /// `wait_aof` is whether each 202 waits for the fsync.
    pub fn risk(&self, wait_aof: bool) -> Option<String> {
        if !self.appendonly {
            return Some(
                "Redis has appendonly=no: acknowledged events live in memory (and periodic snapshots at best) and a Redis crash loses them; set appendonly yes".into(),
            );
        }
        if self.maxmemory_policy.starts_with("allkeys-") {
            return Some(format!(
                "Redis maxmemory-policy is {}: under memory pressure it may evict event streams; set noeviction",
                self.maxmemory_policy
            ));
        }
        if self.appendfsync != "always" && !wait_aof {
            return Some(format!(
                "Redis has appendfsync={}: a crash of the Redis host can lose up to about a second of acknowledged events (a crash of the Redis process alone loses none); set appendfsync always or redis.wait_aof = true",
                self.appendfsync
            ));
        }
        None
    }
}

/// Reads the server's persistence settings. `CONFIG` may be disabled (managed services), which
/// is an error here: the caller decides whether it can start without knowing.
pub async fn read_durability(client: &Client) -> Result<Durability, fred::error::Error> {
    let get = |name: &'static str| async move {
        let pairs: Vec<String> = client.config_get(name).await?;
        Ok::<String, fred::error::Error>(pairs.get(1).cloned().unwrap_or_default())
    };
    let appendonly = get("appendonly").await? == "yes";
    let appendfsync = get("appendfsync").await?;
    let maxmemory_policy = get("maxmemory-policy").await?;
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let command_info: Value = client
        .custom(
            fred::types::CustomCommand::new_static("COMMAND", None, false),
            vec!["INFO", "WAITAOF"],
        )
        .await?;
    let waitaof = match command_info {
        Value::Array(items) => items.first().is_some_and(|v| !v.is_null()),
        _ => false,
    };
    Ok(Durability {
        appendonly,
        appendfsync,
        maxmemory_policy,
        waitaof,
        version,
    })
}

/// Applies `redis.require_durable` and `redis.wait_aof` to what the server reports: logs one
/// warning line for a risk, or refuses to start when durability is required.
pub async fn check_durability(client: &Client, cfg: &RedisConfig) -> Result<(), RedisSetupError> {
    let durability = match read_durability(client).await {
        Ok(d) => d,
        Err(e) => {
            let line = format!(
                "cannot read Redis persistence settings ({}): durability of acknowledged events is not verified",
                describe_error(&e)
            );
            if cfg.require_durable || cfg.wait_aof {
                return Err(RedisSetupError::NotDurable(format!(
                    "{line}; redis.require_durable/redis.wait_aof need CONFIG GET and COMMAND INFO"
                )));
            }
            tracing::warn!("{line}");
            return Ok(());
        }
    };
    if cfg.wait_aof && !durability.waitaof {
        return Err(RedisSetupError::NoWaitAof(durability.version));
    }
    if cfg.wait_aof && !durability.appendonly {
        return Err(RedisSetupError::NotDurable(
            "redis.wait_aof = true but Redis has appendonly=no: there is no AOF to wait for".into(),
        ));
    }
    match durability.risk(cfg.wait_aof) {
        Some(risk) if cfg.require_durable => Err(RedisSetupError::NotDurable(format!(
            "redis.require_durable = true but {risk}"
        ))),
        Some(risk) => {
            tracing::warn!(redis_version = %durability.version, "{risk}");
            Ok(())
        }
        None => {
            tracing::info!(
                redis_version = %durability.version,
                appendfsync = %durability.appendfsync,
                wait_aof = cfg.wait_aof,
                "Redis persistence keeps acknowledged events across crashes"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(appendonly: bool, fsync: &str, policy: &str) -> Durability {
        Durability {
            appendonly,
            appendfsync: fsync.into(),
            maxmemory_policy: policy.into(),
            waitaof: false,
            version: "7.0.15".into(),
        }
    }

    #[test]
    fn risks_are_named() {
        assert!(
            d(false, "everysec", "noeviction")
                .risk(false)
                .is_some_and(|r| r.contains("appendonly=no"))
        );
        assert!(
            d(true, "always", "allkeys-lru")
                .risk(false)
                .is_some_and(|r| r.contains("allkeys-lru"))
        );
        assert!(
            d(true, "everysec", "noeviction")
                .risk(false)
                .is_some_and(|r| r.contains("appendfsync=everysec"))
        );
        assert_eq!(d(true, "everysec", "noeviction").risk(true), None);
        assert_eq!(d(true, "always", "noeviction").risk(false), None);
        assert_eq!(d(true, "always", "volatile-lru").risk(false), None);
    }
}
