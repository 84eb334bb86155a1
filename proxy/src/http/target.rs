//! The request target, settled once before routing: one authority, set as
//! the `Host` the upstream receives (RFC 9112 §3.2, §3.2.2; RFC 9113
//! §8.3.1), and a normalised path (RFC 3986 §5.2.4, §6.2.2) that routes
//! match and the upstream receives.
//!
//! Both are a scan that allocates nothing for the usual request (one `Host`
//! line, a path without `%`, `//` or `/.`).

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Uri, Version};

use crate::config::{EscapedSlashes, PathsConfig};

/// Why a request's target was refused (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// More than one `Host` line.
    #[error("the request has {0} Host lines; exactly one is allowed")]
    SeveralHosts(usize),
    /// An HTTP/1.1 (or later) request with neither a Host line nor an
    /// authority in its target.
    #[error("the request has no Host line and no authority in its target")]
    NoHost,
    /// Not `host[:port]`.
    #[error("invalid Host {0:?}: expected host[:port] (letters, digits, '-._~', or [IPv6])")]
    InvalidHost(String),
    /// HTTP/2 `host` that names another authority than `:authority`.
    #[error("the Host field {host:?} differs from the :authority {authority:?}")]
    HostMismatch {
        /// The `host` field.
        host: String,
        /// The `:authority`.
        authority: String,
    },
    /// `%` not followed by two hex digits.
    #[error("the path has an invalid percent-escape at byte {0}")]
    BadEscape(usize),
    /// `%2F` or `%5C`, refused by the listener's `escaped_slashes: reject`.
    #[error("the path has an encoded slash or backslash (%2F, %5C) at byte {0}")]
    EscapedSlash(usize),
}

impl TargetError {
    /// The error code of the proxy's 400 answer.
    pub fn code(&self) -> &'static str {
        match self {
            TargetError::BadEscape(_) | TargetError::EscapedSlash(_) => "bad_path",
            _ => "bad_authority",
        }
    }
}

/// Settles `head`'s authority and path (see the module's doc).
pub fn settle(head: &mut Parts, paths: &PathsConfig) -> Result<(), TargetError> {
    settle_authority(head)?;
    settle_path(head, paths)
}

/// Makes the `Host` line the request's one authority: the target's
/// (absolute form, `:authority`) when it has one, else the single `Host`.
fn settle_authority(head: &mut Parts) -> Result<(), TargetError> {
    let lines = head.headers.get_all(header::HOST);
    let mut iter = lines.iter();
    let host = iter.next();
    if iter.next().is_some() {
        return Err(TargetError::SeveralHosts(lines.iter().count()));
    }
    let Some(authority) = head.uri.authority() else {
        return match host {
            Some(host) if valid_authority(host.as_bytes()) => Ok(()),
            Some(host) => Err(TargetError::InvalidHost(lossy(host.as_bytes()))),
            None if head.version <= Version::HTTP_10 => Ok(()),
            None => Err(TargetError::NoHost),
        };
    };
    let authority = authority.as_str();
    if !valid_authority(authority.as_bytes()) {
        return Err(TargetError::InvalidHost(authority.to_string()));
    }
    match host {
        Some(host) if host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => Ok(()),
        Some(host) if head.version == Version::HTTP_2 => Err(TargetError::HostMismatch {
            host: lossy(host.as_bytes()),
            authority: authority.to_string(),
        }),
        // HTTP/1 absolute form: the target's authority replaces the Host.
        _ => {
            let value = HeaderValue::from_str(authority)
                .map_err(|_| TargetError::InvalidHost(authority.to_string()))?;
            head.headers.insert(header::HOST, value);
            Ok(())
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `host[:port]`: a name of letters, digits and `-._~`, or an IPv6 literal
/// in brackets; the port is up to five digits.
fn valid_authority(b: &[u8]) -> bool {
    let (host_ok, rest) = if let Some(inner) = b.strip_prefix(b"[") {
        let Some(end) = inner.iter().position(|&c| c == b']') else {
            return false;
        };
        let literal = &inner[..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.');
        (ok, &inner[end + 1..])
    } else {
        let end = b.iter().position(|&c| c == b':').unwrap_or(b.len());
        let name = &b[..end];
        let ok = !name.is_empty() && name.iter().all(|&c| is_unreserved(c));
        (ok, &b[end..])
    };
    host_ok
        && match rest.split_first() {
            None => true,
            Some((b':', port)) => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// RFC 3986 `unreserved`.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// The host of a settled request, as routes match it: the `Host` line
/// without its port or a trailing dot (case is left to the comparison).
pub fn route_host(head: &Parts) -> Option<&str> {
    let raw = head.headers.get(header::HOST)?.to_str().ok()?;
    let host = match raw.rsplit_once(':') {
        // Keep IPv6 literals ("[::1]") whole; strip a trailing ":port".
        Some((h, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    Some(host.strip_suffix('.').unwrap_or(host))
}

/// Replaces the path by its normalised form when that differs; the query
/// is left as sent.
fn settle_path(head: &mut Parts, paths: &PathsConfig) -> Result<(), TargetError> {
    let Some(path) = normalize_path(head.uri.path(), paths)? else {
        return Ok(());
    };
    let path_and_query = match head.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = std::mem::take(&mut head.uri).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).expect("a normalised path stays valid"));
    head.uri = Uri::from_parts(parts).expect("only the path changed");
    Ok(())
}

/// The normalised form of `path`, or `None` when it is already normal.
///
/// Percent-escapes of unreserved characters are decoded (`%2e` is `.`),
/// others must be two hex digits and are kept as sent; `%2F`/`%5C` follow
/// `paths.escaped_slashes` (decoded ones become `/`); empty segments are
/// merged when `paths.merge_slashes`; then dot-segments are removed, a
/// `..` above the root staying at the root (RFC 3986 §5.2.4).
pub fn normalize_path(path: &str, paths: &PathsConfig) -> Result<Option<String>, TargetError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        // `*` (OPTIONS) or an authority-form target: no path to normalise.
        return Ok(None);
    }
    let suspect = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            || c == b'/' && matches!(b.get(i + 1), Some(b'.'))
            || c == b'/' && paths.merge_slashes && matches!(b.get(i + 1), Some(b'/'))
    });
    if !suspect {
        return Ok(None);
    }
    let decoded = decode(b, paths.escaped_slashes)?;
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => trailing_slash = last,
            ".." => {
                kept.pop();
                trailing_slash = last;
            }
            "" if paths.merge_slashes && !last => {}
            segment => kept.push(segment),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    normal.push('/');
    normal.push_str(&kept.join("/"));
    if trailing_slash && !kept.is_empty() {
        normal.push('/');
    }
    Ok((normal != path).then_some(normal))
}

/// `b` with unreserved escapes decoded and slashes handled per `slashes`.
fn decode(b: &[u8], slashes: EscapedSlashes) -> Result<String, TargetError> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let value = b
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .ok_or(TargetError::BadEscape(i))?;
        match value {
            b'/' | b'\\' => match slashes {
                EscapedSlashes::Reject => return Err(TargetError::EscapedSlash(i)),
                EscapedSlashes::Decode => out.push(b'/'),
                EscapedSlashes::Keep => out.extend_from_slice(&b[i..i + 3]),
            },
            c if is_unreserved(c) => out.push(c),
            _ => out.extend_from_slice(&b[i..i + 3]),
        }
        i += 3;
    }
    // Only ASCII bytes of the valid path were copied or decoded to ASCII.
    Ok(String::from_utf8(out).expect("ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str, paths: &PathsConfig) -> Result<String, TargetError> {
        normalize_path(path, paths).map(|n| n.unwrap_or_else(|| path.to_string()))
    }

    #[test]
    fn dot_segments_escapes_and_slashes() {
        let d = PathsConfig::default();
        for (path, want) in [
            ("/a/b", "/a/b"),
            ("/", "/"),
            ("/a/./b/../c", "/a/c"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/../../x", "/x"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("//a///b/", "/a/b/"),
            ("/.hidden/x", "/.hidden/x"),
            ("/%41%7e%2D", "/A~-"),
            ("/a%20b%3F", "/a%20b%3F"),
        ] {
            assert_eq!(norm(path, &d).as_deref(), Ok(want), "{path}");
        }
        assert_eq!(normalize_path("/api/v1/items", &d), Ok(None));
        assert_eq!(normalize_path("*", &d), Ok(None));
        assert_eq!(norm("/a%2Fb", &d), Err(TargetError::EscapedSlash(2)));
        assert_eq!(norm("/a%5c", &d), Err(TargetError::EscapedSlash(2)));
        assert_eq!(norm("/a%zz", &d), Err(TargetError::BadEscape(2)));
        assert_eq!(norm("/a%2", &d), Err(TargetError::BadEscape(2)));
    }

    #[test]
    fn slash_options() {
        let keep = PathsConfig {
            merge_slashes: false,
            escaped_slashes: EscapedSlashes::Keep,
        };
        assert_eq!(norm("//a//b", &keep).as_deref(), Ok("//a//b"));
        assert_eq!(norm("/a/%2F../b", &keep).as_deref(), Ok("/a/%2F../b"));
        assert_eq!(norm("/a%2fb", &keep).as_deref(), Ok("/a%2fb"));
        let decode = PathsConfig {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Decode,
        };
        assert_eq!(norm("/pub%2F..%2Fadmin", &decode).as_deref(), Ok("/admin"));
        assert_eq!(norm("/a%5Cb", &decode).as_deref(), Ok("/a/b"));
    }

    fn head(version: Version, uri: &str, hosts: &[&str]) -> Parts {
        let mut b = http::Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header("host", *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn one_authority() {
        let ok = |mut h: Parts| settle_authority(&mut h).map(|()| h);
        let h = ok(head(Version::HTTP_11, "/x", &["api.example.com:8080"])).unwrap();
        assert_eq!(route_host(&h), Some("api.example.com"));
        let h = ok(head(Version::HTTP_11, "/x", &["API.example.com."])).unwrap();
        assert_eq!(route_host(&h), Some("API.example.com"));
        let h = ok(head(Version::HTTP_11, "/x", &["[::1]:80"])).unwrap();
        assert_eq!(route_host(&h), Some("[::1]"));
        let h = ok(head(Version::HTTP_11, "http://b.example/x", &["a.example"])).unwrap();
        assert_eq!(h.headers.get("host").unwrap(), "b.example");
        let h = ok(head(Version::HTTP_2, "http://b.example/x", &[])).unwrap();
        assert_eq!(h.headers.get("host").unwrap(), "b.example");
        assert!(ok(head(Version::HTTP_10, "/x", &[])).is_ok());
        assert_eq!(
            ok(head(Version::HTTP_11, "/x", &["a", "b"])).unwrap_err(),
            TargetError::SeveralHosts(2)
        );
        assert_eq!(
            ok(head(Version::HTTP_11, "/x", &[])).unwrap_err(),
            TargetError::NoHost
        );
        for bad in ["", "a b", "a/b", "a:8x", "a:123456", "[zz]", "[::1", "a@b"] {
            assert!(
                matches!(
                    ok(head(Version::HTTP_11, "/x", &[bad])),
                    Err(TargetError::InvalidHost(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            ok(head(Version::HTTP_2, "http://b.example/x", &["a.example"])),
            Err(TargetError::HostMismatch { .. })
        ));
    }
}
