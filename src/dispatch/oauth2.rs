//! OAuth2 client credentials for targets: a token is fetched once per target (concurrent
//! deliveries wait for the same fetch), kept until shortly before it expires (the smaller of
//! 10 % of its lifetime and 60 s), and dropped when the receiver answers 401 to it, so the
//! next attempt fetches a new one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Full, Limited};
use moka::future::Cache;
use moka::ops::compute::Op;

use crate::model::TargetId;
use crate::model::auth::{ClientAuthMethod, OAuth2Client};

use super::pool::HttpClient;

/// Largest token endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// How long a token without `expires_in` is kept.
const UNSTATED_LIFETIME: Duration = Duration::from_secs(300);
/// At most this long before its expiry a token is replaced.
const EARLY: Duration = Duration::from_secs(60);
/// Tokens kept at once (one per target with OAuth2).
const MAX_TOKENS: u64 = 100_000;

/// Why no token could be had: the attempt fails with `oauth2_token: <this>` and is retried
/// like any failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("the token endpoint could not be reached: {0}")]
    Unreachable(String),
    #[error("the token endpoint did not answer within {0} ms")]
    TimedOut(u128),
    #[error("the token endpoint answered {status}{detail}")]
    Refused { status: u16, detail: String },
    #[error("the token endpoint's answer is not usable: {0}")]
    Malformed(String),
}

/// A token and how long it is used.
#[derive(Clone)]
struct Token {
    value: Arc<str>,
    used_for: Duration,
}

/// Which target and which credentials a token is for: a change of credentials is a new key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    target: TargetId,
    client: [u8; 32],
}

struct Lifetime;

impl moka::Expiry<TokenKey, Token> for Lifetime {
    fn expire_after_create(&self, _: &TokenKey, t: &Token, _: Instant) -> Option<Duration> {
        Some(t.used_for)
    }
}

/// The tokens of one instance's deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    cache: Cache<TokenKey, Token>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("held", &self.cache.entry_count())
            .finish()
    }
}

/// A token for one attempt, and whether it was fetched for it (a fresh token that gets a 401
/// is not fetched again).
#[derive(Debug, Clone)]
pub struct Lease {
    pub token: Arc<str>,
    pub fresh: bool,
}

impl Default for Tokens {
    fn default() -> Tokens {
        Tokens {
            cache: Cache::builder()
                .max_capacity(MAX_TOKENS)
                .expire_after(Lifetime)
                .build(),
        }
    }
}

impl Tokens {
    /// The target's token: the cached one, or one fetched now (once for every attempt that
    /// asks meanwhile).
    pub async fn get(
        &self,
        target: &TargetId,
        oauth: &OAuth2Client,
        http: &HttpClient,
        timeout: Duration,
    ) -> Result<Lease, TokenError> {
        let entry = self
            .cache
            .entry(key(target, oauth))
            .or_try_insert_with(fetch(http, oauth, timeout))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(Lease {
            fresh: entry.is_fresh(),
            token: entry.into_value().value,
        })
    }

    /// Drops `used` after the receiver refused it, unless another attempt already replaced it.
    pub async fn refused(&self, target: &TargetId, oauth: &OAuth2Client, used: &str) {
        self.cache
            .entry(key(target, oauth))
            .and_compute_with(|held| async move {
                match held {
                    Some(e) if &*e.value().value == used => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
    }
}

fn key(target: &TargetId, o: &OAuth2Client) -> TokenKey {
    let method = match o.method {
        ClientAuthMethod::ClientSecretBasic => "basic",
        ClientAuthMethod::ClientSecretPost => "post",
    };
    TokenKey {
        target: target.clone(),
        client: crate::model::target_tls::digest(&[
            Some(o.token_url.as_str()),
            Some(o.client_id.as_str()),
            Some(o.client_secret.expose()),
            o.scope.as_deref(),
            o.audience.as_deref(),
            Some(method),
        ]),
    }
}

/// How long a token of `lifetime` is used: until the smaller of 10 % of its lifetime and
/// [`EARLY`] before it expires.
fn used_for(lifetime: Duration) -> Duration {
    lifetime.saturating_sub((lifetime / 10).min(EARLY))
}

/// Fetches a token (client credentials grant, RFC 6749 §4.4).
async fn fetch(
    http: &HttpClient,
    o: &OAuth2Client,
    timeout: Duration,
) -> Result<Token, TokenError> {
    let outcome = tokio::time::timeout(timeout, exchange(http, o)).await;
    let result = match outcome {
        Ok(r) => r,
        Err(_) => Err(TokenError::TimedOut(timeout.as_millis())),
    };
    crate::telemetry::oauth2_token_fetch(result.is_ok());
    result
}

async fn exchange(http: &HttpClient, o: &OAuth2Client) -> Result<Token, TokenError> {
    let mut form = form_urlencoded_pairs(o);
    let mut request = http::Request::post(o.token_url.as_str())
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json");
    match o.method {
        ClientAuthMethod::ClientSecretBasic => {
            use base64::Engine;
            // RFC 6749 §2.3.1: each part form-encoded before it is joined and encoded.
            let raw = format!(
                "{}:{}",
                form_encode(&o.client_id),
                form_encode(o.client_secret.expose())
            );
            let basic = base64::engine::general_purpose::STANDARD.encode(raw);
            request = request.header(AUTHORIZATION, format!("Basic {basic}"));
        }
        ClientAuthMethod::ClientSecretPost => {
            form.push(("client_id", o.client_id.clone()));
            form.push(("client_secret", o.client_secret.expose().to_owned()));
        }
    }
    let body = serde_urlencoded::to_string(&form)
        .map_err(|e| TokenError::Malformed(format!("the request form: {e}")))?;
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| TokenError::Malformed(format!("the request: {e}")))?;
    let response = http
        .request(request)
        .await
        .map_err(|e| TokenError::Unreachable(crate::telemetry::ErrorChain(&e).to_string()))?;
    let status = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| TokenError::Malformed(format!("its body could not be read: {e}")))?
        .to_bytes();
    if !(200..300).contains(&status) {
        return Err(TokenError::Refused {
            status,
            detail: refusal_detail(&bytes),
        });
    }
    parse_token(&bytes)
}

fn form_urlencoded_pairs(o: &OAuth2Client) -> Vec<(&'static str, String)> {
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    if let Some(s) = &o.scope {
        form.push(("scope", s.clone()));
    }
    if let Some(a) = &o.audience {
        form.push(("audience", a.clone()));
    }
    form
}

fn form_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// What a refusal says: RFC 6749 §5.2's `error` and `error_description`, else nothing (the
/// body of a refusal may echo what was sent).
fn refusal_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Refusal {
        error: Option<String>,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<Refusal>(body) {
        Ok(Refusal {
            error: Some(e),
            error_description,
        }) => {
            let text = match error_description {
                Some(d) => format!(": {e} ({d})"),
                None => format!(": {e}"),
            };
            crate::model::text::visible_text(text.as_bytes())
                .chars()
                .take(300)
                .collect()
        }
        _ => String::new(),
    }
}

/// An access token answer (RFC 6749 §5.1).
fn parse_token(body: &[u8]) -> Result<Token, TokenError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
    }
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| TokenError::Malformed(format!("not a JSON object ({e})")))?;
    let token = a
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Malformed("no access_token".into()))?;
    if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err(TokenError::Malformed(
            "the access_token cannot be sent in a header".into(),
        ));
    }
    if let Some(kind) = a.token_type.filter(|k| !k.eq_ignore_ascii_case("bearer")) {
        return Err(TokenError::Malformed(format!(
            "token_type {:?} is not bearer",
            kind.chars().take(40).collect::<String>()
        )));
    }
    // Some servers send the number as a string.
    let lifetime = match a.expires_in {
        None | Some(serde_json::Value::Null) => UNSTATED_LIFETIME,
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| TokenError::Malformed("expires_in is not a whole number".into()))?,
        Some(serde_json::Value::String(s)) => s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| TokenError::Malformed("expires_in is not a whole number".into()))?,
        Some(_) => {
            return Err(TokenError::Malformed(
                "expires_in is not a whole number".into(),
            ));
        }
    };
    Ok(Token {
        value: token.into(),
        used_for: used_for(lifetime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_early() {
        assert_eq!(
            used_for(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(used_for(Duration::from_secs(100)), Duration::from_secs(90));
        assert_eq!(used_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn answers_are_read_as_rfc_6749_says() {
        let t = parse_token(br#"{"access_token":"abc","token_type":"Bearer","expires_in":"120"}"#)
            .unwrap();
        assert_eq!(&*t.value, "abc");
        assert_eq!(t.used_for, Duration::from_secs(108));
        let t = parse_token(br#"{"access_token":"abc"}"#).unwrap();
        assert_eq!(t.used_for, used_for(UNSTATED_LIFETIME));
        let bad = |body: &[u8], what: &str| {
            let e = parse_token(body)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(what), "{e}");
        };
        bad(b"{}", "no access_token");
        bad(br#"{"access_token":"a","token_type":"mac"}"#, "not bearer");
        bad(br#"{"access_token":"a\nb"}"#, "header");
        bad(br#"{"access_token":"a","expires_in":-1}"#, "whole number");
        bad(b"\x00\xff", "not a JSON object");
        assert_eq!(
            refusal_detail(br#"{"error":"invalid_client","error_description":"bad secret"}"#),
            ": invalid_client (bad secret)"
        );
        assert_eq!(refusal_detail(b"<html>secret echo</html>"), "");
    }

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(form_encode("a b:c&d"), "a+b%3Ac%26d");
    }
}
