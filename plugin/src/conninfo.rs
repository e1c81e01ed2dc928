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
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut n: i32 = 0;
    for b in p.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i32::from(b - b'0');
    }
    (1..=65535).contains(&n).then_some(n)
}

/// Handles `postgres://host[:port][/rest]` where host is plain ASCII letters, digits, dots and
/// dashes (the common case on every heartbeat) without building a full URL; anything else goes
/// to the `url` crate.
fn fast_path(text: &str) -> Option<Address> {
    let (host, port, upper) = scan_plain(text)?;
    let host = if upper {
        host.to_ascii_lowercase()
    } else {
        host.to_owned()
    };
    Some(Address { host, port })
}

/// The address of a URL in the plain form `fast_path` takes whose host is already lower case,
/// borrowed from the URL: exactly what `parse_conn_url` returns for it, without allocating.
/// None for any other URL (which may still parse: ask `parse_conn_url`).
pub fn plain_address(text: &str) -> Option<(&str, i32)> {
    match scan_plain(text)? {
        (host, port, false) => Some((host, port)),
        _ => None,
    }
}

const DIGIT: u8 = 1;
const DOT: u8 = 2;
const LOWER: u8 = 4;
const UPPER: u8 = 8;
const DASH: u8 = 16;
const COLON: u8 = 32;
const END: u8 = 64;

/// What each byte can be in `scheme://host[:port]` (0: nothing a plain host or port holds).
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = match c {
            b'0'..=b'9' => DIGIT,
            b'.' => DOT,
            b'a'..=b'z' => LOWER,
            b'A'..=b'Z' => UPPER,
            b'-' | b'_' => DASH,
            b':' => COLON,
            b'/' | b'?' | b'#' => END,
            _ => 0,
        };
        i += 1;
    }
    t
};

/// One pass over the bytes (it runs for every member on every heartbeat, also inside the Wasm
/// sandbox, where byte loops and `memcmp` calls cost more than natively): the host, the port
/// and whether the host has upper-case letters. None when the URL is not in the plain form:
/// another scheme, more than one colon, a user, a bracketed or non-ASCII host, a bad port.
fn scan_plain(text: &str) -> Option<(&str, i32, bool)> {
    let b = text.as_bytes();
    if b.len() < 11
        || u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            != u64::from_le_bytes(*b"postgres")
    {
        return None;
    }
    let start = if (b[8], b[9], b[10]) == (b':', b'/', b'/') {
        11
    } else if b.len() >= 13 && (b[8], b[9], b[10], b[11], b[12]) == (b'q', b'l', b':', b'/', b'/') {
        13
    } else {
        return None;
    };
    // The host: one table lookup a byte, the classes seen or-ed together, no branch per class.
    let rest = &b[start..];
    let (mut len, mut seen, mut dots) = (0, 0u8, 0u32);
    while len < rest.len() {
        let k = CLASS[rest[len] as usize];
        if k & (COLON | END) != 0 {
            break;
        }
        if k == 0 {
            return None;
        }
        seen |= k;
        dots += u32::from(k == DOT);
        len += 1;
    }
    let (upper, numeric) = (seen & UPPER != 0, seen & (LOWER | UPPER | DASH) == 0);
    // Every split point is an ASCII byte, hence a char boundary.
    let host = &text[start..start + len];
    let mut port = DEFAULT_PORT;
    if rest.get(len) == Some(&b':') {
        let (mut at, mut p, mut digits) = (len + 1, 0i32, 0);
        while let Some(&c) = rest.get(at).filter(|c| c.is_ascii_digit()) {
            if digits == 5 {
                return None;
            }
            p = p * 10 + i32::from(c - b'0');
            digits += 1;
            at += 1;
        }
        let ends = rest.get(at).is_none_or(|&c| CLASS[c as usize] & END != 0);
        if digits == 0 || !ends || !(1..=65535).contains(&p) {
            return None;
        }
        port = p;
    }
    if host.is_empty() || host.starts_with('.') {
        return None;
    }
    // Dotted-decimal is left to the url crate when it could be a non-canonical IPv4 form.
    if numeric && dots != 3 {
        return None;
    }
    Some((host, port, upper))
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

    /// The fast path as first written (split iterators), kept as the oracle of the one-pass scan.
    fn fast_path_reference(text: &str) -> Option<Address> {
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
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') && host.split('.').count() != 4 {
            return None;
        }
        Some(Address {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    proptest::proptest! {
        #[test]
        fn one_pass_scan_agrees_with_the_reference(
            scheme in proptest::sample::select(vec!["postgres://", "postgresql://", "postgres:/", "http://", ""]),
            rest in "[a-zA-Z0-9.:_@/?#\\[\\]%-]{0,24}",
        ) {
            let url = format!("{scheme}{rest}");
            proptest::prop_assert_eq!(fast_path(&url), fast_path_reference(&url), "{}", url);
        }

        #[test]
        fn one_pass_scan_agrees_on_addresses_and_ports(
            host in "[0-9.]{0,12}|[a-zA-Z0-9.-]{1,10}",
            port in "(:[0-9]{0,6})?",
            tail in "(/[a-z]*)?(\\?[a-z=]*)?",
        ) {
            for scheme in ["postgres://", "postgresql://"] {
                let url = format!("{scheme}{host}{port}{tail}");
                proptest::prop_assert_eq!(fast_path(&url), fast_path_reference(&url), "{}", url);
            }
        }
    }

    #[test]
    fn plain_address_is_parse_conn_url_without_allocating() {
        for url in [
            "postgres://10.0.0.1:5433/postgres",
            "postgresql://db-1.example:6432/x?sslmode=require",
            "postgres://db1",
            "postgres://Host.Example:5432/db",
            "postgres://u:p@h:5432/db",
            "postgres://[::1]:5434/x",
            "postgres://1.2.3:5432/x",
            "postgres://h:0/x",
            "http://x/",
        ] {
            match plain_address(url) {
                Some((host, port)) => {
                    assert_eq!(parse_conn_url(url), Ok(addr(host, port)), "{url}")
                }
                // Only the plain, lower-case form is taken; the rest is parse_conn_url's.
                None => assert!(!url.starts_with("postgres://db1"), "{url}"),
            }
        }
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
