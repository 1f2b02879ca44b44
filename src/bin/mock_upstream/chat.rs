//! Chat routes: OpenAI chat completions and Anthropic messages, JSON and SSE, and tool-calling turns.
//! Imports: `http`, `record`, `replies`, `strict` (through `main`). Nothing of the gateway's crate.

use super::*;

// ---------------------------------------------------------------------------
// Routing and provider bodies
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub(crate) struct Usage {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
}

pub(crate) const OPENAI_USAGE: Usage = Usage { input: 21, output: 7, cache_read: 5, cache_write: 0 };
pub(crate) const ANTHROPIC_USAGE: Usage = Usage { input: 12, output: 9, cache_read: 4, cache_write: 3 };

pub(crate) fn echo_usage(req: &Req<'_>, default: Usage) -> Usage {
    let parse = || -> Option<Usage> {
        let v = std::str::from_utf8(req.header("x-mock-echo-usage")?).ok()?;
        let mut it = v.split(',').map(|p| p.trim().parse::<u64>());
        let u = Usage {
            input: it.next()?.ok()?,
            output: it.next()?.ok()?,
            cache_read: it.next()?.ok()?,
            cache_write: it.next()?.ok()?,
        };
        it.next().is_none().then_some(u)
    };
    parse().unwrap_or(default)
}

/// The request's `model`, as a JSON literal.
pub(crate) fn model_json(v: &Value) -> String {
    match v.get("model") {
        Some(m) if !m.is_null() => serde_json::to_string(m).unwrap_or_else(|_| "\"mock-model\"".into()),
        _ => "\"mock-model\"".into(),
    }
}

pub(crate) fn is_true(v: Option<&Value>) -> bool {
    v.and_then(Value::as_bool) == Some(true)
}

pub(crate) fn delay_from(req: &Req<'_>, name: &str) -> Option<Duration> {
    req.header_u64(name).filter(|&ms| ms > 0).map(|ms| Duration::from_millis(ms.min(MAX_DELAY_MS)))
}

pub(crate) async fn handle(stream: &mut TcpStream, state: &State, req: &Req<'_>, bufs: &mut Bufs) -> Outcome {
    let path = req.path();
    let method = req.method;

    // Control routes: never recorded, never faulted.
    if path == b"/__mock/requests" {
        return match method {
            b"GET" => {
                state.dump(&mut bufs.body);
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            b"DELETE" => {
                let n = state.clear();
                bufs.body.clear();
                let _ = write!(bufs.body, "{{\"cleared\":{n}}}");
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            _ => not_found(stream, bufs, req).await,
        };
    }
    if path == b"/__mock/tasks" {
        return match method {
            b"GET" => {
                state.dump_tasks(&mut bufs.body);
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            b"DELETE" => {
                let n = state.clear_tasks();
                bufs.body.clear();
                let _ = write!(bufs.body, "{{\"cleared\":{n}}}");
                respond(stream, &mut bufs.out, req, 200, "", &bufs.body, false).await
            }
            _ => not_found(stream, bufs, req).await,
        };
    }

    state.record(req);

    let fault = req.header("x-mock-fault").map(<[u8]>::trim_ascii);
    match fault {
        Some(f) if f.eq_ignore_ascii_case(b"hang") => return Outcome::Hang,
        Some(f) if f.eq_ignore_ascii_case(b"reset") => return Outcome::Reset,
        _ => {}
    }
    if let Some(d) = delay_from(req, "x-mock-delay-ms") {
        tokio::time::sleep(d).await;
    }
    if fault.is_some_and(|f| f.eq_ignore_ascii_case(b"garbage")) {
        let _ = stream.write_all(b"this is not http\r\n\r\n").await;
        return Outcome::Close;
    }
    if fault.is_some_and(|f| f.eq_ignore_ascii_case(b"echo-key")) {
        // A 500 that quotes the credentials it got, as some upstreams' debug messages do.
        let anthropic = path.starts_with(b"/v1/messages");
        let sent = req.header("authorization").or_else(|| req.header("x-api-key")).unwrap_or_default();
        let message = format!("debug: the request carried {}", String::from_utf8_lossy(sent));
        let body = if anthropic {
            serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}})
        } else {
            serde_json::json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}})
        };
        return respond(stream, &mut bufs.out, req, 500, "", body.to_string().as_bytes(), false).await;
    }
    if fault.is_some_and(|f| f.eq_ignore_ascii_case(b"not-an-answer")) {
        // A 200 whose JSON is no chat completion or message at all.
        return respond(stream, &mut bufs.out, req, 200, "", br#"["not","an","answer"]"#, false).await;
    }
    let cut = fault.is_some_and(|f| f.eq_ignore_ascii_case(b"cut-stream"));
    let anthropic = path == b"/v1/messages" || path.starts_with(b"/v1/messages/");

    if let Some(status) = req.header_u64("x-mock-status").filter(|s| (400..=599).contains(s)) {
        let status = status as u16;
        let msg = format!("mock upstream error {status}");
        bufs.body.clear();
        if anthropic {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                504 => "timeout_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            let _ = write!(bufs.body, "{{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"{msg}\"}}}}");
        } else if path.starts_with(b"/wrapped/") {
            let _ = write!(bufs.body, "{{\"code\":{status},\"msg\":\"{msg}\"}}");
        } else if path.starts_with(b"/flat/") {
            let code = match status {
                401 => "unauthorized",
                402 => "insufficient_quota",
                403 => "permission_denied",
                404 => "resource_not_found",
                429 => "quota_exceeded",
                503 => "service_unavailable",
                s if s >= 500 => "service_error",
                _ => "invalid_parameters",
            };
            let _ = write!(bufs.body, "{{\"error\":{{\"code\":\"{code}\",\"message\":\"{msg}\"}}}}");
        } else {
            let (kind, code) = match status {
                401 => ("invalid_request_error", "invalid_api_key"),
                403 => ("invalid_request_error", "permission_denied"),
                404 => ("invalid_request_error", "model_not_found"),
                429 => ("requests", "rate_limit_exceeded"),
                503 => ("server_error", "service_unavailable"),
                s if s >= 500 => ("server_error", "server_error"),
                _ => ("invalid_request_error", "invalid_request"),
            };
            let _ = write!(
                bufs.body,
                "{{\"error\":{{\"message\":\"{msg}\",\"type\":\"{kind}\",\"param\":null,\"code\":\"{code}\"}}}}"
            );
        }
        let extra = if status == 429 { "retry-after: 1\r\n" } else { "" };
        return respond(stream, &mut bufs.out, req, status, extra, &bufs.body, cut).await;
    }

    if let Some(route) = media_route(method, path) {
        return media(stream, state, req, bufs, cut, route).await;
    }

    match (method, path) {
        (b"POST", b"/v1/chat/completions") => openai_chat(stream, req, bufs, cut).await,
        (b"POST", b"/v1/messages") => anthropic_messages(stream, req, bufs, cut).await,
        (b"POST", b"/v1/messages/count_tokens") => {
            if serde_json::from_slice::<Value>(req.body).is_err() {
                return anthropic_invalid_json(stream, req, bufs, cut).await;
            }
            let input = match req.header("x-mock-echo-usage") {
                Some(_) => echo_usage(req, ANTHROPIC_USAGE).input,
                None => 42,
            };
            bufs.body.clear();
            let _ = write!(bufs.body, "{{\"input_tokens\":{input}}}");
            // As Anthropic's: token counting has rate limits of its own, and says so.
            const LIMITS: &str =
                "anthropic-ratelimit-requests-limit: 2000\r\nanthropic-ratelimit-requests-remaining: 1999\r\n";
            respond(stream, &mut bufs.out, req, 200, LIMITS, &bufs.body, cut).await
        }
        (b"GET", b"/v1/models") => {
            const MODELS: &str = concat!(
                "{\"object\":\"list\",\"data\":[",
                "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"openai\"},",
                "{\"id\":\"gpt-4o\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"openai\"},",
                "{\"id\":\"mock-model\",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"mock\"}",
                "]}"
            );
            respond(stream, &mut bufs.out, req, 200, "", MODELS.as_bytes(), cut).await
        }
        _ => not_found(stream, bufs, req).await,
    }
}

pub(crate) async fn not_found(stream: &mut TcpStream, bufs: &mut Bufs, req: &Req<'_>) -> Outcome {
    bufs.body.clear();
    bufs.body.extend_from_slice(b"{\"error\":{\"message\":");
    let msg =
        format!("mock: unknown route {} {}", String::from_utf8_lossy(req.method), String::from_utf8_lossy(req.path()));
    json_str(&mut bufs.body, &msg);
    bufs.body.extend_from_slice(b",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"unknown_url\"}}");
    respond(stream, &mut bufs.out, req, 404, "", &bufs.body, false).await
}

pub(crate) async fn anthropic_invalid_json(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
) -> Outcome {
    const BODY: &[u8] =
        b"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"mock: invalid JSON\"}}";
    respond(stream, &mut bufs.out, req, 400, "", BODY, cut).await
}

pub(crate) async fn openai_chat(stream: &mut TcpStream, req: &Req<'_>, bufs: &mut Bufs, cut: bool) -> Outcome {
    let Ok(v) = serde_json::from_slice::<Value>(req.body) else {
        const BODY: &[u8] = b"{\"error\":{\"message\":\"mock: invalid JSON\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}";
        return respond(stream, &mut bufs.out, req, 400, "", BODY, cut).await;
    };
    if let Some(why) = openai_refusal(&v) {
        let body = serde_json::json!({"error": {"message": why, "type": "invalid_request_error", "param": null, "code": null}});
        return respond(stream, &mut bufs.out, req, 400, "", body.to_string().as_bytes(), cut).await;
    }
    let model = model_json(&v);
    let u = echo_usage(req, OPENAI_USAGE);
    if let Some(turn) = tool_turn(req, &v, false) {
        return openai_tool_turn(stream, req, bufs, cut, &v, &turn, &u).await;
    }

    let replies = super::replies::get();
    let include_usage = is_true(v.pointer("/stream_options/include_usage"));
    let fill = super::replies::Fill { model: &model, usage: u, usage_null: include_usage };
    if !is_true(v.get("stream")) {
        bufs.body.clear();
        replies.openai_json.render(&mut bufs.body, &fill);
        return respond(stream, &mut bufs.out, req, 200, "", &bufs.body, cut).await;
    }
    let events = replies.openai_stream(&fill);
    let delay = delay_from(req, "x-mock-event-delay-ms");
    respond_sse(stream, &mut bufs.out, req, &events, delay, cut).await
}

pub(crate) async fn anthropic_messages(stream: &mut TcpStream, req: &Req<'_>, bufs: &mut Bufs, cut: bool) -> Outcome {
    let Ok(v) = serde_json::from_slice::<Value>(req.body) else {
        return anthropic_invalid_json(stream, req, bufs, cut).await;
    };
    if let Some(why) = anthropic_refusal(&v) {
        let body = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": why}});
        return respond(stream, &mut bufs.out, req, 400, "", body.to_string().as_bytes(), cut).await;
    }
    let model = model_json(&v);
    let u = echo_usage(req, ANTHROPIC_USAGE);
    if let Some(turn) = tool_turn(req, &v, true) {
        return anthropic_tool_turn(stream, req, bufs, cut, &v, &turn, &u).await;
    }

    let replies = super::replies::get();
    let fill = super::replies::Fill { model: &model, usage: u, usage_null: false };
    if !is_true(v.get("stream")) {
        bufs.body.clear();
        replies.anthropic_json.render(&mut bufs.body, &fill);
        return respond(stream, &mut bufs.out, req, 200, "", &bufs.body, cut).await;
    }
    let events = replies.anthropic_stream(&fill);
    let delay = delay_from(req, "x-mock-event-delay-ms");
    respond_sse(stream, &mut bufs.out, req, &events, delay, cut).await
}

// ---------------------------------------------------------------------------
// Tool-calling turns (for tool round trips through the gateway)
// ---------------------------------------------------------------------------

/// What a tool-using conversation asks of the model next.
pub(crate) enum ToolTurn {
    /// Call the first declared tool (`x-mock-parallel-tools` asks for two calls).
    Call { name: String },
    /// The last message carries a tool result: answer with its text.
    Answer { result: String },
}

pub(crate) fn tool_turn(req: &Req<'_>, v: &Value, anthropic: bool) -> Option<ToolTurn> {
    // Agents (Claude Code) always declare tools: this asks for a plain answer anyway.
    if req.header("x-mock-no-tools").is_some() {
        return None;
    }
    let last = v.get("messages")?.as_array()?.last()?;
    if anthropic {
        if let Some(blocks) = last.get("content").and_then(Value::as_array) {
            for b in blocks {
                if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                    let result = match b.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(parts)) => {
                            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect()
                        }
                        _ => String::new(),
                    };
                    return Some(ToolTurn::Answer { result });
                }
            }
        }
    } else if last.get("role").and_then(Value::as_str) == Some("tool") {
        let result = match last.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
            _ => String::new(),
        };
        return Some(ToolTurn::Answer { result });
    }
    let tool = v.get("tools")?.as_array()?.first()?;
    let name = if anthropic { tool.get("name") } else { tool.pointer("/function/name") };
    Some(ToolTurn::Call { name: name?.as_str()?.to_string() })
}

pub(crate) const TOOL_ARGS: [&str; 2] = [r#"{"location":"Paris","unit":"c"}"#, r#"{"location":"Tokyo","unit":"c"}"#];

pub(crate) fn tool_calls_wanted(req: &Req<'_>) -> usize {
    if req.header("x-mock-parallel-tools").is_some() {
        2
    } else {
        1
    }
}

pub(crate) async fn openai_tool_turn(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
    v: &Value,
    turn: &ToolTurn,
    u: &Usage,
) -> Outcome {
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    let usage = serde_json::json!({"prompt_tokens": u.input, "completion_tokens": u.output, "total_tokens": u.input + u.output, "prompt_tokens_details": {"cached_tokens": u.cache_read}});
    let n = tool_calls_wanted(req);
    let (content, calls, finish) = match turn {
        ToolTurn::Answer { result } => (Some(format!("The tool said: {result}")), vec![], "stop"),
        ToolTurn::Call { name } => (
            None,
            (0..n).map(|i| (format!("call_mock_{i}"), name.clone(), TOOL_ARGS[i])).collect::<Vec<_>>(),
            "tool_calls",
        ),
    };
    if !is_true(v.get("stream")) {
        let tool_calls: Vec<Value> = calls.iter().map(|(id, name, args)| serde_json::json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})).collect();
        let mut message = serde_json::json!({"role": "assistant", "content": content, "refusal": null});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let body = serde_json::json!({"id": "chatcmpl-mocktool", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}], "usage": usage});
        let body = body.to_string();
        return respond(stream, &mut bufs.out, req, 200, "", body.as_bytes(), cut).await;
    }
    let include_usage = is_true(v.pointer("/stream_options/include_usage"));
    let chunk = |delta: Value, finish: Value| {
        let mut c = serde_json::json!({"id": "chatcmpl-mocktool", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(serde_json::json!({"role": "assistant", "content": null}), Value::Null)];
    if let Some(text) = &content {
        for piece in text.split_inclusive(' ') {
            events.push(chunk(serde_json::json!({"content": piece}), Value::Null));
        }
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        events.push(chunk(serde_json::json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
        let (a, b) = args.split_at(args.len() / 2);
        for part in [a, b] {
            events.push(chunk(
                serde_json::json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}),
                Value::Null,
            ));
        }
    }
    events.push(chunk(serde_json::json!({}), Value::from(finish)));
    if include_usage {
        let c = serde_json::json!({"id": "chatcmpl-mocktool", "object": "chat.completion.chunk", "created": 1700000000, "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    respond_sse(stream, &mut bufs.out, req, &events, delay_from(req, "x-mock-event-delay-ms"), cut).await
}

pub(crate) async fn anthropic_tool_turn(
    stream: &mut TcpStream,
    req: &Req<'_>,
    bufs: &mut Bufs,
    cut: bool,
    v: &Value,
    turn: &ToolTurn,
    u: &Usage,
) -> Outcome {
    let model = v.get("model").cloned().unwrap_or(Value::Null);
    let n = tool_calls_wanted(req);
    let (blocks, stop) = match turn {
        ToolTurn::Answer { result } => {
            (vec![serde_json::json!({"type": "text", "text": format!("The tool said: {result}")})], "end_turn")
        }
        ToolTurn::Call { name } => (
            std::iter::once(serde_json::json!({"type": "text", "text": "Let me check."}))
                .chain((0..n).map(|i| {
                    serde_json::json!({"type": "tool_use", "id": format!("toolu_mock_{i}"), "name": name,
                    "input": serde_json::from_str::<Value>(TOOL_ARGS[i]).unwrap_or(Value::Null)})
                }))
                .collect::<Vec<_>>(),
            "tool_use",
        ),
    };
    let usage = serde_json::json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read, "output_tokens": u.output});
    if !is_true(v.get("stream")) {
        let body = serde_json::json!({"id": "msg_mocktool", "type": "message", "role": "assistant", "model": model, "content": blocks,
            "stop_reason": stop, "stop_sequence": null, "usage": usage});
        let body = body.to_string();
        return respond(stream, &mut bufs.out, req, 200, "", body.as_bytes(), cut).await;
    }
    let ev = |t: &str, data: Value| format!("event: {t}\ndata: {data}\n\n");
    let mut events = vec![ev(
        "message_start",
        serde_json::json!({"type": "message_start", "message": {"id": "msg_mocktool", "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read, "output_tokens": 1}}}),
    )];
    for (i, b) in blocks.iter().enumerate() {
        if b["type"] == "text" {
            events.push(ev("content_block_start", serde_json::json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})));
            events.push(ev("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": b["text"]}})));
        } else {
            events.push(ev(
                "content_block_start",
                serde_json::json!({"type": "content_block_start", "index": i,
                "content_block": {"type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}),
            ));
            let args = b["input"].to_string();
            let (a, c) = args.split_at(args.len() / 2);
            for part in [a, c] {
                events.push(ev("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}})));
            }
        }
        events.push(ev("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": i})));
    }
    events.push(ev("message_delta", serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": u.output}})));
    events.push(ev("message_stop", serde_json::json!({"type": "message_stop"})));
    respond_sse(stream, &mut bufs.out, req, &events, delay_from(req, "x-mock-event-delay-ms"), cut).await
}
