//! The SSRF guard: target URLs may not reach the gateway's own network.
//!
//! A URL is checked when a target is saved ([`crate::model::target::check_url`]: scheme, host,
//! literal addresses in every form the resolver accepts; then [`check_resolution`]: what its
//! name resolves to now) and again at every connection: the client resolves names through [`GuardedResolver`], which drops forbidden
//! addresses, so a name that resolved to a public address at creation and to `127.0.0.1` later
//! (DNS rebinding) is still refused. `security.allow_private_targets = true` lifts the address
//! rules (tests, local demos); the scheme rule always holds.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

pub use crate::model::target::{is_public, literal_ip};

/// The resolver's refusal of a name that resolves only to forbidden addresses. It travels in
/// an `io::Error` through the HTTP client, where [`is_refusal`] finds it again.
#[derive(Debug, thiserror::Error)]
#[error("the target's name resolves only to private addresses")]
pub struct Refused;

/// Whether `error`, or one of its sources, is the guard's [`Refused`].
pub fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<Refused>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.is::<Refused>()) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

/// A DNS resolver for the delivery client that drops forbidden addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

/// How long a save waits for DNS before giving up on the check (the connect-time guard stays).
const CREATION_LOOKUP: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses a target URL whose host name resolves, now, to any forbidden address (a name
/// mapped to loopback in `/etc/hosts`, an internal DNS name). A name that does not resolve
/// (yet) is accepted: a receiver's DNS may be set up after its target, and the resolver at
/// connect time refuses what it comes to resolve to.
pub async fn check_resolution(url: &str) -> Result<(), Refused> {
    // Literal addresses were judged without DNS by `check_url`; only names are looked up.
    let parsed = url::Url::parse(url).ok();
    let Some(url::Host::Domain(host)) = parsed.as_ref().and_then(url::Url::host) else {
        return Ok(());
    };
    match tokio::time::timeout(CREATION_LOOKUP, tokio::net::lookup_host((host, 0))).await {
        Ok(Ok(mut found)) => {
            if found.any(|a| !is_public(a.ip())) {
                Err(Refused)
            } else {
                Ok(())
            }
        }
        Ok(Err(_)) | Err(_) => Ok(()),
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, std::io::Error>> + Send>>;

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    Refused,
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_private_addresses_are_refused_at_creation() {
        // `localhost` comes from /etc/hosts; the other two need no DNS at all.
        assert!(check_resolution("http://localhost:9/").await.is_err());
        assert!(check_resolution("http://8.8.8.8/").await.is_ok());
        assert!(
            check_resolution("http://no-such-name.invalid/")
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn resolver_drops_private_answers() {
        use tower::ServiceExt;
        let name: Name = match "localhost".parse() {
            Ok(n) => n,
            Err(_) => panic!("name"),
        };
        let refused = GuardedResolver {
            allow_private: false,
        }
        .oneshot(name.clone())
        .await;
        assert!(refused.as_ref().err().is_some_and(|e| is_refusal(e)));
        assert_eq!(
            refused.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::PermissionDenied)
        );
        let allowed = GuardedResolver {
            allow_private: true,
        }
        .oneshot(name)
        .await;
        assert!(allowed.map(|a| a.count() > 0).unwrap_or(false));
    }
}
