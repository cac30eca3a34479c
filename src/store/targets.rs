//! Delivery targets: where a tenant's events go.
//!
//! A target is one hash `P:{m}:target:<id>` holding a JSON document (`doc`) and a version
//! counter (`ver`), listed in the tenant's index `P:{m}:tenant_targets:<tenant>`. The signing
//! secrets and the auth credentials inside the document are sealed (AES-256-GCM, context bound
//! to the target id); custom headers are kept as given, since receivers use them for routing.
//! Every change publishes the tenant's [`Invalidation::Targets`] so each dispatcher reloads
//! that tenant's targets.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::{StoreError, unexpected};
use super::handle::{OPTIMISTIC_ATTEMPTS, Store, decode_doc};
use crate::crypto::random_bytes;
use crate::model::RateLimit;
use crate::model::filter::TargetFilter;
use crate::model::target::{TargetBatch, check_combination, check_pacing, check_security};
use crate::model::target_health::{BreakerOverride, Concurrency, Hours};
use crate::model::target_tls::TargetTls;
use crate::model::transform::TargetTransform;
use crate::model::{
    Format, Headers, Mode, Origin, Patterns, RetryPolicy, SigningSecret, TargetAuth, TargetId,
    TargetPatch, TargetSpec, TargetUrl, TenantId,
};
use crate::redis::invalidation::Invalidation;
use crate::redis::scripts::{self, DELETE_TARGET, SAVE_TARGET};

/// A target, secrets opened.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: TargetId,
    pub tenant: TenantId,
    pub url: TargetUrl,
    pub events: Patterns,
    pub mode: Mode,
    /// `None`: the config's default policy.
    pub retry: Option<RetryPolicy>,
    pub headers: Headers,
    pub auth: Option<TargetAuth>,
    /// How TLS to it is spoken (private CA, client certificate, server name).
    pub tls: Option<TargetTls>,
    pub ordered: bool,
    pub active: bool,
    /// `raw`, or a chat platform's message format.
    pub format: Format,
    /// Which subscribed events it receives, by content.
    pub filter: Option<TargetFilter>,
    /// The jq program that reshapes its deliveries.
    pub transform: Option<TargetTransform>,
    /// The transformation's version: 1 for the first program, one more at each change
    /// (kept when it is removed, so a new one continues the count).
    pub transform_version: u32,
    /// How its events are gathered into batches, when they are.
    pub batch: Option<TargetBatch>,
    /// Its own circuit-breaker settings, over `[dispatch.breaker]`.
    pub breaker: Option<BreakerOverride>,
    /// Deliveries per second across every dispatcher.
    pub rate_limit: Option<RateLimit>,
    /// Hours of failure before the gateway disables it (`[dispatch]`'s when absent).
    pub disable_after_h: Option<Hours>,
    /// Whether it is probed and enabled again after an automatic disable.
    pub heal: bool,
    /// Deliveries in flight at once per dispatcher.
    pub concurrency: Concurrency,
    /// Why it is disabled: `manual` (an operator), `gone` (a 410), `failing` (auto-disabled).
    pub disabled_reason: Option<String>,
    /// The current signing secret.
    pub secret: SigningSecret,
    /// The secret before the last rotation and until when it still signs (ms).
    pub previous_secret: Option<(SigningSecret, u64)>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub origin: Origin,
    /// Optimistic-concurrency version.
    version: u64,
}

impl Target {
    /// A target of tenant `t_test` that wants `events`, for unit tests.
    #[cfg(test)]
    pub fn sample(events: &[&str]) -> Target {
        Target {
            id: TargetId::generate(),
            tenant: TenantId::parse("t_test").unwrap(),
            url: TargetUrl::parse("https://example.com/hook").unwrap(),
            events: serde_json::from_value(serde_json::json!(events)).unwrap(),
            mode: Mode::default(),
            retry: None,
            headers: Headers::default(),
            auth: None,
            tls: None,
            ordered: false,
            active: true,
            format: Format::default(),
            filter: None,
            transform: None,
            transform_version: 0,
            batch: None,
            breaker: None,
            rate_limit: None,
            disable_after_h: None,
            heal: true,
            concurrency: Concurrency::default(),
            disabled_reason: None,
            secret: generate_secret().unwrap(),
            previous_secret: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            origin: Origin::default(),
            version: 0,
        }
    }

    /// The secrets that sign a delivery sent at `now_ms`: the current one, and the previous
    /// one during its overlap.
    pub fn secrets_at(&self, now_ms: u64) -> Vec<&SigningSecret> {
        let mut out = vec![&self.secret];
        if let Some((old, until)) = &self.previous_secret {
            if now_ms < *until {
                out.push(old);
            }
        }
        out
    }

    /// Until when the previous secret still signs (ms), during a rotation.
    pub fn rotating_until_ms(&self) -> Option<u64> {
        self.previous_secret.as_ref().map(|(_, until)| *until)
    }
}

/// One version of a target's transformation, as its history keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransformVersion {
    pub version: u32,
    pub program: String,
    pub enabled: bool,
    pub saved_at_ms: u64,
}

/// A retry policy as stored: read back within today's bounds, whatever rules wrote it.
#[derive(Debug, Serialize, Deserialize)]
struct StoredRetry {
    initial_delay_ms: u64,
    multiplier: f64,
    max_delay_ms: u64,
    max_attempts: u32,
}

impl From<&RetryPolicy> for StoredRetry {
    fn from(p: &RetryPolicy) -> StoredRetry {
        StoredRetry {
            initial_delay_ms: p.initial_delay_ms(),
            multiplier: p.multiplier(),
            max_delay_ms: p.max_delay_ms(),
            max_attempts: p.max_attempts(),
        }
    }
}

impl StoredRetry {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy::clamped(
            self.initial_delay_ms,
            self.multiplier,
            self.max_delay_ms,
            self.max_attempts,
        )
    }
}

/// The stored document: [`Target`] with its secrets sealed.
#[derive(Debug, Serialize, Deserialize)]
struct TargetDoc {
    tenant: TenantId,
    url: TargetUrl,
    events: Patterns,
    mode: Mode,
    #[serde(default)]
    retry: Option<StoredRetry>,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    auth: Option<String>,
    /// Sealed whole: it may hold a client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<String>,
    ordered: bool,
    active: bool,
    #[serde(default)]
    format: Format,
    /// Compiled when read: a stored filter that no longer compiles is a corrupt record.
    #[serde(default)]
    filter: Option<TargetFilter>,
    #[serde(default)]
    transform: Option<TargetTransform>,
    #[serde(default)]
    transform_version: u32,
    #[serde(default)]
    batch: Option<TargetBatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    breaker: Option<BreakerOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disable_after_h: Option<Hours>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    heal: bool,
    #[serde(default)]
    concurrency: Concurrency,
    #[serde(default)]
    disabled_reason: Option<String>,
    secret: String,
    #[serde(default)]
    previous_secret: Option<(String, u64)>,
    created_at_ms: u64,
    updated_at_ms: u64,
    origin: Origin,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn secret_context(target: &TargetId) -> String {
    format!("target:{target}:secret")
}

fn auth_context(target: &TargetId) -> String {
    format!("target:{target}:auth")
}

fn tls_context(target: &TargetId) -> String {
    format!("target:{target}:tls")
}

/// A new random signing secret.
pub fn generate_secret() -> Result<SigningSecret, StoreError> {
    Ok(SigningSecret::from_random(random_bytes()?))
}

impl Store {
    fn seal_doc(&self, t: &Target) -> Result<String, StoreError> {
        let auth = match &t.auth {
            Some(a) => {
                let json = serde_json::to_vec(a)?;
                Some(self.crypto.seal(&json, &auth_context(&t.id))?)
            }
            None => None,
        };
        let tls = match &t.tls {
            Some(tls) => {
                let json = serde_json::to_vec(tls)?;
                Some(self.crypto.seal(&json, &tls_context(&t.id))?)
            }
            None => None,
        };
        let previous_secret = match &t.previous_secret {
            Some((s, until)) => Some((
                self.crypto
                    .seal(s.expose().as_bytes(), &secret_context(&t.id))?,
                *until,
            )),
            None => None,
        };
        let doc = TargetDoc {
            tenant: t.tenant.clone(),
            url: t.url.clone(),
            events: t.events.clone(),
            mode: t.mode,
            retry: t.retry.as_ref().map(StoredRetry::from),
            headers: t.headers.clone(),
            auth,
            tls,
            ordered: t.ordered,
            active: t.active,
            format: t.format,
            filter: t.filter.clone(),
            transform: t.transform.clone(),
            transform_version: t.transform_version,
            batch: t.batch,
            breaker: t.breaker,
            rate_limit: t.rate_limit,
            disable_after_h: t.disable_after_h,
            heal: t.heal,
            concurrency: t.concurrency,
            disabled_reason: t.disabled_reason.clone(),
            secret: self
                .crypto
                .seal(t.secret.expose().as_bytes(), &secret_context(&t.id))?,
            previous_secret,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            origin: t.origin,
        };
        Ok(serde_json::to_string(&doc)?)
    }

    fn open_doc(
        &self,
        id: &TargetId,
        key: &str,
        doc: &str,
        version: u64,
    ) -> Result<Target, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let d: TargetDoc = decode_doc(key, doc)?;
        let secret = |sealed: &str| -> Result<SigningSecret, StoreError> {
            let plain = self.crypto.open(sealed, &secret_context(id))?;
            let text =
                String::from_utf8(plain).map_err(|_| corrupt("secret is not UTF-8".into()))?;
            SigningSecret::parse(&text).map_err(|e| corrupt(format!("secret {e}")))
        };
        let auth = match &d.auth {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &auth_context(id))?;
                Some(serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?)
            }
            None => None,
        };
        let tls = match &d.tls {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &tls_context(id))?;
                Some(serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?)
            }
            None => None,
        };
        let previous_secret = match &d.previous_secret {
            Some((s, until)) => Some((secret(s)?, *until)),
            None => None,
        };
        Ok(Target {
            id: id.clone(),
            secret: secret(&d.secret)?,
            tenant: d.tenant,
            url: d.url,
            events: d.events,
            mode: d.mode,
            retry: d.retry.as_ref().map(StoredRetry::policy),
            headers: d.headers,
            auth,
            tls,
            ordered: d.ordered,
            active: d.active,
            format: d.format,
            filter: d.filter,
            transform: d.transform,
            transform_version: d.transform_version,
            batch: d.batch,
            breaker: d.breaker,
            rate_limit: d.rate_limit,
            disable_after_h: d.disable_after_h,
            heal: d.heal,
            concurrency: d.concurrency,
            disabled_reason: d.disabled_reason,
            previous_secret,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            origin: d.origin,
            version,
        })
    }

    /// Writes `t` if the stored version is still `expected` (0: must not exist yet), with its
    /// transformation's new version in its history when `transform_changed`. `Ok(false)` when
    /// it moved on (or the tenant is gone: then `NotFound`).
    async fn save_target(
        &self,
        t: &Target,
        expected: u64,
        transform_changed: bool,
    ) -> Result<bool, StoreError> {
        let keys = vec![
            self.keys.target(&t.id),
            self.keys.tenant_targets(&t.tenant),
            self.keys.tenant(&t.tenant),
            self.keys.target_transforms(&t.id),
        ];
        let history = match (&t.transform, transform_changed) {
            (Some(tr), true) => serde_json::to_string(&TransformVersion {
                version: t.transform_version,
                program: tr.program.as_str().to_owned(),
                enabled: tr.enabled,
                saved_at_ms: t.updated_at_ms,
            })?,
            _ => String::new(),
        };
        let args = vec![
            t.id.to_string(),
            self.seal_doc(t)?,
            expected.to_string(),
            t.tenant.to_string(),
            history,
        ];
        let answer: scripts::Status = SAVE_TARGET.run(&self.redis, keys, args).await?;
        match answer.status.as_str() {
            "ok" => {
                self.publish(Invalidation::Targets(t.tenant.clone())).await;
                Ok(true)
            }
            "retry" => Ok(false),
            "no_tenant" => Err(StoreError::NotFound("tenant")),
            "exists" => Err(StoreError::Conflict(format!(
                "target {} already exists",
                t.id
            ))),
            other => Err(unexpected("save_target", other)),
        }
    }

    /// Creates a target for `tenant` (spec already validated); `id` when the config chooses it.
    pub async fn create_target(
        &self,
        tenant: &TenantId,
        spec: &TargetSpec,
        id: Option<TargetId>,
        origin: Origin,
    ) -> Result<Target, StoreError> {
        let now = self.clock.now_ms();
        let target = Target {
            id: id.unwrap_or_else(TargetId::generate),
            tenant: tenant.clone(),
            url: spec.url.clone(),
            events: spec.events.clone(),
            mode: spec.mode,
            retry: spec.retry,
            headers: spec.headers.clone(),
            auth: spec.auth.clone(),
            tls: spec.tls.clone(),
            ordered: spec.ordered,
            active: spec.active,
            format: spec.format,
            filter: spec.filter.clone(),
            transform: spec.transform.clone(),
            transform_version: u32::from(spec.transform.is_some()),
            batch: spec.batch,
            breaker: spec.breaker,
            rate_limit: spec.rate_limit,
            disable_after_h: spec.disable_after_h,
            heal: spec.heal,
            concurrency: spec.concurrency,
            disabled_reason: (!spec.active).then(|| "manual".to_owned()),
            secret: match &spec.secret {
                Some(s) => s.clone(),
                None => generate_secret()?,
            },
            previous_secret: None,
            created_at_ms: now,
            updated_at_ms: now,
            origin,
            version: 1,
        };
        if !self
            .save_target(&target, 0, target.transform.is_some())
            .await?
        {
            return Err(StoreError::Conflict(format!(
                "target {} already exists",
                target.id
            )));
        }
        Ok(target)
    }

    /// One target of `tenant`; `None` when it does not exist or belongs to another tenant.
    pub async fn target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<Option<Target>, StoreError> {
        // Ids are global; the owner check is what keeps tenants apart.
        Ok(self.target_by_id(id).await?.filter(|t| t.tenant == *tenant))
    }

    /// A target whoever owns it: for the operator's search by id only.
    pub async fn target_by_id(&self, id: &TargetId) -> Result<Option<Target>, StoreError> {
        let key = self.keys.target(id);
        let (doc, ver): (Option<String>, Option<u64>) =
            self.redis.hmget(&key, vec!["doc", "ver"]).await?;
        let Some(doc) = doc else { return Ok(None) };
        Ok(Some(self.open_doc(id, &key, &doc, ver.unwrap_or(0))?))
    }

    async fn target_ids(&self, tenant: &TenantId) -> Result<Vec<TargetId>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_targets(tenant), "-", "+", None)
            .await?;
        Ok(ids.iter().filter_map(|i| TargetId::parse(i).ok()).collect())
    }

    /// Every target of `tenant`, in creation order.
    pub async fn targets_of(&self, tenant: &TenantId) -> Result<Vec<Target>, StoreError> {
        let ids = self.target_ids(tenant).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for id in &ids {
            let _: () = pipeline
                .hmget(self.keys.target(id), vec!["doc", "ver"])
                .await?;
        }
        let rows: Vec<(Option<String>, Option<u64>)> = pipeline.all().await?;
        let mut out = Vec::with_capacity(ids.len());
        for (id, (doc, ver)) in ids.iter().zip(rows) {
            if let Some(doc) = doc {
                let t = self.open_doc(id, &self.keys.target(id), &doc, ver.unwrap_or(0))?;
                if t.tenant == *tenant {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Applies `change` to a target with optimistic concurrency; `None` when it does not exist.
    pub async fn modify_target<F>(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        mut change: F,
    ) -> Result<Option<Target>, StoreError>
    where
        F: FnMut(&mut Target) -> Result<(), StoreError>,
    {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let Some(mut t) = self.target(tenant, id).await? else {
                return Ok(None);
            };
            let expected = t.version;
            let transform_before = t.transform.clone();
            change(&mut t)?;
            t.updated_at_ms = self.clock.now_ms();
            t.version = expected + 1;
            let transform_changed = t.transform != transform_before && t.transform.is_some();
            if transform_changed {
                t.transform_version = t.transform_version.saturating_add(1);
            }
            if self.save_target(&t, expected, transform_changed).await? {
                return Ok(Some(t));
            }
        }
        Err(StoreError::Conflict(
            "the target changed concurrently; try again".into(),
        ))
    }

    /// Applies a partial update. A new URL is checked against `allow_private`; an unchanged
    /// one passed when it was set.
    pub async fn update_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        patch: &TargetPatch,
        allow_private: bool,
    ) -> Result<Option<Target>, StoreError> {
        if let Some(url) = &patch.url {
            url.check_reachable(allow_private)
                .map_err(|p| p.invalid().within("url"))?;
        }
        self.modify_target(tenant, id, |t| {
            let mode = patch.mode.unwrap_or(t.mode);
            let ordered = patch.ordered.unwrap_or(t.ordered);
            let format = patch.format.unwrap_or(t.format);
            let transformed = match &patch.transform {
                Some(tr) => tr.is_some(),
                None => t.transform.is_some(),
            };
            let batch = match &patch.batch {
                Some(b) => *b,
                None => t.batch,
            };
            check_combination(ordered, mode, format, transformed, batch.as_ref())?;
            let breaker = patch.breaker.unwrap_or(t.breaker);
            let rate_limit = patch.rate_limit.unwrap_or(t.rate_limit);
            check_pacing(mode, breaker.as_ref(), rate_limit.as_ref())?;
            let url = patch.url.as_ref().unwrap_or(&t.url);
            let auth = patch.auth.as_ref().unwrap_or(&t.auth);
            let tls = patch.tls.as_ref().unwrap_or(&t.tls);
            check_security(url, auth.as_ref(), tls.as_ref(), allow_private)?;
            t.tls = tls.clone();
            t.breaker = breaker;
            t.rate_limit = rate_limit;
            if let Some(h) = patch.disable_after_h {
                t.disable_after_h = h;
            }
            if let Some(c) = patch.concurrency {
                t.concurrency = c;
            }
            if let Some(h) = patch.heal {
                t.heal = h;
            }
            if let Some(u) = &patch.url {
                t.url = u.clone();
            }
            if let Some(e) = &patch.events {
                t.events = e.clone();
            }
            t.mode = mode;
            t.ordered = ordered;
            if let Some(r) = patch.retry {
                t.retry = r;
            }
            if let Some(h) = &patch.headers {
                t.headers = h.clone();
            }
            if let Some(a) = &patch.auth {
                t.auth = a.clone();
            }
            match patch.active {
                Some(true) => t.disabled_reason = None,
                // An operator's disable: never healed, whatever disabled it before.
                Some(false) => t.disabled_reason = Some("manual".to_owned()),
                None => {}
            }
            if let Some(a) = patch.active {
                t.active = a;
            }
            if let Some(f) = patch.format {
                t.format = f;
            }
            if let Some(f) = &patch.filter {
                t.filter = f.clone();
            }
            if let Some(tr) = &patch.transform {
                t.transform = tr.clone();
            }
            t.batch = batch;
            Ok(())
        })
        .await
    }

    /// A target's last 20 transformations, newest first.
    pub async fn transform_versions(
        &self,
        id: &TargetId,
    ) -> Result<Vec<TransformVersion>, StoreError> {
        let key = self.keys.target_transforms(id);
        let entries: Vec<String> = self.redis.lrange(&key, 0, -1).await?;
        Ok(entries
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect())
    }

    /// Replaces the signing secret; the old one keeps signing for `overlap_ms`.
    pub async fn rotate_target_secret(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        new_secret: Option<SigningSecret>,
        overlap_ms: u64,
    ) -> Result<Option<Target>, StoreError> {
        let fresh = match new_secret {
            Some(s) => s,
            None => generate_secret()?,
        };
        self.modify_target(tenant, id, |t| {
            let old = std::mem::replace(&mut t.secret, fresh.clone());
            t.previous_secret =
                (overlap_ms > 0).then(|| (old, self.clock.now_ms().saturating_add(overlap_ms)));
            Ok(())
        })
        .await
    }

    /// Disables a target on the receiver's request (410 Gone).
    pub async fn disable_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.modify_target(tenant, id, |t| {
            t.active = false;
            t.disabled_reason = Some(reason.to_owned());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Enables a target the gateway disabled for failing, once its probes pass; `false` when
    /// it is no longer so (an operator enabled, disabled or changed it meanwhile, or it is
    /// gone), and nothing changed.
    pub async fn enable_healed(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<bool, StoreError> {
        let mut healed = false;
        self.modify_target(tenant, id, |t| {
            healed = !t.active && t.heal && t.disabled_reason.as_deref() == Some("failing");
            if healed {
                t.active = true;
                t.disabled_reason = None;
                Ok(())
            } else {
                Err(StoreError::Conflict(
                    "no longer disabled for failing".into(),
                ))
            }
        })
        .await
        .map(|t| t.is_some() && healed)
        .or_else(|e| match e {
            StoreError::Conflict(_) if !healed => Ok(false),
            e => Err(e),
        })
    }

    async fn remove_target(&self, tenant: &TenantId, id: &TargetId) -> Result<bool, StoreError> {
        #[derive(serde::Deserialize)]
        struct Deleted {
            deleted: u64,
        }
        let keys = vec![
            self.keys.target(id),
            self.keys.tenant_targets(tenant),
            self.keys.target_transforms(id),
        ];
        let d: Deleted = DELETE_TARGET
            .run(&self.redis, keys, vec![id.to_string()])
            .await?;
        Ok(d.deleted == 1)
    }

    /// Deletes a target; `false` when it did not exist (for this tenant).
    pub async fn delete_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
    ) -> Result<bool, StoreError> {
        if self.target(tenant, id).await?.is_none() {
            return Ok(false);
        }
        let deleted = self.remove_target(tenant, id).await?;
        self.publish(Invalidation::Targets(tenant.clone())).await;
        Ok(deleted)
    }

    /// Deletes every target of a tenant (when the tenant is deleted).
    pub async fn delete_targets_of(&self, tenant: &TenantId) -> Result<(), StoreError> {
        for id in self.target_ids(tenant).await? {
            self.remove_target(tenant, &id).await?;
        }
        self.publish(Invalidation::Targets(tenant.clone())).await;
        Ok(())
    }

    /// Makes a config-declared target match its declaration (created, or replaced in place,
    /// keeping its secret unless the declaration names one). Idempotent.
    pub async fn apply_declared_target(
        &self,
        tenant: &TenantId,
        id: &TargetId,
        spec: &TargetSpec,
    ) -> Result<(), StoreError> {
        match self.target(tenant, id).await? {
            None => {
                self.create_target(tenant, spec, Some(id.clone()), Origin::Config)
                    .await?;
            }
            Some(current) => {
                let same = current.url == spec.url
                    && current.events == spec.events
                    && current.mode == spec.mode
                    && current.retry == spec.retry
                    && current.headers == spec.headers
                    && current.auth == spec.auth
                    && current.tls == spec.tls
                    && current.ordered == spec.ordered
                    && current.active == spec.active
                    && current.format == spec.format
                    && current.filter == spec.filter
                    && current.transform == spec.transform
                    && current.batch == spec.batch
                    && current.breaker == spec.breaker
                    && current.rate_limit == spec.rate_limit
                    && current.disable_after_h == spec.disable_after_h
                    && current.heal == spec.heal
                    && current.concurrency == spec.concurrency
                    && spec.secret.as_ref().is_none_or(|s| *s == current.secret);
                if !same {
                    self.modify_target(tenant, id, |t| {
                        t.url = spec.url.clone();
                        t.events = spec.events.clone();
                        t.mode = spec.mode;
                        t.retry = spec.retry;
                        t.headers = spec.headers.clone();
                        t.auth = spec.auth.clone();
                        t.tls = spec.tls.clone();
                        t.ordered = spec.ordered;
                        t.format = spec.format;
                        t.filter = spec.filter.clone();
                        t.transform = spec.transform.clone();
                        t.batch = spec.batch;
                        t.breaker = spec.breaker;
                        t.rate_limit = spec.rate_limit;
                        t.disable_after_h = spec.disable_after_h;
                        t.heal = spec.heal;
                        t.concurrency = spec.concurrency;
                        if t.active != spec.active {
                            t.disabled_reason = (!spec.active).then(|| "manual".to_owned());
                        }
                        t.active = spec.active;
                        if let Some(s) = &spec.secret {
                            t.secret = s.clone();
                        }
                        Ok(())
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_retry_policies_come_back_within_bounds() {
        let stored: Result<StoredRetry, _> = serde_json::from_str(
            r#"{"initial_delay_ms": 18446744073709551615, "multiplier": 1e308, "max_delay_ms": 18446744073709551615, "max_attempts": 10}"#,
        );
        let p = stored.map(|s| s.policy());
        assert!(p.is_ok_and(|p| p.ceiling_ms(50) <= crate::model::target::MAX_DELAY_MS));
    }
}
