//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, where the key is
//! the base64 part of the target's `whsec_…` secret. During a rotation the header carries one
//! signature per live secret, separated by spaces, so receivers on either secret accept it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::SigningSecret;

/// A secret ready to sign: its key bytes.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// The key a secret stands for.
    pub fn new(secret: &SigningSecret) -> SigningKey {
        SigningKey(secret.key())
    }

    /// The keys of `secrets`, in order.
    pub fn all(secrets: &[&SigningSecret]) -> Vec<SigningKey> {
        secrets.iter().map(|s| SigningKey::new(s)).collect()
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

    fn key(text: &str) -> Option<SigningKey> {
        SigningSecret::parse(text).ok().map(|s| SigningKey::new(&s))
    }

    #[test]
    fn matches_the_published_test_vector() {
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
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
    fn rotation_sends_both_signatures() {
        let a = SigningKey::new(&SigningSecret::from_random([1; 32]));
        let b = SigningKey::new(&SigningSecret::from_random([2; 32]));
        let h = signature_header(&[&a, &b], "m", 1, b"x");
        let parts: Vec<&str> = h.split(' ').collect();
        assert_eq!(parts, vec![a.sign("m", 1, b"x"), b.sign("m", 1, b"x")]);
    }
}
