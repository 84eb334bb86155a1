//! `api-key`: lets a request through only when it presents a known API key,
//! and tells the upstream whose key it was.
//!
//! Config:
//!
//! ```json
//! {
//!   "keys": [
//!     { "consumer": "alice", "sha256": "<hex SHA-256 digest of alice's key>" },
//!     { "consumer": "ci", "key": "<the key itself>" }
//!   ],
//!   "header": "x-api-key",
//!   "query": "api_key",
//!   "consumer_header": "x-consumer",
//!   "strip": true
//! }
//! ```
//!
//! Only `keys` is required. The key is read from `header` and, when `query`
//! is set and the header is absent, from that query parameter. Keys are kept
//! as SHA-256 digests only and compared in constant time; a key accepted
//! once is remembered by a keyed tag, not the key (see `keys`).
//!
//! - no key: 401 `{"error": "missing_api_key", ...}` with `www-authenticate`;
//! - an unknown key (or several): 403 `{"error": "invalid_api_key", ...}`;
//! - a known key: `consumer_header` is set to the consumer (replacing any
//!   value the client sent), the key is removed from the request unless
//!   `strip` is false, and the request goes on.
//!
//! Every decision is counted in
//! `weft_user_api_key_requests_total{result="allowed|missing|invalid"}`.

mod auth;
mod config;
mod keys;
mod query;

#[cfg(test)]
mod phase_tests;

use weft_sdk::log::{self, Level};
use weft_sdk::{Action, Filter, LocalResponse, Request, metrics, random_u64};

use crate::auth::{Invalid, Outcome};
use crate::config::{Config, Settings};

/// The counter of decisions (exported as `weft_user_api_key_requests_total`).
const REQUESTS_METRIC: &str = "api_key_requests_total";

struct ApiKey {
    settings: Settings,
}

#[weft_sdk::filter]
impl Filter for ApiKey {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let mut settings = config.validate()?;
        settings.keys.set_tag_key(random_u64(), random_u64());
        Ok(ApiKey { settings })
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        let settings = &self.settings;
        let header_values = req.header_all(&settings.header);
        // The path is only needed (and fetched) when the key may be in it.
        let target = settings.query.as_ref().map(|_| req.path());
        match auth::authenticate(settings, &header_values, target.as_deref()) {
            Outcome::Allowed { consumer } => {
                count("allowed");
                req.set_header(&settings.consumer_header, consumer);
                if settings.strip {
                    req.remove_header(&settings.header);
                    if let Some(stripped) = target.and_then(|t| auth::upstream_target(settings, &t))
                    {
                        req.set_path(&stripped);
                    }
                }
                Action::Continue
            }
            Outcome::Missing => {
                count("missing");
                log_refusal(req, "no API key");
                LocalResponse::error(401, "missing_api_key", &auth::missing_message(settings))
                    .header("www-authenticate", auth::challenge(settings))
                    .into()
            }
            Outcome::Invalid(why) => {
                count("invalid");
                log_refusal(
                    req,
                    match why {
                        Invalid::Unknown => "unknown API key",
                        Invalid::Several => "more than one API key",
                    },
                );
                LocalResponse::error(403, "invalid_api_key", why.message()).into()
            }
        }
    }
}

fn count(result: &str) {
    metrics::counter_add(REQUESTS_METRIC, &[("result", result)], 1);
}

/// Logs a refusal at debug level, with the method and the path but not the
/// query, which may hold a key.
fn log_refusal(req: &Request, why: &str) {
    // The arguments cost host calls: skip them when nobody reads the line.
    if !log::enabled(Level::Debug) {
        return;
    }
    let mut path = req.path();
    if let Some(query_start) = path.find('?') {
        path.truncate(query_start);
    }
    weft_sdk::debug!("refused {} {path}: {why}", req.method());
}
