//! The edge: where requests enter. Each listener accepts TCP under a connection cap, runs the
//! TLS handshake under a deadline, and serves HTTP/1.1 and HTTP/2 with hyper-util; every
//! request then gets its id and metrics and goes to a hot route or to the listener's router.
//!
//! - [`listener`]: the accept loop, connection bounds, graceful drain;
//! - [`tls`]: rustls configuration (ALPN `h2`, `http/1.1`) and development certificates;
//! - [`service`]: the per-request entry point, with the hot routes dispatched by hand;
//! - [`observe`]: request ids and per-route request metrics.
//!
//! What the routes do is [`crate::ingest`]'s and [`crate::api`]'s; request bodies are read
//! within bounds by [`crate::body`].

pub mod framing;
pub mod listener;
pub mod observe;
pub mod service;
pub mod tls;
