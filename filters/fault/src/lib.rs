//! `fault`: injects faults for resilience testing: holds some requests for a
//! while (delay) and answers some with an error instead of the upstream
//! (abort), by percentage or on request through trigger headers.
//!
//! Config:
//!
//! ```json
//! {
//!   "abort": { "status": 503, "percent": 10.0, "body": "injected outage" },
//!   "delay": { "ms": 200, "percent": 50.0 },
//!   "header_trigger": true,
//!   "max_header_delay_ms": 10000
//! }
//! ```
//!
//! A request is first delayed (if chosen), then aborted (if chosen). With
//! `header_trigger`, `x-weft-fault-delay: <ms>` and `x-weft-fault-abort:
//! <status>` decide those faults for the request (a delay at most
//! `max_header_delay_ms`, 10 s by default), and are removed before it
//! goes upstream. An abort answers
//! `{"error":"fault_injected","message":…,"request_id":…}` with
//! `x-weft-fault: abort`. See `docs/filters/fault.md`.

mod config;
mod decide;

#[cfg(test)]
mod phase_tests;

use weft_sdk::{Action, Filter, LocalResponse, Request, metrics, property};

use crate::config::{Config, DEFAULT_MESSAGE, Settings};
use crate::decide::{ABORT_HEADER, DELAY_HEADER, Decision, Triggers, decide};

/// The counter of injected faults (exported as
/// `weft_user_fault_injected_total{fault="abort|delay"}`).
const INJECTED_METRIC: &str = "fault_injected_total";

struct Fault {
    settings: Settings,
    /// A request this instance delayed, by id, and the abort chosen for it:
    /// the host calls `on-request-headers` again after the delay.
    delayed: Option<(Option<String>, Option<u16>)>,
}

#[weft_sdk::filter]
impl Filter for Fault {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Fault {
            settings: config.validate()?,
            delayed: None,
        })
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        // Called again after our delay: answer the abort chosen with it. An
        // entry for another request is stale (that request went away).
        let request_id = property::request_id();
        if let Some((id, abort)) = self.delayed.take()
            && id == request_id
        {
            return abort.map_or(Action::Continue, |status| self.abort(status));
        }
        let (abort_value, delay_value) = if self.settings.header_trigger {
            (
                take_header(req, ABORT_HEADER),
                take_header(req, DELAY_HEADER),
            )
        } else {
            (None, None)
        };
        let triggers = Triggers {
            abort: abort_value.as_deref(),
            delay: delay_value.as_deref(),
        };
        let (decision, notes) = decide(&self.settings, triggers, weft_sdk::random_u64);
        for note in notes {
            weft_sdk::debug!("{note}");
        }
        match decision {
            Decision {
                delay: Some(delay),
                abort,
            } => {
                count("delay");
                self.delayed = Some((request_id, abort));
                Action::ContinueAfter(delay)
            }
            Decision {
                delay: None,
                abort: Some(status),
            } => self.abort(status),
            Decision {
                delay: None,
                abort: None,
            } => Action::Continue,
        }
    }
}

impl Fault {
    /// The abort answer.
    fn abort(&self, status: u16) -> Action {
        count("abort");
        let message = self
            .settings
            .abort
            .as_ref()
            .map_or(DEFAULT_MESSAGE, |abort| abort.message.as_str());
        LocalResponse::error(status, "fault_injected", message)
            .header("x-weft-fault", "abort")
            .into()
    }
}

/// The first value of a trigger header; the header is removed so that it
/// does not reach the upstream.
fn take_header(req: &Request, name: &str) -> Option<String> {
    let value = req.header(name)?;
    req.remove_header(name);
    Some(value)
}

fn count(fault: &str) {
    metrics::counter_add(INJECTED_METRIC, &[("fault", fault)], 1);
}
