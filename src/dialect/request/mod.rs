//! Request translation between OpenAI chat completions and Anthropic messages, both directions.
//!
//! One translator per direction (`from_openai.rs`, `from_anthropic.rs`), each a single pass over
//! the body that validates it as JSON and writes the other dialect's JSON as it goes (the cursor
//! and writers are in `dialect/scan.rs`, which says why). Pure: bytes in, bytes out (compact
//! JSON). Nesting is bounded (100 levels inside copied values), and nothing panics.
//!
//! Every field is mapped, dropped (by rule: listed below and in the README's mapping tables), or
//! refused with a [`TranslateError`] naming its JSON path (the proxy turns it into a 400 in the
//! caller's dialect) where dropping would change the kind of answer. A field the translator does
//! not read, at any depth, is dropped too. Nothing is dropped silently: every value left out is
//! noted where it stands, and [`Translated::dropped`] carries their paths to the proxy, which
//! reports them (`x-cheapmodel-dropped`, the access log, `cheapmodel_dropped_params_total`).
//! With `params: strict`, a dropped field no rule names is a 400 instead.
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
//!   16384, capped at `max_tokens - 1`, or at half the model's default when the caller set no
//!   max; `none` means no thinking). With thinking on, Anthropic
//!   accepts only `temperature` 1, `top_p` 0.95..=1 and non-forced `tool_choice`: anything else
//!   is a 400 naming the parameter (the request is not silently changed).
//! - `parallel_tool_calls: false` becomes `disable_parallel_tool_use` on `tool_choice` (an
//!   `auto` choice is created when tools are given and no choice is; nothing with `none`).
//! - `cache_control` on a content part or a tool (not OpenAI's: the extension LiteLLM, OpenRouter
//!   and Portkey take for Claude's prompt cache) goes on the block or tool it stands on, with its
//!   `type` and `ttl`; on a message with string content, on the block that string becomes. One
//!   that is not an object with a `type`, stands on an empty text or on a message with parts is
//!   dropped and reported.
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
//!   a plain-text document becomes a text part (its `title` is dropped and reported); `context` and
//!   `citations: {"enabled": true}` are 400s.
//! - `thinking` / `redacted_thinking` blocks in assistant history are dropped, `cache_control`
//!   and text `citations` everywhere are dropped, `context_management`, `service_tier` and
//!   metadata keys other than `user_id` are dropped.
//! - Text blocks are joined: system and tool-result texts with `"\n\n"` (separate items),
//!   assistant texts with nothing (pieces of one reply, e.g. split by citations).
//! - `max_tokens` is required (as Anthropic requires it).
//!
//! Imports: `scan`. Not the answer or stream translators, `proxy`, `plan` or Pingora.

mod from_anthropic;
mod from_openai;

use std::borrow::Cow;
use std::ops::Range;

use super::scan::{put_text, Str};
use super::{RequestOptions, TranslateError, Translated};

/// Messages between two anchors of the dropped-path walk (`scan::anchor`): each anchor costs a
/// thread-local push on every request, a walk only requests with something dropped or refused.
const MESSAGES_PER_ANCHOR: usize = 8;

/// OpenAI chat-completions request → Anthropic messages request.
pub fn openai_to_anthropic(body: &[u8], opts: &RequestOptions<'_>) -> Result<Translated, TranslateError> {
    super::scan::translate(body, opts.strict, || from_openai::translate(body, opts))
}

/// Anthropic messages request → OpenAI chat-completions request.
pub fn anthropic_to_openai(body: &[u8], opts: &RequestOptions<'_>) -> Result<Translated, TranslateError> {
    super::scan::translate(body, opts.strict, || from_anthropic::translate(body, opts))
}

/// Byte ranges of the media type and the payload of a `data:<media>[;param]*;base64,<data>` URL.
pub(super) fn data_url(s: &[u8]) -> Option<(Range<usize>, Range<usize>)> {
    const PREFIX: &[u8] = b"data:";
    const BASE64: &[u8] = b";base64";
    if !s.get(..PREFIX.len())?.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let comma = memchr::memchr(b',', s)?;
    let meta = s.get(PREFIX.len()..comma)?;
    if !meta.get(meta.len().checked_sub(BASE64.len())?..)?.eq_ignore_ascii_case(BASE64) {
        return None;
    }
    let media_len = memchr::memchr(b';', meta)?;
    let media = &meta[..media_len];
    if media.is_empty() || media.iter().any(u8::is_ascii_whitespace) {
        return None;
    }
    Some((PREFIX.len()..PREFIX.len() + media_len, comma + 1..s.len()))
}

pub(super) fn is_http_url(s: &[u8]) -> bool {
    let lower = |p: &[u8]| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    lower(b"http://") || lower(b"https://")
}

/// `range` of a string's text (`text`, from [`Str::bytes`]) as a JSON string: copied from the
/// body when the string has no escapes (then its text is its bytes), else escaped again.
fn put_piece(out: &mut Vec<u8>, s: Str<'_>, text: &[u8], range: Range<usize>) {
    if s.escaped {
        put_text(out, &String::from_utf8_lossy(text.get(range).unwrap_or_default()));
    } else {
        out.push(b'"');
        out.extend_from_slice(s.raw.get(range).unwrap_or_default());
        out.push(b'"');
    }
}

/// OpenAI refuses a `user` longer than this (Claude Code's `metadata.user_id` is 120 to 190).
pub(super) const OPENAI_USER_MAX: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    const OPTS: RequestOptions<'static> =
        RequestOptions { upstream_model: "up", default_max_tokens: 4096, strict: false, structured_outputs: true };

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).expect("test input serializes")
    }

    fn o2a(v: Value) -> Value {
        o2a_with(v, &OPTS)
    }

    fn o2a_with(v: Value, opts: &RequestOptions) -> Value {
        let out = openai_to_anthropic(&bytes(&v), opts).unwrap_or_else(|e| panic!("openai_to_anthropic failed: {e:?}"));
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
        // Without the caller's max, the model's default (4096 here) is the whole answer's: thinking
        // gets at most half of it, at least 1024.
        let default_max = |effort: &str, default_max_tokens: u32| {
            let opts =
                RequestOptions { upstream_model: "up", default_max_tokens, strict: false, structured_outputs: true };
            let out = o2a_with(oa(json!({"reasoning_effort": effort})), &opts);
            (out["thinking"]["budget_tokens"].clone(), out["max_tokens"].clone())
        };
        assert_eq!(default_max("high", 4096), (json!(2048), json!(4096)));
        assert_eq!(default_max("minimal", 4096), (json!(1024), json!(4096)));
        assert_eq!(default_max("high", 64000), (json!(16384), json!(64000)));
        assert_eq!(default_max("max", 64000), (json!(32000), json!(64000)));
        assert_eq!(default_max("high", 1500), (json!(1024), json!(1500)));
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
        let parts = |s: &str| data_url(s.as_bytes()).map(|(m, d)| (s[m].to_owned(), s[d].to_owned()));
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
    fn escaped_keys_and_values_mean_what_they_spell() {
        let plain = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true}"#;
        let escaped = br#"{"mod\u0065l":"m","max_tok\u0065ns":5,"m\u0065ssages":[{"r\u006fle":"\u0075ser","content":[{"typ\u0065":"t\u0065xt","text":"hi"}]}],"str\u0065am":true}"#;
        for translate in [openai_to_anthropic, anthropic_to_openai] {
            let (a, b) = (translate(plain, &OPTS).expect("plain"), translate(escaped, &OPTS).expect("escaped"));
            let (a, b): (Value, Value) =
                (serde_json::from_slice(&a.body).expect("json"), serde_json::from_slice(&b.body).expect("json"));
            assert_eq!(a, b);
        }
        // A duplicate field is refused, whichever way it is spelled.
        let dup = br#"{"model":"m","messages":[],"m\u0065ssages":[]}"#;
        assert_eq!(openai_to_anthropic(dup, &OPTS).map_err(|e| e.param), Err("messages".to_owned()));
    }

    #[test]
    fn malformed_json_is_a_400_on_the_body_or_the_value() {
        for (body, want) in [
            (&br#"{"model":"m","messages":[{"role":"user","content":"x"}]"#[..], "body"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}]} x"#, "body"),
            (br#"[1]"#, "body"),
            (br#"{"model":"m","max_tokens":"5","messages":[]}"#, "max_tokens"),
            (br#"{"model":"m","messages":[{"role":7,"content":"x"}]}"#, "messages[0].role"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x\q"}]}"#, "messages[0].content"),
        ] {
            assert_eq!(
                openai_to_anthropic(body, &OPTS).map_err(|e| e.param),
                Err(want.to_owned()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn dropped_paths_are_exact_in_long_conversations() {
        // More messages than anchors are kept: the paths must not depend on which were.
        let messages: Vec<Value> =
            (0..300).map(|i| json!({"role": "user", "content": format!("m{i}"), "weight": i})).collect();
        let body = bytes(&oa(json!({"messages": messages, "frobnicate": true})));
        let out = openai_to_anthropic(&body, &OPTS).expect("translates");
        let mut want: Vec<String> = (0..300).map(|i| format!("messages[{i}].weight")).collect();
        want.push("frobnicate".to_owned());
        want.sort();
        assert_eq!(out.dropped, want);
    }

    #[test]
    fn large_base64_is_carried_through() {
        let data = "QUJD".repeat(1 << 18); // 1 MiB
        let out = o2a(oa(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{data}")}}
        ]}]})));
        assert_eq!(out["messages"][0]["content"][0]["source"]["data"].as_str().map(str::len), Some(data.len()));
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
                    let calls: Vec<(String, String, Value)> = m["tool_calls"]
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
                    let text = texts(&m["content"]).concat();
                    // A turn with nothing in it is left out (Anthropic refuses empty content).
                    if !text.is_empty() || !calls.is_empty() {
                        out.push(Norm::Assistant(text, calls));
                    }
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
                    .collect::<Vec<_>>();
                // A turn with nothing in it is left out on the way to Anthropic.
                if !text.is_empty() || !uses.is_empty() {
                    out.push(AnNorm::Assistant(text, uses));
                }
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

        /// The translator validates the whole body as JSON: whatever it accepts, serde_json
        /// parses, and whatever it writes is one JSON object.
        #[test]
        fn accepts_only_json(body in prop::collection::vec(prop_oneof![
            Just(b'{'), Just(b'}'), Just(b'['), Just(b']'), Just(b'"'), Just(b':'), Just(b','), Just(b'\\'),
            Just(b'u'), Just(b'1'), Just(b' '), any::<u8>()], 0..64), model_first in any::<bool>()) {
            let mut full = if model_first {
                br#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"#.to_vec()
            } else {
                br#"{"messages":[{"role":"user","content":"#.to_vec()
            };
            full.extend_from_slice(&body);
            for out in [openai_to_anthropic(&full, &OPTS), anthropic_to_openai(&full, &OPTS)].into_iter().flatten() {
                prop_assert!(serde_json::from_slice::<Value>(&full).is_ok(), "accepted {:?}", String::from_utf8_lossy(&full));
                prop_assert!(serde_json::from_slice::<Value>(&out.body).is_ok_and(|v| v.is_object()));
            }
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
    }
}
