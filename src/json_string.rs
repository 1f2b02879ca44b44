//! The closing quote of a JSON string, found 64 bytes at a time.
//!
//! Why: an agent's request is mostly text with an escape on every line (`\n`, `\"`, `\\`). A
//! scan that stops at every quote and counts the backslashes before it stops every ~25 bytes
//! there, and a scan that also stops at every backslash (to check the escapes) twice as often.
//! This one classifies 64 bytes at once instead: which bytes are quotes and which backslashes
//! (SSE2 or AVX2 compares), then which of them are escaped, with simdjson's carry trick over the
//! backslash bits (an odd run of backslashes escapes the byte after it; the run may cross a
//! block). A string then costs a few dozen instructions per 64 bytes whatever it holds, and only
//! the escapes the caller wants to look at cost more.
//!
//! Used by `peek` (strings it crosses without validating; `usage` and the translator's lookups
//! locate strings through it too) and by the request translator
//! (`dialect::scan`, which checks each escape). Pure, no allocation. Imports: nothing of the
//! gateway's.

/// Why a string has no closing quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclosed {
    /// The bytes end first.
    Unterminated,
    /// The caller's `escape` check refused an escape.
    Refused,
}

/// Bytes looked at per step.
const BLOCK: usize = 64;

/// Every odd bit position (the carry trick's constant).
const ODD_BITS: u64 = 0xAAAA_AAAA_AAAA_AAAA;

/// The index of the closing quote of the string whose text begins at `from` (just after its
/// opening quote): the first `"` not escaped by an odd run of backslashes. `None` when the bytes
/// end first.
///
/// Most strings hold no escaped quote: the first quote found ends them unless a backslash stands
/// before it (the byte before `from` is the opening quote, never an escape). Only then is the
/// string crossed block by block: with AVX2 (two 32-byte compares per block) where the CPU has
/// it, else SSE2 (four 16-byte ones; every x86_64 CPU has SSE2). `is_x86_feature_detected!` reads
/// a cached flag.
#[inline]
pub fn closing_quote(b: &[u8], from: usize) -> Option<usize> {
    let quote = first_quote(b, from)?;
    if quote == from || b[quote - 1] != b'\\' {
        return Some(quote);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { closing_quote_avx2(b, from) };
        }
        scan::<false, Sse2>(b, from, |_| true).ok()
    }
    #[cfg(not(target_arch = "x86_64"))]
    scan::<false, Portable>(b, from, |_| true).ok()
}

/// The index of the first `"` at or after `from`. Most strings in a body are short (a quote every
/// 25 bytes in an agent's request), and for those `memchr`'s setup costs more than the search
/// (callgrind: 37 instructions a call): the next 32 bytes are tried with two SSE2 compares first,
/// and only a longer stretch goes to `memchr`.
#[inline]
fn first_quote(b: &[u8], from: usize) -> Option<usize> {
    let rest = b.get(from..)?;
    #[cfg(target_arch = "x86_64")]
    if rest.len() >= 32 {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
        // SAFETY: SSE2 is part of every x86_64 CPU; both unaligned 16-byte loads lie within `rest`,
        // which is at least 32 bytes long.
        let quotes = unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let low = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(rest.as_ptr().cast()), quote));
            let high = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(rest.as_ptr().add(16).cast()), quote));
            (low as u32) | ((high as u32) << 16)
        };
        if quotes != 0 {
            return Some(from + quotes.trailing_zeros() as usize);
        }
        return memchr::memchr(b'"', &rest[32..]).map(|at| from + 32 + at);
    }
    memchr::memchr(b'"', rest).map(|at| from + at)
}

/// [`closing_quote`], and `escape(k)` is called, in order, for the backslash at each `k` that
/// begins an escape before the closing quote (the second backslash of `\\` begins none). When it
/// answers false the scan stops with [`Unclosed::Refused`]. A string unterminated in its last
/// block is `Unterminated` before any escape of that block is checked.
///
/// SSE2 only: in text with an escape every few bytes the checks dominate, and the AVX2 build of
/// this loop measured 4.5% slower (`cargo bench --bench translate -- request_agent_85kb`: 24.65
/// against 23.59 µs).
#[inline]
pub fn closing_quote_checked(b: &[u8], from: usize, escape: impl FnMut(usize) -> bool) -> Result<usize, Unclosed> {
    #[cfg(target_arch = "x86_64")]
    return scan::<true, Sse2>(b, from, escape);
    #[cfg(not(target_arch = "x86_64"))]
    scan::<true, Portable>(b, from, escape)
}

/// `scan` compiled with AVX2 on, so that `Avx2::classify`'s intrinsics are inlined into it.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn closing_quote_avx2(b: &[u8], from: usize) -> Option<usize> {
    scan::<false, Avx2>(b, from, |_| true).ok()
}

/// Both entry points, for one way of classifying a block: `CHECK` says whether escapes are
/// reported (without, the loop over them is not compiled in at all).
#[inline(always)]
fn scan<const CHECK: bool, C: Classify>(
    b: &[u8],
    from: usize,
    mut escape: impl FnMut(usize) -> bool,
) -> Result<usize, Unclosed> {
    let mut pos = from;
    let mut next_is_escaped = 0u64;
    while pos < b.len() {
        let (quotes, backslashes, last) = match b.get(pos..pos + BLOCK) {
            Some(block) => {
                // SAFETY: 64 bytes; `C` is only used where the CPU has its instructions
                // (`closing_quote`).
                let (q, s) = unsafe { C::classify(block) };
                (q, s, false)
            }
            None => {
                // The tail: padded with zeros, which are neither quotes nor backslashes.
                let mut padded = [0u8; BLOCK];
                padded[..b.len() - pos].copy_from_slice(&b[pos..]);
                // SAFETY: as above.
                let (q, s) = unsafe { C::classify(&padded) };
                (q, s, true)
            }
        };
        let (escaped, escapes) = escapes(backslashes, &mut next_is_escaped);
        let closing = quotes & !escaped;
        if closing == 0 && last {
            break;
        }
        if CHECK {
            // The escapes before the closing quote (all of them when this block has none).
            let mut before = if closing == 0 { escapes } else { escapes & ((closing & closing.wrapping_neg()) - 1) };
            while before != 0 {
                if !escape(pos + before.trailing_zeros() as usize) {
                    return Err(Unclosed::Refused);
                }
                before &= before - 1;
            }
        }
        if closing != 0 {
            return Ok(pos + closing.trailing_zeros() as usize);
        }
        pos += BLOCK;
    }
    Err(Unclosed::Unterminated)
}

/// Bit `n` set where byte `n` of a 64-byte block is `"`, and where it is `\`.
trait Classify {
    /// # Safety
    /// `block` holds at least 64 bytes, and the CPU has the instructions the implementation uses.
    unsafe fn classify(block: &[u8]) -> (u64, u64);
}

#[cfg(target_arch = "x86_64")]
struct Sse2;

#[cfg(target_arch = "x86_64")]
impl Classify for Sse2 {
    #[inline(always)]
    unsafe fn classify(block: &[u8]) -> (u64, u64) {
        use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
        debug_assert!(block.len() >= BLOCK);
        let (mut quotes, mut backslashes) = (0u64, 0u64);
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        for k in 0..BLOCK / 16 {
            // In bounds: `block` holds at least 64 bytes (the caller's promise).
            let v = _mm_loadu_si128(block.as_ptr().add(16 * k).cast());
            quotes |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u16) << (16 * k);
            backslashes |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, backslash)) as u16) << (16 * k);
        }
        (quotes, backslashes)
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Classify for Avx2 {
    /// Inlined into `scan_avx2`, which turns AVX2 on for these intrinsics.
    #[inline(always)]
    unsafe fn classify(block: &[u8]) -> (u64, u64) {
        use std::arch::x86_64::{_mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_set1_epi8};
        debug_assert!(block.len() >= BLOCK);
        let quote = _mm256_set1_epi8(b'"' as i8);
        let backslash = _mm256_set1_epi8(b'\\' as i8);
        // In bounds: `block` holds at least 64 bytes (the caller's promise).
        let low = _mm256_loadu_si256(block.as_ptr().cast());
        let high = _mm256_loadu_si256(block.as_ptr().add(32).cast());
        let mask = |v, c| u64::from(_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, c)) as u32);
        (mask(low, quote) | (mask(high, quote) << 32), mask(low, backslash) | (mask(high, backslash) << 32))
    }
}

/// Any CPU: byte by byte (the compiler vectorizes what it can).
#[cfg(any(test, not(target_arch = "x86_64")))]
struct Portable;

#[cfg(any(test, not(target_arch = "x86_64")))]
impl Classify for Portable {
    #[inline(always)]
    unsafe fn classify(block: &[u8]) -> (u64, u64) {
        let (mut quotes, mut backslashes) = (0u64, 0u64);
        for (n, &c) in block[..BLOCK].iter().enumerate() {
            quotes |= u64::from(c == b'"') << n;
            backslashes |= u64::from(c == b'\\') << n;
        }
        (quotes, backslashes)
    }
}

/// From one block's backslash bits: the bytes escaped (the byte after each escaping backslash,
/// an escaped backslash included) and the backslashes that begin an escape. `next_is_escaped`
/// carries a run of backslashes across blocks: it is 1 when this block's last byte begins an
/// escape (the next block's first byte is escaped).
///
/// simdjson's branchless form: subtracting the run starts from the odd bits makes a borrow ripple
/// through each run of backslashes, which leaves the byte after an odd-length run marked.
#[inline]
fn escapes(backslashes: u64, next_is_escaped: &mut u64) -> (u64, u64) {
    if backslashes == 0 {
        let escaped = *next_is_escaped;
        *next_is_escaped = 0;
        return (escaped, 0);
    }
    let potential_escape = backslashes & !*next_is_escaped;
    let maybe_escaped_and_odd_bits = (potential_escape << 1) | ODD_BITS;
    let escape_and_terminal_code = maybe_escaped_and_odd_bits.wrapping_sub(potential_escape) ^ ODD_BITS;
    let escaped = escape_and_terminal_code ^ (backslashes | *next_is_escaped);
    let escape = escape_and_terminal_code & backslashes;
    *next_is_escaped = escape >> 63;
    (escaped, escape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-by-byte reference: the closing quote, and the escapes before it.
    fn reference(b: &[u8], from: usize) -> (Option<usize>, Vec<usize>) {
        let (mut i, mut escapes) = (from, Vec::new());
        while i < b.len() {
            match b[i] {
                b'"' => return (Some(i), escapes),
                b'\\' => {
                    escapes.push(i);
                    i += 2;
                }
                _ => i += 1,
            }
        }
        (None, escapes)
    }

    fn scanned(b: &[u8], from: usize) -> (Option<usize>, Vec<usize>) {
        let mut escapes = Vec::new();
        let end = closing_quote_checked(b, from, |k| {
            escapes.push(k);
            true
        });
        assert_eq!(end.ok(), closing_quote(b, from), "with and without the escape checks");
        match end {
            Ok(q) => (Some(q), escapes),
            Err(Unclosed::Unterminated) => {
                // Escapes of the last block are not reported for an unterminated string: compare
                // the closing quote only.
                (None, reference(b, from).1)
            }
            Err(Unclosed::Refused) => unreachable!("the check never refuses"),
        }
    }

    #[test]
    fn every_classifier_agrees_with_the_portable_one() {
        let mut block = [b'a'; BLOCK];
        for (n, c) in block.iter_mut().enumerate() {
            *c = match n % 7 {
                0 => b'"',
                3 | 4 => b'\\',
                _ => b'a' + (n % 26) as u8,
            };
        }
        // SAFETY: 64 bytes; SSE2 is on every x86_64 CPU, AVX2 is checked.
        let portable = unsafe { Portable::classify(&block) };
        assert_eq!(portable.0.count_ones(), 10);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(unsafe { Sse2::classify(&block) }, portable);
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2(block: &[u8]) -> (u64, u64) {
                    unsafe { Avx2::classify(block) }
                }
                assert_eq!(unsafe { avx2(&block) }, portable);
            }
        }
    }

    #[test]
    fn escaped_quotes_and_backslash_runs_across_block_edges() {
        // Runs of 1 to 5 backslashes before a quote, placed so that they straddle the 64-byte
        // boundary at every offset.
        for run in 1..=5 {
            for at in 50..80 {
                let mut b = vec![b'a'; at];
                b.extend(std::iter::repeat_n(b'\\', run));
                b.extend_from_slice(b"\"tail\"");
                b.extend(std::iter::repeat_n(b'x', 70));
                assert_eq!(scanned(&b, 0), reference(&b, 0), "run {run} at {at}");
            }
        }
    }

    #[test]
    fn a_refused_escape_stops_the_scan_and_an_unterminated_tail_wins() {
        let b = br#"ok \n then \q then "#;
        let mut seen = Vec::new();
        let r = closing_quote_checked(b, 0, |k| {
            seen.push(k);
            b[k + 1] != b'q'
        });
        // The tail block has no closing quote: unterminated, whatever its escapes are.
        assert_eq!(r, Err(Unclosed::Unterminated));
        assert!(seen.is_empty());
        let mut b = b.to_vec();
        b.extend_from_slice(&[b'y'; 64]);
        b.push(b'"');
        let r = closing_quote_checked(&b, 0, |k| b[k + 1] != b'q');
        assert_eq!(r, Err(Unclosed::Refused));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn agrees_with_a_byte_by_byte_scan(
            body in proptest::collection::vec(prop_oneof![Just(b'\\'), Just(b'"'), Just(b'a'), Just(b'n')], 0..300),
            from in 0usize..40,
        ) {
            let from = from.min(body.len());
            prop_assert_eq!(scanned(&body, from), reference(&body, from));
        }

        #[test]
        fn agrees_on_sparse_quotes(
            body in proptest::collection::vec(prop_oneof![8 => Just(b'a'), 2 => Just(b'\\'), 1 => Just(b'"')], 0..600),
        ) {
            prop_assert_eq!(scanned(&body, 0), reference(&body, 0));
        }
    }
}
