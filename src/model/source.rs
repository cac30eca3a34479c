//! Inbound sources: an external platform that can only be given a URL, how its requests are
//! signed, where their event type comes from, and an optional silence watch.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounded::Bounded;
use super::event_type::EventType;
use super::invalid::Invalid;
use super::monitor::{DEFAULT_GRACE, Every, Grace, WatchWindow};
use super::schema::{nullable, string_schema};
use super::secret::SecretText;
use super::text::{HEADER_NAME_PATTERN, check_header_name};

/// Longest sender secret.
pub const MAX_SECRET: usize = 1024;
/// Longest accepted distance of a signed timestamp from now, in seconds.
pub const MAX_TOLERANCE_S: u64 = 86_400;

/// Seconds a signed timestamp may be from now.
pub type Tolerance = Bounded<1, MAX_TOLERANCE_S>;

/// How a source's sender signs its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`; secret `whsec_…`.
    StandardWebhooks,
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// `Stripe-Signature: t=<ts>,v1=<hex>`.
    Stripe,
    /// `<header>: <hex HMAC-SHA256 of the body>` (default header `X-Webhook-Signature`).
    HmacSha256Hex,
    /// No signature: the URL token alone authenticates.
    None,
}

impl Scheme {
    /// As the API writes it (`standard_webhooks`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::Github => "github",
            Scheme::Stripe => "stripe",
            Scheme::HmacSha256Hex => "hmac_sha256_hex",
            Scheme::None => "none",
        }
    }
}

/// Where a source's event type comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EventTypeRule {
    /// A request header (e.g. `X-GitHub-Event`).
    Header(String),
    /// A JSON pointer into the body (e.g. `/type`).
    JsonPointer(String),
    /// Always this type.
    Fixed(EventType),
}

impl EventTypeRule {
    /// Where the type comes from, in words (`the header X-GitHub-Event`).
    pub fn describe(&self) -> String {
        match self {
            EventTypeRule::Header(h) => format!("the header {h}"),
            EventTypeRule::JsonPointer(p) => format!("the body at {p}"),
            EventTypeRule::Fixed(t) => format!("always {t}"),
        }
    }

    fn validate(&self) -> Result<(), Invalid> {
        match self {
            EventTypeRule::Header(h) => check_header_name(h).map_err(|e| e.within("header")),
            EventTypeRule::JsonPointer(p) if p.is_empty() || p.starts_with('/') => {
                if p.chars().count() > 1024 {
                    return Err(Invalid::at(
                        "json_pointer",
                        "must be at most 1024 characters",
                    ));
                }
                Ok(())
            }
            EventTypeRule::JsonPointer(p) => Err(Invalid::at(
                "json_pointer",
                format!("{p:?} must start with `/`"),
            )),
            EventTypeRule::Fixed(_) => Ok(()),
        }
    }
}

impl utoipa::PartialSchema for EventTypeRule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder};
        let one = |key: &str, inner| {
            ObjectBuilder::new()
                .property(key, inner)
                .required(key)
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
        };
        OneOfBuilder::new()
            .item(one(
                "header",
                string_schema(HEADER_NAME_PATTERN, 1, 256, "A request header."),
            ))
            .item(one(
                "json_pointer",
                string_schema("^(/.*)?$", 0, 1024, "A JSON pointer into the body."),
            ))
            .item(one("fixed", <EventType as utoipa::PartialSchema>::schema()))
            .description(Some(
                "Where the event type of an inbound request comes from.",
            ))
            .into()
    }
}

impl ToSchema for EventTypeRule {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventTypeRule".into()
    }
}

/// How a source's requests are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    pub scheme: Scheme,
    /// The sender's secret; required unless the scheme is `none`.
    #[serde(default)]
    pub secret: Option<SecretText>,
    /// The signature header of `hmac_sha256_hex`.
    #[serde(default)]
    pub header: Option<String>,
    /// Seconds a timestamped signature may be from now (default 300).
    #[serde(default)]
    pub tolerance_s: Option<Tolerance>,
}

/// The texts [`standard_webhooks_key`] reads: base64 of at least one byte, any padding, with
/// or without the `whsec_` prefix.
const STANDARD_WEBHOOKS_SECRET: &str =
    "^(whsec_)?(?:(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2,3})?|[A-Za-z0-9+/]{2,3})={0,2}$";

impl utoipa::PartialSchema for VerifySpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        // One shape per kind of scheme, so the schema says what the server checks: which
        // schemes need a secret, and what a Standard Webhooks secret looks like.
        let shape = |schemes: &[&str], secret: Option<(&str, &str)>| {
            let mut b = ObjectBuilder::new()
                .property(
                    "scheme",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(schemes.iter().copied())),
                )
                .required("scheme")
                .property(
                    "header",
                    nullable(string_schema(HEADER_NAME_PATTERN, 1, 256, "The signature header of `hmac_sha256_hex` (default `X-Webhook-Signature`).")),
                )
                .property("tolerance_s", nullable(<Tolerance as utoipa::PartialSchema>::schema()))
                .additional_properties(Some(AdditionalProperties::FreeForm(false)));
            b = match secret {
                Some((pattern, description)) => b
                    .property("secret", string_schema(pattern, 1, MAX_SECRET, description))
                    .required("secret"),
                None => b.property(
                    "secret",
                    nullable(string_schema(
                        "^[\\s\\S]*$",
                        0,
                        MAX_SECRET,
                        "Ignored by `none`.",
                    )),
                ),
            };
            b
        };
        OneOfBuilder::new()
            .item(shape(&["none"], None))
            .item(shape(
                &["standard_webhooks"],
                Some((
                    STANDARD_WEBHOOKS_SECRET,
                    "The sender's `whsec_…` secret (base64).",
                )),
            ))
            .item(shape(
                &["github", "stripe", "hmac_sha256_hex"],
                Some(("^[\\s\\S]+$", "The sender's secret.")),
            ))
            .description(Some("How the sender's requests are verified."))
            .into()
    }
}

impl ToSchema for VerifySpec {
    fn name() -> std::borrow::Cow<'static, str> {
        "VerifySpec".into()
    }
}

/// The key bytes of a `standard_webhooks` secret: base64, `whsec_` prefix optional.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key = engine.decode(b64.trim_end_matches('=')).ok()?;
    (!key.is_empty()).then_some(key)
}

impl VerifySpec {
    fn validate(&self) -> Result<(), Invalid> {
        let secret = self
            .secret
            .as_ref()
            .map(SecretText::expose)
            .unwrap_or_default();
        if secret.chars().count() > MAX_SECRET {
            return Err(Invalid::at(
                "secret",
                format!("must be at most {MAX_SECRET} characters"),
            ));
        }
        match self.scheme {
            Scheme::None => {}
            _ if secret.is_empty() => {
                return Err(Invalid::at(
                    "secret",
                    "is required (or choose scheme `none` explicitly)",
                ));
            }
            Scheme::StandardWebhooks if standard_webhooks_key(secret).is_none() => {
                return Err(Invalid::at(
                    "secret",
                    "a standard_webhooks secret must be `whsec_<base64>`",
                ));
            }
            _ => {}
        }
        if let Some(h) = &self.header {
            check_header_name(h).map_err(|e| e.within("header"))?;
        }
        Ok(())
    }
}

/// A new source, as the API takes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: super::text::Name,
    pub verify: VerifySpec,
    pub event_type: EventTypeRule,
    /// Silence watch: an incident and a `source.silent` alert when no event arrives within
    /// this many seconds plus `grace_s`.
    #[serde(default)]
    #[schema(inline)]
    pub expect_every_s: Option<Every>,
    /// Grace of the silence watch (default 60); needs `expect_every_s`.
    #[serde(default)]
    #[schema(inline)]
    pub grace_s: Option<Grace>,
}

impl SourceSpec {
    /// The rules between fields.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.event_type
            .validate()
            .map_err(|e| e.within("event_type"))?;
        self.verify.validate().map_err(|e| e.within("verify"))?;
        if self.expect_every_s.is_none() && self.grace_s.is_some() {
            return Err(Invalid::at(
                "grace_s",
                "applies to the silence watch: set expect_every_s too",
            ));
        }
        Ok(())
    }

    /// The silence watch the spec asks for, if any.
    pub fn watch(&self) -> Option<SilenceWatch> {
        self.expect_every_s.map(|every| SilenceWatch {
            expect_every_s: every,
            grace_s: self.grace_s.unwrap_or(DEFAULT_GRACE),
        })
    }
}

/// A source's silence watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceWatch {
    pub expect_every_s: Every,
    pub grace_s: Grace,
}

impl SilenceWatch {
    pub fn window(&self) -> WatchWindow {
        WatchWindow {
            every: self.expect_every_s,
            grace: self.grace_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<SourceSpec, String> {
        let s: SourceSpec = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn specs_are_checked() {
        let base = r#""name": "gh", "event_type": {"header": "X-GitHub-Event"}"#;
        assert!(
            spec(&format!(
                r#"{{{base}, "verify": {{"scheme": "github", "secret": "s"}}}}"#
            ))
            .is_ok()
        );
        assert!(spec(&format!(r#"{{{base}, "verify": {{"scheme": "none"}}}}"#)).is_ok());
        let e = spec(&format!(r#"{{{base}, "verify": {{"scheme": "github"}}}}"#));
        assert!(e.is_err_and(|e| e.contains("verify.secret")));
        let e = spec(&format!(
            r#"{{{base}, "verify": {{"scheme": "standard_webhooks", "secret": "!!"}}}}"#
        ));
        assert!(e.is_err_and(|e| e.contains("whsec_")));
        let e = spec(&format!(
            r#"{{{base}, "verify": {{"scheme": "none"}}, "grace_s": 5}}"#
        ));
        assert!(e.is_err_and(|e| e.contains("expect_every_s")));
        let e = spec(
            r#"{"name": "x", "verify": {"scheme": "none"}, "event_type": {"json_pointer": "type"}}"#,
        );
        assert!(e.is_err_and(|e| e.contains("json_pointer")));
        let e =
            spec(r#"{"name": "x", "verify": {"scheme": "none"}, "event_type": {"fixed": "a b"}}"#);
        assert!(e.is_err());
        assert!(
            spec(&format!(
                r#"{{{base}, "verify": {{"scheme": "none", "tolerance_s": 0}}}}"#
            ))
            .is_err()
        );
    }
}
