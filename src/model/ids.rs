//! Id newtypes. Every id shares one alphabet, `[A-Za-z0-9_-]{1,64}`, safe in Redis keys, URL
//! paths and log lines; generated ids are a kind prefix and a ULID (`ten_01J…`), so they sort
//! by creation time. An id value that exists has passed [`check`]: a path segment, a JSON field
//! or a stored reference is parsed into one before it reaches a Redis key.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use super::invalid::Invalid;

/// Longest id.
pub const MAX_LEN: usize = 64;
/// The id grammar, as a JSON Schema pattern.
pub const PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// Whether `id` is of the id alphabet and length.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks an id's text.
pub fn check(id: &str) -> Result<(), Invalid> {
    if is_valid(id) {
        Ok(())
    } else {
        Err(Invalid::new(format!(
            "must be 1 to {MAX_LEN} of A-Z a-z 0-9 _ -"
        )))
    }
}

/// A new unique id with a kind prefix: `ten_01J…`. ULIDs sort by creation time; within one
/// millisecond a monotonic generator keeps this process's ids in creation order too (plain
/// ULIDs of one millisecond sort at random).
pub fn generate(kind: &str) -> String {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let next = match GENERATOR.lock() {
        Ok(mut g) => g.generate().ok(),
        Err(poisoned) => poisoned.into_inner().generate().ok(),
    };
    // The generator fails only when 2^80 ids were made in one millisecond.
    format!("{kind}_{}", next.unwrap_or_else(ulid::Ulid::new))
}

/// A new unique id whose ULID carries the time `ms` (since the Unix epoch) exactly. Not
/// from the monotonic generator, which would carry a later time past one it made already;
/// ids of one millisecond sort at random among themselves.
pub fn generate_at(kind: &str, ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    format!("{kind}_{}", ulid::Ulid::from_datetime(at))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The prefix of generated ids of this kind.
            pub const KIND: &'static str = $kind;
            /// What the id names, for messages ("tenant not found").
            pub const WHAT: &'static str = $what;

            /// Parses an id's text.
            pub fn parse(text: &str) -> Result<$name, Invalid> {
                check(text)?;
                Ok($name(text.into()))
            }

            /// A new unique id.
            pub fn generate() -> $name {
                $name(generate($kind).into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The shared text, for structures that hold many references to one id.
            pub fn shared(&self) -> Arc<str> {
                self.0.clone()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<$name, Invalid> {
                $name::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema(concat!("The id of a ", $what, "."))
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    };
}

/// The schema of an id: a string of the id alphabet.
fn id_schema(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(PATTERN))
        .min_length(Some(1))
        .max_length(Some(MAX_LEN))
        .description(Some(description))
        .into()
}

id_type!(
    /// A tenant.
    TenantId, "ten", "tenant"
);
id_type!(
    /// A tenant's bearer token (its id, never its text).
    TokenId, "tok", "token"
);
id_type!(
    /// A delivery target.
    TargetId, "tgt", "target"
);
id_type!(
    /// An inbound source.
    SourceId, "src", "source"
);
id_type!(
    /// A passive monitor.
    MonitorId, "mon", "monitor"
);
id_type!(
    /// An error queue entry.
    DeadLetterId, "dl", "dead letter"
);
id_type!(
    /// An incident of a monitor or a watched source.
    IncidentId, "inc", "incident"
);
id_type!(
    /// A portal link (its id, never its signature).
    PortalLinkId, "pl", "portal link"
);
id_type!(
    /// A batch of deliveries to one target: `bat_<ULID>`, its `webhook-id`.
    BatchId, "bat", "batch"
);
id_type!(
    /// An event: `evt_<ULID>`, chosen by the gateway before the event is written.
    EventId, "evt", "event"
);

/// The time (ms) in a generated id's ULID.
fn time_of(id: &str, kind: &str) -> Option<u64> {
    let ulid = id.strip_prefix(kind)?.strip_prefix('_')?;
    ulid::Ulid::from_string(ulid).ok().map(|u| u.timestamp_ms())
}

impl EventId {
    /// The receive time (ms) encoded in a generated id's ULID.
    pub fn received_at_ms(&self) -> Option<u64> {
        time_of(&self.0, Self::KIND)
    }
}

impl DeadLetterId {
    /// A new entry's id, minted at the instant it failed: the error queue is ordered by id.
    pub fn failed_at(ms: u64) -> DeadLetterId {
        DeadLetterId(generate_at(Self::KIND, ms).into())
    }

    /// When the entry failed, from its id.
    pub fn failed_at_ms(&self) -> Option<u64> {
        time_of(&self.0, Self::KIND)
    }

    /// The lowest id an entry failed at `ms` can have.
    pub fn first_of(ms: u64) -> String {
        format!("{}_{}", Self::KIND, ulid::Ulid::from_parts(ms, 0))
    }

    /// The highest id an entry failed at `ms` can have.
    pub fn last_of(ms: u64) -> String {
        format!("{}_{}", Self::KIND, ulid::Ulid::from_parts(ms, u128::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_generated_in_order() {
        assert!(TenantId::parse("acme-1_x").is_ok());
        assert!(TenantId::parse("a b").is_err());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse(&"a".repeat(65)).is_err());
        assert!(TenantId::parse(&"a".repeat(64)).is_ok());
        let id = TenantId::generate();
        assert!(id.as_str().starts_with("ten_") && is_valid(id.as_str()));
        let ids: Vec<String> = (0..2000).map(|_| generate("ten")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "ids made in one millisecond keep their order");
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        let ok: Result<TargetId, _> = serde_json::from_str("\"tgt_1\"");
        assert_eq!(ok.ok().map(|t| t.to_string()), Some("tgt_1".to_owned()));
        assert!(serde_json::from_str::<TargetId>("\"../x\"").is_err());
        assert!(serde_json::from_str::<TargetId>("5").is_err());
    }

    #[test]
    fn dead_letter_ids_sort_by_failure_time_within_their_bounds() {
        let early = DeadLetterId::failed_at(1_700_000_000_000);
        let late = DeadLetterId::failed_at(1_700_000_000_001);
        assert!(early < late);
        assert_eq!(early.failed_at_ms(), Some(1_700_000_000_000));
        assert!(DeadLetterId::first_of(1_700_000_000_000) <= early.to_string());
        assert!(early.to_string() <= DeadLetterId::last_of(1_700_000_000_000));
        assert!(DeadLetterId::last_of(1_700_000_000_000) < late.to_string());
        assert!(is_valid(&DeadLetterId::last_of(u64::MAX >> 16)));
    }

    #[test]
    fn event_ids_carry_their_receive_time() {
        let id = EventId(format!("evt_{}", ulid::Ulid::from_parts(1_700_000_000_000, 7)).into());
        assert_eq!(id.received_at_ms(), Some(1_700_000_000_000));
        assert_eq!(EventId("nope".into()).received_at_ms(), None);
    }
}
