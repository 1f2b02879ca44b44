//! Incremental translation of SSE response streams between the two dialects.
//!
//! `AnthropicToOpenAi` turns Anthropic message events into OpenAI `chat.completion.chunk`s;
//! `OpenAiToAnthropic` does the reverse. Both are pure state machines fed with upstream bytes as
//! they arrive (`SseDecoder` makes them split-safe: the output is the same byte for byte however
//! the input is cut) and closed with `finish` when the upstream body ends. They never panic, never
//! fabricate a successful end for a stream that did not finish (the caller gets its dialect's
//! error event instead), and emit compact JSON with the providers' field order.
//!
//! Anthropic → OpenAI is a one-to-one event mapping. OpenAI → Anthropic has to reorder: Anthropic
//! content blocks may not overlap, while OpenAI may interleave parallel tool calls by `index`.
//! The first tool call streams live (its block stays open while its fragments arrive). When a
//! fragment of another call comes, the live call is closed if its arguments are already a
//! complete JSON object (nothing valid can follow one), and the next call goes live in turn: so
//! OpenAI's usual one-after-another parallel calls all stream live. A call that interleaves with
//! a live one that is not complete yet is buffered whole and emitted as one block (start, one
//! `input_json_delta`, stop) when the stream finishes, and so is text or reasoning that arrives
//! after a tool block opened. OpenAI sends usage after the `finish_reason` chunk, so
//! `message_delta` waits for the usage chunk (or `[DONE]`, or the end of the body).
//! Imports: `error`, `usage`, `sse`, the wire types (`openai`, `anthropic`). Not `proxy`, `plan`,
//! `metrics` or Pingora.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sse::{Event, SseDecoder};
use super::{anthropic, openai, LStr};
use super::{
    anthropic_usage_json, finish_reason_for, openai_usage_json, stop_reason_for, AnthropicUsageOut, OpenAiUsageOut,
};
use crate::error::{AnthropicError, AnthropicErrorInner, OpenAiError, OpenAiErrorInner};
use crate::usage::{AnthropicUsage, StreamTokens, Usage};

/// The message of the error event sent when the upstream body ends before the stream finished.
pub const CUT_MESSAGE: &str = "The upstream stream ended before it was complete.";

/// Error message when one upstream event exceeds [`super::sse::MAX_EVENT_BYTES`].
pub const OVERSIZED_MESSAGE: &str = "An upstream stream event exceeded 16 MiB; the stream was stopped.";
/// The message of the error event sent when an upstream event cannot be read.
pub const UNREADABLE_MESSAGE: &str = "The upstream sent a stream event that could not be read.";

/// An incremental stream translator (one per response).
pub trait StreamTranslator: Send {
    /// Translates one upstream chunk; appends caller-dialect SSE bytes to `out` (possibly nothing).
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>);
    /// The upstream body ended: append whatever closes the stream (or the error event if the upstream never finished).
    fn finish(&mut self, out: &mut Vec<u8>);
    /// The upstream's token counts so far, in `Usage`'s convention, and what billing a cut stream
    /// needs (the translator reads them anyway, so a translated stream is parsed once, not
    /// metered twice).
    fn tokens(&self) -> StreamTokens;
    /// The caller's stream is closed (its end or its error event went out): nothing more may be
    /// written to it.
    fn done(&self) -> bool;
}

impl std::fmt::Debug for dyn StreamTranslator + Sync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTranslator").field("tokens", &self.tokens()).field("done", &self.done()).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Just the `type` of an event (to tell an unknown event from a malformed known one).
#[derive(Deserialize)]
struct TypeOnly<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: LStr<'a>,
}

/// Appends `v` as compact JSON (our own types always serialize; on the impossible failure the
/// partial bytes are removed and `null` stands in, keeping the frame well-formed).
fn write_json<T: Serialize>(out: &mut Vec<u8>, v: &T) {
    let mark = out.len();
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.truncate(mark);
        out.extend_from_slice(b"null");
    }
}

fn is_blank(data: &[u8]) -> bool {
    data.iter().all(u8::is_ascii_whitespace)
}

// ---------------------------------------------------------------------------------------------
// Anthropic upstream → OpenAI caller

#[derive(Deserialize)]
struct AnEvent<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: LStr<'a>,
    #[serde(default, borrow)]
    message: Option<anthropic::Message<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    content_block: Option<anthropic::Block<'a>>,
    #[serde(default, borrow)]
    delta: Option<AnDelta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct AnDelta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: LStr<'a>,
    #[serde(default, borrow)]
    text: LStr<'a>,
    #[serde(default, borrow)]
    partial_json: LStr<'a>,
    #[serde(default, borrow)]
    thinking: LStr<'a>,
    #[serde(default, borrow)]
    stop_reason: LStr<'a>,
}

#[derive(Serialize)]
struct OaChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OaChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OpenAiUsageOut>,
}

#[derive(Serialize)]
struct OaChoice<'a> {
    index: u32,
    delta: OaDelta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct OaDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OaToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct OaToolCall<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OaFunction<'a>,
}

#[derive(Serialize)]
struct OaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// Anthropic events in, OpenAI `chat.completion.chunk`s out.
#[derive(Debug)]
pub struct AnthropicToOpenAi {
    decoder: SseDecoder,
    st: AnState,
}

#[derive(Debug)]
struct AnState {
    model: String,
    include_usage: bool,
    created: u64,
    /// Message id from `message_start` (the chunks' `id`).
    id: String,
    /// The role chunk went out.
    started: bool,
    /// The chunk with `finish_reason` went out.
    finish_sent: bool,
    /// `[DONE]` or an error went out: nothing more is emitted.
    done: bool,
    /// Token counts so far (the upstream's, merged as they arrive).
    usage: Usage,
    /// `message_delta` brought the final counts.
    usage_complete: bool,
    /// Upstream events that carried content (`StreamTokens::content_events`).
    content_events: u64,
    /// The `tool_use` blocks, in order (their position is the OpenAI tool call index).
    tools: Vec<ToolBlock>,
}

impl AnthropicToOpenAi {
    /// A translator for one response; `created` is the chunks' timestamp (seconds).
    pub fn new(caller_model: &str, include_usage: bool, created: u64) -> Self {
        AnthropicToOpenAi {
            decoder: SseDecoder::new(),
            st: AnState {
                model: caller_model.to_owned(),
                include_usage,
                created,
                id: String::new(),
                started: false,
                finish_sent: false,
                done: false,
                usage: Usage::default(),
                usage_complete: false,
                content_events: 0,
                tools: Vec::new(),
            },
        }
    }
}

/// One direction's state machine, driven by `drive_feed` / `drive_finish`.
trait EventMachine {
    /// Nothing more may be emitted (`[DONE]`, `message_stop` or an error went out).
    fn done(&self) -> bool;
    /// One decoded upstream event.
    fn on_event(&mut self, ev: Event<'_>, out: &mut Vec<u8>);
    /// The upstream body ended (after the last event was handled).
    fn end(&mut self, out: &mut Vec<u8>);
    /// The stream cannot go on (`message`): ends it with the caller dialect's error event.
    fn abort(&mut self, out: &mut Vec<u8>, message: &str);
}

fn drive_feed<M: EventMachine>(decoder: &mut SseDecoder, st: &mut M, chunk: &[u8], out: &mut Vec<u8>) {
    if !st.done() {
        decoder.feed(chunk, |ev| st.on_event(ev, out));
        if decoder.overflowed() && !st.done() {
            st.abort(out, OVERSIZED_MESSAGE);
        }
    }
}

fn drive_finish<M: EventMachine>(decoder: &mut SseDecoder, st: &mut M, out: &mut Vec<u8>) {
    if !st.done() {
        decoder.finish(|ev| st.on_event(ev, out));
        st.end(out);
    }
}

impl StreamTranslator for AnthropicToOpenAi {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        drive_feed(&mut self.decoder, &mut self.st, chunk, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        drive_finish(&mut self.decoder, &mut self.st, out);
    }

    fn tokens(&self) -> StreamTokens {
        StreamTokens {
            reported: self.st.usage,
            complete: self.st.usage_complete,
            content_events: self.st.content_events,
        }
    }

    fn done(&self) -> bool {
        self.st.done
    }
}

impl EventMachine for AnState {
    fn done(&self) -> bool {
        self.done
    }

    fn on_event(&mut self, ev: Event<'_>, out: &mut Vec<u8>) {
        AnState::on_event(self, ev, out);
    }

    /// A body that ends without `message_stop` was cut.
    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.error(out, CUT_MESSAGE, "server_error", None);
        }
    }

    fn abort(&mut self, out: &mut Vec<u8>, message: &str) {
        self.error(out, message, "server_error", None);
    }
}

impl AnState {
    fn on_event(&mut self, ev: Event<'_>, out: &mut Vec<u8>) {
        if self.done || ev.event == Some(b"ping") || is_blank(ev.data) {
            return;
        }
        let e: AnEvent<'_> = match sonic_rs::from_slice(ev.data) {
            Ok(e) => e,
            Err(_) => {
                // An unknown event may look like anything; a known one we cannot read is an error.
                let kind = match sonic_rs::from_slice::<TypeOnly<'_>>(ev.data) {
                    Ok(t) => t.kind.0,
                    Err(_) => ev.event.and_then(|n| std::str::from_utf8(n).ok()).map(Cow::Borrowed),
                };
                if kind.as_deref().is_none_or(is_known_anthropic_event) {
                    self.error(out, UNREADABLE_MESSAGE, "server_error", Some("api_error"));
                }
                return;
            }
        };
        match e.kind.get().unwrap_or("") {
            "message_start" => {
                if self.started {
                    return;
                }
                if let Some(m) = &e.message {
                    if let Some(id) = m.id.get() {
                        self.id = id.to_owned();
                    }
                    if let Some(u) = &m.usage {
                        self.apply_usage(u);
                    }
                }
                self.start(out);
            }
            "content_block_start" => {
                self.start(out);
                let Some(b) = &e.content_block else { return };
                match b.kind.get().unwrap_or("") {
                    "text" => {
                        if let Some(t) = b.text.non_empty() {
                            self.chunk(out, OaDelta { content: Some(t), ..OaDelta::default() }, None);
                        }
                    }
                    "thinking" => {
                        if let Some(t) = b.thinking.non_empty() {
                            self.chunk(out, OaDelta { reasoning_content: Some(t), ..OaDelta::default() }, None);
                        }
                    }
                    "tool_use" => {
                        let k = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                        // An input given whole at the start (not `{}`) stands if no delta follows.
                        // Read apart, and only here: `sonic_rs::get` checks the bytes are UTF-8,
                        // while serde's `LazyValue` would take them on trust.
                        let start_input = sonic_rs::get(ev.data, ["content_block", "input"])
                            .ok()
                            .map(|v| v.as_raw_str().trim().to_owned())
                            .filter(|raw| raw.starts_with('{') && !is_empty_object(raw));
                        self.tools.push(ToolBlock {
                            index: e.index.unwrap_or(u64::MAX),
                            has_args: false,
                            closed: false,
                            start_input,
                        });
                        let call = OaToolCall {
                            index: k,
                            id: Some(b.id.get().unwrap_or("")),
                            kind: Some("function"),
                            function: OaFunction { name: Some(b.name.get().unwrap_or("")), arguments: "" },
                        };
                        self.chunk(out, OaDelta { tool_calls: Some([call]), ..OaDelta::default() }, None);
                    }
                    // thinking's signature, redacted_thinking, server tools and their results
                    // have no OpenAI counterpart.
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.start(out);
                // Counted as the same-dialect meter counts them (`usage::StreamMeter`): every one.
                self.content_events += 1;
                let Some(d) = &e.delta else { return };
                match d.kind.get().unwrap_or("") {
                    "text_delta" => {
                        if let Some(t) = d.text.non_empty() {
                            self.chunk(out, OaDelta { content: Some(t), ..OaDelta::default() }, None);
                        }
                    }
                    "thinking_delta" => {
                        if let Some(t) = d.thinking.non_empty() {
                            self.chunk(out, OaDelta { reasoning_content: Some(t), ..OaDelta::default() }, None);
                        }
                    }
                    "input_json_delta" => {
                        let Some(p) = d.partial_json.non_empty() else {
                            return;
                        };
                        let idx = e.index.unwrap_or(u64::MAX);
                        // Only client tool_use blocks are tool calls (server tools are not).
                        let Some(k) = self.tools.iter().rposition(|t| t.index == idx && !t.closed) else {
                            return;
                        };
                        if let Some(t) = self.tools.get_mut(k) {
                            t.has_args = true;
                        }
                        let k = u32::try_from(k).unwrap_or(u32::MAX);
                        let call = OaToolCall {
                            index: k,
                            id: None,
                            kind: None,
                            function: OaFunction { name: None, arguments: p },
                        };
                        self.chunk(out, OaDelta { tool_calls: Some([call]), ..OaDelta::default() }, None);
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let idx = e.index.unwrap_or(u64::MAX);
                if let Some(k) = self.tools.iter().rposition(|t| t.index == idx && !t.closed) {
                    self.close_tool(out, k);
                }
            }
            "message_delta" => {
                self.start(out);
                if let Some(u) = &e.usage {
                    self.apply_usage(u);
                    self.usage_complete = true;
                }
                if let Some(sr) = e.delta.as_ref().and_then(|d| d.stop_reason.get()) {
                    self.finish_chunk(out, finish_reason_for(sr));
                }
            }
            "message_stop" => {
                self.start(out);
                // A message_delta always carries the stop reason; should it be missing, the
                // message still ended normally.
                self.finish_chunk(out, "stop");
                if self.include_usage {
                    let usage = openai_usage_json(&self.usage);
                    out.extend_from_slice(b"data: ");
                    write_json(
                        out,
                        &OaChunk {
                            id: &self.id,
                            object: "chat.completion.chunk",
                            created: self.created,
                            model: &self.model,
                            choices: &[],
                            usage: Some(usage),
                        },
                    );
                    out.extend_from_slice(b"\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let err = e.error.as_ref();
                let kind = err.and_then(|v| v.get("type")).and_then(Value::as_str).unwrap_or("api_error");
                let message = match err {
                    Some(Value::String(s)) => s.as_str(),
                    Some(v) => v.get("message").and_then(Value::as_str).unwrap_or("The upstream returned an error."),
                    None => "The upstream returned an error.",
                };
                let oa_type = if kind == "invalid_request_error" { "invalid_request_error" } else { "server_error" };
                self.error(out, message, oa_type, Some(kind));
            }
            // ping, and event types added later.
            _ => {}
        }
    }

    fn apply_usage(&mut self, u: &AnthropicUsage) {
        self.usage.merge_anthropic(
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
        );
    }

    /// The first chunk (role), once; content seen before `message_start` still gets it first.
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(out, OaDelta { role: Some("assistant"), content: Some(""), ..OaDelta::default() }, None);
        }
    }

    /// A tool call that got no arguments (a tool without parameters) gets `{}`: OpenAI sends
    /// that, and clients parse the arguments as JSON.
    fn close_tool(&mut self, out: &mut Vec<u8>, k: usize) {
        let Some(t) = self.tools.get_mut(k) else {
            return;
        };
        if t.closed {
            return;
        }
        t.closed = true;
        if !t.has_args {
            t.has_args = true;
            let start_input = t.start_input.take();
            let index = u32::try_from(k).unwrap_or(u32::MAX);
            let arguments = start_input.as_deref().unwrap_or("{}");
            let call = OaToolCall { index, id: None, kind: None, function: OaFunction { name: None, arguments } };
            self.chunk(out, OaDelta { tool_calls: Some([call]), ..OaDelta::default() }, None);
        }
    }

    fn finish_chunk(&mut self, out: &mut Vec<u8>, reason: &str) {
        for k in 0..self.tools.len() {
            self.close_tool(out, k);
        }
        if !self.finish_sent {
            self.finish_sent = true;
            self.chunk(out, OaDelta::default(), Some(reason));
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: OaDelta<'_>, finish_reason: Option<&str>) {
        out.extend_from_slice(b"data: ");
        write_json(
            out,
            &OaChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.model,
                choices: &[OaChoice { index: 0, delta, finish_reason }],
                usage: None,
            },
        );
        out.extend_from_slice(b"\n\n");
    }

    fn error(&mut self, out: &mut Vec<u8>, message: &str, kind: &str, code: Option<&str>) {
        write_openai_error_event(out, message, kind, code);
        self.done = true;
    }
}

/// The error event that ends an OpenAI-dialect stream the gateway stops itself (`data:` and an
/// OpenAI error object; OpenAI streams have no event names). Also used by `usage::StreamMeter`.
pub fn write_openai_error_event(out: &mut Vec<u8>, message: &str, kind: &str, code: Option<&str>) {
    out.extend_from_slice(b"data: ");
    write_json(out, &OpenAiError { error: OpenAiErrorInner { message, kind, param: None, code } });
    out.extend_from_slice(b"\n\n");
}

/// A `tool_use` block seen upstream.
#[derive(Debug)]
struct ToolBlock {
    /// Its Anthropic block index.
    index: u64,
    /// Some arguments went out for it.
    has_args: bool,
    /// Its `content_block_stop` came.
    closed: bool,
    /// The input its `content_block_start` carried, when not `{}`: its arguments if no
    /// `input_json_delta` comes (Anthropic's own streams always send deltas).
    start_input: Option<String>,
}

/// `{ }` with whitespace inside: an empty input too.
fn is_empty_object(raw: &str) -> bool {
    raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')).is_some_and(|inner| inner.trim().is_empty())
}

fn is_known_anthropic_event(kind: &str) -> bool {
    matches!(
        kind,
        "message_start"
            | "content_block_start"
            | "content_block_delta"
            | "content_block_stop"
            | "message_delta"
            | "message_stop"
            | "error"
    )
}

// ---------------------------------------------------------------------------------------------
// OpenAI upstream → Anthropic caller

#[derive(Serialize)]
struct AnMessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: AnMessageStartBody<'a>,
}

#[derive(Serialize)]
struct AnMessageStartBody<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: &'static [()],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: AnZeroUsage,
}

#[derive(Serialize)]
struct AnZeroUsage {
    input_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
    output_tokens: u64,
}

#[derive(Serialize)]
struct AnBlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: AnOutBlock<'a>,
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnOutBlock<'a> {
    Text { text: &'a str },
    Thinking { thinking: &'a str, signature: &'a str },
    ToolUse { id: &'a str, name: &'a str, input: EmptyObject },
}

#[derive(Serialize)]
struct AnBlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: AnOutDelta<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum AnOutDelta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct AnBlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct AnMessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: AnStop,
    usage: AnthropicUsageOut,
}

#[derive(Serialize)]
struct AnStop {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

/// A text-like block kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Thinking,
    Text,
}

/// The block that is open on the caller's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(TextKind),
    /// The live tool call (slot in `calls`).
    Tool(usize),
}

/// Where a tool call stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum CallState {
    /// Held whole until the end (another call is live).
    #[default]
    Buffered,
    /// Chosen to stream live, waiting for its name to open the block.
    LivePending,
    /// Its block is open and its fragments stream as they come.
    LiveOpen,
    /// Streamed live and closed: its arguments were a complete JSON object.
    Closed,
}

/// One OpenAI tool call.
#[derive(Debug, Default)]
struct Call {
    id: String,
    name: String,
    /// Its arguments so far (for a live call: what was streamed).
    args: String,
    state: CallState,
}

/// OpenAI chunks in, Anthropic events out.
#[derive(Debug)]
pub struct OpenAiToAnthropic {
    decoder: SseDecoder,
    st: OaState,
}

#[derive(Debug)]
struct OaState {
    model: String,
    /// Upstream chunk id (the message id is `msg_` + this).
    chunk_id: String,
    /// `message_start` went out.
    started: bool,
    /// `message_stop` or an error went out: nothing more is emitted.
    done: bool,
    /// Index the next block gets.
    next_index: u32,
    /// The open block and its index.
    open: Option<(u32, OpenBlock)>,
    /// From the first `finish_reason`.
    stop_reason: Option<&'static str>,
    /// The model refused (`delta.refusal`): the stop reason is Anthropic's `refusal`.
    refused: bool,
    /// From the last usage object (OpenAI sends one, in its last chunk).
    usage: Option<Usage>,
    /// Upstream chunks that carried content (`StreamTokens::content_events`).
    content_events: u64,
    /// Tool calls in order of first appearance.
    calls: Vec<Call>,
    /// OpenAI `tool_calls[].index` → slot in `calls` (the latest call with that index).
    by_index: Vec<(u64, usize)>,
    /// Slot of the call streaming live (pending or open).
    live: Option<usize>,
    /// A tool block has been opened: later text and reasoning wait for the end.
    tool_opened: bool,
    /// Text and reasoning that arrived after a tool block opened, in order.
    deferred: Vec<(TextKind, String)>,
}

impl OpenAiToAnthropic {
    /// A translator for one response; `caller_model` is the model name the caller used.
    pub fn new(caller_model: &str) -> Self {
        OpenAiToAnthropic {
            decoder: SseDecoder::new(),
            st: OaState {
                model: caller_model.to_owned(),
                chunk_id: String::new(),
                started: false,
                done: false,
                next_index: 0,
                open: None,
                stop_reason: None,
                refused: false,
                usage: None,
                content_events: 0,
                calls: Vec::new(),
                by_index: Vec::new(),
                live: None,
                tool_opened: false,
                deferred: Vec::new(),
            },
        }
    }
}

impl StreamTranslator for OpenAiToAnthropic {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        drive_feed(&mut self.decoder, &mut self.st, chunk, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        drive_finish(&mut self.decoder, &mut self.st, out);
    }

    fn tokens(&self) -> StreamTokens {
        StreamTokens {
            reported: self.st.usage.unwrap_or_default(),
            complete: self.st.usage.is_some(),
            content_events: self.st.content_events,
        }
    }

    fn done(&self) -> bool {
        self.st.done
    }
}

impl EventMachine for OaState {
    fn done(&self) -> bool {
        self.done
    }

    fn on_event(&mut self, ev: Event<'_>, out: &mut Vec<u8>) {
        OaState::on_event(self, ev, out);
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        OaState::end(self, out);
    }

    fn abort(&mut self, out: &mut Vec<u8>, message: &str) {
        self.start(out);
        self.fail(out, "api_error", message);
    }
}

fn frame<T: Serialize>(out: &mut Vec<u8>, event: &str, v: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    write_json(out, v);
    out.extend_from_slice(b"\n\n");
}

impl OaState {
    fn on_event(&mut self, ev: Event<'_>, out: &mut Vec<u8>) {
        if self.done || is_blank(ev.data) {
            return;
        }
        if ev.data.trim_ascii() == b"[DONE]" {
            self.end(out);
            return;
        }
        let c: openai::Completion<'_> = match sonic_rs::from_slice(ev.data) {
            Ok(c) => c,
            Err(_) => {
                self.fail(out, "api_error", UNREADABLE_MESSAGE);
                return;
            }
        };
        if let Some(err) = c.error.as_ref().filter(|v| !v.is_null()) {
            let message = match err {
                Value::String(s) => s.as_str(),
                v => v.get("message").and_then(Value::as_str).unwrap_or("The upstream returned an error."),
            };
            self.fail(out, anthropic_error_type(err), message);
            return;
        }
        if self.chunk_id.is_empty() {
            if let Some(id) = c.id.get() {
                self.chunk_id = id.to_owned();
            }
        }
        // A chunk without choices (Azure's prompt_filter_results, a usage chunk) does not start
        // the message: its id may be empty.
        if c.choices.as_ref().is_some_and(|v| !v.is_empty()) {
            self.start(out);
        }
        // Every choice was generated (and is billed), though only the first is translated: counted
        // as the same-dialect meter counts them (`usage::openai_chunk_has_content`).
        if c.choices.iter().flatten().filter_map(|choice| choice.delta.as_ref()).any(openai::Message::has_content) {
            self.content_events += 1;
        }
        for choice in c.choices.iter().flatten() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            if let Some(d) = &choice.delta {
                if let Some(t) = d.reasoning_content.non_empty().or_else(|| d.reasoning.non_empty()) {
                    self.text(out, TextKind::Thinking, t);
                }
                if let Some(t) = d.content.non_empty() {
                    self.text(out, TextKind::Text, t);
                }
                if let Some(t) = d.refusal.non_empty() {
                    self.refused = true;
                    self.text(out, TextKind::Text, t);
                }
                for tc in d.tool_calls.iter().flatten() {
                    self.tool_fragment(out, tc);
                }
            }
            if let Some(fr) = choice.finish_reason.non_empty() {
                if fr == "error" {
                    self.fail(out, "api_error", "The upstream reported an error while generating the response.");
                    return;
                }
                if self.stop_reason.is_none() {
                    self.stop_reason = Some(if self.refused { "refusal" } else { stop_reason_for(fr) });
                }
            }
        }
        if let Some(u) = &c.usage {
            self.usage = Some(u.to_usage());
            if self.stop_reason.is_some() {
                self.end(out);
            }
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = format!("msg_{}", self.chunk_id);
        frame(
            out,
            "message_start",
            &AnMessageStart {
                kind: "message_start",
                message: AnMessageStartBody {
                    id: &id,
                    kind: "message",
                    role: "assistant",
                    model: &self.model,
                    content: &[],
                    stop_reason: None,
                    stop_sequence: None,
                    usage: AnZeroUsage {
                        input_tokens: 0,
                        cache_creation_input_tokens: 0,
                        cache_read_input_tokens: 0,
                        output_tokens: 0,
                    },
                },
            },
        );
        out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
    }

    fn text(&mut self, out: &mut Vec<u8>, kind: TextKind, t: &str) {
        if self.tool_opened {
            match self.deferred.last_mut() {
                Some((k, s)) if *k == kind => s.push_str(t),
                _ => self.deferred.push((kind, t.to_owned())),
            }
            return;
        }
        let index = match self.open {
            Some((i, OpenBlock::Text(k))) if k == kind => i,
            _ => self.open_block(out, OpenBlock::Text(kind), "", ""),
        };
        self.text_delta(out, index, kind, t);
    }

    fn text_delta(&self, out: &mut Vec<u8>, index: u32, kind: TextKind, t: &str) {
        let delta = match kind {
            TextKind::Text => AnOutDelta::Text { text: t },
            TextKind::Thinking => AnOutDelta::Thinking { thinking: t },
        };
        frame(out, "content_block_delta", &AnBlockDelta { kind: "content_block_delta", index, delta });
    }

    fn json_delta(&self, out: &mut Vec<u8>, index: u32, partial_json: &str) {
        let delta = AnOutDelta::InputJson { partial_json };
        frame(out, "content_block_delta", &AnBlockDelta { kind: "content_block_delta", index, delta });
    }

    /// Closes the open block and opens a new one (`id`/`name` for a tool); returns its index.
    fn open_block(&mut self, out: &mut Vec<u8>, block: OpenBlock, id: &str, name: &str) -> u32 {
        self.close_block(out);
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        let content_block = match block {
            OpenBlock::Text(TextKind::Text) => AnOutBlock::Text { text: "" },
            OpenBlock::Text(TextKind::Thinking) => AnOutBlock::Thinking { thinking: "", signature: "" },
            OpenBlock::Tool(_) => AnOutBlock::ToolUse { id, name, input: EmptyObject {} },
        };
        frame(out, "content_block_start", &AnBlockStart { kind: "content_block_start", index, content_block });
        self.open = Some((index, block));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            frame(out, "content_block_stop", &AnBlockStop { kind: "content_block_stop", index });
        }
    }

    fn tool_fragment(&mut self, out: &mut Vec<u8>, tc: &openai::ToolCall<'_>) {
        let oa_index = tc.index.unwrap_or(0);
        let id = tc.id.non_empty();
        let current = self.by_index.iter().rev().find(|(i, _)| *i == oa_index).map(|&(_, s)| s);
        // Some backends reuse one index for several calls: a new id is a new call.
        let slot = match current {
            Some(s) if id.is_none_or(|id| self.calls.get(s).is_some_and(|c| c.id.is_empty() || c.id == id)) => s,
            _ => {
                self.calls.push(Call::default());
                let s = self.calls.len() - 1;
                match self.by_index.iter_mut().find(|(i, _)| *i == oa_index) {
                    Some(entry) => entry.1 = s,
                    None => self.by_index.push((oa_index, s)),
                }
                s
            }
        };
        let name = tc.function.as_ref().and_then(|f| f.name.non_empty());
        let args = tc.function.as_ref().and_then(|f| f.arguments.get()).unwrap_or("");
        let Some(call) = self.calls.get_mut(slot) else {
            return;
        };
        if call.id.is_empty() {
            if let Some(id) = id {
                call.id = id.to_owned();
            }
        }
        if call.name.is_empty() {
            if let Some(name) = name {
                call.name = name.to_owned();
            }
        }
        match call.state {
            // A complete JSON object can only be followed by whitespace: nothing to add.
            CallState::Closed => {}
            CallState::LiveOpen => {
                if !args.is_empty() {
                    call.args.push_str(args);
                    if let Some((index, OpenBlock::Tool(s))) = self.open {
                        if s == slot {
                            self.json_delta(out, index, args);
                        }
                    }
                }
            }
            CallState::LivePending => {
                call.args.push_str(args);
                self.open_live(out, slot);
            }
            CallState::Buffered => {
                call.args.push_str(args);
                self.promote(out, slot);
            }
        }
    }

    /// Makes `slot` the live call if the live one is finished and every earlier call is closed.
    /// The live call is finished once its arguments form a complete JSON object: then it is
    /// closed, so that sequential parallel calls (OpenAI's usual order) all stream live.
    fn promote(&mut self, out: &mut Vec<u8>, slot: usize) {
        if let Some(live) = self.live {
            let Some(call) = self.calls.get_mut(live) else {
                return;
            };
            if call.state != CallState::LiveOpen || !is_complete_object(&call.args) {
                return;
            }
            call.state = CallState::Closed;
            call.args = String::new();
            if matches!(self.open, Some((_, OpenBlock::Tool(s))) if s == live) {
                self.close_block(out);
            }
            self.live = None;
        }
        if self.calls.iter().take(slot).all(|c| c.state == CallState::Closed) {
            if let Some(call) = self.calls.get_mut(slot) {
                call.state = CallState::LivePending;
                self.live = Some(slot);
                self.open_live(out, slot);
            }
        }
    }

    /// Opens the block of the live call once its name is known (normally with its first fragment).
    fn open_live(&mut self, out: &mut Vec<u8>, slot: usize) {
        let Some(call) = self.calls.get_mut(slot) else {
            return;
        };
        if call.name.is_empty() {
            return;
        }
        call.state = CallState::LiveOpen;
        let id = if call.id.is_empty() { synth_id(&self.chunk_id, slot) } else { call.id.clone() };
        let name = call.name.clone();
        let pending = call.args.clone();
        self.tool_opened = true;
        let index = self.open_block(out, OpenBlock::Tool(slot), &id, &name);
        if !pending.is_empty() {
            self.json_delta(out, index, &pending);
        }
    }

    /// End of the message: `[DONE]`, a usage chunk after the finish, or the end of the body.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let Some(stop_reason) = self.stop_reason else {
            // Never finished: the caller must not take it for a complete answer.
            self.start(out);
            self.fail(out, "api_error", CUT_MESSAGE);
            return;
        };
        self.start(out);
        self.close_block(out);
        let calls = std::mem::take(&mut self.calls);
        for (slot, call) in calls.iter().enumerate() {
            if matches!(call.state, CallState::LiveOpen | CallState::Closed) {
                continue;
            }
            let id = if call.id.is_empty() { synth_id(&self.chunk_id, slot) } else { call.id.clone() };
            let index = self.open_block(out, OpenBlock::Tool(slot), &id, &call.name);
            if !call.args.trim_ascii().is_empty() {
                self.json_delta(out, index, &call.args);
            }
            self.close_block(out);
        }
        let deferred = std::mem::take(&mut self.deferred);
        for (kind, text) in &deferred {
            let index = self.open_block(out, OpenBlock::Text(*kind), "", "");
            self.text_delta(out, index, *kind, text);
            self.close_block(out);
        }
        let usage = anthropic_usage_json(&self.usage.unwrap_or_default());
        frame(
            out,
            "message_delta",
            &AnMessageDelta { kind: "message_delta", delta: AnStop { stop_reason, stop_sequence: None }, usage },
        );
        out.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        self.done = true;
    }

    /// Closes the open block and ends the stream with an `error` event.
    fn fail(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        self.close_block(out);
        frame(
            out,
            "error",
            &AnthropicError { kind: "error", error: AnthropicErrorInner { kind, message }, request_id: None },
        );
        self.done = true;
    }
}

/// Whether `args` is one complete JSON object (a cheap look at the last byte first).
fn is_complete_object(args: &str) -> bool {
    let t = args.trim_ascii();
    t.starts_with('{') && t.ends_with('}') && serde_json::from_str::<IgnoredAny>(t).is_ok()
}

/// An id for a tool call the upstream sent without one.
fn synth_id(chunk_id: &str, slot: usize) -> String {
    format!("toolu_{chunk_id}_{slot}")
}

/// Anthropic's error type for an OpenAI(-compatible) error object.
fn anthropic_error_type(err: &Value) -> &'static str {
    let text = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, code) = (text("type"), text("code"));
    let status = err.get("code").and_then(Value::as_u64);
    let either = |f: &dyn Fn(&str) -> bool| f(kind) || f(code);
    if either(&|s| s.contains("rate_limit")) || matches!(kind, "requests" | "tokens") || status == Some(429) {
        "rate_limit_error"
    } else if either(&|s| s.contains("overloaded")) || matches!(status, Some(503 | 529)) {
        "overloaded_error"
    } else if either(&|s| s == "invalid_request_error" || s == "context_length_exceeded") || status == Some(400) {
        "invalid_request_error"
    } else {
        "api_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut dyn StreamTranslator, input: &str) -> String {
        let mut out = Vec::new();
        t.feed(input.as_bytes(), &mut out);
        t.finish(&mut out);
        String::from_utf8(out).expect("translators emit UTF-8")
    }

    #[test]
    fn a_tool_input_at_the_start_that_is_not_utf8_is_not_taken_on_trust() {
        // The fuzz target's find (regressions/stream_anthropic_to_openai-start-input-invalid-utf8.bin):
        // read through serde as a sonic-rs `LazyValue`, these bytes became a `&str` unchecked.
        let mut input = b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\",\"input\":{\"city\":\"Pa".to_vec();
        input.extend_from_slice(b"\xf4\xf4\xf4");
        input.extend_from_slice(
            b"\"}}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        input.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        let mut t = AnthropicToOpenAi::new("m", false, 0);
        let mut out = Vec::new();
        t.feed(&input, &mut out);
        t.finish(&mut out);
        // The event cannot be read as it is: the stream ends with the dialect's error event, and
        // no byte of the bad input reaches the caller.
        let out = String::from_utf8(out).expect("translators emit UTF-8");
        assert!(out.contains("could not be read") && !out.contains("city"), "{out}");
        // A valid one is kept.
        let valid = String::from_utf8_lossy(&input).replace('\u{fffd}', "é");
        let out = run(&mut AnthropicToOpenAi::new("m", false, 0), &valid);
        assert!(out.contains(r#""arguments":"{\"city\":\"Paééé\"}""#), "{out}");
    }

    fn oa(s: &str) -> String {
        run(&mut OpenAiToAnthropic::new("m"), s)
    }

    fn an(s: &str) -> String {
        run(&mut AnthropicToOpenAi::new("m", true, 1), s)
    }

    #[test]
    fn translators_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<AnthropicToOpenAi>();
        send_sync::<OpenAiToAnthropic>();
        send_sync::<SseDecoder>();
    }

    #[test]
    fn same_index_with_a_new_id_is_a_new_call() {
        let out = oa(concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"a\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"b\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"x\\\":1}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n",
        ));
        assert!(out.contains("{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\",\"input\":{}}"), "{out}");
        assert!(
            out.contains("\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"g\""),
            "{out}"
        );
        assert!(
            out.contains("\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"x\\\":1}\"}"),
            "{out}"
        );
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"), "{out}");
    }

    #[test]
    fn a_live_call_without_name_waits_for_it() {
        let out = oa(concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        ));
        assert!(out.contains("{\"type\":\"tool_use\",\"id\":\"toolu_c_0\",\"name\":\"f\",\"input\":{}}"), "{out}");
        assert!(out.contains("\"partial_json\":\"{\\\"a\\\":1}\""), "{out}");
        assert!(out.contains("\"stop_reason\":\"tool_use\""), "{out}");
    }

    #[test]
    fn finish_reason_error_is_an_error() {
        let out = oa("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":\"error\"}]}\n\ndata: [DONE]\n\n");
        assert!(out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream reported an error while generating the response.\"}}\n\n"), "{out}");
        assert!(!out.contains("message_stop"));
    }

    #[test]
    fn openrouter_style_error_codes() {
        for (err, kind) in [
            ("{\"code\":429,\"message\":\"slow down\"}", "rate_limit_error"),
            ("{\"code\":502,\"message\":\"bad gateway\"}", "api_error"),
            ("{\"message\":\"over\",\"type\":\"server_error\",\"code\":\"overloaded\"}", "overloaded_error"),
            (
                "{\"message\":\"long\",\"type\":\"invalid_request_error\",\"code\":\"context_length_exceeded\"}",
                "invalid_request_error",
            ),
            ("\"plain\"", "api_error"),
        ] {
            let out = oa(&format!("data: {{\"error\":{err}}}\n\n"));
            assert!(
                out.starts_with(&format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\"")),
                "{err}: {out}"
            );
            assert_eq!(out.matches("event:").count(), 1, "{out}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(oa("data: {not json\n\n").contains("event: error"));
        assert!(an("event: content_block_delta\ndata: {not json\n\n").contains("\"code\":\"api_error\""));
        // Unknown events are tolerated, even when their shape is unexpected.
        let out = an("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\nevent: future\ndata: {\"type\":\"future\",\"delta\":7}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    }

    #[test]
    fn invalid_utf8_surrogates_and_trailing_bytes_are_unreadable() {
        for data in [
            &b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\"}}]}\n\n"[..],
            b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud800\"}}]}\n\n",
            b"data: {\"id\":\"c\",\"choices\":[]} x\n\n",
        ] {
            let mut t = OpenAiToAnthropic::new("m");
            let mut out = Vec::new();
            t.feed(data, &mut out);
            t.finish(&mut out);
            let out = String::from_utf8(out).expect("output is UTF-8 whatever the input");
            assert!(out.contains(UNREADABLE_MESSAGE), "{out}");
        }
        // Escaped non-BMP characters (surrogate pairs) are fine.
        let out = oa("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\ud83d\\ude00 \\\"q\\\"\"},\"finish_reason\":\"stop\"}]}\n\n");
        assert!(out.contains("\"text\":\"\u{1F600} \\\"q\\\"\""), "{out}");
    }

    #[test]
    fn an_event_past_the_cap_ends_the_stream_with_an_error_event() {
        let chunk = vec![b'x'; 1 << 20];
        for (name, mut t) in [
            ("openai_to_anthropic", Box::new(OpenAiToAnthropic::new("m")) as Box<dyn StreamTranslator>),
            ("anthropic_to_openai", Box::new(AnthropicToOpenAi::new("m", true, 0)) as Box<dyn StreamTranslator>),
        ] {
            let mut out = Vec::new();
            t.feed(b"data: {\"text\":\"", &mut out);
            for _ in 0..(super::super::sse::MAX_EVENT_BYTES >> 20) + 2 {
                t.feed(&chunk, &mut out);
            }
            let text = String::from_utf8_lossy(&out);
            assert!(text.ends_with("\n\n") && text.contains(OVERSIZED_MESSAGE), "{name}: {text}");
            assert!(out.len() < 4096, "{name}: the oversized event is not echoed");
            let len = out.len();
            t.feed(b"\n\ndata: [DONE]\n\n", &mut out);
            t.finish(&mut out);
            assert_eq!(out.len(), len, "{name}: nothing after the error event");
        }
    }

    #[test]
    fn nothing_at_all_is_a_cut_stream() {
        assert_eq!(
            oa(""),
            concat!(
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":0}}}\n\n",
                "event: ping\ndata: {\"type\":\"ping\"}\n\n",
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream stream ended before it was complete.\"}}\n\n",
            )
        );
        assert_eq!(an(""), "data: {\"error\":{\"message\":\"The upstream stream ended before it was complete.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n");
    }

    #[test]
    fn nothing_after_the_end() {
        let mut t = AnthropicToOpenAi::new("m", false, 1);
        let mut out = Vec::new();
        t.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", &mut out);
        let n = out.len();
        t.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", &mut out);
        t.finish(&mut out);
        assert_eq!(out.len(), n);
    }
}
