//! Tenants, targets and monitors declared in the config file (`[[tenants]]`,
//! `[[tenants.targets]]`, `[[tenants.monitors]]`), applied idempotently at start. Their fields
//! are the API's (the same model types, the same rules), plus a chosen id and, where the API
//! generates one, a chosen token or secret.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, broken, invalid};
use super::secret::{MIN_SECRET_TOKEN_LEN, Secret};
use crate::model::catalogue::{Description, EventTypeSpec, Owner, Schemas};
use crate::model::monitor::{DEFAULT_GRACE, DEFAULT_INTERVAL, Every, Grace};
use crate::model::{
    CatalogueMode, EventType, ExternalId, Format, Headers, KeepHeaders, Mode, MonitorId,
    MonitorSpec, Name, Patterns, RateLimit, RetryPolicy, SecretText, SigningSecret, TargetAuth,
    TargetId, TargetSpec, TargetUrl, TenantId, TenantSpec,
};

/// A tenant declared in the config file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDecl {
    /// Stable id of the tenant (`[A-Za-z0-9_-]`, at most 64).
    pub id: TenantId,
    /// Display name.
    pub name: Name,
    /// The tenant's id in the operator's own systems; unique.
    #[serde(default)]
    pub external_id: Option<ExternalId>,
    /// Whether the tenant may send events.
    #[serde(default = "default_true")]
    pub active: bool,
    /// The tenant's own rate limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// How ingest holds events to the tenant's event catalogue: `off` (default), `warn`,
    /// `enforce`.
    #[serde(default)]
    pub catalogue: CatalogueMode,
    /// Ingest request headers kept with each event (at most 20 names).
    #[serde(default)]
    pub keep_headers: KeepHeaders,
    /// A bearer token of the tenant (usually `env:NAME`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// More bearer tokens, for rotation with an overlap.
    #[serde(default)]
    pub tokens: Vec<Secret>,
    /// The tenant's delivery targets (`[[tenants.targets]]`).
    #[serde(default)]
    pub targets: Vec<TargetDecl>,
    /// The tenant's passive monitors (`[[tenants.monitors]]`).
    #[serde(default)]
    pub monitors: Vec<MonitorDecl>,
    /// The tenant's event catalogue (`[[tenants.event_types]]`).
    #[serde(default)]
    pub event_types: Vec<EventTypeDecl>,
}

/// An event type of a tenant's catalogue declared in the config file; its schemas are inline
/// tables by version (`schemas."1" = { type = "object", required = ["id"] }`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeDecl {
    pub name: EventType,
    #[serde(default)]
    pub description: Description,
    #[serde(default)]
    pub owner: Owner,
    #[serde(default)]
    pub group: Option<Name>,
    #[serde(default)]
    pub schemas: Schemas,
    #[serde(default)]
    pub deprecated: bool,
    #[serde(default)]
    pub archived: bool,
}

impl EventTypeDecl {
    /// The event type as the store takes it.
    pub fn spec(&self) -> EventTypeSpec {
        EventTypeSpec {
            name: Some(self.name.clone()),
            description: self.description.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            schemas: self.schemas.clone(),
            deprecated: self.deprecated,
            archived: self.archived,
        }
    }
}

impl TenantDecl {
    /// All tokens declared for the tenant, `token` first.
    pub fn all_tokens(&self) -> impl Iterator<Item = &Secret> {
        self.token.iter().chain(self.tokens.iter())
    }

    /// The tenant as the store takes it.
    pub fn spec(&self) -> TenantSpec {
        TenantSpec {
            name: self.name.clone(),
            external_id: self.external_id.clone(),
            rate_limit: self.rate_limit,
            active: self.active,
            catalogue: self.catalogue,
            keep_headers: self.keep_headers.clone(),
        }
    }
}

/// A passive monitor declared in the config file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorDecl {
    /// Stable id (`[A-Za-z0-9_-]`, at most 64), unique across tenants.
    pub id: MonitorId,
    pub name: Name,
    #[serde(default = "default_interval")]
    pub heartbeat_interval_s: Every,
    #[serde(default = "default_grace")]
    pub grace_s: Grace,
    /// Signs status pushes (usually `env:NAME`).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// The URL token (usually `env:NAME`). Without one, a token is generated once and the
    /// monitor is reached with the tenant's bearer token and its id, or after a rotate-token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A jq program turning pushed JSON into a status (checked at start).
    #[serde(default)]
    pub status_map: Option<crate::model::transform::JqProgram>,
}

fn default_interval() -> Every {
    DEFAULT_INTERVAL
}

fn default_grace() -> Grace {
    DEFAULT_GRACE
}

impl MonitorDecl {
    /// The monitor as the store takes it.
    pub fn spec(&self) -> MonitorSpec {
        MonitorSpec {
            name: self.name.clone(),
            heartbeat_interval_s: self.heartbeat_interval_s,
            grace_s: self.grace_s,
            secret: self.secret.as_ref().map(|s| SecretText::new(s.expose())),
            status_map: self.status_map.clone(),
        }
    }
}

/// A delivery target declared in the config file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDecl {
    /// Stable id (`[A-Za-z0-9_-]`, at most 64), unique across tenants.
    pub id: TargetId,
    pub url: TargetUrl,
    pub events: Patterns,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub headers: Headers,
    /// Credentials (literal in the file; prefer `headers` with nothing secret, or the API).
    #[serde(default, skip_serializing)]
    pub auth: Option<TargetAuth>,
    /// `{ ca_pem = "…", client_cert_pem = "…", client_key_pem = "…", server_name = "…" }`.
    #[serde(
        default,
        skip_serializing,
        deserialize_with = "crate::model::patch::object"
    )]
    pub tls: Option<crate::model::target_tls::TargetTls>,
    #[serde(default)]
    pub ordered: bool,
    #[serde(default = "default_true")]
    pub active: bool,
    /// `raw` (default), `slack` or `discord`.
    #[serde(default)]
    pub format: Format,
    /// The signing secret (`whsec_…`, usually `env:NAME`); generated once when absent.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A payload filter (an inline table), as the API takes it.
    #[serde(default)]
    pub filter: Option<crate::model::filter::TargetFilter>,
    /// A jq transformation (`{ program = "…", enabled = true }`), checked at start.
    #[serde(default)]
    pub transform: Option<crate::model::transform::TargetTransform>,
    /// Batches (`{ max_events = 100, max_wait_ms = 5000 }`).
    #[serde(default)]
    pub batch: Option<crate::model::target::TargetBatch>,
    /// Its own breaker settings (`{ min_requests = 5 }`), over `[dispatch.breaker]`.
    #[serde(default, deserialize_with = "crate::model::patch::object")]
    pub breaker: Option<crate::model::target_health::BreakerOverride>,
    /// `{ per_second = 50, burst = 10 }`, across every dispatcher.
    #[serde(default)]
    pub rate_limit: Option<crate::model::RateLimit>,
    /// Hours of failure before it is disabled (`[dispatch] disable_after_h` when absent).
    #[serde(default)]
    pub disable_after_h: Option<crate::model::target_health::Hours>,
    /// Whether it is probed and enabled again after an automatic disable (default true).
    #[serde(default = "default_true")]
    pub heal: bool,
    /// `"adaptive"` (default) or a fixed number of deliveries in flight.
    #[serde(default)]
    pub concurrency: crate::model::target_health::Concurrency,
}

impl TargetDecl {
    /// The target as the store takes it; the secret is checked by [`validate`].
    pub fn spec(&self) -> TargetSpec {
        TargetSpec {
            url: self.url.clone(),
            events: self.events.clone(),
            mode: self.mode,
            retry: self.retry,
            headers: self.headers.clone(),
            auth: self.auth.clone(),
            tls: self.tls.clone(),
            ordered: self.ordered,
            active: self.active,
            format: self.format,
            filter: self.filter.clone(),
            transform: self.transform.clone(),
            batch: self.batch,
            breaker: self.breaker,
            rate_limit: self.rate_limit,
            disable_after_h: self.disable_after_h,
            heal: self.heal,
            concurrency: self.concurrency,
            secret: self
                .secret
                .as_ref()
                .and_then(|s| SigningSecret::parse(s.expose()).ok()),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A declared id (`<key>.id`), not declared before in `seen`, whatever the case: `acme` and
/// `ACME` would read as one tenant to a person and as two to Redis.
fn unique(key: &str, id: &str, seen: &mut HashSet<String>) -> Result<(), ConfigError> {
    if !seen.insert(id.to_ascii_lowercase()) {
        return Err(invalid(
            &format!("{key}.id"),
            format!("`{id}` is declared twice (ids compare without case)"),
        ));
    }
    Ok(())
}

/// A declared bearer or URL token (`<key>.token`): long enough, of the token alphabet.
fn token(key: &str, token: &Secret) -> Result<(), ConfigError> {
    let key = format!("{key}.token");
    if token.expose().len() < MIN_SECRET_TOKEN_LEN {
        return Err(invalid(
            &key,
            format!("must be at least {MIN_SECRET_TOKEN_LEN} characters"),
        ));
    }
    crate::model::text::check_token(token.expose()).map_err(|e| broken(&key, e))
}

/// Checks what one field's type cannot: uniqueness across the file, tokens, secrets, and the
/// rules between fields.
pub(super) fn validate(tenants: &[TenantDecl], allow_private: bool) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut external_ids = HashSet::new();
    let mut tokens = HashSet::new();
    let mut target_ids = HashSet::new();
    let mut monitor_ids = HashSet::new();
    for (i, t) in tenants.iter().enumerate() {
        let key = format!("tenants[{i}]");
        unique(&key, t.id.as_str(), &mut ids)?;
        if let Some(ext) = &t.external_id {
            if !external_ids.insert(ext.key()) {
                return Err(invalid(
                    &format!("{key}.external_id"),
                    "is declared for two tenants",
                ));
            }
        }
        for declared in t.all_tokens() {
            token(&key, declared)?;
            if !tokens.insert(declared.expose()) {
                return Err(invalid(&format!("{key}.token"), "is declared twice"));
            }
        }
        for (j, target) in t.targets.iter().enumerate() {
            let tkey = format!("{key}.targets[{j}]");
            unique(&tkey, target.id.as_str(), &mut target_ids)?;
            if let Some(s) = &target.secret {
                SigningSecret::parse(s.expose())
                    .map_err(|e| broken(&format!("{tkey}.secret"), e))?;
            }
            target
                .spec()
                .validate(allow_private)
                .map_err(|e| broken(&tkey, e))?;
        }
        let mut type_names = HashSet::new();
        for (j, declared) in t.event_types.iter().enumerate() {
            if !type_names.insert(declared.name.as_str().to_ascii_lowercase()) {
                return Err(invalid(
                    &format!("{key}.event_types[{j}].name"),
                    format!(
                        "`{}` is declared twice (event type names compare without case here)",
                        declared.name
                    ),
                ));
            }
        }
        if t.event_types.len() > crate::model::catalogue::MAX_TYPES {
            return Err(invalid(
                &format!("{key}.event_types"),
                format!(
                    "declares more than {} event types",
                    crate::model::catalogue::MAX_TYPES
                ),
            ));
        }
        for (j, monitor) in t.monitors.iter().enumerate() {
            let mkey = format!("{key}.monitors[{j}]");
            unique(&mkey, monitor.id.as_str(), &mut monitor_ids)?;
            monitor.spec().validate().map_err(|e| broken(&mkey, e))?;
            if let Some(declared) = &monitor.token {
                token(&mkey, declared)?;
            }
        }
    }
    Ok(())
}
