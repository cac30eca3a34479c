//! Tenants: their rate limit, and what creating or changing one takes.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounded::Bounded;
use super::event_meta::MAX_KEPT;
use super::invalid::{Invalid, in_range};
use super::text::{ExternalId, MAX_HEADER_NAME, Name, check_header_name};

/// A token-bucket (GCRA) rate limit. Only [`RateLimit::try_new`] makes one, so every limit in
/// the process, including one read back from Redis, has a rate and a burst within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "RateLimitFields", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second (may be fractional: 0.5 is one every two seconds).
    #[schema(minimum = 0.001, maximum = 1000000.0)]
    per_second: f64,
    /// Requests allowed at once above the sustained rate; defaults to one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    burst: Option<u32>,
}

/// The fields of a [`RateLimit`] as they arrive. Each is checked as it is read, so a refusal
/// names the field's whole path (`rate_limit.per_second`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFields {
    #[serde(deserialize_with = "per_second")]
    per_second: f64,
    #[serde(default)]
    burst: Option<Bounded<1, { RateLimit::MAX_BURST as u64 }>>,
}

fn per_second<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = f64::deserialize(d)?;
    RateLimit::check_per_second(v).map_err(serde::de::Error::custom)
}

impl TryFrom<RateLimitFields> for RateLimit {
    type Error = Invalid;
    fn try_from(f: RateLimitFields) -> Result<RateLimit, Invalid> {
        let burst = f
            .burst
            .map(|b| b.get().min(u64::from(RateLimit::MAX_BURST)) as u32);
        RateLimit::try_new(f.per_second, burst)
    }
}

impl RateLimit {
    /// Slowest sustained rate: one request every 1000 s.
    pub const MIN_PER_SECOND: f64 = 0.001;
    /// Fastest sustained rate.
    pub const MAX_PER_SECOND: f64 = 1_000_000.0;
    /// Largest burst.
    pub const MAX_BURST: u32 = 1_000_000;

    /// A limit of `per_second` with `burst`, if both are within bounds (NaN is not).
    pub fn try_new(per_second: f64, burst: Option<u32>) -> Result<RateLimit, Invalid> {
        Self::check_per_second(per_second).map_err(|e| e.within("per_second"))?;
        if let Some(b) = burst {
            in_range("burst", b, 1..=Self::MAX_BURST)?;
        }
        Ok(RateLimit { per_second, burst })
    }

    fn check_per_second(per_second: f64) -> Result<f64, Invalid> {
        if (Self::MIN_PER_SECOND..=Self::MAX_PER_SECOND).contains(&per_second) {
            Ok(per_second)
        } else {
            Err(Invalid::new(format!(
                "must be a number from {} to {}",
                Self::MIN_PER_SECOND,
                Self::MAX_PER_SECOND
            )))
        }
    }

    /// A limit read back from a record written under older rules: brought within bounds
    /// (a rate that is not a number becomes the slowest) instead of refused, so one old
    /// record cannot stop its tenant's requests.
    pub fn clamped(per_second: f64, burst: Option<u32>) -> RateLimit {
        let per_second = if per_second.is_nan() {
            Self::MIN_PER_SECOND
        } else {
            per_second.clamp(Self::MIN_PER_SECOND, Self::MAX_PER_SECOND)
        };
        RateLimit {
            per_second,
            burst: burst.map(|b| b.clamp(1, Self::MAX_BURST)),
        }
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> Option<u32> {
        self.burst
    }

    /// The burst actually applied: the configured one, else one second's worth (at least 1).
    pub fn effective_burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| (self.per_second.ceil() as u32).clamp(1, Self::MAX_BURST))
    }

    /// The time between two cells of the bucket: `1 / per_second`, between 1 µs and 1000 s.
    pub fn period(&self) -> std::time::Duration {
        // The bounds above keep this finite and non-zero; `try_from_secs_f64` keeps a panic
        // out of reach even so.
        std::time::Duration::try_from_secs_f64(1.0 / self.per_second)
            .unwrap_or(std::time::Duration::from_secs(1))
            .max(std::time::Duration::from_micros(1))
    }
}

/// How ingest holds a tenant's events to its event catalogue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatalogueMode {
    /// Any event type, any body (the default: nothing changes for a tenant without a catalogue).
    #[default]
    Off,
    /// Accepted, but a type the catalogue does not know or a body failing its schema is noted
    /// on the event (`schema_errors`) and counted.
    Warn,
    /// Refused: an unknown or archived type is `422 unknown_event_type`, a body failing its
    /// schema `422 schema_mismatch`.
    Enforce,
}

impl CatalogueMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CatalogueMode::Off => "off",
            CatalogueMode::Warn => "warn",
            CatalogueMode::Enforce => "enforce",
        }
    }

    /// The mode as stored; anything unknown reads as `off`, so a record written by a later
    /// version never refuses events here.
    pub fn stored(text: &str) -> CatalogueMode {
        match text {
            "warn" => CatalogueMode::Warn,
            "enforce" => CatalogueMode::Enforce,
            _ => CatalogueMode::Off,
        }
    }
}

/// Request headers that are never kept: they carry credentials.
const NEVER_KEPT: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// The ingest request headers a tenant keeps with each event, for filters, transformations
/// and views: at most 20 names, kept lowercase and once each, never a credential header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct KeepHeaders(Vec<String>);

impl TryFrom<Vec<String>> for KeepHeaders {
    type Error = Invalid;
    fn try_from(names: Vec<String>) -> Result<KeepHeaders, Invalid> {
        if names.len() > MAX_KEPT {
            return Err(Invalid::new(format!(
                "must name at most {MAX_KEPT} headers"
            )));
        }
        let mut kept: Vec<String> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            check_header_name(name).map_err(|e| e.within(&format!("[{i}]")))?;
            let lower = name.to_ascii_lowercase();
            if NEVER_KEPT.contains(&lower.as_str()) {
                return Err(Invalid::at(
                    format!("[{i}]"),
                    format!("{name:?} carries credentials and is never kept"),
                ));
            }
            if !kept.contains(&lower) {
                kept.push(lower);
            }
        }
        Ok(KeepHeaders(kept))
    }
}

impl From<KeepHeaders> for Vec<String> {
    fn from(k: KeepHeaders) -> Vec<String> {
        k.0
    }
}

impl KeepHeaders {
    /// The names, lowercase.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form: names separated by newlines.
    pub fn to_stored(&self) -> String {
        self.0.join("\n")
    }

    /// Reads the stored form; names that break today's rules are left out rather than refused,
    /// so one old record cannot stop its tenant's events.
    pub fn stored(text: &str) -> KeepHeaders {
        let mut kept: Vec<String> = Vec::new();
        for name in text.split('\n') {
            let lower = name.to_ascii_lowercase();
            if check_header_name(name).is_ok()
                && !NEVER_KEPT.contains(&lower.as_str())
                && !kept.contains(&lower)
                && kept.len() < MAX_KEPT
            {
                kept.push(lower);
            }
        }
        KeepHeaders(kept)
    }
}

impl utoipa::PartialSchema for KeepHeaders {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        ArrayBuilder::new()
            .items(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(super::text::HEADER_NAME_PATTERN))
                    .min_length(Some(1))
                    .max_length(Some(MAX_HEADER_NAME)),
            )
            .max_items(Some(MAX_KEPT))
            .description(Some(
                "Ingest request headers kept with each event (case-insensitive names; never \
                 Authorization, Proxy-Authorization or Cookie).",
            ))
            .into()
    }
}

impl ToSchema for KeepHeaders {
    fn name() -> std::borrow::Cow<'static, str> {
        "KeepHeaders".into()
    }
}

/// A new tenant, as the admin API and the config file give it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub name: Name,
    /// The tenant's id in the operator's own systems; unique across tenants.
    #[serde(default)]
    pub external_id: Option<ExternalId>,
    /// The tenant's own rate limit; without one, `edge.default_rate_limit` applies.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Whether the tenant may send events (default `true`).
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub active: bool,
    /// How ingest holds events to the tenant's event catalogue (default `off`).
    #[serde(default)]
    pub catalogue: CatalogueMode,
    /// Ingest request headers kept with each event.
    #[serde(default)]
    pub keep_headers: KeepHeaders,
}

fn yes() -> bool {
    true
}

/// A change to a tenant: absent fields stay as they are; `null` removes an optional field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    pub active: Option<bool>,
    /// `null` removes the tenant's own limit.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub rate_limit: Option<Option<RateLimit>>,
    /// `null` removes the external id.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub external_id: Option<Option<ExternalId>>,
    #[serde(default)]
    pub catalogue: Option<CatalogueMode>,
    #[serde(default)]
    pub keep_headers: Option<KeepHeaders>,
}

impl TenantPatch {
    /// Whether the change can narrow what the tenant may do (disable, a new limit): such a
    /// change must reach every instance's cache at once.
    pub fn narrows_access(&self) -> bool {
        self.active.is_some() || self.rate_limit.is_some()
    }

    /// Whether the change alters what ingest does with the tenant's events (its catalogue
    /// mode, the headers it keeps): every instance's cache must see it within a second too.
    pub fn changes_ingest(&self) -> bool {
        self.narrows_access() || self.catalogue.is_some() || self.keep_headers.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.active.is_none()
            && self.rate_limit.is_none()
            && self.external_id.is_none()
            && self.catalogue.is_none()
            && self.keep_headers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_bounded() {
        assert!(RateLimit::try_new(1e-12, Some(1)).is_err());
        assert!(RateLimit::try_new(0.0, None).is_err());
        assert!(RateLimit::try_new(f64::NAN, None).is_err());
        assert!(RateLimit::try_new(f64::INFINITY, None).is_err());
        assert!(RateLimit::try_new(2e6, None).is_err());
        assert!(RateLimit::try_new(1.0, Some(0)).is_err());
        let l = RateLimit::try_new(2.5, None);
        assert_eq!(l.map(|l| l.effective_burst()), Ok(3));
        let slow = RateLimit::try_new(0.001, None);
        assert_eq!(
            slow.map(|l| (l.effective_burst(), l.period().as_secs())),
            Ok((1, 1000))
        );
        assert_eq!(
            RateLimit::clamped(1e-12, Some(0)),
            RateLimit {
                per_second: 0.001,
                burst: Some(1)
            }
        );
        assert_eq!(RateLimit::clamped(f64::NAN, None).per_second(), 0.001);
        let fast = RateLimit::try_new(1e6, None);
        assert_eq!(fast.map(|l| l.period().as_micros()), Ok(1));
    }

    #[test]
    fn kept_headers_are_checked_and_normalised() {
        let k: Result<KeepHeaders, _> =
            serde_json::from_str(r#"["X-GitHub-Event", "x-github-event", "X-Req"]"#);
        assert_eq!(
            k.as_ref().map(|k| k.names().to_vec()).ok(),
            Some(vec!["x-github-event".to_owned(), "x-req".to_owned()])
        );
        let err = |json: &str| {
            serde_path_to_error::deserialize::<_, KeepHeaders>(
                &mut serde_json::Deserializer::from_str(json),
            )
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(err(r#"["Authorization"]"#).contains("credentials"));
        assert!(err(r#"["bad name"]"#).contains("not a valid HTTP header name"));
        let many: Vec<String> = (0..21).map(|i| format!("x-{i}")).collect();
        assert!(err(&serde_json::to_string(&many).unwrap_or_default()).contains("at most 20"));
        let stored = KeepHeaders::stored("x-a\ncookie\nbad name\nX-A\nx-b");
        assert_eq!(stored.names(), ["x-a", "x-b"]);
        assert_eq!(KeepHeaders::stored(&stored.to_stored()), stored);
        assert_eq!(KeepHeaders::stored("").names().len(), 0);
        assert_eq!(CatalogueMode::stored("later"), CatalogueMode::Off);
    }

    #[test]
    fn rate_limits_deserialize_only_within_bounds() {
        let bad = serde_json::from_str::<RateLimit>(r#"{"per_second":1e-12,"burst":1}"#);
        assert!(bad.is_err());
        assert!(serde_json::from_str::<RateLimit>(r#"{"per_second":1,"x":1}"#).is_err());
        let ok = serde_json::from_str::<RateLimit>(r#"{"per_second":0.5}"#);
        assert_eq!(ok.ok().map(|l| l.per_second()), Some(0.5));
    }
}
