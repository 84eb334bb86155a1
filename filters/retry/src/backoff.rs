//! How long to wait before a retry: exponential backoff with full jitter,
//! or what the upstream's `Retry-After` asks for.

use crate::config::{Backoff, Settings};
use crate::decide::Outcome;

/// The wait before a retry, in milliseconds, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Drawn from the backoff.
    Backoff(u64),
    /// Asked for by the response's `Retry-After`.
    RetryAfter(u64),
}

impl Wait {
    /// The wait in milliseconds.
    pub fn ms(self) -> u64 {
        match self {
            Wait::Backoff(ms) | Wait::RetryAfter(ms) => ms,
        }
    }
}

/// The wait before retrying after attempt number `attempt` (1 for the
/// first) failed with a response whose `Retry-After` is `retry_after`.
/// `now_unix_ms` is the wall clock (for an HTTP-date), `random` a random
/// number (for the jitter). A `Retry-After` longer than
/// `max_retry_after_ms` means no retry.
pub fn wait(
    settings: &Settings,
    retry_after: Option<&str>,
    attempt: u32,
    now_unix_ms: u64,
    random: u64,
) -> Result<Wait, Outcome> {
    if settings.honor_retry_after
        && let Some(ms) = retry_after.and_then(|value| parse_retry_after(value, now_unix_ms))
    {
        if ms > settings.max_retry_after_ms {
            return Err(Outcome::RetryAfterTooLong);
        }
        return Ok(Wait::RetryAfter(ms));
    }
    Ok(Wait::Backoff(jitter(
        ceiling_ms(settings.backoff, attempt),
        random,
    )))
}

/// The longest wait before retry number `retry` (1 for the first):
/// `base_ms × 2^(retry-1)`, at most `max_ms`.
pub fn ceiling_ms(backoff: Backoff, retry: u32) -> u64 {
    let factor = 1u64
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u64::MAX);
    backoff.base_ms.saturating_mul(factor).min(backoff.max_ms)
}

/// Full jitter: a wait drawn uniformly from `0..=ceiling` with `random`.
pub fn jitter(ceiling: u64, random: u64) -> u64 {
    match ceiling.checked_add(1) {
        Some(span) => random % span,
        None => random,
    }
}

/// The wait a `Retry-After` value asks for, in milliseconds: delay-seconds,
/// or an HTTP-date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7)
/// minus `now_unix_ms` (0 when it is past). `None` when it is neither.
pub fn parse_retry_after(value: &str, now_unix_ms: u64) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit: as long as can be (then refused as too long).
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(seconds.saturating_mul(1000));
    }
    let date_secs = parse_http_date(value, now_unix_ms / 1000)?;
    let date_ms = date_secs.saturating_mul(1000);
    Some(u64::try_from(date_ms.saturating_sub(i64::try_from(now_unix_ms).ok()?)).unwrap_or(0))
}

const SHORT_DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// An HTTP-date as seconds since the Unix epoch. `now_unix_secs` places an
/// RFC 850 two-digit year.
pub fn parse_http_date(value: &str, now_unix_secs: u64) -> Option<i64> {
    let parts: Vec<&str> = value.split_ascii_whitespace().collect();
    let (year, month, day, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [weekday, day, month, year, time, "GMT"] => {
            day_name(weekday.strip_suffix(',')?, &SHORT_DAYS)?;
            (
                digits(year, 4)?,
                month_number(month)?,
                digits(day, 2)?,
                *time,
            )
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [weekday, date, time, "GMT"] => {
            day_name(weekday.strip_suffix(',')?, &LONG_DAYS)?;
            let mut fields = date.split('-');
            let (day, month, year) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() {
                return None;
            }
            let year = two_digit_year(digits(year, 2)?, now_unix_secs);
            (year, month_number(month)?, digits(day, 2)?, *time)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [weekday, month, day, time, year] => {
            day_name(weekday, &SHORT_DAYS)?;
            if day.is_empty() || day.len() > 2 {
                return None;
            }
            (
                digits(year, 4)?,
                month_number(month)?,
                digits(day, day.len())?,
                *time,
            )
        }
        _ => return None,
    };
    let mut clock = time.split(':');
    let (hour, minute, second) = (clock.next()?, clock.next()?, clock.next()?);
    if clock.next().is_some() {
        return None;
    }
    let (hour, minute, second) = (digits(hour, 2)?, digits(minute, 2)?, digits(second, 2)?);
    if day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + (hour * 3600 + minute * 60 + second))
}

/// The value of exactly `len` ASCII digits.
fn digits(text: &str, len: usize) -> Option<i64> {
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn day_name(name: &str, names: &[&str]) -> Option<()> {
    names.contains(&name).then_some(())
}

fn month_number(name: &str) -> Option<i64> {
    MONTHS
        .iter()
        .position(|m| *m == name)
        .map(|index| index as i64 + 1)
}

/// RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in
/// the future is in the past century.
fn two_digit_year(yy: i64, now_unix_secs: u64) -> i64 {
    let now_year = civil_year(i64::try_from(now_unix_secs / 86_400).unwrap_or(0));
    let year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year - 100
    } else {
        year
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year of the day `days` since 1970-01-01 (`civil_from_days`).
fn civil_year(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(json: &str) -> Settings {
        let config: Config = serde_json::from_str(json).unwrap();
        config.validate().unwrap()
    }

    /// 1994-11-06T08:49:37Z, the RFC's example date.
    const RFC_EXAMPLE: i64 = 784_111_777;

    #[test]
    fn the_ceiling_doubles_up_to_max() {
        let b = Backoff {
            base_ms: 25,
            max_ms: 250,
        };
        let ceilings: Vec<u64> = (1..=7).map(|n| ceiling_ms(b, n)).collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250, 250]);
        assert_eq!(ceiling_ms(b, 0), 25, "attempt 0 is treated as the first");
        assert_eq!(ceiling_ms(b, 64), 250, "no overflow");
        assert_eq!(ceiling_ms(b, u32::MAX), 250);
        let big = Backoff {
            base_ms: 300_000,
            max_ms: 300_000,
        };
        assert_eq!(ceiling_ms(big, 60), 300_000);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        assert_eq!(jitter(0, 12345), 0);
        assert_eq!(jitter(100, 0), 0);
        assert_eq!(jitter(100, 100), 100);
        assert_eq!(jitter(100, 101), 0);
        assert_eq!(jitter(100, u64::MAX), u64::MAX % 101);
        assert_eq!(jitter(u64::MAX, 7), 7);
        // Every value in range is reachable, none beyond.
        let seen: std::collections::BTreeSet<u64> = (0..1000).map(|r| jitter(9, r)).collect();
        assert_eq!(seen, (0..=9).collect());
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse_retry_after("0", 0), Some(0));
        assert_eq!(parse_retry_after("1", 0), Some(1000));
        assert_eq!(parse_retry_after(" 120 ", 0), Some(120_000));
        assert_eq!(
            parse_retry_after("99999999999999999999999", 0),
            Some(u64::MAX)
        );
        for bad in ["", "-1", "1.5", "+3", "1 2", "soon", "0x10"] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn the_three_http_date_forms() {
        let now = 0;
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(form, now), Some(RFC_EXAMPLE), "{form}");
        }
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(0)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT", now),
            Some(1_835_481_599)
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Snu, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov 106 08:49:37 1994",
            "Nov  6 08:49:37 1994",
            "",
        ] {
            assert_eq!(parse_http_date(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn an_rfc850_year_is_at_most_50_years_ahead() {
        // Now: 2026-06-01.
        let now = u64::try_from(days_from_civil(2026, 6, 1) * 86_400).unwrap();
        let year_of = |yy: &str| {
            let secs = parse_http_date(&format!("Monday, 01-Jan-{yy} 00:00:00 GMT"), now).unwrap();
            civil_year(secs / 86_400)
        };
        assert_eq!(year_of("26"), 2026);
        assert_eq!(year_of("76"), 2076);
        assert_eq!(year_of("77"), 1977);
        assert_eq!(year_of("99"), 1999);
        assert_eq!(year_of("00"), 2000);
    }

    #[test]
    fn civil_dates_round_trip() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (1969, 12, 31), (2400, 12, 31)] {
            let days = days_from_civil(y, m, d);
            assert_eq!(civil_year(days), y, "{y}-{m}-{d}");
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn a_date_is_a_wait_from_now() {
        let now_ms = (RFC_EXAMPLE as u64) * 1000;
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(date, now_ms), Some(0));
        assert_eq!(parse_retry_after(date, now_ms - 2500), Some(2500));
        assert_eq!(
            parse_retry_after(date, now_ms + 60_000),
            Some(0),
            "a past date: no wait"
        );
    }

    #[test]
    fn retry_after_sets_the_wait_unless_too_long_or_ignored() {
        let s =
            settings(r#"{"backoff": {"base_ms": 10, "max_ms": 40}, "max_retry_after_ms": 2000}"#);
        assert_eq!(wait(&s, Some("2"), 1, 0, 7), Ok(Wait::RetryAfter(2000)));
        assert_eq!(wait(&s, Some("0"), 1, 0, 7), Ok(Wait::RetryAfter(0)));
        assert_eq!(
            wait(&s, Some("3"), 1, 0, 7),
            Err(Outcome::RetryAfterTooLong)
        );
        assert_eq!(
            wait(
                &s,
                Some("Sun, 06 Nov 1994 08:49:37 GMT"),
                1,
                (RFC_EXAMPLE as u64) * 1000 - 1500,
                7
            ),
            Ok(Wait::RetryAfter(1500))
        );
        // Not a valid value: the backoff decides.
        assert_eq!(wait(&s, Some("later"), 1, 0, 7), Ok(Wait::Backoff(7)));
        assert_eq!(wait(&s, None, 3, 0, 1000), Ok(Wait::Backoff(1000 % 41)));
        let ignore = settings(r#"{"honor_retry_after": false, "backoff": {"base_ms": 10}}"#);
        assert_eq!(wait(&ignore, Some("3600"), 2, 0, 15), Ok(Wait::Backoff(15)));
    }
}
