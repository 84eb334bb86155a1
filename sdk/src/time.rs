//! Clocks, from the proxy (the standard library's clocks trap in a filter).

use crate::sys::host;

/// Wall-clock time: nanoseconds since the Unix epoch.
pub fn now_unix_nanos() -> u64 {
    host::now_unix_nanos()
}

/// Monotonic time in nanoseconds from an arbitrary origin: subtract two
/// readings for a duration.
pub fn monotonic_nanos() -> u64 {
    host::monotonic_nanos()
}

/// `unix_nanos` (nanoseconds since 1970-01-01T00:00:00Z) as RFC 3339 in
/// UTC with milliseconds (truncated), e.g. `2026-05-01T12:34:56.789Z`.
pub fn rfc3339_millis(unix_nanos: u64) -> String {
    let mut text = String::with_capacity(24);
    push_rfc3339_millis(&mut text, unix_nanos);
    text
}

/// [`rfc3339_millis`] appended to `out`: a log line written in one buffer
/// makes no string for its time.
pub fn push_rfc3339_millis(out: &mut String, unix_nanos: u64) {
    // Two divisions of a u64 (on wasm32 each a call to a 128-bit
    // multiplication), then u32 arithmetic only: the milliseconds, the
    // second of the day and the day count (213,503 at most) all fit.
    let secs = unix_nanos / 1_000_000_000;
    let millis = (unix_nanos - secs * 1_000_000_000) as u32 / 1_000_000;
    let days = secs / 86_400;
    let in_day = (secs - days * 86_400) as u32;
    let (year, month, day) = civil_from_days(days as u32);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`, two digits at a time from a table:
    // `format!`, or a step per digit, costs several times more in a
    // filter's hot path.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut two_digits = |at: usize, value: u32| {
        let from = 2 * value as usize;
        text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[from..from + 2]);
    };
    two_digits(0, year / 100 % 100);
    two_digits(2, year % 100);
    two_digits(5, month);
    two_digits(8, day);
    two_digits(11, in_day / 3600);
    two_digits(14, in_day / 60 % 60);
    two_digits(17, in_day % 60);
    two_digits(21, millis % 100);
    text[20] = b'0' + (millis / 100) as u8;
    out.push_str(std::str::from_utf8(&text).expect("digits and separators are ASCII"));
}

/// `00` to `99`, one after the other, made when compiling.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

/// The (year, month, day) of the `days`-th day after 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`). In
/// u32: every intermediate value stays under 2^32 for any `days` a u64 of
/// nanoseconds reaches.
fn civil_from_days(days: u32) -> (u32, u32, u32) {
    // Shift the epoch to 0000-03-01, the start of a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u32::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NANOS: u64 = 1_000_000_000;

    /// The formatting as first written, in u64 throughout.
    fn reference_rfc3339_millis(unix_nanos: u64) -> String {
        let secs = unix_nanos / 1_000_000_000;
        let millis = (unix_nanos % 1_000_000_000) / 1_000_000;
        let in_day = secs % 86_400;
        let z = secs / 86_400 + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        format!(
            "{:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            year % 10_000,
            in_day / 3600,
            in_day % 3600 / 60,
            in_day % 60
        )
    }

    #[test]
    fn every_day_and_many_instants_are_formatted_as_the_reference_does() {
        let last_day = u64::MAX / NANOS / 86_400;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for day in 0..=last_day {
            // The day's first and last nanosecond, and one instant in it.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let start = day * 86_400 * NANOS;
            let instants = [
                start,
                start.saturating_add(86_400 * NANOS - 1),
                start.saturating_add(seed % (86_400 * NANOS)),
            ];
            for nanos in instants {
                assert_eq!(
                    rfc3339_millis(nanos),
                    reference_rfc3339_millis(nanos),
                    "{nanos}"
                );
            }
        }
        for nanos in [
            u64::MAX,
            u64::MAX - 1,
            u64::MAX / NANOS * NANOS,
            999_999,
            1_000_000,
        ] {
            assert_eq!(rfc3339_millis(nanos), reference_rfc3339_millis(nanos));
        }
        let mut out = String::from("at ");
        push_rfc3339_millis(&mut out, 0);
        assert_eq!(out, "at 1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_epoch() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn known_instants() {
        // date -u -d @951782400 → 2000-02-29 (a leap day in a century year).
        assert_eq!(
            rfc3339_millis(951_782_400 * NANOS),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(1_700_000_000 * NANOS + 123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        // The last second of a year.
        assert_eq!(
            rfc3339_millis(1_704_067_199 * NANOS),
            "2023-12-31T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339_millis(1_704_067_200 * NANOS),
            "2024-01-01T00:00:00.000Z"
        );
        // 2100 is not a leap year: 28 February is followed by 1 March.
        assert_eq!(
            rfc3339_millis(4_107_542_399 * NANOS),
            "2100-02-28T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339_millis(4_107_542_400 * NANOS),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(rfc3339_millis(u64::MAX), "2554-07-21T23:34:33.709Z");
    }

    #[test]
    fn milliseconds_are_truncated() {
        assert_eq!(rfc3339_millis(999_999_999), "1970-01-01T00:00:00.999Z");
        assert_eq!(rfc3339_millis(1_000_000), "1970-01-01T00:00:00.001Z");
        assert_eq!(rfc3339_millis(999_999), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_day_of_four_centuries_follows_the_previous_one() {
        let mut previous = civil_from_days(0);
        assert_eq!(previous, (1970, 1, 1));
        for days in 1..146_097 * 2 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let next_month = (y, m, d) == (py, pm + 1, 1) && pd >= 28;
            let next_year = (y, m, d) == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} → {:?}",
                (y, m, d)
            );
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(d <= len[m as usize - 1], "{:?}", (y, m, d));
            previous = (y, m, d);
        }
    }
}
