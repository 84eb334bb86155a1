//! The line writers against the straightforward versions they replaced,
//! kept here as the reference.

use std::fmt::Write as _;

use super::*;

/// The escaping as first written: a scan byte by byte.
fn reference_json_string(text: &str) -> String {
    let mut out = String::from('"');
    let mut rest = text;
    while let Some(at) = rest
        .bytes()
        .position(|b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
    {
        out.push_str(&rest[..at]);
        let c = rest[at..].chars().next().unwrap();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
    out
}

fn json_string(text: &str) -> String {
    let mut out = String::new();
    push_json_string(&mut out, text);
    out
}

/// A small deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Characters of every class the escaping tells apart, and neighbours of
/// its boundaries.
const CHARS: [char; 24] = [
    'a',
    'Z',
    '0',
    ' ',
    '!',
    '#',
    '[',
    ']',
    '~',
    '"',
    '\\',
    '/',
    '\n',
    '\r',
    '\t',
    '\0',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    'é',
    '€',
    '\u{2028}',
    '\u{2029}',
    '\u{1f600}',
];

#[test]
fn json_strings_are_escaped() {
    let out = json_string("a\"b\\c\nd\te\u{0}f\u{1f}g\u{7f}h\u{2028}é€");
    assert_eq!(
        out,
        "\"a\\\"b\\\\c\\nd\\te\\u0000f\\u001fg\\u007fh\\u2028é€\""
    );
    let back: String = serde_json::from_str(&out).unwrap();
    assert_eq!(back, "a\"b\\c\nd\te\u{0}f\u{1f}g\u{7f}h\u{2028}é€");
}

#[test]
fn the_escaping_is_the_reference_one_on_generated_strings() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = random.below(40);
        // Mostly plain text, as in a line, with special characters here
        // and there; some strings of specials only.
        let plain = random.below(4) != 0;
        let text: String = (0..len)
            .map(|_| {
                if plain && random.below(8) != 0 {
                    char::from(b' ' + random.below(95) as u8)
                } else {
                    CHARS[random.below(CHARS.len())]
                }
            })
            .collect();
        assert_eq!(json_string(&text), reference_json_string(&text), "{text:?}");
    }
}

#[test]
fn every_character_is_escaped_as_the_reference_does_at_every_position() {
    let specials = (0..0x80u8).map(char::from).chain(CHARS);
    for c in specials {
        for len in 1..26 {
            for at in 0..len {
                let text: String = (0..len).map(|i| if i == at { c } else { 'x' }).collect();
                assert_eq!(json_string(&text), reference_json_string(&text), "{text:?}");
            }
        }
    }
}

#[test]
fn the_word_scan_finds_the_first_special_byte_of_any_bytes() {
    let mut random = Random(7);
    for _ in 0..50_000 {
        let len = random.below(40);
        // Bytes around the boundaries (where borrows and carries start),
        // and any byte.
        const EDGES: [u8; 12] = [
            0, 0x1f, 0x20, 0x21, b'"', b'\\', 0x7e, 0x7f, 0x80, 0xfe, 0xff, b'a',
        ];
        let bytes: Vec<u8> = (0..len)
            .map(|_| match random.below(3) {
                0 => EDGES[random.below(EDGES.len())],
                1 => random.next() as u8,
                _ => b'a' + random.below(26) as u8,
            })
            .collect();
        assert_eq!(
            find_special(&bytes),
            bytes.iter().position(|&b| is_special(b)),
            "{bytes:?}"
        );
    }
}

/// The decimals as first written: u64 division digit by digit.
fn reference_decimal(mut value: u64, width: usize) -> String {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || digits.len() - start < width {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    String::from_utf8(digits[start..].to_vec()).unwrap()
}

/// Values around every power of ten and of two, and the ends.
fn boundary_values() -> Vec<u64> {
    let mut values = vec![0, 1, u64::MAX, u64::MAX - 1];
    for exponent in 0..20 {
        let power = 10u64.pow(exponent);
        values.extend([power - 1, power, power + 1, power * 9]);
    }
    for shift in 0..64 {
        let power = 1u64 << shift;
        values.extend([power - 1, power, power + 1]);
    }
    values.extend([
        999_999_999,
        1_000_000_000,
        4_294_967_295_000,
        4_294_967_296_999_999_999,
    ]);
    values
}

#[test]
fn decimals_are_the_reference_ones() {
    let mut random = Random(11);
    let values = boundary_values()
        .into_iter()
        .chain((0..100_000).map(|_| random.next() >> random.below(64)));
    for value in values {
        for width in [1, 3, 9, 10, 20] {
            let mut out = String::from("x");
            push_decimal(&mut out, value, width);
            assert_eq!(out[1..], reference_decimal(value, width), "{value} {width}");
            assert_eq!(out[1..], format!("{value:0width$}"));
        }
    }
}

#[test]
fn durations_are_milliseconds_with_three_decimals() {
    let mut out = String::new();
    let mut line = JsonLine::new(&mut out, "{\"type\":\"t\"");
    line.millis(json_key!("a"), Some(0));
    line.millis(json_key!("b"), Some(999));
    line.millis(json_key!("c"), Some(1_000));
    line.millis(json_key!("d"), Some(1_234_567_890));
    line.millis(json_key!("e"), None);
    line.finish();
    assert_eq!(
        out,
        r#"{"type":"t","a":0.000,"b":0.000,"c":0.001,"d":1234.567,"e":null}"#
    );
}

#[test]
fn durations_are_the_reference_ones() {
    let mut random = Random(13);
    let values = boundary_values()
        .into_iter()
        .chain((0..50_000).map(|_| random.next() >> random.below(64)));
    for nanos in values {
        let mut out = String::new();
        let mut line = JsonLine::new(&mut out, "{\"type\":\"t\"");
        line.millis(json_key!("d"), Some(nanos));
        line.finish();
        let micros = nanos / 1_000;
        let expected = format!(
            "{{\"type\":\"t\",\"d\":{}.{}}}",
            reference_decimal(micros / 1_000, 1),
            reference_decimal(micros % 1_000, 3)
        );
        assert_eq!(out, expected, "{nanos}");
    }
}

#[test]
fn times_are_rfc3339_strings() {
    let mut out = String::new();
    let mut line = JsonLine::new(&mut out, "{\"type\":\"t\"");
    line.time(json_key!("a"), Some(1_700_000_000_123_456_789));
    line.time(json_key!("b"), None);
    line.finish();
    assert_eq!(
        out,
        r#"{"type":"t","a":"2023-11-14T22:13:20.123Z","b":null}"#
    );
}

#[test]
fn numbers_are_parsed_as_str_parse_parses_them() {
    let mut texts: Vec<String> = [
        "",
        "+",
        "-",
        "-0",
        "+0",
        "0",
        "00",
        "++1",
        "+-1",
        " 1",
        "1 ",
        "1a",
        "a1",
        "٣",
        "１",
        "18446744073709551615",
        "18446744073709551616",
        "+18446744073709551615",
        "000000000000000000001",
        "9999999999999999999",
        "99999999999999999999",
        "1767225600123456789",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    texts.extend(boundary_values().iter().map(u64::to_string));
    let mut random = Random(17);
    for _ in 0..50_000 {
        let len = random.below(24);
        let text: String = (0..len)
            .map(|_| match random.below(20) {
                0 => '+',
                1 => '-',
                2 => '/',
                3 => ':',
                _ => char::from(b'0' + random.below(10) as u8),
            })
            .collect();
        texts.push(text);
    }
    for text in texts {
        assert_eq!(parse_u64(&text), text.parse::<u64>().ok(), "{text:?}");
    }
}

#[test]
fn eight_digits_are_read_as_digit_by_digit() {
    let mut random = Random(19);
    for _ in 0..200_000 {
        // Mostly digits, with the bytes around them and any byte.
        let bytes: [u8; 8] = std::array::from_fn(|_| match random.below(16) {
            0 => [b'/', b':', 0, 0x7f, 0x80, 0xb0, 0xb9, 0xff][random.below(8)],
            1 => random.next() as u8,
            _ => b'0' + random.below(10) as u8,
        });
        let expected = bytes.iter().try_fold(0u32, |value, &b| {
            b.is_ascii_digit().then(|| value * 10 + u32::from(b - b'0'))
        });
        assert_eq!(
            eight_digits(u64::from_le_bytes(bytes)),
            expected,
            "{bytes:?}"
        );
    }
}
