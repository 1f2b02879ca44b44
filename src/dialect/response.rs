//! Translation of complete (non-streaming) responses and of upstream error bodies.
//!
//! JSON responses: ids, role, content (text, tool calls, thinking/reasoning), stop reason, usage
//! (OpenAI's prompt tokens include cached ones, Anthropic's input tokens do not), and the model
//! name as the caller asked for it. Error bodies keep their status and message and take the
//! caller's shape. Pure.
//! Imports: `error` (error shapes), `usage`, the wire types (`openai`, `anthropic`). Not `proxy`,
//! `plan`, `metrics` or Pingora.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{anthropic, openai};
use super::{
    anthropic_usage_json, finish_reason_for, openai_usage_json, stop_reason_for, AnthropicUsageOut, OpenAiUsageOut,
    TranslateError,
};
use crate::error::{anthropic_type_for_status, error_body_with_id, Dialect};

#[derive(Serialize)]
struct OpenAiCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OpenAiChoice<'a>; 1],
    usage: OpenAiUsageOut,
}

#[derive(Serialize)]
struct OpenAiChoice<'a> {
    index: u32,
    message: OpenAiMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OpenAiMessage<'a> {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OpenAiToolCall<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct OpenAiToolCall<'a> {
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OpenAiFunction<'a>,
}

#[derive(Serialize)]
struct OpenAiFunction<'a> {
    name: Option<&'a str>,
    /// A JSON string literal (`scan::put_json_as_string`).
    arguments: Box<RawValue>,
}

/// serde reads a struct from a JSON array too; a response must be an object.
fn require_object(body: &[u8]) -> Result<(), TranslateError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(TranslateError::new("response", "upstream response is not a JSON object")),
    }
}

/// Anthropic message → OpenAI chat completion.
pub fn anthropic_to_openai(body: &[u8], caller_model: &str, created: u64) -> Result<Vec<u8>, TranslateError> {
    require_object(body)?;
    let msg: anthropic::Message<'_, &RawValue> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new("response", format!("upstream response is not an Anthropic message: {e}")))?;
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in &msg.content {
        match block.kind.get() {
            Some("text") => text.get_or_insert_with(String::new).push_str(block.text.get().unwrap_or_default()),
            Some("thinking") => {
                reasoning.get_or_insert_with(String::new).push_str(block.thinking.get().unwrap_or_default())
            }
            Some("tool_use") => {
                // The model's own text, compacted by the rule the request translator uses: its
                // key order is kept.
                let input = block.input.map_or("{}", RawValue::get);
                let mut literal = Vec::with_capacity(input.len() + 16);
                super::scan::put_json_as_string(&mut literal, input.as_bytes());
                // Valid UTF-8 and one JSON string by construction; checked, never assumed.
                let literal = String::from_utf8(literal).ok().and_then(|l| RawValue::from_string(l).ok());
                let input = literal.ok_or_else(|| TranslateError::new("response", "unreadable tool_use input"))?;
                tool_calls.push(OpenAiToolCall {
                    id: block.id.get(),
                    kind: "function",
                    function: OpenAiFunction { name: block.name.get(), arguments: input },
                });
            }
            // redacted_thinking and server-tool blocks have no OpenAI counterpart.
            _ => {}
        }
    }
    let usage = openai_usage_json(&msg.usage.unwrap_or_default().to_usage());
    let out = OpenAiCompletion {
        id: msg.id.get().unwrap_or_default(),
        object: "chat.completion",
        created,
        model: caller_model,
        choices: [OpenAiChoice {
            index: 0,
            message: OpenAiMessage {
                role: "assistant",
                content: text,
                reasoning_content: reasoning,
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish_reason_for(msg.stop_reason.get().unwrap_or("end_turn")),
        }],
        usage,
    };
    serde_json::to_vec(&out).map_err(|e| TranslateError::new("response", e.to_string()))
}

#[derive(Serialize)]
struct AnthropicMessageOut<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<AnthropicBlockOut<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: AnthropicUsageOut,
}

/// A content block, `type` first as Anthropic writes it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AnthropicBlockOut<'a> {
    /// No signature exists for OpenAI-side reasoning; the gateway never sends unsigned thinking
    /// back to an Anthropic upstream.
    Thinking {
        thinking: &'a str,
        signature: &'static str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Box<RawValue>,
    },
}

/// OpenAI chat completion → Anthropic message.
pub fn openai_to_anthropic(body: &[u8], caller_model: &str) -> Result<Vec<u8>, TranslateError> {
    require_object(body)?;
    let c: openai::Completion<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new("response", format!("upstream response is not a chat completion: {e}")))?;
    let choices = c.choices.unwrap_or_default();
    let choice = choices.first();
    let finish = choice.and_then(|ch| ch.finish_reason.get());
    let no_message = openai::Message::default();
    let message = choice.and_then(|ch| ch.message.as_ref()).unwrap_or(&no_message);
    let mut content = Vec::new();
    if let Some(r) = message.reasoning() {
        content.push(AnthropicBlockOut::Thinking { thinking: r, signature: "" });
    }
    if let Some(t) = message.content.non_empty() {
        content.push(AnthropicBlockOut::Text { text: t });
    }
    if let Some(t) = message.refusal.non_empty() {
        content.push(AnthropicBlockOut::Text { text: t });
    }
    for call in message.tool_calls.iter().flatten() {
        let bad =
            |why: &str| TranslateError::new("choices[0].message.tool_calls", format!("the upstream returned {why}"));
        let function = call.function.as_ref().ok_or_else(|| bad("a tool call without a function"))?;
        let arguments = function.arguments.get().unwrap_or_default();
        // Copied as the model wrote it (its keys in its order), once known to be one JSON object.
        let arguments = if arguments.trim().is_empty() { "{}" } else { arguments.trim() };
        let input = match RawValue::from_string(arguments.to_owned()) {
            Ok(raw) if raw.get().starts_with('{') => raw,
            // The token limit cut the call short (the answer says so in `stop_reason:
            // max_tokens`): an empty input, as the caller's SDK makes of the same stream's
            // partial JSON, rather than no answer at all.
            _ if finish == Some("length") => RawValue::from_string("{}".to_owned()).expect("valid JSON"),
            _ => return Err(bad("tool call arguments that are not a JSON object")),
        };
        let (id, name) = (call.id.get().unwrap_or_default(), function.name.get().unwrap_or_default());
        content.push(AnthropicBlockOut::ToolUse { id, name, input });
    }
    let usage = c.usage.unwrap_or_default().to_usage();
    let id = c.id.get().unwrap_or_default();
    let id = if id.starts_with("msg_") { id.to_owned() } else { format!("msg_{id}") };
    let out = AnthropicMessageOut {
        id,
        kind: "message",
        role: "assistant",
        model: caller_model,
        content,
        // A refusal is Anthropic's `stop_reason: refusal`, whatever OpenAI's finish reason.
        stop_reason: if message.refusal.non_empty().is_some() {
            "refusal"
        } else {
            stop_reason_for(finish.unwrap_or("stop"))
        },
        stop_sequence: None,
        usage: anthropic_usage_json(&usage),
    };
    serde_json::to_vec(&out).map_err(|e| TranslateError::new("response", e.to_string()))
}

/// An upstream error body in the caller's shape, status kept. The message is the upstream's own;
/// a body that is not a recognizable error keeps its text as the message. `request_id` is the
/// gateway's id of the request, which Anthropic's errors carry in the body (the upstream's own id
/// names a request the caller never made).
pub fn error_to_caller(status: u16, body: &[u8], upstream: Dialect, caller: Dialect, request_id: &str) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(2000)]).trim().to_string());
    let message = if message.is_empty() { format!("upstream error {status}") } else { message };
    let upstream_type = err.and_then(|e| e.get("type")).and_then(Value::as_str);
    let upstream_code = err.and_then(|e| e.get("code")).and_then(Value::as_str);
    let openai_fields: (String, Option<String>) = match upstream {
        // Anthropic error type → OpenAI type and code.
        Dialect::Anthropic => {
            let t = upstream_type.unwrap_or(anthropic_type_for_status(status));
            let kind = match t {
                "invalid_request_error"
                | "not_found_error"
                | "request_too_large"
                | "authentication_error"
                | "permission_error" => "invalid_request_error",
                "rate_limit_error" => "requests",
                _ => "server_error",
            };
            let code = match t {
                "authentication_error" => "invalid_api_key",
                "rate_limit_error" => "rate_limit_exceeded",
                "not_found_error" => "model_not_found",
                other => other,
            };
            (kind.to_string(), Some(code.to_string()))
        }
        Dialect::OpenAi => (upstream_type.unwrap_or("server_error").to_string(), upstream_code.map(str::to_string)),
    };
    error_body_with_id(caller, status, &message, (&openai_fields.0, openai_fields.1.as_deref(), None), Some(request_id))
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(b: &[u8]) -> Value {
        serde_json::from_slice(b).expect("json")
    }

    #[test]
    fn anthropic_error_becomes_openai_error_with_status_kept() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let out = v(&error_to_caller(429, body, Dialect::Anthropic, Dialect::OpenAi, "req_1"));
        assert_eq!(out["error"]["message"], "slow down");
        assert!(
            out.get("request_id").is_none() && out["error"].get("request_id").is_none(),
            "OpenAI errors carry none"
        );
        assert_eq!(out["error"]["code"], "rate_limit_exceeded");
    }

    #[test]
    fn openai_error_becomes_anthropic_error() {
        let body = br#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#;
        let out = v(&error_to_caller(400, body, Dialect::OpenAi, Dialect::Anthropic, "req_1"));
        assert_eq!(
            out,
            json!({"type":"error","error":{"type":"invalid_request_error","message":"bad"},"request_id":"req_1"})
        );
        let out = v(&error_to_caller(502, b"<html>bad gateway</html>", Dialect::OpenAi, Dialect::Anthropic, "req_2"));
        assert_eq!(out["error"]["type"], "api_error");
        assert_eq!(out["error"]["message"], "<html>bad gateway</html>");
    }

    #[test]
    fn answers_are_read_leniently_through_the_shared_wire_types() {
        // A field of an unexpected type reads as absent; `reasoning` is the other name of
        // `reasoning_content`.
        let body = br#"{"id":"x","choices":[{"message":{"content":7,"reasoning":"hmm","refusal":null},"finish_reason":"stop"}]}"#;
        let out = v(&openai_to_anthropic(body, "m").expect("lenient"));
        assert_eq!(out["content"], json!([{"type": "thinking", "thinking": "hmm", "signature": ""}]));
        assert_eq!(out["id"], "msg_x");
        // A tool call without its function cannot be translated faithfully.
        let body = br#"{"choices":[{"message":{"tool_calls":[{"id":"c"}]},"finish_reason":"tool_calls"}]}"#;
        assert_eq!(
            openai_to_anthropic(body, "m").map_err(|e| e.param),
            Err("choices[0].message.tool_calls".to_owned())
        );
        // Anthropic blocks: a tool_use without input gets `{}`, unknown blocks are skipped.
        let body = br#"{"id":"m1","content":[{"type":"server_tool_use","id":"s"},{"type":"tool_use","id":"t","name":"f"},{"type":"text","text":5}],"stop_reason":"tool_use"}"#;
        let out = v(&anthropic_to_openai(body, "m", 0).expect("lenient"));
        let message = &out["choices"][0]["message"];
        assert_eq!(
            message["tool_calls"],
            json!([{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}])
        );
        assert_eq!(message["content"], "");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn answers_keep_the_caller_dialect_key_order() {
        // Compared as bytes: the members in the order each provider writes them.
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"b\":2,\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":4}}}"#;
        let out = String::from_utf8(openai_to_anthropic(body, "m").expect("translates")).expect("utf-8");
        assert_eq!(
            out,
            r#"{"id":"msg_x","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"c","name":"f","input":{"b":2,"a":1}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":6,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":2}}"#
        );
        let body = br#"{"id":"m1","content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t","name":"f","input":{ "b": 2, "a": {"d": 1, "c": "x \"y\""} }}],"stop_reason":"tool_use","usage":{"input_tokens":6,"cache_read_input_tokens":4,"output_tokens":2}}"#;
        let out = String::from_utf8(anthropic_to_openai(body, "m", 7).expect("translates")).expect("utf-8");
        assert_eq!(
            out,
            r#"{"id":"m1","object":"chat.completion","created":7,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{\"b\":2,\"a\":{\"d\":1,\"c\":\"x \\\"y\\\"\"}}"}}],"refusal":null},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":4}}}"#
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(openai_to_anthropic(b"\xff", "m").is_err());
        assert!(anthropic_to_openai(b"[]", "m", 0).is_err());
    }
}
