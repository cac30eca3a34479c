//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the key is
//! the base64 part of the target's `whsec_…` secret. During a rotation the header carries one
//! signature per live secret, separated by spaces, so receivers on either secret accept it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::CryptoError;

/// Prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (Svix uses 24; the spec allows 24 to 64).
const SECRET_BYTES: usize = 32;

/// A secret ready to sign: its key bytes.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Reads a `whsec_<base64>` secret.
    pub fn parse(secret: &str) -> Option<SigningKey> {
        let b64 = secret.strip_prefix(SECRET_PREFIX)?;
        let key = STANDARD.decode(b64).ok()?;
        (key.len() >= 16 && key.len() <= 64).then_some(SigningKey(key))
    }

    /// `v1,<base64>` for one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(m) => m,
            // HMAC accepts keys of any length; this arm cannot be reached.
            Err(_) => return String::new(),
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// A new random `whsec_…` secret.
pub fn generate_secret() -> Result<String, CryptoError> {
    let mut key = [0u8; SECRET_BYTES];
    getrandom::fill(&mut key).map_err(|_| CryptoError::Random)?;
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// The `webhook-signature` header value for all `keys`.
pub fn signature_header(keys: &[&SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| k.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_test_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        let key = key.map(|k| {
            k.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#,
            )
        });
        assert_eq!(
            key.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn generated_secrets_parse_and_differ() {
        let a = generate_secret().unwrap_or_default();
        let b = generate_secret().unwrap_or_default();
        assert!(a.starts_with("whsec_") && a != b);
        assert!(SigningKey::parse(&a).is_some());
        assert!(SigningKey::parse("whsec_!!").is_none());
        assert!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_none());
    }

    #[test]
    fn rotation_sends_both_signatures() {
        let a = SigningKey::parse(&generate_secret().unwrap_or_default());
        let b = SigningKey::parse(&generate_secret().unwrap_or_default());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("secrets did not parse")
        };
        let h = signature_header(&[&a, &b], "m", 1, b"x");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts, vec![a.sign("m", 1, b"x"), b.sign("m", 1, b"x")]);
    }
}
