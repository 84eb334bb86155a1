//! The filter's config and its validation into [`Settings`].

use std::time::Duration;

use serde::Deserialize;

/// The most attempts (the first one included) the proxy makes for one
/// request, whatever filters ask.
pub const HOST_MAX_ATTEMPTS: u32 = 10;

/// The longest delay this filter waits before a retry, in milliseconds.
pub const MAX_DELAY_MS: u64 = 300_000;

/// The config as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Attempts in all, the first one included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// What counts as a failure worth retrying.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<String>,
    /// The statuses `retriable-status` retries.
    #[serde(default)]
    pub statuses: Vec<u16>,
    /// The wait before each retry.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Whether a `Retry-After` on the failed response sets the wait.
    #[serde(default = "yes")]
    pub honor_retry_after: bool,
    /// The longest `Retry-After` honoured, in milliseconds.
    #[serde(default = "default_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// The methods retried.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// The time each attempt has for its response headers.
    #[serde(default)]
    pub per_try_timeout_ms: Option<u64>,
    /// The retry budget; `null` turns it off.
    #[serde(default = "default_budget")]
    pub budget: Option<BudgetConfig>,
    /// A response header set to the number of attempts made.
    #[serde(default)]
    pub attempts_header: Option<String>,
}

/// `backoff`, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// The ceiling of the first retry's wait, in milliseconds.
    #[serde(default)]
    pub base_ms: Option<u64>,
    /// The largest ceiling, in milliseconds (default: 10 × `base_ms`).
    #[serde(default)]
    pub max_ms: Option<u64>,
}

/// `budget`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries allowed, in percent of the requests seen in the window.
    #[serde(default = "default_budget_percent")]
    pub percent: f64,
    /// The window's length, in seconds.
    #[serde(default = "default_budget_window_s")]
    pub window_s: u64,
    /// Retries always allowed per window, whatever the percentage gives.
    #[serde(default = "default_budget_min_retries")]
    pub min_retries: u32,
}

fn default_max_attempts() -> u32 {
    3
}

fn default_retry_on() -> Vec<String> {
    vec!["gateway-error".into()]
}

fn yes() -> bool {
    true
}

fn default_max_retry_after_ms() -> u64 {
    10_000
}

fn default_methods() -> Vec<String> {
    DEFAULT_METHODS.iter().map(|m| m.to_string()).collect()
}

/// The idempotent methods (RFC 9110 §9.2.2), retried by default.
const DEFAULT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

fn default_budget() -> Option<BudgetConfig> {
    Some(BudgetConfig {
        percent: default_budget_percent(),
        window_s: default_budget_window_s(),
        min_retries: default_budget_min_retries(),
    })
}

fn default_budget_percent() -> f64 {
    20.0
}

fn default_budget_window_s() -> u64 {
    10
}

fn default_budget_min_retries() -> u32 {
    3
}

const DEFAULT_BASE_MS: u64 = 25;

/// A condition of `retry_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The proxy could not connect to the endpoint.
    ConnectFailure,
    /// The connection failed after it was made, before the response headers.
    Reset,
    /// No response headers within the attempt's timeout.
    Timeout,
    /// Any 5xx from the upstream, and every upstream failure.
    FiveXx,
    /// 502, 503 or 504 from the upstream, and every upstream failure.
    GatewayError,
    /// A status listed in `statuses`.
    RetriableStatus,
}

impl Condition {
    /// Every condition with its name in the config.
    pub const ALL: [(&'static str, Condition); 6] = [
        ("connect-failure", Condition::ConnectFailure),
        ("reset", Condition::Reset),
        ("timeout", Condition::Timeout),
        ("5xx", Condition::FiveXx),
        ("gateway-error", Condition::GatewayError),
        ("retriable-status", Condition::RetriableStatus),
    ];

    fn parse(name: &str) -> Option<Condition> {
        Condition::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, condition)| *condition)
    }
}

/// The exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait, in milliseconds.
    pub base_ms: u64,
    /// The largest ceiling, in milliseconds.
    pub max_ms: u64,
}

/// The retry budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Retries allowed, as a fraction (0.2 for 20 %) of the requests seen in
    /// the window.
    pub ratio: f64,
    /// The window's length, in nanoseconds.
    pub window_ns: u64,
    /// Retries always allowed per window.
    pub min_retries: u32,
}

/// The checked config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Attempts in all, the first one included (1..=10).
    pub max_attempts: u32,
    /// What is retried.
    pub retry_on: Vec<Condition>,
    /// The statuses `retriable-status` retries.
    pub statuses: Vec<u16>,
    /// The wait before each retry.
    pub backoff: Backoff,
    /// Whether a `Retry-After` sets the wait.
    pub honor_retry_after: bool,
    /// The longest `Retry-After` honoured, in milliseconds.
    pub max_retry_after_ms: u64,
    /// The methods retried, upper case.
    pub methods: Vec<String>,
    /// The time each attempt has for its response headers.
    pub per_try_timeout: Option<Duration>,
    /// The retry budget, if any.
    pub budget: Option<Budget>,
    /// The response header carrying the number of attempts, lower case.
    pub attempts_header: Option<String>,
}

impl Settings {
    /// Whether requests with `method` may be retried.
    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }

    /// Whether the filter has work in `on_request_headers`.
    pub fn needs_request_headers(&self) -> bool {
        self.per_try_timeout.is_some() || self.budget.is_some()
    }
}

/// Headers the proxy manages (framing and hop-by-hop): the filter must not
/// set them.
const RESERVED_HEADERS: [&str; 10] = [
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "retry-after",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Config {
    /// Checks the config and returns the settings.
    pub fn validate(self) -> Result<Settings, String> {
        if !(1..=HOST_MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!(
                "max_attempts: {} is out of range: give the attempts in all, the first one \
                 included, from 1 to {HOST_MAX_ATTEMPTS} (the proxy's limit)",
                self.max_attempts
            ));
        }
        let retry_on = conditions(&self.retry_on)?;
        let statuses = statuses(
            self.statuses,
            retry_on.contains(&Condition::RetriableStatus),
        )?;
        let backoff = backoff(self.backoff)?;
        if self.max_retry_after_ms > MAX_DELAY_MS {
            return Err(format!(
                "max_retry_after_ms: {} is more than {MAX_DELAY_MS} (5 minutes)",
                self.max_retry_after_ms
            ));
        }
        let methods = methods(self.methods)?;
        let per_try_timeout = match self.per_try_timeout_ms {
            None => None,
            Some(0) => return Err("per_try_timeout_ms: must be at least 1".into()),
            Some(ms) if ms > u64::from(u32::MAX) => {
                return Err(format!(
                    "per_try_timeout_ms: {ms} is more than {} (u32::MAX)",
                    u32::MAX
                ));
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        let budget = match self.budget {
            None => None,
            Some(b) => Some(budget(b)?),
        };
        let attempts_header = match self.attempts_header {
            None => None,
            Some(name) => Some(header_name("attempts_header", &name)?),
        };
        Ok(Settings {
            max_attempts: self.max_attempts,
            retry_on,
            statuses,
            backoff,
            honor_retry_after: self.honor_retry_after,
            max_retry_after_ms: self.max_retry_after_ms,
            methods,
            per_try_timeout,
            budget,
            attempts_header,
        })
    }
}

fn conditions(names: &[String]) -> Result<Vec<Condition>, String> {
    if names.is_empty() {
        return Err(format!(
            "retry_on: empty: list what is retried, among {}",
            known_conditions()
        ));
    }
    let mut conditions = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let condition = Condition::parse(name).ok_or_else(|| {
            format!(
                "retry_on[{index}]: unknown condition {name:?} (known: {})",
                known_conditions()
            )
        })?;
        if conditions.contains(&condition) {
            return Err(format!("retry_on[{index}]: {name:?} is listed twice"));
        }
        conditions.push(condition);
    }
    Ok(conditions)
}

fn known_conditions() -> String {
    Condition::ALL
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn statuses(statuses: Vec<u16>, wanted: bool) -> Result<Vec<u16>, String> {
    if wanted && statuses.is_empty() {
        return Err(
            "statuses: retry_on has \"retriable-status\": list the statuses it retries, \
             e.g. \"statuses\": [409]"
                .into(),
        );
    }
    if !wanted && !statuses.is_empty() {
        return Err(
            "statuses: only used with \"retriable-status\" in retry_on: add it there, or \
             remove `statuses`"
                .into(),
        );
    }
    for (index, status) in statuses.iter().enumerate() {
        if !(100..=599).contains(status) {
            return Err(format!(
                "statuses[{index}]: {status} is not an HTTP status (100 to 599)"
            ));
        }
        if statuses[..index].contains(status) {
            return Err(format!("statuses[{index}]: {status} is listed twice"));
        }
    }
    Ok(statuses)
}

fn backoff(config: BackoffConfig) -> Result<Backoff, String> {
    let base_ms = config.base_ms.unwrap_or(DEFAULT_BASE_MS);
    if base_ms == 0 || base_ms > MAX_DELAY_MS {
        return Err(format!(
            "backoff.base_ms: {base_ms} is out of range (1 to {MAX_DELAY_MS})"
        ));
    }
    let max_ms = match config.max_ms {
        Some(max_ms) => max_ms,
        None => base_ms.saturating_mul(10).min(MAX_DELAY_MS),
    };
    if max_ms < base_ms || max_ms > MAX_DELAY_MS {
        return Err(format!(
            "backoff.max_ms: {max_ms} is out of range (base_ms, {base_ms}, to {MAX_DELAY_MS})"
        ));
    }
    Ok(Backoff { base_ms, max_ms })
}

fn methods(methods: Vec<String>) -> Result<Vec<String>, String> {
    if methods.is_empty() {
        return Err("methods: empty: list the methods that may be retried, e.g. [\"GET\"]".into());
    }
    let mut checked: Vec<String> = Vec::with_capacity(methods.len());
    for (index, method) in methods.into_iter().enumerate() {
        if method.is_empty() || !method.chars().all(weft_sdk::header::is_token_char) {
            return Err(format!(
                "methods[{index}]: {method:?} is not an HTTP method name"
            ));
        }
        let upper = method.to_ascii_uppercase();
        if checked.contains(&upper) {
            return Err(format!("methods[{index}]: {method:?} is listed twice"));
        }
        checked.push(upper);
    }
    Ok(checked)
}

fn budget(config: BudgetConfig) -> Result<Budget, String> {
    if !config.percent.is_finite() || !(0.0..=100.0).contains(&config.percent) {
        return Err(format!(
            "budget.percent: {} is out of range (0 to 100)",
            config.percent
        ));
    }
    if !(1..=3600).contains(&config.window_s) {
        return Err(format!(
            "budget.window_s: {} is out of range (1 to 3600 seconds)",
            config.window_s
        ));
    }
    Ok(Budget {
        ratio: config.percent / 100.0,
        window_ns: config.window_s * 1_000_000_000,
        min_retries: config.min_retries,
    })
}

/// Checks a header name from field `field` and lower-cases it.
fn header_name(field: &str, name: &str) -> Result<String, String> {
    let lower = weft_sdk::header::check_name(name).map_err(|e| format!("{field}: {e}"))?;
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{field}: `{name}` is managed by the proxy or the upstream and cannot be used here"
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| format!("serde: {e}"))?;
        config.validate()
    }

    fn error(json: &str) -> String {
        parse(json).expect_err(json)
    }

    #[test]
    fn defaults() {
        let s = parse("{}").unwrap();
        assert_eq!(s.max_attempts, 3);
        assert_eq!(s.retry_on, [Condition::GatewayError]);
        assert!(s.statuses.is_empty());
        assert_eq!(
            s.backoff,
            Backoff {
                base_ms: 25,
                max_ms: 250
            }
        );
        assert!(s.honor_retry_after);
        assert_eq!(s.max_retry_after_ms, 10_000);
        assert_eq!(s.methods, DEFAULT_METHODS);
        assert_eq!(s.per_try_timeout, None);
        assert_eq!(
            s.budget,
            Some(Budget {
                ratio: 0.2,
                window_ns: 10_000_000_000,
                min_retries: 3
            })
        );
        assert_eq!(s.attempts_header, None);
        assert!(s.needs_request_headers(), "the budget counts requests");
    }

    #[test]
    fn a_full_config() {
        let s = parse(
            r#"{"max_attempts": 10, "retry_on": ["connect-failure", "reset", "timeout", "5xx",
                 "gateway-error", "retriable-status"], "statuses": [409, 429],
                 "backoff": {"base_ms": 100, "max_ms": 1000}, "honor_retry_after": false,
                 "max_retry_after_ms": 0, "methods": ["get", "Post"],
                 "per_try_timeout_ms": 250,
                 "budget": {"percent": 0, "window_s": 60, "min_retries": 1},
                 "attempts_header": "X-Weft-Attempts"}"#,
        )
        .unwrap();
        assert_eq!(s.max_attempts, 10);
        assert_eq!(s.retry_on.len(), 6);
        assert!(s.retry_on.contains(&Condition::Timeout));
        assert_eq!(s.statuses, [409, 429]);
        assert_eq!(
            s.backoff,
            Backoff {
                base_ms: 100,
                max_ms: 1000
            }
        );
        assert!(!s.honor_retry_after);
        assert_eq!(s.max_retry_after_ms, 0);
        assert_eq!(s.methods, ["GET", "POST"]);
        assert!(s.allows_method("POST"));
        assert!(!s.allows_method("PUT"));
        assert_eq!(s.per_try_timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            s.budget,
            Some(Budget {
                ratio: 0.0,
                window_ns: 60_000_000_000,
                min_retries: 1
            })
        );
        assert_eq!(s.attempts_header.as_deref(), Some("x-weft-attempts"));
    }

    #[test]
    fn a_null_budget_turns_it_off() {
        let s = parse(r#"{"budget": null}"#).unwrap();
        assert_eq!(s.budget, None);
        assert!(!s.needs_request_headers());
        let s = parse(r#"{"budget": null, "per_try_timeout_ms": 5}"#).unwrap();
        assert!(s.needs_request_headers());
        let s = parse(r#"{"budget": {"percent": 50}}"#).unwrap();
        assert_eq!(
            s.budget,
            Some(Budget {
                ratio: 0.5,
                window_ns: 10_000_000_000,
                min_retries: 3
            }),
            "budget fields left out take their defaults"
        );
    }

    #[test]
    fn max_ms_defaults_to_ten_times_base_ms() {
        let s = parse(r#"{"backoff": {"base_ms": 7}}"#).unwrap();
        assert_eq!(
            s.backoff,
            Backoff {
                base_ms: 7,
                max_ms: 70
            }
        );
        let s = parse(r#"{"backoff": {"base_ms": 100000}}"#).unwrap();
        assert_eq!(s.backoff.max_ms, MAX_DELAY_MS);
        let s = parse(r#"{"backoff": {"base_ms": 5, "max_ms": 5}}"#).unwrap();
        assert_eq!(
            s.backoff,
            Backoff {
                base_ms: 5,
                max_ms: 5
            }
        );
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        assert!(error(r#"{"max_attempts": 0}"#).starts_with("max_attempts: 0 is out of range"));
        assert!(error(r#"{"max_attempts": 11}"#).contains("from 1 to 10"));
        assert!(error(r#"{"backoff": {"base_ms": 0}}"#).starts_with("backoff.base_ms: 0"));
        assert!(
            error(r#"{"backoff": {"base_ms": 10, "max_ms": 9}}"#).starts_with("backoff.max_ms: 9")
        );
        assert!(
            error(r#"{"backoff": {"base_ms": 10, "max_ms": 300001}}"#)
                .starts_with("backoff.max_ms: 300001")
        );
        assert!(error(r#"{"max_retry_after_ms": 300001}"#).starts_with("max_retry_after_ms"));
        assert!(error(r#"{"per_try_timeout_ms": 0}"#).starts_with("per_try_timeout_ms"));
        assert!(error(r#"{"per_try_timeout_ms": 4294967296}"#).starts_with("per_try_timeout_ms"));
        assert!(error(r#"{"budget": {"percent": -1}}"#).starts_with("budget.percent"));
        assert!(error(r#"{"budget": {"percent": 100.5}}"#).starts_with("budget.percent"));
        assert!(error(r#"{"budget": {"window_s": 0}}"#).starts_with("budget.window_s"));
        assert!(error(r#"{"budget": {"window_s": 3601}}"#).starts_with("budget.window_s"));
        assert!(error(r#"{"max_attempts": -1}"#).starts_with("serde:"));
    }

    #[test]
    fn retry_on_must_name_known_conditions_once() {
        assert!(error(r#"{"retry_on": []}"#).starts_with("retry_on: empty"));
        let e = error(r#"{"retry_on": ["5xx", "5XX"]}"#);
        assert!(e.starts_with(r#"retry_on[1]: unknown condition "5XX" (known: connect-failure, reset, timeout, 5xx, gateway-error, retriable-status)"#), "{e}");
        assert_eq!(
            error(r#"{"retry_on": ["reset", "reset"]}"#),
            r#"retry_on[1]: "reset" is listed twice"#
        );
    }

    #[test]
    fn statuses_go_with_retriable_status() {
        assert!(
            error(r#"{"retry_on": ["retriable-status"]}"#).starts_with("statuses: retry_on has")
        );
        assert!(error(r#"{"statuses": [409]}"#).starts_with("statuses: only used with"));
        assert!(
            error(r#"{"retry_on": ["retriable-status"], "statuses": [409, 99]}"#)
                .starts_with("statuses[1]: 99 is not an HTTP status")
        );
        assert!(
            error(r#"{"retry_on": ["retriable-status"], "statuses": [600]}"#)
                .starts_with("statuses[0]: 600")
        );
        assert_eq!(
            error(r#"{"retry_on": ["retriable-status"], "statuses": [409, 409]}"#),
            "statuses[1]: 409 is listed twice"
        );
    }

    #[test]
    fn methods_are_tokens_listed_once() {
        assert!(error(r#"{"methods": []}"#).starts_with("methods: empty"));
        assert!(error(r#"{"methods": ["GET", ""]}"#).starts_with("methods[1]"));
        assert!(error(r#"{"methods": ["GE T"]}"#).starts_with("methods[0]"));
        assert_eq!(
            error(r#"{"methods": ["GET", "get"]}"#),
            r#"methods[1]: "get" is listed twice"#
        );
    }

    #[test]
    fn the_attempts_header_must_be_a_usable_name() {
        assert!(error(r#"{"attempts_header": ""}"#).contains("empty"));
        assert!(error(r#"{"attempts_header": "x attempts"}"#).contains("invalid header name"));
        assert!(error(r#"{"attempts_header": "Content-Length"}"#).contains("managed by"));
        assert!(error(r#"{"attempts_header": "retry-after"}"#).contains("managed by"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(error(r#"{"max_retries": 3}"#).contains("unknown field `max_retries`"));
        assert!(error(r#"{"backoff": {"base": 3}}"#).contains("unknown field `base`"));
        assert!(error(r#"{"budget": {"ratio": 3}}"#).contains("unknown field `ratio`"));
    }
}
