//! Metrics the proxy exports in Prometheus format, named `weft_user_<name>`
//! with a first label `filter` (the filter's name in the config) that the
//! proxy adds.
//!
//! The first use of a name fixes its kind; using it as another kind, a name
//! that is not a valid Prometheus name, or a label named `filter`, `le` or
//! `__…`, or twice, traps. Labels are (name, value) pairs. Past the proxy's
//! cap of series per metric (`metrics.max_series_per_family`), updates that
//! would make a new series are dropped (and counted by the proxy).
//!
//! ```
//! # fn demo(route: &str, seconds: f64) {
//! use weft_sdk::metrics;
//! metrics::counter_add("requests_total", &[("route", route)], 1);
//! metrics::histogram_observe("upstream_seconds", &[], seconds);
//! # }
//! ```

use crate::sys::host;

/// Adds `value` to counter `name`.
pub fn counter_add(name: &str, labels: &[(&str, &str)], value: u64) {
    host::counter_add(name, labels, value)
}

/// Sets gauge `name` to `value`.
pub fn gauge_set(name: &str, labels: &[(&str, &str)], value: f64) {
    host::gauge_set(name, labels, value)
}

/// Adds `delta` (may be negative) to gauge `name`.
pub fn gauge_add(name: &str, labels: &[(&str, &str)], delta: f64) {
    host::gauge_add(name, labels, delta)
}

/// Records `value` in histogram `name`, with Prometheus's default buckets
/// (suited to seconds).
pub fn histogram_observe(name: &str, labels: &[(&str, &str)], value: f64) {
    host::histogram_observe(name, labels, value)
}
