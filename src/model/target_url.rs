//! Target URLs and the addresses they may reach: the SSRF guard's rules (private, loopback,
//! link-local and special ranges, their embedded and numeric forms, local names).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::invalid::Invalid;

/// Longest target URL.
pub const MAX_URL: usize = 2048;

/// Why a target URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    Invalid,
    Scheme,
    Credentials,
    TooLong,
    Private,
    /// The host's name resolves (now) to a private address; found by resolving at save time.
    ResolvesPrivate,
}

impl UrlProblem {
    fn message(self) -> String {
        match self {
            UrlProblem::Invalid => "is not a valid absolute URL".into(),
            UrlProblem::Scheme => "must use http or https".into(),
            UrlProblem::Credentials => "must not carry credentials; use the target's auth".into(),
            UrlProblem::TooLong => format!("must be at most {MAX_URL} characters"),
            UrlProblem::Private => {
                "points to a private, loopback, link-local or metadata address".into()
            }
            UrlProblem::ResolvesPrivate => {
                "resolves to a private, loopback, link-local or metadata address".into()
            }
        }
    }
}

impl UrlProblem {
    /// The refusal of the URL.
    pub fn invalid(self) -> Invalid {
        Invalid::new(self.message())
    }
}

/// A target URL: absolute `http` or `https`, no credentials, at most 2048 characters.
/// Whether its host may be private is checked by [`TargetUrl::check_reachable`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TargetUrl(String);

impl TryFrom<String> for TargetUrl {
    type Error = Invalid;
    fn try_from(text: String) -> Result<TargetUrl, Invalid> {
        TargetUrl::parse(&text).map_err(UrlProblem::invalid)
    }
}

impl From<TargetUrl> for String {
    fn from(u: TargetUrl) -> String {
        u.0
    }
}

impl TargetUrl {
    pub fn parse(text: &str) -> Result<TargetUrl, UrlProblem> {
        if text.chars().count() > MAX_URL {
            return Err(UrlProblem::TooLong);
        }
        check_url(text, true)?;
        Ok(TargetUrl(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is an `https` URL (the scheme is checked case-insensitively, as URLs have it).
    pub fn is_https(&self) -> bool {
        self.0
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// Refuses a private, loopback or link-local host unless `allow_private`.
    pub fn check_reachable(&self, allow_private: bool) -> Result<(), UrlProblem> {
        check_url(&self.0, allow_private).map(|_| ())
    }
}

impl std::fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TargetUrl({})", self.0)
    }
}

impl utoipa::PartialSchema for TargetUrl {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::Custom("uri".into())))
            .pattern(Some("^[Hh][Tt][Tt][Pp][Ss]?://[^@/?#]+([/?#].*)?$"))
            .min_length(Some(8))
            .max_length(Some(MAX_URL))
            .description(Some(
                "An absolute http or https URL without credentials. Unless the deployment allows private targets, its host must not be a private, loopback or link-local address.",
            ))
            .into()
    }
}

impl ToSchema for TargetUrl {
    fn name() -> std::borrow::Cow<'static, str> {
        "TargetUrl".into()
    }
}

/// Whether `ip` may be reached as a target. An IPv6 address that carries an IPv4 one
/// (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) is judged by the IPv4 address, which
/// is where a packet to it ends up.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 one stands for, by the transition scheme its prefix names.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let pair = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        return Some(pair(s[6], s[7])); // IPv4-compatible, ::a.b.c.d
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(pair(s[6], s[7])); // NAT64 well-known prefix, 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return Some(pair(s[1], s[2])); // 6to4, 2002:aabb:ccdd::/48
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some(pair(!s[6], !s[7])); // Teredo: the client's address, inverted
    }
    None
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

/// The address in a URL host, if it is a literal (`[::1]` included).
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The address a URL's host names without DNS, read by the WHATWG URL rules: besides
/// dotted quads they take `2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1` and `10.1` as
/// IPv4 addresses, as the C resolver does when the HTTP client connects to such a host.
/// `None` for a domain name (or no host).
pub fn host_address(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// Whether a domain name is reserved for this machine (RFC 6761), with or without the root's
/// trailing dot.
fn is_local_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Checks a target URL; returns it parsed.
pub fn check_url(url: &str, allow_private: bool) -> Result<http::Uri, UrlProblem> {
    if let Some((scheme, _)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err(UrlProblem::Scheme);
        }
    }
    let uri: http::Uri = url.parse().map_err(|_| UrlProblem::Invalid)?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(_) => return Err(UrlProblem::Scheme),
        None => return Err(UrlProblem::Invalid),
    }
    let authority = uri.authority().ok_or(UrlProblem::Invalid)?;
    if authority.as_str().contains('@') {
        return Err(UrlProblem::Credentials);
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(UrlProblem::Invalid);
    }
    // The WHATWG reading must agree that this is a URL with a host: the address check below
    // relies on it.
    let whatwg = url::Url::parse(url).map_err(|_| UrlProblem::Invalid)?;
    if whatwg.host().is_none() {
        return Err(UrlProblem::Invalid);
    }
    if !allow_private {
        match host_address(&whatwg) {
            Some(ip) if !is_public(ip) => return Err(UrlProblem::Private),
            Some(_) => {}
            None if is_local_name(host) => return Err(UrlProblem::Private),
            None => {}
        }
    }
    Ok(uri)
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
            Some(UrlProblem::Scheme)
        );
        assert_eq!(
            check_url("http://127.0.0.1:80/", false).err(),
            Some(UrlProblem::Private)
        );
        assert_eq!(
            check_url("http://[::1]/", false).err(),
            Some(UrlProblem::Private)
        );
        assert_eq!(
            check_url("http://localhost:8080/", false).err(),
            Some(UrlProblem::Private)
        );
        assert_eq!(
            check_url("http://u:p@example.com/", false).err(),
            Some(UrlProblem::Credentials)
        );
        assert_eq!(
            check_url("not a url", false).err(),
            Some(UrlProblem::Invalid)
        );
        assert_eq!(
            check_url("/relative", false).err(),
            Some(UrlProblem::Invalid)
        );
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        assert_eq!(
            check_url("file:///etc/passwd", true).err(),
            Some(UrlProblem::Scheme)
        );
        assert_eq!(
            TargetUrl::parse(&format!("https://x/{}", "a".repeat(2048))).err(),
            Some(UrlProblem::TooLong)
        );
    }

    #[test]
    fn numeric_and_embedded_forms_of_private_addresses_are_refused() {
        for url in [
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://10.1/",
            "http://localhost./",
            "http://LOCALHOST./x",
            "http://a.localhost./",
            "http://[::127.0.0.1]/",
            "http://[::10.0.0.1]/",
            "http://[::a9fe:a9fe]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", // Teredo, client 127.0.0.1
            "http://[fd00:ec2::254]/",
        ] {
            assert_eq!(
                check_url(url, false).err(),
                Some(UrlProblem::Private),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url} with private allowed");
        }
        for url in [
            "http://8.8.8.8/",
            "http://134744072/",
            "http://[::8.8.8.8]/",
            "http://[64:ff9b::808:808]/",
            "http://[2002:808:808::]/",
            "http://[2606:4700::1111]/",
            "http://localhost.example.com/",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
    }
}
