//! Log timestamps: tracing's format (RFC 3339, UTC, microseconds), with
//! the date and time of day formatted once per second per thread.

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// Timestamps as tracing's default timer writes them (RFC 3339, UTC,
/// microseconds: `2026-11-22T03:23:35.439134Z`), with the date and time of
/// day formatted once per second per thread rather than for every line.
pub struct LogClock;

thread_local! {
    /// The second last formatted on this thread, and its text.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for LogClock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        let mut text = [0; 27];
        LogClock::now(&mut text);
        // ASCII digits and separators.
        w.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

impl LogClock {
    /// Writes the current time: `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`.
    pub fn now(out: &mut [u8; 27]) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = now.as_secs();
        let (cached, mut text) = LAST_SECOND.get();
        if cached != secs {
            text = second_text(secs);
            LAST_SECOND.set((secs, text));
        }
        out[..19].copy_from_slice(&text);
        out[19] = b'.';
        let mut n = now.subsec_micros();
        for digit in out[20..26].iter_mut().rev() {
            *digit = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out[26] = b'Z';
    }
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the Unix epoch (years up to 9999).
fn second_text(secs: u64) -> [u8; 19] {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00";
    let fields = [
        (year % 10_000, 0, 4),
        (month, 5, 2),
        (day, 8, 2),
        (in_day / 3600, 11, 2),
        (in_day % 3600 / 60, 14, 2),
        (in_day % 60, 17, 2),
    ];
    for (mut value, at, width) in fields {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    text
}

/// The (year, month, day) of the `days`-th day after 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    (year_of_era + era * 400 + u64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::{LogClock, second_text};

    #[test]
    fn seconds_are_formatted_as_rfc3339() {
        let text = |secs| String::from_utf8(second_text(secs).to_vec()).unwrap();
        assert_eq!(text(0), "1970-01-01T00:00:00");
        // date -u -d @951782400: a leap day in a century year.
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(text(1_704_067_199), "2023-12-31T23:59:59");
        assert_eq!(text(1_795_318_415), "2026-11-22T03:33:35");
        assert_eq!(text(4_107_542_400), "2100-03-01T00:00:00");
    }

    #[test]
    fn the_clock_writes_what_tracing_s_default_timer_writes() {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        let time = |timer: &dyn FormatTime| {
            let mut text = String::new();
            timer.format_time(&mut Writer::new(&mut text)).unwrap();
            text
        };
        // Ours between two of theirs in the same second: all three agree
        // up to the second (a few tries, in case a second ends meanwhile).
        for _ in 0..5 {
            let before = time(&SystemTime);
            let ours = time(&LogClock);
            let after = time(&SystemTime);
            if before[..19] != after[..19] {
                continue;
            }
            assert_eq!(ours[..19], before[..19], "{ours} vs {before}");
            assert_eq!(ours.len(), before.len(), "{ours} vs {before}");
            assert!(ours.as_bytes()[19] == b'.' && ours.ends_with('Z'), "{ours}");
            assert!(before[20..26] <= ours[20..26] && ours[20..26] <= after[20..26]);
            return;
        }
        panic!("five second boundaries in a row");
    }
}
