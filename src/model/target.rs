//! Delivery targets: where a tenant's events go, and how.
//!
//! The rules here are the whole of what makes a target valid, except what depends on the
//! deployment: whether a URL may point at a private address is decided by
//! [`TargetSpec::validate`] with `security.allow_private_targets`.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::bounded::Bounded;
use super::event_type::EventPattern;
use super::invalid::{Invalid, in_range};
use super::schema::string_schema;
use super::secret::SecretText;
use super::target_health::{BreakerOverride, Concurrency, Hours};
use super::tenant::RateLimit;
use super::text::{HEADER_VALUE_CHARS, check_header_value};

use super::auth::custom_header_name_schema;
pub use super::auth::{MAX_CREDENTIAL, TargetAuth, TargetAuthView, check_custom_header_name};
pub use super::target_url::{
    MAX_URL, TargetUrl, UrlProblem, check_url, host_address, is_public, literal_ip,
};

/// Most patterns per target.
pub const MAX_PATTERNS: usize = 100;
/// Most custom headers per target.
pub const MAX_HEADERS: usize = 32;
/// Longest custom header value.
pub const MAX_HEADER_VALUE: usize = 4096;
/// Longest retry delay: a day.
pub const MAX_DELAY_MS: u64 = 86_400_000;
/// Largest growth of the retry delay per attempt.
pub const MAX_MULTIPLIER: f64 = 10.0;
/// Most attempts of one delivery.
pub const MAX_ATTEMPTS: u32 = 100;

/// How a target treats failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
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

impl Mode {
    /// As the API writes it (`fire_and_forget`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::Once => "once",
            Mode::FireAndForget => "fire_and_forget",
        }
    }
}

/// How a target receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// The event's body and content type, as received.
    #[default]
    Raw,
    /// A Slack incoming-webhook message.
    Slack,
    /// A Discord webhook message.
    Discord,
}

impl Format {
    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Slack => "slack",
            Format::Discord => "discord",
        }
    }
}

/// Exponential backoff with jitter that only adds (see `dispatch::backoff`). Only [`RetryPolicy::try_new`] makes one, so every
/// nominal delay computed from a policy stays within a day (jitter adds up to half of it).
// `default` on the fields tells the schema they may be left out; the values come from
// `RetryFields`'s defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RetryFields", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Upper bound (ms) of the first retry's delay.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400000, default = 1000)]
    initial_delay_ms: u64,
    /// Growth of the bound per attempt.
    #[serde(default)]
    #[schema(minimum = 1.0, maximum = 10.0, default = 2.0)]
    multiplier: f64,
    /// Cap (ms) of every delay, the first included.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86400000, default = 3600000)]
    max_delay_ms: u64,
    /// Attempts in all, the first included.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100, default = 10)]
    max_attempts: u32,
}

/// The fields of a [`RetryPolicy`] as they arrive; absent ones take the defaults. Each is
/// checked as it is read, so a refusal names the field's whole path (`retry.multiplier`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RetryFields {
    initial_delay_ms: Delay,
    #[serde(deserialize_with = "multiplier")]
    multiplier: f64,
    max_delay_ms: Delay,
    max_attempts: Bounded<1, { MAX_ATTEMPTS as u64 }>,
}

/// A retry delay as it arrives.
type Delay = Bounded<1, MAX_DELAY_MS>;

fn multiplier<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    RetryPolicy::check_multiplier(v).map_err(serde::de::Error::custom)
}

impl Default for RetryFields {
    fn default() -> Self {
        let d = RetryPolicy::default();
        RetryFields {
            initial_delay_ms: Bounded::clamped(d.initial_delay_ms),
            multiplier: d.multiplier,
            max_delay_ms: Bounded::clamped(d.max_delay_ms),
            max_attempts: Bounded::clamped(u64::from(d.max_attempts)),
        }
    }
}

impl TryFrom<RetryFields> for RetryPolicy {
    type Error = Invalid;
    fn try_from(f: RetryFields) -> Result<RetryPolicy, Invalid> {
        let attempts = f.max_attempts.get().min(u64::from(MAX_ATTEMPTS)) as u32;
        RetryPolicy::try_new(
            f.initial_delay_ms.get(),
            f.multiplier,
            f.max_delay_ms.get(),
            attempts,
        )
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay_ms: 1_000,
            multiplier: 2.0,
            max_delay_ms: 3_600_000,
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// A policy, if every value is within bounds: delays from 1 ms to a day, a multiplier
    /// from 1 to 10, 1 to 100 attempts.
    pub fn try_new(
        initial_delay_ms: u64,
        multiplier: f64,
        max_delay_ms: u64,
        max_attempts: u32,
    ) -> Result<RetryPolicy, Invalid> {
        in_range("initial_delay_ms", initial_delay_ms, 1..=MAX_DELAY_MS)?;
        Self::check_multiplier(multiplier).map_err(|e| e.within("multiplier"))?;
        in_range("max_delay_ms", max_delay_ms, 1..=MAX_DELAY_MS)?;
        in_range("max_attempts", max_attempts, 1..=MAX_ATTEMPTS)?;
        Ok(RetryPolicy {
            initial_delay_ms,
            multiplier,
            max_delay_ms,
            max_attempts,
        })
    }

    fn check_multiplier(multiplier: f64) -> Result<f64, Invalid> {
        if (1.0..=MAX_MULTIPLIER).contains(&multiplier) {
            Ok(multiplier)
        } else {
            Err(Invalid::new(format!(
                "must be a number from 1 to {MAX_MULTIPLIER}"
            )))
        }
    }

    /// A policy read back from a record written under older rules: every value brought
    /// within bounds instead of refused (a multiplier that is not a number becomes 1), so one
    /// old record cannot stop its tenant's deliveries.
    pub fn clamped(
        initial_delay_ms: u64,
        multiplier: f64,
        max_delay_ms: u64,
        max_attempts: u32,
    ) -> RetryPolicy {
        RetryPolicy {
            initial_delay_ms: initial_delay_ms.clamp(1, MAX_DELAY_MS),
            multiplier: if multiplier.is_nan() {
                1.0
            } else {
                multiplier.clamp(1.0, MAX_MULTIPLIER)
            },
            max_delay_ms: max_delay_ms.clamp(1, MAX_DELAY_MS),
            max_attempts: max_attempts.clamp(1, MAX_ATTEMPTS),
        }
    }

    pub fn initial_delay_ms(&self) -> u64 {
        self.initial_delay_ms
    }

    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    pub fn max_delay_ms(&self) -> u64 {
        self.max_delay_ms
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The upper bound of the delay before attempt `next_attempt` (2 = the first retry):
    /// `initial × multiplier^(next_attempt − 2)`, capped by `max_delay_ms`; never above a day.
    pub fn ceiling_ms(&self, next_attempt: u32) -> u64 {
        let exp = next_attempt.saturating_sub(2).min(1000) as i32;
        let ms = self.initial_delay_ms as f64 * self.multiplier.powi(exp);
        // `min` and `max` take a finite bound of an infinite product too.
        ms.min(self.max_delay_ms as f64).max(1.0) as u64
    }
}

/// A target's custom headers: at most 32, names of the target's choosing, values without
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct Headers(BTreeMap<String, String>);

impl TryFrom<BTreeMap<String, String>> for Headers {
    type Error = Invalid;
    fn try_from(map: BTreeMap<String, String>) -> Result<Headers, Invalid> {
        if map.len() > MAX_HEADERS {
            return Err(Invalid::new(format!(
                "must hold at most {MAX_HEADERS} headers"
            )));
        }
        for (k, v) in &map {
            check_custom_header_name(k)?;
            check_header_value(v, 0, MAX_HEADER_VALUE)
                .map_err(|e| Invalid::new(format!("the value of {k:?} {}", e.message)))?;
        }
        Ok(Headers(map))
    }
}

impl Headers {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }
}

impl utoipa::PartialSchema for Headers {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(custom_header_name_schema()))
            .additional_properties(Some(string_schema(
                &format!("^{HEADER_VALUE_CHARS}{{0,{MAX_HEADER_VALUE}}}$"),
                0,
                MAX_HEADER_VALUE,
                "A header value: no control characters.",
            )))
            .max_properties(Some(MAX_HEADERS))
            .description(Some("Custom headers sent with every delivery."))
            .into()
    }
}

impl ToSchema for Headers {
    fn name() -> std::borrow::Cow<'static, str> {
        "Headers".into()
    }
}

/// The patterns a target subscribes with: 1 to 100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<EventPattern>")]
pub struct Patterns(Vec<EventPattern>);

impl TryFrom<Vec<EventPattern>> for Patterns {
    type Error = Invalid;
    fn try_from(v: Vec<EventPattern>) -> Result<Patterns, Invalid> {
        if v.is_empty() || v.len() > MAX_PATTERNS {
            return Err(Invalid::new(format!(
                "must list 1 to {MAX_PATTERNS} patterns"
            )));
        }
        Ok(Patterns(v))
    }
}

impl Patterns {
    pub fn iter(&self) -> std::slice::Iter<'_, EventPattern> {
        self.0.iter()
    }

    pub fn as_slice(&self) -> &[EventPattern] {
        &self.0
    }
}

impl utoipa::PartialSchema for Patterns {
    fn schema() -> RefOr<Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(<EventPattern as utoipa::PartialSchema>::schema())
            .min_items(Some(1))
            .max_items(Some(MAX_PATTERNS))
            .description(Some(
                "Event types the target receives: exact names, `prefix.*`, or `*`.",
            ))
            .into()
    }
}

impl ToSchema for Patterns {
    fn name() -> std::borrow::Cow<'static, str> {
        "Patterns".into()
    }
}

/// Prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Base64 of any padding and trailing bits: secrets come from many generators.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// Standard Webhooks key bytes of a secret: `whsec_` then base64 of 16 to 64 bytes.
fn secret_key(text: &str) -> Option<Vec<u8>> {
    let b64 = text.strip_prefix(SECRET_PREFIX)?.trim_end_matches('=');
    let key = LENIENT_BASE64.decode(b64).ok()?;
    (16..=64).contains(&key.len()).then_some(key)
}

/// The pattern of [`secret_key`]'s texts: groups of four base64 characters and a tail of two or
/// three, decoding to 16 to 64 bytes, optionally padded.
const SIGNING_SECRET_PATTERN: &str = "^whsec_(?:(?:[A-Za-z0-9+/]{4}){5}[A-Za-z0-9+/]{2,3}|(?:[A-Za-z0-9+/]{4}){6,20}(?:[A-Za-z0-9+/]{2,3})?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/]{2})?)={0,2}$";

/// A target's signing secret, `whsec_<base64>` (Standard Webhooks).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SigningSecret(SecretText);

impl TryFrom<String> for SigningSecret {
    type Error = Invalid;
    fn try_from(text: String) -> Result<SigningSecret, Invalid> {
        SigningSecret::parse(&text)
    }
}

impl From<SigningSecret> for String {
    fn from(s: SigningSecret) -> String {
        s.0.expose().to_owned()
    }
}

impl SigningSecret {
    pub fn parse(text: &str) -> Result<SigningSecret, Invalid> {
        match secret_key(text) {
            Some(_) => Ok(SigningSecret(SecretText::new(text))),
            None => Err(Invalid::new(
                "must be `whsec_` followed by base64 of 16 to 64 bytes",
            )),
        }
    }

    /// A secret from 32 random bytes (`random` fills them).
    pub fn from_random(bytes: [u8; 32]) -> SigningSecret {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        SigningSecret(SecretText::new(format!("{SECRET_PREFIX}{b64}")))
    }

    /// The secret's text. Callers must not log it.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The HMAC key the secret stands for.
    pub fn key(&self) -> Vec<u8> {
        secret_key(self.0.expose()).unwrap_or_default()
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl utoipa::PartialSchema for SigningSecret {
    fn schema() -> RefOr<Schema> {
        string_schema(
            SIGNING_SECRET_PATTERN,
            28,
            6 + 88,
            "A Standard Webhooks secret: `whsec_` then base64 of 16 to 64 bytes.",
        )
    }
}

impl ToSchema for SigningSecret {
    fn name() -> std::borrow::Cow<'static, str> {
        "SigningSecret".into()
    }
}

/// The fields of a new target (or of a config-declared one).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub url: TargetUrl,
    pub events: Patterns,
    #[serde(default)]
    pub mode: Mode,
    /// The retry policy of a persistent target; without one, `dispatch.retry` applies.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub headers: Headers,
    #[serde(default)]
    pub auth: Option<TargetAuth>,
    /// A private CA, a client certificate (mTLS), a server name: how TLS to it is spoken.
    #[serde(default, deserialize_with = "super::patch::object")]
    pub tls: Option<super::target_tls::TargetTls>,
    /// Deliver one at a time, in order (needs `persistent` or `once`).
    #[serde(default)]
    pub ordered: bool,
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub active: bool,
    #[serde(default)]
    pub format: Format,
    /// A chosen signing secret; generated when absent.
    #[serde(default)]
    pub secret: Option<SigningSecret>,
    /// Which of the subscribed events it receives, by their content; all when absent.
    #[serde(default)]
    pub filter: Option<super::filter::TargetFilter>,
    /// A jq program that reshapes each delivery (or cancels it) before it is sent.
    #[serde(default)]
    pub transform: Option<super::transform::TargetTransform>,
    /// Gather events into batches, each sent as one request.
    #[serde(default)]
    pub batch: Option<TargetBatch>,
    /// Its own circuit-breaker settings; each absent field takes `[dispatch.breaker]`'s.
    #[serde(default, deserialize_with = "super::patch::object")]
    pub breaker: Option<BreakerOverride>,
    /// Deliveries per second across every dispatcher; over it they wait in the retry
    /// schedule without spending attempts.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Hours of failure before the gateway disables it; `[dispatch] disable_after_h` when
    /// absent.
    #[serde(default)]
    pub disable_after_h: Option<Hours>,
    /// Whether the gateway probes it once it disabled it for failing, and enables it again
    /// when it answers (default `true`).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub heal: bool,
    /// Deliveries in flight at once per dispatcher: `"adaptive"` (the default) or a number.
    #[serde(default)]
    pub concurrency: Concurrency,
}

/// How a target's events are gathered into batches: a batch is sent when it holds
/// `max_events`, or `max_wait_ms` after its first event, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetBatch {
    #[schema(value_type = u64, minimum = 1, maximum = 1000)]
    pub max_events: super::bounded::Bounded<1, 1000>,
    #[schema(value_type = u64, minimum = 0, maximum = 300000)]
    pub max_wait_ms: super::bounded::Bounded<0, 300_000>,
}

/// What a target's settings require of each other: an ordered target and a batched one wait
/// for their responses (persistent or once); a batch is sent as Estafeta's own JSON, so it
/// takes no chat format and no transformation.
pub fn check_combination(
    ordered: bool,
    mode: Mode,
    format: Format,
    transformed: bool,
    batch: Option<&TargetBatch>,
) -> Result<(), Invalid> {
    check_ordering(ordered, mode)?;
    if batch.is_some() {
        if mode == Mode::FireAndForget {
            return Err(Invalid::at(
                "batch",
                "needs a mode that waits for the response (persistent or once)",
            ));
        }
        if ordered {
            return Err(Invalid::at(
                "batch",
                "cannot be combined with ordered (a batch keeps its events' order)",
            ));
        }
        if format != Format::Raw {
            return Err(Invalid::at(
                "batch",
                "cannot be combined with a chat format: a batch is sent as {\"events\": [...]}",
            ));
        }
        if transformed {
            return Err(Invalid::at(
                "batch",
                "cannot be combined with a transformation: a batch is sent as {\"events\": [...]}",
            ));
        }
    }
    Ok(())
}

fn yes() -> bool {
    true
}

impl TargetSpec {
    /// The rules between fields, and the deployment's: `allow_private` lets the URL point at
    /// private addresses.
    pub fn validate(&self, allow_private: bool) -> Result<(), Invalid> {
        self.url
            .check_reachable(allow_private)
            .map_err(|p| p.invalid().within("url"))?;
        check_combination(
            self.ordered,
            self.mode,
            self.format,
            self.transform.is_some(),
            self.batch.as_ref(),
        )?;
        check_pacing(self.mode, self.breaker.as_ref(), self.rate_limit.as_ref())?;
        check_security(
            &self.url,
            self.auth.as_ref(),
            self.tls.as_ref(),
            allow_private,
        )
    }
}

/// What a target's auth and TLS require: an OAuth2 token endpoint the SSRF guard allows,
/// and an https URL for TLS settings to apply to.
pub fn check_security(
    url: &TargetUrl,
    auth: Option<&TargetAuth>,
    tls: Option<&super::target_tls::TargetTls>,
    allow_private: bool,
) -> Result<(), Invalid> {
    if let Some(a) = auth {
        a.check_reachable(allow_private)
            .map_err(|e| e.within("auth"))?;
    }
    if tls.is_some() && !url.is_https() {
        return Err(Invalid::at(
            "tls",
            "applies to https URLs only, and the url is http",
        ));
    }
    Ok(())
}

/// A breaker's own rule, and a rate limit's need for a retry schedule: a fire-and-forget
/// target has none to wait in.
pub fn check_pacing(
    mode: Mode,
    breaker: Option<&BreakerOverride>,
    rate_limit: Option<&RateLimit>,
) -> Result<(), Invalid> {
    if let Some(b) = breaker {
        b.check().map_err(|e| e.within("breaker"))?;
    }
    if rate_limit.is_some() && mode == Mode::FireAndForget {
        return Err(Invalid::at(
            "rate_limit",
            "needs a mode that waits for the response (persistent or once): a delivery over the limit waits in the retry schedule",
        ));
    }
    Ok(())
}

/// An ordered target needs a mode that waits for the response.
pub fn check_ordering(ordered: bool, mode: Mode) -> Result<(), Invalid> {
    if ordered && mode == Mode::FireAndForget {
        return Err(Invalid::at(
            "ordered",
            "needs a mode that waits for the response (persistent or once)",
        ));
    }
    Ok(())
}

/// A change to a target: absent fields stay as they are; `null` removes `retry` or `auth`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetPatch {
    #[serde(default)]
    pub url: Option<TargetUrl>,
    #[serde(default)]
    pub events: Option<Patterns>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default, deserialize_with = "super::patch::present")]
    pub retry: Option<Option<RetryPolicy>>,
    #[serde(default)]
    pub headers: Option<Headers>,
    #[serde(default, deserialize_with = "super::patch::present")]
    pub auth: Option<Option<TargetAuth>>,
    /// Replaces the TLS settings whole (the key is never shown, so give it again); `null`
    /// removes them.
    #[serde(default, deserialize_with = "super::patch::present_object")]
    pub tls: Option<Option<super::target_tls::TargetTls>>,
    #[serde(default)]
    pub ordered: Option<bool>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub format: Option<Format>,
    /// `null` removes the filter.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub filter: Option<Option<super::filter::TargetFilter>>,
    /// `null` removes the transformation (its earlier versions stay listed).
    #[serde(default, deserialize_with = "super::patch::present")]
    pub transform: Option<Option<super::transform::TargetTransform>>,
    /// `null` stops batching: events gathered so far still go in a last batch.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub batch: Option<Option<TargetBatch>>,
    /// `null`: the deployment's breaker settings.
    #[serde(default, deserialize_with = "super::patch::present_object")]
    pub breaker: Option<Option<BreakerOverride>>,
    /// `null` removes the rate limit.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// `null`: the deployment's `disable_after_h`.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub disable_after_h: Option<Option<Hours>>,
    #[serde(default)]
    pub heal: Option<bool>,
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec, or the refusal with the path of the field at fault (as the API reads it).
    fn spec(json: serde_json::Value) -> Result<TargetSpec, String> {
        serde_path_to_error::deserialize(json).map_err(|e| e.to_string())
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        let ok =
            spec(serde_json::json!({"url": "https://example.com/hook", "events": ["order.*"]}));
        assert!(
            ok.as_ref().is_ok_and(|s| s.validate(false).is_ok()),
            "{ok:?}"
        );
        let refused = |json: serde_json::Value, what: &str| {
            let e = spec(json).err().unwrap_or_default();
            assert!(e.contains(what), "{e}");
        };
        refused(
            serde_json::json!({"url": "ftp://x/", "events": ["*"]}),
            "http or https",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": []}),
            "1 to 100",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["a*b"]}),
            "prefix.*",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["*"], "headers": {"Webhook-Id": "x"}}),
            "set by the gateway",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["*"], "headers": {"X-Ok": "a\nb"}}),
            "control",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["*"], "secret": "nope"}),
            "whsec_",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["*"], "auth": {"bearer": ""}}),
            "bearer",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["*"], "retry": {"initial_delay_ms": 18446744073709551615u64, "multiplier": 1.0, "max_delay_ms": 18446744073709551615u64}}),
            "retry.initial_delay_ms",
        );
        refused(
            serde_json::json!({"url": "https://x/", "events": ["*"], "retry": {"multiplier": 1e308}}),
            "retry.multiplier",
        );
        let private = spec(serde_json::json!({"url": "http://10.0.0.1/x", "events": ["*"]}));
        assert!(
            private
                .as_ref()
                .is_ok_and(|s| s.validate(false).is_err() && s.validate(true).is_ok())
        );
        let f = spec(
            serde_json::json!({"url": "https://x/", "events": ["*"], "ordered": true, "mode": "fire_and_forget"}),
        );
        assert!(f.is_ok_and(|s| s.validate(true).is_err()));
    }

    #[test]
    fn an_oauth2_token_endpoint_is_https_and_public_unless_private_targets_are_allowed() {
        let spec_with = |token_url: &str| {
            spec(serde_json::json!({"url": "https://example.com/hook", "events": ["*"],
                "auth": {"oauth2": {"token_url": token_url, "client_id": "c", "client_secret": "s"}}}))
            .unwrap()
        };
        let ok = spec_with("https://auth.example.com/token");
        assert!(ok.validate(false).is_ok());
        assert!(
            matches!(&ok.auth, Some(TargetAuth::OAuth2(o)) if o.method == super::super::auth::ClientAuthMethod::ClientSecretBasic)
        );
        let e = spec_with("http://auth.example.com/token")
            .validate(false)
            .unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("auth.oauth2.token_url", "must use https")
        );
        let e = spec_with("https://10.0.0.1/token")
            .validate(false)
            .unwrap_err();
        assert_eq!(e.path, "auth.oauth2.token_url");
        assert!(e.message.contains("private"), "{e}");
        assert!(spec_with("http://127.0.0.1:9/token").validate(true).is_ok());
        // Its credentials follow the rules of every credential; the secret is masked in views.
        let refused = spec(serde_json::json!({"url": "https://x/", "events": ["*"],
            "auth": {"oauth2": {"token_url": "https://a/", "client_id": "c\n", "client_secret": "s"}}}));
        assert!(refused.unwrap_err().contains("oauth2.client_id"));
        let view = serde_json::to_value(ok.auth.unwrap().redacted()).unwrap();
        assert_eq!(view["oauth2"]["client_secret"], "***");
        assert_eq!(view["oauth2"]["method"], "client_secret_basic");
    }

    #[test]
    fn auth_json_shapes() {
        let a: Result<TargetAuth, _> =
            serde_json::from_str(r#"{"basic": {"username": "u", "password": "p"}}"#);
        assert!(matches!(&a, Ok(TargetAuth::Basic { username, .. }) if username == "u"));
        assert_eq!(
            a.ok().map(|a| a.redacted()),
            Some(TargetAuthView::Basic {
                username: "u".into(),
                password: "***".into()
            })
        );
        assert!(
            serde_json::from_str::<TargetAuth>(r#"{"header": {"name": "X-Key", "value": "v"}}"#)
                .is_ok()
        );
        assert!(
            serde_json::from_str::<TargetAuth>(r#"{"header": {"name": "Host", "value": "v"}}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<TargetAuth>(r#"{"digest": "x"}"#).is_err());
    }

    #[test]
    fn secrets_parse_leniently_and_hold_16_to_64_bytes() {
        let s = SigningSecret::from_random([7; 32]);
        assert!(SigningSecret::parse(s.expose()).is_ok());
        assert_eq!(s.key(), vec![7; 32]);
        assert!(SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(SigningSecret::parse("whsec_!!").is_err());
        assert!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(15))).is_err());
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(16))).is_ok());
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(64))).is_ok());
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(65))).is_err());
        assert!(SigningSecret::parse(&format!("whsec_{}", b64(16).trim_end_matches('='))).is_ok());
    }

    #[test]
    fn retry_ceiling_grows_then_caps() {
        let p = RetryPolicy::try_new(1000, 2.0, 10_000, 10);
        let ms: Vec<u64> = (2..8)
            .map(|a| p.as_ref().map(|p| p.ceiling_ms(a)).unwrap_or(0))
            .collect();
        assert_eq!(ms, vec![1000, 2000, 4000, 8000, 10_000, 10_000]);
        let huge = RetryPolicy::try_new(MAX_DELAY_MS, MAX_MULTIPLIER, MAX_DELAY_MS, 100);
        assert_eq!(huge.map(|p| p.ceiling_ms(100)), Ok(MAX_DELAY_MS));
        // A cap below the first delay caps the first delay too.
        assert_eq!(
            RetryPolicy::try_new(5000, 2.0, 1000, 3).map(|p| p.ceiling_ms(2)),
            Ok(1000)
        );
    }
}
