//! # Estafeta: a webhook gateway
//!
//! # Layout
//!
//! **Edge** ([`listener`], [`tls`], [`ingest`]). TCP → rustls (handshake deadline, ALPN h2 and
//! http/1.1) → hyper-util auto → axum routers. Every limit is explicit: connections, handshake,
//! head size and time, body size and time ([`body`]). `POST /v1/events/{type}` authenticates,
//! checks, reads the body and hands the event to the queue; it answers 202 only when Redis holds
//! the event.
//!
//! **Auth** ([`auth`], [`store`], [`crypto`]). Tenants and tokens live in Redis; a token is
//! stored only as its HMAC, secrets that must be recovered are sealed with AES-256-GCM, and
//! both keys derive from the master key. A moka cache answers the hot path; pub/sub
//! invalidations keep every instance's cache coherent within a second.
//!
//! **Queue** ([`queue`], [`keyspace`]). A fixed number of shard streams, hash-tagged for Redis
//! Cluster; a tenant always maps to one shard, so its events keep their order. Concurrent
//! requests are written in pipelined batches. Idempotency keys are checked and recorded in the
//! same atomic script as the append. Streams are trimmed by age, never past undelivered entries.
//!
//! **Dispatcher** ([`dispatch`]). Consumer groups on the shard streams; each event expanded once
//! into one delivery per matching target; per-target and global caps with bounded memory;
//! signed (Standard Webhooks) POSTs through a pooled HTTP/1.1 + HTTP/2 client behind an SSRF
//! guard; outcomes recorded in batches before the entry is acked; retries in a Redis sorted
//! set; reclaim of a dead consumer's entries. Records live in [`store::deliveries`].
//!
//! **Sources** ([`sources`]). Inbound webhooks of external platforms at `/v1/hooks/{token}`,
//! verified by the sender's scheme over the raw bytes, then enqueued like `/v1/events`.
//!
//! **Admin** ([`admin`], [`manage`]). Tenants and tokens, `/metrics`, `/openapi.json`, health;
//! targets, error queue, sources, event delivery views and stats, served to operators and (under
//! `/v1`) to each tenant for itself by the same handlers.
//!
//! **Process** ([`app`], [`config`], [`telemetry`], [`health`]). `app::run` takes a validated
//! [`config::Config`] and bound sockets, starts everything in order and stops it in reverse
//! order on shutdown: not ready, stop accepting, drain, flush the queue, stop background tasks.
//!
//! Errors map to the contract's JSON in one place: [`error`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod error;
pub mod health;
pub mod ingest;
pub mod keyspace;
pub mod listener;
pub mod manage;
pub mod monitors;
pub mod observe;
pub mod queue;
pub mod redis;
pub mod service;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod tls;
