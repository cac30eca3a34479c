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
//! within bounds by [`crate::http::body`].

/// `AsyncWrite` for a wrapper of a connection's byte stream (field `io`) that only reads
/// differently: every write goes to `io` as it is.
macro_rules! writes_through {
    ($wrapper:ident) => {
        impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<I> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }
        }
    };
}

pub mod framing;
pub mod listener;
pub mod observe;
pub mod service;
pub mod tls;
