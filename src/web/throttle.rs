//! Sign-in throttling: after `web.signin_failures_per_minute` failed sign-ins from one client
//! address, or with one credential, in a minute, the console's and the portal's sign-in (and
//! the portal links) answer `429` with `Retry-After` until the minute is over.
//!
//! Each attempt is counted before its credential is checked, in one script (`signin_attempt`),
//! so parallel attempts cannot all pass a check that none of them has counted yet; a
//! successful sign-in gives its attempt back. The counters live in Redis, so every instance
//! counts the same attempts: a guesser spread over a load balancer's instances gets no more
//! tries. Addresses and credentials are kept only as keyed hashes; an IPv6 client counts by
//! its /64 (one host may hold a whole /64). There is no global counter: an attacker failing
//! on purpose can use up his own address's tries, never the operator's from another address
//! (behind a proxy, list it in `web.trusted_proxies`, or every client is the proxy).

use std::net::IpAddr;
use std::time::Duration;

use fred::prelude::*;
use serde::Deserialize;

use crate::crypto::Keys;
use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::SIGNIN_ATTEMPT;

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

/// An attempt that was counted: give it back with [`SignInThrottle::succeeded`].
#[derive(Debug)]
pub struct Attempt {
    counters: Vec<String>,
}

/// `signin_attempt`'s answer.
#[derive(Debug, Deserialize)]
struct Counted {
    allowed: bool,
    wait_ms: u64,
}

/// What an address counts as: itself, or its /64 for IPv6 (IPv4-mapped addresses are IPv4).
fn counted_as(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
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
            let hash = self.crypto.hash_token(&counted_as(ip)).to_hex();
            keys.push(self.keys.signin_failures(face, "addr", &hash));
        }
        if !credential.is_empty() {
            let hash = self.crypto.hash_token(credential).to_hex();
            keys.push(self.keys.signin_failures(face, "cred", &hash));
        }
        keys
    }

    /// Counts an attempt of `face` before its credential is checked: `Err(seconds to wait)`
    /// when the address or the credential has used up its tries of the window.
    pub async fn attempt(
        &self,
        face: &str,
        client: Option<IpAddr>,
        credential: &str,
    ) -> Result<Result<Attempt, u64>, fred::error::Error> {
        let counters = self.counters(face, client, credential);
        if counters.is_empty() {
            return Ok(Ok(Attempt { counters }));
        }
        let args = vec![
            "take".to_owned(),
            self.limit.to_string(),
            (WINDOW.as_millis() as u64).to_string(),
        ];
        let counted: Counted = SIGNIN_ATTEMPT
            .run(&self.redis, counters.clone(), args)
            .await
            .map_err(script_error)?;
        if counted.allowed {
            Ok(Ok(Attempt { counters }))
        } else {
            Ok(Err(counted.wait_ms.div_ceil(1000).max(1)))
        }
    }

    /// The attempt signed in: it gives its try back.
    pub async fn succeeded(&self, attempt: Attempt) -> Result<(), fred::error::Error> {
        if attempt.counters.is_empty() {
            return Ok(());
        }
        let args = vec!["refund".to_owned(), "0".to_owned(), "0".to_owned()];
        let _: Counted = SIGNIN_ATTEMPT
            .run(&self.redis, attempt.counters, args)
            .await
            .map_err(script_error)?;
        Ok(())
    }
}

/// A script failure as the Redis error the pages answer `503` for.
fn script_error(e: crate::redis::scripts::ScriptError) -> fred::error::Error {
    match e {
        crate::redis::scripts::ScriptError::Redis(e) => e,
        other => fred::error::Error::new(fred::error::ErrorKind::Unknown, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_count_as_hosts_and_ipv6_by_its_64() {
        let v4: IpAddr = [203, 0, 113, 7].into();
        assert_eq!(counted_as(v4), "203.0.113.7");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().unwrap_or(v4);
        assert_eq!(counted_as(mapped), "203.0.113.7");
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(v4);
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap_or(v4);
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(v4);
        assert_eq!(counted_as(a), counted_as(b));
        assert_ne!(counted_as(a), counted_as(c));
    }
}
