//! Request translation between OpenAI chat completions and Anthropic messages, both directions.
//!
//! Pure: bytes in, bytes out (compact JSON). The body is parsed with serde into typed structs that
//! borrow unescaped strings from the body (base64 payloads are never copied on the way in), and
//! the output is built from typed structs and written with `serde_json`. Nothing recurses on the
//! input beyond serde_json's own nesting limit (128), and nothing panics.
//!
//! Every field is mapped, dropped (by rule: listed below and in the README's mapping tables), or
//! refused with a [`TranslateError`] naming its JSON path (the proxy turns it into a 400 in the
//! caller's dialect) where dropping would change the kind of answer. A field no struct names, at
//! any depth, is dropped too. Nothing is dropped silently: `parse` collects the path of every
//! value no struct reads (unknown fields, and fields declared `IgnoredAny`, which is how a struct
//! says "dropped"), and [`Translated::dropped`] carries them to the proxy, which reports them.
//! `Kept` marks a field that is read only to be checked or honoured elsewhere.
//!
//! OpenAI → Anthropic, the non-obvious parts:
//! - `system` and `developer` messages are *hoisted*: wherever they stand in `messages`, their
//!   texts become the top-level `system` blocks, in order (Anthropic has no mid-conversation
//!   system turn). Empty system texts are skipped (Anthropic rejects empty text blocks).
//! - `tool` messages become `tool_result` blocks of one `user` message; consecutive ones (parallel
//!   tool calls) share that message, and a `user` message right after them is merged into it.
//! - Assistant `refusal` (the message field or a refusal part) becomes a text block; a file part's
//!   `filename` becomes the document's `title`.
//! - `reasoning_effort` becomes a thinking budget (minimal 1024, low 2048, medium 8192, high
//!   16384, capped at `max_tokens - 1`; `none` means no thinking). With thinking on, Anthropic
//!   accepts only `temperature` 1, `top_p` 0.95..=1 and non-forced `tool_choice`: anything else
//!   is a 400 naming the parameter (the request is not silently changed).
//! - `parallel_tool_calls: false` becomes `disable_parallel_tool_use` on `tool_choice` (an
//!   `auto` choice is created when tools are given and no choice is; nothing with `none`).
//! - Dropped: `name` on messages, `reasoning_content` and `annotations` on assistant history
//!   (unsigned thinking cannot be replayed), `detail` on images, `strict` on tools,
//!   `stream_options` (Anthropic streams always carry usage), and `seed` (best-effort determinism
//!   only), `service_tier`, `store`, `metadata`, `prompt_cache_key`, `safety_identifier`,
//!   `verbosity`, and the neutral values `n: 1`, `logprobs: false`, zero penalties, an empty
//!   `logit_bias`, `response_format: {"type":"text"}`, `modalities: ["text"]`. `null` means absent.
//!
//! Anthropic → OpenAI, the non-obvious parts:
//! - `tool_result` blocks become `tool` messages placed before the rest of their user message;
//!   `is_error: true` prefixes the content with `"Error: "`.
//! - A base64 PDF `document` becomes a `file` part named after its `title` (else `document.pdf`);
//!   a plain-text document becomes a text part (its `title` is dropped); `context` and
//!   `citations: {"enabled": true}` are 400s.
//! - `thinking` / `redacted_thinking` blocks in assistant history are dropped, `cache_control`
//!   and text `citations` everywhere are dropped, `context_management`, `service_tier` and
//!   metadata keys other than `user_id` are dropped.
//! - Text blocks are joined: system and tool-result texts with `"\n\n"` (separate items),
//!   assistant texts with nothing (pieces of one reply, e.g. split by citations).
//! - `max_tokens` is required (as Anthropic requires it).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::{RequestOptions, TranslateError, Translated};

// ---------------------------------------------------------------------------------------------
// Shared parsing helpers
// ---------------------------------------------------------------------------------------------

/// A string borrowed from the body when it holds no escapes, owned otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
struct S<'a>(Cow<'a, str>);

impl S<'_> {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for S<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = S<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<S<'a>, E> {
                Ok(S(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<S<'a>, E> {
                Ok(S(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<S<'a>, E> {
                Ok(S(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// A JSON string or an array of `T` (message content, `stop`, `system`).
enum StrOrSeq<'a, T> {
    Str(Cow<'a, str>),
    Seq(Vec<T>),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for StrOrSeq<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = StrOrSeq<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrSeq::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrSeq::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StrOrSeq::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(StrOrSeq::Seq(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON string or an object `T` (OpenAI `tool_choice`).
enum StrOrObj<'a, T> {
    Str(Cow<'a, str>),
    Obj(T),
}

impl<'de: 'a, 'a, T: Deserialize<'de>> Deserialize<'de> for StrOrObj<'a, T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, T>(PhantomData<(&'a (), T)>);
        impl<'de: 'a, 'a, T: Deserialize<'de>> Visitor<'de> for V<'a, T> {
            type Value = StrOrObj<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an object")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrObj::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrObj::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StrOrObj::Str(Cow::Owned(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(StrOrObj::Obj)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object `T`, or anything else (kept as `Other` so that a block of another type whose field of
/// the same name has another shape, e.g. `search_result.source` (a string), fails on its `type`).
enum Loose<T> {
    Known(T),
    Other,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Loose<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Loose::Known)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<Kept>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T> Loose<T> {
    fn known(self, path: &str, what: &str) -> Result<T, TranslateError> {
        match self {
            Loose::Known(t) => Ok(t),
            Loose::Other => Err(err(path, format!("must be {what}"))),
        }
    }
}

/// A `tool_result`'s content: a string, an array of blocks, or (for other block types that use
/// the field name, e.g. `web_search_tool_result`) anything else.
enum ToolContent<'a> {
    Str(Cow<'a, str>),
    Seq(Vec<AnInnerBlock<'a>>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for ToolContent<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ToolContent<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ToolContent::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ToolContent::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ToolContent::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(ToolContent::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<Kept, Kept>()?.is_some() {}
                Ok(ToolContent::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ToolContent::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ToolContent::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ToolContent::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ToolContent::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ToolContent::Other)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

fn err(param: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(param, message)
}

/// `path.key` (or `key` at the top level).
fn at(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// `path.key[i]`.
fn at_index(path: &str, key: &str, i: usize) -> String {
    format!("{}[{i}]", at(path, key))
}

/// Parses the whole body (trailing bytes are an error). Type errors name the field's path.
/// Also returns the JSON paths of the values no struct reads (fields no struct names, and fields
/// declared `IgnoredAny`, which is how a struct says "dropped"): they are reported, not refused.
///
/// The plain parse runs first; only a body that fails it is parsed again with path tracking
/// (`serde_path_to_error` allocates for every key it passes, which would double the cost of
/// every good request to serve the rare bad one).
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<(T, Vec<String>), TranslateError> {
    let mut dropped = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    if let Ok(value) = serde_ignored::deserialize(&mut de, |path| dropped.push(json_path(&path))) {
        de.end().map_err(|e| err("body", clean(&e)))?;
        return Ok((value, dropped));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        err(if path == "." || path.is_empty() { "body".to_owned() } else { path }, clean(e.inner()))
    })?;
    de.end().map_err(|e| err("body", clean(&e)))?;
    Ok((value, Vec::new()))
}

/// A serde_ignored path in the form our errors use: `messages[1].tool_calls[0].index`.
fn json_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", json_path(parent)),
        Path::Map { parent, key } => at(&json_path(parent), key),
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => json_path(parent),
    }
}

/// A serde_json message without its " at line L column C" suffix.
fn clean(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.rfind(" at line ") {
        s.truncate(i);
    }
    s
}

/// Any JSON value, read and not reported as dropped: for fields that are only checked for
/// presence (and refused) or honoured elsewhere. (`IgnoredAny` is what `parse` reports.)
struct Kept;

impl<'de> Deserialize<'de> for Kept {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Kept;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kept, A::Error> {
                while map.next_entry::<Kept, Kept>()?.is_some() {}
                Ok(Kept)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kept, A::Error> {
                while seq.next_element::<Kept>()?.is_some() {}
                Ok(Kept)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Kept, E> {
                Ok(Kept)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Kept, E> {
                Ok(Kept)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Kept, E> {
                Ok(Kept)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Kept, E> {
                Ok(Kept)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Kept, E> {
                Ok(Kept)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Kept, E> {
                Ok(Kept)
            }
        }
        d.deserialize_any(V)
    }
}

/// Known fields that do not belong on this kind of object: dropped (and reported, like the
/// fields no struct names, which `parse` collects).
fn check_fields(path: &str, present: &[(&'static str, bool)], allowed: &[&str], dropped: &mut Vec<String>) {
    for (name, is_present) in present {
        if *is_present && !allowed.contains(name) {
            dropped.push(at(path, name));
        }
    }
}

fn required<T>(value: Option<T>, path: &str, key: &str) -> Result<T, TranslateError> {
    value.ok_or_else(|| err(at(path, key), "required"))
}

fn is_nonzero(n: &Number) -> bool {
    n.as_f64().is_none_or(|f| f != 0.0)
}

/// Byte ranges of the media type and the payload of a `data:<media>[;param]*;base64,<data>` URL.
pub(super) fn data_url(s: &str) -> Option<(Range<usize>, Range<usize>)> {
    const PREFIX: &str = "data:";
    if !s.get(..PREFIX.len())?.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let comma = s.find(',')?;
    let meta = s.get(PREFIX.len()..comma)?;
    let tail = meta.get(meta.len().checked_sub(";base64".len())?..)?;
    if !tail.eq_ignore_ascii_case(";base64") {
        return None;
    }
    let media_len = meta.find(';')?;
    let media = meta.get(..media_len)?;
    if media.is_empty() || media.contains(char::is_whitespace) {
        return None;
    }
    Some((PREFIX.len()..PREFIX.len() + media_len, comma + 1..s.len()))
}

/// A piece of `s`, still borrowed from the body when `s` is.
fn slice<'a>(s: &Cow<'a, str>, r: Range<usize>) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => {
            let b: &'a str = b;
            Cow::Borrowed(b.get(r).unwrap_or(""))
        }
        Cow::Owned(o) => Cow::Owned(o.get(r).unwrap_or("").to_owned()),
    }
}

pub(super) fn is_http_url(s: &str) -> bool {
    let lower = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    lower("http://") || lower("https://")
}

/// Joins texts, borrowing when there is exactly one.
fn join<'a>(mut parts: Vec<Cow<'a, str>>, sep: &str) -> Cow<'a, str> {
    if parts.len() <= 1 {
        return parts.pop().unwrap_or(Cow::Borrowed(""));
    }
    Cow::Owned(parts.join(sep))
}

fn to_json<T: Serialize>(out: &T) -> Result<Vec<u8>, TranslateError> {
    serde_json::to_vec(out).map_err(|e| err("body", e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// OpenAI request (input)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct OaRequest<'a> {
    #[serde(borrow, rename = "model")]
    _model: Option<S<'a>>,
    #[serde(borrow)]
    messages: Option<Vec<OaMessage<'a>>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<Number>,
    top_p: Option<Number>,
    #[serde(borrow)]
    stop: Option<StrOrSeq<'a, S<'a>>>,
    stream: Option<bool>,
    #[serde(rename = "stream_options")]
    _stream_options: Option<Kept>,
    #[serde(borrow)]
    user: Option<S<'a>>,
    #[serde(borrow)]
    tools: Option<Vec<OaTool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<StrOrObj<'a, OaToolChoice<'a>>>,
    parallel_tool_calls: Option<bool>,
    #[serde(borrow)]
    reasoning_effort: Option<S<'a>>,
    n: Option<u64>,
    logprobs: Option<bool>,
    top_logprobs: Option<Kept>,
    frequency_penalty: Option<Number>,
    presence_penalty: Option<Number>,
    logit_bias: Option<BTreeMap<String, Kept>>,
    #[serde(borrow)]
    response_format: Option<OaResponseFormat<'a>>,
    // Dropped: no Anthropic counterpart, and they do not change what the model is asked.
    #[serde(rename = "seed")]
    _seed: Option<IgnoredAny>,
    #[serde(rename = "service_tier")]
    _service_tier: Option<IgnoredAny>,
    #[serde(rename = "store")]
    _store: Option<IgnoredAny>,
    #[serde(rename = "metadata")]
    _metadata: Option<IgnoredAny>,
    #[serde(rename = "prompt_cache_key")]
    _prompt_cache_key: Option<IgnoredAny>,
    #[serde(rename = "safety_identifier")]
    _safety_identifier: Option<IgnoredAny>,
    #[serde(rename = "verbosity")]
    _verbosity: Option<IgnoredAny>,
    modalities: Option<Vec<String>>,
    // Rejected when present (not null).
    audio: Option<Kept>,
    prediction: Option<Kept>,
    web_search_options: Option<Kept>,
    functions: Option<Kept>,
    function_call: Option<Kept>,
}

#[derive(Deserialize)]
struct OaResponseFormat<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    json_schema: Option<OaJsonSchema<'a>>,
}

#[derive(Deserialize)]
struct OaJsonSchema<'a> {
    // `name`, `description` and `strict` have no Anthropic counterpart: the schema is always
    // held to exactly.
    #[serde(borrow, rename = "name")]
    _name: Option<S<'a>>,
    #[serde(rename = "description")]
    _description: Option<IgnoredAny>,
    #[serde(rename = "strict")]
    _strict: Option<Kept>,
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct OaMessage<'a> {
    #[serde(borrow)]
    role: Option<S<'a>>,
    #[serde(borrow)]
    content: Option<StrOrSeq<'a, OaPart<'a>>>,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
    #[serde(borrow)]
    tool_calls: Option<Vec<OaToolCall<'a>>>,
    #[serde(borrow)]
    tool_call_id: Option<S<'a>>,
    #[serde(borrow)]
    refusal: Option<S<'a>>,
    #[serde(rename = "reasoning_content")]
    _reasoning_content: Option<IgnoredAny>,
    #[serde(rename = "annotations")]
    _annotations: Option<IgnoredAny>,
    audio: Option<Kept>,
    function_call: Option<Kept>,
}

impl OaMessage<'_> {
    fn present(&self) -> [(&'static str, bool); 6] {
        [
            ("content", self.content.is_some()),
            ("tool_calls", self.tool_calls.is_some()),
            ("tool_call_id", self.tool_call_id.is_some()),
            ("refusal", self.refusal.is_some()),
            ("audio", self.audio.is_some()),
            ("function_call", self.function_call.is_some()),
        ]
    }
}

#[derive(Deserialize)]
struct OaPart<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    text: Option<S<'a>>,
    #[serde(borrow)]
    refusal: Option<S<'a>>,
    #[serde(borrow)]
    image_url: Option<OaImageUrl<'a>>,
    #[serde(borrow)]
    file: Option<OaFile<'a>>,
    input_audio: Option<Kept>,
}

impl OaPart<'_> {
    fn present(&self) -> [(&'static str, bool); 5] {
        [
            ("text", self.text.is_some()),
            ("refusal", self.refusal.is_some()),
            ("image_url", self.image_url.is_some()),
            ("file", self.file.is_some()),
            ("input_audio", self.input_audio.is_some()),
        ]
    }
}

#[derive(Deserialize)]
struct OaImageUrl<'a> {
    #[serde(borrow)]
    url: Option<S<'a>>,
    #[serde(rename = "detail")]
    _detail: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct OaFile<'a> {
    #[serde(borrow)]
    file_data: Option<S<'a>>,
    file_id: Option<Kept>,
    #[serde(borrow)]
    filename: Option<S<'a>>,
}

#[derive(Deserialize)]
struct OaToolCall<'a> {
    #[serde(borrow)]
    id: Option<S<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    function: Option<OaFunctionCall<'a>>,
}

#[derive(Deserialize)]
struct OaFunctionCall<'a> {
    #[serde(borrow)]
    name: Option<S<'a>>,
    #[serde(borrow)]
    arguments: Option<S<'a>>,
}

#[derive(Deserialize)]
struct OaTool<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    function: Option<OaFunctionDef<'a>>,
}

#[derive(Deserialize)]
struct OaFunctionDef<'a> {
    #[serde(borrow)]
    name: Option<S<'a>>,
    #[serde(borrow)]
    description: Option<S<'a>>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct OaToolChoice<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    function: Option<OaName<'a>>,
}

#[derive(Deserialize)]
struct OaName<'a> {
    #[serde(borrow)]
    name: Option<S<'a>>,
}

// ---------------------------------------------------------------------------------------------
// Anthropic request (output of openai_to_anthropic)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct AnOut<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<AnBlockOut<'a>>,
    messages: Vec<AnMsgOut<'a>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<AnMetadataOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<AnThinkingOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<AnToolOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<AnOutputConfigOut>,
}

#[derive(Serialize)]
struct AnMetadataOut<'a> {
    user_id: Cow<'a, str>,
}

#[derive(Serialize)]
struct AnThinkingOut {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

#[derive(Serialize)]
struct AnMsgOut<'a> {
    role: &'static str,
    content: AnContentOut<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AnContentOut<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<AnBlockOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnBlockOut<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Image {
        source: AnSourceOut<'a>,
    },
    Document {
        source: AnSourceOut<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<Cow<'a, str>>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        input: Value,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        content: AnContentOut<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnSourceOut<'a> {
    Base64 { media_type: Cow<'a, str>, data: Cow<'a, str> },
    Url { url: Cow<'a, str> },
}

#[derive(Serialize)]
struct AnToolOut<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct AnOutputConfigOut {
    format: AnFormatOut,
}

#[derive(Serialize)]
struct AnFormatOut {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: Value,
}

#[derive(Serialize)]
struct AnToolChoiceOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// OpenAI → Anthropic
// ---------------------------------------------------------------------------------------------

/// OpenAI chat-completions request → Anthropic messages request.
///
/// The single-pass transcoder (`transcode.rs`) takes the common shapes; everything else, and every
/// error, goes through the typed translator.
pub fn openai_to_anthropic(body: &[u8], opts: &RequestOptions<'_>) -> Result<Translated, TranslateError> {
    match super::transcode::openai_to_anthropic(body, opts) {
        Some((out, dropped)) => super::settle(out, dropped, opts.strict),
        None => openai_to_anthropic_typed(body, opts),
    }
}

/// The typed translator alone (public for the benchmark's same-run comparison).
#[doc(hidden)]
pub fn openai_to_anthropic_typed(body: &[u8], opts: &RequestOptions<'_>) -> Result<Translated, TranslateError> {
    let (req, mut dropped): (OaRequest<'_>, _) = parse(body)?;
    reject_openai_only(&req)?;

    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(u64::from(opts.default_max_tokens));
    let thinking = match &req.reasoning_effort {
        Some(effort) => thinking_for_effort(effort.as_str(), max_tokens)?,
        None => None,
    };
    if let Some(t) = &req.temperature {
        if !t.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) {
            return Err(err(
                "temperature",
                "Anthropic accepts 0 to 1 (OpenAI's 0 to 2 has no faithful mapping above 1)",
            ));
        }
    }

    let tools = match req.tools {
        Some(tools) => Some(openai_tools(tools, opts.structured_outputs, &mut dropped)?),
        None => None,
    };
    let has_tools = tools.as_ref().is_some_and(|t| !t.is_empty());
    let mut tool_choice = match req.tool_choice {
        Some(choice) => Some(openai_tool_choice(choice)?),
        None => None,
    };
    if req.parallel_tool_calls == Some(false) {
        match &mut tool_choice {
            Some(choice) if choice.kind != "none" => choice.disable_parallel_tool_use = Some(true),
            None if has_tools => {
                tool_choice = Some(AnToolChoiceOut { kind: "auto", name: None, disable_parallel_tool_use: Some(true) });
            }
            _ => {}
        }
    }

    if thinking.is_some() {
        if req.temperature.as_ref().is_some_and(|t| t.as_f64() != Some(1.0)) {
            return Err(err(
                "temperature",
                "Anthropic accepts only temperature 1 with thinking (reasoning_effort) enabled",
            ));
        }
        if req.top_p.as_ref().is_some_and(|p| !p.as_f64().is_some_and(|v| (0.95..=1.0).contains(&v))) {
            return Err(err(
                "top_p",
                "Anthropic accepts only top_p from 0.95 to 1 with thinking (reasoning_effort) enabled",
            ));
        }
        if tool_choice.as_ref().is_some_and(|c| c.kind == "any" || c.kind == "tool") {
            return Err(err("tool_choice", "Anthropic cannot force tool use with thinking (reasoning_effort) enabled"));
        }
    }

    let output_config = match req.response_format.and_then(|rf| rf.json_schema.map(|s| (rf.kind, s))) {
        Some((kind, _)) if kind.as_ref().map(S::as_str) != Some("json_schema") => None,
        Some(_) if !opts.structured_outputs => {
            return Err(err(
                "response_format",
                "this model is not configured for structured outputs (models.NAME.structured_outputs)",
            ))
        }
        Some((_, schema)) => Some(AnOutputConfigOut {
            format: AnFormatOut {
                kind: "json_schema",
                schema: required(schema.schema, "response_format.json_schema", "schema")?,
            },
        }),
        None => None,
    };
    let (system, messages) = openai_messages(required(req.messages, "", "messages")?, &mut dropped)?;

    let out = AnOut {
        model: opts.upstream_model,
        system,
        messages,
        max_tokens,
        metadata: req.user.map(|u| AnMetadataOut { user_id: u.0 }),
        stop_sequences: req.stop.map(|s| match s {
            StrOrSeq::Str(s) => vec![s],
            StrOrSeq::Seq(v) => v.into_iter().map(|s| s.0).collect(),
        }),
        stream: req.stream,
        temperature: req.temperature,
        top_p: req.top_p,
        thinking,
        tools,
        tool_choice,
        output_config,
    };
    super::settle(to_json(&out)?, dropped, opts.strict)
}

/// The OpenAI parameters with no Anthropic counterpart that change the result: 400 unless neutral.
fn reject_openai_only(req: &OaRequest<'_>) -> Result<(), TranslateError> {
    if let Some(rf) = &req.response_format {
        match rf.kind.as_ref().map(S::as_str) {
            Some("text" | "json_schema") => {}
            Some("json_object") => {
                return Err(err(
                    "response_format",
                    "Anthropic has no schema-less JSON mode; send response_format json_schema with the object's schema",
                ))
            }
            _ => return Err(err("response_format.type", "text or json_schema")),
        }
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(err("n", "Anthropic returns one choice per request"));
    }
    if req.logprobs == Some(true) {
        return Err(err("logprobs", "Anthropic does not return log probabilities"));
    }
    if req.top_logprobs.is_some() {
        return Err(err("top_logprobs", "Anthropic does not return log probabilities"));
    }
    if req.frequency_penalty.as_ref().is_some_and(is_nonzero) {
        return Err(err("frequency_penalty", "Anthropic has no frequency penalty"));
    }
    if req.presence_penalty.as_ref().is_some_and(is_nonzero) {
        return Err(err("presence_penalty", "Anthropic has no presence penalty"));
    }
    if req.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
        return Err(err("logit_bias", "Anthropic has no logit bias"));
    }
    if req.modalities.as_ref().is_some_and(|m| m.iter().any(|m| m != "text")) {
        return Err(err("modalities", "only text output can be requested from an Anthropic model"));
    }
    let rejected = [
        ("audio", req.audio.is_some(), "Anthropic models do not produce audio"),
        ("prediction", req.prediction.is_some(), "Anthropic has no predicted outputs"),
        ("web_search_options", req.web_search_options.is_some(), "use an OpenAI model for built-in web search"),
        ("functions", req.functions.is_some(), "legacy functions are not translated; use tools"),
        ("function_call", req.function_call.is_some(), "legacy function_call is not translated; use tool_choice"),
    ];
    for (param, present, why) in rejected {
        if present {
            return Err(err(param, why));
        }
    }
    Ok(())
}

/// `reasoning_effort` → thinking budget, capped below `max_tokens`.
fn thinking_for_effort(effort: &str, max_tokens: u64) -> Result<Option<AnThinkingOut>, TranslateError> {
    let budget: u64 = match effort {
        "none" => return Ok(None),
        "minimal" => 1024,
        "low" => 2048,
        "medium" => 8192,
        "high" => 16384,
        "xhigh" => 32768,
        "max" => 65536,
        other => {
            return Err(err(
                "reasoning_effort",
                format!("'{other}' has no Anthropic thinking budget (none, minimal, low, medium, high, xhigh, max)"),
            ))
        }
    };
    let budget = budget.min(max_tokens.saturating_sub(1));
    if budget < 1024 {
        return Err(err(
            "reasoning_effort",
            format!("Anthropic needs a thinking budget of at least 1024 tokens below max_tokens, and max_tokens is {max_tokens}"),
        ));
    }
    Ok(Some(AnThinkingOut { kind: "enabled", budget_tokens: budget }))
}

/// Function tools; `strict` goes along where the model takes strict tool use (structured
/// outputs), else it is dropped.
fn openai_tools<'a>(
    tools: Vec<OaTool<'a>>,
    structured_outputs: bool,
    dropped: &mut Vec<String>,
) -> Result<Vec<AnToolOut<'a>>, TranslateError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let path = at_index("", "tools", i);
        let kind = required(tool.kind, &path, "type")?;
        if kind.as_str() != "function" {
            return Err(err(
                at(&path, "type"),
                format!("'{}' tools have no Anthropic counterpart (only function tools)", kind.as_str()),
            ));
        }
        let f = required(tool.function, &path, "function")?;
        let fpath = at(&path, "function");
        out.push(AnToolOut {
            name: required(f.name, &fpath, "name")?.0,
            description: f.description.map(|d| d.0),
            input_schema: f.parameters.unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
            strict: match f.strict {
                Some(strict) if structured_outputs => Some(strict),
                Some(_) => {
                    dropped.push(at(&fpath, "strict"));
                    None
                }
                None => None,
            },
        });
    }
    Ok(out)
}

fn openai_tool_choice<'a>(choice: StrOrObj<'a, OaToolChoice<'a>>) -> Result<AnToolChoiceOut<'a>, TranslateError> {
    let kind = match choice {
        StrOrObj::Str(s) => match &*s {
            "auto" => "auto",
            "required" => "any",
            "none" => "none",
            other => {
                return Err(err("tool_choice", format!("'{other}' is not a tool_choice mode (auto, required, none)")))
            }
        },
        StrOrObj::Obj(o) => {
            let kind = required(o.kind, "tool_choice", "type")?;
            if kind.as_str() != "function" {
                return Err(err("tool_choice.type", format!("'{}' has no Anthropic counterpart", kind.as_str())));
            }
            let f = required(o.function, "tool_choice", "function")?;
            let name = required(f.name, "tool_choice.function", "name")?;
            return Ok(AnToolChoiceOut { kind: "tool", name: Some(name.0), disable_parallel_tool_use: None });
        }
    };
    Ok(AnToolChoiceOut { kind, name: None, disable_parallel_tool_use: None })
}

/// Messages: hoists system/developer texts, merges tool results (and a user message right after
/// them) into one user message.
fn openai_messages<'a>(
    messages: Vec<OaMessage<'a>>,
    dropped: &mut Vec<String>,
) -> Result<(Vec<AnBlockOut<'a>>, Vec<AnMsgOut<'a>>), TranslateError> {
    let mut system = Vec::new();
    let mut out: Vec<AnMsgOut<'_>> = Vec::with_capacity(messages.len());
    // The last message in `out` is a user message made of tool results that a following tool or
    // user message joins.
    let mut open_results = false;
    for (i, m) in messages.into_iter().enumerate() {
        let path = at_index("", "messages", i);
        let present = m.present();
        let role = required(m.role, &path, "role")?;
        match role.as_str() {
            "system" | "developer" => {
                let what = format!("a {} message", role.as_str());
                check_fields(&path, &present, &["content", "name"], dropped);
                match required(m.content, &path, "content")? {
                    StrOrSeq::Str(s) => {
                        if !s.is_empty() {
                            system.push(AnBlockOut::Text { text: s });
                        }
                    }
                    StrOrSeq::Seq(parts) => {
                        for (j, p) in parts.into_iter().enumerate() {
                            let text = openai_text_part(p, &at_index(&path, "content", j), &what, dropped)?;
                            if !text.is_empty() {
                                system.push(AnBlockOut::Text { text });
                            }
                        }
                    }
                }
            }
            "user" => {
                check_fields(&path, &present, &["content", "name"], dropped);
                let content = required(m.content, &path, "content")?;
                match out.last_mut() {
                    Some(AnMsgOut { content: AnContentOut::Blocks(blocks), .. }) if open_results => match content {
                        StrOrSeq::Str(text) => blocks.push(AnBlockOut::Text { text }),
                        StrOrSeq::Seq(parts) => {
                            for (j, p) in parts.into_iter().enumerate() {
                                blocks.push(openai_user_part(p, &at_index(&path, "content", j), dropped)?);
                            }
                        }
                    },
                    _ => {
                        let content = match content {
                            StrOrSeq::Str(text) => AnContentOut::Text(text),
                            StrOrSeq::Seq(parts) => {
                                let mut blocks = Vec::with_capacity(parts.len());
                                for (j, p) in parts.into_iter().enumerate() {
                                    blocks.push(openai_user_part(p, &at_index(&path, "content", j), dropped)?);
                                }
                                AnContentOut::Blocks(blocks)
                            }
                        };
                        out.push(AnMsgOut { role: "user", content });
                    }
                }
                open_results = false;
            }
            "assistant" => {
                check_fields(
                    &path,
                    &present,
                    &[
                        "content",
                        "name",
                        "tool_calls",
                        "refusal",
                        "reasoning_content",
                        "annotations",
                        "audio",
                        "function_call",
                    ],
                    dropped,
                );
                if m.audio.is_some() {
                    return Err(err(at(&path, "audio"), "earlier audio replies cannot be sent to an Anthropic model"));
                }
                if m.function_call.is_some() {
                    return Err(err(
                        at(&path, "function_call"),
                        "legacy function_call is not translated; use tool_calls",
                    ));
                }
                out.push(AnMsgOut {
                    role: "assistant",
                    content: openai_assistant(m.content, m.refusal, m.tool_calls, &path, dropped)?,
                });
                open_results = false;
            }
            "tool" => {
                check_fields(&path, &present, &["content", "tool_call_id", "name"], dropped);
                let tool_use_id = required(m.tool_call_id, &path, "tool_call_id")?.0;
                let content = match required(m.content, &path, "content")? {
                    StrOrSeq::Str(s) => AnContentOut::Text(s),
                    StrOrSeq::Seq(parts) => {
                        let mut blocks = Vec::with_capacity(parts.len());
                        for (j, p) in parts.into_iter().enumerate() {
                            let text = openai_text_part(p, &at_index(&path, "content", j), "a tool message", dropped)?;
                            blocks.push(AnBlockOut::Text { text });
                        }
                        AnContentOut::Blocks(blocks)
                    }
                };
                let block = AnBlockOut::ToolResult { tool_use_id, content };
                match out.last_mut() {
                    Some(AnMsgOut { content: AnContentOut::Blocks(blocks), .. }) if open_results => blocks.push(block),
                    _ => out.push(AnMsgOut { role: "user", content: AnContentOut::Blocks(vec![block]) }),
                }
                open_results = true;
            }
            "function" => {
                return Err(err(at(&path, "role"), "the legacy function role is not translated; use tool messages"))
            }
            other => return Err(err(at(&path, "role"), format!("unknown role '{other}'"))),
        }
    }
    Ok((system, out))
}

/// A part that must be text (system, developer, tool messages).
fn openai_text_part<'a>(
    p: OaPart<'a>,
    path: &str,
    what: &str,
    dropped: &mut Vec<String>,
) -> Result<Cow<'a, str>, TranslateError> {
    let kind = required(p.kind.as_ref(), path, "type")?;
    if kind.as_str() != "text" {
        return Err(err(at(path, "type"), format!("only text parts are allowed in {what}")));
    }
    check_fields(path, &p.present(), &["text"], dropped);
    Ok(required(p.text, path, "text")?.0)
}

fn openai_user_part<'a>(
    mut p: OaPart<'a>,
    path: &str,
    dropped: &mut Vec<String>,
) -> Result<AnBlockOut<'a>, TranslateError> {
    let kind = required(p.kind.take(), path, "type")?;
    let present = p.present();
    match kind.as_str() {
        "text" => {
            check_fields(path, &present, &["text"], dropped);
            Ok(AnBlockOut::Text { text: required(p.text, path, "text")?.0 })
        }
        "image_url" => {
            check_fields(path, &present, &["image_url"], dropped);
            let ipath = at(path, "image_url");
            let image = required(p.image_url, path, "image_url")?;
            let url = required(image.url, &ipath, "url")?.0;
            let source = if let Some((media, data)) = data_url(&url) {
                AnSourceOut::Base64 { media_type: slice(&url, media), data: slice(&url, data) }
            } else if is_http_url(&url) {
                AnSourceOut::Url { url }
            } else {
                return Err(err(at(&ipath, "url"), "must be an http(s) URL or a data:<media type>;base64,<data> URL"));
            };
            Ok(AnBlockOut::Image { source })
        }
        "file" => {
            check_fields(path, &present, &["file"], dropped);
            let fpath = at(path, "file");
            let file = required(p.file, path, "file")?;
            if file.file_id.is_some() {
                return Err(err(
                    at(&fpath, "file_id"),
                    "files uploaded to OpenAI cannot be used with an Anthropic model; send file_data",
                ));
            }
            let data = required(file.file_data, &fpath, "file_data")?.0;
            let pdf = data_url(&data).filter(|(media, _)| {
                data.get(media.clone()).is_some_and(|m| m.eq_ignore_ascii_case("application/pdf"))
            });
            let Some((_, payload)) = pdf else {
                return Err(err(
                    at(&fpath, "file_data"),
                    "must be a data:application/pdf;base64,<data> URL (Anthropic takes PDF documents)",
                ));
            };
            Ok(AnBlockOut::Document {
                source: AnSourceOut::Base64 {
                    media_type: Cow::Borrowed("application/pdf"),
                    data: slice(&data, payload),
                },
                title: file.filename.map(|f| f.0),
            })
        }
        "input_audio" => Err(err(at(path, "type"), "Anthropic models do not take audio input")),
        other => Err(err(at(path, "type"), format!("'{other}' parts are not valid in a user message"))),
    }
}

fn openai_assistant<'a>(
    content: Option<StrOrSeq<'a, OaPart<'a>>>,
    refusal: Option<S<'a>>,
    tool_calls: Option<Vec<OaToolCall<'a>>>,
    path: &str,
    dropped: &mut Vec<String>,
) -> Result<AnContentOut<'a>, TranslateError> {
    let tool_calls = tool_calls.unwrap_or_default();
    let mut blocks = Vec::with_capacity(tool_calls.len() + 1);
    match content {
        Some(StrOrSeq::Str(s)) if tool_calls.is_empty() && refusal.is_none() => return Ok(AnContentOut::Text(s)),
        Some(StrOrSeq::Str(s)) => {
            if !s.is_empty() {
                blocks.push(AnBlockOut::Text { text: s });
            }
        }
        Some(StrOrSeq::Seq(parts)) => {
            for (j, mut p) in parts.into_iter().enumerate() {
                let ppath = at_index(path, "content", j);
                let kind = required(p.kind.take(), &ppath, "type")?;
                let present = p.present();
                let text = match kind.as_str() {
                    "text" => {
                        check_fields(&ppath, &present, &["text"], dropped);
                        required(p.text, &ppath, "text")?
                    }
                    "refusal" => {
                        check_fields(&ppath, &present, &["refusal"], dropped);
                        required(p.refusal, &ppath, "refusal")?
                    }
                    other => {
                        return Err(err(
                            at(&ppath, "type"),
                            format!("'{other}' parts are not valid in an assistant message"),
                        ))
                    }
                };
                if !text.0.is_empty() {
                    blocks.push(AnBlockOut::Text { text: text.0 });
                }
            }
        }
        None => {
            if tool_calls.is_empty() && refusal.is_none() {
                return Err(err(at(path, "content"), "an assistant message needs content or tool_calls"));
            }
        }
    }
    if let Some(r) = refusal {
        if !r.0.is_empty() {
            blocks.push(AnBlockOut::Text { text: r.0 });
        }
    }
    for (j, call) in tool_calls.into_iter().enumerate() {
        let cpath = at_index(path, "tool_calls", j);
        if let Some(kind) = &call.kind {
            if kind.as_str() != "function" {
                return Err(err(
                    at(&cpath, "type"),
                    format!("'{}' tool calls have no Anthropic counterpart", kind.as_str()),
                ));
            }
        }
        let id = required(call.id, &cpath, "id")?.0;
        let fpath = at(&cpath, "function");
        let f = required(call.function, &cpath, "function")?;
        let name = required(f.name, &fpath, "name")?.0;
        let arguments = required(f.arguments, &fpath, "arguments")?;
        let input = if arguments.as_str().trim().is_empty() {
            Value::Object(serde_json::Map::new())
        } else {
            match serde_json::from_str::<Value>(arguments.as_str()) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => return Err(err(at(&fpath, "arguments"), "must be a JSON object")),
                Err(e) => return Err(err(at(&fpath, "arguments"), format!("not valid JSON: {}", clean(&e)))),
            }
        };
        blocks.push(AnBlockOut::ToolUse { id, name, input });
    }
    if blocks.is_empty() {
        return Ok(AnContentOut::Text(Cow::Borrowed("")));
    }
    Ok(AnContentOut::Blocks(blocks))
}

// ---------------------------------------------------------------------------------------------
// Anthropic request (input)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct AnRequest<'a> {
    #[serde(borrow, rename = "model")]
    _model: Option<S<'a>>,
    #[serde(borrow)]
    messages: Option<Vec<AnMessage<'a>>>,
    #[serde(borrow)]
    system: Option<StrOrSeq<'a, AnBlock<'a>>>,
    max_tokens: Option<u64>,
    temperature: Option<Number>,
    top_p: Option<Number>,
    top_k: Option<Kept>,
    #[serde(borrow)]
    stop_sequences: Option<Vec<S<'a>>>,
    stream: Option<bool>,
    #[serde(borrow)]
    metadata: Option<AnMetadata<'a>>,
    #[serde(borrow)]
    tools: Option<Vec<AnTool<'a>>>,
    #[serde(borrow)]
    tool_choice: Option<AnToolChoice<'a>>,
    #[serde(borrow)]
    thinking: Option<AnThinking<'a>>,
    #[serde(borrow)]
    output_config: Option<AnOutputConfig<'a>>,
    /// The structured-outputs beta's name for `output_config.format` (deprecated, still sent).
    #[serde(borrow)]
    output_format: Option<AnFormat<'a>>,
    #[serde(rename = "context_management")]
    _context_management: Option<IgnoredAny>,
    #[serde(rename = "service_tier")]
    _service_tier: Option<IgnoredAny>,
    container: Option<Kept>,
    mcp_servers: Option<Kept>,
}

#[derive(Deserialize)]
struct AnOutputConfig<'a> {
    #[serde(borrow)]
    effort: Option<S<'a>>,
    #[serde(borrow)]
    format: Option<AnFormat<'a>>,
}

#[derive(Deserialize)]
struct AnFormat<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct AnMetadata<'a> {
    #[serde(borrow)]
    user_id: Option<S<'a>>,
    // Other keys are dropped (OpenAI's `metadata` means stored-completion tags, not this):
    // serde ignores fields a struct does not name.
}

#[derive(Deserialize)]
struct AnThinking<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct AnToolChoice<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    name: Option<S<'a>>,
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Deserialize)]
struct AnTool<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    name: Option<S<'a>>,
    #[serde(borrow)]
    description: Option<S<'a>>,
    input_schema: Option<Value>,
    strict: Option<bool>,
    #[serde(rename = "cache_control")]
    _cache_control: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AnMessage<'a> {
    #[serde(borrow)]
    role: Option<S<'a>>,
    #[serde(borrow)]
    content: Option<StrOrSeq<'a, AnBlock<'a>>>,
}

/// Any content block of a message or of `system` (the fields of every block type).
#[derive(Deserialize)]
struct AnBlock<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    text: Option<S<'a>>,
    #[serde(borrow)]
    source: Option<Loose<AnSource<'a>>>,
    #[serde(borrow)]
    id: Option<S<'a>>,
    #[serde(borrow)]
    name: Option<S<'a>>,
    input: Option<Value>,
    #[serde(borrow)]
    tool_use_id: Option<S<'a>>,
    #[serde(borrow)]
    content: Option<ToolContent<'a>>,
    is_error: Option<bool>,
    #[serde(rename = "thinking")]
    _thinking: Option<IgnoredAny>,
    #[serde(rename = "signature")]
    _signature: Option<IgnoredAny>,
    #[serde(rename = "data")]
    _data: Option<IgnoredAny>,
    #[serde(rename = "cache_control")]
    _cache_control: Option<IgnoredAny>,
    citations: Option<Value>,
    #[serde(borrow)]
    title: Option<S<'a>>,
    context: Option<Kept>,
}

impl AnBlock<'_> {
    fn present(&self) -> [(&'static str, bool); 11] {
        [
            ("text", self.text.is_some()),
            ("source", self.source.is_some()),
            ("id", self.id.is_some()),
            ("name", self.name.is_some()),
            ("input", self.input.is_some()),
            ("tool_use_id", self.tool_use_id.is_some()),
            ("content", self.content.is_some()),
            ("is_error", self.is_error.is_some()),
            ("citations", self.citations.is_some()),
            ("title", self.title.is_some()),
            ("context", self.context.is_some()),
        ]
    }
}

/// A block inside a `tool_result`'s content.
#[derive(Deserialize)]
struct AnInnerBlock<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    text: Option<S<'a>>,
    #[serde(rename = "cache_control")]
    _cache_control: Option<IgnoredAny>,
    #[serde(rename = "citations")]
    _citations: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AnSource<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<S<'a>>,
    #[serde(borrow)]
    media_type: Option<S<'a>>,
    #[serde(borrow)]
    data: Option<S<'a>>,
    #[serde(borrow)]
    url: Option<S<'a>>,
    file_id: Option<Kept>,
    content: Option<Kept>,
}

impl AnSource<'_> {
    fn present(&self) -> [(&'static str, bool); 5] {
        [
            ("media_type", self.media_type.is_some()),
            ("data", self.data.is_some()),
            ("url", self.url.is_some()),
            ("file_id", self.file_id.is_some()),
            ("content", self.content.is_some()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI request (output of anthropic_to_openai)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct OaOut<'a> {
    model: &'a str,
    messages: Vec<OaMsgOut<'a>>,
    max_completion_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OaStreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<OaToolOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OaToolChoiceOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OaResponseFormatOut>,
}

/// `response_format` json_schema: Anthropic's structured output always holds to its schema,
/// which is what OpenAI's `strict: true` promises.
#[derive(Serialize)]
struct OaResponseFormatOut {
    #[serde(rename = "type")]
    kind: &'static str,
    json_schema: OaJsonSchemaOut,
}

#[derive(Serialize)]
struct OaJsonSchemaOut {
    name: &'static str,
    schema: Value,
    strict: bool,
}

#[derive(Serialize)]
struct OaStreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum OaMsgOut<'a> {
    System {
        content: Cow<'a, str>,
    },
    User {
        content: OaContentOut<'a>,
    },
    Assistant {
        content: Option<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<OaToolCallOut<'a>>,
    },
    Tool {
        tool_call_id: Cow<'a, str>,
        content: Cow<'a, str>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OaContentOut<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<OaPartOut<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OaPartOut<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: OaUrlOut<'a> },
    File { file: OaFileOut<'a> },
}

#[derive(Serialize)]
struct OaUrlOut<'a> {
    url: Cow<'a, str>,
}

#[derive(Serialize)]
struct OaFileOut<'a> {
    filename: Cow<'a, str>,
    file_data: String,
}

#[derive(Serialize)]
struct OaToolCallOut<'a> {
    id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunctionCallOut<'a>,
}

#[derive(Serialize)]
struct OaFunctionCallOut<'a> {
    name: Cow<'a, str>,
    arguments: String,
}

#[derive(Serialize)]
struct OaToolOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OaFunctionDefOut<'a>,
}

#[derive(Serialize)]
struct OaFunctionDefOut<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    parameters: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OaToolChoiceOut<'a> {
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OaNameOut<'a>,
    },
}

#[derive(Serialize)]
struct OaNameOut<'a> {
    name: Cow<'a, str>,
}

// ---------------------------------------------------------------------------------------------
// Anthropic → OpenAI
// ---------------------------------------------------------------------------------------------

/// Anthropic messages request → OpenAI chat-completions request.
///
/// The single-pass transcoder (`transcode.rs`) takes the common shapes; everything else, and every
/// error, goes through the typed translator.
pub fn anthropic_to_openai(body: &[u8], opts: &RequestOptions<'_>) -> Result<Translated, TranslateError> {
    match super::transcode::anthropic_to_openai(body, opts) {
        Some((out, dropped)) => super::settle(out, dropped, opts.strict),
        None => anthropic_to_openai_typed(body, opts),
    }
}

/// The typed translator alone (public for the benchmark's same-run comparison).
#[doc(hidden)]
pub fn anthropic_to_openai_typed(body: &[u8], opts: &RequestOptions<'_>) -> Result<Translated, TranslateError> {
    let (req, mut dropped): (AnRequest<'_>, _) = parse(body)?;
    if req.top_k.is_some() {
        return Err(err("top_k", "OpenAI has no top_k"));
    }
    if req.container.is_some() {
        return Err(err("container", "Anthropic code-execution containers have no OpenAI counterpart"));
    }
    if req.mcp_servers.is_some() {
        return Err(err("mcp_servers", "Anthropic's MCP connector has no OpenAI chat-completions counterpart"));
    }
    let max_tokens = required(req.max_tokens, "", "max_tokens")?;
    if req.stop_sequences.as_ref().is_some_and(|s| s.len() > 4) {
        return Err(err("stop_sequences", "OpenAI accepts at most 4 stop sequences"));
    }
    let mut reasoning_effort = match req.thinking {
        Some(t) => anthropic_thinking(t)?.map(Cow::Borrowed),
        None => None,
    };
    let (effort, format) = match req.output_config {
        Some(c) => (c.effort, c.format.map(|f| (f, "output_config.format"))),
        None => (None, None),
    };
    if let Some(effort) = effort {
        // The caller's explicit effort wins over one derived from a thinking budget.
        reasoning_effort = Some(match effort.as_str() {
            "low" | "medium" | "high" | "xhigh" | "max" => effort.0,
            other => {
                return Err(err(
                    "output_config.effort",
                    format!("'{other}' is not an effort (low, medium, high, xhigh, max)"),
                ))
            }
        });
    }
    let response_format = match format.or(req.output_format.map(|f| (f, "output_format"))) {
        Some((f, path)) => {
            let kind = required(f.kind, path, "type")?;
            if kind.as_str() != "json_schema" {
                return Err(err(at(path, "type"), format!("'{}' is not a structured-output format", kind.as_str())));
            }
            let schema = required(f.schema, path, "schema")?;
            Some(OaResponseFormatOut {
                kind: "json_schema",
                json_schema: OaJsonSchemaOut { name: "output", schema, strict: true },
            })
        }
        None => None,
    };
    let tools = match req.tools {
        Some(tools) => Some(anthropic_tools(tools)?),
        None => None,
    };
    let (tool_choice, parallel_tool_calls) = match req.tool_choice {
        Some(c) => anthropic_tool_choice(c)?,
        None => (None, None),
    };

    let mut messages = Vec::new();
    if let Some(system) = req.system {
        let text = match system {
            StrOrSeq::Str(s) => Some(s),
            StrOrSeq::Seq(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (i, b) in blocks.into_iter().enumerate() {
                    texts.push(anthropic_text_block(b, &at_index("", "system", i), "system", &mut dropped)?);
                }
                (!texts.is_empty()).then(|| join(texts, "\n\n"))
            }
        };
        if let Some(content) = text {
            messages.push(OaMsgOut::System { content });
        }
    }
    anthropic_messages(required(req.messages, "", "messages")?, &mut messages, &mut dropped)?;

    let stream = req.stream;
    let out = OaOut {
        model: opts.upstream_model,
        messages,
        max_completion_tokens: max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req.stop_sequences.filter(|s| !s.is_empty()).map(|s| s.into_iter().map(|s| s.0).collect()),
        stream,
        stream_options: (stream == Some(true)).then_some(OaStreamOptions { include_usage: true }),
        user: req.metadata.and_then(|m| m.user_id).map(|u| fit_openai_user(u.0)),
        tools,
        tool_choice,
        parallel_tool_calls,
        reasoning_effort,
        response_format,
    };
    super::settle(to_json(&out)?, dropped, opts.strict)
}

/// OpenAI refuses a `user` longer than this (Claude Code's `metadata.user_id` is 120 to 190).
const OPENAI_USER_MAX: usize = 64;

/// `metadata.user_id` as an OpenAI `user`: as it is when it fits, else its sha256 in hex (exactly
/// 64 characters), so the same Anthropic user is always the same OpenAI user.
pub(super) fn fit_openai_user(user_id: Cow<'_, str>) -> Cow<'_, str> {
    if user_id.len() <= OPENAI_USER_MAX {
        return user_id;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user_id.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    Cow::Owned(hex)
}

fn anthropic_thinking(t: AnThinking<'_>) -> Result<Option<&'static str>, TranslateError> {
    let kind = required(t.kind, "thinking", "type")?;
    match kind.as_str() {
        "enabled" => {
            let budget = required(t.budget_tokens, "thinking", "budget_tokens")?;
            Ok(Some(match budget {
                0..=4095 => "low",
                4096..=16383 => "medium",
                _ => "high",
            }))
        }
        // The model decides how much to think; `output_config.effort`, when sent, says how hard.
        "adaptive" => {
            if t.budget_tokens.is_some() {
                return Err(err("thinking.budget_tokens", "not valid with adaptive thinking"));
            }
            Ok(None)
        }
        "disabled" => {
            if t.budget_tokens.is_some() {
                return Err(err("thinking.budget_tokens", "not valid with thinking disabled"));
            }
            Ok(None)
        }
        other => Err(err("thinking.type", format!("'{other}' thinking has no OpenAI counterpart"))),
    }
}

fn anthropic_tools(tools: Vec<AnTool<'_>>) -> Result<Vec<OaToolOut<'_>>, TranslateError> {
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let path = at_index("", "tools", i);
        if let Some(kind) = &tool.kind {
            if kind.as_str() != "custom" {
                return Err(err(path, format!("Anthropic server tool '{}' has no OpenAI counterpart", kind.as_str())));
            }
        }
        out.push(OaToolOut {
            kind: "function",
            function: OaFunctionDefOut {
                name: required(tool.name, &path, "name")?.0,
                description: tool.description.map(|d| d.0),
                parameters: required(tool.input_schema, &path, "input_schema")?,
                strict: tool.strict,
            },
        });
    }
    Ok(out)
}

type ToolChoiceAndParallel<'a> = (Option<OaToolChoiceOut<'a>>, Option<bool>);

fn anthropic_tool_choice(c: AnToolChoice<'_>) -> Result<ToolChoiceAndParallel<'_>, TranslateError> {
    let kind = required(c.kind, "tool_choice", "type")?;
    if kind.as_str() != "tool" && c.name.is_some() {
        return Err(err("tool_choice.name", format!("not valid with tool_choice type '{}'", kind.as_str())));
    }
    let choice = match kind.as_str() {
        "auto" => OaToolChoiceOut::Mode("auto"),
        "any" => OaToolChoiceOut::Mode("required"),
        "none" => OaToolChoiceOut::Mode("none"),
        "tool" => {
            let name = required(c.name, "tool_choice", "name")?.0;
            OaToolChoiceOut::Function { kind: "function", function: OaNameOut { name } }
        }
        other => return Err(err("tool_choice.type", format!("unknown tool_choice type '{other}'"))),
    };
    let parallel = (c.disable_parallel_tool_use == Some(true) && kind.as_str() != "none").then_some(false);
    Ok((Some(choice), parallel))
}

/// A block that must be text (system, tool-result contents). Returns its text.
fn anthropic_text_block<'a>(
    b: AnBlock<'a>,
    path: &str,
    what: &str,
    dropped: &mut Vec<String>,
) -> Result<Cow<'a, str>, TranslateError> {
    let kind = required(b.kind.as_ref(), path, "type")?;
    if kind.as_str() != "text" {
        return Err(err(at(path, "type"), format!("only text blocks are allowed in {what}")));
    }
    check_fields(path, &b.present(), &["text"], dropped);
    Ok(required(b.text, path, "text")?.0)
}

fn anthropic_messages<'a>(
    messages: Vec<AnMessage<'a>>,
    out: &mut Vec<OaMsgOut<'a>>,
    dropped: &mut Vec<String>,
) -> Result<(), TranslateError> {
    out.reserve(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let path = at_index("", "messages", i);
        let role = required(m.role, &path, "role")?;
        let content = required(m.content, &path, "content")?;
        match role.as_str() {
            "user" => match content {
                StrOrSeq::Str(s) => out.push(OaMsgOut::User { content: OaContentOut::Text(s) }),
                StrOrSeq::Seq(blocks) => {
                    let mut parts = Vec::with_capacity(blocks.len());
                    let mut tool_messages = 0usize;
                    for (j, b) in blocks.into_iter().enumerate() {
                        let bpath = at_index(&path, "content", j);
                        match anthropic_user_block(b, &bpath, dropped)? {
                            UserItem::Part(p) => parts.push(p),
                            UserItem::Tool(t) => {
                                out.push(t);
                                tool_messages += 1;
                            }
                        }
                    }
                    if !parts.is_empty() || tool_messages == 0 {
                        out.push(OaMsgOut::User { content: OaContentOut::Parts(parts) });
                    }
                }
            },
            "assistant" => match content {
                StrOrSeq::Str(s) => out.push(OaMsgOut::Assistant { content: Some(s), tool_calls: Vec::new() }),
                StrOrSeq::Seq(blocks) => out.push(anthropic_assistant(blocks, &path, dropped)?),
            },
            // A mid-conversation system turn (newer Claude models): OpenAI takes a system message
            // anywhere, so it stays where it stands.
            "system" => {
                let content = match content {
                    StrOrSeq::Str(s) => s,
                    StrOrSeq::Seq(blocks) => {
                        let mut texts = Vec::with_capacity(blocks.len());
                        for (j, b) in blocks.into_iter().enumerate() {
                            texts.push(anthropic_text_block(
                                b,
                                &at_index(&path, "content", j),
                                "a system message",
                                dropped,
                            )?);
                        }
                        join(texts, "\n\n")
                    }
                };
                out.push(OaMsgOut::System { content });
            }
            other => return Err(err(at(&path, "role"), format!("unknown role '{other}' (user, assistant, system)"))),
        }
    }
    Ok(())
}

enum UserItem<'a> {
    Part(OaPartOut<'a>),
    Tool(OaMsgOut<'a>),
}

fn anthropic_user_block<'a>(
    mut b: AnBlock<'a>,
    path: &str,
    dropped: &mut Vec<String>,
) -> Result<UserItem<'a>, TranslateError> {
    let kind = required(b.kind.take(), path, "type")?;
    let present = b.present();
    match kind.as_str() {
        "text" => {
            check_fields(path, &present, &["text"], dropped);
            Ok(UserItem::Part(OaPartOut::Text { text: required(b.text, path, "text")?.0 }))
        }
        "image" => {
            check_fields(path, &present, &["source", "cache_control"], dropped);
            let spath = at(path, "source");
            let source = required(b.source, path, "source")?.known(&spath, "an object")?;
            let skind = required(source.kind.as_ref(), &spath, "type")?;
            let url = match skind.as_str() {
                "base64" => {
                    check_fields(&spath, &source.present(), &["media_type", "data"], dropped);
                    let media = required(source.media_type, &spath, "media_type")?;
                    let data = required(source.data, &spath, "data")?;
                    Cow::Owned(format!("data:{};base64,{}", media.as_str(), data.as_str()))
                }
                "url" => {
                    check_fields(&spath, &source.present(), &["url"], dropped);
                    required(source.url, &spath, "url")?.0
                }
                other => {
                    return Err(err(at(&spath, "type"), format!("'{other}' image sources have no OpenAI counterpart")))
                }
            };
            Ok(UserItem::Part(OaPartOut::ImageUrl { image_url: OaUrlOut { url } }))
        }
        "document" => {
            check_fields(path, &present, &["source", "cache_control", "citations", "title", "context"], dropped);
            if b.context.is_some() {
                return Err(err(at(path, "context"), "document context has no OpenAI counterpart"));
            }
            if b.citations.as_ref().is_some_and(|c| c.get("enabled") == Some(&Value::Bool(true))) {
                return Err(err(at(path, "citations"), "OpenAI chat completions cannot cite documents"));
            }
            let spath = at(path, "source");
            let source = required(b.source, path, "source")?.known(&spath, "an object")?;
            let skind = required(source.kind.as_ref(), &spath, "type")?;
            match skind.as_str() {
                "base64" => {
                    check_fields(&spath, &source.present(), &["media_type", "data"], dropped);
                    let media = required(source.media_type, &spath, "media_type")?;
                    if !media.as_str().eq_ignore_ascii_case("application/pdf") {
                        return Err(err(at(&spath, "media_type"), "OpenAI takes base64 documents as PDF only"));
                    }
                    let data = required(source.data, &spath, "data")?;
                    Ok(UserItem::Part(OaPartOut::File {
                        file: OaFileOut {
                            filename: b.title.map_or(Cow::Borrowed("document.pdf"), |t| t.0),
                            file_data: format!("data:application/pdf;base64,{}", data.as_str()),
                        },
                    }))
                }
                "text" => {
                    check_fields(&spath, &source.present(), &["media_type", "data"], dropped);
                    Ok(UserItem::Part(OaPartOut::Text { text: required(source.data, &spath, "data")?.0 }))
                }
                other => Err(err(at(&spath, "type"), format!("'{other}' document sources have no OpenAI counterpart"))),
            }
        }
        "tool_result" => {
            check_fields(path, &present, &["tool_use_id", "content", "is_error", "cache_control"], dropped);
            let tool_call_id = required(b.tool_use_id, path, "tool_use_id")?.0;
            let text = match b.content {
                None => Cow::Borrowed(""),
                Some(ToolContent::Other) => {
                    return Err(err(at(path, "content"), "must be a string or an array of text blocks"))
                }
                Some(ToolContent::Str(s)) => s,
                Some(ToolContent::Seq(inner)) => {
                    let mut texts = Vec::with_capacity(inner.len());
                    for (k, ib) in inner.into_iter().enumerate() {
                        let ipath = at_index(path, "content", k);
                        let ikind = required(ib.kind.as_ref(), &ipath, "type")?;
                        if ikind.as_str() != "text" {
                            return Err(err(
                                at(&ipath, "type"),
                                format!(
                                    "'{}' blocks in a tool result have no OpenAI counterpart (tool messages take text only)",
                                    ikind.as_str()
                                ),
                            ));
                        }
                        texts.push(required(ib.text, &ipath, "text")?.0);
                    }
                    join(texts, "\n\n")
                }
            };
            let content = if b.is_error == Some(true) { Cow::Owned(format!("Error: {text}")) } else { text };
            Ok(UserItem::Tool(OaMsgOut::Tool { tool_call_id, content }))
        }
        other => Err(err(at(path, "type"), format!("'{other}' blocks have no OpenAI counterpart in a user message"))),
    }
}

fn anthropic_assistant<'a>(
    blocks: Vec<AnBlock<'a>>,
    path: &str,
    dropped: &mut Vec<String>,
) -> Result<OaMsgOut<'a>, TranslateError> {
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for (j, mut b) in blocks.into_iter().enumerate() {
        let bpath = at_index(path, "content", j);
        let kind = required(b.kind.take(), &bpath, "type")?;
        let present = b.present();
        match kind.as_str() {
            "text" => {
                check_fields(&bpath, &present, &["text"], dropped);
                texts.push(required(b.text, &bpath, "text")?.0);
            }
            "tool_use" => {
                check_fields(&bpath, &present, &["id", "name", "input", "cache_control"], dropped);
                let id = required(b.id, &bpath, "id")?.0;
                let name = required(b.name, &bpath, "name")?.0;
                let input = required(b.input, &bpath, "input")?;
                let arguments = serde_json::to_string(&input).map_err(|e| err(at(&bpath, "input"), e.to_string()))?;
                tool_calls.push(OaToolCallOut {
                    id,
                    kind: "function",
                    function: OaFunctionCallOut { name, arguments },
                });
            }
            "thinking" => check_fields(&bpath, &present, &["thinking", "signature", "cache_control"], dropped),
            "redacted_thinking" => check_fields(&bpath, &present, &["data", "cache_control"], dropped),
            other => {
                return Err(err(
                    at(&bpath, "type"),
                    format!("'{other}' blocks have no OpenAI counterpart in an assistant message"),
                ))
            }
        }
    }
    let content = if texts.is_empty() && !tool_calls.is_empty() { None } else { Some(join(texts, "")) };
    Ok(OaMsgOut::Assistant { content, tool_calls })
}

// ---------------------------------------------------------------------------------------------
// Fast path check (tests and the `request_fast_path` fuzz target)
// ---------------------------------------------------------------------------------------------

/// The differential harness (fast path against typed translator): built for the unit tests and,
/// with the `differential` feature, for the `request_fast_path` fuzz target; never in the gateway.
#[cfg(any(test, feature = "differential"))]
pub mod differential {
    use super::*;

    /// A translation direction, for [`check_fast_path`].
    #[doc(hidden)]
    #[derive(Clone, Copy, Debug)]
    pub enum Direction {
        OpenAiToAnthropic,
        AnthropicToOpenAi,
    }

    /// An output as parsed JSON, with OpenAI tool-call `arguments` parsed too: the fast path keeps
    /// the caller's key order inside them, the typed one sorts keys.
    fn comparable(out: &[u8]) -> Result<Value, String> {
        let mut v: Value = serde_json::from_slice(out).map_err(|e| format!("output is not JSON: {e}"))?;
        if let Some(messages) = v.get_mut("messages").and_then(Value::as_array_mut) {
            for m in messages {
                for call in m.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
                    let args = &mut call["function"]["arguments"];
                    let text = args.as_str().ok_or("arguments is not a string")?;
                    *args = serde_json::from_str(text).map_err(|e| format!("arguments is not JSON: {e}"))?;
                }
            }
        }
        Ok(v)
    }

    /// Whether the fast path took `body` (`Ok(true)`), left it to the typed translator (`Ok(false)`),
    /// or produced something the typed translator does not (`Err`, saying what).
    #[doc(hidden)]
    pub fn check_fast_path(dir: Direction, body: &[u8], opts: &RequestOptions<'_>) -> Result<bool, String> {
        let (fast, typed) = match dir {
            Direction::OpenAiToAnthropic => {
                (crate::dialect::transcode::openai_to_anthropic(body, opts), openai_to_anthropic_typed(body, opts))
            }
            Direction::AnthropicToOpenAi => {
                (crate::dialect::transcode::anthropic_to_openai(body, opts), anthropic_to_openai_typed(body, opts))
            }
        };
        let Some((fast, fast_dropped)) = fast else {
            return Ok(false);
        };
        let body = String::from_utf8_lossy(body);
        let typed = typed
            .map_err(|e| format!("{dir:?}: fast path accepted what the typed translator refuses ({e:?}): {body}"))?;
        let fast = crate::dialect::settle(fast, fast_dropped, opts.strict)
            .map_err(|e| format!("{dir:?}: fast path output refused ({e:?}): {body}"))?;
        let (f, t) = (comparable(&fast.body)?, comparable(&typed.body)?);
        if f != t {
            return Err(format!("{dir:?}: outputs differ for {body}\n  fast:  {f}\n  typed: {t}"));
        }
        if fast.dropped != typed.dropped {
            return Err(format!(
                "{dir:?}: dropped fields differ for {body}\n  fast:  {:?}\n  typed: {:?}",
                fast.dropped, typed.dropped
            ));
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::differential::{check_fast_path, Direction};
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const OPTS: RequestOptions<'static> =
        RequestOptions { upstream_model: "up", default_max_tokens: 4096, strict: false, structured_outputs: true };

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("test input serializes")
    }

    fn o2a(v: Value) -> Value {
        let out =
            openai_to_anthropic(&bytes(&v), &OPTS).unwrap_or_else(|e| panic!("openai_to_anthropic failed: {e:?}"));
        serde_json::from_slice(&out.body).expect("output is JSON")
    }

    fn a2o(v: Value) -> Value {
        let out =
            anthropic_to_openai(&bytes(&v), &OPTS).unwrap_or_else(|e| panic!("anthropic_to_openai failed: {e:?}"));
        serde_json::from_slice(&out.body).expect("output is JSON")
    }

    fn o2a_err(v: Value) -> String {
        match openai_to_anthropic(&bytes(&v), &OPTS) {
            Ok(out) => panic!("expected an error, got {}", String::from_utf8_lossy(&out.body)),
            Err(e) => e.param,
        }
    }

    fn a2o_err(v: Value) -> String {
        match anthropic_to_openai(&bytes(&v), &OPTS) {
            Ok(out) => panic!("expected an error, got {}", String::from_utf8_lossy(&out.body)),
            Err(e) => e.param,
        }
    }

    /// An OpenAI body with `extra` merged into a minimal valid request.
    fn oa(extra: Value) -> Value {
        let mut base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        base
    }

    fn an(extra: Value) -> Value {
        let mut base = json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        base
    }

    #[test]
    fn minimal_requests_and_model_replaced() {
        assert_eq!(
            o2a(oa(json!({}))),
            json!({"model": "up", "max_tokens": 4096, "messages": [{"role": "user", "content": "hi"}]})
        );
        assert_eq!(
            a2o(an(json!({}))),
            json!({"model": "up", "max_completion_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn output_is_compact() {
        let out = openai_to_anthropic(&bytes(&oa(json!({"stop": ["a b"]}))), &OPTS).expect("ok");
        let text = String::from_utf8(out.body).expect("utf8");
        assert!(!text.contains('\n') && !text.contains(": ") && !text.contains(", "), "{text}");
    }

    #[test]
    fn openai_tool_calls_round_trip() {
        let openai = json!({"model": "m", "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\",\"n\":[1,2.5,null]}"}},
                {"id": "call_3", "type": "function", "function": {"name": "now", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "tool", "tool_call_id": "call_3", "content": "noon"},
            {"role": "user", "content": "thanks"}
        ]});
        let anthropic = o2a(openai);
        assert_eq!(
            anthropic["messages"],
            json!([
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome", "n": [1, 2.5, null]}},
                    {"type": "tool_use", "id": "call_3", "name": "now", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "tool_result", "tool_use_id": "call_3", "content": "noon"},
                    {"type": "text", "text": "thanks"}
                ]}
            ])
        );
        let mut anthropic = anthropic;
        anthropic["model"] = json!("claude");
        let back = a2o(anthropic);
        let msgs = back["messages"].as_array().expect("messages");
        assert_eq!(msgs.len(), 6);
        assert_eq!(msgs[1]["content"], Value::Null);
        let calls = msgs[1]["tool_calls"].as_array().expect("tool_calls");
        let args: Vec<Value> = calls
            .iter()
            .map(|c| serde_json::from_str(c["function"]["arguments"].as_str().expect("string")).expect("json"))
            .collect();
        assert_eq!(args, vec![json!({"city": "Paris"}), json!({"city": "Rome", "n": [1, 2.5, null]}), json!({})]);
        assert_eq!(calls[1]["id"], "call_2");
        assert_eq!(calls[1]["type"], "function");
        assert_eq!(msgs[2], json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}));
        assert_eq!(msgs[3], json!({"role": "tool", "tool_call_id": "call_2", "content": "21C"}));
        assert_eq!(msgs[4], json!({"role": "tool", "tool_call_id": "call_3", "content": "noon"}));
        assert_eq!(msgs[5], json!({"role": "user", "content": [{"type": "text", "text": "thanks"}]}));
    }

    #[test]
    fn anthropic_tool_use_round_trip() {
        let anthropic = an(json!({"messages": [
            {"role": "user", "content": "look it up"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "ünï \"quoted\"\n", "k": 3}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "is_error": true, "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "and?"}
            ]}
        ]}));
        let openai = a2o(anthropic);
        assert_eq!(
            openai["messages"],
            json!([
                {"role": "user", "content": "look it up"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "search", "arguments": "{\"k\":3,\"q\":\"ünï \\\"quoted\\\"\\n\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: a\n\nb"},
                {"role": "user", "content": [{"type": "text", "text": "and?"}]}
            ])
        );
        let back = o2a(openai);
        assert_eq!(
            back["messages"][1]["content"],
            json!([
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "search", "input": {"q": "ünï \"quoted\"\n", "k": 3}}
            ])
        );
        assert_eq!(
            back["messages"][2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Error: a\n\nb"}, {"type": "text", "text": "and?"}])
        );
    }

    #[test]
    fn tool_results_merge_only_with_the_user_message_right_after() {
        let out = o2a(oa(json!({"messages": [
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": "https://e.com/i.png"}}]},
            {"role": "user", "content": "separate"},
            {"role": "tool", "tool_call_id": "b", "content": "2"}
        ]})));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "a", "content": "1"},
                    {"type": "text", "text": "x"},
                    {"type": "image", "source": {"type": "url", "url": "https://e.com/i.png"}}
                ]},
                {"role": "user", "content": "separate"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "b", "content": "2"}]}
            ])
        );
    }

    #[test]
    fn system_and_developer_messages_are_hoisted_in_order() {
        let out = o2a(oa(json!({"messages": [
            {"role": "system", "content": "one"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "hello"},
            {"role": "system", "content": "three", "name": "ignored"}
        ]})));
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "one"}, {"type": "text", "text": "two"}, {"type": "text", "text": "three"}])
        );
        assert_eq!(
            out["messages"],
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
        );
        // And back: blocks joined into one leading system message, cache_control dropped.
        let back = a2o(an(json!({"system": [
            {"type": "text", "text": "one"},
            {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}}
        ]})));
        assert_eq!(back["messages"][0], json!({"role": "system", "content": "one\n\ntwo"}));
    }

    #[test]
    fn max_tokens_rules() {
        assert_eq!(o2a(oa(json!({"max_tokens": 10})))["max_tokens"], 10);
        assert_eq!(o2a(oa(json!({"max_tokens": 10, "max_completion_tokens": 20})))["max_tokens"], 20);
        assert_eq!(o2a(oa(json!({"max_tokens": null})))["max_tokens"], 4096);
        let opts =
            RequestOptions { upstream_model: "x", default_max_tokens: 77, strict: false, structured_outputs: true };
        let out = openai_to_anthropic(&bytes(&oa(json!({}))), &opts).expect("ok");
        assert_eq!(serde_json::from_slice::<Value>(&out.body).expect("json")["max_tokens"], 77);
        assert_eq!(a2o_err(json!({"model": "m", "messages": []})), "max_tokens");
    }

    #[test]
    fn temperature_limits() {
        assert_eq!(o2a(oa(json!({"temperature": 1})))["temperature"], 1);
        assert_eq!(o2a(oa(json!({"temperature": 0.25, "top_p": 0.5})))["top_p"], 0.5);
        assert_eq!(o2a_err(oa(json!({"temperature": 1.01}))), "temperature");
        assert_eq!(o2a_err(oa(json!({"temperature": 2}))), "temperature");
        assert_eq!(o2a_err(oa(json!({"temperature": -0.5}))), "temperature");
        // With thinking: only temperature 1, top_p >= 0.95, no forced tool use.
        let think = json!({"reasoning_effort": "low", "max_tokens": 5000});
        let with = |extra: Value| {
            let mut v = oa(think.clone());
            if let (Some(b), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            v
        };
        assert_eq!(
            o2a(with(json!({"temperature": 1.0, "top_p": 0.95})))["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert_eq!(o2a_err(with(json!({"temperature": 0.7}))), "temperature");
        assert_eq!(o2a_err(with(json!({"top_p": 0.9}))), "top_p");
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        assert_eq!(o2a_err(with(json!({"tools": tools, "tool_choice": "required"}))), "tool_choice");
        assert_eq!(o2a(with(json!({"tools": tools, "tool_choice": "auto"})))["tool_choice"], json!({"type": "auto"}));
    }

    #[test]
    fn reasoning_effort_budgets() {
        let budget = |effort: &str, max: u64| {
            o2a(oa(json!({"reasoning_effort": effort, "max_completion_tokens": max})))["thinking"].clone()
        };
        assert_eq!(budget("minimal", 4096), json!({"type": "enabled", "budget_tokens": 1024}));
        assert_eq!(budget("low", 4096), json!({"type": "enabled", "budget_tokens": 2048}));
        assert_eq!(budget("medium", 32000), json!({"type": "enabled", "budget_tokens": 8192}));
        assert_eq!(budget("high", 32000), json!({"type": "enabled", "budget_tokens": 16384}));
        assert_eq!(budget("high", 4096), json!({"type": "enabled", "budget_tokens": 4095}));
        assert_eq!(budget("low", 1025), json!({"type": "enabled", "budget_tokens": 1024}));
        assert_eq!(budget("none", 4096), Value::Null);
        assert_eq!(o2a_err(oa(json!({"reasoning_effort": "low", "max_tokens": 1024}))), "reasoning_effort");
        assert_eq!(o2a_err(oa(json!({"reasoning_effort": "extreme"}))), "reasoning_effort");
        // xhigh and max: the larger budgets, still capped below max_tokens.
        let budget = |effort: &str, max: u64| {
            o2a(oa(json!({"reasoning_effort": effort, "max_completion_tokens": max})))["thinking"]["budget_tokens"]
                .clone()
        };
        assert_eq!(budget("xhigh", 64000), 32768);
        assert_eq!(budget("max", 100000), 65536);
        assert_eq!(budget("max", 20000), 19999);
        // And back.
        let effort =
            |b: u64| a2o(an(json!({"thinking": {"type": "enabled", "budget_tokens": b}})))["reasoning_effort"].clone();
        assert_eq!(effort(1024), "low");
        assert_eq!(effort(4095), "low");
        assert_eq!(effort(4096), "medium");
        assert_eq!(effort(16383), "medium");
        assert_eq!(effort(16384), "high");
        assert_eq!(a2o(an(json!({"thinking": {"type": "disabled"}})))["reasoning_effort"], Value::Null);
    }

    #[test]
    fn tool_choice_and_parallel_tool_calls() {
        let tools = json!([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}, "strict": true}}]);
        let out = o2a(oa(json!({"tools": tools, "parallel_tool_calls": false})));
        assert_eq!(
            out["tools"],
            json!([{"name": "f", "description": "d", "input_schema": {"type": "object"}, "strict": true}])
        );
        // A model without structured outputs cannot promise strict tool input: dropped, reported.
        let plain = RequestOptions { structured_outputs: false, ..OPTS };
        let out = openai_to_anthropic(&bytes(&oa(json!({"tools": tools}))), &plain).expect("translates");
        assert_eq!(out.dropped, ["tools[0].function.strict"]);
        let stripped: Value = serde_json::from_slice(&out.body).expect("json");
        assert_eq!(stripped["tools"], json!([{"name": "f", "description": "d", "input_schema": {"type": "object"}}]));
        let out = o2a(oa(json!({"tools": tools, "parallel_tool_calls": false})));
        assert_eq!(out["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
        let choice = |c: Value| {
            o2a(oa(json!({"tools": tools, "tool_choice": c, "parallel_tool_calls": false})))["tool_choice"].clone()
        };
        assert_eq!(choice(json!("required")), json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(choice(json!("none")), json!({"type": "none"}));
        assert_eq!(
            choice(json!({"type": "function", "function": {"name": "f"}})),
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
        );
        // Without tools, parallel_tool_calls: false adds nothing (Anthropic rejects tool_choice without tools).
        assert_eq!(o2a(oa(json!({"parallel_tool_calls": false})))["tool_choice"], Value::Null);
        assert_eq!(o2a(oa(json!({"tools": tools, "parallel_tool_calls": true})))["tool_choice"], Value::Null);
        // Missing parameters → an empty object schema.
        assert_eq!(
            o2a(oa(json!({"tools": [{"type": "function", "function": {"name": "g"}}]})))["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {}})
        );

        let a = |c: Value| {
            let out = a2o(an(json!({"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": c})));
            (out["tool_choice"].clone(), out["parallel_tool_calls"].clone())
        };
        assert_eq!(a(json!({"type": "auto"})), (json!("auto"), Value::Null));
        assert_eq!(a(json!({"type": "any", "disable_parallel_tool_use": true})), (json!("required"), json!(false)));
        assert_eq!(
            a(json!({"type": "tool", "name": "f"})),
            (json!({"type": "function", "function": {"name": "f"}}), Value::Null)
        );
        assert_eq!(a(json!({"type": "none"})), (json!("none"), Value::Null));
        assert_eq!(a(json!({"type": "auto", "disable_parallel_tool_use": false})), (json!("auto"), Value::Null));
    }

    #[test]
    fn images_and_documents() {
        let out = o2a(oa(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "HTTPS://example.com/cat.jpg"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "r.pdf"}}
        ]}]})));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "HTTPS://example.com/cat.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}, "title": "r.pdf"}
            ])
        );
        // An escaped slash (owned string path) parses the same.
        let raw = br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image\/jpeg;base64,AAA\u003d"}}]}]}"#;
        let v: Value = serde_json::from_slice(&openai_to_anthropic(raw, &OPTS).expect("ok").body).expect("json");
        assert_eq!(
            v["messages"][0]["content"][0]["source"],
            json!({"type": "base64", "media_type": "image/jpeg", "data": "AAA="})
        );

        let back = a2o(an(json!({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}, "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "url", "url": "https://e.com/a.png"}},
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain doc"}, "title": "t"}
        ]}]})));
        assert_eq!(
            back["messages"][0]["content"],
            json!([
                {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}},
                {"type": "image_url", "image_url": {"url": "https://e.com/a.png"}},
                {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
                {"type": "text", "text": "plain doc"}
            ])
        );
    }

    #[test]
    fn data_url_parsing() {
        let parts = |s: &str| data_url(s).map(|(m, d)| (s[m].to_owned(), s[d].to_owned()));
        assert_eq!(parts("data:image/png;base64,AA=="), Some(("image/png".into(), "AA==".into())));
        assert_eq!(parts("DATA:image/png;charset=x;BASE64,"), Some(("image/png".into(), String::new())));
        assert_eq!(parts("data:;base64,AA"), None);
        assert_eq!(parts("data:image/png,AA"), None);
        assert_eq!(parts("data:image/png;base64"), None);
        assert_eq!(parts("data:"), None);
        assert_eq!(parts("dat"), None);
        assert_eq!(parts("dätä:x;base64,"), None);
        assert_eq!(parts("data:é;base64,ü"), Some(("é".into(), "ü".into())));
    }

    #[test]
    fn stop_stream_user_metadata() {
        let out = o2a(oa(
            json!({"stop": "END", "stream": true, "stream_options": {"include_usage": true}, "user": "u-1", "seed": 7, "store": false}),
        ));
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["stream"], true);
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
        assert!(out.get("stream_options").is_none() && out.get("seed").is_none());
        let back = a2o(an(
            json!({"stop_sequences": ["a", "b"], "stream": true, "metadata": {"user_id": "u-2", "other": 1}, "top_p": 0.9}),
        ));
        assert_eq!(back["stop"], json!(["a", "b"]));
        assert_eq!(back["stream_options"], json!({"include_usage": true}));
        assert_eq!(back["user"], "u-2");
        assert_eq!(back["top_p"], 0.9);
        assert!(a2o(an(json!({"stream": false}))).get("stream_options").is_none());
    }

    #[test]
    fn openai_error_params() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
            (json!({"presence_penalty": -1}), "presence_penalty"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"response_format": {"type": "json_object"}}), "response_format"),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"audio": {"voice": "alloy"}}), "audio"),
            (json!({"prediction": {"type": "content", "content": "x"}}), "prediction"),
            (json!({"web_search_options": {}}), "web_search_options"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
            (json!({"temperature": "hot"}), "temperature"),
            (json!({"messages": "hi"}), "messages"),
            (json!({"messages": null}), "messages"),
            (json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}), "tools[0].type"),
            (json!({"tools": [{"type": "function"}]}), "tools[0].function"),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (json!({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}), "tool_choice.type"),
            (json!({"tool_choice": {"type": "function", "function": {}}}), "tool_choice.function.name"),
            (json!({"messages": [{"role": "function", "name": "f", "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "critic", "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"content": "x"}]}), "messages[0].role"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}),
                "messages[0].content[0].file.file_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:text/plain;base64,eA=="}}]}]}),
                "messages[0].content[0].file.file_data",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
                "messages[0].content[0].image_url.url",
            ),
            (json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}), "messages[0].content[0].text"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "refusal", "refusal": "no"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                "messages[0].content[0].type",
            ),
            (json!({"messages": [{"role": "assistant", "content": null}]}), "messages[0].content"),
            (json!({"messages": [{"role": "assistant", "content": "x", "audio": {"id": "a"}}]}), "messages[0].audio"),
            (
                json!({"messages": [{"role": "assistant", "content": "x", "function_call": {"name": "f", "arguments": "{}"}}]}),
                "messages[0].function_call",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
                "messages[0].tool_calls[0].function.arguments",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
                "messages[0].tool_calls[0].id",
            ),
            (
                json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "custom", "custom": {}}]}]}),
                "messages[0].tool_calls[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                "messages[0].content[0].type",
            ),
            (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].tool_call_id"),
            (json!({"messages": [{"role": "tool", "tool_call_id": "a"}]}), "messages[0].content"),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "a", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}]}),
                "messages[0].content[0].type",
            ),
            (json!({"temperature": 1.5}), "temperature"),
            (json!({"reasoning_effort": "high", "max_tokens": 900}), "reasoning_effort"),
            (json!({"max_tokens": -1}), "max_tokens"),
            (json!({"stop": [1]}), "stop[0]"),
        ];
        for (extra, want) in cases {
            let body = oa(extra.clone());
            assert_eq!(o2a_err(body), want, "for {extra}");
        }
        assert_eq!(openai_to_anthropic(b"[]", &OPTS).map_err(|e| e.param), Err("body".to_owned()));
        assert_eq!(openai_to_anthropic(b"{\"messages\":[]} x", &OPTS).map_err(|e| e.param), Err("body".to_owned()));
        assert_eq!(o2a_err(json!({"model": "m"})), "messages");
    }

    /// Fields the translator does not know, or that do not belong where they stand: dropped and
    /// reported by default; with `params: strict` a 400 naming them, unless the mapping tables
    /// drop that field by rule.
    #[test]
    fn unknown_fields_are_dropped_and_reported() {
        let strict = RequestOptions { strict: true, ..OPTS };
        type Translate = fn(&[u8], &RequestOptions<'_>) -> Result<Translated, TranslateError>;
        let o2a: Translate = openai_to_anthropic;
        let a2o: Translate = anthropic_to_openai;
        let cases: Vec<(Translate, Value, &str, bool)> = vec![
            (o2a, oa(json!({"frobnicate": 1})), "frobnicate", false),
            (o2a, oa(json!({"response_format": {"type": "text", "x": 1}})), "response_format.x", false),
            (o2a, oa(json!({"messages": [{"role": "user", "content": "x", "foo": 1}]})), "messages[0].foo", false),
            (
                o2a,
                oa(json!({"messages": [{"role": "user", "content": "x", "tool_call_id": "a"}]})),
                "messages[0].tool_call_id",
                false,
            ),
            (
                o2a,
                oa(
                    json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "image_url": {"url": "https://x"}}]}]}),
                ),
                "messages[0].content[0].image_url",
                false,
            ),
            (
                o2a,
                oa(json!({"tools": [{"type": "function", "function": {"name": "x", "foo": 1}}]})),
                "tools[0].function.foo",
                false,
            ),
            (o2a, oa(json!({"messages": [{"role": "user", "content": "x", "name": "n"}]})), "messages[0].name", true),
            (o2a, oa(json!({"verbosity": "low"})), "verbosity", true),
            (a2o, an(json!({"frobnicate": {"deep": [1]}})), "frobnicate", false),
            (a2o, an(json!({"messages": [{"role": "user", "content": "x", "name": "n"}]})), "messages[0].name", true),
            (
                a2o,
                an(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "input": {}}]}]})),
                "messages[0].content[0].input",
                false,
            ),
            (
                a2o,
                an(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "bogus": 1}]}]})),
                "messages[0].content[0].bogus",
                false,
            ),
            (a2o, an(json!({"context_management": {"edits": []}})), "context_management", true),
            (
                a2o,
                an(
                    json!({"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}),
                ),
                "system[0].cache_control",
                true,
            ),
        ];
        for (translate, body, path, by_rule) in cases {
            let raw = bytes(&body);
            let out = translate(&raw, &OPTS).unwrap_or_else(|e| panic!("lenient refused {body}: {e:?}"));
            assert_eq!(out.dropped, vec![path.to_owned()], "for {body}");
            match translate(&raw, &strict) {
                Ok(out) => assert!(by_rule, "strict took {body}: {:?}", out.dropped),
                Err(e) => {
                    assert!(!by_rule, "strict refused a field dropped by rule in {body}");
                    assert_eq!(e.param, path, "for {body}");
                }
            }
        }
    }

    #[test]
    fn anthropic_error_params() {
        let img = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}});
        let cases: Vec<(Value, &str)> = vec![
            (json!({"top_k": 5}), "top_k"),
            (json!({"container": "c-1"}), "container"),
            (json!({"mcp_servers": []}), "mcp_servers"),
            (json!({"stop_sequences": ["a", "b", "c", "d", "e"]}), "stop_sequences"),
            (json!({"thinking": {"type": "sometimes"}}), "thinking.type"),
            (json!({"thinking": {"type": "adaptive", "budget_tokens": 2048}}), "thinking.budget_tokens"),
            (json!({"output_config": {"effort": "extreme"}}), "output_config.effort"),
            (json!({"output_config": {"format": {"type": "json_object"}}}), "output_config.format.type"),
            (json!({"output_format": {"type": "json_schema"}}), "output_format.schema"),
            (json!({"thinking": {"type": "enabled"}}), "thinking.budget_tokens"),
            (json!({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}]}), "tools[0]"),
            (
                json!({"tools": [{"name": "f", "input_schema": {}}, {"type": "bash_20250124", "name": "bash"}]}),
                "tools[1]",
            ),
            (json!({"tools": [{"name": "f"}]}), "tools[0].input_schema"),
            (json!({"tool_choice": {"type": "tool"}}), "tool_choice.name"),
            (json!({"tool_choice": {"type": "whatever"}}), "tool_choice.type"),
            (json!({"system": [img.clone()]}), "system[0].type"),
            (json!({"messages": [{"role": "critic", "content": "x"}]}), "messages[0].role"),
            (json!({"messages": [{"role": "system", "content": [img.clone()]}]}), "messages[0].content[0].type"),
            (json!({"messages": [{"role": "user"}]}), "messages[0].content"),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "container_upload", "file_id": "f"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"type": "web_search_tool_result", "tool_use_id": "s", "content": []}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"type": "web_search_tool_result", "tool_use_id": "s", "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": {"a": 1}}]}]}),
                "messages[0].content[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": "https://x"}]}]}),
                "messages[0].content[0].source",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [img.clone()]}]}]}),
                "messages[0].content[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}),
                "messages[0].content[0].tool_use_id",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}]}]}),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "media_type": "text/csv", "data": "AA"}}]}]}),
                "messages[0].content[0].source.media_type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "content", "content": []}}]}]}),
                "messages[0].content[0].source.type",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}, "citations": {"enabled": true}}]}]}),
                "messages[0].content[0].citations",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}, "context": "c"}]}]}),
                "messages[0].content[0].context",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]}]}),
                "messages[0].content[0].type",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}]}),
                "messages[0].content[0].input",
            ),
            (json!({"messages": [{"role": "assistant", "content": [img.clone()]}]}), "messages[0].content[0].type"),
            (
                json!({"messages": [{"role": "assistant", "content": [{"text": "no type"}]}]}),
                "messages[0].content[0].type",
            ),
            (json!({"max_tokens": "many"}), "max_tokens"),
        ];
        for (extra, want) in cases {
            let body = an(extra.clone());
            assert_eq!(a2o_err(body), want, "for {extra}");
        }
        assert_eq!(anthropic_to_openai(b"\"x\"", &OPTS).map_err(|e| e.param), Err("body".to_owned()));
        assert_eq!(a2o_err(json!({"model": "m", "max_tokens": 1})), "messages");
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_crash() {
        let deep = |open: &str, close: &str, n: usize| {
            let mut s = String::from(
                r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":"#,
            );
            s.push_str(&open.repeat(n));
            s.push_str(&close.repeat(n));
            s.push_str("}}]}");
            s
        };
        for body in [deep("[", "]", 100_000), deep("{\"a\":", "}", 100_000)] {
            assert!(openai_to_anthropic(body.as_bytes(), &OPTS).is_err());
            assert!(anthropic_to_openai(body.as_bytes(), &OPTS).is_err());
        }
        // Deeply nested tool arguments (inside a JSON string) are bounded by the same limit.
        let args = "[".repeat(100_000);
        let body = json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": args}}]}]});
        assert_eq!(o2a_err(oa(body)), "messages[0].tool_calls[0].function.arguments");
    }

    #[test]
    fn large_base64_is_carried_through() {
        let data = "QUJD".repeat(1 << 18); // 1 MiB
        let out = o2a(oa(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}}
        ]}]})));
        assert_eq!(out["messages"][0]["content"][0]["source"]["data"].as_str().map(str::len), Some(data.len()));
    }

    #[test]
    fn unescaped_strings_are_borrowed_from_the_body() {
        let body = br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}},{"type":"text","text":"a\nb"}]}]}"#;
        let (req, _): (OaRequest<'_>, _) = parse(body).expect("parses");
        let Some(StrOrSeq::Seq(parts)) = req.messages.and_then(|mut m| m.pop()).and_then(|m| m.content) else {
            panic!("parts")
        };
        let url = parts[0].image_url.as_ref().and_then(|i| i.url.as_ref()).expect("url");
        assert!(matches!(url.0, Cow::Borrowed(_)), "no escapes: borrowed");
        let text = parts[1].text.as_ref().expect("text");
        assert!(matches!(text.0, Cow::Owned(_)) && text.as_str() == "a\nb", "escapes: owned and unescaped");
        let source = match data_url(&url.0) {
            Some((m, d)) => (slice(&url.0, m), slice(&url.0, d)),
            None => panic!("data url"),
        };
        assert!(matches!(source, (Cow::Borrowed("image/png"), Cow::Borrowed("QUJD"))));
    }

    // ---------------------------------------------------------------------------------------
    // Property tests
    // ---------------------------------------------------------------------------------------

    /// Text with unicode, quotes, backslashes and control characters.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![any::<String>(), "[a-zé😀\"\\\\\n\t\u{0}\u{1f}\u{2028} /]{0,12}",]
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1000i32..1000).prop_map(|k| Value::from(f64::from(k) / 8.0)),
            text().prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = Value> {
        prop::collection::btree_map(text(), json_value(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn text_parts() -> impl Strategy<Value = Value> {
        prop::collection::vec(text().prop_map(|t| json!({"type": "text", "text": t})), 1..4).prop_map(Value::Array)
    }

    fn text_or_parts() -> impl Strategy<Value = Value> {
        prop_oneof![text().prop_map(Value::String), text_parts()]
    }

    fn tool_call() -> impl Strategy<Value = Value> {
        (text(), text(), json_object())
            .prop_map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}}))
    }

    fn openai_message() -> impl Strategy<Value = Value> {
        let user_parts = prop::collection::vec(
            prop_oneof![
                text().prop_map(|t| json!({"type": "text", "text": t})),
                "[a-z]{1,8}".prop_map(
                    |p| json!({"type": "image_url", "image_url": {"url": format!("https://example.com/{p}.png")}})
                ),
            ],
            1..4,
        )
        .prop_map(Value::Array);
        prop_oneof![
            (prop_oneof![Just("system"), Just("developer")], text_or_parts())
                .prop_map(|(r, c)| json!({"role": r, "content": c})),
            prop_oneof![text().prop_map(Value::String), user_parts].prop_map(|c| json!({"role": "user", "content": c})),
            (prop::option::of(text_or_parts()), prop::collection::vec(tool_call(), 0..3)).prop_map(|(c, calls)| {
                let c = match (&c, calls.is_empty()) {
                    (None, true) => Some(Value::String(String::new())),
                    _ => c,
                };
                let mut m = json!({"role": "assistant", "content": c});
                if !calls.is_empty() {
                    m["tool_calls"] = Value::Array(calls);
                }
                m
            }),
            (text(), text_or_parts()).prop_map(|(id, c)| json!({"role": "tool", "tool_call_id": id, "content": c})),
        ]
    }

    #[derive(Debug, PartialEq)]
    enum Norm {
        User(Vec<(String, String)>),
        Assistant(String, Vec<(String, String, Value)>),
        Tool(String, String),
    }

    fn texts(content: &Value) -> Vec<String> {
        match content {
            Value::String(s) => vec![s.clone()],
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str().map(str::to_owned)).collect(),
            _ => Vec::new(),
        }
    }

    /// What must survive OpenAI → Anthropic → OpenAI: system text, and per non-system message
    /// its role, texts, images, tool call ids/names/arguments (as JSON values).
    fn normalize(messages: &[Value]) -> (String, Vec<Norm>) {
        let mut system = Vec::new();
        let mut out = Vec::new();
        for m in messages {
            match m["role"].as_str().unwrap_or("") {
                "system" | "developer" => system.extend(texts(&m["content"]).into_iter().filter(|t| !t.is_empty())),
                "user" => {
                    let items = match &m["content"] {
                        Value::String(s) => vec![("text".to_owned(), s.clone())],
                        Value::Array(parts) => parts
                            .iter()
                            .map(|p| match p["type"].as_str() {
                                Some("text") => ("text".to_owned(), p["text"].as_str().unwrap_or("").to_owned()),
                                _ => ("image".to_owned(), p["image_url"]["url"].as_str().unwrap_or("").to_owned()),
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    out.push(Norm::User(items));
                }
                "assistant" => {
                    let calls = m["tool_calls"]
                        .as_array()
                        .map(|calls| {
                            calls
                                .iter()
                                .map(|c| {
                                    let args = c["function"]["arguments"].as_str().unwrap_or("");
                                    let args = if args.is_empty() {
                                        json!({})
                                    } else {
                                        serde_json::from_str(args).unwrap_or(Value::Null)
                                    };
                                    (
                                        c["id"].as_str().unwrap_or("").to_owned(),
                                        c["function"]["name"].as_str().unwrap_or("").to_owned(),
                                        args,
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Norm::Assistant(texts(&m["content"]).concat(), calls));
                }
                "tool" => out.push(Norm::Tool(
                    m["tool_call_id"].as_str().unwrap_or("").to_owned(),
                    texts(&m["content"]).join("\n\n"),
                )),
                other => panic!("unexpected role {other}"),
            }
        }
        (system.join("\n\n"), out)
    }

    fn anthropic_message() -> impl Strategy<Value = Value> {
        let text_block = || text().prop_map(|t| json!({"type": "text", "text": t}));
        let tool_result = (
            text(),
            prop_oneof![text().prop_map(Value::String), prop::collection::vec(text_block(), 0..3).prop_map(Value::Array)],
            any::<bool>(),
        )
            .prop_map(
                |(id, content, is_error)| json!({"type": "tool_result", "tool_use_id": id, "content": content, "is_error": is_error}),
            );
        let user_blocks = (prop::collection::vec(tool_result, 0..3), prop::collection::vec(text_block(), 0..3))
            .prop_filter("a user message needs a block", |(r, t)| !r.is_empty() || !t.is_empty())
            .prop_map(|(mut r, t)| {
                r.extend(t);
                Value::Array(r)
            });
        let tool_use = (text(), text(), json_object())
            .prop_map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        let assistant_blocks = (prop::collection::vec(text_block(), 0..3), prop::collection::vec(tool_use, 0..3))
            .prop_filter("an assistant message needs a block", |(t, u)| !t.is_empty() || !u.is_empty())
            .prop_map(|(mut t, u)| {
                t.extend(u);
                Value::Array(t)
            });
        prop_oneof![
            prop_oneof![text().prop_map(Value::String), user_blocks]
                .prop_map(|c| json!({"role": "user", "content": c})),
            prop_oneof![text().prop_map(Value::String), assistant_blocks]
                .prop_map(|c| json!({"role": "assistant", "content": c})),
        ]
    }

    #[derive(Debug, PartialEq)]
    enum AnNorm {
        User(Vec<(String, String)>),
        Assistant(String, Vec<(String, String, Value)>),
    }

    /// What must survive Anthropic → OpenAI → Anthropic: roles, texts, tool uses, tool results (an
    /// error result comes back as text starting with "Error: "); consecutive user turns are one turn.
    fn an_normalize(messages: &[Value]) -> Vec<AnNorm> {
        let mut out: Vec<AnNorm> = Vec::new();
        for m in messages {
            let blocks = match &m["content"] {
                Value::String(s) => vec![json!({"type": "text", "text": s})],
                Value::Array(b) => b.clone(),
                _ => Vec::new(),
            };
            if m["role"] == "user" {
                let items: Vec<(String, String)> = blocks
                    .iter()
                    .map(|b| match b["type"].as_str() {
                        Some("tool_result") => {
                            let text = match &b["content"] {
                                Value::String(s) => s.clone(),
                                Value::Array(inner) => {
                                    inner.iter().filter_map(|i| i["text"].as_str()).collect::<Vec<_>>().join("\n\n")
                                }
                                _ => String::new(),
                            };
                            let prefix = if b["is_error"] == true { "Error: " } else { "" };
                            (format!("result:{}", b["tool_use_id"].as_str().unwrap_or("")), format!("{prefix}{text}"))
                        }
                        _ => ("text".to_owned(), b["text"].as_str().unwrap_or("").to_owned()),
                    })
                    .collect();
                match out.last_mut() {
                    Some(AnNorm::User(prev)) => prev.extend(items),
                    _ => out.push(AnNorm::User(items)),
                }
            } else {
                let text: String =
                    blocks.iter().filter(|b| b["type"] == "text").filter_map(|b| b["text"].as_str()).collect();
                let uses = blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| {
                        (
                            b["id"].as_str().unwrap_or("").to_owned(),
                            b["name"].as_str().unwrap_or("").to_owned(),
                            b["input"].clone(),
                        )
                    })
                    .collect();
                out.push(AnNorm::Assistant(text, uses));
            }
        }
        out
    }

    /// Field names and values both dialects care about, so random bodies reach deep code paths.
    fn vocab_value() -> impl Strategy<Value = Value> {
        const KEYS: &[&str] = &[
            "role",
            "content",
            "type",
            "text",
            "tool_calls",
            "function",
            "name",
            "arguments",
            "id",
            "tool_call_id",
            "image_url",
            "url",
            "file",
            "file_data",
            "file_id",
            "filename",
            "source",
            "media_type",
            "data",
            "tool_use_id",
            "input",
            "is_error",
            "system",
            "messages",
            "tools",
            "tool_choice",
            "max_tokens",
            "thinking",
            "budget_tokens",
            "reasoning_effort",
            "temperature",
            "top_p",
            "stop",
            "stop_sequences",
            "stream",
            "metadata",
            "user_id",
            "parameters",
            "input_schema",
            "refusal",
            "cache_control",
            "model",
            "user",
            "parallel_tool_calls",
            "disable_parallel_tool_use",
            "title",
            "citations",
            "enabled",
            "signature",
            "n",
        ];
        const WORDS: &[&str] = &[
            "text",
            "image",
            "image_url",
            "file",
            "document",
            "tool_use",
            "tool_result",
            "thinking",
            "redacted_thinking",
            "function",
            "user",
            "assistant",
            "system",
            "developer",
            "tool",
            "auto",
            "any",
            "none",
            "required",
            "enabled",
            "disabled",
            "base64",
            "url",
            "custom",
            "data:image/png;base64,AAAA",
            "data:application/pdf;base64,AAAA",
            "https://x/y.png",
            "{}",
            "{\"a\":1}",
            "",
            "high",
            "low",
            "minimal",
            "application/pdf",
            "text/plain",
        ];
        let leaf = prop_oneof![
            4 => prop::sample::select(WORDS).prop_map(|w| Value::String(w.to_owned())),
            1 => json_leaf(),
            1 => (0u64..20_000).prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(KEYS).prop_map(str::to_owned), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn openai_anthropic_openai_keeps_content(messages in prop::collection::vec(openai_message(), 0..8)) {
            let body = json!({"model": "m", "messages": messages});
            let anthropic = openai_to_anthropic(&bytes(&body), &OPTS);
            prop_assert!(anthropic.is_ok(), "{:?}", anthropic.err());
            let anthropic = anthropic.unwrap_or_default().body;
            // The Anthropic body is valid input for the reverse direction.
            let back = anthropic_to_openai(&anthropic, &OPTS);
            prop_assert!(back.is_ok(), "{:?}", back.err());
            let back: Value = serde_json::from_slice(&back.unwrap_or_default().body).unwrap_or(Value::Null);
            let back_messages = back["messages"].as_array().cloned().unwrap_or_default();
            let (want_system, want) = normalize(&messages);
            let (mut got_system, mut got) = (String::new(), back_messages.as_slice());
            if let Some((first, rest)) = back_messages.split_first() {
                if first["role"] == "system" {
                    got_system = first["content"].as_str().unwrap_or("").to_owned();
                    got = rest;
                }
            }
            prop_assert_eq!(got_system, want_system);
            prop_assert_eq!(normalize(got).1, want);
        }

        #[test]
        fn anthropic_openai_anthropic_keeps_content(messages in prop::collection::vec(anthropic_message(), 1..8), system in prop::option::of(text())) {
            let mut body = json!({"model": "m", "max_tokens": 1000, "messages": messages});
            if let Some(s) = &system {
                body["system"] = json!([{"type": "text", "text": s, "cache_control": {"type": "ephemeral"}}]);
            }
            let openai = anthropic_to_openai(&bytes(&body), &OPTS);
            prop_assert!(openai.is_ok(), "{:?}", openai.err());
            let back = openai_to_anthropic(&openai.unwrap_or_default().body, &OPTS);
            prop_assert!(back.is_ok(), "{:?}", back.err());
            let back: Value = serde_json::from_slice(&back.unwrap_or_default().body).unwrap_or(Value::Null);
            let want_system = system.filter(|s| !s.is_empty()).map(|s| json!([{"type": "text", "text": s}])).unwrap_or(Value::Null);
            prop_assert_eq!(&back["system"], &want_system);
            prop_assert_eq!(back["max_tokens"].as_u64(), Some(1000));
            let back_messages = back["messages"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(an_normalize(&back_messages), an_normalize(&messages));
        }

        #[test]
        fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = openai_to_anthropic(&body, &OPTS);
            let _ = anthropic_to_openai(&body, &OPTS);
        }

        #[test]
        fn never_panics_on_json(v in json_value()) {
            let body = bytes(&v);
            let _ = openai_to_anthropic(&body, &OPTS);
            let _ = anthropic_to_openai(&body, &OPTS);
        }

        #[test]
        fn never_panics_on_request_shaped_json(v in vocab_value(), messages in prop::collection::vec(vocab_value(), 0..4)) {
            let mut v = v;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("messages".to_owned(), Value::Array(messages));
            }
            let body = bytes(&v);
            for out in [openai_to_anthropic(&body, &OPTS), anthropic_to_openai(&body, &OPTS)].into_iter().flatten() {
                // Whatever succeeds is one compact JSON object.
                let parsed: Result<Value, _> = serde_json::from_slice(&out.body);
                prop_assert!(parsed.as_ref().is_ok_and(Value::is_object));
            }
        }

        #[test]
        fn fast_path_takes_and_agrees_on_generated_openai_requests(
            messages in prop::collection::vec(openai_message(), 1..8),
            extras in prop::collection::btree_map(
                prop::sample::select(vec!["max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
                    "user", "tools", "tool_choice", "parallel_tool_calls", "n", "stream_options", "seed", "reasoning_effort"]),
                Just(()), 0..6),
            pretty in any::<bool>(),
        ) {
            let mut body = json!({"model": "m", "messages": messages});
            // With thinking on, Anthropic takes only temperature 1, top_p >= 0.95 and a budget
            // of at least 1024 below max_tokens: pick values inside those limits.
            let thinking = extras.contains_key("reasoning_effort");
            for key in extras.keys() {
                body[*key] = match *key {
                    "max_tokens" | "max_completion_tokens" => json!(if thinking { 4096 } else { 512 }),
                    "temperature" => json!(if thinking { 1.0 } else { 0.25 }),
                    "top_p" => json!(if thinking { 0.95 } else { 0.9 }),
                    "stop" => json!(["END", "\n\n"]),
                    "stream" | "parallel_tool_calls" => json!(false),
                    "user" => json!("user-\"1\""),
                    "tools" => json!([{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]),
                    "tool_choice" => json!("auto"),
                    "n" => json!(1),
                    "reasoning_effort" => json!("low"),
                    "stream_options" => json!({"include_usage": true}),
                    _ => json!(42),
                };
            }
            let bytes = if pretty { serde_json::to_vec_pretty(&body).unwrap_or_default() } else { bytes(&body) };
            prop_assert_eq!(check_fast_path(Direction::OpenAiToAnthropic, &bytes, &OPTS), Ok(true));
        }

        #[test]
        fn fast_path_takes_and_agrees_on_generated_anthropic_requests(
            messages in prop::collection::vec(anthropic_message(), 1..8),
            system in prop::option::of(prop_oneof![text().prop_map(Value::String), text().prop_map(|t| json!([{"type": "text", "text": t, "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "second"}]))]),
            stream in prop::option::of(any::<bool>()),
            pretty in any::<bool>(),
        ) {
            let mut body = json!({"messages": messages, "model": "m", "max_tokens": 1000, "metadata": {"user_id": "u1", "other": [1]},
                "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true}, "stop_sequences": ["x"], "temperature": 0.5});
            // `system` after `messages`, as the Anthropic SDK orders keys: it must still lead.
            if let Some(system) = system {
                body["system"] = system;
            }
            if let Some(stream) = stream {
                body["stream"] = json!(stream);
            }
            let bytes = if pretty { serde_json::to_vec_pretty(&body).unwrap_or_default() } else { bytes(&body) };
            prop_assert_eq!(check_fast_path(Direction::AnthropicToOpenAi, &bytes, &OPTS), Ok(true));
        }

        #[test]
        fn fast_path_agrees_on_request_shaped_json(v in vocab_value(), messages in prop::collection::vec(vocab_value(), 0..4)) {
            let mut v = v;
            if let Some(obj) = v.as_object_mut() {
                obj.insert("messages".to_owned(), Value::Array(messages));
            }
            let body = bytes(&v);
            prop_assert!(check_fast_path(Direction::OpenAiToAnthropic, &body, &OPTS).is_ok());
            prop_assert!(check_fast_path(Direction::AnthropicToOpenAi, &body, &OPTS).is_ok());
        }

        #[test]
        fn fast_path_agrees_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            prop_assert!(check_fast_path(Direction::OpenAiToAnthropic, &body, &OPTS).is_ok());
            prop_assert!(check_fast_path(Direction::AnthropicToOpenAi, &body, &OPTS).is_ok());
        }
    }

    #[test]
    fn fast_path_agrees_on_every_golden_case() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/request");
        let mut taken = Vec::new();
        for (dir, name) in [
            (Direction::OpenAiToAnthropic, "openai_to_anthropic"),
            (Direction::AnthropicToOpenAi, "anthropic_to_openai"),
        ] {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(root.join(name)).expect("golden dir").flatten() {
                let path = entry.path();
                if path.is_dir() && (path.ends_with("errors") || path.ends_with("strict_errors")) {
                    files.extend(
                        std::fs::read_dir(&path)
                            .expect("errors dir")
                            .flatten()
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|x| x == "json")),
                    );
                } else if path.is_dir() {
                    files.push(path.join("in.json"));
                }
            }
            assert!(files.len() > 30, "{name}: golden files not found");
            for file in files {
                let body = std::fs::read(&file).expect("golden file");
                match check_fast_path(dir, &body, &OPTS) {
                    Ok(true) => taken.push(file.display().to_string()),
                    Ok(false) => {}
                    Err(e) => panic!("{}: {e}", file.display()),
                }
            }
        }
        // The fast path must be the common path, not a dead one.
        assert!(taken.len() >= 20, "only {} golden cases took the fast path: {taken:?}", taken.len());
    }

    #[test]
    fn fast_path_takes_sdk_shaped_requests() {
        let openai = json!({
            "model": "claude", "stream": true, "stream_options": {"include_usage": true}, "max_completion_tokens": 300, "user": "u",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is in \"this\" image?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\": \"caf\\u00e9\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "user", "content": "thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}}, "parallel_tool_calls": false
        });
        assert_eq!(check_fast_path(Direction::OpenAiToAnthropic, &bytes(&openai), &OPTS), Ok(true));
        let reasoning = json!({"model": "claude", "reasoning_effort": "high", "max_completion_tokens": 9000, "temperature": 1,
            "messages": [{"role": "user", "content": "Think."}], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto"});
        assert_eq!(check_fast_path(Direction::OpenAiToAnthropic, &bytes(&reasoning), &OPTS), Ok(true));
        let pdf = json!({"model": "claude", "messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0xLjQ=", "filename": "report.pdf"}},
            {"type": "text", "text": "Summarize."}]}]});
        assert_eq!(check_fast_path(Direction::OpenAiToAnthropic, &bytes(&pdf), &OPTS), Ok(true));
        let anthropic = json!({
            "max_tokens": 1024, "model": "gpt", "stream": true, "thinking": {"type": "enabled", "budget_tokens": 8000},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}, {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}, {"type": "text", "text": "Let me look."}, {"type": "tool_use", "id": "tu_1", "name": "look", "input": {"q": "a b", "n": [1, 2.5]}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "a cat"}], "is_error": false}, {"type": "text", "text": "and?"}]}
            ],
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "look", "description": "Looks", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
            "tool_choice": {"type": "auto"}, "metadata": {"user_id": "session-1"}, "context_management": {"edits": []}
        });
        assert_eq!(check_fast_path(Direction::AnthropicToOpenAi, &bytes(&anthropic), &OPTS), Ok(true));
        let documents = json!({"model": "gpt", "max_tokens": 100, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQ="}, "title": "r.pdf", "citations": {"enabled": false}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Notes"}, "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Compare."}]}]});
        assert_eq!(check_fast_path(Direction::AnthropicToOpenAi, &bytes(&documents), &OPTS), Ok(true));
        // Citations turned on cannot be translated: the typed path answers (with its 400).
        let mut cited = documents;
        cited["messages"][0]["content"][0]["citations"] = json!({"enabled": true});
        assert_eq!(check_fast_path(Direction::AnthropicToOpenAi, &bytes(&cited), &OPTS), Ok(false));
        assert!(anthropic_to_openai(&bytes(&cited), &OPTS).is_err());
    }
}
