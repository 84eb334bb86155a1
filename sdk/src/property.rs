//! Properties of the current request that are not in its headers: its id,
//! route, peer and so on.

use crate::bindings::weft::filter::host;

/// The property `name` of the current request; `None` for unknown names and
/// absent values. The shortcuts in this module cover the known names.
pub fn get(name: &str) -> Option<String> {
    host::property(name)
}

/// The properties `names`, in order, in one call to the host: cheaper than
/// a [`get`] per name when a filter reads several (a log line's fields).
/// Besides the names of the shortcuts below, the request and response are
/// readable here as `request.method`, `request.path`, `request.authority`,
/// `request.header.<name>`, `response.status` and `response.header.<name>`.
///
/// ```no_run
/// let values = weft_sdk::property::get_many(&["request.method", "request.header.user-agent"]);
/// assert_eq!(values.len(), 2);
/// ```
pub fn get_many(names: &[&str]) -> Vec<Option<String>> {
    host::properties(names)
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
