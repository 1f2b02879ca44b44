//! Single-pass request transcoder for the request shapes clients send most, both directions.
//!
//! Why it exists: the typed translator (`request.rs`) parses into serde structs, unescapes every
//! string and escapes it again on the way out. That costs several times the bytes' worth of work
//! (about 70 µs for a 10 KB chat on the reference machine). This module reads the body once and
//! writes the other dialect's JSON as it goes:
//! - strings are copied in their escaped form (a JSON escape means the same in both dialects), so
//!   text, ids and base64 payloads are never unescaped or re-escaped;
//! - tool schemas (`parameters` <-> `input_schema`) are copied byte for byte after validation;
//! - tool arguments are unescaped once (OpenAI → Anthropic) or escaped once, compacted
//!   (Anthropic → OpenAI).
//!
//! Values it leaves out are noted (`Scan::drop_value`) and named as JSON paths afterwards, the same
//! paths the typed translator reports.
//!
//! It is a fast path, not a second translator: it returns `None` on anything outside the shapes
//! below (an unknown or rarely used field, a value it would have to judge, malformed JSON, an
//! escaped key), and `request.rs` then runs the typed translator, which has every rule and names
//! the offending parameter in its 400. So this module never produces an error, and whatever it
//! produces must equal the typed translator's output as parsed JSON (tool `arguments` compared
//! parsed). Tests in `request.rs` check that on every golden case and on generated requests.
//!
//! Handled, OpenAI → Anthropic: `model`, `messages` (system/developer/user/assistant/tool roles;
//! string or text-part content; `image_url` parts with http(s) or base64 data URLs; PDF `file`
//! parts; assistant `tool_calls` and `refusal`), `max_tokens`, `max_completion_tokens`, `temperature` (0..=1),
//! `top_p`, `stop`, `stream`, `user`, `tools`, `tool_choice`, `parallel_tool_calls`, `n: 1`, and
//! the dropped `stream_options`, `seed`, `service_tier`, `store`, `metadata`, `prompt_cache_key`,
//! `safety_identifier`, `verbosity`, and `reasoning_effort` within Anthropic's thinking limits.
//! Not handled (typed path): audio parts, `file_id`, penalties, logprobs, `response_format`,
//! `modalities`, legacy functions.
//!
//! Handled, Anthropic → OpenAI: `model`, `messages` (string content; text, image, document
//! (base64 PDF, plain text), tool_use, tool_result, thinking and redacted_thinking blocks), `system` (string or text blocks),
//! `max_tokens`, `temperature`, `top_p`, `stop_sequences`, `stream`, `metadata`, `tools`,
//! `tool_choice`, `thinking`, and the dropped `context_management`, `service_tier`,
//! `cache_control`, `citations` (text blocks). Not handled (typed path): documents with citations
//! or context, server tools, `top_k`, `container`, `mcp_servers`.

use super::RequestOptions;

/// "Not on the fast path": the typed translator takes over.
#[derive(Debug)]
pub(super) struct Bail;

type R<T> = Result<T, Bail>;

/// Nesting allowed inside a copied value (tool schemas and arguments). Below serde_json's 128 on
/// purpose, so that anything the typed translator would refuse for depth is refused here first.
const MAX_DEPTH: usize = 100;

// ---------------------------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------------------------

/// A JSON string as it appears in the body, between its quotes, escapes intact.
#[derive(Clone, Copy)]
struct Str<'a> {
    /// The string with its quotes, as in the body (written out in one copy).
    quoted: &'a [u8],
    /// Between the quotes.
    raw: &'a [u8],
    escaped: bool,
}

impl<'a> Str<'a> {
    /// The text when it has no escapes (then raw bytes are the text), for comparisons.
    fn plain(self) -> R<&'a [u8]> {
        if self.escaped {
            Err(Bail)
        } else {
            Ok(self.raw)
        }
    }
}

/// A validating cursor over JSON bytes.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scan { b, i: 0 }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.i).copied().ok_or(Bail)
    }

    #[inline]
    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Consumes `null` if it comes next. The typed translator reads every field as an `Option`,
    /// so a `null` field is an absent one.
    #[inline]
    fn null(&mut self) -> R<bool> {
        if self.peek()? == b'n' {
            self.lit(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Only whitespace may follow the document.
    fn end(&mut self) -> R<()> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn lit(&mut self, word: &[u8]) -> R<()> {
        self.ws();
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bail)
        }
    }

    fn boolean(&mut self) -> R<bool> {
        match self.peek()? {
            b't' => self.lit(b"true").map(|()| true),
            b'f' => self.lit(b"false").map(|()| false),
            _ => Err(Bail),
        }
    }

    /// Opens an object; then call [`Scan::key`] until it returns `None`.
    fn obj(&mut self) -> R<()> {
        self.eat(b'{')
    }

    /// The next key of the open object, or `None` at its end. A key with escapes bails: the keys
    /// this module acts on are plain words (see [`Scan::any_key`] for values it only copies).
    fn key(&mut self, first: &mut bool) -> R<Option<&'a [u8]>> {
        match self.any_key(first)? {
            Some(key) => Ok(Some(key.plain()?)),
            None => Ok(None),
        }
    }

    /// The next key of the open object, escapes allowed, or `None` at its end.
    fn any_key(&mut self, first: &mut bool) -> R<Option<Str<'a>>> {
        let c = self.peek()?;
        if c == b'}' {
            self.i += 1;
            return Ok(None);
        }
        if !*first {
            if c != b',' {
                return Err(Bail);
            }
            self.i += 1;
        }
        *first = false;
        let key = self.string()?;
        self.eat(b':')?;
        Ok(Some(key))
    }

    /// Opens an array; then call [`Scan::item`] until it returns false.
    fn arr(&mut self) -> R<()> {
        self.eat(b'[')
    }

    /// Whether another item of the open array follows (positioned at it).
    fn item(&mut self, first: &mut bool) -> R<bool> {
        let c = self.peek()?;
        if c == b']' {
            self.i += 1;
            return Ok(false);
        }
        if !*first {
            if c != b',' {
                return Err(Bail);
            }
            self.i += 1;
        }
        *first = false;
        Ok(true)
    }

    /// A string, validated (escapes, control characters, UTF-8, surrogate pairs).
    fn string(&mut self) -> R<Str<'a>> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        let mut high = 0u64;
        loop {
            let (n, h) = plain_run(&self.b[self.i..]);
            self.i += n;
            high |= h;
            match *self.b.get(self.i).ok_or(Bail)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                _ => return Err(Bail), // a control character
            }
        }
        let raw = &self.b[start..self.i];
        let quoted = &self.b[start - 1..self.i + 1];
        self.i += 1;
        if high != 0 && std::str::from_utf8(raw).is_err() {
            return Err(Bail);
        }
        Ok(Str { quoted, raw, escaped })
    }

    /// One escape sequence at `self.i` (a backslash).
    fn escape(&mut self) -> R<()> {
        match *self.b.get(self.i + 1).ok_or(Bail)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                self.i += 2;
                Ok(())
            }
            b'u' => {
                let unit = hex4(self.b.get(self.i + 2..self.i + 6))?;
                self.i += 6;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by an escaped low one.
                        if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                            return Err(Bail);
                        }
                        let low = hex4(self.b.get(self.i + 2..self.i + 6))?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Bail);
                        }
                        self.i += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(Bail),
                    _ => Ok(()),
                }
            }
            _ => Err(Bail),
        }
    }

    /// A number, validated against JSON's grammar; returns its text.
    fn number(&mut self) -> R<&'a [u8]> {
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
            _ => return Err(Bail),
        }
        let mut plain_int = true;
        if b.get(i) == Some(&b'.') {
            i += 1;
            plain_int = false;
            if digits(&mut i) == 0 {
                return Err(Bail);
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            plain_int = false;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return Err(Bail);
            }
        }
        let text = &b[start..i];
        // serde_json refuses a float that overflows f64; so does this path.
        if !plain_int || text.len() > 18 {
            let finite = std::str::from_utf8(text).ok().and_then(|t| t.parse::<f64>().ok()).is_some_and(f64::is_finite);
            if !finite {
                return Err(Bail);
            }
        }
        self.i = i;
        Ok(text)
    }

    /// A non-negative integer that fits u64 (what serde reads into a `u64` field).
    fn uint(&mut self) -> R<u64> {
        let text = self.number()?;
        if !text.iter().all(u8::is_ascii_digit) {
            return Err(Bail);
        }
        std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or(Bail)
    }

    /// Validates and skips a value the translation leaves out, noting where it was so that it is
    /// reported (`x-cheapmodel-dropped`), as the typed translator reports what it does not read.
    fn drop_value(&mut self) -> R<()> {
        self.ws();
        self.dropped_at(self.i);
        self.skip(0)
    }

    /// Notes that the value starting at `i` is left out (see `drop_value`).
    fn dropped_at(&self, i: usize) {
        let at = self.b.as_ptr() as usize + i;
        DROPPED_AT.with_borrow_mut(|d| d.push(at));
    }

    /// Validates and skips any value.
    fn skip(&mut self, depth: usize) -> R<()> {
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err(Bail);
                }
                self.i += 1;
                let mut first = true;
                while self.any_key(&mut first)?.is_some() {
                    self.skip(depth + 1)?;
                }
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(Bail);
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
    fn raw_value(&mut self) -> R<&'a [u8]> {
        self.ws();
        let start = self.i;
        self.skip(0)?;
        Ok(&self.b[start..self.i])
    }

    /// Validates an array and returns its bytes, to be read again later with [`Scan::new`].
    fn raw_array(&mut self) -> R<&'a [u8]> {
        if self.peek()? != b'[' {
            return Err(Bail);
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
fn plain_run(s: &[u8]) -> (usize, u64) {
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

fn hex4(h: Option<&[u8]>) -> R<u32> {
    let h = h.ok_or(Bail)?;
    let mut v = 0u32;
    for &c in h {
        let d = (c as char).to_digit(16).ok_or(Bail)?;
        v = v * 16 + d;
    }
    Ok(v)
}

/// The text of a validated string's raw bytes, escapes resolved, appended to `out`.
fn unescape_into(raw: &[u8], out: &mut Vec<u8>) -> R<()> {
    let mut i = 0;
    while i < raw.len() {
        let Some(p) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        out.extend_from_slice(&raw[i..i + p]);
        i += p;
        let c = *raw.get(i + 1).ok_or(Bail)?;
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
                let mut unit = hex4(raw.get(i..i + 4))?;
                i += 4;
                if (0xD800..=0xDBFF).contains(&unit) {
                    let low = hex4(raw.get(i + 2..i + 6))?;
                    i += 6;
                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                }
                let ch = char::from_u32(unit).ok_or(Bail)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return Err(Bail),
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
fn put_str(out: &mut Vec<u8>, s: Str<'_>) {
    out.extend_from_slice(s.quoted);
}

/// A Rust string as a JSON string (the upstream model name).
fn put_text(out: &mut Vec<u8>, text: &str) {
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

fn put_uint(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Validated JSON `value` as the contents of a JSON string, without insignificant whitespace
/// (OpenAI tool-call `arguments` for an Anthropic `input`).
fn put_json_as_string(out: &mut Vec<u8>, value: &[u8]) {
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
    /// Addresses of the first bytes of the values the fast path dropped in the current call. A
    /// thread-local, not a `Scan` field, because messages, blocks and tool arguments are re-read
    /// by sub-scanners over slices of the body: an address means the same in all of them, and
    /// no sub-scanner has to hand its findings back.
    static DROPPED_AT: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs one fast-path translation of `body` and turns what it dropped into JSON paths.
fn with_dropped(body: &[u8], translate: impl FnOnce() -> R<Vec<u8>>) -> Option<(Vec<u8>, Vec<String>)> {
    DROPPED_AT.with_borrow_mut(Vec::clear);
    let out = translate().ok()?;
    let base = body.as_ptr() as usize;
    let mut offsets: Vec<usize> = DROPPED_AT.with_borrow_mut(|d| d.drain(..).map(|a| a.wrapping_sub(base)).collect());
    if offsets.is_empty() {
        return Some((out, Vec::new()));
    }
    offsets.sort_unstable();
    offsets.dedup();
    Some((out, paths_at(body, &offsets)))
}

/// The JSON paths (`messages[1].tool_calls[0].index`, the typed translator's form) of the values
/// that start at `offsets` (sorted), in one forward pass over a body the translating pass already
/// validated: strings are jumped over with memchr, and a stack of keys and indices is the path.
fn paths_at(b: &[u8], offsets: &[usize]) -> Vec<String> {
    enum Frame<'a> {
        Obj(&'a [u8]),
        Arr(usize),
    }
    let mut paths = Vec::with_capacity(offsets.len());
    let mut stack: Vec<Frame<'_>> = Vec::with_capacity(8);
    let (mut i, mut next, mut expect_key) = (0, 0, false);
    while let (Some(&c), Some(&want)) = (b.get(i), offsets.get(next)) {
        if i == want {
            let mut path = String::new();
            for frame in &stack {
                match frame {
                    Frame::Obj(key) => {
                        if !path.is_empty() {
                            path.push('.');
                        }
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

/// Reads an object field by field, by the rules of the typed translator's serde structs: a key
/// `index` does not know, a repeated key or malformed JSON bails; a `null` value is an absent
/// field (their fields are all `Option`s). `on_field` reads every other value. Returns the bits
/// (`1 << index`) of the keys that had a value.
fn fields<'a>(
    s: &mut Scan<'a>,
    index: impl Fn(&[u8]) -> Option<u32>,
    mut on_field: impl FnMut(&'a [u8], &mut Scan<'a>) -> R<()>,
) -> R<u32> {
    let (mut seen, mut present) = (0u32, 0u32);
    s.obj()?;
    let mut first = true;
    while let Some(key) = s.key(&mut first)? {
        let bit = 1 << index(key).ok_or(Bail)?;
        if seen & bit != 0 {
            return Err(Bail);
        }
        seen |= bit;
        if !s.null()? {
            present |= bit;
            on_field(key, s)?;
        }
    }
    Ok(present)
}

/// Writes `,` before every item but the first.
#[inline]
fn sep(out: &mut Vec<u8>, first: &mut bool) {
    if !*first {
        out.push(b',');
    }
    *first = false;
}

// ---------------------------------------------------------------------------------------------
// OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------

/// OpenAI chat-completions request → Anthropic messages request and the paths it dropped, or
/// `None` for the typed path.
pub(super) fn openai_to_anthropic(body: &[u8], opts: &RequestOptions<'_>) -> Option<(Vec<u8>, Vec<String>)> {
    with_dropped(body, || oa_request(body, opts))
}

#[derive(Clone, Copy, PartialEq)]
enum AnChoice {
    Auto,
    Any,
    None,
}

struct ToolChoiceOut<'a> {
    mode: Option<AnChoice>,
    name: Option<Str<'a>>,
    disable_parallel: bool,
}

fn oa_request(body: &[u8], opts: &RequestOptions<'_>) -> R<Vec<u8>> {
    let mut s = Scan::new(body);
    // Room for the other dialect's longer keys, so the buffer is not regrown as it fills.
    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 256);
    let mut system = Vec::new();
    out.extend_from_slice(b"{\"model\":");
    put_text(&mut out, opts.upstream_model);

    let (mut max_tokens, mut max_completion_tokens) = (None, None);
    let (mut temperature, mut top_p, mut stream, mut user) = (None, None, None, None);
    let (mut tool_choice, mut parallel, mut has_tools, mut has_messages) = (None, None, false, false);
    let mut effort = None;

    let keys = |key: &[u8]| {
        Some(match key {
            b"model" => 0,
            b"messages" => 1,
            b"max_tokens" => 2,
            b"max_completion_tokens" => 3,
            b"temperature" => 4,
            b"top_p" => 5,
            b"stop" => 6,
            b"stream" => 7,
            b"user" => 8,
            b"tools" => 9,
            b"tool_choice" => 10,
            b"parallel_tool_calls" => 11,
            b"n" => 12,
            b"stream_options" => 13,
            b"seed" => 14,
            b"service_tier" => 15,
            b"store" => 16,
            b"metadata" => 17,
            b"prompt_cache_key" => 18,
            b"safety_identifier" => 19,
            b"verbosity" => 20,
            b"reasoning_effort" => 21,
            _ => return None,
        })
    };
    fields(&mut s, keys, |key, s| {
        match key {
            b"model" => {
                s.string()?;
            }
            b"messages" => {
                out.extend_from_slice(b",\"messages\":");
                oa_messages(s, &mut out, &mut system)?;
                has_messages = true;
            }
            b"max_tokens" => max_tokens = Some(s.uint()?),
            b"max_completion_tokens" => max_completion_tokens = Some(s.uint()?),
            b"temperature" => {
                let t = s.number()?;
                let v: f64 = std::str::from_utf8(t).ok().and_then(|t| t.parse().ok()).ok_or(Bail)?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(Bail);
                }
                temperature = Some(t);
            }
            b"top_p" => top_p = Some(s.number()?),
            b"stop" => {
                out.extend_from_slice(b",\"stop_sequences\":[");
                if s.peek()? == b'"' {
                    put_str(&mut out, s.string()?);
                } else {
                    s.arr()?;
                    let (mut f, mut fo) = (true, true);
                    while s.item(&mut f)? {
                        sep(&mut out, &mut fo);
                        put_str(&mut out, s.string()?);
                    }
                }
                out.push(b']');
            }
            b"stream" => stream = Some(s.boolean()?),
            b"user" => user = Some(s.string()?),
            b"tools" => has_tools = oa_tools(s, &mut out, opts.structured_outputs)?,
            b"tool_choice" => tool_choice = Some(oa_tool_choice(s)?),
            b"parallel_tool_calls" => parallel = Some(s.boolean()?),
            b"reasoning_effort" => effort = Some(s.string()?.plain()?),
            b"n" => {
                if s.uint()? != 1 {
                    return Err(Bail);
                }
            }
            // Honoured by the response side (`include_usage`), not sent.
            b"stream_options" => s.skip(0)?,
            // Dropped (see request.rs): validated, not written, reported.
            _ => s.drop_value()?,
        }
        Ok(())
    })?;
    s.end()?;
    if !has_messages {
        return Err(Bail);
    }

    if parallel == Some(false) {
        match &mut tool_choice {
            Some(c) if c.mode != Some(AnChoice::None) => c.disable_parallel = true,
            None if has_tools => {
                tool_choice = Some(ToolChoiceOut { mode: Some(AnChoice::Auto), name: None, disable_parallel: true })
            }
            _ => {}
        }
    }
    let max_tokens = max_completion_tokens.or(max_tokens).unwrap_or(u64::from(opts.default_max_tokens));
    // reasoning_effort → a thinking budget, with the limits Anthropic puts on thinking requests
    // (request.rs `thinking_for_effort`); a request outside them gets the typed path's 400.
    let budget: Option<u64> = match effort {
        None | Some(b"none") => None,
        Some(b"minimal") => Some(1024),
        Some(b"low") => Some(2048),
        Some(b"medium") => Some(8192),
        Some(b"high") => Some(16384),
        Some(_) => return Err(Bail),
    };
    if let Some(budget) = budget {
        let budget = budget.min(max_tokens.saturating_sub(1));
        let number = |n: &[u8]| std::str::from_utf8(n).ok().and_then(|t| t.parse::<f64>().ok());
        let forced = tool_choice.as_ref().is_some_and(|c| matches!(c.mode, Some(AnChoice::Any) | None));
        if budget < 1024
            || temperature.is_some_and(|t| number(t) != Some(1.0))
            || top_p.is_some_and(|p| !number(p).is_some_and(|v| (0.95..=1.0).contains(&v)))
            || forced
        {
            return Err(Bail);
        }
        out.extend_from_slice(b",\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":");
        put_uint(&mut out, budget);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"max_tokens\":");
    put_uint(&mut out, max_tokens);
    if !system.is_empty() {
        out.extend_from_slice(b",\"system\":[");
        out.extend_from_slice(&system);
        out.push(b']');
    }
    if let Some(u) = user {
        out.extend_from_slice(b",\"metadata\":{\"user_id\":");
        put_str(&mut out, u);
        out.push(b'}');
    }
    if let Some(stream) = stream {
        out.extend_from_slice(if stream { b",\"stream\":true" } else { b",\"stream\":false" });
    }
    if let Some(t) = temperature {
        out.extend_from_slice(b",\"temperature\":");
        out.extend_from_slice(t);
    }
    if let Some(p) = top_p {
        out.extend_from_slice(b",\"top_p\":");
        out.extend_from_slice(p);
    }
    if let Some(c) = tool_choice {
        out.extend_from_slice(match c.mode {
            Some(AnChoice::Auto) => b",\"tool_choice\":{\"type\":\"auto\"".as_slice(),
            Some(AnChoice::Any) => b",\"tool_choice\":{\"type\":\"any\"",
            Some(AnChoice::None) => b",\"tool_choice\":{\"type\":\"none\"",
            None => b",\"tool_choice\":{\"type\":\"tool\"",
        });
        if let Some(name) = c.name {
            out.extend_from_slice(b",\"name\":");
            put_str(&mut out, name);
        }
        if c.disable_parallel {
            out.extend_from_slice(b",\"disable_parallel_tool_use\":true");
        }
        out.push(b'}');
    }
    out.push(b'}');
    Ok(out)
}

/// `tools` → Anthropic tools, written as `,"tools":[...]`. Returns whether there is any.
/// `strict` goes along where the model takes strict tool use (`structured_outputs`).
fn oa_tools(s: &mut Scan<'_>, out: &mut Vec<u8>, structured_outputs: bool) -> R<bool> {
    out.extend_from_slice(b",\"tools\":[");
    s.arr()?;
    let (mut first, mut fo) = (true, true);
    while s.item(&mut first)? {
        let (mut kind, mut has_function) = (None, false);
        let (mut name, mut description, mut parameters, mut strict) = (None, None, None, None);
        fields(
            s,
            |key| {
                Some(match key {
                    b"type" => 0,
                    b"function" => 1,
                    _ => return None,
                })
            },
            |key, s| {
                match key {
                    b"type" => kind = Some(s.string()?.plain()?),
                    _ => {
                        has_function = true;
                        let keys = |key: &[u8]| {
                            Some(match key {
                                b"name" => 0,
                                b"description" => 1,
                                b"parameters" => 2,
                                b"strict" => 3,
                                _ => return None,
                            })
                        };
                        fields(s, keys, |key, s| {
                            match key {
                                b"name" => name = Some(s.string()?),
                                b"description" => description = Some(s.string()?),
                                b"parameters" => parameters = Some(s.raw_value()?),
                                _ => {
                                    // A bool either way (as the typed translator reads it); kept
                                    // only where the model takes strict tool use.
                                    s.ws();
                                    let at = s.i;
                                    let value = s.boolean()?;
                                    if structured_outputs {
                                        strict = Some(value);
                                    } else {
                                        s.dropped_at(at);
                                    }
                                }
                            }
                            Ok(())
                        })?;
                    }
                }
                Ok(())
            },
        )?;
        if kind != Some(b"function".as_slice()) || !has_function {
            return Err(Bail);
        }
        sep(out, &mut fo);
        out.extend_from_slice(b"{\"name\":");
        put_str(out, name.ok_or(Bail)?);
        if let Some(d) = description {
            out.extend_from_slice(b",\"description\":");
            put_str(out, d);
        }
        out.extend_from_slice(b",\"input_schema\":");
        out.extend_from_slice(parameters.unwrap_or(b"{\"type\":\"object\",\"properties\":{}}"));
        if let Some(strict) = strict {
            out.extend_from_slice(if strict { b",\"strict\":true" } else { b",\"strict\":false" });
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(!fo)
}

fn oa_tool_choice<'a>(s: &mut Scan<'a>) -> R<ToolChoiceOut<'a>> {
    if s.peek()? == b'"' {
        let mode = match s.string()?.plain()? {
            b"auto" => AnChoice::Auto,
            b"required" => AnChoice::Any,
            b"none" => AnChoice::None,
            _ => return Err(Bail),
        };
        return Ok(ToolChoiceOut { mode: Some(mode), name: None, disable_parallel: false });
    }
    let (mut kind, mut name) = (None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"type" => 0,
                b"function" => 1,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"type" => kind = Some(s.string()?.plain()?),
                _ => {
                    fields(
                        s,
                        |key| (key == b"name").then_some(0),
                        |_, s| {
                            name = Some(s.string()?);
                            Ok(())
                        },
                    )?;
                }
            }
            Ok(())
        },
    )?;
    if kind != Some(b"function".as_slice()) {
        return Err(Bail);
    }
    Ok(ToolChoiceOut { mode: None, name: Some(name.ok_or(Bail)?), disable_parallel: false })
}

#[derive(Clone, Copy, PartialEq)]
enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// A message's content: a string or a (validated, unread) array of parts.
#[derive(Clone, Copy)]
enum Content<'a> {
    Text(Str<'a>),
    Parts(&'a [u8]),
}

/// One OpenAI message, read before it is written (its keys may come in any order).
struct OaMsg<'a> {
    role: Role,
    content: Option<Content<'a>>,
    /// Number of tool calls, already written as `tool_use` blocks (comma separated) into the
    /// `calls` buffer given to [`oa_message`].
    tool_calls: Option<usize>,
    tool_call_id: Option<Str<'a>>,
    refusal: Option<Str<'a>>,
}

fn read_content<'a>(s: &mut Scan<'a>) -> R<Content<'a>> {
    if s.peek()? == b'"' {
        Ok(Content::Text(s.string()?))
    } else {
        Ok(Content::Parts(s.raw_array()?))
    }
}

fn oa_message<'a>(s: &mut Scan<'a>, calls: &mut Vec<u8>, args: &mut Vec<u8>) -> R<OaMsg<'a>> {
    calls.clear();
    let mut m = OaMsg { role: Role::User, content: None, tool_calls: None, tool_call_id: None, refusal: None };
    let mut role = None;
    let keys = |key: &[u8]| {
        Some(match key {
            b"role" => 0,
            b"content" => 1,
            b"name" => 2,
            b"tool_calls" => 3,
            b"tool_call_id" => 4,
            b"refusal" => 5,
            b"reasoning_content" => 6,
            b"annotations" => 7,
            _ => return None,
        })
    };
    let present = fields(s, keys, |key, s| {
        match key {
            b"role" => {
                role = Some(match s.string()?.plain()? {
                    b"system" | b"developer" => Role::System,
                    b"user" => Role::User,
                    b"assistant" => Role::Assistant,
                    b"tool" => Role::Tool,
                    _ => return Err(Bail),
                })
            }
            b"content" => m.content = Some(read_content(s)?),
            b"tool_calls" => {
                // Written straight away: only an assistant message may carry them, and any other
                // role bails below.
                s.arr()?;
                let (mut f, mut fo, mut n) = (true, true, 0);
                while s.item(&mut f)? {
                    sep(calls, &mut fo);
                    oa_tool_call(s, calls, args)?;
                    n += 1;
                }
                m.tool_calls = Some(n);
            }
            b"tool_call_id" => m.tool_call_id = Some(s.string()?),
            b"refusal" => m.refusal = Some(s.string()?),
            _ => s.drop_value()?, // name, reasoning_content, annotations: dropped
        }
        Ok(())
    })?;
    m.role = role.ok_or(Bail)?;
    // Only assistant messages may carry these (dropped) fields.
    let dropped_assistant_only = present & (1 << 6 | 1 << 7) != 0;
    let allowed = match m.role {
        Role::System | Role::User => {
            m.tool_calls.is_none() && m.tool_call_id.is_none() && m.refusal.is_none() && !dropped_assistant_only
        }
        Role::Assistant => m.tool_call_id.is_none(),
        Role::Tool => m.tool_calls.is_none() && m.refusal.is_none() && !dropped_assistant_only,
    };
    if !allowed {
        return Err(Bail);
    }
    Ok(m)
}

/// One OpenAI content part, read before it is written.
struct OaPart<'a> {
    kind: &'a [u8],
    text: Option<Str<'a>>,
    refusal: Option<Str<'a>>,
    url: Option<Str<'a>>,
    /// A `file` part's `file_data` and `filename` (a part with `file` present has `file_data`).
    file: Option<(Str<'a>, Option<Str<'a>>)>,
}

impl OaPart<'_> {
    /// Whether only `field` among the parts' payload fields is present.
    fn only(&self, field: &str) -> bool {
        (self.text.is_some() == (field == "text"))
            && (self.refusal.is_some() == (field == "refusal"))
            && (self.url.is_some() == (field == "image_url"))
            && (self.file.is_some() == (field == "file"))
    }
}

fn oa_part<'a>(s: &mut Scan<'a>) -> R<OaPart<'a>> {
    let mut p = OaPart { kind: b"", text: None, refusal: None, url: None, file: None };
    let mut kind = None;
    let keys = |key: &[u8]| {
        Some(match key {
            b"type" => 0,
            b"text" => 1,
            b"refusal" => 2,
            b"image_url" => 3,
            b"file" => 4,
            _ => return None,
        })
    };
    fields(s, keys, |key, s| {
        match key {
            b"type" => kind = Some(s.string()?.plain()?),
            b"text" => p.text = Some(s.string()?),
            b"refusal" => p.refusal = Some(s.string()?),
            b"file" => {
                // file_id (a file uploaded to OpenAI) has no Anthropic counterpart: typed path.
                let (mut data, mut name) = (None, None);
                fields(
                    s,
                    |key| {
                        Some(match key {
                            b"file_data" => 0,
                            b"filename" => 1,
                            _ => return None,
                        })
                    },
                    |key, s| {
                        match key {
                            b"file_data" => data = Some(s.string()?),
                            _ => name = Some(s.string()?),
                        }
                        Ok(())
                    },
                )?;
                p.file = Some((data.ok_or(Bail)?, name));
            }
            _ => {
                fields(
                    s,
                    |key| {
                        Some(match key {
                            b"url" => 0,
                            b"detail" => 1,
                            _ => return None,
                        })
                    },
                    |key, s| {
                        match key {
                            b"url" => p.url = Some(s.string()?),
                            _ => s.drop_value()?, // detail: dropped
                        }
                        Ok(())
                    },
                )?;
                if p.url.is_none() {
                    return Err(Bail);
                }
            }
        }
        Ok(())
    })?;
    p.kind = kind.ok_or(Bail)?;
    Ok(p)
}

/// A part's text when it is a text part with nothing else (system, developer and tool messages).
fn oa_text_part<'a>(s: &mut Scan<'a>) -> R<Str<'a>> {
    let p = oa_part(s)?;
    if p.kind != b"text" || !p.only("text") {
        return Err(Bail);
    }
    p.text.ok_or(Bail)
}

/// A user part as an Anthropic block.
fn oa_user_block(s: &mut Scan<'_>, out: &mut Vec<u8>) -> R<()> {
    let p = oa_part(s)?;
    match p.kind {
        b"text" if p.only("text") => {
            out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
            put_str(out, p.text.ok_or(Bail)?);
            out.push(b'}');
        }
        b"file" if p.only("file") => {
            let (data, name) = p.file.ok_or(Bail)?;
            let text = std::str::from_utf8(data.plain()?).map_err(|_| Bail)?;
            let (media, payload) = super::request::data_url(text).ok_or(Bail)?;
            if !text.get(media).is_some_and(|m| m.eq_ignore_ascii_case("application/pdf")) {
                return Err(Bail);
            }
            out.extend_from_slice(b"{\"type\":\"document\",\"source\":{\"type\":\"base64\",\"media_type\":\"application/pdf\",\"data\":\"");
            out.extend_from_slice(text.get(payload).ok_or(Bail)?.as_bytes());
            out.extend_from_slice(b"\"}");
            if let Some(name) = name {
                out.extend_from_slice(b",\"title\":");
                put_str(out, name);
            }
            out.push(b'}');
        }
        b"image_url" if p.only("image_url") => {
            let url = p.url.ok_or(Bail)?;
            let text = std::str::from_utf8(url.plain()?).map_err(|_| Bail)?;
            if let Some((media, data)) = super::request::data_url(text) {
                out.extend_from_slice(b"{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"");
                out.extend_from_slice(text.get(media).ok_or(Bail)?.as_bytes());
                out.extend_from_slice(b"\",\"data\":\"");
                out.extend_from_slice(text.get(data).ok_or(Bail)?.as_bytes());
                out.extend_from_slice(b"\"}}");
            } else if super::request::is_http_url(text) {
                out.extend_from_slice(b"{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":");
                put_str(out, url);
                out.extend_from_slice(b"}}");
            } else {
                return Err(Bail);
            }
        }
        _ => return Err(Bail),
    }
    Ok(())
}

/// User content as Anthropic content (`"text"` or `[blocks]`), or appended as blocks to an open
/// tool-results message (`append`).
fn oa_user_content(content: Content<'_>, out: &mut Vec<u8>, append: bool) -> R<()> {
    match content {
        Content::Text(t) if append => {
            out.extend_from_slice(b",{\"type\":\"text\",\"text\":");
            put_str(out, t);
            out.push(b'}');
        }
        Content::Text(t) => put_str(out, t),
        Content::Parts(raw) => {
            if !append {
                out.push(b'[');
            }
            let mut s = Scan::new(raw);
            s.arr()?;
            let (mut f, mut fo) = (true, !append);
            while s.item(&mut f)? {
                sep(out, &mut fo);
                oa_user_block(&mut s, out)?;
            }
            if !append {
                out.push(b']');
            }
        }
    }
    Ok(())
}

fn oa_messages(s: &mut Scan<'_>, out: &mut Vec<u8>, system: &mut Vec<u8>) -> R<()> {
    s.arr()?;
    out.push(b'[');
    let mut first = true;
    let mut first_out = true;
    let mut first_system = system.is_empty();
    // The last message written is a user message of tool results, still open (`]}` not written),
    // that a following tool or user message joins.
    let mut open_results = false;
    let (mut calls, mut args) = (Vec::new(), Vec::new());
    while s.item(&mut first)? {
        let m = oa_message(s, &mut calls, &mut args)?;
        match m.role {
            Role::System => match m.content.ok_or(Bail)? {
                Content::Text(t) => {
                    if !t.raw.is_empty() {
                        sep(system, &mut first_system);
                        system.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                        put_str(system, t);
                        system.push(b'}');
                    }
                }
                Content::Parts(raw) => {
                    let mut ps = Scan::new(raw);
                    ps.arr()?;
                    let mut f = true;
                    while ps.item(&mut f)? {
                        let t = oa_text_part(&mut ps)?;
                        if !t.raw.is_empty() {
                            sep(system, &mut first_system);
                            system.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                            put_str(system, t);
                            system.push(b'}');
                        }
                    }
                }
            },
            Role::User => {
                let content = m.content.ok_or(Bail)?;
                if open_results {
                    oa_user_content(content, out, true)?;
                    out.extend_from_slice(b"]}");
                } else {
                    sep(out, &mut first_out);
                    out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
                    oa_user_content(content, out, false)?;
                    out.push(b'}');
                }
                open_results = false;
            }
            Role::Assistant => {
                if open_results {
                    out.extend_from_slice(b"]}");
                    open_results = false;
                }
                sep(out, &mut first_out);
                oa_assistant(&m, &calls, out)?;
            }
            Role::Tool => {
                if open_results {
                    out.push(b',');
                } else {
                    sep(out, &mut first_out);
                    out.extend_from_slice(b"{\"role\":\"user\",\"content\":[");
                }
                out.extend_from_slice(b"{\"type\":\"tool_result\",\"tool_use_id\":");
                put_str(out, m.tool_call_id.ok_or(Bail)?);
                out.extend_from_slice(b",\"content\":");
                match m.content.ok_or(Bail)? {
                    Content::Text(t) => put_str(out, t),
                    Content::Parts(raw) => {
                        out.push(b'[');
                        let mut ps = Scan::new(raw);
                        ps.arr()?;
                        let (mut f, mut fo) = (true, true);
                        while ps.item(&mut f)? {
                            sep(out, &mut fo);
                            out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                            put_str(out, oa_text_part(&mut ps)?);
                            out.push(b'}');
                        }
                        out.push(b']');
                    }
                }
                out.push(b'}');
                open_results = true;
            }
        }
    }
    if open_results {
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    Ok(())
}

/// An assistant message: `"content":"text"` when it is only text, else blocks (texts, refusal,
/// tool uses, in that order).
fn oa_assistant(m: &OaMsg<'_>, rendered_calls: &[u8], out: &mut Vec<u8>) -> R<()> {
    let calls = m.tool_calls.is_some_and(|n| n > 0);
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    if let (Some(Content::Text(t)), false, None) = (m.content, calls, m.refusal) {
        put_str(out, t);
        out.push(b'}');
        return Ok(());
    }
    if m.content.is_none() && !calls && m.refusal.is_none() {
        return Err(Bail);
    }
    let start = out.len();
    out.push(b'[');
    let mut fo = true;
    match m.content {
        Some(Content::Text(t)) => text_block(out, t, &mut fo),
        Some(Content::Parts(raw)) => {
            let mut ps = Scan::new(raw);
            ps.arr()?;
            let mut f = true;
            while ps.item(&mut f)? {
                let p = oa_part(&mut ps)?;
                let t = match p.kind {
                    b"text" if p.only("text") => p.text.ok_or(Bail)?,
                    b"refusal" if p.only("refusal") => p.refusal.ok_or(Bail)?,
                    _ => return Err(Bail),
                };
                text_block(out, t, &mut fo);
            }
        }
        None => {}
    }
    if let Some(r) = m.refusal {
        text_block(out, r, &mut fo);
    }
    if calls {
        sep(out, &mut fo);
        out.extend_from_slice(rendered_calls);
    }
    if fo {
        out.truncate(start);
        out.extend_from_slice(b"\"\"}");
        return Ok(());
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

/// A text block, unless the text is empty (Anthropic refuses empty text blocks).
fn text_block(out: &mut Vec<u8>, t: Str<'_>, fo: &mut bool) {
    if !t.raw.is_empty() {
        sep(out, fo);
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
        put_str(out, t);
        out.push(b'}');
    }
}

/// An assistant tool call as a `tool_use` block; `arguments` (a JSON text in a string) becomes
/// the `input` object.
fn oa_tool_call(s: &mut Scan<'_>, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> R<()> {
    let (mut id, mut kind, mut name, mut arguments) = (None, None, None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"id" => 0,
                b"type" => 1,
                b"function" => 2,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"id" => id = Some(s.string()?),
                b"type" => kind = Some(s.string()?.plain()?),
                _ => {
                    fields(
                        s,
                        |key| {
                            Some(match key {
                                b"name" => 0,
                                b"arguments" => 1,
                                _ => return None,
                            })
                        },
                        |key, s| {
                            match key {
                                b"name" => name = Some(s.string()?),
                                _ => arguments = Some(s.string()?),
                            }
                            Ok(())
                        },
                    )?;
                }
            }
            Ok(())
        },
    )?;
    if kind.is_some_and(|k| k != b"function") {
        return Err(Bail);
    }
    out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":");
    put_str(out, id.ok_or(Bail)?);
    out.extend_from_slice(b",\"name\":");
    put_str(out, name.ok_or(Bail)?);
    out.extend_from_slice(b",\"input\":");
    let arguments = arguments.ok_or(Bail)?;
    let text: &[u8] = if arguments.escaped {
        scratch.clear();
        unescape_into(arguments.raw, scratch)?;
        scratch
    } else {
        arguments.raw
    };
    let mut a = Scan::new(text);
    a.ws();
    if a.i == text.len() {
        out.extend_from_slice(b"{}");
    } else {
        if a.peek()? != b'{' {
            return Err(Bail);
        }
        let input = a.raw_value()?;
        a.end()?;
        out.extend_from_slice(input);
    }
    out.push(b'}');
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Anthropic → OpenAI
// ---------------------------------------------------------------------------------------------

/// Anthropic messages request → OpenAI chat-completions request and the paths it dropped, or
/// `None` for the typed path.
pub(super) fn anthropic_to_openai(body: &[u8], opts: &RequestOptions<'_>) -> Option<(Vec<u8>, Vec<String>)> {
    with_dropped(body, || an_request(body, opts))
}

fn an_request(body: &[u8], opts: &RequestOptions<'_>) -> R<Vec<u8>> {
    let mut s = Scan::new(body);
    // Room for the other dialect's longer keys, so the buffer is not regrown as it fills.
    let mut out = Vec::with_capacity(body.len() + body.len() / 4 + 256);
    out.extend_from_slice(b"{\"model\":");
    put_text(&mut out, opts.upstream_model);

    let mut messages_at = None;
    let mut system: Option<Vec<u8>> = None;
    let (mut max_tokens, mut temperature, mut top_p, mut stream, mut user) = (None, None, None, None, None);
    let (mut effort, mut tool_choice, mut parallel) = (None, None, false);
    let (mut config_effort, mut format, mut deprecated_format) = (None, None, None);
    let mut scratch = Scratch::default();

    let keys = |key: &[u8]| {
        Some(match key {
            b"model" => 0,
            b"messages" => 1,
            b"system" => 2,
            b"max_tokens" => 3,
            b"temperature" => 4,
            b"top_p" => 5,
            b"stop_sequences" => 6,
            b"stream" => 7,
            b"metadata" => 8,
            b"tools" => 9,
            b"tool_choice" => 10,
            b"thinking" => 11,
            b"context_management" => 12,
            b"service_tier" => 13,
            b"output_config" => 14,
            b"output_format" => 15,
            b"cache_control" => 16,
            b"inference_geo" => 17,
            b"speed" => 18,
            _ => return None,
        })
    };
    fields(&mut s, keys, |key, s| {
        match key {
            b"model" => {
                s.string()?;
            }
            b"messages" => {
                out.extend_from_slice(b",\"messages\":[");
                messages_at = Some(out.len());
                an_messages(s, &mut out, &mut scratch)?;
                out.push(b']');
            }
            b"system" => system = an_system(s)?,
            b"max_tokens" => max_tokens = Some(s.uint()?),
            b"temperature" => temperature = Some(s.number()?),
            b"top_p" => top_p = Some(s.number()?),
            b"stop_sequences" => {
                let start = out.len();
                out.extend_from_slice(b",\"stop\":[");
                s.arr()?;
                let (mut f, mut fo) = (true, true);
                let mut n = 0;
                while s.item(&mut f)? {
                    sep(&mut out, &mut fo);
                    put_str(&mut out, s.string()?);
                    n += 1;
                }
                if n > 4 {
                    return Err(Bail);
                }
                if n == 0 {
                    out.truncate(start);
                } else {
                    out.push(b']');
                }
            }
            b"stream" => stream = Some(s.boolean()?),
            b"metadata" => {
                s.obj()?;
                let mut f = true;
                let mut seen_user = false;
                while let Some(k) = s.key(&mut f)? {
                    if k == b"user_id" {
                        if seen_user {
                            return Err(Bail);
                        }
                        seen_user = true;
                        if !s.null()? {
                            user = Some(s.string()?);
                        }
                    } else {
                        s.drop_value()?; // other metadata keys are dropped
                    }
                }
            }
            b"tools" => an_tools(s, &mut out)?,
            b"tool_choice" => (tool_choice, parallel) = an_tool_choice(s)?,
            b"thinking" => effort = an_thinking(s)?,
            b"output_config" => {
                let config = an_output_config(s)?;
                (config_effort, format) = (config.effort, config.schema);
            }
            b"output_format" => deprecated_format = Some(an_format(s)?),
            // context_management, service_tier, cache_control, inference_geo, speed: dropped.
            _ => s.drop_value()?,
        }
        Ok(())
    })?;
    s.end()?;
    let messages_at = messages_at.ok_or(Bail)?;

    out.extend_from_slice(b",\"max_completion_tokens\":");
    put_uint(&mut out, max_tokens.ok_or(Bail)?);
    if let Some(t) = temperature {
        out.extend_from_slice(b",\"temperature\":");
        out.extend_from_slice(t);
    }
    if let Some(p) = top_p {
        out.extend_from_slice(b",\"top_p\":");
        out.extend_from_slice(p);
    }
    match stream {
        Some(true) => out.extend_from_slice(b",\"stream\":true,\"stream_options\":{\"include_usage\":true}"),
        Some(false) => out.extend_from_slice(b",\"stream\":false"),
        None => {}
    }
    if let Some(u) = user {
        out.extend_from_slice(b",\"user\":");
        // Its unescaped length is at most its escaped one: only a long one is read and fitted.
        if u.raw.len() <= 64 {
            put_str(&mut out, u);
        } else {
            let mut text = Vec::with_capacity(u.raw.len());
            unescape_into(u.raw, &mut text)?;
            let text = String::from_utf8(text).map_err(|_| Bail)?;
            put_text(&mut out, &super::request::fit_openai_user(text.into()));
        }
    }
    if let Some(c) = tool_choice {
        out.extend_from_slice(b",\"tool_choice\":");
        out.extend_from_slice(&c);
    }
    if parallel {
        out.extend_from_slice(b",\"parallel_tool_calls\":false");
    }
    // The caller's explicit effort wins over one derived from a thinking budget.
    if let Some(e) = config_effort.or(effort) {
        out.extend_from_slice(b",\"reasoning_effort\":\"");
        out.extend_from_slice(e);
        out.push(b'"');
    }
    if let Some(schema) = format.or(deprecated_format) {
        // Anthropic's structured output always holds to its schema: OpenAI's strict mode.
        out.extend_from_slice(
            b",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"output\",\"schema\":",
        );
        out.extend_from_slice(schema);
        out.extend_from_slice(b",\"strict\":true}}");
    }
    out.push(b'}');

    // The system message leads the messages, wherever `system` stood in the body.
    if let Some(mut sys) = system {
        if out.get(messages_at) != Some(&b']') {
            sys.push(b',');
        }
        // One memmove of the tail (`Vec::splice` moves it byte by byte).
        let tail = out.len() - messages_at;
        out.extend_from_slice(&sys);
        out.copy_within(messages_at..messages_at + tail, messages_at + sys.len());
        out[messages_at..messages_at + sys.len()].copy_from_slice(&sys);
    }
    Ok(out)
}

/// Buffers reused across messages.
#[derive(Default)]
struct Scratch {
    tools: Vec<u8>,
    texts: Vec<u8>,
    calls: Vec<u8>,
}

/// `system` as an OpenAI system message (`None` for an empty block list).
fn an_system(s: &mut Scan<'_>) -> R<Option<Vec<u8>>> {
    let mut msg = Vec::with_capacity(256);
    msg.extend_from_slice(b"{\"role\":\"system\",\"content\":");
    if s.peek()? == b'"' {
        put_str(&mut msg, s.string()?);
    } else {
        msg.push(b'"');
        s.arr()?;
        let mut f = true;
        let mut n = 0;
        while s.item(&mut f)? {
            if n > 0 {
                msg.extend_from_slice(b"\\n\\n");
            }
            msg.extend_from_slice(an_text_block(s)?.raw);
            n += 1;
        }
        if n == 0 {
            return Ok(None);
        }
        msg.push(b'"');
    }
    msg.push(b'}');
    Ok(Some(msg))
}

/// A block that must be a text block (`system`, tool-result contents); returns its text.
/// `cache_control` and `citations` are dropped.
fn an_text_block<'a>(s: &mut Scan<'a>) -> R<Str<'a>> {
    let (mut kind, mut text) = (None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"type" => 0,
                b"text" => 1,
                b"cache_control" => 2,
                b"citations" => 3,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"type" => kind = Some(s.string()?.plain()?),
                b"text" => text = Some(s.string()?),
                _ => s.drop_value()?,
            }
            Ok(())
        },
    )?;
    if kind != Some(b"text".as_slice()) {
        return Err(Bail);
    }
    text.ok_or(Bail)
}

fn an_tools(s: &mut Scan<'_>, out: &mut Vec<u8>) -> R<()> {
    out.extend_from_slice(b",\"tools\":[");
    s.arr()?;
    let (mut first, mut fo) = (true, true);
    while s.item(&mut first)? {
        let (mut name, mut description, mut schema, mut strict) = (None, None, None, None);
        let keys = |key: &[u8]| {
            Some(match key {
                b"type" => 0,
                b"name" => 1,
                b"description" => 2,
                b"input_schema" => 3,
                b"strict" => 4,
                b"cache_control" => 5,
                b"defer_loading" => 6,
                b"eager_input_streaming" => 7,
                b"input_examples" => 8,
                b"allowed_callers" => 9,
                _ => return None,
            })
        };
        fields(s, keys, |key, s| {
            match key {
                b"type" => {
                    if s.string()?.plain()? != b"custom" {
                        return Err(Bail);
                    }
                }
                b"name" => name = Some(s.string()?),
                b"description" => description = Some(s.string()?),
                b"input_schema" => schema = Some(s.raw_value()?),
                b"strict" => strict = Some(s.boolean()?),
                _ => s.drop_value()?,
            }
            Ok(())
        })?;
        sep(out, &mut fo);
        out.extend_from_slice(b"{\"type\":\"function\",\"function\":{\"name\":");
        put_str(out, name.ok_or(Bail)?);
        if let Some(d) = description {
            out.extend_from_slice(b",\"description\":");
            put_str(out, d);
        }
        out.extend_from_slice(b",\"parameters\":");
        out.extend_from_slice(schema.ok_or(Bail)?);
        if let Some(strict) = strict {
            out.extend_from_slice(if strict { b",\"strict\":true" } else { b",\"strict\":false" });
        }
        out.extend_from_slice(b"}}");
    }
    out.push(b']');
    Ok(())
}

/// `tool_choice` → the OpenAI choice's JSON and whether parallel tool calls are turned off.
fn an_tool_choice(s: &mut Scan<'_>) -> R<(Option<Vec<u8>>, bool)> {
    let (mut kind, mut name, mut disable) = (None, None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"type" => 0,
                b"name" => 1,
                b"disable_parallel_tool_use" => 2,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"type" => kind = Some(s.string()?.plain()?),
                b"name" => name = Some(s.string()?),
                _ => disable = Some(s.boolean()?),
            }
            Ok(())
        },
    )?;
    let kind = kind.ok_or(Bail)?;
    let choice = match kind {
        b"auto" if name.is_none() => b"\"auto\"".to_vec(),
        b"any" if name.is_none() => b"\"required\"".to_vec(),
        b"none" if name.is_none() => b"\"none\"".to_vec(),
        b"tool" => {
            let mut c = b"{\"type\":\"function\",\"function\":{\"name\":".to_vec();
            put_str(&mut c, name.ok_or(Bail)?);
            c.extend_from_slice(b"}}");
            c
        }
        _ => return Err(Bail),
    };
    Ok((Some(choice), disable == Some(true) && kind != b"none"))
}

/// `thinking` → `reasoning_effort` (None when disabled).
/// What `output_config` asks for.
struct OutputConfig<'a> {
    /// One of OpenAI's `reasoning_effort` words too.
    effort: Option<&'a [u8]>,
    /// A json_schema format's schema.
    schema: Option<&'a [u8]>,
}

/// `output_config`: its effort and a json_schema format's schema.
fn an_output_config<'a>(s: &mut Scan<'a>) -> R<OutputConfig<'a>> {
    let (mut effort, mut format) = (None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"effort" => 0,
                b"format" => 1,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"effort" => match s.string()?.plain()? {
                    e @ (b"low" | b"medium" | b"high" | b"xhigh" | b"max") => effort = Some(e),
                    _ => return Err(Bail),
                },
                _ => format = Some(an_format(s)?),
            }
            Ok(())
        },
    )?;
    Ok(OutputConfig { effort, schema: format })
}

/// A structured-output format (`output_config.format`, `output_format`): its schema's bytes.
fn an_format<'a>(s: &mut Scan<'a>) -> R<&'a [u8]> {
    let (mut kind, mut schema) = (None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"type" => 0,
                b"schema" => 1,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"type" => kind = Some(s.string()?.plain()?),
                _ => schema = Some(s.raw_value()?),
            }
            Ok(())
        },
    )?;
    if kind != Some(b"json_schema".as_slice()) {
        return Err(Bail);
    }
    schema.ok_or(Bail)
}

fn an_thinking(s: &mut Scan<'_>) -> R<Option<&'static [u8]>> {
    let (mut kind, mut budget) = (None, None);
    fields(
        s,
        |key| {
            Some(match key {
                b"type" => 0,
                b"budget_tokens" => 1,
                b"display" => 2,
                _ => return None,
            })
        },
        |key, s| {
            match key {
                b"type" => kind = Some(s.string()?.plain()?),
                b"budget_tokens" => budget = Some(s.uint()?),
                _ => s.drop_value()?,
            }
            Ok(())
        },
    )?;
    match (kind.ok_or(Bail)?, budget) {
        (b"enabled", Some(0..=4095)) => Ok(Some(b"low")),
        (b"enabled", Some(4096..=16383)) => Ok(Some(b"medium")),
        (b"enabled", Some(_)) => Ok(Some(b"high")),
        // Adaptive: the model decides (`output_config.effort`, when sent, says how hard).
        (b"disabled" | b"adaptive", None) => Ok(None),
        _ => Err(Bail),
    }
}

fn an_messages(s: &mut Scan<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> R<()> {
    s.arr()?;
    let (mut first, mut fo) = (true, true);
    while s.item(&mut first)? {
        let (mut role, mut content, mut written) = (None, None, false);
        fields(
            s,
            |key| {
                Some(match key {
                    b"role" => 0,
                    b"content" => 1,
                    _ => return None,
                })
            },
            |key, s| {
                match key {
                    b"role" => role = Some(s.string()?.plain()?),
                    _ => match role {
                        // Role first (as SDKs write it): the blocks are translated in this pass.
                        Some(role) if s.peek()? == b'[' => {
                            an_blocks(role, s, out, &mut fo, scratch)?;
                            written = true;
                        }
                        _ => content = Some(read_content(s)?),
                    },
                }
                Ok(())
            },
        )?;
        if written {
            continue;
        }
        match (role.ok_or(Bail)?, content.ok_or(Bail)?) {
            (b"user", Content::Text(t)) => {
                sep(out, &mut fo);
                out.extend_from_slice(b"{\"role\":\"user\",\"content\":");
                put_str(out, t);
                out.push(b'}');
            }
            (role, Content::Parts(raw)) => an_blocks(role, &mut Scan::new(raw), out, &mut fo, scratch)?,
            (b"assistant", Content::Text(t)) => {
                sep(out, &mut fo);
                out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
                put_str(out, t);
                out.push(b'}');
            }
            (b"system", Content::Text(t)) => {
                sep(out, &mut fo);
                out.extend_from_slice(b"{\"role\":\"system\",\"content\":");
                put_str(out, t);
                out.push(b'}');
            }
            _ => return Err(Bail),
        }
    }
    Ok(())
}

/// Any content block, read before it is written (its keys may come in any order).
#[derive(Default)]
struct AnBlk<'a> {
    kind: &'a [u8],
    text: Option<Str<'a>>,
    source: Option<Source<'a>>,
    id: Option<Str<'a>>,
    name: Option<Str<'a>>,
    input: Option<&'a [u8]>,
    tool_use_id: Option<Str<'a>>,
    content: Option<Content<'a>>,
    is_error: Option<bool>,
    title: Option<Str<'a>>,
    citations: Option<&'a [u8]>,
    /// Keys present (not null), by the bits of `an_block`'s key table.
    present: u32,
}

const B_TEXT: u32 = 1 << 1;
const B_SOURCE: u32 = 1 << 2;
const B_ID: u32 = 1 << 3;
const B_NAME: u32 = 1 << 4;
const B_INPUT: u32 = 1 << 5;
const B_TOOL_USE_ID: u32 = 1 << 6;
const B_CONTENT: u32 = 1 << 7;
const B_IS_ERROR: u32 = 1 << 8;
const B_THINKING: u32 = 1 << 9;
const B_SIGNATURE: u32 = 1 << 10;
const B_DATA: u32 = 1 << 11;
const B_CACHE_CONTROL: u32 = 1 << 12;
const B_CITATIONS: u32 = 1 << 13;
const B_TITLE: u32 = 1 << 14;

fn an_block<'a>(s: &mut Scan<'a>) -> R<AnBlk<'a>> {
    let mut b = AnBlk::default();
    let mut kind = None;
    let keys = |key: &[u8]| {
        Some(match key {
            b"type" => 0,
            b"text" => 1,
            b"source" => 2,
            b"id" => 3,
            b"name" => 4,
            b"input" => 5,
            b"tool_use_id" => 6,
            b"content" => 7,
            b"is_error" => 8,
            b"thinking" => 9,
            b"signature" => 10,
            b"data" => 11,
            b"cache_control" => 12,
            b"citations" => 13,
            b"title" => 14,
            _ => return None,
        })
    };
    b.present = fields(s, keys, |key, s| {
        match key {
            b"type" => kind = Some(s.string()?.plain()?),
            b"text" => b.text = Some(s.string()?),
            b"source" => b.source = Some(an_source(s)?),
            b"id" => b.id = Some(s.string()?),
            b"name" => b.name = Some(s.string()?),
            b"input" => b.input = Some(s.raw_value()?),
            b"tool_use_id" => b.tool_use_id = Some(s.string()?),
            b"content" => b.content = Some(read_content(s)?),
            b"is_error" => b.is_error = Some(s.boolean()?),
            b"title" => b.title = Some(s.string()?),
            b"thinking" | b"signature" | b"data" | b"cache_control" => s.drop_value()?,
            _ => b.citations = Some(s.raw_value()?),
        }
        Ok(())
    })?;
    b.kind = kind.ok_or(Bail)?;
    Ok(b)
}

impl AnBlk<'_> {
    /// A text block's `citations` are not sent (they only echo earlier replies' sources).
    fn drop_citations(&self) {
        if let Some(raw) = self.citations {
            DROPPED_AT.with_borrow_mut(|d| d.push(raw.as_ptr() as usize));
        }
    }
}

/// Whether only keys in `allowed` (besides `type`) are present.
fn only(b: &AnBlk<'_>, allowed: u32) -> R<()> {
    if b.present & !(allowed | 1) != 0 {
        return Err(Bail);
    }
    Ok(())
}

/// A user message's blocks: tool results become tool messages, written first; the rest is one
/// user message of parts after them.
/// A message's block array (the scanner is at its `[`), written as OpenAI messages.
fn an_blocks(role: &[u8], s: &mut Scan<'_>, out: &mut Vec<u8>, fo: &mut bool, scratch: &mut Scratch) -> R<()> {
    match role {
        b"user" => an_user_blocks(s, out, fo, scratch),
        b"assistant" => {
            sep(out, fo);
            an_assistant_blocks(s, out, scratch)
        }
        // A mid-conversation system turn stays where it stands (OpenAI takes system anywhere).
        b"system" => {
            let msg = an_system(s)?.ok_or(Bail)?;
            sep(out, fo);
            out.extend_from_slice(&msg);
            Ok(())
        }
        _ => Err(Bail),
    }
}

fn an_user_blocks(s: &mut Scan<'_>, out: &mut Vec<u8>, fo: &mut bool, scratch: &mut Scratch) -> R<()> {
    // Parts go straight into `out`, inside a user message opened here; tool messages (usually
    // small, where parts can be megabytes of base64) are gathered aside and put before it.
    let tools = &mut scratch.tools;
    tools.clear();
    sep(out, fo);
    let open_at = out.len();
    out.extend_from_slice(b"{\"role\":\"user\",\"content\":[");
    s.arr()?;
    let (mut f, mut fp, mut ft) = (true, true, true);
    let mut tool_messages = 0;
    while s.item(&mut f)? {
        let b = an_block(s)?;
        match b.kind {
            b"text" => {
                only(&b, B_TEXT | B_CACHE_CONTROL | B_CITATIONS)?;
                b.drop_citations();
                sep(out, &mut fp);
                out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                put_str(out, b.text.ok_or(Bail)?);
                out.push(b'}');
            }
            b"image" => {
                only(&b, B_SOURCE | B_CACHE_CONTROL)?;
                sep(out, &mut fp);
                out.extend_from_slice(b"{\"type\":\"image_url\",\"image_url\":{\"url\":");
                an_image_url(b.source.ok_or(Bail)?, out)?;
                out.extend_from_slice(b"}}");
            }
            b"document" => {
                // Citations turned on and `context` have no OpenAI counterpart: typed path.
                only(&b, B_SOURCE | B_CACHE_CONTROL | B_TITLE | B_CITATIONS)?;
                if b.citations.is_some_and(citations_enabled) {
                    return Err(Bail);
                }
                let source = b.source.ok_or(Bail)?;
                sep(out, &mut fp);
                match source.kind {
                    b"base64" if source.url.is_none() => {
                        if !source.media.ok_or(Bail)?.plain()?.eq_ignore_ascii_case(b"application/pdf") {
                            return Err(Bail);
                        }
                        out.extend_from_slice(b"{\"type\":\"file\",\"file\":{\"filename\":");
                        match b.title {
                            Some(t) => put_str(out, t),
                            None => out.extend_from_slice(b"\"document.pdf\""),
                        }
                        out.extend_from_slice(b",\"file_data\":\"data:application/pdf;base64,");
                        out.extend_from_slice(source.data.ok_or(Bail)?.raw);
                        out.extend_from_slice(b"\"}}");
                    }
                    b"text" if source.url.is_none() => {
                        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
                        put_str(out, source.data.ok_or(Bail)?);
                        out.push(b'}');
                    }
                    _ => return Err(Bail),
                }
            }
            b"tool_result" => {
                only(&b, B_TOOL_USE_ID | B_CONTENT | B_IS_ERROR | B_CACHE_CONTROL)?;
                sep(tools, &mut ft);
                tools.extend_from_slice(b"{\"role\":\"tool\",\"tool_call_id\":");
                put_str(tools, b.tool_use_id.ok_or(Bail)?);
                tools.extend_from_slice(b",\"content\":\"");
                if b.is_error == Some(true) {
                    tools.extend_from_slice(b"Error: ");
                }
                match b.content {
                    None => {}
                    Some(Content::Text(t)) => tools.extend_from_slice(t.raw),
                    Some(Content::Parts(inner)) => {
                        let mut is = Scan::new(inner);
                        is.arr()?;
                        let mut fi = true;
                        let mut n = 0;
                        while is.item(&mut fi)? {
                            if n > 0 {
                                tools.extend_from_slice(b"\\n\\n");
                            }
                            tools.extend_from_slice(an_text_block(&mut is)?.raw);
                            n += 1;
                        }
                    }
                }
                tools.extend_from_slice(b"\"}");
                tool_messages += 1;
            }
            _ => return Err(Bail),
        }
    }
    if tool_messages == 0 {
        out.extend_from_slice(b"]}");
    } else if fp {
        // Only tool results: no user message.
        out.truncate(open_at);
        out.extend_from_slice(tools);
    } else {
        out.extend_from_slice(b"]}");
        tools.push(b',');
        out.splice(open_at..open_at, tools.iter().copied());
    }
    Ok(())
}

/// Whether a document's `citations` value may turn citations on: an `enabled` key (or an escaped
/// key, which could spell it) whose value is not `false`. Being wrong towards `true` only sends
/// the request to the typed path.
fn citations_enabled(raw: &[u8]) -> bool {
    let mut s = Scan::new(raw);
    if s.obj().is_err() {
        return false;
    }
    let mut f = true;
    loop {
        match s.any_key(&mut f) {
            Ok(Some(key)) if key.escaped || key.raw == b"enabled" => {
                if s.lit(b"false").is_err() {
                    return true;
                }
            }
            Ok(Some(_)) => {
                if s.skip(0).is_err() {
                    return true;
                }
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// An image or document `source`.
struct Source<'a> {
    kind: &'a [u8],
    media: Option<Str<'a>>,
    data: Option<Str<'a>>,
    url: Option<Str<'a>>,
}

fn an_source<'a>(s: &mut Scan<'a>) -> R<Source<'a>> {
    let (mut kind, mut media, mut data, mut url) = (None, None, None, None);
    let keys = |key: &[u8]| {
        Some(match key {
            b"type" => 0,
            b"media_type" => 1,
            b"data" => 2,
            b"url" => 3,
            _ => return None,
        })
    };
    fields(s, keys, |key, s| {
        let v = s.string()?;
        match key {
            b"type" => kind = Some(v.plain()?),
            b"media_type" => media = Some(v),
            b"data" => data = Some(v),
            _ => url = Some(v),
        }
        Ok(())
    })?;
    Ok(Source { kind: kind.ok_or(Bail)?, media, data, url })
}

/// An image `source` as an OpenAI image URL string (a data URL for base64).
fn an_image_url(source: Source<'_>, out: &mut Vec<u8>) -> R<()> {
    let Source { kind, media, data, url } = source;
    match kind {
        b"base64" if url.is_none() => {
            out.extend_from_slice(b"\"data:");
            out.extend_from_slice(media.ok_or(Bail)?.raw);
            out.extend_from_slice(b";base64,");
            out.extend_from_slice(data.ok_or(Bail)?.raw);
            out.push(b'"');
        }
        b"url" if media.is_none() && data.is_none() => put_str(out, url.ok_or(Bail)?),
        _ => return Err(Bail),
    }
    Ok(())
}

/// An assistant message's blocks: texts joined, tool uses as tool calls, thinking dropped.
fn an_assistant_blocks(s: &mut Scan<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> R<()> {
    let (texts, calls) = (&mut scratch.texts, &mut scratch.calls);
    texts.clear();
    calls.clear();
    s.arr()?;
    let (mut f, mut fc) = (true, true);
    let mut n_texts = 0;
    while s.item(&mut f)? {
        let b = an_block(s)?;
        match b.kind {
            b"text" => {
                only(&b, B_TEXT | B_CACHE_CONTROL | B_CITATIONS)?;
                b.drop_citations();
                texts.extend_from_slice(b.text.ok_or(Bail)?.raw);
                n_texts += 1;
            }
            b"tool_use" => {
                only(&b, B_ID | B_NAME | B_INPUT | B_CACHE_CONTROL)?;
                sep(calls, &mut fc);
                calls.extend_from_slice(b"{\"id\":");
                put_str(calls, b.id.ok_or(Bail)?);
                calls.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                put_str(calls, b.name.ok_or(Bail)?);
                calls.extend_from_slice(b",\"arguments\":");
                put_json_as_string(calls, b.input.ok_or(Bail)?);
                calls.extend_from_slice(b"}}");
            }
            b"thinking" => only(&b, B_THINKING | B_SIGNATURE | B_CACHE_CONTROL)?,
            b"redacted_thinking" => only(&b, B_DATA | B_CACHE_CONTROL)?,
            _ => return Err(Bail),
        }
    }
    out.extend_from_slice(b"{\"role\":\"assistant\",\"content\":");
    if n_texts == 0 && !fc {
        out.extend_from_slice(b"null");
    } else {
        out.push(b'"');
        out.extend_from_slice(texts);
        out.push(b'"');
    }
    if !fc {
        out.extend_from_slice(b",\"tool_calls\":[");
        out.extend_from_slice(calls);
        out.push(b']');
    }
    out.push(b'}');
    Ok(())
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
        ];
        for case in cases {
            let serde_ok = serde_json::from_str::<String>(case).is_ok();
            assert_eq!(scan_string(case).is_some(), serde_ok, "{case}");
        }
        // Invalid UTF-8 inside a string, after an ASCII run longer than one word.
        let mut bytes = b"\"0123456789abcdef".to_vec();
        bytes.extend_from_slice(&[0xC3, 0x28, b'"']);
        assert!(Scan::new(&bytes).string().is_err());
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
