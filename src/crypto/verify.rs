//! Sender signature schemes of inbound webhooks.
//!
//! | scheme | header(s) | signed bytes | key |
//! | --- | --- | --- | --- |
//! | `standard_webhooks` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …` | `<id>.<timestamp>.<body>` | base64 part of `whsec_…` |
//! | `github` | `X-Hub-Signature-256: sha256=<hex>` | body | the secret's bytes |
//! | `stripe` | `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]` | `<ts>.<body>` | the secret's bytes |
//! | `hmac_sha256_hex` | configurable, default `X-Webhook-Signature: <hex>` | body | the secret's bytes |
//! | `none` | — (the URL token alone) | — | — |
//!
//! Timestamped schemes refuse a timestamp outside the tolerance, in the past or the future.
//! Every failure is the same [`VerifyError`] to the caller's client: no hint of which part
//! failed.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

use crate::crypto::secrets_equal;
use crate::model::Scheme;
use crate::model::source::standard_webhooks_key;

/// Default header of `hmac_sha256_hex`.
pub const DEFAULT_HMAC_HEADER: &str = "x-webhook-signature";
/// Default tolerance of timestamped schemes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Why a request is refused (the client sees one answer for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature headers missing or malformed")]
    Missing,
    #[error("signature does not match")]
    Mismatch,
    #[error("timestamp outside the tolerance")]
    Stale,
}

/// Why verification settings cannot be used (a stored record that breaks today's rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("a standard_webhooks secret must be `whsec_<base64>`")]
    StandardWebhooksSecret,
    #[error("this scheme needs a secret")]
    NoSecret,
    #[error("{0:?} is not a valid header name")]
    Header(String),
}

/// What a verified request says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// The sender's delivery id, when the scheme carries one: the idempotency key.
    pub delivery_id: Option<String>,
}

/// A source's verification settings, secret opened.
#[derive(Clone)]
pub struct Verifier {
    pub scheme: Scheme,
    secret: Vec<u8>,
    /// Lower-case header name of `hmac_sha256_hex`.
    header: String,
    tolerance: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("header", &self.header)
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn fresh(ts: i64, now: i64, tolerance: Duration) -> Result<(), VerifyError> {
    if ts.abs_diff(now) > tolerance.as_secs() {
        return Err(VerifyError::Stale);
    }
    Ok(())
}

impl Verifier {
    /// Checks the settings; `secret` is required by every scheme but `none`, and must be a
    /// `whsec_<base64>` secret for `standard_webhooks`.
    pub fn new(
        scheme: Scheme,
        secret: &str,
        header: Option<&str>,
        tolerance: Option<Duration>,
    ) -> Result<Verifier, SettingsError> {
        let secret = match scheme {
            Scheme::None => Vec::new(),
            Scheme::StandardWebhooks => {
                standard_webhooks_key(secret).ok_or(SettingsError::StandardWebhooksSecret)?
            }
            _ if secret.is_empty() => return Err(SettingsError::NoSecret),
            _ => secret.as_bytes().to_vec(),
        };
        let header = header.unwrap_or(DEFAULT_HMAC_HEADER).to_ascii_lowercase();
        http::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| SettingsError::Header(header.clone()))?;
        Ok(Verifier {
            scheme,
            secret,
            header,
            tolerance: tolerance.unwrap_or(DEFAULT_TOLERANCE),
        })
    }

    /// How far a timestamp may be from now.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies a request's raw body and headers at `now` (Unix seconds).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, VerifyError> {
        match self.scheme {
            Scheme::None => Ok(Verified::default()),
            Scheme::StandardWebhooks => self.standard_webhooks(headers, body, now),
            Scheme::Github => {
                let sig = header(headers, "x-hub-signature-256").ok_or(VerifyError::Missing)?;
                let given = sig
                    .strip_prefix("sha256=")
                    .and_then(decode_hex)
                    .ok_or(VerifyError::Missing)?;
                if !secrets_equal(&given, &mac(&self.secret, &[body])) {
                    return Err(VerifyError::Mismatch);
                }
                Ok(Verified {
                    delivery_id: header(headers, "x-github-delivery").map(str::to_owned),
                })
            }
            Scheme::Stripe => {
                let sig = header(headers, "stripe-signature").ok_or(VerifyError::Missing)?;
                let mut ts = None;
                let mut candidates = Vec::new();
                for part in sig.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", v)) => ts = v.parse::<i64>().ok(),
                        Some(("v1", v)) => candidates.extend(decode_hex(v)),
                        _ => {}
                    }
                }
                let ts = ts.ok_or(VerifyError::Missing)?;
                if candidates.is_empty() {
                    return Err(VerifyError::Missing);
                }
                let expected = mac(&self.secret, &[ts.to_string().as_bytes(), b".", body]);
                // Every candidate is compared, so timing does not tell which one matched.
                let matched = candidates
                    .iter()
                    .fold(false, |ok, c| secrets_equal(c, &expected) | ok);
                if !matched {
                    return Err(VerifyError::Mismatch);
                }
                fresh(ts, now, self.tolerance)?;
                Ok(Verified::default())
            }
            Scheme::HmacSha256Hex => {
                let sig = header(headers, &self.header).ok_or(VerifyError::Missing)?;
                let hex = sig.strip_prefix("sha256=").unwrap_or(sig);
                let given = decode_hex(&hex.to_ascii_lowercase()).ok_or(VerifyError::Missing)?;
                if !secrets_equal(&given, &mac(&self.secret, &[body])) {
                    return Err(VerifyError::Mismatch);
                }
                Ok(Verified::default())
            }
        }
    }

    fn standard_webhooks(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, VerifyError> {
        let id = header(headers, "webhook-id").ok_or(VerifyError::Missing)?;
        let ts_text = header(headers, "webhook-timestamp").ok_or(VerifyError::Missing)?;
        let ts: i64 = ts_text.parse().map_err(|_| VerifyError::Missing)?;
        let sigs = header(headers, "webhook-signature").ok_or(VerifyError::Missing)?;
        let expected = mac(
            &self.secret,
            &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body],
        );
        let matched = sigs
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .fold(false, |ok, c| secrets_equal(&c, &expected) | ok);
        if !matched {
            return Err(VerifyError::Mismatch);
        }
        fresh(ts, now, self.tolerance)?;
        Ok(Verified {
            delivery_id: Some(id.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                h.append(k, v);
            }
        }
        h
    }

    fn verifier(scheme: Scheme, secret: &str) -> Verifier {
        match Verifier::new(scheme, secret, None, None) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn standard_webhooks_matches_the_spec_vector_and_refuses_the_rest() {
        let v = verifier(
            Scheme::StandardWebhooks,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        let body = br#"{"test": 2432232314}"#;
        let good = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bm9wZQ== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        let ok = v.verify(&headers(&good), body, 1614265330 + 10);
        assert_eq!(
            ok.map(|v| v.delivery_id),
            Ok(Some("msg_p5jXN8AQM9LWM0D4loKWxJek".into()))
        );
        assert_eq!(
            v.verify(&headers(&good), b"{\"test\": 1}", 1614265330),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v.verify(&headers(&good), body, 1614265330 + 301),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            v.verify(&headers(&good), body, 1614265330 - 301),
            Err(VerifyError::Stale),
            "future timestamps too"
        );
        assert_eq!(
            v.verify(&headers(&good[..2]), body, 1614265330),
            Err(VerifyError::Missing)
        );
        let other = verifier(
            Scheme::StandardWebhooks,
            "whsec_c2VjcmV0LW90aGVyLXNlY3JldC1vdGhlcg==",
        );
        assert_eq!(
            other.verify(&headers(&good), body, 1614265330),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn github_matches_its_documented_example() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let v = verifier(Scheme::Github, "It's a Secret to Everybody");
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = headers(&[
            ("x-hub-signature-256", sig),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        assert_eq!(
            v.verify(&h, b"Hello, World!", 0).map(|v| v.delivery_id),
            Ok(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()))
        );
        assert_eq!(
            v.verify(&h, b"Hello, World?", 0),
            Err(VerifyError::Mismatch)
        );
        let wrong = verifier(Scheme::Github, "another secret");
        assert_eq!(
            wrong.verify(&h, b"Hello, World!", 0),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v.verify(&headers(&[("x-hub-signature-256", "sha1=00")]), b"", 0),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn stripe_checks_signature_then_tolerance() {
        let secret = "whsec_stripe_test_secret";
        let v = verifier(Scheme::Stripe, secret);
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let ts = 1_700_000_000i64;
        let hex: String = mac(secret.as_bytes(), &[ts.to_string().as_bytes(), b".", body])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sig = format!("t={ts},v1=deadbeef,v1={hex},v0=abc");
        let h = headers(&[("stripe-signature", &sig)]);
        assert_eq!(v.verify(&h, body, ts + 5), Ok(Verified::default()));
        assert_eq!(v.verify(&h, b"{}", ts), Err(VerifyError::Mismatch));
        assert_eq!(v.verify(&h, body, ts + 400), Err(VerifyError::Stale));
        assert_eq!(
            v.verify(&headers(&[("stripe-signature", "v1=00")]), body, ts),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn plain_hex_hmac_in_a_chosen_header() {
        let v = match Verifier::new(Scheme::HmacSha256Hex, "s3cret", Some("X-Signature"), None) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let hex: String = mac(b"s3cret", &[b"payload"])
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert!(
            v.verify(&headers(&[("x-signature", &hex)]), b"payload", 0)
                .is_ok(),
            "upper-case hex accepted"
        );
        assert_eq!(
            v.verify(&headers(&[("x-signature", &hex)]), b"payload!", 0),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            v.verify(&headers(&[("x-webhook-signature", &hex)]), b"payload", 0),
            Err(VerifyError::Missing)
        );
        let default = verifier(Scheme::HmacSha256Hex, "s3cret");
        assert!(
            default
                .verify(
                    &headers(&[("X-Webhook-Signature", &format!("sha256={hex}"))]),
                    b"payload",
                    0
                )
                .is_ok()
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(Verifier::new(Scheme::Github, "", None, None).is_err());
        assert!(Verifier::new(Scheme::StandardWebhooks, "whsec_!!!", None, None).is_err());
        assert!(Verifier::new(Scheme::HmacSha256Hex, "k", Some("bad header"), None).is_err());
        assert_eq!(
            verifier(Scheme::None, "").verify(&HeaderMap::new(), b"x", 0),
            Ok(Verified::default())
        );
        assert!(
            !format!("{:?}", verifier(Scheme::Github, "hidden-value")).contains("hidden-value")
        );
    }
}
