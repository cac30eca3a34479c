//! Sources: external platforms (payment providers, CI systems, chat APIs) that push their own
//! webhooks at a URL that names the source by its token.
//!
//! - [`hooks`]: `POST /v1/hooks/{source_token}`: the sender's signature verified over the raw
//!   bytes before anything is written, replays refused, the event enqueued exactly like
//!   `POST /v1/events/{type}`, what was received and refused noted for the source's page;
//! - the signature schemes (Standard Webhooks, GitHub, Stripe, HMAC-SHA256 hex) are
//!   [`crate::crypto::verify`], below both this module and `ingest`, whose signed monitor
//!   status pushes use them too;
//! - [`replay`]: a timestamped scheme's signatures, claimed while their event is enqueued and
//!   marked seen once it is in the queue;
//! - [`cache`]: the sources by token hash, with their verifiers, dropped on change.
//!
//! A source's records live in [`crate::store`] (`store::sources`, `store::source_activity`);
//! its silence watch (`expect_every_s`) is a subject of [`crate::monitors`], which opens the
//! incident and sends `source.silent` / `source.resumed`.

pub mod cache;
pub mod hooks;
pub mod replay;
