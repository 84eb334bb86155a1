//! Header maps and body buffers of the stream being called, as the ABI
//! presents them: HTTP/2-style pseudo-headers (`:method`, `:path`,
//! `:authority`, `:scheme`; `:status`) first, then the other headers.
//!
//! The proxy frames messages itself: writes of `content-length`,
//! `transfer-encoding` and the hop-by-hop headers are accepted and dropped
//! (a filter that rewrites a body removes `content-length` first, as it
//! must on Envoy), and a body written sets its own length.

use bytes::{Bytes, BytesMut};
use http::header::{HOST, HeaderName, HeaderValue};

use super::abi::{BufferType, MapType, Status};
use super::state::VmState;
use crate::filter::exchange::path_of;
use crate::http::headers::is_managed;

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The pairs of `map`, or `None` when the map does not exist now.
pub fn pairs(state: &VmState, map: MapType) -> Option<Pairs> {
    let headers_of = |map: &http::HeaderMap, skip_host: bool| {
        map.iter()
            .filter(|(name, _)| !(skip_host && **name == HOST))
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect::<Pairs>()
    };
    match map {
        MapType::RequestHeaders => {
            let request = state
                .exchange
                .request
                .as_ref()
                .filter(|_| state.on_current_stream())?;
            let tls = state
                .exchange
                .props
                .peer
                .as_ref()
                .is_some_and(|p| p.tls.is_some());
            let mut pairs: Pairs = vec![
                (
                    b":authority".to_vec(),
                    request
                        .headers
                        .get(HOST)
                        .map_or_else(Vec::new, |h| h.as_bytes().to_vec()),
                ),
                (b":path".to_vec(), path_of(request).as_bytes().to_vec()),
                (
                    b":method".to_vec(),
                    request.method.as_str().as_bytes().to_vec(),
                ),
                (
                    b":scheme".to_vec(),
                    if tls {
                        b"https".to_vec()
                    } else {
                        b"http".to_vec()
                    },
                ),
            ];
            pairs.extend(headers_of(&request.headers, true));
            Some(pairs)
        }
        MapType::ResponseHeaders => {
            let response = state
                .exchange
                .response
                .as_ref()
                .filter(|_| state.on_current_stream())?;
            let mut pairs: Pairs = vec![(
                b":status".to_vec(),
                response.status.as_str().as_bytes().to_vec(),
            )];
            pairs.extend(headers_of(&response.headers, false));
            Some(pairs)
        }
        // The trailers that ended a buffered body, during its callback;
        // an empty map otherwise.
        MapType::RequestTrailers | MapType::ResponseTrailers => {
            let trailers = match map {
                MapType::RequestTrailers => state.exchange.request_trailers.as_ref(),
                _ => state.exchange.response_trailers.as_ref(),
            };
            Some(
                trailers
                    .filter(|_| state.on_current_stream())
                    .map_or_else(Vec::new, |t| headers_of(t, false)),
            )
        }
        MapType::CallResponseTrailers => Some(Vec::new()),
        MapType::CallResponseHeaders => state.call_response.as_ref().map(|r| {
            r.headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect()
        }),
        MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata => None,
    }
}

/// The value of `key` in `map` (the first, when several).
pub fn value(state: &VmState, map: MapType, key: &[u8]) -> Result<Vec<u8>, Status> {
    let key = key.to_ascii_lowercase();
    pairs(state, map)
        .ok_or(Status::NotFound)?
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .ok_or(Status::NotFound)
}

/// How a write changes a map.
pub enum Edit<'a> {
    /// Replace every value of the key (or add it).
    Replace(&'a [u8], &'a [u8]),
    /// Add one more value.
    Add(&'a [u8], &'a [u8]),
    /// Remove the key.
    Remove(&'a [u8]),
    /// Replace the whole map.
    All(Pairs),
}

/// Applies `edit` to `map` of the current stream.
pub fn edit(state: &mut VmState, map: MapType, edit: Edit<'_>) -> Status {
    match map {
        MapType::RequestHeaders | MapType::ResponseHeaders if state.on_current_stream() => {}
        MapType::RequestTrailers | MapType::ResponseTrailers if state.on_current_stream() => {
            return edit_trailers(state, map, edit);
        }
        MapType::RequestTrailers | MapType::ResponseTrailers => return Status::Ok,
        _ => return Status::NotFound,
    }
    let request = map == MapType::RequestHeaders;
    if let Edit::All(pairs) = edit {
        let Some(headers) = head_headers(state, request) else {
            return Status::NotFound;
        };
        // Keep what the proxy manages, and the authority (unless given).
        headers.retain_managed_and_host();
        for (k, v) in pairs {
            let status = write_one(state, request, &k, Some(&v), true);
            if status != Status::Ok {
                return status;
            }
        }
        return Status::Ok;
    }
    match edit {
        Edit::Replace(k, v) => write_one(state, request, k, Some(v), false),
        Edit::Add(k, v) => write_one(state, request, k, Some(v), true),
        Edit::Remove(k) => write_one(state, request, k, None, false),
        Edit::All(_) => unreachable!(),
    }
}

/// Edits the trailers that ended a buffered body; with none, writes are
/// dropped (a body that ended without trailers goes on without them).
fn edit_trailers(state: &mut VmState, map: MapType, edit: Edit<'_>) -> Status {
    let trailers = match map {
        MapType::RequestTrailers => state.exchange.request_trailers.as_mut(),
        _ => state.exchange.response_trailers.as_mut(),
    };
    let Some(trailers) = trailers else {
        return Status::Ok;
    };
    let parse = |k: &[u8], v: &[u8]| {
        Some((
            HeaderName::from_bytes(&k.to_ascii_lowercase()).ok()?,
            HeaderValue::from_bytes(v).ok()?,
        ))
    };
    match edit {
        Edit::Replace(k, v) | Edit::Add(k, v) => {
            let Some((name, value)) = parse(k, v) else {
                return Status::BadArgument;
            };
            if matches!(edit, Edit::Add(..)) {
                trailers.append(name, value);
            } else {
                trailers.insert(name, value);
            }
        }
        Edit::Remove(k) => {
            if let Ok(name) = HeaderName::from_bytes(&k.to_ascii_lowercase()) {
                trailers.remove(name);
            }
        }
        Edit::All(pairs) => {
            trailers.clear();
            for (k, v) in pairs {
                let Some((name, value)) = parse(&k, &v) else {
                    return Status::BadArgument;
                };
                trailers.append(name, value);
            }
        }
    }
    Status::Ok
}

trait RetainManaged {
    fn retain_managed_and_host(&mut self);
}

impl RetainManaged for http::HeaderMap {
    fn retain_managed_and_host(&mut self) {
        let drop: Vec<HeaderName> = self
            .keys()
            .filter(|n| !is_managed(n) && **n != HOST)
            .cloned()
            .collect();
        for name in drop {
            self.remove(name);
        }
    }
}

fn head_headers(state: &mut VmState, request: bool) -> Option<&mut http::HeaderMap> {
    if request {
        state.exchange.request.as_mut().map(|r| &mut r.headers)
    } else {
        state.exchange.response.as_mut().map(|r| &mut r.headers)
    }
}

/// Sets (`append`: adds), or with `None` removes, one header or
/// pseudo-header.
fn write_one(
    state: &mut VmState,
    request: bool,
    key: &[u8],
    value: Option<&[u8]>,
    append: bool,
) -> Status {
    let key = key.to_ascii_lowercase();
    if key.first() == Some(&b':') {
        return write_pseudo(state, request, &key, value);
    }
    let Ok(name) = HeaderName::from_bytes(&key) else {
        return Status::BadArgument;
    };
    if is_managed(&name) {
        return Status::Ok;
    }
    let Some(headers) = head_headers(state, request) else {
        return Status::NotFound;
    };
    match value {
        None => {
            headers.remove(name);
        }
        Some(v) => {
            let Ok(v) = HeaderValue::from_bytes(v) else {
                return Status::BadArgument;
            };
            if append {
                headers.append(name, v);
            } else {
                headers.insert(name, v);
            }
        }
    }
    Status::Ok
}

fn write_pseudo(state: &mut VmState, request: bool, key: &[u8], value: Option<&[u8]>) -> Status {
    let Some(value) = value else {
        // A pseudo-header cannot be removed.
        return Status::Ok;
    };
    if !request {
        let Some(response) = state.exchange.response.as_mut() else {
            return Status::NotFound;
        };
        if key == b":status" {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| http::StatusCode::from_u16(s).ok())
            {
                Some(status) => response.status = status,
                None => return Status::BadArgument,
            }
        }
        return Status::Ok;
    }
    let Some(req) = state.exchange.request.as_mut() else {
        return Status::NotFound;
    };
    match key {
        b":path" => {
            let Ok(pq) = http::uri::PathAndQuery::try_from(value) else {
                return Status::BadArgument;
            };
            if !pq.as_str().starts_with('/') {
                return Status::BadArgument;
            }
            let mut parts = std::mem::take(&mut req.uri).into_parts();
            parts.path_and_query = Some(pq);
            match http::Uri::from_parts(parts) {
                Ok(uri) => req.uri = uri,
                Err(_) => return Status::BadArgument,
            }
        }
        b":method" => match http::Method::from_bytes(value) {
            Ok(method) => req.method = method,
            Err(_) => return Status::BadArgument,
        },
        b":authority" => match HeaderValue::from_bytes(value) {
            Ok(host) if http::uri::Authority::try_from(value).is_ok() => {
                req.headers.insert(HOST, host);
            }
            _ => return Status::BadArgument,
        },
        _ => {}
    }
    Status::Ok
}

/// The bytes of buffer `buffer` from `start`, at most `max`.
pub fn buffer(
    state: &VmState,
    buffer: BufferType,
    start: usize,
    max: usize,
) -> Result<Bytes, Status> {
    let whole: Bytes = match buffer {
        BufferType::RequestBody if state.on_current_stream() => state
            .exchange
            .request_body
            .clone()
            .ok_or(Status::NotFound)?,
        BufferType::ResponseBody if state.on_current_stream() => state
            .exchange
            .response_body
            .clone()
            .ok_or(Status::NotFound)?,
        BufferType::VmConfiguration => state.plugin.vm_config.clone(),
        BufferType::PluginConfiguration => state.plugin.plugin_config.clone(),
        BufferType::CallResponseBody => state
            .call_response
            .as_ref()
            .map(|r| Bytes::copy_from_slice(&r.body))
            .ok_or(Status::NotFound)?,
        _ => return Err(Status::NotFound),
    };
    if start > whole.len() {
        return Err(Status::BadArgument);
    }
    let end = start.saturating_add(max).min(whole.len());
    Ok(whole.slice(start..end))
}

/// Replaces `size` bytes from `start` of a body with `data` (`size` past
/// the end: to the end; `start` past the end: appends), and sets the
/// message's length.
pub fn set_buffer(
    state: &mut VmState,
    buffer: BufferType,
    start: usize,
    size: usize,
    data: &[u8],
) -> Status {
    if !state.on_current_stream() {
        return Status::NotFound;
    }
    let ex = &mut state.exchange;
    let (body, headers) = match buffer {
        BufferType::RequestBody => (
            &mut ex.request_body,
            ex.request.as_mut().map(|r| &mut r.headers),
        ),
        BufferType::ResponseBody => (
            &mut ex.response_body,
            ex.response.as_mut().map(|r| &mut r.headers),
        ),
        _ => return Status::BadArgument,
    };
    let Some(old) = body.as_ref() else {
        return Status::NotFound;
    };
    let new = splice(old, start, size, data);
    let len = new.len();
    *body = Some(new);
    if let Some(headers) = headers {
        headers.remove(http::header::TRANSFER_ENCODING);
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Status::Ok
}

/// `old` with `size` bytes from `start` replaced by `data` (clamped to its
/// end: a start past it appends).
fn splice(old: &[u8], start: usize, size: usize, data: &[u8]) -> Bytes {
    let start = start.min(old.len());
    let end = start.saturating_add(size).min(old.len());
    let mut new = BytesMut::with_capacity(old.len() - (end - start) + data.len());
    new.extend_from_slice(&old[..start]);
    new.extend_from_slice(data);
    new.extend_from_slice(&old[end..]);
    new.freeze()
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn set_buffer_bytes_replaces_prepends_and_appends() {
        let body = b"hello world";
        // The SDK's "replace all": start 0, size usize::MAX (u32 on wasm32).
        assert_eq!(&splice(body, 0, u32::MAX as usize, b"bye")[..], b"bye");
        assert_eq!(&splice(body, 0, 0, b">> ")[..], b">> hello world");
        assert_eq!(&splice(body, 100, 0, b"!")[..], b"hello world!");
        assert_eq!(&splice(body, 6, 5, b"there")[..], b"hello there");
        assert_eq!(&splice(b"", 0, 10, b"x")[..], b"x");
    }
}
