//! The accept loop shared by the edge (TLS and cleartext) and admin listeners:
//! TCP → optional TLS (with a handshake deadline) → hyper-util auto (HTTP/1.1 and HTTP/2) → drain.
//!
//! Bounds: a semaphore caps open connections (at the cap, new clients wait in the kernel's
//! backlog); the TLS handshake, the request head (and the idle time between keep-alive
//! requests) have deadlines; heads and HTTP/2 stream counts are capped. Request bodies are
//! bounded where they are read ([`crate::http::body`]).
//!
//! Shutdown: when `shutdown` fires the listener stops accepting and every connection is asked to
//! finish gracefully (in-flight requests complete, idle connections close). After `grace`, what
//! is left is closed, with a loud log line saying how many.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::framing::{BodyWatch, Framed};
use super::service::HttpService;
use crate::telemetry;

/// HTTP limits of one listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Deadline of a request head, and of the idle time before the next one.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval (`None`: off).
    pub h2_keepalive_interval: Option<Duration>,
}

/// Everything one listener needs besides its socket and router.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Label for logs and metrics (`edge_tls`, `edge_plain`, `admin`).
    pub name: &'static str,
    /// TLS acceptor, for a TLS listener.
    pub tls: Option<TlsAcceptor>,
    /// Deadline of the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// HTTP limits.
    pub http: HttpLimits,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub grace: Duration,
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec")
            .field("name", &self.name)
            .field("tls", &self.tls.is_some())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// hyper's HTTP/1 read buffer cannot be smaller than this.
const MIN_H1_BUFFER: usize = 8 * 1024;

fn http_builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Without a timer hyper silently ignores the header timeout.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_H1_BUFFER))
        .max_headers(128)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_pending_accept_reset_streams(Some(64))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves `service` on `listener` until `shutdown`, then drains within `spec.grace`.
pub async fn serve(
    listener: TcpListener,
    spec: ListenerSpec,
    service: HttpService,
    shutdown: CancellationToken,
) {
    let builder = Arc::new(http_builder(&spec.http));
    let slots = Arc::new(Semaphore::new(spec.max_connections));
    let connections = TaskTracker::new();
    // `drain` asks connections to finish; `force` closes what is left after the grace period.
    let drain = CancellationToken::new();
    let force = CancellationToken::new();
    let local = listener.local_addr().ok();
    tracing::info!(listener = spec.name, addr = ?local, tls = spec.tls.is_some(), "listening");

    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(listener = spec.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            spec: spec.clone(),
            builder: builder.clone(),
            service: service.clone(),
            drain: drain.clone(),
            force: force.clone(),
        };
        let span = tracing::debug_span!("conn", listener = spec.name, %peer);
        connections.spawn(
            async move {
                let _open = OpenConnection::count(conn.spec.name);
                conn.run(stream, peer).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    drop(listener);
    connections.close();
    drain.cancel();
    if tokio::time::timeout(spec.grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = spec.name,
            open = connections.len(),
            grace_ms = spec.grace.as_millis() as u64,
            "drain deadline reached; closing the remaining connections"
        );
        force.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), connections.wait()).await;
    }
    tracing::info!(listener = spec.name, "stopped");
}

/// Counts a connection in `estafeta_connections` for as long as it lives: the decrement is in
/// `Drop`, so a connection task that ends by a panic is uncounted too.
struct OpenConnection(&'static str);

impl OpenConnection {
    fn count(listener: &'static str) -> OpenConnection {
        telemetry::connection(listener, 1.0);
        OpenConnection(listener)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        telemetry::connection(self.0, -1.0);
    }
}

struct Connection {
    spec: ListenerSpec,
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: HttpService,
    drain: CancellationToken,
    force: CancellationToken,
}

impl Connection {
    async fn run(&self, stream: TcpStream, peer: SocketAddr) {
        let first_byte = self.spec.http.header_read_timeout;
        let max_head = self.spec.http.max_header_bytes.max(MIN_H1_BUFFER);
        let watch = Arc::new(BodyWatch::default());
        // The framing reader sits under the first-byte deadline: a first head it holds back
        // until complete still counts against that deadline, so a trickled head times out.
        match &self.spec.tls {
            None => {
                let framed = FirstByteDeadline::new(
                    Framed::new(stream, max_head, watch.clone()),
                    first_byte,
                );
                self.serve_http(TokioIo::new(framed), peer, watch).await
            }
            Some(acceptor) => {
                let handshake = tokio::select! {
                    _ = self.force.cancelled() => return,
                    r = tokio::time::timeout(self.spec.tls_handshake_timeout, acceptor.accept(stream)) => r,
                };
                match handshake {
                    Ok(Ok(tls)) => {
                        let framed = FirstByteDeadline::new(
                            Framed::new(tls, max_head, watch.clone()),
                            first_byte,
                        );
                        self.serve_http(TokioIo::new(framed), peer, watch).await
                    }
                    Ok(Err(e)) => {
                        telemetry::connection_rejected(self.spec.name, "tls_error");
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        telemetry::connection_rejected(self.spec.name, "tls_handshake_timeout");
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve_http<I>(&self, io: TokioIo<I>, peer: SocketAddr, watch: Arc<BodyWatch>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self
            .builder
            .serve_connection(io, self.service.for_connection(peer, watch));
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = self.drain.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = self.force.cancelled() => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            // Timeouts, resets and protocol errors of clients: worth a debug line, no more.
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Fails reads with `TimedOut` if no byte arrives within the deadline. hyper-util's auto
/// builder reads the first bytes (to tell HTTP/1 from HTTP/2) with no timeout of its own, so a
/// client that connects and sends nothing would otherwise hold its connection slot forever;
/// after the first byte, hyper's header timeout takes over.
struct FirstByteDeadline<I> {
    io: I,
    /// Cleared by the first byte read.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByteDeadline<I> {
    fn new(io: I, limit: Duration) -> Self {
        FirstByteDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.deadline = None;
                polled
            }
            Poll::Pending => match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
                _ => Poll::Pending,
            },
            _ => polled,
        }
    }
}

writes_through!(FirstByteDeadline);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return String::new();
        };
        let _ = s.write_all(raw).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_is_counted() {
        let metrics = telemetry::prometheus();
        let router = axum::Router::new().route(
            "/boom",
            axum::routing::get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler fault");
                }
                "unreachable"
            }),
        );
        let Ok(socket) = TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind");
        };
        let Ok(addr) = socket.local_addr() else {
            panic!("addr");
        };
        let spec = ListenerSpec {
            name: "test_panic",
            tls: None,
            tls_handshake_timeout: Duration::from_secs(1),
            max_connections: 8,
            http: HttpLimits {
                header_read_timeout: Duration::from_secs(2),
                max_header_bytes: 16 * 1024,
                h2_max_concurrent_streams: 8,
                h2_keepalive_interval: None,
            },
            grace: Duration::from_secs(1),
        };
        let stop = CancellationToken::new();
        let served = tokio::spawn(serve(
            socket,
            spec,
            HttpService::routed("test_panic", router),
            stop.clone(),
        ));
        for _ in 0..2 {
            let answer = exchange(
                addr,
                b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
            assert!(answer.contains(r#""code":"internal""#), "{answer}");
            assert!(answer.contains("x-request-id"), "{answer}");
        }
        // The connections closed; the gauge is back where it started.
        let mut text = String::new();
        for _ in 0..50 {
            text = metrics.render();
            if text.contains(r#"estafeta_connections{listener="test_panic"} 0"#) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            text.contains(r#"estafeta_connections{listener="test_panic"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"estafeta_panics_total{listener="test_panic"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"estafeta_http_requests_total{listener="test_panic",route="panicked",status="500"} 2"#
            ),
            "{text}"
        );
        stop.cancel();
        let _ = served.await;
    }
}
