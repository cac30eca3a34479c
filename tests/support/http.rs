//! A minimal HTTP client over real sockets: one connection per request, HTTP/1.1 or HTTP/2,
//! cleartext or TLS (trusting the test certificate).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Which protocol a TLS request negotiates by ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    H1,
    H2,
}

#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    /// The protocol the exchange used.
    pub version: hyper::Version,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The body has the contract's error shape with this code.
    pub fn is_error(&self, code: &str) -> bool {
        let v = self.json();
        v["error"]["code"] == code && v["error"]["message"].is_string()
    }
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    pub fn header(self, name: &str, value: &str) -> Request {
        self.header_bytes(name, value.as_bytes())
    }

    /// A header whose value is raw bytes (0x80–0xFF included, as HTTP allows).
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Request {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    pub fn bearer(self, token: &str) -> Request {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    pub fn json(self, v: &serde_json::Value) -> Request {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap())
    }

    fn build(&self, authority: &str) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(format!("http://{authority}{}", self.path));
        // hyper's connection-level client does not add `Host`; HTTP/1.1 requires it.
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            b = b.header("host", authority);
        }
        for (k, v) in &self.headers {
            b = b.header(k, hyper::header::HeaderValue::from_bytes(v).unwrap());
        }
        b.body(Full::new(Bytes::from(self.body.clone()))).unwrap()
    }

    /// Sends over cleartext HTTP/1.1.
    pub async fn send_plain(&self, addr: SocketAddr) -> anyhow::Result<Response> {
        let stream = TcpStream::connect(addr).await?;
        send_h1(TokioIo::new(stream), self.build(&addr.to_string())).await
    }

    /// Sends over cleartext HTTP/2 (prior knowledge).
    pub async fn send_plain_h2(&self, addr: SocketAddr) -> anyhow::Result<Response> {
        let stream = TcpStream::connect(addr).await?;
        let mut req = self.build(&addr.to_string());
        *req.version_mut() = hyper::Version::HTTP_2;
        send_h2(TokioIo::new(stream), req).await
    }

    /// Sends over TLS, trusting `cert`, negotiating `alpn`.
    pub async fn send_tls(
        &self,
        addr: SocketAddr,
        cert: &Path,
        alpn: Alpn,
    ) -> anyhow::Result<Response> {
        let stream = TcpStream::connect(addr).await?;
        let tls = tls_connector(cert, alpn)
            .connect(ServerName::try_from("localhost")?, stream)
            .await?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let authority = format!("localhost:{}", addr.port());
        match alpn {
            Alpn::H2 => {
                anyhow::ensure!(
                    negotiated.as_deref() == Some(b"h2"),
                    "server did not negotiate h2"
                );
                let mut req = self.build(&authority);
                *req.version_mut() = hyper::Version::HTTP_2;
                send_h2(TokioIo::new(tls), req).await
            }
            Alpn::H1 => send_h1(TokioIo::new(tls), self.build(&authority)).await,
        }
    }
}

pub fn tls_connector(cert: &Path, alpn: Alpn) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match alpn {
        Alpn::H1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    TlsConnector::from(Arc::new(config))
}

async fn send_h1<I>(io: I, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<Response>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::handshake(io).await?;
    tokio::spawn(conn);
    collect(sender.send_request(req).await?).await
}

async fn send_h2<I>(io: I, req: hyper::Request<Full<Bytes>>) -> anyhow::Result<Response>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
    tokio::spawn(conn);
    collect(sender.send_request(req).await?).await
}

async fn collect(res: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Response> {
    let status = res.status().as_u16();
    let version = res.version();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Response {
        status,
        headers,
        body,
        version,
    })
}
