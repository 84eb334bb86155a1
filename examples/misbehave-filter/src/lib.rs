//! A filter that misbehaves on purpose, to test how the proxy contains a
//! faulty filter. Config:
//!
//! ```json
//! {
//!   "do": "trap" | "loop" | "grow" | "panic" | "panic_deep" | "misuse" |
//!         "unknown_property_set" | "hoard_property_sets" |
//!         "set_content_length",
//!   "phase": "request_headers" | "response_headers" | "done" | "init",
//!   "when_header": "x-doom",
//!   "busy_ms": 300,
//!   "spin_iterations": 50000000,
//!   "init_error": "message",
//!   "metrics": "forge" | "series_per_request",
//!   "log": "text"
//!   "pause_ms": 0,
//!   "retry_ms": 400000,
//!   "callout": { "url": "http://host:port/path", "host": "other", "times": 3, "timeout_ms": 1000 }
//! }
//! ```
//!
//! - `do`: what goes wrong. `trap` executes `unreachable`; `loop` spins
//!   forever; `grow` allocates and touches 1 MiB chunks until memory runs
//!   out; `panic` panics; `panic_deep` panics in a helper three calls
//!   deep (`nested::parse_the_doomed_header`); `misuse` calls `response.status` where there is
//!   no response; `unknown_property_set` reads a property set it never
//!   registered; `hoard_property_sets` registers sets until refused;
//!   `set_content_length` (with `phase: response_headers`) sets the
//!   response's `content-length` to `5` and goes on.
//!   Absent: never misbehaves.
//! - `phase`: where it goes wrong; `request_headers` by default. `init`
//!   misbehaves while the filter is created, for every request alike.
//! - `when_header`: misbehave only for requests that have this header.
//! - `busy_ms`: before misbehaving (or instead, without `do`), keep busy in
//!   `phase` for this long of the filter's own running time, then go on. A
//!   jump of the clock over 5 ms between two looks, when the proxy was
//!   stopped, does not count.
//! - `spin_iterations`: like `busy_ms`, but a fixed amount of work instead
//!   of a length of time: this many turns of a loop the compiler cannot
//!   remove, however long they take (on a busy machine, the same work
//!   takes longer on the wall clock).
//! - `init_error`: `init` fails with this message.
//! - `metrics`: misuses the metrics API on every request (these are not
//!   misbehaviours that stop the filter). `forge` makes `failures_total` a
//!   gauge in `init` and, per request, adds to counter `failures_total`
//!   with labels `filter="jwt-auth"`, `kind="trap"`, as if it were the
//!   proxy's; `series_per_request` adds to `series_total` with label
//!   `series` set to the request's `x-series` header, a new series per
//!   value.
//! - `log`: logs this text (at `warn`) on every request.
//! - `pause_ms`: `request_headers` answers `continue-after(pause_ms)` every
//!   time it is called, for ever.
//! - `retry_ms`: `response_headers` asks for a retry after `retry_ms` every
//!   time it is called (the filter's phases then include `retry`).
//! - `callout`: `request_headers` makes `times` callouts to `url`, with the
//!   `Host` header `host` if given, and sends their outcomes upstream in
//!   the request header `x-callouts` (`status=200;error=…`).
//!
//! `pause_ms`, `retry_ms` and `callout` apply to the requests `when_header`
//! picks, whatever `phase` says.
//!
//! A request it spares gets the request header `x-misbehave: spared`.

mod misbehaviour;
mod overreach;

use serde::Deserialize;
use weft_sdk::{Action, Filter, Phases, Request, Response};

use crate::misbehaviour::Misbehaviour;
use crate::overreach::Callouts;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(rename = "do")]
    misbehaviour: Option<Misbehaviour>,
    #[serde(default)]
    phase: Phase,
    when_header: Option<String>,
    busy_ms: Option<u64>,
    spin_iterations: Option<u64>,
    init_error: Option<String>,
    metrics: Option<MetricsMisuse>,
    log: Option<String>,
    pause_ms: Option<u64>,
    retry_ms: Option<u64>,
    callout: Option<Callouts>,
}

/// How the filter misuses the metrics API.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum MetricsMisuse {
    Forge,
    SeriesPerRequest,
}

/// The phase in which the filter misbehaves.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Phase {
    #[default]
    RequestHeaders,
    ResponseHeaders,
    Done,
    Init,
}

struct Misbehave {
    misbehaviour: Option<Misbehaviour>,
    phase: Phase,
    when_header: Option<String>,
    busy_ms: Option<u64>,
    spin_iterations: Option<u64>,
    metrics: Option<MetricsMisuse>,
    log: Option<String>,
    pause_ms: Option<u64>,
    retry_ms: Option<u64>,
    callout: Option<Callouts>,
}

impl Misbehave {
    /// Whether this request is one to misbehave on.
    fn doomed(&self, req: &Request) -> bool {
        (self.misbehaviour.is_some()
            || self.busy_ms.is_some()
            || self.spin_iterations.is_some()
            || self.pause_ms.is_some()
            || self.retry_ms.is_some()
            || self.callout.is_some())
            && self
                .when_header
                .as_deref()
                .is_none_or(|name| req.header(name).is_some())
    }

    /// Misbehaves if this request is doomed and `phase` is the configured one.
    fn maybe_misbehave(&self, phase: Phase, req: &Request) {
        if phase != self.phase || !self.doomed(req) {
            return;
        }
        if let Some(ms) = self.busy_ms {
            weft_sdk::warn!("misbehave-filter: busy for {ms} ms");
            misbehaviour::keep_busy(ms);
            weft_sdk::warn!("misbehave-filter: was busy for {ms} ms");
        }
        if let Some(turns) = self.spin_iterations {
            misbehaviour::spin_for(turns);
        }
        if let Some(misbehaviour) = self.misbehaviour {
            weft_sdk::warn!("misbehave-filter: about to {}", misbehaviour.name());
            misbehaviour.commit();
        }
    }
}

#[weft_sdk::filter]
impl Filter for Misbehave {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if let Some(message) = config.init_error {
            return Err(message);
        }
        if config.metrics == Some(MetricsMisuse::Forge) {
            weft_sdk::metrics::gauge_set("failures_total", &[], 0.0);
        }
        if config.phase == Phase::Init
            && let Some(misbehaviour) = config.misbehaviour
        {
            weft_sdk::warn!("misbehave-filter: about to {} in init", misbehaviour.name());
            misbehaviour.commit();
        }
        Ok(Misbehave {
            misbehaviour: config.misbehaviour,
            phase: config.phase,
            when_header: config.when_header,
            busy_ms: config.busy_ms,
            spin_iterations: config.spin_iterations,
            metrics: config.metrics,
            log: config.log,
            pause_ms: config.pause_ms,
            retry_ms: config.retry_ms,
            callout: config.callout,
        })
    }

    fn phases(&self) -> Phases {
        let phases = match self.phase {
            Phase::RequestHeaders | Phase::Init => Phases::REQUEST_HEADERS,
            Phase::ResponseHeaders => Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS,
            Phase::Done => Phases::REQUEST_HEADERS | Phases::DONE,
        };
        if self.retry_ms.is_some() {
            phases | Phases::RESPONSE_HEADERS | Phases::RETRY
        } else {
            phases
        }
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        // Metrics and log misuses apply to every request.
        if let Some(text) = &self.log {
            weft_sdk::log::log(weft_sdk::log::Level::Warn, text);
        }
        match self.metrics {
            Some(MetricsMisuse::Forge) => weft_sdk::metrics::counter_add(
                "failures_total",
                &[("filter", "jwt-auth"), ("kind", "trap")],
                1000,
            ),
            Some(MetricsMisuse::SeriesPerRequest) => {
                let series = req.header("x-series").unwrap_or_default();
                weft_sdk::metrics::counter_add("series_total", &[("series", &series)], 1);
            }
            None => {}
        }
        if !self.doomed(req) {
            req.set_header("x-misbehave", "spared");
            return Action::Continue;
        }
        if let Some(callout) = &self.callout {
            overreach::call_out(callout, req);
        }
        if let Some(ms) = self.pause_ms {
            return overreach::pause_forever(ms);
        }
        self.maybe_misbehave(Phase::RequestHeaders, req);
        Action::Continue
    }

    fn on_response_headers(&mut self, req: &Request, resp: &Response) -> Action {
        if self.misbehaviour == Some(Misbehaviour::SetContentLength) && self.doomed(req) {
            resp.set_header("content-length", "5");
            return Action::Continue;
        }
        if let Some(ms) = self.retry_ms
            && self.doomed(req)
        {
            return overreach::retry_forever(ms);
        }
        self.maybe_misbehave(Phase::ResponseHeaders, req);
        Action::Continue
    }

    fn on_done(&mut self, req: &Request, _resp: &Response) {
        self.maybe_misbehave(Phase::Done, req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(json: &str) -> Result<Misbehave, String> {
        Misbehave::new(serde_json::from_str(json).map_err(|err| err.to_string())?)
    }

    #[test]
    fn config_picks_misbehaviour_and_phases() {
        let filter = new(r#"{"do": "grow"}"#).unwrap();
        assert_eq!(filter.misbehaviour, Some(Misbehaviour::Grow));
        assert_eq!(filter.phases(), Phases::REQUEST_HEADERS);

        let filter =
            new(r#"{"do": "loop", "phase": "response_headers", "when_header": "x-doom"}"#).unwrap();
        assert_eq!(filter.misbehaviour, Some(Misbehaviour::Loop));
        assert_eq!(filter.when_header.as_deref(), Some("x-doom"));
        assert_eq!(
            filter.phases(),
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
        );

        let filter = new(r#"{"do": "loop", "phase": "done"}"#).unwrap();
        assert_eq!(filter.phases(), Phases::REQUEST_HEADERS | Phases::DONE);

        let filter = new(r#"{"spin_iterations": 1000}"#).unwrap();
        assert_eq!(filter.spin_iterations, Some(1000));
        assert_eq!(filter.phases(), Phases::REQUEST_HEADERS);
    }

    #[test]
    fn busy_alone_dooms_requests() {
        let filter = new(r#"{"busy_ms": 300, "phase": "done"}"#).unwrap();
        assert_eq!(filter.misbehaviour, None);
        assert_eq!(filter.busy_ms, Some(300));
        assert_eq!(filter.phases(), Phases::REQUEST_HEADERS | Phases::DONE);
    }

    #[test]
    fn pauses_retries_and_callouts_are_configured() {
        let filter = new(r#"{"retry_ms": 400000}"#).unwrap();
        assert_eq!(
            filter.phases(),
            Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS | Phases::RETRY
        );
        let filter =
            new(r#"{"pause_ms": 0, "callout": {"url": "http://a:1/", "host": "b"}}"#).unwrap();
        assert_eq!(filter.pause_ms, Some(0));
        assert_eq!(filter.callout.as_ref().unwrap().times, 1);
        assert_eq!(filter.phases(), Phases::REQUEST_HEADERS);
    }

    #[test]
    fn init_error_fails_init() {
        assert_eq!(new(r#"{"init_error": "boom"}"#).err(), Some("boom".into()));
    }

    #[test]
    fn unknown_misbehaviour_is_refused() {
        let err = new(r#"{"do": "explode"}"#).err().unwrap();
        assert!(err.starts_with("unknown variant `explode`"), "{err}");
    }
}
