//! The filter's config and its validation into [`Settings`].

use std::time::Duration;

use serde::Deserialize;

/// The config as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Answer some requests with an error instead of the upstream.
    #[serde(default)]
    pub abort: Option<AbortConfig>,
    /// Hold some requests before they go on.
    #[serde(default)]
    pub delay: Option<DelayConfig>,
    /// Let requests ask for faults with the `x-weft-fault-*` headers.
    #[serde(default)]
    pub header_trigger: bool,
    /// The longest delay a request may ask for with `x-weft-fault-delay`;
    /// longer asks are cut to it.
    #[serde(default = "default_max_header_delay_ms")]
    pub max_header_delay_ms: u64,
}

fn default_max_header_delay_ms() -> u64 {
    DEFAULT_MAX_HEADER_DELAY_MS
}

/// `abort`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortConfig {
    /// The status answered.
    pub status: u16,
    /// The share of requests aborted, in percent.
    #[serde(default = "all")]
    pub percent: f64,
    /// The `message` of the JSON body.
    #[serde(default)]
    pub body: Option<String>,
}

/// `delay`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// How long a delayed request is held, in milliseconds.
    pub ms: u64,
    /// The share of requests delayed, in percent.
    #[serde(default = "all")]
    pub percent: f64,
}

fn all() -> f64 {
    100.0
}

/// The checked config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The configured abort, if any.
    pub abort: Option<Abort>,
    /// The configured delay, if any.
    pub delay: Option<Delay>,
    /// Whether the `x-weft-fault-*` request headers are obeyed.
    pub header_trigger: bool,
    /// In `1 ms..=MAX_DELAY`: the longest delay a trigger header gets.
    pub max_header_delay: Duration,
}

/// A checked `abort`.
#[derive(Debug, Clone, PartialEq)]
pub struct Abort {
    /// In [`STATUSES`].
    pub status: u16,
    /// In `0.0..=100.0`.
    pub percent: f64,
    /// The `message` of the JSON body.
    pub message: String,
}

/// A checked `delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delay {
    /// In `1 ms..=MAX_DELAY`.
    pub duration: Duration,
    /// In `0.0..=100.0`.
    pub percent: f64,
}

/// The statuses an abort may answer with.
pub const STATUSES: std::ops::RangeInclusive<u16> = 200..=599;

/// The longest delay: the host pauses a request for at most 5 minutes.
pub const MAX_DELAY_MS: u64 = 300_000;

/// The default longest delay a request may ask for itself: a client that
/// holds requests (and their filter instances) asks for this at most.
pub const DEFAULT_MAX_HEADER_DELAY_MS: u64 = 10_000;

/// The `message` of an abort's body when `abort.body` is not given.
pub const DEFAULT_MESSAGE: &str = "fault injected by the fault filter";

impl Config {
    /// Checks the config.
    pub fn validate(self) -> Result<Settings, String> {
        if self.abort.is_none() && self.delay.is_none() && !self.header_trigger {
            return Err("fault needs `abort`, `delay` or `header_trigger: true`, \
                 e.g. {\"abort\": {\"status\": 503, \"percent\": 10}}"
                .into());
        }
        let abort = match self.abort {
            None => None,
            Some(abort) => Some(Abort {
                status: check_status(abort.status).map_err(|e| format!("abort.status: {e}"))?,
                percent: check_percent(abort.percent).map_err(|e| format!("abort.percent: {e}"))?,
                message: abort.body.unwrap_or_else(|| DEFAULT_MESSAGE.into()),
            }),
        };
        let delay = match self.delay {
            None => None,
            Some(delay) => Some(Delay {
                duration: check_delay(delay.ms).map_err(|e| format!("delay.ms: {e}"))?,
                percent: check_percent(delay.percent).map_err(|e| format!("delay.percent: {e}"))?,
            }),
        };
        let max_header_delay = check_delay(self.max_header_delay_ms)
            .map_err(|e| format!("max_header_delay_ms: {e}"))?;
        Ok(Settings {
            abort,
            delay,
            header_trigger: self.header_trigger,
            max_header_delay,
        })
    }
}

/// Checks an abort status (from the config or a request header).
pub fn check_status(status: u16) -> Result<u16, String> {
    if STATUSES.contains(&status) {
        Ok(status)
    } else {
        Err(format!(
            "{status} is not a status an abort can answer with (200 to 599)"
        ))
    }
}

/// Checks a configured delay.
fn check_delay(ms: u64) -> Result<Duration, String> {
    if ms == 0 {
        return Err("a delay must be at least 1 ms".into());
    }
    if ms > MAX_DELAY_MS {
        return Err(format!(
            "{ms} ms is longer than the longest delay, {MAX_DELAY_MS} ms (5 minutes)"
        ));
    }
    Ok(Duration::from_millis(ms))
}

fn check_percent(percent: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent)
    } else {
        Err(format!("{percent} is not a percentage between 0 and 100"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.validate()
    }

    fn err(json: &str) -> String {
        parse(json).expect_err(json)
    }

    #[test]
    fn a_full_config() {
        let settings = parse(
            r#"{"abort": {"status": 503, "percent": 12.5, "body": "try later"},
                "delay": {"ms": 250, "percent": 50},
                "header_trigger": true}"#,
        )
        .unwrap();
        assert_eq!(
            settings,
            Settings {
                abort: Some(Abort {
                    status: 503,
                    percent: 12.5,
                    message: "try later".into()
                }),
                delay: Some(Delay {
                    duration: Duration::from_millis(250),
                    percent: 50.0
                }),
                header_trigger: true,
                max_header_delay: Duration::from_millis(DEFAULT_MAX_HEADER_DELAY_MS),
            }
        );
        let settings = parse(r#"{"header_trigger": true, "max_header_delay_ms": 250}"#).unwrap();
        assert_eq!(settings.max_header_delay, Duration::from_millis(250));
    }

    #[test]
    fn percent_defaults_to_every_request_and_the_message_has_a_default() {
        let settings = parse(r#"{"abort": {"status": 500}}"#).unwrap();
        let abort = settings.abort.unwrap();
        assert_eq!(abort.percent, 100.0);
        assert_eq!(abort.message, DEFAULT_MESSAGE);
        assert!(!settings.header_trigger);
        assert_eq!(
            parse(r#"{"delay": {"ms": 1}}"#)
                .unwrap()
                .delay
                .unwrap()
                .percent,
            100.0
        );
    }

    #[test]
    fn header_trigger_alone_is_a_config() {
        let settings = parse(r#"{"header_trigger": true}"#).unwrap();
        assert_eq!(settings.abort, None);
        assert_eq!(settings.delay, None);
        assert!(settings.header_trigger);
    }

    #[test]
    fn nothing_to_do_is_refused() {
        for json in ["{}", r#"{"header_trigger": false}"#] {
            assert!(
                err(json).starts_with("fault needs `abort`, `delay` or `header_trigger: true`")
            );
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_field() {
        assert_eq!(
            err(r#"{"abort": {"status": 99}}"#),
            "abort.status: 99 is not a status an abort can answer with (200 to 599)"
        );
        assert!(err(r#"{"abort": {"status": 600}}"#).starts_with("abort.status: 600"));
        assert!(err(r#"{"abort": {"status": 101}}"#).starts_with("abort.status: 101"));
        assert_eq!(
            err(r#"{"abort": {"status": 503, "percent": 100.5}}"#),
            "abort.percent: 100.5 is not a percentage between 0 and 100"
        );
        assert!(
            err(r#"{"abort": {"status": 503, "percent": -1}}"#).starts_with("abort.percent: -1")
        );
        assert_eq!(
            err(r#"{"delay": {"ms": 0}}"#),
            "delay.ms: a delay must be at least 1 ms"
        );
        assert_eq!(
            err(r#"{"delay": {"ms": 300001}}"#),
            "delay.ms: 300001 ms is longer than the longest delay, 300000 ms (5 minutes)"
        );
        assert!(err(r#"{"delay": {"ms": 5, "percent": 101}}"#).starts_with("delay.percent: 101"));
        assert_eq!(
            err(r#"{"header_trigger": true, "max_header_delay_ms": 0}"#),
            "max_header_delay_ms: a delay must be at least 1 ms"
        );
    }

    #[test]
    fn malformed_configs_are_refused() {
        assert!(err(r#"{"abort": {}}"#).starts_with("missing field `status`"));
        assert!(err(r#"{"abort": {"status": 503, "pct": 1}}"#).starts_with("unknown field `pct`"));
        assert!(err(r#"{"abort": {"status": "503"}}"#).starts_with("invalid type"));
        assert!(err(r#"{"delay": {"ms": -5}}"#).starts_with("invalid value"));
        assert!(err(r#"{"header_trigger": "yes"}"#).starts_with("invalid type"));
        assert!(err(r#"{"aborts": {"status": 503}}"#).starts_with("unknown field `aborts`"));
    }
}
