//! What external senders call, and the path from their request to a durable event or a
//! recorded signal:
//!
//! - [`events`]: `POST /v1/events/{event_type}`, a tenant's own events (bearer token), held
//!   to the tenant's event catalogue by [`catalogue`] when its mode is `warn` or `enforce`;
//! - `POST /v1/hooks/{source_token}`, an external platform's webhooks, lives with the rest of
//!   sources in [`crate::sources`] and enqueues through [`events`];
//! - [`heartbeats`]: `POST /v1/monitors/{monitor_id}` status pushes and
//!   `GET|POST /v1/monitors/{monitor_token}/heartbeat[/…]` heartbeats of passive monitors.
//!
//! Each refuses what it can before reading the body (credentials, event type, rate limit,
//! declared length), reads the body within bounds, and answers only once Redis holds the
//! event or the signal. The event and heartbeat routes are also served by hand on the edge's
//! hot path ([`crate::edge::service`]), with the same answers.

pub mod catalogue;
pub mod events;
pub mod heartbeats;

pub use events::IngestState;
