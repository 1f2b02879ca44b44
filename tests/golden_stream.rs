//! Golden and property tests of the SSE stream translators (`cheapmodel::dialect::stream`).
//!
//! Cases live in `tests/golden/stream/<direction>/<case>/`: `in.sse` is the upstream stream as
//! the provider sends it, `out.sse` what the caller must receive. An `include_usage` file in an
//! `anthropic_to_openai` case turns `stream_options.include_usage` on. Every case is fed whole,
//! split in two at every byte position, and one byte at a time: all outputs must be identical and
//! equal to `out.sse` (`UPDATE_GOLDEN=1` rewrites `out.sse`). Every output must also pass the
//! structural validator of its dialect.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cheapmodel::dialect::stream::{AnthropicToOpenAi, OpenAiToAnthropic, StreamTranslator};
use cheapmodel::error::Dialect;
use cheapmodel::usage::StreamMeter;
use proptest::prelude::*;
use serde_json::{json, Value};

/// The model name the caller used, per direction.
const OPENAI_CALLER_MODEL: &str = "claude-sonnet-4-5-20250929";
const ANTHROPIC_CALLER_MODEL: &str = "gpt-5.5";
const CREATED: u64 = 1_767_225_600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// Anthropic upstream, OpenAI caller.
    AnthropicToOpenAi { include_usage: bool },
    /// OpenAI upstream, Anthropic caller.
    OpenAiToAnthropic,
}

fn translator(d: Direction) -> Box<dyn StreamTranslator> {
    match d {
        Direction::AnthropicToOpenAi { include_usage } => {
            Box::new(AnthropicToOpenAi::new(OPENAI_CALLER_MODEL, include_usage, CREATED))
        }
        Direction::OpenAiToAnthropic => Box::new(OpenAiToAnthropic::new(ANTHROPIC_CALLER_MODEL)),
    }
}

fn run_pieces<'a>(d: Direction, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut t = translator(d);
    let mut out = Vec::new();
    for p in pieces {
        t.feed(p, &mut out);
    }
    t.finish(&mut out);
    // Nothing may follow the end.
    let n = out.len();
    t.feed(b"data: {\"late\":true}\n\n", &mut out);
    t.finish(&mut out);
    assert_eq!(out.len(), n, "output after finish()");
    out
}

/// Feeds `input` whole, split at every byte position, and byte by byte; all must agree.
fn run_all_splits(d: Direction, input: &[u8]) -> Result<Vec<u8>, String> {
    let whole = run_pieces(d, [input]);
    for cut in 0..=input.len() {
        let split = run_pieces(d, [&input[..cut], &input[cut..]]);
        if split != whole {
            return Err(format!("split at byte {cut} gives different output:\n{}", String::from_utf8_lossy(&split)));
        }
    }
    let bytes = run_pieces(d, input.chunks(1));
    if bytes != whole {
        return Err(format!("1-byte feeds give different output:\n{}", String::from_utf8_lossy(&bytes)));
    }
    Ok(whole)
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/stream")
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(golden_root().join(dir))
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("in.sse").is_file())
        .collect();
    v.sort();
    v
}

/// Runs every case of a direction; returns how many ran.
fn run_golden(dir: &str) -> usize {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let all = cases(dir);
    for case in &all {
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let d = if dir == "openai_to_anthropic" {
            Direction::OpenAiToAnthropic
        } else {
            Direction::AnthropicToOpenAi { include_usage: case.join("include_usage").exists() }
        };
        let input = fs::read(case.join("in.sse")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = match run_all_splits(d, &input) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        // The translator's token report is what a translated stream is billed: it must be what
        // the same-dialect meter reads from the same upstream stream, usage and content events
        // alike (a cut stream's estimate is built from them).
        let mut t = translator(d);
        t.feed(&input, &mut Vec::new());
        t.finish(&mut Vec::new());
        let upstream_dialect = match d {
            Direction::OpenAiToAnthropic => Dialect::OpenAi,
            Direction::AnthropicToOpenAi { .. } => Dialect::Anthropic,
        };
        let mut meter = StreamMeter::new(upstream_dialect, false);
        meter.feed(&input, &mut Vec::new());
        meter.finish(&mut Vec::new());
        if t.tokens() != meter.tokens() {
            failures.push(format!("{name}: translator tokens {:?}, meter tokens {:?}", t.tokens(), meter.tokens()));
        }
        // Content and no final count (a cut stream, an upstream that reports no usage): billed
        // on an estimate, a lower bound. Every stream that has its count shows the bound holds.
        let tokens = t.tokens();
        let no_final_count = [
            "cut_mid_tool_input",
            "error_overloaded_mid_stream",
            "cut_before_finish",
            "done_without_finish",
            "error_mid_stream",
            "finish_content_filter",
            "plain_text",
        ];
        if tokens.needs_estimate() != no_final_count.contains(&name.as_str()) {
            failures.push(format!("{name}: needs_estimate() is {} for {tokens:?}", tokens.needs_estimate()));
        }
        if tokens.complete && tokens.content_events > tokens.reported.output {
            failures.push(format!("{name}: more content events than output tokens: {tokens:?}"));
        }
        let valid = match d {
            Direction::OpenAiToAnthropic => validate_anthropic(&out, true).map(|_| ()),
            Direction::AnthropicToOpenAi { .. } => validate_openai(&out, true).map(|_| ()),
        };
        if let Err(e) = valid {
            failures.push(format!("{name}: invalid output: {e}\n{}", String::from_utf8_lossy(&out)));
        }
        let golden = case.join("out.sse");
        if update {
            fs::write(&golden, &out).unwrap_or_else(|e| panic!("{name}: {e}"));
            continue;
        }
        match fs::read(&golden) {
            Ok(expected) if expected == out => {}
            Ok(expected) => failures.push(format!(
                "{name}: output differs from out.sse (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{}\n--- got\n{}",
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&out)
            )),
            Err(e) => failures.push(format!("{name}: out.sse: {e} (UPDATE_GOLDEN=1 writes it)")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), all.len(), failures.join("\n\n"));
    all.len()
}

#[test]
fn golden_openai_to_anthropic() {
    assert!(run_golden("openai_to_anthropic") >= 10);
}

#[test]
fn golden_anthropic_to_openai() {
    assert!(run_golden("anthropic_to_openai") >= 10);
}

// ---------------------------------------------------------------------------------------------
// Validators

/// What an Anthropic stream said.
#[derive(Debug, Default)]
struct AnthropicSummary {
    text: String,
    thinking: String,
    /// `(id, name, input)` in block order.
    tools: Vec<(String, String, Value)>,
    stop_reason: Option<String>,
    usage: Option<Value>,
    /// The error type, when an error event ended the stream.
    error: Option<String>,
}

/// Splits SSE output into events (each a list of lines); the output must be `\n`-framed.
fn events(out: &[u8]) -> Result<Vec<Vec<&str>>, String> {
    let s = std::str::from_utf8(out).map_err(|e| format!("not UTF-8: {e}"))?;
    if s.is_empty() {
        return Err("empty output".into());
    }
    let body = s.strip_suffix("\n\n").ok_or("output does not end with a blank line")?;
    body.split("\n\n")
        .map(|ev| if ev.is_empty() { Err("empty event".to_string()) } else { Ok(ev.split('\n').collect()) })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BlockType {
    Text,
    Thinking,
    ToolUse,
}

/// Checks the order rules strict clients (Claude Code) rely on; `check_tool_json` also requires
/// every tool input of a completed message to be a JSON object.
fn validate_anthropic(out: &[u8], check_tool_json: bool) -> Result<AnthropicSummary, String> {
    let evs = events(out)?;
    let mut sum = AnthropicSummary::default();
    let mut started = false;
    let mut open: Option<(u64, BlockType, String)> = None;
    let mut next_index = 0u64;
    let mut message_delta = false;
    let mut ended = false;
    let mut partials: Vec<String> = Vec::new();
    for (n, ev) in evs.iter().enumerate() {
        if ended {
            return Err(format!("event {n} after the end"));
        }
        let [name_line, data_line] = ev[..] else {
            return Err(format!("event {n} is not exactly event+data lines: {ev:?}"));
        };
        let name = name_line.strip_prefix("event: ").ok_or_else(|| format!("event {n}: no event line"))?;
        let data = data_line.strip_prefix("data: ").ok_or_else(|| format!("event {n}: no data line"))?;
        let v: Value = serde_json::from_str(data).map_err(|e| format!("event {n}: data is not JSON: {e}"))?;
        if v["type"] != name {
            return Err(format!("event {n}: type {} under event {name}", v["type"]));
        }
        if n == 0 && name != "message_start" && name != "error" {
            return Err(format!("first event is {name}"));
        }
        if n > 0 && name == "message_start" {
            return Err(format!("event {n}: a second message_start"));
        }
        if message_delta && name != "message_stop" && name != "ping" {
            return Err(format!("event {n}: {name} after message_delta"));
        }
        match name {
            "message_start" => {
                started = true;
                let m = &v["message"];
                if m["type"] != "message"
                    || m["role"] != "assistant"
                    || m["content"] != json!([])
                    || !m["id"].is_string()
                    || !m["model"].is_string()
                {
                    return Err(format!("bad message_start: {data}"));
                }
            }
            "ping" => {}
            "content_block_start" => {
                if let Some((i, ..)) = &open {
                    return Err(format!("event {n}: block {i} still open"));
                }
                let index = v["index"].as_u64().ok_or("block index")?;
                if index != next_index {
                    return Err(format!("event {n}: block index {index}, expected {next_index}"));
                }
                next_index += 1;
                let b = &v["content_block"];
                let t = match b["type"].as_str() {
                    Some("text") if b["text"] == "" => BlockType::Text,
                    Some("thinking") if b["thinking"] == "" => BlockType::Thinking,
                    Some("tool_use")
                        if b["input"] == json!({})
                            && b["id"].as_str().is_some_and(|s| !s.is_empty())
                            && b["name"].is_string() =>
                    {
                        sum.tools.push((
                            b["id"].as_str().unwrap_or_default().to_owned(),
                            b["name"].as_str().unwrap_or_default().to_owned(),
                            Value::Null,
                        ));
                        partials.push(String::new());
                        BlockType::ToolUse
                    }
                    _ => return Err(format!("event {n}: bad content_block {b}")),
                };
                open = Some((index, t, String::new()));
            }
            "content_block_delta" => {
                let Some((i, t, acc)) = &mut open else {
                    return Err(format!("event {n}: delta outside a block"));
                };
                if v["index"].as_u64() != Some(*i) {
                    return Err(format!("event {n}: delta for index {} inside block {i}", v["index"]));
                }
                let d = &v["delta"];
                match (d["type"].as_str(), *t) {
                    (Some("text_delta"), BlockType::Text) => sum.text.push_str(d["text"].as_str().ok_or("text")?),
                    (Some("thinking_delta"), BlockType::Thinking) => {
                        sum.thinking.push_str(d["thinking"].as_str().ok_or("thinking")?)
                    }
                    (Some("signature_delta"), BlockType::Thinking) => {}
                    (Some("input_json_delta"), BlockType::ToolUse) => {
                        let p = d["partial_json"].as_str().ok_or("partial_json")?;
                        if p.is_empty() {
                            return Err(format!("event {n}: empty partial_json"));
                        }
                        acc.push_str(p);
                    }
                    _ => return Err(format!("event {n}: delta {d} in a {t:?} block")),
                }
            }
            "content_block_stop" => {
                let Some((i, t, acc)) = open.take() else {
                    return Err(format!("event {n}: stop outside a block"));
                };
                if v["index"].as_u64() != Some(i) {
                    return Err(format!("event {n}: stop for index {} closes block {i}", v["index"]));
                }
                if t == BlockType::ToolUse {
                    if let Some(last) = partials.last_mut() {
                        *last = acc;
                    }
                }
            }
            "message_delta" => {
                if !started {
                    return Err("message_delta before message_start".into());
                }
                if let Some((i, ..)) = &open {
                    return Err(format!("message_delta while block {i} is open"));
                }
                message_delta = true;
                sum.stop_reason = Some(v["delta"]["stop_reason"].as_str().ok_or("stop_reason")?.to_owned());
                if !v["delta"]["stop_sequence"].is_null() {
                    return Err("stop_sequence".into());
                }
                for k in ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens"] {
                    if !v["usage"][k].is_u64() {
                        return Err(format!("message_delta usage.{k}"));
                    }
                }
                sum.usage = Some(v["usage"].clone());
            }
            "message_stop" => {
                if !message_delta {
                    return Err("message_stop without message_delta".into());
                }
                ended = true;
            }
            "error" => {
                let kind = v["error"]["type"].as_str().ok_or("error.type")?;
                if !matches!(kind, "api_error" | "rate_limit_error" | "invalid_request_error" | "overloaded_error") {
                    return Err(format!("error type {kind}"));
                }
                if !v["error"]["message"].is_string() {
                    return Err("error.message".into());
                }
                sum.error = Some(kind.to_owned());
                ended = true;
            }
            other => return Err(format!("unexpected event {other}")),
        }
    }
    if !ended {
        return Err("the stream neither stops nor errors".into());
    }
    if sum.error.is_none() && !started {
        return Err("no message_start".into());
    }
    let complete = sum.error.is_none() && sum.stop_reason.as_deref() != Some("max_tokens");
    for ((_, _, input), p) in sum.tools.iter_mut().zip(&partials) {
        let parsed = if p.is_empty() { Ok(json!({})) } else { serde_json::from_str::<Value>(p) };
        match parsed {
            Ok(v) if v.is_object() => *input = v,
            _ if !check_tool_json || !complete => {}
            _ => return Err(format!("tool input is not a JSON object: {p}")),
        }
    }
    Ok(sum)
}

/// What an OpenAI stream said.
#[derive(Debug, Default)]
struct OpenAiSummary {
    content: String,
    reasoning: String,
    /// Tool calls by index: `(id, name, arguments)`.
    tools: BTreeMap<u64, (String, String, String)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

fn validate_openai(out: &[u8], check_tool_json: bool) -> Result<OpenAiSummary, String> {
    let evs = events(out)?;
    let mut sum = OpenAiSummary::default();
    let mut id: Option<Value> = None;
    let mut ended = false;
    for (n, ev) in evs.iter().enumerate() {
        if ended {
            return Err(format!("event {n} after the end"));
        }
        let [line] = ev[..] else {
            return Err(format!("event {n} is not one data line: {ev:?}"));
        };
        let data = line.strip_prefix("data: ").ok_or_else(|| format!("event {n}: not a data line"))?;
        if data == "[DONE]" {
            if sum.finish_reason.is_none() {
                return Err("[DONE] without finish_reason".into());
            }
            ended = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| format!("event {n}: not JSON: {e}"))?;
        if let Some(e) = v.get("error") {
            for k in ["message", "type"] {
                if !e[k].is_string() {
                    return Err(format!("error.{k}"));
                }
            }
            if !e["param"].is_null() || !(e["code"].is_null() || e["code"].is_string()) {
                return Err("error.param/code".into());
            }
            sum.error = Some(e.clone());
            ended = true;
            continue;
        }
        if sum.usage.is_some() {
            return Err(format!("event {n}: chunk after the usage chunk"));
        }
        if v["object"] != "chat.completion.chunk" || v["model"] != OPENAI_CALLER_MODEL || v["created"] != CREATED {
            return Err(format!("event {n}: bad chunk header {data}"));
        }
        match &id {
            None => id = Some(v["id"].clone()),
            Some(i) if *i != v["id"] => return Err(format!("event {n}: id changed")),
            Some(_) => {}
        }
        let choices = v["choices"].as_array().ok_or("choices")?;
        if choices.is_empty() {
            if sum.finish_reason.is_none() {
                return Err("usage chunk before finish_reason".into());
            }
            let u = &v["usage"];
            let (p, c, t) = (u["prompt_tokens"].as_u64(), u["completion_tokens"].as_u64(), u["total_tokens"].as_u64());
            match (p, c, t) {
                (Some(p), Some(c), Some(t)) if p + c == t && u["prompt_tokens_details"]["cached_tokens"].is_u64() => {}
                _ => return Err(format!("bad usage {u}")),
            }
            sum.usage = Some(u.clone());
            continue;
        }
        let [choice] = &choices[..] else {
            return Err(format!("event {n}: {} choices", choices.len()));
        };
        if choice["index"] != 0 {
            return Err("choice index".into());
        }
        let d = &choice["delta"];
        if n == 0 && (d["role"] != "assistant" || d["content"] != "") {
            return Err(format!("first chunk is not the role chunk: {data}"));
        }
        if let Some(c) = d.get("content") {
            sum.content.push_str(c.as_str().ok_or("content")?);
        }
        if let Some(r) = d.get("reasoning_content") {
            sum.reasoning.push_str(r.as_str().ok_or("reasoning_content")?);
        }
        if let Some(tcs) = d.get("tool_calls") {
            for tc in tcs.as_array().ok_or("tool_calls")? {
                let i = tc["index"].as_u64().ok_or("tool index")?;
                let f = &tc["function"];
                let args = f["arguments"].as_str().ok_or("arguments")?;
                if let Some(tid) = tc.get("id") {
                    if sum.tools.contains_key(&i) {
                        return Err(format!("tool index {i} started twice"));
                    }
                    if tc["type"] != "function" || !f["name"].is_string() || !tid.is_string() {
                        return Err(format!("bad tool call start {tc}"));
                    }
                    let name = f["name"].as_str().unwrap_or_default().to_owned();
                    sum.tools.insert(i, (tid.as_str().unwrap_or_default().to_owned(), name, args.to_owned()));
                } else {
                    let entry =
                        sum.tools.get_mut(&i).ok_or_else(|| format!("arguments for tool {i} before its start"))?;
                    entry.2.push_str(args);
                }
            }
        }
        match &choice["finish_reason"] {
            Value::Null => {}
            Value::String(f) => {
                if sum.finish_reason.is_some() {
                    return Err("a second finish_reason".into());
                }
                sum.finish_reason = Some(f.clone());
            }
            other => return Err(format!("finish_reason {other}")),
        }
    }
    if !ended {
        return Err("neither [DONE] nor an error chunk at the end".into());
    }
    if check_tool_json && sum.error.is_none() && sum.finish_reason.as_deref() != Some("length") {
        for (i, (_, _, args)) in &sum.tools {
            if !args.is_empty() && !serde_json::from_str::<Value>(args).is_ok_and(|v| v.is_object()) {
                return Err(format!("tool {i} arguments are not a JSON object: {args}"));
            }
        }
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------------------------
// Spot checks of what the golden outputs say (beyond byte equality)

/// The translation of a case's `in.sse` (equal to its `out.sse`, which `run_golden` checks).
fn golden_out(dir: &str, case: &str) -> Vec<u8> {
    let path = golden_root().join(dir).join(case);
    let input = fs::read(path.join("in.sse")).unwrap_or_else(|e| panic!("{dir}/{case}: {e}"));
    let d = if dir == "openai_to_anthropic" {
        Direction::OpenAiToAnthropic
    } else {
        Direction::AnthropicToOpenAi { include_usage: path.join("include_usage").exists() }
    };
    run_pieces(d, [&input[..]])
}

#[test]
fn golden_outputs_say_what_the_upstream_said() {
    let s = validate_anthropic(&golden_out("openai_to_anthropic", "tool_interleaved"), true).expect("valid");
    assert_eq!(s.text, "Let me look both up.");
    assert_eq!(s.tools.len(), 2);
    assert_eq!(s.tools[0], ("call_int0".into(), "search".into(), json!({"query": "rust sse parser", "limit": 5})));
    assert_eq!(s.tools[1], ("call_int1".into(), "lookup_user".into(), json!({"id": 42, "fields": ["name", "email"]})));
    assert_eq!(s.stop_reason.as_deref(), Some("tool_use"));

    let s = validate_anthropic(&golden_out("openai_to_anthropic", "text_usage_cached"), true).expect("valid");
    assert_eq!(
        s.usage,
        Some(
            json!({"input_tokens": 258, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 2048, "output_tokens": 27})
        )
    );

    let s = validate_anthropic(&golden_out("openai_to_anthropic", "tool_no_arguments"), true).expect("valid");
    assert_eq!(s.tools.iter().map(|t| t.2.clone()).collect::<Vec<_>>(), vec![json!({}), json!({})]);

    let s = validate_anthropic(&golden_out("openai_to_anthropic", "cut_before_finish"), true).expect("valid");
    assert_eq!(s.error.as_deref(), Some("api_error"));
    assert_eq!(s.stop_reason, None);

    let s = validate_openai(&golden_out("anthropic_to_openai", "text_usage_cached"), true).expect("valid");
    assert_eq!(
        s.usage,
        Some(
            json!({"prompt_tokens": 2326, "completion_tokens": 21, "total_tokens": 2347, "prompt_tokens_details": {"cached_tokens": 1800}})
        )
    );

    let s = validate_openai(&golden_out("anthropic_to_openai", "thinking_text_tool_use"), true).expect("valid");
    assert_eq!(s.reasoning, "The user wants the weather in Paris. I should call get_weather.");
    assert_eq!(s.content, "I'll check the weather for you.");
    let (id, name, args) = &s.tools[&0];
    assert_eq!((id.as_str(), name.as_str()), ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather"));
    assert_eq!(
        serde_json::from_str::<Value>(args).expect("json"),
        json!({"location": "Paris, France", "unit": "celsius"})
    );
    assert_eq!(s.finish_reason.as_deref(), Some("tool_calls"));

    for (case, finish) in [
        ("stop_max_tokens", "length"),
        ("stop_pause_turn", "stop"),
        ("stop_refusal", "content_filter"),
        ("stop_model_context_window_exceeded", "length"),
        ("stop_sequence", "stop"),
    ] {
        let s = validate_openai(&golden_out("anthropic_to_openai", case), true).expect("valid");
        assert_eq!(s.finish_reason.as_deref(), Some(finish), "{case}");
    }
    let s = validate_openai(&golden_out("anthropic_to_openai", "cut_before_message_stop"), true).expect("valid");
    assert!(s.error.is_some() && s.usage.is_none());
}

// ---------------------------------------------------------------------------------------------
// Property tests

/// One tool call of a generated OpenAI stream.
#[derive(Debug, Clone)]
struct GenCall {
    id: String,
    name: String,
    /// The arguments as the model means them.
    args: Value,
    /// How they are written (`""` for a no-argument call).
    args_text: String,
    /// Cut points into `args_text` (fragments).
    cuts: Vec<usize>,
}

/// A piece of a generated stream, in upstream order.
#[derive(Debug, Clone)]
enum Piece {
    Reasoning(String),
    Text(String),
    /// `(call, fragment number)`.
    Tool(usize, usize),
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 \"\\\\/\\n\u{e9}\u{1F600}{}\\[\\],:]{0,12}".prop_map(Value::String),
    ]
}

fn json_args() -> impl Strategy<Value = Value> {
    let leaf = json_scalar();
    let value = leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map("[a-z_]{1,8}", value, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn gen_call(i: usize) -> impl Strategy<Value = GenCall> {
    (json_args(), any::<bool>(), any::<bool>(), prop::collection::vec(any::<prop::sample::Index>(), 0..6)).prop_map(
        move |(args, pretty, empty_when_no_args, cut_picks)| {
            let args_text = if args.as_object().is_some_and(|m| m.is_empty()) && empty_when_no_args {
                String::new()
            } else if pretty {
                serde_json::to_string_pretty(&args).unwrap_or_default()
            } else {
                serde_json::to_string(&args).unwrap_or_default()
            };
            // Fragments may cut inside multi-byte characters of the JSON text: only at char boundaries.
            let bounds: Vec<usize> = args_text.char_indices().map(|(b, _)| b).skip(1).collect();
            let mut cuts: Vec<usize> = if bounds.is_empty() {
                Vec::new()
            } else {
                cut_picks.iter().map(|p| bounds[p.index(bounds.len())]).collect()
            };
            cuts.sort_unstable();
            cuts.dedup();
            GenCall { id: format!("call_{i}_x"), name: format!("tool_{i}"), args, args_text, cuts }
        },
    )
}

impl GenCall {
    fn fragments(&self) -> Vec<&str> {
        let mut v = Vec::new();
        let mut start = 0;
        for &c in &self.cuts {
            v.push(&self.args_text[start..c]);
            start = c;
        }
        v.push(&self.args_text[start..]);
        v
    }
}

#[derive(Debug, Clone)]
struct GenStream {
    reasoning: Vec<String>,
    text: Vec<String>,
    calls: Vec<GenCall>,
    /// Picks which sequence the next piece comes from.
    order: Vec<prop::sample::Index>,
    finish: &'static str,
    usage: Option<(u64, u64, u64)>,
    done: bool,
    crlf: bool,
    /// The first fragment of a call carries its first arguments too (else `""`).
    args_on_first: bool,
}

fn gen_stream() -> impl Strategy<Value = GenStream> {
    let calls = (0usize..4).prop_flat_map(|n| (0..n).map(gen_call).collect::<Vec<_>>());
    (
        prop::collection::vec("[a-z \u{e9}\u{4e2d}\\n\"]{1,6}", 0..4),
        prop::collection::vec("[a-zA-Z .,!\u{e9}\u{1F600}\\n\"\\\\]{1,8}", 0..6),
        calls,
        prop::collection::vec(any::<prop::sample::Index>(), 40),
        prop::sample::select(vec!["stop", "tool_calls", "length", "content_filter"]),
        prop::option::of((0u64..5000, 0u64..500, 0u64..5000)),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(reasoning, text, calls, order, finish, usage, done, crlf, args_on_first)| GenStream {
            reasoning,
            text,
            calls,
            order,
            finish,
            usage: usage.map(|(p, c, cached)| (p.max(cached), c, cached)),
            done,
            crlf,
            args_on_first,
        })
}

impl GenStream {
    /// The pieces, interleaved as `order` says (each sequence keeps its own order).
    fn pieces(&self) -> Vec<Piece> {
        let mut queues: Vec<Vec<Piece>> = Vec::new();
        queues.push(self.reasoning.iter().cloned().map(Piece::Reasoning).collect());
        queues.push(self.text.iter().cloned().map(Piece::Text).collect());
        for (i, c) in self.calls.iter().enumerate() {
            queues.push((0..c.fragments().len()).map(|f| Piece::Tool(i, f)).collect());
        }
        for q in &mut queues {
            q.reverse();
        }
        let mut out = Vec::new();
        let mut k = 0;
        loop {
            let live: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].is_empty()).collect();
            if live.is_empty() {
                break;
            }
            let pick = self.order.get(k % self.order.len().max(1)).map_or(0, |ix| ix.index(live.len()));
            k += 1;
            if let Some(p) = queues[live[pick]].pop() {
                out.push(p);
            }
        }
        out
    }

    fn render(&self) -> String {
        let nl = if self.crlf { "\r\n" } else { "\n" };
        let mut s = String::new();
        let mut push = |v: Value| {
            s.push_str("data: ");
            s.push_str(&v.to_string());
            s.push_str(nl);
            s.push_str(nl);
        };
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-prop", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
        };
        push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
        for p in self.pieces() {
            let delta = match p {
                Piece::Reasoning(t) => json!({"reasoning_content": t}),
                Piece::Text(t) => json!({"content": t}),
                Piece::Tool(i, f) => {
                    let c = &self.calls[i];
                    let frags = c.fragments();
                    if f == 0 {
                        let first_args = if self.args_on_first { frags[0] } else { "" };
                        let mut d = json!({"tool_calls": [{"index": i, "id": c.id, "type": "function", "function": {"name": c.name, "arguments": first_args}}]});
                        if !self.args_on_first && !frags[0].is_empty() {
                            push(chunk(d, Value::Null));
                            d = json!({"tool_calls": [{"index": i, "function": {"arguments": frags[0]}}]});
                        }
                        d
                    } else {
                        json!({"tool_calls": [{"index": i, "function": {"arguments": frags[f]}}]})
                    }
                }
            };
            push(chunk(delta, Value::Null));
        }
        push(chunk(json!({}), json!(self.finish)));
        if let Some((p, c, cached)) = self.usage {
            push(
                json!({"id": "chatcmpl-prop", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
                        "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c, "prompt_tokens_details": {"cached_tokens": cached}}}),
            );
        }
        if self.done {
            s.push_str("data: [DONE]");
            s.push_str(nl);
            s.push_str(nl);
        }
        s
    }
}

/// Cuts `input` at the given (sorted, deduplicated) positions.
fn split_at<'a>(input: &'a [u8], picks: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = picks.iter().map(|p| p.index(input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut start = 0;
    for c in cuts {
        pieces.push(&input[start..c]);
        start = c;
    }
    pieces.push(&input[start..]);
    pieces
}

proptest! {
    // No regression files: a failure prints its minimal input, which belongs in a golden case.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn openai_streams_become_valid_anthropic_streams(g in gen_stream(), picks in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        let input = g.render();
        let whole = run_pieces(Direction::OpenAiToAnthropic, [input.as_bytes()]);
        let split = run_pieces(Direction::OpenAiToAnthropic, split_at(input.as_bytes(), &picks));
        prop_assert_eq!(&whole, &split, "split output differs");
        let sum = validate_anthropic(&whole, true).map_err(|e| TestCaseError::fail(format!("{e}\n{input}\n{}", String::from_utf8_lossy(&whole))))?;
        prop_assert_eq!(sum.error, None);
        prop_assert_eq!(sum.text, g.text.concat());
        prop_assert_eq!(sum.thinking, g.reasoning.concat());
        prop_assert_eq!(sum.tools.len(), g.calls.len());
        for c in &g.calls {
            let got = sum.tools.iter().find(|t| t.0 == c.id);
            prop_assert!(got.is_some(), "call {} missing", c.id);
            if let Some((_, name, input)) = got {
                prop_assert_eq!(name, &c.name);
                prop_assert_eq!(input, &c.args);
            }
        }
        prop_assert_eq!(sum.stop_reason.as_deref(), Some(cheapmodel::dialect::stop_reason_for(g.finish)));
        let (p, c, cached) = g.usage.unwrap_or((0, 0, 0));
        prop_assert_eq!(sum.usage, Some(json!({"input_tokens": p - cached, "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached, "output_tokens": c})));
    }

    #[test]
    fn openai_streams_cut_anywhere_end_in_an_error(g in gen_stream(), cut in any::<prop::sample::Index>()) {
        let input = g.render();
        // Cut before the finish chunk: the caller must get an error, never a stop.
        let finish_at = input.find("\"finish_reason\":\"").unwrap_or(input.len());
        let finish_at = input[..finish_at].rfind("data: ").unwrap_or(0);
        let at = cut.index(finish_at + 1);
        let out = run_pieces(Direction::OpenAiToAnthropic, [&input.as_bytes()[..at]]);
        let sum = validate_anthropic(&out, true).map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&out))))?;
        prop_assert_eq!(sum.error.as_deref(), Some("api_error"));
        prop_assert_eq!(sum.stop_reason, None);
    }

    #[test]
    fn random_bytes_never_panic_and_give_valid_streams(bytes in prop::collection::vec(any::<u8>(), 0..600), picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let pieces = split_at(&bytes, &picks);
        let a = run_pieces(Direction::OpenAiToAnthropic, pieces.iter().copied());
        validate_anthropic(&a, false).map_err(TestCaseError::fail)?;
        let o = run_pieces(Direction::AnthropicToOpenAi { include_usage: true }, pieces.iter().copied());
        validate_openai(&o, false).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn mutated_recorded_streams_never_panic_and_give_valid_streams(
        case in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut all: Vec<(Direction, PathBuf)> = cases("openai_to_anthropic").into_iter().map(|c| (Direction::OpenAiToAnthropic, c)).collect();
        all.extend(cases("anthropic_to_openai").into_iter().map(|c| (Direction::AnthropicToOpenAi { include_usage: true }, c)));
        let (d, path) = &all[case.index(all.len())];
        let mut input = fs::read(path.join("in.sse")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, byte, op) in edits {
            let i = at.index(input.len() + 1);
            match op {
                0 if i < input.len() => input[i] = byte,
                1 => input.insert(i, byte),
                _ => input.truncate(i),
            }
        }
        let whole = run_pieces(*d, [&input[..]]);
        let split = run_pieces(*d, split_at(&input, &picks));
        prop_assert_eq!(&whole, &split);
        match d {
            Direction::OpenAiToAnthropic => validate_anthropic(&whole, false).map(|_| ()),
            Direction::AnthropicToOpenAi { .. } => validate_openai(&whole, false).map(|_| ()),
        }
        .map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&whole))))?;
    }
}
