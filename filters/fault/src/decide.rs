//! Which faults a request gets: from its trigger headers, or by chance.

use std::time::Duration;

use crate::config::{MAX_DELAY_MS, Settings, check_status};

/// The request header that forces an abort with its status.
pub const ABORT_HEADER: &str = "x-weft-fault-abort";
/// The request header that forces a delay of its milliseconds.
pub const DELAY_HEADER: &str = "x-weft-fault-delay";

/// The faults chosen for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// Hold the request this long first.
    pub delay: Option<Duration>,
    /// Then answer with this status instead of the upstream.
    pub abort: Option<u16>,
}

/// The trigger headers of a request (their first values), when
/// `header_trigger` is on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Triggers<'a> {
    /// `x-weft-fault-abort`.
    pub abort: Option<&'a str>,
    /// `x-weft-fault-delay`.
    pub delay: Option<&'a str>,
}

/// Decides the faults of one request. A valid trigger header decides its
/// fault (`x-weft-fault-delay: 0` means no delay; a longer delay than
/// `max_header_delay` is cut to it); otherwise the configured
/// fault applies with its percentage, drawing from `random` (one number per
/// configured fault, delay first). Invalid trigger values are ignored and
/// described in the returned notes.
pub fn decide(
    settings: &Settings,
    triggers: Triggers<'_>,
    mut random: impl FnMut() -> u64,
) -> (Decision, Vec<String>) {
    let mut notes = Vec::new();
    let forced_delay = triggers
        .delay
        .and_then(|value| note_err(&mut notes, DELAY_HEADER, parse_delay(value)));
    let forced_abort = triggers
        .abort
        .and_then(|value| note_err(&mut notes, ABORT_HEADER, parse_abort(value)));

    let delay = match forced_delay {
        Some(forced) if forced > settings.max_header_delay => {
            notes.push(format!(
                "{DELAY_HEADER}: {} ms cut to max_header_delay_ms, {} ms",
                forced.as_millis(),
                settings.max_header_delay.as_millis()
            ));
            Some(settings.max_header_delay)
        }
        Some(forced) => (!forced.is_zero()).then_some(forced),
        None => settings
            .delay
            .as_ref()
            .filter(|delay| chance(delay.percent, random()))
            .map(|delay| delay.duration),
    };
    let abort = match forced_abort {
        Some(status) => Some(status),
        None => settings
            .abort
            .as_ref()
            .filter(|abort| chance(abort.percent, random()))
            .map(|abort| abort.status),
    };
    (Decision { delay, abort }, notes)
}

/// `Ok` as `Some`; an error becomes a note and `None`.
fn note_err<T>(notes: &mut Vec<String>, header: &str, parsed: Result<T, String>) -> Option<T> {
    parsed
        .map_err(|e| notes.push(format!("{header} ignored: {e}")))
        .ok()
}

/// Whether an event of probability `percent`% happens, given a uniformly
/// random `random`: `0` never, `100` always.
pub fn chance(percent: f64, random: u64) -> bool {
    // The top 53 bits as a fraction in [0, 1): exact in an f64.
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    unit * 100.0 < percent
}

/// Parses `x-weft-fault-abort`: a status from 200 to 599.
pub fn parse_abort(value: &str) -> Result<u16, String> {
    let status: u16 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a status code"))?;
    check_status(status)
}

/// Parses `x-weft-fault-delay`: milliseconds from 0 to 300000.
pub fn parse_delay(value: &str) -> Result<Duration, String> {
    let ms: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
    if ms > MAX_DELAY_MS {
        return Err(format!(
            "{ms} ms is longer than the longest delay, {MAX_DELAY_MS} ms"
        ));
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Abort, Delay};

    fn settings(abort: Option<(u16, f64)>, delay: Option<(u64, f64)>) -> Settings {
        Settings {
            abort: abort.map(|(status, percent)| Abort {
                status,
                percent,
                message: "m".into(),
            }),
            delay: delay.map(|(ms, percent)| Delay {
                duration: Duration::from_millis(ms),
                percent,
            }),
            header_trigger: true,
            max_header_delay: Duration::from_millis(1000),
        }
    }

    /// A generator that must not be called.
    fn no_random() -> u64 {
        panic!("no random number should be drawn")
    }

    /// A tiny deterministic generator (SplitMix64).
    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn chance_bounds() {
        for random in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            assert!(!chance(0.0, random), "{random}");
            assert!(chance(100.0, random), "{random}");
        }
        // The smallest draw passes any positive percentage; the largest
        // passes only 100.
        assert!(chance(f64::MIN_POSITIVE, 0));
        assert!(!chance(99.999_999, u64::MAX));
        // The middle of the range is the 50% mark.
        assert!(!chance(50.0, 1 << 63));
        assert!(chance(50.0, (1 << 63) - (1 << 11)));
    }

    #[test]
    fn chance_is_close_to_the_percentage() {
        let mut state = 7;
        for percent in [1.0, 10.0, 50.0, 90.0] {
            let n = 100_000;
            let hits = (0..n)
                .filter(|_| chance(percent, splitmix(&mut state)))
                .count();
            let expected = n as f64 * percent / 100.0;
            // Well over 5 standard deviations (at most 158 here).
            assert!(
                (hits as f64 - expected).abs() < 800.0,
                "{percent}%: {hits} of {n}"
            );
        }
    }

    #[test]
    fn percentages_decide_without_triggers() {
        let s = settings(Some((503, 100.0)), Some((200, 100.0)));
        let (decision, notes) = decide(&s, Triggers::default(), || 42);
        assert_eq!(
            decision,
            Decision {
                delay: Some(Duration::from_millis(200)),
                abort: Some(503)
            }
        );
        assert!(notes.is_empty());

        let s = settings(Some((503, 0.0)), Some((200, 0.0)));
        let (decision, _) = decide(&s, Triggers::default(), || 42);
        assert_eq!(decision, Decision::default());
    }

    #[test]
    fn delay_draws_first_then_abort() {
        let s = settings(Some((500, 50.0)), Some((10, 50.0)));
        // First draw (delay) low → delayed; second (abort) high → not aborted.
        let mut draws = [0u64, u64::MAX].into_iter();
        let (decision, _) = decide(&s, Triggers::default(), || draws.next().unwrap());
        assert_eq!(decision.delay, Some(Duration::from_millis(10)));
        assert_eq!(decision.abort, None);
        assert_eq!(draws.next(), None, "one draw per configured fault");

        let mut draws = [u64::MAX, 0].into_iter();
        let (decision, _) = decide(&s, Triggers::default(), || draws.next().unwrap());
        assert_eq!(decision.delay, None);
        assert_eq!(decision.abort, Some(500));
    }

    #[test]
    fn nothing_configured_draws_nothing() {
        let s = settings(None, None);
        let (decision, notes) = decide(&s, Triggers::default(), no_random);
        assert_eq!(decision, Decision::default());
        assert!(notes.is_empty());
    }

    #[test]
    fn trigger_headers_decide_their_fault() {
        let s = settings(None, None);
        let triggers = Triggers {
            abort: Some("418"),
            delay: Some(" 150 "),
        };
        let (decision, notes) = decide(&s, triggers, no_random);
        assert_eq!(
            decision,
            Decision {
                delay: Some(Duration::from_millis(150)),
                abort: Some(418)
            }
        );
        assert!(notes.is_empty());

        // A trigger overrides the configured fault and its percentage.
        let s = settings(Some((503, 0.0)), Some((999, 100.0)));
        let triggers = Triggers {
            abort: Some("502"),
            delay: Some("0"),
        };
        let (decision, _) = decide(&s, triggers, no_random);
        assert_eq!(
            decision,
            Decision {
                delay: None,
                abort: Some(502)
            }
        );
    }

    #[test]
    fn a_triggered_delay_is_cut_to_the_longest_allowed() {
        let s = settings(None, None);
        let triggers = Triggers {
            abort: None,
            delay: Some("300000"),
        };
        let (decision, notes) = decide(&s, triggers, no_random);
        assert_eq!(decision.delay, Some(Duration::from_millis(1000)));
        assert_eq!(
            notes,
            ["x-weft-fault-delay: 300000 ms cut to max_header_delay_ms, 1000 ms"]
        );
    }

    #[test]
    fn invalid_triggers_are_ignored_and_noted() {
        let s = settings(Some((503, 0.0)), None);
        let triggers = Triggers {
            abort: Some("700"),
            delay: Some("soon"),
        };
        let (decision, notes) = decide(&s, triggers, || u64::MAX);
        // The configured abort (0%) decides instead.
        assert_eq!(decision, Decision::default());
        assert_eq!(
            notes,
            [
                "x-weft-fault-delay ignored: \"soon\" is not a number of milliseconds",
                "x-weft-fault-abort ignored: 700 is not a status an abort can answer with (200 to 599)",
            ]
        );
    }

    #[test]
    fn trigger_values() {
        assert_eq!(parse_abort("503"), Ok(503));
        assert_eq!(parse_abort("200"), Ok(200));
        assert!(parse_abort("199").is_err());
        assert!(parse_abort("").is_err());
        assert!(parse_abort("5o3").is_err());
        assert!(parse_abort("70000").is_err());
        assert_eq!(parse_delay("0"), Ok(Duration::ZERO));
        assert_eq!(parse_delay("300000"), Ok(Duration::from_secs(300)));
        assert_eq!(
            parse_delay("300001"),
            Err("300001 ms is longer than the longest delay, 300000 ms".into())
        );
        assert!(parse_delay("-1").is_err());
        assert!(parse_delay("1.5").is_err());
    }
}
