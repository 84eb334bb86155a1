//! A route's action, as users write it: where its requests go (`cluster`,
//! a weighted split over `clusters`, or the proxy's own `redirect` or
//! `direct_response`), how the path and host are rewritten on the way, and
//! where a copy is mirrored.

use serde::{Deserialize, Serialize};

/// `routes[j].clusters[k]:` one cluster of a weighted split.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedClusterConfig {
    /// A key of the top-level `clusters`.
    pub name: String,
    /// Its share: requests go to it with probability weight / total.
    pub weight: u32,
}

/// The largest `weight` of one cluster of a split.
pub const MAX_CLUSTER_WEIGHT: u32 = 1_000_000;

/// `routes[j].rewrite:` changes made to the request as it is sent upstream,
/// after the filters' request phases.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    /// Replaces the part of the path that `match.path_prefix` (or
    /// `match.path`) matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Replaces every match of a regular expression in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<RegexRewriteConfig>,
    /// The `Host` (and HTTP/2 `:authority`) the upstream receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `rewrite.path_regex:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexRewriteConfig {
    /// A regular expression (Rust `regex` syntax) matched against the path
    /// without its query.
    pub pattern: String,
    /// What replaces each match; `$1`, `${name}` insert capture groups.
    pub substitution: String,
}

/// `routes[j].redirect:` the proxy answers with a redirect; nothing is sent
/// upstream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
    /// `http` or `https`; absent keeps the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The host; absent keeps the request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The port; absent keeps the request's, unless the scheme changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replaces the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Replaces the part of the path `match.path_prefix` (or `match.path`)
    /// matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Drops the query.
    #[serde(default)]
    pub strip_query: bool,
}

/// Default of `redirect.status`.
pub const DEFAULT_REDIRECT_STATUS: u16 = 301;

fn default_redirect_status() -> u16 {
    DEFAULT_REDIRECT_STATUS
}

/// `routes[j].direct_response:` the proxy answers with this; nothing is sent
/// upstream.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseConfig {
    /// The status, 200–599.
    pub status: u16,
    /// The body; absent is an empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The `Content-Type` of a body.
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

/// Default of `direct_response.content_type`.
pub const DEFAULT_DIRECT_CONTENT_TYPE: &str = "text/plain";

fn default_content_type() -> String {
    DEFAULT_DIRECT_CONTENT_TYPE.to_string()
}

/// The largest `direct_response.body`.
pub const MAX_DIRECT_BODY_BYTES: usize = 64 * 1024;

/// `routes[j].mirror:` a copy of each request, sent to a shadow cluster
/// and forgotten.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// A key of the top-level `clusters`.
    pub cluster: String,
    /// The share of requests mirrored, 0–100.
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
}

/// Default of `mirror.percent`.
pub const DEFAULT_MIRROR_PERCENT: f64 = 100.0;

fn default_mirror_percent() -> f64 {
    DEFAULT_MIRROR_PERCENT
}
