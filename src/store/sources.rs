//! Inbound sources: a URL token (stored only as its keyed hash), the sender's signature scheme
//! and secret (sealed), and where the event type comes from.

use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms, rfc3339};
use crate::monitors::state::{Kind, Subject};
use crate::sources::verify::{Scheme, Verifier};

/// Where a source's event type comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EventTypeRule {
    /// A request header (e.g. `X-GitHub-Event`).
    Header(String),
    /// A JSON pointer into the body (e.g. `/type`).
    JsonPointer(String),
    /// Always this type.
    Fixed(String),
}

impl EventTypeRule {
    pub fn validate(&self) -> Result<(), String> {
        match self {
            EventTypeRule::Header(h) => http::HeaderName::from_bytes(h.as_bytes())
                .map(|_| ())
                .map_err(|_| format!("event_type.header: {h:?} is not a header name")),
            EventTypeRule::JsonPointer(p) if p.is_empty() || p.starts_with('/') => Ok(()),
            EventTypeRule::JsonPointer(p) => Err(format!(
                "event_type.json_pointer: {p:?} must start with `/`"
            )),
            EventTypeRule::Fixed(t) if crate::queue::valid_event_type(t) => Ok(()),
            EventTypeRule::Fixed(_) => {
                Err("event_type.fixed must be 1 to 128 of A-Z a-z 0-9 _ . -".into())
            }
        }
    }
}

/// The `verify` part of a source, as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub scheme: Scheme,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub tolerance_s: Option<u64>,
}

/// A new source, as the API takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    pub verify: VerifySpec,
    pub event_type: EventTypeRule,
    /// Silence watch: an incident and a `source.silent` alert when no event arrives within
    /// this many seconds plus `grace_s`.
    #[serde(default)]
    pub expect_every_s: Option<u64>,
    /// Grace of the silence watch (default 60).
    #[serde(default)]
    pub grace_s: Option<u64>,
}

impl SourceSpec {
    /// Checks every field (the secret by building the verifier).
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name).map_err(|m| format!("name {m}"))?;
        self.event_type.validate()?;
        if self.verify.scheme != Scheme::None
            && self.verify.secret.as_deref().is_none_or(str::is_empty)
        {
            return Err("verify.secret is required (or choose scheme `none` explicitly)".into());
        }
        match self.expect_every_s {
            Some(every) => super::monitors::validate_window(
                "expect_every_s",
                every,
                self.grace_s.unwrap_or(0),
            )?,
            None if self.grace_s.is_some() => {
                return Err("grace_s applies to the silence watch: set expect_every_s too".into());
            }
            None => {}
        }
        if self
            .verify
            .tolerance_s
            .is_some_and(|t| t == 0 || t > 86_400)
        {
            return Err("verify.tolerance_s must be between 1 and 86400".into());
        }
        self.verifier()
            .map(|_| ())
            .map_err(|m| format!("verify: {m}"))
    }

    fn verifier(&self) -> Result<Verifier, String> {
        Verifier::new(
            self.verify.scheme,
            self.verify.secret.as_deref().unwrap_or_default(),
            self.verify.header.as_deref(),
            self.verify.tolerance_s.map(Duration::from_secs),
        )
    }
}

/// The stored document.
#[derive(Debug, Serialize, Deserialize)]
struct SourceDoc {
    tenant: String,
    name: String,
    scheme: Scheme,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    tolerance_s: Option<u64>,
    event_type: EventTypeRule,
    #[serde(default)]
    watch: Option<SilenceWatch>,
    token_hash: String,
    created_at_ms: u64,
    updated_at_ms: u64,
}

/// A source's silence watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceWatch {
    pub expect_every_s: u64,
    pub grace_s: u64,
}

impl SilenceWatch {
    /// How long after an event the source is silent.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.expect_every_s + self.grace_s)
    }
}

/// A source, secret opened.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub verifier: Verifier,
    pub event_type: EventTypeRule,
    pub watch: Option<SilenceWatch>,
    pub token_hash: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    header: Option<String>,
    tolerance_s: Option<u64>,
}

impl Source {
    /// The source as a watched subject of `shard` (its tenant's), if it has a silence watch.
    pub fn watch_subject(&self, shard: u16) -> Option<Subject<'_>> {
        self.watch.map(|w| Subject {
            kind: Kind::Source,
            id: &self.id,
            tenant: &self.tenant,
            name: &self.name,
            shard,
            window: w.window(),
        })
    }

    /// The JSON view (no secret, no token).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenant_id": self.tenant,
            "name": self.name,
            "verify": {"scheme": self.verifier.scheme, "header": self.header, "tolerance_s": self.tolerance_s},
            "event_type": self.event_type,
            "expect_every_s": self.watch.map(|w| w.expect_every_s),
            "grace_s": self.watch.map(|w| w.grace_s),
            "created_at": rfc3339(self.created_at_ms),
            "updated_at": rfc3339(self.updated_at_ms),
        })
    }
}

fn secret_context(id: &str) -> String {
    format!("source:{id}:secret")
}

impl Store {
    fn open_source(&self, id: &str, doc: &str) -> Result<Source, StoreError> {
        let key = self.keys.source(id);
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        let d: SourceDoc = serde_json::from_str(doc).map_err(|e| corrupt(e.to_string()))?;
        let secret = match &d.secret {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &secret_context(id))?;
                String::from_utf8(plain).map_err(|_| corrupt("secret is not UTF-8".into()))?
            }
            None => String::new(),
        };
        let verifier = Verifier::new(
            d.scheme,
            &secret,
            d.header.as_deref(),
            d.tolerance_s.map(Duration::from_secs),
        )
        .map_err(corrupt)?;
        Ok(Source {
            id: id.to_owned(),
            tenant: d.tenant,
            name: d.name,
            verifier,
            event_type: d.event_type,
            watch: d.watch,
            token_hash: d.token_hash,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            header: d.header,
            tolerance_s: d.tolerance_s,
        })
    }

    async fn save_source(
        &self,
        id: &str,
        doc: &SourceDoc,
        old_token_hash: Option<&str>,
        expected: Option<&str>,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(doc).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.save_tokened(
            [
                self.keys.source(id),
                self.keys.source_token(&doc.token_hash),
                self.keys.tenant_sources(&doc.tenant),
                self.keys.tenant(&doc.tenant),
                self.keys
                    .source_token(old_token_hash.unwrap_or(&doc.token_hash)),
            ],
            id,
            &json,
            &doc.tenant,
            expected,
        )
        .await
    }

    /// Creates a source (spec validated); returns it and its URL token, shown this once.
    pub async fn create_source(
        &self,
        tenant: &str,
        spec: &SourceSpec,
    ) -> Result<(Source, String), StoreError> {
        let id = super::new_id("src");
        let token = crate::crypto::random_token("hk_")?;
        let token_hash = self.crypto.hash_token(&token).to_hex();
        let now = now_ms();
        let secret = match spec.verify.secret.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(self.crypto.seal(s.as_bytes(), &secret_context(&id))?),
            None => None,
        };
        let doc = SourceDoc {
            tenant: tenant.to_owned(),
            name: spec.name.clone(),
            scheme: spec.verify.scheme,
            secret,
            header: spec.verify.header.clone(),
            tolerance_s: spec.verify.tolerance_s,
            event_type: spec.event_type.clone(),
            watch: spec.expect_every_s.map(|expect_every_s| SilenceWatch {
                expect_every_s,
                grace_s: spec.grace_s.unwrap_or_else(super::monitors::default_grace),
            }),
            token_hash,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.save_source(&id, &doc, None, None).await?;
        let json = serde_json::to_string(&doc).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok((self.open_source(&id, &json)?, token))
    }

    /// One source of `tenant`.
    pub async fn source(&self, tenant: &str, id: &str) -> Result<Option<Source>, StoreError> {
        let doc: Option<String> = self.redis.hget(self.keys.source(id), "doc").await?;
        match doc {
            Some(d) => Ok(Some(self.open_source(id, &d)?).filter(|s| s.tenant == tenant)),
            None => Ok(None),
        }
    }

    /// The source whose URL token hashes to `hash_hex`.
    pub async fn source_by_token(&self, hash_hex: &str) -> Result<Option<Source>, StoreError> {
        let id: Option<String> = self.redis.get(self.keys.source_token(hash_hex)).await?;
        let Some(id) = id else { return Ok(None) };
        let doc: Option<String> = self.redis.hget(self.keys.source(&id), "doc").await?;
        match doc {
            // A token whose hash no longer matches the document was rotated away.
            Some(d) => Ok(Some(self.open_source(&id, &d)?).filter(|s| s.token_hash == hash_hex)),
            None => Ok(None),
        }
    }

    /// Every source of `tenant`.
    pub async fn sources_of(&self, tenant: &str) -> Result<Vec<Source>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_sources(tenant), "-", "+", None)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = self.source(tenant, &id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Replaces the URL token; the old one stops working at once. Returns the new token.
    pub async fn rotate_source_token(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(Source, String)>, StoreError> {
        let doc: Option<String> = self.redis.hget(self.keys.source(id), "doc").await?;
        let Some(doc) = doc else { return Ok(None) };
        let mut d: SourceDoc = serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
            key: self.keys.source(id),
            reason: e.to_string(),
        })?;
        if d.tenant != tenant {
            return Ok(None);
        }
        let token = crate::crypto::random_token("hk_")?;
        let old = std::mem::replace(&mut d.token_hash, self.crypto.hash_token(&token).to_hex());
        d.updated_at_ms = now_ms();
        self.save_source(id, &d, Some(&old), Some(&doc)).await?;
        self.publish_invalidation(format!("source:{old}")).await;
        let json = serde_json::to_string(&d).map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(Some((self.open_source(id, &json)?, token)))
    }

    /// Deletes a source; `false` when it is not there (for this tenant).
    pub async fn delete_source(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let Some(s) = self.source(tenant, id).await? else {
            return Ok(false);
        };
        self.delete_tokened(
            [
                self.keys.source(id),
                self.keys.source_token(&s.token_hash),
                self.keys.tenant_sources(tenant),
            ],
            id,
        )
        .await?;
        self.publish_invalidation(format!("source:{}", s.token_hash))
            .await;
        Ok(true)
    }
}
