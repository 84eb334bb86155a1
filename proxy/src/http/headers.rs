//! Header rules of a proxy: hop-by-hop headers (RFC 9110 §7.6.1), the
//! framing headers the proxy alone writes, `Via` (RFC 9110 §7.6.3),
//! `x-forwarded-for`, `x-forwarded-proto` and `x-request-id`.

use crate::listener::Peer;

use bytes::Bytes;
use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that concern one connection only: those named in
/// `Connection`, and `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`,
/// `Transfer-Encoding` and `Upgrade` themselves. `TE: trailers` stays: it
/// says the client accepts trailers, which gRPC needs end to end (RFC 9113
/// §8.2.2 allows it in HTTP/2).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Runs twice per request. Most requests have none of these headers, and
    // most responses only `Connection: keep-alive`: one pass over the names
    // finds those present, and only they are removed, without allocating.
    let mut present: [Option<HeaderName>; HOP_BY_HOP] = Default::default();
    for (slot, name) in present.iter_mut().zip(
        headers
            .keys()
            .filter(|n| is_hop_by_hop(n) && !(*n == header::TE && te_is_trailers(headers))),
    ) {
        *slot = Some(name.clone());
    }
    if present[0].is_none() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        // The usual tokens: `close` names no header, and `keep-alive` is one
        // of the six.
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter(|t| !t.eq_ignore_ascii_case("te") || !te_is_trailers(headers))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain(present.into_iter().flatten()) {
        headers.remove(name);
    }
}

/// Whether `TE` is exactly `trailers`.
fn te_is_trailers(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(header::TE).iter();
    matches!(
        (values.next(), values.next()),
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"trailers")
    )
}

/// How many header names are hop-by-hop in themselves.
const HOP_BY_HOP: usize = 6;

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Whether the proxy alone writes header `name`: `Content-Length` and the
/// hop-by-hop headers frame the message on one connection, so a filter
/// setting them could desynchronise it.
pub fn is_managed(name: &HeaderName) -> bool {
    name == header::CONTENT_LENGTH || is_hop_by_hop(name)
}

/// Returns the request's id: the client's when it sent exactly one in a
/// safe form ([`is_safe_request_id`]); otherwise a new one, set in place of
/// the client's.
pub fn ensure_request_id(headers: &mut HeaderMap) -> String {
    let kept = {
        let mut lines = headers.get_all(&X_REQUEST_ID).iter();
        match (lines.next(), lines.next()) {
            (Some(id), None) if is_safe_request_id(id.as_bytes()) => id.to_str().ok(),
            _ => None,
        }
        .map(str::to_string)
    };
    if let Some(id) = kept {
        return id;
    }
    let id = new_request_id();
    headers.insert(
        X_REQUEST_ID.clone(),
        HeaderValue::from_bytes(&id).expect("hex is a valid header value"),
    );
    std::str::from_utf8(&id).expect("hex").to_string()
}

/// 1 to 128 characters of `A-Z a-z 0-9 . _ : -`: safe to log, to quote in
/// JSON, and to key state by.
fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}

/// A random 128-bit id in the UUID v4 text form, written into an array
/// (a `String` pushed a character at a time cost 700 instructions).
fn new_request_id() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..) & !(0xf << 76) & !(0x3 << 62) | (0x4 << 76) | (0x2 << 62);
    let mut id = [b'-'; 36];
    let mut at = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            at += 1;
        }
        id[at] = HEX[(n >> (124 - 4 * i)) as usize & 0xf];
        at += 1;
    }
    id
}

/// This proxy's `Via` entry for a message received over `version`.
pub fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 weft",
        Version::HTTP_10 => "1.0 weft",
        Version::HTTP_2 => "2 weft",
        Version::HTTP_3 => "3 weft",
        _ => "1.1 weft",
    })
}

/// Adds the client to `x-forwarded-for` (every line the request had, joined
/// in order into one list), sets `x-forwarded-proto` to the listener's
/// scheme (`https` on TLS, else `http`), whatever the client sent, and adds this proxy to `Via`
/// for a request received over `version`.
pub fn add_forwarded(headers: &mut HeaderMap, peer: &Peer, version: Version) {
    let mut joined: Vec<u8> = Vec::new();
    for line in headers.get_all(&X_FORWARDED_FOR) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(line);
        }
    }
    let value = if joined.is_empty() {
        peer.ip_header.clone()
    } else {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(peer.ip.as_bytes());
        HeaderValue::from_maybe_shared(Bytes::from(joined))
            .expect("joined from valid header values")
    };
    headers.insert(X_FORWARDED_FOR.clone(), value);
    let scheme = if peer.tls.is_some() { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
    headers.append(header::VIA, via(version));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_tokens_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("te", "gzip".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn te_trailers_stays() {
        let mut h = HeaderMap::new();
        h.insert("connection", "te".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.get("te").unwrap(), "trailers", "{h:?}");
        assert!(!h.contains_key("connection"));
    }

    #[test]
    fn hop_by_hop_headers_go_without_connection() {
        let mut h = HeaderMap::new();
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.append("transfer-encoding", "gzip".parse().unwrap());
        h.append("transfer-encoding", "chunked".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_unchanged() {
        let mut h = HeaderMap::new();
        h.insert("host", "example.com".parse().unwrap());
        h.append("accept", "text/html".parse().unwrap());
        h.append("accept", "*/*".parse().unwrap());
        let before = h.clone();
        remove_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc".parse().unwrap());
        assert_eq!(ensure_request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]), "RFC 4122 variant: {id}");
        for (i, c) in id.char_indices() {
            let dash = matches!(i, 8 | 13 | 18 | 23);
            assert_eq!(c == '-', dash, "{id}");
            assert!(
                dash || c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
                "{id}"
            );
        }
        assert_eq!(h.get("x-request-id").unwrap(), id.as_str());
        assert_ne!(ensure_request_id(&mut HeaderMap::new()), id);
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.append("x-forwarded-for", " ".parse().unwrap());
        h.append("x-forwarded-for", "10.0.0.2, 10.0.0.3".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        add_forwarded(
            &mut h,
            &Peer::new("127.0.0.1:5000".parse().unwrap()),
            Version::HTTP_2,
        );
        let all = |name| h.get_all(name).iter().collect::<Vec<_>>();
        assert_eq!(
            all("x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
        );
        assert_eq!(all("x-forwarded-proto"), ["http"]);
        assert_eq!(all("via"), ["2 weft"]);
    }

    #[test]
    fn unsafe_or_repeated_request_ids_are_replaced() {
        for id in ["a b", "x\"y", "", &"a".repeat(129)] {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from_str(id).unwrap());
            assert_eq!(ensure_request_id(&mut h).len(), 36, "{id:?}");
        }
        let mut h = HeaderMap::new();
        h.append("x-request-id", "one".parse().unwrap());
        h.append("x-request-id", "two".parse().unwrap());
        let id = ensure_request_id(&mut h);
        assert_eq!(h.get_all("x-request-id").iter().collect::<Vec<_>>(), [&id]);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "Req-1_a.b:c".parse().unwrap());
        assert_eq!(ensure_request_id(&mut h), "Req-1_a.b:c");
    }
}
