//! A filter's text quoted as `{:?}` writes it, fast for what filters log:
//! the quoting is what keeps a filter's message from forging the line's
//! own fields, and a JSON access line needs a backslash every few bytes.

use std::io::Write;

/// `text` as `{:?}` writes it: quoted, `"` and `\\` escaped. Printable
/// ASCII (names, request ids, JSON access lines) is copied sixteen bytes
/// at a time: each block is stored whole, then again from each byte to
/// escape on, one byte further along. A JSON line has a quote every few
/// bytes, where a copy per run between them or a branch per byte costs
/// more than the rest of the line. Anything else goes through `Debug`.
pub(super) fn push_debug_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    let start = out.len();
    // Room for the quotes, every byte escaped and a whole block's store
    // past the end; cut to what was written.
    out.resize(start + 2 * bytes.len() + 2 + BLOCK, 0);
    let buf = &mut out[start..];
    buf[0] = b'"';
    let mut n = 1;
    let (blocks, tail) = bytes.as_chunks::<BLOCK>();
    // The tail padded with spaces (printable, never escaped): the store
    // writes the padding past the end, and `n` counts only the tail.
    let mut last = [b' '; BLOCK];
    last[..tail.len()].copy_from_slice(tail);
    let padded = blocks.iter().map(|b| (b, BLOCK));
    for (block, len) in padded.chain(std::iter::once((&last, tail.len()))) {
        let Some(mut escapes) = escapes(block) else {
            out.truncate(start);
            let _ = write!(out, "{text:?}");
            return;
        };
        let mut rest = u128::from_le_bytes(*block);
        let mut left = len;
        loop {
            buf[n..n + BLOCK].copy_from_slice(&rest.to_le_bytes());
            // Only escapes within the block's `left` bytes count: the
            // padding has none.
            if escapes == 0 {
                n += left;
                break;
            }
            let at = escapes.trailing_zeros();
            n += at as usize;
            buf[n] = b'\\';
            buf[n + 1] = (rest >> (8 * at)) as u8;
            n += 2;
            // Past the escaped byte (at most 15 bytes in: shifts below 128).
            rest = (rest >> (8 * at)) >> 8;
            escapes = (escapes >> at) >> 1;
            left -= at as usize + 1;
        }
    }
    buf[n] = b'"';
    out.truncate(start + n + 1);
}

/// Bytes quoted per step.
const BLOCK: usize = 16;

/// `None` when a byte of `block` is not printable ASCII (0x20..0x7f, which
/// `Debug` writes as is); otherwise a mask with bit `i` set when byte `i`
/// is `"` or `\`.
#[cfg(target_arch = "x86_64")]
fn escapes(block: &[u8; BLOCK]) -> Option<u32> {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of x86_64; the load reads the block's 16 bytes
    // and needs no alignment.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        // Signed bytes: 0x80 and above are negative, so `> 0x1f` also
        // rules out non-ASCII.
        let printable = _mm_and_si128(
            _mm_cmpgt_epi8(v, _mm_set1_epi8(0x1f)),
            _mm_cmplt_epi8(v, _mm_set1_epi8(0x7f)),
        );
        if _mm_movemask_epi8(printable) != 0xffff {
            return None;
        }
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        Some(_mm_movemask_epi8(_mm_or_si128(quote, backslash)) as u32)
    }
}

/// [`escapes`] a byte at a time, for other machines.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn escapes_bytewise(block: &[u8; BLOCK]) -> Option<u32> {
    let mut mask = 0;
    for (i, &b) in block.iter().enumerate() {
        if !(0x20..0x7f).contains(&b) {
            return None;
        }
        mask |= u32::from(b == b'"' || b == b'\\') << i;
    }
    Some(mask)
}

#[cfg(not(target_arch = "x86_64"))]
use escapes_bytewise as escapes;

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_strings_are_what_debug_writes() {
        // Printable ASCII takes the block-wise path, the rest `Debug`.
        let printable: &[u8] = b"ab \"\\~:{}";
        let any: &[u8] = b"ab \"\\\x1f\x7f~ \t";
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..80 {
            for round in 0..100 {
                let alphabet = if round % 2 == 0 { printable } else { any };
                let mut text: String = (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())] as char)
                    .collect();
                if rng.usize(..10) == 0 {
                    text.insert(rng.usize(..=text.len()), '\u{e9}');
                }
                let mut ours = b"x".to_vec();
                super::push_debug_str(&mut ours, &text);
                assert_eq!(ours[1..], format!("{text:?}").into_bytes(), "{text:?}");
            }
        }
    }

    #[test]
    fn both_ways_of_finding_escapes_agree() {
        let mut rng = fastrand::Rng::with_seed(11);
        // Mostly printable blocks, so that masks are compared too.
        let printable: &[u8] = b"ab\"\\~ ";
        let any: &[u8] = b"ab\"\\~ \x1f\x7f\x80\xff";
        for round in 0..20_000 {
            let alphabet = if round % 4 == 0 { any } else { printable };
            let mut block = [0u8; super::BLOCK];
            block.fill_with(|| alphabet[rng.usize(..alphabet.len())]);
            assert_eq!(
                super::escapes(&block),
                super::escapes_bytewise(&block),
                "{block:?}"
            );
        }
    }

    #[test]
    fn every_byte_is_quoted_as_debug_quotes_it() {
        // Each character below 0x100 at each place of a block, among
        // quotes: the mask's edges and the printable range's.
        for c in (0u8..=0xff).map(char::from) {
            for at in 0..20 {
                let mut text: String = "\"".repeat(20);
                text.insert(at, c);
                let mut ours = Vec::new();
                super::push_debug_str(&mut ours, &text);
                assert_eq!(ours, format!("{text:?}").into_bytes(), "{text:?}");
            }
        }
    }
}
