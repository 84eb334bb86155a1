//! `rate-limit`: a token bucket per key, in the proxy's shared state.
//!
//! Config:
//!
//! ```json
//! {
//!   "burst": 20,
//!   "rate": 10,
//!   "per": "second",
//!   "key": ["peer_ip", {"header": "x-user"}],
//!   "name": "api",
//!   "headers": true,
//!   "status": 429
//! }
//! ```
//!
//! Only `burst` and `rate` are required. Each request takes a token from
//! the bucket of its key (`burst` tokens when full, `rate` more per `per`).
//! Without a token it gets `status` with a JSON body, `retry-after` and the
//! `ratelimit-policy` / `ratelimit` headers of
//! draft-ietf-httpapi-ratelimit-headers; with `headers`, allowed responses
//! get those two headers as well.
//!
//! Buckets live in shared state (one key each, updated by compare-and-swap)
//! and are shared by the chain entries with the same `name` and `key`.
//! Decisions are counted in
//! `weft_user_rate_limit_requests_total{policy, result="allowed|limited"}`.

mod bucket;
mod config;
mod headers;
mod key;
mod limiter;
mod reclaim;
mod store;

#[cfg(test)]
mod phase_tests;

use weft_sdk::log::{self, Level};
use weft_sdk::shared::{self, SharedError};
use weft_sdk::{Action, Filter, LocalResponse, Phases, Request, Response, metrics, property};

use crate::config::{Config, Settings};
use crate::key::{KeyPart, PartValue, PolicyHasher, RecentBuckets};
use crate::limiter::{Failure, KnownBuckets, Verdict};
use crate::store::{Store, StoreError};

/// Decisions (exported as `weft_user_rate_limit_requests_total`).
const REQUESTS_METRIC: &str = "rate_limit_requests_total";
/// Requests let through undecided (`weft_user_rate_limit_fail_open_total`).
const FAIL_OPEN_METRIC: &str = "rate_limit_fail_open_total";
/// An instance sweeps a slice of the reclaim index every this many requests.
const SWEEP_EVERY: u64 = 16;
/// Ids looked at per sweep.
const SWEEP_BATCH: usize = 64;
/// An instance logs at most one warning per this many nanoseconds.
const WARN_INTERVAL_NS: u64 = 10_000_000_000;

struct RateLimit {
    settings: Settings,
    hasher: PolicyHasher,
    /// The buckets of recent key values.
    recent: RecentBuckets,
    /// What this instance last wrote to them.
    known: KnownBuckets,
    /// The `ratelimit-policy` value.
    policy_header: String,
    /// The current request's (remaining, reset seconds), for its response.
    pending: Option<(u64, u64)>,
    /// Requests this instance has seen.
    requests: u64,
    /// This instance's warnings, throttled.
    warnings: Warnings,
}

#[weft_sdk::filter]
impl Filter for RateLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = config.validate()?;
        let window = bucket::window_secs(settings.burst, settings.rate, settings.per.seconds());
        Ok(RateLimit {
            hasher: PolicyHasher::new(&settings.name, &settings.key),
            recent: RecentBuckets::new(weft_sdk::random_u64(), weft_sdk::random_u64()),
            known: KnownBuckets::default(),
            policy_header: headers::policy(&settings.name, settings.burst, window),
            settings,
            pending: None,
            requests: 0,
            warnings: Warnings::default(),
        })
    }

    fn phases(&self) -> Phases {
        if self.settings.headers {
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
        } else {
            Phases::REQUEST_HEADERS
        }
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        // The instance is reused: forget the previous request.
        self.pending = None;
        self.requests = self.requests.wrapping_add(1);
        let values: Vec<PartValue> = self
            .settings
            .key
            .iter()
            .map(|part| key_value(part, req))
            .collect();
        let id = self.recent.bucket(&self.hasher, &values);
        let checked = self.known.check(&HostStore, &self.settings.limits, &id);
        if let Some(failure) = checked.untracked {
            self.warnings.warn(format_args!(
                "policy {:?}: a new bucket could not be added to the reclaim index ({}); \
                 its shared-state key stays until the proxy restarts",
                self.settings.name,
                failure_text(failure)
            ));
        }
        let action = match checked.verdict {
            Verdict::Allowed {
                remaining,
                reset_secs,
            } => {
                self.count("allowed");
                if self.settings.headers {
                    self.pending = Some((remaining, reset_secs));
                }
                Action::Continue
            }
            Verdict::Limited {
                retry_after_secs,
                reset_secs,
            } => {
                self.count("limited");
                log_limited(req, &self.settings.name);
                self.refusal(retry_after_secs, reset_secs).into()
            }
            Verdict::FailOpen(failure) => {
                self.count("allowed");
                metrics::counter_add(
                    FAIL_OPEN_METRIC,
                    &[("policy", &self.settings.name), ("reason", failure.label())],
                    1,
                );
                self.warnings.warn(format_args!(
                    "policy {:?}: request let through without a decision: {}",
                    self.settings.name,
                    failure_text(failure)
                ));
                Action::Continue
            }
        };
        if self.requests.is_multiple_of(SWEEP_EVERY) {
            sweep();
        }
        action
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &Response) -> Action {
        // Not taken: if a later filter has the upstream retried, the
        // response phases run again and the new response needs them too.
        if let Some((remaining, reset_secs)) = self.pending {
            // Appended: the response may carry the fields of other policies
            // (another rate-limit entry, the upstream), each a list member.
            resp.append_header("ratelimit-policy", &self.policy_header);
            resp.append_header(
                "ratelimit",
                &headers::ratelimit(&self.settings.name, remaining, reset_secs),
            );
        }
        Action::Continue
    }
}

impl RateLimit {
    fn count(&self, result: &str) {
        metrics::counter_add(
            REQUESTS_METRIC,
            &[("policy", &self.settings.name), ("result", result)],
            1,
        );
    }

    /// The response to a request over the limit.
    fn refusal(&self, retry_after_secs: u64, reset_secs: u64) -> LocalResponse {
        let settings = &self.settings;
        let retry_after = headers::retry_after(retry_after_secs);
        let message = format!(
            "too many requests: rate limit {:?} allows {} at once and {} more per {}; \
             retry in {retry_after} s",
            settings.name,
            plural(settings.burst, "request"),
            settings.rate,
            settings.per.name()
        );
        LocalResponse::error(settings.status, "rate_limited", &message)
            .header("retry-after", retry_after)
            .header("ratelimit-policy", &self.policy_header)
            .header(
                "ratelimit",
                headers::ratelimit(&settings.name, 0, reset_secs),
            )
    }
}

/// Warnings of one instance: at most one per [`WARN_INTERVAL_NS`].
#[derive(Default)]
struct Warnings {
    /// When the last one was logged.
    last_ns: Option<u64>,
    /// How many were skipped since.
    skipped: u64,
}

impl Warnings {
    fn warn(&mut self, message: std::fmt::Arguments<'_>) {
        let now = weft_sdk::time::monotonic_nanos();
        if self
            .last_ns
            .is_some_and(|last| now.saturating_sub(last) < WARN_INTERVAL_NS)
        {
            self.skipped += 1;
            return;
        }
        let skipped = std::mem::take(&mut self.skipped);
        self.last_ns = Some(now);
        if skipped > 0 {
            weft_sdk::warn!("{message} ({skipped} similar warnings skipped)");
        } else {
            weft_sdk::warn!("{message}");
        }
    }
}

/// The value of key part `part` for `req`.
fn key_value(part: &KeyPart, req: &Request) -> PartValue {
    match part {
        KeyPart::PeerIp => PartValue::text(property::peer_ip()),
        KeyPart::Route => PartValue::Route(
            property::listener_name().unwrap_or_default(),
            property::route_name().unwrap_or_default(),
        ),
        KeyPart::Header(name) => PartValue::text(req.header(name)),
        KeyPart::Const(text) => PartValue::Text(text.clone()),
    }
}

/// Sweeps a random slice of the reclaim index.
fn sweep() {
    let random = weft_sdk::random_u64();
    let swept = reclaim::sweep(
        &HostStore,
        random as u8,
        (random >> 8) as usize,
        SWEEP_BATCH,
    );
    if swept.deleted > 0 {
        weft_sdk::debug!(
            "reclaimed {} full buckets of {} looked at",
            swept.deleted,
            swept.checked
        );
    }
}

fn failure_text(failure: Failure) -> &'static str {
    match failure {
        Failure::Contention => "the bucket kept changing under concurrent requests",
        Failure::Full => "shared state is full (100000 keys per filter)",
    }
}

/// Logs a refusal at debug level, with the method and the path but not the
/// query. Key values are not logged: a key header may hold a credential.
fn log_limited(req: &Request, policy: &str) {
    if !log::enabled(Level::Debug) {
        return;
    }
    let mut path = req.path();
    if let Some(query_start) = path.find('?') {
        path.truncate(query_start);
    }
    weft_sdk::debug!("limited {} {path} by policy {policy:?}", req.method());
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Shared state and the clock, from the host.
struct HostStore;

impl Store for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        shared::get(key).map(|entry| (entry.value, entry.cas))
    }

    fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError> {
        shared::set(key, value, cas).map_err(store_error)
    }

    fn delete(&self, key: &str, cas: u64) -> Result<(), StoreError> {
        shared::delete(key, cas).map_err(store_error)
    }

    fn now_ns(&self) -> u64 {
        weft_sdk::time::monotonic_nanos()
    }
}

fn store_error(err: SharedError) -> StoreError {
    match err {
        SharedError::CasMismatch => StoreError::Conflict,
        _ => StoreError::Full,
    }
}
