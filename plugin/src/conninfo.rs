//! Where a member can be reached: its address from a connection URL or from `conn_kwargs`.

use crate::node::Address;
use percent_encoding::percent_decode_str;

/// Why a member's connection details give no usable address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    #[error("connection URL {0:?} is not a URL: {1}")]
    NotAUrl(String, String),
    #[error("connection URL {0:?} does not use the postgres:// or postgresql:// scheme")]
    Scheme(String),
    #[error("{0:?} names no host")]
    NoHost(String),
    #[error("host {0:?} is a Unix socket directory, which other nodes cannot reach")]
    UnixSocket(String),
    #[error("port {0:?} is not a TCP port")]
    Port(String),
}

pub const DEFAULT_PORT: i32 = 5432;

/// Parses `postgres://[user[:pw]@]host[:port][/db][?...]`. Hosts are lower-cased (as the
/// reference's `urlparse(...).hostname` does, so rows it wrote are recognised), IPv6 literals
/// lose their brackets, percent-encoding is decoded.
pub fn parse_conn_url(text: &str) -> Result<Address, ConnError> {
    // Fast path for the shape HA managers write: scheme://host[:port][/...] with a plain host.
    if let Some(addr) = fast_path(text) {
        return Ok(addr);
    }
    let url = url::Url::parse(text).map_err(|e| ConnError::NotAUrl(text.into(), e.to_string()))?;
    if url.scheme() != "postgres" && url.scheme() != "postgresql" {
        return Err(ConnError::Scheme(text.into()));
    }
    let host = match url.host() {
        None => return Err(ConnError::NoHost(text.into())),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(url::Host::Domain(d)) => percent_decode_str(d).decode_utf8_lossy().to_lowercase(),
    };
    let port = url.port().map(i32::from).unwrap_or(DEFAULT_PORT);
    check_host(host, port, text)
}

/// `conn_kwargs: {host, port}` as a member may publish instead of a URL.
pub fn parse_conn_kwargs(host: Option<&str>, port: Option<&str>) -> Result<Address, ConnError> {
    let host = host.map(str::trim).unwrap_or("");
    let port = match port.map(str::trim) {
        None | Some("") => DEFAULT_PORT,
        Some(p) => parse_port(p).ok_or_else(|| ConnError::Port(p.into()))?,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    check_host(host.to_lowercase(), port, host)
}

fn check_host(host: String, port: i32, source: &str) -> Result<Address, ConnError> {
    if host.is_empty() {
        return Err(ConnError::NoHost(source.into()));
    }
    if (host.starts_with('/') || host.starts_with('@')) && !crate::compat::REFERENCE_PORT {
        return Err(ConnError::UnixSocket(host));
    }
    Ok(Address { host, port })
}

fn parse_port(p: &str) -> Option<i32> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i32 = p.parse().ok()?;
    (1..=65535).contains(&n).then_some(n)
}

/// Handles `postgres://host[:port][/rest]` where host is plain ASCII letters, digits, dots and
/// dashes (the common case on every heartbeat) without building a full URL; anything else goes
/// to the `url` crate.
fn fast_path(text: &str) -> Option<Address> {
    let rest = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, parse_port(p)?),
        None => (authority, DEFAULT_PORT),
    };
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if !plain || host.starts_with('.') {
        return None;
    }
    // Dotted-decimal is left to the url crate when it could be a non-canonical IPv4 form.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.split('.').count() != 4 {
        return None;
    }
    Some(Address {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(h: &str, p: i32) -> Address {
        Address::new(h, p)
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_conn_url("postgres://10.0.0.1:5433/postgres"),
            Ok(addr("10.0.0.1", 5433))
        );
        assert_eq!(
            parse_conn_url("postgresql://u:p@Host.Example:6432/db?sslmode=require"),
            Ok(addr("host.example", 6432))
        );
        assert_eq!(parse_conn_url("postgres://db1"), Ok(addr("db1", 5432)));
        assert_eq!(
            parse_conn_url("postgres://[::1]:5434/x"),
            Ok(addr("::1", 5434))
        );
        assert_eq!(
            parse_conn_url("postgres://[FE80::1]/x"),
            Ok(addr("fe80::1", 5432))
        );
        assert_eq!(
            parse_conn_url("postgres://my%2Dhost:5432/x"),
            Ok(addr("my-host", 5432))
        );
    }

    #[test]
    fn bad_urls_are_errors_not_panics() {
        assert!(matches!(
            parse_conn_url("http://x/"),
            Err(ConnError::Scheme(_))
        ));
        assert!(matches!(
            parse_conn_url("not a url"),
            Err(ConnError::NotAUrl(..))
        ));
        assert!(parse_conn_url("postgres://h:99999/x").is_err());
        assert!(parse_conn_url("postgres://h:abc/x").is_err());
        assert!(matches!(
            parse_conn_url("postgres:///db"),
            Err(ConnError::NoHost(_))
        ));
        assert!(matches!(
            parse_conn_url("postgres://%2Fvar%2Frun%2Fpostgresql/db"),
            Err(ConnError::UnixSocket(_))
        ));
        assert!(parse_conn_url("").is_err());
        assert!(parse_conn_url("postgres://[::1/x").is_err());
    }

    #[test]
    fn kwargs() {
        assert_eq!(
            parse_conn_kwargs(Some("10.0.2.2"), Some("5432")),
            Ok(addr("10.0.2.2", 5432))
        );
        assert_eq!(parse_conn_kwargs(Some("H"), None), Ok(addr("h", 5432)));
        assert!(matches!(
            parse_conn_kwargs(Some("/tmp"), None),
            Err(ConnError::UnixSocket(_))
        ));
        assert!(matches!(
            parse_conn_kwargs(Some(""), None),
            Err(ConnError::NoHost(_))
        ));
        assert!(matches!(
            parse_conn_kwargs(Some("h"), Some("0")),
            Err(ConnError::Port(_))
        ));
    }
}
