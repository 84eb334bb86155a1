//! The decision, without host calls: is this response a failure worth
//! retrying, and may this request be retried?

use crate::config::{Condition, Settings};

/// Why the proxy answered itself because the upstream failed (the property
/// `upstream.failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It could not connect (`connect-failure`).
    Connect,
    /// The connection failed before the response headers (`reset`).
    Reset,
    /// No response headers in time (`timeout`).
    Timeout,
    /// A kind this filter does not know (from a newer proxy).
    Other,
}

impl Failure {
    /// Reads the property's value.
    pub fn parse(kind: &str) -> Failure {
        match kind {
            "connect-failure" => Failure::Connect,
            "reset" => Failure::Reset,
            "timeout" => Failure::Timeout,
            _ => Failure::Other,
        }
    }
}

/// What came back from an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The upstream failed; the response is the proxy's own 502 or 504.
    Failure(Failure),
    /// The upstream answered with this status.
    Status(u16),
}

impl Observed {
    /// From the property `upstream.failure` and the response's status.
    pub fn new(failure: Option<&str>, status: u16) -> Observed {
        match failure {
            Some(kind) => Observed::Failure(Failure::parse(kind)),
            None => Observed::Status(status),
        }
    }
}

/// Whether `condition` covers `observed`.
pub fn matches(condition: Condition, observed: Observed, statuses: &[u16]) -> bool {
    match (condition, observed) {
        (Condition::ConnectFailure, Observed::Failure(f)) => f == Failure::Connect,
        (Condition::Reset, Observed::Failure(f)) => f == Failure::Reset,
        (Condition::Timeout, Observed::Failure(f)) => f == Failure::Timeout,
        (Condition::FiveXx | Condition::GatewayError, Observed::Failure(_)) => true,
        (Condition::FiveXx, Observed::Status(s)) => (500..=599).contains(&s),
        (Condition::GatewayError, Observed::Status(s)) => matches!(s, 502..=504),
        (Condition::RetriableStatus, Observed::Status(s)) => statuses.contains(&s),
        _ => false,
    }
}

/// Whether some condition of `retry_on` covers `observed`.
pub fn is_retriable(settings: &Settings, observed: Observed) -> bool {
    settings
        .retry_on
        .iter()
        .any(|c| matches(*c, observed, &settings.statuses))
}

/// What the filter knows about the request when a response arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// What came back.
    pub observed: Observed,
    /// Whether the request's method is in `methods`.
    pub method_allowed: bool,
    /// The property `request.retryable`: the proxy kept the body.
    pub retryable: bool,
    /// The property `request.attempt`: 1 for the first attempt.
    pub attempt: u32,
}

/// The outcome of a failed attempt, as counted in the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent again.
    Retried,
    /// `max_attempts` reached.
    Exhausted,
    /// The retry budget had no room.
    BudgetExhausted,
    /// The method is not in `methods`.
    MethodNotAllowed,
    /// The proxy did not keep the body (too large, or streamed without
    /// length).
    BodyNotKept,
    /// The `Retry-After` asks for a longer wait than `max_retry_after_ms`.
    RetryAfterTooLong,
}

impl Outcome {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Retried => "retried",
            Outcome::Exhausted => "exhausted",
            Outcome::BudgetExhausted => "budget_exhausted",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::BodyNotKept => "body_not_kept",
            Outcome::RetryAfterTooLong => "retry_after_too_long",
        }
    }
}

/// What to do with a response, before looking at the wait and the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a failure `retry_on` covers: send it on.
    Deliver,
    /// A covered failure that cannot be retried: send it on, counted with
    /// this outcome.
    GiveUp(Outcome),
    /// A covered failure that may be retried (if the wait and the budget
    /// allow).
    Retry,
}

/// Decides on one attempt's response.
pub fn decide(settings: &Settings, facts: Facts) -> Verdict {
    if !is_retriable(settings, facts.observed) {
        return Verdict::Deliver;
    }
    if !facts.method_allowed {
        return Verdict::GiveUp(Outcome::MethodNotAllowed);
    }
    if !facts.retryable {
        return Verdict::GiveUp(Outcome::BodyNotKept);
    }
    if facts.attempt >= settings.max_attempts {
        return Verdict::GiveUp(Outcome::Exhausted);
    }
    Verdict::Retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(json: &str) -> Settings {
        let config: Config = serde_json::from_str(json).unwrap();
        config.validate().unwrap()
    }

    fn facts(observed: Observed) -> Facts {
        Facts {
            observed,
            method_allowed: true,
            retryable: true,
            attempt: 1,
        }
    }

    const CONNECT: Observed = Observed::Failure(Failure::Connect);
    const RESET: Observed = Observed::Failure(Failure::Reset);
    const TIMEOUT: Observed = Observed::Failure(Failure::Timeout);
    const OTHER: Observed = Observed::Failure(Failure::Other);

    #[test]
    fn the_failure_property_wins_over_the_status() {
        assert_eq!(Observed::new(Some("connect-failure"), 502), CONNECT);
        assert_eq!(Observed::new(Some("reset"), 502), RESET);
        assert_eq!(Observed::new(Some("timeout"), 504), TIMEOUT);
        assert_eq!(Observed::new(Some("tls"), 502), OTHER);
        assert_eq!(Observed::new(None, 502), Observed::Status(502));
    }

    #[test]
    fn what_each_condition_covers() {
        use Condition::*;
        let s = Observed::Status;
        let cases: [(Condition, &[Observed], &[Observed]); 6] = [
            (
                ConnectFailure,
                &[CONNECT],
                &[RESET, TIMEOUT, OTHER, s(502), s(503)],
            ),
            (Reset, &[RESET], &[CONNECT, TIMEOUT, OTHER, s(502)]),
            (Timeout, &[TIMEOUT], &[CONNECT, RESET, OTHER, s(504)]),
            (
                FiveXx,
                &[CONNECT, RESET, TIMEOUT, OTHER, s(500), s(503), s(599)],
                &[s(200), s(404), s(429), s(499), s(600)],
            ),
            (
                GatewayError,
                &[CONNECT, RESET, TIMEOUT, OTHER, s(502), s(503), s(504)],
                &[s(500), s(501), s(505), s(429), s(200)],
            ),
            (
                RetriableStatus,
                &[s(409), s(429)],
                &[s(503), s(200), CONNECT, TIMEOUT],
            ),
        ];
        for (condition, yes, no) in cases {
            for o in yes {
                assert!(matches(condition, *o, &[409, 429]), "{condition:?} {o:?}");
            }
            for o in no {
                assert!(!matches(condition, *o, &[409, 429]), "{condition:?} {o:?}");
            }
        }
    }

    #[test]
    fn a_response_retry_on_does_not_cover_is_delivered() {
        let s = settings(r#"{"retry_on": ["connect-failure"]}"#);
        assert_eq!(decide(&s, facts(Observed::Status(503))), Verdict::Deliver);
        assert_eq!(decide(&s, facts(TIMEOUT)), Verdict::Deliver);
        assert_eq!(decide(&s, facts(Observed::Status(200))), Verdict::Deliver);
        assert_eq!(decide(&s, facts(CONNECT)), Verdict::Retry);
        // Not counted even when nothing else would allow a retry.
        let mut f = facts(Observed::Status(200));
        f.method_allowed = false;
        f.retryable = false;
        f.attempt = 10;
        assert_eq!(decide(&s, f), Verdict::Deliver);
    }

    #[test]
    fn method_body_then_attempts_stop_a_retry() {
        let s = settings(r#"{"max_attempts": 3}"#);
        let failed = facts(Observed::Status(503));
        assert_eq!(decide(&s, failed), Verdict::Retry);
        assert_eq!(
            decide(
                &s,
                Facts {
                    attempt: 2,
                    ..failed
                }
            ),
            Verdict::Retry
        );
        assert_eq!(
            decide(
                &s,
                Facts {
                    attempt: 3,
                    ..failed
                }
            ),
            Verdict::GiveUp(Outcome::Exhausted)
        );
        assert_eq!(
            decide(
                &s,
                Facts {
                    retryable: false,
                    attempt: 3,
                    ..failed
                }
            ),
            Verdict::GiveUp(Outcome::BodyNotKept)
        );
        assert_eq!(
            decide(
                &s,
                Facts {
                    method_allowed: false,
                    retryable: false,
                    ..failed
                }
            ),
            Verdict::GiveUp(Outcome::MethodNotAllowed)
        );
    }

    #[test]
    fn one_attempt_in_all_never_retries() {
        let s = settings(r#"{"max_attempts": 1, "retry_on": ["5xx"]}"#);
        assert_eq!(
            decide(&s, facts(Observed::Status(500))),
            Verdict::GiveUp(Outcome::Exhausted)
        );
    }

    #[test]
    fn outcome_labels() {
        let all = [
            Outcome::Retried,
            Outcome::Exhausted,
            Outcome::BudgetExhausted,
            Outcome::MethodNotAllowed,
            Outcome::BodyNotKept,
            Outcome::RetryAfterTooLong,
        ];
        let labels: Vec<&str> = all.iter().map(|o| o.label()).collect();
        assert_eq!(
            labels,
            [
                "retried",
                "exhausted",
                "budget_exhausted",
                "method_not_allowed",
                "body_not_kept",
                "retry_after_too_long"
            ]
        );
    }
}
