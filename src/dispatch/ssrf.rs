//! The SSRF guard: target URLs may not reach the gateway's own network.
//!
//! A URL is checked when a target is saved (scheme, host, literal addresses) and again at every
//! connection: the client resolves names through [`GuardedResolver`], which drops forbidden
//! addresses, so a name that resolved to a public address at creation and to `127.0.0.1` later
//! (DNS rebinding) is still refused. `security.allow_private_targets = true` lifts the address
//! rules (tests, local demos); the scheme rule always holds.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("url is not a valid absolute URL")]
    Invalid,
    #[error("url must use http or https")]
    Scheme,
    #[error("url must not carry credentials; use the target's auth")]
    Credentials,
    #[error("url points to a private, loopback, link-local or metadata address")]
    Private,
}

/// Whether `ip` may be reached as a target.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata service
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let seg0 = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (seg0 & 0xfe00) == 0xfc00 // unique local, includes fd00:ec2::254 (metadata)
        || (seg0 & 0xffc0) == 0xfe80 // link local
        || (seg0 == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (seg0 == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64 can reach IPv4 internals
}

/// Checks a target URL; returns it parsed.
pub fn check_url(url: &str, allow_private: bool) -> Result<http::Uri, UrlError> {
    if let Some((scheme, _)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::Scheme);
        }
    }
    let uri: http::Uri = url.parse().map_err(|_| UrlError::Invalid)?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(_) => return Err(UrlError::Scheme),
        None => return Err(UrlError::Invalid),
    }
    let authority = uri.authority().ok_or(UrlError::Invalid)?;
    if authority.as_str().contains('@') {
        return Err(UrlError::Credentials);
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(UrlError::Invalid);
    }
    if !allow_private {
        if let Some(ip) = literal_ip(host) {
            if !is_public(ip) {
                return Err(UrlError::Private);
            }
        } else if host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost")
        {
            return Err(UrlError::Private);
        }
    }
    Ok(uri)
}

/// The address in a URL host, if it is a literal (`[::1]` included).
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A DNS resolver for the delivery client that drops forbidden addresses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
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
                    "the target's name resolves only to private addresses",
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            assert!(
                !is_public(bad.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{bad}"
            );
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(
                is_public(good.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))),
                "{good}"
            );
        }
    }

    #[test]
    fn urls() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert_eq!(
            check_url("ftp://example.com/", false).err(),
            Some(UrlError::Scheme)
        );
        assert_eq!(
            check_url("http://127.0.0.1:80/", false).err(),
            Some(UrlError::Private)
        );
        assert_eq!(
            check_url("http://[::1]/", false).err(),
            Some(UrlError::Private)
        );
        assert_eq!(
            check_url("http://localhost:8080/", false).err(),
            Some(UrlError::Private)
        );
        assert_eq!(
            check_url("http://u:p@example.com/", false).err(),
            Some(UrlError::Credentials)
        );
        assert_eq!(check_url("not a url", false).err(), Some(UrlError::Invalid));
        assert_eq!(check_url("/relative", false).err(), Some(UrlError::Invalid));
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert_eq!(
            check_url("file:///etc/passwd", true).err(),
            Some(UrlError::Scheme)
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
