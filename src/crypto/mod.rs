//! Keys derived from the master key, and what they protect.
//!
//! The master key never touches data directly. HKDF-SHA256 derives one key per purpose, so a
//! leak of one derived key (say, the token-hash key) reveals nothing about sealed secrets:
//! - token hashing: tokens are stored only as HMAC-SHA256(token key, token);
//! - blind indexes: values we must look up but not store in clear (a tenant's external id);
//! - sealing: recoverable secrets are AES-256-GCM encrypted with a fresh random 96-bit nonce and
//!   bound to their record by associated data, stored as `v1.<base64url(nonce || ciphertext)>`.
//! - inbound signatures ([`verify`]): the schemes of sources and signed status pushes, checked
//!   in constant time.

pub mod verify;

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Version tag of the sealed format; a new scheme gets a new tag.
const SEALED_PREFIX: &str = "v1.";
const NONCE_LEN: usize = 12;

/// Failures of the cryptographic layer. None of them carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the operating system's random source failed")]
    Random,
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open with this master key (wrong key or tampered data)")]
    Open,
}

/// The derived keys of one deployment.
#[derive(Clone)]
pub struct Keys {
    /// HMAC state keyed for token hashing, cloned per use to skip the key schedule.
    token_mac: HmacSha256,
    /// HMAC state keyed for blind indexes.
    index_mac: HmacSha256,
    /// HMAC state keyed for the signatures of portal links.
    link_mac: HmacSha256,
    /// AEAD for recoverable secrets.
    seal: Aes256Gcm,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys([redacted])")
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"estafeta/v1"), master);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand(label, &mut out).is_err() {
        unreachable!("HKDF output length is fixed and valid");
    }
    out
}

fn keyed_mac(key: &[u8; 32]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length.
        Err(_) => unreachable!("HMAC takes any key length"),
    }
}

impl Keys {
    /// Derives every purpose key from the 32-byte master key.
    pub fn derive(master: &[u8; 32]) -> Keys {
        let seal_key = derive(master, b"seal");
        Keys {
            token_mac: keyed_mac(&derive(master, b"token-hash")),
            index_mac: keyed_mac(&derive(master, b"blind-index")),
            link_mac: keyed_mac(&derive(master, b"portal-link")),
            seal: Aes256Gcm::new(&seal_key.into()),
        }
    }

    /// The keyed hash under which a token is stored and looked up.
    pub fn hash_token(&self, token: &str) -> TokenHash {
        let mut mac = self.token_mac.clone();
        mac.update(token.as_bytes());
        TokenHash(mac.finalize().into_bytes().into())
    }

    /// A keyed hash of `value` within `domain`, hex, for lookups of values kept sealed.
    pub fn blind_index(&self, domain: &str, value: &str) -> String {
        let mut mac = self.index_mac.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The signature of a portal link's `message`, base64url: it proves the link was issued
    /// here, with the tenant and expiry it names.
    pub fn sign_link(&self, message: &str) -> String {
        let mut mac = self.link_mac.clone();
        mac.update(message.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Encrypts `plaintext`, bound to `context` (e.g. `tenant:<id>:external_id`).
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let ciphertext = self
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Malformed)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Decrypts a value made by [`Keys::seal`] with the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, CryptoError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(CryptoError::Malformed)?;
        let blob = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Malformed)?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        self.seal
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Open)
    }
}

/// HMAC-SHA256 of a bearer token: the only form in which tokens are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Lowercase hex, as used in Redis keys.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses the hex form back.
    pub fn from_hex(text: &str) -> Option<TokenHash> {
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(s, 16).ok()?;
        }
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines; the hash is not a secret, but keep it short.
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends the lowercase hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
}

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

/// A fresh random token: `prefix` then 256 random bits, base64url.
pub fn random_token(prefix: &str) -> Result<String, CryptoError> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Compares two secrets in constant time, without revealing their lengths: both sides are
/// hashed first, so the comparison always runs over 32 bytes.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    da.as_slice().ct_eq(db.as_slice()).into()
}

/// SHA-256 of `bytes`, hex (fingerprints, not secrets).
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> Keys {
        Keys::derive(&[byte; 32])
    }

    #[test]
    fn token_hash_is_keyed_and_stable() {
        let a = keys(1);
        assert_eq!(a.hash_token("tok"), a.hash_token("tok"));
        assert_ne!(a.hash_token("tok"), a.hash_token("tok2"));
        assert_ne!(a.hash_token("tok"), keys(2).hash_token("tok"));
        let h = a.hash_token("tok");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }

    #[test]
    fn token_hash_matches_rfc4231_construction() {
        // The derived key is opaque, so check the construction: HMAC-SHA256 over the token with
        // the HKDF-derived key equals a fresh HMAC computed independently.
        let master = [7u8; 32];
        let k = derive(&master, b"token-hash");
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&k).expect("any key length");
        mac.update(b"est_abc");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(Keys::derive(&master).hash_token("est_abc").0, expected);
    }

    #[test]
    fn seal_round_trips_with_fresh_nonces() -> anyhow::Result<()> {
        let k = keys(3);
        let s1 = k.seal(b"whsec_secret", "target:t1")?;
        let s2 = k.seal(b"whsec_secret", "target:t1")?;
        assert_ne!(s1, s2, "a fresh nonce each time");
        assert!(!s1.contains("whsec_secret"));
        assert_eq!(k.open(&s1, "target:t1")?, b"whsec_secret");
        assert_eq!(k.open(&s2, "target:t1")?, b"whsec_secret");
        Ok(())
    }

    #[test]
    fn sealed_value_is_bound_to_key_and_context() -> anyhow::Result<()> {
        let k = keys(3);
        let s = k.seal(b"secret", "target:t1")?;
        assert!(matches!(k.open(&s, "target:t2"), Err(CryptoError::Open)));
        assert!(matches!(
            keys(4).open(&s, "target:t1"),
            Err(CryptoError::Open)
        ));
        let mut tampered = s.clone();
        tampered.pop();
        tampered.push(if s.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open(&tampered, "target:t1").is_err());
        assert!(matches!(k.open("v2.xxx", "x"), Err(CryptoError::Malformed)));
        Ok(())
    }

    #[test]
    fn random_tokens_are_long_and_distinct() -> anyhow::Result<()> {
        let a = random_token("est_")?;
        let b = random_token("est_")?;
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
        Ok(())
    }

    #[test]
    fn secrets_compare() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
    }

    #[test]
    fn blind_index_separates_domains() {
        let k = keys(5);
        assert_eq!(k.blind_index("ext", "x"), k.blind_index("ext", "x"));
        assert_ne!(k.blind_index("ext", "x"), k.blind_index("other", "x"));
    }
}
