//! The HTTP APIs: the admin API (operators), the tenant API (each tenant for itself), the
//! routers that serve them with the ingest routes, and their OpenAPI description, derived from
//! the handlers' annotations ([`doc`]).
//!
//! Tenant resources (targets, the error queue, event views, counters, sources, monitors) are
//! served by one set of handlers mounted twice: under `/admin/tenants/{id}` (admin token; the
//! tenant is in the path) and under `/v1` (the tenant's own bearer token). [`TenantScope`]
//! resolves which tenant a request acts for, so a tenant can only ever name its own resources:
//! every lookup is keyed by that tenant.
//!
//! | module | routes |
//! | --- | --- |
//! | [`tenants`] | `/admin/tenants…`, `…/tokens…` (admin only) |
//! | [`portal_links`] | `/admin/tenants/{id}/portal-links…` (admin only) |
//! | [`targets`] | `…/targets`, `…/targets/{target_id}`, `…/rotate-secret` |
//! | [`event_types`] | `…/event-types`, `…/event-types/{name}`: the event catalogue |
//! | [`catalogue_exchange`] | `…/event-types/import`, `…/event-types/export` (OpenAPI 3.1 `webhooks`) |
//! | [`transforms`] | `…/targets/{target_id}/transform/versions`, `…/transform/simulate` |
//! | [`dead_letters`] | `…/dead-letters`, `…/dead-letters/replay`, `…/dead-letters/{dl_id}` |
//! | [`events`] | `…/events/{event}` (delivery view), `…/stats`, `…/stats/series`, `/admin/stats/series` (admin only) |
//! | [`sources`] | `…/sources…`, and their incident and check history |
//! | [`monitors`] | `…/monitors…`, and their incident and check history |
//! | [`find`] | `/admin/find?q=`: what an id names, in any tenant (admin only) |
//! | [`overview`] | `/admin/overview` (admin only) and `…/overview`: what needs looking at |
//! | [`health`] | `/healthz`, `/readyz` (every listener) |
//! | [`system`] | `/metrics`, `/openapi.json` (admin listener) |
//!
//! [`routes`] builds both listeners' routers from these handlers; [`scope`] holds their shared
//! state and the tenant scope; [`listing`] the list answers.

pub mod catalogue_exchange;
pub mod dead_letters;
pub mod doc;
pub mod event_types;
pub mod events;
pub mod filters;
pub mod find;
pub mod health;
pub mod listing;
pub mod monitors;
pub mod overview;
pub mod portal_links;
pub mod routes;
pub mod scope;
pub mod sources;
pub mod system;
pub mod targets;
pub mod tenants;
pub mod transforms;
mod watched;

pub use listing::{Listing, Page};
pub use routes::{EdgeParts, admin, edge, method_not_allowed, not_found};
pub use scope::{ApiState, PortalLinkSettings, TenantScope};
