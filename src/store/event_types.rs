//! A tenant's event catalogue: one hash per tenant, `P:{m}:event_types:<tenant>`, event type
//! → JSON document. Writes are optimistic (the `save_event_type` script writes only over the
//! document the caller read) and publish [`Invalidation::Catalogue`], so every instance's
//! ingest sees a change within a second.
//!
//! Schemas are stored as written and were compiled before they were stored
//! ([`crate::model::catalogue`]); reading a record does not compile them again, so a listing
//! costs no compilation and ingest compiles each version once, when an event first needs it.

use std::collections::{BTreeMap, HashMap};

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{StoreError, unexpected};
use super::handle::{OPTIMISTIC_ATTEMPTS, Store};
use crate::model::catalogue::{
    Description, EventTypePatch, EventTypeSpec, MAX_TYPES, Owner, parse_version,
};
use crate::model::{EventType, Name, Origin, TenantId};
use crate::redis::invalidation::Invalidation;
use crate::redis::scripts::SAVE_EVENT_TYPE;

/// An event type of a catalogue, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTypeRecord {
    pub name: EventType,
    pub description: Description,
    pub owner: Owner,
    pub group: Option<Name>,
    /// JSON Schemas by version, as written (valid when written).
    pub schemas: BTreeMap<u32, Value>,
    /// Since when it is deprecated.
    pub deprecated_at_ms: Option<u64>,
    /// Since when it is archived.
    pub archived_at_ms: Option<u64>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub origin: Origin,
}

/// The stored document: the record without its name (the hash field).
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    #[serde(default)]
    description: String,
    #[serde(default)]
    owner: StoredOwner,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    schemas: BTreeMap<String, Value>,
    #[serde(default)]
    deprecated_at: Option<u64>,
    #[serde(default)]
    archived_at: Option<u64>,
    #[serde(default)]
    created_at: u64,
    #[serde(default)]
    updated_at: u64,
    #[serde(default)]
    origin: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredOwner {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    repository_url: Option<String>,
}

impl EventTypeRecord {
    fn to_doc(&self) -> Doc {
        Doc {
            description: self.description.as_str().to_owned(),
            owner: StoredOwner {
                service: self.owner.service.as_ref().map(|n| n.as_str().to_owned()),
                team: self.owner.team.as_ref().map(|n| n.as_str().to_owned()),
                repository_url: self
                    .owner
                    .repository_url
                    .as_ref()
                    .map(|u| u.as_str().to_owned()),
            },
            group: self.group.as_ref().map(|g| g.as_str().to_owned()),
            schemas: self
                .schemas
                .iter()
                .map(|(v, s)| (v.to_string(), s.clone()))
                .collect(),
            deprecated_at: self.deprecated_at_ms,
            archived_at: self.archived_at_ms,
            created_at: self.created_at_ms,
            updated_at: self.updated_at_ms,
            origin: self.origin.as_str().to_owned(),
        }
    }

    /// Reads a stored document. A field written under other rules is dropped rather than
    /// refused (an owner name, a group, a version key): one odd record must not hide the
    /// type from ingest, which would refuse its events.
    fn from_doc(name: EventType, doc: Doc) -> EventTypeRecord {
        let name_of = |t: Option<String>| t.and_then(|t| Name::stored(&t).ok());
        EventTypeRecord {
            name,
            description: Description::parse(&doc.description).unwrap_or_default(),
            owner: Owner {
                service: name_of(doc.owner.service),
                team: name_of(doc.owner.team),
                repository_url: doc
                    .owner
                    .repository_url
                    .and_then(|u| crate::model::catalogue::RepositoryUrl::parse(&u).ok()),
            },
            group: name_of(doc.group),
            schemas: doc
                .schemas
                .into_iter()
                .filter_map(|(v, s)| Some((parse_version(&v).ok()?, s)))
                .collect(),
            deprecated_at_ms: doc.deprecated_at,
            archived_at_ms: doc.archived_at,
            created_at_ms: doc.created_at,
            updated_at_ms: doc.updated_at,
            origin: Origin::parse(&doc.origin),
        }
    }

    /// A record made from a spec; `current` keeps its creation and its flags' times.
    fn from_spec(
        name: &EventType,
        spec: &EventTypeSpec,
        current: Option<&EventTypeRecord>,
        origin: Origin,
        now: u64,
    ) -> EventTypeRecord {
        let since = |flag: bool, was: Option<u64>| flag.then(|| was.unwrap_or(now));
        EventTypeRecord {
            name: name.clone(),
            description: spec.description.clone(),
            owner: spec.owner.clone(),
            group: spec.group.clone(),
            schemas: spec
                .schemas
                .iter()
                .map(|(v, s)| (v, s.source().clone()))
                .collect(),
            deprecated_at_ms: since(spec.deprecated, current.and_then(|c| c.deprecated_at_ms)),
            archived_at_ms: since(spec.archived, current.and_then(|c| c.archived_at_ms)),
            created_at_ms: current.map(|c| c.created_at_ms).unwrap_or(now),
            updated_at_ms: now,
            origin: current.map(|c| c.origin).unwrap_or(origin),
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Created,
    Replaced,
    /// The stored record already said the same: nothing was written.
    Unchanged,
}

impl Store {
    /// Every event type of `tenant`'s catalogue, by name.
    pub async fn event_types_of(
        &self,
        tenant: &TenantId,
    ) -> Result<Vec<EventTypeRecord>, StoreError> {
        let key = self.keys.event_types(tenant);
        let all: HashMap<String, String> = self.redis.hgetall(&key).await?;
        let mut out: Vec<EventTypeRecord> = all
            .into_iter()
            .filter_map(|(name, json)| self.parse_event_type(&key, &name, &json))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One event type; `None` when the catalogue does not have it.
    pub async fn event_type(
        &self,
        tenant: &TenantId,
        name: &EventType,
    ) -> Result<Option<EventTypeRecord>, StoreError> {
        Ok(self
            .event_type_with_doc(tenant, name)
            .await?
            .map(|(r, _)| r))
    }

    async fn event_type_with_doc(
        &self,
        tenant: &TenantId,
        name: &EventType,
    ) -> Result<Option<(EventTypeRecord, String)>, StoreError> {
        let key = self.keys.event_types(tenant);
        let json: Option<String> = self.redis.hget(&key, name.as_str()).await?;
        let Some(json) = json else { return Ok(None) };
        let doc: Doc = super::handle::decode_doc(&key, &json)?;
        Ok(Some((EventTypeRecord::from_doc(name.clone(), doc), json)))
    }

    /// A stored document, or `None` (logged) when it cannot be read at all.
    fn parse_event_type(&self, key: &str, name: &str, json: &str) -> Option<EventTypeRecord> {
        let parsed = EventType::parse(name)
            .map_err(|e| e.to_string())
            .and_then(|n| {
                serde_json::from_str::<Doc>(json)
                    .map(|d| EventTypeRecord::from_doc(n, d))
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(key, event_type = name, error = %e, "an event type's record cannot be read; it is left out");
                None
            }
        }
    }

    /// Creates or replaces an event type from `spec`.
    pub async fn put_event_type(
        &self,
        tenant: &TenantId,
        name: &EventType,
        spec: &EventTypeSpec,
        origin: Origin,
    ) -> Result<(EventTypeRecord, Written), StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let current = self.event_type_with_doc(tenant, name).await?;
            let now = self.clock.now_ms();
            let record = EventTypeRecord::from_spec(
                name,
                spec,
                current.as_ref().map(|(r, _)| r),
                origin,
                now,
            );
            if let Some((old, _)) = &current {
                if same_content(old, &record) {
                    return Ok((old.clone(), Written::Unchanged));
                }
            }
            let expected = current.as_ref().map(|(_, json)| json.as_str());
            if self.save_event_type(tenant, &record, expected).await? {
                let written = if current.is_some() {
                    Written::Replaced
                } else {
                    Written::Created
                };
                return Ok((record, written));
            }
        }
        Err(StoreError::Conflict(
            "the event type changed concurrently; try again".into(),
        ))
    }

    /// Applies `patch`; `None` when the type does not exist.
    pub async fn patch_event_type(
        &self,
        tenant: &TenantId,
        name: &EventType,
        patch: &EventTypePatch,
    ) -> Result<Option<EventTypeRecord>, StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let Some((current, json)) = self.event_type_with_doc(tenant, name).await? else {
                return Ok(None);
            };
            let now = self.clock.now_ms();
            let mut next = current.clone();
            if let Some(d) = &patch.description {
                next.description = d.clone();
            }
            if let Some(o) = &patch.owner {
                next.owner = o.clone();
            }
            if let Some(g) = &patch.group {
                next.group = g.clone();
            }
            if let Some(changes) = &patch.schemas {
                changes.apply(&mut next.schemas)?;
            }
            if let Some(d) = patch.deprecated {
                next.deprecated_at_ms = d.then(|| current.deprecated_at_ms.unwrap_or(now));
            }
            if let Some(a) = patch.archived {
                next.archived_at_ms = a.then(|| current.archived_at_ms.unwrap_or(now));
            }
            if same_content(&current, &next) {
                return Ok(Some(current));
            }
            next.updated_at_ms = now;
            if self.save_event_type(tenant, &next, Some(&json)).await? {
                return Ok(Some(next));
            }
        }
        Err(StoreError::Conflict(
            "the event type changed concurrently; try again".into(),
        ))
    }

    /// Writes `record` over `expected` (`None`: it must not exist); `false` when the stored
    /// document changed meanwhile.
    async fn save_event_type(
        &self,
        tenant: &TenantId,
        record: &EventTypeRecord,
        expected: Option<&str>,
    ) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            status: String,
            #[serde(default)]
            other: Option<String>,
        }
        let doc = serde_json::to_string(&record.to_doc())?;
        let answer: Answer = SAVE_EVENT_TYPE
            .run(
                &self.redis,
                vec![self.keys.event_types(tenant), self.keys.tenant(tenant)],
                vec![
                    record.name.to_string(),
                    doc,
                    expected.unwrap_or_default().to_owned(),
                    MAX_TYPES.to_string(),
                ],
            )
            .await?;
        match answer.status.as_str() {
            "ok" => {
                self.publish(Invalidation::Catalogue(tenant.clone())).await;
                Ok(true)
            }
            "changed" => Ok(false),
            "no_tenant" => Err(StoreError::NotFound("tenant")),
            "full" => Err(StoreError::Conflict(format!(
                "the catalogue already holds {MAX_TYPES} event types, its most"
            ))),
            "clash" => Err(StoreError::Conflict(format!(
                "the catalogue has `{}`, which differs from `{}` only in letter case",
                answer.other.unwrap_or_default(),
                record.name
            ))),
            other => Err(unexpected("save_event_type", other)),
        }
    }

    /// Deletes an event type for good; `false` when it did not exist.
    pub async fn expunge_event_type(
        &self,
        tenant: &TenantId,
        name: &EventType,
    ) -> Result<bool, StoreError> {
        let removed: i64 = self
            .redis
            .hdel(self.keys.event_types(tenant), name.as_str())
            .await?;
        if removed > 0 {
            self.publish(Invalidation::Catalogue(tenant.clone())).await;
        }
        Ok(removed > 0)
    }

    /// Deletes a deleted tenant's whole catalogue.
    pub async fn delete_catalogue_of(&self, tenant: &TenantId) -> Result<(), StoreError> {
        let _: i64 = self.redis.del(self.keys.event_types(tenant)).await?;
        self.publish(Invalidation::Catalogue(tenant.clone())).await;
        Ok(())
    }

    /// The raw documents of `tenant`'s catalogue, for ingest's cache: name → JSON.
    pub async fn catalogue_docs(
        &self,
        tenant: &TenantId,
    ) -> Result<HashMap<String, String>, StoreError> {
        Ok(self.redis.hgetall(self.keys.event_types(tenant)).await?)
    }
}

/// Whether two records say the same, times of writing aside.
fn same_content(a: &EventTypeRecord, b: &EventTypeRecord) -> bool {
    a.description == b.description
        && a.owner == b.owner
        && a.group == b.group
        && a.schemas == b.schemas
        && a.deprecated_at_ms.is_some() == b.deprecated_at_ms.is_some()
        && a.archived_at_ms.is_some() == b.archived_at_ms.is_some()
}

/// What ingest needs of one stored event type: its flags and its schemas, uncompiled.
#[derive(Debug, Clone)]
pub struct CatalogueEntry {
    pub deprecated_at_ms: Option<u64>,
    pub archived: bool,
    pub schemas: BTreeMap<u32, Value>,
}

/// Reads ingest's view of one stored document; `None` when it cannot be read.
pub fn catalogue_entry(json: &str) -> Option<CatalogueEntry> {
    let doc: Doc = serde_json::from_str(json).ok()?;
    Some(CatalogueEntry {
        deprecated_at_ms: doc.deprecated_at,
        archived: doc.archived_at.is_some(),
        schemas: doc
            .schemas
            .into_iter()
            .filter_map(|(v, s)| Some((parse_version(&v).ok()?, s)))
            .collect(),
    })
}
