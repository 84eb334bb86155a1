//! `limits:` the time and space bounds of connections and bodies, and the
//! drain on shutdown. Read at start; a reload keeps the limits the process
//! started with.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Time allowed from accepting a connection to its first request's head
/// (covers HTTP/1 vs HTTP/2 detection).
pub const DEFAULT_FIRST_BYTES_TIMEOUT_MS: u64 = 10_000;
/// Time allowed for an HTTP/1 request head, once it has started.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// A connection with no request in flight and none started for this long
/// is closed (HTTP/1 keep-alive; HTTP/2 gets GOAWAY).
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Interval of HTTP/2 PINGs on a connection that has been quiet.
pub const DEFAULT_HTTP2_KEEPALIVE_INTERVAL_MS: u64 = 30_000;
/// Time allowed for a PING's acknowledgement before the connection closes.
pub const DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
/// Concurrent streams per HTTP/2 connection.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Client connections one worker serves at once.
pub const DEFAULT_MAX_CONNECTIONS_PER_WORKER: u32 = 16_384;
/// Connections the admin API serves at once.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: u32 = 16;
/// Time allowed between two frames of a streamed body, and for one write
/// to a client to make progress.
pub const DEFAULT_BODY_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Bytes of buffered bodies (for body phases and resends) held at once
/// across the process.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 256 * 1024 * 1024;
/// Time allowed on SIGTERM for requests in flight to finish.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;

/// `limits:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// See [`DEFAULT_FIRST_BYTES_TIMEOUT_MS`].
    pub first_bytes_timeout_ms: u64,
    /// See [`DEFAULT_HEADER_READ_TIMEOUT_MS`].
    pub header_read_timeout_ms: u64,
    /// See [`DEFAULT_IDLE_TIMEOUT_MS`].
    pub idle_timeout_ms: u64,
    /// See [`DEFAULT_HTTP2_KEEPALIVE_INTERVAL_MS`].
    pub http2_keepalive_interval_ms: u64,
    /// See [`DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_MS`].
    pub http2_keepalive_timeout_ms: u64,
    /// See [`DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS`].
    pub http2_max_concurrent_streams: u32,
    /// See [`DEFAULT_MAX_CONNECTIONS_PER_WORKER`].
    pub max_connections_per_worker: u32,
    /// See [`DEFAULT_ADMIN_MAX_CONNECTIONS`].
    pub admin_max_connections: u32,
    /// See [`DEFAULT_BODY_IDLE_TIMEOUT_MS`].
    pub body_idle_timeout_ms: u64,
    /// See [`DEFAULT_MAX_BUFFERED_BODY_BYTES`].
    pub max_buffered_body_bytes: u64,
    /// See [`DEFAULT_DRAIN_TIMEOUT_MS`].
    pub drain_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            first_bytes_timeout_ms: DEFAULT_FIRST_BYTES_TIMEOUT_MS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            http2_keepalive_interval_ms: DEFAULT_HTTP2_KEEPALIVE_INTERVAL_MS,
            http2_keepalive_timeout_ms: DEFAULT_HTTP2_KEEPALIVE_TIMEOUT_MS,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            max_connections_per_worker: DEFAULT_MAX_CONNECTIONS_PER_WORKER,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            body_idle_timeout_ms: DEFAULT_BODY_IDLE_TIMEOUT_MS,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
        }
    }
}

/// The largest connection cap accepted (a semaphore's permits).
const MAX_CONNECTIONS: u32 = 1 << 24;

impl LimitsConfig {
    /// Every out-of-range value, at its path under `limits`.
    pub fn check(&self) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut positive = |key: &str, value: u64| {
            if value == 0 {
                errors.push(ConfigError::new(
                    format!("limits.{key}"),
                    "must be greater than 0",
                ));
            }
        };
        positive("first_bytes_timeout_ms", self.first_bytes_timeout_ms);
        positive("header_read_timeout_ms", self.header_read_timeout_ms);
        positive("idle_timeout_ms", self.idle_timeout_ms);
        positive(
            "http2_keepalive_interval_ms",
            self.http2_keepalive_interval_ms,
        );
        positive(
            "http2_keepalive_timeout_ms",
            self.http2_keepalive_timeout_ms,
        );
        positive(
            "http2_max_concurrent_streams",
            self.http2_max_concurrent_streams.into(),
        );
        positive("body_idle_timeout_ms", self.body_idle_timeout_ms);
        positive("max_buffered_body_bytes", self.max_buffered_body_bytes);
        positive("drain_timeout_ms", self.drain_timeout_ms);
        for (key, value) in [
            (
                "max_connections_per_worker",
                self.max_connections_per_worker,
            ),
            ("admin_max_connections", self.admin_max_connections),
        ] {
            if !(1..=MAX_CONNECTIONS).contains(&value) {
                errors.push(ConfigError::new(
                    format!("limits.{key}"),
                    format!("must be between 1 and {MAX_CONNECTIONS}"),
                ));
            }
        }
        errors
    }

    /// `first_bytes_timeout_ms`.
    pub fn first_bytes_timeout(&self) -> Duration {
        Duration::from_millis(self.first_bytes_timeout_ms)
    }
    /// `header_read_timeout_ms`.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    /// `idle_timeout_ms`.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// `body_idle_timeout_ms`.
    pub fn body_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.body_idle_timeout_ms)
    }
    /// `drain_timeout_ms`.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_zeroes_name_their_key() {
        assert!(LimitsConfig::default().check().is_empty());
        let limits = LimitsConfig {
            idle_timeout_ms: 0,
            max_connections_per_worker: 0,
            ..Default::default()
        };
        let paths: Vec<_> = limits.check().into_iter().map(|e| e.path).collect();
        assert_eq!(
            paths,
            [
                "limits.idle_timeout_ms",
                "limits.max_connections_per_worker"
            ]
        );
    }
}
