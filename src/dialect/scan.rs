//! The JSON machinery of request translation (`request/`): a validating cursor over the body
//! ([`Scan`]), writers for the output, and the bookkeeping that turns byte positions into the JSON
//! paths callers see (`messages[1].tool_calls[0].index`) in `x-cheapmodel-dropped` and in 400s.
//!
//! Why a cursor and not serde: the translator reads the body once and writes the other dialect's
//! JSON as it goes. Strings are copied in their escaped form (a JSON escape means the same in both
//! dialects), so text, ids and base64 payloads are never unescaped or re-escaped, and tool schemas
//! are copied byte for byte after validation. A serde parse into structs and a serialization back
//! cost several times that (they unescape and re-escape every string).
//!
//! Positions, not paths, are carried while translating: a value left out is noted by its address
//! ([`Scan::drop_value`]), a refusal is a [`Fault`] at an address, and both become paths in one
//! forward pass ([`paths_at`]) only when there is something to report. Addresses (not offsets) so
//! that sub-scanners over slices of the body (message contents read later) mean the same thing.
//! Imports: `json_string` (the string scan it shares with the model peek), `peek`. Not `proxy`,
//! `plan`, `metrics` or Pingora.

use std::borrow::Cow;

use super::{TranslateError, Translated};
use crate::json_string::{closing_quote_checked, Unclosed};

/// Why a request cannot be translated: the value concerned (by its address in the body) and, when
/// the fault is a missing field, that field's name under it. Becomes a [`TranslateError`] naming
/// the JSON path (`messages[2].content[0].type`). Boxed: every scanner step returns a `R<T>`, and
/// a pointer-sized error keeps those results as small as their values (faults are rare).
#[derive(Debug)]
pub(super) struct Fault(Box<FaultAt>);

#[derive(Debug)]
struct FaultAt {
    at: usize,
    key: &'static str,
    message: Cow<'static, str>,
}

impl Fault {
    /// The value at address `at` cannot be translated.
    #[cold]
    #[inline(never)]
    pub(super) fn at(at: usize, message: impl Into<Cow<'static, str>>) -> Self {
        Fault(Box::new(FaultAt { at, key: "", message: message.into() }))
    }

    /// `key` of the object at address `at` cannot be translated (or is missing).
    #[cold]
    #[inline(never)]
    pub(super) fn under(at: usize, key: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Fault(Box::new(FaultAt { at, key, message: message.into() }))
    }

    /// Why (the 400's message).
    pub(super) fn message(&self) -> &str {
        &self.0.message
    }

    /// `key` of the object at address `at` is required and missing.
    #[cold]
    pub(super) fn required(at: usize, key: &'static str) -> Self {
        Fault::under(at, key, "required")
    }
}

pub(super) type R<T> = Result<T, Fault>;

/// Nesting allowed inside a copied value (tool schemas and arguments), as serde_json allows.
const MAX_DEPTH: usize = 100;

// ---------------------------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------------------------

/// A JSON string as it appears in the body, between its quotes, escapes intact.
#[derive(Clone, Copy)]
pub(super) struct Str<'a> {
    /// The string with its quotes, as in the body (written out in one copy).
    pub quoted: &'a [u8],
    /// Between the quotes.
    pub raw: &'a [u8],
    pub escaped: bool,
}

impl<'a> Str<'a> {
    /// The address of the string's opening quote, for faults about it.
    pub(super) fn at(self) -> usize {
        self.quoted.as_ptr() as usize
    }

    /// The text, escapes resolved (borrowed when there are none).
    pub(super) fn text(self) -> Cow<'a, str> {
        if !self.escaped {
            // Validated UTF-8 by `Scan::string`.
            return Cow::Borrowed(std::str::from_utf8(self.raw).unwrap_or_default());
        }
        let mut out = Vec::with_capacity(self.raw.len());
        if unescape_into(self.raw, &mut out).is_err() {
            return Cow::Borrowed("");
        }
        Cow::Owned(String::from_utf8(out).unwrap_or_default())
    }

    /// The text's bytes, escapes resolved: borrowed (and not validated again) when there are
    /// none, for values read as bytes (a data URL's megabytes of base64).
    pub(super) fn bytes(self) -> Cow<'a, [u8]> {
        if self.escaped {
            Cow::Owned(self.text().into_owned().into_bytes())
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// Whether the text equals `word` (which has nothing to escape).
    pub(super) fn is(self, word: &str) -> bool {
        if self.escaped {
            self.text() == word
        } else {
            self.raw == word.as_bytes()
        }
    }
}

impl Default for Str<'_> {
    /// The empty string.
    fn default() -> Self {
        Str { quoted: b"\"\"", raw: b"", escaped: false }
    }
}

/// A validating cursor over JSON bytes.
pub(super) struct Scan<'a> {
    pub b: &'a [u8],
    pub i: usize,
}

impl<'a> Scan<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Scan { b, i: 0 }
    }

    #[inline]
    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The address of the next value (after whitespace), for faults and dropped values.
    #[inline]
    pub(super) fn here(&mut self) -> usize {
        self.ws();
        self.b.as_ptr() as usize + self.i
    }

    /// A fault at the cursor.
    #[cold]
    #[inline(never)]
    pub(super) fn fault(&mut self, message: &'static str) -> Fault {
        Fault::at(self.here(), message)
    }

    #[inline]
    pub(super) fn peek(&mut self) -> R<u8> {
        self.ws();
        match self.b.get(self.i) {
            Some(&c) => Ok(c),
            None => Err(self.fault("unexpected end of the body")),
        }
    }

    #[inline]
    fn eat(&mut self, c: u8, what: &'static str) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(self.fault(what))
        }
    }

    /// Consumes `null` if it comes next. Every field is optional, so a `null` field is an absent
    /// one (as the providers read them).
    #[inline]
    pub(super) fn null(&mut self) -> R<bool> {
        if self.peek()? == b'n' {
            self.lit(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Only whitespace may follow the document.
    pub(super) fn end(&mut self) -> R<()> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.fault("trailing characters after the JSON value"))
        }
    }

    fn lit(&mut self, word: &[u8]) -> R<()> {
        self.ws();
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.fault("not valid JSON"))
        }
    }

    pub(super) fn boolean(&mut self) -> R<bool> {
        match self.peek()? {
            b't' => self.lit(b"true").map(|()| true),
            b'f' => self.lit(b"false").map(|()| false),
            _ => Err(self.fault("must be a boolean")),
        }
    }

    /// Opens an object; then call [`Scan::any_key`] until it returns `None`.
    pub(super) fn obj(&mut self) -> R<()> {
        self.eat(b'{', "must be an object")
    }

    /// The next key of the open object, or `None` at its end.
    pub(super) fn any_key(&mut self, first: &mut bool) -> R<Option<Str<'a>>> {
        let c = self.peek()?;
        if c == b'}' {
            self.i += 1;
            return Ok(None);
        }
        if !*first {
            if c != b',' {
                return Err(self.fault("expected `,` or `}`"));
            }
            self.i += 1;
        }
        *first = false;
        let key = self.string()?;
        self.eat(b':', "expected `:`")?;
        Ok(Some(key))
    }

    /// Opens an array; then call [`Scan::item`] until it returns false.
    pub(super) fn arr(&mut self) -> R<()> {
        self.eat(b'[', "must be an array")
    }

    /// Whether another item of the open array follows (positioned at it).
    pub(super) fn item(&mut self, first: &mut bool) -> R<bool> {
        let c = self.peek()?;
        if c == b']' {
            self.i += 1;
            return Ok(false);
        }
        if !*first {
            if c != b',' {
                return Err(self.fault("expected `,` or `]`"));
            }
            self.i += 1;
        }
        *first = false;
        Ok(true)
    }

    /// A string, validated (escapes, control characters, UTF-8, surrogate pairs). A fault inside
    /// it is about the whole string (its path is the string's).
    pub(super) fn string(&mut self) -> R<Str<'a>> {
        self.eat(b'"', "must be a string")?;
        let start = self.i;
        let fault = |s: &Self, why: &'static str| Fault::at(s.b.as_ptr() as usize + start - 1, why);
        // Short strings (keys, ids, type words, small tool arguments) are read run by run, the
        // runs checked in registers, escapes where they stand. Past `BULK_AFTER` bytes with
        // escapes (descriptions, prompts, file contents), the rest is read in bulk.
        const BULK_AFTER: usize = 128;
        let (mut escaped, mut high) = (false, 0u64);
        loop {
            let (n, h) = plain_run(&self.b[self.i..]);
            self.i += n;
            high |= h;
            match self.b.get(self.i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    if self.i - start >= BULK_AFTER {
                        return self.string_in_bulk(start);
                    }
                    escaped = true;
                    match escape_len(self.b, self.i) {
                        Some(len) => self.i += len,
                        None => return Err(fault(self, "invalid escape in a string")),
                    }
                }
                Some(_) => return Err(fault(self, "control character in a string")),
                None => return Err(fault(self, "unterminated string")),
            }
        }
        let raw = &self.b[start..self.i];
        if high != 0 && simdutf8::basic::from_utf8(raw).is_err() {
            return Err(fault(self, "not valid UTF-8"));
        }
        self.i += 1;
        Ok(Str { quoted: &self.b[start - 1..self.i], raw, escaped })
    }

    /// A long string with escapes, from `start` (after its opening quote): its end and its escapes
    /// found 64 bytes at a time (`json_string`), each escape checked where it stands, then control
    /// characters and non-ASCII checked in one pass the compiler vectorizes. The cost is per block
    /// and per escape, with no search restarted at each escaped quote or backslash.
    #[inline(never)]
    fn string_in_bulk(&mut self, start: usize) -> R<Str<'a>> {
        let b = self.b;
        let fault = |why: &'static str| Fault::at(b.as_ptr() as usize + start - 1, why);
        // Where the last `\u` escape checked ends: a surrogate pair's second half is checked
        // with its first.
        let mut checked_to = 0;
        let end = match closing_quote_checked(b, start, |k| {
            if k < checked_to {
                return true;
            }
            match escape_len(b, k) {
                Some(len) => {
                    checked_to = k + len;
                    true
                }
                None => false,
            }
        }) {
            Ok(end) => end,
            Err(Unclosed::Unterminated) => return Err(fault("unterminated string")),
            Err(Unclosed::Refused) => return Err(fault("invalid escape in a string")),
        };
        let raw = &b[start..end];
        let (min, or) = raw.iter().fold((u8::MAX, 0u8), |(min, or), &c| (min.min(c), or | c));
        if min < 0x20 {
            return Err(fault("control character in a string"));
        }
        // Only called at a backslash past `BULK_AFTER` bytes: the string holds an escape.
        let escaped = true;
        if or & 0x80 != 0 && simdutf8::basic::from_utf8(raw).is_err() {
            return Err(fault("not valid UTF-8"));
        }
        self.i = end + 1;
        Ok(Str { quoted: &b[start - 1..end + 1], raw, escaped })
    }

    /// A number, validated against JSON's grammar; returns its text.
    pub(super) fn number(&mut self) -> R<&'a [u8]> {
        self.ws();
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while let Some(b'0'..=b'9') = b.get(*i) {
                *i += 1;
            }
            *i - from
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(self.fault("must be a number")),
        }
        let mut plain_int = true;
        if b.get(i) == Some(&b'.') {
            i += 1;
            plain_int = false;
            if digits(&mut i) == 0 {
                return Err(self.fault("not a valid number"));
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            plain_int = false;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(self.fault("not a valid number"));
            }
        }
        let text = &b[start..i];
        // A number that overflows f64 is refused (as serde_json and the providers refuse it).
        if !plain_int || text.len() > 18 {
            let finite = std::str::from_utf8(text).ok().and_then(|t| t.parse::<f64>().ok()).is_some_and(f64::is_finite);
            if !finite {
                return Err(self.fault("number out of range"));
            }
        }
        self.i = i;
        Ok(text)
    }

    /// A number's value, as a float (for range checks; the text is what is written).
    pub(super) fn float(&mut self) -> R<(&'a [u8], f64)> {
        let text = self.number()?;
        let value = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN);
        Ok((text, value))
    }

    /// A non-negative integer that fits u64.
    pub(super) fn uint(&mut self) -> R<u64> {
        let at = self.here();
        let text = self.number()?;
        if !text.iter().all(u8::is_ascii_digit) {
            return Err(Fault::at(at, "must be a non-negative integer"));
        }
        std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or_else(|| Fault::at(at, "integer out of range"))
    }

    /// Validates and skips a value the translation leaves out, noting where it was so that it is
    /// reported (`x-cheapmodel-dropped`); a `null` is an absent field, and leaving it out loses
    /// nothing (the SDKs' own messages, sent back, carry `"annotations": null` and the like).
    pub(super) fn drop_value(&mut self) -> R<()> {
        let at = self.here();
        if self.null()? {
            return Ok(());
        }
        dropped_at(at);
        self.skip(0)
    }

    /// Validates and skips any value.
    pub(super) fn skip(&mut self, depth: usize) -> R<()> {
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(self.fault("nested too deeply"));
                }
                self.i += 1;
                let mut first = true;
                while self.any_key(&mut first)?.is_some() {
                    self.skip(depth + 1)?;
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(self.fault("nested too deeply"));
                }
                self.i += 1;
                let mut first = true;
                while self.item(&mut first)? {
                    self.skip(depth + 1)?;
                }
            }
            b't' => self.lit(b"true")?,
            b'f' => self.lit(b"false")?,
            b'n' => self.lit(b"null")?,
            _ => {
                self.number()?;
            }
        }
        Ok(())
    }

    /// Validates a value and returns its bytes (whitespace around it excluded).
    pub(super) fn raw_value(&mut self) -> R<&'a [u8]> {
        self.ws();
        let start = self.i;
        self.skip(0)?;
        Ok(&self.b[start..self.i])
    }

    /// Validates an array and returns its bytes, to be read again later with [`Scan::new`].
    pub(super) fn raw_array(&mut self) -> R<&'a [u8]> {
        if self.peek()? != b'[' {
            return Err(self.fault("must be an array"));
        }
        self.raw_value()
    }
}

/// Length of the leading run of bytes that need no attention inside a string (not `"`, `\` or a
/// control character), and whether any of them may be non-ASCII (then the string's UTF-8 is
/// checked). Strings are most of a request's bytes: the first 16 bytes are checked eight at a time
/// in registers (most keys and values end there); a longer run is searched with memchr's SIMD
/// `memchr2` for the quote or backslash, then checked for control characters in one pass the
/// compiler vectorizes.
#[inline]
pub(super) fn plain_run(s: &[u8]) -> (usize, u64) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut high = 0;
    let mut i = 0;
    let mut chunks = s.chunks_exact(8);
    for chunk in (&mut chunks).take(2) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // Each term flags exactly the first byte it matches (borrows only spill upwards), so the
        // lowest flag of their union is the first special byte.
        let special = zero_byte(w ^ (ONES * u64::from(b'"')))
            | zero_byte(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if special != 0 {
            let n = (special.trailing_zeros() / 8) as usize;
            // Only the bytes before the special one count towards `high`.
            let before = if n == 0 { 0 } else { w & (u64::MAX >> (64 - 8 * n)) };
            return (i + n, high | (before & HIGH));
        }
        high |= w & HIGH;
        i += 8;
    }
    let rest = &s[i..];
    if rest.len() >= 8 {
        let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let run = &rest[..end];
        let (min, or) = run.iter().fold((u8::MAX, 0u8), |(min, or), &c| (min.min(c), or | c));
        high |= u64::from(or & 0x80);
        if min < 0x20 {
            let ctl = run.iter().position(|&c| c < 0x20).unwrap_or(end);
            return (i + ctl, high);
        }
        return (i + end, high);
    }
    for &c in rest {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        high |= u64::from(c & 0x80);
        i += 1;
    }
    (i, high)
}

/// The length of the escape sequence at `raw[k]` (a backslash), if it is a valid one: a
/// surrogate pair is one sequence, and a lone surrogate is invalid (as serde_json has it).
#[inline(always)]
fn escape_len(raw: &[u8], k: usize) -> Option<usize> {
    match raw.get(k + 1)? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(2),
        b'u' => match hex4(raw.get(k + 2..k + 6))? {
            0xD800..=0xDBFF => {
                // A high surrogate must be followed by an escaped low one.
                if raw.get(k + 6..k + 8)? != b"\\u" {
                    return None;
                }
                matches!(hex4(raw.get(k + 8..k + 12))?, 0xDC00..=0xDFFF).then_some(12)
            }
            0xDC00..=0xDFFF => None,
            _ => Some(6),
        },
        _ => None,
    }
}

fn hex4(h: Option<&[u8]>) -> Option<u32> {
    let mut v = 0u32;
    for &c in h? {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// The text of a validated string's raw bytes, escapes resolved, appended to `out`.
pub(super) fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), ()> {
    let mut i = 0;
    while i < raw.len() {
        let Some(p) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        out.extend_from_slice(&raw[i..i + p]);
        i += p;
        let c = *raw.get(i + 1).ok_or(())?;
        i += 2;
        let byte = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut unit = hex4(raw.get(i..i + 4)).ok_or(())?;
                i += 4;
                if (0xD800..=0xDBFF).contains(&unit) {
                    let low = hex4(raw.get(i + 2..i + 6)).ok_or(())?;
                    i += 6;
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3ff);
                }
                let ch = char::from_u32(unit).ok_or(())?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return Err(()),
        };
        out.push(byte);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// `"raw"`: a string copied in its escaped form.
#[inline]
pub(super) fn put_str(out: &mut Vec<u8>, s: Str<'_>) {
    out.extend_from_slice(s.quoted);
}

/// A Rust string as a JSON string (the upstream model name).
pub(super) fn put_text(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &c in text.as_bytes() {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

pub(super) fn put_uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Validated JSON `value` as the contents of a JSON string, without insignificant whitespace
/// (OpenAI tool-call `arguments` for an Anthropic `input`).
pub(super) fn put_json_as_string(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    let mut in_string = false;
    let mut i = 0;
    while i < value.len() {
        if in_string {
            // Copy the run up to the next quote or backslash in one go.
            let Some(p) = memchr::memchr2(b'"', b'\\', &value[i..]) else {
                out.extend_from_slice(&value[i..]);
                break;
            };
            out.extend_from_slice(&value[i..i + p]);
            i += p;
            if value[i] == b'"' {
                in_string = false;
                out.extend_from_slice(b"\\\"");
                i += 1;
            } else {
                out.extend_from_slice(b"\\\\");
                // The escaped character: itself escaped if it is a quote or a backslash.
                if let Some(&e) = value.get(i + 1) {
                    match e {
                        b'"' => out.extend_from_slice(b"\\\""),
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        _ => out.push(e),
                    }
                }
                i += 2;
            }
            continue;
        }
        let c = value[i];
        i += 1;
        match c {
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b'"' => {
                in_string = true;
                out.extend_from_slice(b"\\\"");
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

thread_local! {
    /// Addresses of the first bytes of the values left out in the current translation. A
    /// thread-local, not a `Scan` field, because messages, blocks and tool arguments are re-read
    /// by sub-scanners over slices of the body: an address means the same in all of them, and
    /// no sub-scanner has to hand its findings back.
    static DROPPED_AT: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };

    /// Where the values of the top-level members and the items of top-level arrays start, with
    /// their paths (`tools`, or `tools` and 3): [`paths_at`] starts its walk at the last one
    /// before an offset instead of at the start of the body.
    static ANCHORS: std::cell::RefCell<Anchors> = const { std::cell::RefCell::new(Anchors::new()) };
}

/// An anchor: an address (an offset once handed to [`paths_at`]), a top-level key and, for an
/// item of a top-level array, its index.
type Anchor = (usize, &'static str, Option<usize>);

/// Most anchors kept per request.
const MAX_ANCHORS: usize = 64;

/// The anchors of the current translation, in body order, in a fixed table (no allocation per
/// request). When it fills, every second one is dropped and from then on only every `stride`-th
/// is kept, so they stay spread over the body. Any subset is correct: fewer anchors only mean
/// longer walks.
pub(super) struct Anchors {
    list: [Anchor; MAX_ANCHORS],
    len: usize,
    stride: usize,
    seen: usize,
}

impl Anchors {
    const fn new() -> Self {
        Anchors { list: [(0, "", None); MAX_ANCHORS], len: 0, stride: 1, seen: 0 }
    }

    fn clear(&mut self) {
        (self.len, self.stride, self.seen) = (0, 1, 0);
    }

    fn push(&mut self, anchor: Anchor) {
        let n = self.seen;
        self.seen += 1;
        if !n.is_multiple_of(self.stride) {
            return;
        }
        if self.len == MAX_ANCHORS {
            for k in 0..MAX_ANCHORS / 2 {
                self.list[k] = self.list[2 * k];
            }
            self.len = MAX_ANCHORS / 2;
            self.stride *= 2;
            if !n.is_multiple_of(self.stride) {
                return;
            }
        }
        self.list[self.len] = anchor;
        self.len += 1;
    }
}

/// Notes that the value at address `at` is the top-level member `key` (`index`: item `index` of
/// it), so that naming paths after it need not walk the body before it.
#[inline]
pub(super) fn anchor(at: usize, key: &'static str, index: Option<usize>) {
    ANCHORS.with_borrow_mut(|a| a.push((at, key, index)));
}

/// [`paths_at`] over `body`, from the anchors the translation recorded.
fn paths_from_anchors(body: &[u8], offsets: &[usize]) -> Vec<String> {
    let base = body.as_ptr() as usize;
    ANCHORS.with_borrow_mut(|a| {
        let anchors = &mut a.list[..a.len];
        for anchor in anchors.iter_mut() {
            anchor.0 = anchor.0.wrapping_sub(base);
        }
        paths_at(body, offsets, anchors)
    })
}

/// Notes that the value at address `at` is left out (reported, never silent).
pub(super) fn dropped_at(at: usize) {
    DROPPED_AT.with_borrow_mut(|d| d.push(at));
}

/// Runs one translation of `body` and names, as JSON paths, what it left out or refused.
/// `strict` (`models.NAME.params: strict`): a left-out field no mapping rule names is a 400.
pub(super) fn translate(
    body: &[u8],
    strict: bool,
    translate: impl FnOnce() -> R<Vec<u8>>,
) -> Result<Translated, TranslateError> {
    DROPPED_AT.with_borrow_mut(Vec::clear);
    ANCHORS.with_borrow_mut(Anchors::clear);
    let base = body.as_ptr() as usize;
    let out = translate().map_err(|Fault(f)| {
        let path = f.at.checked_sub(base).and_then(|offset| paths_from_anchors(body, &[offset]).pop());
        let param = match (path, f.key) {
            (Some(path), key) if !path.is_empty() && !key.is_empty() => format!("{path}.{key}"),
            (Some(path), "") if !path.is_empty() => path,
            (Some(_), key) if !key.is_empty() => key.to_owned(),
            _ => "body".to_owned(),
        };
        TranslateError::new(param, f.message.into_owned())
    })?;
    let mut offsets: Vec<usize> = DROPPED_AT.with_borrow_mut(|d| d.drain(..).map(|a| a.wrapping_sub(base)).collect());
    if offsets.is_empty() {
        return Ok(Translated { body: out, dropped: Vec::new() });
    }
    offsets.sort_unstable();
    offsets.dedup();
    super::settle(out, paths_from_anchors(body, &offsets), strict)
}

/// The JSON paths (`messages[1].tool_calls[0].index`) of the values
/// that start at `offsets` (sorted), in one forward pass over a body the translating pass already
/// validated: strings are jumped over with memchr, and a stack of keys and indices is the path.
pub(super) fn paths_at(b: &[u8], offsets: &[usize], anchors: &[Anchor]) -> Vec<String> {
    const STRUCTURAL: [bool; 256] = {
        let mut t = [false; 256];
        let mut k = 0;
        while k < 6 {
            t[b"\"{}[],"[k] as usize] = true;
            k += 1;
        }
        t
    };
    enum Frame<'a> {
        Obj(&'a [u8]),
        Arr(usize),
    }
    let mut paths = Vec::with_capacity(offsets.len());
    let mut stack: Vec<Frame<'_>> = Vec::with_capacity(8);
    let (mut i, mut next, mut expect_key, mut a) = (0, 0, false, 0);
    while let (Some(&c), Some(&want)) = (b.get(i), offsets.get(next)) {
        // Jump to the last anchor at or before `want` that lies ahead, with the path it names.
        let mut jump = None;
        while let Some(&anchor) = anchors.get(a).filter(|anchor| anchor.0 <= want) {
            if anchor.0 > i {
                jump = Some(anchor);
            }
            a += 1;
        }
        if let Some((at, key, index)) = jump {
            i = at;
            stack.clear();
            stack.push(Frame::Obj(key.as_bytes()));
            stack.extend(index.map(Frame::Arr));
            expect_key = false;
            continue;
        }
        if i == want {
            let mut path = String::new();
            for frame in &stack {
                match frame {
                    Frame::Obj(key) => {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        // A key is named by its text (`m\u0065ssages` is `messages`).
                        let mut text = Vec::new();
                        let key = if key.contains(&b'\\') && unescape_into(key, &mut text).is_ok() {
                            text.as_slice()
                        } else {
                            *key
                        };
                        path.push_str(&String::from_utf8_lossy(key));
                    }
                    Frame::Arr(index) => {
                        path.push('[');
                        path.push_str(itoa::Buffer::new().format(*index));
                        path.push(']');
                    }
                }
            }
            paths.push(path);
            next += 1;
            continue;
        }
        if i > want {
            next += 1; // not a value start (cannot happen for offsets the scanner recorded)
            continue;
        }
        if !STRUCTURAL[usize::from(c)] {
            // Numbers, literals, whitespace, `:`: run to the next byte that matters.
            i += 1;
            while i < want.min(b.len()) && !STRUCTURAL[usize::from(b[i])] {
                i += 1;
            }
            continue;
        }
        match c {
            b'"' => {
                let end = crate::peek::end_of_string(b, i);
                if expect_key {
                    if let Some(Frame::Obj(key)) = stack.last_mut() {
                        *key = &b[i + 1..end - 1];
                    }
                    expect_key = false;
                }
                i = end;
                continue;
            }
            b'{' => {
                stack.push(Frame::Obj(b""));
                expect_key = true;
            }
            b'[' => stack.push(Frame::Arr(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Arr(index)) => *index += 1,
                _ => expect_key = true,
            },
            _ => {}
        }
        i += 1;
    }
    paths
}

/// Reads an object field by field. `keys` are the fields the caller reads; `on_field` gets each
/// one present (as its entry in `keys`, escapes in the body's key resolved) with the cursor at its
/// value. A field not in `keys` is dropped and reported; a repeated one is a fault; a `null`
/// value is an absent field. Returns the bits (`1 << index in keys`) of the fields present, and
/// writes each one's address into `addrs` (when long enough), for fields dropped later by kind.
#[inline(always)]
pub(super) fn fields<'a>(
    s: &mut Scan<'a>,
    keys: &[&'static str],
    addrs: &mut [usize],
    mut on_field: impl FnMut(&'static str, &mut Scan<'a>) -> R<()>,
) -> R<u64> {
    let (mut seen, mut present) = (0u64, 0u64);
    s.obj()?;
    let mut first = true;
    while let Some(key) = s.any_key(&mut first)? {
        let index = if key.escaped {
            escaped_key_index(key, keys)
        } else {
            // Length and first byte first: most misses end there, without a memcmp call.
            let raw = key.raw;
            keys.iter().position(|k| k.len() == raw.len() && k.as_bytes().first() == raw.first() && k.as_bytes() == raw)
        };
        let Some(index) = index else {
            s.drop_value()?;
            continue;
        };
        let bit = 1 << index;
        if seen & bit != 0 {
            return Err(s.fault("duplicate field"));
        }
        seen |= bit;
        if !s.null()? {
            present |= bit;
            if let Some(slot) = addrs.get_mut(index) {
                *slot = s.here();
            }
            on_field(keys[index], s)?;
        }
    }
    Ok(present)
}

/// The index in `keys` of a key written with escapes (rare: compared by its text).
#[cold]
#[inline(never)]
fn escaped_key_index(key: Str<'_>, keys: &[&str]) -> Option<usize> {
    let text = key.text();
    keys.iter().position(|k| *k == text)
}

/// An object read with [`fields`] before its kind is known (a message's role, a block's or a
/// part's `type`): where it stands, the fields present (bits in its key table's order) and where
/// each one's value stands, so that once the kind is known, the fields it does not take are
/// reported and the missing ones named.
#[derive(Clone, Copy)]
pub(super) struct Seen<const N: usize> {
    /// The object's address.
    pub at: usize,
    present: u64,
    addrs: [usize; N],
}

impl<const N: usize> Default for Seen<N> {
    /// Nothing read yet (a value about to be overwritten by [`Seen::read`]).
    fn default() -> Self {
        Seen { at: 0, present: 0, addrs: [0; N] }
    }
}

impl<const N: usize> Seen<N> {
    /// Reads the object at the cursor with [`fields`] against `keys` (at most `N` of them).
    #[inline(always)]
    pub(super) fn read<'a>(
        s: &mut Scan<'a>,
        keys: &[&'static str],
        on_field: impl FnMut(&'static str, &mut Scan<'a>) -> R<()>,
    ) -> R<Self> {
        let mut seen = Seen { at: s.here(), present: 0, addrs: [0; N] };
        seen.present = fields(s, keys, &mut seen.addrs, on_field)?;
        Ok(seen)
    }

    /// Whether the field `bit` is present.
    pub(super) fn has(&self, bit: u64) -> bool {
        self.present & bit != 0
    }

    /// The address of the field `bit`'s value (the object's own when the field is absent).
    pub(super) fn addr(&self, bit: u64) -> usize {
        self.addrs.get(bit.trailing_zeros() as usize).copied().filter(|_| self.has(bit)).unwrap_or(self.at)
    }

    /// Reports as left out the fields present other than `keep` and the first key (the `type` or
    /// `role` every key table lists first).
    #[inline]
    pub(super) fn drop_all_but(&self, keep: u64) {
        let bits = self.present & !(keep | 1);
        if bits == 0 {
            return;
        }
        for (i, &at) in self.addrs.iter().enumerate() {
            if bits & (1 << i) != 0 {
                dropped_at(at);
            }
        }
    }

    /// `value`, or a fault naming `key` as required in this object.
    pub(super) fn required<T>(&self, value: Option<T>, key: &'static str) -> R<T> {
        value.ok_or_else(|| Fault::required(self.at, key))
    }
}

/// Writes `,` before every item but the first.
#[inline]
pub(super) fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_string(s: &str) -> Option<(Vec<u8>, bool)> {
        let mut sc = Scan::new(s.as_bytes());
        let st = sc.string().ok()?;
        sc.end().ok()?;
        Some((st.raw.to_vec(), st.escaped))
    }

    #[test]
    fn strings_are_validated_like_serde_json() {
        let cases = [
            r#""plain""#,
            r#""a \"quoted\" \\ word""#,
            r#""\u00e9 \ud83d\ude00""#,
            "\"caf\u{e9} \u{1f600} long enough to cross several eight-byte words\"",
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83d\u0041""#,
            r#""\x""#,
            r#""\u12g4""#,
            "\"tab\there\"",
            "\"nul\u{0}\"",
            r#""unterminated"#,
            r#""ends in backslash\"#,
            r#""escaped \\" quote then more""#,
            r#""\\\\""#,
            r#""\\\\\"\\""#,
        ];
        for case in cases {
            // As written (short: read run by run), and after 200 plain bytes (read in bulk).
            let long = format!("\"{}{}", "x".repeat(200), &case[1..]);
            for case in [case, long.as_str()] {
                let serde = serde_json::from_str::<String>(case).ok();
                let scanned = scan_string(case);
                assert_eq!(scanned.is_some(), serde.is_some(), "{case}");
                if let (Some((raw, escaped)), Some(text)) = (scanned, serde) {
                    let mut unescaped = Vec::new();
                    unescape_into(&raw, &mut unescaped).expect("valid");
                    assert_eq!(unescaped, text.as_bytes(), "{case}");
                    assert_eq!(escaped, raw.contains(&b'\\'), "{case}");
                }
            }
        }
        // Invalid UTF-8 inside a string, after an ASCII run longer than one word.
        let mut bytes = b"\"0123456789abcdef".to_vec();
        bytes.extend_from_slice(&[0xC3, 0x28, b'"']);
        assert!(Scan::new(&bytes).string().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Strings of escapes, quotes and text across 64-byte blocks, read run by run and in bulk
        /// (after 130 plain bytes), are accepted, refused and unescaped as serde_json does.
        #[test]
        fn long_strings_are_validated_like_serde_json(
            pieces in proptest::collection::vec(proptest::prop_oneof![
                // Valid pieces, and rarely (about one string in three) an invalid one.
                300 => proptest::sample::select(vec![
                    "a", "word ", "\\\"", "\\\\", "\\n", "\\/", "\\u00e9", "\\ud83d\\ude00", "\u{e9}",
                ]),
                1 => proptest::sample::select(vec!["\\ud83d", "\\ude00", "\\x", "\\u12g4", "\"", "\\", "\t"]),
            ], 0..120),
            bulk in proptest::bool::ANY,
        ) {
            let text: String = pieces.concat();
            let case = format!("\"{}{text}\"", if bulk { "x".repeat(130) } else { String::new() });
            let serde = serde_json::from_str::<String>(&case).ok();
            let scanned = scan_string(&case);
            proptest::prop_assert_eq!(scanned.is_some(), serde.is_some(), "{}", case);
            if let (Some((raw, _)), Some(text)) = (scanned, serde) {
                let mut unescaped = Vec::new();
                unescape_into(&raw, &mut unescaped).expect("valid");
                proptest::prop_assert_eq!(unescaped, text.into_bytes());
            }
        }
    }

    #[test]
    fn plain_run_stops_at_the_first_special_byte_at_every_offset() {
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in 0..20 {
                let mut s = vec![b'a'; 24];
                s[at] = special;
                assert_eq!(plain_run(&s).0, at, "special {special:#x} at {at}");
            }
        }
        let mut s = "é".repeat(10).into_bytes();
        s.push(b'"');
        let (n, high) = plain_run(&s);
        assert_eq!((n, high != 0), (20, true));
        assert_eq!(plain_run(b"abcdefghij\"\xff").1, 0, "bytes after the quote do not count");
        // Long runs (past the first 16 bytes) take the memchr path: same answers.
        for special in [b'"', b'\\', 0x00, 0x1f] {
            for at in [16, 17, 40, 200, 999] {
                let mut s = vec![b'a'; 1000];
                s[at] = special;
                s[at + 1..].fill(b'"');
                assert_eq!(plain_run(&s).0, at, "special {special:#x} at {at}");
            }
        }
        let long = "x".repeat(100) + "\u{e9}\"";
        assert!(plain_run(long.as_bytes()).1 != 0);
    }

    /// The anchors the translators record: top-level members and the items of top-level arrays.
    fn top_anchors(b: &[u8]) -> Vec<(usize, &'static str, Option<usize>)> {
        let mut s = Scan::new(b);
        let mut anchors = Vec::new();
        s.obj().expect("an object");
        let mut first = true;
        while let Some(key) = s.any_key(&mut first).expect("json") {
            let key: &'static str = Box::leak(key.text().into_owned().into_boxed_str());
            s.ws();
            anchors.push((s.i, key, None));
            if s.peek().expect("json") == b'[' {
                s.arr().expect("array");
                let (mut f, mut index) = (true, 0);
                while s.item(&mut f).expect("json") {
                    s.ws();
                    anchors.push((s.i, key, Some(index)));
                    index += 1;
                    s.skip(0).expect("json");
                }
            } else {
                s.skip(0).expect("json");
            }
        }
        anchors
    }

    #[test]
    fn anchors_stay_in_order_and_spread_when_thinned() {
        let mut a = Anchors::new();
        for n in 0..1000 {
            a.push((n, "messages", Some(n)));
        }
        let kept = &a.list[..a.len];
        assert!(kept.len() > MAX_ANCHORS / 2 && kept.len() <= MAX_ANCHORS, "{}", kept.len());
        assert!(kept.windows(2).all(|w| w[0].0 + a.stride == w[1].0), "evenly spaced, in order");
        assert_eq!(kept[0].0, 0);
        assert!(kept[kept.len() - 1].0 + a.stride >= 1000, "the last one is near the end");
    }

    #[test]
    fn paths_found_from_anchors_equal_paths_found_from_the_start() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/request");
        let mut checked = 0;
        for dir in ["openai_to_anthropic", "anthropic_to_openai"] {
            for case in std::fs::read_dir(root.join(dir)).expect("golden dir").flatten() {
                let Ok(b) = std::fs::read(case.path().join("in.json")) else { continue };
                let anchors = top_anchors(&b);
                for step in [3, 7, 61] {
                    let offsets: Vec<usize> = (0..b.len()).step_by(step).collect();
                    let from_start = paths_at(&b, &offsets, &[]);
                    assert!(!from_start.is_empty());
                    assert_eq!(paths_at(&b, &offsets, &anchors), from_start, "{}", case.path().display());
                }
                checked += 1;
            }
        }
        assert!(checked > 40, "{checked} golden bodies");
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for ok in ["0", "-0", "12", "1.5", "-1.25e-3", "1E+2", "123456789012345678901234"] {
            assert!(Scan::new(ok.as_bytes()).number().is_ok(), "{ok}");
        }
        for bad in ["01x", "-", "1.", ".5", "1e", "+1", "1e400", "-1e999"] {
            let mut s = Scan::new(bad.as_bytes());
            let whole = s.number().is_ok() && s.end().is_ok();
            assert!(!whole, "{bad}");
        }
    }

    #[test]
    fn unescape_resolves_every_escape() {
        let raw = r#"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"#;
        let mut out = Vec::new();
        unescape_into(raw.as_bytes(), &mut out).expect("valid");
        let want: String = serde_json::from_str(&format!("\"{raw}\"")).expect("json");
        assert_eq!(out, want.as_bytes());
    }

    #[test]
    fn json_as_string_is_compact_and_round_trips() {
        let value = "{ \"a\" : [1, 2.5, \"x \\\" y\\\\\" ],\n \"b\\u00e9\": {\"c\": null} }";
        let mut out = Vec::new();
        put_json_as_string(&mut out, value.as_bytes());
        let inner: String = serde_json::from_slice(&out).expect("a JSON string");
        assert!(!inner.contains(' ') || inner.contains("x \\\" y"), "{inner}");
        let back: serde_json::Value = serde_json::from_str(&inner).expect("JSON inside");
        let want: serde_json::Value = serde_json::from_str(value).expect("json");
        assert_eq!(back, want);
    }
}
