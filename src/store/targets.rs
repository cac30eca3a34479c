//! Delivery targets: where a tenant's events go.
//!
//! A target is one hash `P:{m}:target:<id>` holding a JSON document (`doc`) and a version
//! counter (`ver`), listed in the tenant's index `P:{m}:tenant_targets:<tenant>`. The signing
//! secrets and the auth credentials inside the document are sealed (AES-256-GCM, context bound to
//! the target id); custom headers are kept as given, since receivers use them for routing. Every
//! change publishes `targets:<tenant>` on the invalidation channel so each dispatcher reloads
//! that tenant's targets.

use std::collections::BTreeMap;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::scripts::{DELETE_TARGET, SAVE_TARGET};
use super::tenants::unexpected;
use super::{Store, StoreError, now_ms, rfc3339};
use crate::config::RetryPolicy;
use crate::dispatch::matcher::validate_pattern;
use crate::dispatch::signing::{SigningKey, generate_secret};
pub use crate::monitors::format::Format;

/// Attempts of an optimistic update before giving up with a conflict.
const OPTIMISTIC_ATTEMPTS: usize = 8;
/// Most patterns per target.
const MAX_PATTERNS: usize = 100;
/// Most custom headers per target.
const MAX_HEADERS: usize = 32;
/// Longest target URL.
const MAX_URL: usize = 2048;

/// How a target treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Retry with backoff until success or `max_attempts`, then the error queue.
    #[default]
    Persistent,
    /// One attempt; a failure goes to the error queue.
    Once,
    /// One attempt, response not awaited or recorded beyond a counter.
    FireAndForget,
}

/// How the gateway authenticates to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetAuth {
    Bearer(String),
    Basic { username: String, password: String },
    Header { name: String, value: String },
}

impl TargetAuth {
    /// The auth with its secret parts masked, for API answers.
    fn redacted(&self) -> serde_json::Value {
        match self {
            TargetAuth::Bearer(_) => serde_json::json!({"bearer": "***"}),
            TargetAuth::Basic { username, .. } => {
                serde_json::json!({"basic": {"username": username, "password": "***"}})
            }
            TargetAuth::Header { name, .. } => {
                serde_json::json!({"header": {"name": name, "value": "***"}})
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let printable =
            |s: &str| !s.is_empty() && s.len() <= 1024 && http::HeaderValue::from_str(s).is_ok();
        match self {
            TargetAuth::Bearer(t) if printable(t) => Ok(()),
            TargetAuth::Basic { username, password }
                if printable(username) && !username.contains(':') && password.len() <= 1024 =>
            {
                Ok(())
            }
            TargetAuth::Header { name, value } if printable(value) => check_header_name(name),
            _ => Err("auth values must be 1 to 1024 printable characters".into()),
        }
    }
}

/// A target, secrets opened.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    pub mode: Mode,
    /// `None`: the config's default policy.
    pub retry: Option<RetryPolicy>,
    pub headers: BTreeMap<String, String>,
    pub auth: Option<TargetAuth>,
    pub ordered: bool,
    pub active: bool,
    /// `raw`, or a chat platform's message format.
    pub format: Format,
    /// Why the gateway disabled the target (`gone` after a 410), if it did.
    pub disabled_reason: Option<String>,
    /// The current signing secret (`whsec_…`).
    pub secret: String,
    /// The secret before the last rotation and until when it still signs (ms).
    pub previous_secret: Option<(String, u64)>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// `api` or `config`.
    pub origin: String,
    /// Optimistic-concurrency version.
    version: u64,
}

impl Target {
    /// The keys that sign a delivery sent at `now_ms`: the current one, and the previous one
    /// during its overlap.
    pub fn signing_keys(&self, now_ms: u64) -> Vec<SigningKey> {
        let mut keys: Vec<SigningKey> = SigningKey::parse(&self.secret).into_iter().collect();
        if let Some((old, until)) = &self.previous_secret {
            if now_ms < *until {
                keys.extend(SigningKey::parse(old));
            }
        }
        keys
    }

    /// The JSON view (secrets left out or masked).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenant_id": self.tenant,
            "url": self.url,
            "events": self.events,
            "mode": self.mode,
            "retry": self.retry,
            "headers": self.headers,
            "auth": self.auth.as_ref().map(TargetAuth::redacted),
            "ordered": self.ordered,
            "active": self.active,
            "format": self.format,
            "disabled_reason": self.disabled_reason,
            "secret_rotating_until": self.previous_secret.as_ref().map(|(_, until)| rfc3339(*until)),
            "created_at": rfc3339(self.created_at_ms),
            "updated_at": rfc3339(self.updated_at_ms),
        })
    }
}

/// The stored document: [`Target`] with its secrets sealed.
#[derive(Debug, Serialize, Deserialize)]
struct TargetDoc {
    tenant: String,
    url: String,
    events: Vec<String>,
    mode: Mode,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<String>,
    ordered: bool,
    active: bool,
    #[serde(default)]
    format: Format,
    #[serde(default)]
    disabled_reason: Option<String>,
    secret: String,
    #[serde(default)]
    previous_secret: Option<(String, u64)>,
    created_at_ms: u64,
    updated_at_ms: u64,
    origin: String,
}

/// The fields of a new target, or of a full replacement (validated by [`TargetSpec::validate`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: Option<TargetAuth>,
    #[serde(default)]
    pub ordered: bool,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub format: Format,
    /// A chosen secret (`whsec_…`); generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

fn yes() -> bool {
    true
}

/// A partial update: absent fields stay as they are.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub mode: Option<Mode>,
    #[serde(default, deserialize_with = "super::present")]
    pub retry: Option<Option<RetryPolicy>>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "super::present")]
    pub auth: Option<Option<TargetAuth>>,
    pub ordered: Option<bool>,
    pub active: Option<bool>,
    pub format: Option<Format>,
}

fn check_header_name(name: &str) -> Result<(), String> {
    let parsed = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
    let lower = parsed.as_str();
    let reserved = matches!(
        lower,
        "host"
            | "content-length"
            | "content-type"
            | "transfer-encoding"
            | "connection"
            | "te"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
            | "trailer"
    ) || lower.starts_with("webhook-")
        || lower.starts_with("estafeta-");
    if reserved {
        return Err(format!(
            "header {name:?} is set by the gateway and cannot be overridden"
        ));
    }
    Ok(())
}

impl TargetSpec {
    /// Checks every field; the message names the field.
    pub fn validate(&self, allow_private: bool) -> Result<(), String> {
        validate_url(&self.url, allow_private)?;
        validate_events(&self.events)?;
        if let Some(r) = &self.retry {
            r.validate().map_err(|m| format!("retry.{m}"))?;
        }
        validate_headers(&self.headers)?;
        if let Some(a) = &self.auth {
            a.validate().map_err(|m| format!("auth: {m}"))?;
        }
        if let Some(s) = &self.secret {
            if SigningKey::parse(s).is_none() {
                return Err("secret must be `whsec_` followed by base64 of 16 to 64 bytes".into());
            }
        }
        if self.ordered && self.mode == Mode::FireAndForget {
            return Err(
                "ordered needs a mode that waits for the response (persistent or once)".into(),
            );
        }
        Ok(())
    }
}

fn validate_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("url must be at most {MAX_URL} characters"));
    }
    crate::dispatch::ssrf::check_url(url, allow_private)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn validate_events(events: &[String]) -> Result<(), String> {
    if events.is_empty() || events.len() > MAX_PATTERNS {
        return Err(format!("events must list 1 to {MAX_PATTERNS} patterns"));
    }
    events.iter().try_for_each(|p| validate_pattern(p))
}

fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} headers"));
    }
    for (k, v) in headers {
        check_header_name(k).map_err(|m| format!("headers: {m}"))?;
        if v.len() > 4096 || http::HeaderValue::from_str(v).is_err() {
            return Err(format!(
                "headers: the value of {k:?} is not a valid header value"
            ));
        }
    }
    Ok(())
}

fn secret_context(target: &str) -> String {
    format!("target:{target}:secret")
}

fn auth_context(target: &str) -> String {
    format!("target:{target}:auth")
}

impl Store {
    fn seal_doc(&self, t: &Target) -> Result<String, StoreError> {
        let auth = match &t.auth {
            Some(a) => {
                let json = serde_json::to_vec(a).map_err(|e| StoreError::Invalid(e.to_string()))?;
                Some(self.crypto.seal(&json, &auth_context(&t.id))?)
            }
            None => None,
        };
        let previous_secret = match &t.previous_secret {
            Some((s, until)) => Some((
                self.crypto.seal(s.as_bytes(), &secret_context(&t.id))?,
                *until,
            )),
            None => None,
        };
        let doc = TargetDoc {
            tenant: t.tenant.clone(),
            url: t.url.clone(),
            events: t.events.clone(),
            mode: t.mode,
            retry: t.retry,
            headers: t.headers.clone(),
            auth,
            ordered: t.ordered,
            active: t.active,
            format: t.format,
            disabled_reason: t.disabled_reason.clone(),
            secret: self
                .crypto
                .seal(t.secret.as_bytes(), &secret_context(&t.id))?,
            previous_secret,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            origin: t.origin.clone(),
        };
        serde_json::to_string(&doc).map_err(|e| StoreError::Invalid(e.to_string()))
    }

    fn open_doc(&self, id: &str, key: &str, doc: &str, version: u64) -> Result<Target, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let d: TargetDoc = serde_json::from_str(doc).map_err(|e| corrupt(e.to_string()))?;
        let text = |sealed: &str, ctx: &str| -> Result<String, StoreError> {
            let plain = self.crypto.open(sealed, ctx)?;
            String::from_utf8(plain).map_err(|_| corrupt("secret is not UTF-8".into()))
        };
        let auth = match &d.auth {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &auth_context(id))?;
                Some(serde_json::from_slice(&plain).map_err(|e| corrupt(e.to_string()))?)
            }
            None => None,
        };
        let previous_secret = match &d.previous_secret {
            Some((s, until)) => Some((text(s, &secret_context(id))?, *until)),
            None => None,
        };
        Ok(Target {
            id: id.to_owned(),
            secret: text(&d.secret, &secret_context(id))?,
            tenant: d.tenant,
            url: d.url,
            events: d.events,
            mode: d.mode,
            retry: d.retry,
            headers: d.headers,
            auth,
            ordered: d.ordered,
            active: d.active,
            format: d.format,
            disabled_reason: d.disabled_reason,
            previous_secret,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
            origin: d.origin,
            version,
        })
    }

    /// Writes `t` if the stored version is still `expected` (0: must not exist yet).
    /// `Ok(false)` when it moved on (or the tenant is gone: then `NotFound`).
    async fn save_target(&self, t: &Target, expected: u64) -> Result<bool, StoreError> {
        let keys = vec![
            self.keys.target(&t.id),
            self.keys.tenant_targets(&t.tenant),
            self.keys.tenant(&t.tenant),
        ];
        let args = vec![
            t.id.clone(),
            self.seal_doc(t)?,
            expected.to_string(),
            t.tenant.clone(),
        ];
        let status: String = SAVE_TARGET
            .evalsha_with_reload(&self.redis, keys, args)
            .await?;
        match status.as_str() {
            "ok" => {
                self.publish_invalidation(format!("targets:{}", t.tenant))
                    .await;
                Ok(true)
            }
            "retry" => Ok(false),
            "no_tenant" => Err(StoreError::NotFound("tenant")),
            "exists" => Err(StoreError::Conflict(format!(
                "target {} already exists",
                t.id
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a target for `tenant` (spec already validated).
    pub async fn create_target(
        &self,
        tenant: &str,
        spec: &TargetSpec,
        id: Option<String>,
        origin: &str,
    ) -> Result<Target, StoreError> {
        let now = now_ms();
        let target = Target {
            id: id.unwrap_or_else(|| super::new_id("tgt")),
            tenant: tenant.to_owned(),
            url: spec.url.clone(),
            events: spec.events.clone(),
            mode: spec.mode,
            retry: spec.retry,
            headers: spec.headers.clone(),
            auth: spec.auth.clone(),
            ordered: spec.ordered,
            active: spec.active,
            format: spec.format,
            disabled_reason: None,
            secret: match &spec.secret {
                Some(s) => s.clone(),
                None => generate_secret()?,
            },
            previous_secret: None,
            created_at_ms: now,
            updated_at_ms: now,
            origin: origin.to_owned(),
            version: 1,
        };
        if !self.save_target(&target, 0).await? {
            return Err(StoreError::Conflict(format!(
                "target {} already exists",
                target.id
            )));
        }
        Ok(target)
    }

    /// One target of `tenant`; `None` when it does not exist or belongs to another tenant.
    pub async fn target(&self, tenant: &str, id: &str) -> Result<Option<Target>, StoreError> {
        let key = self.keys.target(id);
        let (doc, ver): (Option<String>, Option<u64>) =
            self.redis.hmget(&key, vec!["doc", "ver"]).await?;
        let Some(doc) = doc else { return Ok(None) };
        let t = self.open_doc(id, &key, &doc, ver.unwrap_or(0))?;
        // Ids are global; the owner check is what keeps tenants apart.
        Ok((t.tenant == tenant).then_some(t))
    }

    /// Every target of `tenant`, in creation order.
    pub async fn targets_of(&self, tenant: &str) -> Result<Vec<Target>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_targets(tenant), "-", "+", None)
            .await?;
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
                if t.tenant == tenant {
                    out.push(t);
                }
            }
        }
        Ok(out)
    }

    /// Applies `change` to a target with optimistic concurrency; `None` when it does not exist.
    pub async fn modify_target<F>(
        &self,
        tenant: &str,
        id: &str,
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
            change(&mut t)?;
            t.updated_at_ms = now_ms();
            t.version = expected + 1;
            if self.save_target(&t, expected).await? {
                return Ok(Some(t));
            }
        }
        Err(StoreError::Conflict(
            "the target changed concurrently; try again".into(),
        ))
    }

    /// Applies a partial update (checked against `allow_private` for a new URL).
    pub async fn update_target(
        &self,
        tenant: &str,
        id: &str,
        patch: &TargetPatch,
        allow_private: bool,
    ) -> Result<Option<Target>, StoreError> {
        self.modify_target(tenant, id, |t| {
            let mut spec = TargetSpec {
                url: patch.url.clone().unwrap_or_else(|| t.url.clone()),
                events: patch.events.clone().unwrap_or_else(|| t.events.clone()),
                mode: patch.mode.unwrap_or(t.mode),
                retry: patch.retry.unwrap_or(t.retry),
                headers: patch.headers.clone().unwrap_or_else(|| t.headers.clone()),
                auth: patch.auth.clone().unwrap_or_else(|| t.auth.clone()),
                ordered: patch.ordered.unwrap_or(t.ordered),
                active: patch.active.unwrap_or(t.active),
                format: patch.format.unwrap_or(t.format),
                secret: None,
            };
            // An unchanged URL is not re-checked: it passed when it was set.
            let url_changed = patch.url.is_some();
            let check_private = allow_private || !url_changed;
            spec.validate(check_private).map_err(StoreError::Invalid)?;
            spec.secret = None;
            t.url = spec.url;
            t.events = spec.events;
            t.mode = spec.mode;
            t.retry = spec.retry;
            t.headers = spec.headers;
            t.auth = spec.auth;
            t.ordered = spec.ordered;
            if patch.active == Some(true) {
                t.disabled_reason = None;
            }
            t.active = spec.active;
            t.format = spec.format;
            Ok(())
        })
        .await
    }

    /// Replaces the signing secret; the old one keeps signing for `overlap_ms`.
    pub async fn rotate_target_secret(
        &self,
        tenant: &str,
        id: &str,
        new_secret: Option<String>,
        overlap_ms: u64,
    ) -> Result<Option<Target>, StoreError> {
        let fresh = match new_secret {
            Some(s) => s,
            None => generate_secret()?,
        };
        self.modify_target(tenant, id, |t| {
            let old = std::mem::replace(&mut t.secret, fresh.clone());
            t.previous_secret = (overlap_ms > 0).then(|| (old, now_ms() + overlap_ms));
            Ok(())
        })
        .await
    }

    /// Disables a target on the receiver's request (410 Gone).
    pub async fn disable_target(
        &self,
        tenant: &str,
        id: &str,
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

    /// Deletes a target; `false` when it did not exist (for this tenant).
    pub async fn delete_target(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        if self.target(tenant, id).await?.is_none() {
            return Ok(false);
        }
        let keys = vec![self.keys.target(id), self.keys.tenant_targets(tenant)];
        let deleted: i64 = DELETE_TARGET
            .evalsha_with_reload(&self.redis, keys, vec![id.to_owned()])
            .await?;
        self.publish_invalidation(format!("targets:{tenant}")).await;
        Ok(deleted == 1)
    }

    /// Deletes every target of a tenant (when the tenant is deleted).
    pub async fn delete_targets_of(&self, tenant: &str) -> Result<(), StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_targets(tenant), "-", "+", None)
            .await?;
        for id in ids {
            let keys = vec![self.keys.target(&id), self.keys.tenant_targets(tenant)];
            let _: i64 = DELETE_TARGET
                .evalsha_with_reload(&self.redis, keys, vec![id])
                .await?;
        }
        self.publish_invalidation(format!("targets:{tenant}")).await;
        Ok(())
    }

    /// Makes a config-declared target match its declaration (created, or replaced in place,
    /// keeping its secret unless the declaration names one). Idempotent.
    pub async fn apply_declared_target(
        &self,
        tenant: &str,
        id: &str,
        spec: &TargetSpec,
    ) -> Result<(), StoreError> {
        match self.target(tenant, id).await? {
            None => {
                self.create_target(tenant, spec, Some(id.to_owned()), "config")
                    .await?;
            }
            Some(current) => {
                let same = current.url == spec.url
                    && current.events == spec.events
                    && current.mode == spec.mode
                    && current.retry == spec.retry
                    && current.headers == spec.headers
                    && current.auth == spec.auth
                    && current.ordered == spec.ordered
                    && current.active == spec.active
                    && current.format == spec.format
                    && spec.secret.as_ref().is_none_or(|s| *s == current.secret);
                if !same {
                    self.modify_target(tenant, id, |t| {
                        t.url = spec.url.clone();
                        t.events = spec.events.clone();
                        t.mode = spec.mode;
                        t.retry = spec.retry;
                        t.headers = spec.headers.clone();
                        t.auth = spec.auth.clone();
                        t.ordered = spec.ordered;
                        t.active = spec.active;
                        t.format = spec.format;
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

    fn spec() -> TargetSpec {
        TargetSpec {
            url: "https://example.com/hook".into(),
            events: vec!["order.*".into()],
            mode: Mode::Persistent,
            retry: None,
            headers: BTreeMap::new(),
            auth: None,
            ordered: false,
            active: true,
            format: Format::Raw,
            secret: None,
        }
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(spec().validate(false).is_ok());
        let bad = |f: &dyn Fn(&mut TargetSpec)| {
            let mut s = spec();
            f(&mut s);
            s.validate(false).err().unwrap_or_default()
        };
        assert!(bad(&|s| s.url = "http://10.0.0.1/x".into()).contains("private"));
        assert!(bad(&|s| s.events = vec![]).contains("events"));
        assert!(bad(&|s| s.events = vec!["a*b".into()]).contains("pattern"));
        assert!(
            bad(&|s| {
                s.headers.insert("Webhook-Id".into(), "x".into());
            })
            .contains("set by the gateway")
        );
        assert!(
            bad(&|s| {
                s.headers.insert("X-Ok".into(), "a\nb".into());
            })
            .contains("header value")
        );
        assert!(bad(&|s| s.secret = Some("nope".into())).contains("whsec_"));
        assert!(bad(&|s| s.auth = Some(TargetAuth::Bearer(String::new()))).contains("auth"));
        assert!(
            bad(&|s| {
                s.ordered = true;
                s.mode = Mode::FireAndForget;
            })
            .contains("ordered")
        );
    }

    #[test]
    fn auth_json_shapes() {
        let a: TargetAuth =
            serde_json::from_str(r#"{"basic": {"username": "u", "password": "p"}}"#)
                .unwrap_or(TargetAuth::Bearer("x".into()));
        assert_eq!(
            a,
            TargetAuth::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(a.redacted()["basic"]["password"], "***");
        let h: Result<TargetAuth, _> =
            serde_json::from_str(r#"{"header": {"name": "X-Key", "value": "v"}}"#);
        assert!(h.is_ok());
        assert!(serde_json::from_str::<TargetAuth>(r#"{"digest": "x"}"#).is_err());
    }
}
