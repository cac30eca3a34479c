//! The outbound connection pools: HTTP/1.1 and HTTP/2 (ALPN) over rustls, names resolved
//! through the SSRF guard. One pool serves every target without TLS settings; each distinct
//! TLS setting has its own (see [`super::client`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, ResolveServerName};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ssrf::GuardedResolver;

pub type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// A pooled client, cheap to clone.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// A pooled HTTP/1.1 and HTTP/2 client over `tls`, resolving names through the SSRF guard;
/// `renamed` checks the certificate of one host against another name.
pub fn pool(
    tls: rustls::ClientConfig,
    renamed: Option<(String, rustls::pki_types::ServerName<'static>)>,
    allow_private: bool,
    timeout: Duration,
    max_idle_per_host: usize,
) -> HttpClient {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some((host, name)) = renamed {
        builder = builder.with_server_name_resolver(
            move |uri: &http::Uri| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                if uri.host() == Some(host.as_str()) {
                    Ok(name.clone())
                } else {
                    hyper_rustls::DefaultServerNameResolver::default().resolve(uri)
                }
            },
        );
    }
    let https = builder.enable_http1().enable_http2().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(max_idle_per_host)
        .build(https)
}
