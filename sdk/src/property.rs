//! Properties of the current request that are not in its headers: its id,
//! route, peer and so on.

use crate::sys::host;

/// The property `name` of the current request; `None` for unknown names and
/// absent values. The shortcuts in this module cover the known names.
pub fn get(name: &str) -> Option<String> {
    host::property(name)
}

/// Property names read together (a log line's fields, say): registered
/// with the proxy once, then read with one call and one buffer per read,
/// where a [`get`] per name would make a call and an allocation each.
///
/// Make it in [`Filter::new`](crate::Filter::new) and keep it: an
/// instance may register at most 64 sets. Besides the names of the
/// shortcuts below, the request and response are readable here as
/// `request.method`, `request.path`, `request.authority`,
/// `request.header.<name>`, `response.status` and `response.header.<name>`.
///
/// ```no_run
/// use weft_sdk::property::PropertySet;
///
/// let fields = PropertySet::new(&["request.method", "request.header.user-agent"]);
/// // In a phase:
/// let values = fields.read();
/// assert_eq!(values.len(), 2);
/// ```
#[derive(Debug)]
pub struct PropertySet {
    id: u32,
    len: usize,
}

impl PropertySet {
    /// Registers `names` with the proxy.
    pub fn new(names: &[&str]) -> PropertySet {
        PropertySet {
            id: host::property_set(names),
            len: names.len(),
        }
    }

    /// The current values of the set's properties, in its order; `None`
    /// for unknown names and absent values.
    pub fn read(&self) -> Vec<Option<String>> {
        self.values().iter().map(|v| v.map(str::to_owned)).collect()
    }

    /// The current values of the set's properties, like [`read`](Self::read)
    /// but borrowed from the one buffer the proxy answers with: no
    /// allocation per value.
    ///
    /// ```no_run
    /// use weft_sdk::property::PropertySet;
    ///
    /// let fields = PropertySet::new(&["request.method", "request.path"]);
    /// // In a phase:
    /// let values = fields.values();
    /// let method = values.get(0).unwrap_or("-");
    /// ```
    pub fn values(&self) -> PropertyValues {
        unpack(host::properties(self.id), self.len)
    }
}

/// The values of a [`PropertySet`] at one read (see
/// [`PropertySet::values`]): text invalid as UTF-8 is decoded lossily, as
/// by [`String::from_utf8_lossy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValues {
    /// Every value, in one text (with filler between values).
    text: String,
    /// Where each value is in `text`; `None` for an unknown name or an
    /// absent value.
    spans: Vec<Option<(usize, usize)>>,
}

impl PropertyValues {
    /// The value of the set's `index`-th property; `None` when it is
    /// absent, unknown or past the set's end.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&str> {
        let (start, end) = (*self.spans.get(index)?)?;
        Some(&self.text[start..end])
    }

    /// How many values there are: the set's length.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The values in the set's order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(|index| self.get(index))
    }
}

/// Values made by hand: for a filter's unit tests.
impl<'a> FromIterator<Option<&'a str>> for PropertyValues {
    fn from_iter<I: IntoIterator<Item = Option<&'a str>>>(values: I) -> Self {
        let mut text = String::new();
        let spans = values
            .into_iter()
            .map(|value| {
                let start = text.len();
                text.push_str(value?);
                Some((start, text.len()))
            })
            .collect();
        PropertyValues { text, spans }
    }
}

/// Splits `properties`' buffer into `len` values (see the contract): each a
/// 4-byte little-endian length and its bytes, or `ff ff ff ff` for none. A
/// value cut short by the end of the buffer ends there; values past it are
/// absent.
///
/// The buffer becomes the values' text without a copy: each length is
/// overwritten with spaces once read, so that one UTF-8 check of the whole
/// buffer checks every value (a value cannot end inside a character when
/// ASCII follows it). Only when that check fails are the values decoded one
/// by one, lossily, into a new text.
fn unpack(mut packed: Vec<u8>, len: usize) -> PropertyValues {
    let mut spans = Vec::with_capacity(len);
    let mut at = 0;
    for _ in 0..len {
        let Some(head) = packed
            .get_mut(at..)
            .and_then(|rest| rest.first_chunk_mut::<4>())
        else {
            spans.push(None);
            continue;
        };
        let n = u32::from_le_bytes(*head);
        *head = [b' '; 4];
        at += 4;
        if n == u32::MAX {
            spans.push(None);
            continue;
        }
        let end = at + (packed.len() - at).min(n as usize);
        spans.push(Some((at, end)));
        at = end;
    }
    // Bytes past the last value (a length cut short) are not text.
    packed.truncate(at);
    match String::from_utf8(packed) {
        Ok(text) => PropertyValues { text, spans },
        Err(invalid) => {
            let packed = invalid.into_bytes();
            let mut text = String::with_capacity(packed.len());
            for span in spans.iter_mut().flatten() {
                let start = text.len();
                text.push_str(&String::from_utf8_lossy(&packed[span.0..span.1]));
                *span = (start, text.len());
            }
            PropertyValues { text, spans }
        }
    }
}

/// The request's id (`request.id`).
pub fn request_id() -> Option<String> {
    get("request.id")
}

/// The name of the route that matched (`route.name`).
pub fn route_name() -> Option<String> {
    get("route.name")
}

/// The name of the upstream cluster (`cluster.name`).
pub fn cluster_name() -> Option<String> {
    get("cluster.name")
}

/// The name of the listener that accepted the connection (`listener.name`).
pub fn listener_name() -> Option<String> {
    get("listener.name")
}

/// The client's address as `ip:port` (`peer.address`).
pub fn peer_address() -> Option<String> {
    get("peer.address")
}

/// The client's IP address (`peer.ip`).
pub fn peer_ip() -> Option<String> {
    get("peer.ip")
}

/// The client's authenticated identity, when known (`peer.identity`).
pub fn peer_identity() -> Option<String> {
    get("peer.identity")
}

/// This filter's name in the chain (`filter.name`).
pub fn filter_name() -> Option<String> {
    get("filter.name")
}

/// Which upstream attempt this is: 1 for the first, 2 for the first retry
/// (`request.attempt`). `None` before the request is sent upstream.
pub fn attempt() -> Option<u32> {
    get("request.attempt")?.parse().ok()
}

/// Whether the proxy can send this request again on
/// [`Action::Retry`](crate::Action::Retry) (`request.retryable`): its body
/// is kept (or it has none). `None` before the request is sent upstream.
pub fn retryable() -> Option<bool> {
    get("request.retryable")?.parse().ok()
}

/// When the proxy had the request's headers, in nanoseconds since the Unix
/// epoch (`request.start_unix_ns`).
pub fn start_unix_nanos() -> Option<u64> {
    get("request.start_unix_ns")?.parse().ok()
}

/// Nanoseconds since the proxy had the request's headers
/// (`request.elapsed_ns`): in [`on_done`](crate::Filter::on_done), how long
/// the whole exchange took, with no request phase needed to start a clock.
pub fn elapsed_nanos() -> Option<u64> {
    get("request.elapsed_ns")?.parse().ok()
}

/// The `host:port` of the last upstream attempt (`upstream.endpoint`).
pub fn upstream_endpoint() -> Option<String> {
    get("upstream.endpoint")
}

/// Why the proxy generated the response because the upstream failed
/// (`upstream.failure`): `connect-failure`, `reset` or `timeout`. `None`
/// when the upstream answered.
pub fn upstream_failure() -> Option<String> {
    get("upstream.failure")
}

#[cfg(test)]
mod tests {
    use super::unpack;

    /// `values` as the host packs them.
    fn pack(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut packed = Vec::new();
        for value in values {
            match value {
                Some(bytes) => {
                    packed.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                    packed.extend_from_slice(bytes);
                }
                None => packed.extend_from_slice(&[0xff; 4]),
            }
        }
        packed
    }

    fn strings(packed: Vec<u8>, len: usize) -> Vec<Option<String>> {
        let values = unpack(packed, len);
        assert_eq!(values.len(), len);
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    #[test]
    fn unpack_reads_values_and_absences_in_order() {
        let mut packed = Vec::new();
        packed.extend_from_slice(&3u32.to_le_bytes());
        packed.extend_from_slice(b"GET");
        packed.extend_from_slice(&[0xff; 4]);
        packed.extend_from_slice(&0u32.to_le_bytes());
        packed.extend_from_slice(&5u32.to_le_bytes());
        packed.extend_from_slice("/café".as_bytes()[..5].as_ref());
        assert_eq!(
            strings(packed, 4),
            [
                Some("GET".to_string()),
                None,
                Some(String::new()),
                Some("/caf\u{fffd}".to_string())
            ]
        );
    }

    #[test]
    fn a_short_buffer_leaves_the_rest_absent() {
        let mut packed = 2u32.to_le_bytes().to_vec();
        packed.extend_from_slice(b"ok");
        assert_eq!(strings(packed, 3), [Some("ok".to_string()), None, None]);
        assert_eq!(strings(Vec::new(), 2), [None, None]);
        // A length cut short, and a value cut short.
        assert_eq!(strings(vec![1, 0, 0x80], 2), [None, None]);
        let mut packed = 9u32.to_le_bytes().to_vec();
        packed.extend_from_slice(b"abc");
        assert_eq!(strings(packed, 2), [Some("abc".to_string()), None]);
    }

    /// Every value is what `String::from_utf8_lossy` makes of its bytes,
    /// whatever its neighbours, and whatever bytes its length is made of.
    #[test]
    fn values_are_decoded_as_from_utf8_lossy_decodes_them() {
        let samples: [&[u8]; 12] = [
            b"",
            b"plain ascii",
            "caf\u{e9} \u{20ac} \u{1f600} \u{2028}".as_bytes(),
            b"\xff",
            b"\xe2\x82",
            b"a\xc3",
            b"\x80abc",
            b"\xf0\x9f\x98",
            b"\xed\xa0\x80",
            b"\x00\x1f\x7f",
            &[b'x'; 200],
            &[0xc3; 129],
        ];
        for a in samples {
            for b in samples {
                for c in [None, Some(&b"tail"[..])] {
                    let values = [Some(a), None, Some(b), c];
                    let expected: Vec<Option<String>> = values
                        .iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
                        .collect();
                    assert_eq!(strings(pack(&values), 4), expected, "{values:?}");
                }
            }
        }
    }

    #[test]
    fn values_can_be_made_by_hand() {
        let values: super::PropertyValues = [Some("a"), None, Some("")].into_iter().collect();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            [Some("a"), None, Some("")]
        );
    }

    #[test]
    fn past_the_end_is_none() {
        let values = unpack(pack(&[Some(b"a")]), 1);
        assert_eq!(values.get(0), Some("a"));
        assert_eq!(values.get(1), None);
        assert!(!values.is_empty());
        assert!(unpack(Vec::new(), 0).is_empty());
    }
}
