//! Clocks, from the proxy (the standard library's clocks trap in a filter).

use crate::bindings::weft::filter::host;

/// Wall-clock time: nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> u64 {
    host::now_unix_nanos()
}

/// Monotonic time in nanoseconds from an arbitrary origin: subtract two
/// readings for a duration.
pub fn monotonic_nanos() -> u64 {
    host::monotonic_nanos()
}
