//! `redis.url`: the schemes the gateway takes, the contract's cluster form, and redaction.

/// Why a `redis.url` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("expected redis://host:port, rediss://host:port or redis-cluster://host:port,...")]
    NoScheme,
    #[error("unsupported scheme `{0}`: use redis://, rediss:// or redis-cluster://")]
    Scheme(String),
    #[error("a cluster URL needs at least one host:port")]
    NoHost,
    /// What the Redis client says of the URL.
    #[error("{0}")]
    Client(String),
}

/// Validates a `redis.url` without connecting.
pub fn validate_url(url: &str) -> Result<(), UrlError> {
    let normalized = normalize_url(url)?;
    fred::types::config::Config::from_url(&normalized)
        .map(|_| ())
        .map_err(|e| UrlError::Client(e.details().to_string()))
}

/// Checks the scheme and turns the contract's `redis-cluster://h1:p1,h2:p2` into fred's
/// `redis-cluster://h1:p1?node=h2:p2`.
pub fn normalize_url(url: &str) -> Result<String, UrlError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(UrlError::NoScheme);
    };
    match scheme {
        "redis" | "rediss" => Ok(url.to_owned()),
        "redis-cluster" | "rediss-cluster" => {
            let (userinfo, hosts) = match rest.rfind('@') {
                Some(at) => (&rest[..=at], &rest[at + 1..]),
                None => ("", rest),
            };
            let (hosts, query) = match hosts.split_once('?') {
                Some((h, q)) => (h, Some(q)),
                None => (hosts, None),
            };
            let mut nodes = hosts
                .trim_end_matches('/')
                .split(',')
                .filter(|h| !h.is_empty());
            let first = nodes.next().ok_or(UrlError::NoHost)?;
            let mut params: Vec<String> = nodes.map(|n| format!("node={n}")).collect();
            if let Some(q) = query {
                params.push(q.to_owned());
            }
            let mut out = format!("{scheme}://{userinfo}{first}");
            if !params.is_empty() {
                out.push('?');
                out.push_str(&params.join("&"));
            }
            Ok(out)
        }
        other => Err(UrlError::Scheme(other.to_owned())),
    }
}

/// Whether the URL names a Redis Cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with("redis-cluster://") || url.starts_with("rediss-cluster://")
}

/// `url` without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated_and_redacted() {
        assert!(validate_url("redis://127.0.0.1:6379").is_ok());
        assert!(validate_url("redis-cluster://a:1,b:2").is_ok());
        assert_eq!(
            normalize_url("redis-cluster://u:p@a:1,b:2,c:3").as_deref(),
            Ok("redis-cluster://u:p@a:1?node=b:2&node=c:3")
        );
        assert_eq!(normalize_url("redis://h:1").as_deref(), Ok("redis://h:1"));
        assert_eq!(
            validate_url("http://x"),
            Err(UrlError::Scheme("http".into()))
        );
        assert_eq!(validate_url("redis-cluster://"), Err(UrlError::NoHost));
        assert_eq!(validate_url("localhost:6379"), Err(UrlError::NoScheme));
        assert_eq!(redact_url("redis://user:pw@host:1"), "redis://***@host:1");
        assert_eq!(redact_url("redis://host:1"), "redis://host:1");
    }
}
