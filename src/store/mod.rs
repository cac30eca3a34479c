//! Persistence of the control plane and of delivery records, in Redis under the
//! [`Keyspace`](crate::redis::keyspace). Nothing here decides what is valid (that is
//! [`crate::model`]'s); the store keeps records, their indexes and their secrets.
//!
//! Invariants:
//! - a token is stored only as its keyed hash ([`Keys::hash_token`]); its text is returned once,
//!   at creation, and never again;
//! - recoverable secrets (signing secrets, target credentials, sender and monitor secrets, a
//!   tenant's external id) are sealed with AES-256-GCM, bound to their record;
//! - every change that another instance's cache may hold is published as an
//!   [`Invalidation`](crate::redis::invalidation::Invalidation) after it is written.
//!
//! Multi-key changes run as scripts ([`crate::redis::scripts`]) over keys of one slot, so they are
//! atomic on a single Redis and on a cluster alike.
//!
//! - [`handle`], [`error`]: the handle the record modules extend, and its failures;
//! - [`tenants`], [`tokens`]: tenants, their bearer tokens, config-declared tenants;
//! - [`event_types`]: each tenant's event catalogue;
//! - [`targets`]: delivery targets (versioned documents, optimistic updates);
//! - [`sources`], [`monitors`]: documents reached by a URL token; [`source_activity`]: what
//!   each source last received and refused;
//! - [`deliveries`]: expansion records, delivery states, attempts, the retry schedule, the
//!   error queue and the per-tenant counters, in the tenant's shard slot;
//! - [`series`]: per-minute counters for charts, written by the delivery scripts, read here;
//! - [`quarantine`]: each shard's stream of records its consumers could not process.

pub mod deliveries;
pub mod error;
pub mod event_types;
pub mod handle;
pub mod monitors;
pub mod portal_links;
pub mod quarantine;
pub mod rollup;
pub mod series;
pub mod source_activity;
pub mod sources;
pub mod targets;
pub mod tenants;
pub mod tokens;

pub use deliveries::Deliveries;
pub use error::{RangeError, StoreError};
pub use handle::Store;
pub use monitors::Monitor;
pub use series::{MinuteCounts, SeriesScope};
pub use sources::Source;
pub use targets::Target;
pub use tenants::TenantRecord;
pub use tokens::{IssuedToken, TokenInfo, TokenOwner};
