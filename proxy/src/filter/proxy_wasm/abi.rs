//! The numbers of the proxy-wasm ABI (v0.2.1, and v0.2.0 where it differs)
//! and its header-map encoding.

/// A `proxy_*` host call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// `proxy_on_*_headers`/`_body` results.
pub const ACTION_CONTINUE: i32 = 0;

/// Which header map a call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcInitialMetadata,
    GrpcTrailingMetadata,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub fn from_abi(n: i32) -> Option<Self> {
        Some(match n {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 => MapType::GrpcInitialMetadata,
            5 => MapType::GrpcTrailingMetadata,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// Which buffer a call names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    DownstreamData,
    UpstreamData,
    CallResponseBody,
    GrpcReceive,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    pub fn from_abi(n: i32) -> Option<Self> {
        Some(match n {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            2 => BufferType::DownstreamData,
            3 => BufferType::UpstreamData,
            4 => BufferType::CallResponseBody,
            5 => BufferType::GrpcReceive,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            8 => BufferType::CallData,
            _ => return None,
        })
    }
}

/// `proxy_log` levels.
pub fn log_level(n: i32) -> tracing::Level {
    match n {
        0 => tracing::Level::TRACE,
        1 => tracing::Level::DEBUG,
        2 => tracing::Level::INFO,
        3 => tracing::Level::WARN,
        _ => tracing::Level::ERROR,
    }
}

/// Whether filters' lines at `level` are logged.
pub fn enabled(level: tracing::Level) -> bool {
    use tracing::Level;
    match level {
        Level::TRACE => tracing::enabled!(target: "weft::filter", Level::TRACE),
        Level::DEBUG => tracing::enabled!(target: "weft::filter", Level::DEBUG),
        Level::INFO => tracing::enabled!(target: "weft::filter", Level::INFO),
        Level::WARN => tracing::enabled!(target: "weft::filter", Level::WARN),
        _ => tracing::enabled!(target: "weft::filter", Level::ERROR),
    }
}

/// The proxy's log level as `proxy_get_log_level` reports it.
pub fn current_log_level() -> i32 {
    use tracing::Level;
    [Level::TRACE, Level::DEBUG, Level::INFO, Level::WARN]
        .into_iter()
        .position(enabled)
        .unwrap_or(4) as i32
}

/// `proxy_define_metric` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    pub fn from_abi(n: i32) -> Option<Self> {
        Some(match n {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

/// `proxy_continue_stream`/`proxy_close_stream` stream types.
pub const STREAM_REQUEST: i32 = 0;
pub const STREAM_RESPONSE: i32 = 1;

/// Encodes pairs as the ABI's header maps: the count, each pair's key and
/// value lengths (u32 little-endian), then each key and value followed by
/// a NUL.
pub fn encode_map<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (count, bytes) = pairs.clone().fold((0usize, 0usize), |(n, b), (k, v)| {
        (n + 1, b + k.len() + v.len() + 10)
    });
    let mut out = Vec::with_capacity(4 + bytes);
    out.extend_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Decodes a header map written by the guest; `None` when malformed.
pub fn decode_map(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = u32_at(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    let mut at = 4;
    for _ in 0..count {
        sizes.push((u32_at(at)?, u32_at(at + 4)?));
        at += 8;
    }
    let mut pairs = Vec::with_capacity(sizes.len());
    for (k, v) in sizes {
        let key = bytes.get(at..at + k)?.to_vec();
        at += k + 1;
        let value = bytes.get(at..at + v)?.to_vec();
        at += v + 1;
        pairs.push((key, value));
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_in_the_abi_layout() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b":path", b"/a"), (b"x", b"")];
        let bytes = encode_map(pairs.iter().copied());
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &5u32.to_le_bytes());
        assert_eq!(&bytes[bytes.len() - 3..], b"x\0\0");
        let back = decode_map(&bytes).unwrap();
        assert_eq!(back[0], (b":path".to_vec(), b"/a".to_vec()));
        assert_eq!(back[1], (b"x".to_vec(), Vec::new()));
        assert_eq!(decode_map(&bytes[..bytes.len() - 4]), None);
        assert_eq!(decode_map(b""), Some(Vec::new()));
    }
}
