//! Events held to their tenant's catalogue at ingest (`catalogue = "warn" | "enforce"`).
//!
//! Each instance caches each tenant's catalogue (one `HGETALL` on a miss, then nothing on the
//! request path), and compiles each schema version once, when an event first needs it. A
//! change anywhere publishes [`Invalidation::Catalogue`], so every instance drops the tenant's
//! entry within milliseconds (and its TTL covers a missed message), as for tokens.
//!
//! A tenant whose mode is `off` (the default) costs nothing here: no lookup, no parse.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::HeaderMap;
use serde_json::Value;

use crate::http::body::{Unreadable, parse_unique};
use crate::http::error::ApiError;
use crate::model::catalogue::{CompiledSchema, SchemaError, parse_version};
use crate::model::{CatalogueMode, EventType, TenantId};
use crate::redis::cache::{Cache, CacheSettings};
use crate::redis::invalidation::{Invalidate, Invalidation};
use crate::store::event_types::catalogue_entry;
use crate::store::{Store, StoreError};
use crate::telemetry::{self, CacheName};

/// The request header naming the schema version a body follows.
pub const SCHEMA_VERSION_HEADER: &str = "estafeta-schema-version";

/// One schema version, compiled on first use.
#[derive(Debug)]
struct Version {
    source: Value,
    compiled: OnceLock<Option<CompiledSchema>>,
}

impl Version {
    /// The compiled schema; `None` when the stored one does not compile any more (written
    /// under other rules): it is then not enforced, and logged once.
    fn compiled(
        &self,
        tenant: &TenantId,
        event_type: &str,
        version: u32,
    ) -> Option<&CompiledSchema> {
        self.compiled
            .get_or_init(|| match CompiledSchema::compile(self.source.clone()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(tenant = %tenant, event_type, version, error = %e, "a stored schema does not compile; it is not enforced");
                    None
                }
            })
            .as_ref()
    }
}

/// One event type as ingest sees it.
#[derive(Debug)]
struct Entry {
    deprecated_at_ms: Option<u64>,
    archived: bool,
    versions: BTreeMap<u32, Version>,
}

/// A tenant's catalogue as ingest sees it.
#[derive(Debug, Default)]
pub struct TenantCatalogue {
    types: HashMap<String, Entry>,
}

impl TenantCatalogue {
    fn from_docs(tenant: &TenantId, docs: HashMap<String, String>) -> TenantCatalogue {
        let mut types = HashMap::with_capacity(docs.len());
        for (name, json) in docs {
            let entry = match catalogue_entry(&json) {
                Some(e) => Entry {
                    deprecated_at_ms: e.deprecated_at_ms,
                    archived: e.archived,
                    versions: e
                        .schemas
                        .into_iter()
                        .map(|(v, source)| {
                            (
                                v,
                                Version {
                                    source,
                                    compiled: OnceLock::new(),
                                },
                            )
                        })
                        .collect(),
                },
                // A record this version cannot read still names a known type: its events
                // are accepted unchecked rather than refused as unknown.
                None => {
                    tracing::warn!(tenant = %tenant, event_type = %name, "an event type's record cannot be read; its events are not checked");
                    Entry {
                        deprecated_at_ms: None,
                        archived: false,
                        versions: BTreeMap::new(),
                    }
                }
            };
            types.insert(name, entry);
        }
        TenantCatalogue { types }
    }
}

/// What the catalogue says of an accepted event.
#[derive(Debug, Default)]
pub struct Checked {
    /// The type is deprecated, since this time (ms): the answer carries `Deprecation`.
    pub deprecated_at_ms: Option<u64>,
    /// What a `warn` catalogue found wrong, as compact JSON for the event's record.
    pub schema_errors: Option<String>,
}

/// Why an event breaks its catalogue.
enum Breach {
    UnknownType(String),
    UnknownVersion(String),
    NotJson(String),
    DuplicateKey(String),
    Mismatch(Vec<SchemaError>),
}

impl Breach {
    fn into_error(self) -> ApiError {
        let unprocessable = http::StatusCode::UNPROCESSABLE_ENTITY;
        match self {
            Breach::UnknownType(m) => ApiError::new(unprocessable, "unknown_event_type", m),
            Breach::UnknownVersion(m) => ApiError::new(unprocessable, "unknown_schema_version", m),
            Breach::NotJson(m) => ApiError::new(unprocessable, "schema_mismatch", m),
            Breach::DuplicateKey(m) => ApiError::bad_request("duplicate_key", m),
            Breach::Mismatch(errors) => {
                let n = errors.len();
                let mut e = ApiError::new(
                    unprocessable,
                    "schema_mismatch",
                    format!(
                        "the body does not follow the event type's schema ({n}{} error{}, in errors)",
                        if n >= crate::model::catalogue::MAX_ERRORS {
                            " or more"
                        } else {
                            ""
                        },
                        if n == 1 { "" } else { "s" }
                    ),
                );
                e.errors = Some(errors);
                e
            }
        }
    }

    fn into_notes(self) -> Vec<SchemaError> {
        let whole = |message: String| {
            vec![SchemaError {
                pointer: String::new(),
                message,
            }]
        };
        match self {
            Breach::UnknownType(m)
            | Breach::UnknownVersion(m)
            | Breach::NotJson(m)
            | Breach::DuplicateKey(m) => whole(m),
            Breach::Mismatch(errors) => errors,
        }
    }
}

/// Every tenant's catalogue, cached. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalogues {
    store: Store,
    cache: Cache<TenantId, Arc<TenantCatalogue>>,
}

impl Catalogues {
    pub fn new(store: Store, settings: CacheSettings) -> Catalogues {
        Catalogues {
            store,
            cache: Cache::new(CacheName::Catalogue, settings),
        }
    }

    async fn of(&self, tenant: &TenantId) -> Result<Arc<TenantCatalogue>, ApiError> {
        let store = self.store.clone();
        let id = tenant.clone();
        let found = self
            .cache
            .get_or_load(tenant.clone(), async move {
                let docs = store.catalogue_docs(&id).await?;
                Ok::<_, StoreError>(Some(Arc::new(TenantCatalogue::from_docs(&id, docs))))
            })
            .await
            .map_err(|e| ApiError::from_shared_store(&e, "catalogue lookup"))?;
        Ok(found.unwrap_or_default())
    }

    /// Holds an event to its tenant's catalogue: `Err` when an enforcing catalogue refuses it.
    pub async fn check(
        &self,
        mode: CatalogueMode,
        tenant: &TenantId,
        event_type: &EventType,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Checked, ApiError> {
        // Read once; malformed, it is bad input whatever the tenant's mode.
        let asked = match headers.get(SCHEMA_VERSION_HEADER) {
            None => None,
            Some(v) => match v.to_str().ok().and_then(|t| parse_version(t).ok()) {
                Some(version) => Some(version),
                None => {
                    return Err(ApiError::bad_request(
                        "invalid_schema_version",
                        format!(
                            "Estafeta-Schema-Version must be a version number from 1 to {}, such as 2",
                            crate::model::catalogue::MAX_VERSION
                        ),
                    ));
                }
            },
        };
        if mode == CatalogueMode::Off {
            return Ok(Checked::default());
        }
        let catalogue = self.of(tenant).await?;
        let (deprecated_at_ms, breach) = judge(&catalogue, tenant, event_type, asked, body);
        let Some(breach) = breach else {
            return Ok(Checked {
                deprecated_at_ms,
                schema_errors: None,
            });
        };
        telemetry::catalogue_breach(mode.as_str());
        if mode == CatalogueMode::Enforce {
            return Err(breach.into_error());
        }
        Ok(Checked {
            deprecated_at_ms,
            schema_errors: serde_json::to_string(&breach.into_notes()).ok(),
        })
    }
}

/// The type's deprecation, and what breaks the catalogue, if anything.
fn judge(
    catalogue: &TenantCatalogue,
    tenant: &TenantId,
    event_type: &EventType,
    asked: Option<u32>,
    body: &[u8],
) -> (Option<u64>, Option<Breach>) {
    let name = event_type.as_str();
    let Some(entry) = catalogue.types.get(name) else {
        let alike = catalogue
            .types
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .map(|k| format!(" (it has {k})"))
            .unwrap_or_default();
        return (
            None,
            Some(Breach::UnknownType(format!(
                "the event type {name} is not in the tenant's event catalogue{alike}"
            ))),
        );
    };
    if entry.archived {
        return (
            None,
            Some(Breach::UnknownType(format!(
                "the event type {name} is archived in the tenant's event catalogue"
            ))),
        );
    }
    let deprecated = entry.deprecated_at_ms;
    let version = match asked {
        None => match entry.versions.keys().next_back() {
            Some(v) => *v,
            // A type without a schema takes any body.
            None => return (deprecated, None),
        },
        Some(v) if entry.versions.contains_key(&v) => v,
        Some(v) => {
            let known: Vec<String> = entry.versions.keys().map(u32::to_string).collect();
            let message = format!(
                "{name} has no schema version \"{v}\" (versions: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            return (deprecated, Some(Breach::UnknownVersion(message)));
        }
    };
    let Some(schema) = entry
        .versions
        .get(&version)
        .and_then(|v| v.compiled(tenant, name, version))
    else {
        return (deprecated, None);
    };
    let parsed: Value = match parse_unique(body) {
        Ok(v) => v,
        Err(Unreadable::NotJson(e)) => {
            return (
                deprecated,
                Some(Breach::NotJson(format!(
                    "{name} version {version} has a schema, and the body is not JSON: {e}"
                ))),
            );
        }
        Err(Unreadable::Duplicate(key)) => {
            return (
                deprecated,
                Some(Breach::DuplicateKey(format!(
                    "the key {key:?} appears twice in one object of the body; readers disagree on which one counts, so it cannot be checked against the schema"
                ))),
            );
        }
    };
    if schema.is_valid(&parsed) {
        return (deprecated, None);
    }
    (deprecated, Some(Breach::Mismatch(schema.errors(&parsed))))
}

impl Invalidate for Catalogues {
    fn invalidate<'a>(&'a self, message: &'a Invalidation) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Invalidation::Catalogue(tenant) = message {
                self.cache.invalidate(tenant).await;
            }
        })
    }

    fn recheck<'a>(&'a self, message: &'a Invalidation, changed_at: Instant) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Invalidation::Catalogue(tenant) = message {
                self.cache
                    .invalidate_if_read_before(tenant, changed_at)
                    .await;
            }
        })
    }

    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}
