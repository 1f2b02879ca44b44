//! Local token count for `POST /v1/messages/count_tokens` when the model is served by an
//! OpenAI-dialect upstream (which has no such endpoint): an honest estimate with the o200k BPE
//! (GitHub's `bpe-openai`, exact o200k token counts for text), marked as an estimate by the proxy.
//! Text, tool definitions and tool inputs are counted exactly as o200k text; images and documents,
//! whose real cost depends on pixels and pages the gateway does not decode, get a flat allowance.
//! Imports: nothing of the gateway's. Not `proxy`, `plan`, `metrics` or Pingora.

use serde_json::Value;

use super::TranslateError;

/// Flat allowance per image (a ~1 megapixel image on Anthropic's width*height/750 rule).
pub const IMAGE_TOKENS: u64 = 1_500;
/// Per-message framing overhead.
const MESSAGE_OVERHEAD: u64 = 3;

/// Estimated input tokens of an Anthropic `count_tokens` request body.
pub fn estimate_input_tokens(body: &[u8]) -> Result<u64, TranslateError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| TranslateError::new("body", "not a JSON object"))?;
    let tok = bpe_openai::o200k_base();
    let mut n = 0u64;
    let mut text = |s: &str| tok.count(s) as u64;
    match v.get("system") {
        Some(Value::String(s)) => n += text(s),
        Some(Value::Array(blocks)) => n += blocks.iter().map(|b| count_block(b, &mut text)).sum::<u64>(),
        _ => {}
    }
    let messages =
        v.get("messages").and_then(Value::as_array).ok_or_else(|| TranslateError::new("messages", "field required"))?;
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
    fn grows_with_content_and_rejects_garbage() {
        let small = estimate_input_tokens(br#"{"messages":[{"role":"user","content":"hi"}]}"#).expect("ok");
        let big = estimate_input_tokens(br#"{"messages":[{"role":"user","content":[{"type":"text","text":"hi there, how are you doing today?"},{"type":"image","source":{}}]}]}"#).expect("ok");
        assert!(big > small + IMAGE_TOKENS);
        assert!(estimate_input_tokens(b"nope").is_err());
        assert!(estimate_input_tokens(b"{}").is_err());
    }
}
