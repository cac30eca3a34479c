//! Who a request came from, and how: the markers the listeners put on every routed request
//! (the peer's address, TLS), and the client behind them, believing forwarded headers only
//! from trusted proxies. Below the edge, so the pages, the ingest paths and the listeners
//! share one reading.

/// Set on the routed requests of the TLS listener: what reached the gateway over TLS (the
/// portal's cookies are `Secure` then).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Set on every routed request: the address of the connection's peer (a proxy's, behind one;
/// see [`Transport`] for who is believed about the client behind it).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

/// How a request reached the gateway: over TLS or not, and from which client. Forwarded
/// headers (`X-Forwarded-Proto`, `X-Forwarded-For`) are believed only from a peer listed in
/// `web.trusted_proxies`: any client can send them, and a client-sent `https` must not make a
/// cleartext listener's cookie `Secure`, nor a made-up address dodge the sign-in throttle.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// On the TLS listener, or forwarded as `https` by a trusted proxy: cookies are `Secure`.
    pub tls: bool,
    /// The client's address: the peer's, or the one a trusted proxy names.
    pub client: Option<std::net::IpAddr>,
}

/// How a request came: over TLS or not, from which client address; forwarded headers are
/// believed only from `trusted_proxies`.
pub fn transport_of(parts: &http::request::Parts, trusted_proxies: &[ipnet::IpNet]) -> Transport {
    {
        let on_tls = parts.extensions.get::<OverTls>().is_some();
        let peer = parts
            .extensions
            .get::<Peer>()
            .map(|p| p.0.ip().to_canonical());
        let trusted = |ip: &std::net::IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
        let Some(peer) = peer.filter(|p| trusted(p)) else {
            return Transport {
                tls: on_tls,
                client: peer,
            };
        };
        let forwarded_tls = parts
            .headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        // The client is the last address in the chain that is not one of our proxies: what
        // comes before it, the client itself could have written. An entry that is not an
        // address ends the walk at the proxy that wrote it.
        let entries: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let client = client_behind(peer, &entries, trusted);
        Transport {
            tls: on_tls || forwarded_tls,
            client: Some(client),
        }
    }
}

/// The client behind a trusted `peer`: walking `X-Forwarded-For` from the right, past our
/// own proxies, the first address that is not one; an entry that is not an address ends the
/// walk at the proxy that wrote it.
fn client_behind(
    peer: std::net::IpAddr,
    entries: &[&str],
    trusted: impl Fn(&std::net::IpAddr) -> bool,
) -> std::net::IpAddr {
    let mut client = peer;
    for entry in entries.iter().rev() {
        match forwarded_address(entry) {
            Some(ip) if trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => break,
        }
    }
    client
}

/// An `X-Forwarded-For` entry's address: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or
/// `[2001:db8::1]:4711`; IPv4-mapped IPv6 addresses count as IPv4.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))?;
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_last_address_our_proxies_did_not_write() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap_or([0, 0, 0, 0].into());
        let proxies = |a: &std::net::IpAddr| a.to_string().starts_with("10.");
        let peer = ip("10.0.0.1");
        let walk = |entries: &[&str]| client_behind(peer, entries, proxies);
        assert_eq!(walk(&["203.0.113.7"]), ip("203.0.113.7"));
        // What the client wrote before it is ignored.
        assert_eq!(
            walk(&["6.6.6.6", "203.0.113.7", "10.0.0.2"]),
            ip("203.0.113.7")
        );
        assert_eq!(walk(&["203.0.113.7:4711"]), ip("203.0.113.7"));
        assert_eq!(walk(&["[2001:db8::1]:4711"]), ip("2001:db8::1"));
        assert_eq!(walk(&["::ffff:203.0.113.7"]), ip("203.0.113.7"));
        // Garbage ends the walk at the proxy that passed it on, not at what precedes it.
        assert_eq!(walk(&["6.6.6.6", "unknown", "10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(walk(&[]), peer);
    }
}
