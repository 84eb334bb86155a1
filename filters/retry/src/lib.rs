//! `retry`: sends a request upstream again when an attempt fails, to the
//! cluster's next endpoint, with exponential backoff (or the upstream's
//! `Retry-After`) and a retry budget.
//!
//! Config (every field optional; these are the defaults, except
//! `per_try_timeout_ms` and `attempts_header`, which are unset by default):
//!
//! ```json
//! {
//!   "max_attempts": 3,
//!   "retry_on": ["gateway-error"],
//!   "statuses": [],
//!   "backoff": { "base_ms": 25, "max_ms": 250 },
//!   "honor_retry_after": true,
//!   "max_retry_after_ms": 10000,
//!   "methods": ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"],
//!   "per_try_timeout_ms": 2000,
//!   "budget": { "percent": 20.0, "window_s": 10, "min_retries": 3 },
//!   "attempts_header": "x-weft-attempts"
//! }
//! ```
//!
//! `retry_on` takes `connect-failure`, `reset`, `timeout`, `5xx`,
//! `gateway-error` and `retriable-status` (with `statuses`); `budget: null`
//! turns the budget off. See `docs/filters/retry.md`.
//!
//! The filter keeps no state between its calls: each decision is made from
//! the request's properties (`request.attempt`, `request.retryable`,
//! `upstream.failure`) and the response, and the budget lives in shared
//! state. Every failed attempt `retry_on` covers is counted in
//! `weft_user_retry_attempts_total{route, outcome}`.

mod backoff;
mod budget;
mod config;
mod decide;

#[cfg(test)]
mod phase_tests;

use std::time::Duration;

use weft_sdk::{Action, Filter, Phases, Request, Response, metrics, property, shared, time};

use crate::budget::{Store, StoreError, Update};
use crate::config::{Config, Settings};
use crate::decide::{Facts, Observed, Outcome, Verdict};

/// The counter of failed attempts by outcome (exported as
/// `weft_user_retry_attempts_total`).
const ATTEMPTS_METRIC: &str = "retry_attempts_total";

struct Retry {
    settings: Settings,
    /// The route's name, fetched once: an instance serves one chain entry,
    /// hence one route.
    route: Option<String>,
    /// The shared-state key of the route's budget, made once.
    budget_key: Option<String>,
}

#[weft_sdk::filter]
impl Filter for Retry {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Retry {
            settings: config.validate()?,
            route: None,
            budget_key: None,
        })
    }

    fn phases(&self) -> Phases {
        let phases = Phases::RESPONSE_HEADERS | Phases::RETRY;
        if self.settings.needs_request_headers() {
            phases | Phases::REQUEST_HEADERS
        } else {
            phases
        }
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        if let Some(timeout) = self.settings.per_try_timeout {
            req.set_timeout(timeout);
        }
        if let Some(budget) = self.settings.budget {
            let now = time::monotonic_nanos();
            let key = self.budget_key();
            if let Update::Failed(e) = budget::update(&HostStore, &key, |window| {
                Some(budget::count_request(window, now, &budget))
            }) {
                weft_sdk::warn!("retry budget {key}: the request was not counted: {e:?}");
            }
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, req: &Request, resp: &Response) -> Action {
        // No attempt: a filter answered before the upstream was asked.
        let Some(attempt) = property::attempt() else {
            return Action::Continue;
        };
        let failure = property::upstream_failure();
        let observed = Observed::new(failure.as_deref(), resp.status());
        if !decide::is_retriable(&self.settings, observed) {
            return self.deliver(resp, attempt);
        }
        let facts = Facts {
            observed,
            method_allowed: self.settings.allows_method(&req.method()),
            retryable: property::retryable() == Some(true),
            attempt,
        };
        match decide::decide(&self.settings, facts) {
            Verdict::Deliver => self.deliver(resp, attempt),
            Verdict::GiveUp(outcome) => self.give_up(resp, attempt, outcome),
            Verdict::Retry => self.retry(resp, attempt, observed),
        }
    }
}

impl Retry {
    /// Lets the response go on, with the attempts header if configured.
    fn deliver(&self, resp: &Response, attempt: u32) -> Action {
        if let Some(header) = &self.settings.attempts_header {
            resp.set_header(header, &attempt.to_string());
        }
        Action::Continue
    }

    /// A failure that is not retried: counted, then delivered.
    fn give_up(&mut self, resp: &Response, attempt: u32, outcome: Outcome) -> Action {
        self.count(outcome);
        weft_sdk::debug!(
            "attempt {attempt} failed ({}): not retried: {}",
            resp.status(),
            outcome.label()
        );
        self.deliver(resp, attempt)
    }

    /// A failure that may be retried: the wait, then the budget.
    fn retry(&mut self, resp: &Response, attempt: u32, observed: Observed) -> Action {
        let retry_after = if self.settings.honor_retry_after {
            resp.header("retry-after")
        } else {
            None
        };
        let now_unix_ms = time::now_unix_nanos() / 1_000_000;
        let wait = match backoff::wait(
            &self.settings,
            retry_after.as_deref(),
            attempt,
            now_unix_ms,
            weft_sdk::random_u64(),
        ) {
            Ok(wait) => wait,
            Err(outcome) => return self.give_up(resp, attempt, outcome),
        };
        if let Some(budget) = self.settings.budget {
            let now = time::monotonic_nanos();
            let key = self.budget_key();
            match budget::update(&HostStore, &key, |window| {
                budget::take_retry(window, now, &budget)
            }) {
                Update::Written => {}
                Update::Declined => return self.give_up(resp, attempt, Outcome::BudgetExhausted),
                Update::Failed(e) => {
                    weft_sdk::warn!("retry budget {key}: cannot record a retry: {e:?}");
                    return self.give_up(resp, attempt, Outcome::BudgetExhausted);
                }
            }
        }
        self.count(Outcome::Retried);
        weft_sdk::debug!(
            "attempt {attempt} failed ({observed:?}): retrying in {} ms ({})",
            wait.ms(),
            match wait {
                backoff::Wait::Backoff(_) => "backoff",
                backoff::Wait::RetryAfter(_) => "retry-after",
            }
        );
        Action::Retry {
            delay: Duration::from_millis(wait.ms()),
        }
    }

    fn route(&mut self) -> &str {
        self.route
            .get_or_insert_with(|| property::route_name().unwrap_or_default())
    }

    /// The shared-state key of this route's budget:
    /// `budget/<listener>/<route>` (route names are unique per listener).
    fn budget_key(&mut self) -> String {
        if let Some(key) = &self.budget_key {
            return key.clone();
        }
        let listener = property::listener_name().unwrap_or_default();
        let key = format!("budget/{listener}/{}", self.route());
        self.budget_key = Some(key.clone());
        key
    }

    fn count(&mut self, outcome: Outcome) {
        let route = self.route();
        metrics::counter_add(
            ATTEMPTS_METRIC,
            &[("route", route), ("outcome", outcome.label())],
            1,
        );
    }
}

/// The host's shared state.
struct HostStore;

impl Store for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        shared::get(key).map(|entry| (entry.value, entry.cas))
    }

    fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError> {
        shared::set(key, value, cas).map_err(|e| match e {
            shared::SharedError::CasMismatch => StoreError::Conflict,
            _ => StoreError::Full,
        })
    }
}
