//! Properties of the current request that are not in its headers: its id,
//! route, peer and so on.

use crate::sys::host;

/// The property `name` of the current request; `None` for unknown names and
/// absent values. The shortcuts in this module cover the known names.
pub fn get(name: &str) -> Option<String> {
    host::property(name)
}

/// Property names read together (a log line's fields, say): registered
/// with the proxy once, then read with one call and one buffer per read,
/// where a [`get`] per name would make a call and an allocation each.
///
/// Make it in [`Filter::new`](crate::Filter::new) and keep it: an
/// instance may register at most 64 sets. Besides the names of the
/// shortcuts below, the request and response are readable here as
/// `request.method`, `request.path`, `request.authority`,
/// `request.header.<name>`, `response.status` and `response.header.<name>`.
///
/// ```no_run
/// use weft_sdk::property::PropertySet;
///
/// let fields = PropertySet::new(&["request.method", "request.header.user-agent"]);
/// // In a phase:
/// let values = fields.read();
/// assert_eq!(values.len(), 2);
/// ```
#[derive(Debug)]
pub struct PropertySet {
    id: u32,
    len: usize,
}

impl PropertySet {
    /// Registers `names` with the proxy.
    pub fn new(names: &[&str]) -> PropertySet {
        PropertySet {
            id: host::property_set(names),
            len: names.len(),
        }
    }

    /// The current values of the set's properties, in its order; `None`
    /// for unknown names and absent values.
    pub fn read(&self) -> Vec<Option<String>> {
        unpack(&host::properties(self.id), self.len)
    }
}

/// Splits `properties`' buffer into `len` values (see the contract): each a
/// 4-byte little-endian length and its bytes, or `ff ff ff ff` for none.
fn unpack(mut packed: &[u8], len: usize) -> Vec<Option<String>> {
    let mut values = Vec::with_capacity(len);
    for _ in 0..len {
        let Some((head, rest)) = packed.split_first_chunk::<4>() else {
            values.push(None);
            continue;
        };
        let n = u32::from_le_bytes(*head);
        if n == u32::MAX {
            values.push(None);
            packed = rest;
            continue;
        }
        let (value, rest) = rest.split_at(rest.len().min(n as usize));
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        packed = rest;
    }
    values
}

/// The request's id (`request.id`).
pub fn request_id() -> Option<String> {
    get("request.id")
}

/// The name of the route that matched (`route.name`).
pub fn route_name() -> Option<String> {
    get("route.name")
}

/// The name of the upstream cluster (`cluster.name`).
pub fn cluster_name() -> Option<String> {
    get("cluster.name")
}

/// The name of the listener that accepted the connection (`listener.name`).
pub fn listener_name() -> Option<String> {
    get("listener.name")
}

/// The client's address as `ip:port` (`peer.address`).
pub fn peer_address() -> Option<String> {
    get("peer.address")
}

/// The client's IP address (`peer.ip`).
pub fn peer_ip() -> Option<String> {
    get("peer.ip")
}

/// The client's authenticated identity, when known (`peer.identity`).
pub fn peer_identity() -> Option<String> {
    get("peer.identity")
}

/// This filter's name in the chain (`filter.name`).
pub fn filter_name() -> Option<String> {
    get("filter.name")
}

/// Which upstream attempt this is: 1 for the first, 2 for the first retry
/// (`request.attempt`). `None` before the request is sent upstream.
pub fn attempt() -> Option<u32> {
    get("request.attempt")?.parse().ok()
}

/// Whether the proxy can send this request again on
/// [`Action::Retry`](crate::Action::Retry) (`request.retryable`): its body
/// is kept (or it has none). `None` before the request is sent upstream.
pub fn retryable() -> Option<bool> {
    get("request.retryable")?.parse().ok()
}

/// When the proxy had the request's headers, in nanoseconds since the Unix
/// epoch (`request.start_unix_ns`).
pub fn start_unix_nanos() -> Option<u64> {
    get("request.start_unix_ns")?.parse().ok()
}

/// Nanoseconds since the proxy had the request's headers
/// (`request.elapsed_ns`): in [`on_done`](crate::Filter::on_done), how long
/// the whole exchange took, with no request phase needed to start a clock.
pub fn elapsed_nanos() -> Option<u64> {
    get("request.elapsed_ns")?.parse().ok()
}

/// The `host:port` of the last upstream attempt (`upstream.endpoint`).
pub fn upstream_endpoint() -> Option<String> {
    get("upstream.endpoint")
}

/// Why the proxy generated the response because the upstream failed
/// (`upstream.failure`): `connect-failure`, `reset` or `timeout`. `None`
/// when the upstream answered.
pub fn upstream_failure() -> Option<String> {
    get("upstream.failure")
}

#[cfg(test)]
mod tests {
    use super::unpack;

    #[test]
    fn unpack_reads_values_and_absences_in_order() {
        let mut packed = Vec::new();
        packed.extend_from_slice(&3u32.to_le_bytes());
        packed.extend_from_slice(b"GET");
        packed.extend_from_slice(&[0xff; 4]);
        packed.extend_from_slice(&0u32.to_le_bytes());
        packed.extend_from_slice(&5u32.to_le_bytes());
        packed.extend_from_slice("/café".as_bytes()[..5].as_ref());
        assert_eq!(
            unpack(&packed, 4),
            [
                Some("GET".to_string()),
                None,
                Some(String::new()),
                Some("/caf\u{fffd}".to_string())
            ]
        );
    }

    #[test]
    fn a_short_buffer_leaves_the_rest_absent() {
        let mut packed = 2u32.to_le_bytes().to_vec();
        packed.extend_from_slice(b"ok");
        assert_eq!(unpack(&packed, 3), [Some("ok".to_string()), None, None]);
        assert_eq!(unpack(&[], 2), [None, None]);
    }
}
