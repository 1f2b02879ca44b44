//! The coding agent's request `loadtest/chat_bodies.py --agent` writes (the same shape, built
//! here so that the benches need no file): OpenAI dialect, `model` first, a long system prompt, 25
//! tool schemas with described parameters, then tool-call rounds whose results are file text with
//! an escape on every line, and a closing user turn; about `size` bytes.

use serde_json::{json, Value};

pub fn agent_request(model: &str, size: usize) -> Vec<u8> {
    let tools: Vec<Value> = (0..25)
        .map(|t| {
            let props: serde_json::Map<String, Value> = (0..6)
                .map(|p| {
                    let description = format!("Argument {p} of tool {t}: {}", "what it means. ".repeat(6));
                    (format!("arg_{p}"), json!({"type": "string", "description": description}))
                })
                .collect();
            json!({"type": "function", "function": {
                "name": format!("tool_{t}"),
                "description": format!("Tool {t} of the agent. {}", "It does one careful thing. ".repeat(20)),
                "parameters": {"type": "object", "properties": props, "required": ["arg_0"]}}})
        })
        .collect();
    let mut messages = vec![
        json!({"role": "system", "content": format!("You are a coding agent. {}", "Follow the project's rules. ".repeat(200))}),
        json!({"role": "user", "content": "Fix the failing test in src/lib.rs."}),
    ];
    let line = "fn example(x: u32) -> u32 { x + 1 } // \"quoted\" and \\escaped\n";
    // The top level written by hand to keep `model` first (serde_json's map sorts its keys).
    let tools = Value::Array(tools).to_string();
    let body = |messages: &[Value]| {
        format!(
            r#"{{"model":{},"messages":{},"tools":{tools},"max_tokens":1024,"stream":false}}"#,
            Value::from(model),
            Value::from(messages.to_vec())
        )
        .into_bytes()
    };
    let mut i = 0;
    loop {
        let len = body(&messages).len();
        if len >= size {
            break;
        }
        let lines = ((size - len) / line.len()).clamp(1, 400);
        messages.push(
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{i}"), "type": "function",
            "function": {"name": "tool_3", "arguments": json!({"arg_0": format!("src/file_{i}.rs")}).to_string()}}]}),
        );
        messages.push(json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": line.repeat(lines)}));
        i += 1;
    }
    messages.push(json!({"role": "user", "content": "Now run the tests."}));
    body(&messages)
}
