//! Token usage read from upstream responses: JSON bodies and SSE streams of both dialects.
//!
//! `Usage` is kept in one convention whatever the dialect: `input` excludes cached tokens (as in
//! Anthropic's `input_tokens`); OpenAI's `prompt_tokens` includes them, so it is split into
//! `input = prompt_tokens - cached_tokens` and `cache_read = cached_tokens`. Each token class is
//! then priced once at its own price (`cost`).
//!
//! `StreamMeter` follows a same-dialect SSE stream as it passes (a translated stream's usage comes
//! from its translator, `dialect::stream`, which reads it anyway), through `dialect::sse`'s
//! decoder, so it is split-safe (an event may arrive in any number of pieces). It parses only the
//! events that can carry usage or end the stream. In `strip_injected_usage` mode (an OpenAI stream
//! for which the gateway itself asked for usage) it also removes what the caller did not ask for:
//! the usage-only chunk and the `"usage":null` member OpenAI then adds to every chunk. Pure: no
//! IO, no metrics.
//! Imports: `error`, `peek` (structural scans), `dialect::sse` (the decoder), `dialect::stream`
//! (the OpenAI error event that ends a stream). Not `metrics`, `proxy` or `plan`.

use serde::{Deserialize, Serialize};

use crate::error::Dialect;

/// Tokens of one request, by price class.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens not read from or written to a prompt cache.
    pub input: u64,
    /// Output tokens (reasoning included).
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write: u64,
}

/// OpenAI's usage object, as every reader of it takes it (the meters and both translators):
/// declared once, lenient (any member may be missing or `null`).
#[derive(Deserialize, Default, Debug)]
pub(crate) struct OpenAiUsage {
    #[serde(default)]
    pub(crate) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) completion_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) prompt_tokens_details: Option<OpenAiPromptDetails>,
}

#[derive(Deserialize, Default, Debug)]
pub(crate) struct OpenAiPromptDetails {
    #[serde(default)]
    pub(crate) cached_tokens: Option<u64>,
}

impl OpenAiUsage {
    /// In `Usage`'s convention.
    pub(crate) fn to_usage(&self) -> Usage {
        let cached = self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens);
        Usage::from_openai(self.prompt_tokens, self.completion_tokens, cached)
    }
}

/// Anthropic's usage object (any field may be missing from a `message_delta`): declared once.
#[derive(Deserialize, Default, Debug)]
pub(crate) struct AnthropicUsage {
    #[serde(default)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub(crate) cache_creation_input_tokens: Option<u64>,
}

/// A usage member's raw value as a count: `Some(None)` for `null` (serde reads it as absent),
/// `Some(Some(n))` for a JSON integer that fits u64, `None` for anything else (then serde decides,
/// so both readers refuse the same malformed values).
fn json_count(value: &[u8]) -> Option<Option<u64>> {
    if value == b"null" {
        return Some(None);
    }
    if value.is_empty() || value.len() > 1 && value[0] == b'0' {
        return None;
    }
    let mut n: u64 = 0;
    for &c in value {
        if !c.is_ascii_digit() {
            return None;
        }
        // Past u64: not a count serde would take either.
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(Some(n))
}

impl AnthropicUsage {
    /// In `Usage`'s convention (Anthropic's own: `input_tokens` already excludes the cache).
    pub(crate) fn to_usage(&self) -> Usage {
        let mut u = Usage::default();
        u.merge_anthropic(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        );
        u
    }
}

impl Usage {
    /// OpenAI's counts in this convention: `prompt_tokens` includes the cached tokens, `input`
    /// does not. The one place that rule is written.
    pub(crate) fn from_openai(prompt: Option<u64>, completion: Option<u64>, cached: Option<u64>) -> Usage {
        let cached = cached.unwrap_or(0);
        Usage {
            input: prompt.unwrap_or(0).saturating_sub(cached),
            output: completion.unwrap_or(0),
            cache_read: cached,
            cache_write: 0,
        }
    }

    /// OpenAI reports usage once, whole: it replaces what was read before (`cache_write`, which
    /// OpenAI has no count of, is left alone).
    fn set_openai(&mut self, u: Usage) {
        (self.input, self.output, self.cache_read) = (u.input, u.output, u.cache_read);
    }

    /// OpenAI's usage object: read in one structural pass when its counts are plain integers,
    /// strictly (serde) otherwise.
    fn apply_openai(&mut self, raw_usage: &str) -> bool {
        if let Some(u) = whole_value(raw_usage.as_bytes(), read_openai) {
            self.set_openai(u);
            return true;
        }
        let Ok(u) = sonic_rs::from_str::<OpenAiUsage>(raw_usage) else {
            return false;
        };
        self.set_openai(u.to_usage());
        true
    }

    /// Anthropic reports usage in pieces (`message_start`, then cumulative `message_delta`):
    /// a field that is present replaces the earlier value.
    fn apply_anthropic(&mut self, raw_usage: &str) -> bool {
        if let Some([input, output, cache_read, cache_write]) = whole_value(raw_usage.as_bytes(), read_anthropic) {
            self.merge_anthropic(input, output, cache_read, cache_write);
            return true;
        }
        let Ok(u) = sonic_rs::from_str::<AnthropicUsage>(raw_usage) else {
            return false;
        };
        self.merge_anthropic(u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens);
        true
    }

    /// Merges one Anthropic usage report (`message_start` or a cumulative `message_delta`):
    /// each field present replaces the earlier value.
    pub fn merge_anthropic(
        &mut self,
        input: Option<u64>,
        output: Option<u64>,
        cache_read: Option<u64>,
        cache_write: Option<u64>,
    ) {
        for (slot, v) in [
            (&mut self.input, input),
            (&mut self.output, output),
            (&mut self.cache_read, cache_read),
            (&mut self.cache_write, cache_write),
        ] {
            if let Some(v) = v {
                *slot = v;
            }
        }
    }

    /// Total tokens.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_read + self.cache_write
    }
}

/// Usage of a complete (non-streaming) JSON response body, if it has any.
///
/// Both dialects put `usage` at the end of an answer, so it is looked for there first
/// (`peek::member_value_near_end`) and read in the same pass that crosses it (`read_counts`); the
/// members after it must then close the top-level object. A usage object the one pass cannot read
/// (a count that is not a plain integer, an escaped key), or a `usage` that is not top-level, goes
/// the general way: located by a structural scan (`peek::top_level_value`), then read strictly.
/// Neither walks `choices` / `content` (under callgrind that walk was about 9% of a whole
/// request's instructions).
pub fn from_json_body(dialect: Dialect, body: &[u8]) -> Option<Usage> {
    if let Some(u) = usage_at_end(dialect, body) {
        return Some(u);
    }
    let raw = crate::peek::top_level_value_near_end(body, b"usage")?;
    if raw.first() != Some(&b'{') {
        return None;
    }
    let raw = std::str::from_utf8(raw).ok()?;
    let mut u = Usage::default();
    let ok = match dialect {
        Dialect::OpenAi => u.apply_openai(raw),
        Dialect::Anthropic => u.apply_anthropic(raw),
    };
    ok.then_some(u)
}

/// The fast path of `from_json_body`: one pass over the last top-level `usage` object.
fn usage_at_end(dialect: Dialect, body: &[u8]) -> Option<Usage> {
    let start = crate::peek::member_value_near_end(body, b"usage")?;
    let (usage, end) = match dialect {
        Dialect::OpenAi => read_openai(body, start)?,
        Dialect::Anthropic => {
            let ([input, output, cache_read, cache_write], end) = read_anthropic(body, start)?;
            let mut u = Usage::default();
            u.merge_anthropic(input, output, cache_read, cache_write);
            (u, end)
        }
    };
    crate::peek::closes_top_level_object(body, end).then_some(usage)
}

/// OpenAI's usage object that opens at `b[i]`, in one pass (`read_counts`): its counts in
/// `Usage`'s convention, and the index after it.
fn read_openai(b: &[u8], i: usize) -> Option<(Usage, usize)> {
    let (mut top, mut cached) = ([None; 2], [None; 1]);
    let nested: Nested<'_> = (b"prompt_tokens_details", &[b"cached_tokens"], &mut cached);
    let end = read_counts(b, i, &[b"prompt_tokens", b"completion_tokens"], &mut top, Some(nested))?;
    Some((Usage::from_openai(top[0], top[1], cached[0]), end))
}

/// Anthropic's usage object that opens at `b[i]`, in one pass: the counts it has (a stream's
/// `message_delta` has only some), in `merge_anthropic`'s order, and the index after it.
fn read_anthropic(b: &[u8], i: usize) -> Option<([Option<u64>; 4], usize)> {
    let mut counts = [None; 4];
    let end = read_counts(b, i, &ANTHROPIC_COUNTS, &mut counts, None)?;
    Some((counts, end))
}

/// `read` over a raw usage value on its own (a stream event's `usage`): the value must be all of it.
fn whole_value<T>(raw: &[u8], read: impl Fn(&[u8], usize) -> Option<(T, usize)>) -> Option<T> {
    use crate::peek::skip_ws;
    let (value, end) = read(raw, skip_ws(raw, 0))?;
    (skip_ws(raw, end) == raw.len()).then_some(value)
}

/// Anthropic's counts, in `merge_anthropic`'s order.
const ANTHROPIC_COUNTS: [&[u8]; 4] =
    [b"input_tokens", b"output_tokens", b"cache_read_input_tokens", b"cache_creation_input_tokens"];

/// A member whose object holds counts too: its key, the counts wanted in it, where they go.
type Nested<'a> = (&'a [u8], &'a [&'a [u8]], &'a mut [Option<u64>]);

/// One pass over the object that opens at `b[i]`: each `wanted` member's count into `out` (at its
/// index; `null` is absent), and the same for the members of the `nested` object (which may be
/// `null`). Returns the index after the object. `None` when a wanted member is not a plain count,
/// a key is escaped or the object is malformed: the strict reader then decides, so this pass never
/// takes what serde would refuse. A repeated member: the last one counts.
fn read_counts(
    b: &[u8],
    mut i: usize,
    wanted: &[&[u8]],
    out: &mut [Option<u64>],
    mut nested: Option<Nested<'_>>,
) -> Option<usize> {
    use crate::peek::skip_ws;
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = crate::peek::string_end(b, i)?;
        let key = &b[i + 1..key_end - 1];
        if key.contains(&b'\\') {
            return None;
        }
        i = skip_ws(b, key_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        if let Some(k) = wanted.iter().position(|w| *w == key) {
            let len = b[i..].iter().position(|c| matches!(c, b',' | b'}') || c.is_ascii_whitespace())?;
            out[k] = json_count(&b[i..i + len])?;
            i += len;
        } else if let Some((_, inner, inner_out)) = nested.as_mut().filter(|n| n.0 == key) {
            i = match b.get(i) {
                Some(b'n') if b[i..].starts_with(b"null") => i + 4,
                _ => read_counts(b, i, inner, inner_out, None)?,
            };
        } else {
            i = crate::peek::end_of_value(b, i);
        }
        i = skip_ws(b, i);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some(i + 1),
            _ => return None,
        }
    }
}

use sonic_rs::JsonValueTrait;

use crate::dialect::sse::{Event, SseDecoder};
use crate::dialect::stream::{write_openai_error_event, OVERSIZED_MESSAGE};

/// Follows one same-dialect SSE response stream, through `SseDecoder` (the gateway's only SSE
/// parser): its usage, and how it ended. In strip mode (OpenAI, the gateway injected
/// `stream_options.include_usage` for a caller who did not ask for usage) it also writes the
/// stream the caller asked for: every event re-framed as `data:` lines, without the usage-only
/// chunk and without the `"usage":null` member, and comment lines (keep-alives) passed on as
/// they come. Other fields (`id:`, `retry:`) mean nothing to an OpenAI client and are left out.
#[derive(Debug)]
pub struct StreamMeter {
    decoder: SseDecoder,
    reading: StreamReading,
    strip_injected_usage: bool,
    /// Strip mode: an oversized event ended the stream; nothing more reaches the caller.
    stopped: bool,
}

/// What a stream told about its tokens: enough to bill it whether or not it reached its end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamTokens {
    /// The counts the upstream reported so far.
    pub reported: Usage,
    /// The upstream's final count arrived: OpenAI's usage chunk (its only report), or the usage
    /// of Anthropic's `message_delta` (its `message_start` reports the input only).
    pub complete: bool,
    /// Upstream events that carried generated content (text, reasoning, a refusal, tool-call
    /// arguments). Each holds at least one token.
    pub content_events: u64,
}

impl StreamTokens {
    /// The upstream produced content but its count is missing or cannot be right. Missing: the
    /// stream was cut (by the caller or the upstream), or the upstream does not report usage in
    /// streams. Not right: no input tokens (every request has some), or fewer output tokens than
    /// content events (an upstream that fills its usage with zeros, or leaves a count out).
    /// Billing it needs `estimate`.
    pub fn needs_estimate(&self) -> bool {
        self.content_events > 0 && (!self.complete || self.lacks_input() || self.reported.output < self.content_events)
    }

    /// No input class was reported (OpenAI reports nothing before its last chunk): `estimate`
    /// needs the input counted from the request.
    pub fn lacks_input(&self) -> bool {
        let r = self.reported;
        r.input + r.cache_read + r.cache_write == 0
    }

    /// What a stream that `needs_estimate` is billed, a lower bound of what the upstream produced:
    /// the counts it reported, with `input` (counted from the request by the caller, when
    /// `lacks_input`) as the input, and at least one output token per content event.
    pub fn estimate(&self, input: u64) -> Usage {
        let mut u = self.reported;
        if self.lacks_input() {
            u.input = input;
        }
        u.output = u.output.max(self.content_events);
        u
    }
}

/// What a stream told so far; filled event by event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamReading {
    dialect: Dialect,
    tokens: StreamTokens,
    saw_usage: bool,
    finished: bool,
}

impl StreamMeter {
    /// A meter for an upstream stream in `dialect`.
    pub fn new(dialect: Dialect, strip_injected_usage: bool) -> Self {
        StreamMeter {
            decoder: SseDecoder::new(),
            reading: StreamReading { dialect, tokens: StreamTokens::default(), saw_usage: false, finished: false },
            strip_injected_usage: strip_injected_usage && dialect == Dialect::OpenAi,
            stopped: false,
        }
    }

    /// Whether `feed` rewrites the stream (otherwise the chunk passes unchanged).
    pub fn rewrites(&self) -> bool {
        self.strip_injected_usage
    }

    /// Usage reported so far.
    pub fn usage(&self) -> Usage {
        self.reading.tokens.reported
    }

    /// What the stream told about its tokens so far.
    pub fn tokens(&self) -> StreamTokens {
        self.reading.tokens
    }

    /// The stream's dialect (a same-dialect stream: the caller's too).
    pub fn dialect(&self) -> Dialect {
        self.reading.dialect
    }

    /// Whether any usage was reported.
    pub fn saw_usage(&self) -> bool {
        self.reading.saw_usage
    }

    /// The stream ended properly (`[DONE]`, `message_stop`), with an upstream error event, or was
    /// ended by the gateway (`mark_finished`).
    pub fn finished(&self) -> bool {
        self.reading.finished
    }

    /// The gateway ended the stream itself (with its own error event).
    pub fn mark_finished(&mut self) {
        self.reading.finished = true;
    }

    /// Reads one chunk. In strip mode, appends what the caller should receive to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let reading = &mut self.reading;
        if !self.strip_injected_usage {
            self.decoder.feed(chunk, |e| reading.on_data(e.data));
            return;
        }
        if self.stopped {
            return;
        }
        // The closures both write to `out`, one at a time.
        let out = std::cell::RefCell::new(out);
        self.decoder.feed_with_comments(
            chunk,
            |e| {
                reading.on_data(e.data);
                write_stripped_event(&mut out.borrow_mut(), e);
            },
            |comment| {
                let mut out = out.borrow_mut();
                out.extend_from_slice(comment);
                out.push(b'\n');
            },
        );
        if self.decoder.overflowed() {
            // An event too large to hold cannot be rewritten: end the stream as the translators
            // do, with an error event, rather than hand the caller a stream with a hole in it.
            let reading = &mut self.reading;
            reading.finished = true;
            self.stopped = true;
            write_openai_error_event(&mut out.borrow_mut(), OVERSIZED_MESSAGE, "server_error", None);
        }
    }

    /// End of the upstream body: reads an event left without its blank line (strip mode: and
    /// writes it).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let reading = &mut self.reading;
        if !self.strip_injected_usage {
            self.decoder.finish(|e| reading.on_data(e.data));
        } else if !self.stopped {
            self.decoder.finish(|e| {
                reading.on_data(e.data);
                write_stripped_event(out, e);
            });
        }
    }
}

/// Strip mode: writes `event` for the caller, unless it is the usage chunk the gateway asked for.
fn write_stripped_event(out: &mut Vec<u8>, event: Event<'_>) {
    if is_usage_only_chunk(event.data) {
        return;
    }
    if let Some(name) = event.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name);
        out.push(b'\n');
    }
    // One `data:` line per line of the value (OpenAI's chunks are one line each).
    for line in event.data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        push_without_usage_null(out, line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

impl StreamReading {
    fn on_data(&mut self, data: &[u8]) {
        match self.dialect {
            Dialect::OpenAi => {
                if data == b"[DONE]" {
                    self.finished = true;
                    return;
                }
                if data.starts_with(b"{\"error\"")
                    || contains(data, b"\"error\":{") && sonic_rs::get(data, ["error"]).is_ok_and(|v| v.is_object())
                {
                    self.finished = true;
                    return;
                }
                if openai_chunk_has_content(data) {
                    self.tokens.content_events += 1;
                }
                // Every chunk of a stream with usage carries `"usage":null`; only the last one has
                // an object, so look before parsing.
                if contains(data, b"\"usage\":{") || contains(data, b"\"usage\": {") {
                    if let Ok(lv) = sonic_rs::get(data, ["usage"]) {
                        if lv.is_object() && self.tokens.reported.apply_openai(lv.as_raw_str()) {
                            self.saw_usage = true;
                            self.tokens.complete = true;
                        }
                    }
                }
            }
            Dialect::Anthropic => {
                let Ok(kind) = sonic_rs::get(data, ["type"]) else {
                    return;
                };
                match kind.as_str() {
                    Some("message_start") => {
                        if let Ok(lv) = sonic_rs::get(data, ["message", "usage"]) {
                            self.saw_usage |= self.tokens.reported.apply_anthropic(lv.as_raw_str());
                        }
                    }
                    Some("content_block_delta") => self.tokens.content_events += 1,
                    Some("message_delta") => {
                        if let Ok(lv) = sonic_rs::get(data, ["usage"]) {
                            let read = self.tokens.reported.apply_anthropic(lv.as_raw_str());
                            self.saw_usage |= read;
                            self.tokens.complete |= read;
                        }
                    }
                    // An upstream error event ends the stream as surely as `message_stop`.
                    Some("message_stop" | "error") => self.finished = true,
                    _ => {}
                }
            }
        }
    }
}

/// Whether an OpenAI chunk carries generated content: a non-empty `content`, `reasoning_content`,
/// `reasoning`, `refusal` or tool-call `arguments` string. A byte search, not a parse (this runs on
/// every chunk of every OpenAI stream): a member name with its quotes and colon cannot occur
/// unescaped inside a JSON string, so every match is a member.
pub fn openai_chunk_has_content(data: &[u8]) -> bool {
    use std::sync::LazyLock;
    static MEMBERS: LazyLock<[memchr::memmem::Finder<'static>; 5]> = LazyLock::new(|| {
        [&b"\"content\":"[..], b"\"arguments\":", b"\"reasoning_content\":", b"\"reasoning\":", b"\"refusal\":"]
            .map(memchr::memmem::Finder::new)
    });
    MEMBERS.iter().any(|member| {
        member.find_iter(data).any(|at| {
            let value = crate::peek::skip_ws(data, at + member.needle().len());
            data.get(value) == Some(&b'"') && data.get(value + 1).is_some_and(|&c| c != b'"')
        })
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// OpenAI's usage-only chunk: `"choices":[]` and a usage object.
fn is_usage_only_chunk(data: &[u8]) -> bool {
    if !contains(data, b"\"usage\":{") && !contains(data, b"\"usage\": {") {
        return false;
    }
    let empty_choices = sonic_rs::get(data, ["choices"]).is_ok_and(|v| v.as_raw_str() == "[]");
    empty_choices && sonic_rs::get(data, ["usage"]).is_ok_and(|v| v.is_object())
}

/// Appends `data` without the `,"usage":null` member OpenAI adds to every chunk once usage is
/// requested (wherever it stands: newer chunks put `obfuscation` after it). The byte sequence
/// cannot occur inside a JSON string, where quotes are escaped, so the first match is the member.
fn push_without_usage_null(out: &mut Vec<u8>, data: &[u8]) {
    const MEMBER: &[u8] = b",\"usage\":null";
    match memchr::memmem::find(data, MEMBER) {
        Some(at) if matches!(data.get(at + MEMBER.len()), Some(b',' | b'}')) => {
            out.extend_from_slice(&data[..at]);
            out.extend_from_slice(&data[at + MEMBER.len()..]);
        }
        _ => out.extend_from_slice(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI_STREAM_WITH_USAGE: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":21,\"completion_tokens\":7,\"total_tokens\":28,\"prompt_tokens_details\":{\"cached_tokens\":5}}}\n\n",
        "data: [DONE]\n\n",
    );

    const ANTHROPIC_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    /// Feeds `s` split at every position and in 1-byte pieces; all must agree.
    fn run_all_splits(dialect: Dialect, strip: bool, s: &str) -> (Usage, bool, Vec<u8>) {
        let whole = {
            let mut m = StreamMeter::new(dialect, strip);
            let mut out = Vec::new();
            m.feed(s.as_bytes(), &mut out);
            m.finish(&mut out);
            (m.usage(), m.finished(), out)
        };
        for cut in 0..s.len() {
            let mut m = StreamMeter::new(dialect, strip);
            let mut out = Vec::new();
            m.feed(&s.as_bytes()[..cut], &mut out);
            m.feed(&s.as_bytes()[cut..], &mut out);
            m.finish(&mut out);
            assert_eq!((m.usage(), m.finished(), &out), (whole.0, whole.1, &whole.2), "split at {cut}");
        }
        let mut m = StreamMeter::new(dialect, strip);
        let mut out = Vec::new();
        for b in s.as_bytes() {
            m.feed(std::slice::from_ref(b), &mut out);
        }
        m.finish(&mut out);
        assert_eq!((m.usage(), &out), (whole.0, &whole.2));
        whole
    }

    #[test]
    fn openai_stream_usage_splits_cached_tokens() {
        let (u, finished, out) = run_all_splits(Dialect::OpenAi, false, OPENAI_STREAM_WITH_USAGE);
        assert_eq!(u, Usage { input: 16, output: 7, cache_read: 5, cache_write: 0 });
        assert!(finished);
        assert!(out.is_empty(), "passthrough mode emits nothing itself");
    }

    #[test]
    fn strip_mode_gives_the_stream_the_caller_asked_for() {
        let (u, _, out) = run_all_splits(Dialect::OpenAi, true, OPENAI_STREAM_WITH_USAGE);
        assert_eq!(u.output, 7);
        let expected = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(String::from_utf8(out).expect("utf8"), expected);
    }

    #[test]
    fn strip_mode_removes_usage_null_before_later_members() {
        let s = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"say \\\",\\\"usage\\\":null\"},\"finish_reason\":null}],\"usage\":null,\"obfuscation\":\"x1\"}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1},\"obfuscation\":\"x2\"}\n\n",
            "data: [DONE]\n\n",
        );
        let (u, _, out) = run_all_splits(Dialect::OpenAi, true, s);
        assert_eq!(u.output, 1);
        let expected = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"say \\\",\\\"usage\\\":null\"},\"finish_reason\":null}],\"obfuscation\":\"x1\"}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(String::from_utf8(out).expect("utf8"), expected);
    }

    #[test]
    fn anthropic_stream_usage_across_events() {
        let (u, finished, _) = run_all_splits(Dialect::Anthropic, false, ANTHROPIC_STREAM);
        assert_eq!(u, Usage { input: 12, output: 9, cache_read: 4, cache_write: 3 });
        assert!(finished);
    }

    #[test]
    fn cut_stream_is_not_finished_but_keeps_partial_usage() {
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").expect("has delta")];
        let (u, finished, _) = run_all_splits(Dialect::Anthropic, false, cut);
        assert!(!finished);
        assert_eq!(u.input, 12);
        assert_eq!(u.output, 1);
    }

    #[test]
    fn a_stream_without_its_final_count_is_billed_a_lower_bound() {
        // OpenAI, cut before the usage chunk: the role chunk and the finish chunk carry no content.
        let role = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n";
        let cut = &OPENAI_STREAM_WITH_USAGE
            [..OPENAI_STREAM_WITH_USAGE.find("data: {\"id\":\"c\",\"choices\":[]").expect("usage")];
        let tool = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\": \"{\\\"a\"}}]}}]}\n\n";
        let (u, finished, _) = run_all_splits(Dialect::OpenAi, false, &format!("{role}{cut}{tool}"));
        assert_eq!((u, finished), (Usage::default(), false));
        let mut m = StreamMeter::new(Dialect::OpenAi, false);
        m.feed(format!("{role}{cut}{tool}").as_bytes(), &mut Vec::new());
        let t = m.tokens();
        assert_eq!((t.complete, t.content_events), (false, 2), "the text chunk and the tool arguments");
        assert!(t.needs_estimate() && t.lacks_input());
        assert_eq!(t.estimate(40), Usage { input: 40, output: 2, cache_read: 0, cache_write: 0 });
        // The whole stream has its count: no estimate.
        let mut m = StreamMeter::new(Dialect::OpenAi, false);
        m.feed(OPENAI_STREAM_WITH_USAGE.as_bytes(), &mut Vec::new());
        assert!(m.tokens().complete && !m.tokens().needs_estimate());
        // A final count that cannot be right (zeros; no output count after content) is estimated
        // too, keeping what it does say.
        for (usage, want) in [
            (r#"{"prompt_tokens":0,"completion_tokens":0}"#, Usage { input: 40, output: 2, ..Usage::default() }),
            (r#"{"prompt_tokens":50}"#, Usage { input: 50, output: 2, ..Usage::default() }),
            (r#"{"prompt_tokens":50,"completion_tokens":1}"#, Usage { input: 50, output: 2, ..Usage::default() }),
        ] {
            let last = format!("data: {{\"id\":\"c\",\"choices\":[],\"usage\":{usage}}}\n\ndata: [DONE]\n\n");
            let mut m = StreamMeter::new(Dialect::OpenAi, false);
            m.feed(format!("{role}{cut}{tool}{last}").as_bytes(), &mut Vec::new());
            let t = m.tokens();
            assert!(t.complete && t.needs_estimate(), "{usage}: {t:?}");
            assert_eq!(t.estimate(40), want, "{usage}");
        }

        // Anthropic, cut after two deltas: the input it reported stands, the output is at least
        // one token per delta.
        let delta = ANTHROPIC_STREAM.lines().skip(3).take(3).collect::<Vec<_>>().join("\n") + "\n";
        let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").expect("has delta")];
        let mut m = StreamMeter::new(Dialect::Anthropic, false);
        m.feed(format!("{cut}{delta}").as_bytes(), &mut Vec::new());
        let t = m.tokens();
        assert_eq!((t.complete, t.content_events, t.lacks_input()), (false, 2, false), "{t:?}");
        assert_eq!(t.estimate(999), Usage { input: 12, output: 2, cache_read: 4, cache_write: 3 });
    }

    #[test]
    fn openai_content_is_found_by_member_not_by_text() {
        for (chunk, has) in [
            (r#"{"choices":[{"delta":{"content":"Hi"}}]}"#, true),
            (r#"{"choices":[{"delta":{"content": "Hi"}}]}"#, true),
            (r#"{"choices":[{"delta":{"reasoning_content":"so"}}]}"#, true),
            (r#"{"choices":[{"delta":{"reasoning":"so"}}]}"#, true),
            (r#"{"choices":[{"delta":{"refusal":"no"}}]}"#, true),
            (r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#, false),
            (r#"{"choices":[{"delta":{"content":null}}]}"#, false),
            (r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#, false),
            (
                r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":""}}]}}]}"#,
                false,
            ),
            (r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#, false),
            // A member name inside a string is escaped, so it is not a member.
            (r#"{"choices":[{"delta":{"role":"x \"content\":\"y"}}]}"#, false),
        ] {
            assert_eq!(openai_chunk_has_content(chunk.as_bytes()), has, "{chunk}");
        }
    }

    #[test]
    fn upstream_error_event_ends_the_stream() {
        let s = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let (_, finished, _) = run_all_splits(Dialect::Anthropic, false, s);
        assert!(finished);
    }

    #[test]
    fn json_bodies() {
        let o = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":40}}}"#;
        assert_eq!(
            from_json_body(Dialect::OpenAi, o),
            Some(Usage { input: 60, output: 3, cache_read: 40, cache_write: 0 })
        );
        let a = br#"{"content":[],"usage":{"input_tokens":5,"output_tokens":6,"cache_read_input_tokens":7,"cache_creation_input_tokens":8}}"#;
        assert_eq!(
            from_json_body(Dialect::Anthropic, a),
            Some(Usage { input: 5, output: 6, cache_read: 7, cache_write: 8 })
        );
        assert_eq!(from_json_body(Dialect::OpenAi, b"{\"error\":{}}"), None);
        assert_eq!(from_json_body(Dialect::OpenAi, b"garbage"), None);
    }

    #[test]
    fn an_event_past_the_cap_is_skipped_by_the_meter_and_ends_a_stripped_stream() {
        let first = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}],\"usage\":null}\n\n";
        let mut giant = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"".to_vec();
        giant.resize(giant.len() + crate::dialect::sse::MAX_EVENT_BYTES + (1 << 20), b'x');
        giant.extend_from_slice(b"\"},\"finish_reason\":null}],\"usage\":null}\n\n");
        for strip in [false, true] {
            let mut m = StreamMeter::new(Dialect::OpenAi, strip);
            let mut out = Vec::new();
            let pieces = [first.as_bytes()].into_iter().chain(giant.chunks(1 << 20));
            for piece in pieces.chain([OPENAI_STREAM_WITH_USAGE.as_bytes()]) {
                m.feed(piece, &mut out);
            }
            m.finish(&mut out);
            let text = String::from_utf8_lossy(&out);
            if strip {
                // What came before reaches the caller, then an error event, then nothing.
                let want_start = first.replace(",\"usage\":null", "");
                assert!(text.starts_with(&want_start), "{}", &text[..200.min(text.len())]);
                let rest = &text[want_start.len()..];
                assert!(rest.starts_with("data: {\"error\":") && rest.contains(OVERSIZED_MESSAGE), "{rest}");
                assert!(rest.ends_with("}}\n\n") && rest.matches("data:").count() == 1, "{rest}");
                assert!(m.finished() && !m.saw_usage(), "the stream ended at the error");
            } else {
                // Metering skips the giant event and reads the rest of the stream.
                assert!(out.is_empty());
                assert!(m.saw_usage() && m.finished(), "the stream after the giant event is still metered");
                assert_eq!(m.usage(), Usage { input: 16, output: 7, cache_read: 5, cache_write: 0 });
            }
        }
    }

    #[test]
    fn strip_mode_keeps_keepalive_comments_and_event_names() {
        let s = concat!(
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\r\n\r\n",
            "event: note\ndata:{\"x\":1}\nid: 4\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n",
        );
        let (u, finished, out) = run_all_splits(Dialect::OpenAi, true, s);
        assert_eq!((u.output, finished), (1, true));
        let expected = concat!(
            ": OPENROUTER PROCESSING\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
            "event: note\ndata: {\"x\":1}\n\n",
            "data: [DONE]\n\n",
        );
        assert_eq!(String::from_utf8(out).expect("utf8"), expected);
    }

    #[test]
    fn the_one_pass_reader_at_the_end_agrees_with_the_general_path() {
        // Each body: the one pass (`usage_at_end`) either declines or gives exactly what locating
        // `usage` and reading it strictly gives; and the bodies it should read, it reads.
        let openai = [
            (
                true,
                r#"{"id":"c","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":7,"total_tokens":28,"prompt_tokens_details":{"cached_tokens":5,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}},"system_fingerprint":"fp"}"#,
            ),
            (
                true,
                r#"{ "usage" : { "prompt_tokens" : 7 , "completion_tokens" : null , "prompt_tokens_details" : null } } "#,
            ),
            (true, r#"{"usage":{}}"#),
            (true, r#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":1},"prompt_tokens":9}}"#),
            (false, r#"{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#),
            (false, r#"{"usage":{"prompt_tokens":-1}}"#),
            (true, r#"{"usage":{"prompt_tokens":18446744073709551615}}"#),
            (false, r#"{"usage":{"prompt_tokens":18446744073709551616}}"#),
            (false, r#"{"usage":{"prompt_\u0074okens":4}}"#),
            (false, r#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":"2"}}}"#),
            (false, r#"{"usage":{"prompt_tokens":3,"prompt_tokens_details":[1]}}"#),
            // Not top-level, or not closed: the general path decides.
            (false, r#"{"a":{"usage":{"prompt_tokens":9}}}"#),
            (false, r#"{"usage":{"prompt_tokens":2},"a":{"usage":{"prompt_tokens":9}}}"#),
            (false, r#"{"usage":{"prompt_tokens":2}"#),
            (false, r#"{"usage":{"prompt_tokens":2,}}"#),
        ];
        let anthropic = [
            (
                true,
                r#"{"id":"m","content":[],"usage":{"input_tokens":12,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"output_tokens":9,"cache_creation":{"ephemeral_5m_input_tokens":3},"service_tier":"standard"}}"#,
            ),
            (true, r#"{"usage":{"output_tokens":9}}"#),
            (false, r#"{"usage":{"input_tokens":2.0}}"#),
            (false, r#"{"usage":{"input_tokens":01}}"#),
        ];
        for (dialect, cases) in [(Dialect::OpenAi, &openai[..]), (Dialect::Anthropic, &anthropic[..])] {
            for (read_in_one_pass, body) in cases {
                let fast = usage_at_end(dialect, body.as_bytes());
                assert_eq!(fast.is_some(), *read_in_one_pass, "{body}");
                let general = crate::peek::top_level_value_near_end(body.as_bytes(), b"usage").and_then(|raw| {
                    let mut u = Usage::default();
                    let raw = std::str::from_utf8(raw).ok()?;
                    let ok = match dialect {
                        Dialect::OpenAi => u.apply_openai(raw),
                        Dialect::Anthropic => u.apply_anthropic(raw),
                    };
                    (ok && raw.starts_with('{')).then_some(u)
                });
                if let Some(fast) = fast {
                    assert_eq!(Some(fast), general, "{body}");
                }
                assert_eq!(from_json_body(dialect, body.as_bytes()), general, "{body}");
            }
        }
    }

    #[test]
    fn the_structural_usage_reader_agrees_with_serde() {
        let openai = [
            r#"{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":3}}"#,
            r#"{ "prompt_tokens" : 7 , "completion_tokens" : null }"#,
            r#"{"prompt_tokens":7,"prompt_tokens_details":null}"#,
            r#"{"prompt_tokens":1.5,"completion_tokens":2}"#,
            r#"{"prompt_tokens":-1}"#,
            r#"{"prompt_tokens":007}"#,
            r#"{"prompt_tokens":+7}"#,
            r#"{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":"2"}}"#,
        ];
        for raw in openai {
            let fast = whole_value(raw.as_bytes(), read_openai);
            let fast_ok = fast.is_some();
            let fast = fast.unwrap_or_default();
            let mut slow = Usage::default();
            let slow_ok = sonic_rs::from_str::<OpenAiUsage>(raw).is_ok() && {
                let u: OpenAiUsage = sonic_rs::from_str(raw).expect("checked");
                let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
                slow.input = u.prompt_tokens.unwrap_or(0).saturating_sub(cached);
                slow.cache_read = cached;
                slow.output = u.completion_tokens.unwrap_or(0);
                true
            };
            if fast_ok {
                assert!(slow_ok, "fast took what serde refuses: {raw}");
                assert_eq!(fast, slow, "{raw}");
            }
            let mut public = Usage::default();
            assert_eq!(public.apply_openai(raw), slow_ok, "{raw}");
            if slow_ok {
                assert_eq!(public, slow, "{raw}");
            }
        }
        let anthropic = [
            r#"{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"output_tokens":7,"service_tier":"standard"}"#,
            r#"{"output_tokens":9}"#,
            r#"{"input_tokens":null,"output_tokens":2}"#,
            r#"{"input_tokens":2.0}"#,
            r#"{"input_tokens":01}"#,
        ];
        for raw in anthropic {
            let mut public = Usage { input: 100, ..Usage::default() };
            let ok = public.apply_anthropic(raw);
            let mut slow = Usage { input: 100, ..Usage::default() };
            let slow_ok = match sonic_rs::from_str::<AnthropicUsage>(raw) {
                Ok(u) => {
                    slow.merge_anthropic(
                        u.input_tokens,
                        u.output_tokens,
                        u.cache_read_input_tokens,
                        u.cache_creation_input_tokens,
                    );
                    true
                }
                Err(_) => false,
            };
            assert_eq!((ok, public), (slow_ok, slow), "{raw}");
        }
    }
}
