//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): parsing the
//! incoming `traceparent`, and the trace context of this hop.

use std::fmt;

/// A trace id: 16 bytes, never all zero.
pub type TraceId = [u8; 16];
/// A span (parent) id: 8 bytes, never all zero.
pub type SpanId = [u8; 8];

/// The `sampled` bit of `trace-flags`, the only flag of version `00`.
const SAMPLED: u8 = 0x01;

/// The version this filter writes.
const VERSION: &str = "00";

/// Length of a version-`00` `traceparent`: `2-32-16-2` plus three dashes.
const TRACEPARENT_LEN: usize = 55;

/// A valid incoming `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// The caller's span: the parent of this hop's span.
    pub parent_id: SpanId,
    /// The caller's `sampled` flag.
    pub sampled: bool,
}

/// Why an incoming `traceparent` was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The header appears more than once.
    Several,
    /// It does not have the format of its version.
    Format,
    /// The version is `ff`, which the specification forbids.
    Version,
    /// The trace id is all zeros.
    ZeroTraceId,
    /// The parent id is all zeros.
    ZeroParentId,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::Several => "more than one traceparent header",
            Invalid::Format => "not version-trace_id-parent_id-flags in lower-case hex",
            Invalid::Version => "version ff is forbidden",
            Invalid::ZeroTraceId => "the trace id is all zeros",
            Invalid::ZeroParentId => "the parent id is all zeros",
        })
    }
}

/// Reads the incoming `traceparent` from the values of that header:
/// `Ok(None)` when absent, `Ok(Some(..))` when valid.
///
/// Follows the specification: surrounding spaces and tabs are ignored;
/// version `00` must be exactly `00-<32 hex>-<16 hex>-<2 hex>` in lower-case
/// hex; a higher version (not `ff`) is read the same way and may carry more
/// after a `-`, which is ignored; trace id and parent id must not be all
/// zeros; two headers are invalid (which one would count?).
pub fn parse_header(values: &[String]) -> Result<Option<Parent>, Invalid> {
    match values {
        [] => Ok(None),
        [value] => parse(value).map(Some),
        _ => Err(Invalid::Several),
    }
}

/// Parses one `traceparent` value.
pub fn parse(value: &str) -> Result<Parent, Invalid> {
    let value = value.trim_matches([' ', '\t']).as_bytes();
    if value.len() < TRACEPARENT_LEN {
        return Err(Invalid::Format);
    }
    let version = hex_byte(&value[0..2]).ok_or(Invalid::Format)?;
    if version == 0xff {
        return Err(Invalid::Version);
    }
    // Version 00 is exactly 55 characters; a later version may add fields,
    // each after a dash.
    let rest = &value[TRACEPARENT_LEN..];
    let ends_right = if version == 0 {
        rest.is_empty()
    } else {
        rest.is_empty() || rest[0] == b'-'
    };
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' || !ends_right {
        return Err(Invalid::Format);
    }
    let trace_id: TraceId = hex_array(&value[3..35]).ok_or(Invalid::Format)?;
    let parent_id: SpanId = hex_array(&value[36..52]).ok_or(Invalid::Format)?;
    let flags = hex_byte(&value[53..55]).ok_or(Invalid::Format)?;
    if trace_id == [0; 16] {
        return Err(Invalid::ZeroTraceId);
    }
    if parent_id == [0; 8] {
        return Err(Invalid::ZeroParentId);
    }
    Ok(Parent {
        trace_id,
        parent_id,
        sampled: flags & SAMPLED != 0,
    })
}

/// The trace context of this hop: what goes upstream, and what the span
/// line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The trace: the caller's, or a new one.
    pub trace_id: TraceId,
    /// This hop's span, new for every request.
    pub span_id: SpanId,
    /// The caller's span, when the request continued a trace.
    pub parent_id: Option<SpanId>,
    /// Whether this hop records the trace (the outgoing `sampled` flag).
    pub sampled: bool,
}

impl Context {
    /// The context for a request: it continues `parent` when there is one,
    /// with a new span id and the caller's `sampled` flag; otherwise it
    /// starts a new trace, sampled when `sample` says so.
    ///
    /// `random` gives the host's random numbers: two for a new trace id, one
    /// for the span id.
    pub fn for_request(
        parent: Option<Parent>,
        sample: impl FnOnce() -> bool,
        mut random: impl FnMut() -> u64,
    ) -> Context {
        match parent {
            Some(parent) => Context {
                trace_id: parent.trace_id,
                span_id: new_span_id(random(), Some(parent.parent_id)),
                parent_id: Some(parent.parent_id),
                sampled: parent.sampled,
            },
            None => {
                let trace_id = new_trace_id(random(), random());
                Context {
                    trace_id,
                    span_id: new_span_id(random(), None),
                    parent_id: None,
                    sampled: sample(),
                }
            }
        }
    }

    /// The outgoing `traceparent`: `00-<trace id>-<span id>-<flags>`. Only
    /// the `sampled` flag is set or not; the other flags are zero, as the
    /// specification requires of the flags it does not define.
    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { SAMPLED } else { 0 };
        let mut text = String::with_capacity(TRACEPARENT_LEN);
        text.push_str(VERSION);
        text.push('-');
        push_hex(&mut text, &self.trace_id);
        text.push('-');
        push_hex(&mut text, &self.span_id);
        text.push('-');
        push_hex(&mut text, &[flags]);
        text
    }
}

/// A trace id from two random numbers; never all zeros.
pub fn new_trace_id(high: u64, low: u64) -> TraceId {
    let low = if high == 0 && low == 0 { 1 } else { low };
    let mut id = [0; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// A span id from a random number; never all zeros, and never the caller's
/// span id.
pub fn new_span_id(random: u64, parent: Option<SpanId>) -> SpanId {
    let mut id = random.max(1);
    if parent == Some(id.to_be_bytes()) {
        id = id.checked_add(1).unwrap_or(1);
    }
    id.to_be_bytes()
}

/// Whether a new trace is sampled: `random` taken as uniform in [0, 1)
/// compared with `percent` / 100. 100 always samples; 0 never does.
pub fn sampled(percent: f64, random: u64) -> bool {
    // 53 random bits: exactly representable, uniform in [0, 1).
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    unit * 100.0 < percent
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    text
}

/// Appends the lower-case hex of `bytes` to `text`.
pub fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    text.reserve(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

/// The value of one lower-case hex digit.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Two lower-case hex digits.
fn hex_byte(pair: &[u8]) -> Option<u8> {
    match pair {
        [high, low] => Some(hex_digit(*high)? << 4 | hex_digit(*low)?),
        _ => None,
    }
}

/// `N` bytes from `2 * N` lower-case hex digits.
fn hex_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const PARENT: &str = "b7ad6b7169203331";

    fn trace_id() -> TraceId {
        hex_array(TRACE.as_bytes()).unwrap()
    }

    fn parent_id() -> SpanId {
        hex_array(PARENT.as_bytes()).unwrap()
    }

    fn values(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_valid_version_00_header_is_read() {
        let parent = parse(&format!("00-{TRACE}-{PARENT}-01")).unwrap();
        assert_eq!(
            parent,
            Parent {
                trace_id: trace_id(),
                parent_id: parent_id(),
                sampled: true
            }
        );
        assert!(!parse(&format!("00-{TRACE}-{PARENT}-00")).unwrap().sampled);
        // Flags are a bit field: only the sampled bit counts.
        assert!(parse(&format!("00-{TRACE}-{PARENT}-03")).unwrap().sampled);
        assert!(!parse(&format!("00-{TRACE}-{PARENT}-fe")).unwrap().sampled);
    }

    #[test]
    fn surrounding_spaces_and_tabs_are_ignored() {
        for value in [
            format!(" 00-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}-01\t"),
            format!("\t 00-{TRACE}-{PARENT}-01 \t"),
        ] {
            assert_eq!(parse(&value).unwrap().trace_id, trace_id(), "{value:?}");
        }
    }

    #[test]
    fn malformed_headers_are_invalid() {
        let cases = [
            // Upper-case hex.
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{}-01", PARENT.to_uppercase()),
            format!("0A-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}-0A"),
            // Wrong lengths.
            format!("0-{TRACE}-{PARENT}-01"),
            format!("000-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}0-{PARENT}-01"),
            format!("00-{}-{PARENT}-01", &TRACE[1..]),
            format!("00-{TRACE}-{PARENT}0-01"),
            format!("00-{TRACE}-{}-01", &PARENT[1..]),
            format!("00-{TRACE}-{PARENT}-001"),
            format!("00-{TRACE}-{PARENT}-1"),
            // Wrong characters and separators.
            format!(".0-{TRACE}-{PARENT}-01"),
            format!("00-.{}-{PARENT}-01", &TRACE[1..]),
            format!("00-{TRACE}-{}.-01", &PARENT[1..]),
            format!("00-{TRACE}-{PARENT}-.0"),
            format!("00_{TRACE}_{PARENT}_01"),
            format!("00-{TRACE}-{PARENT}-01."),
            // Version 00 has nothing after the flags.
            format!("00-{TRACE}-{PARENT}-01-what-the-future-will-be-like"),
            // A later version's extra fields follow a dash.
            format!("cc-{TRACE}-{PARENT}-01.what-the-future-will-be-like"),
            String::new(),
            "garbage".to_string(),
            format!("00-{TRACE}-{PARENT}"),
        ];
        for value in cases {
            assert_eq!(parse(&value), Err(Invalid::Format), "{value:?}");
        }
    }

    #[test]
    fn forbidden_values_are_invalid() {
        assert_eq!(
            parse(&format!("ff-{TRACE}-{PARENT}-01")),
            Err(Invalid::Version)
        );
        assert_eq!(
            parse(&format!("00-{}-{PARENT}-01", "0".repeat(32))),
            Err(Invalid::ZeroTraceId)
        );
        assert_eq!(
            parse(&format!("00-{TRACE}-{}-01", "0".repeat(16))),
            Err(Invalid::ZeroParentId)
        );
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        for value in [
            format!("cc-{TRACE}-{PARENT}-01"),
            format!("cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like"),
        ] {
            let parent = parse(&value).unwrap();
            assert_eq!(parent.trace_id, trace_id(), "{value}");
            assert_eq!(parent.parent_id, parent_id(), "{value}");
            assert!(parent.sampled);
        }
    }

    #[test]
    fn absent_single_and_repeated_headers() {
        assert_eq!(parse_header(&[]), Ok(None));
        let one = format!("00-{TRACE}-{PARENT}-01");
        assert_eq!(
            parse_header(&values(&[&one])).unwrap().unwrap().trace_id,
            trace_id()
        );
        assert_eq!(parse_header(&values(&[&one, &one])), Err(Invalid::Several));
        assert_eq!(parse_header(&values(&["nope"])), Err(Invalid::Format));
    }

    #[test]
    fn a_continued_trace_keeps_trace_id_and_sampled_flag_with_a_new_span() {
        let incoming = parse(&format!("00-{TRACE}-{PARENT}-00")).unwrap();
        let mut numbers = [0x1122_3344_5566_7788u64].into_iter();
        let context = Context::for_request(
            Some(incoming),
            || panic!("a continued trace keeps the caller's sampling decision"),
            || numbers.next().unwrap(),
        );
        assert_eq!(context.trace_id, trace_id());
        assert_eq!(context.parent_id, Some(parent_id()));
        assert_eq!(hex(&context.span_id), "1122334455667788");
        assert!(!context.sampled);
        assert_eq!(
            context.traceparent(),
            format!("00-{TRACE}-1122334455667788-00")
        );
    }

    #[test]
    fn unknown_flags_are_not_passed_on() {
        let incoming = parse(&format!("00-{TRACE}-{PARENT}-ff")).unwrap();
        let context = Context::for_request(Some(incoming), || false, || 7);
        assert_eq!(
            context.traceparent(),
            format!("00-{TRACE}-0000000000000007-01")
        );
    }

    #[test]
    fn a_new_trace_uses_three_random_numbers_and_the_sampling_decision() {
        let mut numbers = [1u64, 2, 3].into_iter();
        let context = Context::for_request(None, || true, || numbers.next().unwrap());
        assert_eq!(
            context.traceparent(),
            "00-00000000000000010000000000000002-0000000000000003-01"
        );
        assert_eq!(context.parent_id, None);
        let context = Context::for_request(None, || false, || u64::MAX);
        assert_eq!(
            context.traceparent(),
            "00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-00"
        );
        // What this filter writes, it reads back.
        let back = parse(&context.traceparent()).unwrap();
        assert_eq!(back.trace_id, context.trace_id);
        assert_eq!(back.parent_id, context.span_id);
    }

    #[test]
    fn new_ids_are_never_zero_nor_the_parent() {
        assert_ne!(new_trace_id(0, 0), [0; 16]);
        assert_eq!(new_trace_id(0, 5)[15], 5);
        assert_eq!(new_span_id(0, None), 1u64.to_be_bytes());
        assert_eq!(
            new_span_id(9, Some(9u64.to_be_bytes())),
            10u64.to_be_bytes()
        );
        assert_eq!(
            new_span_id(u64::MAX, Some(u64::MAX.to_be_bytes())),
            1u64.to_be_bytes()
        );
        assert_eq!(new_span_id(9, Some(8u64.to_be_bytes())), 9u64.to_be_bytes());
    }

    #[test]
    fn sampling_by_percent() {
        for random in [0, 1, u64::MAX / 2, u64::MAX] {
            assert!(sampled(100.0, random));
            assert!(!sampled(0.0, random));
        }
        assert!(sampled(50.0, 0));
        assert!(sampled(50.0, u64::MAX / 2 - 4096));
        assert!(!sampled(50.0, u64::MAX / 2 + 4096));
        assert!(!sampled(50.0, u64::MAX));
        assert!(sampled(0.5, u64::MAX / 1000));
        assert!(!sampled(0.5, u64::MAX / 100));
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&trace_id()), TRACE);
        assert_eq!(hex_array::<2>(b"0fA0"), None);
        assert_eq!(hex_array::<2>(b"0fa"), None);
    }
}
