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
//! - [`invalid`]: a refusal, with the path of the field at fault;
//! - [`origin`], [`patch`]: who made a record; absent and `null` fields of a patch;
//! - [`bounded`]: whole numbers whose bounds are part of their type;
//! - [`catalogue`]: the event catalogue: event types, owners, JSON Schemas by version;
//! - [`ids`]: id newtypes (`TenantId`, `TargetId`, `EventId`, …) and their generator;
//! - [`event_meta`]: an event's content type and kept request headers, packed as one value;
//! - [`event_type`]: event types and the pattern grammar targets subscribe with;
//! - [`filter`]: payload filters, compiled once and evaluated per event;
//! - [`text`]: display names, external ids, header names and values;
//! - [`tenant`]: rate limits, tenant specs and patches;
//! - [`target`]: targets (URL rules, delivery modes, formats, retry policies, secrets);
//! - [`auth`]: how the gateway authenticates to a target, and its masked view;
//! - [`delivery`]: delivery states, attempts and their headers, event records and listings'
//!   filters, and their compact text;
//! - [`source`]: inbound sources (verification schemes, event-type rules, silence watches);
//! - [`monitor`]: passive monitors, watch windows and statuses;
//! - [`number`]: whole numbers as JSON Schema counts them (`5.0` is `5`);
//! - [`secret`]: secret strings that never print;
//! - [`schema`]: pieces of the hand-written OpenAPI schemas;
//! - [`transform`]: targets' jq transformations; [`shaped`]: what their output may change;
//! - [`time`]: the clock and RFC 3339 formatting.

pub mod auth;
pub mod bounded;
pub mod catalogue;
pub mod delivery;
pub mod event_meta;
pub mod event_type;
pub mod filter;
pub mod ids;
pub mod invalid;
pub mod monitor;
pub mod notice;
pub mod number;
pub mod origin;
pub mod patch;
pub mod schema;
pub mod secret;
pub mod shaped;
pub mod source;
pub mod target;
pub mod target_health;
pub mod target_tls;
pub mod target_url;
pub mod tenant;
pub mod text;
pub mod time;
pub mod transform;

pub use bounded::Bounded;
pub use event_type::{EventPattern, EventType};
pub use ids::{
    BatchId, DeadLetterId, EventId, IncidentId, MonitorId, PortalLinkId, SourceId, TargetId,
    TenantId, TokenId,
};
pub use invalid::Invalid;
pub use monitor::{MonitorPatch, MonitorSpec, Status, WatchKind, WatchWindow};
pub use origin::Origin;
pub use secret::SecretText;
pub use source::{EventTypeRule, Scheme, SilenceWatch, SourceSpec, VerifySpec};
pub use target::{
    Format, Headers, Mode, Patterns, RetryPolicy, SigningSecret, TargetAuth, TargetPatch,
    TargetSpec, TargetUrl,
};
pub use tenant::{CatalogueMode, KeepHeaders, RateLimit, TenantPatch, TenantSpec};
pub use text::{ExternalId, Name};
