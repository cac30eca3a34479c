//! A real HTTP server on loopback standing in for webhook receivers: it records every request
//! and answers by a per-path plan (statuses in order, then a default), so tests can make a
//! target fail N times, hang, answer 410 or 429 with `Retry-After`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Status with a `Retry-After` (seconds).
    RetryAfter(u16, u64),
    /// Never answers (until the client gives up).
    Hang,
    /// Answers after a pause.
    Slow(Duration, u16),
    /// Status with this body (the others answer `ok`).
    Body(u16, Bytes),
    /// Status with these headers (values as raw bytes).
    Headers(u16, Vec<(&'static str, Vec<u8>)>),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub method: String,
    pub query: Option<String>,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Default)]
struct Plans {
    queued: HashMap<String, VecDeque<Reply>>,
    default: HashMap<String, Reply>,
}

pub struct Sink {
    pub addr: SocketAddr,
    scheme: &'static str,
    received: Arc<Mutex<Vec<Received>>>,
    plans: Arc<Mutex<Plans>>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Sink {
    pub async fn start() -> Sink {
        Sink::start_with(None).await
    }

    /// A sink that speaks TLS with `tls` (and, if it asks for one, checks the client's
    /// certificate): its URLs are `https://127.0.0.1:<port>`.
    pub async fn start_tls(tls: rustls::ServerConfig) -> Sink {
        Sink::start_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let plans = Arc::new(Mutex::new(Plans::default()));
        let stop = CancellationToken::new();
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let scheme = if tls.is_some() { "https" } else { "http" };
        let (r, p, s, f) = (
            received.clone(),
            plans.clone(),
            stop.clone(),
            refused.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (r, p, s, f) = (r.clone(), p.clone(), s.clone(), f.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => serve(stream, r, p, s).await,
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => serve(stream, r, p, s).await,
                            // A client the TLS settings refuse (no or a wrong certificate).
                            Err(_) => {
                                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        },
                    }
                });
            }
        });
        Sink {
            addr,
            scheme,
            received,
            plans,
            refused,
            stop,
        }
    }

    /// TLS handshakes the sink refused.
    pub fn refused_handshakes(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Answers on `path`: `queued` in order, then `default`.
    pub fn plan(&self, path: &str, queued: Vec<Reply>, default: Reply) {
        let mut p = self.plans.lock().unwrap();
        p.queued.insert(path.to_owned(), queued.into());
        p.default.insert(path.to_owned(), default);
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Answers one connection's requests by the plans, recording each.
async fn serve<IO>(
    stream: IO,
    r: Arc<Mutex<Vec<Received>>>,
    p: Arc<Mutex<Plans>>,
    s: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let path = req.uri().path().to_owned();
            let method = req.method().to_string();
            let query = req.uri().query().map(str::to_owned);
            let headers = req.headers().clone();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            r.lock().unwrap().push(Received {
                path: path.clone(),
                method,
                query,
                headers,
                body,
                at: Instant::now(),
            });
            let reply = {
                let mut plans = p.lock().unwrap();
                let next = plans.queued.get_mut(&path).and_then(VecDeque::pop_front);
                next.or_else(|| plans.default.get(&path).cloned())
                    .unwrap_or(Reply::Status(200))
            };
            let mut answer = Bytes::from_static(b"ok");
            let mut extra = Vec::new();
            let (status, retry_after) = match reply {
                Reply::Status(s) => (s, None),
                Reply::RetryAfter(s, secs) => (s, Some(secs)),
                Reply::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    (200, None)
                }
                Reply::Slow(d, s) => {
                    tokio::time::sleep(d).await;
                    (s, None)
                }
                Reply::Body(s, body) => {
                    answer = body;
                    (s, None)
                }
                Reply::Headers(s, headers) => {
                    extra = headers;
                    (s, None)
                }
            };
            let mut resp = hyper::Response::builder().status(status);
            for (name, value) in extra {
                let value = hyper::header::HeaderValue::from_bytes(&value).unwrap();
                resp = resp.header(name, value);
            }
            if let Some(secs) = retry_after {
                resp = resp.header("retry-after", secs.to_string());
            }
            Ok::<_, Infallible>(resp.body(Full::new(answer)).unwrap())
        }
    });
    let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::select! {
        _ = s.cancelled() => {}
        _ = conn.serve_connection(TokioIo::new(stream), service) => {}
    }
}
