//! Event types and the patterns targets subscribe with.
//!
//! An event type is `[A-Za-z0-9_.-]{1,128}` (`order.paid`). A pattern is an exact event type,
//! a prefix wildcard `prefix.*` (every type that starts with `prefix.`, at any depth) or `*`
//! (everything).

use std::fmt;

use super::invalid::Invalid;
use super::schema::string_schema;

/// Longest event type.
pub const MAX_LEN: usize = 128;
/// The event-type grammar, as a JSON Schema pattern.
pub const PATTERN: &str = "^[A-Za-z0-9_.-]{1,128}$";
/// The pattern grammar, as a JSON Schema pattern.
pub const PATTERN_PATTERN: &str = r"^(\*|[A-Za-z0-9_.-]{1,128}|[A-Za-z0-9_.-]{1,128}\.\*)$";

/// Whether `t` is a valid event type.
pub fn is_valid(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A valid event type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    pub fn parse(text: &str) -> Result<EventType, Invalid> {
        if is_valid(text) {
            Ok(EventType(text.to_owned()))
        } else {
            Err(Invalid::new(format!(
                "must be 1 to {MAX_LEN} of A-Z a-z 0-9 _ . -"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventType({})", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventType, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventType::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for EventType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(PATTERN, 1, MAX_LEN, "An event type, such as `order.paid`.")
    }
}

impl utoipa::ToSchema for EventType {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventType".into()
    }
}

/// What a target subscribes to.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    /// `*`: every event.
    All,
    /// `prefix.*`, kept as `prefix.`: every type that starts with it.
    Prefix(String),
    /// One event type.
    Exact(String),
}

impl EventPattern {
    pub fn parse(p: &str) -> Result<EventPattern, Invalid> {
        if p == "*" {
            return Ok(EventPattern::All);
        }
        let refused = || {
            Invalid::new(format!(
                "event pattern {p:?} must be an event type, `prefix.*` or `*`"
            ))
        };
        match p.strip_suffix(".*") {
            Some(name) if is_valid(name) => Ok(EventPattern::Prefix(format!("{name}."))),
            Some(_) => Err(refused()),
            None if is_valid(p) => Ok(EventPattern::Exact(p.to_owned())),
            None => Err(refused()),
        }
    }

    /// The pattern as written (`user.*`).
    pub fn text(&self) -> String {
        match self {
            EventPattern::All => "*".to_owned(),
            EventPattern::Prefix(p) => format!("{p}*"),
            EventPattern::Exact(t) => t.clone(),
        }
    }

    /// Whether an event of type `t` matches.
    pub fn matches(&self, t: &str) -> bool {
        match self {
            EventPattern::All => true,
            EventPattern::Prefix(p) => t.starts_with(p.as_str()),
            EventPattern::Exact(e) => e == t,
        }
    }
}

impl fmt::Debug for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventPattern({})", self.text())
    }
}

impl serde::Serialize for EventPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
    }
}

impl<'de> serde::Deserialize<'de> for EventPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventPattern, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for EventPattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        string_schema(
            PATTERN_PATTERN,
            1,
            MAX_LEN + 2,
            "An event type (`order.paid`), a prefix wildcard (`user.*`) or `*`.",
        )
    }
}

impl utoipa::ToSchema for EventPattern {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventPattern".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        assert!(is_valid("order.paid"));
        assert!(is_valid("A-b_c.9"));
        assert!(!is_valid(""));
        assert!(!is_valid("bad type!"));
        assert!(!is_valid(&"a".repeat(129)));
        assert!(is_valid(&"a".repeat(128)));
    }

    #[test]
    fn patterns_are_checked() {
        for ok in ["*", "a", "a.*", "a.b-c_d.*", "a..*"] {
            assert!(EventPattern::parse(ok).is_ok(), "{ok}");
            assert_eq!(
                EventPattern::parse(ok).map(|p| p.text()).ok().as_deref(),
                Some(ok)
            );
        }
        for bad in ["", "a*", "*.a", "a.*.b", "a b", ".*", "a.**"] {
            assert!(EventPattern::parse(bad).is_err(), "{bad}");
        }
        let user = EventPattern::parse("user.*").ok();
        assert!(user.as_ref().is_some_and(|p| p.matches("user.created")));
        assert!(user.as_ref().is_some_and(|p| !p.matches("users.created")));
    }
}
