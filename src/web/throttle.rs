//! Sign-in throttling: after `web.signin_failures_per_minute` failed sign-ins from one client
//! address, or with one credential, in a minute, the console's and the portal's sign-in (and
//! the portal links) answer `429` with `Retry-After` until the minute is over.
//!
//! The counters live in Redis, so every instance counts the same failures: a guesser spread
//! over a load balancer's instances gets no more tries. Addresses and credentials are kept
//! only as keyed hashes. There is no global counter: an attacker failing on purpose can slow
//! down his own address, never lock the operator out.

use std::net::IpAddr;
use std::time::Duration;

use fred::prelude::*;
use fred::types::ExpireOptions;

use crate::crypto::Keys;
use crate::keyspace::Keyspace;

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);

/// The sign-in throttle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignInThrottle {
    redis: Client,
    keys: Keyspace,
    crypto: std::sync::Arc<Keys>,
    /// Failures allowed per window, per address and per credential.
    limit: u32,
}

impl SignInThrottle {
    pub fn new(
        redis: Client,
        keys: Keyspace,
        crypto: std::sync::Arc<Keys>,
        limit: u32,
    ) -> SignInThrottle {
        SignInThrottle {
            redis,
            keys,
            crypto,
            limit,
        }
    }

    /// The counter keys of one attempt: by address (when known) and by credential.
    fn counters(&self, face: &str, client: Option<IpAddr>, credential: &str) -> Vec<String> {
        let mut keys = Vec::with_capacity(2);
        if let Some(ip) = client {
            let hash = self.crypto.hash_token(&ip.to_string()).to_hex();
            keys.push(self.keys.signin_failures(face, "addr", &hash));
        }
        if !credential.is_empty() {
            let hash = self.crypto.hash_token(credential).to_hex();
            keys.push(self.keys.signin_failures(face, "cred", &hash));
        }
        keys
    }

    /// `Some(seconds to wait)` when the address or the credential has used up its failures
    /// of this minute; checked before the credential is.
    pub async fn refuses(
        &self,
        face: &str,
        client: Option<IpAddr>,
        credential: &str,
    ) -> Result<Option<u64>, fred::error::Error> {
        let keys = self.counters(face, client, credential);
        if keys.is_empty() {
            return Ok(None);
        }
        let pipeline = self.redis.pipeline();
        for k in &keys {
            let _: () = pipeline.get(k).await?;
            let _: () = pipeline.pttl(k).await?;
        }
        let replies: Vec<Option<i64>> = pipeline.all().await?;
        let mut wait_ms: Option<i64> = None;
        for pair in replies.chunks(2) {
            let (count, ttl) = (
                pair[0].unwrap_or(0),
                pair.get(1).copied().flatten().unwrap_or(-2),
            );
            if count >= i64::from(self.limit) {
                // A counter without a TTL cannot happen; wait a whole window if it does.
                let left = if ttl > 0 {
                    ttl
                } else {
                    WINDOW.as_millis() as i64
                };
                wait_ms = Some(wait_ms.map_or(left, |w| w.max(left)));
            }
        }
        Ok(wait_ms.map(|ms| (ms as u64).div_ceil(1000).max(1)))
    }

    /// Counts a failed sign-in against the address and the credential; the first failure of
    /// a window starts it.
    pub async fn failed(
        &self,
        face: &str,
        client: Option<IpAddr>,
        credential: &str,
    ) -> Result<(), fred::error::Error> {
        let keys = self.counters(face, client, credential);
        if keys.is_empty() {
            return Ok(());
        }
        let pipeline = self.redis.pipeline();
        for k in &keys {
            let _: () = pipeline.incr(k).await?;
            let _: () = pipeline
                .pexpire(k, WINDOW.as_millis() as i64, Some(ExpireOptions::NX))
                .await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }
}
