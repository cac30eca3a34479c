//! The domain model: ids, the specs and patches of every resource, and the rules their values
//! follow. A leaf module: it imports nothing of the crate, so the config file, the store and
//! the HTTP API share one definition of what a valid tenant, target, source or monitor is.
//!
//! Values are checked where they are made: an id, an event type, a rate limit or a retry
//! policy that exists is valid, whether it came from a request body, the config file or Redis
//! (a stored value that breaks a rule is refused when read, never turned into a panic later).
//! Rules that tie fields together, or that depend on the deployment (the SSRF guard), are
//! checked by a spec's `validate`. Every refusal is an [`Invalid`] naming the field at fault.
//!
//! - [`bounded`]: whole numbers whose bounds are part of their type;
//! - [`ids`]: id newtypes (`TenantId`, `TargetId`, `EventId`, …) and their generator;
//! - [`event_type`]: event types and the pattern grammar targets subscribe with;
//! - [`text`]: display names, external ids, header names and values;
//! - [`tenant`]: rate limits, tenant specs and patches;
//! - [`target`]: targets (URL rules, delivery modes, auth, formats, retry policies, secrets);
//! - [`source`]: inbound sources (verification schemes, event-type rules, silence watches);
//! - [`monitor`]: passive monitors, watch windows and statuses;
//! - [`secret`]: secret strings that never print;
//! - [`time`]: the clock and RFC 3339 formatting.

pub mod bounded;
pub mod event_type;
pub mod ids;
pub mod monitor;
pub mod secret;
pub mod source;
pub mod target;
pub mod tenant;
pub mod text;
pub mod time;

pub use bounded::Bounded;
pub use event_type::{EventPattern, EventType};
pub use ids::{
    DeadLetterId, EventId, IncidentId, MonitorId, SourceId, TargetId, TenantId, TokenId,
};
pub use monitor::{MonitorPatch, MonitorSpec, Status, WatchKind, WatchWindow};
pub use secret::SecretText;
pub use source::{EventTypeRule, Scheme, SilenceWatch, SourceSpec, VerifySpec};
pub use target::{
    Format, Headers, Mode, Patterns, RetryPolicy, SigningSecret, TargetAuth, TargetPatch,
    TargetSpec, TargetUrl,
};
pub use tenant::{RateLimit, TenantPatch, TenantSpec};
pub use text::{ExternalId, Name};

/// Who made a record: the API, or the config file (applied at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    #[default]
    Api,
    Config,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Config => "config",
        }
    }

    /// Reads a stored origin; anything unknown was made by the API.
    pub fn parse(text: &str) -> Origin {
        if text == "config" { Origin::Config } else { Origin::Api }
    }
}

/// A value that breaks a rule, with the path of the field at fault (`retry.max_attempts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted path of the field, empty for the value as a whole.
    pub path: String,
    /// What the rule is, as a sentence fragment ("must be between 1 and 100").
    pub message: String,
}

impl Invalid {
    /// A refusal of the value as a whole.
    pub fn new(message: impl Into<String>) -> Invalid {
        Invalid {
            path: String::new(),
            message: message.into(),
        }
    }

    /// A refusal of the field at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same refusal, seen from the value that holds this one in its field `parent`.
    pub fn within(self, parent: &str) -> Invalid {
        let path = match (parent.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => parent.to_owned(),
            (false, false) if self.path.starts_with('[') => format!("{parent}{}", self.path),
            (false, false) => format!("{parent}.{}", self.path),
        };
        Invalid { path, ..self }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} {}", self.path, self.message)
        }
    }
}

impl std::error::Error for Invalid {}

/// Tells an explicit `null` (`Some(None)`: remove) from an absent field (`None`: keep), for
/// patches; use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Checks `value` against the inclusive `range`, naming `field` in the refusal.
pub(crate) fn in_range<T>(field: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<T, Invalid>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::at(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest() {
        let e = Invalid::at("max_attempts", "must be between 1 and 100").within("retry");
        assert_eq!(e.path, "retry.max_attempts");
        assert_eq!(e.to_string(), "retry.max_attempts must be between 1 and 100");
        assert_eq!(Invalid::at("[2]", "x").within("events").path, "events[2]");
        assert_eq!(Invalid::new("bad").within("url").to_string(), "url bad");
        assert!(in_range("n", 5u32, 1..=4).is_err());
        assert_eq!(in_range("n", 4u32, 1..=4), Ok(4));
    }
}
