//! Local token counts of request bodies, with the o200k BPE (GitHub's `bpe-openai`, exact o200k
//! token counts for text). Two uses, both marked as estimates where they surface:
//! - `POST /v1/messages/count_tokens` when the model is served by an OpenAI-dialect upstream
//!   (which has no such endpoint): `estimate_input_tokens`, an Anthropic body;
//! - the input of a stream that ended before the upstream reported its usage (OpenAI reports it
//!   only in its last chunk): `estimate_request_input`, the body as sent upstream, in either
//!   dialect.
//!
//! Text, tool definitions and tool inputs are counted exactly as o200k text; images and documents,
//! whose real cost depends on pixels and pages the gateway does not decode, get a flat allowance.
//! Imports: `error::Dialect` only. Not `proxy`, `plan`, `metrics` or Pingora.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::TranslateError;
use crate::error::Dialect;

/// Flat allowance per image (a ~1 megapixel image on Anthropic's width*height/750 rule).
pub const IMAGE_TOKENS: u64 = 1_500;
/// The least an image costs on OpenAI (`detail: low`): a cut stream's input is billed a lower
/// bound, never more than the upstream counted.
const OPENAI_IMAGE_MIN_TOKENS: u64 = 85;
/// Per-message framing overhead; also the tokens that prime the reply (OpenAI's recipe).
const MESSAGE_OVERHEAD: u64 = 3;

/// Input tokens of a request body as sent to an upstream of `dialect`; 0 when it cannot be read
/// (the gateway built or checked it, so that does not happen in practice).
pub fn estimate_request_input(dialect: Dialect, body: &[u8]) -> u64 {
    match dialect {
        Dialect::OpenAi => estimate_openai_input_tokens(body),
        Dialect::Anthropic => estimate_input_tokens(body),
    }
    .unwrap_or(0)
}

static O200K_LOADED: AtomicBool = AtomicBool::new(false);

/// The o200k tokenizer. Its tables load at the first count: about 140M instructions (tens of
/// milliseconds), so callers on async threads count on a blocking thread until `o200k_ready`.
fn o200k() -> &'static bpe_openai::Tokenizer {
    let tok = bpe_openai::o200k_base();
    O200K_LOADED.store(true, Ordering::Relaxed);
    tok
}

/// The o200k tables are loaded: a count costs only its text.
pub fn o200k_ready() -> bool {
    O200K_LOADED.load(Ordering::Relaxed)
}

/// Estimated input tokens of an OpenAI chat request body, by OpenAI's recipe: 3 tokens of framing
/// per message and 1 more for a `name`, 3 priming the reply, the text of every part, tool call and
/// tool definition as o200k text, and `OPENAI_IMAGE_MIN_TOKENS` per image.
pub fn estimate_openai_input_tokens(body: &[u8]) -> Result<u64, TranslateError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| TranslateError::new("body", "not a JSON object"))?;
    let tok = o200k();
    let text = |s: &str| tok.count(s) as u64;
    let messages = messages_of(&v)?;
    let mut n = MESSAGE_OVERHEAD;
    for m in messages {
        n += MESSAGE_OVERHEAD;
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            n += 1 + text(name);
        }
        match m.get("content") {
            Some(Value::String(s)) => n += text(s),
            Some(Value::Array(parts)) => {
                for part in parts {
                    n += match part.get("type").and_then(Value::as_str) {
                        Some("text") => text(part.get("text").and_then(Value::as_str).unwrap_or_default()),
                        Some("image_url") => OPENAI_IMAGE_MIN_TOKENS,
                        _ => text(&part.to_string()),
                    };
                }
            }
            _ => {}
        }
        for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let function = |k: &str| call.get("function").and_then(|f| f.get(k)).and_then(Value::as_str);
            n += text(function("name").unwrap_or_default()) + text(function("arguments").unwrap_or_default());
        }
    }
    if let Some(tools) = v.get("tools").and_then(Value::as_array) {
        for t in tools {
            n += text(&t.to_string());
        }
    }
    Ok(n)
}

/// Estimated input tokens of an Anthropic `count_tokens` request body.
pub fn estimate_input_tokens(body: &[u8]) -> Result<u64, TranslateError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| TranslateError::new("body", "not a JSON object"))?;
    let tok = o200k();
    let mut n = 0u64;
    let mut text = |s: &str| tok.count(s) as u64;
    match v.get("system") {
        Some(Value::String(s)) => n += text(s),
        Some(Value::Array(blocks)) => n += blocks.iter().map(|b| count_block(b, &mut text)).sum::<u64>(),
        _ => {}
    }
    let messages = messages_of(&v)?;
    for m in messages {
        n += MESSAGE_OVERHEAD;
        match m.get("content") {
            Some(Value::String(s)) => n += text(s),
            Some(Value::Array(blocks)) => n += blocks.iter().map(|b| count_block(b, &mut text)).sum::<u64>(),
            _ => {}
        }
    }
    if let Some(tools) = v.get("tools").and_then(Value::as_array) {
        for t in tools {
            n += text(&t.to_string());
        }
    }
    Ok(n + MESSAGE_OVERHEAD)
}

/// The body's `messages` array, or the 400 that says what is wrong with it.
fn messages_of(body: &Value) -> Result<&Vec<Value>, TranslateError> {
    match body.get("messages") {
        None => Err(TranslateError::new("messages", "field required")),
        Some(m) => m.as_array().ok_or_else(|| TranslateError::new("messages", "must be an array")),
    }
}

fn count_block(block: &Value, text: &mut impl FnMut(&str) -> u64) -> u64 {
    let field = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or_default();
    match block.get("type").and_then(Value::as_str) {
        Some("text") => text(field("text")),
        Some("thinking") => text(field("thinking")),
        Some("tool_use") => text(field("name")) + text(&block.get("input").map(Value::to_string).unwrap_or_default()),
        Some("tool_result") => match block.get("content") {
            Some(Value::String(s)) => text(s),
            Some(Value::Array(parts)) => parts.iter().map(|p| count_block(p, text)).sum(),
            _ => 0,
        },
        Some("image") | Some("document") => IMAGE_TOKENS,
        _ => text(&block.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text_with_o200k() {
        let body = br#"{"model":"m","system":"You are terse.","messages":[{"role":"user","content":"Hello, world!"}]}"#;
        // "You are terse." is 4 o200k tokens, "Hello, world!" is 4; plus framing.
        assert_eq!(estimate_input_tokens(body).expect("ok"), 4 + 4 + 2 * MESSAGE_OVERHEAD);
    }

    #[test]
    fn counts_an_openai_body_by_openais_recipe() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","name":"ann","content":[{"type":"text","text":"Hello, world!"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        // 4 + 4 text tokens, "ann" is 1 token plus 1 for having a name, 85 for the image, 3 per
        // message and 3 priming the reply.
        assert_eq!(estimate_openai_input_tokens(body).expect("ok"), 4 + 4 + 2 + 85 + 3 * MESSAGE_OVERHEAD);
        let with_call = br#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}]}"#;
        assert!(estimate_openai_input_tokens(with_call).expect("ok") > 2 * MESSAGE_OVERHEAD + 4);
        assert_eq!(estimate_request_input(Dialect::OpenAi, b"nope"), 0);
        assert_eq!(
            estimate_request_input(Dialect::Anthropic, br#"{"messages":[{"role":"user","content":"Hello, world!"}]}"#),
            4 + 2 * MESSAGE_OVERHEAD
        );
    }

    #[test]
    fn grows_with_content_and_rejects_garbage() {
        let small = estimate_input_tokens(br#"{"messages":[{"role":"user","content":"hi"}]}"#).expect("ok");
        let big = estimate_input_tokens(br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi there, how are you doing today?"},{"type":"image","source":{}}]}]}"#).expect("ok");
        assert!(big > small + IMAGE_TOKENS);
        assert!(estimate_input_tokens(b"nope").is_err());
        assert!(estimate_input_tokens(b"{}").is_err());
        let not_an_array = estimate_input_tokens(br#"{"messages":"x"}"#).expect_err("refused");
        assert_eq!((not_an_array.param.as_str(), not_an_array.message.as_str()), ("messages", "must be an array"));
    }
}
