//! What the real providers refuse, so that a translation they would reject fails our tests.
//! Imports: nothing of the gateway's crate.

use super::*;

// ---------------------------------------------------------------------------
// What the real providers refuse (so a bad translation fails our tests)
// ---------------------------------------------------------------------------

/// Top-level fields OpenAI's chat completions accepts (its API reference); any other is a 400.
pub(crate) const OPENAI_FIELDS: &[&str] = &[
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "messages",
    "metadata",
    "modalities",
    "model",
    "moderation",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

/// Members OpenAI accepts on an input tool call (a streamed `index` is not one).
pub(crate) const OPENAI_TOOL_CALL_FIELDS: &[&str] = &["id", "type", "function"];

/// Why OpenAI would refuse this chat request, if it would: unknown fields, a `tool` message
/// that answers no earlier tool call, a tool call with stray members, an over-long `user`.
pub(crate) fn openai_refusal(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if let Some(k) = obj.keys().find(|k| !OPENAI_FIELDS.contains(&k.as_str())) {
        return Some(format!("Unrecognized request argument supplied: {k}"));
    }
    if obj.get("user").and_then(Value::as_str).is_some_and(|u| u.len() > 64) {
        return Some("Invalid 'user': string too long. Expected a string with maximum length 64".into());
    }
    let mut open_calls: Vec<String> = Vec::new();
    for (i, m) in obj.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("assistant") => {
                for (j, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    if let Some(k) = call.as_object()?.keys().find(|k| !OPENAI_TOOL_CALL_FIELDS.contains(&k.as_str())) {
                        return Some(format!("Unrecognized request argument: messages[{i}].tool_calls[{j}].{k}"));
                    }
                    open_calls.push(call.get("id").and_then(Value::as_str).unwrap_or_default().to_owned());
                }
            }
            Some("tool") => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or_default();
                if !open_calls.iter().any(|c| c == id) {
                    return Some(format!(
                        "messages[{i}]: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'"
                    ));
                }
            }
            _ => open_calls.clear(),
        }
    }
    None
}

/// Why Anthropic would refuse this messages request, if it would: `max_tokens` missing, a
/// `tool_result` that answers no `tool_use` of the turn before it.
pub(crate) fn anthropic_refusal(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if !obj.get("max_tokens").is_some_and(Value::is_u64) {
        return Some("max_tokens: Field required".into());
    }
    let mut last_tool_uses: Vec<&str> = Vec::new();
    for (i, m) in obj.get("messages").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let blocks = m.get("content").and_then(Value::as_array);
        let of_type = |t: &'static str| {
            blocks.into_iter().flatten().filter(move |b| b.get("type").and_then(Value::as_str) == Some(t))
        };
        for b in of_type("tool_result") {
            let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or_default();
            if !last_tool_uses.contains(&id) {
                return Some(format!(
                    "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
        }
        last_tool_uses = of_type("tool_use").filter_map(|b| b.get("id").and_then(Value::as_str)).collect();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_by_openai(body: Value) -> Option<String> {
        openai_refusal(&body)
    }

    #[test]
    fn openai_refuses_what_openai_refuses() {
        let ok = serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"}]});
        assert_eq!(refused_by_openai(ok.clone()), None);
        let mut unknown = ok.clone();
        unknown["output_config"] = serde_json::json!({});
        assert!(refused_by_openai(unknown).is_some_and(|m| m.contains("output_config")));
        let mut index = ok.clone();
        index["messages"][1]["tool_calls"][0]["index"] = 0.into();
        assert!(refused_by_openai(index).is_some_and(|m| m.contains("index")));
        let mut orphan = ok.clone();
        orphan["messages"][2]["tool_call_id"] = "c2".into();
        assert!(refused_by_openai(orphan).is_some());
        let mut long_user = ok;
        long_user["user"] = "u".repeat(65).into();
        assert!(refused_by_openai(long_user).is_some());
    }

    #[test]
    fn anthropic_refuses_what_anthropic_refuses() {
        let ok = serde_json::json!({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}]});
        assert_eq!(anthropic_refusal(&ok), None);
        let mut no_max = ok.clone();
        no_max.as_object_mut().map(|o| o.remove("max_tokens"));
        assert!(anthropic_refusal(&no_max).is_some_and(|m| m.contains("max_tokens")));
        let mut orphan = ok;
        orphan["messages"][2]["content"][0]["tool_use_id"] = "t2".into();
        assert!(anthropic_refusal(&orphan).is_some_and(|m| m.contains("t2")));
    }
}
