//! The filter's JSON lines, written by hand: a line is made for every
//! request, and `serde_json` or `core::fmt` cost several times more in a
//! filter. Also the numbers the lines read from the proxy's properties.
//!
//! On wasm32 a division of a u64 by a constant, and a checked u64
//! multiplication, are each a call to a 128-bit multiplication
//! (`__multi3`); the same on a u32 is a plain multiplication. So the
//! numbers here are made with u32 arithmetic wherever the values fit.

use std::fmt::Write;

/// `,"<name>":`: a key of a line after its first (`"type"`), written with
/// one copy.
macro_rules! json_key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}
pub(crate) use json_key;

/// A JSON object on one line, written key by key in order, appended to a
/// buffer the caller keeps.
pub struct JsonLine<'a>(&'a mut String);

impl<'a> JsonLine<'a> {
    /// Starts a line in `out` with `head`, its opening and first member
    /// (`{"type":"access"`).
    pub fn new(out: &'a mut String, head: &'static str) -> JsonLine<'a> {
        debug_assert!(head.starts_with("{\"type\":\""));
        out.push_str(head);
        JsonLine(out)
    }

    /// `key` is `,"<name>":` made by [`json_key!`] from one of the
    /// filter's own names (lower case ASCII letters and underscores), so
    /// it is written without an escaping pass.
    pub fn key(&mut self, key: &'static str) {
        debug_assert!(key.starts_with(",\"") && key.ends_with("\":"));
        debug_assert!(
            key[2..key.len() - 2]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        );
        self.0.push_str(key);
    }

    /// `key` and `value` as a JSON string.
    pub fn string(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_json_string(self.0, value);
    }

    /// `key` and `value` as a JSON string, or `null`.
    pub fn opt_string(&mut self, key: &'static str, value: Option<&str>) {
        match value {
            Some(value) => self.string(key, value),
            None => self.null(key),
        }
    }

    /// `key` and `null`.
    pub fn null(&mut self, key: &'static str) {
        self.key(key);
        self.0.push_str("null");
    }

    /// `key` and `value`.
    pub fn number(&mut self, key: &'static str, value: impl Into<u64>) {
        self.key(key);
        push_decimal(self.0, value.into(), 1);
    }

    /// `key` and `value`, or `null`.
    pub fn opt_number(&mut self, key: &'static str, value: Option<impl Into<u64>>) {
        match value {
            Some(value) => self.number(key, value),
            None => self.null(key),
        }
    }

    /// `key` and the instant `unix_nanos` as an RFC 3339 string (see
    /// [`weft_sdk::time::rfc3339_millis`]), or `null`.
    pub fn time(&mut self, key: &'static str, unix_nanos: Option<u64>) {
        let Some(unix_nanos) = unix_nanos else {
            return self.null(key);
        };
        self.key(key);
        // Digits and `-:.TZ`: nothing to escape.
        self.0.push('"');
        weft_sdk::time::push_rfc3339_millis(self.0, unix_nanos);
        self.0.push('"');
    }

    /// `key` and `nanos` as milliseconds with three decimals (microsecond
    /// precision), or `null`.
    pub fn millis(&mut self, key: &'static str, nanos: Option<u64>) {
        let Some(nanos) = nanos else {
            return self.null(key);
        };
        self.key(key);
        // Under 4.29 s (nearly every request), u32 arithmetic only.
        let (whole, thousandths) = match u32::try_from(nanos) {
            Ok(nanos) => (u64::from(nanos / 1_000_000), nanos / 1_000 % 1_000),
            Err(_) => (nanos / 1_000_000, (nanos / 1_000 % 1_000) as u32),
        };
        push_decimal(self.0, whole, 1);
        self.0.push('.');
        push_decimal(self.0, u64::from(thousandths), 3);
    }

    /// Closes the line.
    pub fn finish(self) {
        self.0.push('}');
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` (at most 20)
/// digits.
pub fn push_decimal(out: &mut String, value: u64, width: usize) {
    // The value in groups of three digits, the lowest first: nine digits
    // at a time while it does not fit a u32 (at most twice), then in u32.
    let mut groups = [0u16; 7];
    let mut count = 0;
    let mut value = value;
    while value > u64::from(u32::MAX) {
        let nine = (value % 1_000_000_000) as u32;
        value /= 1_000_000_000;
        groups[count..count + 3].copy_from_slice(&[
            (nine % 1000) as u16,
            (nine / 1000 % 1000) as u16,
            (nine / 1_000_000) as u16,
        ]);
        count += 3;
    }
    let mut value = value as u32;
    loop {
        groups[count] = (value % 1000) as u16;
        count += 1;
        value /= 1000;
        if value == 0 {
            break;
        }
    }
    // The highest group without its leading zeros, unless `width` wants
    // them; every other group whole.
    let high = 3 * usize::from(groups[count - 1]);
    let high_digits = match high / 3 {
        100.. => 3,
        10.. => 2,
        _ => 1,
    };
    let high_len = high_digits
        .max(width.saturating_sub(3 * (count - 1)))
        .min(3);
    let zeros = width.saturating_sub(3 * (count - 1) + high_len);
    if zeros > 0 {
        out.push_str(&"00000000000000000000"[..zeros]);
    }
    out.push_str(&TRIPLES[high + 3 - high_len..high + 3]);
    for &group in groups[..count - 1].iter().rev() {
        let at = 3 * usize::from(group);
        out.push_str(&TRIPLES[at..at + 3]);
    }
}

/// `000` to `999`, one after the other, made when compiling: numbers are
/// copied from here three digits at a time, with neither a step per digit
/// nor a UTF-8 check of the digits.
const TRIPLES: &str = {
    const BYTES: [u8; 3000] = {
        let mut bytes = [0; 3000];
        let mut n = 0;
        while n < 1000 {
            bytes[3 * n] = b'0' + (n / 100) as u8;
            bytes[3 * n + 1] = b'0' + (n / 10 % 10) as u8;
            bytes[3 * n + 2] = b'0' + (n % 10) as u8;
            n += 1;
        }
        bytes
    };
    match std::str::from_utf8(&BYTES) {
        Ok(text) => text,
        Err(_) => panic!("digits are ASCII"),
    }
};

/// `text` as a u64, exactly as `str::parse::<u64>` reads it (an optional
/// `+`, then one or more ASCII digits, no overflow). Up to 19 digits cannot
/// overflow, so they are summed without the checked multiplication
/// `parse` makes, eight at a time while eight are left (the start time
/// has 19); longer texts are left to `parse`.
pub fn parse_u64(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text).as_bytes();
    if digits.is_empty() || digits.len() > 19 {
        return text.parse().ok();
    }
    let mut words = digits.chunks_exact(8);
    let mut value = 0u64;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        value = value * 100_000_000 + u64::from(eight_digits(word)?);
    }
    for &byte in words.remainder() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

/// The value of the eight ASCII digits in `word` (little-endian: the first
/// digit in the lowest byte), or `None` when a byte is not a digit.
fn eight_digits(word: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = ONES * 0x80;
    let digits = word.wrapping_sub(ONES * u64::from(b'0'));
    // A byte under '0' wraps to its high bit (a borrow from it may reach
    // the bytes after it, which does not matter: one is enough); one from
    // '0' + 10 up has it after `+ 0x76` (0x80 - 10), or already.
    if (digits | digits.wrapping_add(ONES * 0x76)) & HIGHS != 0 {
        return None;
    }
    // Every byte is now a digit 0..=9. Pairs of digits into 16-bit lanes
    // (d0 * 10 + d1 in the low byte of each), then pairs of pairs into
    // 32-bit lanes, then the two halves: no lane overflows into the next.
    let pairs = (digits * 10 + (digits >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs * 100 + (pairs >> 16)) & 0x0000_ffff_0000_ffff;
    Some(((quads * 10_000 + (quads >> 32)) & 0xffff_ffff) as u32)
}

/// Appends `text` as a JSON string: quotes, backslashes and control
/// characters (DEL too) escaped, and U+2028 and U+2029, which end lines in
/// some JSON readers; everything else as is (the line is UTF-8). Runs of
/// plain ASCII are found with one scan and copied whole.
pub fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = find_special(rest.as_bytes()) {
        out.push_str(&rest[..at]);
        let c = rest[at..]
            .chars()
            .next()
            .expect("a character starts where a byte does");
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            // Other non-ASCII characters stop the scan but pass as is.
            c => out.push(c),
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Whether `byte` stops [`push_json_string`]'s scan: a control character,
/// `"`, `\`, DEL, or a byte of a non-ASCII character (which may be U+2028
/// or U+2029).
fn is_special(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\' || byte >= 0x7f
}

/// The index of the first byte of `bytes` that [`is_special`].
///
/// Eight bytes at a time, as one u64 ("SWAR"): the strings of a line are
/// short and mostly plain ASCII, and a test per byte costs several times
/// more than the copy. The last word overlaps the one before instead of
/// leaving a tail (its first bytes are known to be plain); only a text
/// under eight bytes is tested byte by byte.
fn find_special(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < 8 {
        return bytes.iter().position(|&b| is_special(b));
    }
    let word_at =
        |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let first_in = |at: usize, word: u64| {
        let found = special_bytes(word);
        (found != 0).then(|| at + found.trailing_zeros() as usize / 8)
    };
    let mut at = 0;
    while at + 8 < bytes.len() {
        if let Some(found) = first_in(at, word_at(at)) {
            return Some(found);
        }
        at += 8;
    }
    let last = bytes.len() - 8;
    first_in(last, word_at(last))
}

/// The bytes of `word` (little-endian: byte 0 lowest) that
/// [`is_special`], as a mask with the high bit of each set. A borrow or a
/// carry from a special byte may set the bit of a plain byte after it too,
/// never before it: the lowest bit set is exact, and it is the only one
/// used.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = ONES * 0x80;
    // A zero byte of `x`: `x - 1` borrows into its high bit, which `!x` has.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x;
    let control = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    // 0x7f and up: `+ 1` reaches the high bit, or it was set.
    let del_or_non_ascii = word.wrapping_add(ONES) | word;
    (control | quote | backslash | del_or_non_ascii) & HIGHS
}

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
