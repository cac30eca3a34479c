//! The outbound HTTP client: pooled HTTP/1.1 and HTTP/2 (ALPN) over rustls, names resolved
//! through the SSRF guard, one attempt bounded by the request timeout from connect to the
//! first bytes of the response body. A target's TLS settings pick its pool; its OAuth2
//! client, its bearer token (see [`super::oauth2`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http_body_util::{BodyExt, Full};

use super::backoff::parse_retry_after;
use super::oauth2::Tokens;
use super::pool::{HttpClient, pool};
use super::signing::{SigningKey, signature_header};
use super::ssrf::{is_public, is_refusal, literal_ip};
use super::transform::Shaped;
use crate::model::TargetAuth;
use crate::store::Target;

/// Bytes of a response body kept in the attempt log.
pub const RESPONSE_SNIPPET: usize = 512;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    /// The response status, when there was a response.
    pub status: Option<u16>,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// Why there was no usable response.
    pub error: Option<String>,
    /// The address was refused by the SSRF guard (final, not retried).
    pub refused: bool,
    /// The first bytes of the response body.
    pub response: Option<String>,
    pub latency: Duration,
    /// The request's headers as sent (`None`: no request could be built).
    pub sent: Option<http::HeaderMap>,
    /// The response's headers, when there was a response.
    pub received: Option<http::HeaderMap>,
}

impl AttemptResult {
    /// An attempt that got no usable response.
    fn failed(
        error: String,
        refused: bool,
        started: Instant,
        sent: Option<http::HeaderMap>,
    ) -> AttemptResult {
        AttemptResult {
            status: None,
            retry_after: None,
            error: Some(error),
            refused,
            response: None,
            latency: started.elapsed(),
            sent,
            received: None,
        }
    }
}

/// What is sent: one event to one target.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The event's content type with its kept headers, packed (`model::event_meta`).
    pub content_type: Option<&'a [u8]>,
    pub body: &'a Bytes,
    /// The request as the target's transformation shaped it: its URL, method, headers and
    /// body replace the target's and the event's.
    pub shaped: Option<&'a Shaped>,
}

/// The pooled client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DeliveryClient {
    /// Targets without TLS settings.
    client: HttpClient,
    /// A pool per distinct TLS settings (and host, when they name the server).
    pools: moka::sync::Cache<PoolKey, HttpClient>,
    tokens: Tokens,
    timeout: Duration,
    allow_private: bool,
    max_idle_per_host: usize,
}

/// Which pool a target's connections come from.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct PoolKey {
    tls: [u8; 32],
    /// The host whose certificate is checked against the settings' server name.
    renamed_host: Option<String>,
}

/// Pools of targets with TLS settings kept at once; an idle one is dropped after an hour.
const MAX_POOLS: u64 = 10_000;

impl DeliveryClient {
    pub fn new(
        timeout: Duration,
        allow_private: bool,
        max_idle_per_host: usize,
    ) -> Result<DeliveryClient, rustls::Error> {
        let tls = crate::model::target_tls::default_client_config()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(DeliveryClient {
            client: pool(tls, None, allow_private, timeout, max_idle_per_host),
            pools: moka::sync::Cache::builder()
                .max_capacity(MAX_POOLS)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            tokens: Tokens::default(),
            timeout,
            allow_private,
            max_idle_per_host,
        })
    }

    /// The connection pool of `target`: the shared one, or its TLS settings' own.
    fn pool_for(&self, target: &Target) -> Result<HttpClient, String> {
        let Some(tls) = &target.tls else {
            return Ok(self.client.clone());
        };
        let renamed = tls.server_name().map(|name| {
            let host = url::Url::parse(target.url.as_str())
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            (host, name)
        });
        let key = PoolKey {
            tls: tls.fingerprint(),
            renamed_host: renamed.as_ref().map(|(h, _)| h.clone()),
        };
        self.pools
            .try_get_with(key, || {
                let config = tls.client_config().map_err(|e| format!("tls: {e}"))?;
                Ok(pool(
                    config,
                    renamed,
                    self.allow_private,
                    self.timeout,
                    self.max_idle_per_host,
                ))
            })
            .map_err(|e: std::sync::Arc<String>| (*e).clone())
    }

    /// Sends `msg` to `target`, signed with `keys`. Never fails: every problem is a result.
    /// An event whose trace is exported gets an `attempt` span, whose `traceparent` the
    /// receiver gets.
    pub async fn send(
        &self,
        target: &Target,
        keys: &[SigningKey],
        msg: Message<'_>,
        now_secs: i64,
    ) -> AttemptResult {
        let parent = match crate::traces::on() {
            true => msg
                .content_type
                .and_then(crate::model::event_meta::traceparent),
            false => None,
        };
        let Some(parent) = parent else {
            return self.attempt(target, keys, msg, now_secs, None).await;
        };
        use opentelemetry::KeyValue;
        let span = crate::traces::Span::continuing(
            "attempt",
            opentelemetry::trace::SpanKind::Client,
            parent,
            vec![
                KeyValue::new("estafeta.event_id", msg.event_id.to_owned()),
                KeyValue::new("estafeta.target_id", target.id.as_str().to_owned()),
            ],
        );
        let Some(span) = span else {
            // A trace not recorded here still reaches the receiver whole.
            let passed = std::str::from_utf8(parent).ok();
            return self.attempt(target, keys, msg, now_secs, passed).await;
        };
        self.send_in(target, keys, msg, now_secs, span).await
    }

    /// [`Self::send`] as `span`, which ends with the attempt: its `traceparent` goes to the
    /// receiver, the answer's status and any failure are set on it. A batch's attempt comes
    /// here with its own span, linked to its events' traces.
    pub async fn send_in(
        &self,
        target: &Target,
        keys: &[SigningKey],
        msg: Message<'_>,
        now_secs: i64,
        span: crate::traces::Span,
    ) -> AttemptResult {
        use opentelemetry::KeyValue;
        let traceparent = span.traceparent();
        let r = self
            .attempt(target, keys, msg, now_secs, Some(&traceparent))
            .await;
        if let Some(status) = r.status {
            span.set(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        match &r.error {
            Some(e) => span.fail(e.clone()),
            None if r.status.is_none_or(|s| !(200..300).contains(&s)) => span.fail(""),
            None => {}
        }
        r
    }

    /// [`Self::send`], `traceparent` sent with the request when the event's trace is exported.
    async fn attempt(
        &self,
        target: &Target,
        keys: &[SigningKey],
        msg: Message<'_>,
        now_secs: i64,
        traceparent: Option<&str>,
    ) -> AttemptResult {
        let started = Instant::now();
        let fail = |error: String, refused: bool, sent: Option<http::HeaderMap>| {
            AttemptResult::failed(error, refused, started, sent)
        };
        let http = match self.pool_for(target) {
            Ok(h) => h,
            Err(e) => return fail(e, false, None),
        };
        let oauth = match &target.auth {
            Some(TargetAuth::OAuth2(o)) => Some(o),
            _ => None,
        };
        let mut lease = None;
        if let Some(o) = oauth {
            match self.tokens.get(&target.id, o, &http, self.timeout).await {
                Ok(l) => lease = Some(l),
                Err(e) => return fail(format!("oauth2_token: {e}"), false, None),
            }
        }
        let bearer = lease.as_ref().map(|l| &*l.token);
        let first = self
            .exchange(
                &http,
                target,
                keys,
                msg,
                now_secs,
                (bearer, traceparent),
                started,
            )
            .await;
        let (Some(o), Some(l), Some(401)) = (oauth, &lease, first.status) else {
            return first;
        };
        // The receiver refused the token: a cached one is replaced once; a token fetched for
        // this very attempt is not asked for again.
        self.tokens.refused(&target.id, o, &l.token).await;
        if l.fresh {
            return first;
        }
        match self.tokens.get(&target.id, o, &http, self.timeout).await {
            Ok(again) => {
                self.exchange(
                    &http,
                    target,
                    keys,
                    msg,
                    now_secs,
                    (Some(&again.token), traceparent),
                    started,
                )
                .await
            }
            Err(e) => fail(format!("oauth2_token: {e}"), false, first.sent),
        }
    }

    /// One request and its answer, bounded by the request timeout.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        http: &HttpClient,
        target: &Target,
        keys: &[SigningKey],
        msg: Message<'_>,
        now_secs: i64,
        (bearer, traceparent): (Option<&str>, Option<&str>),
        started: Instant,
    ) -> AttemptResult {
        let fail = |error: String, refused: bool, sent: Option<http::HeaderMap>| {
            AttemptResult::failed(error, refused, started, sent)
        };
        let mut request = match build_request(target, keys, msg, now_secs, bearer) {
            Ok(r) => r,
            Err(e) => return fail(e, true, None),
        };
        if let Some(tp) = traceparent.and_then(|tp| HeaderValue::from_str(tp).ok()) {
            request.headers_mut().insert("traceparent", tp);
        }
        // Cheap: the values are shared, not copied.
        let sent = Some(request.headers().clone());
        if !self.allow_private {
            if let Some(ip) = request.uri().host().and_then(literal_ip) {
                if !is_public(ip) {
                    return fail(
                        "the target address is private and refused".into(),
                        true,
                        sent,
                    );
                }
            }
        }
        let attempt = async {
            let response = http.request(request).await.map_err(|e| {
                let refused = is_refusal(&e);
                (describe(&e), refused)
            })?;
            let status = response.status().as_u16();
            let received = response.headers().clone();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
            let mut body = response.into_body();
            let mut snippet = Vec::new();
            while snippet.len() < RESPONSE_SNIPPET {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let take = data.len().min(RESPONSE_SNIPPET - snippet.len());
                            snippet.extend_from_slice(&data[..take]);
                        }
                    }
                    // The status is what counts; a broken body after it is not a failure.
                    Some(Err(_)) | None => break,
                }
            }
            Ok::<_, (String, bool)>((status, retry_after, snippet, received))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((status, retry_after, snippet, received))) => AttemptResult {
                status: Some(status),
                retry_after,
                error: None,
                refused: false,
                // What the receiver sent, shown as text: invalid UTF-8 and NUL replaced.
                response: (!snippet.is_empty()).then(|| crate::model::text::visible_text(&snippet)),
                latency: started.elapsed(),
                sent,
                received: Some(received),
            },
            Ok(Err((e, refused))) => fail(e, refused, sent),
            Err(_) => fail(
                format!("timed out after {} ms", self.timeout.as_millis()),
                false,
                sent,
            ),
        }
    }
}

/// The signed request of one attempt.
pub fn build_request(
    target: &Target,
    keys: &[SigningKey],
    msg: Message<'_>,
    now_secs: i64,
    bearer: Option<&str>,
) -> Result<http::Request<Full<Bytes>>, String> {
    // A chat-format target gets the platform's message (unless a transformation shaped the
    // request); what is signed is what is sent.
    let rendered = match msg.shaped {
        Some(_) => None,
        None => super::format::render(target.format, msg.event_type, msg.event_id, msg.body),
    };
    let (body, content_type, event_type): (&Bytes, Option<&[u8]>, &str) =
        match (msg.shaped, &rendered) {
            (Some(s), _) => (
                &s.body,
                s.content_type.as_deref().map(str::as_bytes),
                s.event_type.as_str(),
            ),
            (None, Some(b)) => (b, Some(b"application/json".as_slice()), msg.event_type),
            (None, None) => (
                msg.body,
                msg.content_type
                    .and_then(crate::model::event_meta::content_type),
                msg.event_type,
            ),
        };
    let mut b = match msg.shaped {
        Some(s) => http::Request::builder()
            .method(s.method.clone())
            .uri(s.url.as_str()),
        None => http::Request::post(target.url.as_str()),
    };
    let headers = b.headers_mut().ok_or("the target url is invalid")?;
    let custom: Box<dyn Iterator<Item = (&String, &String)>> = match msg.shaped {
        Some(s) => Box::new(s.headers.iter().map(|(k, v)| (k, v))),
        None => Box::new(target.headers.iter()),
    };
    for (k, v) in custom {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(v).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    if let Some(ct) = content_type {
        if let Ok(v) = HeaderValue::from_bytes(ct) {
            headers.insert(CONTENT_TYPE, v);
        }
    }
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("Estafeta/", env!("CARGO_PKG_VERSION"))),
    );
    let hv = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
    headers.insert("webhook-id", hv(msg.event_id)?);
    headers.insert("webhook-timestamp", hv(&now_secs.to_string())?);
    let key_refs: Vec<&SigningKey> = keys.iter().collect();
    headers.insert(
        "webhook-signature",
        hv(&signature_header(&key_refs, msg.event_id, now_secs, body))?,
    );
    headers.insert("estafeta-event-type", hv(event_type)?);
    match &target.auth {
        None => {}
        Some(TargetAuth::Bearer(t)) => {
            headers.insert(AUTHORIZATION, hv(&format!("Bearer {}", t.expose()))?);
        }
        Some(TargetAuth::Basic { username, password }) => {
            use base64::Engine;
            let raw = format!("{username}:{}", password.expose());
            let enc = base64::engine::general_purpose::STANDARD.encode(raw);
            headers.insert(AUTHORIZATION, hv(&format!("Basic {enc}"))?);
        }
        Some(TargetAuth::Header { name, value }) => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            headers.insert(name, hv(value.expose())?);
        }
        Some(TargetAuth::OAuth2(_)) => {
            let token = bearer.ok_or("no OAuth2 token was fetched for the request")?;
            headers.insert(AUTHORIZATION, hv(&format!("Bearer {token}"))?);
        }
    }
    b.body(Full::new(body.clone())).map_err(|e| e.to_string())
}

/// A client error as one line, with its causes (the top level alone says only "client error").
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    crate::telemetry::ErrorChain(e).to_string()
}
