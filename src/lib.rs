//! # Estafeta: a webhook gateway
//!
//! # Layout
//!
//! Modules are listed in the direction of imports: each imports only modules below it, and
//! [`model`] imports nothing of the crate. Data flows down the same list: a request enters at
//! the edge, becomes an event in the queue, and leaves through the dispatcher.
//!
//! - [`app`]: the process as stages: the core opened from the [`config`] (Redis, the store,
//!   the log store, caches), then background tasks, the dispatcher, the batched writers and
//!   the servers, each owning its tasks, started in order and stopped in reverse.
//! - [`web`]: the operator console and the tenant portal: server-rendered pages that call the
//!   API's typed operations and render their typed views, sessions and their CSRF tokens.
//! - [`api`]: the admin and tenant management APIs: each operation a typed function over the
//!   state and the tenant's scope, with its thin JSON handler; the routers of both listeners,
//!   health, metrics, and the OpenAPI description derived from the handlers.
//! - [`edge`]: listeners (TCP → TLS → hyper-util), connection and header bounds, the hot routes
//!   dispatched by hand, request ids and per-route metrics.
//! - [`sources`]: external platforms' own webhooks: the hook route, signature schemes, the
//!   sources' cache.
//! - [`ingest`]: what senders call: events, inbound webhooks of sources (verified by the
//!   sender's signature scheme), monitor heartbeats and status pushes.
//! - [`http`]: what both HTTP APIs share: request bodies read within bounds, extractors (typed
//!   path, query and JSON body) that refuse with the contract's errors, and the one mapping of
//!   failures to those errors and statuses.
//! - [`heal`]: targets the dispatcher disabled for failing, probed on a backoff, enabled
//!   again when they answer and sent the events they missed (through [`history`]).
//! - [`history`]: event reads, listings, replays and time-range recovery across both tiers
//!   (Redis for the hot window, the log store for the rest).
//! - [`monitors`]: the live state of monitors and watched sources (one script per signal:
//!   deadline, check, incident, alert) and the overdue checker.
//! - [`dispatch`]: consumer-group reads, matching, signed deliveries through the SSRF guard,
//!   chat formats, retries with backoff, outcome recording.
//! - [`sandbox`]: jq programs (transformations, status maps) compiled and run in worker
//!   processes, each run bounded in time, a crash or an overrun costing only that run.
//! - [`log_store`]: the long-term event log in PostgreSQL (optional): migrations, daily
//!   partitions, the shipper that moves finished events out of Redis, and its reads.
//! - [`queue`]: the stream layout and the one entry codec, batched durable enqueue, the
//!   reading half of the protocol, retention.
//! - [`auth`]: bearer tokens through the token and tenant caches, rate limiters.
//! - [`store`]: persistence in Redis only: tenants, tokens, targets, sources, monitors,
//!   delivery records and the ship queue.
//! - [`redis`]: Redis as the gateway uses it: the connection and its durability check, every
//!   key and channel and which shard holds a tenant, the Lua scripts (one file each) and their
//!   registry, the typed cross-instance cache invalidation and the one in-process cache type
//!   (moka).
//! - [`batch`]: the one batcher (enqueue, outcome recording, monitor signals).
//! - [`telemetry`]: logs, metrics, request ids in log lines.
//! - [`traces`]: OpenTelemetry traces (OTLP), off unless a collector is named: the exporter,
//!   and how a span continues a stored or received `traceparent`.
//! - [`crypto`]: the keys derived from the master key: token hashes, sealed secrets; the
//!   signature schemes inbound webhooks and signed status pushes are verified by.
//! - [`config`]: the configuration file and its validation.
//! - [`model`]: ids, the specs and patches of every resource, and their rules.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod batch;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod edge;
pub mod heal;
pub mod history;
pub mod http;
pub mod ingest;
pub mod log_store;
pub mod model;
pub mod monitors;
pub mod queue;
pub mod redis;
pub mod sandbox;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod web;
